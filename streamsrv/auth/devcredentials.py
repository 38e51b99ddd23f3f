# -*- test-case-name: tests.test_devcredentials -*-
"""Development credentials: a generated secret kept in the data dir.

With no credentials configured, a development server still needs a way to
try tokens and signed URLs.  :func:`ensure_dev_credentials` creates (once)
``<data_dir>/dev-credentials.json``, readable by its owner only, holding a
random JWT secret and a random URL signing key; the daemon uses them as if
they were configured and prints a ready-to-use token and signed URL at
start.  This module is for the development profile only: production never
calls it (and refuses to start without real credentials).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

#: File name inside the data dir.
DEV_CREDENTIALS_FILE = "dev-credentials.json"

#: Key id of the development URL signing key.
DEV_KID = "dev"


@dataclass(frozen=True)
class DevCredentials:
    """The generated development secrets."""

    jwt_secret: str
    url_key: bytes

    def __repr__(self) -> str:
        return "DevCredentials(<redacted>)"


def ensure_dev_credentials(data_dir: Path) -> DevCredentials:
    """Load the development secrets from *data_dir*, creating them the first time.

    :param data_dir: ``STREAMSRV_DATA_DIR`` (created if missing).
    :return: the secrets, the same on every start until the file is deleted.
    """
    path = data_dir / DEV_CREDENTIALS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return DevCredentials(stored["jwt_secret"], bytes.fromhex(stored["url_key_hex"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = DevCredentials(secrets.token_urlsafe(48), secrets.token_bytes(32))
    document = json.dumps({"jwt_secret": creds.jwt_secret, "url_key_hex": creds.url_key.hex()})
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(tmp, path)
    return creds

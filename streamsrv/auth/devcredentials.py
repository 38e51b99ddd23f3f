# -*- test-case-name: tests.test_devcredentials -*-
"""Development credentials: a generated secret kept in the data dir.

With no credentials configured, a development server still needs a way to
try tokens and signed URLs.  :func:`ensure_dev_credentials` creates (once)
``<data_dir>/dev-credentials.json``, readable by its owner only, holding a
random JWT secret and a random URL signing key; the daemon uses them as if
they were configured and prints a ready-to-use token and signed URL at
start.  ``streamsrv mint-token`` and ``streamsrv sign-url`` read the same
file (:func:`load_dev_credentials`) but never create it: a token signed with a
fresh secret would be refused by the daemon.  This module is for the
development profile only: production never calls it (and refuses to start
without real credentials).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamsrv.auth.signing import SigningKey, signing_keys

if TYPE_CHECKING:
    from streamsrv.config import Settings

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


class DevCredentialsMissing(Exception):
    """The development credentials a command needs are not in the data dir (the daemon makes them).

    :ivar path: the file looked for, made absolute.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(str(path))


def load_dev_credentials(data_dir: Path) -> DevCredentials | None:
    """The development secrets the daemon keeps in *data_dir*, or ``None`` when it has none (yet).

    :param data_dir: ``STREAMSRV_DATA_DIR``; nothing is created in it.
    """
    try:
        stored = json.loads((data_dir / DEV_CREDENTIALS_FILE).read_text(encoding="utf-8"))
        return DevCredentials(stored["jwt_secret"], bytes.fromhex(stored["url_key_hex"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_dev_credentials(data_dir: Path) -> DevCredentials:
    """Load the development secrets from *data_dir*, creating them the first time.

    :param data_dir: ``STREAMSRV_DATA_DIR`` (created if missing).
    :return: the secrets, the same on every start until the file is deleted.
    """
    path = data_dir / DEV_CREDENTIALS_FILE
    stored = load_dev_credentials(data_dir)
    if stored is not None:
        return stored
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = DevCredentials(secrets.token_urlsafe(48), secrets.token_bytes(32))
    document = json.dumps({"jwt_secret": creds.jwt_secret, "url_key_hex": creds.url_key.hex()})
    # A temp file of this process's own (0600), linked into place only if no file is there:
    # processes starting at once on one data dir (workers, a test's two daemons) agree on the
    # first one's secrets instead of each renaming its own over the others'.
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=data_dir)
    tmp: Path | None = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(document)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            stored = load_dev_credentials(data_dir)
            if stored is not None:
                return stored  # another process's, whole: linked only once written
            os.replace(tmp_name, path)  # a damaged file: replaced
            tmp = None
        except OSError:
            os.replace(tmp_name, path)  # no hard links on this file system
            tmp = None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return creds


@dataclass(frozen=True)
class SigningMaterial:
    """The secrets a process signs and verifies with, as configured or generated.

    :ivar jwt_secret: the HS256 secret (configured, or the development one).
    :ivar url_keys: signed-URL keys, current first.
    :ivar private_key_pem: ``STREAMSRV_JWT_PRIVATE_KEY_FILE``'s content, if set.
    :ivar dev: the generated development credentials, when they are in use.
    """

    jwt_secret: str | None
    url_keys: tuple[SigningKey, ...]
    private_key_pem: bytes | None
    dev: DevCredentials | None

    def __repr__(self) -> str:
        return "SigningMaterial(<redacted>)"


def signing_material(settings: Settings, *, create: bool = True) -> SigningMaterial:
    """The secrets *settings* configure; in development with none configured, the generated ones.

    The daemon and ``streamsrv mint-token``/``sign-url`` all call this, with
    the same data dir resolution (``STREAMSRV_DATA_DIR``, else the profile's
    default), so a token minted on the command line verifies on a development
    server with no configuration.

    :param create: generate the development secrets when the data dir has
        none (the daemon); a command passes ``False`` and is told instead.
    :raise OSError: when the private key file cannot be read.
    :raise DevCredentialsMissing: when *create* is false and the development
        secrets are needed but not in the data dir.
    """
    jwt_secret = settings.jwt_secret
    url_keys = signing_keys(settings.url_signing_keys)
    no_jwt = jwt_secret is None and settings.jwt_public_key_file is None and settings.jwt_jwks_url is None
    dev = None
    if settings.env == "development" and no_jwt and not url_keys:
        if create:
            dev = ensure_dev_credentials(settings.data_dir)
        else:
            dev = load_dev_credentials(settings.data_dir)
            if dev is None:
                raise DevCredentialsMissing((settings.data_dir / DEV_CREDENTIALS_FILE).absolute())
        jwt_secret = dev.jwt_secret
        url_keys = (SigningKey(DEV_KID, dev.url_key),)
    private_pem = settings.jwt_private_key_file.read_bytes() if settings.jwt_private_key_file else None
    return SigningMaterial(jwt_secret, url_keys, private_pem, dev)

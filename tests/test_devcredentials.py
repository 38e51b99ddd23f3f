"""Development credentials kept in the data dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial import unittest

from streamsrv.auth.devcredentials import DEV_CREDENTIALS_FILE, ensure_dev_credentials


class DevCredentialsTests(unittest.SynchronousTestCase):
    """ensure_dev_credentials."""

    def test_created_once_and_reused(self) -> None:
        """The first call creates owner-only secrets; later calls return the same ones."""
        data = Path(self.mktemp())
        first = ensure_dev_credentials(data)
        self.assertGreaterEqual(len(first.jwt_secret), 32)
        self.assertEqual(len(first.url_key), 32)
        mode = stat.S_IMODE(os.stat(data / DEV_CREDENTIALS_FILE).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(ensure_dev_credentials(data), first)

    def test_corrupt_file_replaced(self) -> None:
        """A damaged file is replaced by fresh secrets rather than stopping start-up."""
        data = Path(self.mktemp())
        data.mkdir()
        (data / DEV_CREDENTIALS_FILE).write_text("{not json")
        creds = ensure_dev_credentials(data)
        self.assertEqual(ensure_dev_credentials(data), creds)

    def test_repr_hides_secrets(self) -> None:
        """The repr never shows the secrets."""
        creds = ensure_dev_credentials(Path(self.mktemp()))
        self.assertNotIn(creds.jwt_secret, repr(creds))

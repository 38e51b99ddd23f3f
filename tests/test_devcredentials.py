"""Development credentials kept in the data dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial import unittest

from streamsrv.auth.devcredentials import (
    DEV_CREDENTIALS_FILE,
    DevCredentialsMissing,
    ensure_dev_credentials,
    load_dev_credentials,
    signing_material,
)
from streamsrv.config import load_settings


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


class ReadOnlyTests(unittest.SynchronousTestCase):
    """What the ``streamsrv`` commands use: the daemon's credentials, never new ones."""

    def test_load_never_creates(self) -> None:
        """load_dev_credentials answers None for a missing or damaged file and writes nothing."""
        data = Path(self.mktemp())
        self.assertIsNone(load_dev_credentials(data))
        self.assertFalse(data.exists())
        data.mkdir()
        (data / DEV_CREDENTIALS_FILE).write_text("{not json")
        self.assertIsNone(load_dev_credentials(data))
        self.assertEqual((data / DEV_CREDENTIALS_FILE).read_text(), "{not json")

    def test_load_reads_the_daemons(self) -> None:
        """After the daemon created them, load_dev_credentials reads the same secrets."""
        data = Path(self.mktemp())
        self.assertEqual(load_dev_credentials(data), None)
        created = ensure_dev_credentials(data)
        self.assertEqual(load_dev_credentials(data), created)

    def test_signing_material_without_create(self) -> None:
        """signing_material(create=False) raises DevCredentialsMissing (with the absolute path) where the
        daemon would generate secrets, uses them once they exist, and ignores the data dir when
        credentials are configured."""
        data = Path(self.mktemp())
        settings = load_settings(environ={"STREAMSRV_DATA_DIR": str(data)})
        with self.assertRaises(DevCredentialsMissing) as raised:
            signing_material(settings, create=False)
        self.assertEqual(raised.exception.path, (data / DEV_CREDENTIALS_FILE).absolute())
        self.assertTrue(raised.exception.path.is_absolute())
        created = signing_material(settings)
        again = signing_material(settings, create=False)
        self.assertEqual(
            (again.dev, again.jwt_secret, again.url_keys), (created.dev, created.jwt_secret, created.url_keys)
        )
        configured = load_settings(
            environ={
                "STREAMSRV_DATA_DIR": self.mktemp(),
                "STREAMSRV_JWT_SECRET": "a-configured-secret-0123456789abcdef",
            }
        )
        self.assertIsNone(signing_material(configured, create=False).dev)

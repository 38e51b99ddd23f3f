"""Development credentials kept in the data dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial import unittest

from streamsrv.auth import devcredentials
from streamsrv.auth.devcredentials import (
    DEV_CREDENTIALS_FILE,
    DevCredentials,
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

    def test_another_process_first(self) -> None:
        """Another process writes its secrets between this one's look and its write: both use those
        (each process writes its own temp file and links it only where no file is)."""
        data = Path(self.mktemp())
        data.mkdir()
        theirs = {}
        real_load = devcredentials.load_dev_credentials

        def load_as_another_starts(data_dir: Path) -> DevCredentials | None:
            if not theirs:
                # The other process, meanwhile, writes its secrets.
                theirs["creds"] = DevCredentials("theirs-" + "s" * 40, b"k" * 32)
                (data_dir / DEV_CREDENTIALS_FILE).write_text(
                    json.dumps({"jwt_secret": theirs["creds"].jwt_secret, "url_key_hex": (b"k" * 32).hex()})
                )
                return None  # what this process saw a moment before
            return real_load(data_dir)

        self.patch(devcredentials, "load_dev_credentials", load_as_another_starts)
        mine = ensure_dev_credentials(data)
        self.assertEqual(mine, theirs["creds"])
        self.assertEqual(real_load(data), mine)
        self.assertEqual(sorted(p.name for p in data.iterdir()), [DEV_CREDENTIALS_FILE])

    def test_processes_starting_at_once_agree(self) -> None:
        """Eight processes creating the secrets in one empty data dir at once all get the same ones."""
        data = Path(self.mktemp()).absolute()
        data.mkdir()
        code = (
            "import sys, time; from pathlib import Path;"
            "from streamsrv.auth.devcredentials import ensure_dev_credentials;"
            "start = float(sys.argv[2]);"
            "time.sleep(max(0.0, start - time.time()));"
            "print(ensure_dev_credentials(Path(sys.argv[1])).jwt_secret)"
        )
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(data), start], stdout=subprocess.PIPE, text=True
            )
            for _ in range(8)
        ]
        outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
        self.assertEqual([p.returncode for p in procs], [0] * 8)
        self.assertEqual(len(set(outputs)), 1, outputs)
        self.assertEqual(load_dev_credentials(data).jwt_secret, outputs[0])  # type: ignore[union-attr]
        self.assertEqual(sorted(p.name for p in data.iterdir()), [DEV_CREDENTIALS_FILE])

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

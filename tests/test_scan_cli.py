"""Tests for :mod:`streamsrv.audio.scan_cli`, the ``streamsrv scan`` command."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.trial import unittest

from streamsrv.audio.catalog import CATALOG_FILENAME
from streamsrv.audio.scan_cli import EXIT_SOME_FAILED, scan_cli
from tests import audiogen


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class ScanCliTests(unittest.SynchronousTestCase):
    """streamsrv scan: progress, summary, failures, exit statuses."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        self.root = base / "media"
        (self.root / "album").mkdir(parents=True)
        self.data = base / "data"
        for name in ("a.flac", "b.wav", "c.mp3"):
            audiogen.write_tone(self.root / "album" / name, name.rsplit(".", 1)[1], 0.2)
        (self.root / "album" / "empty.mp3").write_bytes(b"")

    def run_scan(
        self, *argv: str, err: io.StringIO | None = None, media: Path | None = None
    ) -> tuple[int, str, str]:
        out = io.StringIO()
        err = err if err is not None else io.StringIO()
        status = scan_cli(
            list(argv),
            data_dir=self.data,
            media_root=media if media is not None else self.root,
            out=out,
            err=err,
            monotonic=iter(float(i) for i in range(10_000)).__next__,
        )
        return status, out.getvalue(), err.getvalue()

    def test_summary(self) -> None:
        """A scan prints counts, files/s and the unreadable files with reasons; exit 3 (some failed)."""
        status, out, err = self.run_scan()
        self.assertEqual(status, EXIT_SOME_FAILED)
        self.assertIn("4 audio files", out)
        self.assertIn("files/s", out)
        lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")}
        self.assertEqual(lines["added"], "3")
        self.assertEqual(lines["failed"], "1")
        self.assertIn("album/empty.mp3: empty file", out)
        self.assertTrue((self.data / CATALOG_FILENAME).exists())
        # Plain progress lines when stderr is no terminal.
        self.assertIn("scan: 4/4 files (100%)", err)
        self.assertNotIn("\r", err)
        status, out, _ = self.run_scan()
        self.assertEqual(status, EXIT_SOME_FAILED)
        lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")}
        self.assertEqual((lines["added"], lines["unchanged"], lines["failed"]), ("0", "3", "1"))

    def test_all_readable_exits_0(self) -> None:
        """Once the unreadable file is gone the same scan exits 0."""
        (self.root / "album" / "empty.mp3").unlink()
        status, out, _ = self.run_scan("--no-progress")
        self.assertEqual(status, 0, out)
        self.assertNotIn("unreadable files:", out)

    def test_full_rescan_counts_unchanged(self) -> None:
        """--full re-reads every file, but a file that did not change counts as unchanged, not
        changed; a file that did change counts as changed."""
        self.run_scan("--no-progress")
        audiogen.write_tone(self.root / "album" / "b.wav", "wav", 0.3)
        status, out, _ = self.run_scan("--json", "--full")
        self.assertEqual(status, EXIT_SOME_FAILED)
        document = json.loads(out)
        self.assertEqual(
            (document["added"], document["changed"], document["unchanged"], document["failed"]),
            (0, 1, 2, 1),
        )

    def test_progress_bar_on_tty(self) -> None:
        """On a terminal the progress is a bar redrawn in place, ended by a newline."""
        err = FakeTTY()
        status, _, _ = self.run_scan(err=err)
        self.assertEqual(status, EXIT_SOME_FAILED)
        text = err.getvalue()
        self.assertIn("\r", text)
        self.assertIn("[" + "#" * 30 + "] 4/4 files", text)
        self.assertTrue(text.endswith("\n"))

    def test_json(self) -> None:
        """--json prints one JSON document with counts and failures."""
        status, out, err = self.run_scan("--json", "--full")
        self.assertEqual(status, EXIT_SOME_FAILED)
        document = json.loads(out)
        self.assertEqual(document["added"], 3)
        self.assertEqual(document["failures"], [{"path": "album/empty.mp3", "reason": "empty file"}])
        self.assertIn("files_per_s", document)
        self.assertEqual(err, "")

    def test_options_override(self) -> None:
        """--media-dir and --data-dir win over the configuration."""
        other = self.root.parent / "other"
        other.mkdir()
        data = self.root.parent / "data2"
        status, out, _ = self.run_scan("--media-dir", str(other), "--data-dir", str(data), "--no-progress")
        self.assertEqual(status, 0)
        self.assertIn("0 audio files", out)
        self.assertTrue((data / CATALOG_FILENAME).exists())

    def test_usage_and_config_errors(self) -> None:
        """A bad option exits 2; a missing media root exits 1; --help exits 0."""
        status, _, err = self.run_scan("--bogus")
        self.assertEqual(status, 2)
        self.assertIn("usage:", err)
        status, _, err = self.run_scan(media=self.root / "missing")
        self.assertEqual(status, 1)
        self.assertIn("not a directory", err)
        status, out, _ = self.run_scan("--help")
        self.assertEqual(status, 0)
        self.assertIn("--full", out)

    def test_no_media_dir(self) -> None:
        """Without STREAMSRV_MEDIA_DIR the demo library is scanned if it exists, else exit 1."""
        out, err = io.StringIO(), io.StringIO()
        status = scan_cli([], data_dir=self.data, media_root=None, out=out, err=err)
        self.assertEqual(status, 1)
        self.assertIn("STREAMSRV_MEDIA_DIR", err.getvalue())
        (self.data / "demo").mkdir(parents=True)
        audiogen.write_tone(self.data / "demo" / "x.wav", "wav", 0.1)
        status = scan_cli(["--no-progress"], data_dir=self.data, media_root=None, out=out, err=err)
        self.assertEqual(status, 0)
        self.assertIn("1 audio file in", out.getvalue())

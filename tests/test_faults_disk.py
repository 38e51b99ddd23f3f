# -*- test-case-name: tests.test_faults_disk -*-
"""The artifact cache's disk full: derived answers still come (uncached), nothing partial is served.

Two levels.  :class:`FullDiskTests` puts the cache on a real, tiny tmpfs
(``mount -t tmpfs -o size=…``: needs root and a ``mount`` that works, as in
the CI container; skipped with the reason otherwise) filled to the last
byte, so every write fails with a real ``ENOSPC``; waveform, spectrum and
transcode requests (progressive and whole-file renditions) must still
answer 200 with complete bodies, leave no file behind, and be cached once
the filler is deleted.  :class:`InjectedFailureTests` makes the cache's own
file writes fail half-way in process (works anywhere): the temp file is
removed and the final name never appears.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial import unittest

from streamsrv.audio.library import MediaLibrary
from streamsrv.audio.workers import WorkerPool
from streamsrv.cache import artifacts
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.threads import InlineThreads
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, stub_for
from tests.test_transcoded import settle

TRACK = "Album/Tone.flac"

#: The tmpfs: big enough for its own bookkeeping, far too small for any artifact once filled.
TMPFS_SIZE = "512k"

#: Requests answered from derived data, each of which writes to the cache when it can.
DERIVED = (
    "/api/v1/waveform/{track}",
    "/api/v1/waveform/{track}?format=dat&bits=16",
    "/api/v1/spectrum/{track}?format=json",
    "/stream/{track}?format=mp3&bitrate=128",
    "/stream/{track}?format=aac&container=adts&bitrate=96",
)


def mount_tmpfs(testcase: unittest.TestCase) -> Path:
    """A fresh tiny tmpfs, unmounted at cleanup; skip when it cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise unittest.SkipTest("mounting a tmpfs needs root and mount(8)")
    where = Path(tempfile.mkdtemp(prefix="streamsrv-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        raise unittest.SkipTest(f"mount -t tmpfs failed here: {done.stderr.decode(errors='replace').strip()}")

    def unmount() -> None:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()

    testcase.addCleanup(unmount)
    return where


def fill(directory: Path) -> Path:
    """Write a file into *directory* until its file system is full; the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while True:
                f.write(block)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        try:
            while True:
                f.write(b"\0")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


def files_under(root: Path) -> list[str]:
    """Every regular file below *root*, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class FullDiskTests(unittest.TestCase):
    """A cache directory on a full file system."""

    timeout = 240

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).resolve()
        (self.media / "Album").mkdir(parents=True)
        write_tone(self.media / TRACK, "flac", seconds=4.0, freq=440.0, channels=2)
        self.disk = mount_tmpfs(self)
        self.root = self.disk / "cache"
        self.root.mkdir()
        self.pool = WorkerPool(reactor, size=1, max_queue=16)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        # The limit is far above what the disk holds: the cache believes it has room.
        self.cache = ArtifactCache(self.root, 256 * 1024 * 1024, threads=InlineThreads())
        library = MediaLibrary(self.media, catalog=None, pool=self.pool, cache=self.cache)
        built = build_site(
            self.media,
            clock=reactor,
            media=library,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=self.pool, cache=self.cache, tracker=tracker, metrics=metrics, clock=reactor
            ),
        )
        self.stub = stub_for(built)

    async def get(self, target: str) -> tuple[int, bytes]:
        url = "http://streamsrv.test" + target.format(track=quote(TRACK))
        response = await settle(self.stub, self.stub.get(url))
        body = await settle(self.stub, response.content())
        return response.code, body

    async def test_answers_uncached_then_recovers(self) -> None:
        """On a full disk every derived answer is complete and nothing is left in the cache;
        once space returns the same answers are cached, and then served from the cache."""
        filler = fill(self.disk)
        full: dict[str, bytes] = {}
        for target in DERIVED:
            code, body = await self.get(target)
            self.assertEqual(code, 200, (target, body[:200]))
            full[target] = body
        self.assertEqual(files_under(self.root), [], "a partial artifact or temp file was left")
        filler.unlink()
        for target in DERIVED:
            code, body = await self.get(target)
            self.assertEqual((code, body), (200, full[target]), target)
        self.assertNotEqual(files_under(self.root), [])
        hits = self.cache.hits
        for target in DERIVED:
            code, body = await self.get(target)
            self.assertEqual((code, body), (200, full[target]), target)
        self.assertGreater(self.cache.hits, hits)


class _FailingFile:
    """A file whose writes fail with ENOSPC once *budget* bytes were written.

    Closing it then fails too (after closing the descriptor), as a buffered
    file does whose final flush meets a full disk.
    """

    def __init__(self, inner: Any, budget: int) -> None:
        self._inner = inner
        self._budget = budget

    def write(self, data: bytes) -> int:
        if len(data) > self._budget:
            self._inner.write(data[: self._budget])
            self._budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget -= len(data)
        return int(self._inner.write(data))

    def close(self) -> None:
        self._inner.close()
        if self._budget == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class InjectedFailureTests(unittest.SynchronousTestCase):
    """The cache's writes failing half-way, in process."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.cache = ArtifactCache(self.root, 1024 * 1024, threads=InlineThreads())
        self.real_fdopen = real = os.fdopen
        self.patch(artifacts.os, "fdopen", lambda fd, mode: _FailingFile(real(fd, mode), 1000))

    def test_no_partial_artifact(self) -> None:
        """A put that fails half-way raises, leaves no temp file and no artifact under its name."""
        key = "ab" * 32
        with self.assertRaises(OSError) as caught:
            self.cache.put_bytes(key, "waveform", b"x" * 5000, ".dat")
        self.assertEqual(caught.exception.errno, errno.ENOSPC)
        self.assertIsNone(self.cache.get(key, "waveform", ".dat"))
        self.assertEqual([p for p in self.root.rglob("*") if p.is_file()], [])

    def test_recovers(self) -> None:
        """Once writes work again the same put stores the artifact."""
        key = "cd" * 32
        with self.assertRaises(OSError):
            self.cache.put_bytes(key, "waveform", b"y" * 5000, ".dat")
        self.patch(artifacts.os, "fdopen", self.real_fdopen)
        path = self.cache.put_bytes(key, "waveform", b"y" * 5000, ".dat")
        self.assertEqual(path.read_bytes(), b"y" * 5000)
        self.assertEqual(self.cache.get(key, "waveform", ".dat"), path)

"""Whole-file renditions (ADTS AAC, FLAC) asked for by many listeners at once: one encode, one file.

The worker pool coalesces identical jobs, but each request used to pick its
own temp file to commit: every caller but the first then committed a file
that was never written and answered 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.trial import unittest

from streamsrv.audio.workers import WorkerPool
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.threads import InlineThreads
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, stub_for
from tests.test_transcoded import settle

TRACK = "Album/Tone.flac"


class WholeRenditionTests(unittest.TestCase):
    """Concurrent cold requests for a rendition that is encoded whole."""

    timeout = 240

    def setUp(self) -> None:
        root = Path(self.mktemp()).resolve()
        (root / "Album").mkdir(parents=True)
        write_tone(root / TRACK, "flac", seconds=6.0, freq=440.0, channels=2)
        self.pool = WorkerPool(reactor, size=2, max_queue=64)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.cache = ArtifactCache(Path(self.mktemp()), 256 * 1024 * 1024, threads=InlineThreads())
        self.built = build_site(
            root,
            clock=reactor,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=self.pool, cache=self.cache, tracker=tracker, metrics=metrics, clock=reactor
            ),
        )
        self.stub = stub_for(self.built)

    async def get(self, query: str) -> tuple[int, bytes]:
        response = await settle(
            self.stub, self.stub.get(f"http://streamsrv.test/stream/{quote(TRACK)}?{query}")
        )
        body = await settle(self.stub, response.content())
        return response.code, body

    async def test_concurrent_cold_requests_share_one_encode(self) -> None:
        """Twenty simultaneous first requests for an ADTS rendition all get the same
        complete file, from one probe and one encode."""
        before = self.pool.completed
        results: list[Any] = await defer.gatherResults(
            [defer.ensureDeferred(self.get("format=aac&container=adts&bitrate=96")) for _ in range(20)]
        )
        codes = {code for code, _ in results}
        bodies = {body for _, body in results}
        self.assertEqual(codes, {200})
        self.assertEqual(len(bodies), 1)
        (body,) = bodies
        self.assertGreater(len(body), 10_000)
        self.assertEqual(self.pool.completed - before, 2)  # the probe and the encode
        code, again = await self.get("format=aac&container=adts&bitrate=96")
        self.assertEqual((code, again, self.pool.completed - before), (200, body, 2))  # from the cache

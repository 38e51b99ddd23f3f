"""``/stream/{path}?format=…``: renditions through the real site, worker pool and cache.

A range of a never-seen progressive rendition (MP3, Opus) must be the same
bytes as that range of the finished file, with an exact length from the
first request; AAC and FLAC are encoded whole first; high-quality renditions
need ``stream:hq``; a listener who leaves stops the encode only they drove.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from streamsrv.audio.workers import WorkerPool
from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.threads import InlineThreads
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, stub_for

TRACK = "Album/Tone.flac"
SECRET = "a-transcode-test-secret-long-enough-0123456789"


async def settle(stub: Any, d: Deferred[Any]) -> Any:
    """Wait for a StubTreq request whose handler awaits the worker pool (real reactor)."""
    done: list[Any] = []
    d.addBoth(lambda result: done.append(result) or result)
    for _ in range(6000):
        stub.flush()
        if done:
            break
        await deferLater(reactor, 0.01, lambda: None)
    return await d


class TranscodeTests(unittest.TestCase):
    """Renditions on /stream."""

    timeout = 240

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "Album").mkdir(parents=True)
        write_tone(self.root / TRACK, "flac", seconds=12.0, freq=440.0, channels=2)
        self.pool = WorkerPool(reactor, size=1, max_queue=16)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.cache = ArtifactCache(Path(self.mktemp()), 256 * 1024 * 1024, threads=InlineThreads())
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=reactor
        )
        verifier = JwtVerifier(
            secret=SECRET, public_key_pem=None, jwks=None, issuer=None, audience=None,
            leeway_s=30, clock=reactor, roles=DEFAULT_ROLES,
        )  # fmt: skip
        guard = Guard(
            verifier=verifier, url_keys=(), url_max_ttl_s=604800, revocations=None, limiter=None,
            policies=DEFAULT_POLICIES, anonymous=None, clock=reactor,
        )  # fmt: skip
        self.built = build_site(
            self.root,
            clock=reactor,
            guard=guard,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=self.pool, cache=self.cache, tracker=tracker, metrics=metrics, clock=reactor
            ),
            replaygain_of=self.replaygain_of,
        )
        self.stub = stub_for(self.built)
        self.listener = self.issuer.issue(sub="alice", roles=["listener"], ttl_s=600)
        self.premium = self.issuer.issue(sub="pat", roles=["premium"], ttl_s=600)

    async def replaygain_of(self, track: str) -> dict[str, float] | None:
        """The catalog's ReplayGain of the test track: -6.02 dB track gain, +12 dB album gain, peak 0.5."""
        return {"track_gain": -6.0206, "track_peak": 0.5, "album_gain": 12.0, "album_peak": 0.5}

    def peak(self, data: bytes, suffix: str) -> float:
        """The largest absolute sample of a rendition, decoded by Debian's ffmpeg."""
        import array

        path = Path(self.mktemp() + suffix)
        path.write_bytes(data)
        pcm = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        samples = array.array("h", pcm)
        return max(abs(v) for v in samples) / 32768

    async def test_replaygain(self) -> None:
        """replaygain=track applies the track gain; album gain is limited so the 0.5 peak does not clip."""
        if shutil.which("ffmpeg") is None:
            raise unittest.SkipTest("ffmpeg is not installed")
        code, _, plain = await self.get(self.url("format=flac"), token=self.premium)
        self.assertEqual(code, 200)
        code, _, quieter = await self.get(self.url("format=flac&replaygain=track"), token=self.premium)
        self.assertEqual(code, 200)
        ratio = self.peak(quieter, ".flac") / self.peak(plain, ".flac")
        self.assertLessEqual(abs(ratio - 0.5), 0.01)
        code, _, louder = await self.get(self.url("format=flac&replaygain=album"), token=self.premium)
        self.assertLessEqual(self.peak(louder, ".flac"), 1.0)
        self.assertGreaterEqual(self.peak(louder, ".flac"), 0.98)  # +6.02 dB, not +12: the peak limit
        code, _, body = await self.get(self.url("format=mp3&replaygain=loud"))
        self.assertEqual((code, json.loads(body)["error"]["code"]), (400, "BAD_REQUEST"))

    def url(self, query: str) -> str:
        return f"/stream/{quote(TRACK)}?{query}"

    async def get(self, target: str, token: str | None = None, **headers: str) -> tuple[int, Any, bytes]:
        all_headers = {k.replace("_", "-"): [v] for k, v in headers.items()}
        all_headers["Authorization"] = [f"Bearer {token or self.listener}"]
        d = self.stub.get("http://streamsrv.test" + target, headers=all_headers)
        response = await settle(self.stub, d)
        body = await settle(self.stub, response.content())
        return response.code, response.headers, body

    async def check_progressive(self, query: str, content_type: bytes) -> bytes:
        spans = [(0, 99), (5000, 40000), (60_000, 60_999)]
        first: list[tuple[int, bytes, int]] = []
        for start, end in spans:  # ranges of a never-seen rendition, before the whole
            code, headers, body = await self.get(self.url(query), Range=f"bytes={start}-{end}")
            self.assertEqual(code, 206, body[:200])
            self.assertEqual(headers.getRawHeaders(b"content-type"), [content_type])
            (content_range,) = headers.getRawHeaders(b"content-range")
            total = int(content_range.split(b"/")[1])
            self.assertEqual(len(body), end - start + 1)
            first.append((start, body, total))
        code, headers, whole = await self.get(self.url(query))
        self.assertEqual(code, 200)
        for start, body, total in first:
            self.assertEqual(total, len(whole))
            self.assertEqual(body, whole[start : start + len(body)])
        return whole

    def duration(self, data: bytes, suffix: str) -> float:
        if shutil.which("ffmpeg") is None:
            raise unittest.SkipTest("ffmpeg is not installed")
        path = Path(self.mktemp() + suffix)
        path.write_bytes(data)
        pcm = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path),
             "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        return len(pcm) / 2 / 48000

    async def test_mp3_ranges_from_the_first_request(self) -> None:
        """MP3 CBR: exact length and ranges before the whole exists; decodes to the source's length."""
        whole = await self.check_progressive("format=mp3&bitrate=128", b"audio/mpeg")
        self.assertLessEqual(abs(self.duration(whole, ".mp3") - 12.0), 0.05)

    async def test_opus_ranges_from_the_first_request(self) -> None:
        """Opus in Ogg: the same."""
        whole = await self.check_progressive("format=opus&bitrate=64", b"audio/ogg; codecs=opus")
        self.assertLessEqual(abs(self.duration(whole, ".opus") - 12.0), 0.05)

    async def test_start_offset(self) -> None:
        """``t=`` starts the rendition that far in."""
        code, _, body = await self.get(self.url("format=mp3&bitrate=96&t=4.5"))
        self.assertEqual(code, 200)
        self.assertLessEqual(abs(self.duration(body, ".mp3") - 7.5), 0.05)

    async def test_aac_m4a_ranges_from_the_first_request(self) -> None:
        """AAC in fragmented MP4 (the default container): the same, as ``audio/mp4``."""
        whole = await self.check_progressive("format=aac&bitrate=96", b"audio/mp4")
        self.assertLessEqual(abs(self.duration(whole, ".m4a") - 12.0), 0.05)

    async def test_aac_and_flac(self) -> None:
        """ADTS AAC is encoded whole then served with ranges; FLAC needs stream:hq."""
        code, headers, body = await self.get(self.url("format=aac&container=adts&bitrate=128"))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"audio/aac"])
        self.assertLessEqual(abs(self.duration(body, ".aac") - 12.0), 0.05)
        code, _, part = await self.get(
            self.url("format=aac&container=adts&bitrate=128"), Range="bytes=1000-1999"
        )
        self.assertEqual((code, part), (206, body[1000:2000]))
        code, _, error = await self.get(self.url("format=flac"))
        self.assertEqual((code, json.loads(error)["error"]["code"]), (403, "FORBIDDEN"))
        code, _, flac = await self.get(self.url("format=flac"), token=self.premium)
        self.assertEqual(code, 200)
        self.assertLessEqual(abs(self.duration(flac, ".flac") - 12.0), 0.01)

    async def test_bad_parameters(self) -> None:
        """Unknown formats, bad bitrates and offsets, a bitrate without a format: 400."""
        for query in (
            "format=wma",
            "format=mp3&bitrate=100",
            "format=mp3&t=-1",
            "bitrate=128",
            "format=mp3&format=aac",
            "format=aac&container=mp4",
            "format=mp3&container=m4a",
        ):
            code, _, body = await self.get(self.url(query))
            self.assertEqual((code, json.loads(body)["error"]["code"]), (400, "BAD_REQUEST"), query)
        code, _, body = await self.get(self.url("format=mp3&bitrate=320"))
        self.assertEqual((code, json.loads(body)["error"]["code"]), (403, "FORBIDDEN"))

    async def test_conditional_and_unsatisfiable(self) -> None:
        """The rendition's ETag revalidates; a range past the end is 416 with the exact size."""
        code, headers, _ = await self.get(self.url("format=opus&bitrate=32"), Range="bytes=0-0")
        (etag,) = headers.getRawHeaders(b"etag")
        total = int(headers.getRawHeaders(b"content-range")[0].split(b"/")[1])
        code, _, body = await self.get(self.url("format=opus&bitrate=32"), If_None_Match=etag.decode())
        self.assertEqual((code, body), (304, b""))
        code, headers, _ = await self.get(self.url("format=opus&bitrate=32"), Range=f"bytes={total}-")
        self.assertEqual(code, 416)
        self.assertEqual(headers.getRawHeaders(b"content-range"), [f"bytes */{total}".encode()])

    async def test_leaving_listener_stops_the_encode(self) -> None:
        """A client that disconnects after the first bytes leaves no chunk job queued or running."""
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 5000))
        protocol = self.built.site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 5000))
        protocol.makeConnection(transport)
        protocol.dataReceived(
            f"GET {self.url('format=mp3&bitrate=64')} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {self.listener}\r\n\r\n".encode()
        )
        for _ in range(3000):
            if len(transport.value()) > 2000:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertIn(b"200 OK", transport.value()[:20])
        transport.producer.pauseProducing()
        protocol.connectionLost(
            __import__("twisted.python.failure", fromlist=["Failure"]).Failure(ConnectionError())
        )
        for _ in range(3000):
            if self.pool.queued == 0 and self.pool.running == 0 and self.built.tracker.open_count == 0:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((self.pool.queued, self.pool.running, self.built.tracker.open_count), (0, 0, 0))
        chunks = (
            [p for p in Path(self.cache.root).rglob("*") if p.is_file()]
            if hasattr(self.cache, "root")
            else []
        )
        self.assertLess(len(chunks), 4)  # the 12 s rendition has 4 chunks; not all were encoded

    async def test_metrics_name(self) -> None:
        """Bytes of renditions are counted under their own label."""
        await self.get(self.url("format=opus&bitrate=32"), Range="bytes=0-999")
        text = self.built.metrics.render()
        lines = [line for line in text.splitlines() if line.startswith(b"streamsrv_stream_bytes_sent")]
        self.assertTrue(any(b'"transcode"' in line for line in lines), lines)
        self.assertIn(b'streamsrv_transcode_first_byte_seconds_count{format="opus"} 1.0', text)
        self.assertIn(b'streamsrv_transcode_chunks_total{origin="encoded"}', text)

# -*- test-case-name: tests.test_transcoded_ranges -*-
"""Several byte ranges of a transcode: ``multipart/byteranges`` as for originals.

:class:`ChunkProducerTests` pins the producer on its own (bounded writes,
backpressure, a chunk shared by two ranges fetched once, cancellation) with a
real :class:`~streamsrv.transcode.layout.Layout` and made-up chunk bytes.
:class:`TranscodedRangesTests` goes through the real site, worker pool and
cache (the fixtures of :mod:`tests.test_transcoded`): the parts of a
multi-range answer equal the same ranges of the finished rendition, from the
very first request of a never-seen progressive rendition, and the range rules
(coalescing, the range limit, If-Range, 416, HEAD) are the originals'.
"""

from __future__ import annotations

import email.parser
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from streamsrv.streaming.multipart import multipart_layout
from streamsrv.streaming.producers import CHUNK_SIZE
from streamsrv.streaming.ranges import ByteRange
from streamsrv.streaming.transcoded import PREFETCH_CHUNKS, ChunkProducer
from streamsrv.transcode import Rendition, layout_for, probe_source
from streamsrv.transcode.layout import Layout
from tests import test_transcoded as base
from tests.sitehelpers import BuiltSite, parse_head

#: 12 s at 44.1 kHz, MP3 320 kb/s: four chunks of about 134 KB (more than one write each).
LAYOUT = layout_for(Rendition("mp3", 320).resolved(44100), 12 * 44100, 44100)


def chunk_bytes(layout: Layout, index: int) -> bytes:
    """Made-up bytes of chunk *index*, of its exact length and different for every chunk."""
    return random.Random(index).randbytes(layout.chunk_length(index))


def whole(layout: Layout) -> bytes:
    """The finished rendition the made-up chunks add up to."""
    return layout.header() + b"".join(chunk_bytes(layout, i) for i in range(layout.chunk_count))


class RecordingRequest:
    """The consumer side of a request: records writes, pauses when told to."""

    def __init__(self, pause_every_write: bool = False) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self.aborted = False
        self.pause_every_write = pause_every_write
        self.channel = self
        self.transport = self
        self._finish: Deferred[None] = Deferred()

    def notifyFinish(self) -> Deferred[None]:
        return self._finish

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)
        if self.pause_every_write and self.producer is not None:
            self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True

    def abortConnection(self) -> None:
        self.aborted = True

    def leave(self) -> None:
        """The client disconnects."""
        self._finish.errback(ConnectionError("gone"))

    @property
    def body(self) -> bytes:
        return b"".join(self.written)


class ChunkFetcher:
    """Hands out a Deferred per chunk fetch and fires them when the test says."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.asked: list[int] = []
        self.waiting: dict[int, Deferred[bytes]] = {}
        self.cancelled: list[int] = []

    def __call__(self, index: int) -> Deferred[bytes]:
        self.asked.append(index)
        d: Deferred[bytes] = Deferred(lambda _: self.cancelled.append(index))
        self.waiting[index] = d
        return d

    def deliver(self, index: int) -> None:
        self.waiting.pop(index).callback(chunk_bytes(self.layout, index))

    def deliver_all(self, request: RecordingRequest) -> None:
        """Fire whatever is asked for, resuming the producer, until the body is done."""
        for _ in range(10_000):
            if request.finished:
                return
            for index in sorted(self.waiting):
                self.deliver(index)
            if request.producer is not None:
                request.producer.resumeProducing()
        raise AssertionError("the body never completed")


def make_producer(
    request: RecordingRequest, segments: list[tuple[bytes, int, int]], trailer: bytes = b"", fetch: Any = None
) -> tuple[ChunkProducer, ChunkFetcher, list[tuple[int, bool]]]:
    fetcher = ChunkFetcher(LAYOUT)
    ends: list[tuple[int, bool]] = []
    producer = ChunkProducer(
        request,
        LAYOUT,
        segments,
        trailer,
        fetch=fetch or fetcher,
        on_end=lambda sent, done: ends.append((sent, done)),
    )
    return producer, fetcher, ends


class ChunkProducerTests(unittest.SynchronousTestCase):
    """The progressive-rendition producer on its own."""

    def test_writes_are_bounded(self) -> None:
        """The whole rendition comes out right in writes of at most 64 KiB, though chunks are bigger."""
        self.assertGreater(LAYOUT.chunk_length(0), 2 * CHUNK_SIZE)
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, [(b"", 0, LAYOUT.total_length)])
        producer.start()
        fetcher.deliver_all(request)
        self.assertEqual(request.body, whole(LAYOUT))
        self.assertLessEqual(max(map(len, request.written)), CHUNK_SIZE)
        self.assertEqual(ends, [(LAYOUT.total_length, True)])
        self.assertEqual(fetcher.asked, list(range(LAYOUT.chunk_count)))

    def test_multipart_fetches_each_touched_chunk_once(self) -> None:
        """Multipart: the framed slices; a chunk two ranges share is fetched once, untouched ones never."""
        offset = LAYOUT.chunk_offset
        ranges = [
            ByteRange(10, 99),  # the header
            ByteRange(offset(1) + 5, offset(1) + 70_000),  # chunk 1 ...
            ByteRange(offset(1) + 100_000, offset(3) + 9),  # ... chunk 1 again, 2 and 3
        ]
        framed = multipart_layout(ranges, LAYOUT.total_length, "audio/mpeg", "b0undary")
        segments = [(prefix, r.start, r.length) for prefix, r in framed.parts]
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, segments, framed.trailer)
        producer.start()
        fetcher.deliver_all(request)
        data = whole(LAYOUT)
        expected = b"".join(prefix + data[r.start : r.end + 1] for prefix, r in framed.parts) + framed.trailer
        self.assertEqual(request.body, expected)
        self.assertEqual(len(expected), framed.content_length)
        self.assertEqual(fetcher.asked, [1, 2, 3])
        self.assertLessEqual(max(map(len, request.written)), CHUNK_SIZE)
        self.assertEqual(ends, [(framed.content_length, True)])

    def test_paused_consumer_stops_fetching(self) -> None:
        """While paused, nothing is written and no further chunk is fetched; one write per resume."""
        request = RecordingRequest(pause_every_write=True)
        producer, fetcher, _ = make_producer(request, [(b"", 0, LAYOUT.total_length)])
        producer.start()
        self.assertEqual(request.body, LAYOUT.header())  # written at once; then paused
        self.assertEqual(fetcher.asked, [0, 1])  # the chunk to write and PREFETCH_CHUNKS ahead
        self.assertEqual(PREFETCH_CHUNKS, 1)
        fetcher.deliver(0)
        fetcher.deliver(1)
        self.assertEqual((len(request.written), fetcher.asked), (1, [0, 1]))
        chunk_0_written = LAYOUT.header_length + LAYOUT.chunk_length(0)
        writes = 1
        while fetcher.asked == [0, 1]:
            self.assertLess(len(request.body), chunk_0_written)
            producer.resumeProducing()
            writes += 1
            self.assertEqual(len(request.written), writes)  # one slice, then paused again
            self.assertLessEqual(len(request.written[-1]), CHUNK_SIZE)
        # Chunk 2 is asked for once chunk 0 is written out, not before.
        self.assertEqual(fetcher.asked, [0, 1, 2])
        self.assertGreaterEqual(len(request.body), chunk_0_written)
        self.assertEqual(request.body, whole(LAYOUT)[: len(request.body)])

    def test_leaving_cancels_pending_fetches(self) -> None:
        """A client that leaves cancels the fetches it was waiting for and ends the body as incomplete."""
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, [(b"", 0, LAYOUT.total_length)])
        producer.start()
        request.leave()
        self.assertEqual(sorted(fetcher.cancelled), [0, 1])
        self.assertEqual(ends, [(LAYOUT.header_length, False)])
        producer.stopProducing()  # idempotent
        self.assertEqual(len(ends), 1)
        self.assertFalse(request.finished)

    def test_failed_chunk_cuts_the_response(self) -> None:
        """A chunk that fails to encode aborts the connection: a short body must not look complete."""
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, [(b"", 0, LAYOUT.total_length)])
        producer.start()
        fetcher.waiting.pop(0).errback(RuntimeError("encoder died"))
        self.assertTrue(request.aborted)
        self.assertEqual(ends, [(LAYOUT.header_length, False)])
        self.assertEqual(fetcher.cancelled, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_chunk_of_the_wrong_length_cuts_the_response(self) -> None:
        """A chunk whose size is not the layout's aborts rather than break the promised Content-Length."""
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, [(b"", 0, LAYOUT.total_length)])
        producer.start()
        fetcher.waiting.pop(0).callback(b"short")
        self.assertTrue(request.aborted)
        self.assertEqual(ends, [(LAYOUT.header_length, False)])

    def test_chunks_at_hand(self) -> None:
        """Chunks at hand (cache hits fire at once) are written in one go, without re-entrancy trouble."""
        request = RecordingRequest()
        asked: list[int] = []

        def fetch(index: int) -> Deferred[bytes]:
            asked.append(index)
            return succeed(chunk_bytes(LAYOUT, index))

        start = LAYOUT.chunk_offset(2) - 1000
        producer, _, ends = make_producer(request, [(b"", start, 5000)], fetch=fetch)
        producer.start()
        self.assertTrue(request.finished)
        self.assertEqual(request.body, whole(LAYOUT)[start : start + 5000])
        self.assertEqual((asked, ends), ([1, 2], [(5000, True)]))

    def test_header_only(self) -> None:
        """A range within the header is written at once and fetches no chunk."""
        request = RecordingRequest()
        producer, fetcher, ends = make_producer(request, [(b"", 10, 100)])
        producer.start()
        self.assertEqual((request.body, request.finished), (LAYOUT.header()[10:110], True))
        self.assertEqual((fetcher.asked, ends), ([], [(100, True)]))


class TranscodedRangesTests(unittest.TestCase):
    """Multi-range answers for renditions, through the real site."""

    timeout = 300

    # The site, pool, cache, tokens and test track of tests.test_transcoded.
    setUp = base.TranscodeTests.setUp
    root: Path
    built: BuiltSite
    stub: Any
    listener: str
    premium: str
    replaygain_of = base.TranscodeTests.replaygain_of
    url = base.TranscodeTests.url

    async def request(
        self, method: str, target: str, token: str | None = None, **headers: str
    ) -> tuple[int, Any, bytes]:
        all_headers = {k.replace("_", "-"): [v] for k, v in headers.items()}
        all_headers["Authorization"] = [f"Bearer {token or self.listener}"]
        d = self.stub.request(method, "http://streamsrv.test" + target, headers=all_headers)
        response = await base.settle(self.stub, d)
        body = await base.settle(self.stub, response.content())
        if method == "GET":
            self.assertEqual(response.length, len(body))  # Content-Length is exact, whatever the answer
        return response.code, response.headers, body

    async def raw(
        self, method: str, target: str, token: str | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes, list[int]]:
        """One request on a real HTTP/1.1 channel: status, headers, body as sent; each body write's size."""
        writes: list[int] = []

        class Recording(StringTransport):
            def write(self, data: bytes) -> None:  # body writes (headers go through writeSequence)
                writes.append(len(data))
                super().write(data)

        address = IPv4Address("TCP", "10.0.0.9", 5000)
        transport = Recording(peerAddress=address)
        protocol = self.built.site.buildProtocol(address)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))
        lines = [f"{method} {target} HTTP/1.1", "Host: x", f"Authorization: Bearer {token or self.listener}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        for _ in range(6000):
            if b"\r\n\r\n" in transport.value():
                status, sent, body = parse_head(transport.value())
                if method == "HEAD" or len(body) >= int(sent["content-length"]):
                    break
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)  # anything more would show
        status, sent, body = parse_head(transport.value())
        return status, sent, body, writes

    async def get(self, target: str, token: str | None = None, **headers: str) -> tuple[int, Any, bytes]:
        return await self.request("GET", target, token, **headers)

    def parts(self, headers: Any, body: bytes) -> list[tuple[str, str, bytes]]:
        """``(Content-Type, Content-Range, bytes)`` of each part of a multipart body."""
        (content_type,) = headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"multipart/byteranges; boundary="), content_type)
        message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type + b"\r\n\r\n" + body)
        self.assertTrue(message.is_multipart())
        return [
            (part["Content-Type"], part["Content-Range"], part.get_payload(decode=True))
            for part in message.get_payload()
        ]

    def chunks_encoded(self) -> float:
        text = self.built.metrics.render().decode()
        for line in text.splitlines():
            if line.startswith('streamsrv_transcode_chunks_total{origin="encoded"}'):
                return float(line.split()[-1])
        return 0.0

    def layout(self, query_format: str, kbps: int) -> Layout:
        source = probe_source(str(self.root / base.TRACK))
        rendition = Rendition(query_format, kbps).resolved(source.sample_rate)
        return layout_for(rendition, source.frames, source.sample_rate)

    async def check_never_seen(self, fmt: str, kbps: int, content_type: str) -> None:
        """Ranges over the header and chunk 0, chunk 0 again, and the last full chunk: two
        encodes (the chunks between and after are not encoded), right bytes."""
        layout = self.layout(fmt, kbps)
        self.assertGreaterEqual(layout.chunk_count, 3)
        c0, c2 = layout.chunk_offset(0), layout.chunk_offset(layout.chunk_count - 2)
        spans = [(5, c0 + 99), (c0 + 1000, c0 + 1999), (c2 + 10, c2 + 5009)]
        header = "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)
        code, headers, body = await self.get(self.url(f"format={fmt}&bitrate={kbps}"), Range=header)
        self.assertEqual(code, 206, body[:300])
        self.assertIsNone(headers.getRawHeaders(b"content-range"))
        parts = self.parts(headers, body)
        self.assertEqual(self.chunks_encoded(), 2)  # chunk 0 once for two ranges, and the other
        code, _, finished = await self.get(self.url(f"format={fmt}&bitrate={kbps}"))
        self.assertEqual((code, len(finished)), (200, layout.total_length))
        expected = [
            (content_type, f"bytes {a}-{b}/{layout.total_length}", finished[a : b + 1]) for a, b in spans
        ]
        self.assertEqual(parts, expected)

    async def test_mp3_never_seen(self) -> None:
        """MP3: a never-seen rendition's first request answers several ranges, encoding only their chunks."""
        await self.check_never_seen("mp3", 128, "audio/mpeg")

    async def test_opus_never_seen(self) -> None:
        """Opus: the same."""
        await self.check_never_seen("opus", 64, "audio/ogg; codecs=opus")

    async def test_m4a_never_seen(self) -> None:
        """AAC in M4A: the same (fragments are chunks)."""
        await self.check_never_seen("aac", 96, "audio/mp4")

    async def check_cached_whole_file(self, query: str, content_type: str, token: str) -> None:
        code, _, finished = await self.get(self.url(query), token=token)
        self.assertEqual(code, 200)
        size = len(finished)
        self.assertGreater(size, 150_000)
        header = f"bytes=100-199,{size // 3}-{size // 3 + 70_000},-10"
        code, headers, body = await self.get(self.url(query), token=token, Range=header)
        self.assertEqual(code, 206)
        spans = [(100, 199), (size // 3, size // 3 + 70_000), (size - 10, size - 1)]
        self.assertEqual(
            self.parts(headers, body),
            [(content_type, f"bytes {a}-{b}/{size}", finished[a : b + 1]) for a, b in spans],
        )

    async def test_flac_cached(self) -> None:
        """FLAC (encoded whole, then a cached file): several ranges are multipart/byteranges."""
        await self.check_cached_whole_file("format=flac", "audio/flac", self.premium)

    async def test_adts_cached(self) -> None:
        """AAC in ADTS (encoded whole): the same."""
        await self.check_cached_whole_file(
            "format=aac&container=adts&bitrate=128", "audio/aac", self.listener
        )

    async def test_coalescing_like_originals(self) -> None:
        """Overlapping and adjacent ranges merge into one 206 part, as for the original file."""
        query = "format=opus&bitrate=32"
        original = "/stream/" + quote(base.TRACK)
        for header, (first, last) in (("bytes=0-99,50-149", (0, 149)), ("bytes=300-399,200-299", (200, 399))):
            code, headers, body = await self.get(self.url(query), Range=header)
            size = int(headers.getRawHeaders(b"content-range")[0].split(b"/")[1])
            self.assertEqual(
                (code, headers.getRawHeaders(b"content-range"), len(body)),
                (206, [f"bytes {first}-{last}/{size}".encode()], last - first + 1),
            )
            code, headers, _ = await self.get(original, Range=header)
            self.assertEqual(code, 206)
            self.assertTrue(
                headers.getRawHeaders(b"content-range")[0].startswith(f"bytes {first}-{last}/".encode())
            )
        # Out of order: the parts come sorted, as for originals.
        code, headers, body = await self.get(self.url(query), Range="bytes=900-909,0-9")
        self.assertEqual(
            [r for _, r, _ in self.parts(headers, body)], [f"bytes 0-9/{size}", f"bytes 900-909/{size}"]
        )

    async def test_too_many_ranges_like_originals(self) -> None:
        """More ranges than ``max_ranges`` (16) answer 200 with the whole rendition, as for the original."""
        header = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(17))
        code, headers, body = await self.get(self.url("format=opus&bitrate=32"), Range=header)
        self.assertEqual(code, 200)
        self.assertIsNone(headers.getRawHeaders(b"content-range"))
        code, _, _ = await self.get("/stream/" + quote(base.TRACK), Range=header)
        self.assertEqual(code, 200)
        header16 = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(16))
        code, headers, body = await self.get(self.url("format=opus&bitrate=32"), Range=header16)
        self.assertEqual((code, len(self.parts(headers, body))), (206, 16))

    async def test_head(self) -> None:
        """HEAD with several ranges: the GET's status and headers, no body, nothing encoded;
        counted in the audit trail as ``head``."""
        query = self.url("format=mp3&bitrate=96")
        code, head, body, _ = await self.raw("HEAD", query, Range="bytes=0-9,100000-100009")
        self.assertEqual((code, body, self.chunks_encoded()), (206, b"", 0))
        self.assertTrue(head["content-type"].startswith("multipart/byteranges; boundary="))
        self.assertIn(b'streamsrv_file_access_total{outcome="head"} 1.0', self.built.metrics.render())
        code, got, body, _ = await self.raw("GET", query, Range="bytes=0-9,100000-100009")
        self.assertEqual((code, int(got["content-length"])), (206, len(body)))
        for name in ("date", "x-request-id", "content-type"):  # the boundary is new every time
            del head[name], got[name]
        self.assertEqual(head, got)

    async def test_if_range_and_unsatisfiable(self) -> None:
        """If-Range mismatch: 200 whole; all ranges past the end: 416 ``bytes */size``; some past: dropped."""
        query = self.url("format=opus&bitrate=32")
        code, headers, whole_body = await self.get(query, Range="bytes=0-9,20-29", If_Range='"bogus"')
        self.assertEqual(code, 200)
        size = len(whole_body)
        (etag,) = headers.getRawHeaders(b"etag")
        code, _, body = await self.get(query, Range="bytes=0-9,20-29", If_Range=etag.decode())
        self.assertEqual(code, 206)
        code, headers, _ = await self.get(query, Range=f"bytes={size}-{size + 9},{size + 100}-")
        self.assertEqual((code, headers.getRawHeaders(b"content-range")), (416, [f"bytes */{size}".encode()]))
        code, headers, body = await self.get(query, Range=f"bytes=0-9,{size + 100}-")
        self.assertEqual(
            (code, headers.getRawHeaders(b"content-range"), body),
            (206, [f"bytes 0-9/{size}".encode()], whole_body[:10]),
        )

    async def test_delivery_spans(self) -> None:
        """The delivery observer (listening analytics) gets each part's span and the rendition's size."""
        seen: list[tuple[list[tuple[int, int]], int, int]] = []
        renditions: list[Any] = []
        stream = self.built.site.resource.getChildWithDefault(b"stream", None)

        def observe(request: Any, track: str, spans: Any, sent: int, size: int, duration: Any) -> None:
            seen.append((spans, sent, size))
            renditions.append(request.delivered_as)

        stream._on_delivered = observe
        query = self.url("format=opus&bitrate=32")
        code, _, body = await self.get(query, Range="bytes=10-19,5000-5099,-100")
        self.assertEqual(code, 206)
        code, _, _ = await self.get(query, Range="bytes=10-19")
        code, _, whole_body = await self.get(query)
        size = len(whole_body)
        self.assertEqual(
            seen,
            [
                ([(10, 10), (5000, 100), (size - 100, 100)], len(body), size),
                ([(10, 10)], 10, size),
                ([(0, size)], size, size),
            ],
        )
        # What stream.started tells: the rendition's format and bitrate (bits/s).
        self.assertEqual(renditions, [("opus", 32000)] * 3)

    async def test_writes_bounded_through_the_site(self) -> None:
        """Through a real HTTP channel, no write of a 320 kb/s MP3 (134 KB chunks) exceeds 64 KiB."""
        query = self.url("format=mp3&bitrate=320")
        code, headers, body, writes = await self.raw(
            "GET", query, self.premium, Range="bytes=0-200000,300000-400000"
        )
        self.assertEqual((code, int(headers["content-length"])), (206, len(body)))
        self.assertGreater(len(body), 300_000)
        self.assertLessEqual(max(writes), CHUNK_SIZE)

# -*- test-case-name: tests.test_producers -*-
"""Backpressure and lifecycle of the body producers, on in-memory transports.

``FillingTransport`` behaves like Twisted's ``FileDescriptor``: once more
than ``limit`` bytes are buffered it pauses its producer (the HTTP channel,
which pauses ours) and resumes it when drained.  The producer must stop
writing while paused, so what the server holds stays bounded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from streamsrv.streaming.producers import CHUNK_SIZE, FileBodyProducer
from tests.sitehelpers import build_site

BODY = bytes(range(256)) * 4096  # 1 MiB


class FillingTransport(StringTransport):
    """A StringTransport that pauses its producer when its buffer is full."""

    def __init__(self, limit: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.limit = limit
        self.max_buffered = 0
        self.delivered = b""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.max_buffered = max(self.max_buffered, len(self.io.getvalue()))
        if len(self.io.getvalue()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, seq: Any) -> None:
        self.write(b"".join(seq))

    def drain(self) -> None:
        """Let the peer read everything buffered, then resume the producer."""
        self.delivered += self.io.getvalue()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


class ChannelBackpressureTests(unittest.TestCase):
    """The producer under a real HTTPChannel and Site."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        (root / "big.flac").write_bytes(BODY)
        self.built = build_site(root)
        self.transport = FillingTransport(limit=CHUNK_SIZE)
        self.protocol = self.built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        self.protocol.makeConnection(self.transport)
        self.addCleanup(self.disconnect)

    def disconnect(self) -> None:
        """Drop the connection so no stream (or its file) outlives the test."""
        if not self.transport.disconnected:
            self.transport.disconnected = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def request(self, raw: bytes) -> None:
        self.protocol.dataReceived(raw)

    def test_paused_producer_stops_writing(self) -> None:
        """A full transport stops the stream; buffered bytes stay within two chunks."""
        self.request(b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertLessEqual(self.transport.max_buffered, CHUNK_SIZE * 2 + 4096)
        held = len(self.transport.io.getvalue())
        # Nothing drains: the producer must not write more, however long we wait.
        self.built.clock.advance(60)
        self.assertEqual(len(self.transport.io.getvalue()), held)
        self.assertEqual(self.built.tracker.open_count, 1)

    def test_drains_to_completion(self) -> None:
        """Draining repeatedly delivers the exact body, never over the bound."""
        self.request(b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(1000):
            if self.built.tracker.open_count == 0:
                break
            self.transport.drain()
        self.transport.drain()
        self.assertEqual(self.built.tracker.open_count, 0)
        head, _, body = self.transport.delivered.partition(b"\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200", head)
        self.assertEqual(body, BODY)
        self.assertLessEqual(self.transport.max_buffered, CHUNK_SIZE * 2 + 4096)

    def test_client_leaves_mid_stream(self) -> None:
        """A lost connection stops the producer and releases the stream."""
        self.request(b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.built.tracker.open_count, 1)
        self.transport.disconnected = True
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.built.tracker.open_count, 0)
        text = self.built.metrics.render().decode()
        self.assertIn("streamsrv_streams_aborted_total 1.0", text)

    def test_pipelined_requests(self) -> None:
        """Two pipelined range requests on one connection are answered in order."""
        self.request(
            b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"
            b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
        )
        for _ in range(10):
            self.transport.drain()
        data = self.transport.delivered
        self.assertEqual(data.count(b"HTTP/1.1 206"), 2)
        self.assertTrue(data.endswith(BODY[10:20]))


class FakeRequest:
    """The consumer side of a request, enough for a producer unit test."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        from twisted.internet.defer import Deferred

        self._finish: Deferred[None] = Deferred()

    def notifyFinish(self) -> Any:
        return self._finish

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if len(self.written) % 2 == 0 and self.producer is not None:
            self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True


class FileBodyProducerTests(unittest.SynchronousTestCase):
    """The producer on its own."""

    def test_segments_and_trailer(self) -> None:
        """Literal prefixes, file ranges and the trailer come out in order."""
        request = FakeRequest()
        ends: list[bool] = []
        producer = FileBodyProducer(
            request, io.BytesIO(BODY), [(b"<a>", 0, 10), (b"<b>", 100, 5)], b"<end>", ends.append
        )
        producer.start()
        while not request.finished:
            producer.resumeProducing()
        self.assertEqual(b"".join(request.written), b"<a>" + BODY[:10] + b"<b>" + BODY[100:105] + b"<end>")
        self.assertEqual(ends, [True])
        self.assertEqual(producer.bytes_written, len(b"".join(request.written)))

    def test_chunks_are_bounded(self) -> None:
        """No single write is larger than the chunk size."""
        request = FakeRequest()
        producer = FileBodyProducer(request, io.BytesIO(BODY), [(b"", 0, len(BODY))])
        producer.start()
        while not request.finished:
            producer.resumeProducing()
        self.assertLessEqual(max(len(w) for w in request.written), CHUNK_SIZE)
        self.assertEqual(b"".join(request.written), BODY)

    def test_stop_closes_file_once(self) -> None:
        """stopProducing closes the file, reports once, and is idempotent."""
        request = FakeRequest()
        fileobj = io.BytesIO(BODY)
        ends: list[bool] = []
        producer = FileBodyProducer(request, fileobj, [(b"", 0, len(BODY))], on_end=ends.append)
        producer.start()
        producer.stopProducing()
        producer.stopProducing()
        self.assertTrue(fileobj.closed)
        self.assertEqual(ends, [False])
        producer.resumeProducing()  # a late resume writes nothing
        self.assertFalse(request.finished)

    def test_file_shrinks(self) -> None:
        """A file shorter than promised aborts the stream instead of lying."""
        request = FakeRequest()
        request.channel = type("C", (), {"transport": StringTransport()})()  # type: ignore[attr-defined]
        ends: list[bool] = []
        producer = FileBodyProducer(request, io.BytesIO(BODY[:100]), [(b"", 0, 1000)], on_end=ends.append)
        producer.start()
        self.assertEqual(ends, [False])
        self.assertTrue(request.channel.transport.disconnecting or request.channel.transport.disconnected)  # type: ignore[attr-defined]
        self.flushLoggedErrors(EOFError)


class ShapingTests(unittest.TestCase):
    """A capped producer sends the burst at once, then no faster than its rate."""

    def test_burst_then_rate(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        data = bytes(range(256)) * 4096  # 1 MiB
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        clock = Clock()
        request = _ShapedRequest(StringTransport())
        ended: list[bool] = []
        producer = FileBodyProducer(
            request, open(path, "rb"), [(b"", 0, len(data))], b"", ended.append,
            shaping=(100_000, 200_000, clock),
        )  # fmt: skip
        producer.start()
        self.assertGreaterEqual(producer.bytes_written, 200_000)
        self.assertLess(producer.bytes_written, 200_000 + 64 * 1024)
        for second in range(1, 6):
            clock.advance(1.0)
            capped = producer.bytes_written - 200_000
            self.assertLessEqual(capped, 100_000 * second + 10_000)
            self.assertGreaterEqual(capped, 100_000 * (second - 1))
        clock.advance(10)
        self.assertEqual(ended, [True])
        self.assertEqual(b"".join(request.written), data)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_leaving_cancels_the_timer(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 500_000)
        clock = Clock()
        request = _ShapedRequest(StringTransport())
        ended: list[bool] = []
        producer = FileBodyProducer(
            request,
            open(path, "rb"),
            [(b"", 0, 500_000)],
            b"",
            ended.append,
            shaping=(10_000, 0, clock),
        )
        producer.start()
        self.assertTrue(clock.getDelayedCalls())
        producer.stopProducing()
        self.assertEqual((ended, clock.getDelayedCalls()), ([False], []))


class _ShapedRequest:
    """The parts of a request a producer uses, recording what it writes."""

    def __init__(self, transport: object) -> None:
        from twisted.internet.defer import Deferred

        self.channel = type("C", (), {"transport": transport})()
        self.written: list[bytes] = []
        self.finished = Deferred()
        self.producer: object = None

    def notifyFinish(self) -> object:
        return self.finished

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        pass

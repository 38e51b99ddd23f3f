"""``AsyncLeaf``: the async-handler skeleton of ``/stream`` and ``/hls``.

:class:`AsyncLeafTests` pins the skeleton on a small leaf of its own behind
the real site: bodies, JSON errors, unexpected failures, and a client leaving
while the handler waits.  :class:`StreamDisconnectTests` pins the last one on
``/stream`` itself: a transcode waiting on the worker pool is cancelled when
its client goes, and nothing is written after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import server
from twisted.web.test.requesthelper import DummyRequest

from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.errors import ApiError
from streamsrv.health.metrics import Metrics
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.threads import InlineThreads
from streamsrv.web.asyncleaf import AsyncLeaf
from streamsrv.web.root import RootResource
from streamsrv.web.site import StreamsrvSite
from tests.sitehelpers import BuiltSite, build_site, parse_head


class Leaf(AsyncLeaf):
    """Answers as the test says: the handler awaits ``self.waiting`` when given one."""

    route = "test"

    def __init__(self) -> None:
        super().__init__()
        self.waiting: Deferred[Any] | None = None
        self.outcome: list[object] = []
        self.answer: Any = b"hello"

    async def handle(self, request: Any) -> bytes | int:
        try:
            if self.waiting is not None:
                await self.waiting
        except BaseException as e:
            self.outcome.append(e)
            raise
        self.outcome.append("done")
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer  # type: ignore[no-any-return]


class Connection:
    """One HTTP connection to *site* over an in-memory transport."""

    def __init__(self, site: StreamsrvSite) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        self.protocol.makeConnection(self.transport)

    def get(self, path: bytes, method: bytes = b"GET") -> None:
        self.protocol.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: test\r\n\r\n")

    def leave(self) -> None:
        """The client goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


def leaf_site(leaf: Leaf) -> StreamsrvSite:
    clock = MemoryReactorClock()
    return StreamsrvSite(RootResource(leaf, {b"leaf": leaf}), metrics=Metrics(process=False), clock=clock)


class AsyncLeafTests(unittest.SynchronousTestCase):
    """What the skeleton does with what a handler returns or raises."""

    def setUp(self) -> None:
        self.leaf = Leaf()
        self.connection = Connection(leaf_site(self.leaf))

    def test_body(self) -> None:
        """A body is sent with its Content-Length and the request is labelled with the leaf's route."""
        self.connection.get(b"/leaf/x")
        status, headers, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, headers["content-length"], body), (200, "5", b"hello"))

    def test_head(self) -> None:
        """HEAD runs the same handler and sends the headers of the body, not the body."""
        self.connection.get(b"/leaf/x", method=b"HEAD")
        status, headers, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, headers["content-length"], body), (200, "5", b""))

    def test_api_error(self) -> None:
        """An ApiError is the JSON error model with its status and headers."""
        self.leaf.answer = ApiError("UNAVAILABLE", "Busy.", {"Retry-After": "3"})
        self.connection.get(b"/leaf/x")
        status, headers, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, headers["retry-after"]), (503, "3"))
        self.assertEqual(json.loads(body)["error"]["code"], "UNAVAILABLE")

    def test_unexpected_failure(self) -> None:
        """Any other exception is logged and answered INTERNAL, with nothing of it in the body."""
        self.leaf.answer = RuntimeError("/secret/path went wrong")
        self.connection.get(b"/leaf/x")
        status, _, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, json.loads(body)["error"]["code"]), (500, "INTERNAL"))
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_not_done_yet(self) -> None:
        """A handler that returns NOT_DONE_YET leaves the request open to its producer."""
        self.leaf.answer = server.NOT_DONE_YET
        self.connection.get(b"/leaf/x")
        self.assertEqual(self.connection.transport.value(), b"")
        self.assertFalse(self.connection.transport.disconnecting)

    def test_waiting_handler_answers_later(self) -> None:
        """A handler that waits answers once what it waits for fires."""
        self.leaf.waiting = Deferred()
        self.connection.get(b"/leaf/x")
        self.assertEqual(self.connection.transport.value(), b"")
        self.leaf.waiting.callback(None)
        self.assertEqual(parse_head(self.connection.transport.value())[2], b"hello")

    def test_client_leaving_cancels_handler(self) -> None:
        """A client that leaves while the handler waits cancels it there; nothing is written or logged."""
        cancelled: list[object] = []
        self.leaf.waiting = Deferred(cancelled.append)
        self.connection.get(b"/leaf/x")
        self.connection.leave()
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(len(self.leaf.outcome), 1)
        self.assertIsInstance(self.leaf.outcome[0], CancelledError)
        self.assertEqual(self.connection.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_finished_handler_not_cancelled(self) -> None:
        """A handler that answered at once registers nothing for the client leaving (no cost, no cancel)."""
        self.leaf.answer = server.NOT_DONE_YET
        request: Any = DummyRequest([b"x"])
        self.leaf.render_GET(request)
        self.assertEqual(request._finishedDeferreds, [])
        self.assertEqual(self.leaf.outcome, ["done"])


class NowLeaf(Leaf):
    """A leaf that answers without a coroutine when ``self.now`` is not ``None``."""

    def __init__(self) -> None:
        super().__init__()
        self.now: Any = None

    def answer_now(self, request: Any) -> Any:
        if self.now is None:
            return super().answer_now(request)
        if isinstance(self.now, BaseException):
            raise self.now
        return self.now


class AnswerNowTests(unittest.SynchronousTestCase):
    """``answer_now``: an answer given at once is framed as a handler's would be."""

    def setUp(self) -> None:
        self.leaf = NowLeaf()
        self.connection = Connection(leaf_site(self.leaf))

    def test_body_at_once(self) -> None:
        """A body answered at once is sent with its Content-Length; the handler never runs."""
        self.leaf.now = b"quick"
        self.connection.get(b"/leaf/x")
        status, headers, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, headers["content-length"], body), (200, "5", b"quick"))
        self.assertEqual(self.leaf.outcome, [])

    def test_api_error_at_once(self) -> None:
        """An ApiError raised at once is the JSON error model, as from the handler."""
        self.leaf.now = ApiError("FORBIDDEN")
        self.connection.get(b"/leaf/x")
        status, _, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, json.loads(body)["error"]["code"]), (403, "FORBIDDEN"))

    def test_unexpected_failure_at_once(self) -> None:
        """Another exception raised at once is logged and answered INTERNAL."""
        self.leaf.now = RuntimeError("/secret/path went wrong")
        self.connection.get(b"/leaf/x")
        status, _, body = parse_head(self.connection.transport.value())
        self.assertEqual((status, json.loads(body)["error"]["code"]), (500, "INTERNAL"))
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_coroutine_handed_back_still_cancelled(self) -> None:
        """A coroutine handed back runs as the handler does, and a client leaving still cancels it."""
        cancelled: list[object] = []
        self.leaf.waiting = Deferred(cancelled.append)
        self.connection.get(b"/leaf/x")
        self.connection.leave()
        self.assertEqual(len(cancelled), 1)
        self.assertIsInstance(self.leaf.outcome[0], CancelledError)
        self.assertEqual(self.connection.transport.value(), b"")


class StalledPool:
    """A worker pool whose jobs never finish; records what was submitted and cancelled."""

    def __init__(self) -> None:
        self.submitted: list[str | None] = []
        self.cancelled: list[str | None] = []
        self.queued = 0
        self.max_queue = 16

    def submit(self, fn: Any, *args: object, key: str | None = None) -> Deferred[Any]:
        self.submitted.append(key)
        return Deferred(lambda _: self.cancelled.append(key))


class StreamDisconnectTests(unittest.SynchronousTestCase):
    """``/stream``: a client leaving stops the work its request was waiting for."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).resolve()
        (root / "Album").mkdir(parents=True)
        (root / "Album" / "Tone.flac").write_bytes(b"fLaC" + bytes(1000))
        self.pool = StalledPool()
        cache = ArtifactCache(Path(self.mktemp()), 1024 * 1024, threads=InlineThreads())
        clock = MemoryReactorClock()
        self.built: BuiltSite = build_site(
            root,
            clock=clock,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=self.pool, cache=cache, tracker=tracker, metrics=metrics, clock=clock
            ),
        )

    def test_transcode_cancelled_when_client_leaves(self) -> None:
        """A transcode waiting on the pool is cancelled when the client goes; no byte follows."""
        connection = Connection(self.built.site)
        connection.get(b"/stream/Album/Tone.flac?format=mp3")
        self.assertEqual(len(self.pool.submitted), 1)
        self.assertEqual(connection.transport.value(), b"")
        connection.leave()
        self.assertEqual(self.pool.cancelled, self.pool.submitted)
        self.assertEqual(connection.transport.value(), b"")
        self.assertEqual(self.built.tracker.open_count, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

# -*- test-case-name: tests.test_reactor_free -*-
"""The reactor thread stays free while the artifact cache writes: threadpools injected, and used.

:mod:`streamsrv.threads` is tested directly; then a transcoded ``/stream``
request runs to completion over a real TCP port while every artifact write
goes through a deliberately slow threadpool (each call sleeps
:data:`WRITE_DELAY_S` in a real thread), and ``/health``, asked over its own
keep-alive connection from another thread every :data:`SAMPLE_EVERY_S`,
keeps answering fast.  Only the requests sent while a slow write was in
progress count: had the writes run on the reactor thread, each of those would
wait for the write to end (hundreds of milliseconds), so the median bound of
:data:`HEALTH_MEDIAN_BOUND_S` (the issue's 20 ms) could not hold, while on a
loaded machine the median of answers from a free reactor stays far below it.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.audio.workers import WorkerPool
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.threads import InlineThreads, IThreads, ReactorThreads, threads_for
from tests.audiogen import write_tone
from tests.sitehelpers import build_site

TRACK: Final = "Album/Tone.flac"

#: How long each call of the slow threadpool sleeps (in its thread) before writing.
WRITE_DELAY_S: Final = 0.5

#: The pace of the /health requests.
SAMPLE_EVERY_S: Final = 0.02

#: The issue's bound on /health while the cache writes.
HEALTH_MEDIAN_BOUND_S: Final = 0.020

#: At least this many /health answers must have been timed during slow writes (a free
#: reactor gives dozens; one that runs the writes itself about one per write).
MIN_SAMPLES: Final = 3


class ThreadsTests(unittest.TestCase):
    """ReactorThreads runs calls in a real thread of the reactor given; InlineThreads at once."""

    async def test_reactor_threads_run_elsewhere(self) -> None:
        """The call runs off the reactor thread; the Deferred fires on it with the result."""
        threads = ReactorThreads(reactor)
        verifyObject(IThreads, threads)
        here = threading.get_ident()
        ran_in = await threads.defer(threading.get_ident)
        self.assertNotEqual(ran_in, here)
        self.assertEqual(threading.get_ident(), here)

    async def test_reactor_threads_failure(self) -> None:
        """An exception of the call fails the Deferred."""
        with self.assertRaises(ZeroDivisionError):
            await ReactorThreads(reactor).defer(lambda: 1 // 0)

    def test_reactor_threads_need_a_reactor(self) -> None:
        """A test clock runs no threads: ReactorThreads refuses it."""
        self.assertRaises(TypeError, ReactorThreads, Clock())

    def test_inline_threads(self) -> None:
        """InlineThreads runs the call now, on this thread, results and errors in the Deferred."""
        threads = InlineThreads()
        verifyObject(IThreads, threads)
        self.assertEqual(self.successResultOf(threads.defer(threading.get_ident)), threading.get_ident())
        self.failureResultOf(threads.defer(lambda: 1 // 0), ZeroDivisionError)

    def test_threads_for(self) -> None:
        """threads_for gives ReactorThreads for a real reactor, InlineThreads for a test clock."""
        self.assertIsInstance(threads_for(reactor), ReactorThreads)
        self.assertIsInstance(threads_for(Clock()), InlineThreads)


class SlowThreads:
    """An IThreads that sleeps :data:`WRITE_DELAY_S` in a real thread before each call."""

    def __init__(self, inner: IThreads) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        #: Calls sleeping or running now.
        self.active = 0
        #: Names of the functions called so far.
        self.calls: list[str] = []

    def defer(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        def slow() -> Any:
            with self._lock:
                self.active += 1
                self.calls.append(getattr(f, "__name__", repr(f)))
            try:
                time.sleep(WRITE_DELAY_S)
                return f(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        return self._inner.defer(slow)


def sample_health(port: int, slow: SlowThreads, stop: threading.Event) -> list[float]:
    """In a thread: GET /health every SAMPLE_EVERY_S; the latencies of those sent during a slow write."""
    latencies: list[float] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while not stop.is_set():
            during_write = slow.active > 0
            began = time.perf_counter()
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - began
            if response.status != 200:
                raise AssertionError(f"/health answered {response.status}")
            if during_write:
                latencies.append(took)
            stop.wait(SAMPLE_EVERY_S)
    finally:
        connection.close()
    return latencies


class ReactorFreeTests(unittest.TestCase):
    """A transcode whose cache writes are slow does not slow /health down."""

    timeout = 240

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "Album").mkdir(parents=True)
        write_tone(self.root / TRACK, "flac", seconds=14.0, freq=440.0, channels=2)
        self.pool = WorkerPool(reactor, size=1, max_queue=16)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.slow = SlowThreads(ReactorThreads(reactor))
        self.cache = ArtifactCache(Path(self.mktemp()), 256 * 1024 * 1024, threads=self.slow)
        self.built = build_site(
            self.root,
            clock=reactor,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=self.pool, cache=self.cache, tracker=tracker, metrics=metrics, clock=reactor
            ),
        )
        self.port = reactor.listenTCP(0, self.built.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def test_health_answers_while_the_cache_writes(self) -> None:
        """
        A transcoded /stream runs to completion while every chunk write
        sleeps half a second in a thread; /health, asked meanwhile over a
        real socket, answers with a median under 20 ms.
        """
        port = self.port.getHost().port
        stop = threading.Event()
        sampler = deferToThread(sample_health, port, self.slow, stop)
        try:
            response = await treq.get(
                f"http://127.0.0.1:{port}/stream/{TRACK}?format=mp3&bitrate=128", persistent=False
            )
            body = await response.content()
        finally:
            stop.set()
            latencies = await sampler
        self.assertEqual(response.code, 200)
        self.assertEqual(len(body), response.length)
        self.assertGreaterEqual(self.slow.calls.count("put_bytes"), 3)
        self.assertGreaterEqual(len(latencies), MIN_SAMPLES)
        median = statistics.median(latencies)
        self.assertLess(
            median,
            HEALTH_MEDIAN_BOUND_S,
            f"/health median {median * 1000:.1f} ms over {len(latencies)} requests during slow writes",
        )

# -*- test-case-name: tests.test_faults_analytics -*-
"""Analytics while PostgreSQL goes away and comes back, through a TCP proxy the test cuts.

A :class:`~tests.faultproxy.FaultProxy` stands between a real
:class:`~streamsrv.analytics.backends.PostgresAnalyticsStore` (on the
machine's PostgreSQL, in a fresh database) and the server; cutting it resets
the store's connections and refuses new ones, as a stopped or restarting
PostgreSQL does.  Reports keep arriving meanwhile.  What is pinned: nothing
recorded during a short outage is lost, the backlog is bounded and shown by
``check()`` (what ``/health/detailed`` answers), overflow is counted, and
everything is written once the database answers again; a stop during the
outage saves the backlog to a spill file that the next start writes, once.  The outages are a
few hundred milliseconds; ``bench/analytics_outage.py`` runs the 30 s one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial import unittest

from streamsrv.analytics.backends import PostgresAnalyticsStore
from streamsrv.health.checks import DEGRADED, OK
from tests.faultproxy import FaultProxy
from tests.test_analytics_store import count, event, fresh_postgres_dsn, session

#: How long any wait in these tests may take before failing (generous: a loaded CI).
WAIT_S = 60.0

#: The flush interval of the stores under test: short, so retries come quickly.
FLUSH_S = 0.05


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* on the real reactor until true; fail after :data:`WAIT_S`."""
    waited = 0.0
    while not condition():
        if waited > WAIT_S:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


def through(dsn: str, port: int) -> str:
    """*dsn* (a URL) pointed at 127.0.0.1:*port* instead of its server."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresOutageTests(unittest.TestCase):
    """A PostgreSQL outage under a stream of reports: kept, bounded, shown, written on return."""

    def setUp(self) -> None:
        dsn = fresh_postgres_dsn(self)
        parts = urlsplit(dsn)
        if "://" not in dsn or parts.hostname is None:
            raise unittest.SkipTest("the PostgreSQL test DSN must be a URL with a host")
        self.proxy = FaultProxy(reactor, parts.hostname, parts.port or 5432)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.dsn = through(dsn, self.proxy.port)

    def open_store(self, **options: Any) -> PostgresAnalyticsStore:
        """A started store writing through the proxy, stopped at cleanup."""
        store = PostgresAnalyticsStore(
            self.dsn, reactor, reactor=reactor, flush_interval_s=FLUSH_S, **options
        )
        store.startService()
        self.addCleanup(store.stopService)
        return store

    def report_stream(self, store: PostgresAnalyticsStore, per_tick: int) -> tuple[LoopingCall, list[int]]:
        """Record *per_tick* progress events every 10 ms until stopped; the loop and the count sent."""
        sent = [0]

        def tick() -> None:
            for _ in range(per_tick):
                store.record_event(event(sent[0], session_id=f"s-{sent[0] % 7}"))
                sent[0] += 1

        loop = LoopingCall(tick)
        loop.clock = reactor
        loop.start(0.01)
        self.addCleanup(lambda: loop.stop() if loop.running else None)
        return loop, sent

    async def test_outage_loses_nothing(self) -> None:
        """Reports recorded before, during and after an outage are all written once it ends."""
        store = self.open_store(max_buffered=100_000)
        await store.start()
        loop, sent = self.report_stream(store, per_tick=5)
        await until(lambda: store.counters().events_written > 0, "a first write")
        store.record_session(session("s-outage"))
        await self.proxy.cut()
        failures = store.counters().flush_failures
        await until(lambda: store.counters().flush_failures >= failures + 3, "flushes to fail")
        result = store.check()
        self.assertEqual(result.status, DEGRADED)
        self.assertGreater(result.detail["buffer_size"], 0)
        self.assertEqual(result.detail["buffer_limit"], 100_000)
        self.assertEqual(result.detail["events_dropped"], 0)
        self.proxy.restore()
        await until(lambda: store.check().status == OK, "the store to recover")
        loop.stop()
        await store.flush()
        self.assertEqual(await count(store, "events"), sent[0])
        self.assertEqual(await count(store, "sessions"), 1)
        counters = store.counters()
        self.assertEqual(
            (counters.events_written, counters.events_dropped, counters.buffer_size), (sent[0], 0, 0)
        )

    async def test_reads_after_an_outage(self) -> None:
        """Once the database is back, the first read on each pooled connection answers (dead ones go)."""
        from twisted.internet import defer

        store = self.open_store()
        await store.start()
        store.record_event(event(1))
        await store.flush()
        # Both pool threads hold a connection: two reads at once.
        both = lambda: defer.gatherResults(  # noqa: E731
            [defer.ensureDeferred(count(store, "events")) for _ in range(2)]
        )
        await both()
        await self.proxy.cut()
        self.proxy.restore()
        for _ in range(3):
            self.assertEqual(await both(), [1, 1])

    async def test_overflow_is_counted(self) -> None:
        """Beyond *max_buffered* the oldest events are dropped, counted and shown; the rest written."""
        store = self.open_store(flush_threshold=10, max_buffered=50)
        await store.start()
        await self.proxy.cut()
        for n in range(80):
            store.record_event(event(n))
        for n in range(60):
            store.record_session(session(f"s-{n}"))
        failures = store.counters().flush_failures
        # Read between two attempts: a flush in flight holds the batch it is writing.
        await until(
            lambda: store.counters().flush_failures > failures and store.counters().buffer_size == 100,
            "a flush to fail and the backlog to be back",
        )
        detail = store.check().detail
        self.assertEqual(
            (detail["buffer_size"], detail["events_dropped"], detail["sessions_dropped"]), (100, 30, 10)
        )
        self.proxy.restore()
        await until(lambda: store.counters().events_written == 50, "the backlog to be written")
        self.assertEqual(await count(store, "events"), 50)
        self.assertEqual(await count(store, "sessions"), 50)
        rows = await store.query("SELECT MIN(position_s) FROM events")
        self.assertEqual(rows[0][0], 30.0)  # the oldest went first

    async def test_stop_during_outage_spills_then_replays(self) -> None:
        """SIGTERM while PostgreSQL is away: the backlog goes to a spill file in the data dir; a
        store started once it is back writes every row exactly once and deletes the file."""
        from streamsrv.analytics.spill import SpillDirectory
        from streamsrv.threads import ReactorThreads

        spill_dir = Path(self.mktemp()) / "analytics-spill"
        spill = SpillDirectory(spill_dir, ReactorThreads(reactor))
        store = self.open_store(spill=spill)
        await store.start()
        store.record_event(event(0))
        await store.flush()
        await self.proxy.cut()
        for n in range(1, 40):
            store.record_event(event(n))
        store.record_session(session("s-outage", bytes_sent=77))
        await store.stopService()
        self.assertEqual(store.counters().spilled_events, 39)
        self.assertEqual(len(list(spill_dir.glob("*.jsonl"))), 1)
        self.proxy.restore()
        again = self.open_store(spill=SpillDirectory(spill_dir, ReactorThreads(reactor)))
        await again.start()
        self.assertEqual(again.check().detail["replayed_events"], 39)
        await again.flush()
        self.assertEqual(await count(again, "events"), 40)
        rows = await again.query("SELECT COUNT(DISTINCT position_s) FROM events")
        self.assertEqual(int(rows[0][0]), 40)
        rows = await again.query("SELECT bytes_sent FROM sessions WHERE id = ?", ("s-outage",))
        self.assertEqual([int(r[0]) for r in rows], [77])
        self.assertEqual(list(spill_dir.iterdir()), [])
        self.flushLoggedErrors()

    async def test_failed_flush_keeps_records(self) -> None:
        """A flush on a reset connection fails at once and its records are written by the next one."""
        store = self.open_store()
        await store.start()
        await self.proxy.cut()
        store.record_event(event(1))
        import psycopg2  # present: setUp skipped otherwise

        with self.assertRaises(psycopg2.OperationalError):
            await store.flush()
        self.assertEqual(store.counters().buffer_size, 1)
        self.proxy.restore()
        await until(lambda: store.counters().events_written == 1, "the retry")
        self.assertEqual(await count(store, "events"), 1)


class NotificationOutageTests(unittest.TestCase):
    """``POST /api/v1/notifications`` while the outbox's PostgreSQL is unreachable."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from streamsrv.notifications.caps import Caps
        from streamsrv.notifications.outbox import Outbox
        from streamsrv.notifications.outboxdb import PostgresOutboxDatabase
        from streamsrv.notifications.service import NotificationService
        from streamsrv.web.notifications import NotificationRoutes
        from tests.sitehelpers import build_site, jwt_guard, stub_for
        from tests.test_notify_outbox import postgres_schema_dsn
        from tests.test_notify_service import NOW, TEMPLATES

        dsn = postgres_schema_dsn(self)
        parts = urlsplit(dsn)
        self.proxy = FaultProxy(reactor, parts.hostname or "127.0.0.1", parts.port or 5432)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        database = PostgresOutboxDatabase(through(dsn, self.proxy.port))
        self.addCleanup(database.close)
        self.outbox = Outbox(database, reactor, reactor.getThreadPool())
        self.now = NOW
        clock = Clock()
        clock.advance(NOW)
        issuer, guard = jwt_guard("a-notifications-test-secret-long-enough-0123456789", clock)
        self.token = issuer.issue(sub="backend", roles=[], permissions=["notifications:send"], ttl_s=600)
        self.built = build_site(Path(self.mktemp()), clock=clock, guard=guard)
        service = NotificationService(
            self.outbox, TEMPLATES, frozenset({"websocket"}), Caps(4, 12), 100, clock
        )
        self.built.api._notifications = NotificationRoutes(service)
        self.stub = stub_for(self.built)

    async def post(self, body: dict[str, Any]) -> tuple[int, Any, Any]:
        """Status, decoded JSON and headers of one POST."""
        from tests.test_analytics_api import settle

        d = self.stub.post(
            "http://streamsrv.test/api/v1/notifications",
            headers={"Authorization": [f"Bearer {self.token}"]},
            data=json.dumps(body).encode(),
        )
        response = await settle(self.stub, d)
        return response.code, json.loads(await settle(self.stub, response.content())), response.headers

    async def test_unavailable_then_queued(self) -> None:
        """During the outage a send is 503 UNAVAILABLE with Retry-After (nothing claimed as
        queued); after it, the same send is 202 and durable."""
        from tests.test_notify_service import DATA

        await self.outbox.start(self.now)
        body = {"template": "new-release", "user_ids": ["u1"], "data": DATA, "idempotency_key": "k-1"}
        await self.proxy.cut()
        code, answer, headers = await self.post(body)
        self.assertEqual((code, answer["error"]["code"]), (503, "UNAVAILABLE"), answer)
        self.assertTrue(headers.getRawHeaders(b"retry-after"))
        self.proxy.restore()
        code, answer, _ = await self.post(body)
        self.assertEqual(code, 202, answer)
        record = await self.outbox.get(answer["id"])
        self.assertIsNotNone(record)

    async def test_sender_waits_then_sends(self) -> None:
        """The sender's rounds during the outage claim nothing and raise nothing (one warning);
        a notification queued before it is delivered once the database is back."""
        from twisted.logger import globalLogPublisher

        from streamsrv.notifications.caps import Caps
        from streamsrv.notifications.sender import NotificationSender
        from tests.test_notify_service import DATA, TEMPLATES

        await self.outbox.start(self.now)
        code, answer, _ = await self.post({"template": "new-release", "user_ids": ["u1"], "data": DATA})
        self.assertEqual(code, 202, answer)
        published: list[Any] = []
        sender = NotificationSender(
            self.outbox, TEMPLATES, {}, lambda channel, event: published.append(channel), reactor,
            default_caps=Caps(4, 12), worker_id="faults",
        )  # fmt: skip
        warnings: list[Any] = []
        observer = warnings.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        await self.proxy.cut()
        for _ in range(3):
            self.assertEqual(await sender.send_due(), 0)
        self.assertEqual(published, [])
        unavailable = [e for e in warnings if "outbox is unavailable" in e.get("log_format", "")]
        self.assertEqual(len(unavailable), 1)
        self.proxy.restore()
        self.assertEqual(await sender.send_due(), 1)
        self.assertEqual(published, ["user:u1"])

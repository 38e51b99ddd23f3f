# -*- test-case-name: tests.test_analytics_store -*-
"""Tests for the analytics store, its backends, schema and retention: migrations, batched writes, purges.

:class:`AnalyticsStoreContractMixin` holds the behaviour both stores keep; it
runs against :class:`SqliteAnalyticsStore` on temporary files and against
:class:`PostgresAnalyticsStore` on the machine's real PostgreSQL, in a fresh
database per test (created and dropped here).  The flush loop runs on a
:class:`~twisted.internet.task.Clock`; the database threads on the real reactor.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.analytics.backends import PostgresAnalyticsStore, SqliteAnalyticsStore, make_analytics_store
from streamsrv.analytics.retention import DEFAULT_RETENTION_DAYS, AnalyticsRetention
from streamsrv.analytics.store import (
    MIGRATIONS_DIR,
    AnalyticsEvent,
    AnalyticsStore,
    IAnalyticsStore,
    SessionRecord,
    truncate_ip,
)
from streamsrv.db.schema import load_migrations, migration_statements
from streamsrv.health.checks import DEGRADED, FAILING, OK
from tests.services import postgres_admin, postgres_dsn_or_skip

#: 2026-01-01T00:00:00Z, the tests' "now".
NOW = 1_767_225_600.0

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


def fresh_postgres_dsn(testcase: unittest.TestCase) -> str:
    """
    A DSN of a new, empty PostgreSQL database with a random name, dropped at
    the end of *testcase* (skips, or fails under
    ``STREAMSRV_TEST_REQUIRE_SERVICES=1``, without PostgreSQL).
    """
    base = postgres_dsn_or_skip(testcase)
    name = f"streamsrv_test_{secrets.token_hex(6)}"

    postgres_admin(base, f'CREATE DATABASE "{name}"')
    testcase.addCleanup(postgres_admin, base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if "://" in base:
        parts = urlsplit(base)
        return urlunsplit(parts._replace(path=f"/{name}"))
    from psycopg2.extensions import make_dsn

    return str(make_dsn(base, dbname=name))


def event(n: int = 0, session_id: str = "s-1", ts: float = NOW, **kw: Any) -> AnalyticsEvent:
    """A progress event of *session_id* at position *n*."""
    values: dict[str, Any] = {
        "session_id": session_id,
        "user_sub": "alice",
        "track_path": "jazz/So What.mp3",
        "event_type": "playback.progress",
        "ts": ts,
        "position_s": float(n),
    }
    values.update(kw)
    return AnalyticsEvent(**values)


def session(session_id: str = "s-1", **kw: Any) -> SessionRecord:
    """An open stream session of alice on *jazz/So What.mp3*."""
    values: dict[str, Any] = {
        "id": session_id,
        "user_sub": "alice",
        "track_path": "jazz/So What.mp3",
        "source": "stream",
        "started_at": NOW,
        "last_activity_at": NOW,
    }
    values.update(kw)
    return SessionRecord(**values)


class StoreFactory:
    """Opens stores on one database (a SQLite file or a PostgreSQL database)."""

    def __init__(self, testcase: unittest.TestCase, dsn: str) -> None:
        self.testcase = testcase
        self.dsn = dsn

    def open(self, clock: Clock | None = None, **options: Any) -> AnalyticsStore:
        """A store on the database, closed at cleanup."""
        clock = clock or Clock()
        if self.dsn.startswith("sqlite:///"):
            store: AnalyticsStore = SqliteAnalyticsStore(
                Path(self.dsn[len("sqlite:///") :]), clock, reactor=reactor, **options
            )
        else:
            store = PostgresAnalyticsStore(self.dsn, clock, reactor=reactor, **options)
        self.testcase.addCleanup(store.close)
        return store


def sqlite_factory(testcase: unittest.TestCase) -> StoreFactory:
    """Stores on a fresh SQLite file in a temporary directory."""
    return StoreFactory(testcase, f"sqlite:///{Path(testcase.mktemp()).resolve()}/analytics.sqlite3")


def postgres_factory(testcase: unittest.TestCase) -> StoreFactory:
    """Stores on a fresh PostgreSQL database."""
    return StoreFactory(testcase, fresh_postgres_dsn(testcase))


async def count(store: AnalyticsStore, table: str) -> int:
    """The number of rows in *table*."""
    rows = await store.query(f"SELECT COUNT(*) FROM {table}")
    return int(rows[0][0])


class AnalyticsStoreContractMixin(_MixinBase):
    """What every analytics store does; subclasses set :meth:`factory`."""

    def factory(self) -> StoreFactory:
        raise NotImplementedError

    def setUp(self) -> None:
        self.stores = self.factory()
        self.clock = Clock()
        self.clock.advance(NOW)

    def test_interface(self) -> None:
        """The store provides IAnalyticsStore."""
        self.assertTrue(verifyObject(IAnalyticsStore, self.stores.open()))

    async def test_migrations_applied_once(self) -> None:
        """Start applies every migration and records it; a second start applies nothing."""
        first = self.stores.open(self.clock)
        await first.start()
        versions = [m.version for m in load_migrations(MIGRATIONS_DIR)]
        self.assertEqual(first.applied_at_start, versions)
        self.assertEqual(await first.applied_migrations(), versions)
        await first.close()

        second = self.stores.open(self.clock)
        await second.start()
        self.assertEqual(second.applied_at_start, [])
        self.assertEqual(await second.applied_migrations(), versions)
        self.assertEqual(await count(second, "schema_migrations"), len(versions))

    async def test_concurrent_starts(self) -> None:
        """Two stores starting together on one database migrate it once."""
        first, second = self.stores.open(self.clock), self.stores.open(self.clock)
        await first.start()
        await second.start()
        versions = [m.version for m in load_migrations(MIGRATIONS_DIR)]
        self.assertEqual(sorted(first.applied_at_start + second.applied_at_start), versions)

    async def test_interval_flush(self) -> None:
        """Records are written by the flush loop, once per interval, in one batch."""
        store = self.stores.open(self.clock, flush_interval_s=1.0)
        store.startService()
        store.record_session(session())
        for n in range(3):
            store.record_event(event(n))
        self.assertEqual(store.counters().buffer_size, 4)
        self.clock.advance(1.0)
        await store.flush()  # waits for the loop's flush in progress
        self.assertEqual(await count(store, "events"), 3)
        self.assertEqual(await count(store, "sessions"), 1)
        counters = store.counters()
        self.assertEqual(
            (counters.events_written, counters.sessions_written, counters.buffer_size), (3, 1, 0)
        )

    async def test_session_upsert(self) -> None:
        """Recording a session again replaces its row; the latest state wins."""
        store = self.stores.open(self.clock)
        store.record_session(session(bytes_sent=10))
        await store.flush()
        store.record_session(session(bytes_sent=20, seconds_listened=5.5))
        store.record_session(session(bytes_sent=30, seconds_listened=7.5, completed=True, ended_at=NOW + 60))
        await store.flush()
        rows = await store.query(
            "SELECT bytes_sent, seconds_listened, completed, ended_at FROM sessions WHERE id = ?", ("s-1",)
        )
        self.assertEqual(
            [(int(r[0]), float(r[1]), int(r[2]), float(r[3])) for r in rows], [(30, 7.5, 1, NOW + 60)]
        )

    async def test_session_built_at_flush(self) -> None:
        """``record_session_later``: the record is built when flushed, from the state of then; a
        builder that fails is logged and its session left out, the others written."""
        store = self.stores.open(self.clock)
        state = {"bytes_sent": 10}
        built: list[int] = []

        def build() -> SessionRecord:
            built.append(state["bytes_sent"])
            return session(bytes_sent=state["bytes_sent"])

        def broken() -> SessionRecord:
            raise ValueError("no record")

        for sent in (10, 20, 30):
            state["bytes_sent"] = sent
            store.record_session_later("s-1", build)
        store.record_session_later("s-2", broken)
        self.assertEqual((built, store.counters().buffer_size), ([], 2))
        await store.flush()
        self.assertEqual(built, [30])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        rows = await store.query("SELECT id, bytes_sent FROM sessions")
        self.assertEqual([(r[0], int(r[1])) for r in rows], [("s-1", 30)])
        # An eager record of the same session replaces the later one (a closed session's last word).
        store.record_session_later("s-1", build)
        store.record_session(session(bytes_sent=99, ended_at=NOW + 5))
        await store.flush()
        rows = await store.query("SELECT bytes_sent FROM sessions WHERE id = ?", ("s-1",))
        self.assertEqual([int(r[0]) for r in rows], [99])

    def test_later_sessions_beyond_the_bound_are_counted(self) -> None:
        """``record_session_later`` past *max_buffered* drops the oldest session and counts it."""
        store = self.stores.open(self.clock, flush_threshold=2, max_buffered=2)
        store._failing = True  # no early flush: the buffer only grows
        for n in range(5):
            store.record_session_later(f"s-{n}", lambda: session())
        counters = store.counters()
        self.assertEqual((counters.buffer_size, counters.sessions_dropped), (2, 3))

    async def test_round_trip_fields(self) -> None:
        """Every field of an event and a session is stored as given."""
        store = self.stores.open(self.clock)
        full = session(
            "s-9",
            source="hls",
            client_info="Mozilla/5.0",
            ip_network="203.0.113.0/24",
            client_session_id="c-1",
            duration_s=300.0,
            max_position_s=12.0,
        )
        store.record_session(full)
        store.record_event(
            event(
                session_id="s-9", event_type="bitrate.switch", from_bitrate_kbps=64.0, to_bitrate_kbps=128.0
            )
        )
        store.record_event(
            event(session_id="s-9", event_type="playback.play", startup_ms=250.0, bitrate_kbps=128.0)
        )
        await store.flush()
        rows = await store.query(
            "SELECT source, client_info, ip_network, client_session_id, duration_s FROM sessions"
        )
        self.assertEqual([tuple(rows[0])], [("hls", "Mozilla/5.0", "203.0.113.0/24", "c-1", 300.0)])
        rows = await store.query(
            "SELECT event_type, startup_ms, bitrate_kbps, from_bitrate_kbps, to_bitrate_kbps "
            "FROM events ORDER BY id"
        )
        self.assertEqual(
            [tuple(r) for r in rows],
            [("bitrate.switch", None, None, 64.0, 128.0), ("playback.play", 250.0, 128.0, None, None)],
        )

    async def test_threshold_flushes_early(self) -> None:
        """A buffer reaching the threshold is flushed without waiting for the interval."""
        store = self.stores.open(self.clock, flush_threshold=10, max_buffered=100)
        await store.start()
        for n in range(10):
            store.record_event(event(n))
        self.assertEqual(store.counters().buffer_size, 0)  # handed to the database already
        await store.flush()
        self.assertEqual(await count(store, "events"), 10)

    async def test_burst_then_stop_loses_nothing(self) -> None:
        """
        The SIGTERM analogue: 10 000 events recorded in a burst, the service
        stopped at once; a reopened store counts all 10 000.
        """
        store = self.stores.open(self.clock)
        store.startService()
        store.record_session(session())
        for n in range(10_000):
            store.record_event(event(n))
        await store.stopService()
        self.assertEqual(store.counters().events_written, 10_000)

        reopened = self.stores.open(self.clock)
        self.assertEqual(await count(reopened, "events"), 10_000)
        self.assertEqual(await count(reopened, "sessions"), 1)

    async def test_failed_flush_keeps_and_retries(self) -> None:
        """A flush that fails keeps its records, counts the failure, and the next one writes them."""
        store = self.stores.open(self.clock)
        await store.start()
        write = store._write
        calls = []

        def failing_once(txn: Any, *args: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("database is down")
            write(txn, *args)

        store._write = failing_once  # type: ignore[method-assign, assignment]
        store.record_session(session())
        store.record_event(event(1))
        with self.assertRaises(RuntimeError):
            await store.flush()
        self.assertEqual(store.counters().flush_failures, 1)
        self.assertEqual(store.counters().buffer_size, 2)
        self.assertEqual(store.check().status, DEGRADED)
        store.record_event(event(2))
        self.assertEqual(await store.flush(), 3)
        self.assertEqual(store.check().status, OK)
        rows = await store.query("SELECT position_s FROM events ORDER BY id")
        self.assertEqual([float(r[0]) for r in rows], [1.0, 2.0])  # the old batch first

    async def test_buffer_bounded_while_failing(self) -> None:
        """While writes fail the buffer stays bounded: the oldest events are dropped and counted."""
        store = self.stores.open(self.clock, flush_threshold=5, max_buffered=10)
        await store.start()

        def down(txn: Any, *args: Any) -> None:
            raise RuntimeError("database is down")

        store._write = down  # type: ignore[method-assign, assignment]
        for n in range(15):
            store.record_event(event(n))
        with self.assertRaises(RuntimeError):
            await store.flush()
        counters = store.counters()
        self.assertEqual((counters.buffer_size, counters.events_dropped), (10, 5))
        del store._write  # the real method again
        await store.flush()
        rows = await store.query("SELECT position_s FROM events ORDER BY id")
        self.assertEqual([float(r[0]) for r in rows], [float(n) for n in range(5, 15)])

    async def test_records_after_close_are_counted(self) -> None:
        """Nothing is written after close; late events are counted as dropped."""
        store = self.stores.open(self.clock)
        await store.start()
        await store.close()
        store.record_event(event())
        self.assertEqual(store.counters().events_dropped, 1)
        self.assertEqual(store.counters().buffer_size, 0)

    async def test_purge_before(self) -> None:
        """purge_before deletes events and sessions older than the cut-off, nothing newer."""
        store = self.stores.open(self.clock)
        store.record_session(session("old", started_at=NOW - 500, last_activity_at=NOW - 400))
        store.record_session(session("new", started_at=NOW - 50, last_activity_at=NOW))
        store.record_event(event(1, "old", ts=NOW - 400))
        store.record_event(event(2, "new", ts=NOW))
        await store.flush()
        self.assertEqual(await store.purge_before(NOW - 100), 2)
        self.assertEqual([r[0] for r in await store.query("SELECT id FROM sessions")], ["new"])
        self.assertEqual([r[0] for r in await store.query("SELECT session_id FROM events")], ["new"])

    async def test_check(self) -> None:
        """check() is failing before the schema is ready and ok after."""
        store = self.stores.open(self.clock)
        self.assertEqual(store.check().status, FAILING)
        await store.start()
        self.assertEqual(store.check().status, OK)
        self.assertEqual(store.check().detail["dialect"], store.dialect)


class SqliteAnalyticsStoreTests(AnalyticsStoreContractMixin, unittest.TestCase):
    """The contract on SQLite."""

    def factory(self) -> StoreFactory:
        return sqlite_factory(self)

    async def test_wal(self) -> None:
        """The SQLite file is in WAL mode."""
        store = self.stores.open(self.clock)
        rows = await store.query("PRAGMA journal_mode")
        self.assertEqual(rows[0][0], "wal")


class PostgresAnalyticsStoreTests(AnalyticsStoreContractMixin, unittest.TestCase):
    """The contract on the machine's PostgreSQL, a fresh database per test."""

    def factory(self) -> StoreFactory:
        return postgres_factory(self)


class _PurgeRecorder:
    """Stands in for a store: records the cut-offs it is asked to purge before."""

    def __init__(self, fail: bool = False) -> None:
        self.cutoffs: list[float] = []
        self.fail = fail

    def purge_before(self, cutoff: float) -> Deferred[int]:
        self.cutoffs.append(cutoff)
        if self.fail:
            return fail(RuntimeError("database is down"))
        return succeed(3)


class AnalyticsRetentionTests(unittest.TestCase):
    """The retention timer."""

    def test_purges_at_start_and_every_interval(self) -> None:
        """The first purge runs at start, then one per interval, each with now minus the retention."""
        clock = Clock()
        clock.advance(NOW)
        store = _PurgeRecorder()
        retention = AnalyticsRetention(store, clock, retention_days=30, interval_s=3600)  # type: ignore[arg-type]
        retention.startService()
        self.addCleanup(retention.stopService)
        clock.advance(3600)
        self.assertEqual(store.cutoffs, [NOW - 30 * 86400, NOW + 3600 - 30 * 86400])
        self.assertEqual(retention.purged, 6)

    def test_failure_keeps_the_loop(self) -> None:
        """A failing purge is logged and the next interval tries again."""
        clock = Clock()
        store = _PurgeRecorder(fail=True)
        retention = AnalyticsRetention(store, clock, interval_s=10)  # type: ignore[arg-type]
        retention.startService()
        self.addCleanup(retention.stopService)
        clock.advance(10)
        self.assertEqual(len(store.cutoffs), 2)
        self.assertEqual(retention.purged, 0)

    def test_default_retention(self) -> None:
        """The default retention is a year."""
        self.assertEqual(DEFAULT_RETENTION_DAYS, 365)


class PostgresUnreachableTests(unittest.TestCase):
    """A PostgreSQL that cannot be reached: records stay buffered, failures are counted."""

    async def test_unreachable(self) -> None:
        """Start fails, flushes fail and count, the buffer is kept, close gives up and logs."""
        try:
            import psycopg2
        except ImportError:
            raise unittest.SkipTest("psycopg2 is not installed")
        store = PostgresAnalyticsStore("postgresql://nobody@127.0.0.1:1/none", Clock(), reactor=reactor)
        with self.assertRaises(psycopg2.OperationalError):
            await store.start()
        store.record_event(event())
        with self.assertRaises(psycopg2.OperationalError):
            await store.flush()
        self.assertEqual(store.counters().flush_failures, 1)
        self.assertEqual(store.counters().buffer_size, 1)
        self.assertEqual(store.check().status, FAILING)
        await store.close()
        self.flushLoggedErrors()


class TruncateIpTests(unittest.TestCase):
    """Addresses are kept as networks only."""

    def test_ipv4(self) -> None:
        """An IPv4 address becomes its /24."""
        self.assertEqual(truncate_ip("203.0.113.77"), "203.0.113.0/24")

    def test_ipv6(self) -> None:
        """An IPv6 address becomes its /48."""
        self.assertEqual(truncate_ip("2001:db8:1234:5678::1"), "2001:db8:1234::/48")

    def test_mapped(self) -> None:
        """An IPv4-mapped IPv6 address counts as IPv4."""
        self.assertEqual(truncate_ip("::ffff:198.51.100.9"), "198.51.100.0/24")

    def test_invalid(self) -> None:
        """No address, or an invalid one, is None."""
        self.assertIsNone(truncate_ip(None))
        self.assertIsNone(truncate_ip("not-an-ip"))

    def test_record_refuses_an_address(self) -> None:
        """A session record refuses a network narrower than /24 or /48, so an address cannot slip in."""
        for narrow in ("203.0.113.77/32", "203.0.113.0/25", "2001:db8::/64", "203.0.113.77"):
            with self.assertRaises(ValueError):
                session(ip_network=narrow)


class MigrationFilesTests(unittest.TestCase):
    """Loading and splitting migration files."""

    def test_shipped(self) -> None:
        """The shipped migrations are numbered from 1 without gaps."""
        migrations = load_migrations(MIGRATIONS_DIR)
        self.assertEqual(migrations[0].version, 1)
        self.assertEqual(migrations[0].name, "initial")

    def test_gap_refused(self) -> None:
        """A gap in the numbering is refused."""
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "0001_a.sql").write_text("SELECT 1;\n")
        (directory / "0003_c.sql").write_text("SELECT 1;\n")
        with self.assertRaises(ValueError):
            load_migrations(directory)

    def test_misnamed_refused(self) -> None:
        """A file not named NNNN_name.sql is refused."""
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "1_a.sql").write_text("SELECT 1;\n")
        with self.assertRaises(ValueError):
            load_migrations(directory)

    def test_statements(self) -> None:
        """Comments are removed, placeholders substituted, statements split on semicolons."""
        sql = (
            "-- a comment; with a semicolon\nCREATE TABLE t (id {{AUTO_ID}});\n\nCREATE INDEX i ON t (id);\n"
        )
        self.assertEqual(
            migration_statements(sql, {"{{AUTO_ID}}": "INTEGER PRIMARY KEY"}),
            ["CREATE TABLE t (id INTEGER PRIMARY KEY)", "CREATE INDEX i ON t (id)"],
        )

    def test_unknown_placeholder(self) -> None:
        """A placeholder the dialect does not define is refused."""
        with self.assertRaises(ValueError):
            migration_statements("CREATE TABLE t (id {{NOPE}});", {})


class MakeAnalyticsStoreTests(unittest.TestCase):
    """Choosing the store from the DSN."""

    def test_default(self) -> None:
        """No DSN: SQLite in the data dir."""
        store = make_analytics_store(None, Path("/data"), reactor)
        assert isinstance(store, SqliteAnalyticsStore)
        self.assertEqual(store.path, Path("/data/analytics.sqlite3"))

    def test_sqlite(self) -> None:
        """A sqlite:/// DSN names the file (four slashes: absolute)."""
        store = make_analytics_store("sqlite:////var/x.db", Path("/data"), reactor)
        assert isinstance(store, SqliteAnalyticsStore)
        self.assertEqual(store.path, Path("/var/x.db"))

    def test_postgres(self) -> None:
        """A postgresql:// or postgres:// DSN: PostgreSQL (nothing is connected yet)."""
        for dsn in ("postgresql://u@h/db", "postgres://u@h/db"):
            self.assertIsInstance(make_analytics_store(dsn, Path("/data"), reactor), PostgresAnalyticsStore)

    def test_other(self) -> None:
        """Any other DSN is refused without quoting it."""
        with self.assertRaises(ValueError) as caught:
            make_analytics_store("mysql://u:secret@h/db", Path("/data"), reactor)
        self.assertNotIn("secret", str(caught.exception))

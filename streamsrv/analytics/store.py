# -*- test-case-name: tests.test_analytics_store -*-
"""Where listening sessions and playback events are kept: SQLite by default, PostgreSQL by DSN.

An :class:`IAnalyticsStore` takes :class:`SessionRecord` and
:class:`AnalyticsEvent` values into an in-memory buffer and writes them in one
transaction per flush: every *flush_interval_s* (a :class:`~streamsrv.service.PeriodicService`
on an injected clock), early when the buffer passes *flush_threshold*, on
:meth:`~IAnalyticsStore.flush` and on :meth:`~IAnalyticsStore.close` (so a
SIGTERM loses nothing; a ``kill -9`` loses at most one interval).  While the
database fails, the buffer is kept (at most *max_buffered* events; beyond
that the oldest are dropped and counted) and the write retried; if it
still fails at close, what is held goes to a spill file
(:mod:`streamsrv.analytics.spill`) that the next start replays.  Both
backends (:mod:`streamsrv.analytics.backends`) run the same versioned
migrations (:mod:`streamsrv.db.schema`) at start, in one transaction,
recorded in ``schema_migrations``;
:class:`~streamsrv.analytics.retention.AnalyticsRetention` deletes what is
older than the retention.

This module must never store a full IP address (a :class:`SessionRecord`
refuses anything narrower than a /24 IPv4 or /48 IPv6 network), never log a
DSN (it may carry a password), and never let a database failure raise into
the code that records.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from streamsrv.analytics.records import EVENT_COLUMNS as _EVENT_COLUMNS
from streamsrv.analytics.records import (
    EVENT_TYPES,
    SOURCES,
    AnalyticsEvent,
    SessionRecord,
    SpilledEvent,
    truncate_ip,
)
from streamsrv.analytics.records import SESSION_COLUMNS as _SESSION_COLUMNS
from streamsrv.analytics.spill import Claim, SpillDirectory
from streamsrv.db.schema import Dialect, History, apply_migrations, load_migrations
from streamsrv.health.checks import DEGRADED, FAILING, OK, CheckResult
from streamsrv.service import PeriodicService

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_S",
    "DEFAULT_FLUSH_THRESHOLD",
    "DEFAULT_MAX_BUFFERED",
    "EVENT_TYPES",
    "SOURCES",
    "AnalyticsEvent",
    "AnalyticsStore",
    "IAnalyticsStore",
    "SessionRecord",
    "SpilledEvent",
    "StoreCounters",
    "describe_failure",
    "truncate_ip",
]

log = Logger()


class _LaterRecord:
    """A session's record, built when written (:meth:`AnalyticsStore.record_session_later`)."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[], SessionRecord]) -> None:
        self.build = build

    def row(self) -> tuple[Any, ...]:
        return self.build().row()


def _session_records(sessions: dict[str, SessionRecord | _LaterRecord]) -> list[SessionRecord]:
    """The records of *sessions*, built; one that cannot be built is logged and left out."""
    records = []
    for session in sessions.values():
        try:
            records.append(session.build() if isinstance(session, _LaterRecord) else session)
        except Exception:
            log.failure("analytics: a session record could not be built; it is not written")
    return records


def _event_rows(events: list[AnalyticsEvent]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of *events*: the plain ones, and the replayed ones (with their ``spill_key``)."""
    plain: list[tuple[Any, ...]] = []
    spilled: list[tuple[Any, ...]] = []
    for event in events:
        (spilled if type(event) is SpilledEvent else plain).append(event.row())
    return plain, spilled


def _session_rows(sessions: dict[str, SessionRecord | _LaterRecord]) -> list[tuple[Any, ...]]:
    """The rows of *sessions*; one whose record cannot be built is logged and left out."""
    rows = []
    for session in sessions.values():
        try:
            rows.append(session.row())
        except Exception:
            log.failure("analytics: a session record could not be built; it is not written")
    return rows


#: Seconds between two flushes of the buffer: at most this much is lost on ``kill -9``.
#: Where the analytics store's versioned migrations live.
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"

#: Where it records them (the table name predates the other stores), and its
#: PostgreSQL advisory lock key (an arbitrary constant: "strs").
HISTORY: Final = History("schema_migrations", 0x73747273)

DEFAULT_FLUSH_INTERVAL_S: Final = 1.0

#: A buffer holding this many records is flushed at once, without waiting for the interval.
DEFAULT_FLUSH_THRESHOLD: Final = 5_000

#: The most events kept in memory while the database fails; beyond it the oldest are dropped.
DEFAULT_MAX_BUFFERED: Final = 100_000

#: How often a flush may be attempted when the store closes (a broken
#: PostgreSQL connection is replaced after its first failure).
CLOSE_FLUSH_ATTEMPTS: Final = 2


@dataclass(frozen=True)
class StoreCounters:
    """
    What a store has done since it was created, for ``/metrics``.

    :ivar events_written: Events committed to the database.
    :ivar sessions_written: Session records committed (one per session per flush).
    :ivar flush_failures: Flushes (or migrations) that failed.
    :ivar events_dropped: Events dropped: the buffer overflowed while the
        database failed, or they arrived after the store closed.
    :ivar sessions_dropped: Session states dropped because more than
        *max_buffered* distinct sessions waited (the oldest go first).
    :ivar buffer_size: Events and session records waiting to be written.
    :ivar spilled_events: Events written to a spill file at close (the database failed).
    :ivar spilled_sessions: Session states written to a spill file at close.
    :ivar replayed_events: Events taken back from spill files at start.
    :ivar replayed_sessions: Session states taken back from spill files at start.
    :ivar spill_files_set_aside: Spill files that did not parse, renamed ``*.bad``.
    """

    events_written: int
    sessions_written: int
    flush_failures: int
    events_dropped: int
    buffer_size: int
    sessions_dropped: int = 0
    spilled_events: int = 0
    spilled_sessions: int = 0
    replayed_events: int = 0
    replayed_sessions: int = 0
    spill_files_set_aside: int = 0


_UPSERT_SESSION_HEAD: Final = f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)})"
_UPSERT_SESSION_TAIL: Final = "ON CONFLICT (id) DO UPDATE SET " + ", ".join(
    f"{column} = excluded.{column}" for column in _SESSION_COLUMNS if column != "id"
)
_INSERT_EVENT_HEAD: Final = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)})"
_INSERT_SPILLED_HEAD: Final = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}, spill_key)"
_INSERT_SPILLED_TAIL: Final = "ON CONFLICT (spill_key) WHERE spill_key IS NOT NULL DO NOTHING"


# --- the store ------------------------------------------------------------------------


class IAnalyticsStore(Interface):
    """
    Listening sessions and playback events, buffered in memory and written in batches.

    Recording never fails and never waits; what is recorded is written by the
    next flush.  Times are Unix seconds.
    """

    dialect: str
    """``"sqlite"`` or ``"postgresql"``."""

    def start() -> Deferred[None]:
        """Open the database and apply pending migrations; records may be made before it fires."""

    def close() -> Deferred[None]:
        """Flush everything buffered, then release the database; nothing is written after."""

    def record_session(session: SessionRecord) -> None:  # noqa: N805 - zope interface
        """Buffer the current state of a session (replacing any buffered state of the same ``id``)."""

    def record_event(event: AnalyticsEvent) -> None:  # noqa: N805 - zope interface
        """Buffer one event."""

    def flush() -> Deferred[int]:
        """
        Write everything buffered now, in one transaction, after any flush in progress.

        Fires with the number of records written; fails if the database did
        (the records stay buffered for the next attempt).
        """

    def query(sql: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:  # noqa: N805
        """Run a read-only *sql* written with ``?`` placeholders (for :mod:`.queries`)."""

    def purge_before(cutoff: float) -> Deferred[int]:  # noqa: N805 - zope interface
        """Delete events and sessions last active before *cutoff*; fires with the rows deleted."""

    def applied_migrations() -> Deferred[list[int]]:
        """The versions recorded in ``schema_migrations``, ascending."""

    def counters() -> StoreCounters:
        """What the store has written, dropped and failed so far."""

    def check() -> CheckResult:
        """For ``/health/detailed``: failing before the schema is ready, degraded while flushes fail."""


@implementer(IAnalyticsStore)
class AnalyticsStore(Service):
    """
    The buffering, flushing and migrating common to both databases.

    A :class:`~twisted.application.service.Service`: ``startService`` opens
    the database, migrates and starts the flush loop; ``stopService`` stops
    the loop, flushes what is buffered and closes.  Put it in the service
    tree before anything that records into it, so it stops after them.
    """

    dialect: str

    def __init__(
        self,
        dialect: Dialect,
        clock: IReactorTime,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_threshold: int = DEFAULT_FLUSH_THRESHOLD,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        spill: SpillDirectory | None = None,
    ) -> None:
        """
        :param clock: Times the flush loop and stamps ``schema_migrations``.
        :param flush_interval_s: Seconds between flushes.
        :param flush_threshold: A buffer this long is flushed without waiting.
        :param max_buffered: The most events (and, separately, sessions) kept
            while the database fails.
        :param spill: Where what the final flush could not write goes, and
            what :meth:`start` takes back (``None``: it is lost, and logged).
        """
        if not (math.isfinite(flush_interval_s) and flush_interval_s > 0):
            raise ValueError("flush_interval_s must be a number > 0")
        if not 1 <= flush_threshold <= max_buffered:
            raise ValueError("need 1 <= flush_threshold <= max_buffered")
        self.setName("analytics-store")
        self._dialect = dialect
        self.dialect = dialect.name
        self._clock = clock
        self._threshold = flush_threshold
        self._max = max_buffered
        self._events: deque[AnalyticsEvent] = deque()
        self._sessions: dict[str, SessionRecord | _LaterRecord] = {}
        self._lock = DeferredLock()
        self._pool: adbapi.ConnectionPool | None = None
        self._migrated = False
        #: The migration versions this instance applied (empty if the schema was current).
        self.applied_at_start: list[int] = []
        self._closed = False
        self._failing = False
        self._events_written = 0
        self._sessions_written = 0
        self._flush_failures = 0
        self._events_dropped = 0
        self._sessions_dropped = 0
        self._spill = spill
        self._took_spills = False
        #: Spill files whose records are in the buffer: deleted once a flush wrote them.
        self._claims: list[Claim] = []
        self._spilled = [0, 0]  # events, sessions
        self._replayed = [0, 0]
        self._set_aside = 0
        self._migrations = load_migrations(MIGRATIONS_DIR)
        self._flusher = PeriodicService(
            flush_interval_s, self._tick, clock=clock, now=False, what="analytics: the flush loop"
        )

    # -- to be provided by each database ------------------------------------------

    def _open_pool(self) -> adbapi.ConnectionPool:
        raise NotImplementedError

    # -- the service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start().addErrback(self._log_start_failure)
        self._flusher.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.close()

    def _log_start_failure(self, failure: Failure) -> None:
        log.warn(
            "analytics: the {dialect} store could not start ({error}); records are buffered and retried",
            dialect=self.dialect,
            error=describe_failure(failure),
            event_kind="degraded",
        )

    # -- opening and closing --------------------------------------------------------------

    def start(self) -> Deferred[None]:
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        if self._spill is not None and not self._took_spills:
            # Under the flush lock: no flush runs while the records and their files come in.
            await self._lock.run(lambda: ensureDeferred(self._take_spills()))
        await self._ensure_migrated()

    async def _take_spills(self) -> None:
        """Put the records of the spill files nobody holds back into the buffer (once per store)."""
        if self._took_spills or self._spill is None:
            return
        self._took_spills = True
        try:
            taken = await self._spill.take(self._max)  # logs what it took and set aside
        except Exception:
            log.failure("analytics: the spill files could not be read; they stay for the next start")
            return
        self._set_aside += len(taken.set_aside)
        self._claims.extend(taken.claims)
        self._requeue(list(taken.events), dict(taken.sessions))  # older than anything recorded since
        self._events_dropped += taken.events_dropped
        self._sessions_dropped += taken.sessions_dropped
        self._replayed[0] += len(taken.events)
        self._replayed[1] += len(taken.sessions)

    def _db(self) -> adbapi.ConnectionPool:
        if self._closed:
            raise RuntimeError("the analytics store is closed")
        if self._pool is None:
            self._pool = self._open_pool()
        return self._pool

    async def _ensure_migrated(self) -> None:
        if self._migrated:
            return
        applied: list[int] = await self._db().runInteraction(
            apply_migrations, self._dialect, self._migrations, self._clock.seconds(), history=HISTORY
        )
        self._migrated = True
        self.applied_at_start = applied
        if applied:
            log.info(
                "analytics: {dialect} schema migrated to version {version} (applied {applied})",
                dialect=self.dialect,
                version=self._migrations[-1].version,
                applied=applied,
            )

    def close(self) -> Deferred[None]:
        return ensureDeferred(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        # Not waited for: a flush in progress holds the lock the final flush queues on.
        self._flusher.stopService()
        for attempt in range(1, CLOSE_FLUSH_ATTEMPTS + 1):
            try:
                await self.flush()
                break
            except Exception:
                if attempt == CLOSE_FLUSH_ATTEMPTS:
                    await self._spill_the_rest()
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def _spill_the_rest(self) -> None:
        """The final flush failed: write what is held to a spill file (or log it as lost)."""
        self._closed = True  # what arrives from now on is counted as dropped, not held
        events, sessions = list(self._events), _session_records(self._sessions)
        self._events, self._sessions = deque(), {}
        claims, self._claims = self._claims, []
        if self._spill is None:
            _log_lost(len(events), len(sessions), "no spill directory")
            return
        try:
            path = await self._spill.write(events, sessions)
        except Exception:
            _log_lost(len(events), len(sessions), describe_failure(Failure()))
            await self._release(claims, delete=False)  # theirs stay for the next start
            return
        self._spilled[0] += len(events)
        self._spilled[1] += len(sessions)
        log.warn(
            "analytics: {events} events and {sessions} sessions could not be written before closing; "
            "saved to {path}, written at the next start",
            events=len(events),
            sessions=len(sessions),
            path=str(path),
            event_kind="degraded",
        )
        await self._release(claims)  # their records are in the new file

    # -- recording ---------------------------------------------------------------------

    def record_session(self, session: SessionRecord) -> None:
        if self._closed:
            return
        self._sessions.pop(session.id, None)  # re-inserted last: the newest state is dropped last
        self._sessions[session.id] = session
        if len(self._sessions) > self._max:
            del self._sessions[next(iter(self._sessions))]
            self._sessions_dropped += 1
        self._maybe_flush_early()

    def record_session_later(self, session_id: str, build: Callable[[], SessionRecord]) -> None:
        """:meth:`record_session` for a record that *build* makes when it is written (at the next flush).

        For a tracker that changes a session on every request: the record is
        built once per flush, from the session as it then is, not once per
        change.  A *build* that raises is logged and its session left out of
        that flush (as :meth:`record_session` would never have been called).
        """
        if self._closed:
            return
        sessions = self._sessions
        pending = sessions.pop(session_id, None)
        if not (isinstance(pending, _LaterRecord) and pending.build is build):
            pending = _LaterRecord(build)
        sessions[session_id] = pending
        if len(sessions) > self._max:
            del sessions[next(iter(sessions))]
            self._sessions_dropped += 1
        self._maybe_flush_early()

    def record_event(self, event: AnalyticsEvent) -> None:
        if self._closed:
            self._events_dropped += 1
            return
        if len(self._events) >= self._max:
            self._events.popleft()
            self._events_dropped += 1
        self._events.append(event)
        self._maybe_flush_early()

    def _maybe_flush_early(self) -> None:
        # While the database fails, only the interval retries: no storm of attempts.
        if len(self._events) + len(self._sessions) >= self._threshold and not (
            self._lock.locked or self._failing
        ):
            self.flush().addErrback(lambda _: None)  # counted and logged by the flush

    # -- flushing ----------------------------------------------------------------------

    def _tick(self) -> Deferred[None]:
        return self.flush().addCallbacks(lambda _: None, lambda _: None)

    def flush(self) -> Deferred[int]:
        return self._lock.run(lambda: ensureDeferred(self._flush_once()))

    async def _flush_once(self) -> int:
        claims, self._claims = self._claims, []
        if not self._events and not self._sessions:
            await self._release(claims)  # their records were dropped or superseded
            return 0
        events = list(self._events)
        sessions = self._sessions
        self._events = deque()
        self._sessions = {}
        try:
            await self._ensure_migrated()
            plain, spilled = _event_rows(events)
            await self._db().runInteraction(self._write, plain, _session_rows(sessions), spilled)
        except Exception:
            self._requeue(events, sessions)
            self._claims = claims + self._claims
            self._flush_failures += 1
            failure = Failure()
            if not self._failing:
                self._failing = True
                log.warn(
                    "analytics: writing to {dialect} failed ({error}); {count} records kept and retried",
                    dialect=self.dialect,
                    error=describe_failure(failure),
                    count=len(self._events) + len(self._sessions),
                    event_kind="degraded",
                )
            failure.raiseException()
        if self._failing:
            self._failing = False
            log.info("analytics: writing to {dialect} works again", dialect=self.dialect)
        self._events_written += len(events)
        self._sessions_written += len(sessions)
        await self._release(claims)
        return len(events) + len(sessions)

    async def _release(self, claims: list[Claim], *, delete: bool = True) -> None:
        """Unlock *claims* and delete their files, whose records were written or spilled again.

        A failure is logged: the files left behind are replayed by a later start.
        """
        if not claims or self._spill is None:
            return
        try:
            await self._spill.release(claims, delete=delete)
        except Exception:
            log.failure(
                "analytics: replayed spill files could not be deleted (a replay writes nothing twice)"
            )

    def _requeue(
        self, events: list[AnalyticsEvent], sessions: dict[str, SessionRecord | _LaterRecord]
    ) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within the bounds."""
        merged = deque(events)
        merged.extend(self._events)
        overflow = len(merged) - self._max
        for _ in range(max(0, overflow)):
            merged.popleft()
        self._events_dropped += max(0, overflow)
        self._events = merged
        newer = self._sessions
        self._sessions = {sid: s for sid, s in sessions.items() if sid not in newer}
        self._sessions.update(newer)
        while len(self._sessions) > self._max:
            del self._sessions[next(iter(self._sessions))]
            self._sessions_dropped += 1

    def _write(
        self,
        txn: Any,
        events: list[tuple[Any, ...]],
        sessions: list[tuple[Any, ...]],
        spilled: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """In the database thread: one transaction with every session and event.

        *spilled* events (replayed, with their ``spill_key``) already written are skipped.
        """
        if self._dialect.begin_write is not None:
            txn.execute(self._dialect.begin_write)
        if sessions:
            self._dialect.insert_many(
                txn, _UPSERT_SESSION_HEAD, _UPSERT_SESSION_TAIL, len(_SESSION_COLUMNS), sessions
            )
        if events:
            self._dialect.insert_many(txn, _INSERT_EVENT_HEAD, "", len(_EVENT_COLUMNS), events)
        if spilled:
            width = len(_EVENT_COLUMNS) + 1
            self._dialect.insert_many(txn, _INSERT_SPILLED_HEAD, _INSERT_SPILLED_TAIL, width, spilled)

    # -- reading and purging --------------------------------------------------------------

    def query(self, sql: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        async def run() -> list[tuple[Any, ...]]:
            await self._ensure_migrated()
            rows = await self._db().runQuery(self._dialect.sql(sql), tuple(args))
            return [tuple(row) for row in rows]

        return ensureDeferred(run())

    def purge_before(self, cutoff: float) -> Deferred[int]:
        def interaction(txn: Any) -> int:
            if self._dialect.begin_write is not None:
                txn.execute(self._dialect.begin_write)
            txn.execute(self._dialect.sql("DELETE FROM events WHERE ts < ?"), (cutoff,))
            removed = max(0, txn.rowcount)
            txn.execute(self._dialect.sql("DELETE FROM sessions WHERE last_activity_at < ?"), (cutoff,))
            return removed + max(0, txn.rowcount)

        async def run() -> int:
            await self._ensure_migrated()
            removed: int = await self._db().runInteraction(interaction)
            return removed

        return ensureDeferred(run())

    def applied_migrations(self) -> Deferred[list[int]]:
        d = self.query("SELECT version FROM schema_migrations ORDER BY version")
        return d.addCallback(lambda rows: [int(row[0]) for row in rows])

    # -- observing -----------------------------------------------------------------------

    def counters(self) -> StoreCounters:
        return StoreCounters(
            events_written=self._events_written,
            sessions_written=self._sessions_written,
            flush_failures=self._flush_failures,
            events_dropped=self._events_dropped,
            buffer_size=len(self._events) + len(self._sessions),
            sessions_dropped=self._sessions_dropped,
            spilled_events=self._spilled[0],
            spilled_sessions=self._spilled[1],
            replayed_events=self._replayed[0],
            replayed_sessions=self._replayed[1],
            spill_files_set_aside=self._set_aside,
        )

    def check(self) -> CheckResult:
        counters = self.counters()
        detail: dict[str, object] = {
            "dialect": self.dialect,
            "buffer_size": counters.buffer_size,
            "buffer_limit": self._max,
            "flush_failures": counters.flush_failures,
            "events_dropped": counters.events_dropped,
            "sessions_dropped": counters.sessions_dropped,
            "spilled_events": counters.spilled_events,
            "spilled_sessions": counters.spilled_sessions,
            "replayed_events": counters.replayed_events,
            "replayed_sessions": counters.replayed_sessions,
            "spill_files_pending": len(self._claims),
            "spill_files_set_aside": counters.spill_files_set_aside,
        }
        if not self._migrated:
            return CheckResult(FAILING, {**detail, "state": "not ready"})
        return CheckResult(DEGRADED if self._failing else OK, detail)


def _log_lost(events: int, sessions: int, why: str) -> None:
    log.error(
        "analytics: {events} events and {sessions} sessions could not be written before closing "
        "nor saved to a spill file ({why}) and are lost",
        events=events,
        sessions=sessions,
        why=why,
    )


def describe_failure(failure: Failure) -> str:
    """A one-line description of a database error (driver messages carry no DSN)."""
    text = str(failure.value).strip().splitlines()
    return f"{type(failure.value).__name__}: {text[0] if text else ''}"

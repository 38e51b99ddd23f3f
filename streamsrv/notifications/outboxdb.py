# -*- test-case-name: tests.test_notify_outbox -*-
"""The outbox's blocking SQL, for SQLite and PostgreSQL: to be run in a thread pool, never on the reactor.

:class:`OutboxDatabase` holds the statements and transactions common to both
databases; :class:`SqliteOutboxDatabase` (one file in the data dir, WAL,
``synchronous = FULL`` so a commit survives a power cut) and
:class:`PostgresOutboxDatabase` (psycopg2, by DSN) add how to connect and how
to claim.  Each method is one transaction on a connection taken from a small
pool, so several threads may call at once.  Claims lease deliveries: SQLite
in one ``BEGIN IMMEDIATE`` write transaction (one writer at a time across
processes), PostgreSQL with ``FOR UPDATE SKIP LOCKED`` (claimers never wait
for, nor take, each other's rows).  Migrations run through
:func:`streamsrv.db.schema.apply_migrations`.  This module must never run
on the reactor thread, never log a DSN, and never change a delivery whose
lease another worker holds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Final

from streamsrv.db.pgpool import POSTGRES_KEEPALIVES
from streamsrv.db.schema import POSTGRES, SQLITE, History, apply_migrations, load_migrations
from streamsrv.db.sqlitepool import use_wal
from streamsrv.notifications.records import (
    CHANNELS,
    DEFERRED,
    FAILED,
    IDEMPOTENCY_WINDOW_S,
    MAX_ERROR_CHARS,
    PENDING_STATES,
    PRIORITIES,
    QUEUED,
    SENT,
    SUPPRESSED,
    SUPPRESSION_REASONS,
    Claimed,
    Delivery,
    Finish,
    Lease,
    NewDelivery,
    Notification,
    NotificationRecord,
    unchecked,
)

__all__ = [
    "MIGRATIONS_DIR",
    "OUTBOX_DB_FILE",
    "OutboxDatabase",
    "OutboxUnavailable",
    "PostgresOutboxDatabase",
    "SqliteOutboxDatabase",
]


class OutboxUnavailable(Exception):
    """The database could not be reached or written (a PostgreSQL outage, SQLite locked or
    out of disk): the transaction changed nothing and may be retried later."""


#: The SQLite file in ``STREAMSRV_DATA_DIR`` when no DSN is configured.
OUTBOX_DB_FILE: Final = "notifications.sqlite3"

#: The outbox's own versioned migrations.
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"

#: How long SQLite waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_S: Final = 10.0

#: The most values one SQLite ``IN (...)`` list carries (well under its variable limit).
IN_CHUNK: Final = 500

#: How long connecting to PostgreSQL may take.
POSTGRES_CONNECT_TIMEOUT_S: Final = 5

#: Where the outbox records its migrations (not the analytics' table), and its
#: PostgreSQL advisory lock key (an arbitrary constant of its own: "stno").
HISTORY: Final = History("notification_schema_migrations", 0x73746E6F)

#: Ids are text (chosen by the outbox) on both databases.
_SUBSTITUTIONS: Final = {"{{AUTO_ID}}": "TEXT PRIMARY KEY"}

_DELIVERY_COLUMNS: Final = (
    "id, notification_id, user_id, channel, state, reason, not_before, attempts, "
    "last_error, created_at, updated_at, sent_at"
)
_NOTIFICATION_COLUMNS: Final = "id, template, data, priority, idempotency_key, created_at"

_PENDING: Final = "state IN ('queued', 'deferred')"
_DUE: Final = f"{_PENDING} AND not_before <= ? AND (lease_until IS NULL OR lease_until <= ?)"
_HELD: Final = f"id = ? AND lease_owner = ? AND {_PENDING}"
_UNLEASE: Final = "lease_owner = NULL, lease_until = NULL"

assert PENDING_STATES == (QUEUED, DEFERRED)

# Statements built from the fixed names above only: no value ever enters SQL text.
_INSERT_NOTIFICATION: Final = (
    f"INSERT INTO notifications ({_NOTIFICATION_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_KEY: Final = (
    "INSERT INTO notification_idempotency_keys (idempotency_key, notification_id, created_at) "
    "VALUES (?, ?, ?)"
)
_INSERT_DELIVERIES: Final = (
    "INSERT INTO notification_deliveries (id, notification_id, position, user_id, channel, state, reason, "
    "not_before, created_at, updated_at, attempts, lease_owner, lease_until) VALUES "
)
_DELIVERY_VALUES: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_NOTIFICATION: Final = f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?"  # noqa: S608
_SELECT_DELIVERIES: Final = (
    f"SELECT {_DELIVERY_COLUMNS} FROM notification_deliveries "  # noqa: S608 - fixed names
    "WHERE notification_id = ? ORDER BY position"
)
_SELECT_CLAIMED: Final = (
    "SELECT "  # noqa: S608 - fixed names
    + ", ".join(f"d.{c.strip()}" for c in _DELIVERY_COLUMNS.split(","))
    + ", "
    + ", ".join(f"n.{c.strip()}" for c in _NOTIFICATION_COLUMNS.split(","))
    + ", d.position FROM notification_deliveries d JOIN notifications n ON n.id = d.notification_id "
    "WHERE d.id IN ({marks}) ORDER BY d.not_before, d.position"
)
_RELEASE: Final = (
    "UPDATE notification_deliveries SET lease_owner = NULL, lease_until = NULL, "  # noqa: S608 - fixed names
    f"attempts = attempts - 1 WHERE lease_owner = ? AND {_PENDING} AND id IN ({{marks}})"
)
_PENDING_COUNTS: Final = (
    f"SELECT state, COUNT(*) FROM notification_deliveries WHERE {_PENDING} GROUP BY state"  # noqa: S608
)
_UPSERT_PREFERENCES: Final = (
    "INSERT INTO notification_preferences (user_id, document, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (user_id) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at"
)
_SQLITE_DUE_IDS: Final = (
    f"SELECT id FROM notification_deliveries WHERE {_DUE}{{lane}} "  # noqa: S608 - fixed names
    "ORDER BY not_before, position LIMIT ?"
)
_LEASE: Final = "lease_owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?"
_SQLITE_LEASE: Final = f"UPDATE notification_deliveries SET {_LEASE} WHERE id IN ({{marks}})"  # noqa: S608
_POSTGRES_CLAIM: Final = (
    f"UPDATE notification_deliveries SET {_LEASE} WHERE id IN (SELECT id FROM notification_deliveries "  # noqa: S608
    f"WHERE {_DUE}{{lane}} ORDER BY not_before, position LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id"
)
_SELECT_PREFERENCES: Final = (
    "SELECT user_id, document FROM notification_preferences WHERE user_id IN ({marks})"
)
_SELECT_SENDS: Final = (
    "SELECT user_id, channel, sent_at FROM notification_deliveries "
    "WHERE user_id IN ({marks}) AND sent_at > ? ORDER BY sent_at"
)

#: How each reported outcome changes a held delivery: assignments, and the Finish's values for them.
_FINISH_SQL: Final = {
    "sent": "state = 'sent', sent_at = ?, updated_at = ?, last_error = NULL",
    "retry": "state = 'queued', last_error = ?, not_before = ?, updated_at = ?",
    "failed": "state = 'failed', last_error = ?, updated_at = ?",
    "deferred": "state = 'deferred', not_before = ?, updated_at = ?, attempts = attempts - 1",
    "suppressed": "state = 'suppressed', reason = ?, updated_at = ?",
}
assert (SENT, QUEUED, FAILED, DEFERRED, SUPPRESSED) == ("sent", "queued", "failed", "deferred", "suppressed")


def _finish_values(finish: Finish) -> tuple[Any, ...]:
    error = None if finish.error is None else finish.error[:MAX_ERROR_CHARS]
    return {
        "sent": (finish.at, finish.at),
        "retry": (error, finish.when, finish.at),
        "failed": (error, finish.at),
        "deferred": (finish.when, finish.at),
        "suppressed": (finish.reason, finish.at),
    }[finish.outcome]


def _lane(channels: Sequence[str] | None) -> str:
    """The claim's extra condition for *channels* (fixed names only: each is checked)."""
    if channels is None:
        return ""
    if not channels or any(c not in CHANNELS for c in channels):
        raise ValueError(f"channels must be some of {CHANNELS}")
    return " AND channel IN (" + ", ".join(f"'{c}'" for c in channels) + ")"


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0],
        notification_id=row[1],
        user_id=row[2],
        channel=row[3],
        state=row[4],
        reason=row[5],
        not_before=float(row[6]),
        attempts=int(row[7]),
        last_error=row[8],
        created_at=float(row[9]),
        updated_at=float(row[10]),
        sent_at=None if row[11] is None else float(row[11]),
    )


def _notification(row: Sequence[Any]) -> Notification:
    return Notification(
        id=row[0],
        template=row[1],
        data=json.loads(row[2]),
        priority=row[3],
        idempotency_key=row[4],
        created_at=float(row[5]),
    )


class OutboxDatabase:
    """
    The outbox's tables, read and written in blocking transactions.

    Every method migrates first if this instance has not yet.  Methods that
    change one delivery take the *worker_id* that claimed it and answer
    ``False`` (changing nothing) when that worker no longer holds it: its
    lease ran out and another worker claimed it, or it is already final.
    """

    dialect: str = ""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._migrate_lock = threading.Lock()
        self._migrated = False
        self._closed = False
        self._migrations = load_migrations(MIGRATIONS_DIR)

    # -- to be provided by each database ---------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, cursor: Any, write: bool) -> None:
        """Start a transaction (SQLite: explicitly, a write one taking the lock now)."""

    def _claim_ids(
        self, cursor: Any, worker_id: str, now: float, limit: int, lease_until: float, lane: str
    ) -> list[str]:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        """*text*, written with ``?`` placeholders, in this driver's paramstyle."""
        return text

    def _insert_deliveries(self, cursor: Any, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert delivery rows (SQLite: one prepared statement run for each row, no round trips)."""
        cursor.executemany(_INSERT_DELIVERIES + _DELIVERY_VALUES, rows)

    # -- connections and transactions -------------------------------------------------

    def _unavailable(self, error: Exception) -> bool:
        """Whether *error* means the database is away (retry later), not a bug."""
        return False

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        """One transaction; a database that is away raises :class:`OutboxUnavailable`."""
        try:
            with self._connection_transaction(write) as cursor:
                yield cursor
        except Exception as e:
            if self._unavailable(e):
                first = (str(e).strip().splitlines() or [""])[0]
                raise OutboxUnavailable(f"{type(e).__name__}: {first}") from e
            raise

    @contextmanager
    def _connection_transaction(self, write: bool) -> Iterator[Any]:
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("the notification outbox is closed")
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        healthy = False
        try:
            cursor = connection.cursor()
            self._begin(cursor, write)
            yield cursor
            connection.commit()
            healthy = True
        except Exception:
            try:
                connection.rollback()
                healthy = True
            except Exception:
                healthy = False
            raise
        finally:
            with self._pool_lock:
                keep = healthy and not self._closed
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.close()

    def transaction(self, write: bool) -> AbstractContextManager[Any]:
        """
        One transaction on a pooled connection, the tables migrated first:
        for the SQL kept in other modules (:mod:`.housekeeping`), written
        with ``?`` placeholders and passed through :meth:`sql`.
        """
        self._ensure_migrated()
        return self._transaction(write)

    def sql(self, text: str) -> str:
        """*text*, written with ``?`` placeholders, in this driver's paramstyle."""
        return self._sql(text)

    def close(self) -> None:
        """Close every idle connection; the database refuses work afterwards."""
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- migrations --------------------------------------------------------------------

    def migrate(self, now: float) -> list[int]:
        """Apply the pending migrations in one transaction; the versions applied."""
        with self._migrate_lock:
            if self._migrated:
                return []
            with self._transaction(write=True) as cursor:
                applied = self._apply_migrations(cursor, now)
            self._migrated = True
            return applied

    def _apply_migrations(self, cursor: Any, now: float) -> list[int]:
        # The write transaction is already open (BEGIN IMMEDIATE on SQLite).
        dialect = POSTGRES if self.dialect == "postgresql" else SQLITE
        return apply_migrations(
            cursor, dialect, self._migrations, now, history=HISTORY, begin=False, substitutions=_SUBSTITUTIONS
        )

    def applied_migrations(self) -> list[int]:
        """The versions recorded, ascending."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            cursor.execute("SELECT version FROM notification_schema_migrations ORDER BY version")
            return [int(row[0]) for row in cursor.fetchall()]

    def _ensure_migrated(self) -> None:
        if not self._migrated:
            self.migrate(0.0)

    # -- notifications -------------------------------------------------------------------

    def enqueue(
        self,
        notification: Notification,
        deliveries: Sequence[NewDelivery],
        delivery_ids: Sequence[str],
        now: float,
        lease: Lease | None = None,
    ) -> NotificationRecord:
        """
        Store *notification* and its *deliveries* in one transaction; returns once committed.

        With an idempotency key seen in the last 24 hours nothing is stored
        and the earlier notification is answered (``created=False``).  With a
        *lease*, the deliveries it covers are stored held by its worker until
        ``lease.until`` with one attempt counted, exactly as a claim leaves them
        (``GET`` shows that attempt); the others are stored as usual.
        """
        if notification.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        if len(delivery_ids) != len(deliveries):
            raise ValueError("one id per delivery")
        self._ensure_migrated()
        with self._transaction(write=True) as cursor:
            key = notification.idempotency_key
            if key is not None:
                earlier = self._earlier_for_key(cursor, key, notification.id, now)
                if earlier is not None:
                    found = self._read(cursor, earlier)
                    if found is not None:
                        return NotificationRecord(found.notification, found.deliveries, created=False)
            cursor.execute(
                self._sql(_INSERT_NOTIFICATION),
                (
                    notification.id,
                    notification.template,
                    json.dumps(notification.data, separators=(",", ":"), sort_keys=True),
                    notification.priority,
                    key,
                    notification.created_at,
                ),
            )
            if key is not None:  # the key row references the notification: insert it now
                cursor.execute(
                    self._sql(_INSERT_KEY),
                    (key, notification.id, now),
                )
            leased = [
                lease is not None and lease.covers(d.channel, d.state, d.not_before) for d in deliveries
            ]
            owner, until = (lease.worker_id, lease.until) if lease is not None else (None, None)
            rows = (
                (
                    i,
                    notification.id,
                    position,
                    d.user_id,
                    d.channel,
                    d.state,
                    d.reason,
                    d.not_before or now,
                    now,
                    now,
                    *((1, owner, until) if held else (0, None, None)),
                )
                for position, (i, d, held) in enumerate(zip(delivery_ids, deliveries, leased, strict=True))
            )
            self._insert_deliveries(cursor, rows)
        # What was written, answered without reading 10,000 rows back.
        stored = tuple(
            unchecked(Delivery, id=i, notification_id=notification.id, user_id=d.user_id, channel=d.channel,
                      state=d.state, reason=d.reason, not_before=d.not_before or now, attempts=int(held),
                      last_error=None, created_at=now, updated_at=now, sent_at=None)
            for i, d, held in zip(delivery_ids, deliveries, leased, strict=True)
        )  # fmt: skip
        return NotificationRecord(notification, stored)

    def _earlier_for_key(self, cursor: Any, key: str, notification_id: str, now: float) -> str | None:
        """The notification an unexpired *key* answers, else ``None`` (an expired row is dropped)."""
        if self.dialect == "postgresql":
            # Two requests racing with one key: the second waits here until the first commits.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
        cursor.execute(
            self._sql(
                "DELETE FROM notification_idempotency_keys WHERE idempotency_key = ? AND created_at <= ?"
            ),
            (key, now - IDEMPOTENCY_WINDOW_S),
        )
        cursor.execute(
            self._sql("SELECT notification_id FROM notification_idempotency_keys WHERE idempotency_key = ?"),
            (key,),
        )
        row = cursor.fetchone()
        return None if row is None else str(row[0])

    def find_by_idempotency_key(self, key: str, now: float) -> NotificationRecord | None:
        """The notification *key* names if it was given in the last 24 hours."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT notification_id FROM notification_idempotency_keys "
                    "WHERE idempotency_key = ? AND created_at > ?"
                ),
                (key, now - IDEMPOTENCY_WINDOW_S),
            )
            row = cursor.fetchone()
            return None if row is None else self._read(cursor, str(row[0]))

    def get(self, notification_id: str) -> NotificationRecord | None:
        """The notification and its deliveries, or ``None``."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            return self._read(cursor, notification_id)

    def _read(self, cursor: Any, notification_id: str) -> NotificationRecord | None:
        cursor.execute(self._sql(_SELECT_NOTIFICATION), (notification_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(self._sql(_SELECT_DELIVERIES), (notification_id,))
        return NotificationRecord(_notification(row), tuple(_delivery(r) for r in cursor.fetchall()))

    # -- claiming and finishing deliveries ---------------------------------------------------

    def claim(
        self, worker_id: str, now: float, limit: int, lease_s: float, channels: Sequence[str] | None = None
    ) -> list[Claimed]:
        """
        Lease up to *limit* due deliveries (pending, ``not_before <= now``, no
        live lease; on one of *channels* if given) to *worker_id* until
        ``now + lease_s``, counting an attempt each.

        No other worker sees them until the lease runs out.  Oldest due first.
        """
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        lane = _lane(channels)
        self._ensure_migrated()
        lease_until = now + lease_s
        with self._transaction(write=True) as cursor:
            ids = self._claim_ids(cursor, worker_id, now, limit, lease_until, lane)
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            cursor.execute(self._sql(_SELECT_CLAIMED.format(marks=marks)), ids)
            width = len(_DELIVERY_COLUMNS.split(","))
            rows = cursor.fetchall()
        # Due first, then each notification's order; ties (one position of two notifications
        # made at once) in the order the claim chose them: on SQLite, the oldest row first.
        rank = {delivery_id: n for n, delivery_id in enumerate(ids)}
        rows.sort(key=lambda r: (float(r[6]), float(r[-2]), int(r[-1]), rank[r[0]]))
        claimed = [Claimed(_delivery(row[:width]), _notification(row[width:-1]), lease_until) for row in rows]
        return claimed

    def _finish(self, delivery_id: str, worker_id: str, assignments: str, values: Sequence[Any]) -> bool:
        self._ensure_migrated()
        with self._transaction(write=True) as cursor:
            statement = f"UPDATE notification_deliveries SET {assignments}, {_UNLEASE} WHERE {_HELD}"  # noqa: S608
            cursor.execute(self._sql(statement), (*values, delivery_id, worker_id))
            return bool(cursor.rowcount == 1)

    def mark_sent(self, delivery_id: str, worker_id: str, now: float) -> bool:
        """Record a successful send."""
        return self._finish(
            delivery_id,
            worker_id,
            "state = ?, sent_at = ?, updated_at = ?, last_error = NULL",
            (SENT, now, now),
        )

    def mark_failed(
        self, delivery_id: str, worker_id: str, now: float, error: str, retry_at: float | None
    ) -> bool:
        """
        Record a failed attempt: queued again for *retry_at*, or ``failed`` for
        good when *retry_at* is ``None`` (attempts exhausted, or an error no
        retry can fix).
        """
        error = error[:MAX_ERROR_CHARS]
        if retry_at is None:
            return self._finish(
                delivery_id, worker_id, "state = ?, last_error = ?, updated_at = ?", (FAILED, error, now)
            )
        return self._finish(
            delivery_id,
            worker_id,
            "state = ?, last_error = ?, not_before = ?, updated_at = ?",
            (QUEUED, error, retry_at, now),
        )

    def mark_deferred(self, delivery_id: str, worker_id: str, now: float, not_before: float) -> bool:
        """Put the delivery off until *not_before* (quiet hours); the claim's attempt is given back."""
        return self._finish(
            delivery_id,
            worker_id,
            "state = ?, not_before = ?, updated_at = ?, attempts = attempts - 1",
            (DEFERRED, not_before, now),
        )

    def mark_suppressed(self, delivery_id: str, worker_id: str, now: float, reason: str) -> bool:
        """Give up on the delivery for *reason* (:data:`~.records.SUPPRESSION_REASONS`)."""
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {SUPPRESSION_REASONS}")
        return self._finish(
            delivery_id, worker_id, "state = ?, reason = ?, updated_at = ?", (SUPPRESSED, reason, now)
        )

    def release(self, worker_id: str, delivery_ids: Sequence[str]) -> int:
        """Give back leases *worker_id* holds but will not use (shutdown); their attempts are given back."""
        if not delivery_ids:
            return 0
        self._ensure_migrated()
        marks = ", ".join("?" * len(delivery_ids))
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql(_RELEASE.format(marks=marks)), (worker_id, *delivery_ids))
            return max(0, int(cursor.rowcount))

    def finish_many(self, worker_id: str, finishes: Sequence[Finish]) -> list[bool]:
        """
        Record the outcomes of several deliveries *worker_id* holds, in one transaction.

        :return: For each, whether it was recorded (``False``: the lease was lost, nothing changed).
        """
        if not finishes:
            return []
        self._ensure_migrated()
        done = []
        with self._transaction(write=True) as cursor:
            for finish in finishes:
                assignments = _FINISH_SQL[finish.outcome]
                statement = f"UPDATE notification_deliveries SET {assignments}, {_UNLEASE} WHERE {_HELD}"  # noqa: S608
                cursor.execute(self._sql(statement), (*_finish_values(finish), finish.delivery_id, worker_id))
                done.append(cursor.rowcount == 1)
        return done

    # -- what the sender and the metrics read ---------------------------------------------

    def recent_sends_many(self, user_ids: Sequence[str], since: float) -> dict[tuple[str, str], list[float]]:
        """:meth:`recent_sends` of many users at once, by ``(user_id, channel)``; absent: none."""
        found: dict[tuple[str, str], list[float]] = {}
        if not user_ids:
            return found
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            for chunk in self._in_lists(user_ids):
                marks = ", ".join("?" * len(chunk))
                cursor.execute(self._sql(_SELECT_SENDS.format(marks=marks)), (*chunk, since))
                for user_id, channel, sent_at in cursor.fetchall():
                    found.setdefault((str(user_id), str(channel)), []).append(float(sent_at))
        for times in found.values():
            times.sort()
        return found

    def _in_lists(self, values: Sequence[str]) -> Iterator[Sequence[str]]:
        return _chunks(list(dict.fromkeys(values)))

    def recent_sends(self, user_id: str, channel: str, since: float) -> list[float]:
        """When deliveries to *user_id* on *channel* were sent after *since*, ascending (for caps)."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT sent_at FROM notification_deliveries "
                    "WHERE user_id = ? AND channel = ? AND sent_at > ? ORDER BY sent_at"
                ),
                (user_id, channel, since),
            )
            return [float(row[0]) for row in cursor.fetchall()]

    def pending_counts(self) -> dict[str, int]:
        """How many deliveries are ``queued`` and ``deferred`` (the queue depth)."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            cursor.execute(_PENDING_COUNTS)
            counts = {QUEUED: 0, DEFERRED: 0}
            counts.update({str(state): int(n) for state, n in cursor.fetchall()})
            return counts

    # -- preferences ---------------------------------------------------------------------------

    def get_preferences(self, user_id: str) -> dict[str, Any] | None:
        """The stored preferences document of *user_id*, or ``None`` if never set."""
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql("SELECT document FROM notification_preferences WHERE user_id = ?"), (user_id,)
            )
            row = cursor.fetchone()
            return None if row is None else dict(json.loads(row[0]))

    def get_preferences_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored documents of those of *user_ids* who set one, in a few queries."""
        found: dict[str, dict[str, Any]] = {}
        if not user_ids:
            return found
        self._ensure_migrated()
        with self._transaction(write=False) as cursor:
            for chunk in self._in_lists(user_ids):
                marks = ", ".join("?" * len(chunk))
                cursor.execute(self._sql(_SELECT_PREFERENCES.format(marks=marks)), tuple(chunk))
                found.update((str(user), dict(json.loads(document))) for user, document in cursor.fetchall())
        return found

    def put_preferences(self, user_id: str, document: dict[str, Any], now: float) -> None:
        """Replace the preferences document of *user_id* (already validated)."""
        self._ensure_migrated()
        text = json.dumps(document, separators=(",", ":"), sort_keys=True)
        with self._transaction(write=True) as cursor:
            cursor.execute(self._sql(_UPSERT_PREFERENCES), (user_id, text, now))


class SqliteOutboxDatabase(OutboxDatabase):
    """The outbox in a SQLite file (WAL), shared by the processes of one host."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        """:param path: The database file; its directory is created if missing."""
        super().__init__()
        self.path = path

    def _connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            str(self.path), timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        use_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA cache_size = -32768")  # 32 MiB: a 10,000-user send stays in memory
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def _begin(self, cursor: Any, write: bool) -> None:
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _unavailable(self, error: Exception) -> bool:
        text = str(error).lower()
        return isinstance(error, sqlite3.OperationalError) and any(
            word in text for word in ("locked", "disk", "unable to open", "readonly")
        )

    def _claim_ids(
        self, cursor: Any, worker_id: str, now: float, limit: int, lease_until: float, lane: str
    ) -> list[str]:
        cursor.execute(_SQLITE_DUE_IDS.format(lane=lane), (now, now, limit))
        ids = [str(row[0]) for row in cursor.fetchall()]
        if ids:
            marks = ", ".join("?" * len(ids))
            cursor.execute(_SQLITE_LEASE.format(marks=marks), (worker_id, lease_until, now, *ids))
        return ids


class PostgresOutboxDatabase(OutboxDatabase):
    """The outbox in PostgreSQL (psycopg2), shared by every process and host."""

    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        """:param dsn: A ``postgresql://`` URL or libpq string; never logged."""
        super().__init__()
        self._dsn = dsn

    def _connect(self) -> Any:
        import psycopg2

        keepalives = {} if "keepalives" in self._dsn else POSTGRES_KEEPALIVES
        return psycopg2.connect(
            self._dsn,
            connect_timeout=POSTGRES_CONNECT_TIMEOUT_S,
            application_name="streamsrv-notifications",
            **keepalives,
        )

    def _unavailable(self, error: Exception) -> bool:
        import psycopg2

        return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _insert_deliveries(self, cursor: Any, rows: Iterable[tuple[Any, ...]]) -> None:
        """Many rows per statement: ``executemany`` would make one round trip for each."""
        from psycopg2.extras import execute_values

        execute_values(cursor, _INSERT_DELIVERIES + "%s", rows, page_size=1000)

    def _in_lists(self, values: Sequence[str]) -> Iterator[Sequence[str]]:
        # Bigger lists than SQLite's: PostgreSQL takes up to 65535 parameters.
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 10 * IN_CHUNK):
            yield unique[start : start + 10 * IN_CHUNK]

    def _claim_ids(
        self, cursor: Any, worker_id: str, now: float, limit: int, lease_until: float, lane: str
    ) -> list[str]:
        cursor.execute(
            self._sql(_POSTGRES_CLAIM.format(lane=lane)), (worker_id, lease_until, now, now, now, limit)
        )
        return [str(row[0]) for row in cursor.fetchall()]

# -*- test-case-name: tests.test_notify_outbox -*-
"""The durable notification outbox: :class:`IOutbox` and its SQLite/PostgreSQL implementation.

:class:`Outbox` runs each operation of an :class:`~.outboxdb.OutboxDatabase`
in an injected thread pool and answers with a Deferred, so no database work
ever happens on the reactor thread (tests inject a synchronous pool).
:func:`make_outbox` picks the database from ``STREAMSRV_ANALYTICS_DSN`` the
way the analytics store does: SQLite in the data dir by default, PostgreSQL
by DSN.  A notification and its deliveries are stored in one transaction and
``enqueue`` fires only once it is committed (the 202 of the contract).
Workers lease due deliveries with :meth:`IOutbox.claim` and report each
outcome; retries are scheduled with :func:`~.records.next_attempt`.  This
module must never block the reactor, never log a DSN, and never start or
stop the thread pool it was given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import Interface, implementer

from streamsrv.notifications import housekeeping
from streamsrv.notifications.outboxdb import (
    OUTBOX_DB_FILE,
    OutboxDatabase,
    PostgresOutboxDatabase,
    SqliteOutboxDatabase,
)
from streamsrv.notifications.records import (
    Claimed,
    Finish,
    Lease,
    NewDelivery,
    Notification,
    NotificationRecord,
)

__all__ = ["IOutbox", "Outbox", "make_outbox", "make_outbox_database"]

_T = TypeVar("_T")


class IOutbox(Interface):
    """
    Notifications and their deliveries, durable, leased to one worker at a time.

    Times are Unix seconds passed in by the caller (no clock inside).  Every
    method answers a Deferred.  The ``mark_*`` methods fire ``False``, and
    change nothing, when *worker_id* no longer holds the delivery's lease.
    """

    dialect: str
    """``"sqlite"`` or ``"postgresql"``."""

    def start(now: float) -> Deferred[list[int]]:  # noqa: N805 - zope interface
        """Create or migrate the tables; fires with the migration versions applied."""

    def close() -> Deferred[None]:
        """Release the connections; nothing is done after."""

    def enqueue(
        template: str,  # noqa: N805 - zope interface
        data: dict[str, Any],
        priority: str,
        deliveries: Sequence[NewDelivery],
        idempotency_key: str | None,
        now: float,
        lease: Lease | None = None,
    ) -> Deferred[NotificationRecord]:
        """
        Store a notification with its deliveries atomically; fires once committed.

        With an *idempotency_key* given in the last 24 hours, stores nothing
        and fires with the first notification (``created=False``).  With a
        *lease*, the deliveries it covers are stored already claimed by its
        worker (the websocket fast path: sent by that worker without a claim).
        """

    def find_by_idempotency_key(key: str, now: float) -> Deferred[NotificationRecord | None]:  # noqa: N805
        """The notification *key* was given for in the last 24 hours, if any."""

    def get(notification_id: str) -> Deferred[NotificationRecord | None]:  # noqa: N805
        """A notification and the state of each of its deliveries."""

    def claim(
        worker_id: str,  # noqa: N805 - zope interface
        now: float,
        limit: int,
        lease_s: float,
        channels: Sequence[str] | None = None,
    ) -> Deferred[list[Claimed]]:
        """Lease up to *limit* due deliveries (on *channels* if given) to *worker_id* for *lease_s* s."""

    def finish_many(worker_id: str, finishes: Sequence[Finish]) -> Deferred[list[bool]]:  # noqa: N805
        """Record several outcomes in one transaction; for each, whether the lease was still held."""

    def mark_sent(delivery_id: str, worker_id: str, now: float) -> Deferred[bool]:  # noqa: N805
        """The delivery was sent."""

    def mark_failed(
        delivery_id: str,  # noqa: N805 - zope interface
        worker_id: str,
        now: float,
        error: str,
        retry_at: float | None,
    ) -> Deferred[bool]:
        """An attempt failed: retry at *retry_at*, or ``failed`` for good if ``None``."""

    def mark_deferred(delivery_id: str, worker_id: str, now: float, not_before: float) -> Deferred[bool]:  # noqa: N805
        """Wait until *not_before* (quiet hours)."""

    def mark_suppressed(delivery_id: str, worker_id: str, now: float, reason: str) -> Deferred[bool]:  # noqa: N805
        """Give up for *reason* (opted_out, no_address, frequency_cap, not_configured)."""

    def release(worker_id: str, delivery_ids: Sequence[str]) -> Deferred[int]:  # noqa: N805
        """Give back leases that will not be used (shutdown); fires with how many."""

    def recent_sends(user_id: str, channel: str, since: float) -> Deferred[list[float]]:  # noqa: N805
        """Send times to *user_id* on *channel* after *since* (for frequency caps)."""

    def recent_sends_many(
        user_ids: Sequence[str],  # noqa: N805 - zope interface
        since: float,
    ) -> Deferred[dict[tuple[str, str], list[float]]]:
        """:meth:`recent_sends` of many users, by ``(user_id, channel)`` (absent: none)."""

    def get_preferences_many(user_ids: Sequence[str]) -> Deferred[dict[str, dict[str, Any]]]:  # noqa: N805
        """The stored documents of those of *user_ids* who set one, by user."""

    def pending_counts() -> Deferred[dict[str, int]]:
        """``{"queued": n, "deferred": m}``: the queue depth."""

    def queue_depth(now: float) -> Deferred[dict[tuple[str, str], int]]:  # noqa: N805
        """Pending deliveries by ``(channel, state)``, ``leased`` for those held now."""

    def purge(cutoff: float, now: float, batch: int) -> Deferred[tuple[int, int]]:  # noqa: N805
        """Delete one batch of finished notifications and expired keys; ``(notifications, keys)``."""

    def get_preferences(user_id: str) -> Deferred[dict[str, Any] | None]:  # noqa: N805
        """The stored preferences document, ``None`` if the user never set one."""

    def put_preferences(user_id: str, document: dict[str, Any], now: float) -> Deferred[None]:  # noqa: N805
        """Replace the user's preferences document (validated by the caller)."""


def _new_id() -> str:
    """32 hex digits: milliseconds since 1970, then 80 random bits (ids made later sort later)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


@implementer(IOutbox)
class Outbox:
    """An :class:`IOutbox` running an :class:`~.outboxdb.OutboxDatabase` in a thread pool."""

    def __init__(
        self,
        database: OutboxDatabase,
        reactor: Any,
        threadpool: Any,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        """
        :param database: The blocking database.
        :param reactor: Provides ``callFromThread`` (results come back on the reactor thread).
        :param threadpool: Runs the blocking calls (a
            :class:`~twisted.python.threadpool.ThreadPool`, started and stopped by its owner).
        :param new_id: Makes notification and delivery ids.
        """
        self.database = database
        self.dialect = database.dialect
        self._reactor = reactor
        self._threadpool = threadpool
        self._new_id = new_id

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threadpool, f, *args)

    def start(self, now: float) -> Deferred[list[int]]:
        return self._run(self.database.migrate, now)

    def close(self) -> Deferred[None]:
        return self._run(self.database.close)

    def enqueue(
        self,
        template: str,
        data: dict[str, Any],
        priority: str,
        deliveries: Sequence[NewDelivery],
        idempotency_key: str | None,
        now: float,
        lease: Lease | None = None,
    ) -> Deferred[NotificationRecord]:
        notification = Notification(self._new_id(), template, data, priority, idempotency_key, now)
        if self._new_id is _new_id:
            # The notification's id and the position: unique, and in order, so 10,000 rows
            # go to the end of the primary key's B-tree instead of 10,000 random places.
            ids = [f"{notification.id}{n:06x}" for n in range(len(deliveries))]
        else:
            ids = [self._new_id() for _ in deliveries]
        return self._run(self.database.enqueue, notification, list(deliveries), ids, now, lease)

    def find_by_idempotency_key(self, key: str, now: float) -> Deferred[NotificationRecord | None]:
        return self._run(self.database.find_by_idempotency_key, key, now)

    def get(self, notification_id: str) -> Deferred[NotificationRecord | None]:
        return self._run(self.database.get, notification_id)

    def claim(
        self, worker_id: str, now: float, limit: int, lease_s: float, channels: Sequence[str] | None = None
    ) -> Deferred[list[Claimed]]:
        return self._run(self.database.claim, worker_id, now, limit, lease_s, channels)

    def finish_many(self, worker_id: str, finishes: Sequence[Finish]) -> Deferred[list[bool]]:
        return self._run(self.database.finish_many, worker_id, list(finishes))

    def mark_sent(self, delivery_id: str, worker_id: str, now: float) -> Deferred[bool]:
        return self._run(self.database.mark_sent, delivery_id, worker_id, now)

    def mark_failed(
        self, delivery_id: str, worker_id: str, now: float, error: str, retry_at: float | None
    ) -> Deferred[bool]:
        return self._run(self.database.mark_failed, delivery_id, worker_id, now, error, retry_at)

    def mark_deferred(
        self, delivery_id: str, worker_id: str, now: float, not_before: float
    ) -> Deferred[bool]:
        return self._run(self.database.mark_deferred, delivery_id, worker_id, now, not_before)

    def mark_suppressed(self, delivery_id: str, worker_id: str, now: float, reason: str) -> Deferred[bool]:
        return self._run(self.database.mark_suppressed, delivery_id, worker_id, now, reason)

    def release(self, worker_id: str, delivery_ids: Sequence[str]) -> Deferred[int]:
        return self._run(self.database.release, worker_id, list(delivery_ids))

    def recent_sends(self, user_id: str, channel: str, since: float) -> Deferred[list[float]]:
        return self._run(self.database.recent_sends, user_id, channel, since)

    def recent_sends_many(
        self, user_ids: Sequence[str], since: float
    ) -> Deferred[dict[tuple[str, str], list[float]]]:
        return self._run(self.database.recent_sends_many, list(user_ids), since)

    def get_preferences_many(self, user_ids: Sequence[str]) -> Deferred[dict[str, dict[str, Any]]]:
        return self._run(self.database.get_preferences_many, list(user_ids))

    def pending_counts(self) -> Deferred[dict[str, int]]:
        return self._run(self.database.pending_counts)

    def queue_depth(self, now: float) -> Deferred[dict[tuple[str, str], int]]:
        return self._run(housekeeping.queue_depth, self.database, now)

    def purge(self, cutoff: float, now: float, batch: int) -> Deferred[tuple[int, int]]:
        return self._run(housekeeping.purge_finished, self.database, cutoff, now, batch)

    def get_preferences(self, user_id: str) -> Deferred[dict[str, Any] | None]:
        return self._run(self.database.get_preferences, user_id)

    def put_preferences(self, user_id: str, document: dict[str, Any], now: float) -> Deferred[None]:
        return self._run(self.database.put_preferences, user_id, document, now)


def make_outbox_database(dsn: str | None, data_dir: Path) -> OutboxDatabase:
    """
    The database ``STREAMSRV_ANALYTICS_DSN`` names, as the analytics store reads it.

    :param dsn: ``None`` for ``<data_dir>/notifications.sqlite3``;
        ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (the
        outbox then lives in ``notifications.sqlite3`` beside that file, not
        inside the analytics file); ``postgresql://…`` or ``postgres://…``
        (the same database as analytics, in its own tables).
    :raise ValueError: For any other DSN (the message does not quote it).
    """
    if dsn is None:
        return SqliteOutboxDatabase(data_dir / OUTBOX_DB_FILE)
    if dsn.startswith("sqlite:///") and len(dsn) > len("sqlite:///"):
        return SqliteOutboxDatabase(Path(dsn[len("sqlite:///") :]).parent / OUTBOX_DB_FILE)
    if dsn.startswith(("postgresql://", "postgres://")):
        return PostgresOutboxDatabase(dsn)
    raise ValueError("the analytics DSN must start with sqlite:/// or postgresql://")


def make_outbox(dsn: str | None, data_dir: Path, reactor: Any, threadpool: Any) -> Outbox:
    """The :class:`Outbox` for the configuration (see :func:`make_outbox_database`)."""
    return Outbox(make_outbox_database(dsn, data_dir), reactor, threadpool)

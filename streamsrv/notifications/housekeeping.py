# -*- test-case-name: tests.test_notify_housekeeping -*-
"""Outbox housekeeping: the queue-depth gauge and the retention purge, periodic and off the reactor.

:func:`queue_depth` counts the pending deliveries per channel and state
(``queued``, ``deferred``, and ``leased``: claimed by a worker right now),
and :func:`purge_finished` deletes, in one bounded batch, the notifications
that are over: every delivery final (``sent``, ``failed``, ``suppressed``)
and unchanged since the cutoff (their deliveries and idempotency keys go with
them), and the idempotency keys past their 24-hour window.  Both are blocking
SQL, the same on SQLite and PostgreSQL, run by :class:`~.outbox.Outbox` in
its thread pool.  :class:`QueueDepthMonitor` refreshes
``streamsrv_notifications_queue_depth`` every :data:`QUEUE_DEPTH_INTERVAL_S`
(one count query, never one per scrape or per request) and
:class:`NotificationRetention` purges every :data:`RETENTION_INTERVAL_S`,
batch after batch.  This module must never run SQL on the reactor thread,
never delete a delivery that may still be sent, and never let a failure
stop its timer.
"""

from __future__ import annotations

import math
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.notifications.outboxdb import OutboxDatabase
from streamsrv.notifications.records import CHANNELS, DEFERRED, IDEMPOTENCY_WINDOW_S, QUEUED
from streamsrv.service import PeriodicService

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEPTH_STATES",
    "LEASED",
    "MAX_BATCHES",
    "PURGE_BATCH",
    "QUEUE_DEPTH_INTERVAL_S",
    "RETENTION_INTERVAL_S",
    "NotificationRetention",
    "QueueDepthMonitor",
    "purge_finished",
    "queue_depth",
]

log = Logger()

#: ``STREAMSRV_NOTIFY_RETENTION_DAYS``' default.
DEFAULT_RETENTION_DAYS: Final = 30

#: Seconds between two retention purges.
RETENTION_INTERVAL_S: Final = 3600.0

#: Notifications deleted per transaction (other writers get the lock in between).
PURGE_BATCH: Final = 1000

#: Most batches one purge round deletes.
MAX_BATCHES: Final = 100

#: Seconds between two queue-depth counts.
QUEUE_DEPTH_INTERVAL_S: Final = 15.0

#: The ``state`` label of a pending delivery a worker holds the lease of.
LEASED: Final = "leased"

#: The ``state`` label values of the queue-depth gauge.
DEPTH_STATES: Final = (QUEUED, DEFERRED, LEASED)

_QUEUE_DEPTH: Final = (
    "SELECT channel, CASE WHEN lease_until IS NOT NULL AND lease_until > ? THEN 'leased' ELSE state END, "
    "COUNT(*) FROM notification_deliveries WHERE state IN ('queued', 'deferred') GROUP BY 1, 2"
)
_PURGE_KEYS: Final = (
    "DELETE FROM notification_idempotency_keys WHERE idempotency_key IN (SELECT idempotency_key "
    "FROM notification_idempotency_keys WHERE created_at <= ? ORDER BY created_at LIMIT ?)"
)
# A notification is over when no delivery of it is pending nor changed since the cutoff.
_PURGE_NOTIFICATIONS: Final = (
    "DELETE FROM notifications WHERE id IN (SELECT n.id FROM notifications n WHERE n.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.notification_id = n.id "
    "AND (d.state IN ('queued', 'deferred') OR d.updated_at >= ?)) ORDER BY n.created_at LIMIT ?)"
)


def queue_depth(database: OutboxDatabase, now: float) -> dict[tuple[str, str], int]:
    """
    The pending deliveries by ``(channel, state)`` (blocking), every pair of
    :data:`~.records.CHANNELS` and :data:`DEPTH_STATES` present (0 if none).

    :param now: Unix seconds: a lease running past it counts as ``leased``.
    """
    counts = {(channel, state): 0 for channel in CHANNELS for state in DEPTH_STATES}
    with database.transaction(write=False) as cursor:
        cursor.execute(database.sql(_QUEUE_DEPTH), (now,))
        for channel, state, n in cursor.fetchall():
            counts[(str(channel), str(state))] = int(n)
    return counts


def purge_finished(
    database: OutboxDatabase, cutoff: float, now: float, batch: int = PURGE_BATCH
) -> tuple[int, int]:
    """
    Delete one batch of what is over (blocking, one transaction).

    :param cutoff: Unix seconds: notifications created before it whose every
        delivery is final and last changed before it go, with their deliveries.
    :param now: Unix seconds: idempotency keys given 24 hours before it go.
    :param batch: At most this many notifications, and this many keys.
    :return: How many notifications and how many keys were deleted (both
        under *batch*: nothing more is due now).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    with database.transaction(write=True) as cursor:
        cursor.execute(database.sql(_PURGE_KEYS), (now - IDEMPOTENCY_WINDOW_S, batch))
        keys = max(0, int(cursor.rowcount))
        cursor.execute(database.sql(_PURGE_NOTIFICATIONS), (cutoff, cutoff, batch))
        return max(0, int(cursor.rowcount)), keys


class QueueDepthMonitor(PeriodicService):
    """
    Sets ``streamsrv_notifications_queue_depth{channel,state}`` from one count every *interval_s*.

    :param outbox: The :class:`~.outbox.IOutbox` (its ``queue_depth`` runs in the thread pool).
    :param gauge: The labelled gauge.
    :param clock: The reactor (tests: ``task.Clock``).
    """

    def __init__(
        self, outbox: Any, gauge: Any, clock: IReactorTime, interval_s: float = QUEUE_DEPTH_INTERVAL_S
    ) -> None:
        super().__init__(interval_s, self.refresh, clock=clock, what="notifications: the queue-depth count")
        self._outbox = outbox
        self._gauge = gauge

    async def refresh(self) -> None:
        """Count now and set every label pair (a failure is logged by the timer; the last values stay)."""
        counts = await self._outbox.queue_depth(self.clock.seconds())
        for (channel, state), n in counts.items():
            self._gauge.labels(channel, state).set(n)


class NotificationRetention(PeriodicService):
    """
    Deletes finished notifications older than *retention_days*, every *interval_s*, in batches.

    :param outbox: The :class:`~.outbox.IOutbox` (its ``purge`` runs in the thread pool).
    :param clock: The reactor (tests: ``task.Clock``).
    :param retention_days: ``STREAMSRV_NOTIFY_RETENTION_DAYS`` (at least 1: frequency caps
        look one day back, idempotency keys live 24 hours).
    :param batch: Notifications per transaction.
    :ivar purged: Notifications deleted since start.
    """

    def __init__(
        self,
        outbox: Any,
        clock: IReactorTime,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        interval_s: float = RETENTION_INTERVAL_S,
        batch: int = PURGE_BATCH,
    ) -> None:
        if not (math.isfinite(retention_days) and retention_days >= 1):
            raise ValueError("retention_days must be a number >= 1")
        super().__init__(interval_s, self.purge, clock=clock, what="notifications: the retention purge")
        self._outbox = outbox
        self._retention_s = retention_days * 86400.0
        self._batch = batch
        self.purged = 0

    async def purge(self) -> int:
        """
        Delete batch after batch (each its own transaction) until one comes
        back short, or :data:`MAX_BATCHES` went (the rest waits for the next
        round, so a stop never waits long); how many notifications went.
        """
        now = self.clock.seconds()
        notifications = keys = 0
        for _ in range(MAX_BATCHES):
            gone, keys_gone = await self._outbox.purge(now - self._retention_s, now, self._batch)
            notifications, keys = notifications + gone, keys + keys_gone
            if gone < self._batch and keys_gone < self._batch:
                break
        self.purged += notifications
        if notifications or keys:
            log.info(
                "notifications: the retention purge deleted {notifications} notifications "
                "and {keys} expired idempotency keys",
                notifications=notifications,
                keys=keys,
            )
        return notifications

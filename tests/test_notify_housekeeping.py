"""Outbox housekeeping: the queue-depth count and gauge, the retention purge, and the metrics in /metrics.

The SQL runs on SQLite (a file per test) and on the machine's real
PostgreSQL (a schema per test; skipped, or failed under
``STREAMSRV_TEST_REQUIRE_SERVICES=1``, without it), through a synchronous
thread pool; the timers run on a ``task.Clock``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest

from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.config import ConfigError, load_settings
from streamsrv.health.metrics import Metrics
from streamsrv.notifications.factory import add_notifications
from streamsrv.notifications.housekeeping import (
    RETENTION_INTERVAL_S,
    NotificationRetention,
    QueueDepthMonitor,
)
from streamsrv.notifications.outbox import Outbox
from streamsrv.notifications.outboxdb import OutboxDatabase, PostgresOutboxDatabase, SqliteOutboxDatabase
from streamsrv.notifications.records import DEFERRED, IDEMPOTENCY_WINDOW_S, SUPPRESSED, NewDelivery
from tests.sitehelpers import site_settings
from tests.test_notify_factory import FakeHub
from tests.test_notify_outbox import postgres_schema_dsn
from tests.test_notify_service import DATA

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object

NOW = 1_800_000_000.0
DAY = 86400.0


class HousekeepingBehaviour(_MixinBase):
    """queue_depth and purge on one database (the subclasses pick which)."""

    def make_database(self) -> OutboxDatabase:
        raise NotImplementedError

    def setUp(self) -> None:
        self.database = self.make_database()
        self.addCleanup(self.database.close)
        self.outbox = Outbox(self.database, ImmediateReactor(), SynchronousThreadPool())
        self.successResultOf(self.outbox.start(NOW))

    def enqueue(self, *deliveries: NewDelivery, now: float, key: str | None = None) -> Any:
        """A notification with *deliveries*, accepted at *now*."""
        return self.successResultOf(
            self.outbox.enqueue("new-release", {}, "normal", list(deliveries), key, now)
        )

    def send_all(self, now: float) -> None:
        """Claim every due delivery and mark it sent at *now*."""
        for c in self.successResultOf(self.outbox.claim("w", now, 1000, 60)):
            self.assertTrue(self.successResultOf(self.outbox.mark_sent(c.delivery.id, "w", now)))

    def ids(self) -> set[str]:
        """The notification ids left."""
        with self.database.transaction(write=False) as cursor:
            cursor.execute("SELECT id FROM notifications")
            return {str(row[0]) for row in cursor.fetchall()}

    def count(self, table: str) -> int:
        """Rows of *table*."""
        with self.database.transaction(write=False) as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cursor.fetchone()[0])

    def test_queue_depth(self) -> None:
        """Pending deliveries are counted per channel and state; leased ones apart; every pair present."""
        self.enqueue(
            NewDelivery("u1", "email"),
            NewDelivery("u2", "email"),
            NewDelivery("u1", "websocket"),
            NewDelivery("u1", "sms", DEFERRED, not_before=NOW + 600),
            NewDelivery("u1", "push", SUPPRESSED, reason="opted_out"),
            now=NOW,
        )
        claimed = self.successResultOf(self.outbox.claim("w", NOW, 1, 60))
        depth = self.successResultOf(self.outbox.queue_depth(NOW))
        self.assertEqual(len(depth), 12)
        leased = claimed[0].delivery.channel
        expected = {("email", "queued"): 2, ("websocket", "queued"): 1, ("sms", "deferred"): 1}
        expected[(leased, "queued")] -= 1
        expected[(leased, "leased")] = 1
        self.assertEqual({k: v for k, v in depth.items() if v}, {k: v for k, v in expected.items() if v})
        # Once the lease has run out the delivery is counted as waiting again.
        later = self.successResultOf(self.outbox.queue_depth(NOW + 61))
        self.assertEqual(later[(leased, "leased")], 0)

    def test_purge_finished_only(self) -> None:
        """Only notifications over (every delivery final, unchanged since the cutoff) go, with their rows."""
        old_sent = self.enqueue(NewDelivery("u", "websocket"), now=NOW - 40 * DAY, key="k-old")
        self.send_all(NOW - 40 * DAY)
        old_suppressed = self.enqueue(
            NewDelivery("u", "push", SUPPRESSED, reason="no_address"), now=NOW - 40 * DAY
        )
        old_pending = self.enqueue(
            NewDelivery("u", "email", DEFERRED, not_before=NOW + 60), now=NOW - 40 * DAY
        )
        old_but_recent = self.enqueue(NewDelivery("u", "sms"), now=NOW - 40 * DAY)
        self.send_all(NOW - 2 * DAY)  # sent long after it was accepted: changed inside the retention
        recent = self.enqueue(NewDelivery("u", "websocket"), now=NOW - DAY, key="k-new")
        self.send_all(NOW - DAY)
        gone, keys = self.successResultOf(self.outbox.purge(NOW - 30 * DAY, NOW, 100))
        self.assertEqual((gone, keys), (2, 2))  # both keys are past their 24 hours
        self.assertEqual(
            self.ids(),
            {r.notification.id for r in (old_pending, old_but_recent, recent)},
        )
        self.assertIsNone(self.successResultOf(self.outbox.get(old_sent.notification.id)))
        self.assertIsNone(self.successResultOf(self.outbox.get(old_suppressed.notification.id)))
        self.assertEqual(self.count("notification_deliveries"), 3)
        self.assertEqual(self.count("notification_idempotency_keys"), 0)
        self.assertEqual(self.successResultOf(self.outbox.purge(NOW - 30 * DAY, NOW, 100)), (0, 0))

    def test_unexpired_key_kept(self) -> None:
        """An idempotency key inside its 24 hours is kept (and answers), its notification too."""
        record = self.enqueue(NewDelivery("u", "websocket"), now=NOW - 3600, key="fresh")
        self.send_all(NOW - 3600)
        self.assertEqual(self.successResultOf(self.outbox.purge(NOW - DAY, NOW, 100)), (0, 0))
        found = self.successResultOf(self.outbox.find_by_idempotency_key("fresh", NOW))
        self.assertEqual(found.notification.id, record.notification.id)
        self.assertEqual(IDEMPOTENCY_WINDOW_S, DAY)

    def test_batches(self) -> None:
        """One call deletes at most a batch; the service goes on until a batch comes back short."""
        for _ in range(5):
            self.enqueue(NewDelivery("u", "push", SUPPRESSED, reason="opted_out"), now=NOW - 60 * DAY)
        self.assertEqual(self.successResultOf(self.outbox.purge(NOW - 30 * DAY, NOW, 2)), (2, 0))
        self.assertEqual(len(self.ids()), 3)
        clock = Clock()
        clock.advance(NOW)
        retention = NotificationRetention(self.outbox, clock, retention_days=30, batch=2)
        retention.startService()  # the first purge runs now
        self.assertEqual((retention.purged, self.ids()), (3, set()))
        self.enqueue(NewDelivery("u", "push", SUPPRESSED, reason="opted_out"), now=NOW)
        clock.advance(31 * DAY)  # one round per interval, however late: the next one sees it old
        self.assertEqual(retention.purged, 4)
        self.successResultOf(retention.stopService())
        self.assertEqual(retention.interval_s, RETENTION_INTERVAL_S)


class SqliteHousekeepingTests(HousekeepingBehaviour, unittest.TestCase):
    """On SQLite."""

    def make_database(self) -> OutboxDatabase:
        return SqliteOutboxDatabase(Path(self.mktemp()) / "notifications.sqlite3")


class PostgresHousekeepingTests(HousekeepingBehaviour, unittest.TestCase):
    """On the real PostgreSQL, in a schema of its own."""

    def make_database(self) -> OutboxDatabase:
        return PostgresOutboxDatabase(postgres_schema_dsn(self))


class TimerTests(unittest.TestCase):
    """The two timers on a clock, with an outbox that records calls."""

    def test_retention_days_validated(self) -> None:
        """Less than a day (caps look a day back) or not a number is refused."""
        for days in (0.5, 0, -1, float("nan"), float("inf")):
            self.assertRaises(ValueError, NotificationRetention, object(), Clock(), days)

    def test_retention_setting(self) -> None:
        """STREAMSRV_NOTIFY_RETENTION_DAYS: 30 by default, a number >= 1, refused by name otherwise."""
        self.assertEqual(load_settings(cli={}, environ={}).notify_retention_days, 30.0)
        settings = load_settings(cli={}, environ={"STREAMSRV_NOTIFY_RETENTION_DAYS": "7.5"})
        self.assertEqual(settings.notify_retention_days, 7.5)
        for bad in ("0.5", "x", "-3"):
            with self.assertRaises(ConfigError) as caught:
                load_settings(cli={}, environ={"STREAMSRV_NOTIFY_RETENTION_DAYS": bad})
            self.assertTrue(caught.exception.problems[0].startswith("STREAMSRV_NOTIFY_RETENTION_DAYS: "))

    def test_queue_depth_monitor(self) -> None:
        """Every interval one count sets every label pair; a failed count keeps the last values."""
        answers: list[Any] = [{("email", "queued"): 3, ("email", "leased"): 1}, RuntimeError("db down")]

        class Outbox:
            def queue_depth(self, now: float) -> Any:
                from twisted.internet.defer import fail, succeed

                answer = answers.pop(0) if answers else {("email", "queued"): 0, ("email", "leased"): 0}
                return fail(answer) if isinstance(answer, Exception) else succeed(answer)

        registry = CollectorRegistry()
        gauge = Gauge("depth", "d", ["channel", "state"], registry=registry)
        clock = Clock()
        monitor = QueueDepthMonitor(Outbox(), gauge, clock, interval_s=15)
        monitor.startService()
        value = lambda state: registry.get_sample_value("depth", {"channel": "email", "state": state})  # noqa: E731
        self.assertEqual((value("queued"), value("leased")), (3.0, 1.0))
        clock.advance(15)
        self.assertEqual(value("queued"), 3.0)
        self.flushLoggedErrors(RuntimeError)
        clock.advance(15)
        self.assertEqual(value("queued"), 0.0)
        self.successResultOf(monitor.stopService())


class MetricsTests(unittest.TestCase):
    """The daemon's parts: after a send, /metrics shows the queue depth and the delivery latency."""

    async def test_metrics_after_a_send(self) -> None:
        """A websocket delivery sent is one latency observation; the depth gauge is exported per channel."""
        settings = dataclasses.replace(site_settings(), data_dir=Path(self.mktemp()))
        parent, hub, metrics = MultiService(), FakeHub(), Metrics(process=False)
        service = add_notifications(settings, reactor, parent, hub, metrics)
        parent.startService()
        self.addCleanup(parent.stopService)
        record = await service.notify("new-release", ["u1"], ["websocket"], DATA, "normal")
        for _ in range(500):
            got = await service.get(record.notification.id)
            if got["deliveries"][0]["state"] == "sent":
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(got["deliveries"][0]["state"], "sent")
        text = metrics.render().decode()
        self.assertIn('streamsrv_notification_delivery_seconds_count{channel="websocket"} 1.0', text)
        self.assertIn(
            'streamsrv_notification_delivery_seconds_bucket{channel="websocket",le="+Inf"} 1.0', text
        )
        for channel in ("websocket", "email", "sms", "push"):
            for state in ("queued", "deferred", "leased"):
                self.assertIn(
                    f'streamsrv_notifications_queue_depth{{channel="{channel}",state="{state}"}}', text
                )
        await parent.stopService()

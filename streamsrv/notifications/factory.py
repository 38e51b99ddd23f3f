# -*- test-case-name: tests.test_notify_factory -*-
"""Build the notifications component from the settings: outbox, channels, sender, service.

:func:`add_notifications` is what the composition root calls: it parses the
component's options, loads the templates (once, at start), builds the
outbox (SQLite in the data dir, PostgreSQL with ``STREAMSRV_ANALYTICS_DSN``),
the configured channels (a channel whose variables are unset is not built)
and the sender, and adds one service that migrates the outbox before the
sender's first round and, on stop, stops the sender, hands back its leases
and closes the channels and the outbox.  It counts outcomes in
``streamsrv_notifications_total{channel,outcome}``, keeps
``streamsrv_notifications_queue_depth{channel,state}`` (a count every 15 s)
and ``streamsrv_notification_delivery_seconds{channel}``, and purges
finished notifications older than ``STREAMSRV_NOTIFY_RETENTION_DAYS``.  This module must never
use the global reactor nor hold any sending logic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.config import ConfigError, Settings
from streamsrv.notifications.channels.base import IChannel
from streamsrv.notifications.housekeeping import NotificationRetention, QueueDepthMonitor
from streamsrv.notifications.options import NotifyOptions, notify_options
from streamsrv.notifications.outbox import Outbox, make_outbox_database
from streamsrv.notifications.sender import NotificationSender
from streamsrv.notifications.service import NotificationService
from streamsrv.notifications.templates import TemplateSet
from streamsrv.service import PeriodicService

__all__ = ["NotificationsLifecycle", "add_notifications", "make_channels"]

log = Logger()

#: The outcome counter's name.
OUTCOMES_COUNTER = "streamsrv_notifications_total"

#: The queue-depth gauge's name (refreshed by :class:`~.housekeeping.QueueDepthMonitor`).
QUEUE_DEPTH_GAUGE = "streamsrv_notifications_queue_depth"

#: The delivery-latency histogram's name, and its buckets in seconds: from a websocket
#: frame sent at once to an email deferred past a night of quiet hours.
DELIVERY_HISTOGRAM = "streamsrv_notification_delivery_seconds"
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400)


def make_channels(options: NotifyOptions, reactor: Any) -> dict[str, IChannel]:
    """The external channels whose variables are set, by name (the protocol clients load only then)."""
    channels: dict[str, IChannel] = {}
    if options.smtp is not None and options.smtp_from is not None:
        from streamsrv.notifications.channels.email import EmailChannel

        channels["email"] = EmailChannel(
            reactor, options.smtp, options.smtp_from, pool_size=options.smtp_pool_size
        )
    if options.sms is not None or options.vapid is not None:
        from streamsrv.notifications.channels.http import HttpSender

        if options.sms is not None:
            from streamsrv.notifications.channels.sms import SEND_TIMEOUT_S, SmsChannel

            channels["sms"] = SmsChannel(options.sms, HttpSender(reactor, "sms", timeout_s=SEND_TIMEOUT_S))
        if options.vapid is not None:
            from streamsrv.notifications.channels.push import SEND_TIMEOUT_S as PUSH_TIMEOUT_S
            from streamsrv.notifications.channels.push import PushChannel

            channels["push"] = PushChannel(
                options.vapid, HttpSender(reactor, "push", timeout_s=PUSH_TIMEOUT_S)
            )
    return channels


class NotificationsLifecycle(Service):
    """
    Starts the outbox, then the sender (and the housekeeping timers); stops
    them, then closes channels and outbox.

    :ivar ready: Whether the outbox is migrated (the routes may answer).
    """

    def __init__(
        self,
        outbox: Outbox,
        sender: NotificationSender,
        channels: dict[str, IChannel],
        clock: Any,
        housekeeping: Sequence[PeriodicService] = (),
    ) -> None:
        """:param housekeeping: Timers using the outbox (queue depth, retention), started with the sender."""
        self.outbox = outbox
        self.sender = sender
        self.channels = channels
        self.housekeeping = tuple(housekeeping)
        self._clock = clock
        self._started: Deferred[Any] = succeed(None)

    def startService(self) -> None:
        """Migrate the outbox (off the reactor), then start the sender and the housekeeping."""
        super().startService()

        def go(_: object) -> None:
            if self.running:
                self.sender.startService()
                for timer in self.housekeeping:
                    timer.startService()

        def failed(failure: Failure) -> None:
            log.failure("the notification outbox did not start; nothing will be sent", failure)

        self._started = self.outbox.start(self._clock.seconds()).addCallbacks(go, failed)

    def stopService(self) -> Deferred[None]:
        """Stop sending (releasing leases), then close every channel and the outbox."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._started  # never fails: a start failure was logged
        await DeferredList([timer.stopService() for timer in self.housekeeping], consumeErrors=True)
        await self.sender.stopService()
        closes = [channel.close() for channel in self.channels.values()]  # type: ignore[attr-defined]
        await DeferredList(closes, consumeErrors=True)
        await self.outbox.close()


def add_notifications(
    settings: Settings, reactor: Any, parent: IServiceCollection, hub: Any, metrics: Any = None
) -> NotificationService:
    """
    The notifications component, its lifecycle a service of *parent*.

    :param hub: The event hub (websocket deliveries go to ``user:{sub}``).
    :param metrics: The daemon's :class:`~streamsrv.health.metrics.Metrics` (the outcome
        counter), or ``None``.
    :raise ValueError: For an unusable DSN, option or templates directory (the message names no secret).
    """
    try:
        options = notify_options(settings)
    except ConfigError as e:
        raise ValueError("; ".join(e.problems)) from None
    try:
        templates = TemplateSet.load(options.templates_dir)
    except OSError as e:
        raise ValueError(f"the templates directory cannot be read ({e.strerror})") from None
    if not templates.names():
        raise ValueError(f"no *.j2 template in {options.templates_dir}")
    database = make_outbox_database(settings.analytics_dsn, settings.data_dir)
    if IReactorThreads.providedBy(reactor):
        outbox = Outbox(database, reactor, reactor.getThreadPool())
    else:  # a test's memory reactor runs no threads (the daemon's always does)
        outbox = Outbox(database, ImmediateReactor(), SynchronousThreadPool())
    channels = make_channels(options, reactor)
    instruments = _Instruments(metrics.registry) if metrics is not None else None
    sender = NotificationSender(
        outbox,
        templates,
        channels,
        hub.publish,
        reactor,
        default_caps=options.default_caps,
        max_attempts=options.max_attempts,
        batch=options.batch,
        lease_s=options.lease_s,
        retry_base_s=options.retry_base_s,
        # Two per SMTP session: each has its next message ready when a transaction ends.
        concurrency=2 * options.smtp_pool_size,
        on_outcome=None if instruments is None else instruments.outcome,
        on_sent=None if instruments is None else instruments.sent,
        # Both hubs list the channels with a subscriber here (a test's stand-in may not).
        subscribed=(lambda: hub.channels) if hasattr(hub, "channels") else None,
    )
    configured = frozenset({"websocket", *channels})
    service = NotificationService(
        outbox,
        templates,
        configured,
        options.default_caps,
        options.max_recipients,
        reactor,
        on_queued=sender.wake,
        fast_path=sender,
    )
    timers: list[PeriodicService] = [NotificationRetention(outbox, reactor, settings.notify_retention_days)]
    if instruments is not None:
        timers.append(QueueDepthMonitor(outbox, instruments.depth, reactor))
    NotificationsLifecycle(outbox, sender, channels, reactor, timers).setServiceParent(parent)
    return service


class _Instruments:
    """The component's metrics on the daemon's registry: outcomes, queue depth, delivery latency."""

    def __init__(self, registry: Any) -> None:
        self.outcomes = Counter(
            OUTCOMES_COUNTER, "Notification deliveries handled, by channel and outcome",
            ["channel", "outcome"], registry=registry,
        )  # fmt: skip
        self.depth = Gauge(
            QUEUE_DEPTH_GAUGE, "Deliveries waiting in the outbox, by channel and state",
            ["channel", "state"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            DELIVERY_HISTOGRAM, "Seconds from a notification's acceptance (202) to each delivery's send",
            ["channel"], buckets=DELIVERY_BUCKETS, registry=registry,
        )  # fmt: skip

    def outcome(self, channel: str, outcome: str) -> None:
        self.outcomes.labels(channel, outcome).inc()

    def sent(self, channel: str, seconds: float) -> None:
        self.latency.labels(channel).observe(seconds)

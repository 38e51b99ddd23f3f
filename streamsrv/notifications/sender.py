# -*- test-case-name: tests.test_notify_service -*-
"""The sender: a timer service that claims due deliveries and sends each on its channel.

Every interval, :class:`NotificationSender` leases a batch of due deliveries
from the outbox and, for each, applies the user's preferences at send time —
opted out or no address: ``suppressed``; quiet hours (email, SMS, push, not
urgent): ``deferred`` to the window's end; over a frequency cap (not urgent):
``suppressed`` — then renders the template in the user's locale and sends:
websocket as a ``notification`` event on the hub's ``user:{sub}`` channel
(through an injected ``publish``), the others through an
:class:`~.channels.base.IChannel`.  A retryable error is retried at
:func:`~.records.next_attempt` (or the server's ``Retry-After``) until
``max_attempts``; a permanent one fails at once; a gone push subscription is
removed from the preferences.  Leases not used are released on stop.  This
module must never use the global reactor, block, or take a ``request``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.errors import ApiError
from streamsrv.notifications.caps import Caps, check_caps
from streamsrv.notifications.channels.base import (
    ChannelError,
    EmailMessage,
    IChannel,
    PushMessage,
    PushSubscription,
    RetryableError,
    SmsMessage,
)
from streamsrv.notifications.outbox import IOutbox
from streamsrv.notifications.outboxdb import OutboxUnavailable
from streamsrv.notifications.preferences import Preferences, default_preferences, parse_preferences
from streamsrv.notifications.quiet import quiet_until
from streamsrv.notifications.records import DEFAULT_MAX_ATTEMPTS, Claimed, next_attempt
from streamsrv.notifications.templates import Rendered, TemplateSet
from streamsrv.service import PeriodicService

__all__ = ["NotificationSender"]

log = Logger()

#: Seconds a claimed delivery stays ours: well above the longest send (SMTP: 120 s with its queue).
LEASE_S = 180.0

#: Deliveries claimed per round.
BATCH = 200

DAY_S = 86400.0

#: What publishes an event on a hub channel: ``publish(channel, event)``.
Publisher = Callable[[str, Mapping[str, Any]], None]


class _Outcome(Exception):
    """A decision taken before sending: ``suppressed`` with a reason, or ``deferred``."""

    def __init__(self, reason: str | None = None, not_before: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_before = not_before


class NotificationSender(PeriodicService):
    """
    Sends the outbox's due deliveries.

    :param outbox: The outbox (started before this service).
    :param templates: The loaded templates.
    :param channels: The configured external channels by name (``email``, ``sms``, ``push``).
    :param publish: ``hub.publish``, for the websocket channel.
    :param clock: The reactor (tests: ``task.Clock``).
    :param default_caps: ``STREAMSRV_NOTIFY_DEFAULT_CAPS``.
    :param max_attempts: ``STREAMSRV_NOTIFY_MAX_ATTEMPTS``.
    :param worker_id: Names this process's leases (default: a random id).
    :param rng: The retry jitter.
    :param on_outcome: ``on_outcome(channel, outcome)`` for metrics (``sent``,
        ``retry``, ``failed``, ``deferred``, a suppression reason).
    :param on_sent: ``on_sent(channel, seconds)`` for each delivery sent: the
        seconds from the notification's acceptance to its send (the latency metric).
    """

    def __init__(
        self,
        outbox: IOutbox,
        templates: TemplateSet,
        channels: Mapping[str, IChannel],
        publish: Publisher,
        clock: IReactorTime,
        *,
        default_caps: Caps,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        interval_s: float = 1.0,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        batch: int = BATCH,
        lease_s: float = LEASE_S,
        on_outcome: Callable[[str, str], None] | None = None,
        on_sent: Callable[[str, float], None] | None = None,
    ) -> None:
        super().__init__(
            interval_s, self.send_due, clock=clock, name="notifications", what="sending notifications"
        )
        self.outbox = outbox
        self.templates = templates
        self.channels = dict(channels)
        self._publish = publish
        self._default_caps = default_caps
        self.max_attempts = max_attempts
        self.worker_id = worker_id or f"sender-{uuid.uuid4().hex}"
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self._batch = batch
        self._lease_s = lease_s
        self._on_outcome = on_outcome
        self._on_sent = on_sent
        self._held: set[str] = set()
        self._outbox_down = False

    def stopService(self) -> Deferred[None]:
        """Stop claiming; once the round in progress ends, hand back the leases still held."""
        stopped = super().stopService()

        def release(_: object) -> Deferred[Any] | None:
            held, self._held = sorted(self._held), set()
            return self.outbox.release(self.worker_id, held) if held else None

        return stopped.addCallback(release).addCallback(lambda _: None)

    async def send_due(self) -> int:
        """One round: claim a batch and handle every delivery of it; returns how many."""
        now = self.clock.seconds()
        try:
            claimed = await self.outbox.claim(self.worker_id, now, self._batch, self._lease_s)
        except OutboxUnavailable as e:
            # Once per outage, not a traceback a second: deliveries wait in the outbox.
            if not self._outbox_down:
                self._outbox_down = True
                log.warn("notifications: the outbox is unavailable ({error}); sending waits", error=str(e),
                         event_kind="degraded")  # fmt: skip
            return 0
        if self._outbox_down:
            self._outbox_down = False
            log.info("notifications: the outbox is available again")
        self._held.update(c.delivery.id for c in claimed)
        # One user's deliveries on one channel go one after the other, so each cap decision
        # sees the sends before it; different users and channels go at once.
        groups: dict[tuple[str, str], list[Claimed]] = {}
        for c in claimed:
            groups.setdefault((c.delivery.user_id, c.delivery.channel), []).append(c)
        rounds = [Deferred.fromCoroutine(self._handle_in_turn(group)) for group in groups.values()]
        await DeferredList(rounds, consumeErrors=True)
        return len(claimed)

    async def _handle_in_turn(self, group: list[Claimed]) -> None:
        for claimed in group:
            await self._handle(claimed)

    async def _handle(self, claimed: Claimed) -> None:
        delivery = claimed.delivery
        try:
            await self._deliver(claimed)
        except Exception:
            log.failure("sending delivery {id} failed unexpectedly", id=delivery.id)
            await self._retry(claimed, "internal error", None)
        finally:
            self._held.discard(delivery.id)

    async def _deliver(self, claimed: Claimed) -> None:
        delivery, notification = claimed.delivery, claimed.notification
        worker, now = self.worker_id, self.clock.seconds()
        preferences = await self._preferences(delivery.user_id)
        try:
            await self._admit(claimed, preferences, now)
            rendered = self.templates.render(
                notification.template, delivery.channel, preferences.locale, notification.data
            )
            await self._send(claimed, preferences, rendered)
        except _Outcome as o:
            if o.not_before is not None:
                await self.outbox.mark_deferred(delivery.id, worker, now, o.not_before)
                self._count(delivery.channel, "deferred")
            else:
                assert o.reason is not None
                await self.outbox.mark_suppressed(delivery.id, worker, now, o.reason)
                self._count(delivery.channel, o.reason)
            return
        except ApiError as e:  # the template no longer renders (changed since the send)
            await self._fail(claimed, f"template: {e.message}")
            return
        except RetryableError as e:
            await self._retry(claimed, str(e), e.retry_after_s)
            return
        except ChannelError as e:
            await self._fail(claimed, str(e))
            return
        sent_at = self.clock.seconds()
        held = await self.outbox.mark_sent(delivery.id, worker, sent_at)
        self._count(delivery.channel, "sent")
        if held and self._on_sent is not None:
            self._on_sent(delivery.channel, max(0.0, sent_at - notification.created_at))

    async def _admit(self, claimed: Claimed, preferences: Preferences, now: float) -> None:
        """Raise an :class:`_Outcome` unless the delivery is to be sent now."""
        delivery, urgent = claimed.delivery, claimed.notification.priority == "urgent"
        channel = preferences.channel(delivery.channel)
        if delivery.channel != "websocket" and delivery.channel not in self.channels:
            raise _Outcome("not_configured")
        if not channel.enabled:
            raise _Outcome("opted_out")
        if not channel.has_address(delivery.channel):
            raise _Outcome("no_address")
        if urgent:
            return
        if delivery.channel != "websocket" and preferences.quiet_hours is not None:
            until = quiet_until(preferences.quiet_hours, now)
            if until is not None:
                raise _Outcome(not_before=until)
        sent = await self.outbox.recent_sends(delivery.user_id, delivery.channel, now - DAY_S)
        if not check_caps(preferences.caps, sent, now).allowed:
            raise _Outcome("frequency_cap")

    async def _send(self, claimed: Claimed, preferences: Preferences, rendered: Rendered) -> None:
        delivery, notification = claimed.delivery, claimed.notification
        channel = delivery.channel
        if channel == "websocket":
            self._publish(f"user:{delivery.user_id}", self._event(claimed, rendered))
        elif channel == "email":
            address = preferences.email.address
            assert address is not None
            await self.channels[channel].send(
                EmailMessage(address, rendered.subject or "", rendered.text, rendered.html)
            )
        elif channel == "sms":
            assert preferences.sms.number is not None
            await self.channels[channel].send(SmsMessage(preferences.sms.number, rendered.text))
        else:
            await self._push(claimed, preferences, rendered, notification.priority == "urgent")

    def _event(self, claimed: Claimed, rendered: Rendered) -> dict[str, Any]:
        notification = claimed.notification
        return {
            "type": "notification",
            "id": notification.id,
            "template": notification.template,
            "priority": notification.priority,
            "title": rendered.title,
            "text": rendered.text,
        }

    async def _push(
        self, claimed: Claimed, preferences: Preferences, rendered: Rendered, urgent: bool
    ) -> None:
        """Send to every subscription: sent if one took it; gone ones are removed."""
        payload = json.dumps(self._event(claimed, rendered), ensure_ascii=False).encode("utf-8")
        errors: list[ChannelError] = []
        gone: list[str] = []
        for s in preferences.push.subscriptions:
            message = PushMessage(
                PushSubscription(s.endpoint, s.p256dh, s.auth),
                payload,
                urgency="high" if urgent else "normal",
            )
            try:
                await self.channels["push"].send(message)
            except ChannelError as e:
                errors.append(e)
                if e.subscription_gone:
                    gone.append(s.endpoint)
        if gone:
            await self._remove_subscriptions(claimed.delivery.user_id, gone)
        if len(errors) == len(preferences.push.subscriptions):
            raise next((e for e in errors if e.retryable), errors[0])

    async def _remove_subscriptions(self, user_id: str, endpoints: list[str]) -> None:
        document = await self.outbox.get_preferences(user_id)
        if document is None:
            return
        push = document.get("channels", {}).get("push", {})
        push["subscriptions"] = [
            s for s in push.get("subscriptions", []) if s.get("endpoint") not in endpoints
        ]
        await self.outbox.put_preferences(user_id, document, self.clock.seconds())
        log.info("removed {n} gone push subscription(s) of a user", n=len(endpoints))

    async def _preferences(self, user_id: str) -> Preferences:
        document = await self.outbox.get_preferences(user_id)
        if document is None:
            return default_preferences(self._default_caps)
        return parse_preferences(document, self._default_caps)

    async def _retry(self, claimed: Claimed, error: str, retry_after_s: float | None) -> None:
        delivery, now = claimed.delivery, self.clock.seconds()
        if delivery.attempts >= self.max_attempts:
            await self._fail(claimed, error)
            return
        retry_at = next_attempt(max(delivery.attempts, 1), now, self._rng)
        if retry_after_s is not None:
            retry_at = max(retry_at, now + retry_after_s)
        await self.outbox.mark_failed(delivery.id, self.worker_id, now, error, retry_at)
        self._count(delivery.channel, "retry")

    async def _fail(self, claimed: Claimed, error: str) -> None:
        delivery = claimed.delivery
        await self.outbox.mark_failed(delivery.id, self.worker_id, self.clock.seconds(), error, None)
        self._count(delivery.channel, "failed")

    def _count(self, channel: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(channel, outcome)

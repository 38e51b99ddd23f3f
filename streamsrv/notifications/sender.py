# -*- test-case-name: tests.test_notify_service -*-
"""The sender: a timer service that claims due deliveries in batches and sends them concurrently.

:class:`NotificationSender` works in two lanes so that slow servers never hold
back WebSocket frames: the websocket lane (publishing on the hub is cheap:
big batches) and the external lane (email, SMS, push: batches handled up to
``concurrency`` at a time, which keeps every pooled SMTP session busy).  Each
lane claims a batch (leases), reads the batch's preferences and recent sends in
a few queries, and for each delivery applies the user's preferences at send
time — opted out or no address: ``suppressed``; quiet hours (email, SMS, push,
not urgent): ``deferred`` to the window's end; over a frequency cap (not
urgent): ``suppressed`` — then renders the template (once per notification,
channel and locale) and sends: websocket as a ``notification`` event on the
hub's ``user:{sub}`` channel (through an injected ``publish``), the others
through an :class:`~.channels.base.IChannel`.  Outcomes are written in batches
(:meth:`~.outbox.IOutbox.finish_many`).  A lane that claimed a full batch goes
on at once; :meth:`NotificationSender.wake` starts the lanes when a send was
just queued.  A retryable error is retried at :func:`~.records.next_attempt`
(or the server's ``Retry-After``) until ``max_attempts``; a permanent one fails
at once; a gone push subscription is removed from the preferences.  A delivery
is only started in the first half of its lease, and leases not used are
released (end of a round, stop), so no other worker can take a delivery while
this one may still send it.  On stop nothing new is started, what is in flight
finishes and its outcome is written before the leases are handed back.  This
module must never use the global reactor, block, or take a ``request``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

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
from streamsrv.notifications.records import (
    DEFAULT_MAX_ATTEMPTS,
    RETRY_BASE_S,
    Claimed,
    Finish,
    Lease,
    Notification,
    next_attempt,
)
from streamsrv.notifications.templates import Rendered, TemplateSet
from streamsrv.service import PeriodicService

__all__ = ["NotificationSender"]

log = Logger()

#: Seconds a claimed delivery stays ours: well above the longest send (SMTP: 120 s with its queue).
LEASE_S = 180.0

#: External deliveries (email, SMS, push) claimed per round (``STREAMSRV_NOTIFY_BATCH``).
BATCH = 200

#: Websocket deliveries claimed per round: publishing waits on nothing.
WEBSOCKET_BATCH = 1000

#: External deliveries in flight at once (the factory uses twice the SMTP pool size).
CONCURRENCY = 8

#: Websocket deliveries handed over by a POST handled per reactor turn (then others get a turn).
FAST_CHUNK = 500

#: At most this many seconds of those per reactor turn (the 202's bytes go out in between).
FAST_SLICE_S = 0.004

#: Outcomes written in one transaction at most while a round goes on.
FLUSH_EVERY = 100

DAY_S = 86400.0

#: What publishes an event on a hub channel: ``publish(channel, event)``.
Publisher = Callable[[str, Mapping[str, Any]], None]


class _Outcome(Exception):
    """A decision taken before sending: ``suppressed`` with a reason, or ``deferred``."""

    def __init__(self, reason: str | None = None, not_before: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_before = not_before


@dataclass(eq=False)
class _Lane:
    """Some channels, claimed and sent together; one drain at a time."""

    channels: tuple[str, ...]
    batch: int
    concurrency: int | None
    busy: bool = False
    again: bool = False
    #: Batches handed over already leased (:meth:`NotificationSender.send_claimed`), first served.
    handed: deque[_Handed] = field(default_factory=deque)


@dataclass(eq=False)
class _Handed:
    """Deliveries stored already leased to this sender, with the preferences the POST read."""

    claimed: Sequence[Claimed]
    preferences: Mapping[str, Preferences] | None


@dataclass(eq=False)
class _Round:
    """What one round read at once: documents, recent sends; and what it rendered."""

    documents: dict[str, dict[str, Any]]
    sends: dict[tuple[str, str], list[float]]
    default_caps: Caps
    preferences: dict[str, Preferences] = field(default_factory=dict)
    rendered: dict[tuple[str, str, str | None], Rendered | ApiError] = field(default_factory=dict)

    def preferences_of(self, user_id: str) -> Preferences:
        found = self.preferences.get(user_id)
        if found is None:
            document = self.documents.get(user_id)
            if document is None:
                found = default_preferences(self.default_caps)
            else:
                found = parse_preferences(document, self.default_caps)
            self.preferences[user_id] = found
        return found

    def render(
        self, templates: TemplateSet, notification: Notification, channel: str, locale: str | None
    ) -> Rendered:
        """The same for every user of a notification with one locale: rendered once."""
        key = (notification.id, channel, locale)
        found = self.rendered.get(key)
        if found is None:
            try:
                found = templates.render(notification.template, channel, locale, notification.data)
            except ApiError as e:
                found = e
            self.rendered[key] = found
        if isinstance(found, ApiError):
            raise found
        return found


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
    :param batch: External deliveries claimed per round (``STREAMSRV_NOTIFY_BATCH``).
    :param lease_s: How long a claim holds (``STREAMSRV_NOTIFY_LEASE_S``).
    :param concurrency: External deliveries in flight at once.
    :param retry_base_s: The back-off's first bound (``STREAMSRV_NOTIFY_RETRY_BASE_S``).
    :param on_outcome: ``on_outcome(channel, outcome)`` for metrics (``sent``,
        ``retry``, ``failed``, ``deferred``, a suppression reason).
    :param on_sent: ``on_sent(channel, seconds)`` for each delivery sent: the
        seconds from the notification's acceptance to its send (the latency metric).
    :param subscribed: The hub channels with a subscriber in this process now
        (``hub.channels``): of the deliveries a POST hands over, those to users with a
        socket here are sent first.
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
        concurrency: int = CONCURRENCY,
        retry_base_s: float = RETRY_BASE_S,
        websocket_batch: int = WEBSOCKET_BATCH,
        on_outcome: Callable[[str, str], None] | None = None,
        on_sent: Callable[[str, float], None] | None = None,
        subscribed: Callable[[], Collection[str]] | None = None,
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
        self._lease_s = lease_s
        self._retry_base_s = retry_base_s
        self._on_outcome = on_outcome
        self._on_sent = on_sent
        self._subscribed = subscribed
        self._outbox_down = False
        self._lanes = (
            _Lane(("websocket",), websocket_batch, None),
            _Lane(("email", "sms", "push"), batch, concurrency),
        )
        self._held: set[str] = set()
        self._pending: list[Finish] = []
        self._flush_lock = DeferredLock()
        self._drains: set[Deferred[int]] = set()
        self._stopping = False

    def startService(self) -> None:
        """Start the timer (a first round now)."""
        self._stopping = False
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop claiming and starting sends; once those in flight end, write their outcomes and
        hand back the leases still held.
        """
        self._stopping = True
        stopped = super().stopService()
        return Deferred.fromCoroutine(self._stopped(stopped))

    async def _stopped(self, stopped: Deferred[None]) -> None:
        await stopped
        while self._drains:
            await DeferredList(list(self._drains), consumeErrors=True)
        try:
            await self._flush()
        finally:
            for lane in self._lanes:  # handed over but not started: released with the rest
                lane.handed.clear()
            held, self._held = sorted(self._held), set()
            if held:
                await self.outbox.release(self.worker_id, held)

    def wake(self) -> None:
        """Deliveries were just queued: drain the lanes now rather than at the next interval."""
        if not self.running or self._stopping:
            return
        Deferred.fromCoroutine(self.send_due()).addErrback(self._drain_failed)

    def _drain_failed(self, failure: Failure) -> None:
        log.failure("sending notifications failed; the next round retries", failure)

    async def send_due(self) -> int:
        """
        Drain every lane (rounds until less than a batch was due); how many deliveries were handled.

        The websocket lane first: its frames wait on no server, and on one CPU the email
        lane would otherwise slow them down (a send to 10,000 users: seconds instead of one).
        """
        websocket, *others = self._lanes
        results = await DeferredList([self._drain(websocket)], consumeErrors=True)
        results += await DeferredList([self._drain(lane) for lane in others], consumeErrors=True)
        total = 0
        for ok, result in results:
            if not ok:
                cast(Failure, result).raiseException()
            total += cast(int, result)
        return total

    def _drain(self, lane: _Lane, claim: bool = True) -> Deferred[int]:
        if lane.busy:  # a drain runs: it goes round once more (and takes what was handed over)
            lane.again = lane.again or claim
            return succeed(0)
        lane.busy = True
        drain = Deferred.fromCoroutine(self._drain_lane(lane, claim))
        self._drains.add(drain)

        def done(result: Any) -> Any:
            lane.busy = False
            self._drains.discard(drain)
            return result

        return drain.addBoth(done)

    async def _drain_lane(self, lane: _Lane, claim: bool) -> int:
        """Handle the batches handed over, then (if *claim*, or asked meanwhile) claim rounds."""
        total = 0
        while not self._stopping:
            if lane.handed:  # already leased to us by the POST: no claim
                handed = lane.handed.popleft()
                total += await self._handle_round(lane, handed.claimed, handed.preferences, FAST_CHUNK)
                continue
            if not (claim or lane.again):
                break
            claim, lane.again = True, False
            handled = await self._round(lane)
            total += handled
            if handled < lane.batch and not lane.again and not lane.handed:
                break
        return total

    def send_claimed(
        self, claimed: Sequence[Claimed], preferences: Mapping[str, Preferences] | None = None
    ) -> None:
        """
        Send deliveries stored already leased to this sender (the websocket fast path).

        The POST that accepted them hands them over right after its commit, so they go out
        without waiting for a claim round: the same admission, rendering, publishing and
        batched outcomes as a claimed round (:meth:`_handle_round`), in the websocket lane,
        one batch after another (so each cap decision sees the sends before it), a reactor
        turn after every :data:`FAST_CHUNK` users or :data:`FAST_SLICE_S`.  Sending starts
        at the earliest once the reads it needs (recent sends for the caps; *preferences*,
        unless the POST already read them) have come back, and never before the next reactor
        turn, so the 202 never waits for it.  Stopped or stopping, nothing is sent and the
        leases are handed back; should this process die first, the leases run out and another
        worker sends them.

        :param claimed: Deliveries leased to :attr:`worker_id` (websocket ones).
        :param preferences: Each user's preferences as the POST read them, or ``None`` (read here).
        """
        if not claimed:
            return
        ids = [c.delivery.id for c in claimed]
        if not self.running or self._stopping:
            self.outbox.release(self.worker_id, ids).addErrback(self._drain_failed)
            return
        self._held.update(ids)
        lane = self._lanes[0]
        for batch in self._connected_first(claimed):
            lane.handed.append(_Handed(batch, preferences))
        self._drain(lane, claim=False).addErrback(self._drain_failed)

    def _connected_first(self, claimed: Sequence[Claimed]) -> list[Sequence[Claimed]]:
        """
        *claimed* in batches: the users with a socket in this process first (a few reads and
        frames: they see theirs at once), then the others (through the hub to other nodes,
        or to nobody).  One user's deliveries stay in one batch, so caps see them in turn.
        """
        local = set(self._subscribed()) if self._subscribed is not None else set()
        if not local:
            return [claimed]
        first = [c for c in claimed if f"user:{c.delivery.user_id}" in local]
        if not first or len(first) == len(claimed):
            return [claimed]
        return [first, [c for c in claimed if f"user:{c.delivery.user_id}" not in local]]

    def lease(self, now: float) -> Lease | None:
        """
        The lease a POST gives its websocket deliveries so this sender sends them at once
        (:meth:`send_claimed`); ``None`` when it is not running (they are queued as usual).
        """
        if not self.running or self._stopping:
            return None
        return Lease(self.worker_id, now, now + self._lease_s, frozenset(self._lanes[0].channels))

    async def _round(self, lane: _Lane) -> int:
        """Claim a batch of *lane* and handle every delivery of it; returns how many."""
        now = self.clock.seconds()
        try:
            claimed = await self.outbox.claim(self.worker_id, now, lane.batch, self._lease_s, lane.channels)
        except OutboxUnavailable as e:
            self._outbox_unavailable(e)
            return 0
        if self._outbox_down:
            self._outbox_down = False
            log.info("notifications: the outbox is available again")
        if not claimed:
            return 0
        self._held.update(c.delivery.id for c in claimed)
        return await self._handle_round(lane, claimed, None, None)

    def _outbox_unavailable(self, error: OutboxUnavailable) -> None:
        # Once per outage, not a traceback a second: deliveries wait in the outbox.
        if not self._outbox_down:
            self._outbox_down = True
            log.warn("notifications: the outbox is unavailable ({error}); sending waits", error=str(error),
                     event_kind="degraded")  # fmt: skip

    async def _handle_round(
        self,
        lane: _Lane,
        claimed: Sequence[Claimed],
        preferences: Mapping[str, Preferences] | None,
        chunk: int | None,
    ) -> int:
        """
        Handle every delivery of *claimed* (held by this sender); returns how many.

        Reads the preferences (unless given) and recent sends in a few queries, decides and
        sends each, writes the outcomes and hands back what was not started.  With *chunk*,
        a reactor turn is let go after each *chunk* groups or :data:`FAST_SLICE_S` (and before
        the first when nothing had to be read).
        """
        now = self.clock.seconds()
        ids = [c.delivery.id for c in claimed]
        try:
            users = list(dict.fromkeys(c.delivery.user_id for c in claimed))
            capped = [c.delivery.user_id for c in claimed if c.notification.priority != "urgent"]
            waited = False
            if preferences is None:
                documents = await self.outbox.get_preferences_many(users)
                waited = True
            else:
                documents = {}
            sends = await self.outbox.recent_sends_many(capped, now - DAY_S) if capped else {}
            data = _Round(documents, sends, self._default_caps, dict(preferences or {}))
            # One user's deliveries on one channel go one after the other, so each cap decision
            # sees the sends before it; different users and channels go at once.
            groups: dict[tuple[str, str], list[Claimed]] = {}
            for c in claimed:
                groups.setdefault((c.delivery.user_id, c.delivery.channel), []).append(c)
            # A few workers take the groups in turn (not one coroutine per group behind a
            # semaphore: a run of deliveries decided at once, opted-out users or a stop, would
            # resume each waiter inside the last one's release, deep enough to hit Python's
            # recursion limit and leave a round waiting for ever).
            queue = deque(groups.values())
            if chunk is None:
                workers = lane.concurrency or 1
                turns = [Deferred.fromCoroutine(self._work_through(queue, data)) for _ in range(workers)]
                await DeferredList(turns, consumeErrors=True)
            else:
                await self._work_in_chunks(queue, data, chunk, waited or bool(capped))
        finally:
            await self._end_round(ids)
        return len(claimed)

    async def _work_in_chunks(
        self, queue: deque[list[Claimed]], data: _Round, chunk: int, waited: bool
    ) -> None:
        """
        One worker through *queue*, at most *chunk* groups and :data:`FAST_SLICE_S` per reactor
        turn: the reactor stays responsive (other requests, the 202's bytes, the other lane).
        """
        while queue and not self._stopping:
            if not waited:  # never in the turn that handed them over (the 202's)
                await deferLater(self.clock, 0, lambda: None)
            waited = False
            await self._work_through(queue, data, chunk, self.clock.seconds() + FAST_SLICE_S)

    async def _end_round(self, ids: list[str]) -> None:
        """Write the outcomes, then give back what was not started (stopping, or a lease half gone)."""
        try:
            await self._flush()
        finally:
            unused = [i for i in ids if i in self._held]
            if unused:
                self._held.difference_update(unused)
                await self.outbox.release(self.worker_id, unused)

    async def _work_through(
        self, queue: deque[list[Claimed]], data: _Round, limit: int | None = None, until: float | None = None
    ) -> None:
        """
        Handle groups from *queue* until it is empty (one worker of a lane's round), or *limit*
        groups are done, or (once one is) the clock has passed *until*.
        """
        done = 0
        while queue and not self._stopping:
            if limit is not None and (
                done >= limit or (done and until is not None and self.clock.seconds() > until)
            ):
                return
            done += 1
            group = queue.popleft()
            try:
                await self._handle_in_turn(group, data)
            except Exception:
                log.failure("handling deliveries failed unexpectedly")

    async def _handle_in_turn(self, group: list[Claimed], data: _Round) -> None:
        for claimed in group:
            if self._stopping or self.clock.seconds() > claimed.lease_until - self._lease_s / 2:
                return  # released at the round's end: sent by the next round (or worker)
            await self._handle(claimed, data)

    async def _handle(self, claimed: Claimed, data: _Round) -> None:
        delivery = claimed.delivery
        try:
            await self._deliver(claimed, data)
        except Exception:
            log.failure("sending delivery {id} failed unexpectedly", id=delivery.id)
            self._retry(claimed, "internal error", None)

    async def _deliver(self, claimed: Claimed, data: _Round) -> None:
        delivery, notification = claimed.delivery, claimed.notification
        now = self.clock.seconds()
        preferences = data.preferences_of(delivery.user_id)
        try:
            self._admit(claimed, preferences, now, data.sends)
            rendered = data.render(self.templates, notification, delivery.channel, preferences.locale)
            await self._send(claimed, preferences, rendered)
        except _Outcome as o:
            if o.not_before is not None:
                self._record(claimed, Finish(delivery.id, "deferred", now, when=o.not_before), "deferred")
            else:
                assert o.reason is not None
                self._record(claimed, Finish(delivery.id, "suppressed", now, reason=o.reason), o.reason)
            return
        except ApiError as e:  # the template no longer renders (changed since the send)
            self._fail(claimed, f"template: {e.message}")
            return
        except RetryableError as e:
            self._retry(claimed, str(e), e.retry_after_s)
            return
        except ChannelError as e:
            self._fail(claimed, str(e))
            return
        sent_at = self.clock.seconds()
        data.sends.setdefault((delivery.user_id, delivery.channel), []).append(sent_at)
        self._record(claimed, Finish(delivery.id, "sent", sent_at), "sent")
        if self._on_sent is not None:
            self._on_sent(delivery.channel, max(0.0, sent_at - notification.created_at))

    def _admit(
        self,
        claimed: Claimed,
        preferences: Preferences,
        now: float,
        sends: Mapping[tuple[str, str], Sequence[float]],
    ) -> None:
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
        sent = [t for t in sends.get((delivery.user_id, delivery.channel), ()) if t > now - DAY_S]
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
            message = EmailMessage(
                address, rendered.subject or "", rendered.text, rendered.html, ref=delivery.id
            )
            await self.channels[channel].send(message)
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

    def _retry(self, claimed: Claimed, error: str, retry_after_s: float | None) -> None:
        delivery, now = claimed.delivery, self.clock.seconds()
        if delivery.attempts >= self.max_attempts:
            self._fail(claimed, error)
            return
        retry_at = next_attempt(max(delivery.attempts, 1), now, self._rng, base_s=self._retry_base_s)
        if retry_after_s is not None:
            retry_at = max(retry_at, now + retry_after_s)
        self._record(claimed, Finish(delivery.id, "retry", now, error=error, when=retry_at), "retry")

    def _fail(self, claimed: Claimed, error: str) -> None:
        finish = Finish(claimed.delivery.id, "failed", self.clock.seconds(), error=error)
        self._record(claimed, finish, "failed")

    def _record(self, claimed: Claimed, finish: Finish, outcome: str) -> None:
        """Keep *finish* to be written with others; write a full batch now."""
        self._held.discard(finish.delivery_id)
        self._pending.append(finish)
        self._count(claimed.delivery.channel, outcome)
        if len(self._pending) >= FLUSH_EVERY and not self._flush_lock.locked:
            Deferred.fromCoroutine(self._flush()).addErrback(self._drain_failed)

    async def _flush(self) -> None:
        """Write every kept outcome (one transaction per batch, one writer at a time)."""
        await self._flush_lock.acquire()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self.outbox.finish_many(self.worker_id, batch)
                except BaseException:
                    self._pending[:0] = batch  # kept for the next flush
                    raise
        finally:
            self._flush_lock.release()

    def _count(self, channel: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(channel, outcome)

"""The notification service (validate and queue) and the sender (claim, decide, send, mark).

Both run on a real SQLite outbox through a synchronous thread pool, on a
``task.Clock``; the external channels are fakes of our own ``IChannel``
interface (the channels themselves are tested against real servers in
``test_notify_email``, ``_sms`` and ``_push``).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.errors import ApiError
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.channels.base import (
    IChannel,
    PermanentError,
    RetryableError,
    SendResult,
    SubscriptionGone,
)
from streamsrv.notifications.channels.settings import b64url_encode
from streamsrv.notifications.outbox import Outbox
from streamsrv.notifications.outboxdb import SqliteOutboxDatabase
from streamsrv.notifications.sender import NotificationSender
from streamsrv.notifications.service import NotificationService, parse_send_request
from streamsrv.notifications.templates import TemplateSet, default_templates_dir

#: 2026-01-15 12:00 UTC, a Thursday.
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()
DATA = {"artist": "Miles Davis", "album": "Kind of Blue", "track_count": 5, "url": "https://e.example/a"}
TEMPLATES = TemplateSet.load(default_templates_dir())


def subscription(endpoint: str) -> dict[str, Any]:
    """A browser-like push subscription (a fresh P-256 key and auth secret)."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": b64url_encode(point), "auth": b64url_encode(b"a" * 16)},
    }


@implementer(IChannel)
class FakeChannel:
    """An ``IChannel`` that records messages and answers from a script of outcomes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Any] = []
        self.script: list[Exception | None] = []

    def send(self, message: object) -> Deferred[SendResult]:
        self.sent.append(message)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            return fail(outcome)
        return succeed(SendResult(self.name, "id-1", 250))


class _Base(unittest.TestCase):
    """A started SQLite outbox, a service, a sender, fake channels and a clock."""

    configured = frozenset({"websocket", "email", "sms", "push"})

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        database = SqliteOutboxDatabase(Path(self.mktemp()) / "notifications.sqlite3")
        self.addCleanup(database.close)
        self.outbox = Outbox(database, ImmediateReactor(), SynchronousThreadPool())
        self.successResultOf(self.outbox.start(NOW))
        self.service = NotificationService(
            self.outbox, TEMPLATES, self.configured, Caps(4, 12), 10, self.clock
        )
        self.channels = {
            name: FakeChannel(name) for name in ("email", "sms", "push") if name in self.configured
        }
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.outcomes: list[tuple[str, str]] = []
        self.sender = NotificationSender(
            self.outbox,
            TEMPLATES,
            self.channels,
            lambda channel, event: self.published.append((channel, dict(event))),
            self.clock,
            default_caps=Caps(4, 12),
            max_attempts=3,
            worker_id="w1",
            rng=random.Random(7),
            on_outcome=lambda channel, outcome: self.outcomes.append((channel, outcome)),
        )

    def send(self, **fields: Any) -> Any:
        """Send new-release with *fields* over the defaults; the record."""
        body = {"template": "new-release", "user_ids": ["u1"], "data": DATA, **fields}
        return self.successResultOf(
            Deferred.fromCoroutine(self.service.send(parse_send_request(body, 10), self.clock.seconds()))
        )

    def refused(self, **fields: Any) -> ApiError:
        """The ApiError a send with *fields* raises."""
        body = {"template": "new-release", "user_ids": ["u1"], "data": DATA, **fields}
        try:
            request = parse_send_request(body, 10)
        except ApiError as e:
            return e
        failure = self.failureResultOf(
            Deferred.fromCoroutine(self.service.send(request, self.clock.seconds())), ApiError
        )
        return failure.value

    def put(self, user: str, document: dict[str, Any]) -> None:
        """Store *user*'s preferences through the service."""
        body = json.dumps(document).encode()
        self.successResultOf(Deferred.fromCoroutine(self.service.put_preferences(user, body, NOW)))

    def states(self, record: Any) -> list[dict[str, Any]]:
        """The deliveries of *record* as GET answers them now."""
        got = self.successResultOf(Deferred.fromCoroutine(self.service.get(record.notification.id)))
        return got["deliveries"]

    def run_sender(self) -> int:
        """One round of the sender; how many deliveries it handled."""
        return self.successResultOf(Deferred.fromCoroutine(self.sender.send_due()))


class ServiceTests(_Base):
    """``NotificationService``: validation before anything is queued, deliveries, preferences."""

    def test_default_channels(self) -> None:
        """Without ``channels`` each user gets their enabled channels: websocket for a new user."""
        record = self.send(user_ids=["u1", "u2"])
        self.assertEqual(
            record.to_json()["deliveries"],
            [
                {"user_id": "u1", "channel": "websocket", "state": "queued"},
                {"user_id": "u2", "channel": "websocket", "state": "queued"},
            ],
        )

    def test_explicit_channels(self) -> None:
        """Explicit channels make one delivery per user per channel."""
        record = self.send(user_ids=["u1", "u2"], channels=["email", "websocket"])
        self.assertEqual(
            [(d["user_id"], d["channel"]) for d in record.to_json()["deliveries"]],
            [("u1", "email"), ("u1", "websocket"), ("u2", "email"), ("u2", "websocket")],
        )

    def test_bad_fields_named(self) -> None:
        """Every bad field is named in one 400."""
        e = self.refused(user_ids=[], priority="high", channels=["fax"], extra=1)
        self.assertEqual(e.status, 400)
        for name in ("extra: unknown field", "user_ids:", "priority:", "channels: unknown channel 'fax'"):
            self.assertIn(name, e.message)

    def test_too_many_recipients(self) -> None:
        """More users than the maximum is a 400 naming user_ids."""
        e = self.refused(user_ids=[f"u{i}" for i in range(11)])
        self.assertIn("user_ids: at most 10 users, got 11", e.message)

    def test_unknown_template_and_missing_data(self) -> None:
        """An unknown template or data lacking a variable is a 400 and nothing is queued."""
        self.assertIn("unknown template 'nope'", self.refused(template="nope").message)
        e = self.refused(data={"artist": "x"}, channels=["email"])
        self.assertIn("data.album", e.message)
        self.assertEqual(self.successResultOf(self.outbox.pending_counts()), {"queued": 0, "deferred": 0})

    def test_every_locale_validated(self) -> None:
        """The French email variant is rendered too, so data it alone needs is checked."""
        self.assertIsNone(TEMPLATES.validate("new-release", ("email",), DATA))

    def test_idempotency_key(self) -> None:
        """The same key answers the first notification and queues nothing new."""
        first = self.send(idempotency_key="k1")
        again = self.send(idempotency_key="k1", user_ids=["u9"])
        self.assertEqual(again.notification.id, first.notification.id)
        self.assertFalse(again.created)

    def test_preferences_default_and_put(self) -> None:
        """GET answers the defaults; PUT validates, stores and answers the full document."""
        got = self.successResultOf(Deferred.fromCoroutine(self.service.preferences("u1")))
        self.assertEqual(got["channels"]["websocket"], {"enabled": True})
        self.assertEqual(got["caps"], {"per_hour": 4, "per_day": 12})
        self.put(
            "u1", {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}, "locale": "fr"}
        )
        got = self.successResultOf(Deferred.fromCoroutine(self.service.preferences("u1")))
        self.assertEqual(got["channels"]["email"], {"enabled": True, "address": "ana@example.com"})
        self.assertEqual(got["locale"], "fr")
        bad = self.failureResultOf(
            Deferred.fromCoroutine(self.service.put_preferences("u1", b'{"caps": {"per_hour": -1}}', NOW)),
            ApiError,
        )
        self.assertIn("caps.per_hour", bad.value.message)

    def test_get_unknown(self) -> None:
        """An unknown id is 404."""
        failure = self.failureResultOf(Deferred.fromCoroutine(self.service.get("nope")), ApiError)
        self.assertEqual(failure.value.code, "NOT_FOUND")

    def test_notify_for_alerts(self) -> None:
        """``notify`` (the alerts' entry) queues a notification."""
        record = self.successResultOf(
            self.service.notify("new-release", ["ops"], ["websocket"], DATA, "urgent")
        )
        self.assertEqual(record.notification.priority, "urgent")


class NotConfiguredTests(_Base):
    """Only websocket configured."""

    configured = frozenset({"websocket"})

    def test_explicit_refused(self) -> None:
        """An explicitly asked channel that is not configured is 400 NOT_CONFIGURED."""
        e = self.refused(channels=["websocket", "sms"])
        self.assertEqual((e.status, e.code), (400, "NOT_CONFIGURED"))
        self.assertIn("'sms'", e.message)

    def test_default_suppressed(self) -> None:
        """An unconfigured channel that is only a user default is suppressed not_configured."""
        self.put("u1", {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}})
        record = self.send()
        self.assertEqual(
            record.to_json()["deliveries"],
            [
                {"user_id": "u1", "channel": "email", "state": "suppressed", "reason": "not_configured"},
                {"user_id": "u1", "channel": "websocket", "state": "queued"},
            ],
        )


class SenderTests(_Base):
    """``NotificationSender``: the decisions at send time and the outcomes."""

    def test_websocket_published(self) -> None:
        """A websocket delivery is a notification event on user:{sub}, then sent."""
        record = self.send()
        self.assertEqual(self.run_sender(), 1)
        channel, event = self.published[0]
        self.assertEqual(channel, "user:u1")
        self.assertEqual(event["type"], "notification")
        self.assertEqual(event["id"], record.notification.id)
        self.assertEqual(event["title"], "New from Miles Davis")
        self.assertEqual(self.states(record)[0]["state"], "sent")
        self.assertEqual(self.run_sender(), 0)

    def test_email_in_locale(self) -> None:
        """Email goes to the address, rendered in the user's locale."""
        self.put(
            "u1", {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}, "locale": "fr"}
        )
        record = self.send(channels=["email"])
        self.run_sender()
        message = self.channels["email"].sent[0]
        self.assertEqual(message.to, "ana@example.com")
        self.assertEqual(message.subject, TEMPLATES.render("new-release", "email", "fr", DATA).subject)
        self.assertEqual(self.states(record)[0]["state"], "sent")

    def test_opted_out_and_no_address(self) -> None:
        """A channel the user did not enable is opted_out; enabled without an address, no_address."""
        self.put("u1", {"channels": {"sms": {"enabled": True}}})
        record = self.send(channels=["email", "sms"])
        self.run_sender()
        self.assertEqual(
            [(d["state"], d.get("reason")) for d in self.states(record)],
            [("suppressed", "opted_out"), ("suppressed", "no_address")],
        )
        self.assertEqual(self.channels["sms"].sent, [])

    def test_quiet_hours(self) -> None:
        """In quiet hours email is deferred to the window's end; websocket and urgent are not."""
        self.put(
            "u1",
            {
                "channels": {"email": {"enabled": True, "address": "ana@example.com"}},
                "quiet_hours": {"start": "11:00", "end": "13:00", "time_zone": "UTC"},
            },
        )
        normal = self.send(channels=["email", "websocket"])
        urgent = self.send(channels=["email"], priority="urgent")
        self.run_sender()
        deferred, ws = self.states(normal)
        self.assertEqual((deferred["state"], deferred["not_before"]), ("deferred", NOW + 3600))
        self.assertEqual(ws["state"], "sent")
        self.assertEqual(self.states(urgent)[0]["state"], "sent")
        self.clock.advance(3600)
        self.run_sender()
        self.assertEqual(self.states(normal)[0]["state"], "sent")

    def test_frequency_cap(self) -> None:
        """Over the hourly cap a delivery is suppressed frequency_cap; urgent passes."""
        self.put("u1", {"caps": {"per_hour": 1, "per_day": 10}})
        # One second apart, so they are claimed in this order (equal not_before ties are unordered).
        first = self.send()
        self.clock.advance(1)
        second = self.send()
        self.clock.advance(1)
        urgent = self.send(priority="urgent")
        self.run_sender()
        states = [self.states(r)[0] for r in (first, second, urgent)]
        self.assertEqual(sorted(s["state"] for s in states[:2]), ["sent", "suppressed"])
        self.assertEqual(states[2]["state"], "sent")
        self.assertIn(("websocket", "frequency_cap"), self.outcomes)

    def test_retry_then_failed(self) -> None:
        """A retryable error is retried later, and failed after the last attempt with its error."""
        self.put("u1", {"channels": {"sms": {"enabled": True, "number": "+33612345678"}}})
        self.channels["sms"].script = [RetryableError("sms", "timeout", "no answer")] * 3
        record = self.send(channels=["sms"])
        for _ in range(3):
            self.run_sender()
            self.clock.advance(3600)
        (delivery,) = self.states(record)
        self.assertEqual(delivery["state"], "failed")
        self.assertIn("timeout", delivery["last_error"])
        self.assertEqual(len(self.channels["sms"].sent), 3)
        self.assertEqual([o for _, o in self.outcomes], ["retry", "retry", "failed"])

    def test_retry_waits(self) -> None:
        """A retry is not attempted before its time, then succeeds."""
        self.put("u1", {"channels": {"sms": {"enabled": True, "number": "+33612345678"}}})
        self.channels["sms"].script = [RetryableError("sms", "http_503", retry_after_s=100.0)]
        record = self.send(channels=["sms"])
        self.run_sender()
        self.assertEqual(self.run_sender(), 0)
        self.clock.advance(3600)
        self.run_sender()
        self.assertEqual(self.states(record)[0]["state"], "sent")

    def test_permanent_fails_at_once(self) -> None:
        """A permanent error fails the delivery on its first attempt."""
        self.put("u1", {"channels": {"sms": {"enabled": True, "number": "+33612345678"}}})
        self.channels["sms"].script = [PermanentError("sms", "http_400", "bad number")]
        record = self.send(channels=["sms"])
        self.run_sender()
        self.assertEqual(self.states(record)[0]["state"], "failed")

    def test_push_subscription_gone(self) -> None:
        """A gone subscription is removed; the delivery is sent through the other one."""
        subs = [subscription("https://push.example/a"), subscription("https://push.example/b")]
        self.put("u1", {"channels": {"push": {"enabled": True, "subscriptions": subs}}})
        self.channels["push"].script = [SubscriptionGone("push", status=410), None]
        record = self.send(channels=["push"])
        self.run_sender()
        self.assertEqual(self.states(record)[0]["state"], "sent")
        prefs = self.successResultOf(Deferred.fromCoroutine(self.service.preferences("u1")))
        self.assertEqual(
            [s["endpoint"] for s in prefs["channels"]["push"]["subscriptions"]], ["https://push.example/b"]
        )
        payload = json.loads(self.channels["push"].sent[1].payload)
        self.assertEqual(payload["type"], "notification")

    def test_timer_and_release_on_stop(self) -> None:
        """Started, the sender runs each interval; stopped, it hands back leases it still holds."""
        record = self.send()
        self.sender.startService()
        self.assertEqual(self.states(record)[0]["state"], "sent")
        self.sender._held.add("not-sent")
        released: list[Any] = []
        self.outbox.release = lambda worker, ids: released.append((worker, ids)) or succeed(len(ids))  # type: ignore[method-assign]
        self.successResultOf(self.sender.stopService())
        self.assertEqual(released, [("w1", ["not-sent"])])

    def test_caps_hold_within_one_round(self) -> None:
        """Two deliveries to one user on one channel in one round go in turn: the cap sees the first."""
        self.put(
            "u1",
            {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}, "caps": {"per_hour": 1}},
        )
        pending: list[Deferred[SendResult]] = []
        email = self.channels["email"]
        email.send = lambda message: (email.sent.append(message), pending.append(Deferred()), pending[-1])[2]  # type: ignore[method-assign]
        first, second = self.send(channels=["email"]), self.send(channels=["email"])
        round_ = Deferred.fromCoroutine(self.sender.send_due())
        self.assertEqual(len(pending), 1)
        pending[0].callback(SendResult("email", "m1", 250))
        self.assertEqual(self.successResultOf(round_), 2)
        states = sorted(self.states(r)[0]["state"] for r in (first, second))
        self.assertEqual(states, ["sent", "suppressed"])
        self.assertEqual(len(email.sent), 1)


class BatchedSenderTests(_Base):
    """Rounds with many deliveries: workers, waking, stopping in the middle."""

    def email_users(self, count: int) -> list[str]:
        """*count* users with email on (and an address)."""
        users = [f"u{n}" for n in range(count)]
        for user in users:
            self.put(user, {"channels": {"email": {"enabled": True, "address": f"{user}@example.com"}}})
        return users

    def send_to(self, users: list[str], channels: list[str]) -> Any:
        """new-release to *users* on *channels*; the record."""
        self.service.max_recipients = len(users)
        body = {"template": "new-release", "user_ids": users, "data": DATA, "channels": channels}
        return self.successResultOf(
            Deferred.fromCoroutine(self.service.send(parse_send_request(body, len(users)), NOW))
        )

    def test_many_decided_at_once_do_not_nest(self) -> None:
        """A round where one send is slow and hundreds finish at once (here: a fake channel
        answering at once) handles them all: no waiter resumes inside another's release."""
        users = self.email_users(600)
        sender = NotificationSender(
            self.outbox, TEMPLATES, self.channels, lambda c, e: None, self.clock,
            default_caps=Caps(4, 12), worker_id="w1", batch=600, concurrency=8,
        )  # fmt: skip
        email = self.channels["email"]
        slow: list[Deferred[SendResult]] = [Deferred() for _ in range(8)]  # one per worker
        replies = iter(slow)
        email.send = lambda message: (
            email.sent.append(message),
            next(replies, None) or succeed(SendResult("email", "m", 250)),
        )[1]  # type: ignore[method-assign]
        record = self.send_to(users, ["email"])
        round_ = Deferred.fromCoroutine(sender.send_due())
        for d in slow:
            d.callback(SendResult("email", "m0", 250))
        self.assertEqual(self.successResultOf(round_), 600)
        self.assertEqual({d["state"] for d in self.states(record)}, {"sent"})
        self.assertEqual(len(email.sent), 600)

    def test_email_carries_the_delivery_id(self) -> None:
        """The email's ref is its delivery id (a Message-ID stable across attempts)."""
        self.email_users(1)
        record = self.send_to(["u0"], ["email"])
        self.run_sender()
        self.assertEqual(self.channels["email"].sent[0].ref, record.deliveries[0].id)

    def test_wake_sends_without_waiting_for_the_interval(self) -> None:
        """A started sender woken by the service sends a new notification at once."""
        self.sender.startService()
        self.addCleanup(self.sender.stopService)
        self.service.on_queued = self.sender.wake
        record = self.send()
        self.assertEqual(self.states(record)[0]["state"], "sent")

    def test_stop_mid_round(self) -> None:
        """Stopping while a send is in flight: it finishes and is recorded; what was not
        started is handed back (queued, its attempt returned) for the next worker."""
        users = self.email_users(3)
        sender = NotificationSender(
            self.outbox, TEMPLATES, self.channels, lambda c, e: None, self.clock,
            default_caps=Caps(4, 12), worker_id="w1", concurrency=1,
        )  # fmt: skip
        email = self.channels["email"]
        pending: list[Deferred[SendResult]] = []
        email.send = lambda message: (pending.append(Deferred()), pending[-1])[1]  # type: ignore[method-assign]
        record = self.send_to(users, ["email"])
        sender.startService()
        self.assertEqual(len(pending), 1)
        stopped = sender.stopService()
        self.assertNoResult(stopped)
        pending[0].callback(SendResult("email", "m", 250))
        self.successResultOf(stopped)
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries
        self.assertEqual([(d.state, d.attempts) for d in got], [("sent", 1), ("queued", 0), ("queued", 0)])
        self.assertEqual(len(pending), 1)

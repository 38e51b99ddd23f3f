"""The websocket fast path: a POST's websocket deliveries stored leased to its sender and sent at once.

The same setting as ``test_notify_service`` (a real SQLite outbox through a
synchronous thread pool, a ``task.Clock``, fake external channels): the
sender is started (its first round runs then, with nothing due) and the
clock is never advanced past it, so whatever is sent after a send was sent
by the fast path, not by a claim round; ``outbox.claim`` is watched to show it.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred

from streamsrv.notifications.caps import Caps
from streamsrv.notifications.outbox import Outbox
from streamsrv.notifications.records import Claimed, Lease
from streamsrv.notifications.sender import FAST_CHUNK, LEASE_S, NotificationSender
from streamsrv.notifications.service import parse_send_request
from streamsrv.web.notifications import NotificationRoutes
from tests.test_notify_service import DATA, NOW, TEMPLATES, _Base


class _Died:
    """A fast path whose process dies between the commit and the hand-over: the lease is taken,
    nothing is sent."""

    def __init__(self, sender: NotificationSender) -> None:
        self.sender = sender
        self.handed: list[Claimed] = []

    def lease(self, now: float) -> Lease | None:
        return self.sender.lease(now)

    def send_claimed(self, claimed: Any, preferences: Any = None) -> None:
        self.handed.extend(claimed)


class _FastBase(_Base):
    """The service's fast path is the (started) sender; claims and preference reads are counted."""

    def setUp(self) -> None:
        super().setUp()
        self.claims: list[tuple[str, ...] | None] = []
        self.preference_reads: list[int] = []
        claim, read = self.outbox.claim, self.outbox.get_preferences_many

        def counted_claim(
            worker_id: str, now: float, limit: int, lease_s: float, channels: Any = None
        ) -> Any:
            self.claims.append(tuple(channels) if channels else None)
            return claim(worker_id, now, limit, lease_s, channels)

        def counted_read(user_ids: Any) -> Any:
            self.preference_reads.append(len(user_ids))
            return read(user_ids)

        self.outbox.claim = counted_claim  # type: ignore[method-assign]
        self.outbox.get_preferences_many = counted_read  # type: ignore[method-assign]
        self.sender.startService()
        self.addCleanup(self.sender.stopService)
        self.service.fast_path = self.sender
        del self.claims[:], self.preference_reads[:]  # the start's first round

    def delivery_states(self, record: Any) -> list[tuple[str, str, str | None]]:
        return [(d["channel"], d["state"], d.get("reason")) for d in self.states(record)]


class FastPathTests(_FastBase):
    """Sent with no claim round; the same decisions as a claimed round."""

    def test_sent_without_a_claim_round(self) -> None:
        """The frame is published and the delivery sent before any claim, the clock unmoved."""
        record = self.send(channels=["websocket"])
        self.assertEqual(self.claims, [])
        self.assertEqual([channel for channel, _ in self.published], ["user:u1"])
        event = self.published[0][1]
        self.assertEqual((event["type"], event["id"]), ("notification", record.notification.id))
        self.assertEqual(event["title"], "New from Miles Davis")
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((got.state, got.attempts, got.sent_at), ("sent", 1, NOW))
        self.assertEqual(self.outcomes, [("websocket", "sent")])
        # A claim round afterwards finds nothing to send again.
        self.assertEqual(self.run_sender(), 0)
        self.assertEqual(len(self.published), 1)

    def test_answer_is_the_contract_202(self) -> None:
        """The 202 shows the leased delivery as accepted (no attempts field); GET, its state now."""
        routes = NotificationRoutes(self.service)
        body = b'{"template": "new-release", "user_ids": ["u1"], "data": %s}' % _json(DATA)
        answer = self.successResultOf(Deferred.fromCoroutine(routes.send(body, NOW)))
        self.assertEqual(answer["deliveries"], [{"user_id": "u1", "channel": "websocket", "state": "queued"}])
        got = self.successResultOf(Deferred.fromCoroutine(routes.get(answer["id"].encode())))
        self.assertEqual(got["deliveries"], [{"user_id": "u1", "channel": "websocket", "state": "sent",
                                             "sent_at": NOW}])  # fmt: skip

    def test_preferences_read_by_the_post_are_used(self) -> None:
        """Default channels: the POST read the preferences, the sender does not read them again;
        explicit channels: one bulk read for the batch."""
        self.send(user_ids=["u1", "u2"])
        self.assertEqual(self.preference_reads, [2])  # the POST's own
        self.assertEqual(len(self.published), 2)
        del self.preference_reads[:]
        self.send(user_ids=["u1", "u2"], channels=["websocket"])
        self.assertEqual(self.preference_reads, [2])  # the sender's, one for both users
        self.assertEqual(len(self.published), 4)
        self.assertEqual(self.claims, [])

    def test_email_still_claimed(self) -> None:
        """Only websocket deliveries take the fast path: an email waits for a claim round."""
        self.put("u1", {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}})
        record = self.send(channels=["websocket", "email"])
        self.assertEqual(
            self.delivery_states(record), [("websocket", "sent", None), ("email", "queued", None)]
        )
        self.assertEqual(self.channels["email"].sent, [])
        self.run_sender()
        self.assertEqual(self.delivery_states(record)[1], ("email", "sent", None))

    def test_opted_out(self) -> None:
        """A user who turned websocket off gets no frame: suppressed opted_out, as in a round."""
        self.put("u1", {"channels": {"websocket": {"enabled": False}}})
        record = self.send(channels=["websocket"])
        self.assertEqual(self.delivery_states(record), [("websocket", "suppressed", "opted_out")])
        self.assertEqual(self.published, [])
        self.assertEqual(self.claims, [])

    def test_frequency_cap_and_urgent(self) -> None:
        """Over the hourly cap the next one is suppressed frequency_cap; urgent passes."""
        self.put("u1", {"caps": {"per_hour": 1, "per_day": 10}})
        first = self.send()
        second = self.send()
        urgent = self.send(priority="urgent")
        # Urgent, with the preferences the POST read: nothing to wait for, so the frame goes on
        # the next reactor turn (never in the 202's); the clock's time does not move.
        self.assertEqual(len(self.published), 1)
        self.clock.advance(0)
        self.assertEqual(self.delivery_states(first), [("websocket", "sent", None)])
        self.assertEqual(self.delivery_states(second), [("websocket", "suppressed", "frequency_cap")])
        self.assertEqual(self.delivery_states(urgent), [("websocket", "sent", None)])
        self.assertEqual(len(self.published), 2)
        self.assertEqual(self.claims, [])

    def test_cap_within_one_send(self) -> None:
        """A cap of 1 and the same notification twice in a row: the second sees the first's send."""
        self.put("u1", {"caps": {"per_hour": 1}})
        self.send()
        self.send()
        self.assertEqual(len(self.published), 1)

    def test_quiet_hours(self) -> None:
        """Quiet hours defer email, never websocket (the contract): the frame goes at once."""
        self.put(
            "u1",
            {
                "channels": {"email": {"enabled": True, "address": "ana@example.com"}},
                "quiet_hours": {"start": "11:00", "end": "13:00", "time_zone": "UTC"},
            },
        )
        record = self.send()
        self.assertEqual(len(self.published), 1)
        self.run_sender()
        got = self.states(record)
        self.assertEqual(
            [(d["channel"], d["state"]) for d in got], [("email", "deferred"), ("websocket", "sent")]
        )
        self.assertEqual(got[0]["not_before"], NOW + 3600)

    def test_large_send_in_chunks(self) -> None:
        """A big send is published FAST_CHUNK users per reactor turn, with no claim round."""
        users = [f"u{n}" for n in range(2 * FAST_CHUNK + 200)]
        self.service.max_recipients = len(users)
        body = {"template": "new-release", "user_ids": users, "data": DATA, "channels": ["websocket"]}
        d = Deferred.fromCoroutine(self.service.send(parse_send_request(body, len(users)), NOW))
        record = self.successResultOf(d)
        self.assertEqual(len(self.published), FAST_CHUNK)  # the rest on the next turns
        self.clock.advance(0)  # (a Clock runs every zero-delay call, those they make included)
        self.assertEqual(len(self.published), len(users))
        self.assertEqual([c for c, _ in self.published], [f"user:{u}" for u in users])
        self.assertEqual({d["state"] for d in self.states(record)}, {"sent"})
        self.assertEqual(self.claims, [])

    def test_connected_users_first(self) -> None:
        """Users with a socket in this process get their frame before the others."""
        sender = NotificationSender(
            self.outbox, TEMPLATES, self.channels,
            lambda channel, event: self.published.append((channel, dict(event))), self.clock,
            default_caps=Caps(4, 12), worker_id="w2", subscribed=lambda: ["user:u3", "system"],
        )  # fmt: skip
        sender.startService()
        self.addCleanup(sender.stopService)
        self.service.fast_path = sender
        record = self.send(user_ids=["u1", "u2", "u3", "u4"], channels=["websocket"])
        self.assertEqual([c for c, _ in self.published], ["user:u3", "user:u1", "user:u2", "user:u4"])
        self.assertEqual({d["state"] for d in self.states(record)}, {"sent"})


class FastPathFailureTests(_FastBase):
    """A sender that cannot send: queued as usual, or leased and taken over after the lease."""

    def setUp(self) -> None:
        super().setUp()
        self.other = NotificationSender(
            self.outbox, TEMPLATES, self.channels,
            lambda channel, event: self.published.append((channel, dict(event))), self.clock,
            default_caps=Caps(4, 12), worker_id="w2", rng=random.Random(1),
        )  # fmt: skip

    def other_round(self) -> int:
        """One round of another worker (another process); how many it handled."""
        return self.successResultOf(Deferred.fromCoroutine(self.other.send_due()))

    def test_stopped_sender_queues_as_usual(self) -> None:
        """A stopped sender gives no lease: the delivery is queued and a later round sends it."""
        self.successResultOf(self.sender.stopService())
        record = self.send()
        self.assertEqual(self.published, [])
        self.assertEqual(
            self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0].attempts, 0
        )
        self.assertEqual(self.other_round(), 1)
        self.assertEqual(len(self.published), 1)

    def test_handed_to_a_stopping_sender_released(self) -> None:
        """Handed over once the sender has stopped: the leases are handed back, not sent."""
        died = _Died(self.sender)
        self.service.fast_path = died
        record = self.send()
        self.successResultOf(self.sender.stopService())
        self.sender.send_claimed(died.handed)
        self.assertEqual(self.published, [])
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((got.state, got.attempts), ("queued", 0))
        self.assertEqual(self.other_round(), 1)
        self.assertEqual(len(self.published), 1)

    def test_stop_in_the_middle_of_a_big_send(self) -> None:
        """Stopped between two turns of a big send: what was sent is recorded, the rest handed
        back (attempt returned) and sent once by another worker; nobody gets two frames."""
        users = [f"u{n}" for n in range(FAST_CHUNK + 200)]
        self.service.max_recipients = len(users)
        body = {"template": "new-release", "user_ids": users, "data": DATA, "channels": ["websocket"]}
        record = self.successResultOf(
            Deferred.fromCoroutine(self.service.send(parse_send_request(body, len(users)), NOW))
        )
        self.assertEqual(len(self.published), FAST_CHUNK)
        stopped = self.sender.stopService()
        self.clock.advance(0)
        self.successResultOf(stopped)
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries
        self.assertEqual(
            [(d.state, d.attempts) for d in got], [("sent", 1)] * FAST_CHUNK + [("queued", 0)] * 200
        )
        self.assertEqual(self.other_round(), 200)
        self.assertEqual(sorted(c for c, _ in self.published), sorted(f"user:{u}" for u in users))

    def test_hand_over_failing_keeps_the_202(self) -> None:
        """Handing over fails after the commit: the send still answers (it is durable), the
        failure is logged, and the delivery is sent once its lease has run out."""

        class Broken(_Died):
            def send_claimed(self, claimed: Any, preferences: Any = None) -> None:
                raise RuntimeError("boom")

        self.service.fast_path = Broken(self.sender)
        record = self.send()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.successResultOf(self.sender.stopService())
        self.clock.advance(LEASE_S)
        self.assertEqual(self.other_round(), 1)
        self.assertEqual(self.delivery_states(record), [("websocket", "sent", None)])

    def test_crash_between_commit_and_send(self) -> None:
        """The process dies after the commit, before sending: the lease runs out and another
        worker's round sends the delivery, exactly once."""
        self.service.fast_path = _Died(self.sender)
        record = self.send()
        self.successResultOf(self.sender.stopService())  # the process is gone, its sender too
        self.assertEqual(self.published, [])
        self.assertEqual(self.other_round(), 0)  # still leased to the dead worker
        self.clock.advance(LEASE_S - 1)
        self.assertEqual(self.other_round(), 0)
        self.clock.advance(1)
        self.assertEqual(self.other_round(), 1)
        self.assertEqual(self.other_round(), 0)
        self.assertEqual([c for c, _ in self.published], ["user:u1"])
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((got.state, got.attempts), ("sent", 2))


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


__all__ = ["FastPathFailureTests", "FastPathTests", "Outbox"]

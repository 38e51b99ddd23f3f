"""Tests for the notification outbox: :mod:`streamsrv.notifications.outbox`, ``outboxdb`` and ``records``.

Every behaviour runs on SQLite (a file per test) and on the machine's real
PostgreSQL (a schema per test, created and dropped here; skipped, or failed
under ``STREAMSRV_TEST_REQUIRE_SERVICES=1``, without it).  Blocking calls
run through a synchronous thread pool, so each Deferred has fired on return;
one test uses a real thread pool.  Two claimers race from two threads on two
connections.
"""

from __future__ import annotations

import random
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.notifications.outbox import IOutbox, Outbox, make_outbox, make_outbox_database
from streamsrv.notifications.outboxdb import (
    OutboxDatabase,
    PostgresOutboxDatabase,
    SqliteOutboxDatabase,
)
from streamsrv.notifications.records import (
    DEFERRED,
    FAILED,
    IDEMPOTENCY_WINDOW_S,
    QUEUED,
    RETRY_BASE_S,
    RETRY_CAP_S,
    SENT,
    SUPPRESSED,
    Delivery,
    Finish,
    Lease,
    NewDelivery,
    next_attempt,
)
from tests.services import postgres_admin, postgres_dsn_or_skip

NOW = 1_767_225_600.0

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


def postgres_schema_dsn(testcase: unittest.TestCase) -> str:
    """A DSN whose search_path is a new schema, dropped (with its tables) after *testcase*."""
    base = postgres_dsn_or_skip(testcase)
    schema = f"streamsrv_notify_{secrets.token_hex(6)}"

    postgres_admin(base, f'CREATE SCHEMA "{schema}"')
    testcase.addCleanup(postgres_admin, base, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    option = f"options=-csearch_path%3D{schema}"
    if "://" in base:
        return base + ("&" if urlsplit(base).query else "?") + option
    return f"{base} options='-csearch_path={schema}'"


class OutboxBehaviour(_MixinBase):
    """The IOutbox behaviour, run against each database by the subclasses."""

    def make_database(self) -> OutboxDatabase:
        """A database shared by every instance this test makes (same file or schema)."""
        raise NotImplementedError

    def setUp(self) -> None:
        self.database = self.make_database()
        self.addCleanup(self.database.close)
        self.outbox = Outbox(self.database, ImmediateReactor(), SynchronousThreadPool())
        self.successResultOf(self.outbox.start(NOW))

    def other(self) -> OutboxDatabase:
        """A second instance on the same storage (another process or host)."""
        database = self.make_database_again()
        self.addCleanup(database.close)
        return database

    def make_database_again(self) -> OutboxDatabase:
        raise NotImplementedError

    def enqueue(self, *deliveries: NewDelivery, key: str | None = None, now: float = NOW) -> Any:
        """Enqueue a new-release notification with *deliveries* and return its record."""
        d = self.outbox.enqueue("new-release", {"artist": "Miles"}, "normal", list(deliveries), key, now)
        return self.successResultOf(d)

    def test_interface(self) -> None:
        """Outbox provides IOutbox."""
        self.assertTrue(verifyObject(IOutbox, self.outbox))

    def test_migrations(self) -> None:
        """Starting migrates to the latest version once; another instance finds nothing to apply."""
        self.assertEqual(self.database.applied_migrations(), [1, 2])
        self.assertEqual(self.other().migrate(NOW), [])

    def test_enqueue_and_get(self) -> None:
        """A notification comes back with its deliveries in the given order, queued and due now."""
        record = self.enqueue(
            NewDelivery("u1", "email"), NewDelivery("u1", "websocket"), NewDelivery("u2", "sms")
        )
        self.assertTrue(record.created)
        self.assertEqual(
            [(d.user_id, d.channel, d.state) for d in record.deliveries],
            [("u1", "email", QUEUED), ("u1", "websocket", QUEUED), ("u2", "sms", QUEUED)],
        )
        self.assertEqual({d.not_before for d in record.deliveries}, {NOW})
        got = self.successResultOf(self.outbox.get(record.notification.id))
        self.assertEqual(got, record)
        self.assertEqual(got.notification.data, {"artist": "Miles"})
        self.assertEqual(got.notification.priority, "normal")
        self.assertEqual(
            got.to_json(),
            {
                "id": record.notification.id,
                "deliveries": [
                    {"user_id": "u1", "channel": "email", "state": "queued"},
                    {"user_id": "u1", "channel": "websocket", "state": "queued"},
                    {"user_id": "u2", "channel": "sms", "state": "queued"},
                ],
            },
        )

    def test_get_unknown(self) -> None:
        """An unknown id answers None."""
        self.assertIsNone(self.successResultOf(self.outbox.get("nope")))

    def test_initial_states(self) -> None:
        """Deliveries may start deferred (with not_before) or suppressed (with a reason)."""
        record = self.enqueue(
            NewDelivery("u1", "email", DEFERRED, not_before=NOW + 600),
            NewDelivery("u1", "sms", SUPPRESSED, reason="no_address"),
        )
        self.assertEqual(
            record.deliveries[0].to_json(),
            {"user_id": "u1", "channel": "email", "state": "deferred", "not_before": NOW + 600},
        )
        self.assertEqual(
            record.deliveries[1].to_json(),
            {"user_id": "u1", "channel": "sms", "state": "suppressed", "reason": "no_address"},
        )

    def test_enqueue_is_atomic(self) -> None:
        """If one delivery cannot be stored, neither the notification nor any delivery is."""
        ids = iter(["n-1", "same", "same"])
        outbox = Outbox(self.database, ImmediateReactor(), SynchronousThreadPool(), new_id=lambda: next(ids))
        failure = self.failureResultOf(
            outbox.enqueue("t", {}, "normal", [NewDelivery("u", "email")] * 2, None, NOW)
        )
        self.assertIsInstance(failure.value, Exception)
        self.assertIsNone(self.successResultOf(self.outbox.get("n-1")))
        self.assertEqual(self.database.pending_counts(), {QUEUED: 0, DEFERRED: 0})

    def test_idempotency_key(self) -> None:
        """The same key within 24 h answers the first notification and stores nothing new."""
        first = self.enqueue(NewDelivery("u1", "email"), key="k-1")
        again = self.enqueue(NewDelivery("u9", "sms"), NewDelivery("u8", "sms"), key="k-1", now=NOW + 3600)
        self.assertFalse(again.created)
        self.assertEqual(again.notification, first.notification)
        self.assertEqual(again.deliveries, first.deliveries)
        self.assertEqual(self.database.pending_counts()[QUEUED], 1)
        found = self.successResultOf(self.outbox.find_by_idempotency_key("k-1", NOW + 10))
        self.assertEqual(found.notification.id, first.notification.id)
        self.assertIsNone(self.successResultOf(self.outbox.find_by_idempotency_key("k-2", NOW)))

    def test_idempotency_key_expires(self) -> None:
        """After 24 h the key starts a new notification."""
        first = self.enqueue(NewDelivery("u1", "email"), key="k")
        later = NOW + IDEMPOTENCY_WINDOW_S
        self.assertIsNone(self.successResultOf(self.outbox.find_by_idempotency_key("k", later)))
        second = self.enqueue(NewDelivery("u1", "email"), key="k", now=later)
        self.assertTrue(second.created)
        self.assertNotEqual(second.notification.id, first.notification.id)
        self.assertEqual(
            self.successResultOf(self.outbox.find_by_idempotency_key("k", later + 1)).notification.id,
            second.notification.id,
        )

    def test_claim_due_only_oldest_first(self) -> None:
        """claim takes due pending deliveries, oldest first, up to the limit, with their notification."""
        self.enqueue(NewDelivery("late", "email", DEFERRED, not_before=NOW + 100))
        self.enqueue(NewDelivery("b", "email"), now=NOW - 5)
        self.enqueue(NewDelivery("a", "email"), now=NOW - 10)
        self.enqueue(NewDelivery("x", "email", SUPPRESSED, reason="opted_out"))
        claimed = self.successResultOf(self.outbox.claim("w1", NOW, 10, 600))
        self.assertEqual([c.delivery.user_id for c in claimed], ["a", "b"])
        self.assertEqual({c.delivery.attempts for c in claimed}, {1})
        self.assertEqual({c.lease_until for c in claimed}, {NOW + 600})
        self.assertEqual(claimed[0].notification.template, "new-release")
        self.assertEqual(claimed[0].notification.data, {"artist": "Miles"})
        self.assertEqual(
            [c.delivery.user_id for c in self.successResultOf(self.outbox.claim("w1", NOW + 100, 1, 60))],
            ["late"],
        )

    def test_claimed_invisible_to_others(self) -> None:
        """A delivery claimed by one worker is not claimed by another until the lease expires."""
        self.enqueue(NewDelivery("u", "email"), NewDelivery("v", "email"))
        first = self.successResultOf(self.outbox.claim("w1", NOW, 1, 60))
        second = self.successResultOf(self.outbox.claim("w2", NOW, 10, 60))
        self.assertEqual(len(first), 1)
        self.assertEqual(len(second), 1)
        self.assertNotEqual(first[0].delivery.id, second[0].delivery.id)
        self.assertEqual(self.successResultOf(self.outbox.claim("w3", NOW + 59, 10, 60)), [])

    def test_expired_lease_taken_over(self) -> None:
        """After the lease, another worker claims it; the first worker's report is then refused."""
        record = self.enqueue(NewDelivery("u", "email"))
        delivery_id = record.deliveries[0].id
        self.assertEqual(len(self.successResultOf(self.outbox.claim("w1", NOW, 10, 60))), 1)
        taken = self.successResultOf(self.outbox.claim("w2", NOW + 60, 10, 60))
        self.assertEqual([c.delivery.id for c in taken], [delivery_id])
        self.assertEqual(taken[0].delivery.attempts, 2)
        self.assertFalse(self.successResultOf(self.outbox.mark_sent(delivery_id, "w1", NOW + 61)))
        self.assertTrue(self.successResultOf(self.outbox.mark_sent(delivery_id, "w2", NOW + 62)))
        delivery = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((delivery.state, delivery.sent_at), (SENT, NOW + 62))
        self.assertFalse(self.successResultOf(self.outbox.mark_failed(delivery_id, "w2", NOW, "late", None)))

    def test_enqueue_leased(self) -> None:
        """With a lease, the queued websocket deliveries are stored as a claim by its worker leaves
        them (one attempt, held until the lease ends); the others are queued as usual."""
        lease = Lease("w1", NOW, NOW + 60, frozenset({"websocket"}))
        d = self.outbox.enqueue(
            "new-release", {}, "normal",
            [NewDelivery("u", "websocket"), NewDelivery("u", "email"),
             NewDelivery("v", "websocket", SUPPRESSED, reason="opted_out")],
            None, NOW, lease,
        )  # fmt: skip
        record = self.successResultOf(d)
        ws, email, _ = record.deliveries
        self.assertEqual([x.attempts for x in record.deliveries], [1, 0, 0])
        self.assertEqual(
            record.to_json(accepted=True)["deliveries"][0],
            {"user_id": "u", "channel": "websocket", "state": QUEUED},
        )
        self.assertEqual(
            self.successResultOf(self.outbox.get(record.notification.id)).deliveries, record.deliveries
        )
        # Nobody claims the leased one before the lease ends; its worker reports on it.
        claimed = self.successResultOf(self.outbox.claim("w2", NOW + 59, 10, 60))
        self.assertEqual([c.delivery.id for c in claimed], [email.id])
        self.assertEqual(
            self.successResultOf(self.outbox.finish_many("w2", [Finish(ws.id, "sent", NOW + 1)])), [False]
        )
        self.assertEqual(
            self.successResultOf(self.outbox.finish_many("w1", [Finish(ws.id, "sent", NOW + 1)])), [True]
        )
        self.assertEqual(
            self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0].state, SENT
        )

    def test_leased_taken_over_after_the_lease(self) -> None:
        """A leased delivery whose worker never reports is claimed by another once the lease ends."""
        lease = Lease("w1", NOW, NOW + 60, frozenset({"websocket"}))
        d = self.outbox.enqueue(
            "new-release", {}, "normal", [NewDelivery("u", "websocket")], None, NOW, lease
        )
        record = self.successResultOf(d)
        self.assertEqual(self.successResultOf(self.outbox.claim("w2", NOW + 59, 10, 60)), [])
        taken = self.successResultOf(self.outbox.claim("w2", NOW + 60, 10, 60))
        self.assertEqual(
            [(c.delivery.id, c.delivery.attempts) for c in taken], [(record.deliveries[0].id, 2)]
        )

    def test_retry_then_fail(self) -> None:
        """A failed attempt is queued for its retry time; a final failure keeps the last error."""
        record = self.enqueue(NewDelivery("u", "sms"))
        delivery_id = record.deliveries[0].id
        self.successResultOf(self.outbox.claim("w", NOW, 1, 60))
        self.assertTrue(
            self.successResultOf(
                self.outbox.mark_failed(delivery_id, "w", NOW + 1, "503 from gateway", NOW + 31)
            )
        )
        delivery = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual(
            (delivery.state, delivery.not_before, delivery.last_error, delivery.attempts),
            (QUEUED, NOW + 31, "503 from gateway", 1),
        )
        self.assertEqual(self.successResultOf(self.outbox.claim("w", NOW + 30, 1, 60)), [])
        self.assertEqual(len(self.successResultOf(self.outbox.claim("w", NOW + 31, 1, 60))), 1)
        self.assertTrue(
            self.successResultOf(self.outbox.mark_failed(delivery_id, "w", NOW + 32, "x" * 2000, None))
        )
        delivery = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual(
            (delivery.state, delivery.attempts, len(delivery.last_error or "")), (FAILED, 2, 500)
        )
        self.assertEqual(delivery.to_json()["last_error"], "x" * 500)
        self.assertEqual(self.successResultOf(self.outbox.claim("w", NOW + 10_000, 1, 60)), [])

    def test_deferred(self) -> None:
        """mark_deferred waits until not_before and gives the claim's attempt back."""
        record = self.enqueue(NewDelivery("u", "push"))
        delivery_id = record.deliveries[0].id
        self.successResultOf(self.outbox.claim("w", NOW, 1, 60))
        self.assertTrue(self.successResultOf(self.outbox.mark_deferred(delivery_id, "w", NOW, NOW + 3600)))
        delivery = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((delivery.state, delivery.not_before, delivery.attempts), (DEFERRED, NOW + 3600, 0))
        self.assertEqual(self.successResultOf(self.outbox.claim("w", NOW + 3599, 1, 60)), [])
        self.assertEqual(len(self.successResultOf(self.outbox.claim("w", NOW + 3600, 1, 60))), 1)

    def test_suppressed(self) -> None:
        """mark_suppressed records the reason and is final; an unknown reason is refused."""
        record = self.enqueue(NewDelivery("u", "email"))
        delivery_id = record.deliveries[0].id
        self.successResultOf(self.outbox.claim("w", NOW, 1, 60))
        self.assertRaises(ValueError, self.database.mark_suppressed, delivery_id, "w", NOW, "bored")
        self.assertTrue(
            self.successResultOf(self.outbox.mark_suppressed(delivery_id, "w", NOW, "frequency_cap"))
        )
        delivery = self.successResultOf(self.outbox.get(record.notification.id)).deliveries[0]
        self.assertEqual((delivery.state, delivery.reason), (SUPPRESSED, "frequency_cap"))
        self.assertEqual(self.successResultOf(self.outbox.claim("w", NOW + 10_000, 1, 60)), [])

    def test_release(self) -> None:
        """Released leases are claimable by another worker at once, without counting an attempt."""
        self.enqueue(NewDelivery("u", "email"), NewDelivery("v", "email"))
        claimed = self.successResultOf(self.outbox.claim("w1", NOW, 10, 60))
        ids = [c.delivery.id for c in claimed]
        self.assertEqual(self.successResultOf(self.outbox.release("w2", ids)), 0)
        self.assertEqual(self.successResultOf(self.outbox.release("w1", ids)), 2)
        again = self.successResultOf(self.outbox.claim("w2", NOW, 10, 60))
        self.assertEqual(sorted(c.delivery.id for c in again), sorted(ids))
        self.assertEqual({c.delivery.attempts for c in again}, {1})
        self.assertEqual(self.successResultOf(self.outbox.release("w2", [])), 0)

    def test_recent_sends(self) -> None:
        """recent_sends lists the send times of one user and channel after a time."""
        record = self.enqueue(
            NewDelivery("u", "email"),
            NewDelivery("u", "email"),
            NewDelivery("u", "sms"),
            NewDelivery("v", "email"),
        )
        claimed = self.successResultOf(self.outbox.claim("w", NOW, 10, 60))
        for offset, c in enumerate(claimed):
            self.successResultOf(self.outbox.mark_sent(c.delivery.id, "w", NOW + offset))
        self.assertEqual(len(record.deliveries), 4)
        self.assertEqual(
            self.successResultOf(self.outbox.recent_sends("u", "email", NOW - 3600)), [NOW, NOW + 1]
        )
        self.assertEqual(self.successResultOf(self.outbox.recent_sends("u", "email", NOW)), [NOW + 1])
        self.assertEqual(self.successResultOf(self.outbox.recent_sends("u", "push", 0)), [])

    def test_claim_by_channel(self) -> None:
        """A claim limited to channels leaves the others due for another lane."""
        self.enqueue(NewDelivery("u", "email"), NewDelivery("u", "websocket"), NewDelivery("v", "sms"))
        websocket = self.successResultOf(self.outbox.claim("w", NOW, 10, 60, ["websocket"]))
        self.assertEqual([c.delivery.channel for c in websocket], ["websocket"])
        others = self.successResultOf(self.outbox.claim("w", NOW, 10, 60, ["email", "sms", "push"]))
        self.assertEqual([c.delivery.channel for c in others], ["email", "sms"])
        self.failureResultOf(self.outbox.claim("w", NOW, 10, 60, ["fax"]), ValueError)

    def test_finish_many(self) -> None:
        """finish_many records several outcomes at once; one whose lease was lost is refused."""
        from streamsrv.notifications.records import Finish

        record = self.enqueue(*(NewDelivery(f"u{n}", "email") for n in range(5)))
        ids = [d.id for d in record.deliveries]
        self.successResultOf(self.outbox.claim("w1", NOW, 4, 60))
        finishes = [
            Finish(ids[0], "sent", NOW + 1),
            Finish(ids[1], "retry", NOW + 1, error="451 busy", when=NOW + 30),
            Finish(ids[2], "failed", NOW + 1, error="550 no"),
            Finish(ids[3], "suppressed", NOW + 1, reason="frequency_cap"),
            Finish(ids[4], "sent", NOW + 1),  # never claimed by w1
        ]
        self.assertEqual(
            self.successResultOf(self.outbox.finish_many("w1", finishes)), [True, True, True, True, False]
        )
        got = self.successResultOf(self.outbox.get(record.notification.id)).deliveries
        self.assertEqual(
            [(d.state, d.last_error, d.sent_at) for d in got],
            [(SENT, None, NOW + 1), (QUEUED, "451 busy", None), (FAILED, "550 no", None),
             (SUPPRESSED, None, None), (QUEUED, None, None)],
        )  # fmt: skip
        self.assertEqual(got[1].not_before, NOW + 30)
        self.assertEqual(self.successResultOf(self.outbox.finish_many("w1", [])), [])
        self.assertRaises(ValueError, Finish, ids[0], "retry", NOW)

    def test_many_users_at_once(self) -> None:
        """Preferences and recent sends of more users than one IN list holds, in one call each."""
        users = [f"u{n}" for n in range(1203)]
        for user in users[::100]:
            self.successResultOf(self.outbox.put_preferences(user, {"locale": user}, NOW))
        found = self.successResultOf(self.outbox.get_preferences_many([*users, users[0]]))
        self.assertEqual(found, {user: {"locale": user} for user in users[::100]})
        self.assertEqual(self.successResultOf(self.outbox.get_preferences_many([])), {})
        record = self.enqueue(NewDelivery(users[1200], "email"), NewDelivery(users[1200], "sms"))
        claimed = self.successResultOf(self.outbox.claim("w", NOW, 10, 60))
        for offset, c in enumerate(claimed):
            self.successResultOf(self.outbox.mark_sent(c.delivery.id, "w", NOW + offset))
        self.assertEqual(len(record.deliveries), 2)
        sends = self.successResultOf(self.outbox.recent_sends_many(users, NOW - 60))
        self.assertEqual(sends, {(users[1200], "email"): [NOW], (users[1200], "sms"): [NOW + 1]})

    def test_ids_follow_creation(self) -> None:
        """A notification's delivery ids extend its id in order (appended to the primary key,
        not scattered over it); ids start with the time, so later notifications sort later."""
        first = self.enqueue(*(NewDelivery(f"u{n}", "email") for n in range(20)))
        second = self.enqueue(NewDelivery("u", "email"), now=NOW + 1)
        ids = [d.id for d in first.deliveries]
        self.assertEqual(ids, sorted(ids))
        self.assertTrue(all(i.startswith(first.notification.id) for i in ids))
        self.assertEqual(len({*ids, second.deliveries[0].id}), 21)
        self.assertLessEqual(first.notification.id[:12], second.notification.id[:12])

    def test_pending_counts(self) -> None:
        """pending_counts gives the queue depth per pending state."""
        self.enqueue(
            NewDelivery("u", "email"),
            NewDelivery("u", "sms", DEFERRED, not_before=NOW + 5),
            NewDelivery("u", "push", SUPPRESSED, reason="opted_out"),
        )
        self.assertEqual(self.successResultOf(self.outbox.pending_counts()), {QUEUED: 1, DEFERRED: 1})

    def test_preferences(self) -> None:
        """Preferences are None until put, then the last document put."""
        self.assertIsNone(self.successResultOf(self.outbox.get_preferences("u")))
        self.successResultOf(self.outbox.put_preferences("u", {"locale": "fr"}, NOW))
        self.successResultOf(
            self.outbox.put_preferences("u", {"locale": "de", "caps": {"per_hour": 1}}, NOW + 1)
        )
        self.assertEqual(
            self.successResultOf(self.outbox.get_preferences("u")), {"locale": "de", "caps": {"per_hour": 1}}
        )
        self.assertIsNone(self.successResultOf(self.outbox.get_preferences("v")))

    def test_survives_restart(self) -> None:
        """What one instance committed, another (a restarted process) reads and claims."""
        record = self.enqueue(NewDelivery("u", "email"))
        self.database.close()
        other = self.other()
        self.assertEqual(other.get(record.notification.id), record)
        self.assertEqual([c.delivery.id for c in other.claim("w", NOW, 10, 60)], [record.deliveries[0].id])

    def test_closed_refuses(self) -> None:
        """A closed database refuses work."""
        self.database.close()
        self.assertRaises(RuntimeError, self.database.get, "x")

    def test_racing_claimers(self) -> None:
        """Two claimers on two connections in two threads never claim one delivery twice, and take all."""
        count = 120
        self.enqueue(*[NewDelivery(f"u{i}", "email") for i in range(count)])
        databases = [self.other(), self.other()]
        for database in databases:
            database.migrate(NOW)
        barrier = threading.Barrier(2)
        taken: list[list[str]] = [[], []]
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                barrier.wait()
                while True:
                    claimed = databases[index].claim(f"w{index}", NOW, 7, 60)
                    if not claimed:
                        return
                    taken[index].extend(c.delivery.id for c in claimed)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        every = taken[0] + taken[1]
        self.assertEqual(len(every), count)
        self.assertEqual(len(set(every)), count)


class SqliteOutboxTests(OutboxBehaviour, unittest.TestCase):
    """The outbox on SQLite."""

    def make_database(self) -> OutboxDatabase:
        self.path = Path(self.mktemp()) / "notifications.sqlite3"
        return SqliteOutboxDatabase(self.path)

    def make_database_again(self) -> OutboxDatabase:
        return SqliteOutboxDatabase(self.path)

    def test_file_settings(self) -> None:
        """The file is in WAL mode with full synchronous commits."""
        import sqlite3

        connection = sqlite3.connect(str(self.path))
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        with self.database._transaction(write=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            self.assertEqual(cursor.fetchone()[0], 2)


class PostgresOutboxTests(OutboxBehaviour, unittest.TestCase):
    """The outbox on the real PostgreSQL, in a schema of its own."""

    def make_database(self) -> OutboxDatabase:
        self.dsn = postgres_schema_dsn(self)
        return PostgresOutboxDatabase(self.dsn)

    def make_database_again(self) -> OutboxDatabase:
        return PostgresOutboxDatabase(self.dsn)

    def test_concurrent_idempotent_enqueues(self) -> None:
        """Two connections enqueuing with one key at once store one notification."""
        databases = [self.other(), self.other()]
        barrier = threading.Barrier(2)
        results: list[Any] = []
        from streamsrv.notifications.records import Notification

        def send(index: int) -> None:
            barrier.wait()
            n = Notification(f"n{index}", "t", {}, "normal", "same-key", NOW)
            results.append(databases[index].enqueue(n, [NewDelivery("u", "email")], [f"d{index}"], NOW))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 2)
        self.assertEqual(sorted(r.created for r in results), [False, True])
        self.assertEqual(len({r.notification.id for r in results}), 1)
        self.assertEqual(self.database.pending_counts()[QUEUED], 1)


class ThreadPoolTests(unittest.TestCase):
    """The outbox off the reactor thread."""

    def test_runs_in_the_pool(self) -> None:
        """With a real thread pool, database work runs in a pool thread and results arrive as Deferreds."""
        seen: list[bool] = []

        class Spy(SqliteOutboxDatabase):
            def get(self, notification_id: str) -> Any:
                seen.append(threading.current_thread() is threading.main_thread())
                return super().get(notification_id)

        pool = ThreadPool(minthreads=1, maxthreads=2, name="notify-test")
        pool.start()
        self.addCleanup(pool.stop)
        database = Spy(Path(self.mktemp()) / "o.sqlite3")
        self.addCleanup(database.close)
        outbox = Outbox(database, reactor, pool)

        async def run() -> None:
            await outbox.start(NOW)
            record = await outbox.enqueue("t", {"a": 1}, "urgent", [NewDelivery("u", "websocket")], None, NOW)
            got = await outbox.get(record.notification.id)
            self.assertEqual(got, record)
            self.assertEqual(seen, [False])

        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(run())


class FactoryTests(unittest.TestCase):
    """make_outbox picks the database like the analytics store."""

    def test_choices(self) -> None:
        """No DSN: the data dir; sqlite:///: beside that file; postgresql://: PostgreSQL; else refused."""
        data = Path("/var/lib/streamsrv")
        default = make_outbox_database(None, data)
        assert isinstance(default, SqliteOutboxDatabase)
        self.assertEqual(default.path, data / "notifications.sqlite3")
        beside = make_outbox_database("sqlite:////srv/db/analytics.sqlite3", data)
        assert isinstance(beside, SqliteOutboxDatabase)
        self.assertEqual(beside.path, Path("/srv/db/notifications.sqlite3"))
        self.assertIsInstance(
            make_outbox_database("postgresql://u:secret@db/x", data), PostgresOutboxDatabase
        )
        self.assertIsInstance(make_outbox_database("postgres://db/x", data), PostgresOutboxDatabase)
        with self.assertRaises(ValueError) as caught:
            make_outbox_database("mysql://u:secret@db/x", data)
        self.assertNotIn("secret", str(caught.exception))
        outbox = make_outbox(None, data, ImmediateReactor(), SynchronousThreadPool())
        self.assertEqual(outbox.dialect, "sqlite")


class NextAttemptTests(unittest.TestCase):
    """Exponential back-off with full jitter."""

    @settings(derandomize=True, deadline=None)
    @given(st.integers(1, 100), st.integers(0, 2**32))
    def test_bounds(self, attempt: int, seed: int) -> None:
        """The retry lies between now and now + min(cap, base * 2^(attempt-1))."""
        retry = next_attempt(attempt, NOW, random.Random(seed))
        self.assertGreaterEqual(retry, NOW)
        self.assertLessEqual(retry, NOW + min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1)))

    def test_grows_and_spreads(self) -> None:
        """Later attempts wait longer on average, and draws spread over the whole range."""
        rng = random.Random(7)
        means = [sum(next_attempt(a, 0, rng) for _ in range(400)) / 400 for a in (1, 3, 5)]
        self.assertLess(means[0], means[1])
        self.assertLess(means[1], means[2])
        draws = [next_attempt(3, 0, rng) for _ in range(400)]
        self.assertLess(min(draws), 12)
        self.assertGreater(max(draws), 108)

    def test_attempt_counts_from_one(self) -> None:
        """Attempt 0 is refused."""
        self.assertRaises(ValueError, next_attempt, 0, NOW, random.Random(1))


class RecordTests(unittest.TestCase):
    """The values' own rules."""

    def test_new_delivery_rules(self) -> None:
        """Channel, state, reason and not_before are checked together."""
        for kwargs in (
            {"channel": "fax"},
            {"state": SENT},
            {"state": SUPPRESSED},
            {"reason": "opted_out"},
            {"state": SUPPRESSED, "reason": "bored"},
            {"state": DEFERRED},
        ):
            with self.assertRaises(ValueError, msg=kwargs):
                NewDelivery("u", **{"channel": "email", **kwargs})

    def test_delivery_json(self) -> None:
        """A sent delivery shows when; a queued retry shows its attempts."""
        base: dict[str, Any] = {
            "id": "d",
            "notification_id": "n",
            "user_id": "u",
            "channel": "email",
            "reason": None,
            "not_before": NOW,
            "last_error": None,
            "created_at": NOW,
            "updated_at": NOW,
        }
        sent = Delivery(state=SENT, attempts=1, sent_at=NOW + 1, **base)
        self.assertEqual(
            sent.to_json(), {"user_id": "u", "channel": "email", "state": "sent", "sent_at": NOW + 1}
        )
        retry = Delivery(state=QUEUED, attempts=2, sent_at=None, **base)
        self.assertEqual(retry.to_json()["attempts"], 2)

# -*- test-case-name: tests.test_notify_faults -*-
"""Notification delivery under faults, with real processes: the daemon, an SMTP server, PostgreSQL.

Each test starts ``twistd -n streamsrv`` (:class:`tests.test_daemon.DaemonTestCase`) with the
email channel pointed at a real aiosmtpd process (:mod:`tests.smtp_server`, plain SMTP), sends
one notification to a few hundred users, breaks something in the middle — SIGTERM, ``kill -9``,
the SMTP server gone for a few seconds, a second daemon on the same PostgreSQL outbox — and
then counts what the SMTP server accepted by ``Message-ID`` (stable per delivery):

- SIGTERM mid-send, then a restart: every delivery sent exactly once;
- ``kill -9`` mid-send, then a restart: none lost; a message sent just before the kill may be
  sent again (at-least-once), always with the same Message-ID, so a receiver can drop it;
- the SMTP server down for :data:`OUTAGE_S` seconds: retried and all sent when it is back;
- two daemons on one PostgreSQL database: none sent twice.

The counts are small (``STREAMSRV_NOTIFY_FAULT_COUNT`` or :data:`COUNT`) so the suite stays
fast; ``bench/notifications.py`` runs the large ones.  Without aiosmtpd or PostgreSQL the tests
skip, saying why (and fail under ``STREAMSRV_TEST_REQUIRE_SERVICES=1``).  Every wait is
bounded; every process is killed in cleanup.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
from twisted.trial import unittest

from tests.services import REQUIRE_ENV, services_required
from tests.smtp_server import SmtpServerProcess, temporary_directory
from tests.test_analytics_store import fresh_postgres_dsn
from tests.test_daemon import Daemon, DaemonTestCase

#: Deliveries per test (one email each).
COUNT = int(os.environ.get("STREAMSRV_NOTIFY_FAULT_COUNT", "300"))
#: How long the SMTP server stays down in the outage test, seconds.
OUTAGE_S = 3.0
#: How long every delivery may take to arrive once nothing is broken, seconds.
ARRIVE_TIMEOUT_S = 90.0

SECRET = "fault-tests-secret-0123456789abcdefghij"
SENDER = "noreply@example.com"
UNLIMITED = "1000000000/1"
DATA = {"artist": "Miles Davis", "album": "Kind of Blue", "track_count": 5, "url": "https://e.example/a"}


def user_id(n: int) -> str:
    """The n-th test user."""
    return f"user{n:04d}"


def preference_rows(count: int) -> list[tuple[str, str, float]]:
    """``(user_id, document, updated_at)``: email on with an address, for *count* users."""
    from streamsrv.notifications.caps import DEFAULT_CAPS
    from streamsrv.notifications.preferences import parse_preferences

    rows = []
    for n in range(count):
        body = {"channels": {"email": {"enabled": True, "address": f"{user_id(n)}@example.com"}}}
        document = json.dumps(parse_preferences(body, DEFAULT_CAPS).to_json(), sort_keys=True)
        rows.append((user_id(n), document, time.time()))
    return rows


class _FaultTestCase(DaemonTestCase):
    """A plain SMTP server process, daemons sending to it, and ways to count what arrived."""

    #: Extra environment of every daemon of the test.
    daemon_env: dict[str, str] = {}

    def setUp(self) -> None:
        super().setUp()
        if importlib.util.find_spec("aiosmtpd") is None:
            reason = "aiosmtpd is not installed (pip install -e '.[test]')"
            if services_required():
                self.fail(f"{reason} (and {REQUIRE_ENV} is set, so this fails)")
            raise unittest.SkipTest(reason)
        self.mail_dir = temporary_directory("streamsrv-faults-smtp-")
        self.addCleanup(shutil.rmtree, self.mail_dir, True)
        self.smtp = SmtpServerProcess(self.mail_dir, "plain")
        self.smtp.start()
        self.addCleanup(self.smtp.stop)
        self.media = self.media_dir()

    def daemon(self, extra: dict[str, str] | None = None) -> Daemon:
        """A daemon sending email to the test server; started, not yet ready."""
        env = {
            "STREAMSRV_JWT_SECRET": SECRET,
            "STREAMSRV_SMTP_URL": f"smtp://127.0.0.1:{self.smtp.port}",
            "STREAMSRV_SMTP_FROM": SENDER,
            "STREAMSRV_RATELIMIT_API_PER_IP": UNLIMITED,
            "STREAMSRV_RATELIMIT_API_PER_USER": UNLIMITED,
            "STREAMSRV_LOG_LEVEL": "warn",
            "STREAMSRV_SHUTDOWN_GRACE_S": "1",
            **self.daemon_env,
            **(extra or {}),
        }
        return self.start(["--media-dir", str(self.media)], env)

    def seed_sqlite(self, count: int) -> None:
        """Preferences of *count* users in the data dir's outbox (created and migrated here)."""
        from streamsrv.notifications.outboxdb import OUTBOX_DB_FILE, SqliteOutboxDatabase

        database = SqliteOutboxDatabase(self.data / OUTBOX_DB_FILE)
        database.migrate(time.time())
        database.close()
        with sqlite3.connect(self.data / OUTBOX_DB_FILE) as db:
            db.executemany(
                "INSERT INTO notification_preferences (user_id, document, updated_at) VALUES (?, ?, ?)",
                preference_rows(count),
            )

    def post(self, daemon: Daemon, count: int) -> str:
        """One notification to users 0..count-1 on email; its id (202 checked)."""
        token = jwt.encode({"sub": "ops", "roles": ["admin"], "exp": int(time.time()) + 3600}, SECRET)
        body = {"template": "new-release", "user_ids": [user_id(n) for n in range(count)], "data": DATA,
                "channels": ["email"]}  # fmt: skip
        response, answer = daemon.request(
            "POST",
            "/api/v1/notifications",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
        self.assertEqual(response.status, 202, answer[:500])
        return str(json.loads(answer)["id"])

    def states(self, daemon: Daemon, notification_id: str) -> Counter[str]:
        """How many deliveries of the notification are in each state, as GET answers."""
        token = jwt.encode({"sub": "ops", "roles": ["admin"], "exp": int(time.time()) + 3600}, SECRET)
        response, answer = daemon.request(
            "GET", f"/api/v1/notifications/{notification_id}", {"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(response.status, 200, answer[:500])
        return Counter(d["state"] for d in json.loads(answer)["deliveries"])

    def accepted(self) -> int:
        """How many messages the SMTP server accepted so far (cheap: counts files)."""
        return len(list(Path(self.mail_dir).glob("*.json")))

    def wait_accepted(self, at_least: int, timeout: float = ARRIVE_TIMEOUT_S, poll: float = 0.1) -> None:
        """Wait until the server accepted *at_least* messages."""
        deadline = time.monotonic() + timeout
        while self.accepted() < at_least:
            if time.monotonic() > deadline:
                self.fail(f"only {self.accepted()} of {at_least} messages arrived in {timeout:g} s")
            time.sleep(poll)

    def message_ids(self) -> Counter[str]:
        """Every accepted message's Message-ID, with how often it came."""
        return Counter(str(r.message["Message-ID"]) for r in self.smtp.received())

    def recipients(self) -> set[str]:
        """Everyone who got at least one message."""
        return {rcpt for r in self.smtp.received() for rcpt in r.rcpt_tos}

    def assert_everyone_once(self, count: int) -> None:
        """Each of the *count* users got exactly one message, each with its own Message-ID."""
        ids = self.message_ids()
        self.assertEqual(len(ids), count)
        self.assertEqual([i for i, n in ids.items() if n > 1], [])
        self.assertEqual(self.recipients(), {f"{user_id(n)}@example.com" for n in range(count)})

    def stop_cleanly(self, daemon: Daemon) -> None:
        """SIGTERM and wait for a clean exit."""
        daemon.process.send_signal(signal.SIGTERM)
        self.assert_clean_exit(daemon, daemon.wait(60))


class InterruptedSendTests(_FaultTestCase):
    """A daemon stopped in the middle of a send, then started again on the same SQLite outbox."""

    #: Short leases: the killed daemon's deliveries are taken over after 4 s, not 3 minutes.
    daemon_env = {"STREAMSRV_NOTIFY_LEASE_S": "4"}

    def interrupt(self, signum: int) -> int:
        """Send to COUNT users, *signum* the daemon once some (not all) arrived; restart; how many before."""
        self.seed_sqlite(COUNT)
        first = self.daemon()
        first.wait_ready()
        notification = self.post(first, COUNT)
        self.wait_accepted(min(30, COUNT // 4), poll=0.01)
        first.process.send_signal(signum)
        code = first.wait(60)
        if signum == signal.SIGTERM:
            self.assert_clean_exit(first, code)
        before = self.accepted()
        second = self.daemon()
        second.wait_ready()
        self.wait_accepted(COUNT)
        time.sleep(2 * 4)  # a lease or two: anything about to be sent twice would be sent now
        self.assertEqual(self.states(second, notification), Counter({"sent": COUNT}))
        self.stop_cleanly(second)
        return before

    def test_sigterm_mid_send_sends_each_exactly_once(self) -> None:
        """SIGTERM in the middle: the messages in flight finish and are recorded, the unsent
        leases are handed back; after the restart every delivery was sent exactly once."""
        before = self.interrupt(signal.SIGTERM)
        self.assert_everyone_once(COUNT)
        self.assertLess(before, COUNT, "the send was over before the signal: nothing was interrupted")

    def test_kill_mid_send_loses_nothing(self) -> None:
        """``kill -9`` in the middle: after the restart (and the leases running out) every user
        got the message; a copy sent twice carries the same Message-ID (receivers dedupe)."""
        before = self.interrupt(signal.SIGKILL)
        ids = self.message_ids()
        self.assertEqual(len(ids), COUNT)
        self.assertEqual(self.recipients(), {f"{user_id(n)}@example.com" for n in range(COUNT)})
        duplicates = sum(ids.values()) - len(ids)
        # Only messages sent but not yet recorded when the process died may come twice.
        self.assertLessEqual(duplicates, before)


class SmtpOutageTests(_FaultTestCase):
    """The SMTP server is down when the notification is sent, and comes back."""

    daemon_env = {"STREAMSRV_NOTIFY_RETRY_BASE_S": "0.5", "STREAMSRV_NOTIFY_MAX_ATTEMPTS": "30"}

    def test_outage_retried_then_sent_once(self) -> None:
        """With the server down for a few seconds every delivery fails and is retried (small
        back-off here); once it is back all are sent, each exactly once."""
        self.seed_sqlite(COUNT)
        daemon = self.daemon()
        daemon.wait_ready()
        self.smtp.stop()
        notification = self.post(daemon, COUNT)
        time.sleep(OUTAGE_S)
        states = self.states(daemon, notification)
        self.assertEqual(states.get("sent", 0), 0)
        self.assertEqual(states.get("queued", 0), COUNT, states)
        self.smtp.start()  # the same port and directory
        self.wait_accepted(COUNT)
        time.sleep(2)
        self.assertEqual(self.states(daemon, notification), Counter({"sent": COUNT}))
        self.assert_everyone_once(COUNT)
        self.stop_cleanly(daemon)


class TwoDaemonsOnePostgresTests(_FaultTestCase):
    """Two daemons share one PostgreSQL outbox: the leases keep them from sending one delivery twice."""

    def test_no_delivery_sent_twice(self) -> None:
        """Both daemons claim from the same deliveries at once; each user gets exactly one email."""
        import psycopg2

        dsn = fresh_postgres_dsn(self)
        env = {"STREAMSRV_ANALYTICS_DSN": dsn, "STREAMSRV_NOTIFY_BATCH": "20"}
        a = self.daemon(env)
        a.wait_ready()  # migrated
        connection = psycopg2.connect(dsn)
        try:
            with connection, connection.cursor() as cursor:
                insert = (
                    "INSERT INTO notification_preferences (user_id, document, updated_at) VALUES (%s, %s, %s)"
                )
                cursor.executemany(insert, preference_rows(COUNT))
        finally:
            connection.close()
        b_data = Path(self.mktemp()).absolute()
        b_data.mkdir()
        b = self.daemon({**env, "STREAMSRV_DATA_DIR": str(b_data)})
        b.wait_ready()
        notification = self.post(a, COUNT)
        self.wait_accepted(COUNT)
        time.sleep(2)
        self.assertEqual(self.states(b, notification), Counter({"sent": COUNT}))
        self.assert_everyone_once(COUNT)
        owners = self.lease_owners(dsn)
        self.stop_cleanly(a)
        self.stop_cleanly(b)
        self.assertEqual(owners, 0)

    def lease_owners(self, dsn: str) -> Any:
        """How many deliveries are still leased (none, once all are sent)."""
        import psycopg2

        connection = psycopg2.connect(dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM notification_deliveries WHERE lease_owner IS NOT NULL")
                return cursor.fetchone()[0]
        finally:
            connection.close()

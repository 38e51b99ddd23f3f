# -*- test-case-name: tests.test_faults_kill -*-
"""``kill -9`` of a real daemon while playback reports stream in over WebSockets.

The daemon (``twistd -n streamsrv``, analytics in the SQLite file of its
data dir) takes reports from a :class:`~tests.reportdriver.ReportDriver`;
once ``/metrics`` says some were committed it is killed with SIGKILL while
reports keep coming.  Pinned: every report the daemon said it committed is
in the file after the kill, no row appears twice or was never sent, and the
file opens cleanly.  The loss (reports acknowledged but not committed) is
what one flush interval holds; ``bench/analytics_faults.py kill9`` measures
it at a known rate.  No timing is asserted: every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwt import TokenIssuer
from tests.reportdriver import ReportDriver
from tests.test_daemon import DaemonTestCase

#: The HS256 secret of the test deployment.
SECRET = "faults-test-secret-0123456789abcdef-0123456789abcdef"

#: How long any wait may take before the test fails.
WAIT_S = 60.0


def token_for(sub: str) -> str:
    """A listener's access token for :data:`SECRET`, valid for ten minutes."""
    clock = Clock()
    clock.advance(time.time())
    issuer = TokenIssuer(secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock)
    return issuer.issue(sub=sub, roles=["listener"], ttl_s=600)


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample *name* in a Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class KillDuringIngestionTests(DaemonTestCase):
    """SIGKILL while reports stream in: what was committed survives, nothing else is invented."""

    def setUp(self) -> None:
        super().setUp()
        try:
            import websockets  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None

    def test_committed_reports_survive(self) -> None:
        """Reports counted as written before the kill are all in the database afterwards."""
        daemon = self.start(
            ["--media-dir", str(self.media_dir())],
            {"STREAMSRV_JWT_SECRET": SECRET, "STREAMSRV_SHUTDOWN_GRACE_S": "1"},
        )
        daemon.wait_ready()

        def written() -> float:
            _, body = daemon.request("GET", "/metrics")
            return metric(body.decode(), "streamsrv_analytics_events_written_total")

        async def main() -> tuple[ReportDriver, float]:
            driver = ReportDriver(daemon.port, token_for("listener-1"), sockets=4)
            running = asyncio.ensure_future(driver.run())
            loop = asyncio.get_running_loop()
            deadline = time.monotonic() + WAIT_S
            committed = 0.0
            while committed < 20 and time.monotonic() < deadline and not running.done():
                await asyncio.sleep(0.1)
                committed = await loop.run_in_executor(None, written)
            os.kill(daemon.process.pid, signal.SIGKILL)
            await asyncio.sleep(0.5)  # some more reports meet the dead daemon
            driver.stop()
            await asyncio.wait_for(running, WAIT_S)
            return driver, committed

        driver, committed = asyncio.run(main())
        self.assertEqual(daemon.wait(WAIT_S), -signal.SIGKILL)
        self.assertGreaterEqual(committed, 20, daemon.output())
        rows = self.rows()
        self.assertGreaterEqual(len(rows), committed)
        self.assertEqual(len(rows), len(set(rows)), "a report was written twice")
        sent = {(log.path, float(n)) for log in driver.logs for n in range(log.sent)}
        self.assertLessEqual(set(rows), sent)

    def rows(self) -> list[tuple[Any, ...]]:
        """Every (track, position) of the ``events`` table, read after the kill."""
        connection = sqlite3.connect(self.data / "analytics.sqlite3")
        try:
            self.assertEqual(connection.execute("PRAGMA integrity_check").fetchone(), ("ok",))
            return connection.execute("SELECT track_path, position_s FROM events").fetchall()
        finally:
            connection.close()

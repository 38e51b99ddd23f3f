"""Analytics under faults, on a real daemon fed playback reports over WebSockets.

    .venv/bin/python bench/analytics_faults.py kill9  [--rounds 5] [--sockets 25] [--seconds 6]
    .venv/bin/python bench/analytics_faults.py outage [--outage-s 30] [--sockets 25]
                                                      [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

``kill9``: a daemon (analytics in its SQLite file) takes reports from
``--sockets`` sockets at 8 messages/s each (a known rate); after
``--seconds`` (plus a random fraction of a second, so the kill falls at any
phase of the flush loop) it is killed with SIGKILL.  For each round: reports sent,
acknowledged (a later ``pong`` came back: the daemon had taken them), rows in
the database, reports sent before the kill but missing (and how many of them
were acknowledged), and how long before the kill the oldest missing report
was sent.  The flush interval is 1 s, so that age should stay under about
one second (plus the time a report takes to reach the daemon).

``outage``: a daemon writing analytics to a fresh PostgreSQL database through
a TCP forwarder this script owns (the shared server is never stopped);
reports stream in, the forwarder is cut for ``--outage-s`` seconds (every
connection reset, new ones refused) and restored.  Prints what
``/health/detailed`` said of the store during the outage, how long the
backlog took to drain, and sent vs written rows.  The database is dropped at
the end.  Every process started is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reportdriver import ReportDriver  # noqa: E402
from tests.test_daemon import Daemon, free_port  # noqa: E402
from tests.test_faults_kill import SECRET, metric, token_for  # noqa: E402


def start_daemon(tmp: Path, env: dict[str, str]) -> Daemon:
    """A development daemon on a free port with an empty library, ready."""
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp))
    port = free_port()
    full_env = {
        "STREAMSRV_DATA_DIR": str(data),
        "STREAMSRV_JWT_SECRET": SECRET,
        "STREAMSRV_SHUTDOWN_GRACE_S": "1",
        **env,
    }
    args = ["--media-dir", str(media), "--listen", f"tcp:{port}:interface=127.0.0.1"]
    daemon = Daemon(work, args, full_env, port)
    daemon.wait_ready(60)
    return daemon


def get_json(daemon: Daemon, path: str) -> Any:
    """GET *path* and decode its JSON body."""
    _, body = daemon.request("GET", path)
    return json.loads(body)


# --- kill -9 ----------------------------------------------------------------------------


async def kill_round(daemon: Daemon, sockets: int, seconds: float) -> tuple[ReportDriver, float]:
    """Drive reports for *seconds*, SIGKILL the daemon; the driver and the kill time (monotonic)."""
    driver = ReportDriver(daemon.port, token_for("bench"), sockets=sockets)
    running = asyncio.ensure_future(driver.run())
    await asyncio.sleep(seconds + random.uniform(0.0, 1.0))  # any phase of the flush loop
    killed_at = time.monotonic()
    os.kill(daemon.process.pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    driver.stop()
    await asyncio.wait_for(running, 60)
    return driver, killed_at


def kill9(args: argparse.Namespace) -> None:
    """The ``kill9`` benchmark."""
    results = []
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            daemon = start_daemon(Path(tmp), {})
            try:
                driver, killed_at = asyncio.run(kill_round(daemon, args.sockets, args.seconds))
                daemon.wait(30)
            finally:
                daemon.stop()
            connection = sqlite3.connect(Path(tmp) / "data" / "analytics.sqlite3")
            rows = set(connection.execute("SELECT track_path, position_s FROM events").fetchall())
            connection.close()
        before = [(log, n) for log in driver.logs for n in range(log.sent) if log.sent_at[n] < killed_at]
        missing = [(log, n) for log, n in before if (log.path, float(n)) not in rows]
        missing_acked = [(log, n) for log, n in missing if n < log.acked]
        oldest = max((killed_at - log.sent_at[n] for log, n in missing), default=0.0)
        result = {
            "sent_before_kill": len(before),
            "acked": driver.acked,
            "rows": len(rows),
            "lost": len(missing),
            "lost_acked": len(missing_acked),
            "oldest_lost_s": round(oldest, 3),
            "rate_per_s": round(len(before) / (killed_at - min(log.sent_at[0] for log in driver.logs)), 1),
        }
        results.append(result)
        print(f"round {round_no + 1}: {json.dumps(result)}", flush=True)
    for key in ("lost", "lost_acked", "oldest_lost_s", "rate_per_s"):
        values = [r[key] for r in results]
        print(f"{key}: median {statistics.median(values)}, max {max(values)}")


# --- PostgreSQL outage ------------------------------------------------------------------


class Forwarder:
    """An asyncio TCP forwarder to *target* that can be cut (connections reset) and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and reset every forwarded connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self.writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def admin(dsn: str, sql: str) -> None:
    """One statement outside a transaction."""
    import psycopg2

    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


async def outage_run(
    daemon_env: dict[str, str], tmp: Path, forwarder: Forwarder, args: argparse.Namespace
) -> dict[str, Any]:
    """Reports for 5 s, an outage of ``--outage-s``, reports for 5 s more, then wait for the backlog."""
    loop = asyncio.get_running_loop()
    daemon = await loop.run_in_executor(None, start_daemon, tmp, daemon_env)
    try:
        driver = ReportDriver(daemon.port, token_for("bench"), sockets=args.sockets)
        running = asyncio.ensure_future(driver.run())
        await asyncio.sleep(5)
        await forwarder.cut()
        cut_at = time.monotonic()
        peak: dict[str, Any] = {}
        while time.monotonic() - cut_at < args.outage_s:
            await asyncio.sleep(1)
            checks = (await loop.run_in_executor(None, get_json, daemon, "/health/detailed"))["checks"]
            analytics = checks["analytics"]
            if analytics.get("buffer_size", 0) >= peak.get("buffer_size", 0):
                peak = analytics
        await forwarder.start()
        restored_at = time.monotonic()
        recovered = None
        while recovered is None and time.monotonic() - restored_at < 60:
            checks = (await loop.run_in_executor(None, get_json, daemon, "/health/detailed"))["checks"]
            if checks["analytics"]["status"] == "ok" and checks["analytics"]["buffer_size"] < 100:
                recovered = time.monotonic() - restored_at
            await asyncio.sleep(0.1)
        await asyncio.sleep(max(0.0, 5 - (time.monotonic() - restored_at)))
        driver.stop()
        await asyncio.wait_for(running, 60)
        drained = None
        while time.monotonic() - restored_at < 120:
            _, body = await loop.run_in_executor(None, daemon.request, "GET", "/metrics")
            if metric(body.decode(), "streamsrv_analytics_events_written_total") >= driver.sent:
                drained = time.monotonic() - restored_at
                break
            await asyncio.sleep(0.2)
        _, body = await loop.run_in_executor(None, daemon.request, "GET", "/metrics")
        dropped = metric(body.decode(), "streamsrv_analytics_events_dropped_total")
        daemon.process.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, daemon.wait, 30)
        return {
            "sent": driver.sent,
            "peak": peak,
            "backlog_written_after_s": recovered,
            "all_written_after_restore_s": drained,
            "dropped": dropped,
        }
    finally:
        daemon.stop()


def outage(args: argparse.Namespace) -> None:
    """The ``outage`` benchmark."""
    parts = urlsplit(args.dsn)
    name = f"streamsrv_bench_{secrets.token_hex(6)}"
    admin(args.dsn, f'CREATE DATABASE "{name}"')
    try:
        forwarder = Forwarder((parts.hostname or "127.0.0.1", parts.port or 5432))
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{forwarder.port}" if userinfo else f"127.0.0.1:{forwarder.port}"
        through = urlunsplit(parts._replace(netloc=netloc, path=f"/{name}"))

        async def main() -> dict[str, Any]:
            await forwarder.start()
            with tempfile.TemporaryDirectory() as tmp:
                return await outage_run({"STREAMSRV_ANALYTICS_DSN": through}, Path(tmp), forwarder, args)

        result = asyncio.run(main())
        import psycopg2

        connection = psycopg2.connect(urlunsplit(parts._replace(path=f"/{name}")))
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*), COUNT(DISTINCT (track_path, position_s)) FROM events")
            rows, distinct = cursor.fetchone()
        connection.close()
        result.update(rows=rows, distinct_rows=distinct, outage_s=args.outage_s)
        print(json.dumps(result, indent=2))
    finally:
        admin(args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Parse the arguments and run one benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["kill9", "outage"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sockets", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "STREAMSRV_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    kill9(args) if args.mode == "kill9" else outage(args)


if __name__ == "__main__":
    main()

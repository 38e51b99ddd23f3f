"""Playback-report ingestion rate into the analytics store, SQLite and PostgreSQL, in events/s.

Feeds playback reports (``playback.play`` then ``playback.progress`` every
10 s of simulated time, with startup time and bitrate) from many concurrent
listeners through :class:`SessionTracker` into a store, and measures:

- ``accept``: reports/s taken by the tracker and buffered (what the
  WebSocket handler pays per report, on the reactor thread);
- ``durable``: reports/s from the first report until the last flush has
  committed (the database's sustained ingestion rate, batched).

Prints the median of several runs for each backend.  PostgreSQL is the
machine's (``--postgres-dsn``, default ``postgresql://postgres@127.0.0.1:5432/postgres``);
a fresh database is created for the run and dropped after.  Skipped if it
cannot be reached.

    .venv/bin/python bench/analytics_ingest.py [--runs 5] [--reports 50000] [--listeners 500] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from streamsrv.analytics.backends import PostgresAnalyticsStore, SqliteAnalyticsStore
from streamsrv.analytics.sessions import SessionTracker
from streamsrv.analytics.store import AnalyticsStore

NOW = 1_800_000_000.0


def _reports(count: int, listeners: int) -> list[tuple[str, dict[str, Any]]]:
    """(user, frame) pairs: each listener plays then reports progress, round-robin."""
    frames = []
    for n in range(count):
        listener = n % listeners
        step = n // listeners
        kind = "playback.play" if step == 0 else "playback.progress"
        data: dict[str, Any] = {
            "session_id": f"c-{listener}",
            "path": f"artist-{listener % 50}/track-{listener % 400}.mp3",
            "position_s": step * 10.0,
            "bitrate_kbps": 128 if step % 20 else 96,
        }
        if step == 0:
            data["startup_ms"] = 150 + listener % 200
        frames.append((f"user-{listener}", {"type": kind, "data": data}))
    return frames


async def _run_once(store: AnalyticsStore, frames: list[tuple[str, dict[str, Any]]]) -> tuple[float, float]:
    clock = task.Clock()
    clock.advance(NOW)
    tracker = SessionTracker(store, clock)
    await store.start()
    start = time.perf_counter()
    for i, (user, frame) in enumerate(frames):
        if i % 1000 == 0:
            clock.advance(1.0)
        outcome = tracker.on_playback_report(user, frame)
        if not outcome.ok:
            raise RuntimeError(outcome.message)
    accepted = time.perf_counter() - start
    await store.flush()
    durable = time.perf_counter() - start
    written = store.counters().events_written
    if written < len(frames):
        raise RuntimeError(f"only {written} of {len(frames)} events written")
    await store.close()
    return len(frames) / accepted, len(frames) / durable


def _postgres_database(base: str) -> tuple[str, Any] | None:
    try:
        import psycopg2
    except ImportError:
        print("PostgreSQL: skipped (psycopg2 is not installed)")
        return None
    name = f"streamsrv_bench_{secrets.token_hex(4)}"
    try:
        connection = psycopg2.connect(base, connect_timeout=2)
    except psycopg2.Error as e:
        print(f"PostgreSQL: skipped ({str(e).strip().splitlines()[0]})")
        return None
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()

    return urlunsplit(urlsplit(base)._replace(path=f"/{name}")), drop


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    frames = _reports(args.reports, args.listeners)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="streamsrv-bench-") as directory:
        runs = []
        for run in range(args.runs):
            path = Path(directory) / f"run-{run}.sqlite3"
            runs.append(await _run_once(SqliteAnalyticsStore(path, reactor, reactor=reactor), frames))
        results["sqlite"] = _medians(runs)
    database = _postgres_database(args.postgres_dsn)
    if database is not None:
        dsn, drop = database
        try:
            runs = []
            for _ in range(args.runs):
                store = PostgresAnalyticsStore(dsn, reactor, reactor=reactor)
                runs.append(await _run_once(store, frames))
            results["postgresql"] = _medians(runs)
        finally:
            drop()
    print(f"median of {args.runs} runs, {args.reports} reports from {args.listeners} listeners, one core")
    for backend, values in results.items():
        print(
            f"  {backend:<11} accept {values['accept_events_per_s']:>10,.0f} events/s"
            f"   durable {values['durable_events_per_s']:>10,.0f} events/s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _medians(runs: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "accept_events_per_s": statistics.median(r[0] for r in runs),
        "durable_events_per_s": statistics.median(r[1] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reports", type=int, default=50_000)
    parser.add_argument("--listeners", type=int, default=500)
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    task.react(lambda reactor: ensureDeferred(_main(reactor, args)))  # exits the process


if __name__ == "__main__":
    main()

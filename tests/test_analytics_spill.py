# -*- test-case-name: tests.test_analytics_spill -*-
"""Tests for spill files: what the analytics store saves when its final flush fails, and replays.

:class:`SpillFileTests` pins the files themselves (written whole, claimed by one
taker, a dead taker's claim taken again, unreadable ones set aside, the bound).
:class:`SpillStoreContractMixin` runs a store through an outage at stop and a
restart, against SQLite in a temporary directory and against the machine's
PostgreSQL (a fresh database per test); the outage is a ``_write`` that
raises, as in ``tests.test_analytics_store``.  Nothing here is timed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.analytics.backends import make_analytics_store
from streamsrv.analytics.spill import (
    SPILL_DIR,
    SpillDirectory,
    Taken,
    release_claims,
    take_spills,
    write_spill,
)
from streamsrv.analytics.store import AnalyticsStore, SpilledEvent
from streamsrv.threads import InlineThreads, ReactorThreads
from tests.test_analytics_store import (
    NOW,
    StoreFactory,
    count,
    event,
    postgres_factory,
    session,
    sqlite_factory,
)

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


def spill_files(directory: Path, pattern: str = "*") -> list[str]:
    """The names in *directory* matching *pattern*, sorted (none if it does not exist)."""
    return sorted(p.name for p in directory.glob(pattern)) if directory.is_dir() else []


def write(directory: Path, events: int, sessions: int = 0, first: int = 0, pid: int = 4242) -> Path:
    """A spill file of *events* progress events (positions from *first*) and *sessions* sessions."""
    return write_spill(
        directory,
        [event(first + n) for n in range(events)],
        [session(f"s-{n}") for n in range(sessions)],
        created_at=NOW,
        pid=pid,
    )


def down(txn: Any, *args: Any) -> None:
    """Stands in for a store's ``_write`` while the database is unreachable."""
    raise RuntimeError("database is down")


def captured_log(testcase: unittest.TestCase) -> list[dict[str, Any]]:
    """Every log event emitted until the end of *testcase*."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, seen.append)
    return seen


def logged(seen: list[dict[str, Any]], fragment: str) -> list[dict[str, Any]]:
    """The log events whose format contains *fragment*."""
    return [e for e in seen if fragment in e.get("log_format", "")]


class SpillFileTests(unittest.TestCase):
    """The files: whole or absent, one taker each, unreadable ones set aside, bounded."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()) / SPILL_DIR

    def take(self, max_records: int = 1000, claimant: str = "a") -> Taken:
        """take_spills, its claims released (kept on disk) at cleanup."""
        taken = take_spills(self.directory, max_records, claimant=claimant)
        self.addCleanup(release_claims, taken.claims, delete=False)
        return taken

    def test_round_trip(self) -> None:
        """A written file reads back as the same records; each event gets a key of its own."""
        path = write(self.directory, 3, sessions=2)
        self.assertEqual(spill_files(self.directory), [path.name])  # no temporary file left
        taken = self.take()
        self.assertEqual([e.position_s for e in taken.events], [0.0, 1.0, 2.0])
        self.assertEqual(len({e.spill_key for e in taken.events}), 3)
        self.assertEqual(list(taken.sessions), ["s-0", "s-1"])
        self.assertEqual(taken.sessions["s-0"], session("s-0"))
        self.assertEqual(spill_files(self.directory, "*.jsonl"), [])
        self.assertEqual(len(spill_files(self.directory, "*.a.claimed")), 1)

    def test_failed_write_leaves_nothing(self) -> None:
        """A write that fails half-way (a value JSON cannot hold) leaves no file, not even a temporary one."""
        with self.assertRaises(TypeError):
            write_spill(self.directory, [event(1), event(2, position_s=object())], [], created_at=NOW, pid=1)
        self.assertEqual(spill_files(self.directory), [])

    def test_respill_keeps_keys(self) -> None:
        """An event spilled again keeps the key it was first given; a new one gets one of the file's."""
        keyed = [SpilledEvent(**{**vars(event(n)), "spill_key": f"k{n}"}) for n in range(2)]
        path = write_spill(self.directory, [*keyed, event(5)], [], created_at=NOW, pid=1)
        keys = [e.spill_key for e in self.take().events]
        self.assertEqual(keys, ["k0", "k1", f"{path.name.split('.')[0]}:2"])

    def test_one_taker_per_file(self) -> None:
        """A file one taker holds is not taken by another."""
        write(self.directory, 2)
        first = self.take(claimant="a")
        second = self.take(claimant="b")
        self.assertEqual((len(first.claims), len(first.events)), (1, 2))
        self.assertEqual((second.claims, second.events), ([], []))

    def test_racing_takers_split(self) -> None:
        """Takers racing in threads over the same files take each file exactly once between them."""
        for n in range(20):
            write(self.directory, 1, first=n, pid=n)
        barrier = threading.Barrier(4)
        results: list[Taken] = []

        def taker(name: str) -> None:
            barrier.wait()
            results.append(take_spills(self.directory, 1000, claimant=name))

        threads = [threading.Thread(target=taker, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for taken in results:
            self.addCleanup(release_claims, taken.claims, delete=False)
        positions = sorted(e.position_s for taken in results for e in taken.events)
        self.assertEqual(positions, [float(n) for n in range(20)])

    def test_dead_taker_claim_taken_again(self) -> None:
        """A claim whose holder is gone (its lock released, the file kept) is taken by the next taker."""
        write(self.directory, 2)
        first = take_spills(self.directory, 1000, claimant="a")
        release_claims(first.claims, delete=False)  # the process died before deleting it
        second = self.take(claimant="b")
        self.assertEqual([e.spill_key for e in second.events], [e.spill_key for e in first.events])
        self.assertEqual(len(spill_files(self.directory, "*.b.claimed")), 1)

    def test_corrupt_set_aside(self) -> None:
        """A file with a line that does not parse is renamed .bad and not replayed; the others are."""
        good = write(self.directory, 2)
        bad = write(self.directory, 2, first=10, pid=7)
        bad.write_text(bad.read_text()[:-20] + "\n")  # the last line cut short
        taken = self.take()
        self.assertEqual([e.position_s for e in taken.events], [0.0, 1.0])
        self.assertEqual([name for name, _ in taken.set_aside], [bad.name])
        self.assertIn("line 3", taken.set_aside[0][1])
        self.assertEqual(spill_files(self.directory, "*.bad"), [bad.name + ".bad"])
        self.assertEqual(len(taken.claims), 1)
        self.assertTrue(taken.claims[0].path.name.startswith(good.name.split(".")[0]))
        self.assertEqual(self.take(claimant="b").set_aside, [])  # set aside once, not again

    def test_missing_lines_set_aside(self) -> None:
        """A file with fewer records than its header says (truncated on a line boundary) is set aside."""
        path = write(self.directory, 3)
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
        taken = self.take()
        self.assertEqual((taken.events, len(taken.set_aside)), ([], 1))
        self.assertIn("truncated", taken.set_aside[0][1])

    def test_unreadable_left_for_later(self) -> None:
        """A file that cannot be read (here a directory by that name) is skipped and reported, not
        set aside or deleted; the others are taken."""
        write(self.directory, 1)
        odd = self.directory / "20260101T000000Z-9-dir.jsonl"
        odd.mkdir()
        taken = self.take()
        self.assertEqual([e.position_s for e in taken.events], [0.0])
        self.assertEqual([name for name, _ in taken.skipped], [odd.name])
        self.assertIn("IsADirectoryError", taken.skipped[0][1])
        self.assertEqual(spill_files(self.directory, "*.bad"), [])
        self.assertEqual(len(spill_files(self.directory, "20260101T000000Z-9-dir.*")), 1)

    def test_not_a_spill_file(self) -> None:
        """A file without the header (empty, or something else) is set aside."""
        self.directory.mkdir(parents=True)
        (self.directory / "20260101T000000Z-1-x.jsonl").write_text("")
        (self.directory / "20260101T000000Z-2-y.jsonl").write_text('{"hello": 1}\n')
        self.assertEqual(len(self.take().set_aside), 2)

    def test_bound_keeps_the_newest(self) -> None:
        """Beyond *max_records* the oldest events and sessions are dropped and counted."""
        write(self.directory, 30, sessions=4)
        taken = self.take(max_records=10)
        self.assertEqual([e.position_s for e in taken.events], [float(n) for n in range(20, 30)])
        self.assertEqual(taken.events_dropped, 20)
        taken_sessions = take_spills(self.directory, 1000, claimant="c")  # nothing left to take
        self.assertEqual(taken_sessions.claims, [])

    def test_session_bound(self) -> None:
        """Sessions beyond *max_records* (the oldest) are dropped and counted."""
        write(self.directory, 0, sessions=5)
        taken = self.take(max_records=2)
        self.assertEqual((list(taken.sessions), taken.sessions_dropped), (["s-3", "s-4"], 3))

    def test_latest_session_state(self) -> None:
        """A session in several files comes back in its latest state."""
        newer = session("s-1", last_activity_at=NOW + 60, bytes_sent=99)
        write_spill(self.directory, [], [newer], created_at=NOW, pid=1)
        write_spill(self.directory, [], [session("s-1")], created_at=NOW + 1, pid=2)
        self.assertEqual(self.take().sessions, {"s-1": newer})

    def test_nothing_there(self) -> None:
        """No directory: nothing taken, nothing created."""
        self.assertEqual(self.take(), Taken())
        self.assertFalse(self.directory.exists())


class SpillStoreContractMixin(_MixinBase):
    """A store across an outage at stop and a restart; subclasses set :meth:`factory`."""

    def factory(self) -> StoreFactory:
        raise NotImplementedError

    def setUp(self) -> None:
        self.stores = self.factory()
        self.clock = Clock()
        self.clock.advance(NOW)
        self.directory = Path(self.mktemp()) / SPILL_DIR

    def open(self, threads: Any = None, **options: Any) -> AnalyticsStore:
        """A store on the test database spilling to the test's directory."""
        spill = SpillDirectory(self.directory, threads or InlineThreads(), wall=lambda: NOW)
        return self.stores.open(self.clock, spill=spill, **options)

    async def stop_during_outage(self, events: int, sessions: int = 1) -> AnalyticsStore:
        """A store that records *events* and *sessions*, then stops while every write fails."""
        store = self.open()
        await store.start()
        store._write = down  # type: ignore[method-assign, assignment]
        for n in range(events):
            store.record_event(event(n))
        for n in range(sessions):
            store.record_session(session(f"s-{n}", bytes_sent=n))
        await store.close()
        self.flushLoggedErrors(RuntimeError)
        return store

    async def test_outage_at_stop_spills(self) -> None:
        """The final flush fails: the records go to one spill file, counted, and the log says where."""
        seen = captured_log(self)
        store = await self.stop_during_outage(5, sessions=2)
        files = spill_files(self.directory)
        self.assertEqual(len(files), 1)
        self.assertRegex(files[0], rf"^20260101T000000Z-{os.getpid()}-[0-9a-f]{{8}}\.jsonl$")
        counters = store.counters()
        self.assertEqual(
            (counters.spilled_events, counters.spilled_sessions, counters.buffer_size), (5, 2, 0)
        )
        [saved] = logged(seen, "saved to {path}")
        self.assertEqual(saved["path"], str(self.directory / files[0]))
        self.assertEqual(logged(seen, "are lost"), [])

    async def test_replayed_once(self) -> None:
        """A new store replays the file: every row appears exactly once, and the file is deleted."""
        await self.stop_during_outage(5, sessions=2)
        store = self.open()
        await store.start()
        detail = store.check().detail
        self.assertEqual((detail["replayed_events"], detail["replayed_sessions"]), (5, 2))
        self.assertEqual((detail["spill_files_pending"], detail["buffer_size"]), (1, 7))
        await store.flush()
        self.assertEqual(await count(store, "events"), 5)
        self.assertEqual(await count(store, "sessions"), 2)
        rows = await store.query("SELECT position_s FROM events ORDER BY position_s")
        self.assertEqual([float(r[0]) for r in rows], [0.0, 1.0, 2.0, 3.0, 4.0])
        rows = await store.query("SELECT id, bytes_sent FROM sessions ORDER BY id")
        self.assertEqual([(r[0], int(r[1])) for r in rows], [("s-0", 0), ("s-1", 1)])
        self.assertEqual(spill_files(self.directory), [])
        self.assertEqual(store.check().detail["spill_files_pending"], 0)

    async def test_replay_behind_new_records(self) -> None:
        """Replayed records are written with those recorded since start; a newer session state wins."""
        await self.stop_during_outage(3, sessions=1)
        store = self.open()
        store.record_session(session("s-0", bytes_sent=500, last_activity_at=NOW + 30))
        store.record_event(event(100))
        await store.start()
        await store.flush()
        self.assertEqual(await count(store, "events"), 4)
        rows = await store.query("SELECT bytes_sent FROM sessions WHERE id = ?", ("s-0",))
        self.assertEqual([int(r[0]) for r in rows], [500])

    async def test_crash_after_commit_writes_nothing_twice(self) -> None:
        """The replaying process dies after its write committed, before deleting the file: the
        next start replays the file again and writes no row twice."""
        await self.stop_during_outage(5, sessions=1)
        first = self.open()
        spill = first._spill
        assert spill is not None
        first._spill = _Crashing(spill)  # type: ignore[assignment]
        await first.start()
        await first.flush()
        self.assertEqual(await count(first, "events"), 5)
        self.assertEqual(len(spill_files(self.directory, "*.claimed")), 1)  # still there

        second = self.open()
        await second.start()
        self.assertEqual(second.counters().replayed_events, 5)
        await second.flush()
        self.assertEqual(await count(second, "events"), 5)
        self.assertEqual(await count(second, "sessions"), 1)
        self.assertEqual(spill_files(self.directory), [])

    async def test_crash_before_commit_loses_nothing(self) -> None:
        """The replaying process dies before writing anything: the next start writes it all."""
        await self.stop_during_outage(4, sessions=1)
        first = self.open()
        await first.start()
        release_claims(first._claims, delete=False)  # its descriptors and buffer go with the process
        first._claims = []
        first._events.clear()
        first._sessions.clear()
        second = self.open()
        await second.start()
        await second.flush()
        self.assertEqual(await count(second, "events"), 4)
        self.assertEqual(await count(second, "sessions"), 1)

    async def test_outage_again_respills(self) -> None:
        """Replayed records still unwritten at the next stop go to a new file (the old one is
        deleted); the start after writes each once."""
        await self.stop_during_outage(3, sessions=1)
        [before] = spill_files(self.directory)
        again = await self.stop_during_outage(0, sessions=0)  # starts, replays, fails, stops
        self.assertEqual(again.counters().spilled_events, 3)
        [after] = spill_files(self.directory)
        self.assertNotEqual(after, before)
        store = self.open()
        await store.start()
        await store.flush()
        self.assertEqual(await count(store, "events"), 3)
        self.assertEqual(await count(store, "sessions"), 1)

    async def test_two_stores_split_the_files(self) -> None:
        """Two stores starting together take disjoint files; every row is written once."""
        # The database exists first: two processes creating one SQLite file at the same
        # moment may see "database is locked" from its WAL switch (sqlitepool), not ours.
        await self.stores.open(self.clock).start()
        for n in range(6):
            write(self.directory, 10, first=10 * n, pid=n + 1)
        threads = ReactorThreads(reactor)
        first, second = self.open(threads), self.open(threads)
        await gatherResults([first.start(), second.start()])
        taken = [first.counters().replayed_events, second.counters().replayed_events]
        self.assertEqual(sum(taken), 60)
        names = [{c.path.name.split(".")[0] for c in s._claims} for s in (first, second)]
        self.assertEqual(names[0] & names[1], set())
        self.assertEqual(len(names[0] | names[1]), 6)
        await gatherResults([first.flush(), second.flush()])
        self.assertEqual(await count(first, "events"), 60)
        rows = await first.query("SELECT COUNT(DISTINCT position_s) FROM events")
        self.assertEqual(int(rows[0][0]), 60)
        self.assertEqual(spill_files(self.directory), [])

    async def test_corrupt_file_set_aside(self) -> None:
        """A corrupt file is renamed .bad and logged once; start-up goes on and replays the rest."""
        seen = captured_log(self)
        write(self.directory, 2)
        bad = write(self.directory, 2, first=10, pid=7)
        bad.write_text(bad.read_text().replace('"event"', '"evnt"', 1))
        store = self.open()
        await store.start()
        await store.flush()
        self.assertEqual(await count(store, "events"), 2)
        self.assertEqual(spill_files(self.directory), [bad.name + ".bad"])
        self.assertEqual(len(logged(seen, "does not parse")), 1)
        self.assertEqual(store.check().detail["spill_files_set_aside"], 1)
        await self.open().start()
        self.assertEqual(len(logged(seen, "does not parse")), 1)

    async def test_bound(self) -> None:
        """A file larger than the buffer limit: the newest are replayed, the rest counted as dropped."""
        write(self.directory, 30, sessions=3)
        store = self.open(flush_threshold=5, max_buffered=10)
        await store.start()
        counters = store.counters()
        self.assertEqual((counters.events_dropped, counters.sessions_dropped), (20, 0))
        await store.flush()
        rows = await store.query("SELECT MIN(position_s), COUNT(*) FROM events")
        self.assertEqual((float(rows[0][0]), int(rows[0][1])), (20.0, 10))

    async def test_spill_fails_logs_lost(self) -> None:
        """If the spill file cannot be written either (the data dir is not writable), the records
        are logged as lost, as before."""
        seen = captured_log(self)
        self.directory.parent.mkdir(parents=True)
        self.directory.write_text("a file where the directory should be")
        await self.stop_during_outage(2)
        [lost] = logged(seen, "are lost")
        self.assertEqual((lost["events"], lost["sessions"]), (2, 1))

    async def test_upgrade_from_version_1(self) -> None:
        """A database at schema version 1 with rows is migrated (events keep theirs) and replays."""
        old = self.stores.open(self.clock)
        old._migrations = old._migrations[:1]
        await old.start()
        old.record_event(event(100))
        await old.flush()
        await old.close()
        write(self.directory, 2)
        store = self.open()
        await store.start()
        self.assertEqual(store.applied_at_start, [2])
        await store.flush()
        self.assertEqual(await count(store, "events"), 3)

    async def test_file_work_goes_through_threads(self) -> None:
        """Every read, write and deletion of spill files is handed to the injected threads."""
        calls: list[str] = []

        class Recording(InlineThreads):
            def defer(self, f: Any, *args: Any, **kwargs: Any) -> Any:
                calls.append(f.__name__)
                return super().defer(f, *args, **kwargs)

        store = self.open(Recording())
        await store.start()
        store._write = down  # type: ignore[method-assign, assignment]
        store.record_event(event(1))
        await store.close()
        self.flushLoggedErrors(RuntimeError)
        again = self.open(Recording())
        await again.start()
        await again.flush()
        self.assertEqual(calls, ["take_spills", "write_spill", "take_spills", "release_claims"])

    def test_made_by_the_factory(self) -> None:
        """make_analytics_store spills to STREAMSRV_DATA_DIR/analytics-spill."""
        data = Path(self.mktemp())
        store = make_analytics_store(None, data, Clock())
        assert store._spill is not None
        self.assertEqual(store._spill.directory, data / SPILL_DIR)


class _Crashing:
    """A spill directory whose process dies before deleting the files it replayed."""

    def __init__(self, spill: SpillDirectory) -> None:
        self._spill = spill
        self.directory = spill.directory

    def take(self, max_records: int) -> Any:
        return self._spill.take(max_records)

    def release(self, claims: Any, delete: bool = True) -> Any:
        return self._spill.release(claims, delete=False)


class SqliteSpillTests(SpillStoreContractMixin, unittest.TestCase):
    """Spill and replay with SQLite."""

    def factory(self) -> StoreFactory:
        return sqlite_factory(self)


class PostgresSpillTests(SpillStoreContractMixin, unittest.TestCase):
    """Spill and replay with the machine's PostgreSQL (a fresh database per test)."""

    def factory(self) -> StoreFactory:
        return postgres_factory(self)

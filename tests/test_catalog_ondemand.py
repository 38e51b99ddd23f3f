# -*- test-case-name: tests.test_catalog_ondemand -*-
"""Tests for :meth:`streamsrv.audio.catalog.Catalog.index_missing`: tracks read on demand.

A cold start's first scan of a large library takes minutes; meanwhile a
track the catalog does not know yet is read when it is asked for, with the
scan's reader and the scan's refusals, so readiness need not wait for the
scan and a track that exists is never answered 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from streamsrv.audio import catalog as catalog_module
from streamsrv.audio.catalog import Catalog
from streamsrv.audio.synchronous import ImmediateReactor
from streamsrv.health.checks import DEGRADED, OK
from streamsrv.health.factory import readiness_prerequisites
from tests.test_catalog import CatalogCase, result


class ManualPool:
    """A thread pool that runs queued calls only when the test says so."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[[bool, object], None], Callable[..., object], tuple[Any, ...]]] = []

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], None],  # noqa: N803 - ThreadPool's name
        func: Callable[..., object],
        *args: Any,
    ) -> None:
        self.queued.append((onResult, func, args))

    def run(self) -> None:
        """Run everything queued so far, and what that queues."""
        while self.queued:
            on_result, func, args = self.queued.pop(0)
            try:
                value = func(*args)
            except BaseException:
                on_result(False, Failure())
            else:
                on_result(True, value)


class IndexMissingTests(CatalogCase):
    """A synchronous catalog: every read finishes at once."""

    def test_read_before_the_first_scan(self) -> None:
        """Before any scan, a track on disk is read on demand: in the index with its record,
        persisted, announced once as added; the first scan then finds it unchanged."""
        path = self.write("Artist/Album/01 First.flac")
        track = "Artist/Album/01 First.flac"
        self.assertFalse(self.catalog.is_audio(track))
        self.assertTrue(result(self.catalog.index_missing(track, path)))
        self.assertTrue(self.catalog.is_audio(track))
        record = self.get(track)
        assert record is not None
        self.assertEqual((record.path, record.metadata.codec), (track, "flac"))
        self.assertEqual(self.kinds(), [("added", track)])
        summary = self.scan()
        self.assertEqual((summary.added, summary.unchanged, summary.reads), (0, 1, 0))
        self.assertEqual(self.kinds(), [])

    def test_unreadable_is_remembered(self) -> None:
        """An unreadable file is refused as a scan would refuse it, and not read again."""
        path = self.fake("bad.mp3")
        self.assertFalse(result(self.catalog.index_missing("bad.mp3", path)))
        self.assertFalse(self.catalog.is_audio("bad.mp3"))
        self.assertIn("bad.mp3", self.catalog.failures())
        calls = len(self.reader.calls)
        self.assertIsNone(self.catalog.index_missing("bad.mp3", path))
        self.assertEqual(len(self.reader.calls), calls)
        self.assertEqual(self.kinds(), [])

    def test_nothing_to_wait_for(self) -> None:
        """A known track, a missing file, a directory and a closed catalog: nothing to wait for."""
        known = self.write("known.flac")
        self.scan()
        self.assertIsNone(self.catalog.index_missing("known.flac", known))
        self.assertIsNone(self.catalog.index_missing("missing.flac", self.root / "missing.flac"))
        (self.root / "dir.flac").mkdir()
        self.assertIsNone(self.catalog.index_missing("dir.flac", self.root / "dir.flac"))
        late = self.write("late.flac")
        result(self.catalog.close())
        self.assertIsNone(self.catalog.index_missing("late.flac", late))

    def test_after_a_scan_a_new_file(self) -> None:
        """A file that appeared after the last scan is read on demand too (a restart, a missed
        inotify event), and a later scan does not announce it again."""
        self.write("a.flac")
        self.scan()
        self.kinds()
        late = self.write("b.flac")
        self.assertTrue(result(self.catalog.index_missing("b.flac", late)))
        self.assertEqual(self.kinds(), [("added", "b.flac")])
        self.scan()
        self.assertEqual(self.kinds(), [])


class PendingReadTests(CatalogCase):
    """A catalog whose reads wait: coalescing, the cap, and /health/detailed during the first scan."""

    def open_catalog(self, reader: Any = None) -> Catalog:
        self.pool = ManualPool()
        catalog = Catalog(
            self.db, self.root, reactor=ImmediateReactor(), threadpool=self.pool, reader=reader or self.reader
        )
        d = catalog.open()
        self.pool.run()
        result(d)
        catalog.subscribe(self.events.append)
        return catalog

    def tearDown(self) -> None:
        if self.catalog.opened:
            d = self.catalog.close()
            self.pool.run()
            result(d)

    def test_one_read_for_every_waiter(self) -> None:
        """Requests for the same track while it is read share one read (the partial scan that
        persists it reads it once more)."""
        path = self.write("one.flac")
        first = self.catalog.index_missing("one.flac", path)
        second = self.catalog.index_missing("one.flac", path)
        assert first is not None and second is not None
        self.assertFalse(first.called)
        self.pool.run()
        self.assertEqual((result(first), result(second)), (True, True))
        self.assertEqual(self.reader.calls.count("one.flac"), 2)

    def test_reads_in_flight_are_capped(self) -> None:
        """Beyond MAX_ON_DEMAND_READS reads in flight, a track waits for the scan (None)."""
        self.patch(catalog_module, "MAX_ON_DEMAND_READS", 2)
        paths = [self.fake(f"t{n}.mp3") for n in range(3)]
        self.assertIsNotNone(self.catalog.index_missing("t0.mp3", paths[0]))
        self.assertIsNotNone(self.catalog.index_missing("t1.mp3", paths[1]))
        self.assertIsNone(self.catalog.index_missing("t2.mp3", paths[2]))
        self.pool.run()
        self.assertIsNotNone(self.catalog.index_missing("t2.mp3", paths[2]))

    def test_ready_and_progress_during_the_first_scan(self) -> None:
        """Readiness needs the catalog open, not scanned; /health/detailed shows the first scan's
        progress and the tracks indexed on demand meanwhile."""
        for n in range(3):
            self.write(f"{n}.flac")
        ready = readiness_prerequisites(
            type("Loaded", (), {"loaded": True})(),
            type("Analytics", (), {"check": lambda self: type("R", (), {"status": OK})()})(),
            self.catalog,
        )
        self.assertTrue(all(check() for check in ready.values()))
        seen: list[dict[str, object]] = []
        spy = self.reader

        def reader(*args: Any, **kwargs: Any) -> Any:
            seen.append(dict(self.catalog.check().detail))
            return spy(*args, **kwargs)

        self.catalog._reader = reader  # the on-demand reads
        self.catalog._scanner._reader = reader  # the scan's reads
        scanned: Deferred[Any] = self.catalog.scan()
        self.assertEqual(self.catalog.check().status, DEGRADED)
        self.assertIn("first scan not finished", str(self.catalog.check().detail["reason"]))
        self.pool.run()
        result(scanned)
        self.assertEqual(seen[-1]["scan_progress"], {"files_total": 3, "files_done": 2, "reads": 2})
        self.assertEqual(self.catalog.check().status, OK)
        self.assertNotIn("scan_progress", self.catalog.check().detail)

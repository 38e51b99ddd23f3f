"""Tests for :mod:`streamsrv.audio.watcher`: start-up scan, periodic rescan, inotify and debounce."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial import unittest

from streamsrv.audio.catalog import CATALOG_FILENAME, Catalog, CatalogEvent
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.audio.watcher import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_ISDIR,
    IN_Q_OVERFLOW,
    CatalogService,
)
from tests import audiogen
from tests.test_catalog import SpyReader

INTERVAL = 600.0
DEBOUNCE = 1.0


class FakeNotifier:
    """Records watches; the test fires events through ``fire``."""

    def __init__(self) -> None:
        self.watched: list[str] = []
        self.callbacks: list[Any] = []
        self.closed = False

    def watch(self, path: FilePath[Any], mask: int, autoAdd: bool, callbacks: list[Any]) -> int:  # noqa: N803
        self.watched.append(path.path)
        self.callbacks = callbacks
        return len(self.watched)

    def loseConnection(self) -> None:
        self.closed = True

    def fire(self, path: Path, mask: int) -> None:
        for callback in self.callbacks:
            callback(None, FilePath(str(path)), mask)


class FdReactorClock(Clock):
    """A Clock that claims to read file descriptors, so inotify is attempted."""


class ServiceTests(unittest.SynchronousTestCase):
    """CatalogService with a Clock and a fake (or missing) inotify."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        self.root = base / "media"
        (self.root / "album").mkdir(parents=True)
        (self.root / "album" / "a.mp3").write_bytes(b"a" * 100)
        self.reader = SpyReader(fake=True)
        self.catalog = Catalog(
            base / "data" / CATALOG_FILENAME,
            self.root,
            reactor=ImmediateReactor(),
            threadpool=SynchronousThreadPool(),
            reader=self.reader,
        )
        self.events: list[tuple[str, str]] = []
        self.clock = Clock()
        self.notifiers: list[FakeNotifier] = []

    def service(self, use_inotify: bool = True, factory: Any = None) -> CatalogService:
        def make(reactor: Any) -> FakeNotifier:
            notifier = FakeNotifier()
            self.notifiers.append(notifier)
            return notifier

        from twisted.internet.interfaces import IReactorFDSet
        from zope.interface import alsoProvides

        alsoProvides(self.clock, IReactorFDSet)
        service = CatalogService(
            self.catalog,
            clock=self.clock,
            rescan_interval_s=INTERVAL,
            use_inotify=use_inotify,
            debounce_s=DEBOUNCE,
            inotify_factory=factory or make,
        )
        service.startService()
        self.catalog.subscribe(lambda e: self.events.append((e.kind, e.path)))
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def test_start_scans_and_loops(self) -> None:
        """Starting opens the catalog and scans at once; the loop rescans every interval."""
        self.service(use_inotify=False)
        self.assertTrue(self.catalog.is_audio("album/a.mp3"))
        self.assertEqual(self.catalog.stats().scans, 1)
        (self.root / "b.mp3").write_bytes(b"b" * 10)
        self.clock.advance(INTERVAL - 1)
        self.assertEqual(self.catalog.stats().scans, 1)
        self.clock.advance(1)
        self.assertEqual(self.catalog.stats().scans, 2)
        self.assertEqual(self.events, [("added", "b.mp3")])

    def test_failed_scan_keeps_looping(self) -> None:
        """A scan that fails (media root gone) is logged; the next one still runs."""
        self.service(use_inotify=False)
        moved = self.root.parent / "moved"
        self.root.rename(moved)
        self.clock.advance(INTERVAL)
        self.assertIsNotNone(self.catalog.stats().last_error)
        self.assertTrue(self.catalog.is_audio("album/a.mp3"))
        moved.rename(self.root)
        self.clock.advance(INTERVAL)
        self.assertIsNone(self.catalog.stats().last_error)
        self.assertEqual(self.catalog.stats().scans, 2)

    def test_inotify_unavailable(self) -> None:
        """Without inotify the service relies on the periodic rescan."""

        def unavailable(reactor: Any) -> Any:
            raise ImportError("inotify is Linux-only")

        service = self.service(factory=unavailable)
        self.assertFalse(service.watching)
        self.assertEqual(self.catalog.stats().scans, 1)

    def test_watches_tree(self) -> None:
        """Every directory below the root is watched; dot-directories are not."""
        (self.root / ".git" / "objects").mkdir(parents=True)
        (self.root / "album" / "cd2").mkdir()
        service = self.service()
        self.assertTrue(service.watching)
        [notifier] = self.notifiers
        self.assertEqual(
            sorted(notifier.watched),
            sorted(str(p) for p in (self.root, self.root / "album", self.root / "album" / "cd2")),
        )

    def test_debounce(self) -> None:
        """A burst of events becomes one rescan_paths call after a quiet period."""
        service = self.service()
        [notifier] = self.notifiers
        self.reader.calls.clear()
        for name in ("b.mp3", "c.mp3"):
            (self.root / "album" / name).write_bytes(b"x" * 10)
            notifier.fire(self.root / "album" / name, IN_CREATE)
            self.clock.advance(DEBOUNCE / 2)
            notifier.fire(self.root / "album" / name, IN_CLOSE_WRITE)
        notifier.fire(self.root / ".hidden.mp3", IN_CLOSE_WRITE)
        self.assertEqual(service.rescans, 0)
        self.clock.advance(DEBOUNCE)
        self.assertEqual(service.rescans, 1)
        self.assertEqual(sorted(self.reader.calls), ["album/b.mp3", "album/c.mp3"])
        self.assertEqual(self.events, [("added", "album/b.mp3"), ("added", "album/c.mp3")])

    def test_debounce_bounded(self) -> None:
        """Events that never stop still flush after ten debounce periods."""
        service = self.service()
        [notifier] = self.notifiers
        for _ in range(25):
            notifier.fire(self.root / "album" / "a.mp3", IN_CLOSE_WRITE)
            self.clock.advance(DEBOUNCE / 2)
        self.assertEqual(service.rescans, 1)

    def test_deleted_directory(self) -> None:
        """Deleting a watched directory removes its tracks and restarts inotify
        (Twisted's INotify closes itself then)."""
        service = self.service()
        [notifier] = self.notifiers
        (self.root / "album" / "a.mp3").unlink()
        (self.root / "album").rmdir()
        notifier.fire(self.root / "album" / "a.mp3", IN_DELETE)
        notifier.fire(self.root / "album", IN_DELETE_SELF)
        self.clock.advance(DEBOUNCE)
        self.assertEqual(self.events, [("removed", "album/a.mp3")])
        self.assertTrue(notifier.closed)
        self.assertEqual(len(self.notifiers), 2)
        self.assertTrue(service.watching)

    def test_new_directory_and_overflow(self) -> None:
        """A new directory gets a watch and is scanned; a queue overflow rescans everything."""
        self.service()
        [notifier] = self.notifiers
        (self.root / "new").mkdir()
        (self.root / "new" / "x.flac").write_bytes(b"x" * 10)
        notifier.fire(self.root / "new", IN_CREATE | IN_ISDIR)
        self.assertIn(str(self.root / "new"), notifier.watched)
        self.clock.advance(DEBOUNCE)
        self.assertEqual(self.events, [("added", "new/x.flac")])
        scans = self.catalog.stats().scans
        notifier.fire(self.root, IN_Q_OVERFLOW)
        self.clock.advance(DEBOUNCE)
        self.assertEqual(self.catalog.stats().scans, scans)  # rescan_paths([""]), not a counted scan
        self.assertEqual(self.reader.calls.count("new/x.flac"), 1)

    def test_stop(self) -> None:
        """Stopping stops the loop, inotify and pending work, and closes the catalog."""
        service = self.service()
        [notifier] = self.notifiers
        notifier.fire(self.root / "album" / "z.mp3", IN_CLOSE_WRITE)
        d = service.stopService()
        fired: list[object] = []
        d.addBoth(fired.append)
        self.assertEqual(fired, [None])
        self.assertTrue(notifier.closed)
        self.assertFalse(self.catalog.opened)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RealINotifyTests(unittest.TestCase):
    """One end-to-end test with Linux's inotify and the real reactor."""

    timeout = 20

    def test_new_file_added(self) -> Deferred[None]:
        """Writing a file into a watched directory produces an 'added' event."""
        base = Path(self.mktemp()).resolve()
        root = base / "media"
        (root / "album").mkdir(parents=True)
        catalog = Catalog(
            base / "data" / CATALOG_FILENAME,
            root,
            reactor=ImmediateReactor(),
            threadpool=SynchronousThreadPool(),
        )
        try:
            from twisted.internet import inotify  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("inotify not available") from None
        service = CatalogService(catalog, clock=global_reactor, rescan_interval_s=3600, debounce_s=0.05)
        service.startService()
        self.addCleanup(service.stopService)
        if not service.watching:
            raise unittest.SkipTest("inotify could not be started")
        added: Deferred[CatalogEvent] = Deferred()

        def on_event(event: CatalogEvent) -> None:
            if event.kind == "added" and not added.called:
                added.callback(event)

        catalog.subscribe(on_event)
        audiogen.write_tone(root / "album" / "new.flac", "flac", 0.2)

        def check(event: CatalogEvent) -> None:
            self.assertEqual(event.path, "album/new.flac")
            assert event.record is not None
            self.assertEqual(event.record.metadata.codec, "flac")
            self.assertTrue(catalog.is_audio("album/new.flac"))
            self.assertGreaterEqual(service.rescans, 1)
            self.assertTrue(os.path.exists(root / "album" / "new.flac"))

        return added.addCallback(check)

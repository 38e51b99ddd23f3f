# -*- test-case-name: tests.test_catalog -*-
"""The library catalog: every audio file below the media root, its metadata, in SQLite.

:class:`Catalog` is the one object the rest of streamsrv holds: it opens the
:class:`~streamsrv.audio.catalog_store.CatalogStore` (``<data_dir>/catalog.sqlite3``,
so a restart starts from what the last run knew), runs the
:class:`~streamsrv.audio.scanner.Scanner` for full and partial scans (which
read each file with :func:`streamsrv.audio.metadata.read_metadata`,
incrementally), answers lookups, searches and health checks, and announces
:class:`CatalogEvent` s.  A file that cannot be read keeps a row with the
reason (``"empty file"``...) and is left out of :meth:`Catalog.search`,
:meth:`Catalog.get` and :meth:`Catalog.is_audio`.  The value objects live in
:mod:`streamsrv.audio.catalog_values`; this module re-exports them.

Threads: the walk, mutagen and SQLite all block, so they run in thread pools
(one writer thread, a couple of reader threads, or an injected pool), never on
the reactor thread.  The reactor thread owns the in-memory index behind
:meth:`Catalog.is_audio`, updated after each batch of writes is committed,
and delivers :class:`CatalogEvent` s to subscribers at the same moment.

Cold start: a route asking for a track the index does not know yet (the
first scan of a large library has not reached it, or it appeared since the
last scan) calls :meth:`Catalog.index_missing`, which reads that one file on
a reader thread and puts it in the index at once (or records why it is
unreadable, so it is refused as the scan would refuse it); a partial scan of
it is queued to persist it.  So readiness need not wait for the first scan,
and a track that exists is never answered 404 for being not yet catalogued.

This module must never serve or log a path to a client (records carry
relative paths only; errors carry fixed reasons), never delete rows because
the media root or a directory could not be listed (an unmounted disk is not an
empty library), and never block the reactor thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from streamsrv.audio.artwork import is_folder_image_name
from streamsrv.audio.catalog_store import CatalogStore, decode_cursor, encode_cursor
from streamsrv.audio.catalog_values import (
    CatalogError,
    CatalogEvent,
    CatalogStats,
    EventKind,
    IndexChange,
    IndexEntry,
    InvalidCursor,
    Page,
    Reader,
    ScanCancelled,
    ScanProgress,
    ScanSummary,
    TrackRecord,
    fold,
    nfc,
    under,
)
from streamsrv.audio.metadata import MetadataError, read_metadata
from streamsrv.audio.scanner import UNEXPECTED_READ_ERROR, Scanner
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.cache.lru import CacheStats, LruCache
from streamsrv.health.checks import DEGRADED, FAILING, OK, CheckResult

__all__ = [
    "CATALOG_FILENAME",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Catalog",
    "CatalogError",
    "CatalogEvent",
    "CatalogStats",
    "ImmediateReactor",
    "IndexEntry",
    "InvalidCursor",
    "Page",
    "Reader",
    "ScanCancelled",
    "ScanProgress",
    "ScanSummary",
    "SynchronousThreadPool",
    "TrackRecord",
    "decode_cursor",
    "encode_cursor",
]

log = Logger()

#: The catalog's file name in the data dir.
CATALOG_FILENAME: Final[str] = "catalog.sqlite3"

#: Page size when none is asked for, and the largest one served.
DEFAULT_LIMIT: Final[int] = 50
MAX_LIMIT: Final[int] = 200

#: Files read between two commits (and two rounds of events).
BATCH_SIZE: Final[int] = 200

#: Reader threads of a catalog that owns its pools.
READER_THREADS: Final[int] = 2

#: Files read on demand at once at most (:meth:`Catalog.index_missing`); more wait for the scan.
MAX_ON_DEMAND_READS: Final[int] = 32

#: Records kept in memory for :meth:`Catalog.get`, and their total size.
RECORD_CACHE_ENTRIES: Final[int] = 4096
RECORD_CACHE_BYTES: Final[int] = 8 * 1024 * 1024

T = TypeVar("T")


class Catalog:
    """The media library's tracks, persisted in SQLite, scanned incrementally.

    Every method is called on the reactor thread; those that touch the disk
    return Deferreds and do their work in the pools.

    :param db_path: the SQLite file (:data:`CATALOG_FILENAME` in the data dir).
    :param media_root: the media root (resolved with ``realpath`` at each scan).
    :param reactor: provides ``callFromThread`` (the reactor, or
        :class:`ImmediateReactor`).
    :param threadpool: runs the blocking work; ``None`` makes the catalog
        start its own (one writer thread and :data:`READER_THREADS` readers)
        in :meth:`open` and stop them in :meth:`close`.  An injected pool is
        started and stopped by its owner; writes are serialised by a lock.
    :param reader: reads one file (:func:`read_metadata`; tests pass a spy).
    :param batch_size: files read between commits.
    :param now: wall clock for ``scanned_at`` and ``last_scan_at``.
    :param monotonic: clock for scan durations.
    """

    def __init__(
        self,
        db_path: Path,
        media_root: Path,
        *,
        reactor: Any,
        threadpool: Any = None,
        reader: Reader = read_metadata,
        batch_size: int = BATCH_SIZE,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._media_root = Path(media_root)
        self._reactor = reactor
        self._reader = reader
        self._now = now
        self._owns_pools = threadpool is None
        self._writer_pool: Any = threadpool
        self._reader_pool: Any = threadpool
        if threadpool is None:
            self._writer_pool = ThreadPool(minthreads=0, maxthreads=1, name="catalog-writer")
            self._reader_pool = ThreadPool(minthreads=0, maxthreads=READER_THREADS, name="catalog-reader")
        self._store = CatalogStore(Path(db_path), now=now)
        self._scanner = Scanner(
            self._store,
            self._media_root,
            reader=reader,
            batch_size=batch_size,
            now=now,
            monotonic=monotonic,
            closing=lambda: self._closing,
            deliver=lambda changes: reactor.callFromThread(self._apply, changes),
        )
        self._writes_in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        # Reactor-thread state.
        self._index: dict[str, IndexEntry] = {}
        self._failed: dict[str, str] = {}
        self._records: LruCache[tuple[str, str], TrackRecord] = LruCache(
            RECORD_CACHE_ENTRIES, RECORD_CACHE_BYTES
        )
        self._subscribers: list[Callable[[CatalogEvent], object]] = []
        self._opened = False
        self._closing = False
        self._scan_waiters: list[Deferred[ScanSummary]] | None = None
        self._scans = 0
        self._last_scan: ScanSummary | None = None
        self._last_scan_at: float | None = None
        self._last_error: str | None = None
        #: XOR of :func:`_entry_digest` over the index (``None``: not computed yet).
        self._digest: int | None = None
        self._progress: ScanProgress | None = None
        # Tracks being read on demand (their waiters), and those indexed so but not yet by a scan.
        self._on_demand: dict[str, list[Deferred[bool]]] = {}
        self._provisional: set[str] = set()

    # ------------------------------------------------------------------
    # Life cycle

    @property
    def opened(self) -> bool:
        """Whether :meth:`open` has finished and :meth:`close` not begun."""
        return self._opened and not self._closing

    @property
    def metadata_cache_stats(self) -> CacheStats:
        """Counters of the in-process metadata LRU (for ``/metrics``)."""
        return self._records.stats

    @property
    def media_root(self) -> Path:
        """The media root as given."""
        return self._media_root

    def open(self) -> Deferred[None]:
        """Open (creating or migrating) the database and load the index.

        :returns: a Deferred that fires once :meth:`is_audio` knows every
            track the database holds; it fails with :class:`CatalogError` for
            a database written by a newer schema.
        """
        if self._owns_pools:
            self._writer_pool.start()
            self._reader_pool.start()
        d = self._write(self._store.open, self._media_root)

        def loaded(state: tuple[dict[str, IndexEntry], dict[str, str], float | None]) -> None:
            self._index, self._failed, self._last_scan_at = state
            self._digest = None
            self._opened = True
            log.info(
                "catalog open: {tracks} tracks, {failed} unreadable files",
                tracks=len(self._index),
                failed=len(self._failed),
            )

        return d.addCallback(loaded)

    def close(self) -> Deferred[None]:
        """Stop any scan (keeping what it did), close the database and the pools."""
        self._closing = True
        d: Deferred[Any] = self._when_idle()
        d.addCallback(lambda _: self._write(self._store.close_writer))

        def stop_pools(_: object) -> None:
            if self._owns_pools:
                self._writer_pool.stop()
                self._reader_pool.stop()
            self._store.close_connections()
            self._opened = False

        return d.addCallback(stop_pools)

    # ------------------------------------------------------------------
    # Queries

    def is_audio(self, path: str) -> bool:
        """Whether ``path`` (NFC, as ``safe_media_path`` returns it) is a readable track.

        An in-memory lookup, safe for every ``/stream`` request.
        """
        return path in self._index

    @property
    def generation(self) -> str:
        """A short text that changes whenever the set of readable tracks or any of their files does.

        A digest of the index (every track path with its file's entity-tag,
        combined by XOR, so each change updates it in constant time), not a
        counter: every process on every host that sees the same library
        gives the same value, and it survives restarts.  The track
        listing's entity-tag is made from it.
        """
        if self._digest is None:
            digest = 0
            for path, entry in self._index.items():
                digest ^= _entry_digest(path, entry)
            self._digest = digest
        return f"{len(self._index)}-{self._digest:016x}"

    def lookup(self, path: str) -> IndexEntry | None:
        """The index entry of a readable track (size, mtime, etag, on-disk path)."""
        return self._index.get(path)

    def failures(self) -> dict[str, str]:
        """Every unreadable audio file with its reason (a copy)."""
        return dict(self._failed)

    def get(self, path: str) -> Deferred[TrackRecord | None]:
        """The record of a readable track, or ``None``.

        :param path: the track path; NFC-normalised here.
        """
        path = nfc(path)
        entry = self._index.get(path)
        if entry is None:
            return succeed(None)
        cached = self._records.get((path, entry.etag))
        if cached is not None:
            return succeed(cached)

        def remember(record: TrackRecord | None) -> TrackRecord | None:
            if record is not None:
                self._records.put((record.path, record.etag), record)
            return record

        return self._read(self._store.get, path).addCallback(remember)

    def search(
        self,
        q: str | None = None,
        artist: str | None = None,
        album: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> Deferred[Page]:
        """Readable tracks matching a query, in path order, a page at a time.

        :param q: whitespace-separated words, each of which must occur in the
            title, artist or album (case-insensitively, any Unicode form).
        :param artist: the artist or album artist, whole, case-insensitively.
        :param album: the album title, whole, case-insensitively.
        :param limit: page size, clamped to 1..:data:`MAX_LIMIT`.
        :param cursor: ``next_cursor`` of the previous page.
        :raises InvalidCursor: at once, for a cursor this catalog did not issue.
        """
        after = decode_cursor(cursor) if cursor is not None else None
        terms = tuple(dict.fromkeys(fold(q).split())) if q else ()
        limit = max(1, min(MAX_LIMIT, int(limit)))
        return self._read(
            self._store.search,
            terms,
            fold(artist) if artist is not None else None,
            fold(album) if album is not None else None,
            limit,
            after,
        )

    def stats(self) -> CatalogStats:
        """Counts, read on the reactor thread."""
        return CatalogStats(
            opened=self.opened,
            tracks=len(self._index),
            failed=len(self._failed),
            scanning=self._scan_waiters is not None,
            scans=self._scans,
            last_scan=self._last_scan,
            last_scan_at=self._last_scan_at,
            last_error=self._last_error,
        )

    def check(self) -> CheckResult:
        """The ``catalog`` check of ``/health/detailed``.

        ``failing`` when not open; ``degraded`` while no full scan has ever
        completed or when the last one failed; else ``ok``.
        """
        stats = self.stats()
        detail: dict[str, object] = {
            "tracks": stats.tracks,
            "failed": stats.failed,
            "scanning": stats.scanning,
        }
        if stats.last_scan_at is not None:
            detail["last_scan_at"] = round(stats.last_scan_at, 3)
        if stats.last_scan is not None:
            detail["last_scan_s"] = round(stats.last_scan.seconds, 3)
        progress = self._progress
        if stats.scanning and progress is not None:
            detail["scan_progress"] = {
                "files_total": progress.files_total,
                "files_done": progress.files_done,
                "reads": progress.reads,
            }
        if self._provisional:
            detail["indexed_on_demand"] = len(self._provisional)
        if not stats.opened:
            return CheckResult(FAILING, {**detail, "reason": "catalog not open"})
        if stats.last_error is not None:
            return CheckResult(DEGRADED, {**detail, "reason": stats.last_error})
        if stats.last_scan_at is None:
            reason = "first scan not finished; tracks not reached yet are indexed on demand"
            return CheckResult(DEGRADED, {**detail, "reason": reason})
        return CheckResult(OK, detail)

    def subscribe(self, callback: Callable[[CatalogEvent], object]) -> Callable[[], None]:
        """Call ``callback`` with each :class:`CatalogEvent`, on the reactor thread.

        :returns: a function that unsubscribes (idempotent).
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------
    # On demand

    def index_missing(self, track: str, path: Path) -> Deferred[bool] | None:
        """Read a track the index does not know (yet), now, instead of at the scan's turn.

        For a route that found *track* safe (:func:`~streamsrv.media.paths.safe_media_path`:
        inside the root, no dot segments, an audio extension) but not in the
        index.  The file is read on a reader thread with the scan's reader;
        a readable one enters the index (and its record the record cache)
        before the Deferred fires, an unreadable one is remembered with its
        reason, exactly as a scan would, and a partial scan of it is queued to
        persist it and announce it.

        :param track: the NFC track path.
        :param path: the file, resolved inside the media root.
        :returns: a Deferred firing with :meth:`is_audio`'s new answer, or
            ``None`` when there is nothing to wait for: known already, known
            unreadable, the catalog not open, or too many reads in flight.
        """
        if not self.opened or track in self._index or track in self._failed:
            return None
        try:  # a name that is no file costs no thread hop (a stat, as the route's own)
            if not stat_module.S_ISREG(os.stat(path).st_mode):
                return None
        except OSError:
            return None
        waiting = self._on_demand.get(track)
        if waiting is None:
            if len(self._on_demand) >= MAX_ON_DEMAND_READS:
                log.warn(
                    "catalog: too many tracks read on demand at once; {track} waits for the scan", track=track
                )
                return None
            waiter: Deferred[bool] = Deferred()
            self._on_demand[track] = [waiter]  # before the read: it may finish at once
            d = self._read(self._read_one, track, path)
            d.addCallbacks(self._indexed, self._not_indexed, callbackArgs=(track,), errbackArgs=(track,))
            return waiter
        waiter = Deferred()
        waiting.append(waiter)
        return waiter

    def _read_one(self, track: str, path: Path) -> IndexChange | None:
        """Read one file (a reader thread): its index change, or ``None`` if it is no regular file."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat_module.S_ISREG(info.st_mode):
            return None
        root = Path(os.path.realpath(self._media_root))
        fs_path = Path(path).relative_to(root).as_posix()
        try:
            metadata = self._reader(root, fs_path, info)
        except MetadataError as e:
            return IndexChange(track, None, None, e.reason)
        except Exception:
            log.failure("reading metadata on demand failed unexpectedly")
            return IndexChange(track, None, None, UNEXPECTED_READ_ERROR)
        record = TrackRecord(dataclasses.replace(metadata, path=track), info.st_mtime_ns)
        return IndexChange(
            track, IndexEntry(info.st_size, info.st_mtime_ns, record.etag, fs_path), record, None
        )

    def _indexed(self, change: IndexChange | None, track: str) -> None:
        if change is not None and track not in self._index and not self._closing:
            if change.entry is not None:
                self._index[track] = change.entry
                self._update_digest(track, None, change.entry)
                self._provisional.add(track)
                if change.record is not None:
                    self._records.put((track, change.entry.etag), change.record)
                log.info("catalog: {track} indexed on demand", track=track)
            elif change.error is not None:
                self._failed[track] = change.error
            self.rescan_paths([change.entry.fs_path if change.entry is not None else track]).addErrback(
                lambda f: log.error(
                    "catalog: persisting {track} failed: {reason}", track=track, reason=_error_reason(f)
                )
            )
        self._release(track)

    def _not_indexed(self, failure: Failure, track: str) -> None:
        log.error(
            "catalog: reading {track} on demand failed: {reason}", track=track, reason=_error_reason(failure)
        )
        self._release(track)

    def _release(self, track: str) -> None:
        for waiter in self._on_demand.pop(track, []):
            waiter.callback(track in self._index)

    # ------------------------------------------------------------------
    # Scans

    def scan(
        self, progress: Callable[[ScanProgress], object] | None = None, *, full: bool = False
    ) -> Deferred[ScanSummary]:
        """Bring the whole catalog up to date with the media root.

        A call while a scan runs joins it (its ``progress`` is ignored).

        :param progress: called on the reactor thread as the scan advances.
        :param full: re-read every file, changed or not.
        :returns: the summary; fails with :class:`CatalogError` when the
            media root is not a readable directory (nothing is removed then)
            and :class:`ScanCancelled` when :meth:`close` interrupts it.
        """
        if self._scan_waiters is not None:
            d: Deferred[ScanSummary] = Deferred()
            self._scan_waiters.append(d)
            return d
        if not self.opened:
            return _failed(CatalogError("catalog not open"))
        self._scan_waiters = []
        snapshot = dict(self._index)
        self._progress = None
        report = self._progress_reporter(progress)
        d = self._write(self._scanner.sync, ("",), full, snapshot, report)

        def done(result: ScanSummary | Failure) -> ScanSummary | Failure:
            waiters, self._scan_waiters = self._scan_waiters or [], None
            if isinstance(result, Failure):
                self._last_error = _error_reason(result)
                if not result.check(ScanCancelled):
                    log.error("catalog scan failed: {reason}", reason=self._last_error)
            else:
                self._scans += 1
                self._last_scan = result
                self._last_scan_at = self._now()
                self._last_error = None
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            return result

        return d.addBoth(done)

    def rescan_paths(self, paths: Iterable[str]) -> Deferred[ScanSummary]:
        """Bring some paths up to date: files, directories (recursively), or
        paths that no longer exist (their rows, and rows below them, go).

        A folder image path (``cover.jpg``) rescans its directory.

        :param paths: ``/``-separated paths below the media root, as spelt
            on disk (what a file-system watcher reports); unsafe ones
            (``..``, dot-segments) are ignored.
        """
        if not self.opened:
            return _failed(CatalogError("catalog not open"))
        prefixes: set[str] = set()
        for raw in paths:
            path = raw.strip("/")
            if not path:
                prefixes.add("")
                continue
            parent, _, name = path.rpartition("/")
            if is_folder_image_name(name):
                path = parent
            prefixes.add(path)
        if "" in prefixes:
            prefixes = {""}
        # A prefix below another is covered by it.
        ordered = sorted(prefixes)
        kept = [p for p in ordered if not any(q != p and under(p, q) for q in ordered)]
        if not kept:
            return succeed(ScanSummary(0, 0, 0, 0, 0, 0.0))
        return self._write(self._scanner.sync, tuple(kept), False, dict(self._index), None)

    # ------------------------------------------------------------------
    # Reactor-thread helpers

    def _write(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        self._writes_in_flight += 1
        d = deferToThreadPool(self._reactor, self._writer_pool, f, *args)
        return d.addBoth(self._write_done)

    def _write_done(self, result: T) -> T:
        self._writes_in_flight -= 1
        if self._writes_in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def _when_idle(self) -> Deferred[None]:
        """Fires once no write (scan, rescan, open) is running or queued."""
        if self._writes_in_flight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _read(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        if not self.opened:
            return _failed(CatalogError("catalog not open"))
        return deferToThreadPool(self._reactor, self._reader_pool, f, *args)

    def _progress_reporter(
        self, progress: Callable[[ScanProgress], object] | None
    ) -> Callable[[ScanProgress], None]:
        """Called from the writer thread: keeps the latest progress (``/health/detailed``) and
        passes it to *progress*, on the reactor thread."""

        def deliver(update: ScanProgress) -> None:
            self._progress = update
            if progress is None:
                return
            try:
                progress(update)
            except Exception:
                log.failure("catalog progress callback raised")

        return lambda update: self._reactor.callFromThread(deliver, update)

    def _update_digest(self, path: str, old: IndexEntry | None, new: IndexEntry | None) -> None:
        """Keep :attr:`generation`'s digest in step with one change of the index."""
        if self._digest is None:
            return
        if old is not None:
            self._digest ^= _entry_digest(path, old)
        if new is not None:
            self._digest ^= _entry_digest(path, new)

    def _apply(self, changes: Sequence[IndexChange]) -> None:
        """Update the index and announce the changes (reactor thread)."""
        events: list[CatalogEvent] = []
        for change in changes:
            old = self._index.get(change.path)
            if change.error is not None:
                self._failed[change.path] = change.error
            else:
                self._failed.pop(change.path, None)
            if change.entry is not None:
                if change.reconcile and old == change.entry:
                    continue
                self._index[change.path] = change.entry
                self._update_digest(change.path, old, change.entry)
                if change.record is not None:
                    self._records.put((change.path, change.entry.etag), change.record)
                first = old is None or change.path in self._provisional
                self._provisional.discard(change.path)
                kind: EventKind = "added" if first else "changed"
                events.append(CatalogEvent(kind, change.path, change.record))
            elif old is not None:
                del self._index[change.path]
                self._update_digest(change.path, old, None)
                if change.path not in self._provisional:
                    events.append(CatalogEvent("removed", change.path, None))
                self._provisional.discard(change.path)
        for event in events:
            for subscriber in list(self._subscribers):
                try:
                    subscriber(event)
                except Exception:
                    log.failure("catalog subscriber raised on {kind}", kind=event.kind)


def _entry_digest(path: str, entry: IndexEntry) -> int:
    """64 bits of BLAKE2b over one track path and its file's entity-tag."""
    data = f"{path}\0{entry.etag}".encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


def _error_reason(failure: Failure) -> str:
    if failure.check(CatalogError):
        return str(failure.value)
    if failure.check(sqlite3.Error):
        return "catalog database error"
    return "unexpected error"

# -*- test-case-name: tests.test_catalog -*-
"""The library catalog: every audio file below the media root, its metadata, in SQLite.

:class:`Catalog` walks the media root, reads each audio file's tags and
headers with :func:`streamsrv.audio.metadata.read_metadata` and keeps one row
per file in ``<data_dir>/catalog.sqlite3`` (WAL, schema versioned with
``PRAGMA user_version``), so a restart starts from what the last run knew.
Scans are incremental: a file whose ``(size, mtime_ns, inode)`` is what the
row says is not opened again (the inode is part of the ``/stream`` ETag, so
a file replaced by rename is re-read even if size and time were kept).  A
file that cannot be read keeps a row with the reason (``"empty file"``...),
never stops the scan, and is left out of :meth:`Catalog.search`,
:meth:`Catalog.get` and :meth:`Catalog.is_audio`.

What counts as a track: a regular file whose name :mod:`streamsrv.audio.formats`
recognises, below no dotfile or dot-directory, reached through symlinks only
while they stay inside the root (:func:`streamsrv.media.paths.resolve_inside`),
whose path :func:`~streamsrv.media.paths.normalise_relative_path` accepts
(so ``/stream`` can name it).  Tracks are named by their path below the root,
``/``-separated, Unicode NFC (the on-disk spelling is kept for reading it).

Threads: the walk, mutagen and SQLite all block, so they run in thread pools
(one writer thread, a couple of reader threads, or an injected pool), never on
the reactor thread.  The reactor thread owns the in-memory index behind
:meth:`Catalog.is_audio`, updated after each batch of writes is committed,
and delivers :class:`CatalogEvent` s to subscribers at the same moment.

This module must never serve or log a path to a client (records carry
relative paths only; errors carry fixed reasons), never delete rows because
the media root or a directory could not be listed (an unmounted disk is not an
empty library), and never block the reactor thread.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import sqlite3
import stat as stat_module
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from streamsrv.audio.artwork import folder_image, is_folder_image_name
from streamsrv.audio.formats import audio_format_for
from streamsrv.audio.metadata import MetadataError, TrackMetadata, read_metadata
from streamsrv.cache.lru import CacheStats, LruCache
from streamsrv.health.checks import DEGRADED, FAILING, OK, CheckResult
from streamsrv.media.identity import make_etag
from streamsrv.media.paths import PathRefused, normalise_relative_path, resolve_inside

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
    "ScanCancelled",
    "ScanProgress",
    "ScanSummary",
    "SynchronousThreadPool",
    "TrackRecord",
]

log = Logger()

#: The catalog's file name in the data dir.
CATALOG_FILENAME: Final[str] = "catalog.sqlite3"

#: ``PRAGMA user_version`` of the schema this module writes.
SCHEMA_VERSION: Final[int] = 1

#: Page size when none is asked for, and the largest one served.
DEFAULT_LIMIT: Final[int] = 50
MAX_LIMIT: Final[int] = 200

#: Files read between two commits (and two rounds of events).
BATCH_SIZE: Final[int] = 200

#: How long a connection waits for another writer (e.g. ``streamsrv scan``), in ms.
BUSY_TIMEOUT_MS: Final[int] = 10_000

#: Reader threads of a catalog that owns its pools.
READER_THREADS: Final[int] = 2

#: Records kept in memory for :meth:`Catalog.get`, and their total size.
RECORD_CACHE_ENTRIES: Final[int] = 4096
RECORD_CACHE_BYTES: Final[int] = 8 * 1024 * 1024

#: Longest cursor accepted, in characters.
MAX_CURSOR_LENGTH: Final[int] = 8192

#: Directory levels below the root that are walked.
MAX_DEPTH: Final[int] = 64

#: Progress is reported about this many times per scan.
PROGRESS_STEPS: Final[int] = 200

#: The reason recorded when the reader fails in an unexpected way (a bug).
UNEXPECTED_READ_ERROR: Final[str] = "could not read metadata"

_CURSOR_PREFIX: Final[bytes] = b"p1:"

EventKind = Literal["added", "changed", "removed"]
T = TypeVar("T")


class CatalogError(Exception):
    """The catalog cannot do what was asked: closed, media root unavailable,
    or a database written by a newer streamsrv.  The message never names a path."""


class ScanCancelled(CatalogError):
    """A scan stopped because the catalog is closing (what it did is kept)."""


class InvalidCursor(ValueError):
    """A ``cursor`` that :meth:`Catalog.search` did not issue: answer 400 ``BAD_REQUEST``."""


class Reader(Protocol):
    """What reads one file's metadata (:func:`read_metadata`, or a test's spy)."""

    def __call__(
        self, root: Path, track: str, stat: os.stat_result, *, folder_artwork: bool | None = None
    ) -> TrackMetadata: ...


@dataclass(frozen=True)
class TrackRecord:
    """One track as the catalog knows it.

    :param metadata: the contract's metadata fields (``path`` is the NFC
        track path; ``has_artwork`` counts a folder image too).
    :param mtime_ns: the file's modification time when it was read, for
        ``Last-Modified``.
    """

    metadata: TrackMetadata
    mtime_ns: int

    @property
    def path(self) -> str:
        """The track's ``/``-separated NFC path below the media root."""
        return self.metadata.path

    @property
    def etag(self) -> str:
        """The strong entity-tag ``/stream`` sends for the file."""
        return self.metadata.etag

    @property
    def size(self) -> int:
        """The file size in bytes."""
        return self.metadata.size

    def to_json(self) -> dict[str, object]:
        """The contract's metadata JSON object (no file-system path in it)."""
        return self.metadata.to_json()


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the in-memory index holds per readable track.

    :param size: file size in bytes.
    :param mtime_ns: modification time in nanoseconds.
    :param etag: the ``/stream`` entity-tag.
    :param fs_path: the ``/``-separated path as spelt on disk (differs from
        the track path only when the disk's names are not NFC).
    """

    size: int
    mtime_ns: int
    etag: str
    fs_path: str


@dataclass(frozen=True)
class CatalogEvent:
    """A change to the catalog, published once it is persisted.

    :param kind: ``"added"`` (a new readable track, or one that became
        readable), ``"changed"`` (its file or artwork changed), ``"removed"``
        (gone, moved, or no longer readable).
    :param path: the track path.
    :param record: the new record; ``None`` for ``"removed"``.
    """

    kind: EventKind
    path: str
    record: TrackRecord | None


@dataclass(frozen=True)
class ScanProgress:
    """How far a scan is, reported to its ``progress`` callback.

    :param files_total: audio files the walk found (0 while walking).
    :param files_done: of them, checked so far (read, or found unchanged).
    :param reads: files opened and read so far.
    :param failed: files found unreadable so far (read now or before).
    """

    files_total: int
    files_done: int
    reads: int
    failed: int


@dataclass(frozen=True)
class ScanSummary:
    """The outcome of a scan (or of :meth:`Catalog.rescan_paths`).

    Every audio file seen is counted once: ``added``, ``changed`` or
    ``unchanged`` if readable, else ``failed``.  ``removed`` counts readable
    tracks that are gone (a track that became unreadable counts as failed
    and is announced as removed).

    :param reads: files opened and read (``added + changed`` plus the
        failures read this time).
    :param failures: ``(path, reason)`` of every unreadable file seen, sorted.
    """

    added: int
    changed: int
    removed: int
    unchanged: int
    failed: int
    seconds: float
    reads: int = 0
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def files(self) -> int:
        """Audio files seen by the scan."""
        return self.added + self.changed + self.unchanged + self.failed

    def to_json(self) -> dict[str, object]:
        """Counts and failures as JSON (for ``streamsrv scan --json``)."""
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "files": self.files,
            "reads": self.reads,
            "seconds": round(self.seconds, 3),
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
        }


@dataclass(frozen=True)
class Page:
    """One page of :meth:`Catalog.search`.

    :param items: the tracks, in path order.
    :param next_cursor: pass it back for the next page; ``None`` on the last.
    """

    items: tuple[TrackRecord, ...]
    next_cursor: str | None

    def to_json(self) -> dict[str, object]:
        """The contract's list shape: ``{"items": [...], "next_cursor": ...}``."""
        return {"items": [r.to_json() for r in self.items], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class CatalogStats:
    """Counts for metrics and ``/health/detailed``.

    :param opened: whether :meth:`Catalog.open` has finished.
    :param tracks: readable tracks.
    :param failed: unreadable audio files.
    :param scanning: whether a full scan is running.
    :param scans: full scans completed by this process.
    :param last_scan: the last full scan's summary (this process), if any.
    :param last_scan_at: Unix time the last full scan finished (any process).
    :param last_error: why the last scan failed, if it did.
    """

    opened: bool
    tracks: int
    failed: int
    scanning: bool
    scans: int
    last_scan: ScanSummary | None
    last_scan_at: float | None
    last_error: str | None


class SynchronousThreadPool:
    """A stand-in thread pool that runs each call at once, in the caller's thread.

    For tests and for ``streamsrv scan``, which must not run a reactor.
    """

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], None],  # noqa: N803 - ThreadPool's name
        func: Callable[..., object],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run ``func`` now and report like :class:`~twisted.python.threadpool.ThreadPool`."""
        try:
            result: object = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class ImmediateReactor:
    """A stand-in for the reactor's ``callFromThread`` that calls at once.

    With :class:`SynchronousThreadPool` every Deferred of the catalog has
    fired when the method returns.
    """

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        """Call ``f`` now."""
        f(*args, **kw)


@dataclass(frozen=True)
class _Found:
    """An audio file found by the walk."""

    fs_path: str
    stat: os.stat_result
    folder_artwork: bool


@dataclass(frozen=True)
class _Row:
    """What the diff needs of a stored row."""

    size: int
    mtime_ns: int
    inode: int
    error: str | None
    folder_artwork: bool


@dataclass(frozen=True)
class _Change:
    """A row written by a worker, for the reactor thread to apply."""

    path: str
    entry: IndexEntry | None
    record: TrackRecord | None
    error: str | None
    #: Only announce if the index disagrees (reconciling another writer's work).
    reconcile: bool = False


_COLUMNS: Final[tuple[str, ...]] = (
    "path",
    "fs_path",
    "size",
    "mtime_ns",
    "inode",
    "etag",
    "error",
    "title",
    "artist",
    "album",
    "album_artist",
    "track_number",
    "disc_number",
    "genre",
    "year",
    "duration_s",
    "codec",
    "bitrate",
    "sample_rate",
    "channels",
    "embedded_artwork",
    "folder_artwork",
    "replaygain",
    "search_text",
    "artist_key",
    "album_artist_key",
    "album_key",
    "scanned_at",
)

_SCHEMA: Final[str] = """
CREATE TABLE IF NOT EXISTS catalog_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tracks (
    path TEXT PRIMARY KEY,
    fs_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    etag TEXT NOT NULL,
    error TEXT,
    title TEXT,
    artist TEXT,
    album TEXT,
    album_artist TEXT,
    track_number INTEGER,
    disc_number INTEGER,
    genre TEXT,
    year INTEGER,
    duration_s REAL,
    codec TEXT,
    bitrate INTEGER,
    sample_rate INTEGER,
    channels INTEGER,
    embedded_artwork INTEGER NOT NULL DEFAULT 0,
    folder_artwork INTEGER NOT NULL DEFAULT 0,
    replaygain TEXT,
    search_text TEXT NOT NULL DEFAULT '',
    artist_key TEXT,
    album_artist_key TEXT,
    album_key TEXT,
    scanned_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tracks_artist ON tracks (artist_key, path) WHERE error IS NULL;
CREATE INDEX IF NOT EXISTS tracks_album_artist ON tracks (album_artist_key, path) WHERE error IS NULL;
CREATE INDEX IF NOT EXISTS tracks_album ON tracks (album_key, path) WHERE error IS NULL;
"""


_UPSERT: Final[str] = (
    f"INSERT OR REPLACE INTO tracks ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)


_SELECT: Final[str] = f"SELECT {', '.join(_COLUMNS)} FROM tracks"  # noqa: S608 - fixed column names


def nfc(text: str) -> str:
    """``text`` in Unicode NFC, the form track paths are stored and matched in."""
    return unicodedata.normalize("NFC", text)


def fold(text: str | None) -> str:
    """Case- and form-insensitive key of a text: NFC, casefolded, stripped."""
    return nfc(text or "").casefold().strip()


def encode_cursor(path: str) -> str:
    """The opaque cursor that continues a listing after ``path``."""
    raw = _CURSOR_PREFIX + path.encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The path a cursor continues after.

    :raises InvalidCursor: for anything :func:`encode_cursor` did not make.
    """
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("malformed cursor")
    try:
        padded = cursor.encode("ascii") + b"=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        if not raw.startswith(_CURSOR_PREFIX):
            raise InvalidCursor("malformed cursor")
        path = raw[len(_CURSOR_PREFIX) :].decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        raise InvalidCursor("malformed cursor") from None
    if not path:
        raise InvalidCursor("malformed cursor")
    return path


def _signed64(value: int) -> int:
    """An unsigned 64-bit inode as SQLite's signed INTEGER."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _under(path: str, prefix: str) -> bool:
    """Whether a track path is ``prefix`` or below it (``""`` is the root)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


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
        self._db_path = Path(db_path)
        self._media_root = Path(media_root)
        self._reactor = reactor
        self._reader = reader
        self._batch_size = batch_size
        self._now = now
        self._monotonic = monotonic
        self._owns_pools = threadpool is None
        self._writer_pool: Any = threadpool
        self._reader_pool: Any = threadpool
        if threadpool is None:
            self._writer_pool = ThreadPool(minthreads=0, maxthreads=1, name="catalog-writer")
            self._reader_pool = ThreadPool(minthreads=0, maxthreads=READER_THREADS, name="catalog-reader")
        # Re-entrant: with a synchronous pool a subscriber may call back in.
        self._write_lock = threading.RLock()
        self._writes_in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
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
        d = self._write(self._open_db)

        def loaded(state: tuple[dict[str, IndexEntry], dict[str, str], float | None]) -> None:
            self._index, self._failed, self._last_scan_at = state
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
        d.addCallback(lambda _: self._write(self._close_writer))

        def stop_pools(_: object) -> None:
            if self._owns_pools:
                self._writer_pool.stop()
                self._reader_pool.stop()
            with self._connections_lock:
                connections, self._connections = self._connections, []
            for connection in connections:
                connection.close()
            self._local = threading.local()
            self._opened = False

        return d.addCallback(stop_pools)

    # ------------------------------------------------------------------
    # Queries

    def is_audio(self, path: str) -> bool:
        """Whether ``path`` (NFC, as ``safe_media_path`` returns it) is a readable track.

        An in-memory lookup, safe for every ``/stream`` request.
        """
        return path in self._index

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

        return self._read(self._get_row, path).addCallback(remember)

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
            self._search_rows,
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
        if not stats.opened:
            return CheckResult(FAILING, {**detail, "reason": "catalog not open"})
        if stats.last_error is not None:
            return CheckResult(DEGRADED, {**detail, "reason": stats.last_error})
        if stats.last_scan_at is None:
            return CheckResult(DEGRADED, {**detail, "reason": "first scan not finished"})
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
        report = self._progress_reporter(progress)
        d = self._write(self._sync, ("",), full, snapshot, report)

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
        kept = [p for p in ordered if not any(q != p and _under(p, q) for q in ordered)]
        if not kept:
            return succeed(ScanSummary(0, 0, 0, 0, 0, 0.0))
        return self._write(self._sync, tuple(kept), False, dict(self._index), None)

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
    ) -> Callable[[ScanProgress], None] | None:
        if progress is None:
            return None

        def deliver(update: ScanProgress) -> None:
            try:
                progress(update)
            except Exception:
                log.failure("catalog progress callback raised")

        return lambda update: self._reactor.callFromThread(deliver, update)

    def _apply(self, changes: Sequence[_Change]) -> None:
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
                if change.record is not None:
                    self._records.put((change.path, change.entry.etag), change.record)
                kind: EventKind = "added" if old is None else "changed"
                events.append(CatalogEvent(kind, change.path, change.record))
            elif old is not None:
                del self._index[change.path]
                events.append(CatalogEvent("removed", change.path, None))
        for event in events:
            for subscriber in list(self._subscribers):
                try:
                    subscriber(event)
                except Exception:
                    log.failure("catalog subscriber raised on {kind}", kind=event.kind)

    # ------------------------------------------------------------------
    # Database (pool threads)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _reader_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = ON")
            self._local.connection = connection
        return connection

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            raise CatalogError("catalog not open")
        return self._writer

    def _open_db(self) -> tuple[dict[str, IndexEntry], dict[str, str], float | None]:
        with self._write_lock:
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = self._prepare(self._connect())
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                    raise CatalogError("catalog database is locked") from None
                connection = self._recreate()
            self._writer = connection
            root = os.path.realpath(self._media_root)
            stored = self._meta(connection, "media_root")
            if stored is not None and stored != root:
                log.warn("media root changed since the last run; the catalog starts afresh")
                connection.execute("DELETE FROM tracks")
                connection.execute("DELETE FROM catalog_meta WHERE key = 'last_scan_at'")
            if stored != root:
                self._set_meta(connection, "media_root", root)
            index: dict[str, IndexEntry] = {}
            failed: dict[str, str] = {}
            for row in connection.execute("SELECT path, fs_path, size, mtime_ns, etag, error FROM tracks"):
                if row["error"] is None:
                    index[row["path"]] = IndexEntry(row["size"], row["mtime_ns"], row["etag"], row["fs_path"])
                else:
                    failed[row["path"]] = row["error"]
            last = self._meta(connection, "last_scan_at")
            return index, failed, float(last) if last is not None else None

    def _prepare(self, connection: sqlite3.Connection) -> sqlite3.Connection:
        """Set WAL and create or check the schema."""
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            connection.close()
            raise CatalogError(f"catalog database has schema {version}, newer than this streamsrv's")
        if version != SCHEMA_VERSION:
            # An older (or unversioned) catalog is only a cache of the disk: rebuild it.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DROP TABLE IF EXISTS tracks")
            connection.execute("DROP TABLE IF EXISTS catalog_meta")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        return connection

    def _recreate(self) -> sqlite3.Connection:
        """Move a corrupt database aside and start a new one."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        aside = self._db_path.with_name(f"{self._db_path.name}.corrupt-{int(self._now())}")
        log.warn("catalog database unreadable; moved aside, rebuilding from the media root")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self._db_path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{aside}{suffix}"))
        return self._prepare(self._connect())

    @staticmethod
    def _meta(connection: sqlite3.Connection, key: str) -> str | None:
        row = connection.execute("SELECT value FROM catalog_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(connection: sqlite3.Connection, key: str, value: str) -> None:
        connection.execute("INSERT OR REPLACE INTO catalog_meta (key, value) VALUES (?, ?)", (key, value))

    def _close_writer(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                try:
                    self._writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                self._writer = None

    def _get_row(self, path: str) -> TrackRecord | None:
        row = (
            self._reader_connection()
            .execute(_SELECT + " WHERE path = ? AND error IS NULL", (path,))
            .fetchone()
        )
        return None if row is None else _record_from_row(row)

    def _search_rows(
        self,
        terms: tuple[str, ...],
        artist: str | None,
        album: str | None,
        limit: int,
        after: str | None,
    ) -> Page:
        where = ["error IS NULL"]
        params: list[object] = []
        if after is not None:
            where.append("path > ?")
            params.append(after)
        if artist is not None:
            where.append("(artist_key = ? OR album_artist_key = ?)")
            params += [artist, artist]
        if album is not None:
            where.append("album_key = ?")
            params.append(album)
        for term in terms:
            where.append("instr(search_text, ?) > 0")
            params.append(term)
        params.append(limit + 1)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY path LIMIT ?"
        rows = self._reader_connection().execute(sql, params).fetchall()
        records = tuple(_record_from_row(row) for row in rows[:limit])
        next_cursor = encode_cursor(records[-1].path) if len(rows) > limit else None
        return Page(records, next_cursor)

    # ------------------------------------------------------------------
    # The scan itself (writer thread)

    def _sync(
        self,
        prefixes: tuple[str, ...],
        full: bool,
        snapshot: Mapping[str, IndexEntry],
        progress: Callable[[ScanProgress], None] | None,
    ) -> ScanSummary:
        """Walk ``prefixes`` (on-disk paths; ``""`` is everything), diff, read, write."""
        with self._write_lock:
            started = self._monotonic()
            connection = self._writer_connection()
            real_root = os.path.realpath(self._media_root)
            if not os.path.isdir(real_root) or not os.access(real_root, os.R_OK | os.X_OK):
                raise CatalogError("media root is not a readable directory")
            if progress is not None:
                progress(ScanProgress(0, 0, 0, 0))
            found: dict[str, _Found] = {}
            unlisted: list[str] = []
            scopes: list[str] = []
            for prefix in prefixes:
                scope = self._walk_prefix(Path(real_root), prefix, found, unlisted)
                if scope is not None:
                    scopes.append(scope)
            existing = self._rows_under(connection, scopes)
            return self._reconcile(
                connection,
                Path(real_root),
                found,
                existing,
                unlisted,
                scopes,
                full,
                snapshot,
                progress,
                started,
            )

    def _reconcile(
        self,
        connection: sqlite3.Connection,
        real_root: Path,
        found: dict[str, _Found],
        existing: dict[str, _Row],
        unlisted: list[str],
        scopes: list[str],
        full: bool,
        snapshot: Mapping[str, IndexEntry],
        progress: Callable[[ScanProgress], None] | None,
        started: float,
    ) -> ScanSummary:
        added = changed = unchanged = reads = removed = 0
        failures: dict[str, str] = {}
        rows: list[tuple[object, ...]] = []
        folder_updates: list[tuple[int, str]] = []
        changes: list[_Change] = []
        #: Rows to announce as stored: changed artwork (always), or another
        #: writer's work the index has not seen (only if it disagrees).
        refreshed: list[tuple[str, bool]] = []
        total = len(found)
        step = max(1, total // PROGRESS_STEPS)
        now = self._now()

        def flush(deletes: Sequence[str] = ()) -> None:
            if rows or folder_updates or deletes:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(_UPSERT, rows)
                    connection.executemany(
                        "UPDATE tracks SET folder_artwork = ? WHERE path = ?", folder_updates
                    )
                    connection.executemany("DELETE FROM tracks WHERE path = ?", [(p,) for p in deletes])
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
            changes.extend(self._reload(connection, refreshed))
            if changes:
                self._reactor.callFromThread(self._apply, list(changes))
            rows.clear()
            folder_updates.clear()
            changes.clear()
            refreshed.clear()

        for done, path in enumerate(sorted(found), start=1):
            if self._closing:
                flush()
                raise ScanCancelled("catalog closing")
            item = found[path]
            old = existing.get(path)
            st = item.stat
            same_file = old is not None and (old.size, old.mtime_ns, old.inode) == (
                st.st_size,
                st.st_mtime_ns,
                _signed64(st.st_ino),
            )
            if same_file and not full:
                assert old is not None
                if old.error is not None:
                    failures[path] = old.error
                elif old.folder_artwork != item.folder_artwork:
                    folder_updates.append((int(item.folder_artwork), path))
                    refreshed.append((path, False))
                    changed += 1
                else:
                    unchanged += 1
                    known = IndexEntry(
                        st.st_size,
                        st.st_mtime_ns,
                        make_etag(st.st_size, st.st_mtime_ns, st.st_ino),
                        item.fs_path,
                    )
                    if snapshot.get(path) != known:
                        refreshed.append((path, True))
            else:
                reads += 1
                record, embedded, error = self._read_file(real_root, path, item)
                if error is not None:
                    failures[path] = error
                    rows.append(_error_row(path, item, error, now))
                    changes.append(_Change(path, None, None, error))
                else:
                    assert record is not None
                    rows.append(_record_row(record, item, embedded, now))
                    entry = IndexEntry(st.st_size, st.st_mtime_ns, record.etag, item.fs_path)
                    changes.append(_Change(path, entry, record, None))
                    if old is None or old.error is not None:
                        added += 1
                    else:
                        changed += 1
            if len(rows) + len(refreshed) >= self._batch_size:
                flush()
            if progress is not None and (done % step == 0 or done == total):
                progress(ScanProgress(total, done, reads, len(failures)))
        deletes = [
            path
            for path in existing
            if path not in found and not any(_under(path, prefix) for prefix in unlisted)
        ]
        for path in deletes:
            if existing[path].error is None:
                removed += 1
            changes.append(_Change(path, None, None, None))
        # Tracks the index knows that the database no longer has (another writer removed them).
        for path in snapshot:
            if path not in existing and path not in found and any(_under(path, s) for s in scopes):
                changes.append(_Change(path, None, None, None))
        flush(deletes)
        if scopes == [""]:
            self._set_meta(connection, "last_scan_at", repr(self._now()))
        summary = ScanSummary(
            added=added,
            changed=changed,
            removed=removed,
            unchanged=unchanged,
            failed=len(failures),
            seconds=self._monotonic() - started,
            reads=reads,
            failures=tuple(sorted(failures.items())),
        )
        log.info(
            "catalog scan: {added} added, {changed} changed, {removed} removed, {unchanged} unchanged, "
            "{failed} unreadable in {seconds:.2f} s",
            added=added,
            changed=changed,
            removed=removed,
            unchanged=unchanged,
            failed=len(failures),
            seconds=summary.seconds,
        )
        return summary

    def _reload(self, connection: sqlite3.Connection, paths: Sequence[tuple[str, bool]]) -> Iterator[_Change]:
        """Changes that announce rows as they are stored, without re-reading the files."""
        for path, reconcile in paths:
            row = connection.execute(_SELECT + " WHERE path = ?", (path,)).fetchone()
            if row is None or row["error"] is not None:
                continue
            record = _record_from_row(row)
            entry = IndexEntry(row["size"], row["mtime_ns"], row["etag"], row["fs_path"])
            yield _Change(path, entry, record, None, reconcile=reconcile)

    def _read_file(
        self, real_root: Path, path: str, item: _Found
    ) -> tuple[TrackRecord | None, bool, str | None]:
        """Read one file: ``(record, has embedded artwork, None)`` or ``(None, False, reason)``."""
        try:
            # folder_artwork=False: has_artwork then means "embedded" (the
            # walk already knows about the directory's images).
            metadata = self._reader(real_root, item.fs_path, item.stat, folder_artwork=False)
        except MetadataError as e:
            return None, False, e.reason
        except Exception:
            log.failure("reading metadata failed unexpectedly")
            return None, False, UNEXPECTED_READ_ERROR
        embedded = metadata.has_artwork
        metadata = dataclasses.replace(metadata, path=path, has_artwork=embedded or item.folder_artwork)
        return TrackRecord(metadata, item.stat.st_mtime_ns), embedded, None

    def _rows_under(self, connection: sqlite3.Connection, scopes: Sequence[str]) -> dict[str, _Row]:
        rows: dict[str, _Row] = {}
        sql = "SELECT path, size, mtime_ns, inode, error, folder_artwork FROM tracks"
        for scope in scopes:
            if scope:
                cursor = connection.execute(
                    sql + " WHERE path = ? OR (path >= ? AND path < ?)", (scope, scope + "/", scope + "0")
                )
            else:
                cursor = connection.execute(sql)
            for row in cursor:
                rows[row["path"]] = _Row(
                    row["size"], row["mtime_ns"], row["inode"], row["error"], bool(row["folder_artwork"])
                )
        return rows

    # ------------------------------------------------------------------
    # The walk (writer thread)

    def _walk_prefix(
        self, real_root: Path, prefix: str, found: dict[str, _Found], unlisted: list[str]
    ) -> str | None:
        """Collect the audio files at or below one on-disk prefix.

        :returns: the NFC scope whose stored rows the result replaces, or
            ``None`` when the prefix is unsafe (nothing is touched then).
        """
        if not prefix:
            self._walk_tree(real_root, real_root, (), found, unlisted)
            return ""
        try:
            segments = normalise_relative_path(prefix)
        except PathRefused:
            return None
        if any(segment.startswith(".") for segment in segments):
            return None
        scope = nfc("/".join(segments))
        try:
            resolve_inside(real_root, segments)
        except PathRefused:
            log.warn("ignoring a symlink that leads outside the media root", event_kind="security")
            return scope
        logical = Path(real_root, *segments)
        try:
            info = os.stat(logical)
        except OSError:
            return scope
        if stat_module.S_ISDIR(info.st_mode):
            self._walk_tree(real_root, logical, segments, found, unlisted)
        elif stat_module.S_ISREG(info.st_mode) and audio_format_for(segments[-1]) is not None:
            folder = folder_image(logical.parent, real_root) is not None
            found[scope] = _Found("/".join(segments), info, folder)
        return scope

    def _walk_tree(
        self,
        real_root: Path,
        top: Path,
        top_segments: tuple[str, ...],
        found: dict[str, _Found],
        unlisted: list[str],
    ) -> None:
        """Depth-first walk; a symlinked directory that leads back up is skipped."""
        try:
            top_info = os.stat(top)
        except OSError:
            unlisted.append(nfc("/".join(top_segments)))
            return
        stack: list[tuple[Path, tuple[str, ...], frozenset[tuple[int, int]]]] = [
            (top, top_segments, frozenset({(top_info.st_dev, top_info.st_ino)}))
        ]
        while stack:
            directory, segments, ancestors = stack.pop()
            try:
                with os.scandir(directory) as iterator:
                    entries = sorted(iterator, key=lambda e: e.name)
            except OSError:
                unlisted.append(nfc("/".join(segments)))
                log.warn("cannot list a directory of the media root; its tracks are kept as they were")
                continue
            has_candidate = False
            audio: list[tuple[tuple[str, ...], os.DirEntry[str]]] = []
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                child = (*segments, name)
                try:
                    if entry.is_symlink():
                        resolve_inside(real_root, child)
                    is_dir = entry.is_dir()
                except PathRefused:
                    log.warn("ignoring a symlink that leads outside the media root", event_kind="security")
                    continue
                except (OSError, ValueError):
                    continue
                if is_dir:
                    if len(child) > MAX_DEPTH:
                        continue
                    try:
                        info = entry.stat()
                    except OSError:
                        continue
                    key = (info.st_dev, info.st_ino)
                    if key not in ancestors:
                        stack.append((Path(entry.path), child, ancestors | {key}))
                elif audio_format_for(name) is not None:
                    audio.append((child, entry))
                elif is_folder_image_name(name):
                    has_candidate = True
            folder = has_candidate and folder_image(directory, real_root) is not None
            for child, entry in audio:
                fs_path = "/".join(child)
                key_path = nfc(fs_path)
                try:
                    if "/".join(normalise_relative_path(key_path)) != key_path:
                        continue
                except PathRefused:
                    continue
                if key_path in found:
                    log.warn("two files have the same name after Unicode normalisation; keeping one")
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    continue
                if stat_module.S_ISREG(info.st_mode):
                    found[key_path] = _Found(fs_path, info, folder)


def _record_row(record: TrackRecord, item: _Found, embedded: bool, now: float) -> tuple[object, ...]:
    m = record.metadata
    return _row_values(
        path=m.path,
        fs_path=item.fs_path,
        size=m.size,
        mtime_ns=item.stat.st_mtime_ns,
        inode=_signed64(item.stat.st_ino),
        etag=m.etag,
        error=None,
        title=m.title,
        artist=m.artist,
        album=m.album,
        album_artist=m.album_artist,
        track_number=m.track_number,
        disc_number=m.disc_number,
        genre=m.genre,
        year=m.year,
        duration_s=m.duration_s,
        codec=m.codec,
        bitrate=m.bitrate,
        sample_rate=m.sample_rate,
        channels=m.channels,
        embedded_artwork=int(embedded),
        folder_artwork=int(item.folder_artwork),
        replaygain=json.dumps(m.replaygain, sort_keys=True) if m.replaygain is not None else None,
        search_text="\n".join(fold(v) for v in (m.title, m.artist, m.album)),
        artist_key=fold(m.artist) if m.artist is not None else None,
        album_artist_key=fold(m.album_artist) if m.album_artist is not None else None,
        album_key=fold(m.album) if m.album is not None else None,
        scanned_at=now,
    )


def _error_row(path: str, item: _Found, error: str, now: float) -> tuple[object, ...]:
    st = item.stat
    return _row_values(
        path=path,
        fs_path=item.fs_path,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=_signed64(st.st_ino),
        etag=make_etag(st.st_size, st.st_mtime_ns, st.st_ino),
        error=error,
        folder_artwork=int(item.folder_artwork),
        scanned_at=now,
    )


def _row_values(**values: object) -> tuple[object, ...]:
    defaults: dict[str, object] = {"embedded_artwork": 0, "folder_artwork": 0, "search_text": ""}
    return tuple(values.get(column, defaults.get(column)) for column in _COLUMNS)


def _record_from_row(row: sqlite3.Row) -> TrackRecord:
    replaygain = json.loads(row["replaygain"]) if row["replaygain"] else None
    metadata = TrackMetadata(
        path=row["path"],
        title=row["title"],
        artist=row["artist"],
        album=row["album"],
        album_artist=row["album_artist"],
        track_number=row["track_number"],
        disc_number=row["disc_number"],
        genre=row["genre"],
        year=row["year"],
        duration_s=row["duration_s"],
        codec=row["codec"],
        bitrate=row["bitrate"],
        sample_rate=row["sample_rate"],
        channels=row["channels"],
        size=row["size"],
        etag=row["etag"],
        has_artwork=bool(row["embedded_artwork"] or row["folder_artwork"]),
        replaygain=replaygain,
    )
    return TrackRecord(metadata, row["mtime_ns"])


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

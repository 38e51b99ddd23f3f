# -*- test-case-name: tests.test_catalog -*-
"""The catalog's value objects: records, index entries, events, scan progress and summaries, pages.

Plain frozen dataclasses and exceptions shared by the catalog's facade
(:mod:`streamsrv.audio.catalog`), its SQLite store
(:mod:`streamsrv.audio.catalog_store`) and its scanner
(:mod:`streamsrv.audio.scanner`), with the text keys tracks are matched by
(:func:`nfc`, :func:`fold`).  This module must never touch the disk, a
database or the reactor, and its values never hold a file-system path a
client could see (records carry relative track paths; errors fixed reasons).
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from streamsrv.audio.metadata import TrackMetadata

__all__ = [
    "CatalogError",
    "CatalogEvent",
    "CatalogStats",
    "EventKind",
    "IndexChange",
    "IndexEntry",
    "InvalidCursor",
    "Page",
    "Reader",
    "ScanCancelled",
    "ScanProgress",
    "ScanSummary",
    "TrackRecord",
    "fold",
    "nfc",
    "under",
]

EventKind = Literal["added", "changed", "removed"]


class CatalogError(Exception):
    """The catalog cannot do what was asked: closed, media root unavailable,
    or a database written by a newer streamsrv.  The message never names a path."""


class ScanCancelled(CatalogError):
    """A scan stopped because the catalog is closing (what it did is kept)."""


class InvalidCursor(ValueError):
    """A ``cursor`` that :meth:`~streamsrv.audio.catalog.Catalog.search` did not issue.

    Answer 400 ``BAD_REQUEST``.
    """


class Reader(Protocol):
    """What reads one file's metadata (:func:`~streamsrv.audio.metadata.read_metadata`, or a test's spy)."""

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
    """The outcome of a scan (or of :meth:`~streamsrv.audio.catalog.Catalog.rescan_paths`).

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
    """One page of :meth:`~streamsrv.audio.catalog.Catalog.search`.

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

    :param opened: whether :meth:`~streamsrv.audio.catalog.Catalog.open` has finished.
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


@dataclass(frozen=True)
class IndexChange:
    """A row written by a worker, for the reactor thread to apply."""

    path: str
    entry: IndexEntry | None
    record: TrackRecord | None
    error: str | None
    #: Only announce if the index disagrees (reconciling another writer's work).
    reconcile: bool = False


def nfc(text: str) -> str:
    """``text`` in Unicode NFC, the form track paths are stored and matched in."""
    return unicodedata.normalize("NFC", text)


def fold(text: str | None) -> str:
    """Case- and form-insensitive key of a text: NFC, casefolded, stripped."""
    return nfc(text or "").casefold().strip()


def under(path: str, prefix: str) -> bool:
    """Whether a track path is ``prefix`` or below it (``""`` is the root)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")

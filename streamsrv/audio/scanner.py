# -*- test-case-name: tests.test_catalog -*-
"""The catalog's scan: walk the media root, tell added, changed and removed files, read tags.

:class:`Scanner` walks the media root (or some paths below it), compares
each audio file's ``(size, mtime_ns, inode)`` with its stored row (the inode
is part of the ``/stream`` ETag, so a file replaced by rename is re-read even
if size and time were kept), reads new and changed files through the
catalog's :class:`~streamsrv.audio.catalog_values.Reader`, and writes the
rows in batches to the :class:`~streamsrv.audio.catalog_store.CatalogStore`,
handing each committed batch's :class:`~streamsrv.audio.catalog_values.IndexChange` s
to the catalog.  A file that cannot be read keeps a row with the reason,
never stops the scan.

What counts as a track: a regular file whose name :mod:`streamsrv.audio.formats`
recognises, below no dotfile or dot-directory, reached through symlinks only
while they stay inside the root (:func:`streamsrv.media.paths.resolve_inside`),
whose path :func:`~streamsrv.media.paths.normalise_relative_path` accepts.
Tracks are named by their path below the root, ``/``-separated, Unicode NFC
(the on-disk spelling is kept for reading it).

Everything here blocks: it runs on the catalog's writer thread, never on the
reactor thread.  It must never delete rows because the media root or a
directory could not be listed (an unmounted disk is not an empty library),
and never log a path.
"""

from __future__ import annotations

import dataclasses
import os
import stat as stat_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from twisted.logger import Logger

from streamsrv.audio.artwork import folder_image, is_folder_image_name
from streamsrv.audio.catalog_store import CatalogStore, StoredRow, error_row, record_row, signed64
from streamsrv.audio.catalog_values import (
    CatalogError,
    IndexChange,
    IndexEntry,
    Reader,
    ScanCancelled,
    ScanProgress,
    ScanSummary,
    TrackRecord,
    nfc,
    under,
)
from streamsrv.audio.formats import audio_format_for
from streamsrv.audio.metadata import MetadataError
from streamsrv.media.identity import make_etag
from streamsrv.media.paths import PathRefused, normalise_relative_path, resolve_inside

__all__ = ["MAX_DEPTH", "UNEXPECTED_READ_ERROR", "FoundFile", "Scanner", "walk_prefix", "walk_tree"]

log = Logger()

#: Directory levels below the root that are walked.
MAX_DEPTH: Final[int] = 64

#: Progress is reported about this many times per scan.
PROGRESS_STEPS: Final[int] = 200

#: The reason recorded when the reader fails in an unexpected way (a bug).
UNEXPECTED_READ_ERROR: Final[str] = "could not read metadata"


@dataclass(frozen=True)
class FoundFile:
    """An audio file found by the walk."""

    fs_path: str
    stat: os.stat_result
    folder_artwork: bool


@dataclass
class _Tally:
    """What a scan has counted so far."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    reads: int = 0
    failures: dict[str, str] = field(default_factory=dict)


class _Batch:
    """The writes of one transaction, and the index changes they make once committed.

    :param store: where the rows go.
    :param deliver: called with the changes of each committed batch.
    """

    def __init__(self, store: CatalogStore, deliver: Callable[[list[IndexChange]], None]) -> None:
        self._store = store
        self._deliver = deliver
        self.rows: list[tuple[object, ...]] = []
        self.folder_updates: list[tuple[int, str]] = []
        self.changes: list[IndexChange] = []
        #: Rows to announce as stored: changed artwork (always), or another
        #: writer's work the index has not seen (only if it disagrees).
        self.refreshed: list[tuple[str, bool]] = []

    def __len__(self) -> int:
        return len(self.rows) + len(self.refreshed)

    def flush(self, deletes: Sequence[str] = ()) -> None:
        """Commit the batch, then hand its changes over and start afresh."""
        self._store.commit(self.rows, self.folder_updates, deletes)
        self.changes.extend(self._store.reload(self.refreshed))
        if self.changes:
            self._deliver(list(self.changes))
        self.rows.clear()
        self.folder_updates.clear()
        self.changes.clear()
        self.refreshed.clear()


class Scanner:
    """Brings the store up to date with the media root; every method runs on the writer thread.

    :param store: the catalog's database.
    :param media_root: the media root (resolved with ``realpath`` at each scan).
    :param reader: reads one file.
    :param batch_size: files read between commits.
    :param now: wall clock for ``scanned_at`` and ``last_scan_at``.
    :param monotonic: clock for scan durations.
    :param closing: whether the catalog is closing (the scan then stops).
    :param deliver: called with each committed batch's changes (the catalog
        passes them to the reactor thread).
    """

    def __init__(
        self,
        store: CatalogStore,
        media_root: Path,
        *,
        reader: Reader,
        batch_size: int,
        now: Callable[[], float],
        monotonic: Callable[[], float],
        closing: Callable[[], bool],
        deliver: Callable[[list[IndexChange]], None],
    ) -> None:
        self._store = store
        self._media_root = media_root
        self._reader = reader
        self._batch_size = batch_size
        self._now = now
        self._monotonic = monotonic
        self._closing = closing
        self._deliver = deliver

    def sync(
        self,
        prefixes: tuple[str, ...],
        full: bool,
        snapshot: Mapping[str, IndexEntry],
        progress: Callable[[ScanProgress], None] | None,
    ) -> ScanSummary:
        """Walk ``prefixes`` (on-disk paths; ``""`` is everything), diff, read, write.

        :param prefixes: what to scan, none below another.
        :param full: re-read every file, changed or not.
        :param snapshot: the catalog's index when the scan was asked for.
        :param progress: called (on this thread) as the scan advances.
        :raises CatalogError: when the media root is not a readable directory.
        :raises ScanCancelled: when the catalog closes meanwhile (what was
            done is committed).
        """
        with self._store.write_lock:
            started = self._monotonic()
            real_root = os.path.realpath(self._media_root)
            if not os.path.isdir(real_root) or not os.access(real_root, os.R_OK | os.X_OK):
                raise CatalogError("media root is not a readable directory")
            if progress is not None:
                progress(ScanProgress(0, 0, 0, 0))
            found: dict[str, FoundFile] = {}
            unlisted: list[str] = []
            scopes: list[str] = []
            for prefix in prefixes:
                scope = walk_prefix(Path(real_root), prefix, found, unlisted)
                if scope is not None:
                    scopes.append(scope)
            existing = self._store.rows_under(scopes)
            tally = _Tally()
            batch = _Batch(self._store, self._deliver)
            self._check_found(Path(real_root), found, existing, full, snapshot, progress, tally, batch)
            deletes = [
                path
                for path in existing
                if path not in found and not any(under(path, prefix) for prefix in unlisted)
            ]
            for path in deletes:
                if existing[path].error is None:
                    tally.removed += 1
                batch.changes.append(IndexChange(path, None, None, None))
            # Tracks the index knows that the database no longer has (another writer removed them).
            for path in snapshot:
                if path not in existing and path not in found and any(under(path, s) for s in scopes):
                    batch.changes.append(IndexChange(path, None, None, None))
            batch.flush(deletes)
            if scopes == [""]:
                self._store.set_last_scan_at(self._now())
            return self._summary(tally, started)

    def _check_found(
        self,
        real_root: Path,
        found: dict[str, FoundFile],
        existing: dict[str, StoredRow],
        full: bool,
        snapshot: Mapping[str, IndexEntry],
        progress: Callable[[ScanProgress], None] | None,
        tally: _Tally,
        batch: _Batch,
    ) -> None:
        """Read what is new or changed among the files found, in path order, a batch at a time."""
        total = len(found)
        step = max(1, total // PROGRESS_STEPS)
        now = self._now()
        for done, path in enumerate(sorted(found), start=1):
            if self._closing():
                batch.flush()
                raise ScanCancelled("catalog closing")
            item = found[path]
            old = existing.get(path)
            st = item.stat
            same_file = old is not None and (old.size, old.mtime_ns, old.inode) == (
                st.st_size,
                st.st_mtime_ns,
                signed64(st.st_ino),
            )
            if same_file and not full:
                assert old is not None
                self._check_unchanged(path, item, old, snapshot, tally, batch)
            else:
                self._read_changed(real_root, path, item, old, now, tally, batch, same_file=same_file)
            if len(batch) >= self._batch_size:
                batch.flush()
            if progress is not None and (done % step == 0 or done == total):
                progress(ScanProgress(total, done, tally.reads, len(tally.failures)))

    def _check_unchanged(
        self,
        path: str,
        item: FoundFile,
        old: StoredRow,
        snapshot: Mapping[str, IndexEntry],
        tally: _Tally,
        batch: _Batch,
    ) -> None:
        """A file whose stored row is current: only its folder artwork or the index may lag."""
        st = item.stat
        if old.error is not None:
            tally.failures[path] = old.error
        elif old.folder_artwork != item.folder_artwork:
            batch.folder_updates.append((int(item.folder_artwork), path))
            batch.refreshed.append((path, False))
            tally.changed += 1
        else:
            tally.unchanged += 1
            known = IndexEntry(
                st.st_size,
                st.st_mtime_ns,
                make_etag(st.st_size, st.st_mtime_ns, st.st_ino),
                item.fs_path,
            )
            if snapshot.get(path) != known:
                batch.refreshed.append((path, True))

    def _read_changed(
        self,
        real_root: Path,
        path: str,
        item: FoundFile,
        old: StoredRow | None,
        now: float,
        tally: _Tally,
        batch: _Batch,
        *,
        same_file: bool = False,
    ) -> None:
        """Read a new or changed file and queue its row and change.

        :param same_file: the stored row is of this very file (a ``full``
            scan re-reads it): counted ``unchanged``, not ``changed``.
        """
        st = item.stat
        tally.reads += 1
        record, embedded, error = self._read_file(real_root, path, item)
        if error is not None:
            tally.failures[path] = error
            batch.rows.append(
                error_row(path, item.fs_path, st, error, folder_artwork=item.folder_artwork, now=now)
            )
            batch.changes.append(IndexChange(path, None, None, error))
            return
        assert record is not None
        batch.rows.append(
            record_row(
                record, item.fs_path, st, embedded=embedded, folder_artwork=item.folder_artwork, now=now
            )
        )
        entry = IndexEntry(st.st_size, st.st_mtime_ns, record.etag, item.fs_path)
        batch.changes.append(IndexChange(path, entry, record, None))
        if old is None or old.error is not None:
            tally.added += 1
        elif same_file:
            tally.unchanged += 1
        else:
            tally.changed += 1

    def _read_file(
        self, real_root: Path, path: str, item: FoundFile
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

    def _summary(self, tally: _Tally, started: float) -> ScanSummary:
        """The scan's summary, logged."""
        summary = ScanSummary(
            added=tally.added,
            changed=tally.changed,
            removed=tally.removed,
            unchanged=tally.unchanged,
            failed=len(tally.failures),
            seconds=self._monotonic() - started,
            reads=tally.reads,
            failures=tuple(sorted(tally.failures.items())),
        )
        log.info(
            "catalog scan: {added} added, {changed} changed, {removed} removed, {unchanged} unchanged, "
            "{failed} unreadable in {seconds:.2f} s",
            added=summary.added,
            changed=summary.changed,
            removed=summary.removed,
            unchanged=summary.unchanged,
            failed=summary.failed,
            seconds=summary.seconds,
        )
        return summary


def walk_prefix(real_root: Path, prefix: str, found: dict[str, FoundFile], unlisted: list[str]) -> str | None:
    """Collect the audio files at or below one on-disk prefix.

    :returns: the NFC scope whose stored rows the result replaces, or
        ``None`` when the prefix is unsafe (nothing is touched then).
    """
    if not prefix:
        walk_tree(real_root, real_root, (), found, unlisted)
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
        walk_tree(real_root, logical, segments, found, unlisted)
    elif stat_module.S_ISREG(info.st_mode) and audio_format_for(segments[-1]) is not None:
        folder = folder_image(logical.parent, real_root) is not None
        found[scope] = FoundFile("/".join(segments), info, folder)
    return scope


def walk_tree(
    real_root: Path,
    top: Path,
    top_segments: tuple[str, ...],
    found: dict[str, FoundFile],
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
                found[key_path] = FoundFile(fs_path, info, folder)

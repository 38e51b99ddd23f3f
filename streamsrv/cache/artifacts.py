# -*- test-case-name: tests.test_artifacts,tests.test_reactor_free -*-
"""The on-disk cache of derived files: waveforms, spectra, transcodes, HLS segments.

An :class:`ArtifactCache` is a size-capped directory, ``<root>/<kind>/<ab>/<key><suffix>``,
where ``key`` is :func:`artifact_key` of the source file's :class:`FileIdentity`,
the artifact's kind and its parameters — so a changed source file, or other
parameters, is a different key and simply misses; nothing is ever invalidated
by hand. Writes are atomic (a temp file in the destination directory, fsync,
``os.replace``), so a reader never sees half an artifact, even after a crash;
temp files a dead process left behind are removed at start. An in-memory
index (size and recency of every artifact) is rebuilt from the directory at
start (recency from mtime, which a hit refreshes at most once a minute), and
eviction removes the least recently used until the total is within
``max_bytes``. Several processes may share the directory: each keeps its own
index, a file another process evicted is a miss, never an error.

From the reactor thread, use the asynchronous methods: :meth:`~ArtifactCache.store_bytes`,
:meth:`~ArtifactCache.commit` and :meth:`~ArtifactCache.read_bytes` run their
writes, fsyncs, renames and whole-file reads in the injected
:class:`~streamsrv.threads.IThreads` (``threads``) and answer with a
Deferred. ``get`` stays synchronous because it is cheap: one ``stat`` (and, at
most once a minute per entry, a ``utime``); ``path_for``, ``temp_path`` and
the counters do nothing beyond a ``mkdir``. The blocking layer under them
(``put_bytes``, ``writer``, ``commit_file``, ``evict``, ``rescan``, and the
constructor's walk of the directory) is for threads, worker processes and
start-up before the reactor runs.

This module must never join an unvalidated name to the file system (kinds,
keys and suffixes are checked against strict patterns), never delete a file
whose name it did not make (it ignores everything else in the directory, so a
misconfigured root loses nothing), never leave a partially written artifact
under its final name, and never let a file vanishing under it (another process,
an operator) surface as an exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from twisted.internet.defer import Deferred

from streamsrv.cache.lru import EVENT_EVICTION, EVENT_HIT, EVENT_MISS, CacheStats
from streamsrv.threads import IThreads

__all__ = [
    "STALE_TEMP_AFTER_S",
    "TEMP_PREFIX",
    "TOUCH_INTERVAL_S",
    "ArtifactCache",
    "FileIdentity",
    "artifact_key",
]

#: A hit refreshes an artifact's mtime (its recency on disk) at most this often, seconds.
TOUCH_INTERVAL_S: Final = 60.0

#: A temp file older than this is removed at start even if the process that made it looks alive
#: (its pid may have been reused), seconds.
STALE_TEMP_AFTER_S: Final = 24 * 3600.0

#: Name prefix of every temp file: ``.tmp-<pid>-<random>``. No artifact name starts with a dot.
TEMP_PREFIX: Final = ".tmp-"

#: A kind is a directory name: ``waveform``, ``spectrum``, ``transcode``, ``hls``…
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")

#: A key is lowercase hex, as :func:`artifact_key` makes it (64 digits).
_KEY = re.compile(r"[0-9a-f]{8,128}")

#: A suffix is up to three dotted extensions: ``.dat``, ``.m4s``, ``.png``, ``.tar.gz``.
_SUFFIX = re.compile(r"(?:\.[A-Za-z0-9_-]{1,16}){0,3}")

#: A shard directory: the first two hex digits of the keys inside.
_SHARD = re.compile(r"[0-9a-f]{2}")

#: An artifact's file name: key, then suffix.
_ARTIFACT_NAME = re.compile(r"([0-9a-f]{8,128})((?:\.[A-Za-z0-9_-]{1,16}){0,3})")

#: A temp file's name, with the pid of the process that named it.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"([0-9]+)-[0-9a-f]{16}")


@dataclass(frozen=True)
class FileIdentity:
    """
    What identifies one version of a source file: a change to any field is a new version.

    ``path`` is the track name (relative to the media root, ``/``-separated),
    not a file system path, so moving the media root keeps the keys.
    Hashable, so it is also a fine :class:`~streamsrv.cache.lru.LruCache` key.
    """

    path: str
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, track: str, stat: os.stat_result) -> FileIdentity:
        """The identity of ``track`` from its ``os.stat`` result."""
        return cls(path=track, size=stat.st_size, mtime_ns=stat.st_mtime_ns, inode=stat.st_ino)


def artifact_key(identity: FileIdentity, kind: str, params: Mapping[str, object]) -> str:
    """
    The cache key of one artifact: stable across processes, runs and hosts.

    SHA-256, in lowercase hex, of the canonical JSON
    ``{"identity":{"inode":…,"mtime_ns":…,"path":…,"size":…},"kind":…,"params":{…}}``
    — keys sorted at every level, no whitespace, every non-ASCII character
    escaped as ``\\uXXXX`` (Python's ``json.dumps`` with ``sort_keys=True,
    separators=(",", ":")``), so a name that is not valid UTF-8 still has a
    key. Parameter values must be JSON values (``str``, ``int``, ``float``,
    ``bool``, ``None``, lists/tuples and mappings of them); ``1``, ``1.0``
    and ``True`` are different values.
    Put a format version among the parameters when the bytes of an artifact
    kind change, so old artifacts miss.

    :raise TypeError: a parameter value that is not a JSON value.
    :raise ValueError: a NaN or infinite float.
    """
    document = {
        "identity": {
            "path": identity.path,
            "size": identity.size,
            "mtime_ns": identity.mtime_ns,
            "inode": identity.inode,
        },
        "kind": kind,
        "params": dict(params),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass
class _Entry:
    size: int
    #: When this process last touched the file's mtime (clock seconds), or the mtime read from disk.
    touched: float


class ArtifactCache:
    """
    A size-capped directory of derived files, least recently used evicted first.

    Thread-safe: the index is guarded by a lock; data is written outside it.
    On the reactor thread call only :meth:`get`, :meth:`path_for`,
    :meth:`temp_path`, the counters, and the asynchronous :meth:`store_bytes`,
    :meth:`commit` and :meth:`read_bytes`, whose disk work runs in
    :attr:`threads`; the other methods block on disk I/O.

    :ivar threads: where the blocking work of the asynchronous methods runs
        (and where a caller may run other blocking reads of the same files).

    :ivar hits: :meth:`get` calls that found the artifact.
    :ivar misses: :meth:`get` calls that did not.
    :ivar evictions: artifacts this process deleted to respect ``max_bytes``.
    :ivar bytes_written: bytes of every artifact this process committed.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        threads: IThreads,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        """
        Open (creating it if needed) the cache at ``root``: remove dead temp files, index, evict.

        Does disk I/O proportional to the number of files in the cache: build
        it at start-up, before the reactor runs, or in a thread.

        :param root: the cache directory (``<STREAMSRV_DATA_DIR>/cache``).
        :param max_bytes: most bytes of artifacts to keep (``STREAMSRV_CACHE_MAX_BYTES``).
        :param threads: runs the disk work of :meth:`store_bytes`,
            :meth:`commit` and :meth:`read_bytes` (a
            :class:`~streamsrv.threads.ReactorThreads`; tests may pass
            :class:`~streamsrv.threads.InlineThreads`).
        :param clock: wall-clock seconds; recency and the mtimes written are on it.
        :param on_event: called with ``"hit"``, ``"miss"`` or ``"eviction"``.
        :raise ValueError: a negative ``max_bytes``.
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.root: Final = Path(root)
        self.max_bytes: Final = max_bytes
        self.threads: Final = threads
        self._clock = clock
        self._on_event = on_event
        self._lock = threading.Lock()
        # name relative to root ("kind/ab/key.suffix") -> entry; least recently used first.
        self._index: OrderedDict[str, _Entry] = OrderedDict()
        self._total = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes_written = 0
        self.root.mkdir(parents=True, exist_ok=True)
        self.rescan(remove_temp=True)
        self.evict()

    # -- names -----------------------------------------------------------------------------------

    def path_for(self, key: str, kind: str, suffix: str = "") -> Path:
        """
        Where the artifact lives, whether or not it exists: ``<root>/<kind>/<key[:2]>/<key><suffix>``.

        :raise ValueError: a kind, key or suffix outside the allowed patterns.
        """
        return self.root / self._relative(key, kind, suffix)

    def temp_path(self, kind: str) -> Path:
        """
        A fresh, unique temp file path inside the cache (same file system) for a worker to write into.

        The file is not created. Hand the finished file to :meth:`commit_file`;
        on failure, unlink it (``path.unlink(missing_ok=True)``). If this
        process dies, the next cache opened on the directory removes it.
        """
        directory = self.root / _check_kind(kind)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / _temp_name()

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str, kind: str, suffix: str = "") -> Path | None:
        """
        The artifact's path if it exists (a hit, now the most recently used), else ``None``.

        Open the path promptly: another process may evict it later, and a
        ``FileNotFoundError`` then is just a late miss.
        """
        relative = self._relative(key, kind, suffix)
        path = self.root / relative
        try:
            stat = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(relative)
            self._miss()
            return None
        now = self._clock()
        with self._lock:
            # A second look under the lock is decisive: this process's writes and evictions
            # change the directory only while holding it.
            try:
                stat = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                gone = self._index.pop(relative, None)
                if gone is not None:
                    self._total -= gone.size
                entry = None
            else:
                entry = self._index.get(relative)
                if entry is None:  # written by another process: adopt it
                    entry = self._index[relative] = _Entry(stat.st_size, stat.st_mtime)
                    self._total += stat.st_size
                elif entry.size != stat.st_size:
                    self._total += stat.st_size - entry.size
                    entry.size = stat.st_size
            touch = False
            if entry is not None:
                self._index.move_to_end(relative)
                touch = abs(now - entry.touched) >= TOUCH_INTERVAL_S  # abs: a clock set back
                if touch:
                    entry.touched = now
        if entry is None:
            self._miss()
            return None
        if touch:
            try:
                os.utime(path, (now, now))
            except FileNotFoundError:
                self._forget(relative)
                self._miss()
                return None
            except OSError:
                pass  # another user's file, a read-only mount: recency on disk is a hint, not a must.
        with self._lock:
            self.hits += 1
        self._emit(EVENT_HIT)
        return path

    # -- from the reactor thread: the disk work in ``threads`` ----------------------------------------

    def store_bytes(self, key: str, kind: str, data: bytes, suffix: str = "") -> Deferred[Path]:
        """Store ``data`` as the artifact (as :meth:`put_bytes`, in :attr:`threads`); its path."""
        return self.threads.defer(self.put_bytes, key, kind, data, suffix)

    def commit(self, key: str, kind: str, tmp_path: Path, suffix: str = "") -> Deferred[Path]:
        """Adopt a finished file (as :meth:`commit_file`, in :attr:`threads`); the artifact's path."""
        return self.threads.defer(self.commit_file, key, kind, tmp_path, suffix)

    def read_bytes(self, path: Path) -> Deferred[bytes]:
        """
        The whole content of an artifact :meth:`get` found, read in :attr:`threads`.

        Fails with ``FileNotFoundError`` if another process evicted it since
        (a late miss) or another ``OSError``.
        """
        return self.threads.defer(Path(path).read_bytes)

    # -- writing (blocking: in a thread or a worker) -------------------------------------------------

    def put_bytes(self, key: str, kind: str, data: bytes, suffix: str = "") -> Path:
        """Store ``data`` as the artifact, atomically, then evict; the artifact's path."""
        with self.writer(key, kind, suffix) as output:
            output.write(data)
        return self.path_for(key, kind, suffix)

    @contextmanager
    def writer(self, key: str, kind: str, suffix: str = "") -> Iterator[BinaryIO]:
        """
        Write a large artifact progressively.

        Yields a binary file open on a temp file next to the final name. On
        a clean exit the file is flushed, fsynced, closed (if the block did
        not close it) and renamed into place, then eviction runs; on an
        exception it is deleted and the exception propagates. Until the
        rename nobody sees anything under the final name.
        """
        relative = self._relative(key, kind, suffix)
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / _temp_name()
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        output = os.fdopen(descriptor, "wb")
        try:
            yield output
            if output.closed:  # closed by the caller (or a library it handed the file to)
                _fsync_path(temp)
            else:
                output.flush()
                os.fsync(output.fileno())
                output.close()
        except BaseException:
            try:
                # Closing flushes what is buffered, which fails again on a full disk (ENOSPC):
                # the temp file must go whatever close says.
                output.close()
            except OSError:
                pass
            finally:
                temp.unlink(missing_ok=True)
            raise
        self._commit(temp, relative, synced=True)

    def commit_file(self, key: str, kind: str, tmp_path: Path, suffix: str = "") -> Path:
        """
        Adopt a finished file written elsewhere on the same file system (e.g. by a worker process).

        The file is fsynced and renamed into place (it is gone from
        ``tmp_path`` afterwards), then eviction runs. Use :meth:`temp_path`
        for a path that is sure to qualify.

        :return: the artifact's path.
        :raise FileNotFoundError: ``tmp_path`` does not exist.
        :raise OSError: ``tmp_path`` is on another file system (``EXDEV``).
        """
        relative = self._relative(key, kind, suffix)
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        self._commit(Path(tmp_path), relative, synced=False)
        return self.root / relative

    def _commit(self, temp: Path, relative: str, *, synced: bool) -> None:
        final = self.root / relative
        try:
            if not synced:
                _fsync_path(temp)
            size = os.stat(temp).st_size
            now = self._clock()
            # The mtime is the recency on disk, on our clock, kept by the rename.
            os.utime(temp, (now, now))
            with self._lock:
                os.replace(temp, final)
                old = self._index.pop(relative, None)
                if old is not None:
                    self._total -= old.size
                self._index[relative] = _Entry(size, now)
                self._total += size
                self.bytes_written += size
        except BaseException:
            if synced:  # Our own temp file: never leave it behind.
                temp.unlink(missing_ok=True)
            raise
        self._evict(keep=relative)

    # -- eviction ---------------------------------------------------------------------------------

    def evict(self) -> int:
        """
        Delete least recently used artifacts until the total is within ``max_bytes``.

        Runs after every put; call it after lowering the limit or after
        :meth:`rescan`. An artifact already gone (another process evicted it)
        leaves the index without error and frees nothing.

        :return: bytes freed (by this call's deletions).
        """
        return self._evict(keep=None)

    def _evict(self, keep: str | None) -> int:
        freed = 0
        evicted = 0
        with self._lock:
            # The artifact a put just stored is kept even when it alone exceeds the limit, so the
            # path the put returns exists; the next eviction removes it.
            kept = self._index.pop(keep, None) if keep is not None else None
            while self._index and self._total > self.max_bytes:
                relative, entry = self._index.popitem(last=False)
                self._total -= entry.size
                try:
                    os.unlink(self.root / relative)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # another process evicted it first.
                freed += entry.size
                evicted += 1
            if kept is not None and keep is not None:
                self._index[keep] = kept
            self.evictions += evicted
        for _ in range(evicted):
            self._emit(EVENT_EVICTION)
        return freed

    # -- index -------------------------------------------------------------------------------------

    def rescan(self, *, remove_temp: bool = False) -> None:
        """
        Rebuild the index from the directory: every artifact, recency from its mtime.

        Picks up artifacts other processes wrote and forgets those they
        evicted; with several processes on one directory, call it now and
        then (in a thread) followed by :meth:`evict`. ``remove_temp`` also
        deletes temp files of dead processes and temp files older than
        :data:`STALE_TEMP_AFTER_S` (the constructor does).
        """
        started = self._clock()
        found: list[tuple[float, str, int]] = []
        for kind_entry in _scandir(self.root):
            if not (kind_entry.is_dir(follow_symlinks=False) and _KIND.fullmatch(kind_entry.name)):
                continue
            for shard in _scandir(Path(kind_entry.path)):
                if remove_temp and _TEMP_NAME.fullmatch(shard.name):
                    _remove_if_abandoned(shard)
                    continue
                if not (shard.is_dir(follow_symlinks=False) and _SHARD.fullmatch(shard.name)):
                    continue
                for item in _scandir(Path(shard.path)):
                    if remove_temp and _TEMP_NAME.fullmatch(item.name):
                        _remove_if_abandoned(item)
                        continue
                    match = _ARTIFACT_NAME.fullmatch(item.name)
                    if match is None or not match.group(1).startswith(shard.name):
                        continue
                    try:
                        if not item.is_file(follow_symlinks=False):
                            continue
                        stat = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    found.append((stat.st_mtime, f"{kind_entry.name}/{shard.name}/{item.name}", stat.st_size))
        found.sort()
        index = OrderedDict((relative, _Entry(size, mtime)) for mtime, relative, size in found)
        with self._lock:
            # Keep what this process committed while the walk ran (it may have passed that directory).
            for relative, entry in self._index.items():
                if relative not in index and entry.touched >= started:
                    index[relative] = entry
            self._index = index
            self._total = sum(entry.size for entry in index.values())

    @property
    def total_bytes(self) -> int:
        """Bytes of the artifacts in this process's index (``st_size``, not disk blocks)."""
        with self._lock:
            return self._total

    def __len__(self) -> int:
        """How many artifacts are in this process's index."""
        with self._lock:
            return len(self._index)

    @property
    def stats(self) -> CacheStats:
        """Counters, entries and bytes, read together under the lock."""
        with self._lock:
            return CacheStats(
                hits=self.hits,
                misses=self.misses,
                evictions=self.evictions,
                entries=len(self._index),
                bytes=self._total,
                bytes_written=self.bytes_written,
            )

    # -- helpers -----------------------------------------------------------------------------------

    def _relative(self, key: str, kind: str, suffix: str) -> str:
        _check_kind(kind)
        if not _KEY.fullmatch(key):
            raise ValueError(f"an artifact key is 8 to 128 lowercase hex digits, not {key!r}")
        if not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"an artifact suffix is up to three '.ext' parts, not {suffix!r}")
        return f"{kind}/{key[:2]}/{key}{suffix}"

    def _forget(self, relative: str) -> None:
        with self._lock:
            entry = self._index.pop(relative, None)
            if entry is not None:
                self._total -= entry.size

    def _miss(self) -> None:
        with self._lock:
            self.misses += 1
        self._emit(EVENT_MISS)

    def _emit(self, kind: str) -> None:
        if self._on_event is not None:
            self._on_event(kind)


def _check_kind(kind: str) -> str:
    if not _KIND.fullmatch(kind):
        raise ValueError(f"an artifact kind is a short lowercase name, not {kind!r}")
    return kind


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"


def _scandir(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``, or none if it vanished or is not a directory."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove_if_abandoned(entry: os.DirEntry[str]) -> None:
    """Delete a temp file whose process is dead, or which is older than :data:`STALE_TEMP_AFTER_S`."""
    match = _TEMP_NAME.fullmatch(entry.name)
    assert match is not None
    try:
        if not entry.is_file(follow_symlinks=False):
            return
        stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AFTER_S
        if stale or not _process_alive(int(match.group(1))):
            os.unlink(entry.path)
    except FileNotFoundError:
        pass


def _process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (its temp files may be in use)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user.
    except OverflowError:
        return False
    return True

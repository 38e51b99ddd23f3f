# -*- test-case-name: tests.test_watcher -*-
"""Keeps the catalog in step with the media root: a scan at start, inotify, a periodic rescan.

:class:`CatalogService` opens the :class:`~streamsrv.audio.catalog.Catalog`
when the daemon starts, then scans the whole library in the background
(``startService`` returns at once; ``/stream`` knows the tracks the database
already held meanwhile).  Where Linux's inotify is available every directory
below the root is watched; bursts of events (a file being copied, an album
moved in) are collected for :data:`DEFAULT_DEBOUNCE_S` after the last one
(at most :data:`MAX_DEBOUNCE_FACTOR` times that after the first) and handed
to :meth:`~streamsrv.audio.catalog.Catalog.rescan_paths` in one call.  A
periodic full rescan every ``rescan_interval_s`` catches what inotify cannot
see (network file systems, a queue overflow, symlink targets, more
directories than ``fs.inotify.max_user_watches``) and is the only mechanism
where inotify is missing.

This service must never block the reactor (walking directories to add
watches is bounded by the number of directories, never files), never let one
failed scan stop the periodic loop, and never watch outside the media root.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from streamsrv.audio.catalog import Catalog, ScanCancelled, ScanSummary
from streamsrv.media.paths import PathRefused, resolve_inside
from streamsrv.service import PeriodicService

__all__ = ["DEFAULT_DEBOUNCE_S", "DEFAULT_RESCAN_INTERVAL_S", "CatalogService"]

log = Logger()

#: Quiet time after the last file-system event before the rescan, in seconds.
DEFAULT_DEBOUNCE_S: Final[float] = 1.0

#: A burst is flushed at the latest this many debounce periods after its first event.
MAX_DEBOUNCE_FACTOR: Final[int] = 10

#: Seconds between periodic full rescans.
DEFAULT_RESCAN_INTERVAL_S: Final[float] = 900.0

#: inotify event bits (``<sys/inotify.h>``), so this module imports on any OS.
IN_ATTRIB: Final[int] = 0x00000004
IN_CLOSE_WRITE: Final[int] = 0x00000008
IN_MOVED_FROM: Final[int] = 0x00000040
IN_MOVED_TO: Final[int] = 0x00000080
IN_CREATE: Final[int] = 0x00000100
IN_DELETE: Final[int] = 0x00000200
IN_DELETE_SELF: Final[int] = 0x00000400
IN_MOVE_SELF: Final[int] = 0x00000800
IN_Q_OVERFLOW: Final[int] = 0x00004000
IN_ISDIR: Final[int] = 0x40000000

#: What is watched: a file finished, moved, deleted, touched; a directory or symlink made.
WATCH_MASK: Final[int] = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

#: Directory levels below the root that get a watch.
MAX_WATCH_DEPTH: Final[int] = 64


def _default_inotify(reactor: Any) -> Any:
    """A started :class:`twisted.internet.inotify.INotify` (raises where unavailable)."""
    from twisted.internet import inotify

    notifier = inotify.INotify(reactor)
    notifier.startReading()
    return notifier


class CatalogService(Service):
    """Open the catalog, scan it, and keep it current while the daemon runs.

    :param catalog: the catalog (opened here, closed on stop).
    :param clock: schedules the periodic rescan and the debounce (the
        reactor; tests pass :class:`~twisted.internet.task.Clock`).
    :param rescan_interval_s: seconds between full rescans; the first runs
        as soon as the catalog is open.
    :param use_inotify: watch the tree with inotify where available.
    :param debounce_s: quiet time before a burst of events is rescanned.
    :param reactor: the reactor inotify reads on; ``None`` uses ``clock``
        when it is one.
    :param inotify_factory: makes the started notifier from the reactor
        (tests pass a fake); must raise where inotify is unavailable.
    """

    name = "catalog"  # type: ignore[assignment]  # Twisted declares Service.name as None

    def __init__(
        self,
        catalog: Catalog,
        *,
        clock: Any,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
        use_inotify: bool = True,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        reactor: Any = None,
        inotify_factory: Callable[[Any], Any] = _default_inotify,
    ) -> None:
        if rescan_interval_s <= 0:
            raise ValueError("rescan_interval_s must be positive")
        self._catalog = catalog
        self._clock = clock
        self._interval = rescan_interval_s
        self._use_inotify = use_inotify
        self._debounce_s = debounce_s
        self._reactor = reactor if reactor is not None else clock
        self._inotify_factory = inotify_factory
        self._rescans = PeriodicService(
            rescan_interval_s, self._periodic, clock=clock, what="catalog: the periodic rescan"
        )
        self._notifier: Any = None
        self._notifier_broken = False
        self._pending: set[str] = set()
        self._burst_started: float | None = None
        self._flush_call: IDelayedCall | None = None
        self._opening: Deferred[None] | None = None
        self._stopping = False
        #: Whether inotify is watching now (for tests and ``/health/detailed``).
        self.watching = False
        #: Rescans requested by inotify so far.
        self.rescans = 0

    # ------------------------------------------------------------------
    # Service

    def startService(self) -> None:
        """Open the catalog in the background, then scan, watch and loop."""
        super().startService()
        self._stopping = False
        self._opening = self._catalog.open()
        self._opening.addCallbacks(self._opened, self._open_failed)

    def stopService(self) -> Deferred[None]:
        """Stop watching and looping; close the catalog (stops a running scan)."""
        super().stopService()
        self._stopping = True
        # Not waited for: closing the catalog below is what cancels a scan in progress.
        self._rescans.stopService()
        self._cancel_flush()
        self._stop_inotify()
        opening, self._opening = self._opening, None
        if opening is not None and not opening.called:
            # Let the open finish before closing what it opened.
            d: Deferred[None] = Deferred()
            opening.addBoth(lambda _: d.callback(None))
            return d.addCallback(lambda _: self._catalog.close())
        return self._catalog.close() if self._catalog.opened else succeed(None)

    def _opened(self, _: object) -> None:
        if self._stopping:
            return
        self._opening = None
        if self._use_inotify:
            self._start_inotify()
        else:
            log.info("catalog: inotify disabled; rescanning every {interval} s", interval=self._interval)
        self._rescans.startService()

    def _open_failed(self, failure: Failure) -> None:
        self._opening = None
        log.failure("catalog could not be opened", failure)

    # ------------------------------------------------------------------
    # Periodic rescan

    def _periodic(self) -> Deferred[None]:
        """One full scan; errors are logged, never stop the loop."""
        if self._notifier_broken and not self._stopping:
            self._restart_inotify()
        d: Deferred[None] = self._catalog.scan().addCallbacks(lambda _: None, self._scan_failed)
        return d

    def _scan_failed(self, failure: Failure) -> None:
        if failure.check(ScanCancelled):
            return
        log.error("catalog scan failed: {reason}", reason=str(failure.value))

    # ------------------------------------------------------------------
    # inotify

    def _start_inotify(self) -> None:
        if self._reactor is None or not IReactorFDSet.providedBy(self._reactor):
            log.info("catalog: no reactor to read inotify with; relying on the periodic rescan")
            return
        try:
            notifier = self._inotify_factory(self._reactor)
        except Exception as e:
            log.info(
                "catalog: inotify unavailable ({error}); rescanning every {interval} s",
                error=type(e).__name__,
                interval=self._interval,
            )
            return
        self._notifier = notifier
        self._notifier_broken = False
        root = os.path.realpath(self._catalog.media_root)
        watched = self._watch_tree(root, ())
        self.watching = True
        log.info("catalog: watching {count} directories with inotify", count=watched)

    def _stop_inotify(self) -> None:
        notifier, self._notifier = self._notifier, None
        self.watching = False
        if notifier is not None:
            try:
                notifier.loseConnection()
            except Exception:
                log.failure("catalog: closing inotify failed")

    def _restart_inotify(self) -> None:
        """Twisted's INotify closes itself when any watched directory is deleted: start anew."""
        self._stop_inotify()
        self._start_inotify()

    def _watch_tree(self, root: str, segments: tuple[str, ...]) -> int:
        """Watch a directory and every directory below it (no dot-dirs, nothing outside the root)."""
        count = 0
        stack = [segments]
        seen: set[tuple[int, int]] = set()
        while stack and self._notifier is not None:
            current = stack.pop()
            directory = os.path.join(root, *current)
            try:
                info = os.stat(directory)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
                self._notifier.watch(
                    FilePath(directory), mask=WATCH_MASK, autoAdd=False, callbacks=[self._on_event]
                )
                count += 1
                with os.scandir(directory) as entries:
                    names = [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
            except Exception as e:
                log.warn(
                    "catalog: cannot watch a directory ({error}); the periodic rescan covers it",
                    error=type(e).__name__,
                )
                continue
            for name in names:
                child = (*current, name)
                if len(child) <= MAX_WATCH_DEPTH and _directory_inside(root, child):
                    stack.append(child)
        return count

    def _on_event(self, _: object, path: FilePath[Any], mask: int) -> None:
        """One inotify event: remember its path, (re)arm the debounce."""
        if mask & IN_Q_OVERFLOW:
            self._queue("")
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            # Twisted drops the whole notifier on a watched directory's deletion.
            self._notifier_broken = True
        relative = self._relative(path)
        if relative is None:
            return
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and self._notifier is not None:
            self._watch_tree(os.path.realpath(self._catalog.media_root), tuple(relative.split("/")))
        self._queue(relative)

    def _relative(self, path: FilePath[Any]) -> str | None:
        """The event's path below the root as spelt on disk, or ``None`` to ignore it."""
        absolute = os.fsdecode(path.path)
        root = os.path.realpath(self._catalog.media_root)
        try:
            relative = os.path.relpath(absolute, root)
        except ValueError:
            return None
        if relative == ".":
            return ""
        parts = relative.split(os.sep)
        if parts[0] == ".." or any(part.startswith(".") for part in parts):
            return None
        return "/".join(parts)

    # ------------------------------------------------------------------
    # Debounce

    def _queue(self, relative: str) -> None:
        self._pending.add(relative)
        now = self._clock.seconds()
        if self._burst_started is None:
            self._burst_started = now
        deadline = self._burst_started + self._debounce_s * MAX_DEBOUNCE_FACTOR
        when = min(now + self._debounce_s, deadline)
        self._cancel_flush()
        self._flush_call = self._clock.callLater(max(0.0, when - now), self._flush)

    def _cancel_flush(self) -> None:
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()

    def _flush(self) -> None:
        self._flush_call = None
        self._burst_started = None
        paths, self._pending = sorted(self._pending), set()
        if self._stopping or not paths:
            return
        if self._notifier_broken and self._use_inotify:
            self._restart_inotify()
        self.rescans += 1
        d: Deferred[ScanSummary] = self._catalog.rescan_paths(paths)
        d.addErrback(self._scan_failed)


def _directory_inside(root: str, segments: tuple[str, ...]) -> bool:
    """Whether a path below the root is a directory that resolves inside it."""
    try:
        resolved = resolve_inside(Path(root), segments)
        return stat_module.S_ISDIR(os.stat(resolved).st_mode)
    except (PathRefused, OSError):
        return False

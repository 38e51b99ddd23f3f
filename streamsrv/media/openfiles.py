# -*- test-case-name: tests.test_openfiles -*-
"""Open descriptors of recently served files, shared by the requests sending them (nginx's open_file_cache).

A player asks for one track in many small ranges.  Opening the file for each
of them costs an ``open`` (with its path walk), an ``fstat`` and a ``close``;
:class:`OpenFileCache` keeps the descriptor and checks it with one ``lstat``
of the path instead.  An entry is used only while that ``lstat`` finds the
very file it opened: the same device and inode (a file replaced by a rename,
or a symlink put in its place, is opened afresh), the same mode and owner (a
``chmod``/``chown`` that might now refuse the open is met by opening again).
A file modified in place is the same inode: the descriptor reads what a new
``open`` would, and the ``lstat`` gives its new size and time.  A file removed
or unreadable drops its entry.

Requests hold a :class:`FileLease`: closing it (or losing it) gives its share
back, and the descriptor is closed once neither the cache nor any request
holds it.  A lease serves ``os.sendfile``/``os.pread``-style access by
offset only (``fileno``): a shared descriptor has no position of its own.

At most *max_entries* descriptors are kept; the least recently used goes
first.  One not used for *idle_s* is closed at the next look-up (there is no
timer: an idle cache holds at most *max_entries* descriptors of files that were
valid when last served, as nginx's does).  :meth:`OpenFileCache.clear` closes
what no request holds.

This module never opens anything but a regular file, never follows a symlink
in the last component (``O_NOFOLLOW``), and never logs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Final

__all__ = ["OPEN_FLAGS", "FileLease", "OpenFileCache"]

#: How many descriptors are kept by default.
OPEN_FILES_MAX: Final = 64

#: Seconds an unused descriptor is kept by default.
OPEN_FILES_IDLE_S: Final = 10.0

#: Read-only, no symlink last, closed on exec, and never blocking: a FIFO put in a track's
#: place would block ``open`` (and the reactor) until a writer came; it opens at once and
#: is refused as not a regular file.  Reads of a regular file ignore ``O_NONBLOCK``.
OPEN_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether *a* and *b* are one file with one mode and owner."""
    return (
        a.st_ino == b.st_ino
        and a.st_dev == b.st_dev
        and a.st_mode == b.st_mode
        and a.st_uid == b.st_uid
        and a.st_gid == b.st_gid
    )


class _Shared:
    """One open descriptor and how many hold it (the cache counts as one)."""

    __slots__ = ("fd", "holders", "info", "used")

    def __init__(self, fd: int, info: os.stat_result, used: float) -> None:
        self.fd = fd
        self.info = info
        self.holders = 1
        self.used = used

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # Unreferenced with a holder left: the cache itself was dropped (a site built and thrown away).
        if self.fd >= 0:
            os.close(self.fd)


class FileLease:
    """A request's share of a cached descriptor: ``fileno`` and ``close``, closed at most once."""

    __slots__ = ("_shared",)

    def __init__(self, shared: _Shared) -> None:
        shared.holders += 1
        self._shared: _Shared | None = shared

    def fileno(self) -> int:
        """The shared descriptor; :raise ValueError: once closed."""
        shared = self._shared
        if shared is None:
            raise ValueError("I/O operation on closed file")
        return shared.fd

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._shared is None

    def close(self) -> None:
        """Give this share back (the descriptor closes when no one holds it)."""
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()

    def __del__(self) -> None:
        self.close()


class OpenFileCache:
    """
    Descriptors of regular files by path (see the module docstring).

    :param clock: the current time in seconds (e.g. ``reactor.seconds``).
    :param max_entries: the most descriptors kept.
    :param idle_s: how long an unused descriptor is kept.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        max_entries: int = OPEN_FILES_MAX,
        idle_s: float = OPEN_FILES_IDLE_S,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._idle_s = idle_s
        self._entries: dict[str, _Shared] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._entries)

    def lease(self, path: str) -> tuple[FileLease, os.stat_result] | None:
        """
        A lease on *path*'s descriptor and the file's ``stat``, opening it if
        need be; ``None`` if it is missing, unreadable or not a regular file.
        """
        now = self._clock()
        if now - self._swept >= self._idle_s:
            self._sweep(now)
        entries = self._entries
        shared = entries.pop(path, None)
        if shared is not None:
            try:
                info = os.lstat(path)
            except (OSError, ValueError):
                info = None
            if info is not None and _same_file(info, shared.info):
                shared.used = now
                entries[path] = shared  # most recently used last
                return FileLease(shared), info
            shared.release()
        return self._open(path, now)

    def _open(self, path: str, now: float) -> tuple[FileLease, os.stat_result] | None:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except (OSError, ValueError):
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        shared = _Shared(fd, info, now)
        entries = self._entries
        if len(entries) >= self._max_entries:
            entries.pop(next(iter(entries))).release()
        entries[path] = shared
        return FileLease(shared), info

    def _sweep(self, now: float) -> None:
        """Close what was not used for *idle_s* (entries are in order of use, oldest first)."""
        self._swept = now
        entries = self._entries
        while entries:
            path = next(iter(entries))
            if now - entries[path].used < self._idle_s:
                break
            entries.pop(path).release()

    def clear(self) -> None:
        """Give back every descriptor (those requests still hold close when they finish)."""
        entries, self._entries = self._entries, {}
        for shared in entries.values():
            shared.release()

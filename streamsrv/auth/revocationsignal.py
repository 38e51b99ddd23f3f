# -*- test-case-name: tests.test_revocation_signal -*-
"""A doorbell shared by the processes of one host: "a revocation was just stored, look again".

With ``STREAMSRV_WORKERS=N`` each worker answers "is this token revoked?"
from its own in-memory snapshot, refreshed by polling the store about once a
second.  A revocation must hold on every worker the moment its call returns,
not a poll later, so the worker that stored one rings this doorbell: it
writes a fresh random word into a small file of the data directory that
every worker of the host has memory-mapped (``MAP_SHARED``: the same page
of memory in every process).  Before trusting its snapshot for a bearer
token a worker compares that word with the one it last saw, a memory read
with no system call; when it differs the worker reloads the snapshot from
the store before answering.  The ring happens after the store has the
revocation and the comparison before the reload, so nothing rung before a
request is missed by it.  Daemons on other hosts (another data directory)
are not reached this way; they see a revocation at their next poll.

This module must never block on I/O after it is opened (a read or a ring is
a memory access), never hold anything but the random word, and never fail a
request because the file could not be opened (then there is no doorbell and
the poll alone applies, as between hosts).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

from twisted.logger import Logger

__all__ = ["SIGNAL_FILE", "RevocationSignal", "open_signal"]

log = Logger()

#: The file in ``STREAMSRV_DATA_DIR`` the processes of a host share as a doorbell.
SIGNAL_FILE: Final = "revocations.signal"

#: Bytes of the word rung: random, so two rings never cancel out.
_WORD: Final = 8


class RevocationSignal:
    """
    A word in a shared memory-mapped file: :meth:`ring` changes it, :meth:`read` reads it.

    Open it with :func:`open_signal`; every process opening the same file sees
    the others' rings at once.
    """

    def __init__(self, mapped: mmap.mmap) -> None:
        """:param mapped: At least :data:`_WORD` bytes mapped shared and writable."""
        self._map: mmap.mmap | None = mapped

    def read(self) -> bytes:
        """The word as it is now (empty once closed)."""
        mapped = self._map
        return b"" if mapped is None else mapped[:_WORD]

    def ring(self) -> None:
        """Write a fresh word: every process comparing will look again."""
        mapped = self._map
        if mapped is not None:
            mapped[:_WORD] = os.urandom(_WORD)

    def close(self) -> None:
        """Unmap the file; :meth:`read` answers empty and :meth:`ring` does nothing afterwards."""
        mapped, self._map = self._map, None
        if mapped is not None:
            mapped.close()


def open_signal(data_dir: Path) -> RevocationSignal | None:
    """
    The doorbell of the processes sharing *data_dir*, or ``None`` if it cannot be opened.

    Called while the daemon is built, before the reactor runs (it creates an
    8-byte file).  A failure is logged and leaves revocations to the poll.
    """
    path = data_dir / SIGNAL_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _WORD:
                os.ftruncate(fd, _WORD)  # never shrinks: a word another process wrote stays
            mapped = mmap.mmap(fd, _WORD, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
    except (OSError, ValueError) as e:
        log.warn(
            "revocations: no shared doorbell ({error}); other workers apply a revocation at their next poll",
            error=f"{type(e).__name__}: {e.strerror if isinstance(e, OSError) else e}",
            event_kind="degraded",
        )
        return None
    return RevocationSignal(mapped)

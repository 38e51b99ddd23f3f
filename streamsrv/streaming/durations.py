# -*- test-case-name: tests.test_durations -*-
"""Track durations for ``/stream``'s ``X-Content-Duration``, from the catalog's records.

The catalog reads every track's tags and duration in its own threads when it
scans; :class:`TrackDurations` remembers the duration of each track ``/stream``
has served, with the entity-tag of the file version the catalog read, so
the header costs a dict lookup on the reactor thread.  The first request for
a track waits once for the catalog's record (an in-memory hit, or a SQLite read
in the catalog's reader threads); a track the catalog does not know (not
scanned yet) gets no header; a file whose entity-tag no longer matches the
record gets no header and is asked about again on its next request (the
watcher rescans changed files).

This module never opens, parses or probes a media file, and never blocks the
reactor: every read of the catalog goes through its Deferred API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["DEFAULT_ENTRIES", "TrackDurations"]

#: Tracks remembered before the oldest are forgotten.
DEFAULT_ENTRIES: Final = 4096


class TrackDurations:
    """Durations by track, as the catalog recorded them (see the module docstring).

    :param record_of: the catalog's record of a track, or ``None``
        (:meth:`streamsrv.audio.catalog.Catalog.get`): anything with an
        ``etag`` and a ``metadata.duration_s``.
    :param max_entries: tracks remembered; past it the oldest eighth go.
    """

    def __init__(
        self, record_of: Callable[[str], Awaitable[Any]], max_entries: int = DEFAULT_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._record_of = record_of
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str, float | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, track: str) -> bool:
        """Whether *track*'s record was read already (else :meth:`load` it before :meth:`get`)."""
        return track in self._entries

    async def load(self, track: str) -> None:
        """Read *track*'s record from the catalog and remember its duration (nothing if unknown)."""
        record = await self._record_of(track)
        if record is None:
            return
        entries = self._entries
        if len(entries) >= self._max_entries:
            # Oldest first: dicts keep insertion order.
            for stale in list(entries)[: max(1, self._max_entries // 8)]:
                del entries[stale]
        entries[track] = (record.etag, record.metadata.duration_s)

    def get(self, track: str, etag: str) -> float | None:
        """*track*'s duration in seconds if the catalog's record is of file version *etag*, else ``None``."""
        entry = self._entries.get(track)
        if entry is None:
            return None
        if entry[0] != etag:
            del self._entries[track]  # another version: ask the catalog again next time
            return None
        return entry[1]

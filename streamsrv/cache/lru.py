# -*- test-case-name: tests.test_lru -*-
"""A bounded, thread-safe, in-process least-recently-used cache (track metadata and the like).

:class:`LruCache` keeps at most ``max_entries`` values *and* at most
``max_bytes`` bytes of them (as measured by a ``sizeof`` callable, by default
:func:`estimate_size`), evicting the least recently used first. ``get`` and
``put`` are O(1) (an :class:`~collections.OrderedDict`), and every operation
holds a lock, because worker threads read the cache while the reactor thread
fills it. Counters (``hits``, ``misses``, ``evictions``) and an optional
``on_event`` hook feed the Prometheus metrics.

There is no expiry and no explicit invalidation on change: entries are keyed on
the identity of the file they describe, ``key = (path, size, mtime_ns)`` (or
an :class:`~streamsrv.cache.artifacts.FileIdentity`), so a rewritten file
simply misses and its stale entry ages out; ``invalidate_where`` drops them at
once when a watcher reports a change.

This module must never do I/O, never touch the reactor, never call ``sizeof``,
a predicate or the hook in a way that can deadlock (the hook runs after the
lock is released), and never hold more than its bounds: a value larger than
``max_bytes`` is simply not stored.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Final, Generic, TypeVar

__all__ = [
    "EVENT_EVICTION",
    "EVENT_HIT",
    "EVENT_MISS",
    "CacheStats",
    "LruCache",
    "estimate_size",
]

#: ``on_event`` kind of a lookup that found its key.
EVENT_HIT: Final = "hit"

#: ``on_event`` kind of a lookup that did not.
EVENT_MISS: Final = "miss"

#: ``on_event`` kind of an entry dropped to respect a bound (not an invalidation).
EVENT_EVICTION: Final = "eviction"

#: How deep :func:`estimate_size` looks into nested containers and objects.
_ESTIMATE_DEPTH: Final = 3

#: Types whose ``sys.getsizeof`` is already their whole size.
_FLAT_TYPES: Final = (str, bytes, bytearray, int, float, complex, bool, type(None))

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    """A consistent snapshot of a cache's counters and size, for metrics."""

    #: Lookups that found their key (monotonic).
    hits: int
    #: Lookups that did not (monotonic).
    misses: int
    #: Entries dropped to respect a bound (monotonic; invalidations are not counted).
    evictions: int
    #: Entries held now.
    entries: int
    #: Bytes held now.
    bytes: int
    #: Bytes ever stored (monotonic; only the artifact cache counts them).
    bytes_written: int = 0


def estimate_size(value: object) -> int:
    """
    A cheap estimate of the memory a value holds, in bytes.

    ``sys.getsizeof`` of the value plus that of what it contains (mapping keys
    and values, sequence and set items, instance attributes of plain objects,
    dataclasses and ``__slots__`` classes), looking at most three levels
    deep. Shared objects are counted each time they are seen; that is fine
    for a bound, which only needs to grow with the real footprint.

    :param value: anything.
    :return: a non-negative byte count.
    """
    return _estimate(value, _ESTIMATE_DEPTH)


def _estimate(value: object, depth: int) -> int:
    size = sys.getsizeof(value, 64)
    if depth <= 0 or isinstance(value, _FLAT_TYPES):
        return size
    children: Iterable[object]
    if isinstance(value, Mapping):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children = value
    elif is_dataclass(value) and not isinstance(value, type):
        children = [getattr(value, f.name, None) for f in fields(value)]
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        attributes = vars(value)
        size += sys.getsizeof(attributes, 64)
        children = attributes.values()
    else:
        slots = [
            name
            for klass in type(value).__mro__
            for name in _slot_names(klass)
            if name not in ("__dict__", "__weakref__")
        ]
        children = [getattr(value, name, None) for name in slots]
    return size + sum(_estimate(child, depth - 1) for child in children)


def _slot_names(klass: type) -> tuple[str, ...]:
    slots = klass.__dict__.get("__slots__", ())
    return (slots,) if isinstance(slots, str) else tuple(slots)


class LruCache(Generic[K, V]):
    """
    Least-recently-used values, bounded by entry count and by bytes.

    Invalidation on change comes from the key: use the identity of the source
    file, ``key = (path, size, mtime_ns)``, so a changed file is a different
    key and simply misses (its old entry ages out, or is dropped with
    ``invalidate_where(lambda key: key[0] == path)``).

    ``get`` cannot tell a stored ``None`` from a miss: cache a sentinel for
    negative answers instead of ``None``.

    Every method is safe to call from any thread. ``sizeof`` runs under the
    lock and must be cheap; ``predicate`` (in :meth:`invalidate_where`) runs
    under the lock and must not call back into the cache; ``on_event`` runs
    after the lock is released, once per event, and should not raise (an
    exception propagates to the caller, after the cache is consistent).

    :ivar hits: lookups that found their key.
    :ivar misses: lookups that did not.
    :ivar evictions: entries dropped to respect a bound.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        sizeof: Callable[[V], int] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        """
        :param max_entries: most values held; 0 stores nothing.
        :param max_bytes: most bytes held (sum of ``sizeof``); 0 stores nothing.
        :param sizeof: the size of a value in bytes; default :func:`estimate_size`.
        :param on_event: called with ``"hit"``, ``"miss"`` or ``"eviction"``.
        :raise ValueError: a negative bound.
        """
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, not {max_entries}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_entries: Final = max_entries
        self.max_bytes: Final = max_bytes
        self._sizeof: Callable[[V], int] = sizeof if sizeof is not None else estimate_size
        self._on_event = on_event
        self._lock = threading.Lock()
        # key -> (value, size); least recently used first.
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        """
        The value stored under ``key``, now the most recently used, or ``None``.

        Counts a hit or a miss.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
        self._emit(EVENT_MISS if entry is None else EVENT_HIT)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V) -> None:
        """
        Store ``value`` under ``key`` as the most recently used, evicting as needed.

        A value larger than ``max_bytes`` (or any value when ``max_entries``
        is 0) is not stored, and whatever ``key`` held before is dropped, so
        a stale value never outlives its replacement.

        :raise ValueError: ``sizeof`` returned a negative size.
        """
        size = self._sizeof(value)
        if size < 0:
            raise ValueError(f"sizeof returned a negative size ({size})")
        evicted = 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size <= self.max_bytes and self.max_entries > 0:
                self._entries[key] = (value, size)
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
                    evicted += 1
                self.evictions += evicted
        for _ in range(evicted):
            self._emit(EVENT_EVICTION)

    def invalidate(self, key: K) -> None:
        """Drop ``key`` if it is stored (not counted as an eviction)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def invalidate_where(self, predicate: Callable[[K], bool]) -> int:
        """
        Drop every key for which ``predicate(key)`` is true.

        O(n) in the entries held; not counted as evictions.

        :return: how many entries were dropped.
        """
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                _, size = self._entries.pop(key)
                self._bytes -= size
        return len(doomed)

    def clear(self) -> None:
        """Drop every entry. The counters are kept (they are monotonic, for metrics)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        """How many entries are held."""
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        """How many bytes (sum of ``sizeof``) are held."""
        with self._lock:
            return self._bytes

    @property
    def stats(self) -> CacheStats:
        """Counters, entries and bytes, read together under the lock."""
        with self._lock:
            return CacheStats(
                hits=self.hits,
                misses=self.misses,
                evictions=self.evictions,
                entries=len(self._entries),
                bytes=self._bytes,
            )

    def _emit(self, kind: str) -> None:
        if self._on_event is not None:
            self._on_event(kind)

# -*- test-case-name: tests.test_lru -*-
"""Tests for :mod:`streamsrv.cache.lru`.

Behaviour is pinned by example, by a model test against a deliberately naive
reference (a list scanned end to end), and by a smoke test in which threads
hammer one cache while the interpreter switches threads as often as it can.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.cache.lru import CacheStats, LruCache, estimate_size


def _length(value: str) -> int:
    return len(value)


class _Recorder:
    """An ``on_event`` hook that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, kind: str) -> None:
        self.events.append(kind)


class LruOrderTests(unittest.TestCase):
    """The least recently used entry goes first."""

    def test_eviction_order_is_insertion_order_without_reads(self) -> None:
        """Without reads, entries leave in the order they were stored."""
        cache: LruCache[str, str] = LruCache(max_entries=2, max_bytes=1000, sizeof=_length)
        cache.put("a", "1")
        cache.put("b", "2")
        cache.put("c", "3")
        self.assertIsNone(cache.get("a"))
        self.assertEqual(cache.get("b"), "2")
        self.assertEqual(cache.get("c"), "3")

    def test_get_makes_an_entry_most_recent(self) -> None:
        """A hit protects the entry: the next eviction takes the one not read."""
        cache: LruCache[str, str] = LruCache(max_entries=2, max_bytes=1000, sizeof=_length)
        cache.put("a", "1")
        cache.put("b", "2")
        self.assertEqual(cache.get("a"), "1")
        cache.put("c", "3")
        self.assertEqual(cache.get("a"), "1")
        self.assertIsNone(cache.get("b"))

    def test_put_of_an_existing_key_makes_it_most_recent_and_replaces_it(self) -> None:
        """Storing a key again replaces its value and its size, and refreshes it."""
        cache: LruCache[str, str] = LruCache(max_entries=2, max_bytes=1000, sizeof=_length)
        cache.put("a", "1")
        cache.put("b", "2")
        cache.put("a", "one")
        cache.put("c", "3")
        self.assertEqual(cache.get("a"), "one")
        self.assertIsNone(cache.get("b"))
        self.assertEqual(cache.bytes, len("one") + len("3"))
        self.assertEqual(cache.evictions, 1)


class LruBoundsTests(unittest.TestCase):
    """Both bounds hold after every operation."""

    def test_entry_bound(self) -> None:
        """No more than ``max_entries`` entries, however small."""
        cache: LruCache[int, str] = LruCache(max_entries=3, max_bytes=10**6, sizeof=_length)
        for key in range(10):
            cache.put(key, "")
            self.assertLessEqual(len(cache), 3)
        self.assertEqual(len(cache), 3)
        self.assertEqual(cache.evictions, 7)

    def test_byte_bound(self) -> None:
        """No more than ``max_bytes`` bytes: a large value evicts several small ones."""
        cache: LruCache[str, str] = LruCache(max_entries=100, max_bytes=10, sizeof=_length)
        for key in "abcde":
            cache.put(key, "xx")
        self.assertEqual((len(cache), cache.bytes), (5, 10))
        cache.put("big", "x" * 7)
        self.assertEqual(cache.bytes, 9)
        self.assertEqual(len(cache), 2)
        self.assertEqual(cache.get("e"), "xx")
        self.assertIsNone(cache.get("d"))
        self.assertEqual(cache.evictions, 4)

    def test_oversize_value_is_not_stored(self) -> None:
        """A value larger than ``max_bytes`` is not stored and evicts nothing."""
        cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=5, sizeof=_length)
        cache.put("a", "12345")
        cache.put("huge", "123456")
        self.assertIsNone(cache.get("huge"))
        self.assertEqual(cache.get("a"), "12345")
        self.assertEqual(cache.evictions, 0)

    def test_oversize_replacement_drops_the_old_value(self) -> None:
        """Replacing a key with an oversize value drops the old one: a stale value never survives."""
        cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=5, sizeof=_length)
        cache.put("a", "old")
        cache.put("a", "too long")
        self.assertIsNone(cache.get("a"))
        self.assertEqual((len(cache), cache.bytes), (0, 0))

    def test_zero_bounds_store_nothing(self) -> None:
        """``max_entries=0`` or ``max_bytes=0`` (except for zero-size values) disables the cache."""
        no_entries: LruCache[str, str] = LruCache(max_entries=0, max_bytes=100, sizeof=_length)
        no_entries.put("a", "1")
        self.assertEqual(len(no_entries), 0)
        no_bytes: LruCache[str, str] = LruCache(max_entries=10, max_bytes=0, sizeof=_length)
        no_bytes.put("a", "1")
        self.assertEqual(len(no_bytes), 0)

    def test_negative_bounds_are_refused(self) -> None:
        """A negative bound is a programming error."""
        self.assertRaises(ValueError, LruCache, -1, 10)
        self.assertRaises(ValueError, LruCache, 10, -1)

    def test_negative_size_is_refused(self) -> None:
        """A ``sizeof`` that answers a negative size is refused and nothing is stored."""
        cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=10, sizeof=lambda value: -1)
        self.assertRaises(ValueError, cache.put, "a", "1")
        self.assertEqual(len(cache), 0)

    def test_default_sizeof_bounds_bytes(self) -> None:
        """Without ``sizeof`` the estimate is used: a byte bound still limits large values."""
        cache: LruCache[str, bytes] = LruCache(max_entries=100, max_bytes=10_000)
        cache.put("small", b"x" * 100)
        cache.put("large", b"x" * 20_000)
        self.assertIsNotNone(cache.get("small"))
        self.assertIsNone(cache.get("large"))
        self.assertGreaterEqual(cache.bytes, 100)


class LruInvalidationTests(unittest.TestCase):
    """Invalidation drops entries without counting evictions."""

    def test_invalidate(self) -> None:
        """``invalidate`` drops one key and its bytes; an absent key is fine."""
        cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=100, sizeof=_length)
        cache.put("a", "123")
        cache.put("b", "45")
        cache.invalidate("a")
        cache.invalidate("nothing")
        self.assertIsNone(cache.get("a"))
        self.assertEqual((len(cache), cache.bytes, cache.evictions), (1, 2, 0))

    def test_invalidate_where(self) -> None:
        """``invalidate_where`` drops the matching keys and says how many."""
        cache: LruCache[tuple[str, int, int], str] = LruCache(max_entries=10, max_bytes=100, sizeof=_length)
        cache.put(("a.mp3", 10, 1), "old")
        cache.put(("a.mp3", 12, 2), "new")
        cache.put(("b.mp3", 10, 1), "other")
        dropped = cache.invalidate_where(lambda key: key[0] == "a.mp3")
        self.assertEqual(dropped, 2)
        self.assertEqual(cache.get(("b.mp3", 10, 1)), "other")
        self.assertEqual((len(cache), cache.bytes, cache.evictions), (1, 5, 0))
        self.assertEqual(cache.invalidate_where(lambda key: False), 0)

    def test_changed_file_identity_misses(self) -> None:
        """Keyed on ``(path, size, mtime_ns)``, a rewritten file is a miss, not a stale hit."""
        cache: LruCache[tuple[str, int, int], str] = LruCache(max_entries=10, max_bytes=100, sizeof=_length)
        cache.put(("a.mp3", 1000, 1_700_000_000_000_000_000), "title A")
        self.assertIsNone(cache.get(("a.mp3", 1000, 1_700_000_000_000_000_001)))
        self.assertIsNone(cache.get(("a.mp3", 1001, 1_700_000_000_000_000_000)))
        self.assertEqual(cache.get(("a.mp3", 1000, 1_700_000_000_000_000_000)), "title A")

    def test_clear_keeps_counters(self) -> None:
        """``clear`` empties the cache; hits, misses and evictions stay monotonic."""
        cache: LruCache[str, str] = LruCache(max_entries=1, max_bytes=100, sizeof=_length)
        cache.put("a", "1")
        cache.put("b", "2")
        cache.get("b")
        cache.get("a")
        cache.clear()
        self.assertEqual((len(cache), cache.bytes), (0, 0))
        self.assertEqual((cache.hits, cache.misses, cache.evictions), (1, 1, 1))
        self.assertIsNone(cache.get("b"))


class LruCounterTests(unittest.TestCase):
    """Counters and the ``on_event`` hook agree with what happened."""

    def test_counters(self) -> None:
        """Hits, misses and evictions are counted, and ``stats`` reports them with the size."""
        cache: LruCache[str, str] = LruCache(max_entries=2, max_bytes=100, sizeof=_length)
        cache.get("a")
        cache.put("a", "1")
        cache.get("a")
        cache.get("a")
        cache.put("b", "22")
        cache.put("c", "333")
        self.assertEqual((cache.hits, cache.misses, cache.evictions), (2, 1, 1))
        self.assertEqual(
            cache.stats, CacheStats(hits=2, misses=1, evictions=1, entries=2, bytes=5, bytes_written=0)
        )

    def test_hook_sees_every_event_in_order(self) -> None:
        """The hook is told ``miss``, ``hit`` and ``eviction`` as they happen."""
        recorder = _Recorder()
        cache: LruCache[str, str] = LruCache(max_entries=1, max_bytes=100, sizeof=_length, on_event=recorder)
        cache.get("a")
        cache.put("a", "1")
        cache.get("a")
        cache.put("b", "2")
        cache.invalidate("b")
        self.assertEqual(recorder.events, ["miss", "hit", "eviction"])

    def test_one_eviction_event_per_entry(self) -> None:
        """A put that evicts several entries reports each eviction."""
        recorder = _Recorder()
        cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=4, sizeof=_length, on_event=recorder)
        for key in "abcd":
            cache.put(key, "x")
        cache.put("big", "xxxx")
        self.assertEqual(recorder.events, ["eviction"] * 4)
        self.assertEqual(cache.evictions, 4)

    def test_hook_may_use_the_cache(self) -> None:
        """The hook runs outside the lock: it may read the cache without deadlocking."""
        seen: list[tuple[str, int]] = []

        def hook(kind: str) -> None:
            seen.append((kind, len(cache)))
            if kind == "eviction":
                cache.get("probe")

        cache: LruCache[str, str] = LruCache(max_entries=1, max_bytes=100, sizeof=_length, on_event=hook)
        cache.put("a", "1")
        cache.put("b", "2")
        self.assertEqual(seen, [("eviction", 1), ("miss", 1)])


class EstimateSizeTests(unittest.TestCase):
    """The default ``sizeof`` grows with what a value holds."""

    def test_bytes_and_strings(self) -> None:
        """Flat values are measured by ``sys.getsizeof``."""
        self.assertEqual(estimate_size(b"x" * 1000), sys.getsizeof(b"x" * 1000))
        self.assertGreater(estimate_size("x" * 1000), 1000)

    def test_containers_count_their_contents(self) -> None:
        """A mapping, a list and a tuple count what they hold, nested a few levels."""
        self.assertGreater(estimate_size({"title": "x" * 500}), 500)
        self.assertGreater(estimate_size(["x" * 500]), 500)
        self.assertGreater(estimate_size({"replaygain": {"track_gain": "x" * 500}}), 500)

    def test_objects_count_their_attributes(self) -> None:
        """Plain objects, dataclasses and ``__slots__`` classes count their attribute values."""

        @dataclass(frozen=True, slots=True)
        class Slotted:
            title: str

        @dataclass
        class Plain:
            title: str

        class Bare:
            def __init__(self) -> None:
                self.title = "x" * 500

        class Slots:
            __slots__ = ("title",)

            def __init__(self) -> None:
                self.title = "x" * 500

        for value in (Slotted("x" * 500), Plain("x" * 500), Bare(), Slots()):
            self.assertGreater(estimate_size(value), 500, value)


@dataclass(frozen=True)
class _Value:
    """A value whose size is stated, so the model knows it."""

    serial: int
    size: int


def _size(value: _Value) -> int:
    return value.size


class _ReferenceLru:
    """The obvious, slow LRU the real one must agree with."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.items: list[tuple[Hashable, _Value]] = []
        self.hits = self.misses = self.evictions = 0

    def _find(self, key: Hashable) -> int | None:
        for index, (stored, _) in enumerate(self.items):
            if stored == key:
                return index
        return None

    def get(self, key: Hashable) -> _Value | None:
        index = self._find(key)
        if index is None:
            self.misses += 1
            return None
        self.hits += 1
        item = self.items.pop(index)
        self.items.append(item)
        return item[1]

    def put(self, key: Hashable, value: _Value) -> None:
        self.invalidate(key)
        if value.size > self.max_bytes or self.max_entries == 0:
            return
        self.items.append((key, value))
        while len(self.items) > self.max_entries or self.bytes > self.max_bytes:
            self.items.pop(0)
            self.evictions += 1

    def invalidate(self, key: Hashable) -> None:
        index = self._find(key)
        if index is not None:
            del self.items[index]

    def invalidate_where(self, modulus: int) -> int:
        before = len(self.items)
        self.items = [(key, value) for key, value in self.items if not _matches(key, modulus)]
        return before - len(self.items)

    @property
    def bytes(self) -> int:
        return sum(value.size for _, value in self.items)


def _matches(key: Hashable, modulus: int) -> bool:
    assert isinstance(key, int)
    return key % modulus == 0


def _divisible_by(modulus: int) -> Callable[[int], bool]:
    return lambda key: _matches(key, modulus)


_KEYS = st.integers(min_value=0, max_value=7)

_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("get"), _KEYS),
        st.tuples(st.just("put"), _KEYS, st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("invalidate"), _KEYS),
        st.tuples(st.just("invalidate_where"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


class LruModelTests(unittest.TestCase):
    """The cache behaves like the naive reference for any sequence of operations."""

    @given(
        max_entries=st.integers(min_value=0, max_value=6),
        max_bytes=st.integers(min_value=0, max_value=100),
        operations=_OPERATIONS,
    )
    def test_agrees_with_reference(
        self, max_entries: int, max_bytes: int, operations: list[tuple[object, ...]]
    ) -> None:
        """Every answer, the size, the entry count and every counter match the reference."""
        real: LruCache[int, _Value] = LruCache(max_entries, max_bytes, sizeof=_size)
        model = _ReferenceLru(max_entries, max_bytes)
        for serial, operation in enumerate(operations):
            name = operation[0]
            if name == "get":
                key = operation[1]
                assert isinstance(key, int)
                self.assertEqual(real.get(key), model.get(key))
            elif name == "put":
                key, size = operation[1], operation[2]
                assert isinstance(key, int) and isinstance(size, int)
                value = _Value(serial, size)
                real.put(key, value)
                model.put(key, value)
            elif name == "invalidate":
                key = operation[1]
                assert isinstance(key, int)
                real.invalidate(key)
                model.invalidate(key)
            elif name == "invalidate_where":
                modulus = operation[1]
                assert isinstance(modulus, int)
                self.assertEqual(
                    real.invalidate_where(_divisible_by(modulus)),
                    model.invalidate_where(modulus),
                )
            else:
                real.clear()
                model.items.clear()
            self.assertEqual(len(real), len(model.items))
            self.assertEqual(real.bytes, model.bytes)
            self.assertLessEqual(len(real), max_entries)
            self.assertLessEqual(real.bytes, max_bytes)
            self.assertEqual(
                (real.hits, real.misses, real.evictions), (model.hits, model.misses, model.evictions)
            )


class LruThreadTests(unittest.TestCase):
    """Threads hammering one cache leave it consistent."""

    def test_threads_hammering(self) -> None:
        """
        Eight threads mixing every operation, switching as often as possible:
        no exception, bounds hold, every stored value is the right one, the
        byte count equals the sum of the values held, and no hit, miss or
        event is lost.
        """
        previous = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        self.addCleanup(sys.setswitchinterval, previous)
        events: list[str] = []
        cache: LruCache[int, str] = LruCache(
            max_entries=20, max_bytes=300, sizeof=_length, on_event=events.append
        )
        keys = range(64)
        gets = [0] * 8
        errors: list[BaseException] = []

        def expected(key: int) -> str:
            return str(key) * (key % 9 + 1)

        def hammer(worker: int) -> None:
            rng = random.Random(worker)
            try:
                for _ in range(3000):
                    key = rng.choice(keys)
                    roll = rng.random()
                    if roll < 0.5:
                        gets[worker] += 1
                        found = cache.get(key)
                        if found is not None and found != expected(key):
                            raise AssertionError(f"{key} -> {found!r}")
                    elif roll < 0.9:
                        cache.put(key, expected(key))
                    elif roll < 0.97:
                        cache.invalidate(key)
                    elif roll < 0.995:
                        cache.invalidate_where(lambda stored: stored % 7 == worker % 7)
                    else:
                        cache.clear()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=hammer, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        self.assertEqual(errors, [])
        stats = cache.stats
        self.assertEqual(stats.hits + stats.misses, sum(gets))
        self.assertEqual(events.count("hit"), stats.hits)
        self.assertEqual(events.count("miss"), stats.misses)
        self.assertEqual(events.count("eviction"), stats.evictions)
        self.assertLessEqual(stats.entries, 20)
        self.assertLessEqual(stats.bytes, 300)
        held = {key: cache.get(key) for key in keys}
        present = {key: value for key, value in held.items() if value is not None}
        self.assertEqual(present, {key: expected(key) for key in present})
        self.assertEqual(len(present), stats.entries)
        self.assertEqual(sum(len(value) for value in present.values()), stats.bytes)

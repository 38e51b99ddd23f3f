# -*- test-case-name: tests.test_revocation_signal -*-
"""Tests for :mod:`streamsrv.auth.revocationsignal`: the host's doorbell, and what rings it.

A revocation stored through one process's cache rings the doorbell; another
process's cache is then not :meth:`~RevocationCache.current` and the guard
reloads it before trusting a bearer token, with no poll interval in between.
"Two processes" are two caches, each with its own mapping of the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamsrv.auth.revocation import IRevocationStore, RevocationCache, RevocationSnapshot
from streamsrv.auth.revocationsignal import SIGNAL_FILE, RevocationSignal, open_signal
from tests.test_guard import NOW, TRACK, GuardMixin
from tests.test_revocation import jwt_principal


@implementer(IRevocationStore)
class SharedMemoryStore:
    """A store answering at once, whose state *shared* several instances see (one "Redis")."""

    def __init__(self, shared: dict[str, Any]) -> None:
        shared.setdefault("version", 0)
        shared.setdefault("snapshot", RevocationSnapshot(0))
        self.shared = shared
        self.reads = 0

    def start(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _bump(self, snapshot: RevocationSnapshot) -> Deferred[None]:
        self.shared["version"] += 1
        self.shared["snapshot"] = RevocationSnapshot(
            self.shared["version"], snapshot.tokens, snapshot.families, snapshot.subjects
        )
        return succeed(None)

    def revoke_token(self, jti: str, expires_at: float) -> Deferred[None]:
        return self._bump(self.shared["snapshot"].with_token(jti))

    def revoke_subject(self, sub: str, before: float) -> Deferred[None]:
        return self._bump(self.shared["snapshot"].with_subject(sub, before))

    def revoke_family(self, family: str, expires_at: float) -> Deferred[None]:
        return self._bump(self.shared["snapshot"].with_family(family))

    def spend_refresh(self, jti: str, family: str, expires_at: float) -> Deferred[bool]:
        return succeed(True)

    def snapshot(self) -> Deferred[RevocationSnapshot]:
        self.reads += 1
        return succeed(self.shared["snapshot"])

    def version(self) -> Deferred[int]:
        return succeed(int(self.shared["version"]))


def two_processes(testcase: unittest.TestCase) -> tuple[RevocationCache, RevocationCache, SharedMemoryStore]:
    """Two caches on one shared store, each with its own mapping of one doorbell; both loaded.

    Their clock never advances: no poll runs after the first, so only the doorbell can tell.
    """
    data = Path(testcase.mktemp())
    shared: dict[str, Any] = {}
    clock = Clock()
    clock.advance(NOW)
    caches = []
    stores = []
    for _ in range(2):
        signal = open_signal(data)
        assert signal is not None
        store = SharedMemoryStore(shared)
        cache = RevocationCache(store, clock, interval_s=60.0, signal=signal)
        cache.startService()
        testcase.addCleanup(cache.stopService)
        caches.append(cache)
        stores.append(store)
    return caches[0], caches[1], stores[1]


class RevocationSignalTests(unittest.TestCase):
    """The word in the shared file."""

    def test_ring_seen_through_another_mapping(self) -> None:
        """A ring through one mapping changes the word every other mapping of the file reads."""
        data = Path(self.mktemp())
        first, second = open_signal(data), open_signal(data)
        assert first is not None and second is not None
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        before = second.read()
        self.assertEqual(len(before), 8)
        first.ring()
        self.assertNotEqual(second.read(), before)
        self.assertEqual(second.read(), first.read())
        self.assertEqual((data / SIGNAL_FILE).stat().st_size, 8)

    def test_reopening_keeps_the_word(self) -> None:
        """Opening the file again (a worker restarting) neither clears nor changes the word."""
        data = Path(self.mktemp())
        first = open_signal(data)
        assert first is not None
        first.ring()
        word = first.read()
        first.close()
        again = open_signal(data)
        assert again is not None
        self.addCleanup(again.close)
        self.assertEqual(again.read(), word)

    def test_closed(self) -> None:
        """A closed doorbell reads empty and ignores rings."""
        signal = open_signal(Path(self.mktemp()))
        assert isinstance(signal, RevocationSignal)
        signal.close()
        signal.ring()
        self.assertEqual(signal.read(), b"")
        signal.close()  # twice is fine

    def test_unopenable_means_no_doorbell(self) -> None:
        """A data dir that cannot hold the file gives no doorbell (a logged degradation), not an error."""
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"not a directory")
        self.assertIsNone(open_signal(blocker))


class CacheDoorbellTests(unittest.TestCase):
    """What the doorbell does to :class:`RevocationCache`."""

    def test_store_shared_memory_provides_interface(self) -> None:
        """The test store is a real :class:`IRevocationStore`."""
        self.assertTrue(verifyObject(IRevocationStore, SharedMemoryStore({})))

    async def test_revocation_rings_and_other_catches_up(self) -> None:
        """A revocation through A makes B not current; B's catch-up applies it and B is current again."""
        a, b, _ = two_processes(self)
        alice = jwt_principal(sub="alice", iat=NOW - 10)
        self.assertTrue(b.current())
        await a.revoke_subject("alice", NOW)
        self.assertTrue(a.is_revoked(alice))
        self.assertFalse(b.current())
        self.assertFalse(b.is_revoked(alice))  # no poll ran
        await b.catch_up()
        self.assertTrue(b.is_revoked(alice))
        self.assertTrue(b.current())

    async def test_waiters_share_one_reload(self) -> None:
        """Callers catching up at once cause one reload of the store, not one each."""
        a, b, b_store = two_processes(self)
        await a.revoke_token("j-1", NOW + 60)
        reads = b_store.reads
        b._waiting.append(Deferred())  # a reload in progress: later callers join it
        joined = b.catch_up()
        self.assertFalse(joined.called)
        self.assertEqual(b_store.reads, reads)

    async def test_without_doorbell_always_current(self) -> None:
        """A cache without a doorbell is always current (the poll alone applies)."""
        cache = RevocationCache(SharedMemoryStore({}), Clock())
        self.assertTrue(cache.current())

    async def test_stopped_cache_closes_its_doorbell(self) -> None:
        """Stopping the cache closes its mapping; it then counts as current."""
        a, b, _ = two_processes(self)
        await b.stopService()
        await a.revoke_token("j-1", NOW + 60)
        self.assertTrue(b.current())


class GuardDoorbellTests(GuardMixin, unittest.TestCase):
    """The guard reloads a stale snapshot before trusting a bearer token it remembers."""

    def setUp(self) -> None:
        self.other, self.revocations, _ = two_processes(self)
        super().setUp()

    def test_remembered_token_refused_right_after_revocation_elsewhere(self) -> None:
        """A token verified and remembered here is refused on its next request once another
        process revoked its subject, with no poll in between; bob is unaffected."""
        alice = self.token(sub="alice")
        bob = self.token(sub="bob")
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + alice)[0], 200)
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + bob)[0], 200)
        self.assertTrue(Deferred.fromCoroutine(self.other.revoke_subject("alice", NOW + 1)).called)
        status, _, body = self.fetch(TRACK, authorization="Bearer " + alice)
        self.assertEqual((status, self.code(body)), (401, "TOKEN_REVOKED"))
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + bob)[0], 200)

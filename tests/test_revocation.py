# -*- test-case-name: tests.test_revocation -*-
"""Tests for :mod:`streamsrv.auth.revocation`: the snapshot, the SQLite store, the per-process cache.

:class:`RevocationStoreContractMixin` holds the behaviour every store keeps;
it runs here against :class:`SqliteRevocationStore` on temporary files and in
``test_revocation_redis`` against :class:`RedisRevocationStore` on a real
Redis.  "Two processes" are two store instances on the same file (or Redis
prefix), each with its own connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamsrv.auth.principal import Principal
from streamsrv.auth.revocation import (
    AUTH_DB_FILE,
    PURGE_INTERVAL_S,
    REVOCATION_RETENTION_S,
    UNLOADED,
    IRevocationStore,
    RevocationCache,
    RevocationSnapshot,
    RevocationStoreService,
    SqliteRevocationStore,
)

#: 2026-01-01T00:00:00Z, the tests' "now".
NOW = 1_767_225_600

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


def jwt_principal(
    sub: str = "alice", jti: str | None = "j-1", family: str | None = None, iat: float | None = NOW
) -> Principal:
    """A JWT principal with the given token id, family and ``iat``."""
    return Principal(
        sub=sub,
        roles=frozenset({"listener"}),
        permissions=frozenset({"stream:read"}),
        via="jwt",
        token_id=jti,
        family=family,
        issued_at=iat,
        expires_at=None if iat is None else iat + 900,
    )


@implementer(IReactorTime)
class ShiftedClock:
    """
    A clock whose time is :data:`NOW` plus what the test advanced, while its
    delayed calls (command timeouts) run on the real reactor.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        """Move the time forward by *seconds* (nothing is run)."""
        self.offset += seconds

    def seconds(self) -> float:
        return NOW + self.offset

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        return reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return []


async def sleep(seconds: float) -> None:
    """Let the real reactor run for *seconds*."""
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (in real time) until *condition* holds, or fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s")
        await sleep(0.01)


def capture_log(testcase: unittest.TestCase) -> list[LogEvent]:
    """Every log event emitted until *testcase* ends."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


# --- the snapshot --------------------------------------------------------------------------


class RevocationSnapshotTests(unittest.TestCase):
    """What a snapshot revokes."""

    def test_empty_revokes_nothing(self) -> None:
        """An empty snapshot revokes no token."""
        self.assertFalse(RevocationSnapshot(0).revokes(jwt_principal()))

    def test_by_jti(self) -> None:
        """A principal whose ``jti`` is revoked is revoked; another jti, or none, is not."""
        snapshot = RevocationSnapshot(1, tokens=frozenset({"j-1"}))
        self.assertTrue(snapshot.revokes(jwt_principal(jti="j-1")))
        self.assertFalse(snapshot.revokes(jwt_principal(jti="j-2")))
        self.assertFalse(snapshot.revokes(jwt_principal(jti=None)))

    def test_by_family(self) -> None:
        """Every token carrying a revoked family is revoked, whatever its jti."""
        snapshot = RevocationSnapshot(1, families=frozenset({"f-1"}))
        self.assertTrue(snapshot.revokes(jwt_principal(jti="any", family="f-1")))
        self.assertFalse(snapshot.revokes(jwt_principal(jti="any", family="f-2")))
        self.assertFalse(snapshot.revokes(jwt_principal(jti="f-1", family=None)))

    def test_by_subject(self) -> None:
        """A subject cut-off revokes that sub's tokens issued before it (and those without ``iat``)."""
        snapshot = RevocationSnapshot(1, subjects={"alice": NOW + 10})
        self.assertTrue(snapshot.revokes(jwt_principal(iat=NOW + 9.5)))
        self.assertFalse(snapshot.revokes(jwt_principal(iat=NOW + 10)))
        self.assertFalse(snapshot.revokes(jwt_principal(iat=NOW + 11)))
        self.assertTrue(snapshot.revokes(jwt_principal(iat=None)))
        self.assertFalse(snapshot.revokes(jwt_principal(sub="bob", iat=NOW)))

    def test_local_additions(self) -> None:
        """``with_*`` return a new snapshot of the same version; the later subject cut-off wins."""
        snapshot = RevocationSnapshot(7)
        grown = snapshot.with_token("j").with_family("f").with_subject("s", 5.0).with_subject("s", 3.0)
        self.assertEqual(
            (grown.version, grown.tokens, grown.families, dict(grown.subjects)),
            (7, frozenset({"j"}), frozenset({"f"}), {"s": 5.0}),
        )
        self.assertEqual(snapshot, RevocationSnapshot(7))

    def test_subjects_read_only(self) -> None:
        """A snapshot's subject map cannot be changed behind its back."""
        source = {"alice": 1.0}
        snapshot = RevocationSnapshot(1, subjects=source)
        source["bob"] = 2.0
        self.assertNotIn("bob", snapshot.subjects)
        with self.assertRaises(TypeError):
            snapshot.subjects["carol"] = 3.0  # type: ignore[index]


# --- the store contract -----------------------------------------------------------------------


class RevocationStoreContractMixin(_MixinBase):
    """
    What every :class:`IRevocationStore` does.  Subclasses are trial test
    cases providing :meth:`open_store`, :meth:`stored_entries` and ``clock``.
    """

    clock: Any

    def open_store(self) -> IRevocationStore:
        """A store over the test's shared backing (a new instance each call: another "process")."""
        raise NotImplementedError

    async def stored_entries(self) -> int:
        """How many revocation and spent entries the backing holds, expired or not."""
        raise NotImplementedError

    async def started(self) -> IRevocationStore:
        """:meth:`open_store`, started, closed at cleanup."""
        store = self.open_store()
        self.addCleanup(store.close)
        await store.start()
        return store

    def test_provides_interface(self) -> None:
        """The store provides :class:`IRevocationStore`."""
        self.assertTrue(verifyObject(IRevocationStore, self.open_store()))

    async def test_empty(self) -> None:
        """A new store is at version 0 and revokes nothing."""
        store = await self.started()
        self.assertEqual(await store.version(), 0)
        self.assertEqual(await store.snapshot(), RevocationSnapshot(0))

    async def test_revoke_token(self) -> None:
        """A revoked jti is in the snapshot, and the version moved."""
        store = await self.started()
        await store.revoke_token("j-1", NOW + 900)
        snapshot = await store.snapshot()
        self.assertEqual((snapshot.version, snapshot.tokens), (1, frozenset({"j-1"})))
        self.assertTrue(snapshot.revokes(jwt_principal(jti="j-1")))

    async def test_revoke_family(self) -> None:
        """A revoked family is in the snapshot and revokes its tokens."""
        store = await self.started()
        await store.revoke_family("f-1", NOW + 900)
        snapshot = await store.snapshot()
        self.assertEqual((snapshot.version, snapshot.families), (1, frozenset({"f-1"})))
        self.assertTrue(snapshot.revokes(jwt_principal(jti="x", family="f-1")))

    async def test_revoke_subject(self) -> None:
        """A subject cut-off is kept exactly; a later one replaces it, an earlier one does not."""
        store = await self.started()
        await store.revoke_subject("alice", NOW + 0.25)
        self.assertEqual(dict((await store.snapshot()).subjects), {"alice": NOW + 0.25})
        await store.revoke_subject("alice", NOW + 100)
        await store.revoke_subject("alice", NOW + 50)
        snapshot = await store.snapshot()
        self.assertEqual((snapshot.version, dict(snapshot.subjects)), (3, {"alice": NOW + 100}))

    async def test_version_bumps_on_every_revocation_only(self) -> None:
        """Each revocation, even a repeated one, bumps the version; spending a refresh token does not."""
        store = await self.started()
        await store.revoke_token("j", NOW + 60)
        await store.revoke_token("j", NOW + 60)
        await store.revoke_family("f", NOW + 60)
        await store.revoke_subject("s", NOW)
        self.assertEqual(await store.version(), 4)
        await store.spend_refresh("r", "f", NOW + 60)
        self.assertEqual(await store.version(), 4)
        self.assertEqual((await store.snapshot()).version, 4)

    async def test_spend_twice(self) -> None:
        """Spending a refresh token is ``True`` the first time, ``False`` after; other jtis are separate."""
        store = await self.started()
        self.assertTrue(await store.spend_refresh("r-1", "f", NOW + 60))
        self.assertFalse(await store.spend_refresh("r-1", "f", NOW + 60))
        self.assertFalse(await store.spend_refresh("r-1", "other", NOW + 60))
        self.assertTrue(await store.spend_refresh("r-2", "f", NOW + 60))

    async def test_two_processes_agree(self) -> None:
        """What one instance writes, another on the same backing reads, spends included."""
        first = await self.started()
        second = await self.started()
        await first.revoke_token("j-1", NOW + 60)
        await second.revoke_family("f-1", NOW + 60)
        await first.revoke_subject("alice", NOW)
        self.assertEqual(await first.version(), await second.version())
        self.assertEqual(await first.snapshot(), await second.snapshot())
        self.assertEqual(
            await second.snapshot(),
            RevocationSnapshot(3, frozenset({"j-1"}), frozenset({"f-1"}), {"alice": float(NOW)}),
        )
        self.assertTrue(await first.spend_refresh("r-1", "f", NOW + 60))
        self.assertFalse(await second.spend_refresh("r-1", "f", NOW + 60))

    async def test_spend_is_atomic(self) -> None:
        """Of 20 concurrent attempts to spend one token, through two instances, exactly one wins."""
        stores = [await self.started(), await self.started()]
        attempts = [stores[i % 2].spend_refresh("r-race", "f", NOW + 60) for i in range(20)]
        results = await gatherResults(attempts)
        self.assertEqual(sorted(results), [False] * 19 + [True])

    async def test_times_must_be_finite(self) -> None:
        """An infinite or NaN time is a programming error, refused before anything is written."""
        store = await self.started()
        for bad in (float("inf"), float("nan")):
            with self.assertRaises(ValueError):
                store.revoke_token("j", bad)
            with self.assertRaises(ValueError):
                store.revoke_family("f", bad)
            with self.assertRaises(ValueError):
                store.revoke_subject("s", bad)
            with self.assertRaises(ValueError):
                store.spend_refresh("r", "f", bad)
        self.assertEqual(await store.snapshot(), RevocationSnapshot(0))

    async def test_expired_entries_leave_the_snapshot(self) -> None:
        """Entries whose time is up are no longer in the snapshot; a longer expiry given later wins."""
        store = await self.started()
        await store.revoke_token("short", NOW + 10)
        await store.revoke_token("extended", NOW + 10)
        await store.revoke_token("extended", NOW + 100)
        await store.revoke_token("extended", NOW + 20)  # a shorter one does not shorten it
        await store.revoke_family("f", NOW + 10)
        await store.revoke_subject("alice", NOW)
        self.clock.advance(10)
        snapshot = await store.snapshot()
        self.assertEqual((snapshot.tokens, snapshot.families), (frozenset({"extended"}), frozenset()))
        self.assertIn("alice", snapshot.subjects)
        self.clock.advance(REVOCATION_RETENTION_S)
        snapshot = await store.snapshot()
        self.assertEqual(snapshot, RevocationSnapshot(snapshot.version))

    async def test_expired_entries_are_purged(self) -> None:
        """Writes delete what has expired from the backing, not just from snapshots."""
        store = await self.started()
        await store.revoke_token("j", NOW + 10)
        await store.revoke_family("f", NOW + 10)
        await store.revoke_subject("alice", NOW)
        self.assertTrue(await store.spend_refresh("r", "f", NOW + 10))
        self.assertEqual(await self.stored_entries(), 4)
        self.clock.advance(REVOCATION_RETENTION_S + PURGE_INTERVAL_S)
        await store.revoke_token("j2", NOW + REVOCATION_RETENTION_S + 10_000)
        await store.revoke_family("f2", NOW + REVOCATION_RETENTION_S + 10_000)
        await store.revoke_subject("bob", NOW + REVOCATION_RETENTION_S)
        self.assertEqual(await self.stored_entries(), 3)


# --- SQLite -------------------------------------------------------------------------------


class SqliteStoreContractTests(RevocationStoreContractMixin, unittest.TestCase):
    """The store contract, kept by :class:`SqliteRevocationStore` on a temporary file."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.path = Path(self.mktemp()) / "data" / AUTH_DB_FILE

    def open_store(self) -> IRevocationStore:
        return SqliteRevocationStore(self.path, self.clock, reactor=reactor)

    async def stored_entries(self) -> int:
        connection = sqlite3.connect(self.path)
        try:
            tables = ("revoked_token", "revoked_family", "revoked_subject", "spent_refresh")
            return sum(connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
        finally:
            connection.close()

    async def test_file_and_wal(self) -> None:
        """The store creates its directory and file and puts the database in WAL mode."""
        await self.started()
        self.assertTrue(self.path.is_file())
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    async def test_reopened_file_keeps_everything(self) -> None:
        """Closing and reopening the file (a restart) keeps revocations, spent marks and the version."""
        store = self.open_store()
        await store.start()
        await store.revoke_token("j", NOW + 60)
        await store.spend_refresh("r", "f", NOW + 60)
        await store.close()
        again = await self.started()
        self.assertEqual(await again.snapshot(), RevocationSnapshot(1, tokens=frozenset({"j"})))
        self.assertFalse(await again.spend_refresh("r", "f", NOW + 60))

    async def test_purge(self) -> None:
        """:meth:`purge` deletes every expired row at once and says how many."""
        store = await self.started()
        assert isinstance(store, SqliteRevocationStore)
        await store.revoke_token("j", NOW + 10)
        await store.spend_refresh("r", "f", NOW + 10)
        await store.revoke_token("kept", NOW + 100)
        self.clock.advance(10)
        self.assertEqual(await store.purge(), 2)
        self.assertEqual(await self.stored_entries(), 1)

    async def test_expired_spend_mark_is_taken_over(self) -> None:
        """A spent mark that has expired but is not purged yet does not block its jti."""
        store = await self.started()
        self.assertTrue(await store.spend_refresh("r", "f", NOW + 10))
        self.clock.advance(10)
        self.assertTrue(await store.spend_refresh("r", "f", NOW + 100))
        self.assertFalse(await store.spend_refresh("r", "f", NOW + 100))

    async def test_store_service(self) -> None:
        """:class:`RevocationStoreService` starts the store with the application and closes it at the end."""
        store = SqliteRevocationStore(self.path, self.clock, reactor=reactor)
        service = RevocationStoreService(store)
        service.startService()
        self.assertEqual(await store.version(), 0)
        await service.stopService()
        self.assertTrue(self.path.is_file())


# --- the cache --------------------------------------------------------------------------------


class BreakableStore:
    """
    A real store that can be made to fail, as a store does when its disk or
    server is gone: every call raises while :attr:`broken`.
    """

    def __init__(self, store: IRevocationStore) -> None:
        self.store = store
        self.broken = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def call(*args: Any) -> Deferred[Any]:
            self.calls += 1
            if self.broken:
                raise sqlite3.OperationalError("disk I/O error")
            result: Deferred[Any] = method(*args)
            return result

        return call


class RevocationCacheTests(unittest.TestCase):
    """The per-process view: polled, updated at once by local revocations, resilient."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.path = Path(self.mktemp()) / AUTH_DB_FILE

    async def store(self) -> SqliteRevocationStore:
        store = SqliteRevocationStore(self.path, self.clock, reactor=reactor)
        self.addCleanup(store.close)
        await store.start()
        return store

    def cache(self, store: Any) -> RevocationCache:
        cache = RevocationCache(store, self.clock, interval_s=1.0)
        self.addCleanup(cache.stopService)
        return cache

    async def test_first_poll_loads(self) -> None:
        """Starting the cache loads the store's snapshot at once; before that nothing is revoked."""
        other = await self.store()
        await other.revoke_token("j-1", NOW + 60)
        cache = self.cache(await self.store())
        self.assertFalse(cache.loaded)
        self.assertEqual(cache.snapshot.version, UNLOADED)
        cache.startService()
        await wait_for(lambda: cache.loaded)
        self.assertTrue(cache.is_revoked(jwt_principal(jti="j-1")))
        self.assertEqual(cache.snapshot.version, 1)

    async def test_another_process_seen_after_one_interval(self) -> None:
        """A revocation made by another instance is seen after one poll interval, not before."""
        cache = self.cache(await self.store())
        cache.startService()
        await wait_for(lambda: cache.loaded)
        other = await self.store()
        await other.revoke_family("f-1", NOW + 60)
        principal = jwt_principal(family="f-1")
        self.clock.advance(0.5)
        await sleep(0.05)
        self.assertFalse(cache.is_revoked(principal))
        self.clock.advance(0.5)
        await wait_for(lambda: cache.is_revoked(principal))
        self.assertEqual(cache.snapshot.version, 1)

    async def test_unchanged_version_no_reload(self) -> None:
        """A poll that finds the same version keeps the same snapshot object."""
        store = BreakableStore(await self.store())
        cache = self.cache(store)
        self.assertTrue(await cache.update())
        loaded = cache.snapshot
        self.assertTrue(await cache.update())
        self.assertIs(cache.snapshot, loaded)
        self.assertEqual(store.calls, 3)  # version, snapshot, version

    async def test_local_revocations_at_once(self) -> None:
        """Revocations made through the cache apply at once and reach the store (and other processes)."""
        cache = self.cache(await self.store())
        await cache.update()
        await cache.revoke_token("j-1", NOW + 60)
        await cache.revoke_family("f-1", NOW + 60)
        await cache.revoke_subject("alice", NOW + 5)
        self.assertTrue(cache.is_revoked(jwt_principal(sub="x", jti="j-1")))
        self.assertTrue(cache.is_revoked(jwt_principal(sub="x", jti="j-2", family="f-1")))
        self.assertTrue(cache.is_revoked(jwt_principal(sub="alice", jti="j-3", iat=NOW + 4)))
        self.assertFalse(cache.is_revoked(jwt_principal(sub="alice", jti="j-3", iat=NOW + 5)))
        other = self.cache(await self.store())
        await other.update()
        self.assertEqual(other.snapshot.version, 3)
        self.assertTrue(other.is_revoked(jwt_principal(sub="x", jti="j-1")))
        await cache.update()  # the version moved: reloaded, and still the same revocations
        self.assertEqual(cache.snapshot, other.snapshot)

    async def test_store_failure_keeps_last_snapshot(self) -> None:
        """While the store fails the last snapshot stays in force; one warning, one recovery note."""
        events = capture_log(self)
        store = BreakableStore(await self.store())
        await store.revoke_token("j-1", NOW + 60)
        cache = self.cache(store)
        cache.startService()
        await wait_for(lambda: cache.loaded)
        store.broken = True
        for _ in range(3):
            self.clock.advance(1.0)
            await wait_for(lambda: cache.degraded)
        self.assertTrue(cache.is_revoked(jwt_principal(jti="j-1")))
        degraded = [e for e in events if e.get("event_kind") == "degraded"]
        self.assertEqual(len(degraded), 1)
        self.assertIn("disk I/O error", degraded[0]["error"])
        store.broken = False
        await store.revoke_token("j-2", NOW + 60)
        self.clock.advance(1.0)
        await wait_for(lambda: not cache.degraded and cache.is_revoked(jwt_principal(jti="j-2")))
        self.assertTrue(any("answers again" in e.get("log_format", "") for e in events))
        self.assertTrue(cache.running)

    async def test_local_revocation_when_store_fails(self) -> None:
        """A revocation the store refuses raises, but is still enforced in this process."""
        store = BreakableStore(await self.store())
        cache = self.cache(store)
        await cache.update()
        store.broken = True
        with self.assertRaises(sqlite3.OperationalError):
            await cache.revoke_token("j-1", NOW + 60)
        self.assertTrue(cache.is_revoked(jwt_principal(jti="j-1")))

    async def test_revocation_during_a_load_is_not_lost(self) -> None:
        """A snapshot read that started before a local revocation does not undo it when it lands."""
        store = await self.store()
        cache = self.cache(store)
        await cache.update()
        await store.revoke_token("elsewhere", NOW + 60)  # the next update will reload
        load = Deferred.fromCoroutine(cache.update())
        await cache.revoke_token("here", NOW + 60)
        await load
        self.assertTrue(cache.is_revoked(jwt_principal(jti="here")))
        await cache.update()
        self.assertTrue(cache.is_revoked(jwt_principal(jti="here")))
        self.assertTrue(cache.is_revoked(jwt_principal(jti="elsewhere")))

    async def test_stop_ends_polling(self) -> None:
        """After ``stopService`` the clock triggers no more polls."""
        store = BreakableStore(await self.store())
        cache = self.cache(store)
        cache.startService()
        await wait_for(lambda: cache.loaded)
        cache.stopService()
        calls = store.calls
        self.clock.advance(10)
        await sleep(0.05)
        self.assertEqual(store.calls, calls)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interval_must_be_positive(self) -> None:
        """A poll interval that is not a positive number is refused."""
        for interval in (0.0, -1.0, float("nan"), float("inf")):
            with self.assertRaises(ValueError):
                RevocationCache(BreakableStore(None), self.clock, interval_s=interval)  # type: ignore[arg-type]

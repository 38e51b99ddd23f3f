# -*- test-case-name: tests.test_revocation_redis -*-
"""Tests for :class:`RedisRevocationStore` on a real Redis, and the cache over it.

The shared Redis (127.0.0.1:6379, or ``STREAMSRV_TEST_REDIS_URL``) is used
under a random key prefix per test, deleted afterwards; the test that kills
Redis starts a private ``redis-server`` of its own.  Time is a
:class:`~tests.test_revocation.ShiftedClock`: deterministic for expiry, real
for command timeouts.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from streamsrv.auth.refresh import make_revocation_store
from streamsrv.auth.revocation import (
    REVOCATION_RETENTION_S,
    IRevocationStore,
    RedisRevocationStore,
    RevocationCache,
    RevocationSnapshot,
)
from streamsrv.config import load_settings
from streamsrv.redisconn import RedisConnection, connect_redis
from tests.services import RedisServerProcess, redis_url_or_skip
from tests.test_revocation import (
    NOW,
    RevocationStoreContractMixin,
    ShiftedClock,
    capture_log,
    jwt_principal,
    sleep,
)

#: Reconnect quickly: a restarted server is found within a fraction of a second.
FAST_RETRY: dict[str, Any] = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "connect_timeout_s": 1.0}

#: Command timeout of the tests about semantics: a loaded machine must not fail them.
GENEROUS_TIMEOUT_S = 5.0


async def _close(connection: RedisConnection) -> None:
    await connection.disconnect()
    await sleep(0)  # txredisapi hands the connection over on the next reactor turn


def connect(testcase: unittest.TestCase, url: str) -> RedisConnection:
    """A connection to *url*, closed when *testcase* ends."""
    connection = connect_redis(url, reactor, **FAST_RETRY)
    testcase.addCleanup(_close, connection)
    return connection


class SharedRedisMixin:
    """A key prefix of its own on the shared Redis, deleted at the end."""

    def use_shared_redis(self, testcase: unittest.TestCase) -> None:
        self.url = redis_url_or_skip(testcase)
        self.prefix = f"streamsrv:test:rev:{uuid.uuid4().hex}:"
        self.admin = connect(testcase, self.url)
        testcase.addCleanup(self.delete_prefix)

    async def delete_prefix(self) -> None:
        keys = await self.admin.keys(self.prefix + "*")
        if keys:
            await self.admin.delete(keys)


class RedisStoreContractTests(SharedRedisMixin, RevocationStoreContractMixin, unittest.TestCase):
    """The store contract, kept by :class:`RedisRevocationStore` on the shared Redis."""

    def setUp(self) -> None:
        self.use_shared_redis(self)
        self.clock = ShiftedClock()

    def open_store(self) -> IRevocationStore:
        return RedisRevocationStore(
            connect(self, self.url), self.clock, key_prefix=self.prefix, timeout_s=GENEROUS_TIMEOUT_S
        )

    async def stored_entries(self) -> int:
        total = 0
        for kind in ("tokens", "families", "subjects"):
            total += await self.admin.zcard(f"{self.prefix}{kind}")
        spent = await self.admin.keys(f"{self.prefix}spent:*")
        return total + len(spent)

    async def test_expired_entries_are_purged(self) -> None:
        """
        Writes drop expired members of the sorted sets; spent marks are keys
        that Redis itself expires (checked in :meth:`test_spent_mark`).
        """
        store = await self.started()
        await store.revoke_token("j", NOW + 10)
        await store.revoke_family("f", NOW + 10)
        await store.revoke_subject("alice", NOW)
        self.assertEqual(await self.stored_entries(), 3)
        self.clock.advance(self.retention() + 1)
        await store.revoke_token("j2", NOW + self.retention() + 10_000)
        await store.revoke_family("f2", NOW + self.retention() + 10_000)
        await store.revoke_subject("bob", NOW + self.retention())
        self.assertEqual(await self.stored_entries(), 3)

    def retention(self) -> float:
        return float(REVOCATION_RETENTION_S)

    async def test_spent_mark(self) -> None:
        """A spent mark is a key named by the jti's hash, holding the family, expiring with the token."""
        store = await self.started()
        assert isinstance(store, RedisRevocationStore)
        jti = "weird *?[jti]:{x}"
        self.assertTrue(await store.spend_refresh(jti, "fam-1", NOW + 600))
        key = f"{self.prefix}spent:{hashlib.sha256(jti.encode()).hexdigest()}"
        self.assertEqual(store.spent_key(jti), key)
        self.assertEqual(await self.admin.get(key), "fam-1")
        ttl_ms = await self.admin.execute_command("PTTL", key)
        self.assertTrue(590_000 < ttl_ms <= 600_000, ttl_ms)
        self.assertEqual(await self.admin.keys(f"{self.prefix}spent:*"), [key])

    async def test_spend_past_expiry(self) -> None:
        """Spending a token already past its expiry still marks it (for a millisecond) and answers True."""
        store = await self.started()
        self.assertTrue(await store.spend_refresh("late", "f", NOW - 5))

    async def test_keys_under_prefix(self) -> None:
        """Everything the store writes is under its prefix."""
        store = await self.started()
        await store.revoke_token("j", NOW + 60)
        await store.revoke_family("f", NOW + 60)
        await store.revoke_subject("s", NOW)
        await store.spend_refresh("r", "f", NOW + 60)
        keys = sorted(await self.admin.keys(f"{self.prefix}*"))
        names = sorted(k[len(self.prefix) :].split(":")[0] for k in keys)
        self.assertEqual(names, ["families", "spent", "subjects", "tokens", "version"])

    async def test_make_revocation_store_own_connection(self) -> None:
        """With ``STREAMSRV_REDIS_URL`` and no connection given, the store opens its own and closes it."""
        settings = load_settings(
            environ={"STREAMSRV_DATA_DIR": self.mktemp(), "STREAMSRV_REDIS_URL": self.url}
        )
        store = make_revocation_store(settings, reactor)
        self.assertIsInstance(store, RedisRevocationStore)
        await store.start()
        self.assertIsInstance(await store.version(), int)
        await store.close()
        await sleep(0)

    async def test_make_revocation_store_shared_connection(self) -> None:
        """Given the process's connection, the store uses it and leaves it open on close."""
        settings = load_settings(
            environ={"STREAMSRV_DATA_DIR": self.mktemp(), "STREAMSRV_REDIS_URL": self.url}
        )
        store = make_revocation_store(settings, reactor, redis=self.admin)
        await store.close()
        self.assertEqual(await self.admin.ping(), "PONG")


class RedisCacheTests(SharedRedisMixin, unittest.TestCase):
    """The cache over Redis: other processes' revocations arrive by polling."""

    def setUp(self) -> None:
        self.use_shared_redis(self)
        self.clock = ShiftedClock()

    async def test_two_caches_share_revocations(self) -> None:
        """A revocation through one process's cache reaches another's at its next poll."""
        caches = []
        for _ in range(2):
            store = RedisRevocationStore(connect(self, self.url), self.clock, key_prefix=self.prefix)
            cache = RevocationCache(store, self.clock)
            await cache.update()
            caches.append(cache)
        await caches[0].revoke_subject("alice", NOW + 1)
        principal = jwt_principal(sub="alice", iat=NOW)
        self.assertTrue(caches[0].is_revoked(principal))
        self.assertFalse(caches[1].is_revoked(principal))
        self.assertTrue(await caches[1].update())
        self.assertTrue(caches[1].is_revoked(principal))
        self.assertEqual(caches[0].snapshot.version, 0)  # its own write: applied locally, version unread
        await caches[0].update()
        self.assertEqual(caches[0].snapshot, caches[1].snapshot)


class RedisOutageTests(unittest.TestCase):
    """A cache over a Redis that dies keeps its last snapshot and recovers when Redis returns."""

    async def test_outage_keeps_last_snapshot(self) -> None:
        """
        Killed Redis: polls fail within the command timeout, the snapshot in
        force stays, one degraded warning; restarted Redis (empty): the cache
        reloads what is there now.
        """
        events = capture_log(self)
        server = RedisServerProcess.start_for(self)
        clock = ShiftedClock()
        store = RedisRevocationStore(connect(self, server.url), clock, timeout_s=0.5)
        cache = RevocationCache(store, clock)
        await store.revoke_token("j-1", NOW + 60)
        self.assertTrue(await cache.update())
        server.kill()
        started = time.monotonic()
        self.assertFalse(await cache.update())
        self.assertFalse(await cache.update())
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertTrue(cache.degraded)
        self.assertTrue(cache.is_revoked(jwt_principal(jti="j-1")))
        self.assertEqual(len([e for e in events if e.get("event_kind") == "degraded"]), 1)
        server.restart()
        deadline = time.monotonic() + 10
        while not await cache.update():
            self.assertLess(time.monotonic(), deadline, "the cache did not recover")
            await sleep(0.05)
        self.assertFalse(cache.degraded)
        self.assertEqual(cache.snapshot, RevocationSnapshot(0))

"""Tests for :mod:`streamsrv.alerts.lease`: one evaluator at a time, in SQLite and in a real Redis.

The SQLite lease runs on :class:`~streamsrv.threads.InlineThreads` with a
:class:`~twisted.internet.task.Clock`; the Redis lease uses the shared Redis
under a random key, deleted afterwards, and lets a short time to live run
out on Redis's own clock to show a takeover.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.alerts.lease import ILease, RedisLease, SoleLease, SqliteLease
from streamsrv.redisconn import connect_redis
from streamsrv.threads import InlineThreads
from tests.services import redis_url_or_skip


class SqliteLeaseTests(unittest.TestCase):
    """The lease in a SQLite file of the data dir."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.a = SqliteLease(self.path, InlineThreads(), self.clock, ttl_s=45, holder="a")
        self.b = SqliteLease(self.path, InlineThreads(), self.clock, ttl_s=45, holder="b")

    def _held(self, lease: SqliteLease) -> bool:
        return self.successResultOf(lease.acquire())

    def test_interface(self) -> None:
        """Each lease provides ILease."""
        for lease in (self.a, SoleLease()):
            self.assertTrue(verifyObject(ILease, lease))

    def test_one_holder(self) -> None:
        """The first taker holds it and renews it; the other is refused meanwhile."""
        self.assertTrue(self._held(self.a))
        self.assertFalse(self._held(self.b))
        self.clock.advance(30)
        self.assertTrue(self._held(self.a))
        self.clock.advance(30)  # 60 s after the first take, but only 30 s after the renewal
        self.assertFalse(self._held(self.b))

    def test_takeover_after_expiry(self) -> None:
        """A holder that stops renewing loses the lease once it expires; then it is refused."""
        self.assertTrue(self._held(self.a))
        self.clock.advance(45.5)
        self.assertTrue(self._held(self.b))
        self.assertFalse(self._held(self.a))

    def test_release(self) -> None:
        """A released lease is free at once; releasing someone else's does nothing."""
        self.assertTrue(self._held(self.a))
        self.successResultOf(self.b.release())
        self.assertFalse(self._held(self.b))
        self.successResultOf(self.a.release())
        self.assertTrue(self._held(self.b))

    def test_sole_lease(self) -> None:
        """The sole lease is always held."""
        self.assertTrue(self.successResultOf(SoleLease().acquire()))


class RedisLeaseTests(unittest.TestCase):
    """The lease in a real Redis."""

    def setUp(self) -> None:
        url = redis_url_or_skip(self)
        self.redis = connect_redis(url, reactor)
        self.key = f"streamsrv-test:{uuid.uuid4().hex}:alerts:lease"
        self.addCleanup(self._close)

    async def _close(self) -> None:
        await self.redis.delete(self.key)
        await self.redis.disconnect()
        await deferLater(reactor, 0, lambda: None)

    def _lease(self, holder: str, ttl_s: float = 30) -> RedisLease:
        lease = RedisLease(self.redis, reactor, self.key, ttl_s=ttl_s, holder=holder)
        self.assertTrue(verifyObject(ILease, lease))
        return lease

    async def test_one_holder_and_renewal(self) -> None:
        """One holder at a time; renewing keeps the token and restores the time to live."""
        a, b = self._lease("a"), self._lease("b")
        self.assertTrue(await a.acquire())
        self.assertFalse(await b.acquire())
        await self.redis.execute_command("PEXPIRE", self.key, 5000)
        self.assertTrue(await a.acquire())
        self.assertEqual(await self.redis.get(self.key), "a")
        self.assertGreater(await self.redis.execute_command("PTTL", self.key), 5000)

    async def test_takeover_after_expiry(self) -> None:
        """When the holder stops renewing, another takes over once Redis expires the key."""
        a, b = self._lease("a", ttl_s=0.05), self._lease("b")
        self.assertTrue(await a.acquire())
        while await self.redis.exists(self.key):
            await deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(await b.acquire())
        self.assertFalse(await a.acquire())

    async def test_release_only_own(self) -> None:
        """Releasing deletes only the releaser's own lease."""
        a, b = self._lease("a"), self._lease("b")
        self.assertTrue(await a.acquire())
        await b.release()
        self.assertEqual(await self.redis.get(self.key), "a")
        await a.release()
        self.assertTrue(await b.acquire())

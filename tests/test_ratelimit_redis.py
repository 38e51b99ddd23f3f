# -*- test-case-name: tests.test_ratelimit_redis -*-
"""Tests for the Redis rate limiter and :mod:`streamsrv.redisconn`, on a real Redis.

The shared Redis (127.0.0.1:6379, or ``STREAMSRV_TEST_REDIS_URL``) is used
under a random key prefix per test, deleted afterwards; tests that kill or
freeze Redis start a private ``redis-server`` of their own.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import provider

from streamsrv.middleware.ratelimit import (
    REDIS_SCRIPT_SHA1,
    Decision,
    IRateLimiter,
    MemoryRateLimiter,
    Policy,
    RedisRateLimiter,
)
from streamsrv.redisconn import RedisConnection, RedisService, connect_redis, parse_redis_url
from tests.services import RedisServerProcess, free_port, redis_url_or_skip
from tests.test_ratelimit import HOUR, RateLimiterContractMixin

#: Reconnect quickly in tests: a restarted server is found within a fraction of a second.
FAST_RETRY: dict[str, Any] = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "connect_timeout_s": 1.0}

#: Redis timeout of the tests that check semantics, not fallback: a loaded CI
#: machine must not turn them into tests of the local buckets.
GENEROUS_TIMEOUT_S = 5.0

#: Upper bound of "answered promptly" while Redis is away (timeouts of 0.5 s and
#: 1 s are used); loose enough for a loaded machine, far below a hang.
PROMPT_S = 2.0


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def _close(connection: RedisConnection) -> None:
    await connection.disconnect()
    # txredisapi hands a new connection over on the next reactor turn.
    await _sleep(0)


def connect(testcase: unittest.TestCase, url: str, **options: Any) -> RedisConnection:
    """
    A connection to *url*, closed when *testcase* ends.
    """
    connection = connect_redis(url, reactor, **{**FAST_RETRY, **options})
    testcase.addCleanup(_close, connection)
    return connection


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """
    Poll *condition* until it holds, or fail after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s")
        await _sleep(0.02)


class SharedRedisMixin:
    """
    A key prefix of its own on the shared Redis, deleted at the end.
    """

    def use_shared_redis(self, testcase: unittest.TestCase) -> None:
        self.url = redis_url_or_skip(testcase)
        self.prefix = f"streamsrv:test:rl:{uuid.uuid4().hex}:"
        self.admin = connect(testcase, self.url)
        testcase.addCleanup(self.delete_prefix)

    async def delete_prefix(self) -> None:
        keys = await self.admin.keys(self.prefix + "*")
        if keys:
            await self.admin.delete(keys)


class RedisContractTests(SharedRedisMixin, RateLimiterContractMixin, unittest.TestCase):
    """
    The limiter contract, kept by :class:`RedisRateLimiter` on the shared Redis.
    Every answer must come from Redis: a fallback to local buckets fails the test.
    """

    def make_limiter(self) -> IRateLimiter:
        self.use_shared_redis(self)
        self.states: list[str] = []
        limiter = RedisRateLimiter(
            connect(self, self.url),
            reactor,
            MemoryRateLimiter(reactor),
            key_prefix=self.prefix,
            on_state_change=self.states.append,
            timeout_s=GENEROUS_TIMEOUT_S,
        )
        self.addCleanup(limiter.close)
        self.addCleanup(lambda: self.assertEqual(self.states, [], "answered from local buckets"))
        return limiter

    async def elapse(self, seconds: float) -> None:
        await _sleep(seconds)

    async def test_refill(self) -> None:
        """
        An empty bucket gets tokens back at COUNT/SECONDS, timed by the Redis
        server (a window wide enough for real time to be measured reliably).
        """
        policy = Policy("refill", 2, 0.4)
        self.assertEqual(await self.allowed_count([(policy, "k")], 3), 2)
        await self.elapse(0.25)
        self.assertEqual(await self.allowed_count([(policy, "k")], 3), 1)


class RedisSharingTests(SharedRedisMixin, unittest.TestCase):
    """
    Buckets in Redis are shared between processes and changed atomically.
    """

    def setUp(self) -> None:
        self.use_shared_redis(self)

    def limiter(self, clock: Any = reactor, **options: Any) -> RedisRateLimiter:
        states: list[str] = []
        limiter = RedisRateLimiter(
            connect(self, self.url, **options),
            clock,
            MemoryRateLimiter(reactor),
            key_prefix=self.prefix,
            on_state_change=states.append,
            timeout_s=GENEROUS_TIMEOUT_S,
        )
        self.addCleanup(limiter.close)
        self.addCleanup(lambda: self.assertEqual(states, [], "answered from local buckets"))
        return limiter

    async def test_two_processes_share_a_bucket(self) -> None:
        """
        Two limiters on two connections (two processes' view), with clocks
        days apart, drain one bucket together: Redis's clock is the one used.
        """
        skewed = Clock()  # the epoch: decades behind the real clock
        first, second = self.limiter(clock=skewed), self.limiter()
        policy = Policy("shared", 3, HOUR)
        self.assertEqual(await first.check([(policy, "k")]), Decision(True, 3, 2, 1200, 0))
        self.assertEqual(await second.check([(policy, "k")]), Decision(True, 3, 1, 2400, 0))
        self.assertEqual(await first.check([(policy, "k")]), Decision(True, 3, 0, 3600, 0))
        self.assertFalse((await second.check([(policy, "k")])).allowed)
        self.assertFalse((await first.check([(policy, "k")])).allowed)

    async def test_concurrent_checks_atomic(self) -> None:
        """
        Fifty concurrent checks of a ten-token bucket over four connections
        allow exactly ten, each seeing a different Remaining.
        """
        limiters = [self.limiter(pool_size=2) for _ in range(4)]
        policy, other = Policy("atomic", 10, HOUR), Policy("other", 100, HOUR)
        checks = [limiters[n % 4].check([(other, f"o{n % 3}"), (policy, "k")]) for n in range(50)]
        decisions: list[Decision] = await gatherResults(checks)
        allowed = [d for d in decisions if d.allowed]
        self.assertEqual(len(allowed), 10)
        self.assertEqual(sorted(d.remaining for d in allowed), list(range(10)))
        # Refused checks took nothing from the other buckets either.
        taken = sum([(await limiters[0].check([(other, f"o{n}")])).remaining for n in range(3)])
        self.assertEqual(taken, 3 * 99 - 10)

    async def test_bucket_is_an_expiring_hash(self) -> None:
        """
        A bucket is a hash {tokens, ts} stamped with the Redis server's time,
        expiring once it would be full again; a refused check writes nothing.
        """
        limiter = self.limiter(clock=Clock())
        policy = Policy("hash", 10, 60.0)
        await limiter.check([(policy, "198.51.100.7")])
        key = f"{self.prefix}hash:198.51.100.7"
        seconds, micros = await self.admin.time()
        stored = await self.admin.hgetall(key)
        self.assertEqual(set(stored), {"tokens", "ts"})
        self.assertAlmostEqual(float(stored["tokens"]), 9.0, places=3)
        self.assertLess(abs(float(stored["ts"]) / 1e6 - (int(seconds) + int(micros) / 1e6)), 5.0)
        ttl_ms = await self.admin.execute_command("PTTL", key)
        self.assertTrue(5000 < ttl_ms <= 6001, ttl_ms)

        single = Policy("single", 1, HOUR)
        await limiter.check([(single, "k")])
        before = await self.admin.hgetall(f"{self.prefix}single:k")
        refused = await limiter.check([(single, "k"), (policy, "198.51.100.7")])
        self.assertFalse(refused.allowed)
        self.assertEqual(await self.admin.hgetall(f"{self.prefix}single:k"), before)
        self.assertAlmostEqual(float((await self.admin.hgetall(key))["tokens"]), 9.0, places=2)


class RedisFallbackTests(unittest.TestCase):
    """
    A private Redis is killed, frozen and restarted: checks never fail or hang.
    """

    def setUp(self) -> None:
        self.server = RedisServerProcess.start_for(self)
        self.states: list[str] = []
        self.events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("event_kind") in ("degraded", "recovered"):
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def limiter(self, url: str | None = None, timeout_s: float = 0.5) -> RedisRateLimiter:
        self.connection = connect(self, url or self.server.url)
        limiter = RedisRateLimiter(
            self.connection,
            reactor,
            MemoryRateLimiter(reactor),
            key_prefix="rl:",
            on_state_change=self.states.append,
            timeout_s=timeout_s,
            probe_interval_s=0.1,
        )
        self.addCleanup(limiter.close)
        return limiter

    async def test_killed_and_restarted(self) -> None:
        """
        When Redis dies, checks are answered from local buckets, one degraded
        event is logged and the callback hears "local"; once it is back, checks
        go to Redis again and the callback hears "redis".
        """
        limiter = self.limiter(timeout_s=1.0)
        policy = Policy("p", 2, HOUR)
        self.assertEqual((await limiter.check([(policy, "k")])).remaining, 1)
        self.assertEqual(limiter.state, "redis")

        self.server.kill()
        started = time.monotonic()
        decisions = [await limiter.check([(policy, "k")]) for _ in range(4)]
        self.assertLess(time.monotonic() - started, PROMPT_S)
        # The local bucket knew nothing of Redis's: it starts full.
        self.assertEqual([d.allowed for d in decisions], [True, True, False, False])
        self.assertEqual(self.states, ["local"])
        self.assertEqual(limiter.state, "local")
        self.assertEqual([e["event_kind"] for e in self.events], ["degraded"])
        self.assertEqual(self.events[0]["log_level"].name, "warn")

        self.server.restart()
        await wait_for(lambda: self.states == ["local", "redis"])
        self.assertEqual([e["event_kind"] for e in self.events], ["degraded", "recovered"])
        decision = await limiter.check([(policy, "fresh")])
        self.assertEqual(decision.remaining, 1)
        self.assertEqual(self.states, ["local", "redis"])
        self.assertEqual(await self.connection.exists("rl:p:fresh"), 1)

    async def test_frozen_redis_times_out(self) -> None:
        """
        A Redis that accepts but does not answer costs one timeout, not a
        hang; the answer is local until it thaws.
        """
        limiter = self.limiter()
        policy = Policy("p", 5, HOUR)
        await limiter.check([(policy, "k")])
        self.server.pause()
        try:
            started = time.monotonic()
            decision = await limiter.check([(policy, "k")])
            elapsed = time.monotonic() - started
        finally:
            self.server.resume()
        self.assertTrue(decision.allowed)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, PROMPT_S)
        self.assertEqual(self.states, ["local"])
        await wait_for(lambda: self.states == ["local", "redis"])
        # The check that timed out still ran once Redis thawed: 5 - 3 = 2.
        self.assertEqual((await limiter.check([(policy, "k")])).remaining, 2)
        self.assertEqual(self.states, ["local", "redis"])

    async def test_unreachable_from_the_start(self) -> None:
        """
        With nothing listening at all, the first check is answered locally
        within the timeout, and closing the limiter leaves nothing scheduled.
        """
        limiter = self.limiter(f"redis://127.0.0.1:{free_port()}/0")
        started = time.monotonic()
        decision = await limiter.check([(Policy("p", 2, HOUR), "k")])
        self.assertLess(time.monotonic() - started, PROMPT_S)
        self.assertEqual(decision, Decision(True, 2, 1, 1800, 0))
        self.assertEqual(self.states, ["local"])
        await _sleep(0.25)  # a few probes fail meanwhile
        self.assertEqual(self.states, ["local"])
        limiter.close()
        self.assertTrue((await limiter.check([(Policy("p", 2, HOUR), "k")])).allowed)

    async def test_script_loaded_once(self) -> None:
        """
        The script is sent with EVAL only when Redis does not know it
        (NOSCRIPT, e.g. after a restart or SCRIPT FLUSH); otherwise EVALSHA.
        """
        limiter = self.limiter(timeout_s=GENEROUS_TIMEOUT_S)
        admin = connect(self, self.server.url)
        policy = Policy("p", 10, HOUR)
        await admin.execute_command("CONFIG", "RESETSTAT")
        for _ in range(3):
            await limiter.check([(policy, "k")])
        self.assertEqual(await admin.script_exists(REDIS_SCRIPT_SHA1), True)
        stats = await admin.info("commandstats")
        self.assertTrue(stats["cmdstat_evalsha"].startswith("calls=3,"), stats)
        # The first EVALSHA found nothing, and EVAL loaded the script.
        self.assertTrue(stats["cmdstat_eval"].startswith("calls=1,"), stats)
        await admin.script_flush()
        self.assertEqual((await limiter.check([(policy, "k")])).remaining, 6)
        stats = await admin.info("commandstats")
        self.assertTrue(stats["cmdstat_eval"].startswith("calls=2,"), stats)
        self.assertEqual(self.states, [])


class RedisURLTests(unittest.TestCase):
    """
    ``STREAMSRV_REDIS_URL`` forms.
    """

    def test_tcp(self) -> None:
        """
        redis://host[:port][/db], with percent-encoded credentials.
        """
        target = parse_redis_url("redis://user:p%40ss@redis.internal:6380/2")
        self.assertEqual(
            (target.host, target.port, target.db, target.username, target.password, target.tls),
            ("redis.internal", 6380, 2, "user", "p@ss", False),
        )
        target = parse_redis_url("redis://127.0.0.1")
        self.assertEqual(
            (target.host, target.port, target.db, target.password), ("127.0.0.1", 6379, None, None)
        )
        self.assertEqual(parse_redis_url("redis://:secret@[::1]:7000").host, "::1")
        self.assertEqual(parse_redis_url("redis://:secret@[::1]:7000").password, "secret")

    def test_tls(self) -> None:
        """
        rediss:// is TLS.
        """
        self.assertTrue(parse_redis_url("rediss://cache.example.com:6380/0").tls)

    def test_unix(self) -> None:
        """
        unix:///path with ?db= and ?password=.
        """
        target = parse_redis_url("unix:///run/redis/redis.sock?db=3&password=s3cret")
        self.assertEqual(
            (target.path, target.db, target.password, target.host),
            ("/run/redis/redis.sock", 3, "s3cret", None),
        )
        self.assertEqual(target.describe(), "unix:///run/redis/redis.sock/3")

    def test_invalid(self) -> None:
        """
        Other schemes, missing hosts or paths, bad ports and databases are
        refused without echoing the password.
        """
        for url in [
            "http://redis:6379",
            "redis://",
            "redis://:hunter2@/0",
            "unix://",
            "redis://:hunter2@host:port",
            "redis://:hunter2@host:6379/zero",
            "redis://:hunter2@host:99999",
        ]:
            with self.assertRaises(ValueError, msg=url) as caught:
                parse_redis_url(url)
            self.assertNotIn("hunter2", str(caught.exception))

    def test_password_never_shown(self) -> None:
        """
        Neither repr nor describe() shows the password.
        """
        target = parse_redis_url("redis://admin:hunter2@redis:6379/1")
        self.assertNotIn("hunter2", repr(target))
        self.assertEqual(target.describe(), "redis://redis:6379/1")


class RedisServiceTests(unittest.TestCase):
    """
    :class:`RedisService` owns a connection for the application's lifetime.
    """

    async def test_lifecycle(self) -> None:
        """
        The connection exists before the service starts; a command sent then
        is answered once it starts; stopping closes the connection.
        """
        url = redis_url_or_skip(self)
        service = RedisService(url, reactor, **FAST_RETRY)
        early: Deferred[Any] = service.connection.ping()
        self.assertNoResult(early)
        service.startService()
        self.assertEqual(await early, "PONG")
        self.assertEqual(await service.connection.ping(), "PONG")
        await service.stopService()
        await _sleep(0)
        with self.assertRaises(txredisapi.ConnectionError):
            await service.connection.ping()
        self.assertRaises(RuntimeError, service.startService)


class RedisConnectionTests(unittest.TestCase):
    """
    Connections from :mod:`streamsrv.redisconn` survive what a restarting Redis does.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("log_namespace") == "streamsrv.redisconn":
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def test_lost_while_logging_in(self) -> None:
        """
        A connection lost while logging in (AUTH unanswered) is retried, not
        abandoned as plain txredisapi does, and a warning says so.
        """
        server = RedisServerProcess.start_for(self, password="pass word/for:tests")
        server.pause()
        try:
            connection = connect(self, server.url, reply_timeout_s=0.2, pool_size=1)
            await _sleep(0.5)
        finally:
            server.resume()
        pong = connection.ping()
        pong.addTimeout(5.0, reactor)
        self.assertEqual(await pong, "PONG")
        self.assertIn("retrying", " ".join(e["log_format"] for e in self.events))

    async def test_wrong_password(self) -> None:
        """
        A refused password stops the connection: commands fail at once instead
        of waiting, and an error is logged without the password.
        """
        server = RedisServerProcess.start_for(self, password="right-password")
        connection = connect(self, server.url.replace("right-password", "wrong-password"))
        await wait_for(lambda: any(e["log_level"].name == "error" for e in self.events))
        with self.assertRaises(txredisapi.ConnectionError):
            await connection.ping()
        self.assertNotIn("wrong-password", repr(self.events))

# -*- test-case-name: tests.test_ratelimit -*-
"""Tests for :mod:`streamsrv.middleware.ratelimit` in memory, and the contract every limiter keeps.

:class:`RateLimiterContractMixin` holds the behaviour both limiters share; it
runs here against :class:`MemoryRateLimiter` and in ``test_ratelimit_redis``
against :class:`RedisRateLimiter` on a real Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.config import RateLimit
from streamsrv.middleware.ratelimit import (
    DEFAULT_POLICIES,
    Decision,
    IRateLimiter,
    MemoryRateLimiter,
    Policies,
    Policy,
    _allowed_of_two,
    decide,
    describe_policy,
    ip_bucket_key,
    keys_for,
    refusal_message,
    user_bucket_key,
)

#: Long enough that the real time a Redis test takes refills less than a
#: thousandth of a token, so exact header values hold for both limiters.
HOUR = 3600.0

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


class RateLimiterContractMixin(_MixinBase):
    """
    What every :class:`IRateLimiter` does.  Subclasses are trial test cases
    providing :meth:`make_limiter` and :meth:`elapse`.
    """

    def make_limiter(self) -> IRateLimiter:
        """
        A limiter with no buckets yet, of the implementation under test.
        """
        raise NotImplementedError

    async def elapse(self, seconds: float) -> None:
        """
        Let *seconds* pass for the limiter's buckets.
        """
        raise NotImplementedError

    def setUp(self) -> None:
        self.limiter = self.make_limiter()

    async def check(self, *keys: tuple[Policy, str]) -> Decision:
        return await self.limiter.check(keys)

    async def allowed_count(self, keys: Sequence[tuple[Policy, str]], attempts: int) -> int:
        allowed = 0
        for _ in range(attempts):
            allowed += (await self.limiter.check(keys)).allowed
        return allowed

    def test_interface(self) -> None:
        """
        The limiter provides IRateLimiter.
        """
        self.assertTrue(verifyObject(IRateLimiter, self.limiter))

    async def test_burst_then_refused(self) -> None:
        """
        A full bucket allows exactly COUNT requests in a burst, counting
        Remaining down and Reset up by one token's worth each time; the next
        is refused with Retry-After the time to one token.
        """
        policy = Policy("burst", 5, HOUR)
        seen = [await self.check((policy, "k")) for _ in range(5)]
        self.assertEqual(
            seen,
            [Decision(True, 5, remaining, 720 * (5 - remaining), 0) for remaining in (4, 3, 2, 1, 0)],
        )
        refused = await self.check((policy, "k"))
        self.assertEqual(refused, Decision(False, 5, 0, 3600, 720))
        self.assertEqual(
            refused.headers(),
            {
                "RateLimit-Limit": "5",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": "3600",
                "Retry-After": "720",
            },
        )

    async def test_refused_takes_no_token(self) -> None:
        """
        A request refused by one bucket takes no token from any other.
        """
        ip, user = Policy("ip", 3, HOUR), Policy("user", 1, HOUR)
        self.assertTrue((await self.check((ip, "a"), (user, "u"))).allowed)
        for _ in range(3):
            refused = await self.check((ip, "a"), (user, "u"))
            self.assertEqual(refused, Decision(False, 1, 0, 3600, 3600))
            self.assertEqual(refused.policy, user)
        # The IP bucket lost one token, not four.
        self.assertEqual(await self.allowed_count([(ip, "a")], 5), 2)

    async def test_allowed_reports_least_room(self) -> None:
        """
        An allowed request describes the bucket left with the fewest tokens.
        """
        ip, user = Policy("ip", 10, HOUR), Policy("user", 3, HOUR)
        decision = await self.check((ip, "a"), (user, "u"))
        self.assertEqual(decision, Decision(True, 3, 2, 1200, 0))

    async def test_refused_reports_refusing_bucket(self) -> None:
        """
        A refused request describes the bucket that refused, not a fuller one.
        """
        ip, user = Policy("ip", 1, HOUR), Policy("user", 50, HOUR)
        await self.check((ip, "a"))
        decision = await self.check((ip, "a"), (user, "u"))
        self.assertEqual(decision, Decision(False, 1, 0, 3600, 3600))

    async def test_several_refuse(self) -> None:
        """
        When several buckets refuse, Retry-After is the longest wait: the
        request needs a token from every one of them.
        """
        fast, slow = Policy("fast", 1, 10), Policy("slow", 1, HOUR)
        await self.check((fast, "a"), (slow, "a"))
        decision = await self.check((fast, "a"), (slow, "a"))
        self.assertEqual(decision, Decision(False, 1, 0, 3600, 3600))

    async def test_keys_and_policies_independent(self) -> None:
        """
        Buckets differ by key and by policy name: draining one leaves the others full.
        """
        first, second = Policy("first", 1, HOUR), Policy("second", 1, HOUR)
        self.assertTrue((await self.check((first, "a"))).allowed)
        self.assertFalse((await self.check((first, "a"))).allowed)
        self.assertTrue((await self.check((first, "b"))).allowed)
        self.assertTrue((await self.check((second, "a"))).allowed)

    async def test_duplicate_pair_is_one_bucket(self) -> None:
        """
        A (policy, key) pair given twice takes one token, not two.
        """
        policy = Policy("dup", 2, HOUR)
        decision = await self.check((policy, "k"), (policy, "k"))
        self.assertEqual(decision.remaining, 1)

    def test_no_keys(self) -> None:
        """
        A check needs at least one bucket.
        """
        self.assertRaises(ValueError, self.limiter.check, [])

    async def test_refill(self) -> None:
        """
        An empty bucket gets tokens back at COUNT/SECONDS: half a period later,
        half of it.
        """
        policy = Policy("refill", 2, 0.2)
        self.assertEqual(await self.allowed_count([(policy, "k")], 3), 2)
        await self.elapse(0.15)
        self.assertEqual(await self.allowed_count([(policy, "k")], 3), 1)

    async def test_two_users_behind_one_ip(self) -> None:
        """
        Users share their IP's bucket but each has a bucket of their own.
        """
        policies = Policies(
            api_ip=Policy("api_ip", 4, HOUR),
            api_user=Policy("api_user", 2, HOUR),
            stream_ip=Policy("stream_ip", 1, HOUR),
            stream_user=Policy("stream_user", 1, HOUR),
        )

        def keys(sub: str) -> list[tuple[Policy, str]]:
            return keys_for(client_ip="198.51.100.7", sub=sub, stream=False, policies=policies)

        self.assertEqual(await self.allowed_count(keys("alice"), 3), 2)
        self.assertEqual(await self.allowed_count(keys("bob"), 3), 2)
        refused = await self.check(*keys("carol"))
        self.assertFalse(refused.allowed)
        self.assertEqual(refused.limit, 4)

    async def test_one_user_from_two_ips(self) -> None:
        """
        A user's bucket follows the user across addresses.
        """
        policies = Policies(
            api_ip=Policy("api_ip", 10, HOUR),
            api_user=Policy("api_user", 2, HOUR),
            stream_ip=Policy("stream_ip", 1, HOUR),
            stream_user=Policy("stream_user", 1, HOUR),
        )
        for ip in ("198.51.100.7", "2001:db8::7"):
            keys = keys_for(client_ip=ip, sub="alice", stream=False, policies=policies)
            self.assertTrue((await self.check(*keys)).allowed)
        keys = keys_for(client_ip="203.0.113.9", sub="alice", stream=False, policies=policies)
        refused = await self.check(*keys)
        self.assertEqual(refused, Decision(False, 2, 0, 3600, 1800))
        # The third address is not blamed: its own bucket is untouched.
        anonymous = keys_for(client_ip="203.0.113.9", sub=None, stream=False, policies=policies)
        self.assertEqual((await self.check(*anonymous)).remaining, 9)

    async def test_api_and_stream_buckets_separate(self) -> None:
        """
        Stream starts and API calls draw from different buckets.
        """
        policies = Policies(
            api_ip=Policy("api_ip", 3, HOUR),
            api_user=Policy("api_user", 3, HOUR),
            stream_ip=Policy("stream_ip", 1, HOUR),
            stream_user=Policy("stream_user", 1, HOUR),
        )
        stream = keys_for(client_ip="198.51.100.7", sub="alice", stream=True, policies=policies)
        api = keys_for(client_ip="198.51.100.7", sub="alice", stream=False, policies=policies)
        self.assertEqual(await self.allowed_count(stream, 2), 1)
        self.assertEqual(await self.allowed_count(api, 4), 3)
        self.assertFalse((await self.check(*stream)).allowed)


class MemoryContractTests(RateLimiterContractMixin, unittest.TestCase):
    """
    The limiter contract, kept by :class:`MemoryRateLimiter`.
    """

    def make_limiter(self) -> IRateLimiter:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        return MemoryRateLimiter(self.clock)

    async def elapse(self, seconds: float) -> None:
        self.clock.advance(seconds)


class MemoryBucketTests(unittest.TestCase):
    """
    Exact bucket arithmetic, driven by a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = MemoryRateLimiter(self.clock)
        self.policy = Policy("p", 3, 3.0)  # one token per second

    def check(self, key: str = "k") -> Decision:
        return self.limiter.check_now([(self.policy, key)])

    def test_refills_evenly(self) -> None:
        """
        Tokens come back evenly over the period, and Reset counts the time to full.
        """
        for _ in range(3):
            self.check()
        self.clock.advance(0.5)
        self.assertEqual(self.check(), Decision(False, 3, 0, 3, 1))
        self.clock.advance(0.5)
        self.assertEqual(self.check(), Decision(True, 3, 0, 3, 0))
        self.clock.advance(2.0)
        self.assertEqual(self.check(), Decision(True, 3, 1, 2, 0))

    def test_tenths_add_up(self) -> None:
        """
        Ten refills of a tenth of a token make one token, despite binary fractions.
        """
        for _ in range(3):
            self.check()
        for _ in range(10):
            self.clock.advance(0.1)
        self.assertTrue(self.check().allowed)

    def test_never_more_than_count(self) -> None:
        """
        An idle bucket fills up to COUNT and no further.
        """
        self.check()
        self.clock.advance(1000)
        self.assertEqual(self.limiter.peek(self.policy, "k"), 3.0)
        self.assertEqual(self.check(), Decision(True, 3, 2, 1, 0))

    def test_retry_after_rounds_up(self) -> None:
        """
        Retry-After is the time to one token, rounded up, and at least 1.
        """
        slow = Policy("slow", 1, 2.5)
        self.limiter.check_now([(slow, "k")])
        self.assertEqual(self.limiter.check_now([(slow, "k")]).retry_after_s, 3)
        self.clock.advance(2.25)
        self.assertEqual(self.limiter.check_now([(slow, "k")]).retry_after_s, 1)

    def test_clock_going_back(self) -> None:
        """
        A clock stepping backwards refills nothing rather than breaking the bucket.
        """
        self.clock.advance(100)
        self.check()
        self.clock.rightNow = 50.0
        self.assertEqual(self.limiter.peek(self.policy, "k"), 2.0)
        self.assertEqual(self.check(), Decision(True, 3, 1, 2, 0))
        self.clock.rightNow = 51.0
        self.assertEqual(self.limiter.peek(self.policy, "k"), 2.0)

    def test_check_fires_at_once(self) -> None:
        """
        The memory limiter's Deferred has already fired.
        """
        self.assertEqual(self.successResultOf(self.limiter.check([(self.policy, "k")])).remaining, 2)

    def test_headers_when_allowed(self) -> None:
        """
        An allowed decision has the three RateLimit headers and no Retry-After.
        """
        self.assertEqual(
            Decision(True, 300, 299, 1, 0).headers(),
            {"RateLimit-Limit": "300", "RateLimit-Remaining": "299", "RateLimit-Reset": "1"},
        )

    @given(
        steps=st.lists(
            st.tuples(
                st.floats(min_value=0, max_value=5, allow_nan=False),
                st.sets(st.sampled_from([0, 1, 2, 3]), min_size=1),
            ),
            max_size=60,
        )
    )
    def test_bucket_invariants(self, steps: list[tuple[float, set[int]]]) -> None:
        """
        Whatever the timing and combination of buckets: tokens stay within
        [0, COUNT], a refused check changes no bucket, an allowed one takes
        exactly one token from each, and no bucket allows more than
        COUNT + rate * elapsed requests.
        """
        clock = Clock()
        limiter = MemoryRateLimiter(clock, max_buckets=1000)
        buckets = [
            (Policy("a", 3, 2.0), "x"),
            (Policy("a", 3, 2.0), "y"),
            (Policy("b", 1, 0.7), "x"),
            (Policy("c", 10, 30.0), "x"),
        ]
        allowed = [0] * len(buckets)
        for delay, chosen in steps:
            clock.advance(delay)
            before = [limiter.peek(p, k) for p, k in buckets]
            decision = limiter.check_now([buckets[i] for i in sorted(chosen)])
            after = [limiter.peek(p, k) for p, k in buckets]
            for i, (policy, _) in enumerate(buckets):
                self.assertGreaterEqual(after[i], 0.0)
                self.assertLessEqual(after[i], policy.count)
                expected = before[i] - 1 if decision.allowed and i in chosen else before[i]
                self.assertAlmostEqual(after[i], max(0.0, expected), places=6)
                allowed[i] += decision.allowed and i in chosen
            self.assertEqual(decision.allowed, all(before[i] >= 1 - 1e-9 for i in chosen))
            self.assertLessEqual(0, decision.remaining)
            self.assertLess(decision.remaining, decision.limit)
            self.assertGreaterEqual(decision.reset_s, 0)
            self.assertEqual(decision.retry_after_s >= 1, not decision.allowed)
        for i, (policy, _) in enumerate(buckets):
            self.assertLessEqual(allowed[i], policy.count + policy.rate * clock.seconds() + 1e-6)


class MemoryEvictionTests(unittest.TestCase):
    """
    The memory limiter holds a bounded number of buckets.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = Policy("p", 2, 10.0)

    def test_bound(self) -> None:
        """
        However many keys are seen, at most max_buckets buckets are held.
        """
        limiter = MemoryRateLimiter(self.clock, max_buckets=3)
        for n in range(50):
            limiter.check_now([(self.policy, f"k{n}")])
            self.assertLessEqual(len(limiter), 3)

    def test_least_recently_used_goes(self) -> None:
        """
        Past the bound the least recently used bucket is dropped (it starts full
        again); a bucket in use, even refusing, is kept.
        """
        limiter = MemoryRateLimiter(self.clock, max_buckets=2)
        limiter.check_now([(self.policy, "old")])
        limiter.check_now([(self.policy, "busy")])
        limiter.check_now([(self.policy, "busy")])
        limiter.check_now([(self.policy, "old")])
        limiter.check_now([(self.policy, "busy")])  # refused, but recently used
        limiter.check_now([(self.policy, "new")])
        self.assertEqual(limiter.peek(self.policy, "old"), 2.0)
        self.assertEqual(limiter.peek(self.policy, "busy"), 0.0)

    def test_full_buckets_dropped(self) -> None:
        """
        Buckets that have refilled completely are forgotten as checks go by.
        """
        limiter = MemoryRateLimiter(self.clock)
        for n in range(10):
            limiter.check_now([(self.policy, f"k{n}")])
        self.assertEqual(len(limiter), 10)
        self.clock.advance(2.0)  # not full yet: kept
        limiter.check_now([(self.policy, "k0")])
        self.assertEqual(len(limiter), 10)
        self.clock.advance(10.0)
        for _ in range(5):
            limiter.check_now([(self.policy, "fresh")])
        self.assertLessEqual(len(limiter), 2)

    def test_bad_bound(self) -> None:
        """
        A limiter must be allowed at least one bucket.
        """
        self.assertRaises(ValueError, MemoryRateLimiter, self.clock, max_buckets=0)


class PolicyTests(unittest.TestCase):
    """
    Policies are validated value objects.
    """

    def test_rate(self) -> None:
        """
        The rate is COUNT/SECONDS tokens per second.
        """
        self.assertEqual(Policy("api_ip", 300, 60).rate, 5.0)

    def test_invalid(self) -> None:
        """
        Empty or odd names, counts below one and non-positive periods are refused.
        """
        for args in [
            ("", 1, 1.0),
            ("a:b", 1, 1.0),
            ("a b", 1, 1.0),
            ("p", 0, 1.0),
            ("p", True, 1.0),
            ("p", 1, 0.0),
            ("p", 1, float("inf")),
            ("p", 1, float("nan")),
        ]:
            self.assertRaises(ValueError, Policy, *args)

    def test_from_settings(self) -> None:
        """
        The four policies come from the four STREAMSRV_RATELIMIT_* settings.
        """
        settings = SimpleNamespace(
            ratelimit_api_per_ip=RateLimit(300, 60.0),
            ratelimit_api_per_user=RateLimit(600, 60.0),
            ratelimit_stream_per_ip=RateLimit(60, 60.0),
            ratelimit_stream_per_user=RateLimit(120, 60.0),
        )
        self.assertEqual(Policies.from_settings(settings), DEFAULT_POLICIES)


class KeysForTests(unittest.TestCase):
    """
    Which buckets a request draws from.
    """

    def test_authenticated_api_call(self) -> None:
        """
        An authenticated API call draws from the IP's and the user's API buckets.
        """
        self.assertEqual(
            keys_for(client_ip="198.51.100.7", sub="alice", stream=False, policies=DEFAULT_POLICIES),
            [(DEFAULT_POLICIES.api_ip, "198.51.100.7"), (DEFAULT_POLICIES.api_user, "u:alice")],
        )

    def test_stream_start(self) -> None:
        """
        A stream start draws from the stream buckets only.
        """
        self.assertEqual(
            keys_for(client_ip="198.51.100.7", sub="alice", stream=True, policies=DEFAULT_POLICIES),
            [(DEFAULT_POLICIES.stream_ip, "198.51.100.7"), (DEFAULT_POLICIES.stream_user, "u:alice")],
        )

    def test_anonymous(self) -> None:
        """
        Without a known ``sub`` only the IP's bucket is used.
        """
        self.assertEqual(
            keys_for(client_ip="198.51.100.7", sub=None, stream=True, policies=DEFAULT_POLICIES),
            [(DEFAULT_POLICIES.stream_ip, "198.51.100.7")],
        )

    def test_ipv6_per_64(self) -> None:
        """
        IPv6 clients share a bucket per /64; IPv4-mapped addresses are IPv4.
        """
        self.assertEqual(ip_bucket_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(ip_bucket_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64")
        self.assertEqual(ip_bucket_key("2001:db8:1:3::1"), "2001:db8:1:3::/64")
        self.assertEqual(ip_bucket_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(ip_bucket_key("192.0.2.1"), "192.0.2.1")

    def test_non_ip_hashed(self) -> None:
        """
        A peer that is no IP address (a UNIX socket path) is hashed, not used raw.
        """
        self.assertEqual(ip_bucket_key("/run/x.sock"), "h:" + hashlib.sha256(b"/run/x.sock").hexdigest())

    def test_user_keys(self) -> None:
        """
        Plain subs are kept readable; others (long, spaces, control or
        non-ASCII characters, lone surrogates) are hashed.
        """
        self.assertEqual(
            user_bucket_key("auth0|5f7c8ec7c33c6c004bbafe82"), "u:auth0|5f7c8ec7c33c6c004bbafe82"
        )
        for sub in ["a b", "x" * 200, "\r\nFLUSHALL", "ünïcode", "\ud800", ""]:
            key = user_bucket_key(sub)
            self.assertTrue(key.startswith("h:"), sub)
            self.assertEqual(len(key), 66)
        self.assertNotEqual(user_bucket_key("a b"), user_bucket_key("a  b"))


class RefusalMessageTests(unittest.TestCase):
    """What a 429 says about the bucket that refused."""

    def test_describe_policy(self) -> None:
        """Each of the four policies has a name a person reads, with its rate in a natural unit."""
        self.assertEqual(describe_policy(DEFAULT_POLICIES.stream_ip), "per-IP stream limit (60/min)")
        self.assertEqual(describe_policy(DEFAULT_POLICIES.stream_user), "per-user stream limit (120/min)")
        self.assertEqual(describe_policy(DEFAULT_POLICIES.api_ip), "per-IP API limit (300/min)")
        self.assertEqual(describe_policy(Policy("api_user", 10, 1.0)), "per-user API limit (10/s)")
        self.assertEqual(describe_policy(Policy("api_user", 10, 3600.0)), "per-user API limit (10/h)")
        self.assertEqual(describe_policy(Policy("api_user", 10, 90.0)), "per-user API limit (10/90 s)")
        self.assertEqual(describe_policy(Policy("api_user", 10, 0.5)), "per-user API limit (10/0.5 s)")
        self.assertEqual(describe_policy(Policy("other", 1, 60.0)), "other limit (1/min)")

    def test_refusal_message(self) -> None:
        """The message names the bucket and the wait; a decision without a policy keeps the generic one."""
        decision = Decision(False, 60, 0, 60, 1, policy=DEFAULT_POLICIES.stream_ip)
        self.assertEqual(
            refusal_message(decision),
            "Too many requests: the per-IP stream limit (60/min) is used up; retry in 1 s.",
        )
        self.assertEqual(refusal_message(Decision(False, 1, 0, 1, 1)), "Too many requests; slow down.")


_POLICIES = st.sampled_from(
    [Policy("a", 300, 60.0), Policy("b", 600, 60.0), Policy("c", 5, 1.0), Policy("d", 300, 30.0)]
)


class DecideTwoBucketsTests(unittest.TestCase):
    """``decide``'s two-bucket shortcut picks the bucket the general rule picks."""

    @given(
        first=_POLICIES,
        second=_POLICIES,
        a=st.floats(min_value=0, max_value=600, allow_nan=False),
        b=st.floats(min_value=0, max_value=600, allow_nan=False),
        whole=st.booleans(),
    )
    def test_same_as_general(self, first: Policy, second: Policy, a: float, b: float, whole: bool) -> None:
        a, b = min(a, first.count), min(b, second.count)
        if whole:
            a, b = float(int(a)), float(int(b))
        pair = [(first, a), (second, b)]
        # A third bucket that never has the least room sends the same pair down the general path.
        roomy = Policy("z", 10_000_000, 1.0)
        general = decide([*pair, (roomy, 10_000_000.0)], True)
        self.assertEqual(decide(pair, True), general)

    @given(
        first=_POLICIES,
        second=_POLICIES,
        a=st.floats(min_value=0, max_value=600, allow_nan=False),
        b=st.floats(min_value=0, max_value=600, allow_nan=False),
    )
    def test_cached_answer_same_as_decide(self, first: Policy, second: Policy, a: float, b: float) -> None:
        """The memory limiter's two-bucket answer (reused when equal) is ``decide``'s, policy included."""
        a, b = min(a, first.count), min(b, second.count)
        for _ in range(2):  # the second time from the cache
            mine = _allowed_of_two(first, a, second, b)
            theirs = decide([(first, a), (second, b)], True)
            self.assertEqual(mine, theirs)
            self.assertIs(mine.policy, theirs.policy)

    def test_two_bucket_take_same_as_general(self) -> None:
        """Two distinct buckets take the same tokens and answer as the general loop does."""
        clock = Clock()
        fast, general = MemoryRateLimiter(clock), MemoryRateLimiter(clock)
        ip, user = Policy("ip", 3, 10.0), Policy("user", 5, 60.0)
        for step in range(8):
            keys = [(ip, "1.2.3.4"), (user, "u:alice")]
            mine = fast.check_now(keys)
            # A duplicate pair sends the same check down the general loop.
            theirs = general.check_now([*keys, (ip, "1.2.3.4")])
            self.assertEqual((mine, mine.policy), (theirs, theirs.policy))
            self.assertEqual(fast.peek(ip, "1.2.3.4"), general.peek(ip, "1.2.3.4"))
            self.assertEqual(fast.peek(user, "u:alice"), general.peek(user, "u:alice"))
            clock.advance(step * 0.7)

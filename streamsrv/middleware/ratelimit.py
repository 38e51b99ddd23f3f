# -*- test-case-name: tests.test_ratelimit,tests.test_ratelimit_redis -*-
"""Token-bucket rate limits per client address and per user, in memory or in Redis.

Every request takes one token from the client IP's bucket and, when the
request is authenticated, from the user's bucket too; API calls and stream
starts have buckets of their own (``STREAMSRV_RATELIMIT_*``).  A request is
allowed only if every bucket it touches has a token, and then takes one from
each; a refused request takes none.  :class:`MemoryRateLimiter` keeps buckets
in this process; :class:`RedisRateLimiter` keeps them in Redis, shared by every
process, and answers from a :class:`MemoryRateLimiter` while Redis is away.
Both follow the same rules and produce the same :class:`Decision`.  This
module must never let a limiter failure refuse or hang a request (a broken
Redis degrades to local buckets, within a bounded timeout), never keep an
unbounded number of buckets, and never put a raw client-chosen string into a
Redis key.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

log = Logger()

#: Slack for floating-point refill arithmetic: a bucket this close to a whole
#: token has it, so that ten refills of a tenth make one token.
EPSILON: Final = 1e-9

#: How long a Redis round trip may take before the check is answered from the
#: local buckets instead.
REDIS_TIMEOUT_S: Final = 0.25

#: While degraded, how often Redis is asked whether it is back.
PROBE_INTERVAL_S: Final = 5.0

#: Where the checks are answered: Redis, or this process's buckets.
STATE_REDIS: Final = "redis"
STATE_LOCAL: Final = "local"

#: IPv6 clients are limited per /64: one host or household usually owns a
#: whole /64 and can pick a fresh address from it for every request.
IPV6_CLIENT_PREFIX: Final = 64

#: A ``sub`` that is used verbatim in bucket keys; any other is hashed.
_PLAIN_SUB = re.compile(r"[A-Za-z0-9._@|+=-]{1,128}", re.ASCII)

_POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


@dataclass(frozen=True)
class Policy:
    """
    A token bucket: *count* tokens, refilled evenly over *seconds*.

    A full bucket allows a burst of *count* requests; after that one request
    per ``seconds / count``.  The name keys the buckets (``api_ip``,
    ``stream_user``…), so processes sharing Redis must give a policy the same
    name.

    :raise ValueError: If the name is not 1–64 of ``A-Za-z0-9_.-``, *count*
        is below 1 or *seconds* is not a finite number above 0.
    """

    name: str
    count: int
    seconds: float

    def __post_init__(self) -> None:
        if not _POLICY_NAME.fullmatch(self.name):
            raise ValueError(f"a policy name is 1-64 of A-Za-z0-9_.-, got {self.name!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"policy {self.name}: count must be a whole number >= 1, got {self.count!r}")
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"policy {self.name}: seconds must be > 0, got {self.seconds!r}")

    @functools.cached_property
    def rate(self) -> float:
        """
        Tokens added per second.
        """
        return self.count / self.seconds


@dataclass(frozen=True)
class Decision:
    """
    The answer to one check, with what the ``RateLimit-*`` headers say.

    :ivar allowed: Whether the request may go on (it took its tokens).
    :ivar limit: ``RateLimit-Limit``: the size of the bucket described.
    :ivar remaining: ``RateLimit-Remaining``: whole tokens left in it.
    :ivar reset_s: ``RateLimit-Reset``: seconds until it is full again.
    :ivar retry_after_s: ``Retry-After`` when refused: seconds until the
        request would be allowed (at least 1); 0 when allowed.
    :ivar policy: The policy of the bucket described (the one that refused,
        when refused); not part of equality.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    policy: Policy | None = field(default=None, compare=False)

    def headers(self) -> dict[str, str]:
        """
        The response headers for this decision: ``RateLimit-Limit``,
        ``RateLimit-Remaining``, ``RateLimit-Reset``, and ``Retry-After`` when
        refused.
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class IRateLimiter(Interface):
    """
    Token buckets shared by whatever the implementation can reach.
    """

    def check(keys: Sequence[tuple[Policy, str]]) -> Deferred[Decision]:  # noqa: N805 - zope interface
        """
        Take one token from every ``(policy, key)`` bucket, or from none.

        If every bucket has a token, one is taken from each (atomically: no
        concurrent check sees half of it) and the decision describes the bucket
        left with the least room.  Otherwise nothing is taken and the decision
        describes the bucket that refused (the one that takes longest to allow
        the request, if several did).  A pair given twice is one bucket.

        :param keys: At least one pair, typically from :func:`keys_for`.
        :return: A Deferred that fires with the :class:`Decision`; it never
            fails because a backend is unavailable.
        :raise ValueError: If *keys* is empty.
        """


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - EPSILON))


def _seconds_to_full(policy: Policy, tokens: float) -> float:
    return max(0.0, policy.count - tokens) / policy.rate


def _seconds_to_token(policy: Policy, tokens: float) -> float:
    return max(0.0, 1.0 - tokens) / policy.rate


def _has_token(tokens: float) -> bool:
    return tokens >= 1.0 - EPSILON


def decide(buckets: Sequence[tuple[Policy, float]], allowed: bool) -> Decision:
    """
    Describe the outcome of a check, the same way for every implementation.

    :param buckets: Each bucket's policy and its tokens: after the take when
        *allowed*, as they stand (untouched) when refused.
    :param allowed: Whether the tokens were taken.
    """
    if not buckets:
        raise ValueError("a check needs at least one bucket")
    if len(buckets) == 1:
        # The usual anonymous case: no choice to make.
        policy, tokens = buckets[0]
        retry_after = 0 if allowed else max(1, _ceil(_seconds_to_token(policy, tokens)))
    elif allowed and len(buckets) == 2:
        # The usual signed-in case, as the branch below decides it, without its key tuples.
        (first, first_tokens), (second, second_tokens) = buckets
        whole_first, whole_second = math.floor(first_tokens + EPSILON), math.floor(second_tokens + EPSILON)
        if whole_first < whole_second or (
            whole_first == whole_second
            and _seconds_to_full(first, first_tokens) >= _seconds_to_full(second, second_tokens)
        ):
            policy, tokens = first, first_tokens
        else:
            policy, tokens = second, second_tokens
        retry_after = 0
    elif allowed:
        # Least room: fewest whole tokens left; of equals, the slowest to refill.
        policy, tokens = min(
            buckets, key=lambda b: (math.floor(b[1] + EPSILON), -_seconds_to_full(b[0], b[1]))
        )
        retry_after = 0
    else:
        refusing = [b for b in buckets if not _has_token(b[1])] or list(buckets)
        policy, tokens = max(
            refusing, key=lambda b: (_seconds_to_token(b[0], b[1]), _seconds_to_full(b[0], b[1]))
        )
        retry_after = max(1, _ceil(_seconds_to_token(policy, tokens)))
    return Decision(
        allowed=allowed,
        limit=policy.count,
        remaining=max(0, math.floor(tokens + EPSILON)),
        reset_s=_ceil(_seconds_to_full(policy, tokens)),
        retry_after_s=retry_after,
        policy=policy,
    )


#: Decisions of :func:`_allowed_of_two` by what they say: frozen, so shared (bounded, cleared when full).
#: Keyed by the policy's ``id``: a cached decision holds its policy, so the id is not reused meanwhile.
_ALLOWED: dict[tuple[int, int, int], Decision] = {}


def _allowed_of_two(first: Policy, first_tokens: float, second: Policy, second_tokens: float) -> Decision:
    """``decide(((first, first_tokens), (second, second_tokens)), True)``, a recent equal answer reused."""
    whole_first, whole_second = math.floor(first_tokens + EPSILON), math.floor(second_tokens + EPSILON)
    to_full_first = max(0.0, first.count - first_tokens) / first.rate
    to_full_second = max(0.0, second.count - second_tokens) / second.rate
    if whole_first < whole_second or (whole_first == whole_second and to_full_first >= to_full_second):
        policy, whole, to_full = first, whole_first, to_full_first
    else:
        policy, whole, to_full = second, whole_second, to_full_second
    key = (id(policy), max(0, whole), max(0, math.ceil(to_full - EPSILON)))
    decision = _ALLOWED.get(key)
    if decision is None:
        if len(_ALLOWED) >= 4096:
            _ALLOWED.clear()
        decision = _ALLOWED[key] = Decision(True, policy.count, key[1], key[2], 0, policy)
    return decision


#: How a 429 names each of the four policies of :class:`Policies`.
_POLICY_LABELS: Final = {
    "api_ip": "per-IP API limit",
    "api_user": "per-user API limit",
    "stream_ip": "per-IP stream limit",
    "stream_user": "per-user stream limit",
}

#: Refill periods written as a unit rather than in seconds.
_PERIOD_UNITS: Final = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}


def describe_policy(policy: Policy) -> str:
    """
    A policy as a person reads it, e.g. ``per-IP stream limit (60/min)``.

    :param policy: One of :class:`Policies` (another name is shown as it is).
    """
    label = _POLICY_LABELS.get(policy.name, f"{policy.name} limit")
    seconds = policy.seconds
    unit = _PERIOD_UNITS.get(seconds)
    if unit is None:
        unit = f"{int(seconds)} s" if seconds.is_integer() else f"{seconds:g} s"
    return f"{label} ({policy.count}/{unit})"


def refusal_message(decision: Decision) -> str:
    """
    The message of a 429 for *decision*: which bucket refused and when to retry.

    :param decision: A refusal.
    """
    if decision.policy is None:
        return "Too many requests; slow down."
    return (
        f"Too many requests: the {describe_policy(decision.policy)} is used up; "
        f"retry in {decision.retry_after_s} s."
    )


def _unique(keys: Sequence[tuple[Policy, str]]) -> list[tuple[Policy, str]]:
    if not keys:
        raise ValueError("a check needs at least one (policy, key) pair")
    if len(keys) == 1:
        return [keys[0]]
    seen: set[tuple[str, str]] = set()
    unique: list[tuple[Policy, str]] = []
    for policy, key in keys:
        if (policy.name, key) not in seen:
            seen.add((policy.name, key))
            unique.append((policy, key))
    return unique


@implementer(IRateLimiter)
class MemoryRateLimiter:
    """
    Token buckets in this process, timed by an injected clock.

    At most *max_buckets* buckets are kept.  A bucket that has refilled
    completely is the same as no bucket, so such buckets are dropped as they
    are met at the old end of the LRU order; past the bound the least recently
    used bucket goes, full or not (its client then starts from a full bucket).
    """

    #: Buckets looked at, from the least recently used end, on each check.
    SWEEP: Final = 2

    def __init__(self, clock: IReactorTime, max_buckets: int = 100_000) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._clock = clock
        self._max_buckets = max_buckets
        # (policy name, key) -> [tokens, timestamp, policy]
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float, Policy]] = OrderedDict()

    def __len__(self) -> int:
        """
        How many buckets are held.
        """
        return len(self._buckets)

    def _tokens(self, policy: Policy, key: str, now: float) -> float:
        state = self._buckets.get((policy.name, key))
        if state is None:
            return float(policy.count)
        tokens, stamp, _ = state
        return min(float(policy.count), tokens + max(0.0, now - stamp) * policy.rate)

    def peek(self, policy: Policy, key: str) -> float:
        """
        The tokens in a bucket now, without taking any (for tests and metrics).
        """
        return self._tokens(policy, key, self._clock.seconds())

    def check(self, keys: Sequence[tuple[Policy, str]]) -> Deferred[Decision]:
        return succeed(self.check_now(keys))

    def check_now(self, keys: Sequence[tuple[Policy, str]]) -> Decision:
        """
        :meth:`check`, answered synchronously.
        """
        if len(keys) == 2:
            (first, first_key), (second, second_key) = keys
            if first.name != second.name or first_key != second_key:
                decision = self._take_two(first, first_key, second, second_key)
                if decision is not None:
                    return decision
        pairs = _unique(keys)
        now = self._clock.seconds()
        stored = self._buckets
        current = []
        allowed = True
        for policy, key in pairs:
            bucket_id = (policy.name, key)
            state = stored.get(bucket_id)
            count = float(policy.count)
            if state is None:
                tokens = count
            else:
                tokens = min(count, state[0] + max(0.0, now - state[1]) * policy.rate)
            if not _has_token(tokens):
                allowed = False
            current.append((policy, bucket_id, tokens))
        buckets: list[tuple[Policy, float]] = []
        for policy, bucket_id, tokens in current:
            if allowed:
                tokens = max(0.0, tokens - 1.0)
                stored[bucket_id] = (tokens, now, policy)
                stored.move_to_end(bucket_id)
            elif bucket_id in stored:
                # Refused: nothing taken, but a bucket in use is not evicted.
                stored.move_to_end(bucket_id)
            buckets.append((policy, tokens))
        self._evict(now)
        return decide(buckets, allowed)

    def _take_two(self, first: Policy, first_key: str, second: Policy, second_key: str) -> Decision | None:
        """:meth:`check_now` of two distinct buckets (a signed-in request) when both have a token.

        The same arithmetic, bucket order and eviction as the general loop,
        without its lists; ``None`` (nothing changed) when either bucket is
        empty: the general loop then refuses.
        """
        now = self._clock.seconds()
        stored = self._buckets
        first_id = (first.name, first_key)
        second_id = (second.name, second_key)
        count = float(first.count)
        state = stored.get(first_id)
        first_tokens = (
            count if state is None else min(count, state[0] + max(0.0, now - state[1]) * first.rate)
        )
        count = float(second.count)
        state = stored.get(second_id)
        second_tokens = (
            count if state is None else min(count, state[0] + max(0.0, now - state[1]) * second.rate)
        )
        if first_tokens < 1.0 - EPSILON or second_tokens < 1.0 - EPSILON:
            return None
        first_tokens = max(0.0, first_tokens - 1.0)
        stored[first_id] = (first_tokens, now, first)
        stored.move_to_end(first_id)
        second_tokens = max(0.0, second_tokens - 1.0)
        stored[second_id] = (second_tokens, now, second)
        stored.move_to_end(second_id)
        self._evict(now)
        return _allowed_of_two(first, first_tokens, second, second_tokens)

    def _evict(self, now: float) -> None:
        for _ in range(self.SWEEP):
            if not self._buckets:
                break
            bucket_id, (tokens, stamp, policy) = next(iter(self._buckets.items()))
            if tokens + max(0.0, now - stamp) * policy.rate < policy.count - EPSILON:
                break
            del self._buckets[bucket_id]
        while len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)


#: Takes one token from every bucket in KEYS if all have one, else none.
#: ARGV holds, per bucket, its size and its refill period in seconds.  Time is
#: the Redis server's, so processes with skewed clocks agree.  Each bucket is
#: a hash {tokens, ts (microseconds)} that expires once it would be full again.
#: Replies {1|0, tokens of each bucket (after the take, or as they stand)}.
REDIS_SCRIPT: Final = """\
if redis.replicate_commands then pcall(redis.replicate_commands) end
local eps = 1e-9
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local counts, rates, tokens = {}, {}, {}
local allowed = 1
for i = 1, #KEYS do
  local count = tonumber(ARGV[2 * i - 1])
  local rate = count / (tonumber(ARGV[2 * i]) * 1000000)
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local stored, ts = tonumber(state[1]), tonumber(state[2])
  local tok = count
  if stored and ts then
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end
    tok = math.min(count, stored + elapsed * rate)
  end
  counts[i], rates[i], tokens[i] = count, rate, tok
  if tok < 1 - eps then allowed = 0 end
end
local reply = {allowed}
for i = 1, #KEYS do
  local tok = tokens[i]
  if allowed == 1 then
    tok = math.max(0, tok - 1)
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tok), 'ts', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((counts[i] - tok) / rates[i] / 1000)))
  end
  reply[i + 1] = string.format('%.17g', tok)
end
return reply
"""

REDIS_SCRIPT_SHA1: Final = hashlib.sha1(REDIS_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


class RedisScripting(Protocol):
    """
    The part of a txredisapi connection the Redis limiter uses.
    """

    def evalsha(self, sha1_hash: str, keys: Sequence[str], args: Sequence[str]) -> Deferred[Any]: ...

    def eval(self, script: str, keys: Sequence[str], args: Sequence[str]) -> Deferred[Any]: ...

    def ping(self) -> Deferred[Any]: ...


def _is_noscript(failure: Failure) -> bool:
    # txredisapi turns a NOSCRIPT reply into ScriptDoesNotExist; matching the
    # reply text as well keeps this independent of that class.
    return type(failure.value).__name__ == "ScriptDoesNotExist" or str(failure.value).startswith("NOSCRIPT")


@implementer(IRateLimiter)
class RedisRateLimiter:
    """
    Token buckets in Redis, shared by every process that uses the same prefix.

    One Lua script checks and takes all the buckets of a request atomically.
    If Redis fails or does not answer within *timeout_s*, the check is
    answered from *fallback* (this process's buckets), one warning is logged
    (``event_kind="degraded"``) and *on_state_change* gets ``"local"``; from
    then on checks stay local and Redis is pinged every *probe_interval_s*
    until it answers, when checks go back to Redis and *on_state_change* gets
    ``"redis"``.  Call :meth:`close` when done, to stop probing.
    """

    def __init__(
        self,
        redis: RedisScripting,
        clock: IReactorTime,
        fallback: MemoryRateLimiter,
        key_prefix: str = "streamsrv:rl:",
        on_state_change: Callable[[str], None] | None = None,
        *,
        timeout_s: float = REDIS_TIMEOUT_S,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        """
        :param redis: A txredisapi connection, e.g. ``RedisService.connection``
            from :mod:`streamsrv.redisconn`.
        :param clock: Times the Redis timeout and the probes (bucket arithmetic
            in Redis uses the Redis server's clock).
        :param fallback: Answers while Redis is away.
        :param key_prefix: Prefix of every bucket key.
        :param on_state_change: Called with ``"local"`` or ``"redis"`` on each
            switch (for metrics and health); its errors are logged, not raised.
        """
        self._redis = redis
        self._clock = clock
        self._fallback = fallback
        self._prefix = key_prefix
        self._on_state_change = on_state_change
        self._timeout_s = timeout_s
        self._probe_interval_s = probe_interval_s
        self._state = STATE_REDIS
        self._probe_call: IDelayedCall | None = None
        self._probing: Deferred[Any] | None = None
        self._closed = False

    @property
    def state(self) -> str:
        """
        ``"redis"`` or ``"local"``: where checks are answered now.
        """
        return self._state

    def check(self, keys: Sequence[tuple[Policy, str]]) -> Deferred[Decision]:
        pairs = _unique(keys)
        if self._state == STATE_LOCAL or self._closed:
            return self._fallback.check(pairs)
        redis_keys = [f"{self._prefix}{policy.name}:{key}" for policy, key in pairs]
        args: list[str] = []
        for policy, _ in pairs:
            args += [str(policy.count), repr(float(policy.seconds))]

        def run_again(failure: Failure) -> Deferred[Any] | Failure:
            if _is_noscript(failure):
                return self._redis.eval(REDIS_SCRIPT, redis_keys, args)
            return failure

        def decided(reply: Any) -> Decision:
            allowed = int(reply[0]) == 1
            tokens = [float(value) for value in reply[1:]]
            if len(tokens) != len(pairs):
                raise ValueError(f"the rate-limit script answered {len(tokens)} buckets for {len(pairs)}")
            return decide([(policy, t) for (policy, _), t in zip(pairs, tokens, strict=True)], allowed)

        def degraded(failure: Failure) -> Deferred[Decision]:
            self._degrade(failure)
            return self._fallback.check(pairs)

        d = self._redis.evalsha(REDIS_SCRIPT_SHA1, redis_keys, args)
        d.addErrback(run_again)
        d.addTimeout(self._timeout_s, self._clock)
        d.addCallback(decided)
        d.addErrback(degraded)
        return d

    def close(self) -> None:
        """
        Stop probing Redis; later checks are answered locally.
        """
        self._closed = True
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        self._probe_call = None
        if self._probing is not None:
            self._probing.cancel()

    def _switch(self, state: str) -> None:
        self._state = state
        if self._on_state_change is not None:
            try:
                self._on_state_change(state)
            except Exception:
                log.failure("rate limiter: the state-change callback failed")

    def _degrade(self, failure: Failure) -> None:
        if self._state != STATE_REDIS or self._closed:
            return
        if failure.check(TimeoutError):
            error = f"no answer within {self._timeout_s}s"
        else:
            error = f"{type(failure.value).__name__}: {failure.value}"
        log.warn(
            "Rate limits fall back to this process's buckets: Redis failed ({error}); "
            "trying it again every {interval}s",
            error=error,
            interval=self._probe_interval_s,
            event_kind="degraded",
        )
        self._switch(STATE_LOCAL)
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        if not self._closed:
            self._probe_call = self._clock.callLater(self._probe_interval_s, self._probe)

    def _probe(self) -> None:
        self._probe_call = None

        def back(_: object) -> None:
            self._probing = None
            if self._closed:
                return
            log.info("Rate limits are shared through Redis again", event_kind="recovered")
            self._switch(STATE_REDIS)

        def still_down(_: Failure) -> None:
            self._probing = None
            self._schedule_probe()

        d = self._probing = self._redis.ping()
        d.addTimeout(self._timeout_s, self._clock)
        d.addCallbacks(back, still_down)


@dataclass(frozen=True)
class Policies:
    """
    The four policies of ``STREAMSRV_RATELIMIT_*``.
    """

    api_ip: Policy
    api_user: Policy
    stream_ip: Policy
    stream_user: Policy

    @classmethod
    def from_settings(cls, settings: _RateSettings) -> Policies:
        """
        Build them from :class:`streamsrv.config.Settings`.
        """
        return cls(
            api_ip=Policy(
                "api_ip", settings.ratelimit_api_per_ip.count, settings.ratelimit_api_per_ip.seconds
            ),
            api_user=Policy(
                "api_user", settings.ratelimit_api_per_user.count, settings.ratelimit_api_per_user.seconds
            ),
            stream_ip=Policy(
                "stream_ip", settings.ratelimit_stream_per_ip.count, settings.ratelimit_stream_per_ip.seconds
            ),
            stream_user=Policy(
                "stream_user",
                settings.ratelimit_stream_per_user.count,
                settings.ratelimit_stream_per_user.seconds,
            ),
        )


class _Rate(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def seconds(self) -> float: ...


class _RateSettings(Protocol):
    @property
    def ratelimit_api_per_ip(self) -> _Rate: ...

    @property
    def ratelimit_api_per_user(self) -> _Rate: ...

    @property
    def ratelimit_stream_per_ip(self) -> _Rate: ...

    @property
    def ratelimit_stream_per_user(self) -> _Rate: ...


#: The defaults of DESIGN.md: 300/60, 600/60, 60/60, 120/60.
DEFAULT_POLICIES: Final = Policies(
    api_ip=Policy("api_ip", 300, 60.0),
    api_user=Policy("api_user", 600, 60.0),
    stream_ip=Policy("stream_ip", 60, 60.0),
    stream_user=Policy("stream_user", 120, 60.0),
)


@functools.lru_cache(maxsize=8192)
def ip_bucket_key(client_ip: str) -> str:
    """
    The bucket key of a client address: the address itself for IPv4, its
    /64 network for IPv6 (``2001:db8:1:2::/64``).  Anything that is not an
    address (a UNIX socket peer) is hashed.
    """
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return "h:" + hashlib.sha256(client_ip.encode("utf-8", "surrogatepass")).hexdigest()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


@functools.lru_cache(maxsize=8192)
def user_bucket_key(sub: str) -> str:
    """
    The bucket key of a user: the ``sub`` itself when it is short and plain,
    else a hash of it, so that no client-chosen byte reaches a Redis key.
    """
    if _PLAIN_SUB.fullmatch(sub):
        return "u:" + sub
    return "h:" + hashlib.sha256(sub.encode("utf-8", "surrogatepass")).hexdigest()


def keys_for(
    *, client_ip: str, sub: str | None, stream: bool, policies: Policies
) -> list[tuple[Policy, str]]:
    """
    The buckets a request draws from.

    The client address's bucket always; the user's only when the request is
    authenticated (*sub* known; anonymous listeners have ``None``).  Stream
    starts draw from the stream policies, everything else from the API ones.

    :param client_ip: From ``clientaddr.client_address``.
    """
    ip_policy, user_policy = (
        (policies.stream_ip, policies.stream_user) if stream else (policies.api_ip, policies.api_user)
    )
    keys = [(ip_policy, ip_bucket_key(client_ip))]
    if sub is not None:
        keys.append((user_policy, user_bucket_key(sub)))
    return keys

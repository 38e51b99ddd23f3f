# -*- test-case-name: tests.test_tap -*-
"""Builds the request guard and its rate limiter from the daemon's settings.

:func:`make_limiter` picks the in-memory token buckets, or Redis buckets
(with the in-memory ones as fallback while Redis is away) when
``STREAMSRV_REDIS_URL`` is set; :func:`make_guard` puts the credential parts
(:mod:`streamsrv.auth.factory`), the limiter and the policies together into
the guard every route asks.  This module must never read a request and never
start a service itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import IServiceCollection, Service

from streamsrv.auth.factory import AuthParts
from streamsrv.auth.principal import anonymous_principal
from streamsrv.config import Settings
from streamsrv.health.checks import DEGRADED, OK, CheckResult, HealthChecks
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import STATE_REDIS, MemoryRateLimiter, Policies, RedisRateLimiter


class CloseOnStop(Service):
    """Calls *close* when the daemon stops (a part that is not a service itself)."""

    def __init__(self, close: Callable[[], object]) -> None:
        self._close = close

    def stopService(self) -> None:
        super().stopService()
        self._close()


def make_limiter(reactor: Any, parent: IServiceCollection, *, redis: Any, metrics: Any) -> Any:
    """The rate limiter: in memory, or in Redis when *redis* (a connection) is given.

    The Redis limiter reports its backend's state to *metrics* and is closed
    when *parent* stops.
    """
    local = MemoryRateLimiter(reactor)
    if redis is None:
        return local
    limiter = RedisRateLimiter(redis, reactor, local, on_state_change=metrics.ratelimit_backend.state)
    metrics.ratelimit_backend.state("redis")
    CloseOnStop(limiter.close).setServiceParent(parent)
    return limiter


def make_guard(
    settings: Settings, reactor: Any, auth: AuthParts, limiter: Any, checks: HealthChecks | None = None
) -> Guard:
    """The guard of every route: credentials, signed URLs, revocations, rate limits, anonymity.

    :param checks: where a Redis limiter's ``ratelimit`` check goes (degraded
        while it answers from local buckets because Redis is away).
    """
    if checks is not None and isinstance(limiter, RedisRateLimiter):
        checks.register("ratelimit", lambda: ratelimit_check(limiter))
    return Guard(
        verifier=auth.verifier,
        url_keys=auth.url_keys,
        url_max_ttl_s=settings.url_max_ttl_s,
        revocations=auth.revocations,
        limiter=limiter,
        policies=Policies.from_settings(settings),
        anonymous=anonymous_principal(auth.roles) if settings.allow_anonymous else None,
        clock=reactor,
    )


def ratelimit_check(limiter: RedisRateLimiter) -> CheckResult:
    """``ok`` while buckets are in Redis; ``degraded`` while Redis is away and they are per process."""
    state = limiter.state
    return CheckResult(OK if state == STATE_REDIS else DEGRADED, {"backend": state})

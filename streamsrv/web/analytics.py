# -*- test-case-name: tests.test_analytics_api,tests.test_analytics_queries -*-
"""The analytics routes' request side: query parameters and path segments into values.

:func:`parse_query_params` reads ``from``, ``to``, ``granularity`` and
``limit`` of a request's query into a
:class:`~streamsrv.analytics.queries.QueryParams`; :class:`AnalyticsRoutes`
decodes the track path or user id of the URL and calls the domain
(:class:`~streamsrv.analytics.api.AnalyticsApi`), which decides who may see
what.  Every refusal is the contract's ``ApiError``.  This module never
queries a store nor decides a scope itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IReactorTime

from streamsrv.analytics.api import AnalyticsApi
from streamsrv.analytics.queries import (
    DEFAULT_LIMIT,
    DEFAULT_RANGE_S,
    GRANULARITIES,
    MAX_BUCKETS,
    MAX_LIMIT,
    QueryParams,
    bucket_count,
    parse_time,
)
from streamsrv.auth.principal import Principal
from streamsrv.errors import ApiError
from streamsrv.media.paths import PathRefused, decode_request_path, normalise_relative_path
from streamsrv.middleware.audit import security_event
from streamsrv.web.query import one_value

__all__ = ["AnalyticsRoutes", "parse_query_params"]


def _single(args: Mapping[bytes, Sequence[bytes]], name: str) -> str | None:
    value = one_value(args, name, repeated=f"{name} is given more than once", not_utf8=f"{name} is not UTF-8")
    return value.strip() if value is not None else None


def parse_query_params(
    args: Mapping[bytes, Sequence[bytes]], *, now: float, default_granularity: str = "day"
) -> QueryParams:
    """
    Parse ``from``, ``to``, ``granularity`` and ``limit`` of an analytics request.

    Defaults: ``to`` = *now*, ``from`` = ``to`` − 7 days, ``granularity`` =
    *default_granularity*, ``limit`` = 10.  Other parameters are ignored.

    :param args: ``request.args``.
    :param now: The current time (``clock.seconds()``).
    :raise ApiError: ``BAD_REQUEST`` for a time that is neither RFC 3339 nor
        Unix seconds, ``from`` after ``to``, an unknown granularity, a limit
        outside 1–100, a repeated parameter, or more than
        :data:`~streamsrv.analytics.queries.MAX_BUCKETS` buckets.
    """
    times: dict[str, float] = {}
    for name in ("from", "to"):
        raw = _single(args, name)
        if raw is None:
            continue
        try:
            times[name] = parse_time(raw)
        except (ValueError, OverflowError):
            raise ApiError("BAD_REQUEST", f"{name} must be an RFC 3339 time or Unix seconds")
    end = times.get("to", now)
    start = times.get("from", end - DEFAULT_RANGE_S)
    if start > end:
        raise ApiError("BAD_REQUEST", "from must not be after to")
    granularity = _single(args, "granularity") or default_granularity
    if granularity not in GRANULARITIES:
        raise ApiError("BAD_REQUEST", f"granularity must be one of {', '.join(GRANULARITIES)}")
    raw_limit = _single(args, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,4}", raw_limit, re.ASCII) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ApiError("BAD_REQUEST", f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
    if bucket_count(start, end, granularity) > MAX_BUCKETS:
        raise ApiError("BAD_REQUEST", "too many buckets for this range; use a coarser granularity")
    return QueryParams(start=start, end=end, granularity=granularity, limit=limit)


class AnalyticsRoutes:
    """
    What ``GET /api/v1/analytics/…`` answer, from a request and its admitted principal.

    :param analytics: The domain side.
    :param clock: Tells the time (the defaults of ``from``/``to``).
    """

    def __init__(self, analytics: AnalyticsApi, clock: IReactorTime) -> None:
        self._analytics = analytics
        self._clock = clock

    def _params(self, request: Any) -> QueryParams:
        return parse_query_params(request.args, now=self._clock.seconds())

    async def summary(self, request: Any, principal: Principal) -> Any:
        """Listeners, sessions, listening time, completion rate over the period."""
        return await self._analytics.summary(principal, self._params(request))

    async def top_tracks(self, request: Any, principal: Principal) -> Any:
        """The most listened tracks of the period."""
        return await self._analytics.top_tracks(principal, self._params(request))

    async def track(self, request: Any, principal: Principal, raw_path: bytes) -> Any:
        """One track's listening, bucketed by ``granularity``."""
        try:
            path = "/".join(normalise_relative_path(decode_request_path(raw_path)))
        except PathRefused as e:
            security_event(request, "path_refused", reason=e.reason)
            raise ApiError("NOT_FOUND") from None
        return await self._analytics.track(principal, path, self._params(request))

    async def user(self, request: Any, principal: Principal, raw_sub: bytes) -> Any:
        """One user's listening: admins (``analytics:read``) or the user themselves."""
        try:
            sub = unquote(raw_sub.decode("ascii"), errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise ApiError("BAD_REQUEST", "The user id is not valid UTF-8.") from None
        if not sub or len(sub) > 1024:
            raise ApiError("NOT_FOUND")
        self._analytics.check_user_access(principal, sub)
        return await self._analytics.user(principal, sub, self._params(request))

    async def active(self, request: Any, principal: Principal) -> Any:
        """Sessions open now; artists see their tracks' sessions without user ids."""
        return await self._analytics.active(principal)

    async def qoe(self, request: Any, principal: Principal) -> Any:
        """Quality of experience over the period."""
        return await self._analytics.qoe(principal, self._params(request))

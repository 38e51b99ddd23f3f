# -*- test-case-name: tests.test_analytics_api -*-
"""``GET /api/v1/analytics/…``: what the analytics routes answer.

Every route needs ``analytics:read`` (everything) or ``analytics:read:own``
(an artist: only the tracks whose catalog ``artist`` or ``album_artist`` is
the principal's ``sub``).  Times are ``from``/``to`` (RFC 3339 or Unix
seconds, default the last 7 days) and ``granularity`` for series.

========================================  ==================================================
``/api/v1/analytics/summary``             listeners, sessions, listening time, completion rate
``/api/v1/analytics/top-tracks``          the most listened tracks (``limit``)
``/api/v1/analytics/tracks/{path}``       one track's listening as a time series
``/api/v1/analytics/users/{sub}``         one user's listening (``analytics:read``, or oneself)
``/api/v1/analytics/active``              sessions open now (users hidden from artists)
``/api/v1/analytics/qoe``                 startup time, stalls, seeks, bitrate switches
========================================  ==================================================

:class:`AnalyticsApi` takes the admitted principal and plain values (a
:class:`~streamsrv.analytics.queries.QueryParams`, a track path, a user id)
and raises :class:`~streamsrv.errors.ApiError`; it never takes a request nor
parses a query or a URL (:mod:`streamsrv.web.analytics` does).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from streamsrv.analytics import queries
from streamsrv.analytics.store import IAnalyticsStore
from streamsrv.auth.principal import Principal
from streamsrv.errors import ApiError

__all__ = ["AnalyticsApi"]

#: Most tracks an artist's scope is built from (pages of the catalog search).
MAX_OWNED_TRACKS = 100_000


class AnalyticsApi:
    """
    :param store: The analytics store.
    :param clock: Tells the time (defaults of ``from``/``to``, active sessions).
    :param catalog: Finds an artist's tracks (``search(artist=…)``); ``None``:
        artists see nothing.
    """

    def __init__(self, store: IAnalyticsStore, clock: IReactorTime, catalog: Any = None) -> None:
        self._store = store
        self._clock = clock
        self._catalog = catalog

    async def _scope(self, principal: Principal) -> queries.PathScope:
        if principal.can("analytics:read"):
            return None
        if not principal.can("analytics:read:own"):
            raise ApiError("FORBIDDEN")
        owned: set[str] = set()
        if self._catalog is not None:
            cursor = None
            while len(owned) < MAX_OWNED_TRACKS:
                page = await self._catalog.search(artist=principal.sub, limit=200, cursor=cursor)
                owned.update(record.path for record in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return owned

    def check_user_access(self, principal: Principal, sub: str) -> None:
        """:raise ApiError: ``FORBIDDEN`` unless *principal* may see user *sub*'s listening."""
        if not (principal.can("analytics:read") or principal.sub == sub):
            raise ApiError("FORBIDDEN")

    async def summary(self, principal: Principal, p: queries.QueryParams) -> Any:
        """Listeners, sessions, listening time, completion rate over the period."""
        result = await queries.summary(self._store, p.start, p.end, await self._scope(principal))
        return queries.as_json(result)

    async def top_tracks(self, principal: Principal, p: queries.QueryParams) -> Any:
        """The most listened tracks of the period."""
        rows = await queries.top_tracks(self._store, p.start, p.end, p.limit, await self._scope(principal))
        return {
            "from": queries.format_time(p.start),
            "to": queries.format_time(p.end),
            "items": queries.as_json(rows),
        }

    async def track(self, principal: Principal, path: str, p: queries.QueryParams) -> Any:
        """One track's listening (*path*: a normalised track path), bucketed by ``granularity``."""
        result = await queries.track_listening(
            self._store, path, p.start, p.end, p.granularity, await self._scope(principal)
        )
        return queries.as_json(result)

    async def user(self, principal: Principal, sub: str, p: queries.QueryParams) -> Any:
        """One user's listening: admins (``analytics:read``) or the user themselves."""
        self.check_user_access(principal, sub)
        result = await queries.user_listening(self._store, sub, p.start, p.end, p.granularity, p.limit)
        return queries.as_json(result)

    async def active(self, principal: Principal) -> Any:
        """Sessions open now; artists see their tracks' sessions without user ids."""
        scope = await self._scope(principal)
        rows = await queries.active_sessions(
            self._store, self._clock.seconds(), scope=scope, include_users=scope is None
        )
        return {"items": queries.as_json(rows)}

    async def qoe(self, principal: Principal, p: queries.QueryParams) -> Any:
        """Quality of experience over the period."""
        result = await queries.qoe(self._store, p.start, p.end, await self._scope(principal))
        return queries.as_json(result)

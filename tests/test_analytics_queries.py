# -*- test-case-name: tests.test_analytics_queries -*-
"""Tests for :mod:`streamsrv.analytics.queries`: parameters, buckets, scope, and every query.

:class:`QueriesContractMixin` seeds one data set and runs each query against
SQLite and against the machine's real PostgreSQL (a fresh database per test),
so both dialects must give the same answers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.analytics.queries import (
    MAX_BUCKETS,
    QueryParams,
    active_sessions,
    as_json,
    bucket_starts,
    format_time,
    parse_time,
    qoe,
    scope_for_principal,
    summary,
    top_tracks,
    track_listening,
    user_listening,
)
from streamsrv.analytics.store import AnalyticsEvent, AnalyticsStore, SessionRecord
from streamsrv.auth.principal import Principal
from streamsrv.errors import ApiError
from streamsrv.web.analytics import parse_query_params
from tests.test_analytics_store import StoreFactory, postgres_factory, sqlite_factory

#: 2026-01-01T00:00:00Z, a Thursday.
NOW = 1_767_225_600.0
HOUR = 3600.0
DAY = 86400.0

if TYPE_CHECKING:
    _MixinBase = unittest.TestCase
else:
    _MixinBase = object


def params(**query: str | list[str]) -> dict[bytes, list[bytes]]:
    """``request.args`` for *query*."""
    return {
        key.encode(): [v.encode() for v in (value if isinstance(value, list) else [value])]
        for key, value in query.items()
    }


class ParseQueryParamsTests(unittest.TestCase):
    """parse_query_params and parse_time."""

    def assertBadRequest(self, args: dict[bytes, list[bytes]]) -> ApiError:
        with self.assertRaises(ApiError) as caught:
            parse_query_params(args, now=NOW)
        self.assertEqual(caught.exception.code, "BAD_REQUEST")
        return caught.exception

    def test_defaults(self) -> None:
        """Without parameters: the last 7 days by day, limit 10."""
        self.assertEqual(parse_query_params({}, now=NOW), QueryParams(NOW - 7 * DAY, NOW, "day", 10))

    def test_times(self) -> None:
        """from/to take RFC 3339 (Z, offsets, fractions, bare dates) and Unix seconds."""
        cases = {
            "2026-01-01T00:00:00Z": NOW,
            "2026-01-01t00:00:00z": NOW,
            "2026-01-01T02:00:00+02:00": NOW,
            "2026-01-01T00:00:00.5Z": NOW + 0.5,
            "2026-01-01T00:00:00.123456789Z": NOW + 0.123456,
            "2026-01-01": NOW,
            "1767225600": NOW,
            "1767225600.25": NOW + 0.25,
        }
        for text, expected in cases.items():
            self.assertAlmostEqual(parse_time(text), expected, places=5, msg=text)

    def test_range(self) -> None:
        """from and to are both taken; limit and granularity too."""
        got = parse_query_params(
            params(
                **{"from": "2026-01-01T00:00:00Z", "to": "1767312000", "granularity": "hour", "limit": "100"}
            ),
            now=NOW,
        )
        self.assertEqual(got, QueryParams(NOW, NOW + DAY, "hour", 100))

    def test_bad_times(self) -> None:
        """Times neither RFC 3339 nor Unix seconds are refused, naming the parameter."""
        for bad in (
            "yesterday",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "-5",
            "1e9",
            "",
            "2026-01-01T25:00Z",
        ):
            error = self.assertBadRequest(
                params(**{"from": bad, "to": "1767225600"}) if bad else params(to="x")
            )
            self.assertIn("must be", error.message)

    def test_from_after_to(self) -> None:
        """from after to is refused."""
        self.assertBadRequest(params(**{"from": "1767225601", "to": "1767225600"}))

    def test_granularity(self) -> None:
        """An unknown granularity is refused."""
        self.assertBadRequest(params(granularity="minute"))

    def test_limit(self) -> None:
        """limit must be a whole number from 1 to 100."""
        for bad in ("0", "101", "-1", "1.5", "ten", "99999"):
            self.assertBadRequest(params(limit=bad))
        self.assertEqual(parse_query_params(params(limit="1"), now=NOW).limit, 1)

    def test_repeated(self) -> None:
        """A repeated parameter is refused."""
        self.assertBadRequest(params(limit=["1", "2"]))

    def test_not_utf8(self) -> None:
        """A value that is not UTF-8 is refused."""
        self.assertBadRequest({b"granularity": [b"\xff"]})

    def test_too_many_buckets(self) -> None:
        """A range that would make more than MAX_BUCKETS buckets is refused."""
        span = str(NOW - (MAX_BUCKETS + 10) * HOUR)
        self.assertBadRequest(params(**{"from": span, "granularity": "hour"}))
        parse_query_params(params(**{"from": span, "granularity": "day"}), now=NOW)


class BucketTests(unittest.TestCase):
    """UTC buckets."""

    def test_week_starts_monday(self) -> None:
        """Weeks are ISO weeks: 2026-01-01 (a Thursday) is in the week of Monday 2025-12-29."""
        self.assertEqual(
            [format_time(t) for t in bucket_starts(NOW, NOW + 1, "week")], ["2025-12-29T00:00:00Z"]
        )

    def test_months(self) -> None:
        """Months are calendar months of varying length."""
        starts = bucket_starts(
            parse_time("2026-01-31T12:00:00Z"), parse_time("2026-03-02T00:00:00Z"), "month"
        )
        self.assertEqual(
            [format_time(t) for t in starts],
            ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        )

    def test_hours(self) -> None:
        """Hours from the hour the range starts in, up to (not including) its end."""
        self.assertEqual(bucket_starts(NOW + 10, NOW + 2 * HOUR, "hour"), [NOW, NOW + HOUR])

    @settings(derandomize=True, deadline=None)
    @given(
        st.floats(NOW - 400 * DAY, NOW + 400 * DAY),
        st.floats(0, 60 * DAY),
        st.sampled_from(["hour", "day", "week", "month"]),
    )
    def test_cover(self, start: float, span: float, granularity: str) -> None:
        """Buckets are increasing, the first holds start, the last begins before end."""
        starts = bucket_starts(start, start + span, granularity)
        self.assertLessEqual(starts[0], start)
        self.assertEqual(starts, sorted(set(starts)))
        self.assertTrue(len(starts) == 1 or starts[-1] < start + span)


def principal(*permissions: str, sub: str = "artist-1") -> Principal:
    return Principal(sub=sub, roles=frozenset(), permissions=frozenset(permissions), via="jwt")


class ScopeTests(unittest.TestCase):
    """scope_for_principal."""

    def test_admin(self) -> None:
        """analytics:read (or *) sees everything."""
        owns = lambda sub, path: False  # noqa: E731
        self.assertIsNone(scope_for_principal(principal("analytics:read"), owns))
        self.assertIsNone(scope_for_principal(principal("*"), owns))

    def test_artist(self) -> None:
        """analytics:read:own sees the tracks owns() gives the principal's sub."""
        scope = scope_for_principal(
            principal("analytics:read:own"), lambda sub, path: path.startswith(sub + "/")
        )
        assert callable(scope)
        self.assertTrue(scope("artist-1/song.mp3"))
        self.assertFalse(scope("artist-2/song.mp3"))

    def test_listener(self) -> None:
        """Without either permission: FORBIDDEN."""
        with self.assertRaises(ApiError) as caught:
            scope_for_principal(principal("stream:read"), lambda sub, path: True)
        self.assertEqual(caught.exception.code, "FORBIDDEN")


def seed(store: AnalyticsStore) -> None:
    """The data set every query test reads (see the module of these tests)."""

    def s(sid: str, user: str, path: str, started: float, listened: float, done: bool, **kw: Any) -> None:
        values: dict[str, Any] = {"last_activity_at": started + listened, "ended_at": started + listened}
        values.update(kw)
        store.record_session(
            SessionRecord(
                id=sid,
                user_sub=user,
                track_path=path,
                source="stream",
                started_at=started,
                seconds_listened=listened,
                completed=done,
                **values,
            )
        )

    s("s1", "alice", "a.mp3", NOW + 10, 100.0, True)
    s("s2", "bob", "a.mp3", NOW + HOUR + 5, 50.0, False)
    s("s3", "alice", "b.mp3", NOW + DAY, 30.0, True)
    s("s4", "carol", "c.mp3", NOW - 10, 999.0, True)  # before the range
    s("s5", "dave", "a.mp3", NOW + 2 * DAY, 10.0, False, ended_at=None, duration_s=200.0)

    def e(sid: str, path: str, kind: str, offset: float, **kw: Any) -> None:
        store.record_event(AnalyticsEvent(sid, "u", path, kind, NOW + offset, position_s=0.0, **kw))

    e("s1", "a.mp3", "playback.play", 10, startup_ms=100.0)
    e("s2", "a.mp3", "playback.play", HOUR + 5, startup_ms=300.0)
    e("s3", "b.mp3", "playback.play", DAY, startup_ms=200.0)
    e("s1", "a.mp3", "playback.buffering", 20, stall_ms=500.0)
    e("s2", "a.mp3", "playback.buffering", HOUR + 20, stall_ms=250.0)
    e("s1", "a.mp3", "playback.seek", 30)
    e("s1", "a.mp3", "bitrate.switch", 40, from_bitrate_kbps=128.0, to_bitrate_kbps=64.0)
    e("s4", "c.mp3", "playback.play", -5, startup_ms=9999.0)  # before the range


class QueriesContractMixin(_MixinBase):
    """Every query, on one seeded database."""

    def factory(self) -> StoreFactory:
        raise NotImplementedError

    async def setUp(self) -> None:  # type: ignore[override]
        clock = Clock()
        clock.advance(NOW)
        self.store = self.factory().open(clock)
        seed(self.store)
        await self.store.flush()
        self.start, self.end = NOW, NOW + 7 * DAY

    async def test_summary(self) -> None:
        """Distinct listeners, sessions, listening time and completion rate in the range."""
        got = await summary(self.store, self.start, self.end)
        self.assertEqual(
            (got.listeners, got.sessions, got.listening_time_s, got.completed_sessions, got.completion_rate),
            (3, 4, 190.0, 2, 0.5),
        )
        self.assertEqual((got.start, got.end), ("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"))

    async def test_summary_scoped(self) -> None:
        """A scope keeps only its tracks."""
        got = await summary(self.store, self.start, self.end, scope={"b.mp3"})
        self.assertEqual(
            (got.listeners, got.sessions, got.listening_time_s, got.completion_rate), (1, 1, 30.0, 1.0)
        )

    async def test_summary_empty(self) -> None:
        """An empty range is all zeros, with no division by zero."""
        got = await summary(self.store, NOW + 100 * DAY, NOW + 101 * DAY)
        self.assertEqual((got.listeners, got.sessions, got.completion_rate), (0, 0, 0.0))

    async def test_top_tracks(self) -> None:
        """Tracks by listening time, limited."""
        got = await top_tracks(self.store, self.start, self.end, limit=10)
        self.assertEqual(
            [(t.path, t.sessions, t.listeners, t.listening_time_s) for t in got],
            [("a.mp3", 3, 3, 160.0), ("b.mp3", 1, 1, 30.0)],
        )
        self.assertEqual(
            [t.path for t in await top_tracks(self.store, self.start, self.end, limit=1)], ["a.mp3"]
        )
        scoped = await top_tracks(self.store, self.start, self.end, scope=lambda path: path != "a.mp3")
        self.assertEqual([t.path for t in scoped], ["b.mp3"])

    async def test_track_listening_hourly(self) -> None:
        """A track's series by the hour, zero-filled."""
        got = await track_listening(self.store, "a.mp3", NOW, NOW + 3 * HOUR, "hour")
        self.assertEqual(
            [(b.start, b.sessions, b.listeners, b.listening_time_s) for b in got.series],
            [
                ("2026-01-01T00:00:00Z", 1, 1, 100.0),
                ("2026-01-01T01:00:00Z", 1, 1, 50.0),
                ("2026-01-01T02:00:00Z", 0, 0, 0.0),
            ],
        )
        self.assertEqual((got.totals.sessions, got.totals.completion_rate), (2, 0.5))

    async def test_track_listening_daily(self) -> None:
        """By the day over a week: seven buckets."""
        got = await track_listening(self.store, "a.mp3", self.start, self.end, "day")
        self.assertEqual([b.sessions for b in got.series], [2, 0, 1, 0, 0, 0, 0])

    async def test_track_listening_forbidden(self) -> None:
        """A track outside the scope is FORBIDDEN."""
        with self.assertRaises(ApiError) as caught:
            await track_listening(self.store, "a.mp3", self.start, self.end, scope={"b.mp3"})
        self.assertEqual(caught.exception.code, "FORBIDDEN")

    async def test_user_listening(self) -> None:
        """A user's totals, series and top tracks, scoped."""
        got = await user_listening(self.store, "alice", self.start, self.end, "day")
        self.assertEqual((got.sessions, got.listening_time_s, got.tracks), (2, 130.0, 2))
        self.assertEqual([t.path for t in got.top_tracks], ["a.mp3", "b.mp3"])
        self.assertEqual([b.listening_time_s for b in got.series][:2], [100.0, 30.0])
        scoped = await user_listening(self.store, "alice", self.start, self.end, scope={"b.mp3"})
        self.assertEqual((scoped.sessions, scoped.listening_time_s), (1, 30.0))

    async def test_active_sessions(self) -> None:
        """Open sessions active within the idle timeout (plus duration); users can be left out."""
        now = NOW + 2 * DAY + 200
        got = await active_sessions(self.store, now)
        self.assertEqual([(a.session_id, a.user_sub, a.track_path) for a in got], [("s5", "dave", "a.mp3")])
        hidden = await active_sessions(self.store, now, include_users=False)
        self.assertIsNone(hidden[0].user_sub)
        self.assertEqual(await active_sessions(self.store, now, scope={"b.mp3"}), [])
        self.assertEqual(await active_sessions(self.store, now + 1 * DAY), [])

    async def test_qoe(self) -> None:
        """Startup percentiles, stalls, seeks and bitrate switches in the range."""
        got = await qoe(self.store, self.start, self.end)
        self.assertEqual(
            (got.sessions, got.startup_samples, got.startup_ms_p50, got.startup_ms_p95),
            (3, 3, 200.0, 300.0),
        )
        self.assertEqual((got.stalls, got.stalls_per_session, got.stall_ms_total), (2, 0.6667, 750.0))
        self.assertEqual((got.seeks, got.bitrate_switches), (1, 1))

    async def test_qoe_scoped(self) -> None:
        """QoE of a scope counts only its tracks' reports."""
        got = await qoe(self.store, self.start, self.end, scope={"b.mp3"})
        self.assertEqual((got.sessions, got.startup_ms_p50, got.stalls, got.seeks), (1, 200.0, 0, 0))

    async def test_json(self) -> None:
        """Results serialise to JSON through as_json."""
        result = await track_listening(self.store, "a.mp3", self.start, self.end)
        data = json.loads(json.dumps(as_json(result)))
        self.assertEqual(data["totals"]["path"], "a.mp3")
        self.assertEqual(
            json.loads(json.dumps(as_json(await top_tracks(self.store, self.start, self.end))))[0]["path"],
            "a.mp3",
        )


class SqliteQueriesTests(QueriesContractMixin, unittest.TestCase):
    """The queries on SQLite."""

    def factory(self) -> StoreFactory:
        return sqlite_factory(self)


class PostgresQueriesTests(QueriesContractMixin, unittest.TestCase):
    """The queries on the machine's PostgreSQL."""

    def factory(self) -> StoreFactory:
        return postgres_factory(self)

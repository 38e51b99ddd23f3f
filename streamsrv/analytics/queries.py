# -*- test-case-name: tests.test_analytics_queries -*-
"""The analytics API's answers: summaries, top tracks, time series, active sessions, QoE.

Each query is an ``async`` function over an
:class:`~streamsrv.analytics.store.IAnalyticsStore` that returns frozen
dataclasses (:func:`as_json` turns them into JSON-ready values).  The SQL is
the portable subset (``COUNT``, ``COUNT(DISTINCT)``, ``SUM``, ``GROUP BY``,
``COALESCE``); time buckets and percentiles are computed here in Python, in
UTC, so SQLite and PostgreSQL answer alike.  A session counts in the bucket
it started in, with all its listening.  Time ranges are half-open:
``from <= t < to``.

Artists see only their own tracks: every query takes a *scope*
(:data:`PathScope`): ``None`` for everything, else a set of track paths or a
predicate on a path; :func:`scope_for_principal` derives it from a
principal.  A query's parameters arrive as a :class:`QueryParams` value
(:mod:`streamsrv.web.analytics` reads them from a request; :func:`parse_time`
is the time syntax it accepts).  This module must never take a request, never
return a track outside the scope, and never interpolate a value into SQL
(values are always parameters).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streamsrv.analytics.sessions import DEFAULT_IDLE_TIMEOUT_S
from streamsrv.analytics.store import IAnalyticsStore
from streamsrv.auth.principal import Principal
from streamsrv.errors import ApiError

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_RANGE_S",
    "GRANULARITIES",
    "MAX_BUCKETS",
    "MAX_LIMIT",
    "ActiveSessionRow",
    "Bucket",
    "PathScope",
    "Qoe",
    "QueryParams",
    "Summary",
    "TrackListening",
    "TrackStat",
    "UserListening",
    "active_sessions",
    "as_json",
    "bucket_count",
    "bucket_starts",
    "format_time",
    "parse_time",
    "qoe",
    "scope_for_principal",
    "summary",
    "top_tracks",
    "track_listening",
    "user_listening",
]

#: Time series granularities.
GRANULARITIES: Final = ("hour", "day", "week", "month")

#: Without ``from``, the range starts this long before ``to``.
DEFAULT_RANGE_S: Final = 7 * 86400.0

#: ``limit`` bounds and default.
DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 100

#: The most buckets a time series may have (e.g. ~13 months by the hour).
MAX_BUCKETS: Final = 10_000

#: Which tracks a caller may see: ``None`` (all), a set of paths, or a predicate on a path.
PathScope = Callable[[str], bool] | AbstractSet[str] | None

_UNIX: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?", re.ASCII)
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?",
    re.ASCII,
)


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParams:
    """
    A parsed analytics query.

    :ivar start: ``from``, Unix seconds (inclusive).
    :ivar end: ``to``, Unix seconds (exclusive).
    :ivar granularity: One of :data:`GRANULARITIES`.
    :ivar limit: 1–:data:`MAX_LIMIT`.
    """

    start: float
    end: float
    granularity: str
    limit: int


def parse_time(value: str) -> float:
    """
    A time parameter: Unix seconds (``1767225600``, ``1767225600.5``) or
    RFC 3339 (``2026-01-01T00:00:00Z``, ``…+02:00``, fractions; a bare
    ``2026-01-01`` is midnight UTC).

    :raise ValueError: Otherwise (also for an offset-less date-time).
    """
    if _UNIX.fullmatch(value):
        return float(value)
    if not _RFC3339.fullmatch(value):
        raise ValueError("not RFC 3339 or Unix seconds")
    text = value.upper().replace(" ", "T").replace("Z", "+00:00")
    if "T" not in text:
        text += "T00:00:00+00:00"
    if "." in text:  # Python keeps microseconds: cut longer fractions
        head, _, rest = text.partition(".")
        digits = re.match(r"[0-9]+", rest)
        assert digits is not None
        text = f"{head}.{digits.group(0)[:6].ljust(6, '0')}{rest[digits.end() :]}"
    moment = datetime.fromisoformat(text)
    return moment.timestamp()


def format_time(ts: float) -> str:
    """Unix seconds as RFC 3339 in UTC, whole seconds: ``2026-01-01T00:00:00Z``."""
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- buckets ------------------------------------------------------------------------------


def _bucket_floor(ts: float, granularity: str) -> datetime:
    moment = datetime.fromtimestamp(math.floor(ts), UTC)  # whole seconds: no rounding up
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "day":
        return day
    if granularity == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown granularity {granularity!r}")


def _next_bucket(moment: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return moment + timedelta(hours=1)
    if granularity == "day":
        return moment + timedelta(days=1)
    if granularity == "week":
        return moment + timedelta(weeks=1)
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)


def bucket_count(start: float, end: float, granularity: str) -> int:
    """An upper bound, cheap to compute, of the *granularity* buckets from *start* to *end*."""
    approximate = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0, "month": 28 * 86400.0}
    return int((end - start) / approximate[granularity]) + 2


def bucket_starts(start: float, end: float, granularity: str) -> list[float]:
    """
    The starts (Unix seconds, UTC) of the buckets covering [start, end):
    whole hours, days, ISO weeks (Monday) or calendar months.
    """
    moment = _bucket_floor(start, granularity)
    starts: list[float] = []
    while moment.timestamp() < end or not starts:
        starts.append(moment.timestamp())
        moment = _next_bucket(moment, granularity)
    return starts


# --- scope --------------------------------------------------------------------------------


def scope_for_principal(principal: Principal, owns: Callable[[str, str], bool]) -> PathScope:
    """
    The tracks *principal* may see analytics of.

    ``analytics:read`` (admins): everything (``None``).  ``analytics:read:own``
    (artists): the tracks *owns* attributes to them.  Suggested ownership:
    a track is owned by the principal whose ``sub`` equals the catalog's
    ``artist`` or ``album_artist`` of the track (the backend mints artists'
    tokens with ``sub`` set to their artist name).

    :param owns: ``owns(sub, path)``: whether the track at *path* belongs to *sub*.
    :raise ApiError: ``FORBIDDEN`` without either permission.
    """
    if principal.can("analytics:read"):
        return None
    if principal.can("analytics:read:own"):
        sub = principal.sub
        return lambda path: owns(sub, path)
    raise ApiError("FORBIDDEN")


def _allows(scope: PathScope) -> Callable[[str], bool]:
    if scope is None:
        return lambda path: True
    if isinstance(scope, AbstractSet):
        return scope.__contains__
    return scope


def _require(scope: PathScope, path: str) -> None:
    if not _allows(scope)(path):
        raise ApiError("FORBIDDEN", "You may not see analytics of this track.")


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Listening over a time range."""

    start: str
    end: str
    listeners: int
    sessions: int
    listening_time_s: float
    completed_sessions: int
    completion_rate: float


@dataclass(frozen=True)
class TrackStat:
    """One track's listening over a time range."""

    path: str
    sessions: int
    listeners: int
    listening_time_s: float
    completion_rate: float


@dataclass(frozen=True)
class Bucket:
    """One bucket of a time series: sessions that started in [start, next bucket)."""

    start: str
    sessions: int
    listeners: int
    listening_time_s: float


@dataclass(frozen=True)
class TrackListening:
    """A track's listening as a time series."""

    path: str
    granularity: str
    totals: TrackStat
    series: list[Bucket]


@dataclass(frozen=True)
class UserListening:
    """A user's listening: totals, a time series and their most listened tracks."""

    user_sub: str
    granularity: str
    sessions: int
    listening_time_s: float
    tracks: int
    series: list[Bucket]
    top_tracks: list[TrackStat]


@dataclass(frozen=True)
class ActiveSessionRow:
    """A session open now (from the store: every process's sessions)."""

    session_id: str
    user_sub: str | None
    track_path: str
    source: str
    started_at: str
    last_activity_at: str
    seconds_listened: float
    position_s: float


@dataclass(frozen=True)
class Qoe:
    """
    Quality of experience over a time range, from the clients' reports.

    ``sessions`` counts sessions with at least one report; the startup
    percentiles are nearest-rank over ``playback.play`` reports carrying
    ``startup_ms`` (``None`` without any).
    """

    start: str
    end: str
    sessions: int
    startup_samples: int
    startup_ms_p50: float | None
    startup_ms_p95: float | None
    stalls: int
    stalls_per_session: float
    stall_ms_total: float
    seeks: int
    seeks_per_session: float
    bitrate_switches: int


def as_json(value: Any) -> Any:
    """A query result (dataclasses, lists of them) as JSON-ready dicts and lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def _rate(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _num(value: Any) -> float:
    """A SUM from either driver (None, int, float or Decimal) as a float."""
    return float(value) if value is not None else 0.0


# --- queries ------------------------------------------------------------------------------


async def summary(store: IAnalyticsStore, start: float, end: float, scope: PathScope = None) -> Summary:
    """Listeners (distinct users), sessions, listening time and completion rate in [start, end)."""
    rows = await store.query(
        "SELECT track_path, user_sub, COUNT(*), SUM(seconds_listened), SUM(completed) FROM sessions "
        "WHERE started_at >= ? AND started_at < ? GROUP BY track_path, user_sub",
        (start, end),
    )
    allowed = _allows(scope)
    users: set[str] = set()
    sessions = completed = 0
    seconds = 0.0
    for path, user, count, listened, done in rows:
        if not allowed(path):
            continue
        users.add(user)
        sessions += int(count)
        seconds += _num(listened)
        completed += int(_num(done))
    return Summary(
        start=format_time(start),
        end=format_time(end),
        listeners=len(users),
        sessions=sessions,
        listening_time_s=round(seconds, 3),
        completed_sessions=completed,
        completion_rate=_rate(completed, sessions),
    )


async def top_tracks(
    store: IAnalyticsStore, start: float, end: float, limit: int = DEFAULT_LIMIT, scope: PathScope = None
) -> list[TrackStat]:
    """The *limit* tracks with the most listening time in [start, end) (ties: more sessions, then path)."""
    rows = await store.query(
        "SELECT track_path, COUNT(*), COUNT(DISTINCT user_sub), SUM(seconds_listened), SUM(completed) "
        "FROM sessions WHERE started_at >= ? AND started_at < ? GROUP BY track_path",
        (start, end),
    )
    allowed = _allows(scope)
    stats = [
        TrackStat(
            path=path,
            sessions=int(count),
            listeners=int(users),
            listening_time_s=round(_num(listened), 3),
            completion_rate=_rate(_num(done), int(count)),
        )
        for path, count, users, listened, done in rows
        if allowed(path)
    ]
    stats.sort(key=lambda s: (-s.listening_time_s, -s.sessions, s.path))
    return stats[:limit]


def _series(rows: list[tuple[float, str, float]], start: float, end: float, granularity: str) -> list[Bucket]:
    """Bucket (started_at, user, seconds) rows into a zero-filled series."""
    starts = bucket_starts(start, end, granularity)
    sessions = [0] * len(starts)
    seconds = [0.0] * len(starts)
    users: list[set[str]] = [set() for _ in starts]
    index = {ts: i for i, ts in enumerate(starts)}
    for started_at, user, listened in rows:
        i = index.get(_bucket_floor(float(started_at), granularity).timestamp())
        if i is None:
            continue
        sessions[i] += 1
        seconds[i] += _num(listened)
        users[i].add(user)
    return [
        Bucket(format_time(ts), sessions[i], len(users[i]), round(seconds[i], 3))
        for i, ts in enumerate(starts)
    ]


async def track_listening(
    store: IAnalyticsStore,
    path: str,
    start: float,
    end: float,
    granularity: str = "day",
    scope: PathScope = None,
) -> TrackListening:
    """
    A track's listening per bucket over [start, end).

    :raise ApiError: ``FORBIDDEN`` if *path* is outside *scope*.
    """
    _require(scope, path)
    rows = await store.query(
        "SELECT started_at, user_sub, seconds_listened, completed FROM sessions "
        "WHERE track_path = ? AND started_at >= ? AND started_at < ?",
        (path, start, end),
    )
    completed = sum(int(row[3]) for row in rows)
    totals = TrackStat(
        path=path,
        sessions=len(rows),
        listeners=len({row[1] for row in rows}),
        listening_time_s=round(sum(_num(row[2]) for row in rows), 3),
        completion_rate=_rate(completed, len(rows)),
    )
    series = _series([(row[0], row[1], row[2]) for row in rows], start, end, granularity)
    return TrackListening(path=path, granularity=granularity, totals=totals, series=series)


async def user_listening(
    store: IAnalyticsStore,
    user_sub: str,
    start: float,
    end: float,
    granularity: str = "day",
    limit: int = DEFAULT_LIMIT,
    scope: PathScope = None,
) -> UserListening:
    """A user's listening over [start, end), limited to the tracks in *scope*."""
    rows = await store.query(
        "SELECT started_at, track_path, seconds_listened, completed FROM sessions "
        "WHERE user_sub = ? AND started_at >= ? AND started_at < ?",
        (user_sub, start, end),
    )
    allowed = _allows(scope)
    rows = [row for row in rows if allowed(row[1])]
    per_track: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for _, path, listened, done in rows:
        entry = per_track[path]
        entry[0] += 1
        entry[1] += _num(listened)
        entry[2] += int(done)
    top = sorted(
        (
            TrackStat(path, int(n), 1, round(seconds, 3), _rate(done, n))
            for path, (n, seconds, done) in per_track.items()
        ),
        key=lambda s: (-s.listening_time_s, -s.sessions, s.path),
    )[:limit]
    return UserListening(
        user_sub=user_sub,
        granularity=granularity,
        sessions=len(rows),
        listening_time_s=round(sum(_num(row[2]) for row in rows), 3),
        tracks=len(per_track),
        series=_series([(row[0], user_sub, row[2]) for row in rows], start, end, granularity),
        top_tracks=top,
    )


async def active_sessions(
    store: IAnalyticsStore,
    now: float,
    *,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    scope: PathScope = None,
    include_users: bool = True,
    limit: int = MAX_LIMIT,
) -> list[ActiveSessionRow]:
    """
    Sessions open now, across every process writing to the store (up to one
    flush interval behind): not ended, and active within *idle_timeout_s*
    (plus the track's duration, as the tracker allows).  Most recent first.

    :param include_users: ``False`` to leave ``user_sub`` out (e.g. for artists).
    """
    rows = await store.query(
        "SELECT id, user_sub, track_path, source, started_at, last_activity_at, seconds_listened, "
        "max_position_s, duration_s FROM sessions WHERE ended_at IS NULL AND last_activity_at >= ? "
        "ORDER BY last_activity_at DESC",
        (now - idle_timeout_s - _LONGEST_TRACK_S,),
    )
    allowed = _allows(scope)
    result = []
    for sid, user, path, source, started, last, listened, position, duration in rows:
        if not allowed(path) or _num(last) + idle_timeout_s + min(_num(duration), _LONGEST_TRACK_S) < now:
            continue
        result.append(
            ActiveSessionRow(
                session_id=sid,
                user_sub=user if include_users else None,
                track_path=path,
                source=source,
                started_at=format_time(started),
                last_activity_at=format_time(last),
                seconds_listened=round(_num(listened), 3),
                position_s=round(_num(position), 3),
            )
        )
        if len(result) >= limit:
            break
    return result


#: Sessions idle longer than the timeout plus this are not even read for
#: :func:`active_sessions`; within it, each session's own duration decides.
_LONGEST_TRACK_S: Final = 3 * 3600.0


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of *values* (0 < q <= 1)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def qoe(store: IAnalyticsStore, start: float, end: float, scope: PathScope = None) -> Qoe:
    """Startup time percentiles, stalls, seeks and bitrate switches of reports received in [start, end)."""
    allowed = _allows(scope)
    counts = await store.query(
        "SELECT track_path, event_type, COUNT(*), SUM(stall_ms) FROM events "
        "WHERE ts >= ? AND ts < ? GROUP BY track_path, event_type",
        (start, end),
    )
    per_type: dict[str, int] = defaultdict(int)
    stall_ms = 0.0
    for path, kind, count, stalled in counts:
        if allowed(path):
            per_type[kind] += int(count)
            if kind == "playback.buffering":
                stall_ms += _num(stalled)
    sessions_rows = await store.query(
        "SELECT track_path, COUNT(DISTINCT session_id) FROM events "
        "WHERE ts >= ? AND ts < ? GROUP BY track_path",
        (start, end),
    )
    sessions = sum(int(n) for path, n in sessions_rows if allowed(path))
    startup_rows = await store.query(
        "SELECT track_path, startup_ms FROM events "
        "WHERE ts >= ? AND ts < ? AND event_type = ? AND startup_ms IS NOT NULL",
        (start, end, "playback.play"),
    )
    startups = [_num(ms) for path, ms in startup_rows if allowed(path)]
    stalls = per_type["playback.buffering"]
    seeks = per_type["playback.seek"]
    return Qoe(
        start=format_time(start),
        end=format_time(end),
        sessions=sessions,
        startup_samples=len(startups),
        startup_ms_p50=_percentile(startups, 0.5),
        startup_ms_p95=_percentile(startups, 0.95),
        stalls=stalls,
        stalls_per_session=_rate(stalls, sessions),
        stall_ms_total=round(stall_ms, 3),
        seeks=seeks,
        seeks_per_session=_rate(seeks, sessions),
        bitrate_switches=per_type["bitrate.switch"],
    )

# -*- test-case-name: tests.test_analytics_sessions -*-
"""Listening sessions, derived from streaming activity and merged with the client's playback reports.

A session is one user listening to one track.  :class:`SessionTracker`
groups the server's activity (``/stream`` responses with their byte ranges,
HLS segments) per (user, track) into one session until it has been idle for
*idle_timeout_s*, estimates how much was listened from the coverage of what
was delivered (overlapping ranges and re-fetched segments count once), and
merges the client's playback reports (``playback.play|pause|seek|progress|
ended|buffering``), which are more precise and carry the QoE measures.  It
hands every change to an :class:`~streamsrv.analytics.store.IAnalyticsStore`.
:func:`parse_playback_report` validates a report strictly.

This module must never raise into the code that reports activity (a bad call
is logged, a bad report answered with a :class:`ReportOutcome` error), never
keep an IP address (only its network, see
:func:`~streamsrv.analytics.store.truncate_ip`), and never trust a client's
clock (events are stamped with the server's).
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.analytics.store import AnalyticsEvent, IAnalyticsStore, SessionRecord, truncate_ip
from streamsrv.events.hub import PLAYBACK_TYPES
from streamsrv.service import PeriodicService

__all__ = [
    "COMPLETION_RATIO",
    "DEFAULT_IDLE_TIMEOUT_S",
    "HLS_SEGMENT_S",
    "REPORT_TYPES",
    "ActiveSession",
    "PlaybackReport",
    "ReportError",
    "ReportOutcome",
    "SessionTracker",
    "parse_playback_report",
]

log = Logger()

#: A session with no activity for this long is closed.  Sessions known only
#: from server activity get the track's duration on top (a player may fetch a
#: whole file at once and play it for minutes without a request).
DEFAULT_IDLE_TIMEOUT_S: Final = 300.0

#: How often idle sessions are looked for.
DEFAULT_SWEEP_INTERVAL_S: Final = 30.0

#: The duration of one HLS segment (DESIGN: 6 s fMP4 segments).
HLS_SEGMENT_S: Final = 6.0

#: A session is complete once this share of the track was listened (or the client reported ``ended``).
COMPLETION_RATIO: Final = 0.9

#: The most sessions tracked at once; beyond it the least recently active is closed.
DEFAULT_MAX_SESSIONS: Final = 100_000

#: The client-reported playing time counted between two reports may exceed
#: the wall-clock time between them by this factor (playback rate) plus
#: :data:`REPORT_SLACK_S`; larger jumps are seeks, not listening.
MAX_PLAYBACK_RATE: Final = 2.0
REPORT_SLACK_S: Final = 2.0

#: Longest User-Agent kept.
CLIENT_INFO_MAX: Final = 256

#: The playback report types.
REPORT_TYPES: Final = PLAYBACK_TYPES

#: Fields a report's ``data`` may carry, and the bounds of the numeric ones.
_NUMBER_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "position_s": (0.0, 7 * 86400.0),
    "duration_s": (0.0, 7 * 86400.0),
    "startup_ms": (0.0, 3_600_000.0),
    "stall_ms": (0.0, 3_600_000.0),
    "bitrate_kbps": (1.0, 100_000.0),
}
_REQUIRED: Final = frozenset({"session_id", "path", "position_s"})
_DATA_FIELDS: Final = _REQUIRED | frozenset(_NUMBER_BOUNDS)
_ENVELOPE_FIELDS: Final = frozenset({"type", "id", "ts", "data"})
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
_PATH_MAX: Final = 1024
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


# --- reports ----------------------------------------------------------------------------


class ReportError(ValueError):
    """A playback report is malformed; the message says how, for the client."""


@dataclass(frozen=True)
class PlaybackReport:
    """A validated playback report (see :func:`parse_playback_report`)."""

    type: str
    session_id: str
    path: str
    position_s: float
    duration_s: float | None = None
    startup_ms: float | None = None
    stall_ms: float | None = None
    bitrate_kbps: float | None = None


def parse_playback_report(report: object) -> PlaybackReport:
    """
    Validate a playback report, strictly.

    Accepts the WebSocket frame (``{"type": "playback.progress", "id": …,
    "ts": …, "data": {…}}``) or the same fields flat (``{"type": …,
    "session_id": …, …}``).  ``data`` holds ``session_id`` (1–128 of
    ``A-Za-z0-9._-``), ``path`` (the track, 1–1024 characters, no control
    characters), ``position_s`` (required) and optionally ``duration_s``,
    ``startup_ms``, ``stall_ms`` and ``bitrate_kbps``: finite numbers within
    bounds, not booleans.  Any other field is refused.  ``ts`` is ignored:
    events are stamped with the server's clock.

    :raise ReportError: Naming the first problem.
    """
    if not isinstance(report, Mapping):
        raise ReportError("a playback report is a JSON object")
    kind = report.get("type")
    if not isinstance(kind, str) or kind not in REPORT_TYPES:
        raise ReportError(f"type must be one of {', '.join(sorted(REPORT_TYPES))}")
    if "data" in report:
        unknown = set(report) - _ENVELOPE_FIELDS
        data = report["data"]
        if not isinstance(data, Mapping):
            raise ReportError("data must be a JSON object")
    else:
        unknown = set()
        data = {key: value for key, value in report.items() if key not in ("type", "id", "ts")}
    unknown |= set(data) - _DATA_FIELDS
    if unknown:
        raise ReportError(f"unknown field {sorted(map(str, unknown))[0]!r}")
    missing = _REQUIRED - set(data)
    if missing:
        raise ReportError(f"{sorted(missing)[0]} is required")
    session_id = data["session_id"]
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise ReportError("session_id must be 1-128 characters of A-Z a-z 0-9 . _ -")
    path = data["path"]
    if not isinstance(path, str) or not 1 <= len(path) <= _PATH_MAX or _CONTROL.search(path):
        raise ReportError(f"path must be a track path of 1-{_PATH_MAX} characters")
    numbers: dict[str, float | None] = {}
    for name, (low, high) in _NUMBER_BOUNDS.items():
        value = data.get(name)
        if value is None and name != "position_s":
            numbers[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ReportError(f"{name} must be a number")
        if not low <= value <= high:
            raise ReportError(f"{name} must be between {low:g} and {high:g}")
        numbers[name] = float(value)
    position = numbers.pop("position_s")
    assert position is not None
    return PlaybackReport(type=kind, session_id=session_id, path=path, position_s=position, **numbers)


@dataclass(frozen=True)
class ReportOutcome:
    """
    What became of a playback report.

    :ivar ok: Whether it was accepted.
    :ivar session_id: The server's session it was merged into (when accepted).
    :ivar code: ``BAD_REQUEST`` when refused (the WebSocket ``error`` code).
    :ivar message: Why it was refused, for the client.
    """

    ok: bool
    session_id: str | None = None
    code: str | None = None
    message: str | None = None


# --- sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveSession:
    """An open session, as :meth:`SessionTracker.active` reports it."""

    session_id: str
    user_sub: str
    track_path: str
    source: str
    started_at: float
    last_activity_at: float
    position_s: float
    seconds_listened: float
    playing: bool


@dataclass
class _Session:
    """The mutable state of one open session."""

    id: str
    user_sub: str
    path: str
    source: str
    started_at: float
    last_activity_at: float
    duration_s: float | None = None
    size: int | None = None
    #: Sorted, disjoint, half-open byte intervals delivered (changed only by :meth:`add_range`).
    ranges: list[tuple[int, int]] = field(default_factory=list)
    #: Bytes in :attr:`ranges`, kept as they change: the coverage is asked on every request.
    _covered: int = field(default=0, repr=False)
    #: The address and User-Agent last seen, whose network and client info are set already.
    _seen: tuple[str | None, str | None] = field(default=(None, None), repr=False)
    #: ``record`` bound to the tracker's segment length, made once (see ``SessionTracker._touch``).
    _build: Any = field(default=None, repr=False, compare=False)
    segments: set[int] = field(default_factory=set)
    bytes_sent: int = 0
    client_info: str | None = None
    ip_network: str | None = None
    client_session_id: str | None = None
    client_listened_s: float = 0.0
    client_reported: bool = False
    client_max_position_s: float = 0.0
    playing: bool = False
    last_position_s: float | None = None
    last_report_at: float | None = None
    bitrate_kbps: float | None = None
    ended_reported: bool = False

    def add_range(self, start: int, end: int) -> None:
        """Merge the half-open byte interval [start, end) into the coverage."""
        if end <= start:
            return
        index = bisect.bisect_left(self.ranges, (start, end))
        # Step back to an interval that may touch this one.
        if index > 0 and self.ranges[index - 1][1] >= start:
            index -= 1
        ranges = self.ranges
        last = index
        merged = 0
        while last < len(ranges) and ranges[last][0] <= end:
            first_byte, end_byte = ranges[last]
            merged += end_byte - first_byte
            start = min(start, first_byte)
            end = max(end, end_byte)
            last += 1
        ranges[index:last] = [(start, end)]
        self._covered += end - start - merged

    @property
    def covered_bytes(self) -> int:
        """Distinct bytes delivered (a running total, not a sum over :attr:`ranges`)."""
        return self._covered

    def server_seconds(self, segment_s: float) -> float:
        """Seconds delivered, estimated from the byte coverage or the segments."""
        if self.segments:
            seconds = len(self.segments) * segment_s
        elif self.size and self.duration_s:
            seconds = min(1.0, self.covered_bytes / self.size) * self.duration_s
        else:
            return 0.0
        return min(seconds, self.duration_s) if self.duration_s else seconds

    def server_position(self, segment_s: float) -> float:
        """The furthest position delivered, in seconds."""
        if self.segments:
            position = (max(self.segments) + 1) * segment_s
        elif self.ranges and self.size and self.duration_s:
            position = min(1.0, self.ranges[-1][1] / self.size) * self.duration_s
        else:
            return 0.0
        return min(position, self.duration_s) if self.duration_s else position

    def seconds_listened(self, segment_s: float) -> float:
        """The client's reported listening once it has reported some, else the server's estimate."""
        return self.client_listened_s if self.client_reported else self.server_seconds(segment_s)

    def max_position(self, segment_s: float) -> float:
        return max(self.client_max_position_s, self.server_position(segment_s))

    def completed(self, segment_s: float, listened: float | None = None) -> bool:
        """Whether the track was listened to the end (*listened*: :meth:`seconds_listened`, if known)."""
        if self.ended_reported:
            return True
        if listened is None:
            listened = self.seconds_listened(segment_s)
        return bool(self.duration_s) and listened >= COMPLETION_RATIO * (self.duration_s or 0.0)

    def idle_deadline(self, idle_timeout_s: float) -> float:
        reporting = self.client_session_id is not None  # the client's reports keep it alive
        extra = self.duration_s if (self.duration_s and not reporting) else 0.0
        return self.last_activity_at + idle_timeout_s + extra

    def record(self, segment_s: float, ended_at: float | None = None) -> SessionRecord:
        listened = self.seconds_listened(segment_s)
        return SessionRecord(
            id=self.id,
            user_sub=self.user_sub,
            track_path=self.path,
            source=self.source,
            started_at=self.started_at,
            last_activity_at=self.last_activity_at,
            ended_at=ended_at,
            bytes_sent=self.bytes_sent,
            seconds_listened=round(listened, 3),
            max_position_s=round(self.max_position(segment_s), 3),
            duration_s=self.duration_s,
            completed=self.completed(segment_s, listened),
            client_info=self.client_info,
            ip_network=self.ip_network,
            client_session_id=self.client_session_id,
        )


def _client_info(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    return _CONTROL.sub("", user_agent)[:CLIENT_INFO_MAX] or None


def _rendition_fields(
    rendition: tuple[str | None, int | None, int | None, float | None] | None,
) -> dict[str, Any]:
    """``format`` and ``bitrate`` for ``stream.started`` (estimated from size and duration when not given)."""
    if rendition is None:
        return {}
    format, bitrate, size, duration_s = rendition
    if bitrate is None and size and duration_s and duration_s > 0:
        bitrate = round(size * 8 / duration_s)
    return {"format": format, "bitrate": bitrate}


class SessionTracker(PeriodicService):
    """
    Listening sessions of this process, derived and merged, recorded in a store.

    Call :meth:`on_stream_activity` when a ``/stream`` response or an HLS
    segment has been sent (with what was sent), and
    :meth:`on_playback_report` for each playback report of a WebSocket.
    Every *sweep_interval_s* (a :class:`~streamsrv.service.PeriodicService`,
    first sweep one interval after start) sessions idle past their deadline are closed.
    On ``stopService`` every open session is closed and recorded: put the
    tracker in the service tree *after* its store, so it stops first and the
    store's final flush includes them.
    """

    def __init__(
        self,
        store: IAnalyticsStore,
        clock: IReactorTime,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        segment_s: float = HLS_SEGMENT_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """
        :param store: Receives every session state and event.
        :param clock: Tells the time and runs the sweep.
        :param idle_timeout_s: Inactivity that ends a session.
        :param sweep_interval_s: Seconds between looks for idle sessions.
        :param segment_s: Seconds of audio in one HLS segment.
        :param max_sessions: The most sessions tracked at once.
        :param new_id: Makes a session id.
        :param on_event: Told ``stream.started`` when a session of server
            activity opens and ``stream.ended`` when it closes, with the
            fields of the WebSocket contract (``path``, ``sub``,
            ``session_id``; ``bytes`` and ``duration_s`` at the end); its
            exceptions are logged, never raised.
        """
        for name, value in (("idle_timeout_s", idle_timeout_s), ("sweep_interval_s", sweep_interval_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0")
        super().__init__(
            sweep_interval_s, self.sweep, clock=clock, now=False, name="analytics-sessions",
            what="analytics: the session sweep",
        )  # fmt: skip
        self._store = store
        #: The store's ``record_session_later``, when it has one: records built at flush time.
        self._record_later: Callable[[str, Callable[[], SessionRecord]], None] | None = getattr(
            store, "record_session_later", None
        )
        self._clock = clock
        self._idle_s = idle_timeout_s
        self._segment_s = segment_s
        self._max = max_sessions
        self._new_id = new_id
        self._on_event = on_event
        #: Open sessions by (user, track), least recently active first.
        self._open: dict[tuple[str, str], _Session] = {}
        #: The same sessions by (user, the client's session_id).
        self._by_client: dict[tuple[str, str], _Session] = {}

    # -- the service --------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Stop sweeping and close (and record) every open session."""
        stopped = super().stopService()
        for session in list(self._open.values()):
            self._close(session)
        return stopped

    # -- server activity ------------------------------------------------------------------

    def on_stream_activity(
        self,
        user_sub: str,
        path: str,
        *,
        bytes_sent: int,
        range_start: int = 0,
        range_end: int | None = None,
        size: int | None = None,
        duration_s: float | None = None,
        source: str = "stream",
        segment: int | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        format: str | None = None,
        bitrate: int | None = None,
    ) -> str | None:
        """
        Account for audio sent to *user_sub*; never raises.

        :param bytes_sent: Bytes of the body actually sent (less than asked
            if the client went away).
        :param range_start: The first byte sent (0 without ``Range``); one call per range.
        :param range_end: The last byte asked for (inclusive), if any: caps the coverage.
        :param size: The file's size in bytes (for the byte → seconds estimate).
        :param duration_s: The track's duration.
        :param source: ``stream`` or ``hls``.
        :param segment: For HLS: the media segment number (0-based) sent;
            playlists and init segments are not reported.
        :param ip: The client address (after trusted-proxy handling); only its network is kept.
        :param user_agent: The User-Agent header.
        :param format: The codec of the rendition sent (``mp3``, ``aac``, ``flac``…), for ``stream.started``.
        :param bitrate: Its bit rate in bits/s (``None``: unknown, or estimated from *size*
            and *duration_s* for an original), for ``stream.started``.
        :return: The session's id, or ``None`` if the call was refused (logged).
        """
        try:
            if source not in ("stream", "hls"):
                raise ValueError(f"source must be stream or hls, not {source!r}")
            if bytes_sent < 0 or range_start < 0:
                raise ValueError("bytes_sent and range_start must be >= 0")
            now = self._clock.seconds()
            starts_over = (source == "stream" and range_start == 0) or (source == "hls" and segment == 0)
            session = self._session_for(
                user_sub,
                path,
                now,
                source,
                starts_over=starts_over,
                rendition=(format, bitrate, size, duration_s),
            )
            if session.source == "client":
                session.source = source
            if duration_s and duration_s > 0:
                session.duration_s = float(duration_s)
            if size and size > 0:
                session.size = int(size)
            session.bytes_sent += bytes_sent
            if segment is not None:
                if segment >= 0:
                    session.segments.add(int(segment))
            else:
                end = range_start + bytes_sent
                if range_end is not None:
                    end = min(end, range_end + 1)
                session.add_range(range_start, end)
            if session._seen != (ip, user_agent):  # a player sends the same ones with every range
                session.ip_network = truncate_ip(ip) or session.ip_network
                session.client_info = _client_info(user_agent) or session.client_info
                session._seen = (ip, user_agent)
            self._touch(session, now)
            return session.id
        except Exception:
            log.failure("analytics: stream activity could not be accounted for")
            return None

    # -- client reports -------------------------------------------------------------------

    def on_playback_report(self, user_sub: str, report: object) -> ReportOutcome:
        """
        Merge a client's playback report into its session; never raises.

        The report is linked to the server-side session of the same user and
        track when one is open (the first report with a new ``session_id``
        links it), else it opens a session of source ``client``.  A
        ``session_id`` already used for another track is refused.

        :param user_sub: The authenticated sender (never taken from the report).
        :param report: The decoded JSON (see :func:`parse_playback_report`).
        """
        try:
            parsed = parse_playback_report(report)
        except ReportError as e:
            return ReportOutcome(False, code="BAD_REQUEST", message=str(e))
        try:
            return self._apply_report(user_sub, parsed)
        except Exception:
            log.failure("analytics: a playback report could not be merged")
            return ReportOutcome(False, code="INTERNAL", message="The report could not be recorded.")

    def _apply_report(self, user_sub: str, report: PlaybackReport) -> ReportOutcome:
        now = self._clock.seconds()
        session = self._by_client.get((user_sub, report.session_id))
        if session is not None and self._expired(session, now):
            self._close(session)
            session = None
        if session is not None and session.path != report.path:
            return ReportOutcome(
                False, code="BAD_REQUEST", message="session_id is already used for another track"
            )
        if session is None:
            session = self._session_for(user_sub, report.path, now, "client", starts_over=False)
            if session.client_session_id not in (None, report.session_id):
                # The open session belongs to another playback (a replay, another tab).
                self._close(session)
                session = self._session_for(user_sub, report.path, now, "client", starts_over=False)
            session.client_session_id = report.session_id
            self._by_client[(user_sub, report.session_id)] = session

        if report.duration_s:
            session.duration_s = report.duration_s
        position = report.position_s
        if session.playing and report.type != "playback.seek" and session.last_position_s is not None:
            delta = position - session.last_position_s
            elapsed = now - (session.last_report_at if session.last_report_at is not None else now)
            if 0 < delta <= elapsed * MAX_PLAYBACK_RATE + REPORT_SLACK_S:
                session.client_listened_s += delta
                session.client_reported = True
        if report.type == "playback.play":
            session.playing = True
        elif report.type in ("playback.pause", "playback.ended"):
            session.playing = False
        if report.type == "playback.ended":
            session.ended_reported = True
        session.last_position_s = position
        session.last_report_at = now
        session.client_max_position_s = max(session.client_max_position_s, position)

        if report.bitrate_kbps is not None:
            previous = session.bitrate_kbps
            if previous is not None and previous != report.bitrate_kbps:
                self._store.record_event(
                    AnalyticsEvent(
                        session_id=session.id,
                        user_sub=user_sub,
                        track_path=session.path,
                        event_type="bitrate.switch",
                        ts=now,
                        position_s=position,
                        from_bitrate_kbps=previous,
                        to_bitrate_kbps=report.bitrate_kbps,
                    )
                )
            session.bitrate_kbps = report.bitrate_kbps
        self._store.record_event(
            AnalyticsEvent(
                session_id=session.id,
                user_sub=user_sub,
                track_path=session.path,
                event_type=report.type,
                ts=now,
                position_s=position,
                startup_ms=report.startup_ms,
                stall_ms=report.stall_ms,
                bitrate_kbps=report.bitrate_kbps,
            )
        )
        self._touch(session, now)
        return ReportOutcome(True, session_id=session.id)

    # -- bookkeeping --------------------------------------------------------------------

    def _expired(self, session: _Session, now: float) -> bool:
        return now >= session.idle_deadline(self._idle_s)

    def _session_for(
        self,
        user_sub: str,
        path: str,
        now: float,
        source: str,
        *,
        starts_over: bool,
        rendition: tuple[str | None, int | None, int | None, float | None] | None = None,
    ) -> _Session:
        """The open session of (user, track), or a new one; a stale or finished one is closed first.

        :param rendition: ``(format, bitrate, size, duration_s)`` of what the server sends,
            told in ``stream.started``.
        """
        key = (user_sub, path)
        session = self._open.get(key)
        if session is not None and (
            self._expired(session, now) or (starts_over and session.completed(self._segment_s))
        ):
            self._close(session)
            session = None
        if session is None:
            while len(self._open) >= self._max:
                self._close(next(iter(self._open.values())))
            session = _Session(
                id=self._new_id(),
                user_sub=user_sub,
                path=path,
                source=source,
                started_at=now,
                last_activity_at=now,
            )
            self._open[key] = session
            if source != "client":
                self._notify("stream.started", session, source=source, **_rendition_fields(rendition))
        return session

    def _notify(self, kind: str, session: _Session, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(
                kind, {"path": session.path, "sub": session.user_sub, "session_id": session.id, **fields}
            )
        except Exception:
            log.failure("analytics: the session event callback failed for {kind}", kind=kind)

    def _touch(self, session: _Session, now: float) -> None:
        session.last_activity_at = max(session.last_activity_at, now)
        key = (session.user_sub, session.path)
        self._open.pop(key, None)
        self._open[key] = session  # most recently active last
        later = self._record_later
        if later is not None:
            build = session._build
            if build is None:
                build = session._build = functools.partial(session.record, self._segment_s)
            later(session.id, build)
        else:
            self._store.record_session(session.record(self._segment_s))

    def _close(self, session: _Session) -> None:
        key = (session.user_sub, session.path)
        if self._open.get(key) is session:
            del self._open[key]
        if session.client_session_id is not None:
            client_key = (session.user_sub, session.client_session_id)
            if self._by_client.get(client_key) is session:
                del self._by_client[client_key]
        record = session.record(self._segment_s, ended_at=session.last_activity_at)
        self._store.record_session(record)
        if session.source != "client":
            self._notify(
                "stream.ended",
                session,
                bytes=record.bytes_sent,
                duration_s=round(record.seconds_listened, 3),
            )

    def sweep(self) -> int:
        """
        Close every session idle past its deadline now; never raises.

        :return: How many were closed.
        """
        now = self._clock.seconds()
        closed = 0
        try:
            for session in [s for s in self._open.values() if self._expired(s, now)]:
                self._close(session)
                closed += 1
        except Exception:
            log.failure("analytics: the session sweep failed")
        return closed

    def active(self) -> list[ActiveSession]:
        """The open sessions of this process, most recently active first."""
        now = self._clock.seconds()
        return [
            ActiveSession(
                session_id=s.id,
                user_sub=s.user_sub,
                track_path=s.path,
                source=s.source,
                started_at=s.started_at,
                last_activity_at=s.last_activity_at,
                position_s=round(s.last_position_s or s.max_position(self._segment_s), 3),
                seconds_listened=round(s.seconds_listened(self._segment_s), 3),
                playing=s.playing,
            )
            for s in reversed(self._open.values())
            if not self._expired(s, now)
        ]

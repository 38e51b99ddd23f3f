# -*- test-case-name: tests.test_analytics_sessions -*-
"""Tests for :mod:`streamsrv.analytics.sessions`: sessions from activity and reports, report validation.

The tracker runs on a :class:`~twisted.internet.task.Clock` and records into
:class:`RecordingStore`, which keeps what it is given; one test at the end
goes through a real SQLite store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.analytics.backends import SqliteAnalyticsStore
from streamsrv.analytics.listening import record_segment
from streamsrv.analytics.sessions import (
    DEFAULT_IDLE_TIMEOUT_S,
    HLS_SEGMENT_S,
    ReportError,
    SessionTracker,
    _Session,
    parse_playback_report,
)
from streamsrv.analytics.store import AnalyticsEvent, SessionRecord

NOW = 1_767_225_600.0
TRACK = "jazz/So What.mp3"


class RecordingStore:
    """Keeps the latest state of each session and every event, like a store would."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}
        self.events: list[AnalyticsEvent] = []

    def record_session(self, session: SessionRecord) -> None:
        self.sessions[session.id] = session

    def record_event(self, event: AnalyticsEvent) -> None:
        self.events.append(event)


def report(
    kind: str, position: Any, session_id: str = "c-1", path: Any = TRACK, **extra: Any
) -> dict[str, Any]:
    """A WebSocket playback frame."""
    return {
        "type": f"playback.{kind}",
        "id": "m-1",
        "ts": "2026-01-01T00:00:00Z",
        "data": {"session_id": session_id, "path": path, "position_s": position, **extra},
    }


class TrackerTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = RecordingStore()
        counter = iter(range(1, 10_000))
        self.tracker = SessionTracker(
            self.store,  # type: ignore[arg-type]
            self.clock,
            idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S,
            sweep_interval_s=30,
            new_id=lambda: f"s-{next(counter)}",
        )

    def stream(self, start: int, sent: int, user: str = "alice", path: str = TRACK, **kw: Any) -> str | None:
        """Report a /stream response of a 1000-byte, 100-second track."""
        kw.setdefault("size", 1000)
        kw.setdefault("duration_s", 100.0)
        return self.tracker.on_stream_activity(user, path, bytes_sent=sent, range_start=start, **kw)

    def record(self, session_id: str) -> SessionRecord:
        return self.store.sessions[session_id]


class StreamActivityTests(TrackerTestCase):
    """Sessions derived from /stream and HLS activity."""

    def test_requests_grouped(self) -> None:
        """Requests of one user for one track form one session; bytes add up."""
        first = self.stream(0, 500)
        self.clock.advance(5)
        second = self.stream(500, 200)
        self.assertEqual(first, second)
        assert first is not None
        record = self.record(first)
        self.assertEqual(record.bytes_sent, 700)
        self.assertEqual(record.last_activity_at, NOW + 5)
        self.assertEqual(record.source, "stream")

    def test_overlaps_counted_once(self) -> None:
        """Overlapping and repeated ranges count once toward the seconds listened."""
        sid = self.stream(0, 500)
        self.stream(250, 500)
        self.stream(0, 100)
        assert sid is not None
        record = self.record(sid)
        self.assertEqual(record.bytes_sent, 1100)
        self.assertEqual(record.seconds_listened, 75.0)
        self.assertEqual(record.max_position_s, 75.0)

    def test_range_end_caps(self) -> None:
        """Coverage never extends past the end of the range asked for."""
        sid = self.stream(0, 1000, range_end=99)
        assert sid is not None
        self.assertEqual(self.record(sid).seconds_listened, 10.0)

    def test_completion_and_replay(self) -> None:
        """90 % covered completes a session; a new request from byte 0 then starts another."""
        sid = self.stream(0, 950)
        assert sid is not None
        self.assertTrue(self.record(sid).completed)
        replay = self.stream(0, 100)
        self.assertNotEqual(replay, sid)
        self.assertEqual(self.record(sid).ended_at, NOW)

    def test_users_and_tracks_separate(self) -> None:
        """Different users, or different tracks, are different sessions."""
        ids = {self.stream(0, 10), self.stream(0, 10, user="bob"), self.stream(0, 10, path="other.mp3")}
        self.assertEqual(len(ids), 3)

    def test_hls_segments(self) -> None:
        """HLS listening is the number of distinct segments times the segment duration."""
        for segment in (0, 1, 2, 2):
            sid = self.tracker.on_stream_activity(
                "alice", TRACK, bytes_sent=1000, source="hls", segment=segment, duration_s=300.0
            )
        assert sid is not None
        record = self.record(sid)
        self.assertEqual(record.source, "hls")
        self.assertEqual(record.seconds_listened, 3 * HLS_SEGMENT_S)
        self.assertEqual(record.max_position_s, 3 * HLS_SEGMENT_S)

    def test_idle_timeout(self) -> None:
        """
        A server-only session closes once idle for the timeout plus the
        track's duration; activity after that opens a new one.
        """
        self.tracker.startService()
        self.addCleanup(self.tracker.stopService)
        sid = self.stream(0, 100)
        assert sid is not None
        self.clock.advance(DEFAULT_IDLE_TIMEOUT_S + 100 - 30)
        self.assertIsNone(self.record(sid).ended_at)
        self.assertEqual(len(self.tracker.active()), 1)
        self.clock.advance(30)
        self.assertEqual(self.record(sid).ended_at, NOW)
        self.assertEqual(self.tracker.active(), [])
        self.assertNotEqual(self.stream(100, 100), sid)

    def test_privacy(self) -> None:
        """Only the client's network is kept, and a shortened User-Agent."""
        sid = self.stream(0, 10, ip="203.0.113.77", user_agent="A" * 1000 + "\x00")
        assert sid is not None
        record = self.record(sid)
        self.assertEqual(record.ip_network, "203.0.113.0/24")
        self.assertEqual(record.client_info, "A" * 256)

    def test_bad_call_never_raises(self) -> None:
        """A bad call is logged and answered None, not raised."""
        self.assertIsNone(self.tracker.on_stream_activity("alice", TRACK, bytes_sent=-1))
        self.assertIsNone(self.tracker.on_stream_activity("alice", TRACK, bytes_sent=1, source="ftp"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_stop_closes_sessions(self) -> None:
        """Stopping the tracker closes and records every open session."""
        self.tracker.startService()
        sid = self.stream(0, 10)
        self.clock.advance(7)
        self.tracker.stopService()
        assert sid is not None
        self.assertEqual(self.record(sid).ended_at, NOW)
        self.assertEqual(self.tracker.active(), [])

    def test_max_sessions(self) -> None:
        """Beyond max_sessions, the least recently active session is closed."""
        tracker = SessionTracker(self.store, self.clock, max_sessions=2)  # type: ignore[arg-type]
        a = tracker.on_stream_activity("a", TRACK, bytes_sent=1)
        tracker.on_stream_activity("b", TRACK, bytes_sent=1)
        tracker.on_stream_activity("a", TRACK, bytes_sent=1)  # a is now the most recent
        tracker.on_stream_activity("c", TRACK, bytes_sent=1)
        self.assertEqual({s.user_sub for s in tracker.active()}, {"a", "c"})
        assert a is not None
        self.assertIsNone(self.record(a).ended_at)

    def test_active(self) -> None:
        """active() lists open sessions, most recently active first."""
        self.stream(0, 10)
        self.clock.advance(1)
        self.stream(0, 10, user="bob")
        active = self.tracker.active()
        self.assertEqual([a.user_sub for a in active], ["bob", "alice"])
        self.assertEqual(active[1].seconds_listened, 1.0)


class CoverageTests(unittest.TestCase):
    """Byte coverage merging."""

    @settings(derandomize=True, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=30))
    def test_matches_a_set_of_bytes(self, ranges: list[tuple[int, int]]) -> None:
        """The merged coverage counts exactly the distinct bytes delivered, in disjoint sorted runs."""
        session = _Session("s", "u", "p", "stream", 0.0, 0.0)
        covered: set[int] = set()
        for start, length in ranges:
            session.add_range(start, start + length)
            covered.update(range(start, start + length))
        self.assertEqual(session.covered_bytes, len(covered))
        for (_, end), (start, _) in zip(session.ranges, session.ranges[1:], strict=False):
            self.assertLess(end, start)


class PlaybackReportTests(TrackerTestCase):
    """Client playback reports merged into sessions."""

    def send(self, frame: dict[str, Any], user: str = "alice") -> Any:
        return self.tracker.on_playback_report(user, frame)

    def test_links_to_server_session(self) -> None:
        """A report for a track the user is streaming joins that session."""
        sid = self.stream(0, 100)
        outcome = self.send(report("play", 0.0, startup_ms=180.0, bitrate_kbps=128))
        self.assertTrue(outcome.ok)
        self.assertEqual(outcome.session_id, sid)
        assert sid is not None
        self.assertEqual(self.record(sid).client_session_id, "c-1")
        self.assertEqual(self.record(sid).source, "stream")
        [play] = self.store.events
        self.assertEqual((play.event_type, play.startup_ms, play.ts), ("playback.play", 180.0, NOW))

    def test_client_only_then_stream(self) -> None:
        """A report with no server session opens a client session; streaming joins it later."""
        outcome = self.send(report("play", 0.0))
        self.assertEqual(self.record(outcome.session_id).source, "client")
        self.assertEqual(self.stream(0, 100), outcome.session_id)
        self.assertEqual(self.record(outcome.session_id).source, "stream")

    def test_listened_from_reports(self) -> None:
        """
        Listening is the sum of position advances while playing; seeks,
        implausible jumps and time paused do not count.
        """
        sid = self.send(report("play", 0.0)).session_id
        for position in (10.0, 20.0):
            self.clock.advance(10)
            self.send(report("progress", position))
        self.send(report("seek", 100.0))
        self.clock.advance(10)
        self.send(report("progress", 110.0))
        self.clock.advance(1)
        self.send(report("progress", 300.0))  # a jump of 190 s in 1 s: a seek
        self.send(report("pause", 300.0))
        self.clock.advance(60)
        self.send(report("progress", 340.0))  # paused: not listening
        self.assertEqual(self.record(sid).seconds_listened, 30.0)
        self.assertEqual(self.record(sid).max_position_s, 340.0)

    def test_ended_completes(self) -> None:
        """playback.ended marks the session completed."""
        sid = self.send(report("play", 0.0, duration_s=100.0)).session_id
        self.assertFalse(self.record(sid).completed)
        self.clock.advance(5)
        self.send(report("ended", 5.0))
        self.assertTrue(self.record(sid).completed)

    def test_bitrate_switch(self) -> None:
        """A report with another bitrate than the last one records a bitrate.switch."""
        self.send(report("play", 0.0, bitrate_kbps=128))
        self.send(report("progress", 1.0, bitrate_kbps=128))
        self.send(report("progress", 2.0, bitrate_kbps=64))
        switches = [e for e in self.store.events if e.event_type == "bitrate.switch"]
        self.assertEqual([(e.from_bitrate_kbps, e.to_bitrate_kbps) for e in switches], [(128.0, 64.0)])

    def test_buffering(self) -> None:
        """A buffering report keeps its stall duration."""
        self.send(report("buffering", 3.0, stall_ms=450))
        self.assertEqual(self.store.events[-1].stall_ms, 450.0)

    def test_session_id_bound_to_track(self) -> None:
        """A session_id already used for one track is refused for another."""
        self.send(report("play", 0.0))
        outcome = self.send(report("progress", 1.0, path="other.mp3"))
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.code, "BAD_REQUEST")

    def test_new_client_session_new_playback(self) -> None:
        """A second client session_id for the same track starts a new session (a replay)."""
        first = self.send(report("play", 0.0)).session_id
        second = self.send(report("play", 0.0, session_id="c-2")).session_id
        self.assertNotEqual(first, second)
        self.assertIsNotNone(self.record(first).ended_at)

    def test_users_do_not_share_client_ids(self) -> None:
        """The same client session_id from two users is two sessions."""
        a = self.send(report("play", 0.0), user="alice").session_id
        b = self.send(report("play", 0.0), user="bob").session_id
        self.assertNotEqual(a, b)
        self.assertEqual(self.record(b).user_sub, "bob")

    def test_flat_form(self) -> None:
        """The fields may also come flat, without a data object."""
        outcome = self.send({"type": "playback.play", "session_id": "c-1", "path": TRACK, "position_s": 0})
        self.assertTrue(outcome.ok)

    def test_malformed_answered_not_raised(self) -> None:
        """Malformed reports get a BAD_REQUEST outcome with a message, and record nothing."""
        bad: list[Any] = [
            None,
            [],
            "playback.play",
            {"type": "playback.dance", "data": {"session_id": "c", "path": TRACK, "position_s": 0}},
            {"type": "playback.play", "data": []},
            {
                "type": "playback.play",
                "extra": 1,
                "data": {"session_id": "c", "path": TRACK, "position_s": 0},
            },
            report("play", 0.0, volume=1),
            {"type": "playback.play", "data": {"session_id": "c", "path": TRACK}},
            report("play", True),
            report("play", float("nan")),
            report("play", -1.0),
            report("play", "12"),
            report("play", 0.0, session_id="has space"),
            report("play", 0.0, session_id="x" * 129),
            report("play", 0.0, path=""),
            report("play", 0.0, path="a\x00b"),
            report("play", 0.0, path=7),
            report("play", 0.0, startup_ms=-5),
            report("play", 0.0, bitrate_kbps=0),
        ]
        for frame in bad:
            outcome = self.send(frame)
            self.assertFalse(outcome.ok, frame)
            self.assertEqual(outcome.code, "BAD_REQUEST")
            self.assertTrue(outcome.message)
        self.assertEqual(self.store.events, [])
        self.assertEqual(self.store.sessions, {})

    def test_parse(self) -> None:
        """parse_playback_report returns the typed report, with optional fields None."""
        parsed = parse_playback_report(report("progress", 12, stall_ms=None))
        self.assertEqual((parsed.type, parsed.position_s, parsed.stall_ms), ("playback.progress", 12.0, None))
        with self.assertRaises(ReportError):
            parse_playback_report({"type": "playback.progress"})


class TrackerWithStoreTests(unittest.TestCase):
    """The tracker and a real SQLite store together."""

    async def test_sessions_and_events_stored(self) -> None:
        """What the tracker derives ends up in the database after a flush."""
        clock = Clock()
        clock.advance(NOW)
        store = SqliteAnalyticsStore(Path(self.mktemp()) / "a.sqlite3", clock, reactor=reactor)
        self.addCleanup(store.close)
        tracker = SessionTracker(store, clock)
        tracker.on_stream_activity(
            "alice", TRACK, bytes_sent=500, size=1000, duration_s=100.0, ip="2001:db8::1"
        )
        tracker.on_playback_report("alice", report("play", 0.0, startup_ms=200))
        tracker.stopService()
        await store.flush()
        rows = await store.query("SELECT seconds_listened, ip_network, ended_at FROM sessions")
        self.assertEqual(rows, [(50.0, "2001:db8::/48", NOW)])
        rows = await store.query("SELECT event_type, startup_ms FROM events")
        self.assertEqual(rows, [("playback.play", 200.0)])


class SessionEventTests(unittest.TestCase):
    """``on_event`` hears stream.started when a server session opens and stream.ended when it closes."""

    def test_started_and_ended(self) -> None:
        clock = Clock()
        clock.advance(1_767_225_600)
        store = SqliteAnalyticsStore(Path(self.mktemp()) / "a.sqlite3", clock, reactor=reactor)
        events: list[tuple[str, dict[str, object]]] = []
        tracker = SessionTracker(store, clock, idle_timeout_s=60, on_event=lambda k, f: events.append((k, f)))
        tracker.on_stream_activity("alice", "a.mp3", bytes_sent=1000, size=10_000, duration_s=100.0)
        tracker.on_stream_activity(
            "alice", "a.mp3", bytes_sent=1000, range_start=1000, size=10_000, duration_s=100.0
        )
        self.assertEqual([k for k, _ in events], ["stream.started"])
        started = events[0][1]
        self.assertEqual((started["path"], started["sub"], started["source"]), ("a.mp3", "alice", "stream"))
        clock.advance(60 + 100 + 1)  # idle timeout, plus the track's length a player may buffer ahead
        tracker.sweep()
        self.assertEqual([k for k, _ in events], ["stream.started", "stream.ended"])
        ended = events[1][1]
        self.assertEqual(ended["session_id"], started["session_id"])
        self.assertEqual(ended["bytes"], 2000)
        self.assertAlmostEqual(ended["duration_s"], 20.0, places=3)

    def test_started_tells_the_rendition(self) -> None:
        """stream.started carries the rendition's format and bitrate (bits/s), estimated for an original."""
        clock = Clock()
        clock.advance(1_767_225_600)
        store = SqliteAnalyticsStore(Path(self.mktemp()) / "a.sqlite3", clock, reactor=reactor)
        events: list[tuple[str, dict[str, object]]] = []
        tracker = SessionTracker(store, clock, on_event=lambda k, f: events.append((k, f)))
        tracker.on_stream_activity("a", "a.mp3", bytes_sent=10, size=10_000, duration_s=100.0, format="mp3")
        tracker.on_stream_activity("b", "a.flac", bytes_sent=10, format="aac", bitrate=128_000)
        record_segment(tracker, "c", "a.flac", 0, 100, None, format="aac", bitrate=96_000)
        tracker.on_stream_activity("d", "a.wav", bytes_sent=10)
        started = [(f["sub"], f["format"], f["bitrate"], f["source"]) for k, f in events]
        self.assertEqual(
            started,
            [
                ("a", "mp3", 800, "stream"),
                ("b", "aac", 128_000, "stream"),
                ("c", "aac", 96_000, "hls"),
                ("d", None, None, "stream"),
            ],
        )

    def test_callback_errors_do_not_escape(self) -> None:
        clock = Clock()
        store = SqliteAnalyticsStore(Path(self.mktemp()) / "a.sqlite3", clock, reactor=reactor)

        def broken(kind: str, fields: dict[str, object]) -> None:
            raise RuntimeError("subscriber bug")

        tracker = SessionTracker(store, clock, on_event=broken)
        self.assertIsNotNone(tracker.on_stream_activity("bob", "b.mp3", bytes_sent=10))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

# -*- test-case-name: tests.test_tap -*-
"""What ``/stream`` and ``/hls`` tell the session tracker about the bytes they sent.

Plain values in: the user, the track, the ranges or segment sent, the
client's address and agent.  The HTTP adapters read those off their request
(:mod:`streamsrv.web.listening`); this module must never see a request.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamsrv.analytics.sessions import SessionTracker


def record_delivery(
    sessions: SessionTracker,
    user: str,
    track: str,
    spans: Sequence[tuple[int, int]],
    sent: int,
    *,
    size: int,
    duration_s: float | None,
    ip: str | None,
    user_agent: str | None,
    format: str | None = None,
    bitrate: int | None = None,
) -> None:
    """A ``/stream`` body was sent: *sent* bytes over the ``(start, length)`` *spans*, in order.

    *format* and *bitrate* (bits/s) say what was sent (an original's
    bitrate is estimated from *size* and *duration_s* when not given).
    """
    remaining = sent
    for start, length in spans:
        part = min(remaining, length)
        remaining -= part
        sessions.on_stream_activity(
            user,
            track,
            bytes_sent=part,
            range_start=start,
            range_end=start + length - 1,
            size=size,
            duration_s=duration_s,
            ip=ip,
            user_agent=user_agent,
            format=format,
            bitrate=bitrate,
        )


def record_segment(
    sessions: SessionTracker,
    user: str,
    track: str,
    segment: int,
    sent: int,
    ip: str | None,
    *,
    format: str | None = None,
    bitrate: int | None = None,
) -> None:
    """An HLS media segment *segment* of *track* was sent (*sent* bytes) in *format* at *bitrate* bits/s."""
    sessions.on_stream_activity(
        user, track, bytes_sent=sent, source="hls", segment=segment, ip=ip, format=format, bitrate=bitrate
    )

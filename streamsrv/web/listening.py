# -*- test-case-name: tests.test_tap -*-
"""The ``/stream`` and ``/hls`` callbacks that tell the session tracker what a request received.

They read the user, the client's address and agent off the request and hand
plain values to :mod:`streamsrv.analytics.listening`.  This module must never
keep a request past the call.
"""

from __future__ import annotations

from typing import Any

from streamsrv.analytics.listening import record_delivery, record_segment
from streamsrv.analytics.sessions import SessionTracker


def _user(request: Any) -> str:
    return getattr(request, "user", None) or "anonymous"


def _delivered_as(request: Any) -> tuple[str | None, int | None]:
    """``(format, bitrate bits/s)`` the resource said it sent (``delivered_as``), else unknown."""
    value = getattr(request, "delivered_as", None)
    return value if value is not None else (None, None)


class StreamListening:
    """``StreamResource``'s ``on_delivered``: each body sent, range by range."""

    def __init__(self, sessions: SessionTracker) -> None:
        self._sessions = sessions

    def __call__(
        self,
        request: Any,
        track: str,
        spans: list[tuple[int, int]],
        sent: int,
        size: int,
        duration: float | None,
    ) -> None:
        agent = request.getHeader(b"user-agent")
        fmt, bitrate = _delivered_as(request)
        record_delivery(
            self._sessions,
            _user(request),
            track,
            spans,
            sent,
            size=size,
            duration_s=duration,
            ip=getattr(request, "client_ip", None),
            user_agent=agent.decode("latin-1") if agent else None,
            format=fmt,
            bitrate=bitrate,
        )


class HlsListening:
    """``HlsResource``'s ``on_segment``: each media segment sent."""

    def __init__(self, sessions: SessionTracker) -> None:
        self._sessions = sessions

    def __call__(self, request: Any, track: str, n: int, sent: int) -> None:
        fmt, bitrate = _delivered_as(request)
        ip = getattr(request, "client_ip", None)
        record_segment(self._sessions, _user(request), track, n, sent, ip, format=fmt, bitrate=bitrate)

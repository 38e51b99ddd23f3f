# -*- test-case-name: tests.test_tap -*-
"""What listening sessions and playback reports publish on the event hub.

:class:`SessionEvents` is the session tracker's ``on_event``: each
``stream.*`` event goes to its user's channel and its track's channel.
:class:`PlaybackReports` is the WebSocket's ``on_playback``: a client's
``playback.*`` report goes to the session tracker and, once accepted, to the
same two channels.  This module must never read a request or a socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamsrv.analytics.sessions import SessionTracker
from streamsrv.auth.principal import Principal
from streamsrv.events.hub import track_channel, user_channel


class SessionEvents:
    """Publishes a session's events on its user's and its track's channels."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        event = {"type": kind, **fields}
        self._hub.publish(user_channel(fields["sub"]), event)
        self._hub.publish(track_channel(fields["path"]), event)


class PlaybackReports:
    """Takes a client's playback report: to the session tracker, then (if accepted) to the hub."""

    def __init__(self, sessions: SessionTracker, hub: Any) -> None:
        self._sessions = sessions
        self._hub = hub

    def __call__(self, principal: Principal, kind: str, data: Mapping[str, Any]) -> str | None:
        """Record and publish the report; return why it was refused, or ``None``."""
        outcome = self._sessions.on_playback_report(principal.sub, {"type": f"playback.{kind}", **data})
        if not outcome.ok:
            return outcome.message or "The report was refused."
        event = {"type": f"playback.{kind}", "sub": principal.sub, **data}
        self._hub.publish(user_channel(principal.sub), event)
        if isinstance(data.get("path"), str):
            self._hub.publish(track_channel(data["path"]), event)
        return None

# -*- test-case-name: tests.test_ws -*-
"""Playback reports on ``/ws``: which client messages they are, the shape each must have, where they go.

A socket hands a report whose shape :func:`check_playback` accepts to the
factory's :data:`PlaybackSink` (the analytics' session tracker).  This module
must never accept a report without a valid track path, and never echo more
than a client-safe message about what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from streamsrv.analytics.sessions import REPORT_TYPES
from streamsrv.auth.principal import Principal
from streamsrv.media.paths import PathRefused, normalise_relative_path

__all__ = ["MAX_SESSION_ID_LENGTH", "PLAYBACK_TYPES", "PlaybackSink", "check_playback"]

#: Client message types that are playback reports (the analytics' report types).
PLAYBACK_TYPES: Final = REPORT_TYPES

#: Longest playback ``session_id``.
MAX_SESSION_ID_LENGTH: Final = 128

#: ``on_playback(principal, kind, data)``: take one playback report (*kind*
#: is ``play``, ``pause``, ``seek``, ``progress``, ``ended`` or
#: ``buffering``); return ``None`` if accepted, else a client-safe message
#: saying why not (answered as ``error`` ``BAD_REQUEST``).  Must not block.
PlaybackSink = Callable[[Principal, str, Mapping[str, Any]], "str | None"]


def check_playback(data: Mapping[str, Any]) -> str | None:
    """
    The shape every playback report must have: ``session_id`` (1 to 128
    characters), ``path`` (a track path) and ``position_s`` (a finite
    number >= 0).  :return: ``None``, or what is wrong (client-safe).
    """
    session_id = data.get("session_id")
    if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
        return f'"session_id" is a string of 1 to {MAX_SESSION_ID_LENGTH} characters.'
    path = data.get("path")
    if not isinstance(path, str):
        return '"path" is the track path.'
    try:
        normalise_relative_path(path)
    except PathRefused:
        return '"path" is not a valid track path.'
    position = data.get("position_s")
    if (
        isinstance(position, bool)
        or not isinstance(position, int | float)
        or not math.isfinite(position)
        or position < 0
    ):
        return '"position_s" is a number of seconds >= 0.'
    return None

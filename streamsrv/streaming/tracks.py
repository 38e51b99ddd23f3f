# -*- test-case-name: tests.test_media_api -*-
"""Request-side helpers shared by every route that serves a track's data.

``/stream`` (which also caches resolutions), ``/hls`` and the media API all
name a track by its still-encoded URL path and answer the same way when it is
not a servable audio file: :func:`resolve_media` is that rule in one place.
:func:`request_preconditions` evaluates a request's conditional headers
against a representation's validators.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamsrv.audio.formats import audio_format_for
from streamsrv.errors import ApiError
from streamsrv.media.paths import PathRefused, safe_media_path
from streamsrv.middleware.audit import security_event
from streamsrv.streaming.conditional import Outcome, evaluate_preconditions

__all__ = ["request_preconditions", "resolve_media"]


def resolve_media(
    root: Path, request: Any, raw: bytes, is_audio: Callable[[str], bool] | None
) -> tuple[str, Path, os.stat_result]:
    """
    The track named by *raw* (the path after the route prefix, still encoded).

    :param root: The media root, resolved with :func:`os.path.realpath`.
    :param is_audio: The catalog's ``is_audio`` (``None``: every file with an
        audio extension).
    :return: The track path (NFC, ``/``-separated), the file and its ``stat``.
    :raise ApiError: ``NOT_FOUND`` for anything else: an unsafe path (also a
        security event), a dotfile, a non-audio or unknown file, a directory,
        a missing file.  Nothing tells which.
    """
    try:
        track, path = safe_media_path(root, raw)
    except PathRefused as e:
        security_event(request, "path_refused", reason=e.reason)
        raise ApiError("NOT_FOUND") from None
    if any(segment.startswith(".") for segment in track.split("/")) or audio_format_for(track) is None:
        raise ApiError("NOT_FOUND")
    if is_audio is not None and not is_audio(track):
        raise ApiError("NOT_FOUND")
    try:
        info = os.stat(path)
    except OSError:
        raise ApiError("NOT_FOUND") from None
    if not stat.S_ISREG(info.st_mode):
        raise ApiError("NOT_FOUND")
    return track, path, info


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def request_preconditions(request: Any, etag: str, last_modified: int) -> Outcome:
    """RFC 9110 §13.2.2 for *request* against a representation's validators."""
    return evaluate_preconditions(
        request.method.decode("ascii"),
        etag,
        last_modified,
        if_match=_header(request, b"if-match"),
        if_none_match=_header(request, b"if-none-match"),
        if_modified_since=_header(request, b"if-modified-since"),
        if_unmodified_since=_header(request, b"if-unmodified-since"),
    )

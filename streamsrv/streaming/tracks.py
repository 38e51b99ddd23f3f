# -*- test-case-name: tests.test_media_api -*-
"""Request-side helpers shared by every route that serves a track's data.

``/stream``, ``/hls`` and the media API all name a track by its
still-encoded URL path and answer the same way when it is not a servable
audio file: :func:`resolve_track` is that rule in one place (with the
optional cache of recent resolutions ``/stream`` keeps), and
:func:`resolve_media` adds the ``stat`` that routes which do not open the
file themselves need.  It never joins a request path to the file system
other than through :func:`~streamsrv.media.paths.safe_media_path`.
:func:`request_preconditions` evaluates a request's conditional headers
against a representation's validators.  A track that passes every check but
is not in the catalog's index yet (a cold start's first scan has not reached
it) is read on demand when the route passes the catalog's ``index_missing``:
:func:`resolve_track` then raises :class:`TrackPending`, and the route
resolves again once it fired (:func:`resolve_media_indexed` does both).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred

from streamsrv.audio.formats import AudioFormat, audio_format_for
from streamsrv.errors import ApiError
from streamsrv.media.paths import PathRefused, ResolvedPathCache, safe_media_path
from streamsrv.middleware.audit import security_event
from streamsrv.streaming.conditional import Outcome, evaluate_preconditions

__all__ = [
    "IndexMissing",
    "TrackPending",
    "regular_file_stat",
    "request_preconditions",
    "resolve_media",
    "resolve_media_indexed",
    "resolve_track",
]

#: The catalog's ``index_missing``: read a safe track the index does not know
#: yet; a Deferred of whether it is audio, or ``None`` when there is nothing to wait for.
IndexMissing: TypeAlias = Callable[[str, Path], "Deferred[bool] | None"]


class TrackPending(Exception):
    """The catalog is reading the track now: wait for :attr:`ready`, then resolve again (without indexing)."""

    def __init__(self, ready: Deferred[bool]) -> None:
        super().__init__("the track is being indexed")
        self.ready = ready


def resolve_track(
    root: Path,
    request: Any,
    raw: bytes,
    is_audio: Callable[[str], bool] | None,
    cache: ResolvedPathCache[AudioFormat] | None = None,
    index_missing: IndexMissing | None = None,
) -> tuple[str, Path, AudioFormat]:
    """
    The track named by *raw* (the path after the route prefix, still encoded), not yet opened.

    :param root: The media root, resolved with :func:`os.path.realpath`.
    :param is_audio: The catalog's ``is_audio`` (``None``: every file with an
        audio extension); asked on every call, cached or not.
    :param cache: Recent resolutions (``/stream`` keeps one): a hit skips the
        path checks its entry already passed; a miss takes every check below
        and remembers only a success.
    :param index_missing: The catalog's ``index_missing``, to read a track
        that passed every other check but that the catalog does not know.
    :return: The track path (NFC, ``/``-separated), the file, its audio format.
    :raise ApiError: ``NOT_FOUND`` for an unsafe path (also a security
        event), a dotfile, a file without an audio extension, a track the
        catalog does not know as audio.  Nothing tells which.
    :raise TrackPending: when *index_missing* is reading the track now.
    """
    if cache is not None:
        hit = cache.get(raw)
        if hit is not None:
            if is_audio is not None and not is_audio(hit[0]):
                raise ApiError("NOT_FOUND")
            return hit
    try:
        track, path = safe_media_path(root, raw)
    except PathRefused as e:
        security_event(request, "path_refused", reason=e.reason)
        raise ApiError("NOT_FOUND") from None
    if any(segment.startswith(".") for segment in track.split("/")):
        raise ApiError("NOT_FOUND")
    fmt = audio_format_for(track)
    if fmt is None:
        raise ApiError("NOT_FOUND")
    if is_audio is not None and not is_audio(track):
        pending = index_missing(track, path) if index_missing is not None else None
        if pending is not None:
            raise TrackPending(pending)
        raise ApiError("NOT_FOUND")
    if cache is not None:
        cache.put(raw, track, path, fmt)
    return track, path, fmt


def resolve_media(
    root: Path,
    request: Any,
    raw: bytes,
    is_audio: Callable[[str], bool] | None,
    cache: ResolvedPathCache[AudioFormat] | None = None,
) -> tuple[str, Path, os.stat_result]:
    """
    The track named by *raw*, as :func:`resolve_track` resolves it, and its ``stat``.

    :return: The track path (NFC, ``/``-separated), the file and its ``stat``.
    :raise ApiError: ``NOT_FOUND`` for what :func:`resolve_track` refuses, a
        directory or a missing file.  Nothing tells which.
    """
    track, path, _ = resolve_track(root, request, raw, is_audio, cache)
    return track, path, regular_file_stat(path)


async def resolve_media_indexed(
    root: Path,
    request: Any,
    raw: bytes,
    is_audio: Callable[[str], bool] | None,
    index_missing: IndexMissing | None,
) -> tuple[str, Path, os.stat_result]:
    """:func:`resolve_media`, waiting for the catalog to read a track it does not know yet.

    :raise ApiError: as :func:`resolve_media`, also once the track was read
        and found unreadable.
    """
    try:
        track, path, _ = resolve_track(root, request, raw, is_audio, None, index_missing)
    except TrackPending as pending:
        await pending.ready
        track, path, _ = resolve_track(root, request, raw, is_audio)
    return track, path, regular_file_stat(path)


def regular_file_stat(path: Path) -> os.stat_result:
    """``os.stat`` of a resolved track that must be a regular file.

    :raise ApiError: ``NOT_FOUND`` for a missing file or anything but a regular file.
    """
    try:
        info = os.stat(path)
    except OSError:
        raise ApiError("NOT_FOUND") from None
    if not stat.S_ISREG(info.st_mode):
        raise ApiError("NOT_FOUND")
    return info


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

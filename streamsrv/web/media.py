# -*- test-case-name: tests.test_media_api -*-
"""The media API's request side: tracks, artwork, waveforms and spectra.

:class:`MediaRoutes` reads a request's query into the values the domain
(:class:`~streamsrv.audio.library.MediaLibrary`) takes, validating them into
the contract's ``BAD_REQUEST``; resolves the track its URL path names with
:func:`~streamsrv.streaming.tracks.resolve_media` (anything but a servable
audio file is ``NOT_FOUND``, an unsafe path also a security event); and sends
the :class:`~streamsrv.audio.library.Representation` it gets back with its
ETag, private caching (never past a signed URL's expiry) and 304 on a match.
It never joins a request path to the file system itself and never computes
anything about audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from streamsrv.audio import spectrum as spectrum_mod
from streamsrv.audio import waveform as waveform_mod
from streamsrv.audio.library import MediaLibrary, Representation, SpectrumOptions, WaveformOptions
from streamsrv.auth.signing import max_age_for
from streamsrv.errors import ApiError
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import Outcome, evaluate_preconditions
from streamsrv.streaming.tracks import resolve_media_indexed
from streamsrv.web.query import one_value

__all__ = ["MEDIA_MAX_AGE_S", "MediaRoutes", "waveform_options"]

#: Largest ``limit`` of a track listing.
MAX_PAGE: Final = 200

#: Longest ``q``, ``artist``, ``album`` or ``cursor`` accepted.
MAX_QUERY_CHARS: Final = 512

#: How long clients may reuse artwork, waveforms and spectra before revalidating.
MEDIA_MAX_AGE_S: Final = 3600

Args = Mapping[bytes, list[bytes]]


def _one(args: Args, name: str) -> str | None:
    return one_value(args, name, repeated=f"{name} may be given once.", not_utf8=f"{name} must be UTF-8.")


def _int(args: Args, name: str, default: int | None) -> int | None:
    text = _one(args, name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ApiError("BAD_REQUEST", f"{name} must be a whole number.")
    return int(text)


def _seconds(args: Args, name: str) -> float | None:
    text = _one(args, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError("BAD_REQUEST", f"{name} must be a number of seconds.") from None
    if not math.isfinite(value) or value < 0:
        raise ApiError("BAD_REQUEST", f"{name} must be a finite number of seconds >= 0.")
    return value


def _choice(args: Args, name: str, choices: tuple[str, ...]) -> str:
    text = _one(args, name)
    if text is None:
        return choices[0]
    if text not in choices:
        raise ApiError("BAD_REQUEST", f"{name} must be one of {', '.join(choices)}.")
    return text


def waveform_options(args: Args) -> WaveformOptions:
    """The waveform query (see DESIGN for the parameters), checked in the order the answers rely on."""
    spp = _int(args, "samples_per_pixel", None)
    pps = _int(args, "pixels_per_second", None)
    if spp is not None and pps is not None:
        raise ApiError("BAD_REQUEST", "Give samples_per_pixel or pixels_per_second, not both.")
    bits = _int(args, "bits", 8)
    if bits not in (8, 16):
        raise ApiError("BAD_REQUEST", "bits must be 8 or 16.")
    split = _choice(args, "channels", ("merge", "split")) == "split"
    start = _seconds(args, "start")
    end = _seconds(args, "end")
    if start is not None and end is not None and end <= start:
        raise ApiError("BAD_REQUEST", "end must be after start.")
    fmt = _choice(args, "format", ("json", "dat", "wavesurfer"))
    try:
        if spp is not None:
            waveform_mod._check_samples_per_pixel(spp)
        if pps is not None:
            waveform_mod._check_pixels_per_second(pps)
    except ValueError as e:
        raise ApiError("BAD_REQUEST", str(e)) from None
    return WaveformOptions(spp, pps, bits, split, start, end, fmt)


def _text_header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


class MediaRoutes:
    """
    The media routes' request handling over a :class:`MediaLibrary`.

    :param library: The domain side.
    :param clock: Tells the time (``max-age`` of signed URLs).
    """

    def __init__(self, library: MediaLibrary, clock: IReactorTime) -> None:
        self._library = library
        self._clock = clock

    async def resolve(self, request: Any, raw_path: bytes) -> tuple[str, Path, os.stat_result]:
        """
        The track named by the still-encoded URL path after the route prefix
        (one the catalog does not know yet is read on demand first).

        :raise ApiError: ``NOT_FOUND`` for anything that is not an audio file
            of the catalog inside the root; an unsafe path is also a security
            event.  Nothing tells why.
        """
        library = self._library
        return await resolve_media_indexed(
            library.root, request, raw_path, library.is_audio, library.index_missing
        )

    async def tracks(self, request: Any) -> dict[str, object]:
        """``GET /api/v1/tracks``: ``q``, ``artist``, ``album``, ``limit`` (1–200, default 50), ``cursor``."""
        self._library.require_catalog()
        args = request.args
        limit = _int(args, "limit", MAX_PAGE // 4)
        if limit is None or not 1 <= limit <= MAX_PAGE:
            raise ApiError("BAD_REQUEST", f"limit must be within 1..{MAX_PAGE}.")
        fields = {name: _one(args, name) for name in ("q", "artist", "album", "cursor")}
        for name, value in fields.items():
            if value is not None and len(value) > MAX_QUERY_CHARS:
                raise ApiError("BAD_REQUEST", f"{name} must be at most {MAX_QUERY_CHARS} characters.")
        return await self._library.tracks(
            q=fields["q"],
            artist=fields["artist"],
            album=fields["album"],
            limit=limit,
            cursor=fields["cursor"],
        )

    async def track(self, request: Any, raw_path: bytes) -> dict[str, object]:
        """``GET /api/v1/tracks/{path}``: the metadata of DESIGN."""
        self._library.require_catalog()
        track, _path, _info = await self.resolve(request, raw_path)
        return await self._library.track(track)

    async def waveform(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/waveform/{path}`` (see DESIGN for the parameters)."""
        options = waveform_options(request.args)
        track, path, info = await self.resolve(request, raw_path)
        return await self._library.waveform(track, path, info, options)

    async def spectrum(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/spectrum/{path}``: JSON summary (and spectrogram) or a PNG spectrogram."""
        args = request.args
        fmt = _choice(args, "format", ("json", "png"))
        try:
            params = spectrum_mod.SpectrumParams(
                fft_size=_int(args, "fft_size", 4096) or 0,
                hop=_int(args, "hop", 1024) or 0,
                window=_choice(args, "window", ("hann", "hamming", "blackman")),
                max_frames=_int(args, "max_frames", 2000) or 0,
            )
        except ValueError as e:
            raise ApiError("BAD_REQUEST", str(e)) from None
        start = _seconds(args, "start") or 0.0
        end = _seconds(args, "end")
        if end is not None and end <= start:
            raise ApiError("BAD_REQUEST", "end must be after start.")
        track, path, info = await self.resolve(request, raw_path)
        spectrogram = _choice(args, "spectrogram", ("0", "1")) == "1"
        height = _int(args, "height", 256) or 0
        width = _int(args, "width", None)
        options = SpectrumOptions(fmt, params, start, end, spectrogram, height, width)
        return await self._library.spectrum(track, path, info, options)

    async def artwork(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/artwork/{path}``: the embedded picture, else ``cover.*``/``folder.*`` beside it."""
        track, _path, info = await self.resolve(request, raw_path)
        return await self._library.artwork(track, info)

    def represent(self, request: Any, rep: Representation) -> bytes:
        """Send *rep* with its validator, private caching (clamped for signed URLs) and 304 on a match."""
        request.setHeader(b"etag", rep.etag.encode("ascii"))
        max_age = MEDIA_MAX_AGE_S
        if getattr(request, "signed_expires", None) is not None:
            max_age = min(max_age, max_age_for(request.signed_expires, self._clock.seconds()))
        request.setHeader(b"cache-control", b"private, max-age=%d" % max_age)
        mark_media(request)
        outcome = evaluate_preconditions(
            request.method.decode("ascii"),
            rep.etag,
            0,
            if_match=None,
            if_none_match=_text_header(request, b"if-none-match"),
            if_modified_since=None,
            if_unmodified_since=None,
        )
        if outcome is Outcome.NOT_MODIFIED:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", rep.content_type.encode("ascii"))
        return rep.body

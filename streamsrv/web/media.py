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

import hashlib
import importlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from streamsrv.audio import spectrogram_grid
from streamsrv.audio.library import MediaLibrary, Representation, SpectrumOptions, WaveformOptions
from streamsrv.auth.signing import max_age_for
from streamsrv.errors import ApiError
from streamsrv.middleware.compression import identity_if_none_match
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import Outcome, evaluate_preconditions
from streamsrv.streaming.tracks import resolve_media_indexed
from streamsrv.web.query import one_value


def _waveform() -> Any:
    """:mod:`streamsrv.audio.waveform`, imported on first use (it brings numpy and PyAV)."""
    return importlib.import_module("streamsrv.audio.waveform")


def _spectrum() -> Any:
    """:mod:`streamsrv.audio.spectrum`, imported on first use (it brings numpy and PyAV)."""
    return importlib.import_module("streamsrv.audio.spectrum")


__all__ = ["MEDIA_MAX_AGE_S", "MediaRoutes", "body_etag", "validated", "waveform_options"]

#: Largest ``limit`` of a track listing.
MAX_PAGE: Final = 200

#: Longest ``q``, ``artist``, ``album`` or ``cursor`` accepted.
MAX_QUERY_CHARS: Final = 512

#: Layout version of the track listing's JSON; bump when it changes, to change its ETags.
LISTING_VERSION: Final = 1

JSON_TYPE: Final = "application/json; charset=utf-8"

#: How long clients may reuse artwork, waveforms and spectra before revalidating.
MEDIA_MAX_AGE_S: Final = 3600

Args = Mapping[bytes, list[bytes]]


def _one(args: Args, name: str) -> str | None:
    return one_value(args, name, repeated=f"{name} may be given once.", not_utf8=f"{name} must be UTF-8.")


def _int(args: Args, name: str, default: int | None) -> int | None:
    text = _one(args, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:  # "²".isdigit() too
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
            _waveform()._check_samples_per_pixel(spp)
        if pps is not None:
            _waveform()._check_pixels_per_second(pps)
    except ValueError as e:
        raise ApiError("BAD_REQUEST", str(e)) from None
    return WaveformOptions(spp, pps, bits, split, start, end, fmt)


def _boolean(args: Args, name: str) -> bool:
    text = _one(args, name)
    if text is None or text in ("0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise ApiError("BAD_REQUEST", f"{name} must be true or false.")


def spectrogram_query(args: Args) -> tuple[int, int, bool]:
    """``frames``, ``bins`` (the JSON spectrogram's grid) and ``axes`` (the PNG's), checked.

    :raise ApiError: ``BAD_REQUEST`` naming the parameter that is not a
        whole number, is out of its range, or (``frames`` x ``bins``) too big.
    """
    frames = _int(args, "frames", spectrogram_grid.DEFAULT_FRAMES)
    bins = _int(args, "bins", spectrogram_grid.DEFAULT_BINS)
    assert frames is not None and bins is not None
    try:
        spectrogram_grid.check_grid(frames, bins)
    except ValueError as e:
        raise ApiError("BAD_REQUEST", str(e)) from None
    return frames, bins, _boolean(args, "axes")


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
            params = _spectrum().SpectrumParams(
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
        spectrogram = _choice(args, "spectrogram", ("1", "0")) == "1"
        height = _int(args, "height", 256) or 0
        width = _int(args, "width", None)
        frames, bins, axes = spectrogram_query(args)
        track, path, info = await self.resolve(request, raw_path)
        options = SpectrumOptions(fmt, params, start, end, spectrogram, height, width, frames, bins, axes)
        return await self._library.spectrum(track, path, info, options)

    async def artwork(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/artwork/{path}``: the embedded picture, else ``cover.*``/``folder.*`` beside it."""
        track, _path, info = await self.resolve(request, raw_path)
        return await self._library.artwork(track, info)

    def represent(self, request: Any, rep: Representation) -> bytes:
        """Send *rep* with its validator, private caching (clamped for signed URLs) and 304 on a match."""
        max_age = MEDIA_MAX_AGE_S
        if getattr(request, "signed_expires", None) is not None:
            max_age = min(max_age, max_age_for(request.signed_expires, self._clock.seconds()))
        mark_media(request)
        return validated(request, rep, b"private, max-age=%d" % max_age)

    async def tracks_answer(self, request: Any) -> bytes:
        """``GET /api/v1/tracks`` with a validator: the catalog's generation and the query.

        A client whose ``If-None-Match`` holds it gets 304 before the
        catalog is searched at all.
        """
        self._library.require_catalog()
        etag = listing_etag(self._library.catalog_generation(), request.uri.partition(b"?")[2])
        if not_modified(request, etag):
            return answer_304(request, etag, b"private, no-cache", JSON_TYPE)
        document = await self.tracks(request)
        return validated(request, Representation(json_bytes(document), JSON_TYPE, etag), b"private, no-cache")

    async def track_answer(self, request: Any, raw_path: bytes) -> bytes:
        """``GET /api/v1/tracks/{path}`` with a validator made from the metadata itself."""
        body = json_bytes(await self.track(request, raw_path))
        rep = Representation(body, JSON_TYPE, body_etag(body))
        return validated(request, rep, b"private, no-cache")


def json_bytes(document: object) -> bytes:
    """*document* as the API's compact UTF-8 JSON."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def body_etag(body: bytes) -> str:
    """A strong entity-tag made from the bytes of a body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def listing_etag(generation: str, query: bytes) -> str:
    """The entity-tag of a track listing: the catalog's generation, the query and the layout version."""
    digest = hashlib.sha256(b"%d\0%s\0%s" % (LISTING_VERSION, generation.encode("ascii"), query))
    return '"' + digest.hexdigest()[:32] + '"'


def not_modified(request: Any, etag: str) -> bool:
    """Whether *request*'s ``If-None-Match`` holds *etag* (either representation's form of it)."""
    header = identity_if_none_match(_text_header(request, b"if-none-match"))
    outcome = evaluate_preconditions(
        request.method.decode("ascii"),
        etag,
        0,
        if_match=None,
        if_none_match=header,
        if_modified_since=None,
        if_unmodified_since=None,
    )
    return outcome is Outcome.NOT_MODIFIED


def answer_304(request: Any, etag: str, cache_control: bytes, content_type: str) -> bytes:
    """A 304 with the validator and caching of the representation of *content_type*."""
    request.setHeader(b"etag", etag.encode("ascii"))
    request.setHeader(b"cache-control", cache_control)
    # No Content-Type on a 304: compression reads what the body would have been here.
    request.variant_type = content_type.encode("ascii")
    request.setResponseCode(304)
    return b""


def validated(request: Any, rep: Representation, cache_control: bytes) -> bytes:
    """Send *rep* with its ETag and *cache_control*; 304 when ``If-None-Match`` holds the ETag.

    The ETag set is the identity one: compression gives the gzip
    representation its own (see :mod:`streamsrv.middleware.compression`).
    """
    if not_modified(request, rep.etag):
        return answer_304(request, rep.etag, cache_control, rep.content_type)
    request.setHeader(b"etag", rep.etag.encode("ascii"))
    request.setHeader(b"cache-control", cache_control)
    request.setHeader(b"content-type", rep.content_type.encode("ascii"))
    return rep.body

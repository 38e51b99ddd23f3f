# -*- test-case-name: tests.test_media_api -*-
"""What the media API routes answer: tracks, artwork, waveforms and spectra.

:class:`MediaLibrary` joins the catalog (which files are audio, and their
metadata), the worker pool (decoding and analysis off the reactor thread)
and the artifact cache (derived data kept on disk, keyed by file identity
and parameters).  Routes parse nothing themselves: each method takes the
request's query arguments, validates them into the contract's
``BAD_REQUEST``, and returns a :class:`Representation` (bytes, type, ETag).

Waveforms follow the issue's plan: the finest level a client asks for by
default (256 samples per pixel, 16 bits, merged or split) is computed once
per file and cached; coarser zooms that are multiples of it, and 8-bit
output, are derived from it by min/max reduction without decoding again.
Other zooms and detail windows are their own jobs, cached under their own
parameters.  Identical concurrent requests share one job (the pool
coalesces by artifact key).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from twisted.logger import Logger

from streamsrv.audio import spectrum as spectrum_mod
from streamsrv.audio import waveform as waveform_mod
from streamsrv.audio.artwork import find_artwork
from streamsrv.audio.decode import DecodeError
from streamsrv.audio.workers import PoolFull, WorkerCrashed, WorkerPool
from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.errors import ApiError
from streamsrv.streaming.tracks import resolve_media

__all__ = ["MediaLibrary", "Representation"]

log = Logger()

#: The waveform level computed once per file, from which coarser zooms derive.
BASE_SAMPLES_PER_PIXEL: Final = 256

#: Version of the cached artifacts' layout; bump to orphan old entries.
ARTIFACT_VERSION: Final = 1

JSON_TYPE: Final = "application/json; charset=utf-8"

#: Largest ``limit`` of a track listing.
MAX_PAGE: Final = 200

#: Longest ``q``, ``artist``, ``album`` or ``cursor`` accepted.
MAX_QUERY_CHARS: Final = 512


@dataclass(frozen=True)
class Representation:
    """A response body with its type and a strong validator."""

    body: bytes
    content_type: str
    etag: str


def _one(args: Mapping[bytes, list[bytes]], name: str) -> str | None:
    values = args.get(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise ApiError("BAD_REQUEST", f"{name} may be given once.")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("BAD_REQUEST", f"{name} must be UTF-8.") from None


def _int(args: Mapping[bytes, list[bytes]], name: str, default: int | None) -> int | None:
    text = _one(args, name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ApiError("BAD_REQUEST", f"{name} must be a whole number.")
    return int(text)


def _seconds(args: Mapping[bytes, list[bytes]], name: str) -> float | None:
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


def _choice(args: Mapping[bytes, list[bytes]], name: str, choices: tuple[str, ...]) -> str:
    text = _one(args, name)
    if text is None:
        return choices[0]
    if text not in choices:
        raise ApiError("BAD_REQUEST", f"{name} must be one of {', '.join(choices)}.")
    return text


def _etag(key: str) -> str:
    return f'"{key[:32]}"'


class MediaLibrary:
    """
    The media API's logic over one media root.

    :param media_root: The library root.
    :param catalog: Knows which files are audio (``is_audio``) and their
        metadata (``get``, ``search``); ``None`` serves every audio file by
        extension (tests of the derived-data routes).
    :param pool: Runs decoding and analysis.
    :param cache: Keeps derived data.
    """

    def __init__(self, media_root: Path, *, catalog: Any, pool: WorkerPool, cache: ArtifactCache) -> None:
        self._root = Path(os.path.realpath(media_root))
        self._catalog = catalog
        self._pool = pool
        self._cache = cache

    # -- resolution -------------------------------------------------------------------------

    def resolve(self, request: Any, raw_path: bytes) -> tuple[str, Path, os.stat_result]:
        """
        The track named by the still-encoded URL path after the route prefix.

        :raise ApiError: ``NOT_FOUND`` for anything that is not an audio file
            of the catalog inside the root; an unsafe path is also a security
            event.  Nothing tells why.
        """
        is_audio = self._catalog.is_audio if self._catalog is not None else None
        return resolve_media(self._root, request, raw_path, is_audio)

    async def _run(self, fn: Any, *args: Any, key: str, **kwargs: Any) -> Any:
        """Run a job in the pool; map its failures to contract errors."""
        try:
            return await self._pool.submit(_call, fn, args, kwargs, key=key)
        except PoolFull as e:
            busy = "The server is busy; try again shortly."
            raise ApiError("UNAVAILABLE", busy, {"Retry-After": str(e.retry_after_s)}) from None
        except ValueError as e:
            raise ApiError("BAD_REQUEST", str(e)) from None
        except DecodeError:
            raise ApiError("UNSUPPORTED_MEDIA", "This file cannot be decoded.") from None
        except WorkerCrashed:
            log.error("media: a worker crashed on job {key}", key=key)
            raise ApiError("INTERNAL") from None

    # -- the catalog ------------------------------------------------------------------------

    async def tracks(self, request: Any) -> dict[str, object]:
        """``GET /api/v1/tracks``: ``q``, ``artist``, ``album``, ``limit`` (1–200, default 50), ``cursor``."""
        if self._catalog is None:
            raise ApiError("NOT_CONFIGURED", "The catalog is not configured.")
        args = request.args
        limit = _int(args, "limit", MAX_PAGE // 4)
        if limit is None or not 1 <= limit <= MAX_PAGE:
            raise ApiError("BAD_REQUEST", f"limit must be within 1..{MAX_PAGE}.")
        fields = {name: _one(args, name) for name in ("q", "artist", "album", "cursor")}
        for name, value in fields.items():
            if value is not None and len(value) > MAX_QUERY_CHARS:
                raise ApiError("BAD_REQUEST", f"{name} must be at most {MAX_QUERY_CHARS} characters.")
        try:
            page = await self._catalog.search(
                q=fields["q"],
                artist=fields["artist"],
                album=fields["album"],
                limit=limit,
                cursor=fields["cursor"],
            )
        except ValueError:
            raise ApiError("BAD_REQUEST", "cursor is not one this server gave out.") from None
        document: dict[str, object] = page.to_json()
        return document

    async def track(self, request: Any, raw_path: bytes) -> dict[str, object]:
        """``GET /api/v1/tracks/{path}``: the metadata of DESIGN."""
        if self._catalog is None:
            raise ApiError("NOT_CONFIGURED", "The catalog is not configured.")
        track, _path, _info = self.resolve(request, raw_path)
        record = await self._catalog.get(track)
        if record is None:
            raise ApiError("NOT_FOUND")
        document: dict[str, object] = record.to_json()
        return document

    # -- waveforms --------------------------------------------------------------------------

    async def waveform(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/waveform/{path}`` (see DESIGN for the parameters)."""
        args = request.args
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
        track, path, info = self.resolve(request, raw_path)
        identity = FileIdentity.of(track, info)
        params = {
            "spp": spp,
            "pps": pps,
            "bits": bits,
            "split": split,
            "start": start,
            "end": end,
            "format": fmt,
        }
        etag = _etag(artifact_key(identity, "waveform-out", {**params, "v": ARTIFACT_VERSION}))

        derived = spp is None or (spp % BASE_SAMPLES_PER_PIXEL == 0)
        if pps is None and start is None and end is None and derived:
            wf = await self._base_waveform(identity, path, split)
            target = spp or BASE_SAMPLES_PER_PIXEL
            if target != wf.samples_per_pixel:
                wf = waveform_mod.rescale(wf, target)
        else:
            job: dict[str, int | float | bool | None] = {
                "samples_per_pixel": spp,
                "pixels_per_second": pps,
                "bits": 16,
                "split_channels": split,
            }
            if start is not None:
                job["start_s"] = start
            if end is not None:
                job["end_s"] = end
            key = artifact_key(identity, "waveform", {**job, "v": ARTIFACT_VERSION})
            wf = await self._cached_waveform(key, path, job)
        if bits == 8:
            wf = waveform_mod.convert_bits(wf, 8)
        if fmt == "dat":
            return Representation(waveform_mod.to_dat(wf), "application/octet-stream", etag)
        if fmt == "wavesurfer":
            duration = self._duration(track, wf)
            body = json.dumps(waveform_mod.to_wavesurfer(wf, duration), separators=(",", ":")).encode()
            return Representation(body, JSON_TYPE, etag)
        return Representation(waveform_mod.to_json_bytes(wf), JSON_TYPE, etag)

    def _duration(self, track: str, wf: waveform_mod.Waveform) -> float:
        record = self._catalog.lookup(track) if self._catalog is not None else None
        duration = getattr(record, "duration_s", None)
        return float(duration) if duration else wf.duration_s

    async def _base_waveform(self, identity: FileIdentity, path: Path, split: bool) -> waveform_mod.Waveform:
        job = {"samples_per_pixel": BASE_SAMPLES_PER_PIXEL, "bits": 16, "split_channels": split}
        key = artifact_key(identity, "waveform", {**job, "v": ARTIFACT_VERSION})
        return await self._cached_waveform(key, path, job)

    async def _cached_waveform(self, key: str, path: Path, job: dict[str, Any]) -> waveform_mod.Waveform:
        cached = self._cache.get(key, "waveform", ".dat")
        if cached is not None:
            try:
                data = await self._cache.read_bytes(cached)
                return waveform_mod.from_dat(data)
            except (OSError, ValueError):
                log.warn("media: a cached waveform could not be read; computing it again")
        wf: waveform_mod.Waveform = await self._run(
            waveform_mod.generate, str(path), key=f"waveform:{key}", **job
        )
        try:
            await self._cache.store_bytes(key, "waveform", waveform_mod.to_dat(wf), ".dat")
        except OSError as e:
            log.warn("media: the waveform could not be cached ({error})", error=e.strerror)
        return wf

    # -- spectra ----------------------------------------------------------------------------

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
        track, path, info = self.resolve(request, raw_path)
        identity = FileIdentity.of(track, info)
        spectrogram = _choice(args, "spectrogram", ("0", "1")) == "1"
        height = _int(args, "height", 256) or 0
        width = _int(args, "width", None)
        shape = {
            "fft": params.fft_size, "hop": params.hop, "window": params.window, "frames": params.max_frames,
            "start": start, "end": end, "format": fmt, "spectrogram": spectrogram, "w": width, "h": height,
            "v": ARTIFACT_VERSION,
        }  # fmt: skip
        key = artifact_key(identity, "spectrum", shape)
        etag = _etag(key)
        suffix = ".png" if fmt == "png" else ".json"
        cached = self._cache.get(key, "spectrum", suffix)
        if cached is not None:
            body = await self._cache.read_bytes(cached)
        elif fmt == "png":
            body = await self._run(
                spectrum_mod.generate_png, str(path), params, width=width, height=height,
                start_s=start, end_s=end, key=f"spectrum:{key}",
            )  # fmt: skip
        else:
            document = await self._run(
                spectrum_mod.generate_json, str(path), params, include_spectrogram=spectrogram,
                start_s=start, end_s=end, key=f"spectrum:{key}",
            )  # fmt: skip
            body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        if cached is None:
            try:
                await self._cache.store_bytes(key, "spectrum", body, suffix)
            except OSError as e:
                log.warn("media: the spectrum could not be cached ({error})", error=e.strerror)
        return Representation(body, "image/png" if fmt == "png" else JSON_TYPE, etag)

    # -- artwork ----------------------------------------------------------------------------

    async def artwork(self, request: Any, raw_path: bytes) -> Representation:
        """``GET /api/v1/artwork/{path}``: the embedded picture, else ``cover.*``/``folder.*`` beside it."""
        track, _path, info = self.resolve(request, raw_path)
        identity = FileIdentity.of(track, info)
        key = artifact_key(identity, "artwork", {"v": ARTIFACT_VERSION})
        found = await self._cache.threads.defer(find_artwork, self._root, track)
        if found is None:
            raise ApiError("NOT_FOUND", "This track has no artwork.")
        return Representation(found.data, found.mime, _etag(key))

    def artwork_etag(self, request: Any, raw_path: bytes) -> str:
        """The validator :meth:`artwork` would give, without extracting the picture."""
        track, _path, info = self.resolve(request, raw_path)
        return _etag(artifact_key(FileIdentity.of(track, info), "artwork", {"v": ARTIFACT_VERSION}))


def _call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``fn(*args, **kwargs)`` in a worker (the pool's jobs take positional arguments)."""
    return fn(*args, **kwargs)

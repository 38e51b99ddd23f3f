# -*- test-case-name: tests.test_media_api -*-
"""What the media API answers: tracks, artwork, waveforms and spectra, from plain values.

:class:`MediaLibrary` joins the catalog (which files are audio, and their
metadata), the worker pool (decoding and analysis off the reactor thread)
and the artifact cache (derived data kept on disk, keyed by file identity
and parameters).  Its methods take values (a search's fields, a resolved
track with its ``stat``, :class:`WaveformOptions`, :class:`SpectrumOptions`),
raise :class:`~streamsrv.errors.ApiError` and return data or a
:class:`Representation` (bytes, type, ETag).  It never takes a request nor
parses a query or a URL path: :mod:`streamsrv.web.media` does that.

Waveforms follow the issue's plan: the finest level a client asks for by
default (256 samples per pixel, 16 bits, merged or split) is computed once
per file and cached; coarser zooms that are multiples of it, and 8-bit
output, are derived from it by min/max reduction without decoding again.
Other zooms and detail windows are their own jobs, cached under their own
parameters.  Identical concurrent requests share one job (the pool
coalesces by artifact key).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from twisted.logger import Logger

from streamsrv.audio import spectrogram_grid
from streamsrv.audio.artwork import find_artwork
from streamsrv.audio.jobs import JOB_FAILURES, job_error
from streamsrv.audio.workers import WorkerCrashed, WorkerPool
from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.errors import ApiError

if TYPE_CHECKING:
    from streamsrv.audio import spectrum as spectrum_mod
    from streamsrv.audio import waveform as waveform_mod


def _waveform() -> Any:
    """:mod:`streamsrv.audio.waveform`, imported on first use (it brings numpy and PyAV)."""
    return importlib.import_module("streamsrv.audio.waveform")


def _spectrogram() -> Any:
    """:mod:`streamsrv.audio.spectrogram`, imported on first use (it brings numpy and PyAV)."""
    return importlib.import_module("streamsrv.audio.spectrogram")


def _spectrum() -> Any:
    """:mod:`streamsrv.audio.spectrum`, imported on first use (it brings numpy and PyAV)."""
    return importlib.import_module("streamsrv.audio.spectrum")


__all__ = ["MediaLibrary", "Representation", "SpectrumOptions", "WaveformOptions"]

log = Logger()

#: The waveform level computed once per file, from which coarser zooms derive.
BASE_SAMPLES_PER_PIXEL: Final = 256

#: Version of the cached artifacts' layout; bump to orphan old entries.
ARTIFACT_VERSION: Final = 1

JSON_TYPE: Final = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Representation:
    """A response body with its type and a strong validator."""

    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class WaveformOptions:
    """What a waveform request asks for (validated by the caller).

    :ivar samples_per_pixel: A zoom (``None``: the default, or *pixels_per_second*).
    :ivar pixels_per_second: A zoom by time instead.
    :ivar bits: 8 or 16.
    :ivar split: One series per channel instead of merged.
    :ivar start: Start of a detail window, seconds.
    :ivar end: End of a detail window, seconds.
    :ivar format: ``json``, ``dat`` or ``wavesurfer``.
    """

    samples_per_pixel: int | None = None
    pixels_per_second: int | None = None
    bits: int = 8
    split: bool = False
    start: float | None = None
    end: float | None = None
    format: str = "json"


@dataclass(frozen=True)
class SpectrumOptions:
    """What a spectrum request asks for (validated by the caller).

    :ivar format: ``json`` or ``png``.
    :ivar params: FFT size, hop, window and frame cap.
    :ivar start: Start of the window analysed, seconds.
    :ivar end: Its end (``None``: the end of the track).
    :ivar spectrogram: Include the spectrogram in JSON.
    :ivar height: PNG height.
    :ivar width: PNG width (``None``: one column per frame).
    :ivar frames: The JSON spectrogram's most columns (time).
    :ivar bins: Its rows (log frequency).
    :ivar axes: Draw time and frequency axes around the PNG.
    """

    format: str
    params: spectrum_mod.SpectrumParams
    start: float
    end: float | None
    spectrogram: bool
    height: int
    width: int | None
    frames: int = spectrogram_grid.DEFAULT_FRAMES
    bins: int = spectrogram_grid.DEFAULT_BINS
    axes: bool = False


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

    # -- what a caller needs to name a track --------------------------------------------------

    @property
    def root(self) -> Path:
        """The media root (resolved)."""
        return self._root

    @property
    def is_audio(self) -> Callable[[str], bool] | None:
        """The catalog's ``is_audio`` (``None`` without a catalog: every audio file by extension)."""
        return self._catalog.is_audio if self._catalog is not None else None

    def catalog_generation(self) -> str:
        """The catalog's :attr:`~streamsrv.audio.catalog.Catalog.generation` (the listing's validator).

        :raise ApiError: ``NOT_CONFIGURED`` when there is no catalog.
        """
        self.require_catalog()
        generation: str = self._catalog.generation
        return generation

    @property
    def index_missing(self) -> Any:
        """The catalog's ``index_missing`` (reads a track it does not know yet), or ``None``."""
        return getattr(self._catalog, "index_missing", None) if self._catalog is not None else None

    def require_catalog(self) -> None:
        """:raise ApiError: ``NOT_CONFIGURED`` when there is no catalog."""
        if self._catalog is None:
            raise ApiError("NOT_CONFIGURED", "The catalog is not configured.")

    async def _run(self, fn: Any, *args: Any, key: str, **kwargs: Any) -> Any:
        """Run a job in the pool; map its failures to contract errors."""
        try:
            return await self._pool.submit(_call, fn, args, kwargs, key=key)
        except ValueError as e:
            raise ApiError("BAD_REQUEST", str(e)) from None
        except JOB_FAILURES as e:
            if isinstance(e, WorkerCrashed):
                log.error("media: a worker crashed on job {key}", key=key)
            raise job_error(e) from None

    # -- the catalog ------------------------------------------------------------------------

    async def tracks(
        self, *, q: str | None, artist: str | None, album: str | None, limit: int, cursor: str | None
    ) -> dict[str, object]:
        """A page of the catalog: ``q`` matches title, artist and album; ``cursor`` continues a listing."""
        self.require_catalog()
        try:
            page = await self._catalog.search(q=q, artist=artist, album=album, limit=limit, cursor=cursor)
        except ValueError:
            raise ApiError("BAD_REQUEST", "cursor is not one this server gave out.") from None
        document: dict[str, object] = page.to_json()
        return document

    async def track(self, track: str) -> dict[str, object]:
        """The metadata of DESIGN of *track* (a resolved track path)."""
        self.require_catalog()
        record = await self._catalog.get(track)
        if record is None:
            raise ApiError("NOT_FOUND")
        document: dict[str, object] = record.to_json()
        return document

    # -- waveforms --------------------------------------------------------------------------

    async def waveform(
        self, track: str, path: Path, info: os.stat_result, options: WaveformOptions
    ) -> Representation:
        """The peaks of *track* (the file *path*, its ``stat`` *info*) as *options* ask (see DESIGN)."""
        spp, pps, bits = options.samples_per_pixel, options.pixels_per_second, options.bits
        split, start, end, fmt = options.split, options.start, options.end, options.format
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
                wf = _waveform().rescale(wf, target)
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
            wf = _waveform().convert_bits(wf, 8)
        if fmt == "dat":
            return Representation(_waveform().to_dat(wf), "application/octet-stream", etag)
        if fmt == "wavesurfer":
            duration = self._duration(track, wf)
            body = json.dumps(_waveform().to_wavesurfer(wf, duration), separators=(",", ":")).encode()
            return Representation(body, JSON_TYPE, etag)
        return Representation(_waveform().to_json_bytes(wf), JSON_TYPE, etag)

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
                return _waveform().from_dat(data)
            except (OSError, ValueError):
                log.warn("media: a cached waveform could not be read; computing it again")
        wf: waveform_mod.Waveform = await self._run(
            _waveform().generate, str(path), key=f"waveform:{key}", **job
        )
        try:
            await self._cache.store_bytes(key, "waveform", _waveform().to_dat(wf), ".dat")
        except OSError as e:
            log.warn("media: the waveform could not be cached ({error})", error=e.strerror)
        return wf

    # -- spectra ----------------------------------------------------------------------------

    async def spectrum(
        self, track: str, path: Path, info: os.stat_result, options: SpectrumOptions
    ) -> Representation:
        """JSON summary (and spectrogram) or a PNG spectrogram of *track* as *options* ask."""
        fmt, params, start, end = options.format, options.params, options.start, options.end
        identity = FileIdentity.of(track, info)
        spectrogram, height, width = options.spectrogram, options.height, options.width
        shape = {
            "fft": params.fft_size, "hop": params.hop, "window": params.window, "frames": params.max_frames,
            "start": start, "end": end, "format": fmt, "spectrogram": spectrogram, "w": width, "h": height,
            "grid": [options.frames, options.bins], "axes": options.axes, "layout": 2, "v": ARTIFACT_VERSION,
        }  # fmt: skip
        key = artifact_key(identity, "spectrum", shape)
        etag = _etag(key)
        suffix = ".png" if fmt == "png" else ".json"
        cached = self._cache.get(key, "spectrum", suffix)
        if cached is not None:
            body = await self._cache.read_bytes(cached)
        elif fmt == "png":
            body = await self._run(
                _spectrogram().generate_png, str(path), params, width=width, height=height,
                axes=options.axes, start_s=start, end_s=end, key=f"spectrum:{key}",
            )  # fmt: skip
        else:
            document = await self._run(
                _spectrogram().generate_json, str(path), params, include_spectrogram=spectrogram,
                frames=options.frames, bins=options.bins, start_s=start, end_s=end, key=f"spectrum:{key}",
            )  # fmt: skip
            body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        if cached is None:
            try:
                await self._cache.store_bytes(key, "spectrum", body, suffix)
            except OSError as e:
                log.warn("media: the spectrum could not be cached ({error})", error=e.strerror)
        return Representation(body, "image/png" if fmt == "png" else JSON_TYPE, etag)

    # -- artwork ----------------------------------------------------------------------------

    async def artwork(self, track: str, info: os.stat_result) -> Representation:
        """The picture embedded in *track*, else ``cover.*``/``folder.*`` beside it."""
        identity = FileIdentity.of(track, info)
        key = artifact_key(identity, "artwork", {"v": ARTIFACT_VERSION})
        found = await self._cache.threads.defer(find_artwork, self._root, track)
        if found is None:
            raise ApiError("NOT_FOUND", "This track has no artwork.")
        return Representation(found.data, found.mime, _etag(key))

    def artwork_etag(self, track: str, info: os.stat_result) -> str:
        """The validator :meth:`artwork` would give, without extracting the picture."""
        return _etag(artifact_key(FileIdentity.of(track, info), "artwork", {"v": ARTIFACT_VERSION}))


def _call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``fn(*args, **kwargs)`` in a worker (the pool's jobs take positional arguments)."""
    return fn(*args, **kwargs)

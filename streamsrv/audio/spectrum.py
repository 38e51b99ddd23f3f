# -*- test-case-name: tests.test_spectrum -*-
"""Spectral analysis of a track: average spectrum, spectrogram, band energies, centroid, roll-off.

:func:`analyse` mixes decoded audio to mono and runs a short-time Fourier
transform (``fft_size`` samples per frame, ``hop`` apart, a Hann, Hamming or
Blackman window), streaming: it holds one frame's worth of samples and a
spectrogram of at most ``max_frames`` columns, whatever the track's length.
When a track has more frames than that, adjacent frames are averaged (in
power) into columns of 2, 4, 8... frames, so the spectrogram keeps between
half of and all of ``max_frames`` columns.

Levels are in dBFS: the window's coherent gain is divided out, so a sine of
amplitude 1 (full scale) reads 0 dB at its bin, and band energies are
divided by the window's equivalent noise bandwidth, so the same sine inside a
band gives the band 0 dB too.  Silence reads :data:`FLOOR_DB`.  The
spectral centroid and the roll-off weigh bins by power, not magnitude: with
magnitude weights the far side lobes of a Hamming window (which fall off
slowly) drag a pure tone's centroid hundreds of hertz off its frequency.

:func:`to_json` gives a JSON-friendly summary (bins averaged down to at most
``max_bins``, numbers rounded) and :func:`to_png` draws the spectrogram: time
left to right, frequency on a **logarithmic** axis from 20 Hz (or the first
bin above DC) at the bottom to the Nyquist frequency at the top, because
musical content is spread evenly in octaves, not in hertz; levels from
``floor_db`` to 0 dBFS through an inferno-like colour map.
:func:`generate` is the worker-pool job.

Everything here is a pure function of its arguments except :func:`generate`
(reads one audio file); nothing logs, and the CPU-heavy functions must run in
the worker pool, never on the reactor thread.  Parameters that would make the
work or the memory unbounded are refused with :class:`ValueError` when a
:class:`SpectrumParams` is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamsrv.audio.decode import iter_decode, probe_stream
from streamsrv.audio.png import encode_rgb

__all__ = [
    "DEFAULT_BANDS",
    "FLOOR_DB",
    "WINDOWS",
    "BandEnergy",
    "Spectrum",
    "SpectrumParams",
    "analyse",
    "generate",
    "generate_json",
    "generate_png",
    "to_json",
    "to_png",
]

#: The standard bands, named in :data:`BAND_NAMES`.
DEFAULT_BANDS: Final[tuple[tuple[float, float], ...]] = (
    (20.0, 60.0),
    (60.0, 250.0),
    (250.0, 500.0),
    (500.0, 2000.0),
    (2000.0, 4000.0),
    (4000.0, 6000.0),
    (6000.0, 20000.0),
)

#: Names of the standard bands; any other band is named by its edges.
BAND_NAMES: Final[Mapping[tuple[float, float], str]] = MappingProxyType(
    dict(
        zip(
            DEFAULT_BANDS,
            ("sub-bass", "bass", "low-mid", "mid", "high-mid", "presence", "brilliance"),
            strict=True,
        )
    )
)

#: The windows :class:`SpectrumParams` accepts.
WINDOWS: Final = ("hann", "hamming", "blackman")

#: The level of silence (and of a band with no bins below Nyquist), in dB.
FLOOR_DB: Final = -200.0
_FLOOR_POWER: Final = 10.0 ** (FLOOR_DB / 10.0)

#: Bounds of the parameters.
MIN_FFT_SIZE: Final = 256
MAX_FFT_SIZE: Final = 65536
#: The hop may be as small as ``fft_size // MAX_OVERLAP_FACTOR``: FFT work is
#: then at most that many times the number of samples.
MAX_OVERLAP_FACTOR: Final = 16
MAX_FRAMES_LIMIT: Final = 10000
MAX_BANDS: Final = 32
MAX_BAND_HZ: Final = 1_000_000.0
#: The most spectrogram cells (columns x bins) kept: 64 MiB of float32.
#: Beyond it the column count is lowered (``fft_size`` 65536: 512 columns).
MAX_SPECTROGRAM_CELLS: Final = 2**24
#: Bounds of :func:`to_json`'s ``max_bins`` and :func:`to_png`'s image.
MAX_JSON_BINS: Final = 8192
MAX_PNG_WIDTH: Final = 8192
MIN_PNG_HEIGHT: Final = 8
MAX_PNG_HEIGHT: Final = 4096

#: Fraction of energy below the roll-off frequency.
ROLLOFF_FRACTION: Final = 0.85
#: The lowest frequency of the PNG's logarithmic axis.
PNG_LOW_HZ: Final = 20.0
#: A frame whose power sums to less than this (-180 dBFS) is silent: no centroid.
_SILENT_POWER: Final = 1e-18
#: Frames transformed at once (bounds the temporary arrays to a few MiB).
_FRAMES_PER_BATCH: Final = 256
#: Decimal places in JSON: frequencies and levels, and the scalar results.
_JSON_DECIMALS: Final = 1
_JSON_SCALAR_DECIMALS: Final = 2

#: An inferno-like colour map (after matplotlib's "inferno", Smith and van
#: der Walt, CC0): 17 anchors from black through purple and orange to pale
#: yellow, interpolated to 256 entries in :data:`_COLOURS`.
_COLOUR_ANCHORS: Final = (
    (0, 0, 4),
    (10, 7, 34),
    (32, 12, 74),
    (57, 9, 98),
    (81, 14, 108),
    (106, 23, 110),
    (130, 31, 108),
    (155, 41, 100),
    (180, 54, 84),
    (203, 71, 64),
    (223, 91, 44),
    (239, 116, 25),
    (249, 142, 9),
    (252, 170, 15),
    (249, 201, 50),
    (242, 231, 97),
    (252, 255, 164),
)


def _colour_table() -> npt.NDArray[np.uint8]:
    """The 256-entry RGB table interpolated from :data:`_COLOUR_ANCHORS`."""
    anchors = np.asarray(_COLOUR_ANCHORS, dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(t, at, anchors[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


_COLOURS: Final = _colour_table()


@dataclass(frozen=True)
class SpectrumParams:
    """How to analyse.

    :param fft_size: samples per frame, a power of two within 256..65536.
    :param hop: samples between frame starts, within
        ``fft_size // 16``..``fft_size``.
    :param window: ``"hann"``, ``"hamming"`` or ``"blackman"``.
    :param max_frames: the most spectrogram columns, 1..10000 (further
        lowered so that columns x bins stays within
        :data:`MAX_SPECTROGRAM_CELLS`).
    :param bands: ``(low_hz, high_hz)`` pairs, 1 to 32 of them, each
        ``0 <= low < high <= 1 MHz``; a bin counts in a band when
        ``low <= f < high``.
    :raises ValueError: for any parameter out of bounds.
    """

    fft_size: int = 4096
    hop: int = 1024
    window: str = "hann"
    max_frames: int = 2000
    bands: tuple[tuple[float, float], ...] = field(default=DEFAULT_BANDS)

    def __post_init__(self) -> None:
        fft_size = self.fft_size
        if (
            isinstance(fft_size, bool)
            or not isinstance(fft_size, int)
            or not MIN_FFT_SIZE <= fft_size <= MAX_FFT_SIZE
            or fft_size & (fft_size - 1)
        ):
            raise ValueError(f"fft_size must be a power of two within {MIN_FFT_SIZE}..{MAX_FFT_SIZE}")
        min_hop = fft_size // MAX_OVERLAP_FACTOR
        if isinstance(self.hop, bool) or not isinstance(self.hop, int) or not min_hop <= self.hop <= fft_size:
            raise ValueError(f"hop must be within {min_hop}..{fft_size} for fft_size {fft_size}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
        if (
            isinstance(self.max_frames, bool)
            or not isinstance(self.max_frames, int)
            or not 1 <= self.max_frames <= MAX_FRAMES_LIMIT
        ):
            raise ValueError(f"max_frames must be within 1..{MAX_FRAMES_LIMIT}")
        bands = tuple(tuple(band) for band in self.bands)
        if not 1 <= len(bands) <= MAX_BANDS:
            raise ValueError(f"give 1 to {MAX_BANDS} bands")
        for band in bands:
            if len(band) != 2:
                raise ValueError("each band must be a (low_hz, high_hz) pair")
            low, high = float(band[0]), float(band[1])
            if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high <= MAX_BAND_HZ):
                raise ValueError(f"band {band!r} must have 0 <= low < high <= {MAX_BAND_HZ:g}")
        object.__setattr__(self, "bands", tuple((float(low), float(high)) for low, high in bands))

    @property
    def bins(self) -> int:
        """Frequency bins per frame: ``fft_size // 2 + 1``."""
        return self.fft_size // 2 + 1

    @property
    def max_columns(self) -> int:
        """The spectrogram's column cap: ``max_frames``, lowered to fit the cell budget."""
        return max(1, min(self.max_frames, MAX_SPECTROGRAM_CELLS // self.bins))


@dataclass(frozen=True)
class BandEnergy:
    """The energy of one frequency band, averaged over the track.

    :param name: ``"bass"`` and so on for :data:`DEFAULT_BANDS`, else
        ``"<low>-<high> Hz"``.
    :param low_hz: lower edge (included).
    :param high_hz: upper edge (excluded).
    :param db: energy in dB relative to a full-scale sine;
        :data:`FLOOR_DB` for silence or a band above the Nyquist frequency.
    """

    name: str
    low_hz: float
    high_hz: float
    db: float


@dataclass(frozen=True, eq=False)
class Spectrum:
    """The result of :func:`analyse`.

    :param sample_rate: of the analysed audio.
    :param fft_size: samples per frame.
    :param hop: samples between frames.
    :param window: the window's name.
    :param frames: STFT frames analysed.
    :param duration_s: seconds of audio analysed.
    :param frequencies: ``(bins,)`` centre frequency of each bin, Hz.
    :param average_db: ``(bins,)`` float32, mean power over frames, dBFS.
    :param spectrogram_db: ``(columns, bins)`` float32, dBFS, columns in time
        order, at most the parameters' ``max_columns``.
    :param frames_per_column: STFT frames averaged into each column (the
        last column may hold fewer).
    :param bands: energy of each band of the parameters, in their order.
    :param centroid_hz: mean spectral centroid (power-weighted mean
        frequency) of the non-silent frames (0 when all are silent).
    :param centroid_per_column_hz: ``(columns,)`` float32, mean centroid of the
        frames of each spectrogram column (0 for silent columns).
    :param rolloff_hz: the frequency below which 85 % of the energy lies.
    :param peak_hz: frequency of the strongest bin above DC, refined by
        parabolic interpolation.
    :param peak_db: its interpolated level, dBFS.
    """

    sample_rate: int
    fft_size: int
    hop: int
    window: str
    frames: int
    duration_s: float
    frequencies: npt.NDArray[np.float64]
    average_db: npt.NDArray[np.float32]
    spectrogram_db: npt.NDArray[np.float32]
    frames_per_column: int
    bands: tuple[BandEnergy, ...]
    centroid_hz: float
    centroid_per_column_hz: npt.NDArray[np.float32]
    rolloff_hz: float
    peak_hz: float
    peak_db: float

    @property
    def seconds_per_column(self) -> float:
        """Time step between spectrogram columns."""
        return self.frames_per_column * self.hop / self.sample_rate


def _window(name: str, size: int) -> npt.NDArray[np.float32]:
    """A periodic (DFT-even) window of ``size`` samples, as used for spectral analysis."""
    phase = 2.0 * np.pi * np.arange(size, dtype=np.float64) / size
    if name == "hann":
        values = 0.5 - 0.5 * np.cos(phase)
    elif name == "hamming":
        values = 0.54 - 0.46 * np.cos(phase)
    else:
        values = 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2.0 * phase)
    return values.astype(np.float32)


def _band_name(band: tuple[float, float]) -> str:
    """The name of a band: its standard name, else its edges."""
    return BAND_NAMES.get(band, f"{band[0]:g}-{band[1]:g} Hz")


def _to_db(power: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Power (amplitude squared, full scale 1) to dB, floored at :data:`FLOOR_DB`."""
    return (10.0 * np.log10(np.maximum(power, _FLOOR_POWER))).astype(np.float32)


def _from_db(db: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """dB back to power."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0)


class _Columns:
    """Spectrogram columns of a growing number of frames each, within a fixed cap.

    Frames are summed into columns of ``group`` frames; when the cap is
    reached, adjacent columns are summed in pairs and ``group`` doubles.
    Sums (not means) are kept, with frame counts, so that the partial last
    column and final merges weigh frames equally.
    """

    def __init__(self, cap: int, bins: int) -> None:
        self.limit = cap
        self._cap = max(2, cap - cap % 2)  # even, so pairs merge cleanly
        self.group = 1
        self._power = np.zeros((self._cap, bins), dtype=np.float32)
        self._count = np.zeros(self._cap, dtype=np.int64)
        self._centroid = np.zeros(self._cap, dtype=np.float64)
        self._voiced = np.zeros(self._cap, dtype=np.int64)
        self._used = 0
        self._open_power = np.zeros(bins, dtype=np.float64)
        self._open = [0, 0.0, 0]  # frames, centroid sum, voiced frames

    def add(
        self, power: npt.NDArray[np.float32], centroid: npt.NDArray[np.float64], voiced: npt.NDArray[np.bool_]
    ) -> None:
        """Take ``(k, bins)`` frame powers with their centroids and voiced flags."""
        k = power.shape[0]
        i = 0
        while i < k:
            if self._open[0] or k - i < self.group:
                take = min(self.group - int(self._open[0]), k - i)
                self._open_power += power[i : i + take].sum(axis=0, dtype=np.float64)
                self._open[0] += take
                self._open[1] += float(centroid[i : i + take][voiced[i : i + take]].sum())
                self._open[2] += int(voiced[i : i + take].sum())
                i += take
                if self._open[0] == self.group:
                    self._close_open()
                continue
            if self._used == self._cap:
                self._merge()
                continue
            whole = min((k - i) // self.group, self._cap - self._used)
            end = i + whole * self.group
            rows = slice(self._used, self._used + whole)
            self._power[rows] = power[i:end].reshape(whole, self.group, -1).sum(axis=1)
            self._count[rows] = self.group
            weights = np.where(voiced[i:end], centroid[i:end], 0.0)
            self._centroid[rows] = weights.reshape(whole, self.group).sum(axis=1)
            self._voiced[rows] = voiced[i:end].reshape(whole, self.group).sum(axis=1)
            self._used += whole
            i = end

    def _close_open(self) -> None:
        """Store the open column, now complete; when full, merge pairs first.

        After a merge the open column holds half of the doubled group and
        stays open, so that every stored column holds ``group`` frames.
        """
        if self._used == self._cap:
            self._merge()
            return
        row = self._used
        self._power[row] = self._open_power
        self._count[row], self._centroid[row], self._voiced[row] = self._open
        self._used += 1
        self._open_power[:] = 0.0
        self._open = [0, 0.0, 0]

    def _merge(self) -> None:
        """Sum adjacent columns in pairs; columns now hold twice the frames."""
        half = self._used // 2
        for array in (self._power, self._count, self._centroid, self._voiced):
            array[:half] = array[0 : 2 * half : 2] + array[1 : 2 * half : 2]
            array[half:] = 0
        self._used = half
        self.group *= 2

    def finish(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32], int]:
        """Mean power per column, mean centroid per column, and frames per column."""
        power = self._power[: self._used].astype(np.float64)
        count = self._count[: self._used]
        centroid = self._centroid[: self._used]
        voiced = self._voiced[: self._used]
        if self._open[0]:
            power = np.vstack((power, self._open_power[np.newaxis]))
            count = np.append(count, self._open[0])
            centroid = np.append(centroid, self._open[1])
            voiced = np.append(voiced, self._open[2])
        group = self.group
        while len(count) > self.limit:
            pairs = len(count) // 2
            odd = len(count) % 2

            def fold(a: npt.NDArray[Any], pairs: int = pairs, odd: int = odd) -> npt.NDArray[Any]:
                merged = a[0 : 2 * pairs : 2] + a[1 : 2 * pairs : 2]
                return np.concatenate((merged, a[2 * pairs :])) if odd else merged

            power, count, centroid, voiced = fold(power), fold(count), fold(centroid), fold(voiced)
            group *= 2
        means = power / np.maximum(count, 1)[:, np.newaxis]
        centroids = np.where(voiced > 0, centroid / np.maximum(voiced, 1), 0.0).astype(np.float32)
        return means, centroids, group


class _Analyser:
    """Streaming STFT with running totals; see :func:`analyse`."""

    def __init__(self, sample_rate: int, params: SpectrumParams) -> None:
        self._rate = sample_rate
        self._params = params
        size = params.fft_size
        self._window = _window(params.window, size)
        gain = float(self._window.sum(dtype=np.float64))
        # Amplitude-squared scale per bin: (2 / sum(w))^2, but 1 / sum(w)^2 at
        # DC and Nyquist, which have no mirror image.
        scale = np.full(params.bins, (2.0 / gain) ** 2, dtype=np.float32)
        scale[0] = scale[-1] = (1.0 / gain) ** 2
        self._scale = scale
        self.enbw_bins = size * float(np.square(self._window, dtype=np.float64).sum()) / gain**2
        self.frequencies = np.arange(params.bins, dtype=np.float64) * sample_rate / size
        self._freq32 = self.frequencies.astype(np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples = 0
        self.frames = 0
        self.total_power = np.zeros(params.bins, dtype=np.float64)
        self.centroid_sum = 0.0
        self.voiced_frames = 0
        self.columns = _Columns(params.max_columns, params.bins)

    def add(self, mono: npt.NDArray[np.float32]) -> None:
        """Take mono samples; transform every frame that is now complete."""
        self.samples += mono.shape[0]
        size, hop = self._params.fft_size, self._params.hop
        buffer = np.concatenate((self._pending, mono)) if self._pending.size else mono
        if buffer.shape[0] < size:
            self._pending = buffer.copy()
            return
        count = (buffer.shape[0] - size) // hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(buffer, size)[::hop][:count]
        for start in range(0, count, _FRAMES_PER_BATCH):
            self._transform(frames[start : start + _FRAMES_PER_BATCH])
        self._pending = buffer[count * hop :].copy()

    def finish(self) -> None:
        """Analyse a track shorter than one frame as one zero-padded frame."""
        if self.frames == 0 and self._pending.size:
            padded = np.zeros((1, self._params.fft_size), dtype=np.float32)
            padded[0, : self._pending.size] = self._pending
            self._transform(padded)
        self._pending = np.zeros(0, dtype=np.float32)

    def _transform(self, frames: npt.NDArray[np.float32]) -> None:
        """Window, FFT and accumulate ``(k, fft_size)`` frames."""
        spectra = np.fft.rfft(frames * self._window, axis=1)
        power = (np.square(spectra.real) + np.square(spectra.imag)) * self._scale
        power = power.astype(np.float32, copy=False)
        weight = power.sum(axis=1, dtype=np.float64)
        voiced = weight > _SILENT_POWER
        centroid = (power @ self._freq32).astype(np.float64) / np.where(voiced, weight, 1.0)
        self.frames += frames.shape[0]
        self.total_power += power.sum(axis=0, dtype=np.float64)
        self.centroid_sum += float(centroid[voiced].sum())
        self.voiced_frames += int(voiced.sum())
        self.columns.add(power, centroid, voiced)


def _peak(average_power: npt.NDArray[np.float64], bin_hz: float) -> tuple[float, float]:
    """The strongest bin above DC, refined by a parabola through it and its neighbours in dB.

    :returns: ``(frequency_hz, level_db)``.
    """
    if average_power.shape[0] < 2 or not np.any(average_power[1:] > _FLOOR_POWER):
        return 0.0, FLOOR_DB
    k = int(np.argmax(average_power[1:])) + 1
    level = float(_to_db(average_power[k : k + 1])[0])
    if k + 1 >= average_power.shape[0]:
        return k * bin_hz, level
    a, b, c = (float(v) for v in _to_db(average_power[k - 1 : k + 2]).astype(np.float64))
    curvature = a - 2.0 * b + c
    if curvature >= 0.0:
        return k * bin_hz, level
    offset = 0.5 * (a - c) / curvature
    return (k + offset) * bin_hz, b - 0.25 * (a - c) * offset


def _rolloff(average_power: npt.NDArray[np.float64], frequencies: npt.NDArray[np.float64]) -> float:
    """The lowest bin frequency below and at which :data:`ROLLOFF_FRACTION` of the energy lies."""
    cumulative = np.cumsum(average_power)
    total = float(cumulative[-1]) if cumulative.size else 0.0
    if total <= 0.0:
        return 0.0
    index = int(np.searchsorted(cumulative, ROLLOFF_FRACTION * total, side="left"))
    return float(frequencies[min(index, frequencies.shape[0] - 1)])


def _mono(block: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """A ``(channels, frames)`` block mixed down to mono by averaging."""
    if block.ndim != 2 or block.shape[0] < 1:
        raise ValueError(f"blocks must be (channels, frames), got shape {block.shape}")
    if not np.issubdtype(block.dtype, np.floating):
        raise ValueError(f"blocks must hold float samples, got {block.dtype}")
    if block.shape[0] == 1:
        return np.asarray(block[0], dtype=np.float32)
    return block.mean(axis=0, dtype=np.float32)


def analyse(blocks: Iterable[npt.NDArray[np.floating]], sample_rate: int, params: SpectrumParams) -> Spectrum:
    """Analyse decoded audio.

    Frames start every ``hop`` samples from the first and only whole frames
    are analysed (the tail after the last one is not), except that audio
    shorter than one frame is analysed as one zero-padded frame.

    :param blocks: ``(channels, frames)`` float samples in [-1, 1], in
        order, of any sizes; channels are averaged to mono.
    :param sample_rate: their sample rate.
    :param params: the analysis parameters.
    :returns: the spectrum; no audio at all gives zero frames, every level at
        :data:`FLOOR_DB` and an empty spectrogram.
    :raises ValueError: for a sample rate below 1 or blocks that are not
        ``(channels, frames)`` floats.
    """
    if sample_rate < 1:
        raise ValueError("sample_rate must be at least 1")
    analyser = _Analyser(int(sample_rate), params)
    for block in blocks:
        analyser.add(_mono(block))
    analyser.finish()
    frequencies = analyser.frequencies
    average = analyser.total_power / max(analyser.frames, 1)
    columns, centroids, group = analyser.columns.finish()
    bands = []
    for band in params.bands:
        inside = (frequencies >= band[0]) & (frequencies < band[1])
        energy = float(average[inside].sum()) / analyser.enbw_bins
        bands.append(BandEnergy(_band_name(band), band[0], band[1], float(_to_db(np.array([energy]))[0])))
    peak_hz, peak_db = _peak(average, sample_rate / params.fft_size)
    return Spectrum(
        sample_rate=int(sample_rate),
        fft_size=params.fft_size,
        hop=params.hop,
        window=params.window,
        frames=analyser.frames,
        duration_s=analyser.samples / sample_rate,
        frequencies=frequencies,
        average_db=_to_db(average),
        spectrogram_db=_to_db(columns).reshape(-1, params.bins),
        frames_per_column=group,
        bands=tuple(bands),
        centroid_hz=analyser.centroid_sum / analyser.voiced_frames if analyser.voiced_frames else 0.0,
        centroid_per_column_hz=centroids,
        rolloff_hz=_rolloff(average, frequencies),
        peak_hz=float(peak_hz),
        peak_db=float(peak_db),
    )


def _bin_groups(bins: int, max_bins: int) -> npt.NDArray[np.intp]:
    """Start indices of groups of adjacent bins, at most ``max_bins`` groups of equal size."""
    size = -(-bins // max_bins)
    return np.arange(0, bins, size)


def _round(values: npt.NDArray[np.floating], decimals: int) -> list[Any]:
    """Values rounded for JSON, as plain Python numbers."""
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def to_json(spectrum: Spectrum, *, include_spectrogram: bool, max_bins: int = 512) -> dict[str, Any]:
    """A JSON-friendly summary of a spectrum.

    Bins are averaged (in power) in groups of equal size so that at most
    ``max_bins`` remain; each group's frequency is the mean of its bins'.
    Frequencies and levels are rounded to 0.1, the scalar results to 0.01.

    :param spectrum: the spectrum.
    :param include_spectrogram: add ``"spectrogram"``: ``{"seconds_per_column",
        "frames_per_column", "columns", "centroid_hz": [per column],
        "db": [[per bin] per column]}``.
    :param max_bins: the most frequency points, 1..8192.
    :returns: ``{"sample_rate", "fft_size", "hop", "window", "duration",
        "frames", "peak_hz", "peak_db", "centroid_hz", "rolloff_hz", "bands":
        [{"name", "low_hz", "high_hz", "db"}], "frequencies", "average_db"}``.
    :raises ValueError: for ``max_bins`` out of bounds.
    """
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or not 1 <= max_bins <= MAX_JSON_BINS:
        raise ValueError(f"max_bins must be within 1..{MAX_JSON_BINS}")
    starts = _bin_groups(spectrum.frequencies.shape[0], max_bins)
    sizes = np.diff(np.append(starts, spectrum.frequencies.shape[0]))
    frequencies = np.add.reduceat(spectrum.frequencies, starts) / sizes
    average = _to_db(np.add.reduceat(_from_db(spectrum.average_db), starts) / sizes)
    scalars = _JSON_SCALAR_DECIMALS
    result: dict[str, Any] = {
        "sample_rate": spectrum.sample_rate,
        "fft_size": spectrum.fft_size,
        "hop": spectrum.hop,
        "window": spectrum.window,
        "duration": round(spectrum.duration_s, 3),
        "frames": spectrum.frames,
        "peak_hz": round(spectrum.peak_hz, scalars),
        "peak_db": round(spectrum.peak_db, scalars),
        "centroid_hz": round(spectrum.centroid_hz, scalars),
        "rolloff_hz": round(spectrum.rolloff_hz, scalars),
        "bands": [
            {"name": b.name, "low_hz": b.low_hz, "high_hz": b.high_hz, "db": round(b.db, scalars)}
            for b in spectrum.bands
        ],
        "frequencies": _round(frequencies, _JSON_DECIMALS),
        "average_db": _round(average, _JSON_DECIMALS),
    }
    if include_spectrogram:
        grid = spectrum.spectrogram_db
        if grid.shape[0]:
            grid = _to_db(np.add.reduceat(_from_db(grid), starts, axis=1) / sizes)
        else:
            grid = np.zeros((0, starts.shape[0]), dtype=np.float32)
        result["spectrogram"] = {
            "seconds_per_column": round(spectrum.seconds_per_column, 6),
            "frames_per_column": spectrum.frames_per_column,
            "columns": int(grid.shape[0]),
            "centroid_hz": _round(spectrum.centroid_per_column_hz, _JSON_DECIMALS),
            "db": _round(grid, _JSON_DECIMALS),
        }
    return result


def _resample_columns(power: npt.NDArray[np.float64], width: int) -> npt.NDArray[np.float64]:
    """``(columns, bins)`` power to ``width`` columns: averaged when fewer, repeated when more."""
    columns = power.shape[0]
    if width == columns:
        return power
    starts = (np.arange(width, dtype=np.int64) * columns) // width
    if width <= columns:
        sizes = np.diff(np.append(starts, columns))
        return np.add.reduceat(power, starts, axis=0) / sizes[:, np.newaxis]
    return power[starts]


def _log_rows(
    power: npt.NDArray[np.float64], frequencies: npt.NDArray[np.float64], height: int
) -> npt.NDArray[np.float64]:
    """``(width, bins)`` power to ``(width, height)`` rows on a log-frequency axis, row 0 lowest.

    A row covering whole bins takes their mean power; a row narrower than a
    bin (low frequencies) interpolates between the two nearest bins.
    """
    bins = frequencies.shape[0]
    bin_hz = frequencies[1] - frequencies[0]
    nyquist = frequencies[-1]
    low = min(max(PNG_LOW_HZ, bin_hz), nyquist / 2.0)
    ratio = nyquist / low
    steps = max(height - 1, 1)
    centres = low * ratio ** (np.arange(height) / steps)
    edges = low * ratio ** ((np.arange(height + 1) - 0.5) / steps)
    lower = np.clip(np.ceil(edges[:-1] / bin_hz).astype(np.int64), 0, bins)
    upper = np.clip(np.ceil(edges[1:] / bin_hz).astype(np.int64), 0, bins)
    prefix = np.concatenate((np.zeros((power.shape[0], 1)), np.cumsum(power, axis=1)), axis=1)
    counts = upper - lower
    means = (prefix[:, upper] - prefix[:, lower]) / np.maximum(counts, 1)
    position = np.clip(centres / bin_hz, 0, bins - 1)
    below = np.minimum(np.floor(position).astype(np.int64), bins - 2)
    fraction = position - below
    interpolated = power[:, below] * (1.0 - fraction) + power[:, below + 1] * fraction
    return np.where(counts > 0, means, interpolated)


def _check_png_arguments(width: int | None, height: int, floor_db: float) -> None:
    """Refuse image sizes or floors out of bounds with :class:`ValueError`."""
    if width is not None and (
        isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_PNG_WIDTH
    ):
        raise ValueError(f"width must be within 1..{MAX_PNG_WIDTH}")
    if (
        isinstance(height, bool)
        or not isinstance(height, int)
        or not MIN_PNG_HEIGHT <= height <= MAX_PNG_HEIGHT
    ):
        raise ValueError(f"height must be within {MIN_PNG_HEIGHT}..{MAX_PNG_HEIGHT}")
    if not (math.isfinite(floor_db) and FLOOR_DB <= floor_db <= -10.0):
        raise ValueError(f"floor_db must be within {FLOOR_DB:g}..-10")


def to_png(
    spectrum: Spectrum, *, width: int | None = None, height: int = 256, floor_db: float = -100.0
) -> bytes:
    """The spectrogram as a PNG image.

    Time runs left to right, frequency bottom to top on a logarithmic axis
    (:data:`PNG_LOW_HZ`, or the first bin when that is higher, to Nyquist),
    levels from ``floor_db`` (black) to 0 dBFS (pale yellow) through an
    inferno-like colour map.

    :param spectrum: the spectrum.
    :param width: image width; ``None`` for one pixel per column.  Columns
        are averaged to a narrower image and repeated to a wider one.
    :param height: image height, 8..4096.
    :param floor_db: the level drawn black, within -200..-10 dB.
    :returns: the PNG file (a single black column when there are no columns).
    :raises ValueError: for a size or floor out of bounds.
    """
    _check_png_arguments(width, height, floor_db)
    grid = spectrum.spectrogram_db
    if grid.shape[0] == 0:
        grid = np.full((1, spectrum.frequencies.shape[0]), FLOOR_DB, dtype=np.float32)
    power = _resample_columns(_from_db(grid), width or grid.shape[0])
    rows = _to_db(_log_rows(power, spectrum.frequencies, height))
    level = np.clip((rows.astype(np.float64) - floor_db) / -floor_db, 0.0, 1.0)
    indices = np.rint(level * 255.0).astype(np.intp)
    image = _COLOURS[indices.T[::-1]]  # (height, width, 3), highest frequency at the top
    return encode_rgb(np.ascontiguousarray(image))


def generate(
    path: str, params: SpectrumParams, *, start_s: float = 0.0, end_s: float | None = None
) -> Spectrum:
    """Decode a file (mixed to mono) and analyse it: the worker-pool job.

    :param path: the audio file.
    :param params: the analysis parameters (validated when built).
    :param start_s: start of the window in seconds.
    :param end_s: end of the window, or ``None`` for the end of the track.
    :returns: the spectrum, at the file's sample rate.
    :raises ValueError: for a window that is not ``0 <= start_s <= end_s``.
    :raises streamsrv.audio.decode.DecodeError: when the file cannot be decoded.
    """
    if not math.isfinite(start_s) or start_s < 0:
        raise ValueError("start must be a finite number of seconds >= 0")
    if end_s is not None and (math.isnan(end_s) or end_s < start_s):
        raise ValueError("end must be >= start")
    source = Path(path)
    rate = probe_stream(source).sample_rate
    blocks = iter_decode(source, start_s=start_s, end_s=end_s, sample_rate=rate, channels=1)
    return analyse(blocks, rate, params)


def generate_json(
    path: str,
    params: SpectrumParams,
    *,
    include_spectrogram: bool,
    max_bins: int = 512,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> dict[str, Any]:
    """:func:`generate` then :func:`to_json`, in one worker job.

    A default :class:`Spectrum` of a long track carries a spectrogram of up
    to 2000 x 2049 float32 (16 MB); returning the JSON summary instead keeps
    what crosses the worker pipe small.
    """
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or not 1 <= max_bins <= MAX_JSON_BINS:
        raise ValueError(f"max_bins must be within 1..{MAX_JSON_BINS}")
    spectrum = generate(path, params, start_s=start_s, end_s=end_s)
    return to_json(spectrum, include_spectrogram=include_spectrogram, max_bins=max_bins)


def generate_png(
    path: str,
    params: SpectrumParams,
    *,
    width: int | None = None,
    height: int = 256,
    floor_db: float = -100.0,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> bytes:
    """:func:`generate` then :func:`to_png`, in one worker job (see :func:`generate_json`).

    The image parameters are checked before the file is decoded.
    """
    _check_png_arguments(width, height, floor_db)
    spectrum = generate(path, params, start_s=start_s, end_s=end_s)
    return to_png(spectrum, width=width, height=height, floor_db=floor_db)

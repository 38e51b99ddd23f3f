# -*- test-case-name: tests.test_spectrogram -*-
"""The spectrogram as a client draws it: a bounded time x frequency grid in JSON, and a PNG with axes.

:func:`sample_grid` resamples a :class:`~streamsrv.audio.spectrum.Spectrum`'s
spectrogram exactly as :func:`~streamsrv.audio.spectrum.to_png` paints it:
at most ``frames`` columns in time (adjacent analysis columns averaged in
power) by ``bins`` rows on the PNG's logarithmic frequency axis (20 Hz, or
the first bin above DC, to Nyquist), in dBFS.  :func:`grid_json` is that grid
for ``/api/v1/spectrum?format=json``: a client given ``frames=W&bins=H`` has
the numbers behind a ``width=W&height=H`` PNG, rows from low to high
frequency.  The size is bounded (:data:`MAX_FRAMES`, :data:`MAX_BINS`,
:data:`MAX_CELLS`); :func:`check_grid` refuses anything else with a
:class:`ValueError` that names the parameter.

:func:`draw_axes` frames a spectrogram image with a frequency axis on the
left (ticks at 50 Hz, 100 Hz, 1 kHz…) and a time axis below (ticks at round
seconds, ``m:ss`` from a minute), in a tiny built-in bitmap font: numpy
only, no plotting library.  :func:`generate_json` and :func:`generate_png`
are the worker-pool jobs.

Pure functions except the two jobs (which read one audio file); nothing
logs; the jobs must run in the worker pool, never on the reactor thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamsrv.audio import spectrum as spectrum_mod
from streamsrv.audio.png import encode_rgb
from streamsrv.audio.spectrogram_grid import (
    DEFAULT_BINS,
    DEFAULT_FRAMES,
    MAX_BINS,
    MAX_CELLS,
    MAX_FRAMES,
    check_grid,
)
from streamsrv.audio.spectrum import FLOOR_DB, PNG_LOW_HZ, Spectrum, SpectrumParams

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_FRAMES",
    "MAX_BINS",
    "MAX_CELLS",
    "MAX_FRAMES",
    "Grid",
    "check_grid",
    "draw_axes",
    "generate_json",
    "generate_png",
    "grid_json",
    "render_png",
    "sample_grid",
]

#: Margins that :func:`draw_axes` adds: left for frequency labels, below for time labels.
AXIS_LEFT_PX: Final = 40
AXIS_BOTTOM_PX: Final = 20

#: Frequencies that may get a tick (labelled ``50``, ``1k``…).
_FREQUENCY_TICKS: Final = (20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
#: Time steps a time axis may use, seconds.
_TIME_STEPS: Final = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
#: Fewest pixels between two time ticks.
_MIN_TICK_SPACING_PX: Final = 48
_AXIS_COLOUR: Final = (200, 200, 200)
#: Glyph scale: 3x5 glyphs drawn as 6x10 pixels.
_SCALE: Final = 2

#: A 3x5 bitmap font: each glyph is five rows of three bits, top row first.
_GLYPHS: Final = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "k": ("100", "101", "110", "101", "101"),
    "s": ("011", "100", "010", "001", "110"),
    "H": ("101", "101", "111", "101", "101"),
    "z": ("000", "111", "011", "110", "111"),
    ":": ("000", "010", "000", "010", "000"),
    ".": ("000", "000", "000", "000", "010"),
}


@dataclass(frozen=True)
class Grid:
    """A spectrogram resampled for display.

    :ivar db: ``(frames, bins)`` float32 dBFS, time order, rows from low to high frequency.
    :ivar frequencies_hz: ``(bins,)`` centre of each row on the logarithmic axis.
    :ivar seconds_per_frame: time covered by each column.
    :ivar low_hz: the axis's lowest frequency (the bottom row's centre).
    :ivar high_hz: its highest (Nyquist; the top row's centre).
    """

    db: npt.NDArray[np.float32]
    frequencies_hz: npt.NDArray[np.float64]
    seconds_per_frame: float
    low_hz: float
    high_hz: float


def _log_axis(
    frequencies: npt.NDArray[np.float64], rows: int
) -> tuple[float, float, npt.NDArray[np.float64]]:
    """``(low, high, centres)`` of *rows* rows on the PNG's log axis (spaced as ``_log_rows`` does)."""
    bin_hz = float(frequencies[1] - frequencies[0])
    nyquist = float(frequencies[-1])
    low = min(max(PNG_LOW_HZ, bin_hz), nyquist / 2.0)
    steps = max(rows - 1, 1)
    centres = low * (nyquist / low) ** (np.arange(rows) / steps)
    return low, nyquist, centres


def sample_grid(spectrum: Spectrum, frames: int, bins: int) -> Grid:
    """*spectrum*'s spectrogram at most *frames* columns by exactly *bins* log-frequency rows.

    Columns are never invented: a spectrum with fewer analysis columns than
    *frames* keeps its own count.  A spectrum without columns gives none.

    :raises ValueError: from :func:`check_grid`.
    """
    check_grid(frames, bins)
    low, high, centres = _log_axis(spectrum.frequencies, bins)
    columns = spectrum.spectrogram_db.shape[0]
    if columns == 0:
        empty = np.zeros((0, bins), dtype=np.float32)
        return Grid(empty, centres, 0.0, low, high)
    width = min(frames, columns)
    power = spectrum_mod._resample_columns(spectrum_mod._from_db(spectrum.spectrogram_db), width)
    rows = spectrum_mod._to_db(spectrum_mod._log_rows(power, spectrum.frequencies, bins))
    seconds = spectrum.seconds_per_column * columns / width
    return Grid(rows, centres, seconds, low, high)


def grid_json(grid: Grid, start_s: float = 0.0) -> dict[str, Any]:
    """The JSON form of *grid*: ``{"frames", "bins", "scale", "low_hz", "high_hz",
    "frequencies_hz", "start_s", "seconds_per_frame", "db": [[per bin] per frame]}``.

    Levels are rounded to 0.1 dB; silence reads :data:`~streamsrv.audio.spectrum.FLOOR_DB`.
    """
    return {
        "frames": int(grid.db.shape[0]),
        "bins": int(grid.db.shape[1]),
        "scale": "log",
        "low_hz": round(grid.low_hz, 1),
        "high_hz": round(grid.high_hz, 1),
        "frequencies_hz": np.round(grid.frequencies_hz, 1).tolist(),
        "start_s": round(start_s, 3),
        "seconds_per_frame": round(grid.seconds_per_frame, 6),
        "db": np.round(grid.db.astype(np.float64), 1).tolist(),
    }


def _text_width(text: str) -> int:
    return len(text) * 4 * _SCALE - _SCALE


def _draw_text(image: npt.NDArray[np.uint8], text: str, x: int, y: int) -> None:
    """Draw *text* with its top-left corner at (*x*, *y*), clipped to the image."""
    height, width = image.shape[:2]
    for glyph in text:
        rows = _GLYPHS[glyph]
        for gy, row in enumerate(rows):
            for gx, bit in enumerate(row):
                if bit == "1":
                    top, left = y + gy * _SCALE, x + gx * _SCALE
                    if 0 <= top and top + _SCALE <= height and 0 <= left and left + _SCALE <= width:
                        image[top : top + _SCALE, left : left + _SCALE] = _AXIS_COLOUR
        x += 4 * _SCALE


def _frequency_label(hz: int) -> str:
    return f"{hz // 1000}k" if hz >= 1000 else str(hz)


def _time_label(seconds: float, step: float) -> str:
    if step < 1:
        return f"{seconds:.1f}"
    whole = round(seconds)
    if whole >= 60:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole}s"


def draw_axes(
    image: npt.NDArray[np.uint8], *, low_hz: float, high_hz: float, start_s: float, duration_s: float
) -> npt.NDArray[np.uint8]:
    """*image* (``(height, width, 3)``, log frequency bottom to top) inside labelled axes.

    The result is :data:`AXIS_LEFT_PX` wider and :data:`AXIS_BOTTOM_PX`
    taller: frequency ticks and labels on the left, time ticks and labels
    (seconds from the track's start) below, on black.
    """
    height, width = image.shape[:2]
    framed = np.zeros((height + AXIS_BOTTOM_PX, width + AXIS_LEFT_PX, 3), dtype=np.uint8)
    framed[:height, AXIS_LEFT_PX:] = image
    framed[:height, AXIS_LEFT_PX - 1] = _AXIS_COLOUR
    framed[height, AXIS_LEFT_PX - 1 :] = _AXIS_COLOUR
    glyph_h = 5 * _SCALE
    if high_hz > low_hz > 0 and height > 1:
        ratio = math.log(high_hz / low_hz)
        for hz in _FREQUENCY_TICKS:
            if not low_hz <= hz <= high_hz:
                continue
            row = round((height - 1) * (1.0 - math.log(hz / low_hz) / ratio))
            framed[row, AXIS_LEFT_PX - 5 : AXIS_LEFT_PX - 1] = _AXIS_COLOUR
            label = _frequency_label(hz)
            top = min(max(row - glyph_h // 2, 0), height - glyph_h)
            _draw_text(framed, label, AXIS_LEFT_PX - 7 - _text_width(label), top)
    _draw_text(framed, "Hz", 2, height + AXIS_BOTTOM_PX - glyph_h - 2)
    if duration_s > 0 and width > 1:
        step = next(
            (s for s in _TIME_STEPS if s * width / duration_s >= _MIN_TICK_SPACING_PX), _TIME_STEPS[-1]
        )
        first = math.ceil(start_s / step) * step
        tick = first
        while tick <= start_s + duration_s + 1e-9:
            x = AXIS_LEFT_PX + round((tick - start_s) / duration_s * (width - 1))
            framed[height + 1 : height + 4, x] = _AXIS_COLOUR
            label = _time_label(tick, step)
            left = min(max(x - _text_width(label) // 2, AXIS_LEFT_PX), framed.shape[1] - _text_width(label))
            _draw_text(framed, label, left, height + 6)
            tick += step
    return framed


def render_png(
    spectrum: Spectrum,
    *,
    width: int | None = None,
    height: int = 256,
    floor_db: float = -100.0,
    axes: bool = False,
    start_s: float = 0.0,
) -> bytes:
    """:func:`~streamsrv.audio.spectrum.to_png`'s image, framed by :func:`draw_axes` when *axes*.

    :raises ValueError: for a size or floor out of bounds.
    """
    if not axes:
        return spectrum_mod.to_png(spectrum, width=width, height=height, floor_db=floor_db)
    spectrum_mod._check_png_arguments(width, height, floor_db)
    grid = spectrum.spectrogram_db
    if grid.shape[0] == 0:
        grid = np.full((1, spectrum.frequencies.shape[0]), FLOOR_DB, dtype=np.float32)
    power = spectrum_mod._resample_columns(spectrum_mod._from_db(grid), width or grid.shape[0])
    rows = spectrum_mod._to_db(spectrum_mod._log_rows(power, spectrum.frequencies, height))
    level = np.clip((rows.astype(np.float64) - floor_db) / -floor_db, 0.0, 1.0)
    image = spectrum_mod._COLOURS[np.rint(level * 255.0).astype(np.intp).T[::-1]]
    low, high, _ = _log_axis(spectrum.frequencies, height)
    framed = draw_axes(image, low_hz=low, high_hz=high, start_s=start_s, duration_s=spectrum.duration_s)
    return encode_rgb(np.ascontiguousarray(framed))


def generate_json(
    path: str,
    params: SpectrumParams,
    *,
    include_spectrogram: bool,
    frames: int = DEFAULT_FRAMES,
    bins: int = DEFAULT_BINS,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> dict[str, Any]:
    """The JSON of ``/api/v1/spectrum``: the summary, and the display grid unless left out (one job).

    The grid size is checked before the file is decoded.
    """
    check_grid(frames, bins)
    spectrum = spectrum_mod.generate(path, params, start_s=start_s, end_s=end_s)
    document = spectrum_mod.to_json(spectrum, include_spectrogram=False)
    if include_spectrogram:
        document["spectrogram"] = grid_json(sample_grid(spectrum, frames, bins), start_s)
    return document


def generate_png(
    path: str,
    params: SpectrumParams,
    *,
    width: int | None = None,
    height: int = 256,
    axes: bool = False,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> bytes:
    """The PNG of ``/api/v1/spectrum?format=png``, with axes when asked (one job).

    The image parameters are checked before the file is decoded.
    """
    spectrum_mod._check_png_arguments(width, height, -100.0)
    spectrum = spectrum_mod.generate(path, params, start_s=start_s, end_s=end_s)
    return render_png(spectrum, width=width, height=height, axes=axes, start_s=start_s)

# -*- test-case-name: tests.test_waveform -*-
"""Waveform peaks in BBC audiowaveform's data format, for peaks.js and wavesurfer.js.

:func:`compute_peaks` turns decoded audio into one ``(min, max)`` pair per
``samples_per_pixel`` frames, per channel or for all channels merged, with
the arithmetic of audiowaveform 1.x (``src/WaveformGenerator.cpp``,
``src/WaveformBuffer.cpp``), so that the same 16-bit PCM file gives the same
numbers through either program:

- samples become 16-bit integers first: float ``f`` is ``round(f * 32768)``
  clamped to [-32768, 32767], which gives back exactly the integers of a
  16-bit PCM source (FFmpeg decodes them to ``n / 32768``);
- merged channels (no ``--split-channels``) are the integer sum of the
  channels' samples divided by the channel count, truncating toward zero
  (C's ``int`` division), before the minimum and maximum are taken;
- 8-bit values are the 16-bit ones divided by 256, truncating toward zero
  (C's ``short / int`` in ``WaveformBuffer::save`` and ``saveAsJson``), not
  floored: -1 becomes 0, -255 becomes 0, -256 becomes -1;
- a last, partial block of fewer than ``samples_per_pixel`` frames still
  makes a pixel.

:func:`rescale` reduces to a coarser zoom like ``WaveformRescaler``,
:func:`to_dat`/:func:`to_json` write audiowaveform's binary and JSON formats
byte for byte, :func:`from_dat` reads the binary format strictly, and
:func:`to_wavesurfer` reshapes peaks into wavesurfer.js v7's ``peaks`` and
``duration``.  :func:`generate` is the worker-pool job (decode, then
compute) and :func:`waveform_cli` is ``streamsrv waveform``.

Everything here is a pure function of its arguments except :func:`generate`
(reads one audio file) and :func:`waveform_cli` (reads its input, writes its
output file): nothing logs, nothing touches the reactor, and the CPU-heavy
functions must run in the worker pool, never on the reactor thread.  Work is
vectorised with numpy (a reshape and a min/max along an axis per decoded
block); there is no per-sample Python loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt

from streamsrv.audio.decode import DecodeError, iter_decode, probe_stream

__all__ = [
    "DEFAULT_PIXELS_PER_SECOND",
    "DEFAULT_SAMPLES_PER_PIXEL",
    "MAX_CHANNELS",
    "MAX_PIXELS_PER_SECOND",
    "MAX_SAMPLES_PER_PIXEL",
    "MIN_PIXELS_PER_SECOND",
    "MIN_SAMPLES_PER_PIXEL",
    "Waveform",
    "compute_peaks",
    "convert_bits",
    "from_dat",
    "generate",
    "rescale",
    "samples_per_pixel_for",
    "to_dat",
    "to_json",
    "to_json_bytes",
    "to_wavesurfer",
    "waveform_cli",
    "window",
]

#: audiowaveform's ``-z`` default.
DEFAULT_SAMPLES_PER_PIXEL: Final = 256
#: audiowaveform's ``--pixels-per-second`` default (used only when asked for).
DEFAULT_PIXELS_PER_SECOND: Final = 100
#: audiowaveform refuses a zoom below 2 ("Invalid zoom: minimum 2").
MIN_SAMPLES_PER_PIXEL: Final = 2
#: Our ceiling: about 24 s per pixel at 44.1 kHz, far coarser than any view.
MAX_SAMPLES_PER_PIXEL: Final = 2**20
#: Bounds of ``pixels_per_second``.
MIN_PIXELS_PER_SECOND: Final = 1
MAX_PIXELS_PER_SECOND: Final = 2000
#: audiowaveform's ``WaveformBuffer::MAX_CHANNELS``: the most channels a
#: split waveform (and a ``.dat`` file) may have.
MAX_CHANNELS: Final = 8
#: The two bit depths of the format.
BIT_DEPTHS: Final = (8, 16)

#: ``flags`` bit 0 of the binary header: the data is 8-bit.
_FLAG_8_BIT: Final = 0x1
#: Binary headers: version, flags, sample rate, samples per pixel, length
#: (v1, 20 bytes); v2 (24 bytes) adds the channel count.
_HEADER_V1: Final = struct.Struct("<iIiiI")
_HEADER_V2_CHANNELS: Final = struct.Struct("<i")
#: float -> 16-bit scale: FFmpeg decodes 16-bit PCM ``n`` to ``n / 32768``.
_INT16_SCALE: Final = 32768.0
_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767
#: 16-bit -> 8-bit divisor of audiowaveform (truncating division).
_EIGHT_BIT_DIVISOR: Final = 256
#: Decimal places of wavesurfer peaks (its ``exportPeaks`` precision, 10 000).
_WAVESURFER_DECIMALS: Final = 4
#: Frames per decoded block, before rounding to a multiple of the zoom.
_BLOCK_FRAMES: Final = 65536

#: Exit statuses of :func:`waveform_cli` (the ``streamsrv`` conventions).
_EXIT_OK: Final = 0
_EXIT_FAILED: Final = 1
_EXIT_USAGE: Final = 2


@dataclass(frozen=True, eq=False)
class Waveform:
    """Peaks of a track: one ``(min, max)`` pair per pixel per channel.

    Two waveforms are equal when every field and every value is.  ``data`` is
    kept as a read-only view, so a waveform shared from a cache cannot be
    changed under its other users.

    :param sample_rate: the audio's sample rate (Hz).
    :param samples_per_pixel: audio frames per pixel (the zoom).
    :param bits: 8 or 16: the range of the values, -128..127 or -32768..32767.
    :param channels: 1 for merged channels, else the audio's channel count.
    :param data: ``(length, channels, 2)`` int16: ``data[i, c] == (min, max)``.
        At 8 bits the values are already divided (within -128..127).
    """

    sample_rate: int
    samples_per_pixel: int
    bits: int
    channels: int
    data: npt.NDArray[np.int16]

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be at least 1, got {self.sample_rate}")
        if self.samples_per_pixel < MIN_SAMPLES_PER_PIXEL:
            raise ValueError(f"samples_per_pixel must be at least {MIN_SAMPLES_PER_PIXEL}")
        if self.bits not in BIT_DEPTHS:
            raise ValueError(f"bits must be 8 or 16, got {self.bits}")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be within 1..{MAX_CHANNELS}, got {self.channels}")
        data = self.data
        if data.dtype != np.int16 or data.ndim != 3 or data.shape[1:] != (self.channels, 2):
            raise ValueError(
                f"data must be (length, {self.channels}, 2) int16, got {data.shape} {data.dtype}"
            )
        if self.bits == 8 and data.size and (int(data.min()) < -128 or int(data.max()) > 127):
            raise ValueError("8-bit data must lie within -128..127")
        view = data.view()
        view.flags.writeable = False
        object.__setattr__(self, "data", view)

    @property
    def length(self) -> int:
        """Number of pixels (``(min, max)`` pairs per channel)."""
        return int(self.data.shape[0])

    @property
    def duration_s(self) -> float:
        """Audio covered, rounded up to whole pixels: ``length * spp / rate``."""
        return self.length * self.samples_per_pixel / self.sample_rate

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Waveform):
            return NotImplemented
        return (
            self.sample_rate == other.sample_rate
            and self.samples_per_pixel == other.samples_per_pixel
            and self.bits == other.bits
            and self.channels == other.channels
            and np.array_equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking contents: not hashable

    def __reduce__(self) -> tuple[type[Waveform], tuple[int, int, int, int, npt.NDArray[np.int16]]]:
        """Pickle through the constructor, so a waveform from a worker is checked and read-only."""
        return (type(self), (self.sample_rate, self.samples_per_pixel, self.bits, self.channels, self.data))


def _check_samples_per_pixel(samples_per_pixel: int) -> None:
    """Refuse a zoom outside ``MIN..MAX_SAMPLES_PER_PIXEL`` with :class:`ValueError`."""
    if isinstance(samples_per_pixel, bool) or not isinstance(samples_per_pixel, int | np.integer):
        raise ValueError("samples_per_pixel must be an integer")
    if not MIN_SAMPLES_PER_PIXEL <= samples_per_pixel <= MAX_SAMPLES_PER_PIXEL:
        raise ValueError(
            f"samples_per_pixel must be within {MIN_SAMPLES_PER_PIXEL}..{MAX_SAMPLES_PER_PIXEL}, "
            f"got {samples_per_pixel}"
        )


def _check_bits(bits: int) -> None:
    """Refuse a bit depth other than 8 or 16 with :class:`ValueError`."""
    if bits not in BIT_DEPTHS:
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")


def _check_pixels_per_second(pixels_per_second: int) -> None:
    """Refuse ``pixels_per_second`` outside ``MIN..MAX_PIXELS_PER_SECOND`` with :class:`ValueError`."""
    if isinstance(pixels_per_second, bool) or not isinstance(pixels_per_second, int | np.integer):
        raise ValueError("pixels_per_second must be an integer")
    if not MIN_PIXELS_PER_SECOND <= pixels_per_second <= MAX_PIXELS_PER_SECOND:
        raise ValueError(
            f"pixels_per_second must be within {MIN_PIXELS_PER_SECOND}..{MAX_PIXELS_PER_SECOND}, "
            f"got {pixels_per_second}"
        )


def _check_span(start_s: float, end_s: float | None) -> None:
    """Refuse a time span that is not ``0 <= start_s <= end_s`` with :class:`ValueError`."""
    if not math.isfinite(start_s) or start_s < 0:
        raise ValueError("start must be a finite number of seconds >= 0")
    if end_s is not None and (math.isnan(end_s) or end_s < start_s):
        raise ValueError("end must be >= start")


def samples_per_pixel_for(pixels_per_second: int, sample_rate: int) -> int:
    """The zoom for a number of pixels per second, as audiowaveform computes it.

    ``PixelsPerSecondScaleFactor``: ``sample_rate / pixels_per_second`` in
    integer division.

    :param pixels_per_second: within ``MIN..MAX_PIXELS_PER_SECOND``.
    :param sample_rate: the audio's rate.
    :returns: samples per pixel.
    :raises ValueError: when ``pixels_per_second`` is out of bounds or the
        result is below :data:`MIN_SAMPLES_PER_PIXEL`.
    """
    _check_pixels_per_second(pixels_per_second)
    samples_per_pixel = sample_rate // int(pixels_per_second)
    _check_samples_per_pixel(samples_per_pixel)
    return samples_per_pixel


def _trunc_div(values: npt.NDArray[Any], divisor: int) -> npt.NDArray[np.int32]:
    """Integer division truncating toward zero, as C does (Python's ``//`` floors).

    :param values: integers (any integer or integral float dtype).
    :param divisor: a positive integer.
    """
    ints = values.astype(np.int32)
    quotient = np.abs(ints) // divisor
    return np.where(ints < 0, -quotient, quotient).astype(np.int32)


def _float_to_int16(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Float samples to 16-bit integer values (still as floats, which hold them exactly).

    ``round(f * 32768)`` clamped to [-32768, 32767]: the exact inverse of
    FFmpeg's 16-bit PCM decoding.  NaN stays NaN (see :meth:`_PeakAccumulator.finish`).
    """
    scaled = np.multiply(values, np.float32(_INT16_SCALE), dtype=np.float32)
    np.rint(scaled, out=scaled)
    return np.clip(scaled, _INT16_MIN, _INT16_MAX, out=scaled)


class _PeakAccumulator:
    """Reduce a stream of blocks to per-pixel extremes, carrying partial pixels over.

    Values are reduced first and converted after whenever the conversion is
    monotonic in a single sample (split channels, or one channel), which
    converts only two numbers per pixel; merged multi-channel audio must be
    converted sample by sample, since the sum of rounded samples is not a
    function of one sample.
    """

    def __init__(self, samples_per_pixel: int, split_channels: bool) -> None:
        self._spp = samples_per_pixel
        self._split = split_channels
        self._channels = 0
        self._carry: npt.NDArray[np.float32] | None = None
        self._mins: list[npt.NDArray[np.float32]] = []
        self._maxs: list[npt.NDArray[np.float32]] = []

    @property
    def _converts_first(self) -> bool:
        """Whether samples are converted (and merged) before reduction."""
        return not self._split and self._channels > 1

    def add(self, block: npt.NDArray[np.floating]) -> None:
        """Take one ``(channels, frames)`` block of float samples."""
        if block.ndim != 2:
            raise ValueError(f"blocks must be (channels, frames), got shape {block.shape}")
        if not np.issubdtype(block.dtype, np.floating):
            raise ValueError(f"blocks must hold float samples, got {block.dtype}")
        if self._channels == 0:
            self._channels = int(block.shape[0])
            if self._channels < 1:
                raise ValueError("blocks must have at least one channel")
            if self._split and self._channels > MAX_CHANNELS:
                raise ValueError(f"split channels supports at most {MAX_CHANNELS} channels")
        elif block.shape[0] != self._channels:
            raise ValueError(f"every block must have {self._channels} channels, got {block.shape[0]}")
        if block.shape[1] == 0:
            return
        values: npt.NDArray[np.float32]
        if self._converts_first:
            values = _float_to_int16(block).sum(axis=0, keepdims=True, dtype=np.float32)
        else:
            values = np.asarray(block, dtype=np.float32)
        self._reduce(values)

    def _reduce(self, values: npt.NDArray[np.float32]) -> None:
        """Fold ``(rows, frames)`` values into pixels, completing the carried one first."""
        spp = self._spp
        if self._carry is not None:
            need = spp - self._carry.shape[1]
            head = values[:, :need]
            joined = np.concatenate((self._carry, head), axis=1)
            if joined.shape[1] < spp:
                self._carry = joined
                return
            self._push(joined.min(axis=1, keepdims=True), joined.max(axis=1, keepdims=True))
            values = values[:, need:]
            self._carry = None
        rows, frames = values.shape
        whole = frames - frames % spp
        if whole:
            pixels = values[:, :whole].reshape(rows, whole // spp, spp)
            self._push(pixels.min(axis=2), pixels.max(axis=2))
        if whole < frames:
            self._carry = values[:, whole:].copy()

    def _push(self, mins: npt.NDArray[np.float32], maxs: npt.NDArray[np.float32]) -> None:
        """Keep ``(rows, pixels)`` extremes."""
        self._mins.append(mins)
        self._maxs.append(maxs)

    def finish(self, sample_rate: int, bits: int) -> Waveform:
        """Emit the last partial pixel and build the :class:`Waveform`."""
        if self._carry is not None and self._carry.shape[1]:
            self._push(self._carry.min(axis=1, keepdims=True), self._carry.max(axis=1, keepdims=True))
            self._carry = None
        out_channels = self._channels if (self._split and self._channels) else 1
        if not self._mins:
            data = np.zeros((0, out_channels, 2), dtype=np.int16)
            return Waveform(sample_rate, self._spp, bits, out_channels, data)
        extremes = np.stack((np.concatenate(self._mins, axis=1), np.concatenate(self._maxs, axis=1)), axis=-1)
        np.nan_to_num(extremes, copy=False)  # a NaN sample (never from FFmpeg) counts as silence
        if self._converts_first:
            ints = _trunc_div(extremes, self._channels)
        else:
            ints = _float_to_int16(extremes).astype(np.int32)
        if bits == 8:
            ints = _trunc_div(ints, _EIGHT_BIT_DIVISOR)
        data = np.ascontiguousarray(ints.transpose(1, 0, 2)).astype(np.int16)
        return Waveform(sample_rate, self._spp, bits, out_channels, data)


def compute_peaks(
    blocks: Iterable[npt.NDArray[np.floating]],
    sample_rate: int,
    samples_per_pixel: int,
    *,
    split_channels: bool,
    bits: int,
) -> Waveform:
    """Waveform peaks of decoded audio, exactly as audiowaveform computes them.

    :param blocks: ``(channels, frames)`` float samples in [-1, 1], in order,
        of any sizes (each the same channel count).
    :param sample_rate: their sample rate.
    :param samples_per_pixel: frames per pixel.
    :param split_channels: one waveform per channel; else channels are merged
        (integer mean of the 16-bit samples, truncated toward zero).
    :param bits: 8 or 16.
    :returns: the peaks; a partial last pixel is included, and no audio at
        all gives a waveform of length 0.
    :raises ValueError: for parameters out of bounds, or blocks of differing
        channel counts or not ``(channels, frames)`` floats.
    """
    _check_samples_per_pixel(samples_per_pixel)
    _check_bits(bits)
    if sample_rate < 1:
        raise ValueError("sample_rate must be at least 1")
    accumulator = _PeakAccumulator(int(samples_per_pixel), split_channels)
    for block in blocks:
        accumulator.add(block)
    return accumulator.finish(int(sample_rate), bits)


def convert_bits(wf: Waveform, bits: int) -> Waveform:
    """The same waveform at another bit depth, as audiowaveform converts.

    16 to 8 divides by 256 truncating toward zero; 8 to 16 multiplies by 256
    (``WaveformBuffer::load`` of an 8-bit file).

    :param wf: a waveform.
    :param bits: 8 or 16.
    """
    _check_bits(bits)
    if bits == wf.bits:
        return wf
    if bits == 8:
        data = _trunc_div(wf.data, _EIGHT_BIT_DIVISOR).astype(np.int16)
    else:
        data = (wf.data.astype(np.int32) * _EIGHT_BIT_DIVISOR).astype(np.int16)
    return replace(wf, bits=bits, data=data)


def rescale(wf: Waveform, samples_per_pixel: int) -> Waveform:
    """Reduce a waveform to a coarser zoom, as audiowaveform's ``WaveformRescaler`` does.

    Output pixel ``o`` takes the extremes of input pixels
    ``floor(o * out / in)`` up to (not including) ``floor((o + 1) * out / in)``,
    whole input pixels each, plus a partial last one.  For a whole multiple of
    the input zoom this equals computing at the coarser zoom directly.

    :param wf: the waveform.
    :param samples_per_pixel: the new zoom, at least the current one.
    :returns: ``wf`` itself when the zoom is unchanged.
    :raises ValueError: for a zoom out of bounds or finer than ``wf``'s.
    """
    _check_samples_per_pixel(samples_per_pixel)
    current = wf.samples_per_pixel
    if samples_per_pixel == current:
        return wf
    if samples_per_pixel < current:
        raise ValueError(f"cannot rescale to a finer zoom: minimum {current} samples per pixel")
    count = -(-wf.length * current // samples_per_pixel)
    if count == 0:
        return replace(wf, samples_per_pixel=samples_per_pixel)
    starts = (np.arange(count, dtype=np.int64) * samples_per_pixel) // current
    data = np.empty((count, wf.channels, 2), dtype=np.int16)
    data[:, :, 0] = np.minimum.reduceat(wf.data[:, :, 0], starts, axis=0)
    data[:, :, 1] = np.maximum.reduceat(wf.data[:, :, 1], starts, axis=0)
    return replace(wf, samples_per_pixel=samples_per_pixel, data=data)


def window(wf: Waveform, start_s: float, end_s: float | None) -> Waveform:
    """The pixels of a waveform that cover ``[start_s, end_s)``.

    Pixels stay on the whole track's grid: the first is the one holding
    ``start_s``, the last the one holding the instant just before ``end_s``,
    so a window starts up to one pixel before ``start_s``.

    :param wf: a waveform of a whole track.
    :param start_s: seconds from the start, >= 0.
    :param end_s: seconds, >= ``start_s``, or ``None`` for the end.
    :returns: the slice (empty past the end).
    :raises ValueError: for a span that is not ``0 <= start_s <= end_s``.
    """
    _check_span(start_s, end_s)
    seconds_per_pixel = wf.samples_per_pixel / wf.sample_rate
    first = min(math.floor(start_s / seconds_per_pixel), wf.length)
    if end_s is None or math.isinf(end_s):
        last = wf.length
    else:
        last = min(max(math.ceil(end_s / seconds_per_pixel), first), wf.length)
    return replace(wf, data=wf.data[first:last])


def to_json(wf: Waveform) -> dict[str, Any]:
    """audiowaveform's JSON (version 2), keys in its order.

    ``json.dumps(to_json(wf), separators=(",", ":"))`` plus a newline is the
    exact text audiowaveform writes (see :func:`to_json_bytes`).

    :param wf: a waveform.
    :returns: ``{"version": 2, "channels", "sample_rate", "samples_per_pixel",
        "bits", "length", "data": [min, max, ...]}``, data interleaved by pixel,
        then channel, then min and max.
    """
    return {
        "version": 2,
        "channels": wf.channels,
        "sample_rate": wf.sample_rate,
        "samples_per_pixel": wf.samples_per_pixel,
        "bits": wf.bits,
        "length": wf.length,
        "data": wf.data.reshape(-1).tolist(),
    }


def to_json_bytes(wf: Waveform) -> bytes:
    """The JSON document audiowaveform writes, byte for byte (compact, newline-terminated)."""
    return json.dumps(to_json(wf), separators=(",", ":")).encode("ascii") + b"\n"


def to_dat(wf: Waveform, *, version: int | None = None) -> bytes:
    """audiowaveform's binary ``.dat`` format.

    audiowaveform writes version 1 (a 20-byte header, no channel count) for
    one channel and version 2 (24 bytes, with the channel count) for more;
    that is the default here, so a file is byte-identical to its.  Both
    versions load in peaks.js (waveform-data.js).

    :param wf: a waveform.
    :param version: force 1 or 2; 1 is refused for more than one channel.
    :returns: header then ``min, max`` per pixel per channel, little-endian
        ``int8`` (8 bits, header flag bit 0 set) or ``int16``.
    :raises ValueError: for an impossible ``version``.
    """
    if version is None:
        version = 1 if wf.channels == 1 else 2
    if version not in (1, 2) or (version == 1 and wf.channels != 1):
        raise ValueError(f"cannot write version {version} for {wf.channels} channels")
    flags = _FLAG_8_BIT if wf.bits == 8 else 0
    header = _HEADER_V1.pack(version, flags, wf.sample_rate, wf.samples_per_pixel, wf.length)
    if version == 2:
        header += _HEADER_V2_CHANNELS.pack(wf.channels)
    return header + wf.data.astype("<i1" if wf.bits == 8 else "<i2").tobytes()


def from_dat(data: bytes | bytearray | memoryview) -> Waveform:
    """Parse audiowaveform's binary format (version 1 or 2), strictly.

    :param data: the whole file.
    :returns: the waveform.
    :raises ValueError: for a short or long file, an unknown version or flag,
        a sample rate below 1, a zoom below 2, a channel count outside
        1..:data:`MAX_CHANNELS`, or a pixel whose minimum exceeds its maximum.
    """
    raw = bytes(data)
    if len(raw) < _HEADER_V1.size:
        raise ValueError("not a waveform data file: header is truncated")
    version, flags, sample_rate, samples_per_pixel, length = _HEADER_V1.unpack_from(raw)
    if version not in (1, 2):
        raise ValueError(f"unsupported waveform data version {version}")
    if flags & ~_FLAG_8_BIT:
        raise ValueError(f"unknown flags 0x{flags:08x} in waveform data header")
    offset = _HEADER_V1.size
    channels = 1
    if version == 2:
        if len(raw) < offset + _HEADER_V2_CHANNELS.size:
            raise ValueError("not a waveform data file: header is truncated")
        (channels,) = _HEADER_V2_CHANNELS.unpack_from(raw, offset)
        offset += _HEADER_V2_CHANNELS.size
    if sample_rate < 1:
        raise ValueError(f"invalid sample rate {sample_rate}")
    if samples_per_pixel < MIN_SAMPLES_PER_PIXEL:
        raise ValueError(f"invalid samples per pixel {samples_per_pixel}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"invalid channel count {channels}")
    bits = 8 if flags & _FLAG_8_BIT else 16
    width = 1 if bits == 8 else 2
    expected = length * channels * 2 * width
    if len(raw) - offset != expected:
        raise ValueError(f"waveform data holds {len(raw) - offset} bytes of values, header says {expected}")
    values = np.frombuffer(raw, dtype="<i1" if bits == 8 else "<i2", offset=offset)
    pairs = values.astype(np.int16).reshape(length, channels, 2)
    if np.any(pairs[:, :, 0] > pairs[:, :, 1]):
        raise ValueError("waveform data has a pixel whose minimum exceeds its maximum")
    return Waveform(sample_rate, samples_per_pixel, bits, channels, pairs)


def to_wavesurfer(wf: Waveform, duration_s: float) -> dict[str, Any]:
    """The ``peaks`` and ``duration`` wavesurfer.js v7 renders without decoding.

    One array per channel (wavesurfer's shape), each the channel's ``min,
    max`` pairs in pixel order, divided by 128 (8 bits) or 32768 (16 bits)
    into -1..1 and rounded to 4 decimals (``exportPeaks``' precision).
    wavesurfer draws each pixel from the largest magnitude in it, so both
    extremes of every pixel count.

    :param wf: a waveform.
    :param duration_s: the track's duration in seconds.
    :returns: ``{"duration": seconds, "peaks": [[floats], ...]}``.
    :raises ValueError: for a duration that is negative or not finite.
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError("duration must be a finite number of seconds >= 0")
    scale = 128.0 if wf.bits == 8 else _INT16_SCALE
    per_channel = wf.data.transpose(1, 0, 2).reshape(wf.channels, -1) / scale
    return {"duration": duration_s, "peaks": np.round(per_channel, _WAVESURFER_DECIMALS).tolist()}


def _block_frames(samples_per_pixel: int) -> int:
    """Frames per decoded block: about 64 Ki, a whole number of pixels."""
    return samples_per_pixel * max(1, _BLOCK_FRAMES // samples_per_pixel)


def generate(
    path: str,
    *,
    samples_per_pixel: int | None = None,
    pixels_per_second: int | None = None,
    bits: int = 8,
    split_channels: bool = False,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Waveform:
    """Decode a file and compute its waveform: the worker-pool job.

    With a ``start_s``/``end_s`` window, the audio of the window is decoded
    and its first pixel starts at ``start_s`` exactly (compare :func:`window`).

    :param path: the audio file.
    :param samples_per_pixel: the zoom; or give ``pixels_per_second``; with
        neither, :data:`DEFAULT_SAMPLES_PER_PIXEL`.
    :param pixels_per_second: the zoom as ``sample_rate // pixels_per_second``.
    :param bits: 8 (the only depth peaks.js reads) or 16.
    :param split_channels: one waveform per channel instead of merged.
    :param start_s: start of the window in seconds.
    :param end_s: end of the window, or ``None`` for the end of the track.
    :returns: the waveform, at the file's sample rate.
    :raises ValueError: for parameters out of bounds (before any I/O, except
        a ``pixels_per_second`` that gives a zoom below 2 at this file's rate).
    :raises streamsrv.audio.decode.DecodeError: when the file cannot be decoded.
    """
    if samples_per_pixel is not None and pixels_per_second is not None:
        raise ValueError("give either samples_per_pixel or pixels_per_second, not both")
    if samples_per_pixel is not None:
        _check_samples_per_pixel(samples_per_pixel)
    if pixels_per_second is not None:
        _check_pixels_per_second(pixels_per_second)
    _check_bits(bits)
    _check_span(start_s, end_s)
    source = Path(path)
    rate = probe_stream(source).sample_rate
    if samples_per_pixel is None:
        if pixels_per_second is None:
            samples_per_pixel = DEFAULT_SAMPLES_PER_PIXEL
        else:
            samples_per_pixel = samples_per_pixel_for(pixels_per_second, rate)
    blocks: Iterator[npt.NDArray[np.float32]] = iter_decode(
        source,
        block_frames=_block_frames(samples_per_pixel),
        start_s=start_s,
        end_s=end_s,
        sample_rate=rate,
    )
    return compute_peaks(blocks, rate, samples_per_pixel, split_channels=split_channels, bits=bits)


class _UsageError(Exception):
    """A command-line mistake: report it with the usage line and exit 2."""


def _cli_parser() -> argparse.ArgumentParser:
    """The ``streamsrv waveform`` argument parser (audiowaveform's main flags)."""
    parser = argparse.ArgumentParser(
        prog="streamsrv waveform",
        description=(
            "Compute waveform data in BBC audiowaveform's format (.json or .dat, by the output's "
            "extension) from an audio file, or convert and rescale a .dat file."
        ),
    )
    parser.add_argument("input", metavar="IN", help="audio file, or a .dat waveform to convert or rescale")
    parser.add_argument(
        "-o",
        "--output-filename",
        dest="output",
        metavar="OUT",
        required=True,
        help="output file: OUT.json or OUT.dat",
    )
    parser.add_argument(
        "-z",
        "--zoom",
        type=int,
        metavar="SPP",
        help=f"samples per pixel (default {DEFAULT_SAMPLES_PER_PIXEL})",
    )
    parser.add_argument(
        "--pixels-per-second", type=int, metavar="N", help="zoom as pixels per second (instead of -z)"
    )
    parser.add_argument(
        "-b", "--bits", type=int, choices=BIT_DEPTHS, help="8 or 16 (default 16; for a .dat input, its own)"
    )
    parser.add_argument(
        "--split-channels",
        action="store_true",
        help="one waveform per channel instead of all channels merged",
    )
    parser.add_argument(
        "-s", "--start", type=float, default=0.0, metavar="SECONDS", help="start of the window (default 0)"
    )
    parser.add_argument(
        "-e", "--end", type=float, metavar="SECONDS", help="end of the window (default: the end)"
    )
    return parser


def _from_dat_file(args: argparse.Namespace) -> Waveform:
    """Load, rescale, window and convert a ``.dat`` input.

    :raises _UsageError: for flags that cannot apply to it.
    :raises ValueError: for a malformed file.
    :raises OSError: when it cannot be read.
    """
    wf = from_dat(Path(args.input).read_bytes())
    try:
        if args.zoom is not None:
            wf = rescale(wf, args.zoom)
        elif args.pixels_per_second is not None:
            wf = rescale(wf, samples_per_pixel_for(args.pixels_per_second, wf.sample_rate))
        if args.start or args.end is not None:
            wf = window(wf, args.start, args.end)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    return convert_bits(wf, args.bits if args.bits is not None else wf.bits)


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write a file through a temporary sibling and a rename, so no reader sees half of it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _run_cli(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Carry out a parsed ``streamsrv waveform`` command.

    :raises _UsageError: for flags that cannot be honoured.
    """
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix not in (".json", ".dat"):
        raise _UsageError(f"cannot write {args.output!r}: the output must end in .json or .dat")
    if args.zoom is not None and args.pixels_per_second is not None:
        raise _UsageError("give either --zoom or --pixels-per-second, not both")
    try:
        if args.zoom is not None:
            _check_samples_per_pixel(args.zoom)
        if args.pixels_per_second is not None:
            _check_pixels_per_second(args.pixels_per_second)
        _check_span(args.start, args.end)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    source = Path(args.input)
    if not source.is_file():
        print(f"streamsrv waveform: {args.input}: no such file", file=err)
        return _EXIT_FAILED
    try:
        if source.suffix.lower() == ".dat":
            wf = _from_dat_file(args)
        else:
            wf = generate(
                str(source),
                samples_per_pixel=args.zoom,
                pixels_per_second=args.pixels_per_second,
                bits=args.bits if args.bits is not None else 16,
                split_channels=args.split_channels,
                start_s=args.start,
                end_s=args.end,
            )
    except DecodeError as e:
        print(f"streamsrv waveform: {args.input}: cannot decode: {e.reason}", file=err)
        return _EXIT_FAILED
    except OSError as e:
        print(f"streamsrv waveform: {args.input}: cannot read: {e.strerror or e}", file=err)
        return _EXIT_FAILED
    except ValueError as e:
        print(f"streamsrv waveform: {args.input}: {e}", file=err)
        return _EXIT_FAILED
    payload = to_json_bytes(wf) if suffix == ".json" else to_dat(wf)
    try:
        _write_atomically(output, payload)
    except OSError as e:
        print(f"streamsrv waveform: {args.output}: cannot write: {e.strerror or e}", file=err)
        return _EXIT_FAILED
    print(
        f"{args.output}: {wf.length} points, {wf.channels} channel(s), {wf.samples_per_pixel} samples "
        f"per pixel, {wf.bits} bits, {wf.sample_rate} Hz",
        file=out,
    )
    return _EXIT_OK


def waveform_cli(argv: Sequence[str], *, out: TextIO, err: TextIO) -> int:
    """``streamsrv waveform IN -o OUT.json|OUT.dat [options]``.

    Flags and defaults follow audiowaveform: ``-z/--zoom`` (256),
    ``--pixels-per-second``, ``-b/--bits`` (16, or a ``.dat`` input's own),
    ``--split-channels``; ``-s/--start`` and ``-e/--end`` cut a window of the
    audio (audiowaveform uses ``-e`` only to size images).  ``IN`` may be a
    ``.dat`` file, converted to JSON or rescaled to a coarser zoom.

    :param argv: the arguments after ``streamsrv waveform``.
    :param out: where the summary line (and ``--help``) goes.
    :param err: where usage and errors go.
    :returns: 0 on success, 1 when the input cannot be read or decoded or
        the output cannot be written, 2 for a command-line mistake.
    """
    parser = _cli_parser()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                args = parser.parse_args(list(argv))
                return _run_cli(args, out, err)
            except _UsageError as e:
                parser.error(str(e))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else _EXIT_USAGE

"""Tests for :mod:`streamsrv.audio.waveform`: audiowaveform's numbers, formats and CLI.

Two small pure-Python ports of audiowaveform's loops (``WaveformGenerator::
process`` and ``WaveformRescaler::rescale``) serve as oracles for the
vectorised code; when BBC ``audiowaveform`` itself is installed, the same
WAV file goes through both programs as well.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import pickle
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.audio.decode import DecodeError
from streamsrv.audio.waveform import (
    MAX_SAMPLES_PER_PIXEL,
    Waveform,
    compute_peaks,
    convert_bits,
    from_dat,
    generate,
    rescale,
    samples_per_pixel_for,
    to_dat,
    to_json,
    to_json_bytes,
    to_wavesurfer,
    waveform_cli,
    window,
)
from tests import audiogen

#: Why the comparison with the real program is skipped when it is missing.
NO_AUDIOWAVEFORM = "BBC audiowaveform is not installed (not packaged for this machine)"


def ints_to_float(samples: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """16-bit integers as FFmpeg decodes them: ``n / 32768`` in float32."""
    return (np.asarray(samples, dtype=np.float32) / np.float32(32768.0)).astype(np.float32)


def c_div(a: int, b: int) -> int:
    """C's integer division, truncating toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def reference_peaks(samples: npt.NDArray[np.int16], spp: int, split: bool, bits: int) -> list[int]:
    """A sample-by-sample port of audiowaveform's ``WaveformGenerator::process``/``done``
    followed by ``WaveformBuffer::saveAsJson``: the JSON ``data`` array.

    :param samples: ``(channels, frames)`` 16-bit samples.
    """
    channels, frames = samples.shape
    outputs = channels if split else 1
    mins = [32767] * outputs
    maxs = [-32768] * outputs
    count = 0
    data: list[int] = []

    def flush() -> None:
        for c in range(outputs):
            data.extend((mins[c], maxs[c]))
            mins[c], maxs[c] = 32767, -32768

    for i in range(frames):
        if split:
            values = [int(samples[c, i]) for c in range(channels)]
        else:
            values = [c_div(sum(int(samples[c, i]) for c in range(channels)), channels)]
        for c, value in enumerate(values):
            value = max(-32768, min(32767, value))
            mins[c] = min(mins[c], value)
            maxs[c] = max(maxs[c], value)
        count += 1
        if count == spp:
            flush()
            count = 0
    if count:
        flush()
    return [c_div(v, 256) for v in data] if bits == 8 else data


def reference_rescale(data: npt.NDArray[np.int16], in_spp: int, out_spp: int) -> list[list[list[int]]]:
    """A port of audiowaveform's ``WaveformRescaler::rescale`` loop.

    :param data: ``(length, channels, 2)`` input pairs.
    :returns: the output as nested ``[pixel][channel][min, max]`` lists.
    """
    size, channels = data.shape[0], data.shape[1]
    out: list[list[list[int]]] = []
    mins = [int(data[0, c, 0]) for c in range(channels)] if size else [0] * channels
    maxs = [int(data[0, c, 1]) for c in range(channels)] if size else [0] * channels
    input_index = output_index = last_input_index = 0
    while input_index < size:
        while (output_index * out_spp) // in_spp == input_index:
            if output_index > 0:
                out.append([[mins[c], maxs[c]] for c in range(channels)])
            last_input_index = input_index
            output_index += 1
            mins = [32767] * channels
            maxs = [-32768] * channels
        stop = min((output_index * out_spp) // in_spp, size)
        while input_index < stop:
            for c in range(channels):
                mins[c] = min(mins[c], int(data[input_index, c, 0]))
                maxs[c] = max(maxs[c], int(data[input_index, c, 1]))
            input_index += 1
    if input_index != last_input_index:
        out.append([[mins[c], maxs[c]] for c in range(channels)])
    return out


def random_signal(seed: int, channels: int, frames: int) -> npt.NDArray[np.float32]:
    """Random float samples in [-1, 1], with some exact full-scale values."""
    rng = np.random.default_rng(seed)
    signal = rng.uniform(-1.0, 1.0, (channels, frames)).astype(np.float32)
    if frames:
        signal[:, rng.integers(0, frames, size=max(1, frames // 50))] = rng.choice([-1.0, 1.0])
    return signal


def split_blocks(signal: npt.NDArray[np.float32], cuts: list[int]) -> list[npt.NDArray[np.float32]]:
    """The signal cut at the given frame positions (duplicates and ends allowed)."""
    edges = sorted({0, signal.shape[1], *(c % (signal.shape[1] + 1) for c in cuts)})
    return [signal[:, a:b] for a, b in itertools.pairwise(edges)]


class ComputePeaksTests(unittest.SynchronousTestCase):
    """:func:`compute_peaks` gives audiowaveform's numbers for known signals."""

    def test_full_scale_square(self) -> None:
        """A full-scale square wave peaks at -32768/+32767 at 16 bits and -128/+127 at 8."""
        square = np.tile(np.array([1.0, -1.0], dtype=np.float32), 1000)[np.newaxis]
        wf16 = compute_peaks([square], 44100, 256, split_channels=False, bits=16)
        self.assertTrue(np.all(wf16.data[:, 0, 0] == -32768))
        self.assertTrue(np.all(wf16.data[:, 0, 1] == 32767))
        wf8 = compute_peaks([square], 44100, 256, split_channels=False, bits=8)
        self.assertTrue(np.all(wf8.data[:, 0, 0] == -128))
        self.assertTrue(np.all(wf8.data[:, 0, 1] == 127))

    def test_half_amplitude_sine(self) -> None:
        """A 0.5-amplitude sine hitting its crests exactly peaks at -16384/+16384 (8 bits: -64/+64)."""
        samples = audiogen.tone(1.0, freq=441.0, sample_rate=44100, channels=2, amplitude=0.5)
        wf16 = compute_peaks([samples], 44100, 441, split_channels=False, bits=16)
        self.assertEqual(wf16.length, 100)
        self.assertEqual(set(wf16.data[:, 0, 0].tolist()), {-16384})
        self.assertEqual(set(wf16.data[:, 0, 1].tolist()), {16384})
        wf8 = compute_peaks([samples], 44100, 441, split_channels=True, bits=8)
        self.assertEqual(wf8.channels, 2)
        self.assertEqual(set(wf8.data[:, :, 0].ravel().tolist()), {-64})
        self.assertEqual(set(wf8.data[:, :, 1].ravel().tolist()), {64})

    def test_sixteen_bit_samples_come_back_exactly(self) -> None:
        """Float samples decoded from 16-bit PCM (n / 32768) give back the integers n."""
        ints = np.array([[-32768, -3, -1, 0, 1, 3, 12345, 32767]], dtype=np.int16)
        wf = compute_peaks([ints_to_float(ints)], 8000, 2, split_channels=True, bits=16)
        self.assertEqual(to_json(wf)["data"], [-32768, -3, -1, 0, 1, 3, 12345, 32767])

    def test_merged_channels_average_truncating(self) -> None:
        """Merged channels are the integer mean of the channels, truncated toward zero (C division)."""
        left = np.array([-1, -3, 3, -32768, 32767, 5], dtype=np.int16)
        right = np.array([0, 0, 0, -32768, 32767, -6], dtype=np.int16)
        stereo = ints_to_float(np.stack([left, right]))
        wf = compute_peaks([stereo], 8000, 2, split_channels=False, bits=16)
        # Means: -0.5 -> 0, -1.5 -> -1, 1.5 -> 1, -32768, 32767, -0.5 -> 0.
        self.assertEqual(to_json(wf)["data"], [-1, 0, -32768, 1, 0, 32767])

    def test_eight_bit_truncates_toward_zero(self) -> None:
        """16 to 8 bits divides by 256 truncating toward zero, not flooring: -255 is 0, -256 is -1."""
        ints = np.array([[-1, -255, -256, -257, -32768, 255, 256, 511, 32767, 0]], dtype=np.int16)
        wf = compute_peaks([ints_to_float(ints)], 8000, 2, split_channels=True, bits=8)
        # Pixels: (-1, -255) (-256, -257) (-32768, 255) (256, 511) (32767, 0)
        self.assertEqual(to_json(wf)["data"], [0, 0, -1, -1, -128, 0, 1, 1, 0, 127])

    def test_split_keeps_channels_apart(self) -> None:
        """With split channels each channel has its own extremes, interleaved per pixel."""
        ints = np.array([[100, -100, 7, 7], [0, 50, -9, 9]], dtype=np.int16)
        wf = compute_peaks([ints_to_float(ints)], 8000, 2, split_channels=True, bits=16)
        self.assertEqual(wf.channels, 2)
        self.assertEqual(to_json(wf)["data"], [-100, 100, 0, 50, 7, 7, -9, 9])

    def test_last_partial_block(self) -> None:
        """Frames left over after the last whole pixel still make a pixel."""
        ints = np.array([[1, 2, 3, 4, 5, 6, 7]], dtype=np.int16)
        wf = compute_peaks([ints_to_float(ints)], 8000, 3, split_channels=False, bits=16)
        self.assertEqual(wf.length, 3)
        self.assertEqual(to_json(wf)["data"], [1, 3, 4, 6, 7, 7])

    def test_no_audio(self) -> None:
        """No blocks, or empty ones, give a waveform of length 0."""
        self.assertEqual(compute_peaks([], 44100, 256, split_channels=False, bits=8).length, 0)
        empty = np.zeros((2, 0), dtype=np.float32)
        wf = compute_peaks([empty], 44100, 256, split_channels=True, bits=16)
        self.assertEqual((wf.length, wf.channels), (0, 2))

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=1, max_value=3),
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=2, max_value=40),
        st.booleans(),
        st.sampled_from([8, 16]),
        st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    )
    def test_matches_audiowaveform_loop(
        self, seed: int, channels: int, frames: int, spp: int, split: bool, bits: int, cuts: list[int]
    ) -> None:
        """Any 16-bit signal, cut into blocks anywhere, gives exactly the port of audiowaveform's loop."""
        rng = np.random.default_rng(seed)
        ints = rng.integers(-32768, 32768, (channels, frames)).astype(np.int16)
        blocks = split_blocks(ints_to_float(ints), cuts)
        wf = compute_peaks(blocks, 22050, spp, split_channels=split, bits=bits)
        self.assertEqual(to_json(wf)["data"], reference_peaks(ints, spp, split, bits))

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=1, max_value=2),
        st.integers(min_value=1, max_value=5000),
        st.integers(min_value=2, max_value=700),
        st.lists(st.integers(min_value=0, max_value=5000), max_size=5),
    )
    def test_blocks_do_not_matter(
        self, seed: int, channels: int, frames: int, spp: int, cuts: list[int]
    ) -> None:
        """How the audio is cut into blocks never changes the result."""
        signal = random_signal(seed, channels, frames)
        for split in (False, True):
            whole = compute_peaks([signal], 44100, spp, split_channels=split, bits=16)
            pieces = compute_peaks(split_blocks(signal, cuts), 44100, spp, split_channels=split, bits=16)
            self.assertEqual(whole, pieces)

    def test_out_of_range_and_odd_input(self) -> None:
        """Clipped or non-finite floats never wrap around: beyond full scale clamps, NaN is silence."""
        samples = np.array([[1.5, -7.0, np.nan, np.nan]], dtype=np.float32)
        wf = compute_peaks([samples], 8000, 2, split_channels=True, bits=16)
        self.assertEqual(to_json(wf)["data"], [-32768, 32767, 0, 0])

    def test_rejects_bad_parameters(self) -> None:
        """Zooms out of bounds, odd bit depths, rates and block shapes raise ValueError."""
        block = np.zeros((2, 10), dtype=np.float32)
        for spp in (0, 1, MAX_SAMPLES_PER_PIXEL + 1):
            with self.assertRaises(ValueError):
                compute_peaks([block], 44100, spp, split_channels=False, bits=8)
        with self.assertRaises(ValueError):
            compute_peaks([block], 44100, 256, split_channels=False, bits=12)
        with self.assertRaises(ValueError):
            compute_peaks([block], 0, 256, split_channels=False, bits=8)
        with self.assertRaises(ValueError):
            compute_peaks([block, np.zeros((1, 10), dtype=np.float32)], 44100, 2, split_channels=True, bits=8)
        with self.assertRaises(ValueError):
            compute_peaks([np.zeros(10, dtype=np.float32)], 44100, 2, split_channels=True, bits=8)
        with self.assertRaises(ValueError):
            compute_peaks([np.zeros((2, 10), dtype=np.int16)], 44100, 2, split_channels=True, bits=8)
        with self.assertRaises(ValueError):
            compute_peaks([np.zeros((9, 10), dtype=np.float32)], 44100, 2, split_channels=True, bits=8)


class WaveformValueTests(unittest.SynchronousTestCase):
    """:class:`Waveform` checks its fields and keeps its data read-only."""

    def test_read_only(self) -> None:
        """The data cannot be written through the waveform; the caller's array is untouched."""
        data = np.zeros((2, 1, 2), dtype=np.int16)
        wf = Waveform(44100, 256, 16, 1, data)
        with self.assertRaises(ValueError):
            wf.data[0, 0, 0] = 1
        data[0, 0, 0] = 5
        self.assertTrue(data.flags.writeable)

    def test_rejects_inconsistent_fields(self) -> None:
        """Shapes, dtypes, channel counts, rates, zooms, depths and 8-bit ranges are checked."""
        good = np.zeros((2, 1, 2), dtype=np.int16)
        bad: list[dict[str, Any]] = [
            dict(data=good.astype(np.int32)),
            dict(data=np.zeros((2, 2, 2), dtype=np.int16)),
            dict(channels=0, data=np.zeros((2, 0, 2), dtype=np.int16)),
            dict(channels=9, data=np.zeros((2, 9, 2), dtype=np.int16)),
            dict(sample_rate=0),
            dict(samples_per_pixel=1),
            dict(bits=12),
            dict(bits=8, data=np.full((2, 1, 2), 200, dtype=np.int16)),
        ]
        for changes in bad:
            fields: dict[str, Any] = dict(
                sample_rate=44100, samples_per_pixel=256, bits=16, channels=1, data=good
            )
            fields.update(changes)
            with self.assertRaises(ValueError, msg=repr(changes)):
                Waveform(**fields)

    def test_pickles_for_the_worker_pool(self) -> None:
        """A waveform and the job function pickle; the copy is equal and read-only too."""
        wf = compute_peaks([random_signal(4, 2, 3000)], 44100, 256, split_channels=True, bits=8)
        copy = pickle.loads(pickle.dumps(wf))
        self.assertEqual(copy, wf)
        self.assertFalse(copy.data.flags.writeable)
        self.assertIs(pickle.loads(pickle.dumps(generate)), generate)

    def test_length_and_duration(self) -> None:
        """``length`` counts pixels and ``duration_s`` is ``length * spp / rate``."""
        wf = Waveform(1000, 100, 8, 2, np.zeros((7, 2, 2), dtype=np.int16))
        self.assertEqual(wf.length, 7)
        self.assertAlmostEqual(wf.duration_s, 0.7)


class RescaleTests(unittest.SynchronousTestCase):
    """:func:`rescale` reduces to coarser zooms like audiowaveform's rescaler."""

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=1, max_value=2),
        st.integers(min_value=0, max_value=6000),
        st.integers(min_value=2, max_value=300),
        st.integers(min_value=2, max_value=9),
        st.sampled_from([8, 16]),
    )
    def test_multiple_equals_direct(
        self, seed: int, channels: int, frames: int, spp: int, factor: int, bits: int
    ) -> None:
        """Rescaling to a whole multiple of the zoom equals computing at that zoom directly."""
        signal = random_signal(seed, channels, frames)
        for split in (False, True):
            fine = compute_peaks([signal], 44100, spp, split_channels=split, bits=bits)
            direct = compute_peaks([signal], 44100, spp * factor, split_channels=split, bits=bits)
            self.assertEqual(rescale(fine, spp * factor), direct)

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=0, max_value=60),
        st.integers(min_value=1, max_value=2),
        st.integers(min_value=2, max_value=50),
        st.integers(min_value=1, max_value=200),
    )
    def test_matches_audiowaveform_rescaler(
        self, seed: int, length: int, channels: int, spp: int, extra: int
    ) -> None:
        """Any coarser zoom, whole multiple or not, gives exactly the port of audiowaveform's rescaler."""
        rng = np.random.default_rng(seed)
        low = rng.integers(-32768, 32768, (length, channels))
        high = rng.integers(-32768, 32768, (length, channels))
        data = np.stack([np.minimum(low, high), np.maximum(low, high)], axis=-1).astype(np.int16)
        wf = Waveform(44100, spp, 16, channels, data)
        out = rescale(wf, spp + extra)
        self.assertEqual(out.samples_per_pixel, spp + extra)
        self.assertEqual(out.data.tolist(), reference_rescale(data, spp, spp + extra))

    def test_same_zoom_and_finer_zoom(self) -> None:
        """The same zoom returns the waveform itself; a finer one is refused."""
        wf = compute_peaks([random_signal(1, 1, 1000)], 44100, 256, split_channels=False, bits=8)
        self.assertIs(rescale(wf, 256), wf)
        with self.assertRaises(ValueError):
            rescale(wf, 255)
        with self.assertRaises(ValueError):
            rescale(wf, MAX_SAMPLES_PER_PIXEL + 1)

    def test_bit_depth_commutes(self) -> None:
        """Rescaling then converting to 8 bits equals converting then rescaling."""
        wf = compute_peaks([random_signal(2, 2, 20000)], 44100, 64, split_channels=True, bits=16)
        self.assertEqual(convert_bits(rescale(wf, 640), 8), rescale(convert_bits(wf, 8), 640))


class ConvertBitsTests(unittest.SynchronousTestCase):
    """:func:`convert_bits` converts like audiowaveform's loader and writer."""

    def test_both_ways(self) -> None:
        """16 to 8 truncates toward zero; 8 to 16 multiplies by 256; same depth is a no-op."""
        data = np.array([[[-32768, -257]], [[-255, 255]], [[256, 32767]]], dtype=np.int16)
        wf = Waveform(8000, 2, 16, 1, data)
        eight = convert_bits(wf, 8)
        self.assertEqual(eight.data.ravel().tolist(), [-128, -1, 0, 0, 1, 127])
        self.assertEqual(convert_bits(eight, 16).data.ravel().tolist(), [-32768, -256, 0, 0, 256, 32512])
        self.assertIs(convert_bits(wf, 16), wf)
        with self.assertRaises(ValueError):
            convert_bits(wf, 24)

    def test_computing_at_eight_bits_equals_converting(self) -> None:
        """Computing at 8 bits gives the same as computing at 16 and converting."""
        signal = random_signal(3, 2, 9999)
        for split in (False, True):
            wf16 = compute_peaks([signal], 44100, 100, split_channels=split, bits=16)
            wf8 = compute_peaks([signal], 44100, 100, split_channels=split, bits=8)
            self.assertEqual(convert_bits(wf16, 8), wf8)


class WindowTests(unittest.SynchronousTestCase):
    """:func:`window` slices a whole track's waveform on its pixel grid."""

    def setUp(self) -> None:
        data = np.arange(20 * 2, dtype=np.int16).reshape(20, 1, 2)
        self.wf = Waveform(1000, 100, 16, 1, data)  # 0.1 s per pixel, 2 s long

    def test_covering_pixels(self) -> None:
        """The window holds the pixel of the start through the pixel just before the end."""
        part = window(self.wf, 0.25, 0.55)
        self.assertEqual(part.data[:, 0, 0].tolist(), [4, 6, 8, 10])
        self.assertEqual((part.samples_per_pixel, part.sample_rate, part.bits), (100, 1000, 16))

    def test_open_and_past_the_end(self) -> None:
        """No end means the end of the track; a window past the end is empty."""
        self.assertEqual(window(self.wf, 1.95, None).length, 1)
        self.assertEqual(window(self.wf, 0.0, math.inf).length, 20)
        self.assertEqual(window(self.wf, 5.0, 6.0).length, 0)
        self.assertEqual(window(self.wf, 0.5, 0.5).length, 0)

    def test_rejects_bad_spans(self) -> None:
        """A negative, non-finite or reversed span raises ValueError."""
        for start, end in ((-1.0, None), (math.nan, None), (math.inf, None), (2.0, 1.0), (0.0, math.nan)):
            with self.assertRaises(ValueError):
                window(self.wf, start, end)


class DatFormatTests(unittest.SynchronousTestCase):
    """:func:`to_dat` writes audiowaveform's binary format; :func:`from_dat` reads it strictly."""

    def stereo_8bit(self) -> Waveform:
        """A known two-pixel stereo 8-bit waveform."""
        data = np.array([[[-65, 63], [-66, 64]], [[-1, 1], [0, 0]]], dtype=np.int16)
        return Waveform(48000, 512, 8, 2, data)

    def test_v2_header_bytes(self) -> None:
        """Stereo writes version 2: 24 bytes of header, then int8 pairs interleaved by channel."""
        payload = to_dat(self.stereo_8bit())
        self.assertEqual(
            payload[:24],
            bytes.fromhex("020000000100000080bb0000000200000200000002000000"),
        )
        self.assertEqual(payload[24:], struct.pack("<8b", -65, 63, -66, 64, -1, 1, 0, 0))

    def test_mono_is_version_1_like_audiowaveform(self) -> None:
        """One channel writes version 1 (20-byte header, no channel count) unless version 2 is forced."""
        wf = Waveform(44100, 256, 16, 1, np.array([[[-300, 400]]], dtype=np.int16))
        v1 = to_dat(wf)
        self.assertEqual(v1, struct.pack("<iIiiI2h", 1, 0, 44100, 256, 1, -300, 400))
        v2 = to_dat(wf, version=2)
        self.assertEqual(v2, struct.pack("<iIiiIi2h", 2, 0, 44100, 256, 1, 1, -300, 400))
        self.assertEqual(from_dat(v1), wf)
        self.assertEqual(from_dat(v2), wf)
        with self.assertRaises(ValueError):
            to_dat(self.stereo_8bit(), version=1)
        with self.assertRaises(ValueError):
            to_dat(wf, version=3)

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=1, max_value=8),
        st.integers(min_value=0, max_value=50),
        st.sampled_from([8, 16]),
    )
    def test_round_trip(self, seed: int, channels: int, length: int, bits: int) -> None:
        """Any waveform survives to_dat and from_dat unchanged."""
        rng = np.random.default_rng(seed)
        top = 128 if bits == 8 else 32768
        a = rng.integers(-top, top, (length, channels))
        b = rng.integers(-top, top, (length, channels))
        data = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=-1).astype(np.int16)
        wf = Waveform(int(rng.integers(1, 200000)), int(rng.integers(2, 5000)), bits, channels, data)
        self.assertEqual(from_dat(to_dat(wf)), wf)

    def test_rejects_malformed(self) -> None:
        """Short, long, unknown-version, unknown-flag and out-of-range files raise ValueError."""
        good = to_dat(self.stereo_8bit())
        header = struct.Struct("<iIiiIi")

        def with_header(*fields: int) -> bytes:
            return header.pack(*fields) + good[24:]

        bad = {
            "empty": b"",
            "short header": good[:19],
            "v2 without channels": good[:22],
            "truncated data": good[:-1],
            "trailing data": good + b"\0",
            "version 3": with_header(3, 1, 48000, 512, 2, 2),
            "version 0": with_header(0, 1, 48000, 512, 2, 2),
            "unknown flag": with_header(2, 3, 48000, 512, 2, 2),
            "rate 0": with_header(2, 1, 0, 512, 2, 2),
            "zoom 1": with_header(2, 1, 48000, 1, 2, 2),
            "no channels": with_header(2, 1, 48000, 512, 2, 0),
            "nine channels": with_header(2, 1, 48000, 512, 2, 9),
            "length too long": with_header(2, 1, 48000, 512, 3, 2),
            "min above max": good[:24] + struct.pack("<8b", 5, 4, 0, 0, 0, 0, 0, 0),
        }
        for name, payload in bad.items():
            with self.assertRaises(ValueError, msg=name):
                from_dat(payload)

    def test_accepts_buffers(self) -> None:
        """bytearray and memoryview inputs parse like bytes."""
        payload = to_dat(self.stereo_8bit())
        self.assertEqual(from_dat(bytearray(payload)), self.stereo_8bit())
        self.assertEqual(from_dat(memoryview(payload)), self.stereo_8bit())


class JsonFormatTests(unittest.SynchronousTestCase):
    """:func:`to_json` is audiowaveform's JSON, key order included."""

    def test_shape_and_order(self) -> None:
        """Keys come in audiowaveform's order with data interleaved by pixel, channel, min/max."""
        data = np.array([[[-65, 63], [-66, 64]], [[-1, 1], [0, 0]]], dtype=np.int16)
        doc = to_json(Waveform(48000, 512, 8, 2, data))
        self.assertEqual(
            list(doc), ["version", "channels", "sample_rate", "samples_per_pixel", "bits", "length", "data"]
        )
        self.assertEqual(doc["version"], 2)
        self.assertEqual(doc["length"], 2)
        self.assertEqual(doc["data"], [-65, 63, -66, 64, -1, 1, 0, 0])
        self.assertTrue(all(type(v) is int for v in doc["data"]))

    def test_exact_text(self) -> None:
        """to_json_bytes is compact, newline-terminated JSON, as audiowaveform writes it."""
        wf = Waveform(44100, 256, 16, 1, np.array([[[-300, 400]], [[0, 1]]], dtype=np.int16))
        self.assertEqual(
            to_json_bytes(wf),
            b'{"version":2,"channels":1,"sample_rate":44100,"samples_per_pixel":256,'
            b'"bits":16,"length":2,"data":[-300,400,0,1]}\n',
        )


class WavesurferTests(unittest.SynchronousTestCase):
    """:func:`to_wavesurfer` gives wavesurfer.js v7 one float array per channel."""

    def test_shape(self) -> None:
        """Each channel's min/max pairs in pixel order, divided by 128 at 8 bits, with the duration."""
        data = np.array([[[-128, 64], [-32, 127]], [[0, 1], [-1, 0]]], dtype=np.int16)
        doc = to_wavesurfer(Waveform(48000, 512, 8, 2, data), 12.5)
        self.assertEqual(list(doc), ["duration", "peaks"])
        self.assertEqual(doc["duration"], 12.5)
        self.assertEqual(doc["peaks"], [[-1.0, 0.5, 0.0, 0.0078], [-0.25, 0.9922, -0.0078, 0.0]])

    def test_sixteen_bits(self) -> None:
        """At 16 bits values are divided by 32768 and stay within -1..1."""
        data = np.array([[[-32768, 32767]]], dtype=np.int16)
        doc = to_wavesurfer(Waveform(44100, 256, 16, 1, data), 0.0)
        self.assertEqual(doc["peaks"], [[-1.0, 1.0]])
        self.assertEqual(json.loads(json.dumps(doc)), doc)

    def test_rejects_bad_duration(self) -> None:
        """A negative or non-finite duration raises ValueError."""
        wf = Waveform(44100, 256, 16, 1, np.zeros((1, 1, 2), dtype=np.int16))
        for duration in (-1.0, math.nan, math.inf):
            with self.assertRaises(ValueError):
                to_wavesurfer(wf, duration)


class GenerateTests(unittest.SynchronousTestCase):
    """:func:`generate` decodes real files and computes their waveform."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.wav = audiogen.write_tone(self.dir / "tone.wav", "wav", 1.0, freq=441.0, amplitude=0.5)

    def test_wav(self) -> None:
        """A 16-bit WAV gives the same waveform as computing on its exact samples."""
        samples, rate = audiogen.decode(self.wav)
        for split in (False, True):
            for bits in (8, 16):
                wf = generate(str(self.wav), bits=bits, split_channels=split)
                self.assertEqual(wf, compute_peaks([samples], rate, 256, split_channels=split, bits=bits))
        wf = generate(str(self.wav), bits=16)
        self.assertEqual((wf.length, wf.channels, wf.samples_per_pixel, wf.sample_rate), (173, 1, 256, 44100))
        self.assertEqual(int(wf.data[:, 0, 1].max()), 16384)

    def test_pixels_per_second(self) -> None:
        """pixels_per_second sets the zoom to ``rate // pixels_per_second``, like audiowaveform."""
        self.assertEqual(generate(str(self.wav), pixels_per_second=100).samples_per_pixel, 441)
        self.assertEqual(samples_per_pixel_for(7, 44100), 6300)
        with self.assertRaises(ValueError):
            samples_per_pixel_for(2000, 3000)  # a zoom of 1

    def test_window(self) -> None:
        """start and end decode only that part; its first pixel starts at the start."""
        wf = generate(str(self.wav), samples_per_pixel=441, start_s=0.25, end_s=0.5)
        self.assertEqual(wf.length, 25)

    def test_other_formats(self) -> None:
        """Lossy and lossless formats all decode; levels stay close to the tone's."""
        for fmt in ("flac", "mp3", "ogg", "m4a", "opus"):
            path = audiogen.write_tone(self.dir / f"tone.{fmt}", fmt, 1.0, amplitude=0.5)
            wf = generate(str(path), bits=8)
            self.assertTrue(60 <= int(wf.data[:, 0, 1].max()) <= 70, f"{fmt}: {wf.data[:, 0, 1].max()}")

    def test_rejects_bad_parameters_before_reading(self) -> None:
        """Out-of-bounds parameters raise ValueError, even for a file that does not exist."""
        missing = str(self.dir / "missing.wav")
        bad: list[dict[str, object]] = [
            dict(samples_per_pixel=1),
            dict(samples_per_pixel=2**21),
            dict(pixels_per_second=0),
            dict(pixels_per_second=2001),
            dict(samples_per_pixel=256, pixels_per_second=100),
            dict(bits=4),
            dict(start_s=-1.0),
            dict(start_s=2.0, end_s=1.0),
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                generate(missing, **kwargs)  # type: ignore[arg-type]

    def test_undecodable(self) -> None:
        """A missing or non-audio file raises DecodeError."""
        with self.assertRaises(DecodeError):
            generate(str(self.dir / "missing.wav"))
        junk = self.dir / "junk.wav"
        junk.write_bytes(b"this is not audio at all" * 10)
        with self.assertRaises(DecodeError):
            generate(str(junk))


class AudiowaveformComparisonTests(unittest.SynchronousTestCase):
    """The same WAV file through BBC audiowaveform and through us gives the same data."""

    def setUp(self) -> None:
        self.program = shutil.which("audiowaveform")
        if self.program is None:
            raise unittest.SkipTest(NO_AUDIOWAVEFORM)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        rng = np.random.default_rng(7)
        music = audiogen.tone(3.0, freq=220.0, amplitude=0.6) + rng.normal(0, 0.1, (2, 132300)).astype(
            np.float32
        )
        music[1] *= 0.5
        self.wav = audiogen.write_samples(self.dir / "music.wav", "wav", music, 44100)

    def run_audiowaveform(self, output: Path, *flags: str) -> bytes:
        """Run the real program and return what it wrote."""
        assert self.program is not None
        subprocess.run(
            [self.program, "-i", str(self.wav), "-o", str(output), *flags],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return output.read_bytes()

    def assert_close(self, theirs: list[int], ours: list[int]) -> None:
        """Same length, every value within 1."""
        self.assertEqual(len(theirs), len(ours))
        self.assertLessEqual(int(np.abs(np.array(theirs) - np.array(ours)).max(initial=0)), 1)

    def test_json_and_dat(self) -> None:
        """JSON and .dat agree (headers exactly, values within 1) at 8 and 16 bits, merged and split."""
        for bits in (8, 16):
            for split in (False, True):
                flags = ["-z", "256", "-b", str(bits)] + (["--split-channels"] if split else [])
                ours = generate(str(self.wav), samples_per_pixel=256, bits=bits, split_channels=split)
                theirs_json = json.loads(self.run_audiowaveform(self.dir / "out.json", *flags))
                mine = to_json(ours)
                self.assertEqual(
                    {k: v for k, v in theirs_json.items() if k != "data"},
                    {k: v for k, v in mine.items() if k != "data"},
                )
                self.assert_close(theirs_json["data"], mine["data"])
                theirs_dat = self.run_audiowaveform(self.dir / "out.dat", *flags)
                header = 20 if ours.channels == 1 else 24
                self.assertEqual(theirs_dat[:header], to_dat(ours)[:header])
                parsed = from_dat(theirs_dat)
                self.assert_close(parsed.data.ravel().tolist(), ours.data.ravel().tolist())


class WaveformCliTests(unittest.SynchronousTestCase):
    """``streamsrv waveform`` writes files like audiowaveform and reports mistakes."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.wav = audiogen.write_tone(self.dir / "tone.wav", "wav", 1.0, amplitude=0.5)

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        """Run the command with captured output."""
        out, err = io.StringIO(), io.StringIO()
        status = waveform_cli(list(argv), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def test_json_output(self) -> None:
        """An audio file becomes audiowaveform JSON, 16 bits and 256 samples per pixel by default."""
        target = self.dir / "tone.json"
        status, out, err = self.run_cli(str(self.wav), "-o", str(target))
        self.assertEqual((status, err), (0, ""))
        self.assertIn("173 points", out)
        doc = json.loads(target.read_bytes())
        self.assertEqual(
            (doc["bits"], doc["samples_per_pixel"], doc["channels"], doc["length"]), (16, 256, 1, 173)
        )
        self.assertTrue(target.read_bytes().endswith(b"}\n"))

    def test_dat_output_with_flags(self) -> None:
        """Flags set zoom, depth and channels of a .dat file."""
        target = self.dir / "tone.dat"
        status, _, err = self.run_cli(
            str(self.wav), "-o", str(target), "-z", "512", "-b", "8", "--split-channels"
        )
        self.assertEqual((status, err), (0, ""))
        wf = from_dat(target.read_bytes())
        self.assertEqual((wf.bits, wf.samples_per_pixel, wf.channels, wf.length), (8, 512, 2, 87))
        status, _, _ = self.run_cli(
            str(self.wav), "-o", str(target), "--pixels-per-second", "10", "-s", "0.5"
        )
        self.assertEqual(status, 0)
        wf = from_dat(target.read_bytes())
        self.assertEqual((wf.bits, wf.samples_per_pixel, wf.length), (16, 4410, 5))

    def test_dat_input(self) -> None:
        """A .dat input converts to JSON keeping its depth, or rescales and changes depth on request."""
        source = self.dir / "fine.dat"
        self.assertEqual(self.run_cli(str(self.wav), "-o", str(source), "-b", "8")[0], 0)
        converted = self.dir / "converted.json"
        self.assertEqual(self.run_cli(str(source), "-o", str(converted))[0], 0)
        doc = json.loads(converted.read_bytes())
        self.assertEqual((doc["bits"], doc["samples_per_pixel"]), (8, 256))
        coarse = self.dir / "coarse.dat"
        self.assertEqual(self.run_cli(str(source), "-o", str(coarse), "-z", "1024", "-b", "16")[0], 0)
        expected = convert_bits(rescale(from_dat(source.read_bytes()), 1024), 16)
        self.assertEqual(from_dat(coarse.read_bytes()), expected)
        status, _, err = self.run_cli(str(source), "-o", str(coarse), "-z", "128")
        self.assertEqual(status, 2)
        self.assertIn("finer zoom", err)

    def test_bad_flags(self) -> None:
        """Unknown flags, bad values and conflicting or missing options exit 2 with the usage line."""
        target = str(self.dir / "out.json")
        cases = [
            [str(self.wav), "-o", target, "--frobnicate"],
            [str(self.wav), "-o", target, "-b", "12"],
            [str(self.wav), "-o", target, "-z", "abc"],
            [str(self.wav), "-o", target, "-z", "1"],
            [str(self.wav), "-o", target, "--pixels-per-second", "0"],
            [str(self.wav), "-o", target, "-z", "256", "--pixels-per-second", "100"],
            [str(self.wav), "-o", str(self.dir / "out.png")],
            [str(self.wav), "-o", target, "-s", "2", "-e", "1"],
            [str(self.wav)],
            [],
        ]
        for argv in cases:
            status, _, err = self.run_cli(*argv)
            self.assertEqual(status, 2, argv)
            self.assertIn("usage: streamsrv waveform", err, argv)
        self.assertFalse((self.dir / "out.json").exists())

    def test_help(self) -> None:
        """--help prints the usage to the output stream and exits 0."""
        status, out, _ = self.run_cli("--help")
        self.assertEqual(status, 0)
        self.assertIn("--split-channels", out)

    def test_missing_and_bad_input(self) -> None:
        """A missing, undecodable or malformed input exits 1 and writes nothing."""
        target = self.dir / "out.json"
        status, _, err = self.run_cli(str(self.dir / "missing.wav"), "-o", str(target))
        self.assertEqual(status, 1)
        self.assertIn("no such file", err)
        junk = self.dir / "junk.mp3"
        junk.write_bytes(b"\x00" * 1000)
        self.assertEqual(self.run_cli(str(junk), "-o", str(target))[0], 1)
        bad_dat = self.dir / "bad.dat"
        bad_dat.write_bytes(b"\x07" * 30)
        self.assertEqual(self.run_cli(str(bad_dat), "-o", str(target))[0], 1)
        self.assertFalse(target.exists())

    def test_unwritable_output(self) -> None:
        """An output in a missing directory exits 1."""
        status, _, err = self.run_cli(str(self.wav), "-o", str(self.dir / "no" / "such" / "out.json"))
        self.assertEqual(status, 1)
        self.assertIn("cannot write", err)

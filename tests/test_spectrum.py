"""Tests for :mod:`streamsrv.audio.spectrum`: tones land where they should, bounded output."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.audio.decode import DecodeError
from streamsrv.audio.spectrum import (
    DEFAULT_BANDS,
    FLOOR_DB,
    MAX_SPECTROGRAM_CELLS,
    PNG_LOW_HZ,
    WINDOWS,
    Spectrum,
    SpectrumParams,
    analyse,
    generate,
    generate_json,
    generate_png,
    to_json,
    to_png,
)
from tests import audiogen
from tests.test_png import decode_png


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 1.0) -> npt.NDArray[np.float32]:
    """A mono sine as a ``(1, n)`` block."""
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    return (amplitude * np.sin(2.0 * np.pi * freq * t)).astype(np.float32)[np.newaxis]


def noise(seconds: float, sample_rate: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Uniform white noise in [-1, 1] as a ``(1, n)`` block."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (1, round(seconds * sample_rate))).astype(np.float32)


def bin_of(spectrum: Spectrum, freq: float) -> int:
    """The bin whose centre is nearest ``freq``."""
    return round(freq * spectrum.fft_size / spectrum.sample_rate)


class SpectrumParamsTests(unittest.SynchronousTestCase):
    """:class:`SpectrumParams` has the documented defaults and refuses absurd values."""

    def test_defaults(self) -> None:
        """4096-point Hann frames every 1024 samples, 2000 columns, seven named bands."""
        params = SpectrumParams()
        self.assertEqual(
            (params.fft_size, params.hop, params.window, params.max_frames), (4096, 1024, "hann", 2000)
        )
        self.assertEqual(params.bands, DEFAULT_BANDS)
        self.assertEqual((params.bins, params.max_columns), (2049, 2000))

    def test_column_cap_fits_cell_budget(self) -> None:
        """Large FFTs lower the column cap so columns times bins stays within budget."""
        params = SpectrumParams(fft_size=65536, hop=16384)
        self.assertEqual(params.max_columns, MAX_SPECTROGRAM_CELLS // 32769)
        self.assertLessEqual(params.max_columns * params.bins, MAX_SPECTROGRAM_CELLS)

    def test_rejects_absurd_values(self) -> None:
        """Odd FFT sizes, hops, windows, frame caps and bands raise ValueError."""
        bad: list[dict[str, object]] = [
            dict(fft_size=1000),
            dict(fft_size=128, hop=64),
            dict(fft_size=131072),
            dict(fft_size=True),
            dict(hop=4097),
            dict(hop=255),
            dict(hop=0),
            dict(window="kaiser"),
            dict(max_frames=0),
            dict(max_frames=10001),
            dict(bands=()),
            dict(bands=((100.0, 50.0),)),
            dict(bands=((-1.0, 50.0),)),
            dict(bands=((math.nan, 50.0),)),
            dict(bands=((1.0, 2e6),)),
            dict(bands=((1.0, 2.0, 3.0),)),
            dict(bands=tuple((float(i), float(i + 1)) for i in range(33))),
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                SpectrumParams(**kwargs)  # type: ignore[arg-type]

    def test_bands_normalised(self) -> None:
        """Band edges given as ints or lists become float pairs."""
        params = SpectrumParams(bands=([100, 200],))  # type: ignore[arg-type]
        self.assertEqual(params.bands, ((100.0, 200.0),))


class ToneTests(unittest.SynchronousTestCase):
    """Pure tones are found at their frequency and level."""

    def test_peak_frequency(self) -> None:
        """A tone's spectrum peaks at its frequency (within one bin) at several rates and frequencies."""
        for rate in (8000, 22050, 44100, 48000, 96000):
            for freq in (100.0, 440.0, 1000.0, 3333.3, 0.3 * rate):
                spectrum = analyse([sine(freq, 1.0, rate, 0.5)], rate, SpectrumParams())
                bin_hz = rate / 4096
                self.assertLessEqual(abs(spectrum.peak_hz - freq), bin_hz, (rate, freq))
                self.assertLessEqual(
                    abs(int(np.argmax(spectrum.average_db)) - freq / bin_hz), 1.0, (rate, freq)
                )

    def test_full_scale_is_zero_dbfs(self) -> None:
        """A full-scale sine peaks at 0 dBFS within 0.5 dB, with every window, on and between bins."""
        rate = 44100
        for window in WINDOWS:
            for offset in (0.0, 0.25, 0.5):
                freq = (93 + offset) * rate / 4096
                spectrum = analyse([sine(freq, 1.0, rate)], rate, SpectrumParams(window=window))
                self.assertLessEqual(abs(spectrum.peak_db), 0.5, (window, offset))
                self.assertLessEqual(abs(spectrum.peak_hz - freq), 0.1 * rate / 4096, (window, offset))

    def test_two_tones(self) -> None:
        """Two tones give two peaks at their frequencies and levels, well above what lies between."""
        rate = 44100
        mix = sine(300.0, 2.0, rate, 0.5) + sine(5000.0, 2.0, rate, 0.25)
        spectrum = analyse([mix], rate, SpectrumParams())
        low, high = bin_of(spectrum, 300.0), bin_of(spectrum, 5000.0)
        average = spectrum.average_db
        self.assertEqual(int(np.argmax(average[low - 3 : low + 4])), 3)
        self.assertEqual(int(np.argmax(average[high - 3 : high + 4])), 3)
        self.assertLess(abs(float(average[low - 1 : low + 2].max()) - (-6.02)), 1.5)
        self.assertLess(abs(float(average[high - 1 : high + 2].max()) - (-12.04)), 1.5)
        self.assertLess(float(average[(low + high) // 2]), -80.0)

    def test_band_energies(self) -> None:
        """A 100 Hz tone puts its energy in "bass", at its level, and little elsewhere."""
        rate = 44100
        spectrum = analyse([sine(100.0, 2.0, rate, 0.5)], rate, SpectrumParams())
        names = [band.name for band in spectrum.bands]
        self.assertEqual(names, ["sub-bass", "bass", "low-mid", "mid", "high-mid", "presence", "brilliance"])
        loudest = max(spectrum.bands, key=lambda band: band.db)
        self.assertEqual(loudest.name, "bass")
        self.assertLess(abs(loudest.db - (-6.02)), 0.1)
        self.assertTrue(all(band.db < loudest.db - 40 for band in spectrum.bands if band is not loudest))

    def test_custom_band_names(self) -> None:
        """A band outside the standard set is named by its edges; one above Nyquist reads the floor."""
        params = SpectrumParams(bands=((900.0, 1100.0), (5000.0, 6000.0)))
        spectrum = analyse([sine(1000.0, 1.0, 8000)], 8000, params)
        self.assertEqual([b.name for b in spectrum.bands], ["900-1100 Hz", "5000-6000 Hz"])
        self.assertLess(abs(spectrum.bands[0].db), 0.1)
        self.assertEqual(spectrum.bands[1].db, FLOOR_DB)

    def test_centroid_of_a_tone(self) -> None:
        """A tone's spectral centroid is its frequency, overall and in every column."""
        rate = 48000
        for window in WINDOWS:
            spectrum = analyse([sine(2500.0, 2.0, rate, 0.3)], rate, SpectrumParams(window=window))
            self.assertLess(abs(spectrum.centroid_hz - 2500.0), rate / 4096, window)
            self.assertTrue(np.all(np.abs(spectrum.centroid_per_column_hz - 2500.0) < rate / 4096), window)

    def test_white_noise(self) -> None:
        """White noise rolls off high (85 % of the Nyquist frequency) and centres at half of it."""
        rate = 44100
        spectrum = analyse([noise(3.0, rate)], rate, SpectrumParams())
        nyquist = rate / 2
        self.assertGreater(spectrum.rolloff_hz, 0.8 * nyquist)
        self.assertLess(spectrum.rolloff_hz, 0.9 * nyquist)
        self.assertLess(abs(spectrum.centroid_hz - nyquist / 2), 0.05 * nyquist)

    def test_tone_rolloff(self) -> None:
        """A tone's roll-off is at the tone."""
        spectrum = analyse([sine(1000.0, 1.0, 44100)], 44100, SpectrumParams())
        self.assertLessEqual(abs(spectrum.rolloff_hz - 1000.0), 44100 / 4096)


class AnalyseTests(unittest.SynchronousTestCase):
    """:func:`analyse` streams, mixes down and bounds its output."""

    def test_stereo_mixdown(self) -> None:
        """Identical channels analyse like the mono signal; opposite ones cancel to silence."""
        mono = sine(700.0, 1.0, 22050, 0.5)
        stereo = analyse([np.vstack([mono, mono])], 22050, SpectrumParams())
        single = analyse([mono], 22050, SpectrumParams())
        np.testing.assert_allclose(stereo.average_db, single.average_db, atol=1e-3)
        cancelled = analyse([np.vstack([mono, -mono])], 22050, SpectrumParams())
        self.assertEqual(cancelled.peak_db, FLOOR_DB)
        self.assertEqual(cancelled.centroid_hz, 0.0)

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.lists(st.integers(min_value=0, max_value=30000), max_size=6),
    )
    def test_blocks_do_not_matter(self, seed: int, cuts: list[int]) -> None:
        """How the audio is cut into blocks never changes the result."""
        signal = noise(0.7, 44100, seed) * 0.3 + sine(440.0, 0.7, 44100, 0.3)
        edges = sorted({0, signal.shape[1], *(c % signal.shape[1] for c in cuts)})
        blocks = [signal[:, a:b] for a, b in itertools.pairwise(edges)]
        params = SpectrumParams(fft_size=1024, hop=256, max_frames=7)
        whole = analyse([signal], 44100, params)
        pieces = analyse(blocks, 44100, params)
        self.assertEqual(whole.frames, pieces.frames)
        np.testing.assert_allclose(whole.spectrogram_db, pieces.spectrogram_db, atol=1e-3)
        np.testing.assert_allclose(whole.average_db, pieces.average_db, atol=1e-3)

    def test_frame_cap(self) -> None:
        """Long audio keeps between half of and all of max_frames columns, each a power-of-two group."""
        rate = 8000
        params = SpectrumParams(fft_size=256, hop=64, max_frames=50)
        spectrum = analyse([noise(10.0, rate)], rate, params)
        self.assertEqual(spectrum.frames, (80000 - 256) // 64 + 1)
        columns = spectrum.spectrogram_db.shape[0]
        self.assertTrue(25 <= columns <= 50, columns)
        self.assertEqual(spectrum.frames_per_column, 32)
        self.assertEqual(columns, -(-spectrum.frames // spectrum.frames_per_column))
        self.assertEqual(spectrum.spectrogram_db.dtype, np.float32)
        self.assertEqual(spectrum.centroid_per_column_hz.shape, (columns,))
        self.assertAlmostEqual(spectrum.seconds_per_column, 32 * 64 / rate)

    @given(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=1, max_value=120),
        st.integers(min_value=1, max_value=40),
    )
    def test_columns_are_frame_averages(self, seed: int, frame_count: int, max_frames: int) -> None:
        """Each capped column is the power mean of its consecutive frames of the uncapped spectrogram."""
        fft, hop = 256, 64
        samples = fft + (frame_count - 1) * hop
        signal = np.random.default_rng(seed).uniform(-1, 1, (1, samples)).astype(np.float32)
        full = analyse([signal], 8000, SpectrumParams(fft_size=fft, hop=hop, max_frames=200))
        capped = analyse([signal], 8000, SpectrumParams(fft_size=fft, hop=hop, max_frames=max_frames))
        self.assertEqual(full.spectrogram_db.shape[0], frame_count)
        group = capped.frames_per_column
        columns = capped.spectrogram_db.shape[0]
        self.assertLessEqual(columns, max_frames)
        self.assertEqual(columns, -(-frame_count // group))
        power = np.power(10.0, full.spectrogram_db.astype(np.float64) / 10.0)
        expected = [power[j * group : (j + 1) * group].mean(axis=0) for j in range(columns)]
        np.testing.assert_allclose(capped.spectrogram_db, 10.0 * np.log10(expected), atol=1e-3)

    def test_short_and_empty(self) -> None:
        """Audio shorter than a frame is one zero-padded frame; no audio gives an empty spectrum."""
        short = analyse([sine(1000.0, 0.01, 44100)], 44100, SpectrumParams())
        self.assertEqual((short.frames, short.spectrogram_db.shape[0]), (1, 1))
        self.assertLess(abs(short.peak_hz - 1000.0), 2 * 44100 / 4096)
        empty = analyse([], 44100, SpectrumParams())
        self.assertEqual((empty.frames, empty.spectrogram_db.shape), (0, (0, 2049)))
        self.assertTrue(np.all(empty.average_db == FLOOR_DB))
        self.assertEqual(
            (empty.peak_hz, empty.peak_db, empty.centroid_hz, empty.rolloff_hz), (0.0, FLOOR_DB, 0.0, 0.0)
        )
        self.assertEqual(empty.duration_s, 0.0)

    def test_silence(self) -> None:
        """Digital silence reads the floor everywhere."""
        spectrum = analyse([np.zeros((2, 44100), dtype=np.float32)], 44100, SpectrumParams())
        self.assertTrue(np.all(spectrum.spectrogram_db == FLOOR_DB))
        self.assertTrue(all(band.db == FLOOR_DB for band in spectrum.bands))

    def test_rejects_bad_input(self) -> None:
        """A bad rate or block shape raises ValueError."""
        with self.assertRaises(ValueError):
            analyse([], 0, SpectrumParams())
        with self.assertRaises(ValueError):
            analyse([np.zeros(10, dtype=np.float32)], 8000, SpectrumParams())
        with self.assertRaises(ValueError):
            analyse([np.zeros((1, 10), dtype=np.int16)], 8000, SpectrumParams())


class ToJsonTests(unittest.SynchronousTestCase):
    """:func:`to_json` is bounded, rounded and serialisable."""

    def setUp(self) -> None:
        self.spectrum = analyse([sine(1000.0, 2.0, 44100, 0.5)], 44100, SpectrumParams(max_frames=20))

    def test_summary(self) -> None:
        """Without the spectrogram: parameters, scalars, bands and the average spectrum in max_bins points."""
        doc = to_json(self.spectrum, include_spectrogram=False, max_bins=100)
        self.assertNotIn("spectrogram", doc)
        self.assertEqual(
            (doc["sample_rate"], doc["fft_size"], doc["hop"], doc["window"]), (44100, 4096, 1024, "hann")
        )
        self.assertEqual(doc["frames"], self.spectrum.frames)
        self.assertLessEqual(len(doc["frequencies"]), 100)
        self.assertEqual(len(doc["frequencies"]), len(doc["average_db"]))
        self.assertLess(abs(doc["peak_hz"] - 1000.0), 44100 / 4096)
        self.assertEqual([band["name"] for band in doc["bands"]][3], "mid")
        self.assertEqual(set(doc["bands"][3]), {"name", "low_hz", "high_hz", "db"})
        strongest = doc["frequencies"][int(np.argmax(doc["average_db"]))]
        self.assertLess(abs(strongest - 1000.0), 2 * 22050 / 100)
        self.assertEqual(json.loads(json.dumps(doc, allow_nan=False)), doc)

    def test_rounding(self) -> None:
        """Frequencies and levels carry one decimal."""
        doc = to_json(self.spectrum, include_spectrogram=True)
        for value in doc["average_db"] + doc["frequencies"] + doc["spectrogram"]["db"][0]:
            self.assertEqual(round(value, 1), value)

    def test_spectrogram(self) -> None:
        """With the spectrogram: at most max_frames columns of at most max_bins levels, with centroids."""
        doc = to_json(self.spectrum, include_spectrogram=True, max_bins=64)
        grid = doc["spectrogram"]
        self.assertEqual(grid["columns"], len(grid["db"]))
        self.assertLessEqual(grid["columns"], 20)
        self.assertTrue(all(len(row) == len(doc["frequencies"]) <= 64 for row in grid["db"]))
        self.assertEqual(len(grid["centroid_hz"]), grid["columns"])
        self.assertAlmostEqual(grid["seconds_per_column"], self.spectrum.seconds_per_column, places=5)
        json.dumps(doc, allow_nan=False)

    def test_all_bins_and_empty(self) -> None:
        """max_bins above the bin count keeps every bin; an empty spectrum serialises too."""
        doc = to_json(self.spectrum, include_spectrogram=False, max_bins=8192)
        self.assertEqual(len(doc["frequencies"]), 2049)
        empty = to_json(analyse([], 8000, SpectrumParams()), include_spectrogram=True)
        self.assertEqual(empty["spectrogram"]["db"], [])
        json.dumps(empty, allow_nan=False)

    def test_rejects_bad_max_bins(self) -> None:
        """max_bins outside 1..8192 raises ValueError."""
        for max_bins in (0, 8193):
            with self.assertRaises(ValueError):
                to_json(self.spectrum, include_spectrogram=False, max_bins=max_bins)


class ToPngTests(unittest.SynchronousTestCase):
    """:func:`to_png` draws a decodable spectrogram, low frequencies at the bottom."""

    def setUp(self) -> None:
        rate = 44100
        self.spectrum = analyse([sine(1000.0, 3.0, rate, 0.8)], rate, SpectrumParams(max_frames=100))

    def test_decodes(self) -> None:
        """The PNG has a valid signature, chunks and CRCs, one column per spectrogram column."""
        decoded = decode_png(to_png(self.spectrum))
        columns = self.spectrum.spectrogram_db.shape[0]
        self.assertEqual(decoded.ihdr, (columns, 256, 8, 2, 0, 0, 0))
        self.assertEqual(decoded.chunk_types, (b"IHDR", b"IDAT", b"IEND"))

    def test_tone_row_on_log_axis(self) -> None:
        """A 1 kHz tone is brightest on the row a log axis from 20 Hz to Nyquist puts it at."""
        height = 200
        pixels = decode_png(to_png(self.spectrum, width=50, height=height)).pixels.astype(np.int64)
        self.assertEqual(pixels.shape, (height, 50, 3))
        brightest_from_top = int(np.argmax(pixels.sum(axis=(1, 2))))
        from_bottom = (height - 1) * math.log(1000.0 / PNG_LOW_HZ) / math.log(22050.0 / PNG_LOW_HZ)
        self.assertLessEqual(abs((height - 1 - brightest_from_top) - from_bottom), 2)

    def test_widths(self) -> None:
        """Narrower images average columns and wider ones repeat them."""
        for width in (1, 37, 500):
            self.assertEqual(decode_png(to_png(self.spectrum, width=width, height=16)).ihdr[0], width)

    def test_empty(self) -> None:
        """A spectrum without columns draws one black column."""
        decoded = decode_png(to_png(analyse([], 8000, SpectrumParams()), height=8))
        self.assertEqual(decoded.ihdr[:2], (1, 8))
        self.assertTrue(np.all(decoded.pixels == decoded.pixels[0, 0]))

    def test_rejects_bad_sizes(self) -> None:
        """Sizes and floors out of bounds raise ValueError."""
        bad: list[dict[str, object]] = [
            dict(width=0),
            dict(width=8193),
            dict(height=7),
            dict(height=4097),
            dict(floor_db=0.0),
            dict(floor_db=-300.0),
            dict(floor_db=math.nan),
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                to_png(self.spectrum, **kwargs)  # type: ignore[arg-type]


class GenerateTests(unittest.SynchronousTestCase):
    """:func:`generate` decodes a real file and analyses it."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def test_files(self) -> None:
        """A tone in a WAV or an MP3 is found at its frequency and level."""
        for fmt in ("wav", "mp3"):
            path = audiogen.write_tone(self.dir / f"tone.{fmt}", fmt, 2.0, freq=1234.0, amplitude=0.5)
            spectrum = generate(str(path), SpectrumParams())
            self.assertLess(abs(spectrum.peak_hz - 1234.0), 44100 / 4096, fmt)
            self.assertLess(abs(spectrum.peak_db - (-6.02)), 0.5, fmt)

    def test_window(self) -> None:
        """start and end analyse only that part."""
        path = audiogen.write_tone(self.dir / "tone.wav", "wav", 2.0)
        spectrum = generate(str(path), SpectrumParams(), start_s=0.5, end_s=1.0)
        self.assertAlmostEqual(spectrum.duration_s, 0.5, places=3)

    def test_errors(self) -> None:
        """A bad window raises ValueError; a missing file raises DecodeError."""
        path = audiogen.write_tone(self.dir / "tone.wav", "wav", 0.5)
        with self.assertRaises(ValueError):
            generate(str(path), SpectrumParams(), start_s=-1.0)
        with self.assertRaises(ValueError):
            generate(str(path), SpectrumParams(), start_s=1.0, end_s=0.5)
        with self.assertRaises(DecodeError):
            generate(str(self.dir / "missing.wav"), SpectrumParams())

    def test_json_and_png_jobs(self) -> None:
        """The one-job wrappers give what analysing then serialising gives; bad image sizes fail first."""
        path = audiogen.write_tone(self.dir / "tone.wav", "wav", 1.0, freq=500.0)
        params = SpectrumParams(max_frames=10)
        spectrum = generate(str(path), params)
        doc = generate_json(str(path), params, include_spectrogram=True, max_bins=32)
        self.assertEqual(doc, to_json(spectrum, include_spectrogram=True, max_bins=32))
        image = generate_png(str(path), params, width=20, height=16)
        self.assertEqual(image, to_png(spectrum, width=20, height=16))
        missing = str(self.dir / "missing.wav")
        with self.assertRaises(ValueError):
            generate_png(missing, params, height=2)
        with self.assertRaises(ValueError):
            generate_json(missing, params, include_spectrogram=False, max_bins=0)

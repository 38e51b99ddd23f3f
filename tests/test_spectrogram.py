"""The display spectrogram: the bounded JSON grid, its parameters, and the PNG's axes."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.audio import spectrum as spectrum_mod
from streamsrv.audio.spectrogram import (
    AXIS_BOTTOM_PX,
    AXIS_LEFT_PX,
    MAX_BINS,
    MAX_CELLS,
    MAX_FRAMES,
    check_grid,
    draw_axes,
    grid_json,
    render_png,
    sample_grid,
)
from streamsrv.audio.spectrum import FLOOR_DB, SpectrumParams, analyse, to_png
from streamsrv.errors import ApiError
from streamsrv.web.media import spectrogram_query
from tests.test_png import decode_png
from tests.test_spectrum import sine

RATE = 44100


def _grid_ok(frames: int, bins: int) -> bool:
    return 1 <= frames <= MAX_FRAMES and 1 <= bins <= MAX_BINS and frames * bins <= MAX_CELLS


class CheckGridTests(unittest.SynchronousTestCase):
    """Grid sizes are bounded, and a refusal names the parameter."""

    @given(st.integers(-10, 5000), st.integers(-10, 5000))
    def test_bounds(self, frames: int, bins: int) -> None:
        """A size is accepted exactly when both are in range and their product is within the cap."""
        try:
            check_grid(frames, bins)
        except ValueError as e:
            self.assertFalse(_grid_ok(frames, bins))
            message = str(e)
            if not 1 <= frames <= MAX_FRAMES:
                self.assertTrue(message.startswith("frames must"), message)
            elif not 1 <= bins <= MAX_BINS:
                self.assertTrue(message.startswith("bins must"), message)
            else:
                self.assertTrue(message.startswith("frames x bins"), message)
        else:
            self.assertTrue(_grid_ok(frames, bins))

    def test_not_integers(self) -> None:
        """Booleans and floats are refused."""
        for frames, bins in ((True, 4), (4, False), (2.0, 4), (4, 2.5)):
            self.assertRaises(ValueError, check_grid, frames, bins)


_VALUES = st.one_of(
    st.integers(-5, 3000).map(str),
    st.text(max_size=6),
    st.sampled_from(["", "0", "1", "true", "false", "1e3", " 7", "0x10", "２", "99999999999"]),
)


class QueryTests(unittest.SynchronousTestCase):
    """``frames``, ``bins`` and ``axes`` of a request's query."""

    @given(
        st.dictionaries(
            st.sampled_from(["frames", "bins", "axes"]), st.lists(_VALUES, min_size=1, max_size=2)
        )
    )
    def test_parsed_or_refused_by_name(self, query: dict[str, list[str]]) -> None:
        """Any query gives a grid within bounds, or 400 BAD_REQUEST whose message names its parameter."""
        args = {
            name.encode(): [v.encode("utf-8", "surrogatepass") for v in values]
            for name, values in query.items()
        }
        try:
            frames, bins, axes = spectrogram_query(args)
        except ApiError as e:
            self.assertEqual((e.code, e.status), ("BAD_REQUEST", 400))
            self.assertTrue(e.message.split(" ")[0] in ("frames", "bins", "axes"), e.message)
        else:
            self.assertTrue(_grid_ok(frames, bins))
            self.assertIsInstance(axes, bool)
            for name, values in query.items():
                self.assertEqual(len(values), 1, name)

    def test_defaults_and_examples(self) -> None:
        """No parameters: 200 x 64 without axes; the spellings of true and false."""
        self.assertEqual(spectrogram_query({}), (200, 64, False))
        self.assertEqual(
            spectrogram_query({b"frames": [b"10"], b"bins": [b"8"], b"axes": [b"true"]}), (10, 8, True)
        )
        self.assertEqual(spectrogram_query({b"axes": [b"0"]})[2], False)
        self.assertEqual(spectrogram_query({b"axes": [b"1"]})[2], True)


class GridTests(unittest.SynchronousTestCase):
    """The JSON grid holds the numbers the PNG paints."""

    def setUp(self) -> None:
        self.spectrum = analyse([sine(1000.0, 3.0, RATE, 0.5)], RATE, SpectrumParams(max_frames=100))

    def test_matches_the_png(self) -> None:
        """frames=W, bins=H give the levels a width=W, height=H PNG is coloured from (rows bottom to top)."""
        width, height = 25, 40
        grid = sample_grid(self.spectrum, width, height)
        self.assertEqual(grid.db.shape, (width, height))
        pixels = decode_png(to_png(self.spectrum, width=width, height=height, floor_db=-100.0)).pixels
        level = np.clip((grid.db.astype(np.float64) + 100.0) / 100.0, 0.0, 1.0)
        expected = spectrum_mod._COLOURS[np.rint(level * 255.0).astype(np.intp).T[::-1]]
        np.testing.assert_array_equal(pixels, expected)

    def test_tone_row(self) -> None:
        """A 1 kHz tone is loudest in the row whose centre frequency is nearest 1 kHz."""
        grid = sample_grid(self.spectrum, 10, 64)
        loudest = int(np.argmax(grid.db.mean(axis=0)))
        nearest = int(np.argmin(np.abs(np.log(grid.frequencies_hz / 1000.0))))
        self.assertLessEqual(abs(loudest - nearest), 1)
        self.assertAlmostEqual(grid.frequencies_hz[0], 20.0)
        self.assertAlmostEqual(grid.frequencies_hz[-1], RATE / 2)

    def test_never_invents_columns(self) -> None:
        """More frames than analysis columns keeps the columns; the time step covers the same span."""
        columns = self.spectrum.spectrogram_db.shape[0]
        grid = sample_grid(self.spectrum, MAX_FRAMES // 2, 8)
        self.assertEqual(grid.db.shape[0], columns)
        coarse = sample_grid(self.spectrum, 7, 8)
        self.assertAlmostEqual(coarse.seconds_per_frame * 7, grid.seconds_per_frame * columns, places=6)

    def test_json(self) -> None:
        """The JSON form: sizes, a log scale, rounded levels, nothing below the floor."""
        doc = grid_json(sample_grid(self.spectrum, 12, 9), start_s=1.5)
        self.assertEqual((doc["frames"], doc["bins"], doc["scale"], doc["start_s"]), (12, 9, "log", 1.5))
        self.assertEqual((len(doc["db"]), len(doc["db"][0]), len(doc["frequencies_hz"])), (12, 9, 9))
        self.assertTrue(all(value >= FLOOR_DB for row in doc["db"] for value in row))
        self.assertEqual(doc["frequencies_hz"], sorted(doc["frequencies_hz"]))

    def test_silence_and_nothing(self) -> None:
        """No audio: no frames; silence: every level at the floor."""
        empty = sample_grid(analyse([], 8000, SpectrumParams()), 10, 10)
        self.assertEqual(empty.db.shape, (0, 10))
        silent = analyse(
            [np.zeros((1, 8000), dtype=np.float32)], 8000, SpectrumParams(fft_size=1024, hop=512)
        )
        self.assertTrue(np.all(sample_grid(silent, 4, 4).db == FLOOR_DB))


class AxesTests(unittest.SynchronousTestCase):
    """``axes=true``: ticks and labels drawn around the image with numpy."""

    def setUp(self) -> None:
        self.spectrum = analyse([sine(1000.0, 3.0, RATE, 0.8)], RATE, SpectrumParams(max_frames=100))

    def test_frame(self) -> None:
        """The image keeps its pixels inside margins that hold labels and ticks."""
        image = np.full((120, 300, 3), 7, dtype=np.uint8)
        framed = draw_axes(image, low_hz=20.0, high_hz=22050.0, start_s=0.0, duration_s=30.0)
        self.assertEqual(framed.shape, (120 + AXIS_BOTTOM_PX, 300 + AXIS_LEFT_PX, 3))
        np.testing.assert_array_equal(framed[:120, AXIS_LEFT_PX:], image)
        self.assertGreater(int(framed[:120, : AXIS_LEFT_PX - 1].sum()), 0)  # frequency labels
        self.assertGreater(int(framed[121:, AXIS_LEFT_PX:].sum()), 0)  # time labels
        # The 1 kHz tick sits where the log axis puts 1 kHz.
        row = round(119 * (1.0 - math.log(1000.0 / 20.0) / math.log(22050.0 / 20.0)))
        self.assertEqual(tuple(framed[row, AXIS_LEFT_PX - 2]), (200, 200, 200))

    def test_png(self) -> None:
        """render_png with axes is a valid PNG the margins wider and taller; without, to_png's own."""
        decoded = decode_png(render_png(self.spectrum, width=200, height=100, axes=True))
        self.assertEqual(decoded.ihdr[:2], (200 + AXIS_LEFT_PX, 100 + AXIS_BOTTOM_PX))
        plain = render_png(self.spectrum, width=200, height=100)
        self.assertEqual(plain, to_png(self.spectrum, width=200, height=100))
        self.assertRaises(ValueError, render_png, self.spectrum, height=3, axes=True)

    def test_long_and_short_windows(self) -> None:
        """Hours, tenths of a second, and no duration at all are drawn without error."""
        image = np.zeros((64, 500, 3), dtype=np.uint8)
        for start, duration in ((3000.0, 7200.0), (0.0, 0.4), (5.0, 0.0)):
            framed = draw_axes(image, low_hz=20.0, high_hz=4000.0, start_s=start, duration_s=duration)
            self.assertEqual(framed.shape[:2], (64 + AXIS_BOTTOM_PX, 500 + AXIS_LEFT_PX))

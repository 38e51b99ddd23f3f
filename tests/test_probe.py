"""Tests for :mod:`streamsrv.audio.probe` and the :mod:`tests.audiogen` helper."""

from __future__ import annotations

from pathlib import Path

import mutagen
import numpy as np
from twisted.trial import unittest

from streamsrv.audio.probe import probe_duration
from tests import audiogen

#: The contract's tolerance on durations.
TOLERANCE_S = 0.05

#: How close the corrected header durations of FFmpeg-written files come.
TIGHT_S = 0.005


def assert_within(
    case: unittest.SynchronousTestCase, actual: float, expected: float, delta: float, msg: str = ""
) -> None:
    """Fail unless ``actual`` is within ``delta`` of ``expected``.

    trial's ``assertAlmostEqual`` accepts ``delta`` but ignores it (it always
    rounds to ``places``), so tolerances are checked here instead.
    """
    case.assertLessEqual(
        abs(actual - expected), delta, f"{msg}: {actual!r} not within {delta} of {expected!r}"
    )


class AudiogenTests(unittest.SynchronousTestCase):
    """The shared test helper writes real files of every format."""

    def test_every_format_decodes(self) -> None:
        """Each format writes a file that PyAV decodes back to the asked
        length, channel count and sample rate, with the tone's level."""
        base = Path(self.mktemp())
        base.mkdir()
        for fmt in audiogen.ENCODINGS:
            path = audiogen.write_tone(base / f"tone.{fmt}", fmt, 1.3, channels=2)
            samples, rate = audiogen.decode(path)
            self.assertEqual(samples.shape[0], 2, fmt)
            self.assertEqual(rate, audiogen.OPUS_RATE if fmt == "opus" else 44100, fmt)
            assert_within(self, samples.shape[1] / rate, 1.3, TOLERANCE_S, fmt)
            self.assertAlmostEqual(audiogen.decoded_duration(path), samples.shape[1] / rate, msg=fmt)
            peak = float(np.abs(samples).max())
            assert_within(self, peak, 0.5, 0.06, fmt)

    def test_lossless_round_trip(self) -> None:
        """PCM and FLAC give back the exact samples (to 16-bit precision)."""
        base = Path(self.mktemp())
        base.mkdir()
        expected = audiogen.tone(0.25, freq=1000.0, sample_rate=22050, channels=1, amplitude=0.8)
        for fmt in ("wav", "aiff", "flac"):
            path = audiogen.write_samples(base / f"x.{fmt}", fmt, expected, 22050)
            samples, rate = audiogen.decode(path)
            self.assertEqual(rate, 22050)
            np.testing.assert_allclose(samples, expected, atol=2.0 / 32768)

    def test_channels_and_rates(self) -> None:
        """Mono and 5.1 files, and other sample rates, are written as asked."""
        base = Path(self.mktemp())
        base.mkdir()
        cases = [
            ("mp3", 1, 22050),
            ("flac", 6, 48000),
            ("m4a", 1, 32000),
            ("opus", 6, 48000),
            ("wav", 1, 8000),
        ]
        for fmt, channels, rate in cases:
            path = audiogen.write_tone(
                base / f"c{channels}.{fmt}", fmt, 0.5, sample_rate=rate, channels=channels
            )
            samples, decoded_rate = audiogen.decode(path)
            self.assertEqual((samples.shape[0], decoded_rate), (channels, rate), fmt)

    def test_refusals(self) -> None:
        """Unknown formats, bad shapes, mono Vorbis and rates a codec cannot
        take raise ``ValueError``."""
        base = Path(self.mktemp())
        base.mkdir()
        with self.assertRaises(ValueError):
            audiogen.write_tone(base / "x.xyz", "xyz", 0.1)
        with self.assertRaises(ValueError):
            audiogen.write_samples(base / "x.wav", "wav", np.zeros(10, dtype=np.float32), 8000)
        with self.assertRaises(ValueError):
            audiogen.write_tone(base / "x.ogg", "ogg", 0.1, channels=1)
        with self.assertRaises(ValueError):
            audiogen.write_samples(base / "x.mp3", "mp3", audiogen.tone(0.1, sample_rate=96000), 96000)


class ProbeDurationTests(unittest.SynchronousTestCase):
    """``probe_duration`` on real files of every format."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.base.mkdir()

    def test_every_format(self) -> None:
        """Each format's duration comes back within 50 ms, at lengths that
        leave a partial last codec frame."""
        for fmt in audiogen.ENCODINGS:
            for seconds in (0.7, 2.345):
                path = audiogen.write_tone(self.base / f"{seconds}.{fmt}", fmt, seconds)
                duration = probe_duration(path)
                assert duration is not None, fmt
                assert_within(self, duration, seconds, TOLERANCE_S, fmt)

    def test_mono_and_other_rates(self) -> None:
        """Mono files and other sample rates (MPEG-2 MP3 at 22.05 kHz, AAC at
        48 kHz, PCM at 8 kHz) are measured as accurately."""
        cases = [
            ("mp3", 1, 22050),
            ("mp3", 2, 48000),
            ("m4a", 1, 48000),
            ("flac", 1, 96000),
            ("wav", 1, 8000),
        ]
        for fmt, channels, rate in cases:
            path = audiogen.write_tone(
                self.base / f"{rate}.{fmt}", fmt, 1.9, sample_rate=rate, channels=channels
            )
            duration = probe_duration(path)
            assert duration is not None, fmt
            assert_within(self, duration, 1.9, TIGHT_S, f"{fmt} {rate}")

    def test_ffmpeg_mp3_delay_and_padding(self) -> None:
        """An MP3 whose Info tag FFmpeg wrote is measured without its encoder
        delay and padding, which mutagen alone counts in."""
        path = audiogen.write_tone(self.base / "x.mp3", "mp3", 1.0)
        raw = mutagen.File(path).info.length
        self.assertGreater(raw - 1.0, 0.02)
        duration = probe_duration(path)
        assert duration is not None
        assert_within(self, duration, 1.0, 1e-6)

    def test_mp4_priming(self) -> None:
        """An M4A's duration is the presented one (``mvhd``), without the AAC
        priming samples that mutagen's ``mdhd`` figure includes."""
        path = audiogen.write_tone(self.base / "x.m4a", "m4a", 1.0)
        raw = mutagen.File(path).info.length
        self.assertGreater(raw - 1.0, 0.02)
        duration = probe_duration(path)
        assert duration is not None
        assert_within(self, duration, 1.0, 0.001)

    def test_empty_file(self) -> None:
        """A 0-byte file with an audio extension gives ``None``."""
        for fmt in audiogen.ENCODINGS:
            path = self.base / f"empty.{fmt}"
            path.write_bytes(b"")
            self.assertIsNone(probe_duration(path), fmt)

    def test_truncated_headers(self) -> None:
        """A file cut short inside its headers gives ``None`` without raising,
        for every format."""
        for fmt in audiogen.ENCODINGS:
            whole = audiogen.write_tone(self.base / f"whole.{fmt}", fmt, 1.0).read_bytes()
            for cut in (3, 12, 24):
                path = self.base / f"cut{cut}.{fmt}"
                path.write_bytes(whole[:cut])
                self.assertIsNone(probe_duration(path), f"{fmt} cut at {cut}")

    def test_truncated_mp4_without_moov(self) -> None:
        """An M4A cut before its trailing ``moov`` box gives ``None``."""
        whole = audiogen.write_tone(self.base / "whole.m4a", "m4a", 1.0).read_bytes()
        path = self.base / "half.m4a"
        path.write_bytes(whole[: len(whole) // 2])
        self.assertIsNone(probe_duration(path))

    def test_random_bytes(self) -> None:
        """Random bytes under any audio extension give ``None``."""
        rng = np.random.default_rng(1234)
        for fmt in audiogen.ENCODINGS:
            for n in range(3):
                path = self.base / f"random{n}.{fmt}"
                path.write_bytes(rng.bytes(4096))
                self.assertIsNone(probe_duration(path), fmt)

    def test_text_file(self) -> None:
        """A text file, named as audio or not, gives ``None``."""
        for name in ("notes.txt", "fake.mp3", "fake.flac", "fake.m4a", "fake.wav"):
            path = self.base / name
            path.write_text("not audio at all\n" * 200)
            self.assertIsNone(probe_duration(path), name)

    def test_missing_and_directory(self) -> None:
        """A missing path and a directory give ``None`` rather than raise."""
        self.assertIsNone(probe_duration(self.base / "missing.mp3"))
        folder = self.base / "folder.mp3"
        folder.mkdir()
        self.assertIsNone(probe_duration(folder))

    def test_corrupt_xing_tag(self) -> None:
        """An MP3 whose Info tag claims zero frames does not raise; the
        duration falls back to what mutagen computed or is ``None``."""
        data = bytearray(audiogen.write_tone(self.base / "x.mp3", "mp3", 1.0).read_bytes())
        start = data.index(b"Info")
        data[start + 8 : start + 12] = b"\x00\x00\x00\x00"
        path = self.base / "zero.mp3"
        path.write_bytes(bytes(data))
        duration = probe_duration(path)
        self.assertTrue(duration is None or duration > 0)

"""Tests for :mod:`streamsrv.audio.decode`, on real files of every format :mod:`tests.audiogen` writes."""

from __future__ import annotations

import pickle
import random
import tracemalloc
from pathlib import Path

import numpy as np
from twisted.trial import unittest

from streamsrv.audio.decode import DecodeError, Pcm, decode, iter_decode, probe_stream
from tests import audiogen

#: Every format audiogen writes.
FORMATS = tuple(audiogen.ENCODINGS)

#: Formats that give back exactly what was written.
LOSSLESS = frozenset({"flac", "wav", "aiff"})

#: Decoded length against written length, in seconds.
LOSSLESS_LENGTH_S = 0.001
LOSSY_LENGTH_S = 0.05

#: A sine's decoded peak against its written amplitude, relative.
LOSSLESS_PEAK = 0.03
LOSSY_PEAK = 0.10

#: How far a window of a lossy file may differ from the same span of the whole
#: decode (decoder state after a seek is rebuilt from the pre-roll).
LOSSY_WINDOW_ATOL = 0.01

#: The tone every test writes.
SECONDS = 2.0
AMPLITUDE = 0.5


def length_tolerance(fmt: str) -> float:
    """Allowed error on the decoded length of a ``fmt`` file."""
    return LOSSLESS_LENGTH_S if fmt in LOSSLESS else LOSSY_LENGTH_S


def rate_of(fmt: str, rate: int = 44100) -> int:
    """The rate a ``fmt`` tone written at ``rate`` decodes at."""
    return audiogen.OPUS_RATE if fmt == "opus" else rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in a mono signal."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


class DecodeTestCase(unittest.SynchronousTestCase):
    """Writes test files into a fresh directory."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.base.mkdir()

    def tone(self, fmt: str, seconds: float = SECONDS, **kwargs: object) -> Path:
        """Write a 440 Hz tone as a ``fmt`` file."""
        return audiogen.write_tone(self.base / f"tone.{fmt}", fmt, seconds, **kwargs)  # type: ignore[arg-type]

    def assert_within(self, actual: float, expected: float, delta: float, msg: str) -> None:
        """Fail unless ``actual`` is within ``delta`` of ``expected``."""
        self.assertLessEqual(
            abs(actual - expected), delta, f"{msg}: {actual!r} not within {delta} of {expected!r}"
        )


class FormatTests(DecodeTestCase):
    """Every format decodes to the length and level that was written."""

    def test_length(self) -> None:
        """Priming and padding are removed: the decoded length is the written one,
        within 1 ms for lossless formats and 50 ms for lossy ones."""
        for fmt in FORMATS:
            pcm = decode(self.tone(fmt))
            self.assertEqual((pcm.channels, pcm.sample_rate), (2, rate_of(fmt)), fmt)
            self.assert_within(pcm.duration_s, SECONDS, length_tolerance(fmt), fmt)

    def test_length_at_low_rates(self) -> None:
        """Priming is removed at rates where one codec frame is long (AAC's
        padding at 8 kHz is over 100 ms) and for mono files."""
        for fmt, rate in (("m4a", 8000), ("mp3", 16000), ("mp3", 8000), ("wav", 8000)):
            path = audiogen.write_tone(self.base / f"low{rate}.{fmt}", fmt, 1.0, sample_rate=rate, channels=1)
            pcm = decode(path)
            self.assertEqual((pcm.channels, pcm.sample_rate), (1, rate), fmt)
            self.assert_within(pcm.duration_s, 1.0, LOSSLESS_LENGTH_S, f"{fmt} at {rate}")

    def test_peak(self) -> None:
        """A sine's peak comes back within 3% (lossless) or 10% (lossy) of its amplitude."""
        for fmt in FORMATS:
            pcm = decode(self.tone(fmt))
            tolerance = LOSSLESS_PEAK if fmt in LOSSLESS else LOSSY_PEAK
            self.assert_within(float(np.abs(pcm.samples).max()), AMPLITUDE, tolerance * AMPLITUDE, fmt)

    def test_samples(self) -> None:
        """Samples are float32, in [-1, 1], and lossless files give back the exact tone."""
        expected = audiogen.tone(SECONDS)
        for fmt in FORMATS:
            pcm = decode(self.tone(fmt))
            self.assertEqual(pcm.samples.dtype, np.float32, fmt)
            self.assertLessEqual(float(np.abs(pcm.samples).max()), 1.0, fmt)
            if fmt in LOSSLESS:
                np.testing.assert_allclose(pcm.samples, expected, atol=2.0 / 32768, err_msg=fmt)

    def test_full_scale_not_clipped(self) -> None:
        """Loud lossy audio is limited to [-1, 1]."""
        pcm = decode(self.tone("mp3", amplitude=1.0))
        self.assertLessEqual(float(np.abs(pcm.samples).max()), 1.0)


class WindowTests(DecodeTestCase):
    """``start_s`` and ``end_s`` cut a window as if from the whole decode."""

    def assert_same_span(
        self, window: Pcm, whole: Pcm, start_s: float, end_s: float | None, fmt: str
    ) -> None:
        """``window`` holds exactly ``whole``'s samples from ``start_s`` to ``end_s``."""
        rate = whole.sample_rate
        span = whole.samples[:, round(start_s * rate) : None if end_s is None else round(end_s * rate)]
        self.assertEqual(window.samples.shape, span.shape, fmt)
        atol = 0.0 if fmt in LOSSLESS else LOSSY_WINDOW_ATOL
        np.testing.assert_allclose(window.samples, span, atol=atol, rtol=0, err_msg=fmt)

    def test_start_and_end(self) -> None:
        """A window inside the file is the same samples as that span of the whole file."""
        for fmt in FORMATS:
            path = self.tone(fmt)
            self.assert_same_span(decode(path, start_s=0.3, end_s=1.2), decode(path), 0.3, 1.2, fmt)

    def test_start_after_seek(self) -> None:
        """Starting deep into a file (a real seek, then samples dropped up to the
        start) is sample-accurate."""
        for fmt in FORMATS:
            path = self.tone(fmt, seconds=8.0)
            whole = decode(path)
            self.assert_same_span(decode(path, start_s=6.25), whole, 6.25, None, fmt)
            self.assert_same_span(decode(path, start_s=2.5, end_s=3.0), whole, 2.5, 3.0, fmt)

    def test_past_the_end(self) -> None:
        """A window starting after the end is empty; one ending after it stops at the end."""
        for fmt in ("mp3", "flac", "opus"):
            path = self.tone(fmt)
            empty = decode(path, start_s=SECONDS + 5.0)
            self.assertEqual((empty.frames, empty.channels, empty.sample_rate), (0, 2, rate_of(fmt)), fmt)
            tail = decode(path, start_s=1.5, end_s=SECONDS + 5.0)
            self.assert_within(tail.duration_s, SECONDS - 1.5, length_tolerance(fmt), fmt)

    def test_empty_window(self) -> None:
        """``end_s == start_s`` gives no samples, shaped as asked."""
        pcm = decode(self.tone("flac"), start_s=1.0, end_s=1.0, sample_rate=8000, channels=1)
        self.assertEqual((pcm.samples.shape, pcm.sample_rate), ((1, 0), 8000))


class ConversionTests(DecodeTestCase):
    """Resampling and channel mixing."""

    def test_mono_22050(self) -> None:
        """Every format resamples to 22050 Hz mono: right length, level and pitch."""
        for fmt in FORMATS:
            pcm = decode(self.tone(fmt), sample_rate=22050, channels=1)
            self.assertEqual((pcm.channels, pcm.sample_rate), (1, 22050), fmt)
            self.assert_within(pcm.duration_s, SECONDS, length_tolerance(fmt), fmt)
            tolerance = LOSSLESS_PEAK if fmt in LOSSLESS else LOSSY_PEAK
            self.assert_within(float(np.abs(pcm.samples).max()), AMPLITUDE, tolerance * AMPLITUDE, fmt)
            self.assert_within(dominant_hz(pcm.samples[0], 22050), 440.0, 2.0, fmt)

    def test_window_resampled(self) -> None:
        """A window at another rate has the window's length at that rate."""
        pcm = decode(self.tone("wav"), start_s=0.5, end_s=1.5, sample_rate=8000)
        self.assertEqual(pcm.samples.shape, (2, 8000))

    def test_mono_is_the_mean(self) -> None:
        """The mono downmix of a stereo file is the channels' mean, not FFmpeg's
        +3 dB sum (which would push full scale to 1.41 and clip)."""
        path = self.tone("wav", amplitude=0.9)
        pcm = decode(path, channels=1)
        self.assert_within(float(np.abs(pcm.samples).max()), 0.9, 0.001, "mono peak")
        np.testing.assert_allclose(pcm.samples[0], decode(path).samples.mean(axis=0), atol=1e-6)

    def test_mono_to_stereo(self) -> None:
        """A mono file asked for in stereo has the same signal in both channels."""
        pcm = decode(self.tone("flac", channels=1), channels=2)
        self.assertEqual(pcm.channels, 2)
        np.testing.assert_array_equal(pcm.samples[0], pcm.samples[1])
        self.assert_within(float(np.abs(pcm.samples).max()), AMPLITUDE, 0.001, "peak")

    def test_surround_downmix(self) -> None:
        """A 5.1 file downmixes to mono and stereo without exceeding full scale."""
        path = self.tone("flac", channels=6, amplitude=0.9)
        for channels in (1, 2):
            pcm = decode(path, channels=channels)
            self.assertEqual(pcm.channels, channels)
            self.assert_within(float(np.abs(pcm.samples).max()), 0.9, 0.001, f"{channels} channels")
        self.assertEqual(decode(path).channels, 6)


class IterDecodeTests(DecodeTestCase):
    """``iter_decode`` is ``decode`` in bounded blocks."""

    def test_concatenation_equals_decode(self) -> None:
        """Blocks hold ``block_frames`` frames (the last at most) and join up to
        exactly ``decode``'s samples."""
        for fmt in FORMATS:
            path = self.tone(fmt)
            for kwargs in ({}, {"start_s": 0.7, "end_s": 1.9, "sample_rate": 22050, "channels": 1}):
                blocks = list(iter_decode(path, block_frames=1000, **kwargs))  # type: ignore[arg-type]
                self.assertTrue(all(b.shape[1] == 1000 for b in blocks[:-1]), fmt)
                self.assertTrue(0 < blocks[-1].shape[1] <= 1000, fmt)
                np.testing.assert_array_equal(
                    np.concatenate(blocks, axis=1),
                    decode(path, **kwargs).samples,  # type: ignore[arg-type]
                    err_msg=fmt,
                )

    def test_bounded_memory(self) -> None:
        """Iterating a minute of audio allocates a few blocks, not the whole decode."""
        path = self.tone("wav", seconds=60.0)
        whole_bytes = 60 * 44100 * 2 * 4
        tracemalloc.start()
        try:
            frames = sum(block.shape[1] for block in iter_decode(path, block_frames=4096))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(frames, 60 * 44100)
        self.assertLess(peak, whole_bytes // 10)

    def test_lazy(self) -> None:
        """The file is not opened until the first block is asked for."""
        blocks = iter_decode(self.base / "missing.mp3")
        self.assertRaises(DecodeError, next, blocks)


class ProbeTests(DecodeTestCase):
    """``probe_stream`` reads what the headers say."""

    def test_every_format(self) -> None:
        """Codec, rate, channels, duration and bit rate of every format."""
        codecs = {
            "mp3": "mp3",
            "flac": "flac",
            "ogg": "vorbis",
            "opus": "opus",
            "m4a": "aac",
            "wav": "pcm_s16le",
            "aiff": "pcm_s16be",
        }
        for fmt in FORMATS:
            info = probe_stream(self.tone(fmt))
            self.assertEqual(
                (info.codec, info.sample_rate, info.channels), (codecs[fmt], rate_of(fmt), 2), fmt
            )
            assert info.duration_s is not None
            self.assert_within(info.duration_s, SECONDS, LOSSY_LENGTH_S, fmt)
            assert info.bit_rate is not None
            self.assertGreater(info.bit_rate, 0, fmt)


class BadFileTests(DecodeTestCase):
    """Files that are not decodable audio raise DecodeError with a client-safe reason."""

    def assert_refused(self, path: Path, reason: str | None = None) -> DecodeError:
        """``decode``, ``iter_decode`` and ``probe_stream`` all refuse ``path``, naming no path."""
        error = self.assertRaises(DecodeError, decode, path)
        self.assertRaises(DecodeError, list, iter_decode(path))
        self.assertRaises(DecodeError, probe_stream, path)
        if reason is not None:
            self.assertEqual(error.reason, reason)
        self.assertEqual(str(error), error.reason)
        for text in (str(error), repr(error)):
            self.assertNotIn(path.name, text)
            self.assertNotIn(str(self.base), text)
        self.assertIsNone(error.__cause__)
        return error

    def test_empty(self) -> None:
        """A 0-byte file is an empty file."""
        path = self.base / "empty.mp3"
        path.touch()
        self.assert_refused(path, "empty file")

    def test_truncated_at_header(self) -> None:
        """Every format cut inside its header is a corrupt file."""
        for fmt in FORMATS:
            data = self.tone(fmt).read_bytes()
            path = self.base / f"cut.{fmt}"
            path.write_bytes(data[:40])
            self.assert_refused(path, "corrupt file")

    def test_random_bytes(self) -> None:
        """Random bytes are an unsupported format."""
        path = self.base / "noise.mp3"
        path.write_bytes(b"\x00" + random.Random(4).randbytes(8191))
        self.assert_refused(path, "unsupported format")

    def test_text(self) -> None:
        """A text file is not audio (FFmpeg's tty demuxer would open it as video)."""
        path = self.base / "notes.flac"
        path.write_text("these are not the samples you are looking for\n" * 50)
        self.assert_refused(path, "unsupported format")

    def test_playlist_refused(self) -> None:
        """An HLS playlist posing as a track is refused: FFmpeg never follows its URLs."""
        self.tone("mp3")
        path = self.base / "list.m3u8"
        path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\ntone.mp3\n#EXT-X-ENDLIST\n")
        self.assert_refused(path, "unsupported format")

    def test_missing(self) -> None:
        """A file that does not exist is unreadable."""
        self.assert_refused(self.base / "gone.wav", "unreadable file")

    def test_cut_short(self) -> None:
        """A file cut short after its header decodes up to the cut, like players do."""
        seconds = 6.0  # long enough that half of the file is well past Vorbis's large setup header
        for fmt in ("mp3", "flac", "ogg", "wav"):
            data = self.tone(fmt, seconds=seconds).read_bytes()
            path = self.base / f"half.{fmt}"
            path.write_bytes(data[: len(data) // 2])
            duration = decode(path).duration_s
            self.assertTrue(0.2 * seconds < duration < 0.8 * seconds, f"{fmt}: {duration}")

    def test_damaged_middle(self) -> None:
        """Garbage in the middle of an MP3 or FLAC costs the damaged frames, not the file."""
        noise = random.Random(1).randbytes(2000)
        for fmt in ("mp3", "flac", "wav"):
            data = bytearray(self.tone(fmt).read_bytes())
            middle = len(data) // 2
            data[middle : middle + len(noise)] = noise
            path = self.base / f"damaged.{fmt}"
            path.write_bytes(data)
            self.assert_within(decode(path).duration_s, SECONDS, 0.2 * SECONDS, fmt)

    def test_error_pickles(self) -> None:
        """DecodeError survives pickling (it crosses from worker processes) with its reason."""
        error = pickle.loads(pickle.dumps(DecodeError("corrupt file")))
        self.assertIsInstance(error, DecodeError)
        self.assertEqual((error.reason, str(error)), ("corrupt file", "corrupt file"))


class ArgumentTests(DecodeTestCase):
    """Arguments out of range are programming errors: ValueError, before any file is read."""

    def test_refused(self) -> None:
        """Negative or reversed windows, bad rates, channel counts and block sizes raise ValueError."""
        path = self.base / "never-opened.wav"
        for kwargs in (
            {"start_s": -1.0},
            {"start_s": float("nan")},
            {"start_s": 2.0, "end_s": 1.0},
            {"sample_rate": 0},
            {"channels": 3},
        ):
            self.assertRaises(ValueError, decode, path, **kwargs)
            self.assertRaises(ValueError, iter_decode, path, **kwargs)
        self.assertRaises(ValueError, iter_decode, path, block_frames=0)

    def test_pcm(self) -> None:
        """Pcm knows its frames and duration and refuses samples that do not match it."""
        pcm = Pcm(np.zeros((2, 22050), dtype=np.float32), sample_rate=44100, channels=2)
        self.assertEqual((pcm.frames, pcm.duration_s), (22050, 0.5))
        self.assertRaises(ValueError, Pcm, np.zeros((1, 10), dtype=np.float32), 44100, 2)
        self.assertRaises(ValueError, Pcm, np.zeros((2, 10), dtype=np.float64), 44100, 2)

"""Tests for :mod:`streamsrv.transcode.lame`: lameenc's LAME through ctypes, and the PyAV fallback."""

from __future__ import annotations

import ctypes.util
import importlib.machinery
import importlib.util
from pathlib import Path

import numpy as np
from twisted.trial import unittest

from streamsrv.cache.artifacts import FileIdentity, artifact_key
from streamsrv.transcode import Rendition, encode, encode_chunk, encode_full, lame, layout_for, probe_source
from streamsrv.transcode.layout import (
    LAYOUT_VERSION,
    MP3_FRAME_SAMPLES,
    MP3_TAG_DELAY,
    mp3_frame_bytes,
    mp3_frame_sizes,
    mp3_header,
)
from tests import audiogen
from tests.services import ffmpeg_or_skip
from tests.test_transcode_encode import _source_samples, ffmpeg_frames

NO_LAMEENC = "lameenc is not installed, or its object does not export LAME's API"

#: (rate, kb/s, channels) that fresh encoders are checked on: every MP3 rate,
#: a padded and an unpadded bit rate at 44.1 kHz, mono and stereo.
CASES = (
    (32000, 64, 1),
    (32000, 192, 2),
    (44100, 128, 1),
    (44100, 192, 2),
    (44100, 320, 2),
    (48000, 96, 1),
    (48000, 256, 2),
)


def _noise(channels: int, count: int, seed: int = 7) -> np.ndarray:
    """Planar float32 noise at -20 dBFS: hard work for the psychoacoustic model."""
    return (np.random.default_rng(seed).standard_normal((channels, count)) * 0.1).astype(np.float32)


def _stream(kbps: int, rate: int, channels: int, count: int) -> tuple[bytes, list[bytes]]:
    """A valid stream of ``count`` silent frames (LAME's padding pattern) and its frames."""
    frames = []
    for size in mp3_frame_sizes(kbps, rate, count):
        padded = size > mp3_frame_bytes(kbps, rate)
        frames.append(mp3_header(kbps, rate, channels, padded) + bytes(size - 4))
    return b"".join(frames), frames


def _lag_snr(decoded: np.ndarray, reference: np.ndarray, start: int, lag: int) -> float:
    """SNR (dB) of ``decoded`` against ``reference`` from sample ``start + lag``, first two frames skipped."""
    skip = 2 * MP3_FRAME_SAMPLES
    count = min(decoded.shape[1], reference.shape[1] - start - 64) - skip
    got = decoded[:, skip : skip + count]
    want = reference[:, start + lag + skip : start + lag + skip + count]
    return float(10 * np.log10((want**2).sum() / ((got - want) ** 2).sum()))


class SplitFramesTests(unittest.SynchronousTestCase):
    """LAME's byte output is cut into frames by their headers, each checked."""

    def test_frames(self) -> None:
        """Padded and unpadded frames come back one by one, as they were."""
        for rate, kbps, channels in CASES:
            data, frames = _stream(kbps, rate, channels, 40)
            self.assertEqual(lame.split_frames(data, kbps, rate, channels), frames, (rate, kbps, channels))
        self.assertEqual(lame.split_frames(b"", 192, 44100, 2), [])

    def test_not_what_was_asked(self) -> None:
        """Another bit rate, rate or mode, a tag, a stray byte, a cut frame
        or a frame borrowing from the bit reservoir is a LameError."""
        data, frames = _stream(128, 44100, 2, 3)
        reservoir = bytearray(data)
        reservoir[len(frames[0]) + 4] = 0x80
        for bad, kbps, rate, channels in (
            (data, 160, 44100, 2),
            (data, 128, 48000, 2),
            (data, 128, 44100, 1),
            (b"ID3\x04" + bytes(100) + data, 128, 44100, 2),
            (data + b"\x00", 128, 44100, 2),
            (data[:-1], 128, 44100, 2),
            (bytes(reservoir), 128, 44100, 2),
        ):
            with self.assertRaises(lame.LameError):
                lame.split_frames(bad, kbps, rate, channels)

    def test_info_frame_is_not_audio(self) -> None:
        """The layout's Info frame has a valid header: splitting accepts it
        (so the encoder tests below check for it by content)."""
        layout = layout_for(Rendition("mp3", 128), 44100, 44100)
        (frame,) = lame.split_frames(layout.header(), 128, 44100, 2)
        self.assertEqual(frame[36:40], b"Info")


class EncodeFramesTests(unittest.SynchronousTestCase):
    """A fresh LAME writes exactly the frames the layout predicts."""

    def setUp(self) -> None:
        if not lame.available():
            raise unittest.SkipTest(NO_LAMEENC)

    def test_backend(self) -> None:
        """The backend names lameenc and the LAME version its object reports."""
        self.assertRegex(lame.backend(), r"^lameenc-\d+\.\d+")

    def test_sizes_are_the_layout(self) -> None:
        """At 32, 44.1 and 48 kHz, mono and stereo, a window of whole frames
        gives one frame more than it holds, with the sizes and padding pattern
        of :func:`mp3_frame_sizes`, and no Info frame."""
        for rate, kbps, channels in CASES:
            frames = lame.encode_frames(_noise(channels, 40 * 1152), kbps, rate, delay=MP3_TAG_DELAY)
            self.assertEqual(len(frames), 41, (rate, kbps, channels))
            self.assertEqual(tuple(map(len, frames)), mp3_frame_sizes(kbps, rate, 41), (rate, kbps, channels))
            side_info = 17 if channels == 1 else 32
            self.assertNotIn(frames[0][4 + side_info : 8 + side_info], (b"Info", b"Xing"))

    def test_frame_count_is_pyav(self) -> None:
        """For any input length (not only whole frames), LAME flushes as many
        frames as PyAV's libmp3lame does for the same input."""
        rendition = Rendition("mp3", 128, 44100, 2)
        for count in (1, 46, 47, 1152, 1153, 12345, 5 * 1152 - 1105):
            samples = _noise(2, count, seed=count)
            ours = lame.encode_frames(samples, 128, 44100, delay=MP3_TAG_DELAY)
            patcher = self.patch(lame, "_load", lambda: None)
            theirs = encode._encode_packets(rendition, samples)
            patcher.restore()
            self.assertEqual(len(ours), len(theirs), count)
            self.assertEqual(tuple(map(len, ours)), tuple(map(len, theirs)), count)

    def test_delay_is_checked(self) -> None:
        """An encoder delay other than the caller's is refused, not served."""
        with self.assertRaises(lame.LameError) as caught:
            lame.encode_frames(_noise(2, 1152), 192, 44100, delay=MP3_TAG_DELAY + 1)
        self.assertIn("576", str(caught.exception))

    def test_invalid_parameters(self) -> None:
        """Rates, bit rates and channel counts MPEG-1 Layer III lacks are a ValueError."""
        for rate, kbps, channels in ((22050, 128, 2), (44100, 144, 2), (44100, 128, 3)):
            with self.assertRaises(ValueError):
                lame.encode_frames(_noise(channels, 1152), kbps, rate, delay=MP3_TAG_DELAY)

    def test_chunks_land_on_the_grid(self) -> None:
        """A chunk encoded alone and decoded by PyAV (no Info frame, so
        nothing trimmed) is the source from ``first * 1152 - 1105`` on:
        LAME's delay is the layout's, for every MP3 rate, mono and stereo."""
        directory = Path(self.mktemp())
        directory.mkdir()
        for rate, rendition in (
            (44100, Rendition("mp3", 192)),
            (48000, Rendition("mp3", 128)),
            (32000, Rendition("mp3", 64)),
        ):
            samples = _source_samples(rate)
            path = str(audiogen.write_samples(directory / f"s{rate}.flac", "flac", samples, rate))
            info = probe_source(path)
            layout = layout_for(rendition, info.frames, info.sample_rate)
            chunk = directory / f"c{rate}.mp3"
            chunk.write_bytes(encode_chunk(path, layout, 1))
            decoded, decoded_rate = audiogen.decode(chunk)
            self.assertEqual(decoded_rate, rate)
            start, _ = layout.chunk_samples(1)
            reference = samples if decoded.shape[0] == 2 else samples.mean(axis=0, keepdims=True)
            snr = {lag: _lag_snr(decoded, reference, start, lag) for lag in range(-40, 41)}
            self.assertEqual(max(snr, key=snr.__getitem__), 0, (rate, snr[0]))
            self.assertGreater(snr[0], 20.0, rate)

    def test_full_file_with_ffmpeg(self) -> None:
        """A whole rendition is exactly the layout's length, and Debian's
        ffmpeg decodes it to exactly the layout's sample count."""
        ffmpeg_or_skip(self)
        directory = Path(self.mktemp())
        directory.mkdir()
        path = str(audiogen.write_samples(directory / "s.flac", "flac", _source_samples(44100), 44100))
        info = probe_source(path)
        rendition = Rendition("mp3", 160)
        out = directory / "out.mp3"
        size = encode_full(path, rendition, str(out), source=info)
        layout = layout_for(rendition, info.frames, info.sample_rate)
        self.assertEqual(size, layout.total_length)
        self.assertEqual(ffmpeg_frames(out), (layout.frames, 44100))


class FallbackTests(unittest.SynchronousTestCase):
    """Without lameenc's LAME, MP3 goes through PyAV's libmp3lame, under another cache key."""

    def setUp(self) -> None:
        self.real_backend = lame.backend()
        self.load = lame._load
        self.patch(lame, "_load", lambda: None)

    def test_reported(self) -> None:
        """The module says it is unavailable, names PyAV, and refuses to encode."""
        self.assertFalse(lame.available())
        self.assertEqual(lame.backend(), lame.PYAV_BACKEND)
        with self.assertRaises(lame.LameError):
            lame.encode_frames(_noise(2, 1152), 192, 44100, delay=MP3_TAG_DELAY)

    def test_missing_library_or_symbols(self) -> None:
        """No lameenc, an object that cannot be opened, or one without LAME's
        symbols: no binding."""
        libc = ctypes.util.find_library("c")
        for origin in (None, "/nonexistent/lameenc.so", libc):
            spec = None if origin is None else importlib.machinery.ModuleSpec("lameenc", None, origin=origin)
            self.patch(importlib.util, "find_spec", lambda name, spec=spec: spec)
            self.assertIsNone(self.load.__wrapped__(), origin)

    def test_valid_layout(self) -> None:
        """The fallback still writes a file of the layout's exact length, of
        the layout's frames, that ffmpeg decodes to the layout's sample count."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = str(audiogen.write_samples(directory / "s.flac", "flac", _source_samples(48000), 48000))
        info = probe_source(path)
        rendition = Rendition("mp3", 96, channels=2)
        layout = layout_for(rendition, info.frames, info.sample_rate)
        out = directory / "out.mp3"
        self.assertEqual(encode_full(path, rendition, str(out), source=info), layout.total_length)
        frames = lame.split_frames(out.read_bytes()[layout.header_length :], 96, 48000, 2)
        self.assertEqual(len(frames), layout.packets)
        ffmpeg_or_skip(self)
        self.assertEqual(ffmpeg_frames(out), (layout.frames, 48000))

    def test_cache_key(self) -> None:
        """An MP3 rendition's cache key names its backend, so the two never
        share artifacts; other formats' keys do not depend on it."""
        identity = FileIdentity("Album/Track.flac", 1234, 5678, 9)
        mp3 = Rendition("mp3").resolved(44100)
        opus = Rendition("opus").resolved(44100)
        self.assertEqual(mp3.cache_params()["encoder"], lame.PYAV_BACKEND)
        self.assertEqual(mp3.cache_params()["layout_version"], LAYOUT_VERSION)
        self.assertNotIn("encoder", opus.cache_params())
        fallback = {r: artifact_key(identity, "transcode", r.cache_params()) for r in (mp3, opus)}
        self.patch(lame, "backend", lambda: "lameenc-3.100")
        self.assertEqual(mp3.cache_params()["encoder"], "lameenc-3.100")
        self.assertNotEqual(artifact_key(identity, "transcode", mp3.cache_params()), fallback[mp3])
        self.assertEqual(artifact_key(identity, "transcode", opus.cache_params()), fallback[opus])
        if self.real_backend != lame.PYAV_BACKEND:
            self.patch(lame, "backend", lambda: self.real_backend)
            self.assertNotEqual(artifact_key(identity, "transcode", mp3.cache_params()), fallback[mp3])

"""Tests for :mod:`streamsrv.transcode.encode`: real encodes, checked with Debian's ffmpeg/ffprobe."""

from __future__ import annotations

import atexit
import functools
import os
import pickle
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mutagen
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.audio.decode import DecodeError
from streamsrv.audio.probe import probe_duration
from streamsrv.transcode import (
    NotProgressive,
    Rendition,
    SourceInfo,
    encode_chunk,
    encode_full,
    encode_range,
    layout_for,
    probe_source,
)
from tests import audiogen
from tests.services import ffmpeg_or_skip

#: The contract's tolerance on decoded durations.
TOLERANCE_S = 0.05

#: Length of the test source: a little over two chunks of either format.
SECONDS = 7.3

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
NO_FFMPEG = "Debian's ffmpeg/ffprobe are not on PATH"

#: Every rendition the checks below run on.
RENDITIONS = (
    Rendition("mp3"),
    Rendition("mp3", 128),
    Rendition("mp3", 64),
    Rendition("mp3", 192, 48000),
    Rendition("opus"),
    Rendition("opus", 32),
    Rendition("aac"),
    Rendition("aac", 48),
    Rendition("aac", container="adts"),
    Rendition("flac"),
    Rendition("mp3", start_ms=2500),
    Rendition("opus", start_ms=1234),
    Rendition("aac", start_ms=1000),
    Rendition("flac", start_ms=333),
)


def _source_samples(rate: int) -> np.ndarray:
    """A stereo test signal: a tone and a rising chirp, the channels offset."""
    t = np.arange(round(SECONDS * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1500 * t * (1 + t / 8))
    return np.vstack([mono, np.roll(mono, 50)]).astype(np.float32)


def ffmpeg_frames(path: Path) -> tuple[int, int]:
    """Samples per channel and sample rate that Debian's ffmpeg decodes from a file."""
    assert FFMPEG is not None and FFPROBE is not None
    rate = int(
        subprocess.run(
            [FFPROBE, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
             "-of", "csv=p=0", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    raw = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return len(raw) // 2, rate


@dataclass
class _Fixture:
    """A FLAC source in a temp dir, its probe, and renditions of it encoded once."""

    directory: Path
    source: str
    info: SourceInfo
    outputs: dict[Rendition, Path]


@functools.cache
def _fixture(rate: int, renditions: tuple[Rendition, ...]) -> _Fixture:
    """Write a source at ``rate`` and encode ``renditions`` of it, once per test run.

    trial has no per-class set-up, so fixtures shared by a class are cached
    here; the temp dir goes when the test process exits.
    """
    directory = Path(tempfile.mkdtemp(prefix="streamsrv-transcode-"))
    atexit.register(shutil.rmtree, directory, True)
    source = str(audiogen.write_samples(directory / "source.flac", "flac", _source_samples(rate), rate))
    info = probe_source(source)
    outputs = {}
    for index, rendition in enumerate(renditions):
        out = directory / f"r{index}{rendition.suffix}"
        encode_full(source, rendition, str(out), source=info)
        outputs[rendition] = out
    return _Fixture(directory, source, info, outputs)


class ProbeSourceTests(unittest.SynchronousTestCase):
    """The source's sample count comes from its headers."""

    def test_formats(self) -> None:
        """FLAC, WAV, MP3 (LAME tag), Ogg Opus (pre-skip removed) and M4A give
        their decoded length to within a codec frame."""
        base = Path(self.mktemp())
        base.mkdir()
        for fmt in ("flac", "wav", "mp3", "opus", "m4a"):
            path = audiogen.write_tone(base / f"t.{fmt}", fmt, 1.5)
            info = probe_source(str(path))
            rate = audiogen.OPUS_RATE if fmt == "opus" else 44100
            self.assertEqual((info.sample_rate, info.channels), (rate, 2), fmt)
            self.assertLessEqual(abs(info.frames - round(1.5 * rate)), 1024, fmt)

    def test_not_audio(self) -> None:
        """A file that is not audio is a DecodeError, without a path in it."""
        path = Path(self.mktemp())
        path.write_bytes(b"hello" * 100)
        with self.assertRaises(DecodeError) as caught:
            probe_source(str(path))
        self.assertNotIn(str(path), str(caught.exception))


class FullEncodeTests(unittest.SynchronousTestCase):
    """Whole renditions of every format decode to the source's duration."""

    def setUp(self) -> None:
        fixture = _fixture(44100, RENDITIONS)
        self.source, self.info, self.outputs = fixture.source, fixture.info, fixture.outputs

    def test_durations_with_ffmpeg(self) -> None:
        """Debian's ffmpeg decodes every rendition to the source's duration
        (after ``t=``) within 50 ms, with no error; MP3 and Opus to the sample
        (Debian's FFmpeg 5.1 ignores an edit list in a fragmented MP4, so it
        plays an M4A's priming frame: that is within the 50 ms)."""
        ffmpeg_or_skip(self)
        for rendition, path in self.outputs.items():
            frames, rate = ffmpeg_frames(path)
            expected_s = SECONDS - rendition.start_ms / 1000
            self.assertLessEqual(abs(frames / rate - expected_s), TOLERANCE_S, (rendition, frames / rate))
            if rendition.progressive and rendition.format != "aac":
                layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
                self.assertEqual(frames, layout.frames, rendition)
            errors = subprocess.run(
                [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                capture_output=True,
                text=True,
            ).stderr
            self.assertEqual(errors, "", rendition)

    def test_codecs_with_ffprobe(self) -> None:
        """ffprobe sees the codec, rate and channels each rendition asked for."""
        ffmpeg_or_skip(self)
        names = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac"}
        for rendition, path in self.outputs.items():
            out = subprocess.run(
                [FFPROBE, "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
                 "-of", "csv=p=0", str(path)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            self.assertEqual(out.stderr, "", rendition)
            codec, rate, channels = out.stdout.strip().split(",")
            resolved = rendition.resolved(self.info.sample_rate)
            self.assertEqual(
                (codec, int(rate), int(channels)),
                (names[rendition.format], resolved.sample_rate, resolved.channels),
            )

    def test_length_is_the_layout(self) -> None:
        """A progressive rendition's file is exactly as long as its layout said beforehand."""
        for rendition, path in self.outputs.items():
            if rendition.progressive:
                layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
                self.assertEqual(path.stat().st_size, layout.total_length, rendition)

    def test_mp3_header_duration(self) -> None:
        """mutagen (hence ``X-Content-Duration``) reads the exact duration from the Info frame."""
        path = self.outputs[Rendition("mp3")]
        self.assertAlmostEqual(mutagen.File(path).info.length, SECONDS, places=4)
        self.assertAlmostEqual(probe_duration(path) or 0.0, SECONDS, places=4)

    def test_no_bit_reservoir(self) -> None:
        """Every MP3 frame starts its own main data (main_data_begin = 0), so
        frames of separately encoded chunks join into one valid stream."""
        data = self.outputs[Rendition("mp3", 128)].read_bytes()
        layout = layout_for(Rendition("mp3", 128), self.info.frames, self.info.sample_rate)
        offset, frames = layout.header_length, 0
        while offset < len(data):
            self.assertEqual(data[offset], 0xFF)
            self.assertEqual((data[offset + 4] << 1) | (data[offset + 5] >> 7), 0, offset)
            offset += 144000 * 128 // 44100 + ((data[offset + 2] >> 1) & 1)
            frames += 1
        self.assertEqual((offset, frames), (len(data), layout.packets))

    def test_flac_offset_is_sample_exact(self) -> None:
        """``t=`` starts at the asked sample: a lossless rendition with an
        offset is the source from there on."""
        rendition = Rendition("flac", start_ms=333)
        decoded, rate = audiogen.decode(self.outputs[rendition])
        original, _ = audiogen.decode(self.source)
        skip = round(0.333 * rate)
        np.testing.assert_allclose(decoded, original[:, skip:], atol=1e-4)

    def test_atomic(self) -> None:
        """A failed encode leaves neither the target nor a temp file behind."""
        directory = Path(self.mktemp())
        directory.mkdir()
        bogus = directory / "bogus.flac"
        bogus.write_bytes(b"fLaC" + bytes(100))
        for rendition in (Rendition("mp3"), Rendition("flac")):
            with self.assertRaises(DecodeError):
                encode_full(str(bogus), rendition, str(directory / "out"), source=SourceInfo(44100, 44100, 2))
        self.assertEqual(sorted(p.name for p in directory.iterdir()), ["bogus.flac"])


#: Renditions whose ranges are checked: 48 kHz MP3, Opus, MP3 with ``t=``, AAC in M4A.
RANGED = (
    Rendition("mp3", 128),
    Rendition("opus", 64),
    Rendition("mp3", start_ms=1700),
    Rendition("aac", 64),
)


class RangeTests(unittest.SynchronousTestCase):
    """A byte range encoded on its own equals the same bytes of the finished file."""

    def setUp(self) -> None:
        fixture = _fixture(48000, RANGED)
        self.directory, self.source, self.info = fixture.directory, fixture.source, fixture.info
        self.full = {r: path.read_bytes() for r, path in fixture.outputs.items()}

    @settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(RANGED), st.data())
    def test_random_ranges(self, rendition: Rendition, data: st.DataObject) -> None:
        """Random ranges of a never-encoded rendition equal the full encode's bytes."""
        full = self.full[rendition]
        start = data.draw(st.integers(0, len(full)))
        end = data.draw(st.integers(start, min(start + 70_000, len(full))))
        self.assertEqual(encode_range(self.source, rendition, start, end, source=self.info), full[start:end])

    def test_edges(self) -> None:
        """The header alone, a range across the header and chunk 0, across a
        chunk boundary, the very last byte, and an empty range."""
        for rendition, full in self.full.items():
            layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
            boundary = layout.chunk_offset(1)
            size = len(full)
            for start, end in (
                (0, 10),
                (0, layout.header_length + 5),
                (boundary - 3, boundary + 3),
                (size - 1, size),
                (7, 7),
            ):
                self.assertEqual(
                    encode_range(self.source, rendition, start, end, source=self.info), full[start:end]
                )

    def test_chunks_concatenate(self) -> None:
        """The header and every chunk, each encoded alone, are the full file."""
        rendition = Rendition("opus", 64)
        layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
        parts = [layout.header()] + [encode_chunk(self.source, layout, i) for i in range(layout.chunk_count)]
        self.assertEqual(b"".join(parts), self.full[rendition])

    def test_opus_pages(self) -> None:
        """The Ogg pages carry consecutive sequence numbers, one serial,
        BOS first and EOS last, and a final granule of pre-skip + samples."""
        from tests.test_transcode_layout import _pages

        rendition = Rendition("opus", 64)
        layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
        pages = _pages(self.full[rendition])
        self.assertEqual([p[3] for p in pages], list(range(len(pages))))
        self.assertEqual({p[2] for p in pages}, {pages[0][2]})
        self.assertEqual([p[0] for p in pages[:1]] + [p[0] for p in pages[-1:]], [2, 4])
        self.assertEqual(pages[-1][1], 312 + layout.frames)

    def test_not_progressive(self) -> None:
        """ADTS AAC and FLAC refuse ranges before the encode."""
        for rendition in (Rendition("aac", container="adts"), Rendition("flac")):
            with self.assertRaises(NotProgressive):
                encode_range(self.source, rendition, 0, 10, source=self.info)

    def test_jobs_pickle(self) -> None:
        """The job functions and their arguments pickle, as WorkerPool.submit needs."""
        layout = layout_for(Rendition("mp3"), self.info.frames, self.info.sample_rate)
        for value in (encode_chunk, encode_range, encode_full, probe_source, layout, self.info):
            self.assertEqual(pickle.loads(pickle.dumps(value)), value)

    def test_window_of_a_lossy_source(self) -> None:
        """An MP3 source (decoded with a seek per chunk) still gives identical ranges."""
        path = audiogen.write_samples(self.directory / "lossy.mp3", "mp3", _source_samples(44100), 44100)
        rendition = Rendition("opus", 48)
        info = probe_source(str(path))
        out = self.directory / "lossy.opus"
        encode_full(str(path), rendition, str(out), source=info)
        full = out.read_bytes()
        layout = layout_for(rendition, info.frames, info.sample_rate)
        middle = layout.chunk_offset(1) + 100
        self.assertEqual(
            encode_range(str(path), rendition, middle, middle + 5000, source=info),
            full[middle : middle + 5000],
        )
        self.assertEqual(os.path.getsize(out), layout.total_length)

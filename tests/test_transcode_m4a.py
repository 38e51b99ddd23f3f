"""Progressive AAC in fragmented MP4: the layout before encoding, the fragments, and real decoders.

:mod:`streamsrv.transcode.layout` promises an M4A rendition's every byte
offset before a frame is encoded: a header (``ftyp``, ``moov`` with an edit
list and ``mehd``, a ``sidx`` of every fragment) and fragments of a fixed
size (``moof`` + ``mdat`` + a ``free`` box filling the budget).  These tests
parse what the encoder made and hold it to that promise, and decode it with
PyAV and Debian's ffmpeg.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from twisted.trial import unittest

from streamsrv.audio.decode import decode
from streamsrv.transcode import Rendition, aac, encode_chunk, encode_full, layout_for, probe_source
from streamsrv.transcode.layout import AAC_CHUNK_FRAMES, AAC_FRAME_SAMPLES, Layout, aac_audio_specific_config
from tests import audiogen
from tests.services import ffmpeg_or_skip

#: Seconds of the test source: a little over two fragments at 44.1 kHz.
SECONDS = 9.5


def boxes(data: bytes, offset: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of each box in ``data[offset:end]``."""
    end = len(data) if end is None else end
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size < 8:
            raise AssertionError(f"box {kind!r} of size {size}")
        yield kind, offset + 8, offset + size
        offset += size
    if offset != end:
        raise AssertionError("boxes overrun their parent")


def find(data: bytes, path: list[bytes], offset: int = 0, end: int | None = None) -> tuple[int, int]:
    """The payload span of the first box at ``path`` (e.g. ``[b"moov", b"mvex", b"mehd"]``)."""
    for kind, start, stop in boxes(data, offset, end):
        if kind == path[0]:
            return (start, stop) if len(path) == 1 else find(data, path[1:], start, stop)
    raise AssertionError(f"no {path[0]!r} box")


def music(seconds: float, rate: int) -> np.ndarray:
    """Stereo tones, a chirp and noise, with a silent second then loud noise (hard for rate control)."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    mono = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 1200 * t * (1 + t / 10))
    mono += 0.05 * rng.standard_normal(t.size)
    mono[(t >= 3.0) & (t < 4.0)] = 0.0
    loud = (t >= 4.0) & (t < 5.0)
    mono[loud] = np.clip(0.6 * rng.standard_normal(int(loud.sum())), -0.95, 0.95)
    return np.vstack([mono, np.roll(mono, 40)]).astype(np.float32)


class LayoutTests(unittest.SynchronousTestCase):
    """The header and the fragment sizes, from arithmetic alone."""

    def test_header_and_sizes(self) -> None:
        """Every full fragment has one size; the ``sidx`` lists each fragment's size and
        presented duration (adding up to the exact sample count, as do ``mehd`` and the edit list,
        which skips the priming frame)."""
        for rendition, rate in ((Rendition("aac"), 44100), (Rendition("aac", 48), 48000)):
            layout = layout_for(rendition, 10 * rate + 123, rate)
            header = layout.header()
            self.assertEqual(len(header), layout.header_length)
            lengths = [layout.chunk_length(i) for i in range(layout.chunk_count)]
            self.assertEqual(len(set(lengths[:-1])), 1)
            self.assertEqual(layout.total_length, layout.header_length + sum(lengths))
            self.assertEqual([kind for kind, _, _ in boxes(header)], [b"ftyp", b"moov", b"sidx"])
            start, _ = find(header, [b"moov", b"mvex", b"mehd"])
            self.assertEqual(struct.unpack(">I", header[start + 4 : start + 8])[0], layout.frames)
            start, _ = find(header, [b"moov", b"trak", b"edts", b"elst"])
            count, duration, media_time = struct.unpack(">IIi", header[start + 4 : start + 16])
            self.assertEqual((count, duration, media_time), (1, layout.frames, AAC_FRAME_SAMPLES))
            start, stop = find(header, [b"sidx"])
            (references,) = struct.unpack(">H", header[start + 22 : start + 24])
            entries = [
                struct.unpack(">III", header[offset : offset + 12]) for offset in range(start + 24, stop, 12)
            ]
            self.assertEqual(references, layout.chunk_count)
            self.assertEqual([size for size, _, _ in entries], lengths)
            self.assertEqual(sum(d for _, d, _ in entries), layout.frames)
            self.assertEqual({sap for _, _, sap in entries}, {0x90000000})

    def test_budget_covers_the_bit_rate(self) -> None:
        """A fragment's budget is at least its frames' nominal size at the rendition's bit rate."""
        layout = layout_for(Rendition("aac", 128), 44100 * 20, 44100)
        nominal = AAC_CHUNK_FRAMES * AAC_FRAME_SAMPLES / 44100 * 128000 / 8
        self.assertGreaterEqual(layout.aac_budget(AAC_CHUNK_FRAMES), nominal)
        self.assertLess(layout.aac_budget(AAC_CHUNK_FRAMES), nominal * 1.1)

    def test_audio_specific_config(self) -> None:
        """The AudioSpecificConfig computed without an encoder is what FFmpeg's encoder
        starts its ``extradata`` with."""
        for rate in (44100, 48000):
            for channels in (1, 2):
                context = av.CodecContext.create("aac", "w")
                context.sample_rate = rate
                context.layout = "mono" if channels == 1 else "stereo"
                context.format = "fltp"
                context.bit_rate = 96000
                context.open()
                self.assertEqual(
                    bytes(context.extradata or b"")[:2], aac_audio_specific_config(rate, channels)
                )


class EncodeTests(unittest.SynchronousTestCase):
    """Fragments encoded one by one make the file the layout promised, and decoders play it."""

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.directory = directory
        self.samples = music(SECONDS, 44100)
        self.source = str(audiogen.write_samples(directory / "source.flac", "flac", self.samples, 44100))
        self.info = probe_source(self.source)

    def encode(self, rendition: Rendition) -> tuple[Layout, bytes]:
        """The layout and the whole rendition, written by ``encode_full``."""
        out = self.directory / f"out-{rendition.bitrate_kbps}-{rendition.channels}.m4a"
        encode_full(self.source, rendition, str(out), source=self.info)
        return layout_for(rendition, self.info.frames, self.info.sample_rate), out.read_bytes()

    def test_fragments(self) -> None:
        """Each fragment is ``moof`` (sequence number, ``tfdt`` on the frame grid) + ``mdat``
        + ``free``, exactly where the layout put it, at 32 kb/s mono (where silence then noise
        overruns a fresh encoder's rate control) and 128 kb/s stereo."""
        for rendition in (Rendition("aac", 32), Rendition("aac", 128)):
            layout, data = self.encode(rendition)
            self.assertEqual(len(data), layout.total_length)
            self.assertEqual(data[: layout.header_length], layout.header())
            for index in range(layout.chunk_count):
                offset = layout.chunk_offset(index)
                end = offset + layout.chunk_length(index)
                kinds = [kind for kind, _, _ in boxes(data, offset, end)]
                self.assertEqual(kinds, [b"moof", b"mdat", b"free"], index)
                start, _ = find(data, [b"moof", b"mfhd"], offset, end)
                self.assertEqual(struct.unpack(">I", data[start + 4 : start + 8])[0], index + 1)
                start, _ = find(data, [b"moof", b"traf", b"tfdt"], offset, end)
                first, _ = layout.chunk_packet_range(index)
                self.assertEqual(struct.unpack(">Q", data[start + 4 : start + 12])[0], first * 1024)

    def test_chunks_are_pure(self) -> None:
        """A fragment encoded alone, in any order, equals the same bytes of the whole file."""
        layout, data = self.encode(Rendition("aac", 96))
        for index in reversed(range(layout.chunk_count)):
            offset = layout.chunk_offset(index)
            chunk = encode_chunk(self.source, layout, index)
            self.assertEqual(chunk, data[offset : offset + layout.chunk_length(index)], index)

    def test_decodes_in_place(self) -> None:
        """PyAV's FFmpeg honours the edit list: the decoded audio lines up with the source
        sample for sample (best correlation at lag 0) and lasts as long, to within one frame."""
        _, data = self.encode(Rendition("aac", 128))
        path = self.directory / "check.m4a"
        path.write_bytes(data)
        decoded = decode(path).samples
        self.assertLess(abs(decoded.shape[1] - self.samples.shape[1]), AAC_FRAME_SAMPLES)
        reference = self.samples[0, 44100 : 3 * 44100]
        errors = {}
        for lag in (-AAC_FRAME_SAMPLES, -1, 0, 1, AAC_FRAME_SAMPLES):
            errors[lag] = float(np.mean((decoded[0, 44100 + lag : 3 * 44100 + lag] - reference) ** 2))
        self.assertEqual(min(errors, key=errors.__getitem__), 0, errors)

    def test_with_ffmpeg(self) -> None:
        """Debian's ffmpeg decodes the whole without an error to the source's duration within
        50 ms, and seeks by the ``sidx``: from 6 s it decodes the rest."""
        ffmpeg, ffprobe = ffmpeg_or_skip(self)
        _, data = self.encode(Rendition("aac", 128))
        path = self.directory / "ffmpeg.m4a"
        path.write_bytes(data)
        for seek in (0.0, 6.0):
            result = subprocess.run(
                [
                    ffmpeg,
                    "-nostdin",
                    "-v",
                    "error",
                    "-ss",
                    str(seek),
                    "-i",
                    str(path),
                    "-f",
                    "s16le",
                    "-ac",
                    "1",
                    "-",
                ],
                capture_output=True,
                timeout=60,
            )
            self.assertEqual(result.stderr, b"")
            self.assertLessEqual(abs(len(result.stdout) / 2 / 44100 - (SECONDS - seek)), 0.05, seek)
        probed = subprocess.run(
            [
                ffprobe,
                "-v",
                "error",
                "-show_entries",
                "format=duration,format_name",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        name, _, duration = probed.stdout.strip().rpartition(",")
        self.assertIn("mp4", name)
        self.assertLessEqual(abs(float(duration) - SECONDS), 0.05)

    def test_over_budget_falls_back(self) -> None:
        """A fragment whose frames fit no budget is silence of the promised size, never a
        broken layout; lower bit rates are tried before that."""
        rendition = Rendition("aac", 128)
        layout = layout_for(rendition, self.info.frames, self.info.sample_rate)
        tried: list[int] = []
        original = aac.encode_window

        def spy(samples: np.ndarray, rate: int, channels: int, bit_rate: int) -> list[bytes]:
            tried.append(bit_rate if samples.any() else 0)
            return original(samples, rate, channels, bit_rate)

        self.patch(aac, "encode_window", spy)
        self.patch(Layout, "aac_budget", lambda self, count: 12 * count)
        chunk = encode_chunk(self.source, layout, 1)
        self.assertEqual(len(chunk), layout.chunk_length(1))
        self.assertEqual(tried, [128000, 108800, 89600, 64000, 38400, 0])
        path = self.directory / "silent.m4a"
        path.write_bytes(layout.header() + b"".join(encode_chunk(self.source, layout, i) for i in range(2)))
        middle = decode(path).samples[:, (AAC_CHUNK_FRAMES + 10) * 1024 : (2 * AAC_CHUNK_FRAMES - 10) * 1024]
        self.assertLess(float(np.abs(middle).max()), 1e-3)

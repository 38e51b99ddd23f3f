"""Tests for :mod:`streamsrv.transcode.layout` and :mod:`streamsrv.transcode.ogg`: pure byte arithmetic."""

from __future__ import annotations

import pickle
import struct
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.transcode import ogg
from streamsrv.transcode.layout import (
    MP3_BITRATES,
    MP3_RATES,
    NotProgressive,
    Rendition,
    crc16_arc,
    layout_for,
    mp3_frame_sizes,
)
from tests import audiogen

#: Source sample rates worth covering: CD, DAT/video, a hi-res one, a low one.
SOURCE_RATES = (44100, 48000, 96000, 22050)

#: Progressive renditions: every MP3 sample-rate case, Opus stereo and mono.
PROGRESSIVE = (
    Rendition("mp3"),
    Rendition("mp3", 128),
    Rendition("mp3", 32),
    Rendition("mp3", 320, 48000),
    Rendition("mp3", 96, 32000),
    Rendition("opus"),
    Rendition("opus", 16),
    Rendition("opus", 256),
)


def _pages(data: bytes) -> list[tuple[int, int, int, int, int, bytes]]:
    """Split an Ogg stream into (flags, granule, serial, sequence, crc, page bytes)."""
    pages = []
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS":
            raise AssertionError(f"no page at {offset}")
        _, flags, granule, serial, sequence, crc, count = struct.unpack_from("<BBqIIIB", data, offset + 4)
        table = data[offset + 27 : offset + 27 + count]
        size = 27 + count + sum(table)
        pages.append((flags, granule, serial, sequence, crc, data[offset : offset + size]))
        offset += size
    return pages


class RenditionTests(unittest.SynchronousTestCase):
    """A rendition validates its parameters and fills in DESIGN's defaults."""

    def test_default_bitrates(self) -> None:
        """Without a bitrate: mp3 192, aac 128, opus 96 kb/s; flac has none."""
        self.assertEqual(Rendition("mp3").bitrate_kbps, 192)
        self.assertEqual(Rendition("aac").bitrate_kbps, 128)
        self.assertEqual(Rendition("opus").bitrate_kbps, 96)
        self.assertIsNone(Rendition("flac").bitrate_kbps)

    def test_default_channels(self) -> None:
        """Stereo by default, mono at low bit rates, as asked when given."""
        self.assertEqual(Rendition("mp3").channels, 2)
        self.assertEqual(Rendition("mp3", 64).channels, 1)
        self.assertEqual(Rendition("opus", 32).channels, 1)
        self.assertEqual(Rendition("opus", 32, channels=2).channels, 2)

    def test_invalid(self) -> None:
        """Unknown formats, bit rates outside a format's set, bad rates and
        channels, a negative start: ValueError with a client-safe message."""
        cases = [
            lambda: Rendition("wav"),
            lambda: Rendition("mp3", 100),
            lambda: Rendition("opus", 97),
            lambda: Rendition("opus", 8),
            lambda: Rendition("aac", 16),
            lambda: Rendition("flac", 128),
            lambda: Rendition("mp3", channels=3),
            lambda: Rendition("mp3", sample_rate=22050),
            lambda: Rendition("opus", sample_rate=44100),
            lambda: Rendition("mp3", start_ms=-1),
            lambda: Rendition("mp3", True),
        ]
        for case in cases:
            with self.assertRaises(ValueError):
                case()

    def test_from_query(self) -> None:
        """Query values parse: kb/s, ``t`` in (fractional) seconds, rejected garbage."""
        self.assertEqual(Rendition.from_query("mp3", "128", "2.5"), Rendition("mp3", 128, start_ms=2500))
        self.assertEqual(Rendition.from_query("opus"), Rendition("opus", 96))
        for bitrate, t in (
            ("12x", None),
            ("-128", None),
            (None, "-1"),
            (None, "nan"),
            (None, "inf"),
            (None, "1e400"),
        ):
            with self.assertRaises(ValueError):
                Rendition.from_query("mp3", bitrate, t)

    def test_permissions_and_types(self) -> None:
        """Lossless and > 192 kb/s need stream:hq; each format has its MIME type."""
        self.assertFalse(Rendition("mp3", 192).needs_hq)
        self.assertTrue(Rendition("mp3", 256).needs_hq)
        self.assertTrue(Rendition("flac").needs_hq)
        types = {f: Rendition(f).content_type for f in ("mp3", "aac", "opus", "flac")}
        self.assertEqual(
            types,
            {"mp3": "audio/mpeg", "aac": "audio/mp4", "opus": "audio/ogg; codecs=opus", "flac": "audio/flac"},
        )

    def test_resolved_rates(self) -> None:
        """MP3 keeps MPEG-1 rates and maps others onto their family; Opus is 48 kHz;
        AAC is 44.1/48 kHz; FLAC keeps the source's."""
        mp3 = Rendition("mp3")
        self.assertEqual([mp3.resolved(r).sample_rate for r in SOURCE_RATES], [44100, 48000, 48000, 44100])
        self.assertEqual(Rendition("mp3").resolved(32000).sample_rate, 32000)
        self.assertEqual({Rendition("opus").resolved(r).sample_rate for r in SOURCE_RATES}, {48000})
        self.assertEqual(Rendition("aac").resolved(32000).sample_rate, 48000)
        self.assertEqual(Rendition("flac").resolved(96000).sample_rate, 96000)

    def test_not_progressive(self) -> None:
        """ADTS AAC and FLAC have no layout before they are encoded; AAC in M4A has."""
        for rendition in (Rendition("aac", container="adts"), Rendition("flac")):
            self.assertFalse(rendition.progressive)
            with self.assertRaises(NotProgressive):
                layout_for(rendition, 44100, 44100)
        self.assertTrue(Rendition("aac").progressive)

    def test_containers(self) -> None:
        """AAC defaults to M4A (``audio/mp4``, ``.m4a``); ADTS is ``audio/aac``, ``.aac``;
        other formats take no container; the container is part of the cache key."""
        self.assertEqual(Rendition("aac").container, "m4a")
        self.assertEqual((Rendition("aac").content_type, Rendition("aac").suffix), ("audio/mp4", ".m4a"))
        adts = Rendition.from_query("aac", container="adts")
        self.assertEqual((adts.content_type, adts.suffix), ("audio/aac", ".aac"))
        self.assertNotEqual(adts.cache_params(), Rendition("aac").cache_params())
        for fmt, container in (("aac", "mp4"), ("mp3", "m4a"), ("opus", "adts")):
            with self.assertRaises(ValueError):
                Rendition.from_query(fmt, container=container)


class Mp3FrameTests(unittest.SynchronousTestCase):
    """MP3 frame sizes are predicted exactly."""

    def test_padding_pattern_matches_lame(self) -> None:
        """:func:`mp3_frame_sizes` gives the sizes libmp3lame writes (CBR,
        reservoir off), padding bytes included, for every bit rate and rate."""
        noise = (np.random.default_rng(7).standard_normal((1, 1152 * 60)) * 0.1).astype(np.float32)
        for rate in MP3_RATES:
            for kbps in MP3_BITRATES[::3]:
                context = av.CodecContext.create("libmp3lame", "w")
                context.sample_rate, context.layout, context.format = rate, "mono", "fltp"
                context.bit_rate = kbps * 1000
                context.options = {"reservoir": "0"}
                context.open()
                packets = []
                for start in range(0, noise.shape[1], 1152):
                    frame = av.AudioFrame.from_ndarray(
                        noise[:, start : start + 1152], format="fltp", layout="mono"
                    )
                    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                    packets.extend(context.encode(frame))
                packets.extend(context.encode(None))
                sizes = tuple(p.size for p in packets)
                self.assertEqual(sizes, mp3_frame_sizes(kbps, rate, len(sizes)), (rate, kbps))

    def test_crc16(self) -> None:
        """The LAME tag checksum is CRC-16/ARC (check value of "123456789": 0xBB3D)."""
        self.assertEqual(crc16_arc(b"123456789"), 0xBB3D)


class LayoutTests(unittest.SynchronousTestCase):
    """Layouts add up, and ranges map onto chunks."""

    @settings(max_examples=60)
    @given(
        st.sampled_from(PROGRESSIVE),
        st.integers(min_value=0, max_value=44100 * 600),
        st.sampled_from(SOURCE_RATES),
    )
    def test_chunks_add_up(self, rendition: Rendition, frames: int, rate: int) -> None:
        """The header and chunks tile the file, each chunk's samples follow the
        last's, and the codec frames cover every output sample."""
        layout = layout_for(rendition, frames, rate)
        offset = layout.header_length
        previous_end = None
        for index in range(layout.chunk_count):
            self.assertEqual(layout.chunk_offset(index), offset)
            offset += layout.chunk_length(index)
            start, end = layout.chunk_samples(index)
            if previous_end is not None:
                self.assertEqual(start, previous_end)
            previous_end = end
        self.assertEqual(offset, layout.total_length)
        self.assertLessEqual(layout.chunk_samples(0)[0], 0)
        self.assertGreaterEqual(previous_end or 0, layout.frames)
        self.assertEqual(len(layout.header()), layout.header_length)

    @settings(max_examples=60)
    @given(
        st.sampled_from(PROGRESSIVE),
        st.integers(min_value=0, max_value=44100 * 60),
        st.data(),
    )
    def test_chunks_for(self, rendition: Rendition, frames: int, data: st.DataObject) -> None:
        """``chunks_for`` names exactly the chunks that overlap a byte range."""
        layout = layout_for(rendition, frames, 44100)
        start = data.draw(st.integers(0, layout.total_length))
        end = data.draw(st.integers(start, layout.total_length))
        expected = [
            i
            for i in range(layout.chunk_count)
            if start < end
            and layout.chunk_offset(i) < end
            and start < layout.chunk_offset(i) + layout.chunk_length(i)
        ]
        self.assertEqual(list(layout.chunks_for(start, end)), expected)

    def test_chunks_for_outside(self) -> None:
        """A range beyond the end is a ValueError (the caller answers 416 first)."""
        layout = layout_for(Rendition("mp3"), 44100, 44100)
        with self.assertRaises(ValueError):
            layout.chunks_for(0, layout.total_length + 1)

    @settings(max_examples=40)
    @given(
        st.sampled_from(PROGRESSIVE),
        st.integers(min_value=0, max_value=44100 * 600),
        st.integers(min_value=0, max_value=700_000),
    )
    def test_offset_is_the_remaining_audio(self, rendition: Rendition, frames: int, start_ms: int) -> None:
        """With ``t=``, the layout is that of a source holding only the audio after it."""
        rate = 44100
        shifted = layout_for(replace(rendition, start_ms=start_ms), frames, rate)
        skipped = (start_ms * rate + 500) // 1000
        plain = layout_for(rendition, max(frames - skipped, 0), rate)
        self.assertEqual(shifted.frames, plain.frames)
        self.assertEqual(shifted.total_length, plain.total_length)
        self.assertEqual(shifted.header(), plain.header())

    def test_known_sizes(self) -> None:
        """Worked examples: 10 s at 44.1 kHz, MP3 192 and Opus 96."""
        mp3 = layout_for(Rendition("mp3", 192), 441000, 44100)
        # (441000 + 1105) // 1152 + 1 = 384 frames of 626 or 627 bytes, plus a 626-byte Info frame.
        self.assertEqual((mp3.frames, mp3.packets, mp3.header_length), (441000, 384, 626))
        self.assertEqual(mp3.chunk_count, 3)
        sizes = mp3_frame_sizes(192, 44100, 2 + 128)[2:]
        self.assertEqual(mp3.total_length, 626 + 2 * sum(sizes) + sum(sizes[:128]))
        opus = layout_for(Rendition("opus", 96), 441000, 44100)
        # 480000 + 312 samples: 501 packets of 240 bytes, 25 per page.
        self.assertEqual((opus.frames, opus.packets), (480000, 501))
        page = 27 + 25 + 25 * 240
        self.assertEqual(opus.total_length, opus.header_length + 20 * page + (27 + 1 + 240))

    def test_pickles(self) -> None:
        """Renditions and layouts cross process boundaries (worker-pool jobs)."""
        layout = layout_for(Rendition("opus"), 44100, 44100)
        self.assertEqual(pickle.loads(pickle.dumps(layout)), layout)
        self.assertEqual(pickle.loads(pickle.dumps(layout.rendition)), layout.rendition)

    def test_cache_params(self) -> None:
        """Cache parameters name everything that changes the bytes, the layout version included."""
        params = Rendition("mp3", start_ms=1500).resolved(44100).cache_params()
        self.assertEqual(params["start_ms"], 1500)
        self.assertEqual(params["sample_rate"], 44100)
        self.assertIn("layout_version", params)

    def test_cache_params_of_m4a(self) -> None:
        """An M4A rendition's cache key is the one cold encoders have always had (no warm-up
        part: ``streamsrv.transcode.aac.WARMUP_FRAMES`` is 0), so cached fragments stay valid."""
        params = Rendition("aac").resolved(44100).cache_params()
        self.assertNotIn("aac_warmup", params)
        self.assertEqual(
            set(params),
            {
                "format",
                "bitrate_kbps",
                "sample_rate",
                "channels",
                "start_ms",
                "gain_mdb",
                "layout_version",
                "container",
            },
        )

    def test_info_frame(self) -> None:
        """The MP3 header is one frame with an Info tag, the frame count and
        LAME's delay/padding fields, and a valid tag CRC."""
        layout = layout_for(Rendition("mp3", 128), 100_000, 44100)
        header = layout.header()
        self.assertEqual(header[:2], b"\xff\xfb")
        self.assertEqual(header[36:40], b"Info")
        flags, frames, size = struct.unpack_from(">III", header, 40)
        self.assertEqual((flags, frames, size), (0xB, layout.packets, layout.total_length))
        lame = 56
        self.assertEqual(header[lame : lame + 4], b"LAME")
        packed = int.from_bytes(header[lame + 21 : lame + 24], "big")
        delay, padding = packed >> 12, packed & 0xFFF
        self.assertEqual(delay, 576)
        self.assertEqual(layout.packets * 1152 - delay - padding, 100_000)
        self.assertEqual(struct.unpack_from(">H", header, lame + 34)[0], crc16_arc(header[: lame + 34]))


class OggTests(unittest.SynchronousTestCase):
    """Ogg pages are framed and checksummed as libogg does."""

    @given(st.binary(max_size=600))
    def test_crc_matches_reference(self, data: bytes) -> None:
        """The fast CRC equals the bit-by-bit definition (poly 0x04C11DB7, no reflection)."""
        self.assertEqual(ogg.ogg_crc(data), ogg.ogg_crc_reference(data))

    def test_crc_of_ffmpeg_pages(self) -> None:
        """Every page of an Ogg Opus file FFmpeg's muxer wrote carries the CRC
        :func:`ogg.ogg_crc` computes over the page with its CRC zeroed."""
        base = Path(self.mktemp())
        base.mkdir()
        path = audiogen.write_tone(base / "t.opus", "opus", 1.5)
        pages = _pages(path.read_bytes())
        self.assertGreater(len(pages), 2)
        for *_, crc, raw in pages:
            zeroed = raw[:22] + b"\0\0\0\0" + raw[26:]
            self.assertEqual(ogg.ogg_crc(zeroed), crc)

    def test_lacing(self) -> None:
        """Packets split into 255-byte segments; a multiple of 255 ends with a 0."""
        self.assertEqual(ogg.lacing(0), b"\x00")
        self.assertEqual(ogg.lacing(254), b"\xfe")
        self.assertEqual(ogg.lacing(255), b"\xff\x00")
        self.assertEqual(ogg.lacing(300), b"\xff\x2d")
        self.assertEqual(ogg.page_size([255, 10]), 27 + 3 + 265)
        with self.assertRaises(ValueError):
            ogg.page([b"x"] * 256, serial=1, sequence=0, granule=0)

    def test_page_fields(self) -> None:
        """A page carries its flags, granule, serial, sequence and packets, and
        is as long as :func:`ogg.page_size` says."""
        packets = [b"a" * 300, b"b" * 20]
        raw = ogg.page(packets, serial=0x1234, sequence=7, granule=96000, flags=ogg.EOS)
        self.assertEqual(len(raw), ogg.page_size([300, 20]))
        ((flags, granule, serial, sequence, _crc, whole),) = _pages(raw)
        self.assertEqual((flags, granule, serial, sequence, whole), (ogg.EOS, 96000, 0x1234, 7, raw))
        self.assertTrue(raw.endswith(b"a" * 300 + b"b" * 20))

    def test_opus_headers(self) -> None:
        """OpusHead (RFC 7845 §5.1) and OpusTags (§5.2) hold what they should."""
        head = ogg.opus_head(2, 312, 44100)
        self.assertEqual(len(head), 19)
        self.assertEqual(struct.unpack("<8sBBHIhB", head), (b"OpusHead", 1, 2, 312, 44100, 0, 0))
        self.assertEqual(ogg.opus_tags("x"), b"OpusTags\x01\x00\x00\x00x\x00\x00\x00\x00")
        with self.assertRaises(ValueError):
            ogg.opus_head(3, 312, 48000)

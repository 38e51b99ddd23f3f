# -*- test-case-name: tests.test_hls_segments,tests.test_transcode_m4a -*-
"""ISO BMFF (fragmented MP4) boxes of one-track audio presentations: init segments and fragments.

Shared by the HLS segments (:mod:`streamsrv.hls.segments`) and the
progressive AAC-in-M4A transcodes (:mod:`streamsrv.transcode.m4a`).  The
boxes are written here rather than by FFmpeg's ``mp4`` muxer, which
renumbers and retimes fragments per output file; writing them directly
makes the timestamps and the bytes exactly what the caller's grid says.
Layout (CMAF-like): init = ``ftyp`` + ``moov`` (``mvhd``, ``trak`` with an
optional ``edts``/``elst``, an empty sample table, ``mvex``/``trex``);
fragment = ``moof`` (``mfhd``, ``traf``: ``tfhd`` with default-base-is-moof,
``tfdt`` v1, ``trun`` with per-sample durations and sizes) + ``mdat``.

Pure functions of their arguments: no I/O, no codec, no reactor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

__all__ = [
    "TRACK_ID",
    "audio_sample_entry",
    "box",
    "descriptor",
    "fragment_length",
    "full_box",
    "init_segment",
    "media_segment",
    "mp4a_sample_entry",
    "segment_index",
    "segment_index_length",
]

#: The track id of the one track of every init segment.
TRACK_ID: Final = 1

_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, four-character type, payload."""
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    """A ``FullBox``: a box whose payload starts with a version byte and 24 bits of flags."""
    return box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def audio_sample_entry(channels: int, bits: int, rate: int) -> bytes:
    """The fields every ``AudioSampleEntry`` starts with (before its codec's box)."""
    fields = struct.pack(">HHHHI", channels, bits, 0, 0, rate << 16)
    return bytes(6) + struct.pack(">H", 1) + bytes(8) + fields


def init_segment(
    timescale: int,
    sample_entry: bytes,
    edit: tuple[int, int] | None,
    fragment_duration: int | None = None,
) -> bytes:
    """``ftyp`` + ``moov`` of a one-track audio presentation; *edit* = ``(duration, media_time)``.

    :param fragment_duration: The whole presentation's duration in *timescale*
        units, written as ``mehd`` (a player then knows the duration before
        reading any fragment); ``None`` for HLS, whose playlists say it.
    """
    ftyp = box(b"ftyp", b"iso6" + struct.pack(">I", 0) + b"iso6cmfcmp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, timescale, 0)
        + struct.pack(">IH", 0x00010000, 0x0100)
        + bytes(10)
        + _MATRIX
        + bytes(24)
        + struct.pack(">I", TRACK_ID + 1),
    )
    tkhd = full_box(
        b"tkhd",
        0,
        0x3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0)
        + bytes(8)
        + struct.pack(">HHHH", 0, 1, 0x0100, 0)  # layer, alternate group, volume, reserved
        + _MATRIX
        + struct.pack(">II", 0, 0),
    )
    edts = b""
    if edit is not None:
        duration, media_time = edit
        elst = full_box(b"elst", 0, 0, struct.pack(">IIiHH", 1, duration, media_time, 1, 0))
        edts = box(b"edts", elst)
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))  # 'und'
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0) + b"soun" + bytes(12) + b"SoundHandler\x00")
    smhd = full_box(b"smhd", 0, 0, struct.pack(">HH", 0, 0))
    dref = full_box(b"dref", 0, 0, struct.pack(">I", 1) + full_box(b"url ", 0, 1, b""))
    dinf = box(b"dinf", dref)
    stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1) + sample_entry)
    empty = struct.pack(">I", 0)
    stbl = box(
        b"stbl",
        stsd
        + full_box(b"stts", 0, 0, empty)
        + full_box(b"stsc", 0, 0, empty)
        + full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0))
        + full_box(b"stco", 0, 0, empty),
    )
    minf = box(b"minf", smhd + dinf + stbl)
    mdia = box(b"mdia", mdhd + hdlr + minf)
    trak = box(b"trak", tkhd + edts + mdia)
    trex = full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0))
    mehd = b""
    if fragment_duration is not None:
        mehd = full_box(b"mehd", 0, 0, struct.pack(">I", fragment_duration))
    mvex = box(b"mvex", mehd + trex)
    return ftyp + box(b"moov", mvhd + trak + mvex)


#: ``sample_depends_on = 2``: every audio sample is a sync sample.
_SYNC_SAMPLE_FLAGS: Final = 0x02000000


def media_segment(n: int, base_time: int, durations: list[int], payloads: list[bytes]) -> bytes:
    """``moof`` + ``mdat`` holding *payloads*, the first decoded at *base_time*."""
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", n + 1))
    # default-base-is-moof, default-sample-flags present.
    tfhd = full_box(b"tfhd", 0, 0x020020, struct.pack(">II", TRACK_ID, _SYNC_SAMPLE_FLAGS))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", base_time))
    entries = b"".join(struct.pack(">II", d, len(p)) for d, p in zip(durations, payloads, strict=True))
    trun_size = 8 + 4 + 8 + len(entries)
    moof_size = 8 + len(mfhd) + 8 + len(tfhd) + len(tfdt) + trun_size
    # data-offset, sample-duration and sample-size present.
    trun = full_box(b"trun", 0, 0x000301, struct.pack(">Ii", len(payloads), moof_size + 8) + entries)
    moof = box(b"moof", mfhd + box(b"traf", tfhd + tfdt + trun))
    assert len(moof) == moof_size
    return moof + box(b"mdat", b"".join(payloads))


def mp4a_sample_entry(channels: int, rate: int, bitrate: int, config: bytes) -> bytes:
    """``mp4a`` with its ``esds`` (ES, DecoderConfig with AudioSpecificConfig, SLConfig).

    :param bitrate: The nominal bits per second (``avgBitrate``; twice that is ``maxBitrate``).
    :param config: The encoder's AudioSpecificConfig (its ``extradata``).
    """
    decoder_config = (
        struct.pack(">BB", 0x40, 0x15)  # MPEG-4 Audio; AudioStream, upstream 0, reserved 1
        + (6144 * channels // 8).to_bytes(3, "big")  # bufferSizeDB: one frame at most
        + struct.pack(">II", bitrate * 2, bitrate)
        + descriptor(0x05, config)
    )
    es = struct.pack(">HB", TRACK_ID, 0) + descriptor(0x04, decoder_config) + descriptor(0x06, b"\x02")
    esds = full_box(b"esds", 0, 0, descriptor(0x03, es))
    return box(b"mp4a", audio_sample_entry(channels, 16, rate) + esds)


def descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor with a 4-byte size (``0x80 0x80 0x80 nn``, as most muxers write)."""
    size = len(payload)
    length = bytes([0x80 | (size >> shift) & 0x7F for shift in (21, 14, 7)] + [size & 0x7F])
    return bytes([tag]) + length + payload


def segment_index(timescale: int, earliest: int, references: Sequence[tuple[int, int]]) -> bytes:
    """A ``sidx`` indexing the fragments that follow it directly.

    Every fragment starts with a sync sample (all audio samples are), so a
    player seeks to any of them from this table alone.

    :param earliest: The media time of the first fragment's first sample.
    :param references: ``(size in bytes, duration in timescale units)`` of each fragment, in order.
    """
    entries = b"".join(
        struct.pack(">III", size & 0x7FFFFFFF, duration, 0x90000000)  # starts with SAP, type 1
        for size, duration in references
    )
    payload = struct.pack(">IIIIHH", TRACK_ID, timescale, earliest, 0, 0, len(references)) + entries
    return full_box(b"sidx", 0, 0, payload)


def segment_index_length(count: int) -> int:
    """Bytes of :func:`segment_index` with *count* references."""
    return 12 + 20 + 12 * count


def fragment_length(samples: int, payload_bytes: int) -> int:
    """Bytes of :func:`media_segment` output for *samples* samples carrying *payload_bytes* in all."""
    return 8 + 16 + 8 + 16 + 20 + 20 + 8 * samples + 8 + payload_bytes

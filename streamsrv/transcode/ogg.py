# -*- test-case-name: tests.test_transcode_layout -*-
"""A minimal Ogg writer for Opus (RFC 3533 pages, RFC 7845 Opus mapping).

Progressive Opus transcodes need every byte offset known before a packet is
encoded, so the pages are written here, not by FFmpeg's muxer: fixed-size
CBR packets, a fixed number of packets per page, so a page's size is a
function of its index alone.  This module only frames bytes it is given; it
never encodes audio, touches a file or decides a layout (see
:mod:`streamsrv.transcode.layout`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Final

#: ``header_type`` flags of a page.
CONTINUED: Final = 0x01
BOS: Final = 0x02
EOS: Final = 0x04

#: Bytes of a page header before its segment table.
PAGE_HEADER_SIZE: Final = 27

#: The most lacing values (segments) one page may carry.
MAX_SEGMENTS: Final = 255

#: Where the CRC sits in a page header.
_CRC_OFFSET: Final = 22

#: ``bytes.translate`` table that reverses the bit order of every byte.
_REVERSE_BITS: Final = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, init 0, no reflection, no final xor.

    Computed with :func:`zlib.crc32` (the reflected CRC of the same polynomial)
    on bit-reversed bytes, then bit-reversed back: the same value as libogg's
    table-driven loop, at C speed.

    :param data: the page with its CRC field zeroed.
    """
    reflected = zlib.crc32(data.translate(_REVERSE_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def ogg_crc_reference(data: bytes) -> int:
    """:func:`ogg_crc` bit by bit, straight from the specification (slow; for tests)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def lacing(size: int) -> bytes:
    """The lacing values of one whole packet of ``size`` bytes.

    A packet whose size is a multiple of 255 ends with a 0 value.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    return b"\xff" * (size // 255) + bytes((size % 255,))


def segments_for(size: int) -> int:
    """How many lacing values a packet of ``size`` bytes takes."""
    return size // 255 + 1


def page_size(packet_sizes: Sequence[int]) -> int:
    """Bytes of a page holding exactly these whole packets."""
    segments = sum(segments_for(s) for s in packet_sizes)
    if segments > MAX_SEGMENTS:
        raise ValueError(f"{segments} lacing values do not fit in one page")
    return PAGE_HEADER_SIZE + segments + sum(packet_sizes)


def page(
    packets: Sequence[bytes],
    *,
    serial: int,
    sequence: int,
    granule: int,
    flags: int = 0,
) -> bytes:
    """One Ogg page holding whole packets, with its CRC.

    :param packets: the packets; together at most :data:`MAX_SEGMENTS` lacing values.
    :param serial: the logical stream's serial number.
    :param sequence: the page's sequence number within the stream.
    :param granule: the granule position at the end of the last packet.
    :param flags: :data:`BOS`, :data:`EOS` (never :data:`CONTINUED`: packets are whole).
    """
    table = b"".join(lacing(len(p)) for p in packets)
    if len(table) > MAX_SEGMENTS:
        raise ValueError(f"{len(table)} lacing values do not fit in one page")
    header = struct.pack(
        "<4sBBqIIIB",
        b"OggS",
        0,  # stream structure version
        flags,
        granule,
        serial,
        sequence,
        0,  # CRC, filled below
        len(table),
    )
    body = header + table + b"".join(packets)
    crc = ogg_crc(body)
    return body[:_CRC_OFFSET] + struct.pack("<I", crc) + body[_CRC_OFFSET + 4 :]


def opus_head(channels: int, pre_skip: int, input_rate: int) -> bytes:
    """The OpusHead identification packet, channel mapping family 0 (mono or stereo).

    :param channels: 1 or 2.
    :param pre_skip: samples (at 48 kHz) the decoder drops from the start.
    :param input_rate: the original sample rate, informational.
    """
    if channels not in (1, 2):
        raise ValueError("mapping family 0 carries 1 or 2 channels")
    return struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, pre_skip, input_rate, 0, 0)


def opus_tags(vendor: str) -> bytes:
    """The OpusTags comment packet, with a vendor string and no comments."""
    raw = vendor.encode("utf-8")
    return b"OpusTags" + struct.pack("<I", len(raw)) + raw + struct.pack("<I", 0)

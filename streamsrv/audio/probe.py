# -*- test-case-name: tests.test_probe -*-
"""Track duration from file headers.

The catalog records every track's duration when it reads the file's tags (in
its own threads; ``/stream``'s ``X-Content-Duration`` comes from that record),
so finding a duration must cost a header parse, not a decode:
:func:`probe_duration` asks mutagen (``mutagen.File(path).info.length``).

Two header facts mutagen leaves out are applied, so files written by FFmpeg
(every PyAV or ``ffmpeg`` encode, the demo library included) are not reported
up to 50 ms long:

- an MP3 whose Xing/Info tag was written by FFmpeg (version string ``Lavf…`` or
  ``Lavc…`` where LAME writes ``LAME…``) carries the same encoder delay and
  padding fields as LAME's, which mutagen honours only for LAME;
- an MP4 states its presented duration, after the edit list has cut the AAC
  priming samples, in ``moov/mvhd``; mutagen reports the media duration of
  ``mdhd``, priming included.  The ``mvhd`` figure is used only when it is
  shorter.

This module must never raise for a bad file (empty, truncated, not audio,
unreadable): it answers ``None``.  It never decodes audio, and it reads the
file, so it is never called on the reactor thread.  A file cut short
after its headers still reports what its headers claim.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, BinaryIO, Final

import mutagen
from mutagen.mp3 import MPEGInfo
from mutagen.mp4 import MP4Info

#: Version-string prefixes of the LAME-style tag FFmpeg's MP3 muxer writes.
_FFMPEG_ENCODER_PREFIXES: Final[tuple[bytes, ...]] = (b"Lavf", b"Lavc")

#: Xing/Info flag bits: which optional fields follow the flags.
_XING_FRAMES: Final[int] = 0x1
_XING_BYTES: Final[int] = 0x2
_XING_TOC: Final[int] = 0x4
_XING_QUALITY: Final[int] = 0x8

#: Within the LAME-style tag: where the 12+12-bit delay/padding field starts.
_LAME_DELAY_OFFSET: Final[int] = 21

#: Enough bytes after the side information for Xing, its TOC and the tag.
_XING_READ_SIZE: Final[int] = 160

#: The ``mvhd`` duration meaning "unknown" (all bits set).
_MVHD_UNKNOWN_32: Final[int] = 0xFFFFFFFF
_MVHD_UNKNOWN_64: Final[int] = 0xFFFFFFFFFFFFFFFF

#: Top-level boxes to step over before giving up on finding ``moov``.
_MAX_TOP_LEVEL_BOXES: Final[int] = 64


def probe_duration(path: Path) -> float | None:
    """Duration of an audio file in seconds, from its headers.

    :param path: the file.
    :returns: a positive, finite number of seconds, or ``None`` when the file
        is missing, unreadable, not audio, or states no usable duration.
    """
    try:
        parsed = mutagen.File(path)
        if parsed is None:
            return None
        info = parsed.info
        length = float(info.length)
        if isinstance(info, MPEGInfo):
            length = _ffmpeg_mp3_length(path, info) or length
        elif isinstance(info, MP4Info):
            presented = _mp4_presented_length(path)
            if presented is not None and presented < length:
                length = presented
    except Exception:
        # mutagen raises MutagenError, but corrupt input also surfaces as
        # struct.error, ValueError, IndexError, OverflowError...; all of them
        # mean "no duration known".
        return None
    if not math.isfinite(length) or length <= 0.0:
        return None
    return length


def _ffmpeg_mp3_length(path: Path, info: Any) -> float | None:
    """Length of an MP3 from an FFmpeg-written Xing/Info tag.

    :param path: the file mutagen parsed.
    :param info: mutagen's :class:`~mutagen.mp3.MPEGInfo` for it (its
        attributes are untyped).
    :returns: seconds with encoder delay and padding removed, or ``None`` when
        mutagen already applied a LAME tag or there is no FFmpeg tag.
    """
    if info.layer != 3 or getattr(info, "encoder_info", ""):
        return None
    mono = info.mode == 3
    if info.version == 1:
        side_info, frame_samples = (17 if mono else 32), 1152
    else:
        side_info, frame_samples = (9 if mono else 17), 576
    with open(path, "rb") as f:
        f.seek(info.frame_offset + 4 + side_info)
        head = f.read(_XING_READ_SIZE)
    if head[:4] not in (b"Xing", b"Info") or len(head) < 8:
        return None
    (flags,) = struct.unpack(">I", head[4:8])
    if not flags & _XING_FRAMES:
        return None
    (frames,) = struct.unpack(">I", head[8:12])
    position = 12
    position += 4 if flags & _XING_BYTES else 0
    position += 100 if flags & _XING_TOC else 0
    position += 4 if flags & _XING_QUALITY else 0
    tag = head[position:]
    if not tag.startswith(_FFMPEG_ENCODER_PREFIXES):
        return None
    field = tag[_LAME_DELAY_OFFSET : _LAME_DELAY_OFFSET + 3]
    if len(field) != 3:
        return None
    delay = (field[0] << 4) | (field[1] >> 4)
    padding = ((field[1] & 0x0F) << 8) | field[2]
    samples = frames * frame_samples - delay - padding
    if samples <= 0:
        return None
    return samples / info.sample_rate


def _mp4_presented_length(path: Path) -> float | None:
    """Presented duration of an MP4 file, from ``moov/mvhd``.

    :param path: an MP4/M4A file.
    :returns: seconds, or ``None`` when the box is missing or says unknown.
    """
    with open(path, "rb") as f:
        moov = _find_box(f, b"moov", start=0, end=None)
        if moov is None:
            return None
        mvhd = _find_box(f, b"mvhd", start=moov[0], end=moov[1])
        if mvhd is None:
            return None
        f.seek(mvhd[0])
        body = f.read(32)
    if len(body) < 20:
        return None
    if body[0] == 1:
        if len(body) < 32:
            return None
        timescale, duration = struct.unpack(">IQ", body[20:32])
        unknown = duration == _MVHD_UNKNOWN_64
    else:
        timescale, duration = struct.unpack(">II", body[12:20])
        unknown = duration == _MVHD_UNKNOWN_32
    if unknown or timescale == 0 or duration == 0:
        return None
    return duration / timescale


def _find_box(f: BinaryIO, kind: bytes, start: int, end: int | None) -> tuple[int, int] | None:
    """Find a box among the sibling boxes between two offsets.

    :param f: the open file.
    :param kind: the four-byte box type.
    :param start: offset of the first sibling's header.
    :param end: offset where the siblings end, or ``None`` for end of file.
    :returns: ``(body_start, body_end)`` of the first such box, or ``None``.
    """
    position = start
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if end is not None and position + 8 > end:
            return None
        f.seek(position)
        header = f.read(8)
        if len(header) < 8:
            return None
        size, box = struct.unpack(">I4s", header)
        body = position + 8
        if size == 1:
            large = f.read(8)
            if len(large) < 8:
                return None
            (size,) = struct.unpack(">Q", large)
            body += 8
        elif size == 0:
            f.seek(0, 2)
            size = f.tell() - position
        if size < body - position:
            return None
        if box == kind:
            return body, position + size
        position += size
    return None

# -*- test-case-name: tests.test_hls_segments -*-
"""HLS renditions as fragmented MP4: the variants, the segment grid, and the worker jobs that encode them.

A track is cut on a fixed grid of AAC frames: every segment but the last
holds ``round(6 s / 1024 samples)`` frames (258 at 44.1 kHz, 5.991 s; 281 at
48 kHz, 5.995 s), so segment boundaries fall on frame boundaries and each
``EXTINF`` is an exact sample count.  The lossless (FLAC) rung uses the same
grid in time, at the source's own rate.

Each segment is encoded by a fresh encoder from its own window of decoded
PCM, so its bytes are a pure function of (source, variant, segment number):
encoding segment 7 never needs segments 0–6, and gives the same bytes whether
or not they were encoded first.  For AAC the window starts
:data:`AAC_PREROLL_FRAMES` frames before the segment (the MDCT overlap, the
window-shape decision and the psychoacoustic model's short-term state are warm
by the segment's first frame) and runs :data:`AAC_LOOKAHEAD_FRAMES` frames past
its end; only the segment's own frames are kept.  FFmpeg's rate control is not
warmed, on purpose: a fresh encoder starts from lambda 120 and a full bit
reservoir and spends most of a segment in the twoloop coder's bit-constrained
regime, about 1.6 times the CPU per frame of a long-running encoder (whose
lambda has drifted into the cheaper regime), with better SNR on music.  A
frame of digital silence fed first (``warmup=1`` of
:func:`streamsrv.transcode.aac.packets_within`) reaches ``ffmpeg -f hls``'s CPU
but costs 1.2-5.4 dB SNR against these cold segments on music at 128k: it is
measured, not adopted (:data:`streamsrv.transcode.aac.WARMUP_FRAMES`;
``docs/performance.md``, "HLS segment encoding" and "AAC warm-up: measured,
not adopted").  Their timestamps are those of one continuous encode:

- FFmpeg's AAC encoder delays its output by :data:`AAC_PRIMING` samples: the
  continuous stream's packet ``i`` (``i >= 0``) decodes to source frame
  ``i - 1``, packet 0 being the priming.  Segment 0 carries packets
  ``0 .. F`` (priming included), segment ``n > 0`` packets ``nF+1 .. (n+1)F``.
- In the track's media timeline packet ``i`` starts at ``i * 1024``: segment
  0's ``tfdt`` is 0 and segment ``n``'s is ``(nF + 1) * 1024``, i.e.
  ``n * segment_samples + AAC_PRIMING``.
- The init segment's edit list (``elst``: ``media_time = 1024``,
  ``segment_duration`` = the track's exact sample count) hides the priming
  and the padding of the last frame, so the presentation starts at the
  source's first sample, segment ``n`` presents exactly
  ``[n * segment_samples, (n+1) * segment_samples)``, and the whole lasts
  exactly the source's length.

FLAC frames overlap nothing and need no priming: segment ``n`` is the FLAC
encoding of exactly its samples, with the frame numbers in the frame headers
rewritten to the stream's (a fresh encoder counts from 0).

The boxes (init = ``ftyp`` + ``moov`` with ``edts``/``elst`` for AAC; segment =
``moof`` + ``mdat``) come from :mod:`streamsrv.transcode.fmp4`.

The jobs (:func:`probe_track`, :func:`encode_init`, :func:`encode_segment`)
are module-level functions of picklable values for
:meth:`streamsrv.audio.workers.WorkerPool.submit`; they are blocking and
CPU-heavy, must never run on the reactor thread, never log, and their errors
carry no path.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from streamsrv.transcode import fmp4
from streamsrv.transcode.layout import aac_budget

if TYPE_CHECKING:
    from streamsrv.audio.decode import Samples

# PyAV, numpy and the decoders are imported by the jobs that use them, in the
# worker processes: the HTTP process that serves playlists never loads them.

__all__ = [
    "AAC_LADDER",
    "AAC_PRIMING",
    "FORMAT_VERSION",
    "LOSSLESS",
    "VARIANTS",
    "SegmentError",
    "Track",
    "Variant",
    "encode_init",
    "encode_segment",
    "probe_track",
]

#: Bump whenever the bytes of an init or media segment change: it is part of
#: every cache key, so old artifacts simply miss.  2: segments held to 105 %
#: of nominal (a warm-up, :data:`streamsrv.transcode.aac.WARMUP_FRAMES`, would
#: be the next bump).
FORMAT_VERSION: Final = 2

#: The nominal segment duration (Apple's authoring spec 7.5: 6 s).
SEGMENT_TARGET_S: Final = 6.0

#: Samples per AAC-LC frame.
AAC_FRAME: Final = 1024

#: FFmpeg's native AAC encoder delay (``initial_padding``), in samples.
AAC_PRIMING: Final = 1024

#: Frames encoded before a segment's first frame and thrown away (warms the
#: MDCT overlap, the window-shape decisions and the psychoacoustic model; not
#: the rate control, see the module docstring).  2 measured worse at segment
#: joins; 8 and 16 no better.
AAC_PREROLL_FRAMES: Final = 4

#: Frames encoded after a segment's last frame and thrown away (1 changed the
#: last packet of one segment in eleven of a test song; 3 changed nothing).
AAC_LOOKAHEAD_FRAMES: Final = 2

#: Largest FLAC block (the streamable subset's limit at <= 48 kHz is 4608).
FLAC_MAX_BLOCK: Final = 4608

#: Rates AAC renditions play at (as the progressive AAC transcodes).
AAC_RATES: Final = (44100, 48000)


class SegmentError(Exception):
    """A segment cannot be produced as asked (bad number, no lossless rung, an encoder surprise)."""


@dataclass(frozen=True)
class Variant:
    """One rung of the ladder.

    :param name: The URL path segment of the variant (``"128k"``, ``"flac"``).
    :param codec: ``"aac"`` (AAC-LC) or ``"flac"``.
    :param bitrate_kbps: Target kb/s for AAC; ``None`` for FLAC.
    """

    name: str
    codec: str
    bitrate_kbps: int | None = None

    @property
    def lossless(self) -> bool:
        """Whether this is the lossless rung (``stream:hq``)."""
        return self.codec == "flac"

    @property
    def codecs(self) -> str:
        """The RFC 6381 ``CODECS`` value: ``mp4a.40.2`` (AAC-LC) or ``fLaC``."""
        return "fLaC" if self.lossless else "mp4a.40.2"


#: The AAC-LC ladder, stereo, within Apple's 32–160 kb/s guidance.  FFmpeg's
#: native encoder (the only AAC encoder in PyAV's wheel) writes LC only: no
#: HE-AAC rung, see ``docs/modules/hls.md``.
AAC_LADDER: Final = (
    Variant("64k", "aac", 64),
    Variant("96k", "aac", 96),
    Variant("128k", "aac", 128),
    Variant("160k", "aac", 160),
)

#: The lossless rung: FLAC in fMP4, at the source's rate and depth.
LOSSLESS: Final = Variant("flac", "flac")

#: Every variant by its URL name.
VARIANTS: Final[dict[str, Variant]] = {v.name: v for v in (*AAC_LADDER, LOSSLESS)}


@dataclass(frozen=True)
class Track:
    """What the playlists and the segments need to know of a source (from its headers).

    :param samples: Samples per channel at :attr:`sample_rate` (the AAC rate).
    :param sample_rate: The AAC renditions' rate: 44100 or 48000.
    :param source_samples: Samples per channel at the source's rate.
    :param source_rate: The source's rate.
    :param source_channels: The source's channel count.
    :param bits: The source's bits per sample (16 or 24 for the lossless rung).
    :param source_bit_rate: The source file's bits per second, if known.
    :param lossless_source: Whether the source is lossless (FLAC, ALAC, PCM,
        WavPack): only then is there a lossless rung.
    """

    samples: int
    sample_rate: int
    source_samples: int
    source_rate: int
    source_channels: int
    bits: int
    source_bit_rate: int | None = None
    lossless_source: bool = False

    @property
    def duration_s(self) -> float:
        """The presented duration, in seconds."""
        return self.samples / self.sample_rate

    @property
    def segment_frames(self) -> int:
        """AAC frames per (full) segment: ``round(6 s / frame)``."""
        return round(SEGMENT_TARGET_S * self.sample_rate / AAC_FRAME)

    @property
    def segment_samples(self) -> int:
        """Samples per full segment at :attr:`sample_rate`."""
        return self.segment_frames * AAC_FRAME

    @property
    def segment_count(self) -> int:
        """Media segments of every variant (at least one)."""
        return max(1, -(-self.samples // self.segment_samples))

    @property
    def has_lossless(self) -> bool:
        """Whether the lossless rung exists: mono or stereo, on the same grid at the source rate."""
        if not self.lossless_source or self.source_channels not in (1, 2) or self.bits not in (16, 24):
            return False
        return (self.segment_samples * self.source_rate) % self.sample_rate == 0

    def rate(self, variant: Variant) -> int:
        """The sample rate (and media timescale) of *variant*."""
        return self.source_rate if variant.lossless else self.sample_rate

    def channels(self, variant: Variant) -> int:
        """Channels of *variant*: AAC is always stereo; FLAC keeps the source's."""
        return self.source_channels if variant.lossless else 2

    def total(self, variant: Variant) -> int:
        """Samples per channel of *variant*."""
        return self.source_samples if variant.lossless else self.samples

    def grid(self, variant: Variant) -> int:
        """Samples per full segment of *variant*, at its own rate."""
        if not variant.lossless:
            return self.segment_samples
        return self.segment_samples * self.source_rate // self.sample_rate

    def segment_span(self, variant: Variant, n: int) -> tuple[int, int]:
        """Samples ``[start, end)`` segment *n* of *variant* presents.

        :raise SegmentError: when *n* is outside ``0 .. segment_count - 1``.
        """
        if not 0 <= n < self.segment_count:
            raise SegmentError("no such segment")
        grid = self.grid(variant)
        total = self.total(variant)
        return min(n * grid, total), min((n + 1) * grid, total)

    def durations(self, variant: Variant) -> list[float]:
        """Every segment's presented duration in seconds (``EXTINF``), in order."""
        rate = self.rate(variant)
        spans = (self.segment_span(variant, n) for n in range(self.segment_count))
        return [(end - start) / rate for start, end in spans]

    def flac_block(self) -> int:
        """The FLAC block size: the largest divisor of the lossless grid up to :data:`FLAC_MAX_BLOCK`.

        Multiples of 512 are preferred (the usual sizes, written compactly in frame headers).
        """
        grid = self.grid(LOSSLESS)
        sizes = range(min(FLAC_MAX_BLOCK, grid), 15, -1)
        common = [b for b in sizes if grid % b == 0 and b % 512 == 0]
        return common[0] if common else next(b for b in sizes if grid % b == 0)


def aac_rate(source_rate: int) -> int:
    """44.1 or 48 kHz, by the source rate's family (as the progressive AAC transcodes)."""
    if source_rate in AAC_RATES:
        return source_rate
    return 44100 if source_rate % 11025 == 0 else 48000


def probe_track(source_path: str) -> Track:
    """Read what the playlists need from a source's headers (a worker job).

    The sample count is :func:`streamsrv.transcode.encode.probe_source`'s
    (the container's duration), used by every playlist and every segment
    alike, so they always agree.

    :raises streamsrv.audio.decode.DecodeError: when the file is not audio.
    """
    from streamsrv.audio.decode import probe_stream
    from streamsrv.transcode.encode import probe_source

    source = probe_source(source_path)
    info = probe_stream(Path(source_path))
    rate = aac_rate(source.sample_rate)
    samples = source.frames * rate // source.sample_rate
    return Track(
        samples=samples,
        sample_rate=rate,
        source_samples=source.frames,
        source_rate=source.sample_rate,
        source_channels=source.channels,
        bits=_source_bits(source_path),
        source_bit_rate=info.bit_rate,
        lossless_source=info.codec in LOSSLESS_CODECS or info.codec.startswith("pcm_"),
    )


#: FFmpeg codec names of lossless sources (besides ``pcm_*``).
LOSSLESS_CODECS: Final = frozenset({"flac", "alac", "wavpack", "tta", "ape"})


def _source_bits(source_path: str) -> int:
    """The lossless rung's depth from the decoder's sample format: 16, 24 (``s32``), or 32 (float: none)."""
    import av

    from streamsrv.audio.decode import ALLOWED_DEMUXERS

    # As streamsrv.audio.decode: local files and audio demuxers only.
    options = {"format_whitelist": ALLOWED_DEMUXERS, "protocol_whitelist": "file"}
    with av.open(os.path.abspath(source_path), "r", container_options=options) as container:
        context = container.streams.audio[0].codec_context
        name = context.format.name if context.format else ""
    if name.startswith(("s16", "u8")):
        return 16
    return 24 if name.startswith("s32") else 32


# -- the jobs ----------------------------------------------------------------------------------


def encode_init(source_path: str, variant: Variant, track: Track | None = None) -> bytes:
    """The init segment (``ftyp`` + ``moov``) of *variant* (a worker job).

    :param track: the source's :func:`probe_track` (probed here when ``None``).
    :raises SegmentError: for the lossless rung of a source that has none.
    """
    if track is None:
        track = probe_track(source_path)
    if variant.lossless:
        _check_lossless(track)
        entry = _flac_sample_entry(track)
        edit = None
    else:
        context = _aac_encoder(track, variant)
        assert variant.bitrate_kbps is not None
        config = bytes(context.extradata or b"")
        entry = fmp4.mp4a_sample_entry(2, track.sample_rate, variant.bitrate_kbps * 1000, config)
        edit = (track.samples, AAC_PRIMING)
    return fmp4.init_segment(track.rate(variant), entry, edit)


def encode_segment(source_path: str, variant: Variant, n: int, track: Track | None = None) -> bytes:
    """Media segment *n* (``moof`` + ``mdat``) of *variant* (a worker job).

    :param track: the source's :func:`probe_track` (probed here when ``None``).
    :raises SegmentError: for a segment number out of range, or the lossless
        rung of a source that has none.
    :raises streamsrv.audio.decode.DecodeError: when the source cannot be decoded.
    """
    if track is None:
        track = probe_track(source_path)
    track.segment_span(variant, n)  # range check
    if variant.lossless:
        _check_lossless(track)
        base, durations, payloads = _flac_samples(source_path, track, n)
    else:
        base, durations, payloads = _aac_samples(source_path, track, variant, n)
    return fmp4.media_segment(n, base, durations, payloads)


def _check_lossless(track: Track) -> None:
    if not track.has_lossless:
        raise SegmentError("this track has no lossless rendition")


# -- AAC ---------------------------------------------------------------------------------------


def _aac_encoder(track: Track, variant: Variant) -> Any:
    """A fresh, opened AAC-LC encoder for *variant*."""
    assert variant.bitrate_kbps is not None
    import av

    context: Any = av.CodecContext.create("aac", "w")
    context.sample_rate = track.sample_rate
    context.layout = "stereo"
    context.format = "fltp"
    context.bit_rate = variant.bitrate_kbps * 1000
    context.time_base = Fraction(1, track.sample_rate)
    context.open()
    if context.frame_size != AAC_FRAME:
        raise SegmentError("unexpected AAC frame size")
    return context


def _aac_samples(
    source_path: str, track: Track, variant: Variant, n: int
) -> tuple[int, list[int], list[bytes]]:
    """Segment *n*'s AAC packets: ``(tfdt, durations, payloads)``.

    Packet ``i`` of the continuous stream presents source frame ``i - 1``; a
    fresh encoder fed from source frame ``s0`` makes packet ``j`` = continuous
    packet ``s0 + j``.
    """
    from streamsrv.transcode import aac

    frames_total = -(-track.samples // AAC_FRAME)  # K: source frames, the last padded
    per = track.segment_frames
    first = n * per
    end = min((n + 1) * per, frames_total)
    wanted_first = 0 if n == 0 else first + 1  # continuous packet indices [wanted_first, end]
    s0 = max(first - AAC_PREROLL_FRAMES, 0)
    window_end = min(end + AAC_LOOKAHEAD_FRAMES, frames_total) * AAC_FRAME
    samples = _window(source_path, track, s0 * AAC_FRAME, window_end, track.sample_rate, 2)
    assert variant.bitrate_kbps is not None
    count = end - wanted_first + 1
    # Held to the budget the playlist's BANDWIDTH is computed from (see
    # streamsrv.transcode.aac: a fresh encoder overshoots after silence).
    limit = aac_budget(count, variant.bitrate_kbps, track.sample_rate, slack=0)
    try:
        payloads = aac.packets_within(
            samples, track.sample_rate, variant.bitrate_kbps, (wanted_first - s0, end - s0 + 1), limit
        )
    except aac.AacError as error:
        raise SegmentError(str(error)) from error
    return wanted_first * AAC_FRAME, [AAC_FRAME] * len(payloads), payloads


def _window(source_path: str, track: Track, start: int, end: int, rate: int, channels: int) -> Samples:
    """Samples ``[start, end)`` at *rate*, exactly ``end - start`` of them, silence past the track's end."""
    import numpy as np

    from streamsrv.audio.decode import decode

    out = np.zeros((channels, end - start), dtype=np.float32)
    total = track.samples if rate == track.sample_rate and channels == 2 else track.source_samples
    high = min(end, total)
    if high <= start:
        return out
    pcm = decode(
        Path(source_path),
        start_s=start / rate,
        end_s=high / rate,
        sample_rate=rate,
        channels=channels,
    )
    count = min(pcm.frames, high - start)
    out[:, :count] = pcm.samples[:, :count]
    return out


# -- FLAC --------------------------------------------------------------------------------------


def _flac_encoder(track: Track) -> Any:
    import av

    context: Any = av.CodecContext.create("flac", "w")
    context.sample_rate = track.source_rate
    context.layout = "mono" if track.source_channels == 1 else "stereo"
    context.format = "s16" if track.bits == 16 else "s32"
    context.options = {"frame_size": str(track.flac_block()), "bits_per_raw_sample": str(track.bits)}
    context.time_base = Fraction(1, track.source_rate)
    context.open()
    return context


def _flac_samples(source_path: str, track: Track, n: int) -> tuple[int, list[int], list[bytes]]:
    """Segment *n*'s FLAC frames, renumbered: ``(tfdt, durations, payloads)``."""
    import av
    import numpy as np

    start, end = track.segment_span(LOSSLESS, n)
    channels = track.source_channels
    samples = _window(source_path, track, start, end, track.source_rate, channels)
    context = _flac_encoder(track)
    block = track.flac_block()
    if track.bits == 16:
        ints: Any = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    else:
        scaled = np.clip(np.round(samples.astype(np.float64) * 8388608.0), -8388608, 8388607)
        ints = (scaled.astype(np.int64) * 256).astype(np.int32)
    packed = np.ascontiguousarray(ints.T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format=context.format.name, layout=context.layout.name)
    frame.sample_rate = track.source_rate
    frame.time_base = context.time_base
    frame.pts = 0
    packets = list(context.encode(frame))
    packets.extend(context.encode(None))
    payloads: list[bytes] = []
    durations: list[int] = []
    first_block = start // block
    for index, packet in enumerate(p for p in packets if p.size):
        payloads.append(_renumber_flac_frame(bytes(packet), first_block + index))
        durations.append(int(packet.duration or block))
    if sum(durations) != end - start:
        raise SegmentError("the FLAC encoder's frames do not cover the segment")
    return start, durations, payloads


def _utf8_number(value: int) -> bytes:
    """FLAC's "UTF-8" coding of a frame number (up to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    for length in range(2, 8):
        if value < 1 << (5 * length + 1):
            break
    out = []
    for _ in range(length - 1):
        out.append(0x80 | (value & 0x3F))
        value >>= 6
    lead = (0xFF00 >> length) & 0xFF
    return bytes([lead | value]) + bytes(reversed(out))


def _utf8_length(first: int) -> int:
    if first < 0x80:
        return 1
    length = 0
    while first & (0x80 >> length):
        length += 1
    return length


def _renumber_flac_frame(frame: bytes, number: int) -> bytes:
    """*frame* with its (fixed-blocksize) frame number set to *number*, both CRCs recomputed."""
    if len(frame) < 6 or frame[0] != 0xFF or frame[1] & 0xFE != 0xF8:
        raise SegmentError("not a FLAC frame")
    if frame[1] & 1:
        raise SegmentError("unexpected variable-blocksize FLAC frame")
    size_code = frame[2] >> 4
    rate_code = frame[2] & 0x0F
    old = _utf8_length(frame[4])
    tail = 4 + old
    tail += {6: 1, 7: 2}.get(size_code, 0)
    tail += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    header = frame[:4] + _utf8_number(number) + frame[4 + old : tail]
    header += bytes([_crc8(header)])
    body = header + frame[tail + 1 : -2]
    return body + struct.pack(">H", _crc16(body))


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _crc_table(poly: int, width: int) -> list[int]:
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else crc << 1
        table.append(crc & mask)
    return table


_CRC8: Final = _crc_table(0x07, 8)
_CRC16: Final = _crc_table(0x8005, 16)


def _flac_sample_entry(track: Track) -> bytes:
    """``fLaC`` with its ``dfLa`` (one STREAMINFO block, flagged last)."""
    block = track.flac_block()
    streaminfo = (
        struct.pack(">HH", block, block)
        + (0).to_bytes(3, "big")  # minimum frame size: unknown
        + (0).to_bytes(3, "big")  # maximum frame size: unknown
        + (
            (track.source_rate << 44)
            | ((track.source_channels - 1) << 41)
            | ((track.bits - 1) << 36)
            | track.source_samples
        ).to_bytes(8, "big")
        + bytes(16)  # MD5 of the audio: not computed (allowed: all zero)
    )
    metadata = bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo
    dfla = fmp4.full_box(b"dfLa", 0, 0, metadata)
    rate = track.source_rate if track.source_rate <= 0xFFFF else 0
    return fmp4.box(b"fLaC", fmp4.audio_sample_entry(track.source_channels, track.bits, rate) + dfla)


def segment_overhead_bytes(samples_per_segment: int) -> int:
    """Container bytes of one media segment carrying that many AAC frames (for ``BANDWIDTH``)."""
    frames = math.ceil(samples_per_segment / AAC_FRAME) + 1
    return fmp4.fragment_length(frames, 0)

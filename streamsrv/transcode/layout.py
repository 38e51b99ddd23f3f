# -*- test-case-name: tests.test_transcode_layout -*-
"""Renditions and the byte layout of progressive transcodes, computed before any encoding.

A progressive transcode answers its first request with an exact
``Content-Length`` and any byte range, so its bytes must be laid out from the
source's sample count and the rendition alone.  The layout is a header (MP3:
a LAME "Info" frame; Ogg Opus: the OpusHead and OpusTags pages) followed by
*chunks*: runs of a fixed number of codec frames, each encoded by a fresh
encoder from its own window of the source (with pre-roll and look-ahead), so
that a chunk's bytes depend on nothing but the source, the rendition and the
chunk's index.  The finished file *is* the concatenation of its chunks: any
byte range is produced by encoding only the chunks it touches, and is
identical to the same range of the full encode by construction.

- MP3: CBR with LAME's bit reservoir off (each frame is self-contained, so
  frames from different encoders concatenate); a frame is
  ``144000 * kbps // rate`` bytes plus LAME's padding byte, whose pattern
  depends only on the frame's index within its encoder's output (see
  :func:`mp3_frame_sizes`), so every full chunk has the same size.
- Opus: hard CBR, 20 ms packets of exactly ``kbps * 5 / 2`` bytes, framed by
  :mod:`streamsrv.transcode.ogg` into pages of a fixed packet count.
- AAC and FLAC frames vary in size: no layout (:class:`NotProgressive`).

Everything here is pure arithmetic on integers: no I/O, no PyAV, no reactor.
It must never guess: a layout is exact or it is refused.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Final

from streamsrv.transcode import fmp4, lame, ogg

#: Bump when the bytes of any rendition change (chunking, pre-roll, headers):
#: it is part of every cache key, so old artifacts simply miss.  2: MP3 from
#: lameenc's LAME (:mod:`streamsrv.transcode.lame`).
LAYOUT_VERSION: Final = 3

MP3: Final = "mp3"
AAC: Final = "aac"
OPUS: Final = "opus"
FLAC: Final = "flac"
FORMATS: Final = (MP3, AAC, OPUS, FLAC)

#: AAC containers: fragmented MP4 (``.m4a``, progressive) or ADTS (``.aac``, encoded whole).
M4A: Final = "m4a"
ADTS: Final = "adts"
AAC_CONTAINERS: Final = (M4A, ADTS)

#: Formats whose layout is known before encoding (AAC only in M4A: see :attr:`Rendition.progressive`).
PROGRESSIVE: Final = frozenset({MP3, OPUS, AAC})

CONTENT_TYPES: Final = {
    MP3: "audio/mpeg",
    AAC: "audio/mp4",
    ADTS: "audio/aac",
    OPUS: "audio/ogg; codecs=opus",
    FLAC: "audio/flac",
}

#: kb/s when the request names none (DESIGN: mp3 192, aac 128, opus 96).
DEFAULT_BITRATES: Final[dict[str, int | None]] = {MP3: 192, AAC: 128, OPUS: 96, FLAC: None}

#: Lossy renditions above this many kb/s need ``stream:hq`` (as does FLAC).
HQ_ABOVE_KBPS: Final = 192

#: MPEG-1 Layer III bit rates (kb/s) and sample rates.
MP3_BITRATES: Final = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MP3_RATES: Final = (32000, 44100, 48000)

#: Opus: even kb/s (20 ms packets are then a whole number of bytes), within these bounds.
OPUS_MIN_KBPS: Final = 16
OPUS_MAX_KBPS: Final = 256
OPUS_RATE: Final = 48000

AAC_MIN_KBPS: Final = 32
AAC_MAX_KBPS: Final = 320
#: AAC renditions play at 44.1 or 48 kHz: ADTS cannot signal the 1024 samples of
#: encoder priming, and at lower rates priming plus padding would exceed 50 ms.
AAC_RATES: Final = (44100, 48000)

#: Renditions at or below these bit rates default to mono.
MONO_AT_OR_BELOW_KBPS: Final = {MP3: 64, AAC: 48, OPUS: 32}

#: Samples per MP3 (MPEG-1 Layer III) frame.
MP3_FRAME_SAMPLES: Final = 1152
#: Samples between an input sample entering LAME and leaving a decoder: LAME's
#: encoder delay (576) plus the decoder delay (529).  Frame ``m`` of the output
#: decodes to input samples ``[m * 1152 - 1105, (m + 1) * 1152 - 1105)``.
MP3_DELAY: Final = 1105
#: The encoder delay written in the LAME tag (decoders add 529 themselves).
MP3_TAG_DELAY: Final = 576
#: Frames per chunk (128 frames: 3.34 s at 44.1 kHz).
MP3_CHUNK_FRAMES: Final = 128
#: Frames encoded before and after a chunk's own frames and thrown away.
MP3_PREROLL_FRAMES: Final = 2
MP3_LOOKAHEAD_FRAMES: Final = 2

#: Samples per Opus packet (20 ms at 48 kHz).
OPUS_FRAME_SAMPLES: Final = 960
#: libopus's algorithmic delay at 48 kHz: the OpusHead pre-skip.
OPUS_PRE_SKIP: Final = 312
#: Packets per Ogg page (0.5 s) and per chunk (6 s, twelve pages: fewer fresh encoders
#: and decoder seeks per second of audio, about 7 % less work than 3 s chunks).
OPUS_PAGE_PACKETS: Final = 25
OPUS_CHUNK_PACKETS: Final = 300
OPUS_PREROLL_PACKETS: Final = 4
OPUS_LOOKAHEAD_PACKETS: Final = 2
#: Samples per AAC-LC frame, and FFmpeg's native encoder delay (one frame of
#: priming): packet ``m`` of an encode decodes to samples
#: ``[(m - 1) * 1024, m * 1024)``.  The M4A's edit list hides the priming.
AAC_FRAME_SAMPLES: Final = 1024
AAC_DELAY: Final = 1024
#: AAC frames per M4A fragment (4.0 s at 44.1 kHz, 3.67 s at 48 kHz).
AAC_CHUNK_FRAMES: Final = 172
AAC_PREROLL_FRAMES: Final = 4
AAC_LOOKAHEAD_FRAMES: Final = 2
#: A run of AAC frames (an M4A fragment, an HLS segment) may take its frames'
#: nominal size at the bit rate times this, plus :data:`AAC_BUDGET_SLACK`
#: bytes (:func:`aac_budget`).  In an M4A fragment the unused rest is a
#: ``free`` box, so every fragment of a rendition has the same size.
AAC_BUDGET_PERCENT: Final = 105
AAC_BUDGET_SLACK: Final = 64
#: ``free`` box header bytes closing every M4A fragment.
FREE_BOX_HEADER: Final = 8
#: MPEG-4 sampling frequency indices of the AAC rates.
_AAC_RATE_INDEX: Final = {48000: 3, 44100: 4}

#: Serial number of every Ogg stream we write (one logical stream per file).
OGG_SERIAL: Final = 0x73747276  # "strv"
OPUS_VENDOR: Final = "streamsrv"


#: The largest ReplayGain applied, either way (thousandths of a dB).
MAX_GAIN_MDB: Final = 30_000


def gain_factor(gain_mdb: int) -> float:
    """The linear factor of a gain in thousandths of a dB."""
    return float(10 ** (gain_mdb / 20_000))


class NotProgressive(ValueError):
    """The rendition's size is not known before it is encoded (AAC, FLAC)."""


@dataclass(frozen=True)
class Rendition:
    """What a transcode is: format, bit rate, sample rate, channels, start offset.

    Validated on construction; ``bitrate_kbps`` and ``channels`` default from
    the format (DESIGN's default bit rates; mono at low bit rates), and
    ``sample_rate`` may stay ``None`` until the source is known
    (:meth:`resolved`).  ``start_ms`` is the ``t=`` offset: the rendition is
    the audio from there on.  Every error message is safe to show a client.

    :param format: ``mp3``, ``aac``, ``opus`` or ``flac``.
    :param bitrate_kbps: kb/s (``None``: the format's default; FLAC: must be ``None``).
    :param sample_rate: output rate, or ``None`` to choose from the source.
    :param channels: 1 or 2, or ``None`` for the default.
    :param start_ms: milliseconds of the source to skip (``t=``), >= 0.
    :param gain_mdb: gain applied before encoding, in thousandths of a dB
        (ReplayGain, already limited so the track's peak does not clip);
        ``0`` leaves the audio as it is.
    :param container: AAC only: ``m4a`` (fragmented MP4, the default:
        progressive) or ``adts``; ``None`` for the other formats.
    """

    format: str
    bitrate_kbps: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    start_ms: int = 0
    gain_mdb: int = 0
    container: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if self.format == AAC:
            if self.container is None:
                object.__setattr__(self, "container", M4A)
            elif self.container not in AAC_CONTAINERS:
                raise ValueError(f"aac container must be one of {', '.join(AAC_CONTAINERS)}")
        elif self.container is not None:
            raise ValueError("container applies to aac only")
        kbps = self.bitrate_kbps
        if kbps is None:
            kbps = DEFAULT_BITRATES[self.format]
            object.__setattr__(self, "bitrate_kbps", kbps)
        if isinstance(kbps, bool) or not (kbps is None or isinstance(kbps, int)):
            raise ValueError("bitrate must be an integer number of kb/s")
        if self.format == FLAC and kbps is not None:
            raise ValueError("flac takes no bitrate")
        if self.format == MP3 and kbps not in MP3_BITRATES:
            raise ValueError(f"mp3 bitrate must be one of {', '.join(map(str, MP3_BITRATES))}")
        if self.format == OPUS and (kbps is None or not OPUS_MIN_KBPS <= kbps <= OPUS_MAX_KBPS or kbps % 2):
            raise ValueError(f"opus bitrate must be an even number within {OPUS_MIN_KBPS}..{OPUS_MAX_KBPS}")
        if self.format == AAC and (kbps is None or not AAC_MIN_KBPS <= kbps <= AAC_MAX_KBPS):
            raise ValueError(f"aac bitrate must be within {AAC_MIN_KBPS}..{AAC_MAX_KBPS}")
        if self.channels is None:
            low = MONO_AT_OR_BELOW_KBPS.get(self.format)
            object.__setattr__(
                self, "channels", 1 if low is not None and kbps is not None and kbps <= low else 2
            )
        elif self.channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        rate = self.sample_rate
        if rate is not None:
            allowed = {MP3: MP3_RATES, OPUS: (OPUS_RATE,), AAC: AAC_RATES}.get(self.format)
            if allowed is not None and rate not in allowed:
                raise ValueError(f"{self.format} sample rate must be one of {', '.join(map(str, allowed))}")
            if not 1 <= rate <= 655350:
                raise ValueError("sample rate out of range")
        if isinstance(self.start_ms, bool) or not isinstance(self.start_ms, int) or self.start_ms < 0:
            raise ValueError("t must be >= 0")
        if (
            isinstance(self.gain_mdb, bool)
            or not isinstance(self.gain_mdb, int)
            or abs(self.gain_mdb) > MAX_GAIN_MDB
        ):
            raise ValueError(f"gain must be within +-{MAX_GAIN_MDB / 1000:g} dB")

    @classmethod
    def from_query(
        cls,
        format: str,
        bitrate: str | None = None,
        t: str | None = None,
        channels: str | None = None,
        container: str | None = None,
    ) -> Rendition:
        """Build from query parameter values (``format``, ``bitrate`` kb/s, ``t`` seconds, ``container``).

        :raises ValueError: for anything malformed or out of range (a 400).
        """
        kbps = None
        if bitrate is not None:
            if not bitrate.isascii() or not bitrate.isdigit() or len(bitrate) > 4:
                raise ValueError("bitrate must be an integer number of kb/s")
            kbps = int(bitrate)
        start_ms = 0
        if t is not None:
            try:
                seconds = float(t) if len(t) <= 32 else math.nan
            except ValueError:
                seconds = math.nan
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError("t must be a number of seconds >= 0")
            start_ms = round(seconds * 1000)
        count = None
        if channels is not None:
            if channels not in ("1", "2"):
                raise ValueError("channels must be 1 or 2")
            count = int(channels)
        return cls(format, kbps, None, count, start_ms, container=container)

    @property
    def progressive(self) -> bool:
        """Whether the layout is known before encoding (ranges from the first request)."""
        return self.format in PROGRESSIVE and self.container != ADTS

    @property
    def needs_hq(self) -> bool:
        """Whether serving it needs ``stream:hq`` (lossless, or above 192 kb/s)."""
        return self.format == FLAC or (self.bitrate_kbps or 0) > HQ_ABOVE_KBPS

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` of the rendition."""
        return CONTENT_TYPES[ADTS if self.container == ADTS else self.format]

    @property
    def suffix(self) -> str:
        """The file extension for the artifact cache and ``Content-Disposition``."""
        if self.format == AAC:
            return ".aac" if self.container == ADTS else ".m4a"
        return {MP3: ".mp3", OPUS: ".opus", FLAC: ".flac"}[self.format]

    def resolved(self, source_rate: int) -> Rendition:
        """This rendition with its sample rate chosen for a source at ``source_rate``.

        MP3 keeps 32/44.1/48 kHz and otherwise takes 44.1 kHz for rates of the
        44.1 kHz family, 48 kHz for the rest; Opus is always 48 kHz; AAC is 44.1
        or 48 kHz by the same families; FLAC keeps the source rate.
        """
        if self.sample_rate is not None:
            return self
        family = 44100 if source_rate % 11025 == 0 else 48000
        if self.format == MP3:
            rate = source_rate if source_rate in MP3_RATES else family
        elif self.format == OPUS:
            rate = OPUS_RATE
        elif self.format == AAC:
            rate = source_rate if source_rate in AAC_RATES else family
        else:
            rate = source_rate
        return replace(self, sample_rate=rate)

    def cache_params(self) -> dict[str, object]:
        """Parameters for :func:`streamsrv.cache.artifacts.artifact_key` (resolve first).

        MP3 adds ``encoder``, the LAME build of this process
        (:func:`streamsrv.transcode.lame.backend`), so chunks of two builds
        never mix in one cache.
        """
        return {
            "format": self.format,
            "bitrate_kbps": self.bitrate_kbps,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "start_ms": self.start_ms,
            "gain_mdb": self.gain_mdb,
            "layout_version": LAYOUT_VERSION,
            **({"encoder": lame.backend()} if self.format == MP3 else {}),
            **({"container": self.container} if self.container is not None else {}),
        }


def output_frames(rendition: Rendition, source_frames: int, source_rate: int) -> int:
    """Samples per channel of a resolved rendition: the source after ``start_ms``, at the output rate.

    Integer arithmetic, rounding halves up, so every process agrees.
    """
    if source_frames < 0 or source_rate < 1:
        raise ValueError("source_frames must be >= 0 and source_rate >= 1")
    assert rendition.sample_rate is not None
    skipped = (rendition.start_ms * source_rate + 500) // 1000
    remaining = max(source_frames - skipped, 0)
    return (remaining * rendition.sample_rate + source_rate // 2) // source_rate


def start_frame(rendition: Rendition, source_rate: int) -> int:
    """The source sample a rendition starts at (``start_ms`` in source samples)."""
    return (rendition.start_ms * source_rate + 500) // 1000


def mp3_frame_bytes(kbps: int, rate: int) -> int:
    """Bytes of an unpadded MPEG-1 Layer III frame."""
    return 144000 * kbps // rate


def mp3_frame_sizes(kbps: int, rate: int, count: int) -> tuple[int, ...]:
    """Sizes of the first ``count`` CBR frames LAME writes from a fresh encoder.

    LAME (``encoder.c``) pads a frame when a running remainder goes negative:
    ``slot_lag -= frac; if slot_lag < 0: slot_lag += rate; pad``, with
    ``frac = 144000 * kbps % rate`` and ``slot_lag`` starting at ``frac`` (so
    the first frame is never padded).  At 32 and 48 kHz ``frac`` is 0 for every
    bit rate and all frames have one size.
    """
    frac = 144000 * kbps % rate
    base = mp3_frame_bytes(kbps, rate)
    lag = frac
    sizes = []
    for _ in range(count):
        lag -= frac
        pad = 0
        if lag < 0:
            lag += rate
            pad = 1
        sizes.append(base + pad)
    return tuple(sizes)


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0): the LAME tag's checksum."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_MP3_BITRATE_INDEX: Final = {kbps: i + 1 for i, kbps in enumerate(MP3_BITRATES)}
_MP3_RATE_INDEX: Final = {44100: 0, 48000: 1, 32000: 2}


def mp3_header(kbps: int, rate: int, channels: int, padding: bool = False) -> bytes:
    """A 4-byte MPEG-1 Layer III frame header (no CRC; stereo or mono mode)."""
    mode = 3 if channels == 1 else 1  # mono, or joint stereo like LAME
    value = (
        (0x7FF << 21)
        | (3 << 19)  # MPEG-1
        | (1 << 17)  # Layer III
        | (1 << 16)  # no CRC
        | (_MP3_BITRATE_INDEX[kbps] << 12)
        | (_MP3_RATE_INDEX[rate] << 10)
        | (int(padding) << 9)
        | (mode << 6)
    )
    return struct.pack(">I", value)


def mp3_info_frame(kbps: int, rate: int, channels: int, frames: int, total_bytes: int, padding: int) -> bytes:
    """The leading "Info" frame (Xing header + LAME tag) of a CBR MP3.

    It decodes as one frame of silence for players that ignore it; the others
    read the audio frame count and the encoder delay and padding from it and
    play exactly the source's samples (gapless, durations to the sample).
    No TOC: seeking a CBR file is linear.

    :param frames: audio frames after this one.
    :param total_bytes: size of the whole file.
    :param padding: samples of padding at the end (LAME's convention).
    """
    size = mp3_frame_bytes(kbps, rate)
    side_info = 17 if channels == 1 else 32
    xing = b"Info" + struct.pack(">III", 0x1 | 0x2 | 0x8, frames, total_bytes) + struct.pack(">I", 0)
    lame = (
        b"LAME3.100"
        + bytes((0x01, 0))  # tag revision 0, CBR; lowpass unknown
        + struct.pack(">IHH", 0, 0, 0)  # peak, radio and audiophile ReplayGain
        + bytes((0, min(kbps, 255)))  # encoding flags and ATH type; bit rate
        + struct.pack(">I", (MP3_TAG_DELAY << 12 | padding) << 8)[:3]
        + bytes((0, 0))  # misc, MP3Gain
        + struct.pack(">HIH", 0, total_bytes, 0)  # preset/surround, music length, music CRC (unknown)
    )
    body = mp3_header(kbps, rate, channels) + bytes(side_info) + xing + lame
    body += struct.pack(">H", crc16_arc(body))
    if len(body) > size:
        raise ValueError("the Info frame does not fit")  # cannot happen for MPEG-1 rates
    return body + bytes(size - len(body))


@dataclass(frozen=True)
class Layout:
    """The exact byte layout of a progressive rendition of one source.

    Bytes ``[0, header_length)`` are :meth:`header`; chunk ``i`` follows at
    :meth:`chunk_offset`.  A chunk is ``chunk_packets`` codec frames (the last
    one fewer); frame ``m`` of the whole rendition decodes to output samples
    ``[m * packet_samples - delay, (m + 1) * packet_samples - delay)``.

    :ivar rendition: resolved (its ``sample_rate`` is set).
    :ivar source_frames: the source's sample count (at ``source_rate``).
    :ivar frames: output samples per channel (what a decoder plays).
    :ivar packets: codec frames in the whole rendition.
    """

    rendition: Rendition
    source_frames: int
    source_rate: int
    frames: int
    packets: int
    packet_samples: int
    delay: int
    chunk_packets: int
    preroll_packets: int
    lookahead_packets: int
    header_length: int
    #: Sizes of the packets of a full chunk, in order (MP3), or of one packet (Opus).
    packet_sizes: tuple[int, ...] = field(repr=False)

    @property
    def content_type(self) -> str:
        """The ``Content-Type``."""
        return self.rendition.content_type

    @property
    def chunk_count(self) -> int:
        """Chunks after the header."""
        return -(-self.packets // self.chunk_packets)

    def chunk_packet_range(self, index: int) -> tuple[int, int]:
        """Global codec frames ``[first, end)`` of chunk ``index``."""
        self._check(index)
        first = index * self.chunk_packets
        return first, min(first + self.chunk_packets, self.packets)

    def chunk_length(self, index: int) -> int:
        """Bytes of chunk ``index``."""
        first, end = self.chunk_packet_range(index)
        return self._bytes_of(end - first, last=end == self.packets)

    @cached_property
    def _full_chunk_length(self) -> int:
        return self._bytes_of(self.chunk_packets, last=False)

    def chunk_offset(self, index: int) -> int:
        """Byte offset of chunk ``index`` in the file."""
        self._check(index)
        return self.header_length + index * self._full_chunk_length

    @property
    def total_length(self) -> int:
        """The exact ``Content-Length`` of the whole rendition."""
        if not self.chunk_count:
            return self.header_length
        last = self.chunk_count - 1
        return self.chunk_offset(last) + self.chunk_length(last)

    def chunks_for(self, byte_start: int, byte_end: int) -> range:
        """Chunks that hold any of bytes ``[byte_start, byte_end)`` (the header is not a chunk)."""
        if not 0 <= byte_start <= byte_end <= self.total_length:
            raise ValueError("byte range outside the rendition")
        if byte_start == byte_end:
            return range(0)
        full = self._full_chunk_length
        low = max(byte_start - self.header_length, 0) // full
        high = -(-max(byte_end - self.header_length, 0) // full)
        return range(min(low, high), min(high, self.chunk_count))

    def chunk_samples(self, index: int) -> tuple[int, int]:
        """Output samples ``[start, end)`` that chunk ``index``'s frames decode to.

        The first chunk starts before 0 and the last may end after ``frames``.
        """
        first, end = self.chunk_packet_range(index)
        return first * self.packet_samples - self.delay, end * self.packet_samples - self.delay

    def encoder_window(self, index: int) -> tuple[int, int]:
        """Output samples ``[start, end)`` fed to the fresh encoder of chunk ``index``.

        Starts ``preroll_packets`` frames before the chunk's first frame, so
        the encoder's frame ``j`` is the rendition's frame ``first - preroll +
        j`` (the encoder's own delay then lands its frames on the rendition's
        grid), and ends ``lookahead_packets`` frames after its last.  Samples
        outside ``[0, frames)`` are silence.
        """
        first, end = self.chunk_packet_range(index)
        size = self.packet_samples
        return (first - self.preroll_packets) * size, (end + self.lookahead_packets) * size

    def header(self) -> bytes:
        """The bytes before chunk 0, computed without encoding anything."""
        r = self.rendition
        assert r.sample_rate is not None and r.channels is not None and r.bitrate_kbps is not None
        if r.format == MP3:
            padding = self.packets * MP3_FRAME_SAMPLES - MP3_TAG_DELAY - self.frames
            return mp3_info_frame(
                r.bitrate_kbps, r.sample_rate, r.channels, self.packets, self.total_length, padding
            )
        if r.format == AAC:
            return self._m4a_header()
        head = ogg.page(
            [ogg.opus_head(r.channels, OPUS_PRE_SKIP, self.source_rate)],
            serial=OGG_SERIAL,
            sequence=0,
            granule=0,
            flags=ogg.BOS,
        )
        tags = ogg.page([ogg.opus_tags(OPUS_VENDOR)], serial=OGG_SERIAL, sequence=1, granule=0)
        return head + tags

    def aac_budget(self, count: int) -> int:
        """Payload bytes an M4A fragment of *count* AAC frames may carry (nominal size plus margin)."""
        r = self.rendition
        assert r.bitrate_kbps is not None and r.sample_rate is not None
        return aac_budget(count, r.bitrate_kbps, r.sample_rate)

    def ogg_page_granule(self, page_index: int) -> int:
        """Granule position of data page ``page_index`` (the last one trims the padding)."""
        end_packet = min((page_index + 1) * OPUS_PAGE_PACKETS, self.packets)
        if end_packet == self.packets:
            return OPUS_PRE_SKIP + self.frames
        return end_packet * OPUS_FRAME_SAMPLES

    def _m4a_header(self) -> bytes:
        """``ftyp`` + ``moov`` (edit list hiding the priming, ``mehd``) + a ``sidx`` of every fragment."""
        r = self.rendition
        assert r.sample_rate is not None and r.channels is not None and r.bitrate_kbps is not None
        entry = fmp4.mp4a_sample_entry(
            r.channels,
            r.sample_rate,
            r.bitrate_kbps * 1000,
            aac_audio_specific_config(r.sample_rate, r.channels),
        )
        init = fmp4.init_segment(
            r.sample_rate, entry, (self.frames, AAC_DELAY), fragment_duration=self.frames
        )
        # Durations on the presentation timeline (after the edit list): fragment
        # i presents [first * 1024 - 1024, end * 1024 - 1024), clipped to
        # [0, frames), so they add up to the exact duration players show.
        references = []
        for index in range(self.chunk_count):
            first, end = self.chunk_packet_range(index)
            start = min(max(first * AAC_FRAME_SAMPLES - AAC_DELAY, 0), self.frames)
            stop = min(max(end * AAC_FRAME_SAMPLES - AAC_DELAY, 0), self.frames)
            references.append((self.chunk_length(index), stop - start))
        return init + fmp4.segment_index(r.sample_rate, 0, references)

    def _bytes_of(self, count: int, *, last: bool) -> int:
        """Bytes of the first ``count`` frames of a chunk."""
        if self.rendition.format == MP3:
            return sum(self.packet_sizes[:count])
        if self.rendition.format == AAC:
            return fmp4.fragment_length(count, self.aac_budget(count)) + FREE_BOX_HEADER
        size = self.packet_sizes[0]
        full_pages, rest = divmod(count, OPUS_PAGE_PACKETS)
        total = full_pages * ogg.page_size([size] * OPUS_PAGE_PACKETS)
        if rest:
            total += ogg.page_size([size] * rest)
        return total

    def _check(self, index: int) -> None:
        if not 0 <= index < self.chunk_count:
            raise IndexError(f"chunk {index} of {self.chunk_count}")


def aac_budget(count: int, kbps: int, rate: int, *, slack: int = AAC_BUDGET_SLACK) -> int:
    """Payload bytes *count* AAC frames at *kbps* and *rate* may take: nominal plus margin.

    :param slack: bytes on top of the percentage (HLS takes none, so that even
        a short last segment stays under the playlist's ``BANDWIDTH``).
    """
    nominal = count * AAC_FRAME_SAMPLES * kbps * 1000 * AAC_BUDGET_PERCENT
    return -(-nominal // (8 * 100 * rate)) + slack


def aac_audio_specific_config(rate: int, channels: int) -> bytes:
    """The AudioSpecificConfig of AAC-LC at *rate* (44.1 or 48 kHz) with *channels* (1 or 2).

    Object type 2, the rate's index, the channel configuration, 1024-sample
    frames: the two bytes iTunes writes (FFmpeg's encoder adds an explicit
    "no SBR" sync extension, which plain AAC-LC does not need).
    """
    return struct.pack(">H", (2 << 11) | (_AAC_RATE_INDEX[rate] << 7) | (channels << 3))


def layout_for(rendition: Rendition, source_frames: int, source_rate: int) -> Layout:
    """The byte layout of ``rendition`` of a source of ``source_frames`` samples at ``source_rate``.

    :raises NotProgressive: for ADTS AAC and FLAC.
    :raises ValueError: for a negative frame count or a rate below 1.
    """
    if not rendition.progressive:
        raise NotProgressive(f"{rendition.format} frames vary in size: its length is known only once encoded")
    if source_rate < 1 or source_frames < 0:
        raise ValueError("source_frames must be >= 0 and source_rate >= 1")
    r = rendition.resolved(source_rate)
    assert r.sample_rate is not None and r.bitrate_kbps is not None
    frames = output_frames(r, source_frames, source_rate)
    if r.format == MP3:
        # LAME's own count: at least one sample of padding after the last input sample.
        packets = (frames + MP3_DELAY) // MP3_FRAME_SAMPLES + 1
        chunk = MP3_CHUNK_FRAMES
        preroll, lookahead = MP3_PREROLL_FRAMES, MP3_LOOKAHEAD_FRAMES
        sizes = mp3_frame_sizes(r.bitrate_kbps, r.sample_rate, preroll + chunk)[preroll:]
        header_length = mp3_frame_bytes(r.bitrate_kbps, r.sample_rate)
        return Layout(
            r, source_frames, source_rate, frames, packets, MP3_FRAME_SAMPLES, MP3_DELAY,
            chunk, preroll, lookahead, header_length, sizes,
        )  # fmt: skip
    if r.format == AAC:
        # FFmpeg's count: the priming frame, then every frame the samples touch.
        packets = -(-frames // AAC_FRAME_SAMPLES) + 1
        draft = Layout(
            r, source_frames, source_rate, frames, packets, AAC_FRAME_SAMPLES, AAC_DELAY,
            AAC_CHUNK_FRAMES, AAC_PREROLL_FRAMES, AAC_LOOKAHEAD_FRAMES, 0, (),
        )  # fmt: skip
        # The header does not depend on header_length: measure it.
        return replace(draft, header_length=len(draft.header()))
    packets = -(-(frames + OPUS_PRE_SKIP) // OPUS_FRAME_SAMPLES)
    packet = r.bitrate_kbps * 5 // 2
    head = 27 + 1 + 19
    tags = 27 + 1 + len(ogg.opus_tags(OPUS_VENDOR))
    return Layout(
        r, source_frames, source_rate, frames, packets, OPUS_FRAME_SAMPLES, OPUS_PRE_SKIP,
        OPUS_CHUNK_PACKETS, OPUS_PREROLL_PACKETS, OPUS_LOOKAHEAD_PACKETS, head + tags, (packet,),
    )  # fmt: skip

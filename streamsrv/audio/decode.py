# -*- test-case-name: tests.test_decode -*-
"""Decode audio files to float PCM with PyAV: the input of waveforms, spectra and transcodes.

:func:`decode` and :func:`iter_decode` turn the first audio stream of a file
into planar ``float32`` samples in [-1, 1], optionally a window of it
(``start_s``/``end_s``, sample-accurate), at a chosen sample rate and as mono
or stereo; :func:`probe_stream` reads what the container says about the
stream without decoding.  Encoder priming and padding are removed, so the
decoded length is the length that was encoded.

These are blocking, CPU-heavy, pure functions of a path: they run inside the
worker processes of :class:`streamsrv.audio.workers.WorkerPool` and must never
be called on the reactor thread.  They never log, and a :class:`DecodeError`
carries only a client-safe reason, never a path or FFmpeg's message (which
names the file).  FFmpeg is held to local files and audio demuxers, so a file
crafted as a playlist or reference movie can never make it open a URL or
another file.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import av.error
import numpy as np
import numpy.typing as npt

from streamsrv.audio.decode_errors import DecodeError

#: Planar float samples, ``(channels, frames)``.
Samples = npt.NDArray[np.float32]

#: Reasons a :class:`DecodeError` may carry; each is safe to show a client.
UNSUPPORTED_FORMAT: Final = "unsupported format"
NO_AUDIO_STREAM: Final = "no audio stream"
CORRUPT_FILE: Final = "corrupt file"
EMPTY_FILE: Final = "empty file"
UNREADABLE_FILE: Final = "unreadable file"

#: Demuxers FFmpeg may use (every type in :mod:`streamsrv.audio.formats`).
#: Anything else (HLS and concat playlists, images, the ``tty`` text
#: demuxer...) is refused before it reads a byte of another file.
ALLOWED_DEMUXERS: Final = "mp3,mov,aac,flac,ogg,wav,aiff,matroska"

#: FFmpeg options every file is opened with: local files, audio demuxers only.
_CONTAINER_OPTIONS: Final[dict[str, str]] = {
    "format_whitelist": ALLOWED_DEMUXERS,
    "protocol_whitelist": "file",
}

#: How far before ``start_s`` to seek, in turn, until the decoder's first frame
#: starts at or before ``start_s``; after these, decode from the beginning.
#: Half a second covers every codec's pre-roll (MP3's bit reservoir, Opus's
#: 80 ms, Vorbis's and AAC's overlapping windows); the longer one is for
#: demuxers whose seek lands late (Ogg bisects on page granules).
_SEEK_PREROLLS_S: Final[tuple[float, ...]] = (0.5, 4.0)

#: Consecutive packets the decoder may reject before the file counts as corrupt.
_MAX_BAD_PACKETS: Final = 32

#: The highest sample rate :func:`decode` resamples to.
MAX_SAMPLE_RATE: Final = 768_000

#: Default frames per block of :func:`iter_decode` (1.5 s at 44.1 kHz).
DEFAULT_BLOCK_FRAMES: Final = 65536

#: Leading bytes of the audio containers we read: a file that starts like one
#: but cannot be opened is a corrupt file, anything else an unsupported one.
_MAGIC: Final[tuple[bytes, ...]] = (b"fLaC", b"OggS", b"ID3", b"RIFF", b"FORM", b"\x1a\x45\xdf\xa3")

#: Channels that feed only the left or right side of a stereo downmix, by
#: FFmpeg's channel names.  Low-frequency channels are left out of every
#: downmix; any other channel (centres, unknown ones) goes to both sides.
_FRONT: Final = {"FL": 0, "FR": 1}
_LEFT: Final = frozenset({"FLC", "BL", "SL", "TFL", "TBL", "DL", "WL", "SDL", "TSL", "BFL"})
_RIGHT: Final = frozenset({"FRC", "BR", "SR", "TFR", "TBR", "DR", "WR", "SDR", "TSR", "BFR"})
_SIDE_GAIN: Final = math.sqrt(0.5)

#: Integer sample types and the divisor that maps them onto [-1, 1).
_INT_SCALE: Final[dict[np.dtype[Any], float]] = {
    np.dtype(np.int16): 32768.0,
    np.dtype(np.int32): 2147483648.0,
    np.dtype(np.int64): 9223372036854775808.0,
}


@dataclass(frozen=True, eq=False)
class Pcm:
    """Decoded audio.

    Compared by identity (``eq=False``): element-wise array comparison has no
    single truth value.

    :param samples: ``(channels, frames)`` float32, values within [-1, 1].
    :param sample_rate: frames per second.
    :param channels: number of channels, ``samples.shape[0]``.
    """

    samples: Samples
    sample_rate: int
    channels: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.shape[0] != self.channels:
            raise ValueError(f"samples must be ({self.channels}, n), got {self.samples.shape}")
        if self.samples.dtype != np.float32:
            raise ValueError(f"samples must be float32, got {self.samples.dtype}")
        if self.sample_rate < 1:
            raise ValueError("sample_rate must be positive")

    @property
    def frames(self) -> int:
        """Number of sample frames (samples per channel)."""
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class StreamInfo:
    """What a container says about its first audio stream.

    :param codec: FFmpeg's codec name (``"mp3"``, ``"aac"``, ``"flac"``,
        ``"vorbis"``, ``"opus"``, ``"pcm_s16le"``, ``"alac"``...).
    :param sample_rate: samples per second the stream declares.
    :param channels: channel count the stream declares.
    :param duration_s: the stream's (else the container's) duration, or
        ``None`` when neither states one; not a decoded length.
    :param bit_rate: bits per second of the stream (else of the whole file),
        or ``None`` when unknown.
    """

    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None
    bit_rate: int | None


def probe_stream(path: Path) -> StreamInfo:
    """Read the first audio stream's parameters from a file's headers.

    :param path: the file.
    :returns: its codec, rate, channels, declared duration and bit rate.
    :raises DecodeError: when the file cannot be opened as audio.
    """
    container, stream = _open(path)
    with container:
        context = stream.codec_context
        bit_rate = stream.bit_rate or context.bit_rate or container.bit_rate or None
        return StreamInfo(
            codec=context.codec.canonical_name,
            sample_rate=int(context.sample_rate),
            channels=int(context.channels),
            duration_s=_declared_duration(container, stream),
            bit_rate=int(bit_rate) if bit_rate else None,
        )


def decode(
    path: Path,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
) -> Pcm:
    """Decode the first audio stream of a file, or a window of it.

    :param path: the file.
    :param start_s: where to start, in seconds from the first sample.
    :param end_s: where to stop (exclusive), or ``None`` for the end.
    :param sample_rate: resample to this rate; ``None`` keeps the file's.
    :param channels: 1 for a mono downmix, 2 for stereo (mono is doubled,
        surround is downmixed); ``None`` keeps the file's channels.
    :returns: the samples.  A window past the end is empty, not an error.
    :raises DecodeError: when the file cannot be decoded.
    :raises ValueError: for arguments out of range.
    """
    pipeline = _Pipeline(path, start_s, end_s, sample_rate, channels)
    chunks = list(pipeline)
    if chunks:
        samples = np.concatenate(chunks, axis=1)
    else:
        samples = np.zeros((pipeline.out_channels, 0), dtype=np.float32)
    return Pcm(samples=samples, sample_rate=pipeline.out_rate, channels=pipeline.out_channels)


def iter_decode(
    path: Path,
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    start_s: float = 0.0,
    end_s: float | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
) -> Iterator[Samples]:
    """Decode like :func:`decode`, in blocks, with memory bounded by the block size.

    Every block but the last holds exactly ``block_frames`` frames; their
    concatenation equals :func:`decode`'s samples for the same arguments.
    Pass ``sample_rate`` and ``channels`` to know the blocks' rate and shape
    in advance (else they are the file's, see :func:`probe_stream`).  The file
    is opened when the first block is asked for and closed when the iterator
    is exhausted or closed.

    :param path: the file.
    :param block_frames: the most frames in one block.
    :raises DecodeError: (while iterating) when the file cannot be decoded.
    :raises ValueError: for arguments out of range.
    """
    if block_frames < 1:
        raise ValueError("block_frames must be at least 1")
    pipeline = _Pipeline(path, start_s, end_s, sample_rate, channels)
    return _blocks(pipeline, block_frames)


def _blocks(chunks: _Pipeline, block_frames: int) -> Iterator[Samples]:
    """Regroup a stream of chunks into blocks of exactly ``block_frames``.

    :param chunks: the decoded chunks, of any sizes.
    :param block_frames: frames per block; the last block may be shorter.
    """
    block: Samples | None = None
    filled = 0
    for chunk in chunks:
        offset = 0
        size = chunk.shape[1]
        while offset < size:
            if block is None:
                block = np.empty((chunk.shape[0], block_frames), dtype=np.float32)
                filled = 0
            take = min(block_frames - filled, size - offset)
            block[:, filled : filled + take] = chunk[:, offset : offset + take]
            filled += take
            offset += take
            if filled == block_frames:
                yield block
                block = None
    if block is not None and filled:
        yield block[:, :filled].copy()


def _seek_points(start_s: float) -> list[float]:
    """Where to seek, in turn, to decode from ``start_s``: 0.0 means from the beginning.

    :param start_s: the first wanted second.
    """
    points = [start_s - preroll for preroll in _SEEK_PREROLLS_S if start_s - preroll > 0.0]
    return [*points, 0.0]


class _SeekMissed(Exception):
    """A seek landed after the wanted start; seek further back."""


class _Pipeline:
    """Open, seek, decode, trim, mix, resample and clip: an iterable of chunks.

    ``out_rate`` and ``out_channels`` are final once the first chunk is out
    (or iteration has ended); before that they are the stream's declared ones.
    """

    def __init__(
        self,
        path: Path,
        start_s: float,
        end_s: float | None,
        sample_rate: int | None,
        channels: int | None,
    ) -> None:
        if not math.isfinite(start_s) or start_s < 0:
            raise ValueError("start_s must be a finite number >= 0")
        if end_s is not None and (math.isnan(end_s) or end_s < start_s):
            raise ValueError("end_s must be >= start_s")
        if sample_rate is not None and not 1 <= sample_rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample_rate must be within 1..{MAX_SAMPLE_RATE}")
        if channels not in (None, 1, 2):
            raise ValueError("channels must be 1, 2 or None")
        self._path = path
        self._start_s = start_s
        self._end_s = end_s
        self._want_rate = sample_rate
        self._want_channels = channels
        self.out_rate = sample_rate or 0
        self.out_channels = channels or 0
        self._names: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Samples]:
        if self._end_s is not None and self._end_s <= self._start_s:
            self._settle_declared()
            return
        converter: _RateConverter | None = None
        for data, rate in self._trimmed():
            if converter is None:
                self.out_channels = self._want_channels or data.shape[0]
                self.out_rate = self._want_rate or rate
                converter = _RateConverter(self.out_rate, self.out_channels)
            mixed = _mix(data, self._names, self.out_channels)
            for chunk in converter.convert(mixed, rate):
                yield _clip(chunk)
        if converter is None:
            self._settle_declared()
            return
        for chunk in converter.flush():
            yield _clip(chunk)

    def _settle_declared(self) -> None:
        """Fix the output shape from the headers when nothing was decoded."""
        if self.out_rate and self.out_channels:
            return
        info = probe_stream(self._path)
        self.out_rate = self.out_rate or info.sample_rate
        self.out_channels = self.out_channels or info.channels

    def _trimmed(self) -> Iterator[tuple[Samples, int]]:
        """The decoded samples within ``[start_s, end_s)``, at the file's rate.

        Positions come from the first decoded frame's timestamp and then from
        counting samples, so a window is sample-accurate whatever the packet
        timestamps' jitter.  Every frame's channel names are in ``_names``.
        """
        for seek_s in _seek_points(self._start_s):
            try:
                yield from self._trimmed_from(seek_s)
            except _SeekMissed:
                continue
            return

    def _trimmed_from(self, seek_s: float) -> Iterator[tuple[Samples, int]]:
        """One attempt of :meth:`_trimmed`, seeking to ``seek_s`` first when it is > 0.

        :raises _SeekMissed: before yielding anything, when the first frame
            after the seek starts after ``start_s`` or the seek failed.
        """
        container, stream = _open(self._path)
        with container:
            origin = stream.start_time or 0
            time_base = stream.time_base or Fraction(1, stream.codec_context.sample_rate or 1)
            stop_s = self._end_s
            presented = _presented_end(container, stream)
            if presented is not None:
                stop_s = presented if stop_s is None else min(stop_s, presented)
            if seek_s > 0.0:
                try:
                    container.seek(origin + math.floor(seek_s / time_base), stream=stream)
                except (av.error.FFmpegError, OverflowError):  # OverflowError: past int64 (start=1e300)
                    raise _SeekMissed() from None
            frames = _frames(container, stream)
            first = next(frames, None)
            if first is None:
                if seek_s > 0.0:
                    declared = _declared_duration(container, stream)
                    if declared is None or self._start_s < declared:
                        raise _SeekMissed()
                    return
                raise DecodeError(CORRUPT_FILE if _declared_duration(container, stream) else EMPTY_FILE)
            if first.pts is None:
                if seek_s > 0.0:
                    raise _SeekMissed()  # no timestamp to tell where the seek landed
                segment_start_s = 0.0
            else:
                segment_start_s = float((first.pts - origin) * time_base)
            segment_rate = first.sample_rate
            if seek_s > 0.0 and not 0.0 <= segment_start_s <= self._start_s + 0.5 / segment_rate:
                raise _SeekMissed()
            segment_position = 0
            frame: Any = first
            while frame is not None:
                rate = frame.sample_rate
                if rate != segment_rate:
                    segment_start_s += segment_position / segment_rate
                    segment_rate, segment_position = rate, 0
                data, self._names = _as_float(frame)
                count = data.shape[1]
                low = round((self._start_s - segment_start_s) * rate) - segment_position
                high = (
                    count if stop_s is None else round((stop_s - segment_start_s) * rate) - segment_position
                )
                segment_position += count
                low, high = max(low, 0), min(high, count)
                if high > low:
                    yield (data if (low, high) == (0, count) else data[:, low:high]), rate
                if high < count and stop_s is not None:
                    return
                frame = next(frames, None)


def _open(path: Path) -> tuple[Any, Any]:
    """Open a file with FFmpeg and pick its first audio stream.

    :param path: the file.
    :returns: ``(container, stream)``; the caller closes the container.
    :raises DecodeError: mapped from every way opening can fail.
    """
    filename = os.path.abspath(path)  # never read as "proto:..." by FFmpeg
    try:
        size = os.stat(filename).st_size
    except OSError:
        raise DecodeError(UNREADABLE_FILE) from None
    if size == 0:
        raise DecodeError(EMPTY_FILE)
    try:
        container = av.open(filename, "r", container_options=_CONTAINER_OPTIONS, metadata_errors="replace")
    except (av.error.FileNotFoundError, av.error.PermissionError, av.error.IsADirectoryError, OSError):
        raise DecodeError(UNREADABLE_FILE) from None
    except av.error.EOFError:
        raise DecodeError(CORRUPT_FILE) from None
    except av.error.InvalidDataError:
        raise DecodeError(CORRUPT_FILE if _looks_like_audio(filename) else UNSUPPORTED_FORMAT) from None
    except (av.error.FFmpegError, ValueError, UnicodeError):
        raise DecodeError(UNSUPPORTED_FORMAT) from None
    try:
        audio = container.streams.audio
        if not audio:
            raise DecodeError(NO_AUDIO_STREAM)
        stream = audio[0]
        if not stream.codec_context.sample_rate or not stream.codec_context.channels:
            # FFmpeg falls back on the file name's extension: a text file
            # called .flac opens as FLAC with no parameters.
            raise DecodeError(CORRUPT_FILE if _looks_like_audio(filename) else UNSUPPORTED_FORMAT)
    except BaseException:
        container.close()
        raise
    return container, stream


def _looks_like_audio(filename: str) -> bool:
    """Whether a file starts like one of the containers we read.

    :param filename: an absolute path.
    """
    try:
        with open(filename, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    mpeg_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MP3 and ADTS frames
    return head.startswith(_MAGIC) or head[4:8] == b"ftyp" or mpeg_sync


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The stream's duration in seconds, else the container's, else ``None``.

    :param container: an open input container.
    :param stream: its audio stream.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration / av.time_base)
    return None


def _presented_end(container: Any, stream: Any) -> float | None:
    """Where an MP4's edit list ends the audio, in seconds from its start.

    FFmpeg applies the edit list's start (the AAC priming) but decodes the
    last frame whole, up to 1023 samples of encoder padding past the
    presented end.  Only MP4's stream duration is exact enough to cut at; an
    MP3's or Ogg's may be an estimate and would cut real audio.

    :param container: an open input container.
    :param stream: its audio stream.
    """
    if "mp4" not in container.format.name.split(","):
        return None
    if not stream.duration or not stream.time_base:
        return None
    return float(stream.duration * stream.time_base)


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames of one stream, skipping packets the decoder rejects.

    A packet the decoder rejects is skipped, like players do; a run of
    :data:`_MAX_BAD_PACKETS` is a corrupt file.  A demuxer error after audio
    has come out ends the stream (a file cut short plays what it has); before
    any, it is a corrupt file.

    :raises DecodeError: when the file is corrupt.
    """
    bad = 0
    produced = False
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad += 1
                if bad >= _MAX_BAD_PACKETS:
                    raise DecodeError(CORRUPT_FILE) from None
                continue
            bad = 0
            for frame in frames:
                if frame.samples:
                    produced = True
                    yield frame
    except av.error.FFmpegError:
        if not produced:
            raise DecodeError(CORRUPT_FILE) from None


def _as_float(frame: Any) -> tuple[Samples, tuple[str, ...]]:
    """A frame's samples as planar float32, and its channel names.

    :param frame: a decoded :class:`av.AudioFrame` of any sample format.
    :returns: ``(channels, samples)`` float32 and e.g. ``("FL", "FR")``.
    """
    names = tuple(c.name for c in frame.layout.channels)
    count = len(names) or 1
    raw = frame.to_ndarray()
    if not frame.format.is_planar:
        raw = raw.reshape(-1, count).T
    data: Samples
    if raw.dtype == np.float32:
        data = raw
    elif raw.dtype == np.float64:
        data = raw.astype(np.float32)
    elif raw.dtype == np.uint8:
        data = (raw.astype(np.float32) - 128.0) / 128.0
    else:
        data = (
            raw.astype(np.float64 if raw.dtype == np.int64 else np.float32) / _INT_SCALE[raw.dtype]
        ).astype(np.float32, copy=False)
    return data, names


def _mix(data: Samples, names: tuple[str, ...], channels: int) -> Samples:
    """Mix samples to ``channels`` channels (no-op when the count already matches).

    :param data: ``(n_in, frames)`` samples.
    :param names: FFmpeg's names of the ``n_in`` channels.
    :param channels: wanted channel count.
    """
    if data.shape[0] == channels:
        return data
    if channels not in (1, 2):
        raise DecodeError(UNSUPPORTED_FORMAT)  # channel layout changed mid-stream
    if len(names) != data.shape[0]:
        names = ("",) * data.shape[0]
    return _mix_matrix(names, channels) @ data


@functools.lru_cache(maxsize=64)
def _mix_matrix(names: tuple[str, ...], channels: int) -> Samples:
    """The downmix (or mono-to-stereo) matrix from named channels to 1 or 2.

    Mono is the mean of every channel but the low-frequency ones.  Stereo
    takes FL/FR whole, other left/right channels at -3 dB to their side and
    centre or unknown channels at -3 dB to both; mono input is doubled.  Rows
    are scaled by the largest row sum so that a full-scale input never
    exceeds full scale (FFmpeg's float downmix does not, and clips).

    :param names: input channel names.
    :param channels: 1 or 2.
    """
    weights = np.zeros((channels, len(names)), dtype=np.float32)
    for index, name in enumerate(names):
        if name.startswith("LFE"):
            continue
        if channels == 1 or len(names) == 1:
            weights[:, index] = 1.0
        elif name in _FRONT:
            weights[_FRONT[name], index] = 1.0
        elif name in _LEFT:
            weights[0, index] = _SIDE_GAIN
        elif name in _RIGHT:
            weights[1, index] = _SIDE_GAIN
        else:
            weights[:, index] = _SIDE_GAIN
    if not weights.any():
        weights[:] = 1.0  # only low-frequency channels: keep them rather than silence
    weights /= weights.sum(axis=1).max()
    return weights


def _clip(data: Samples) -> Samples:
    """Limit samples to [-1, 1] in place (lossy decoders and resampling overshoot)."""
    return np.clip(data, -1.0, 1.0, out=data) if data.flags.writeable else np.clip(data, -1.0, 1.0)


class _RateConverter:
    """Resample planar float chunks to one output rate with :class:`av.AudioResampler`.

    Chunks already at the output rate pass through; a rate change mid-stream
    flushes the current resampler and starts another.

    :param rate: the output rate.
    :param channels: channels of every chunk given.
    """

    def __init__(self, rate: int, channels: int) -> None:
        self._rate = rate
        self._layout = _default_layout(channels)
        self._resampler: Any = None
        self._in_rate = 0
        self._pts = 0

    def convert(self, data: Samples, rate: int) -> list[Samples]:
        """Resample one chunk at ``rate``; returns what the resampler has ready."""
        if rate == self._rate and self._resampler is None:
            return [data]
        out: list[Samples] = []
        if self._resampler is not None and rate != self._in_rate:
            out.extend(self.flush())
        if rate == self._rate:
            out.append(data)
            return out
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self._rate)
            self._in_rate, self._pts = rate, 0
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=self._layout)
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = self._pts
        self._pts += data.shape[1]
        out.extend(f.to_ndarray() for f in self._resampler.resample(frame))
        return out

    def flush(self) -> list[Samples]:
        """Drain the resampler's delay line (at the end, or before a rate change)."""
        if self._resampler is None:
            return []
        out = [f.to_ndarray() for f in self._resampler.resample(None)]
        self._resampler = None
        return out


def _default_layout(channels: int) -> str:
    """FFmpeg's default layout name for a channel count."""
    return {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}.get(
        channels, f"{channels}c"
    )

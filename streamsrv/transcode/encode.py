# -*- test-case-name: tests.test_transcode_encode -*-
"""Encode renditions with PyAV: chunks and byte ranges of progressive ones, whole files of the rest.

The jobs here (:func:`probe_source`, :func:`encode_chunk`, :func:`encode_range`,
:func:`encode_full`) are module-level functions of picklable values, meant for
:meth:`streamsrv.audio.workers.WorkerPool.submit`.  They are blocking and
CPU-heavy and must never run on the reactor thread; they never log, and their
errors carry no path.

A chunk of a progressive rendition (see :mod:`streamsrv.transcode.layout`) is
encoded by a fresh encoder from its own window of decoded audio, a pure
function of (source file, layout, chunk index): the full encode is the
concatenation of the chunks, so a byte range encoded on its own equals the
same range of the finished file.  A chunk whose encoder did not produce the
exact sizes of the layout is an :class:`EncodeError`, never served.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt

from streamsrv.audio.decode import Samples, decode, iter_decode, probe_stream
from streamsrv.transcode import aac, fmp4, lame, ogg
from streamsrv.transcode.layout import (
    AAC,
    AAC_FRAME_SAMPLES,
    FLAC,
    MP3,
    MP3_TAG_DELAY,
    OGG_SERIAL,
    OPUS_PAGE_PACKETS,
    Layout,
    Rendition,
    gain_factor,
    layout_for,
    start_frame,
)

__all__ = [
    "EncodeError",
    "SourceInfo",
    "encode_chunk",
    "encode_full",
    "encode_range",
    "iter_chunks",
    "probe_source",
]

#: Encoder options per format: LAME CBR without the bit reservoir (every frame
#: stands alone, so frames of different encoders concatenate); Opus hard CBR, 20 ms.
_OPTIONS: Final[dict[str, dict[str, str]]] = {
    MP3: {"reservoir": "0", "joint_stereo": "1"},
    "opus": {"vbr": "off", "frame_duration": "20", "application": "audio"},
    AAC: {},
    FLAC: {},
}
_CODECS: Final = {MP3: "libmp3lame", "opus": "libopus", AAC: "aac", FLAC: "flac"}
_MUXERS: Final = {AAC: "adts", FLAC: "flac"}

#: Frames per block when decoding a whole source for AAC or FLAC.
_BLOCK_FRAMES: Final = 65536

#: Prefix of temp files, the one :class:`streamsrv.cache.artifacts.ArtifactCache` cleans up.
_TEMP_PREFIX: Final = ".tmp-"


class EncodeError(Exception):
    """An encoder did not produce what the layout promised (a bug or a broken build); never served."""


@dataclass(frozen=True)
class SourceInfo:
    """What a layout needs to know about a source.

    :param frames: samples per channel, from the headers (see :func:`probe_source`).
    :param sample_rate: samples per second.
    :param channels: channel count.
    """

    frames: int
    sample_rate: int
    channels: int


def probe_source(path: str) -> SourceInfo:
    """Read a source's sample count, rate and channels from its headers (no decoding).

    The count is the container's duration in samples (Ogg Opus: less its
    pre-skip).  Whatever it is, every layout and every chunk of the source
    use the same figure, so renditions stay exact; a header that overstates
    the audio yields trailing silence, one that understates it cuts the end.
    Files with no stated duration are decoded and counted.

    :raises streamsrv.audio.decode.DecodeError: when the file is not audio.
    """
    info = probe_stream(Path(path))
    if info.duration_s is None:
        pcm_frames = sum(block.shape[1] for block in iter_decode(Path(path)))
        return SourceInfo(pcm_frames, info.sample_rate, info.channels)
    frames = round(info.duration_s * info.sample_rate)
    if info.codec == "opus":
        with av.open(os.path.abspath(path)) as container:
            extradata = container.streams.audio[0].codec_context.extradata or b""
        if len(extradata) >= 12:
            frames -= int.from_bytes(extradata[10:12], "little")
    return SourceInfo(max(frames, 0), info.sample_rate, info.channels)


def encode_chunk(source_path: str, layout: Layout, index: int) -> bytes:
    """The bytes of chunk ``index`` of a progressive rendition.

    :raises IndexError: for a chunk outside the layout.
    :raises EncodeError: when the encoder's output does not fit the layout.
    :raises streamsrv.audio.decode.DecodeError: when the source cannot be decoded.
    """
    first, end = layout.chunk_packet_range(index)
    window_start, window_end = layout.encoder_window(index)
    samples = _window(source_path, layout, window_start, window_end)
    if layout.rendition.format == AAC:
        return _m4a_fragment(layout, index, samples)
    packets = _encode_packets(layout.rendition, samples)
    wanted = packets[layout.preroll_packets : layout.preroll_packets + end - first]
    if len(wanted) != end - first:
        raise EncodeError("the encoder produced too few frames")
    rendition = layout.rendition
    if rendition.format == MP3:
        body = b"".join(wanted)
    else:
        pages = []
        for offset in range(0, len(wanted), OPUS_PAGE_PACKETS):
            page_index = (first + offset) // OPUS_PAGE_PACKETS
            last = first + offset + OPUS_PAGE_PACKETS >= layout.packets
            pages.append(
                ogg.page(
                    wanted[offset : offset + OPUS_PAGE_PACKETS],
                    serial=OGG_SERIAL,
                    sequence=2 + page_index,
                    granule=layout.ogg_page_granule(page_index),
                    flags=ogg.EOS if last else 0,
                )
            )
        body = b"".join(pages)
    if len(body) != layout.chunk_length(index):
        raise EncodeError("the encoder's frames do not have the layout's sizes")
    return body


def _m4a_fragment(layout: Layout, index: int, samples: Samples) -> bytes:
    """Fragment ``index`` of an M4A rendition: ``moof`` + ``mdat`` + a ``free`` box filling its budget.

    The frames are held to :meth:`Layout.aac_budget` by
    :func:`streamsrv.transcode.aac.packets_within` (lower bit rates in turn
    for a window that overruns it, deterministically), so the fragment is a
    pure function of (source, layout, index) and never breaks the layout.
    """
    rendition = layout.rendition
    assert rendition.bitrate_kbps is not None and rendition.sample_rate is not None
    first, end = layout.chunk_packet_range(index)
    count = end - first
    keep = (layout.preroll_packets, layout.preroll_packets + count)
    try:
        wanted = aac.packets_within(
            samples, rendition.sample_rate, rendition.bitrate_kbps, keep, layout.aac_budget(count)
        )
    except aac.AacError as error:
        raise EncodeError(str(error)) from error
    fragment = fmp4.media_segment(index, first * AAC_FRAME_SAMPLES, [AAC_FRAME_SAMPLES] * count, wanted)
    padding = layout.chunk_length(index) - len(fragment)
    return fragment + fmp4.box(b"free", bytes(padding - 8))


def iter_chunks(source_path: str, layout: Layout, first: int = 0) -> Iterator[bytes]:
    """The header (when ``first`` is 0) then every chunk from ``first`` on, in order."""
    if first == 0:
        yield layout.header()
    for index in range(first, layout.chunk_count):
        yield encode_chunk(source_path, layout, index)


def encode_range(
    source_path: str,
    rendition: Rendition,
    byte_start: int,
    byte_end: int,
    *,
    source: SourceInfo | None = None,
) -> bytes:
    """Bytes ``[byte_start, byte_end)`` of a progressive rendition, encoding only the chunks they touch.

    :param source: the source's :func:`probe_source` (probed here when ``None``).
    :raises streamsrv.transcode.layout.NotProgressive: for AAC and FLAC.
    :raises ValueError: for a range outside the rendition.
    """
    if source is None:
        source = probe_source(source_path)
    layout = layout_for(rendition, source.frames, source.sample_rate)
    parts = []
    if byte_start < layout.header_length:
        parts.append(layout.header()[byte_start:byte_end])
    chunks = layout.chunks_for(byte_start, byte_end)
    for index in chunks:
        offset = layout.chunk_offset(index)
        data = encode_chunk(source_path, layout, index)
        parts.append(data[max(byte_start - offset, 0) : max(byte_end - offset, 0)])
    return b"".join(parts)


def encode_full(
    source_path: str, rendition: Rendition, out_path: str, *, source: SourceInfo | None = None
) -> int:
    """Encode a whole rendition into ``out_path``, atomically (temp file, fsync, rename).

    Progressive renditions are written chunk by chunk (the same bytes as
    :func:`encode_range`); AAC goes to ADTS and FLAC to a FLAC file through
    FFmpeg's muxers.

    :param source: the source's :func:`probe_source` (probed here when ``None``).
    :returns: the file's size.
    """
    if source is None:
        source = probe_source(source_path)
    target = Path(out_path)
    temp = target.parent / f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    try:
        if rendition.progressive:
            layout = layout_for(rendition, source.frames, source.sample_rate)
            with open(temp, "wb") as f:
                for data in iter_chunks(source_path, layout):
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            _encode_file(source_path, rendition.resolved(source.sample_rate), source, temp)
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
        size = temp.stat().st_size
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return size


def encode_full_bytes(source_path: str, rendition: Rendition, *, source: SourceInfo | None = None) -> bytes:
    """The same bytes as :func:`encode_full`, in memory: for when the cache's disk is full.

    :param source: the source's :func:`probe_source` (probed here when ``None``).
    """
    if source is None:
        source = probe_source(source_path)
    if rendition.progressive:
        return b"".join(iter_chunks(source_path, layout_for(rendition, source.frames, source.sample_rate)))
    out = io.BytesIO()
    _encode_file(source_path, rendition.resolved(source.sample_rate), source, out)
    return out.getvalue()


# -- internals ---------------------------------------------------------------


def _window(source_path: str, layout: Layout, start: int, end: int) -> Samples:
    """Output samples ``[start, end)`` of the rendition, silence outside ``[0, layout.frames)``.

    Always exactly ``end - start`` frames, whatever the decoder returns.
    """
    rendition = layout.rendition
    assert rendition.sample_rate is not None and rendition.channels is not None
    rate = rendition.sample_rate
    out = np.zeros((rendition.channels, end - start), dtype=np.float32)
    low, high = max(start, 0), min(end, layout.frames)
    if high <= low:
        return out
    origin_s = start_frame(rendition, layout.source_rate) / layout.source_rate
    pcm = decode(
        Path(source_path),
        start_s=origin_s + low / rate,
        end_s=origin_s + high / rate,
        sample_rate=rate,
        channels=rendition.channels,
    )
    count = min(pcm.frames, high - low)
    out[:, low - start : low - start + count] = pcm.samples[:, :count]
    if rendition.gain_mdb:
        out *= np.float32(gain_factor(rendition.gain_mdb))
        np.clip(out, -1.0, 1.0, out=out)
    return out


def _open_encoder(rendition: Rendition) -> Any:
    """A fresh, opened encoder context for ``rendition``."""
    assert rendition.sample_rate is not None
    context: Any = av.CodecContext.create(_CODECS[rendition.format], "w")
    context.sample_rate = rendition.sample_rate
    context.layout = "mono" if rendition.channels == 1 else "stereo"
    supported = [f.name for f in context.codec.audio_formats or ()]
    context.format = next(f for f in ("fltp", "flt", "s32", "s16") if f in supported)
    if rendition.bitrate_kbps is not None:
        context.bit_rate = rendition.bitrate_kbps * 1000
    context.time_base = Fraction(1, rendition.sample_rate)
    context.options = dict(_OPTIONS[rendition.format])
    context.open()
    return context


def _frame(samples: Samples, context: Any, pts: int) -> Any:
    """An :class:`av.AudioFrame` of planar float samples in the encoder's sample format."""
    name = context.format.name
    data: npt.NDArray[Any]
    if name == "fltp":
        data = np.ascontiguousarray(samples)
    elif name == "flt":
        data = np.ascontiguousarray(samples.T).reshape(1, -1)
    elif name == "s32":
        data = np.ascontiguousarray((samples.T * 2147483647.0).astype(np.int32)).reshape(1, -1)
    else:
        data = np.ascontiguousarray(np.round(samples.T * 32767.0).astype(np.int16)).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(data, format=name, layout=context.layout.name)
    frame.sample_rate = context.sample_rate
    frame.time_base = context.time_base
    frame.pts = pts
    return frame


def _encode_packets(rendition: Rendition, samples: Samples) -> list[bytes]:
    """Every packet a fresh encoder makes of ``samples``, flushed.

    MP3 goes to lameenc's LAME through :mod:`streamsrv.transcode.lame` (three
    times as fast as PyAV's) when it is there, else to PyAV's libmp3lame;
    the cache key names which (:func:`streamsrv.transcode.lame.backend`).
    Through PyAV the samples go in as one frame: PyAV cuts it into the
    encoder's frame size itself (the same packets as feeding frame by frame,
    with less Python per frame).

    :raises EncodeError: when LAME fails or writes what was not asked.
    """
    if rendition.format == MP3 and lame.available():
        assert rendition.bitrate_kbps is not None and rendition.sample_rate is not None
        try:
            kbps, rate = rendition.bitrate_kbps, rendition.sample_rate
            return lame.encode_frames(samples, kbps, rate, delay=MP3_TAG_DELAY)
        except lame.LameError as error:
            raise EncodeError(str(error)) from error
    context = _open_encoder(rendition)
    packets = [bytes(p) for p in context.encode(_frame(samples, context, 0))]
    packets.extend(bytes(p) for p in context.encode(None))
    return packets


def _encode_file(source_path: str, rendition: Rendition, source: SourceInfo, out: Path | io.BytesIO) -> None:
    """Encode the whole of a (resolved) AAC or FLAC rendition with FFmpeg's muxer, to a file or memory."""
    assert rendition.sample_rate is not None and rendition.channels is not None
    origin_s = start_frame(rendition, source.sample_rate) / source.sample_rate
    with av.open(
        str(out) if isinstance(out, Path) else out, "w", format=_MUXERS[rendition.format]
    ) as container:
        stream: Any = container.add_stream(_CODECS[rendition.format], rate=rendition.sample_rate)
        context = stream.codec_context
        context.layout = "mono" if rendition.channels == 1 else "stereo"
        supported = [f.name for f in context.codec.audio_formats or ()]
        context.format = next(f for f in ("fltp", "flt", "s32", "s16") if f in supported)
        if rendition.bitrate_kbps is not None:
            context.bit_rate = rendition.bitrate_kbps * 1000
        context.open()
        size = context.frame_size or 4096
        pts = 0
        pending = np.zeros((rendition.channels, 0), dtype=np.float32)
        blocks = iter_decode(
            Path(source_path),
            block_frames=_BLOCK_FRAMES,
            start_s=origin_s,
            sample_rate=rendition.sample_rate,
            channels=rendition.channels,
        )
        factor = np.float32(gain_factor(rendition.gain_mdb)) if rendition.gain_mdb else None
        for block in blocks:
            if factor is not None:
                block = np.clip(block * factor, -1.0, 1.0)
            pending = np.concatenate([pending, block], axis=1) if pending.shape[1] else block
            usable = pending.shape[1] - pending.shape[1] % size
            for start in range(0, usable, size):
                container.mux(stream.encode(_frame(pending[:, start : start + size], context, pts)))
                pts += size
            pending = pending[:, usable:]
        if pending.shape[1]:
            container.mux(stream.encode(_frame(pending, context, pts)))
        container.mux(stream.encode(None))

# -*- test-case-name: tests.test_probe -*-
"""Real audio files for tests, encoded with PyAV.

Tests that need a track on disk (probing, tagging, waveforms, spectra,
transcodes, streaming) write one here instead of checking binaries into the
repository.  Every writer produces a complete, valid file of the asked format
that FFmpeg decodes back; nothing here ever touches the network, a shared
directory or anything but the path it is given.

This module deliberately does not import :mod:`streamsrv`: fixtures stay
independent of the code they are used to test.

Formats (the ``fmt`` argument), keyed like the file extensions they write:

=========  ===============  ======================  ==================  ========
``fmt``    container        codec                   sample rates        channels
=========  ===============  ======================  ==================  ========
``mp3``    MPEG audio       LAME, CBR 192 kb/s      8000–48000 (MPEG)   1–2
``flac``   FLAC             FLAC, 16 bit            any                 1–6
``ogg``    Ogg              Vorbis (FFmpeg's own)   any                 2 only
``opus``   Ogg              Opus 96 kb/s            48000 (see below)   1–6
``m4a``    MP4 (M4A brand)  AAC-LC 128 kb/s         7350–96000          1–6
``wav``    RIFF WAVE        PCM s16le               any                 1–6
``aiff``   AIFF             PCM s16be               any                 1–6
=========  ===============  ======================  ==================  ========

Ogg Opus always decodes at 48 kHz, so :func:`write_tone` synthesises Opus tones
at 48 kHz whatever ``sample_rate`` says; :func:`write_samples` refuses, like
any rate a codec cannot take, with :class:`av.error.ArgumentError` (a
:class:`ValueError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt

#: Float audio as ``(channels, samples)``, nominally within [-1, 1].
Samples = npt.NDArray[np.float32]

#: Channel layouts by channel count.
_LAYOUTS: Final[Mapping[int, str]] = MappingProxyType(
    {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1"}
)

#: Sample formats we can feed, best first (float avoids a rounding step).
_PREFERRED_SAMPLE_FORMATS: Final[tuple[str, ...]] = (
    "fltp",
    "flt",
    "s16p",
    "s16",
    "s32p",
    "s32",
)

#: Frames per encoder call for codecs that take any frame size (PCM, FLAC).
_VARIABLE_FRAME_SIZE: Final[int] = 4096

#: The rate every Ogg Opus stream decodes at.
OPUS_RATE: Final[int] = 48000


@dataclass(frozen=True)
class Encoding:
    """How one ``fmt`` is written.

    :param container: FFmpeg muxer name.
    :param codec: FFmpeg encoder name.
    :param bit_rate: target bits per second, or ``None`` for the codec default.
    :param options: extra encoder options as ``(name, value)`` pairs.
    """

    container: str
    codec: str
    bit_rate: int | None = None
    options: tuple[tuple[str, str], ...] = ()


#: Every format this module writes, keyed by file extension without the dot.
ENCODINGS: Final[Mapping[str, Encoding]] = MappingProxyType(
    {
        "mp3": Encoding("mp3", "libmp3lame", 192_000),
        "flac": Encoding("flac", "flac"),
        # FFmpeg's native Vorbis encoder: libvorbis is not in PyAV's wheel.
        "ogg": Encoding("ogg", "vorbis", options=(("strict", "experimental"),)),
        "opus": Encoding("ogg", "libopus", 96_000),
        "m4a": Encoding("ipod", "aac", 128_000),
        "wav": Encoding("wav", "pcm_s16le"),
        "aiff": Encoding("aiff", "pcm_s16be"),
    }
)


def tone(
    seconds: float,
    freq: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 2,
    amplitude: float = 0.5,
) -> Samples:
    """A sine tone, the same in every channel.

    :param seconds: length; rounded to the nearest whole sample.
    :param freq: frequency in Hz.
    :param sample_rate: samples per second.
    :param channels: number of identical channels.
    :param amplitude: peak value, within [0, 1].
    :returns: ``(channels, round(seconds * sample_rate))`` float32 samples.
    """
    count = round(seconds * sample_rate)
    phase = (2.0 * np.pi * freq / sample_rate) * np.arange(count, dtype=np.float64)
    wave = (amplitude * np.sin(phase)).astype(np.float32)
    return np.tile(wave, (channels, 1))


def write_tone(
    path: str | Path,
    fmt: str,
    seconds: float,
    freq: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 2,
    amplitude: float = 0.5,
) -> Path:
    """Write a sine tone to ``path`` as a real ``fmt`` file.

    Decoding the file gives back ``seconds`` of audio: exactly for PCM, FLAC
    and Opus, within one codec frame (at most 1024 samples) for MP3, Vorbis and
    AAC, whose last frame may be decoded whole.

    :param path: file to create or overwrite; its parent must exist.
    :param fmt: a key of :data:`ENCODINGS` (``"mp3"``, ``"flac"``, ...).
    :param seconds: length of the tone.
    :param freq: frequency in Hz.
    :param sample_rate: samples per second (Opus: always 48000).
    :param channels: channel count, 1 to 6 (MP3: 1 or 2; Vorbis: 2 only,
        FFmpeg's native encoder writes nothing else).
    :param amplitude: peak value, within [0, 1].
    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    if fmt == "opus":
        sample_rate = OPUS_RATE
    samples = tone(seconds, freq, sample_rate, channels, amplitude)
    return write_samples(path, fmt, samples, sample_rate)


def write_samples(
    path: str | Path,
    fmt: str,
    samples: npt.NDArray[np.floating],
    sample_rate: int,
    bit_rate: int | None = None,
) -> Path:
    """Encode float samples into a ``fmt`` file.

    :param path: file to create or overwrite; its parent must exist.
    :param fmt: a key of :data:`ENCODINGS`.
    :param samples: ``(channels, count)`` floats; values beyond [-1, 1] clip.
    :param sample_rate: samples per second; must suit the codec.
    :param bit_rate: overrides the format's bit rate (lossy formats only).
    :returns: ``path`` as a :class:`~pathlib.Path`.
    :raises ValueError: for an unknown ``fmt``, a bad array shape, or a
        channel count or sample rate the encoder cannot take.
    """
    try:
        encoding = ENCODINGS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}") from None
    if samples.ndim != 2 or samples.shape[0] not in _LAYOUTS:
        raise ValueError(f"samples must be (channels, count), got {samples.shape}")
    if encoding.codec == "vorbis" and samples.shape[0] != 2:
        raise ValueError("FFmpeg's native Vorbis encoder writes stereo only")
    path = Path(path)
    layout = _LAYOUTS[samples.shape[0]]
    clipped = np.clip(samples, -1.0, 1.0).astype(np.float32)
    with av.open(str(path), "w", format=encoding.container) as container:
        stream = container.add_stream(encoding.codec, rate=sample_rate, options=dict(encoding.options))
        assert isinstance(stream, av.AudioStream)
        context = stream.codec_context
        context.layout = layout
        supported = {f.name for f in context.codec.audio_formats or ()}
        sample_format = next(f for f in _PREFERRED_SAMPLE_FORMATS if f in supported)
        context.format = sample_format
        rate = bit_rate or encoding.bit_rate
        if rate:
            context.bit_rate = rate
        context.open()
        frame_size = context.frame_size or _VARIABLE_FRAME_SIZE
        time_base = Fraction(1, sample_rate)
        for start in range(0, clipped.shape[1], frame_size):
            chunk = clipped[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(_as_sample_format(chunk, sample_format), sample_format, layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _as_sample_format(chunk: Samples, sample_format: str) -> npt.NDArray[Any]:
    """Convert ``(channels, n)`` float32 samples to what ``from_ndarray`` takes.

    :param chunk: the samples.
    :param sample_format: an FFmpeg sample format name.
    :returns: a planar ``(channels, n)`` or packed ``(1, channels * n)`` array.
    """
    data: npt.NDArray[Any]
    if sample_format.startswith("s16"):
        data = np.round(chunk * 32767.0).astype(np.int16)
    elif sample_format.startswith("s32"):
        data = np.round(chunk.astype(np.float64) * 2147483647.0).astype(np.int32)
    else:
        data = chunk
    if sample_format.endswith("p"):
        return np.ascontiguousarray(data)
    return np.ascontiguousarray(data.T).reshape(1, -1)


def decode(path: str | Path) -> tuple[Samples, int]:
    """Decode the first audio stream of a file completely.

    :param path: any file FFmpeg can read.
    :returns: ``(channels, count)`` float32 samples and the sample rate.
    """
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks: list[Samples] = []
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for planar in resampler.resample(frame):
                chunks.append(planar.to_ndarray().astype(np.float32, copy=False))
        channels = stream.codec_context.channels
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1), rate


def decoded_duration(path: str | Path) -> float:
    """Seconds of audio FFmpeg decodes from a file (priming already removed).

    Cheaper than :func:`decode`: counts samples without converting them.

    :param path: any file FFmpeg can read.
    :returns: decoded sample count divided by the sample rate.
    """
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        count = 0
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            count += frame.samples
            rate = frame.sample_rate
    return count / rate

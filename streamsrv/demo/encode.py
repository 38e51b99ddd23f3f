# -*- test-case-name: tests.test_demo -*-
"""Encode the demo library's float samples into audio files with PyAV.

:func:`encode` writes one untagged file in the container and codec a
:class:`~streamsrv.demo.tracks.Encoding` names.  It blocks for CPU work: the
demo library calls it in its own worker threads, before the reactor runs,
and it must never be called on the reactor thread nor write anywhere but the
path it is given.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt

from streamsrv.demo.synth import Samples
from streamsrv.demo.tracks import Encoding

__all__ = ["encode"]


def encode(path: Path, encoding: Encoding, samples: Samples, sample_rate: int) -> None:
    """Encode float samples into a file with PyAV.

    Frames are cut to the encoder's frame size and converted to the first
    sample format it takes from float, s16 and s32, so PyAV's own resampler
    never runs; the encoder is flushed at the end.

    :param path: the file to create or overwrite.
    :param encoding: container, codec and settings.
    :param samples: ``(channels, count)`` float32 within [-1, 1].
    :param sample_rate: samples per second.
    """
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w", format=encoding.container) as container:
        stream = container.add_stream(encoding.codec, rate=sample_rate, options=dict(encoding.options))
        assert isinstance(stream, av.AudioStream)
        context = stream.codec_context
        context.layout = layout
        supported = {f.name for f in context.codec.audio_formats or ()}
        sample_format = next(f for f in ("fltp", "flt", "s16p", "s16", "s32p", "s32") if f in supported)
        context.format = sample_format
        if encoding.bit_rate is not None:
            context.bit_rate = encoding.bit_rate
        if encoding.vbr_quality is not None:
            # PyAV converts to lambda units (FF_QP2LAMBDA) itself.
            context.qscale = True
            context.global_quality = encoding.vbr_quality
        context.open()
        frame_size = context.frame_size or _PCM_FRAME
        time_base = Fraction(1, sample_rate)
        for start in range(0, samples.shape[1], frame_size):
            chunk = _for_sample_format(samples[:, start : start + frame_size], sample_format)
            frame = av.AudioFrame.from_ndarray(chunk, sample_format, layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


#: Frames per call for encoders without a fixed frame size (PCM, FLAC).
_PCM_FRAME: Final[int] = 4096


def _for_sample_format(chunk: Samples, sample_format: str) -> npt.NDArray[Any]:
    """Convert planar float samples to what ``AudioFrame.from_ndarray`` takes.

    :param chunk: ``(channels, n)`` float32.
    :param sample_format: FFmpeg sample format name.
    :returns: planar ``(channels, n)`` or packed ``(1, channels * n)``.
    """
    data: npt.NDArray[Any]
    if sample_format.startswith("s16"):
        data = np.round(np.clip(chunk, -1.0, 1.0) * 32767.0).astype(np.int16)
    elif sample_format.startswith("s32"):
        scaled = np.clip(chunk, -1.0, 1.0).astype(np.float64) * 2147483647.0
        data = np.round(scaled).astype(np.int32)
    else:
        data = chunk
    if sample_format.endswith("p"):
        return np.ascontiguousarray(data)
    return np.ascontiguousarray(data.T).reshape(1, -1)

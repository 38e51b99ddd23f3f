# -*- test-case-name: tests.test_transcode_aac -*-
"""AAC-LC packets of a window of PCM from a fresh FFmpeg encoder, held to a byte budget.

Progressive M4A fragments (:mod:`streamsrv.transcode.encode`) and HLS
segments (:mod:`streamsrv.hls.segments`) both cut a track into runs of AAC
frames, each encoded by a fresh encoder from its own window of PCM, and both
promise a size before encoding (:func:`streamsrv.transcode.layout.aac_budget`):
an M4A fragment has a fixed budget (its ``free`` box fills the rest), an HLS
segment must stay under the playlist's ``BANDWIDTH``.

**Cold encoders, on purpose.**  A fresh FFmpeg encoder starts its rate
control at lambda 120 with a full bit reservoir, where the twoloop coder works
hardest: it spends most of a 4-6 s run there, at about 1.6 times a
long-running encoder's CPU per frame, and with a better SNR on music.  Feeding
it :data:`WARMUP_FRAMES` = 1 frame of digital silence first (its packet
dropped) sends lambda to its ceiling, and the first real frames bring it down
into the cheap regime a long-running encoder works in: the CPU of ``ffmpeg
-threads 1`` at the same bit rate (1.09x its instructions for HLS, 1.02x for
M4A, against 0.70x and 0.58x cold), but on music a lower quality than both
the cold segments and ffmpeg's own continuous encode (128k SNR: band render
18.51 warmed, 19.73 cold, 20.00 continuous; piano render 18.59, 23.98,
22.50).  Music quality comes first, so the default is cold
(``WARMUP_FRAMES = 0``, the bytes served since HLS ``FORMAT_VERSION`` 2);
``warmup=1`` is the measured CPU-parity option, for the benches
(``bench/hls.py`` and ``bench/transcode.py --compare-warm``).  Measured in
``docs/performance.md``, "AAC warm-up: measured, not adopted".  With a
warm-up the packets kept are aligned exactly as without it: the encoder's
priming packet covers the silent frame, and the packet after it (kept as
"packet 0") spans silence and the window's first frame just as a cold
encoder's priming packet does.

**Budget.**  FFmpeg's rate control holds a run of a few seconds within about
2 % of its target on music, noise and tones, but an encoder that meets loud
audio after silence (speech with pauses, a track starting quietly)
overshoots: its lambda has risen while the silence cost nothing.  So a run
whose packets overrun the budget is encoded again at lower bit rates, in turn
(:data:`RETRY_PERCENTS`); every attempt is deterministic, so the result is
still a pure function of the window.  Should nothing fit, the run is encoded
silence, whose frames take a few bytes each.

Blocking and CPU-heavy: worker-pool jobs only, never the reactor thread.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Final

import av
import numpy as np

from streamsrv.audio.decode import Samples

__all__ = [
    "FRAME",
    "PRIMING",
    "RETRY_PERCENTS",
    "WARMUP_FRAMES",
    "AacError",
    "encode_window",
    "packets_within",
]

#: Samples per AAC-LC frame.
FRAME: Final = 1024

#: FFmpeg's native AAC encoder delay (``initial_padding``): its first packet is priming.
PRIMING: Final = 1024

#: Frames of digital silence fed to a fresh encoder before its window, their
#: packets dropped (see the module docstring): 0, cold encoders, for their
#: quality on music; 1 is the measured option that matches ``ffmpeg``'s CPU.
#: Changing it changes every AAC segment and M4A fragment served: bump HLS
#: ``FORMAT_VERSION`` and give the M4A renditions' cache key a part for it.
WARMUP_FRAMES: Final = 0

#: Percentages of the bit rate tried, in turn, for a run that overruns its budget.
RETRY_PERCENTS: Final = (100, 85, 70, 50, 30)


class AacError(Exception):
    """The encoder did not behave as FFmpeg's native AAC encoder does (frame size, delay, count)."""


def packets_within(
    samples: Samples,
    rate: int,
    kbps: int,
    keep: tuple[int, int],
    limit: int,
    *,
    warmup: int = WARMUP_FRAMES,
) -> list[bytes]:
    """Packets ``[keep[0], keep[1])`` of a fresh encode of *samples*, together at most *limit* bytes.

    :param samples: planar float PCM (1 or 2 channels) at *rate*.
    :param kbps: the bit rate asked for; lower ones are tried if the packets overrun.
    :param keep: which packets of the encoder's output to return (packet 0 is
        priming), counted as for an encoder fed *samples* alone.
    :param warmup: frames of silence fed first, their packets not counted in
        *keep* (default :data:`WARMUP_FRAMES`, cold; 1 trades music quality for CPU).
    :raises AacError: when the encoder's frame size, delay or packet count is unexpected.
    """
    channels = samples.shape[0]
    if warmup:
        samples = np.concatenate([np.zeros((channels, warmup * FRAME), np.float32), samples], axis=1)
    first, end = keep[0] + warmup, keep[1] + warmup
    silence: Samples | None = None
    for percent in (*RETRY_PERCENTS, 0):
        if percent:
            packets = encode_window(samples, rate, channels, kbps * 10 * percent)
        else:
            silence = np.zeros_like(samples) if silence is None else silence
            packets = encode_window(silence, rate, channels, kbps * 1000)
        wanted = packets[first:end]
        if len(wanted) != end - first:
            raise AacError("the encoder produced too few frames")
        if sum(map(len, wanted)) <= limit:
            return wanted
    raise AacError("even silence does not fit the budget")


def encode_window(samples: Samples, rate: int, channels: int, bit_rate: int) -> list[bytes]:
    """Every packet of a fresh encoder fed *samples* as one frame, flushed (packet 0 is priming).

    :raises AacError: when the frame size or the delay is not FFmpeg's native encoder's.
    """
    context: Any = av.CodecContext.create("aac", "w")
    context.sample_rate = rate
    context.layout = "mono" if channels == 1 else "stereo"
    context.format = "fltp"
    context.bit_rate = bit_rate
    context.time_base = Fraction(1, rate)
    context.open()
    if context.frame_size != FRAME:
        raise AacError("unexpected AAC frame size")
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples), format="fltp", layout=context.layout.name
    )
    frame.sample_rate = rate
    frame.time_base = context.time_base
    frame.pts = 0
    packets: list[Any] = list(context.encode(frame))
    packets.extend(context.encode(None))
    if not packets or packets[0].pts != -PRIMING:
        raise AacError("unexpected AAC encoder delay")
    return [bytes(p) for p in packets]

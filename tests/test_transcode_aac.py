"""Tests for :mod:`streamsrv.transcode.aac`: fresh-encoder AAC runs held to a byte budget."""

from __future__ import annotations

import numpy as np
from twisted.trial import unittest

from streamsrv.transcode import aac
from streamsrv.transcode.layout import aac_budget

RATE = 44100


def phrases(seconds: float, channels: int = 2) -> np.ndarray:
    """Speech-like bursts: 0.6 s of loud harmonics and noise, then 0.4 s of digital silence."""
    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(3)
    voiced = sum(0.15 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 12))
    signal = (voiced + 0.2 * rng.standard_normal(t.size)) * ((t % 1.0) < 0.6)
    return np.vstack([signal] * channels).astype(np.float32)


class PacketsWithinTests(unittest.SynchronousTestCase):
    """The packets asked for, under the limit, deterministically."""

    def test_fits_first_time(self) -> None:
        """A run the encoder keeps near its target comes from the first attempt: the same
        packets as an encode at the asked bit rate with no limit."""
        samples = phrases(6.0)[:, : 130 * 1024]
        keep = (4, 124)
        relaxed = aac.packets_within(samples, RATE, 128, keep, 10**9)
        held = aac.packets_within(samples, RATE, 128, keep, aac_budget(120, 128, RATE))
        self.assertEqual(len(held), 120)
        self.assertEqual(held, relaxed)

    def test_overrun_retries_lower(self) -> None:
        """Bursts after silence at 32 kb/s mono overrun the budget at first; a lower bit rate
        fits, and the result is the same every time."""
        samples = phrases(6.0, channels=1)[:, : 178 * 1024]
        keep, count = (4, 176), 172
        limit = aac_budget(count, 32, RATE, slack=0)
        first_try = aac.packets_within(samples, RATE, 32, keep, 10**9)
        self.assertGreater(sum(map(len, first_try)), limit)  # the case this module exists for
        held = aac.packets_within(samples, RATE, 32, keep, limit)
        self.assertLessEqual(sum(map(len, held)), limit)
        self.assertEqual(len(held), count)
        self.assertEqual(aac.packets_within(samples, RATE, 32, keep, limit), held)

    def test_silence_last(self) -> None:
        """When no bit rate fits, the run is encoded silence of the same frame count."""
        samples = phrases(3.0)[:, : 60 * 1024]
        silent = aac.packets_within(np.zeros_like(samples), RATE, 128, (1, 55), 10**9)
        held = aac.packets_within(samples, RATE, 128, (1, 55), sum(map(len, silent)))
        self.assertEqual(held, silent)

    def test_too_few_frames(self) -> None:
        """Asking for packets past the encoder's output is an AacError, not a short run."""
        with self.assertRaises(aac.AacError):
            aac.packets_within(phrases(0.5), RATE, 96, (0, 100), 10**9)


def tones(seconds: float) -> np.ndarray:
    """Two steady tones, one per channel: easy to see misaligned."""
    t = np.arange(round(seconds * RATE)) / RATE
    return np.vstack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 997 * t)]).astype(
        np.float32
    )


def decode(packets: list[bytes]) -> np.ndarray:
    """PCM of AAC-LC packets (stereo, 44.1 kHz), the priming frame dropped."""
    import av

    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = bytes((0x12, 0x10))  # AAC-LC, 44.1 kHz, stereo
    frames = [f.to_ndarray() for p in packets for f in decoder.decode(av.Packet(p))]
    frames += [f.to_ndarray() for f in decoder.decode(None)]
    return np.concatenate(frames, axis=1)[:, aac.PRIMING :]


class WarmupTests(unittest.SynchronousTestCase):
    """The silent frame before the window (``warmup=1``, measured, not the default): its packet
    dropped, the rest where a cold encoder puts it."""

    def test_cold_by_default(self) -> None:
        """The served default is a cold encoder: the packets of an encoder fed the window alone
        (the bytes of HLS ``FORMAT_VERSION`` 2 and of M4A keys without a warm-up part)."""
        samples = tones(1.0)[:, : 40 * 1024]
        self.assertEqual(aac.WARMUP_FRAMES, 0)
        default = aac.packets_within(samples, RATE, 128, (0, 38), 10**9)
        self.assertEqual(default, aac.encode_window(samples, RATE, 2, 128000)[:38])
        self.assertEqual(default, aac.packets_within(samples, RATE, 128, (0, 38), 10**9, warmup=0))

    def test_is_a_silent_frame_fed_first(self) -> None:
        """With ``warmup=1`` the packets are those of an encoder fed one frame of silence, then
        the window, shifted by one packet (the silent frame's)."""
        samples = tones(1.0)[:, : 40 * 1024]
        warmed = aac.packets_within(samples, RATE, 128, (0, 38), 10**9, warmup=1)
        fed = np.concatenate([np.zeros((2, 1024), np.float32), samples], axis=1)
        self.assertEqual(warmed, aac.encode_window(fed, RATE, 2, 128000)[1:39])

    def test_aligned_as_cold(self) -> None:
        """Decoded, warmed packets line up with the window sample for sample, like a cold
        encoder's: packet 0 still plays the frame before the window, packet 1 its first frame."""
        samples = tones(1.0)[:, : 40 * 1024]
        for warmup in (0, 1):
            pcm = decode(aac.packets_within(samples, RATE, 128, (0, 39), 10**9, warmup=warmup))
            reference = samples[:, 2048 : 36 * 1024]
            error = pcm[:, 2048 : 36 * 1024] - reference
            self.assertLess(float(np.sqrt(np.mean(error**2))), 0.01, warmup)
            shifted = pcm[:, 2048 + 1 : 36 * 1024 + 1] - reference
            self.assertGreater(float(np.sqrt(np.mean(shifted**2))), 0.01, warmup)

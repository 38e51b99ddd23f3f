# -*- test-case-name: tests.test_demo -*-
"""The demo library's signal synthesis: short pieces of music and a rain recording, with numpy.

:func:`render_music` turns a :class:`~streamsrv.demo.tracks.Style` into pad
chords, a plucked arpeggio, bass and drums, panned in stereo;
:func:`render_rain` makes shaped noise in gusts with droplets.  Both are
deterministic for their seeds and peak at -1 dBFS.  :func:`peak_and_power`
measures a rendering for ReplayGain.  This module only computes arrays: it
must never touch the disk, encode or tag.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from streamsrv.demo.tracks import Style

__all__ = ["Samples", "peak_and_power", "render_music", "render_rain"]

#: Float samples, ``(channels, count)`` unless said otherwise.
Samples = npt.NDArray[np.float32]

#: Peak level every track is normalised to: -1 dBFS.
_PEAK: Final[float] = 10 ** (-1.0 / 20.0)

_CHORD_SHAPES: Final[dict[str, tuple[int, ...]]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dom7": (0, 4, 7, 10),
}

#: Seconds of fade at the start (against a click) and at most at the end.
_FADE_IN_S: Final[float] = 0.02
_FADE_OUT_S: Final[float] = 2.5


def _hz(midi: float) -> float:
    """Frequency of a MIDI note number in equal temperament (A4 = 440 Hz)."""
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _time(seconds: float, rate: int) -> npt.NDArray[np.float64]:
    """Sample times of a segment, from zero."""
    return np.arange(round(seconds * rate), dtype=np.float64) / rate


def _pluck(freq: float, rate: int, partials: int) -> Samples:
    """A plucked, decaying note: harmonics that die faster the higher they are.

    :param freq: fundamental in Hz.
    :param rate: sample rate.
    :param partials: number of harmonics.
    :returns: mono samples peaking near 1.
    """
    t = _time(0.9, rate)
    out = np.zeros_like(t)
    for k in range(1, partials + 1):
        if k * freq > 0.45 * rate:
            break
        out += np.sin(2 * np.pi * k * freq * t) * np.exp(-(3.0 + 2.0 * k) * t) / k**1.3
    out *= np.minimum(1.0, t / 0.004)
    return (out / np.abs(out).max()).astype(np.float32)


def _pad(freqs: Sequence[float], seconds: float, rate: int) -> Samples:
    """A soft sustained chord, slightly detuned between the channels.

    :param freqs: the chord's frequencies.
    :param seconds: how long it sounds, release included.
    :param rate: sample rate.
    :returns: ``(2, n)`` samples peaking near 1.
    """
    t = _time(seconds, rate)
    envelope = np.minimum(1.0, t / 0.5) * np.minimum(1.0, (seconds - t) / 0.6)
    sides = []
    for detune in (0.9985, 1.0015):
        side = np.zeros_like(t)
        for freq in freqs:
            phase = 2 * np.pi * freq * detune * t
            side += np.sin(phase) + 0.25 * np.sin(2 * phase)
        sides.append(side * envelope)
    out = np.vstack(sides)
    return (out / np.abs(out).max()).astype(np.float32)


def _bass(freq: float, rate: int) -> Samples:
    """A round bass note with a little second harmonic."""
    t = _time(0.6, rate)
    phase = 2 * np.pi * freq * t
    out = (np.sin(phase) + 0.3 * np.sin(2 * phase)) * np.exp(-4.0 * t)
    out *= np.minimum(1.0, t / 0.005)
    return (out / np.abs(out).max()).astype(np.float32)


def _kick(rate: int) -> Samples:
    """A kick drum: a sine swept down from 120 Hz to 45 Hz."""
    t = _time(0.35, rate)
    freq = 45.0 + 75.0 * np.exp(-30.0 * t)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return (np.sin(phase) * np.exp(-9.0 * t)).astype(np.float32)


def _snare(rate: int, rng: np.random.Generator) -> Samples:
    """A snare: a noise burst over a short 185 Hz body."""
    t = _time(0.25, rate)
    noise = rng.standard_normal(t.size) * np.exp(-22.0 * t)
    body = np.sin(2 * np.pi * 185.0 * t) * np.exp(-30.0 * t)
    out = 0.5 * noise / 3.0 + 0.5 * body
    return out.astype(np.float32)


def _hat(rate: int, rng: np.random.Generator) -> Samples:
    """A closed hi-hat: differentiated (high-passed) noise, very short."""
    t = _time(0.06, rate)
    noise = np.diff(rng.standard_normal(t.size + 1)) / 4.0
    return (noise * np.exp(-90.0 * t)).astype(np.float32)


def _pan(pan: float) -> tuple[float, float]:
    """Equal-power gains for a pan position from -1 (left) to 1 (right)."""
    angle = (pan + 1.0) * np.pi / 4.0
    return float(np.cos(angle)), float(np.sin(angle))


def _add(buffer: Samples, start: int, sound: Samples, gain: float, pan: float) -> None:
    """Mix a mono or stereo sound into a stereo buffer, cut at its end.

    :param buffer: ``(2, n)`` mix.
    :param start: first sample of the sound in the mix.
    :param sound: mono ``(n,)`` or stereo ``(2, n)`` samples.
    :param gain: linear gain.
    :param pan: -1 (left) to 1 (right); for stereo sounds a balance.
    """
    if start >= buffer.shape[1]:
        return
    length = min(sound.shape[-1], buffer.shape[1] - start)
    left, right = _pan(pan)
    if sound.ndim == 1:
        buffer[0, start : start + length] += gain * left * sound[:length]
        buffer[1, start : start + length] += gain * right * sound[:length]
    else:
        buffer[0, start : start + length] += gain * left * sound[0, :length]
        buffer[1, start : start + length] += gain * right * sound[1, :length]


@dataclass
class _Sounds:
    """Sounds rendered once per track and reused for every note."""

    rate: int
    partials: int
    rng: np.random.Generator
    plucks: dict[int, Samples] = field(default_factory=dict)
    basses: dict[int, Samples] = field(default_factory=dict)
    pads: dict[tuple[int, ...], Samples] = field(default_factory=dict)

    def pluck(self, midi: int) -> Samples:
        """The plucked arpeggio voice at a MIDI note."""
        if midi not in self.plucks:
            self.plucks[midi] = _pluck(_hz(midi), self.rate, self.partials)
        return self.plucks[midi]

    def bass(self, midi: int) -> Samples:
        """The bass voice at a MIDI note."""
        if midi not in self.basses:
            self.basses[midi] = _bass(_hz(midi), self.rate)
        return self.basses[midi]

    def pad(self, notes: tuple[int, ...], seconds: float) -> Samples:
        """A pad chord; ``seconds`` must be the same for every call."""
        if notes not in self.pads:
            freqs = [_hz(n) for n in notes]
            self.pads[notes] = _pad(freqs, seconds, self.rate)
        return self.pads[notes]


def _beats(style: Style, count: int, rate: int) -> Iterator[tuple[int, int, int]]:
    """Every beat that starts inside the track, four to a bar.

    :param style: the recipe (its tempo).
    :param count: samples in the track.
    :param rate: sample rate.
    :returns: ``(bar, beat in bar, first sample)`` triples.
    """
    beat_samples = 60.0 / style.bpm * rate
    beat = 0
    while (start := round(beat * beat_samples)) < count:
        yield beat // 4, beat % 4, start
        beat += 1


def render_music(style: Style, count: int, rate: int) -> Samples:
    """Synthesise a piece: pad chords, arpeggio, bass and drums.

    Deterministic for a given ``style``, ``count`` and ``rate``.

    :param style: the recipe.
    :param count: samples per channel.
    :param rate: sample rate.
    :returns: ``(2, count)`` float32 peaking at -1 dBFS, faded in and out.
    """
    rng = np.random.default_rng(style.seed)
    sounds = _Sounds(rate, style.partials, rng)
    beat_s = 60.0 / style.bpm
    beat_samples = beat_s * rate
    mix = np.zeros((2, count), dtype=np.float32)
    kick, snare, hat = _kick(rate), _snare(rate, rng), _hat(rate, rng)
    for bar, beat, start in _beats(style, count, rate):
        offset, quality = style.chords[bar % len(style.chords)]
        chord = [style.root + offset + step for step in _CHORD_SHAPES[quality]]
        if beat == 0:
            pad_notes = tuple(n - 12 for n in chord)
            _add(mix, start, sounds.pad(pad_notes, 4 * beat_s + 0.6), 0.22, 0.0)
        if beat in (0, 2):
            _add(mix, start, sounds.bass(style.root + offset - 24), 0.35, 0.0)
        for step in range(style.arp_per_beat):
            index = (bar * 4 + beat) * style.arp_per_beat + step
            tone = style.arp_pattern[index % len(style.arp_pattern)]
            midi = chord[tone % len(chord)] + 12 * (tone // len(chord))
            at = start + round(step * beat_samples / style.arp_per_beat)
            if step % 2 == 1:
                at += round(style.swing * beat_samples)
            velocity = 0.26 + 0.08 * rng.random()
            _add(mix, at, sounds.pluck(midi), velocity, 0.55 * (-1) ** index)
        _add_drums(mix, style, beat, start, beat_samples, (kick, snare, hat), rng)
    return _finish(mix, rate)


def _add_drums(
    mix: Samples,
    style: Style,
    beat: int,
    start: int,
    beat_samples: float,
    kit: tuple[Samples, Samples, Samples],
    rng: np.random.Generator,
) -> None:
    """Mix the drums of one beat.

    :param mix: the stereo mix.
    :param style: the recipe (its ``drums`` and ``swing``).
    :param beat: beat within the bar, 0 to 3.
    :param start: first sample of the beat.
    :param beat_samples: samples per beat.
    :param kit: kick, snare and hat sounds.
    :param rng: velocities.
    """
    kick, snare, hat = kit
    off_beat = start + round((0.5 + style.swing) * beat_samples)
    if style.drums == "soft":
        for at in (start, off_beat):
            _add(mix, at, hat, 0.22 + 0.08 * rng.random(), 0.4)
        return
    if style.drums == "four" or beat in (0, 2):
        _add(mix, start, kick, 0.45, 0.0)
    if beat in (1, 3):
        _add(mix, start, snare, 0.30, -0.1)
    for at in (start, off_beat):
        _add(mix, at, hat, 0.25 + 0.10 * rng.random(), 0.35)


def render_rain(count: int, rate: int, seed: int) -> Samples:
    """Synthesise rain: shaped noise in gusts, with droplets.

    :param count: samples.
    :param rate: sample rate.
    :param seed: seed of the noise.
    :returns: ``(1, count)`` float32 peaking at -1 dBFS, faded in and out.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    freqs = np.fft.rfftfreq(count, 1.0 / rate)
    # A broad hump around 1-4 kHz: rain on leaves, not white hiss.
    shape = (freqs / 800.0) / (1.0 + (freqs / 800.0) ** 2) ** 0.5
    shape /= 1.0 + (freqs / 5000.0) ** 2
    hiss = np.fft.irfft(spectrum * shape, n=count)
    knots = rng.random(int(count / rate * 2) + 2)
    gusts = 0.6 + 0.4 * np.interp(np.arange(count), np.linspace(0, count, knots.size), knots)
    out = hiss / np.abs(hiss).max() * gusts * 0.5
    drop = _time(0.012, rate)
    for at in rng.integers(0, count, size=int(count / rate * 30)):
        freq = rng.uniform(1500.0, 4500.0)
        sound = np.sin(2 * np.pi * freq * drop) * np.exp(-400.0 * drop)
        end = min(count, at + drop.size)
        out[at:end] += rng.uniform(0.1, 0.5) * sound[: end - at]
    return _finish(out[np.newaxis, :].astype(np.float32), rate)


def _finish(mix: Samples, rate: int) -> Samples:
    """Fade in and out, and normalise the peak to -1 dBFS."""
    count = mix.shape[1]
    fade_in = min(count, round(_FADE_IN_S * rate))
    fade_out = min(count, round(min(_FADE_OUT_S, count / rate / 4) * rate))
    mix[:, :fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    if fade_out:
        mix[:, count - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    peak = max(float(mix.max()), -float(mix.min()))
    if peak > 0.0:
        mix *= np.float32(_PEAK / peak)
    return mix


def peak_and_power(samples: Samples) -> tuple[float, float]:
    """Peak and mean power (summed over channels) without big temporaries.

    :param samples: ``(channels, count)`` float32.
    :returns: the absolute peak and the per-sample power summed over channels.
    """
    peak = max(float(samples.max()), -float(samples.min()))
    energy = 0.0
    for start in range(0, samples.shape[1], _STATS_BLOCK):
        block = samples[:, start : start + _STATS_BLOCK].astype(np.float64)
        energy += float(np.einsum("ij,ij->", block, block))
    return peak, energy / max(1, samples.shape[1])


#: Samples per channel measured at once by :func:`peak_and_power`.
_STATS_BLOCK: Final[int] = 1 << 16

# -*- test-case-name: tests.test_demo -*-
"""The generated demo library a development server starts with.

With no media of its own, a development server serves this library, so that a
first ``twistd -n streamsrv`` has real tracks to stream, tag, draw and seek:
seven short pieces synthesised with numpy (chords, arpeggios, bass, drums,
stereo panning, one field recording of rain) from fixed seeds, encoded with
PyAV into MP3 (CBR and VBR), FLAC, Ogg Vorbis, Ogg Opus, AAC in M4A and WAV,
tagged with mutagen (title, artists, album, track and disc numbers, genre,
year; ReplayGain on one album; embedded PNG covers in MP3, FLAC, Vorbis and
M4A; a ``cover.png`` beside one album).  Paths hold spaces and one non-ASCII
name so that URL encoding is exercised.

:func:`ensure_demo_library` generates it once: into a temporary directory
beside the destination, with :data:`DEMO_MARKER` written last, then renamed
into place, so an interrupted run never leaves a half library where the
server looks.  It blocks for a few seconds of CPU work: call it before the
reactor runs or in a thread, never on the reactor thread.  It must never
write outside the destination's parent directory, never delete a directory
it did not make (one without the marker that holds anything but demo files is
refused), and never serve production (start-up refuses the demo library
there).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Final, cast

import av
import numpy as np
import numpy.typing as npt
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    ID3,
    TALB,
    TCON,
    TDRC,
    TIT2,
    TPE1,
    TPE2,
    TPOS,
    TRCK,
    TXXX,
)
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from twisted.logger import Logger

from streamsrv.audio.formats import audio_format_for

log = Logger()

#: Name of the file written last inside a complete demo library.
DEMO_MARKER: Final[str] = ".streamsrv-demo"

#: Bumped whenever the generated content changes (recorded in the marker).
DEMO_VERSION: Final[int] = 1

#: Prefix of the temporary directories generation works in, beside ``dest``.
_PARTIAL_PREFIX: Final[str] = ".streamsrv-demo-partial-"

#: Partial directories older than this are leftovers of a crashed run.
STALE_PARTIAL_S: Final[float] = 600.0

#: Threads encoding tracks at once (PyAV releases the GIL while encoding).
_MAX_WORKERS: Final[int] = 4

#: Peak level every track is normalised to: -1 dBFS.
_PEAK: Final[float] = 10 ** (-1.0 / 20.0)

#: ReplayGain 2.0 reference loudness, in LUFS.
_REPLAYGAIN_REFERENCE: Final[float] = -18.0

#: Side of the generated square cover images, in pixels.
COVER_SIZE: Final[int] = 96

Samples = npt.NDArray[np.float32]


# --------------------------------------------------------------------------
# What the library holds


@dataclass(frozen=True)
class Encoding:
    """How a track is encoded.

    :param container: FFmpeg muxer name.
    :param codec: FFmpeg encoder name.
    :param bit_rate: constant target in bits per second, or ``None``.
    :param vbr_quality: LAME ``-V`` quality for VBR MP3, or ``None``.
    :param frame_align: round the sample count up to a multiple of this, so
        the last codec frame carries no padding (AAC decoders play it whole).
    :param options: extra encoder options as ``(name, value)`` pairs.
    """

    container: str
    codec: str
    bit_rate: int | None = None
    vbr_quality: int | None = None
    frame_align: int = 1
    options: tuple[tuple[str, str], ...] = ()


#: LAME's faster search (``-q 7``): about twice as fast as its default, and
#: plenty for synthesised demo material.
_LAME_FAST: Final = (("compression_level", "7"),)

MP3_CBR_192: Final = Encoding("mp3", "libmp3lame", bit_rate=192_000, options=_LAME_FAST)
#: LAME ``-V 5``: about 100 kb/s here.
MP3_VBR: Final = Encoding("mp3", "libmp3lame", vbr_quality=5, options=_LAME_FAST)
FLAC_16: Final = Encoding("flac", "flac")
#: FFmpeg's own Vorbis encoder (libvorbis is not in PyAV's wheel): stereo only.
OGG_VORBIS: Final = Encoding("ogg", "vorbis", options=(("strict", "experimental"),))
#: Constrained VBR: unconstrained libopus overshoots 96 kb/s by half on this
#: material, and the catalog reports the nominal rate.
OGG_OPUS: Final = Encoding("ogg", "libopus", bit_rate=96_000, options=(("vbr", "constrained"),))
M4A_AAC: Final = Encoding("ipod", "aac", bit_rate=128_000, frame_align=1024)
WAV_S16: Final = Encoding("wav", "pcm_s16le")


@dataclass(frozen=True)
class Tags:
    """What a demo track is tagged with.

    :param title: track title.
    :param artist: track artist.
    :param album: album title.
    :param album_artist: album artist.
    :param track_number: position on the disc, from 1.
    :param track_total: tracks on the disc.
    :param disc_number: disc number, from 1.
    :param disc_total: discs in the album.
    :param genre: genre name.
    :param year: release year.
    """

    title: str
    artist: str
    album: str
    album_artist: str
    track_number: int
    track_total: int
    disc_number: int = 1
    disc_total: int = 1
    genre: str = "Electronic"
    year: int = 2024


@dataclass(frozen=True)
class Style:
    """A recipe for a short piece of music.

    :param root: MIDI note of the key's tonic (60 is middle C).
    :param chords: one chord per bar, cycled: ``(semitones above root,
        quality)`` with quality a key of ``_CHORD_SHAPES``.
    :param bpm: tempo in quarter notes per minute.
    :param arp_per_beat: arpeggio notes per beat (0 for none).
    :param arp_pattern: indices into the chord's tones (wrapping up an octave).
    :param partials: harmonics in the plucked arpeggio voice (its brightness).
    :param drums: ``"soft"`` (shaker only), ``"backbeat"`` (kick on 1
        and 3, snare on 2 and 4, hats) or ``"four"`` (kick on every beat).
    :param swing: delay of every off-beat eighth, as a fraction of a beat.
    :param seed: seed of every random choice (velocities, noise).
    """

    root: int
    chords: tuple[tuple[int, str], ...]
    bpm: float
    arp_per_beat: int = 2
    arp_pattern: tuple[int, ...] = (0, 1, 2, 3)
    partials: int = 5
    drums: str = "backbeat"
    swing: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class DemoTrack:
    """One track of the demo library.

    :param path: ``/``-separated path below the library root (NFC).
    :param encoding: how it is encoded.
    :param seconds: intended duration (the AAC track rounds up to whole
        1024-sample frames, at most 23 ms more).
    :param tags: its tags.
    :param style: its music, or ``None`` for the rain recording.
    :param sample_rate: samples per second.
    :param channels: 1 or 2.
    :param cover: RGB of the embedded cover, or ``None`` for no artwork.
    :param replaygain: whether ReplayGain tags are written.
    """

    path: str
    encoding: Encoding
    seconds: float
    tags: Tags
    style: Style | None
    sample_rate: int = 44100
    channels: int = 2
    cover: tuple[int, int, int] | None = None
    replaygain: bool = False

    @property
    def sample_count(self) -> int:
        """Samples per channel the track is rendered with."""
        count = round(self.seconds * self.sample_rate)
        align = self.encoding.frame_align
        return -(-count // align) * align


_FIRST_LIGHT = "Demo Artist/First Light"
_NIGHT_DRIVE = "Another Artist/Night Drive"
_SUNRISE_COVER = (236, 150, 64)
_NIGHT_COVER = (40, 52, 120)


def _first_light(number: int, title: str) -> Tags:
    """Tags of a track of the album *First Light*."""
    return Tags(title, "Demo Artist", "First Light", "Demo Artist", number, 3, genre="Ambient", year=2023)


def _night_drive(number: int, title: str) -> Tags:
    """Tags of a track of the album *Night Drive*."""
    return Tags(
        title, "Another Artist", "Night Drive", "Another Artist", number, 3, genre="Synthwave", year=2024
    )


#: Every track of the demo library, in album order.
DEMO_TRACKS: Final[tuple[DemoTrack, ...]] = (
    DemoTrack(
        f"{_FIRST_LIGHT}/01 - Sunrise.mp3",
        MP3_CBR_192,
        30.0,
        _first_light(1, "Sunrise"),
        Style(
            60,
            ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
            96,
            arp_pattern=(0, 1, 2, 3, 2, 1),
            partials=6,
            seed=1,
        ),
        cover=_SUNRISE_COVER,
        replaygain=True,
    ),
    DemoTrack(
        f"{_FIRST_LIGHT}/02 - Tide.flac",
        FLAC_16,
        45.0,
        _first_light(2, "Tide"),
        Style(
            57,
            ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")),
            72,
            arp_per_beat=1,
            arp_pattern=(0, 2, 1, 3),
            partials=3,
            drums="soft",
            seed=2,
        ),
        cover=_SUNRISE_COVER,
        replaygain=True,
    ),
    # Three minutes of VBR MP3, for seeking; "Café" spelled in NFC.
    DemoTrack(
        f"{_FIRST_LIGHT}/03 - Caf\u00e9.mp3",
        MP3_VBR,
        180.0,
        _first_light(3, "Caf\u00e9"),
        Style(
            65,
            ((2, "min7"), (7, "dom7"), (0, "maj7"), (9, "min7")),
            110,
            arp_pattern=(0, 2, 3, 1, 2, 0, 3, 2),
            partials=4,
            swing=0.12,
            seed=3,
        ),
        replaygain=True,
    ),
    DemoTrack(
        f"{_NIGHT_DRIVE}/01 - Neon.ogg",
        OGG_VORBIS,
        20.0,
        _night_drive(1, "Neon"),
        Style(
            64,
            ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")),
            120,
            arp_per_beat=4,
            arp_pattern=(0, 1, 2, 1),
            partials=8,
            drums="four",
            seed=4,
        ),
        cover=_NIGHT_COVER,
    ),
    DemoTrack(
        f"{_NIGHT_DRIVE}/02 - Overpass.opus",
        OGG_OPUS,
        60.0,
        _night_drive(2, "Overpass"),
        Style(
            62,
            ((0, "min"), (5, "min"), (10, "maj"), (3, "maj")),
            100,
            arp_pattern=(0, 2, 1, 2, 3, 2, 1, 2),
            partials=6,
            seed=5,
        ),
        sample_rate=48000,
    ),
    DemoTrack(
        f"{_NIGHT_DRIVE}/03 - Exit.m4a",
        M4A_AAC,
        25.0,
        _night_drive(3, "Exit"),
        Style(
            67,
            ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
            128,
            arp_per_beat=4,
            arp_pattern=(0, 1, 2, 3),
            partials=7,
            drums="four",
            seed=6,
        ),
        cover=_NIGHT_COVER,
    ),
    DemoTrack(
        "Field Recordings/Rain.wav",
        WAV_S16,
        10.0,
        Tags(
            "Rain",
            "Field Recordings",
            "Field Recordings",
            "Field Recordings",
            1,
            1,
            genre="Field Recording",
            year=2021,
        ),
        None,
        sample_rate=22050,
        channels=1,
    ),
)

#: Album directory that also gets a ``cover.png``, and that cover's colour.
COVER_FILE: Final[str] = f"{_FIRST_LIGHT}/cover.png"


# --------------------------------------------------------------------------
# Generation


def ensure_demo_library(dest: Path) -> list[Path]:
    """Make sure a complete demo library exists at ``dest``.

    Blocks for a few seconds when it has to generate; returns at once when
    ``dest`` already holds a complete library.

    :param dest: the library directory; its parent is created if needed and
        must be writable.
    :returns: the paths of the library's tracks.
    :raises FileExistsError: when ``dest`` exists without :data:`DEMO_MARKER`
        and holds something the demo generator would not have written.
    """
    marker = dest / DEMO_MARKER
    if marker.is_file():
        return _existing_tracks(dest)
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest.parent)
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=dest.parent))
    try:
        generate_demo_library(partial)
        _install(partial, dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "generated the demo library in {dest} ({elapsed:.1f} s)",
        dest=str(dest),
        elapsed=time.monotonic() - started,
    )
    return _existing_tracks(dest)


def generate_demo_library(root: Path) -> list[Path]:
    """Write every demo track, the loose cover and then the marker into
    ``root``.

    Unlike :func:`ensure_demo_library` this writes in place, non-atomically.

    :param root: an existing, preferably empty, directory.
    :returns: the track paths, in :data:`DEMO_TRACKS` order.
    """
    paths = [root / PurePosixPath(track.path) for track in DEMO_TRACKS]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    # Longest first, so the three-minute track does not start last.
    order = sorted(range(len(DEMO_TRACKS)), key=lambda i: -DEMO_TRACKS[i].sample_count)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {i: pool.submit(_render_and_encode, DEMO_TRACKS[i], paths[i]) for i in order}
        try:
            loudness = {i: futures[i].result() for i in order}
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
    albums = _album_loudness(loudness)
    for i, (track, path) in enumerate(zip(DEMO_TRACKS, paths, strict=True)):
        gains = None
        if track.replaygain:
            peak, power = loudness[i]
            album_peak, album_power = albums[track.tags.album]
            gains = _ReplayGain(
                track_gain=_gain_db(power),
                track_peak=peak,
                album_gain=_gain_db(album_power),
                album_peak=album_peak,
            )
        _TAGGERS[track.encoding.container](path, track, gains)
    (root / PurePosixPath(COVER_FILE)).write_bytes(cover_png(_SUNRISE_COVER))
    manifest = {
        "version": DEMO_VERSION,
        "tracks": [track.path for track in DEMO_TRACKS],
    }
    (root / DEMO_MARKER).write_text(json.dumps(manifest, indent=1) + "\n")
    return paths


def _existing_tracks(dest: Path) -> list[Path]:
    """The tracks of a complete library, as its marker lists them.

    :param dest: a directory holding :data:`DEMO_MARKER`.
    :returns: the listed tracks that exist; every audio file below ``dest``
        when the marker cannot be read.
    """
    try:
        manifest = json.loads((dest / DEMO_MARKER).read_text())
        listed = [dest / PurePosixPath(p) for p in manifest["tracks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(p for p in dest.rglob("*") if p.is_file() and audio_format_for(p) is not None)
    return [p for p in listed if p.is_file()]


def _demo_file_names() -> frozenset[PurePosixPath]:
    """Every file and directory a demo library may contain."""
    names = {PurePosixPath(DEMO_MARKER), PurePosixPath(COVER_FILE)}
    for track in DEMO_TRACKS:
        names.add(PurePosixPath(track.path))
    for name in list(names):
        names.update(name.parents)
    names.discard(PurePosixPath("."))
    return frozenset(names)


def _check_replaceable(dest: Path) -> None:
    """Refuse to replace a directory that is not a (partial) demo library.

    :param dest: the library directory, which may not exist.
    :raises FileExistsError: when ``dest`` is not a directory, or holds a
        file the demo generator does not write.
    """
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise FileExistsError(f"{dest} exists and is not a demo library")
    allowed = _demo_file_names()
    for found in dest.rglob("*"):
        if PurePosixPath(found.relative_to(dest).as_posix()) not in allowed:
            raise FileExistsError(
                f"{dest} has no {DEMO_MARKER} and holds other files; refusing to replace it"
            )


def _remove_stale_partials(parent: Path) -> None:
    """Delete partial directories that crashed runs left behind.

    Only those older than :data:`STALE_PARTIAL_S`: a younger one may belong
    to another process generating right now.

    :param parent: the directory libraries are generated in.
    """
    now = time.time()
    for partial in parent.glob(_PARTIAL_PREFIX + "*"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            continue


def _install(partial: Path, dest: Path) -> None:
    """Move a complete library into place.

    :param partial: the generated library, marker included.
    :param dest: where it goes; if it exists it is an incomplete library
        (checked by :func:`_check_replaceable`) and is replaced, unless
        another process installed a complete one meanwhile, which wins.
    """
    try:
        os.rename(partial, dest)
        return
    except OSError:
        if (dest / DEMO_MARKER).is_file():
            return  # another process finished first; keep its library
        if not dest.exists():
            raise
    # An incomplete library: set it aside, move ours in, then delete it.
    aside = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=dest.parent))
    try:
        os.rename(dest, aside / "old")
        os.rename(partial, dest)
    except OSError:
        if not (dest / DEMO_MARKER).is_file():
            raise
        # another process installed its library between the two renames
    finally:
        shutil.rmtree(aside, ignore_errors=True)


# --------------------------------------------------------------------------
# Rendering and encoding


def _render_and_encode(track: DemoTrack, path: Path) -> tuple[float, float]:
    """Synthesise one track and write it, untagged.

    :param track: what to make.
    :param path: the file to write.
    :returns: the rendered peak and mean power (for ReplayGain).
    """
    if track.style is None:
        samples = render_rain(track.sample_count, track.sample_rate, seed=7)
    else:
        samples = render_music(track.style, track.sample_count, track.sample_rate)
    if track.channels == 1 and samples.shape[0] != 1:
        samples = samples.mean(axis=0, keepdims=True)
    peak, power = _peak_and_power(samples)
    encode(path, track.encoding, samples, track.sample_rate)
    return peak, power


def _peak_and_power(samples: Samples) -> tuple[float, float]:
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


#: Samples per channel measured at once by :func:`_peak_and_power`.
_STATS_BLOCK: Final[int] = 1 << 16


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


# --------------------------------------------------------------------------
# Synthesis

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


# --------------------------------------------------------------------------
# Tags


@dataclass(frozen=True)
class _ReplayGain:
    """ReplayGain values of a track and its album."""

    track_gain: float
    track_peak: float
    album_gain: float
    album_peak: float

    def as_text(self) -> dict[str, str]:
        """The four values in the customary text forms, keyed lowercase."""
        return {
            "replaygain_track_gain": f"{self.track_gain:.2f} dB",
            "replaygain_track_peak": f"{self.track_peak:.6f}",
            "replaygain_album_gain": f"{self.album_gain:.2f} dB",
            "replaygain_album_peak": f"{self.album_peak:.6f}",
        }


def _gain_db(power: float) -> float:
    """ReplayGain 2.0 style gain for a mean power (sum over channels).

    An approximation (BS.1770 loudness without its K-weighting filter and
    gating), good enough for demo tags; not a ReplayGain scanner.

    :param power: mean power per sample, summed over channels.
    :returns: gain in dB towards -18 LUFS.
    """
    loudness = -0.691 + 10.0 * np.log10(max(power, 1e-12))
    return float(_REPLAYGAIN_REFERENCE - loudness)


def _album_loudness(
    per_track: dict[int, tuple[float, float]],
) -> dict[str, tuple[float, float]]:
    """Peak and mean power of each album, weighting tracks by length.

    :param per_track: peak and power by index into :data:`DEMO_TRACKS`.
    :returns: peak and power by album title (ReplayGain albums only).
    """
    sums: dict[str, tuple[float, float, int]] = {}
    for i, (peak, power) in per_track.items():
        track = DEMO_TRACKS[i]
        if not track.replaygain:
            continue
        old_peak, energy, count = sums.get(track.tags.album, (0.0, 0.0, 0))
        sums[track.tags.album] = (
            max(old_peak, peak),
            energy + power * track.sample_count,
            count + track.sample_count,
        )
    return {album: (p, e / c) for album, (p, e, c) in sums.items()}


def _vorbis_comments(track: DemoTrack, gains: _ReplayGain | None) -> dict[str, str]:
    """Vorbis comments (FLAC, Ogg Vorbis, Ogg Opus) for a track."""
    tags = track.tags
    comments = {
        "TITLE": tags.title,
        "ARTIST": tags.artist,
        "ALBUM": tags.album,
        "ALBUMARTIST": tags.album_artist,
        "TRACKNUMBER": str(tags.track_number),
        "TRACKTOTAL": str(tags.track_total),
        "DISCNUMBER": str(tags.disc_number),
        "DISCTOTAL": str(tags.disc_total),
        "GENRE": tags.genre,
        "DATE": str(tags.year),
    }
    if gains is not None:
        comments.update({k.upper(): v for k, v in gains.as_text().items()})
    return comments


def _picture(rgb: tuple[int, int, int]) -> Picture:
    """A FLAC/Vorbis front-cover picture block."""
    picture = Picture()
    picture.type = 3  # front cover
    picture.mime = "image/png"
    picture.desc = "Cover"
    picture.width = picture.height = COVER_SIZE
    picture.depth = 24
    picture.data = cover_png(rgb)
    return picture


def _tag_mp3(path: Path, track: DemoTrack, gains: _ReplayGain | None) -> None:
    """Write ID3v2.4 tags (and APIC cover) into an MP3."""
    audio = MP3(path)
    if audio.tags is None:
        audio.add_tags()
    tags = cast(ID3, audio.tags)
    t = track.tags
    tags.add(TIT2(encoding=3, text=t.title))
    tags.add(TPE1(encoding=3, text=t.artist))
    tags.add(TALB(encoding=3, text=t.album))
    tags.add(TPE2(encoding=3, text=t.album_artist))
    tags.add(TRCK(encoding=3, text=f"{t.track_number}/{t.track_total}"))
    tags.add(TPOS(encoding=3, text=f"{t.disc_number}/{t.disc_total}"))
    tags.add(TCON(encoding=3, text=t.genre))
    tags.add(TDRC(encoding=3, text=str(t.year)))
    if gains is not None:
        for key, value in gains.as_text().items():
            tags.add(TXXX(encoding=3, desc=key.upper(), text=value))
    if track.cover is not None:
        tags.add(
            APIC(
                encoding=3,
                mime="image/png",
                type=3,
                desc="Cover",
                data=cover_png(track.cover),
            )
        )
    audio.save()


def _tag_flac(path: Path, track: DemoTrack, gains: _ReplayGain | None) -> None:
    """Write Vorbis comments (and a picture block) into a FLAC file."""
    audio = FLAC(path)
    audio.clear()
    audio.update(_vorbis_comments(track, gains))
    if track.cover is not None:
        audio.add_picture(_picture(track.cover))
    audio.save()


def _tag_ogg(path: Path, track: DemoTrack, gains: _ReplayGain | None) -> None:
    """Write Vorbis comments (and a picture) into an Ogg Vorbis/Opus file."""
    audio: OggVorbis | OggOpus
    if track.encoding.codec == "libopus":
        audio = OggOpus(path)
    else:
        audio = OggVorbis(path)
    audio.clear()
    audio.update(_vorbis_comments(track, gains))
    if track.cover is not None:
        block = base64.b64encode(_picture(track.cover).write()).decode("ascii")
        audio["METADATA_BLOCK_PICTURE"] = [block]
    audio.save()


def _tag_mp4(path: Path, track: DemoTrack, gains: _ReplayGain | None) -> None:
    """Write iTunes-style atoms (and ``covr``) into an M4A file."""
    audio = MP4(path)
    t = track.tags
    audio["\xa9nam"] = [t.title]
    audio["\xa9ART"] = [t.artist]
    audio["\xa9alb"] = [t.album]
    audio["aART"] = [t.album_artist]
    audio["trkn"] = [(t.track_number, t.track_total)]
    audio["disk"] = [(t.disc_number, t.disc_total)]
    audio["\xa9gen"] = [t.genre]
    audio["\xa9day"] = [str(t.year)]
    if gains is not None:
        for key, value in gains.as_text().items():
            name = f"----:com.apple.iTunes:{key}"
            audio[name] = [MP4FreeForm(value.encode("ascii"))]
    if track.cover is not None:
        audio["covr"] = [MP4Cover(cover_png(track.cover), MP4Cover.FORMAT_PNG)]
    audio.save()


def _tag_wav(path: Path, track: DemoTrack, gains: _ReplayGain | None) -> None:
    """Write an ID3 chunk into a WAV file."""
    audio = WAVE(path)
    if audio.tags is None:
        audio.add_tags()
    tags = cast(ID3, audio.tags)
    t = track.tags
    tags.add(TIT2(encoding=3, text=t.title))
    tags.add(TPE1(encoding=3, text=t.artist))
    tags.add(TALB(encoding=3, text=t.album))
    tags.add(TPE2(encoding=3, text=t.album_artist))
    tags.add(TRCK(encoding=3, text=f"{t.track_number}/{t.track_total}"))
    tags.add(TCON(encoding=3, text=t.genre))
    tags.add(TDRC(encoding=3, text=str(t.year)))
    audio.save()


#: The tagger for each container.
_TAGGERS: Final[dict[str, Callable[[Path, DemoTrack, _ReplayGain | None], None]]] = {
    "mp3": _tag_mp3,
    "flac": _tag_flac,
    "ogg": _tag_ogg,
    "ipod": _tag_mp4,
    "wav": _tag_wav,
}


# --------------------------------------------------------------------------
# Cover images


def cover_png(rgb: tuple[int, int, int], size: int = COVER_SIZE) -> bytes:
    """A small square PNG: a vertical gradient of ``rgb`` with a pale disc.

    Built with zlib and struct only (no imaging library).

    :param rgb: the base colour.
    :param size: width and height in pixels.
    :returns: the PNG file's bytes.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / max(1, size - 1)
    base = np.asarray(rgb, dtype=np.float64)
    shade = (0.55 + 0.45 * (1.0 - y))[..., np.newaxis]
    image = base * shade
    disc = (x - 0.5) ** 2 + (y - 0.62) ** 2 < 0.22**2
    image[disc] = 0.35 * image[disc] + 0.65 * 255.0
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    rows = np.concatenate(
        [np.zeros((size, 1), dtype=np.uint8), pixels.reshape(size, size * 3)],
        axis=1,
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )

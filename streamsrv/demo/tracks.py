# -*- test-case-name: tests.test_demo -*-
"""What the demo library holds: its tracks, their encodings, tags and musical recipes.

Pure data: :data:`DEMO_TRACKS` lists seven short pieces (chords, arpeggios,
bass, drums, stereo panning, one field recording of rain) with fixed seeds,
encoded as MP3 (CBR and VBR), FLAC, Ogg Vorbis, Ogg Opus, AAC in M4A and WAV,
tagged with title, artists, album, track and disc numbers, genre and year
(ReplayGain on one album; embedded PNG covers in MP3, FLAC, Vorbis and M4A; a
``cover.png`` beside one album).  Paths hold spaces and one non-ASCII name so
that URL encoding is exercised.  This module must never render, encode or
write anything: :mod:`streamsrv.demo.library` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "COVER_FILE",
    "DEMO_TRACKS",
    "FLAC_16",
    "M4A_AAC",
    "MP3_CBR_192",
    "MP3_VBR",
    "OGG_OPUS",
    "OGG_VORBIS",
    "SUNRISE_COVER",
    "WAV_S16",
    "DemoTrack",
    "Encoding",
    "Style",
    "Tags",
]


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


@dataclass(frozen=True)
class _Album:
    """An album of the demo library: the tags its tracks share, and where they go.

    :param artist: the artist and album artist (its directory).
    :param title: the album title (the directory below).
    :param tracks: tracks on its one disc.
    :param genre: genre name.
    :param year: release year.
    """

    artist: str
    title: str
    tracks: int
    genre: str
    year: int

    def track(
        self,
        number: int,
        title: str,
        suffix: str,
        encoding: Encoding,
        seconds: float,
        style: Style,
        *,
        cover: tuple[int, int, int] | None = None,
        replaygain: bool = False,
        sample_rate: int = 44100,
    ) -> DemoTrack:
        """Track ``number``, at ``<artist>/<album>/<NN> - <title><suffix>``; see :class:`DemoTrack`."""
        tags = Tags(
            title, self.artist, self.title, self.artist, number, self.tracks, genre=self.genre, year=self.year
        )
        path = f"{self.artist}/{self.title}/{number:02d} - {title}{suffix}"
        return DemoTrack(
            path, encoding, seconds, tags, style, sample_rate=sample_rate, cover=cover, replaygain=replaygain
        )


_FIRST_LIGHT: Final = _Album("Demo Artist", "First Light", 3, "Ambient", 2023)
_NIGHT_DRIVE: Final = _Album("Another Artist", "Night Drive", 3, "Synthwave", 2024)

#: RGB of the covers of each album.
SUNRISE_COVER: Final = (236, 150, 64)
_NIGHT_COVER: Final = (40, 52, 120)

#: A minor-key progression two pieces share: i, VI, III, VII.
_MINOR_CHORDS: Final = ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj"))

#: Every track of the demo library, in album order.
DEMO_TRACKS: Final[tuple[DemoTrack, ...]] = (
    _FIRST_LIGHT.track(
        1,
        "Sunrise",
        ".mp3",
        MP3_CBR_192,
        30.0,
        Style(
            60,
            ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
            96,
            arp_pattern=(0, 1, 2, 3, 2, 1),
            partials=6,
            seed=1,
        ),
        cover=SUNRISE_COVER,
        replaygain=True,
    ),
    _FIRST_LIGHT.track(
        2,
        "Tide",
        ".flac",
        FLAC_16,
        45.0,
        Style(
            57, _MINOR_CHORDS, 72, arp_per_beat=1, arp_pattern=(0, 2, 1, 3), partials=3, drums="soft", seed=2
        ),
        cover=SUNRISE_COVER,
        replaygain=True,
    ),
    # Three minutes of VBR MP3, for seeking; "Café" spelled in NFC.
    _FIRST_LIGHT.track(
        3,
        "Caf\u00e9",
        ".mp3",
        MP3_VBR,
        180.0,
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
    _NIGHT_DRIVE.track(
        1,
        "Neon",
        ".ogg",
        OGG_VORBIS,
        20.0,
        Style(
            64, _MINOR_CHORDS, 120, arp_per_beat=4, arp_pattern=(0, 1, 2, 1), partials=8, drums="four", seed=4
        ),
        cover=_NIGHT_COVER,
    ),
    _NIGHT_DRIVE.track(
        2,
        "Overpass",
        ".opus",
        OGG_OPUS,
        60.0,
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
    _NIGHT_DRIVE.track(
        3,
        "Exit",
        ".m4a",
        M4A_AAC,
        25.0,
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

#: The loose cover image beside the first album (its colour is :data:`SUNRISE_COVER`).
COVER_FILE: Final[str] = "Demo Artist/First Light/cover.png"

# -*- test-case-name: tests.test_demo -*-
"""Tag the demo library's files with mutagen: text tags, ReplayGain, embedded covers.

:func:`tag_track` writes a :class:`~streamsrv.demo.tracks.DemoTrack`'s tags
in the form of its container (ID3v2.4 in MP3 and WAV, Vorbis comments in
FLAC and Ogg, iTunes atoms in M4A); :func:`replay_gains` estimates the
ReplayGain values of the albums that carry them from the rendered signals.
It writes only into the file it is given, blocking: never call it on the
reactor thread.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import numpy as np
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

from streamsrv.demo.cover import COVER_SIZE, cover_png
from streamsrv.demo.tracks import DemoTrack

__all__ = ["ReplayGain", "replay_gains", "tag_track"]

#: ReplayGain 2.0 reference loudness, in LUFS.
_REPLAYGAIN_REFERENCE: Final[float] = -18.0


# --------------------------------------------------------------------------
# ReplayGain


@dataclass(frozen=True)
class ReplayGain:
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
    tracks: Sequence[DemoTrack], per_track: Mapping[int, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """Peak and mean power of each album, weighting tracks by length.

    :param tracks: the tracks.
    :param per_track: peak and power by index into ``tracks``.
    :returns: peak and power by album title (ReplayGain albums only).
    """
    sums: dict[str, tuple[float, float, int]] = {}
    for i, (peak, power) in per_track.items():
        track = tracks[i]
        if not track.replaygain:
            continue
        old_peak, energy, count = sums.get(track.tags.album, (0.0, 0.0, 0))
        sums[track.tags.album] = (
            max(old_peak, peak),
            energy + power * track.sample_count,
            count + track.sample_count,
        )
    return {album: (p, e / c) for album, (p, e, c) in sums.items()}


def replay_gains(
    tracks: Sequence[DemoTrack], loudness: Mapping[int, tuple[float, float]]
) -> list[ReplayGain | None]:
    """The ReplayGain values to tag each track with (``None`` where it has none).

    :param tracks: the tracks.
    :param loudness: the rendered peak and mean power of each, by index.
    """
    albums = _album_loudness(tracks, loudness)
    gains: list[ReplayGain | None] = []
    for i, track in enumerate(tracks):
        if not track.replaygain:
            gains.append(None)
            continue
        peak, power = loudness[i]
        album_peak, album_power = albums[track.tags.album]
        gains.append(
            ReplayGain(
                track_gain=_gain_db(power),
                track_peak=peak,
                album_gain=_gain_db(album_power),
                album_peak=album_peak,
            )
        )
    return gains


# --------------------------------------------------------------------------
# Tags by container


def _vorbis_comments(track: DemoTrack, gains: ReplayGain | None) -> dict[str, str]:
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


def _add_id3_text(audio: MP3 | WAVE, track: DemoTrack, *, disc: bool) -> ID3:
    """Give ``audio`` an ID3 tag (if it has none) and add the track's text frames.

    :param disc: whether to add the disc number (``TPOS``).
    :returns: the tag, for more frames.
    """
    if audio.tags is None:
        audio.add_tags()
    tags = cast(ID3, audio.tags)
    t = track.tags
    tags.add(TIT2(encoding=3, text=t.title))
    tags.add(TPE1(encoding=3, text=t.artist))
    tags.add(TALB(encoding=3, text=t.album))
    tags.add(TPE2(encoding=3, text=t.album_artist))
    tags.add(TRCK(encoding=3, text=f"{t.track_number}/{t.track_total}"))
    if disc:
        tags.add(TPOS(encoding=3, text=f"{t.disc_number}/{t.disc_total}"))
    tags.add(TCON(encoding=3, text=t.genre))
    tags.add(TDRC(encoding=3, text=str(t.year)))
    return tags


def _tag_mp3(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
    """Write ID3v2.4 tags (and APIC cover) into an MP3."""
    audio = MP3(path)
    tags = _add_id3_text(audio, track, disc=True)
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


def _tag_flac(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
    """Write Vorbis comments (and a picture block) into a FLAC file."""
    audio = FLAC(path)
    audio.clear()
    audio.update(_vorbis_comments(track, gains))
    if track.cover is not None:
        audio.add_picture(_picture(track.cover))
    audio.save()


def _tag_ogg(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
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


def _tag_mp4(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
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


def _tag_wav(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
    """Write an ID3 chunk into a WAV file (no disc number, ReplayGain or cover)."""
    audio = WAVE(path)
    _add_id3_text(audio, track, disc=False)
    audio.save()


#: The tagger for each container.
_TAGGERS: Final[dict[str, Callable[[Path, DemoTrack, ReplayGain | None], None]]] = {
    "mp3": _tag_mp3,
    "flac": _tag_flac,
    "ogg": _tag_ogg,
    "ipod": _tag_mp4,
    "wav": _tag_wav,
}


def tag_track(path: Path, track: DemoTrack, gains: ReplayGain | None) -> None:
    """Write ``track``'s tags (and ReplayGain values, if any) into its encoded file."""
    _TAGGERS[track.encoding.container](path, track, gains)

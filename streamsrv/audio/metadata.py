# -*- test-case-name: tests.test_metadata -*-
"""What a track's tags and headers say about it: title, artists, album,
numbering, genre, year, codec, stream properties, ReplayGain and artwork.

:func:`read_metadata` turns one file into a :class:`TrackMetadata`, the row
the catalog stores and ``/api/v1/tracks`` serves (field names are the
contract's).  Every format is read with mutagen: ID3v2.3/2.4 (MP3, and the
ID3 chunks of WAV and AIFF), MP4 atoms (M4A), Vorbis comments (FLAC, Ogg
Vorbis, Ogg Opus).  WebM is the one container mutagen does not parse; its
stream properties and tags come from PyAV's header probe instead.  The
duration is :func:`streamsrv.audio.probe.probe_duration`'s (encoder delay and
padding removed) and the ``etag`` is the one ``/stream`` sends.

Normalisation, so clients need not know tag dialects:

- Missing, empty or unparseable fields are ``None``.  Multiple values of a
  text field are joined with ``"; "``; every text is stripped and cut to
  :data:`MAX_TEXT_LENGTH` characters.
- ``track_number``/``disc_number`` take the leading number of ``"3/12"``
  (ID3, Vorbis) or the first of MP4's ``(3, 12)``; 0 means unknown.
- ``year`` is the first four-digit run of the date (``"2019-05-01"``,
  ``"2019-05-01T12:00:00Z"``, ``"2019"``), falling back to the original
  release date.
- ``title`` falls back to the file name without its extension.
- ``bitrate`` is in bits/s; when the container states none (FFmpeg's Vorbis
  encoder writes a nominal 0), it is the file size over the duration.
- ``sample_rate`` of Ogg Opus is 48000, the rate it always decodes at (the
  header's "input sample rate" is informational only).
- ``replaygain`` follows OpenSubsonic's ``replayGain``: gains in dB relative
  to the ReplayGain 2.0 reference (-18 LUFS), peaks linear (1.0 is full
  scale), unknown fields left out, ``None`` when there are none.  Sources:
  ``REPLAYGAIN_*`` Vorbis comments, ID3 ``TXXX:REPLAYGAIN_*`` (else ``RVA2``),
  APEv2 ``REPLAYGAIN_*`` on MP3 (mp3gain), MP4
  ``----:com.apple.iTunes:replaygain_*``.  In Ogg Opus, RFC 7845's
  ``R128_TRACK_GAIN``/``R128_ALBUM_GAIN`` (a Q7.8 integer: dB × 256, relative
  to -23 LUFS) win over ``REPLAYGAIN_*``; they convert as ``q / 256 + 5``
  (-23 LUFS is 5 dB below the -18 LUFS reference).  R128 tags carry no peak.

A file that cannot be read raises :class:`MetadataError` whose ``reason`` is
a short fixed phrase safe to show a client (``"empty file"``, ``"not audio
data"`` for a file that starts like no audio container, ``"corrupt or
truncated audio data"``...): it never contains a path, and
this module never logs.  Truncation is caught when the cut reaches the
headers, or when headers state more audio than the file holds (WAV, AIFF,
MP3 with a Xing/Info frame count, Ogg); audio is never decoded.
"""

from __future__ import annotations

import math
import os
import re
import stat as stat_module
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mutagen
from mutagen.aac import AAC
from mutagen.aiff import AIFF
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Tags
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from streamsrv.audio.artwork import embedded_artwork, folder_image
from streamsrv.audio.formats import audio_format_for
from streamsrv.audio.probe import probe_duration
from streamsrv.media.identity import make_etag

__all__ = ["MAX_TEXT_LENGTH", "MetadataError", "TrackMetadata", "read_metadata"]

#: Longest text field kept, in characters.
MAX_TEXT_LENGTH: Final[int] = 1024

#: Separator between the values of a multi-valued text tag.
MULTI_VALUE_SEPARATOR: Final[str] = "; "

#: The rate every Ogg Opus stream decodes at.
OPUS_SAMPLE_RATE: Final[int] = 48000

#: ReplayGain 2.0 reference (-18 LUFS) minus EBU R128's (-23 LUFS), in dB.
R128_TO_REPLAYGAIN_DB: Final[float] = 5.0

#: Largest plausible |gain| in dB, and peak (linear); beyond is garbage.
_MAX_GAIN_DB: Final[float] = 99.0
_MAX_PEAK: Final[float] = 100.0

#: Largest track or disc number kept.
_MAX_NUMBER: Final[int] = 99_999

#: Bytes read to tell audio that is damaged from a file that is no audio at all.
_SNIFF_BYTES: Final[int] = 12

#: How the audio containers mutagen reads begin (MP4's ``ftyp`` is at offset 4).
_AUDIO_SIGNATURES: Final[tuple[bytes, ...]] = (
    b"ID3",
    b"fLaC",
    b"OggS",
    b"RIFF",
    b"FORM",
    b"\x1a\x45\xdf\xa3",
)

#: Smallest possible header of a WAV file before its audio data, in bytes.
_MIN_PCM_HEADER: Final[int] = 44

#: An MP3 is truncated when its Xing/Info frame count promises more than this
#: many times the bytes it holds.
_MP3_TRUNCATION_RATIO: Final[float] = 1.25

#: Bytes of an MP3 besides its frames that the comparison tolerates.
_MP3_SLACK_BYTES: Final[int] = 4096

_LEADING_NUMBER = re.compile(r"\s*0*([0-9]{1,9})")
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})(?![0-9])")
_DECIMAL = re.compile(r"\s*([+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+))\s*(?:db)?\s*", re.IGNORECASE)
_Q78 = re.compile(r"\s*([+-]?[0-9]{1,6})\s*")

#: ReplayGain field names, as in the JSON object and the tags' suffixes.
REPLAYGAIN_FIELDS: Final[tuple[str, ...]] = ("track_gain", "track_peak", "album_gain", "album_peak")


class MetadataError(Exception):
    """A file that is no readable audio track.

    :ivar reason: a short fixed phrase for logs and clients (``"empty
        file"``, ``"corrupt or truncated audio data"``...); never a path.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TrackMetadata:
    """Everything the catalog knows of one track; ``None`` means unknown.

    Field names and meanings are the contract's metadata JSON
    (:meth:`to_json`).

    :param path: ``/``-separated path below the media root (NFC).
    :param title: track title; the file name without extension if untagged.
    :param artist: track artist.
    :param album: album title.
    :param album_artist: album artist.
    :param track_number: position on the disc, from 1.
    :param disc_number: disc number, from 1.
    :param genre: genre name.
    :param year: release year.
    :param duration_s: seconds, encoder delay and padding excluded.
    :param codec: ``"mp3"``, ``"aac"``, ``"alac"``, ``"flac"``,
        ``"vorbis"``, ``"opus"``, ``"pcm"``...
    :param bitrate: average bits per second.
    :param sample_rate: samples per second (per channel).
    :param channels: channel count.
    :param size: file size in bytes.
    :param etag: the strong entity-tag ``/stream`` sends for the file.
    :param has_artwork: whether ``/api/v1/artwork`` has an image for it.
    :param replaygain: a subset of ``track_gain``, ``track_peak``,
        ``album_gain``, ``album_peak`` (dB and linear), or ``None``.
    """

    path: str
    title: str | None
    artist: str | None
    album: str | None
    album_artist: str | None
    track_number: int | None
    disc_number: int | None
    genre: str | None
    year: int | None
    duration_s: float | None
    codec: str | None
    bitrate: int | None
    sample_rate: int | None
    channels: int | None
    size: int
    etag: str
    has_artwork: bool
    replaygain: dict[str, float] | None

    def to_json(self) -> dict[str, object]:
        """The contract's metadata JSON object; unknown values are ``null``."""
        return {
            "path": self.path,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "album_artist": self.album_artist,
            "track_number": self.track_number,
            "disc_number": self.disc_number,
            "genre": self.genre,
            "year": self.year,
            "duration_s": self.duration_s,
            "codec": self.codec,
            "bitrate": self.bitrate,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "size": self.size,
            "etag": self.etag,
            "has_artwork": self.has_artwork,
            "replaygain": dict(self.replaygain) if self.replaygain is not None else None,
        }


@dataclass(frozen=True)
class _Tags:
    """Tag values in one vocabulary, whatever the tag format."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    album_artist: str | None = None
    track_number: int | None = None
    disc_number: int | None = None
    genre: str | None = None
    year: int | None = None
    replaygain: dict[str, float] | None = None


@dataclass(frozen=True)
class _Stream:
    """Stream properties from the headers."""

    codec: str | None
    bitrate: int | None
    sample_rate: int | None
    channels: int | None
    duration_s: float | None


def read_metadata(
    root: Path, track: str, stat: os.stat_result, *, folder_artwork: bool | None = None
) -> TrackMetadata:
    """Read one track's tags and headers.

    Blocking (a few header reads): call it in a thread, never on the reactor.

    :param root: the media root.
    :param track: the ``/``-separated path below ``root``.
    :param stat: the file's ``stat`` (symlinks followed), as the caller took
        it; size and etag come from it.
    :param folder_artwork: whether the track's directory has a cover image,
        when the caller already knows (the catalog checks once per
        directory); ``None`` looks for one.  ``False`` makes
        ``has_artwork`` mean "embedded artwork".
    :returns: the metadata.
    :raises MetadataError: for a file that is empty, not a regular file, of
        no audio type, unreadable, corrupt, truncated, or states no duration.
    """
    if not stat_module.S_ISREG(stat.st_mode):
        raise MetadataError("not a regular file")
    if stat.st_size == 0:
        raise MetadataError("empty file")
    fmt = audio_format_for(track)
    if fmt is None:
        raise MetadataError("not an audio file type")
    path = Path(root, *track.split("/"))
    parsed: Any
    if fmt.extension == ".webm":
        tags, stream, has_embedded = _read_with_pyav(path)
    else:
        parsed = _parse(path)
        tags = _read_tags(parsed, path)
        stream = _stream(parsed, path, stat.st_size)
        try:
            has_embedded = embedded_artwork(parsed) is not None
        except Exception:
            has_embedded = False
    if folder_artwork is None:
        folder_artwork = (
            not has_embedded and folder_image(path.parent, Path(os.path.realpath(root))) is not None
        )
    title = tags.title
    if title is None:
        title = _text([Path(track.rsplit("/", 1)[-1]).stem])
    bitrate = stream.bitrate
    if not bitrate and stream.duration_s:
        bitrate = round(stat.st_size * 8 / stream.duration_s)
    return TrackMetadata(
        path=track,
        title=title,
        artist=tags.artist,
        album=tags.album,
        album_artist=tags.album_artist,
        track_number=tags.track_number,
        disc_number=tags.disc_number,
        genre=tags.genre,
        year=tags.year,
        duration_s=stream.duration_s,
        codec=stream.codec,
        bitrate=bitrate or None,
        sample_rate=stream.sample_rate,
        channels=stream.channels,
        size=stat.st_size,
        etag=make_etag(stat.st_size, stat.st_mtime_ns, stat.st_ino),
        has_artwork=has_embedded or folder_artwork,
        replaygain=tags.replaygain,
    )


# --------------------------------------------------------------------------
# Parsing and stream properties


def _parse(path: Path) -> Any:
    """Parse a file with mutagen, mapping every failure to a reason."""
    try:
        parsed = mutagen.File(path)
    except mutagen.MutagenError as e:
        cause = e.args[0] if e.args else None
        if isinstance(cause, OSError) and cause.errno is not None:
            raise _os_error(cause) from None
        raise _unparseable(path) from None
    except OSError as e:
        # Some of mutagen's format errors are OSError subclasses without an
        # errno; only a real I/O error has one.
        if e.errno is None:
            raise _unparseable(path) from None
        raise _os_error(e) from None
    except Exception:
        # Corrupt input also surfaces as struct.error, ValueError,
        # IndexError, OverflowError... from inside mutagen.
        raise _unparseable(path) from None
    if parsed is None:
        raise MetadataError("not a recognised audio format")
    return parsed


def _unparseable(path: Path) -> MetadataError:
    """The reason for a file mutagen could not parse: not audio at all, or damaged audio."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        return _os_error(e)
    if _looks_like_audio(head):
        return MetadataError("corrupt or truncated audio data")
    return MetadataError("not audio data")


def _looks_like_audio(head: bytes) -> bool:
    """Whether the first bytes of a file start like an audio container we read."""
    if head.startswith(_AUDIO_SIGNATURES) or head[4:8] == b"ftyp":
        return True
    # An MPEG audio frame sync (MP3 without ID3, ADTS AAC).
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _os_error(error: OSError) -> MetadataError:
    """A reason for an I/O error: its ``strerror``, never its file name."""
    detail = os.strerror(error.errno) if error.errno else "I/O error"
    return MetadataError(f"cannot read file: {detail.lower()}")


def _stream(parsed: Any, path: Path, size: int) -> _Stream:
    """Stream properties of a parsed file, checking it is complete."""
    info = parsed.info
    duration = probe_duration(path)
    if duration is None:
        raise MetadataError("no audio duration (truncated or corrupt)")
    sample_rate = _positive_int(getattr(info, "sample_rate", None))
    channels = _positive_int(getattr(info, "channels", None))
    bitrate = _positive_int(getattr(info, "bitrate", None))
    codec: str | None
    if isinstance(parsed, MP3):
        codec = f"mp{int(info.layer)}"
        _check_mp3_complete(parsed, size)
    elif isinstance(parsed, MP4):
        codec = _mp4_codec(str(getattr(info, "codec", "") or ""))
    elif isinstance(parsed, FLAC | OggFLAC):
        codec = "flac"
    elif isinstance(parsed, OggVorbis):
        codec = "vorbis"
    elif isinstance(parsed, OggOpus):
        codec = "opus"
        sample_rate = OPUS_SAMPLE_RATE
    elif isinstance(parsed, OggSpeex):
        codec = "speex"
    elif isinstance(parsed, WAVE | AIFF):
        codec = "pcm"
        _check_pcm_complete(info, size)
    elif isinstance(parsed, AAC):
        codec = "aac"
    else:
        codec = type(parsed).__name__.lower()
    return _Stream(codec, bitrate, sample_rate, channels, duration)


def _mp4_codec(name: str) -> str | None:
    """Our codec name for an MP4 sample entry (``mp4a.40.2``, ``alac``...)."""
    name = name.lower()
    if not name:
        return None
    if name.startswith("mp4a.40"):
        return "aac"
    if name in ("mp4a.69", "mp4a.6b"):
        return "mp3"
    if name == "ac-3":
        return "ac3"
    if name == "ec-3":
        return "eac3"
    return name


def _check_pcm_complete(info: Any, size: int) -> None:
    """Refuse a WAV/AIFF whose data chunk says more than the file holds."""
    length = getattr(info, "length", None)
    bitrate = getattr(info, "bitrate", None)
    if not length or not bitrate:
        return
    data_bytes = round(float(length) * float(bitrate) / 8)
    if data_bytes > size - _MIN_PCM_HEADER + 1:
        raise MetadataError("truncated: the headers promise more audio than the file holds")


def _check_mp3_complete(parsed: Any, size: int) -> None:
    """Refuse an MP3 whose Xing/Info frame count promises far more than it holds.

    Without a frame count mutagen estimates the length from the file size,
    so the two agree by construction; with one, a file cut short promises
    more bytes than it has.  A VBR file's average bitrate makes the
    comparison approximate, hence the generous ratio.
    """
    info = parsed.info
    if not getattr(info, "bitrate", 0) or not getattr(info, "length", 0):
        return
    tag_bytes = int(getattr(parsed.tags, "size", 0) or 0) if parsed.tags is not None else 0
    promised = float(info.length) * float(info.bitrate) / 8
    if promised > max(0, size - tag_bytes) * _MP3_TRUNCATION_RATIO + _MP3_SLACK_BYTES:
        raise MetadataError("truncated: the headers promise more audio than the file holds")


def _positive_int(value: object) -> int | None:
    """``value`` as a positive int, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    number = int(value)
    return number if number > 0 else None


# --------------------------------------------------------------------------
# Tags


def _read_tags(parsed: Any, path: Path) -> _Tags:
    """Normalised tags of a parsed file, whatever its tag format."""
    tags = parsed.tags
    if isinstance(parsed, AAC):
        tags = _load_id3(path)
    if tags is None:
        return _Tags()
    if isinstance(tags, ID3):
        result = _id3_tags(tags)
        if result.replaygain is None and isinstance(parsed, MP3):
            result = _with_replaygain(result, _ape_replaygain(path))
        return result
    if isinstance(tags, MP4Tags):
        return _mp4_tags(tags)
    if hasattr(tags, "get"):
        return _vorbis_tags(tags, opus=isinstance(parsed, OggOpus))
    return _Tags()


def _load_id3(path: Path) -> ID3 | None:
    """The ID3 tag at the start of a raw AAC stream, if any."""
    try:
        return ID3(path)
    except Exception:
        return None


def _with_replaygain(tags: _Tags, replaygain: dict[str, float] | None) -> _Tags:
    """``tags`` with its ReplayGain replaced."""
    return _Tags(
        tags.title,
        tags.artist,
        tags.album,
        tags.album_artist,
        tags.track_number,
        tags.disc_number,
        tags.genre,
        tags.year,
        replaygain,
    )


def _id3_tags(tags: ID3) -> _Tags:
    """Normalise ID3v2 frames (v2.3 is upgraded to v2.4 by mutagen on load)."""

    def texts(frame_id: str) -> list[str]:
        return [str(text) for frame in tags.getall(frame_id) for text in frame.text]

    genres = [genre for frame in tags.getall("TCON") for genre in frame.genres]
    replaygain: dict[str, str] = {}
    for frame in tags.getall("TXXX"):
        key = str(frame.desc).strip().lower()
        if key.startswith("replaygain_") and frame.text:
            replaygain.setdefault(key[len("replaygain_") :], str(frame.text[0]))
    gains = _replaygain(replaygain)
    if gains is None:
        gains = _rva2_replaygain(tags)
    return _Tags(
        title=_text(texts("TIT2")),
        artist=_text(texts("TPE1")),
        album=_text(texts("TALB")),
        album_artist=_text(texts("TPE2")),
        track_number=_number(texts("TRCK")),
        disc_number=_number(texts("TPOS")),
        genre=_text(genres),
        year=_year(texts("TDRC"), texts("TYER"), texts("TDOR"), texts("TORY")),
        replaygain=gains,
    )


def _rva2_replaygain(tags: ID3) -> dict[str, float] | None:
    """ReplayGain from ``RVA2`` frames (``track``/``album``), master volume."""
    found: dict[str, str] = {}
    for frame in tags.getall("RVA2"):
        kind = str(frame.desc).strip().lower()
        if kind not in ("track", "album") or frame.channel != 1:
            continue
        found.setdefault(f"{kind}_gain", repr(float(frame.gain)))
        if frame.peak:
            found.setdefault(f"{kind}_peak", repr(float(frame.peak)))
    return _replaygain(found)


def _ape_replaygain(path: Path) -> dict[str, float] | None:
    """ReplayGain from an APEv2 tag (what mp3gain writes), if any."""
    try:
        ape = APEv2(path)
    except Exception:
        return None
    found: dict[str, str] = {}
    for key, value in ape.items():
        lowered = str(key).lower()
        if lowered.startswith("replaygain_"):
            found.setdefault(lowered[len("replaygain_") :], str(value))
    return _replaygain(found)


def _mp4_tags(tags: MP4Tags) -> _Tags:
    """Normalise iTunes-style MP4 atoms."""

    def texts(key: str) -> list[str]:
        return [str(v) for v in tags.get(key, ()) if isinstance(v, str)]

    def pair(key: str) -> int | None:
        for value in tags.get(key, ()):
            if isinstance(value, tuple) and value:
                return _bounded(value[0])
        return None

    replaygain: dict[str, str] = {}
    prefix = "----:com.apple.itunes:replaygain_"
    for key, values in tags.items():
        lowered = key.lower()
        if lowered.startswith(prefix) and values:
            raw = values[0]
            text = bytes(raw).decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            replaygain.setdefault(lowered[len(prefix) :], text)
    return _Tags(
        title=_text(texts("\xa9nam")),
        artist=_text(texts("\xa9ART")),
        album=_text(texts("\xa9alb")),
        album_artist=_text(texts("aART")),
        track_number=pair("trkn"),
        disc_number=pair("disk"),
        genre=_text(texts("\xa9gen")),
        year=_year(texts("\xa9day")),
        replaygain=_replaygain(replaygain),
    )


def _vorbis_tags(tags: Any, *, opus: bool) -> _Tags:
    """Normalise Vorbis comments (FLAC, Ogg Vorbis, Ogg Opus, Ogg FLAC)."""

    def texts(*keys: str) -> list[str]:
        for key in keys:
            try:
                values = tags.get(key)
            except (KeyError, ValueError):
                values = None
            if values:
                return [str(v) for v in values]
        return []

    replaygain = _replaygain(
        {field: value for field in REPLAYGAIN_FIELDS for value in texts(f"replaygain_{field}")[:1]}
    )
    if opus:
        r128 = _r128_replaygain(texts("r128_track_gain"), texts("r128_album_gain"))
        if r128 is not None:
            replaygain = r128
    return _Tags(
        title=_text(texts("title")),
        artist=_text(texts("artist")),
        album=_text(texts("album")),
        album_artist=_text(texts("albumartist", "album artist", "album_artist")),
        track_number=_number(texts("tracknumber")),
        disc_number=_number(texts("discnumber")),
        genre=_text(texts("genre")),
        year=_year(texts("date"), texts("year"), texts("originaldate"), texts("originalyear")),
        replaygain=replaygain,
    )


def _r128_replaygain(track: list[str], album: list[str]) -> dict[str, float] | None:
    """ReplayGain gains from Opus ``R128_*_GAIN`` (Q7.8 dB relative to -23 LUFS)."""
    result: dict[str, float] = {}
    for field, values in (("track_gain", track), ("album_gain", album)):
        match = _Q78.fullmatch(values[0]) if values else None
        if match is None:
            continue
        q = int(match.group(1))
        if -32768 <= q <= 32767:
            result[field] = q / 256 + R128_TO_REPLAYGAIN_DB
    return result or None


def _replaygain(raw: dict[str, str]) -> dict[str, float] | None:
    """Parse ``{"track_gain": "-6.50 dB", "track_peak": "0.98"...}``.

    Gains accept an optional ``dB`` unit and a decimal comma; values that do
    not parse or are implausible are left out.
    """
    result: dict[str, float] = {}
    for field in REPLAYGAIN_FIELDS:
        text = raw.get(field)
        if text is None:
            continue
        match = _DECIMAL.fullmatch(text)
        if match is None:
            continue
        value = float(match.group(1).replace(",", "."))
        if not math.isfinite(value):
            continue
        if field.endswith("_gain") and abs(value) <= _MAX_GAIN_DB:
            result[field] = value
        elif field.endswith("_peak") and 0.0 <= value <= _MAX_PEAK and "db" not in text.lower():
            result[field] = value
    return result or None


def _text(values: Iterable[object]) -> str | None:
    """Join non-empty stripped values with ``"; "``, or ``None``."""
    parts: list[str] = []
    for value in values:
        text = str(value).replace("\x00", "").strip()
        if text and text not in parts:
            parts.append(text)
    if not parts:
        return None
    return MULTI_VALUE_SEPARATOR.join(parts)[:MAX_TEXT_LENGTH]


def _number(values: list[str]) -> int | None:
    """The leading number of the first value (``"3/12"`` -> 3), if positive."""
    for value in values:
        match = _LEADING_NUMBER.match(value)
        if match is not None:
            return _bounded(int(match.group(1)))
    return None


def _bounded(value: object) -> int | None:
    """A plausible track/disc number, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= _MAX_NUMBER else None


def _year(*candidates: list[str]) -> int | None:
    """The year of the first date that has one (``"2019-05-01"`` -> 2019)."""
    for values in candidates:
        for value in values:
            match = _YEAR.search(value)
            if match is not None and int(match.group(1)) > 0:
                return int(match.group(1))
    return None


# --------------------------------------------------------------------------
# WebM, which mutagen does not parse


def _read_with_pyav(path: Path) -> tuple[_Tags, _Stream, bool]:
    """Tags and stream properties of a WebM file from FFmpeg's header probe."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise MetadataError("no audio stream")
            stream = streams[0]
            context = stream.codec_context
            duration: float | None = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            metadata = {k.lower(): v for k, v in container.metadata.items()}
            metadata.update({k.lower(): v for k, v in stream.metadata.items()})
            info = _Stream(
                codec=context.name,
                bitrate=_positive_int(context.bit_rate) or _positive_int(container.bit_rate),
                sample_rate=_positive_int(context.sample_rate),
                channels=_positive_int(context.channels),
                duration_s=duration
                if duration is not None and duration > 0 and math.isfinite(duration)
                else None,
            )
    except MetadataError:
        raise
    except OSError as e:
        # PyAV's I/O errors (missing file, no permission) are OSErrors with an
        # errno; its format errors (InvalidDataError...) are not.
        raise _os_error(e) from None
    except Exception:
        raise MetadataError("corrupt or truncated audio data") from None
    if info.duration_s is None:
        raise MetadataError("no audio duration (truncated or corrupt)")

    def texts(*keys: str) -> list[str]:
        return [metadata[k] for k in keys if metadata.get(k)][:1]

    tags = _Tags(
        title=_text(texts("title")),
        artist=_text(texts("artist")),
        album=_text(texts("album")),
        album_artist=_text(texts("album_artist", "albumartist")),
        track_number=_number(texts("track", "tracknumber")),
        disc_number=_number(texts("disc", "discnumber")),
        genre=_text(texts("genre")),
        year=_year(texts("date", "year")),
        replaygain=_replaygain(
            {f: metadata[f"replaygain_{f}"] for f in REPLAYGAIN_FIELDS if f"replaygain_{f}" in metadata}
        ),
    )
    return tags, info, False

"""Tests for :mod:`streamsrv.audio.metadata`: tags, stream properties and errors of real files."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import mutagen
from mutagen.id3 import COMM, RVA2, TCON, TDRC, TIT2, TLEN, TPE1, TRCK, TXXX
from mutagen.mp4 import MP4FreeForm
from twisted.trial import unittest

from streamsrv.audio.metadata import MAX_TEXT_LENGTH, MetadataError, read_metadata
from streamsrv.media.identity import make_etag
from tests import audiogen

#: The contract's metadata JSON fields, in its order.
FIELDS = (
    "path",
    "title",
    "artist",
    "album",
    "album_artist",
    "track_number",
    "disc_number",
    "genre",
    "year",
    "duration_s",
    "codec",
    "bitrate",
    "sample_rate",
    "channels",
    "size",
    "etag",
    "has_artwork",
    "replaygain",
)


def tag_file(path: Path, **tags: str) -> None:
    """Write common tags into any format with mutagen, in its own dialect.

    Keys: title, artist, album, album_artist, track, disc, genre, date,
    track_gain, track_peak, album_gain.
    """
    f = mutagen.File(path)
    assert f is not None, path
    ext = path.suffix.lower()
    if ext in (".mp3", ".wav", ".aiff"):
        if f.tags is None:
            f.add_tags()
        from mutagen.id3 import TALB, TPE2, TPOS

        frames = {
            "title": TIT2,
            "artist": TPE1,
            "album": TALB,
            "album_artist": TPE2,
            "track": TRCK,
            "disc": TPOS,
            "genre": TCON,
            "date": TDRC,
        }
        for key, value in tags.items():
            if key in frames:
                f.tags.add(frames[key](encoding=3, text=value))
            elif key.startswith(("track_", "album_g", "album_p")):
                f.tags.add(TXXX(encoding=3, desc=f"REPLAYGAIN_{key.upper()}", text=value))
    elif ext == ".m4a":
        atoms = {
            "title": "\xa9nam",
            "artist": "\xa9ART",
            "album": "\xa9alb",
            "album_artist": "aART",
            "genre": "\xa9gen",
            "date": "\xa9day",
        }
        for key, value in tags.items():
            if key in atoms:
                f[atoms[key]] = value
            elif key in ("track", "disc"):
                number, _, total = value.partition("/")
                f["trkn" if key == "track" else "disk"] = [(int(number), int(total or 0))]
            else:
                f[f"----:com.apple.iTunes:replaygain_{key}"] = [MP4FreeForm(value.encode())]
    else:
        names = {"album_artist": "albumartist", "track": "tracknumber", "disc": "discnumber"}
        for key, value in tags.items():
            if key.startswith(("track_", "album_g", "album_p")):
                f[f"replaygain_{key}"] = value
            else:
                f[names.get(key, key)] = value
    f.save()


class ReadMetadataTests(unittest.SynchronousTestCase):
    """read_metadata normalises every format's tags and headers."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.root.mkdir()

    def write(self, name: str, fmt: str, seconds: float = 0.5, **kwargs: int) -> Path:
        return audiogen.write_tone(self.root / name, fmt, seconds, **kwargs)

    def read(self, name: str) -> dict[str, object]:
        return read_metadata(self.root, name, os.stat(self.root / name)).to_json()

    def test_every_format(self) -> None:
        """Tags written with mutagen come back, normalised, from every format,
        with the stream's codec, rate, channels and exact duration."""
        codecs = {"mp3": "mp3", "m4a": "aac", "flac": "flac", "ogg": "vorbis", "opus": "opus"}
        codecs.update(wav="pcm", aiff="pcm")
        for fmt, codec in codecs.items():
            name = f"t.{fmt}"
            self.write(name, fmt, 1.0)
            tag_file(
                self.root / name,
                title="Só Danço Samba",
                artist="Stan Getz",
                album="Getz/Gilberto",
                album_artist="Stan Getz & João Gilberto",
                track="3/12",
                disc="1/2",
                genre="Bossa Nova",
                date="1964-03-18",
                track_gain="-6.50 dB",
                track_peak="0.988",
            )
            meta = self.read(name)
            self.assertEqual(tuple(meta), FIELDS, fmt)
            info = os.stat(self.root / name)
            expected = {
                "path": name,
                "title": "Só Danço Samba",
                "artist": "Stan Getz",
                "album": "Getz/Gilberto",
                "album_artist": "Stan Getz & João Gilberto",
                "track_number": 3,
                "disc_number": 1,
                "genre": "Bossa Nova",
                "year": 1964,
                "codec": codec,
                "sample_rate": 48000 if fmt == "opus" else 44100,
                "channels": 2,
                "size": info.st_size,
                "etag": make_etag(info.st_size, info.st_mtime_ns, info.st_ino),
                "has_artwork": False,
                "replaygain": {"track_gain": -6.5, "track_peak": 0.988},
            }
            for key, value in expected.items():
                self.assertEqual(meta[key], value, f"{fmt} {key}")
            duration = meta["duration_s"]
            assert isinstance(duration, float)
            self.assertLess(abs(duration - 1.0), 0.002, fmt)
            bitrate = meta["bitrate"]
            assert isinstance(bitrate, int)
            self.assertGreater(bitrate, 16_000, fmt)

    def test_duration_when_tags_lie(self) -> None:
        """The duration comes from the headers, not from a TLEN tag or a
        Vorbis LENGTH comment claiming something else."""
        self.write("lie.mp3", "mp3", 2.0)
        f = mutagen.File(self.root / "lie.mp3")
        f.tags.add(TLEN(encoding=3, text="999999"))
        f.save()
        self.write("lie.flac", "flac", 2.0)
        tag_file(self.root / "lie.flac", length="999999")
        for name in ("lie.mp3", "lie.flac"):
            self.assertEqual(self.read(name)["duration_s"], 2.0, name)

    def test_encoder_delay_removed(self) -> None:
        """FFmpeg-written MP3 and M4A report the duration without priming and padding."""
        for fmt in ("mp3", "m4a"):
            self.write(f"d.{fmt}", fmt, 1.5)
            self.assertEqual(self.read(f"d.{fmt}")["duration_s"], 1.5, fmt)

    def test_untagged(self) -> None:
        """An untagged file has its file name as title and nulls elsewhere."""
        self.write("Some Song.flac", "flac")
        meta = self.read("Some Song.flac")
        self.assertEqual(meta["title"], "Some Song")
        for key in ("artist", "album", "track_number", "year", "genre", "replaygain"):
            self.assertIsNone(meta[key], key)

    def test_text_normalisation(self) -> None:
        """Multiple values are joined with "; ", blanks dropped, long text cut."""
        self.write("m.ogg", "ogg")
        f = mutagen.File(self.root / "m.ogg")
        f["artist"] = ["  A  ", "B", "", "A"]
        f["title"] = "x" * (MAX_TEXT_LENGTH + 50)
        f["date"] = "2019-05-01T12:00:00Z"
        f["tracknumber"] = "007"
        f.save()
        meta = self.read("m.ogg")
        self.assertEqual(meta["artist"], "A; B")
        self.assertEqual(meta["title"], "x" * MAX_TEXT_LENGTH)
        self.assertEqual(meta["year"], 2019)
        self.assertEqual(meta["track_number"], 7)

    def test_opus_r128_gain(self) -> None:
        """Opus R128_TRACK_GAIN (Q7.8, -23 LUFS) becomes ReplayGain dB at -18 LUFS."""
        self.write("r.opus", "opus")
        tag_file(self.root / "r.opus", R128_TRACK_GAIN="-512", track_gain="-9 dB")
        self.assertEqual(self.read("r.opus")["replaygain"], {"track_gain": 3.0})

    def test_rva2_replaygain(self) -> None:
        """Without TXXX ReplayGain, an ID3 RVA2 "track" frame is used."""
        self.write("v.mp3", "mp3")
        f = mutagen.File(self.root / "v.mp3")
        f.tags.add(RVA2(desc="track", channel=1, gain=-4.25, peak=0.5))
        f.tags.add(COMM(encoding=3, lang="eng", desc="", text="not a gain"))
        f.save()
        replaygain = self.read("v.mp3")["replaygain"]
        assert isinstance(replaygain, dict)
        self.assertEqual(replaygain["track_gain"], -4.25)
        self.assertAlmostEqual(replaygain["track_peak"], 0.5, places=3)

    def test_bad_replaygain_left_out(self) -> None:
        """Unparseable or implausible gains and peaks are omitted, not errors."""
        self.write("g.flac", "flac")
        tag_file(self.root / "g.flac", track_gain="loud", track_peak="-1", album_gain="+1,5 dB")
        self.assertEqual(self.read("g.flac")["replaygain"], {"album_gain": 1.5})

    def test_embedded_artwork_flag(self) -> None:
        """has_artwork is true for an embedded picture; folder_artwork=False
        ignores a cover image beside the file, None looks for one."""
        self.write("a.flac", "flac")
        (self.root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 32)
        info = os.stat(self.root / "a.flac")
        self.assertTrue(read_metadata(self.root, "a.flac", info).has_artwork)
        self.assertFalse(read_metadata(self.root, "a.flac", info, folder_artwork=False).has_artwork)
        picture = mutagen.flac.Picture()
        picture.type = 3
        picture.data = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
        f = mutagen.File(self.root / "a.flac")
        f.add_picture(picture)
        f.save()
        info = os.stat(self.root / "a.flac")
        self.assertTrue(read_metadata(self.root, "a.flac", info, folder_artwork=False).has_artwork)


class MetadataErrorTests(unittest.SynchronousTestCase):
    """Unreadable files raise MetadataError with a fixed reason and no path."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.root.mkdir()

    def reason(self, name: str) -> str:
        with self.assertRaises(MetadataError) as caught:
            read_metadata(self.root, name, os.stat(self.root / name))
        reason = caught.exception.reason
        self.assertNotIn(str(self.root), reason)
        self.assertNotIn(name, reason)
        return reason

    def test_empty(self) -> None:
        """A 0-byte file is "empty file"."""
        (self.root / "e.mp3").write_bytes(b"")
        self.assertEqual(self.reason("e.mp3"), "empty file")

    def test_not_audio(self) -> None:
        """Text named .mp3 is "not audio data"; a directory is not a regular file;
        a .txt is not an audio type."""
        (self.root / "n.mp3").write_text("hello, this is not an MP3 at all\n" * 20)
        self.assertEqual(self.reason("n.mp3"), "not audio data")
        (self.root / "d.flac").mkdir()
        self.assertEqual(self.reason("d.flac"), "not a regular file")
        (self.root / "x.txt").write_text("x")
        self.assertEqual(self.reason("x.txt"), "not an audio file type")

    def test_truncated(self) -> None:
        """Files cut short (inside the headers, or with headers promising more
        audio than there is) are refused."""
        for fmt in ("wav", "aiff", "mp3", "flac", "m4a"):
            path = audiogen.write_tone(self.root / f"t.{fmt}", fmt, 2.0)
            data = path.read_bytes()
            keep = 40 if fmt in ("flac", "m4a") else len(data) // 3
            path.write_bytes(data[:keep])
            reason = self.reason(f"t.{fmt}")
            self.assertTrue(
                "truncated" in reason or "corrupt" in reason or "duration" in reason, f"{fmt}: {reason}"
            )

    def test_corrupt_header(self) -> None:
        """A file that starts like FLAC but is garbage after is "corrupt or truncated"."""
        (self.root / "c.flac").write_bytes(b"fLaC" + os.urandom(16) + base64.b64encode(b"x" * 30))
        self.assertIn("corrupt", self.reason("c.flac"))

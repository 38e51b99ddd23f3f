"""Tests for :mod:`streamsrv.audio.formats`."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePath, PurePosixPath

from twisted.trial import unittest

from streamsrv.audio.formats import AUDIO_FORMATS, AudioFormat, audio_format_for

#: The contract: extension -> (Content-Type, usual codec, lossless).
EXPECTED = {
    ".mp3": ("audio/mpeg", "mp3", False),
    ".m4a": ("audio/mp4", "aac", False),
    ".aac": ("audio/aac", "aac", False),
    ".flac": ("audio/flac", "flac", True),
    ".ogg": ("audio/ogg", "vorbis", False),
    ".oga": ("audio/ogg", "vorbis", False),
    ".opus": ("audio/ogg", "opus", False),
    ".wav": ("audio/wav", "pcm", True),
    ".aif": ("audio/aiff", "pcm", True),
    ".aiff": ("audio/aiff", "pcm", True),
    ".webm": ("audio/webm", "opus", False),
}


class AudioFormatsTableTests(unittest.SynchronousTestCase):
    """The ``AUDIO_FORMATS`` table itself."""

    def test_every_extension(self) -> None:
        """The table holds exactly the contract's extensions, each with its
        MIME type, codec and losslessness."""
        self.assertEqual(
            {ext: (f.mime_type, f.codec, f.lossless) for ext, f in AUDIO_FORMATS.items()},
            EXPECTED,
        )

    def test_keys_match_rows(self) -> None:
        """Every key is a lowercase extension with its dot, equal to its
        row's ``extension``."""
        for extension, audio_format in AUDIO_FORMATS.items():
            self.assertEqual(audio_format.extension, extension)
            self.assertTrue(extension.startswith("."))
            self.assertEqual(extension, extension.lower())

    def test_mime_types_are_audio(self) -> None:
        """Every type is a bare ``audio/*`` type, with no parameters that a
        client comparing headers verbatim would trip over."""
        for audio_format in AUDIO_FORMATS.values():
            self.assertTrue(audio_format.mime_type.startswith("audio/"))
            self.assertNotIn(";", audio_format.mime_type)

    def test_read_only(self) -> None:
        """Neither the table nor its rows can be changed at run time."""
        with self.assertRaises(TypeError):
            AUDIO_FORMATS[".exe"] = AudioFormat(".exe", "audio/x", "x", False)  # type: ignore[index]
        with self.assertRaises(dataclasses.FrozenInstanceError):
            AUDIO_FORMATS[".mp3"].mime_type = "text/html"  # type: ignore[misc]


class AudioFormatForTests(unittest.SynchronousTestCase):
    """``audio_format_for`` by file name."""

    def test_every_extension(self) -> None:
        """Each extension in the table is recognised on a plain name."""
        for extension, audio_format in AUDIO_FORMATS.items():
            self.assertIs(audio_format_for(f"song{extension}"), audio_format)

    def test_case_insensitive(self) -> None:
        """Upper- and mixed-case extensions map to the same format."""
        mp3 = AUDIO_FORMATS[".mp3"]
        for name in ("SONG.MP3", "Song.Mp3", "song.mP3"):
            self.assertIs(audio_format_for(name), mp3)
        self.assertIs(audio_format_for("X.FLAC"), AUDIO_FORMATS[".flac"])
        self.assertIs(audio_format_for("x.AIFF"), AUDIO_FORMATS[".aiff"])

    def test_paths(self) -> None:
        """Strings with directories, ``PurePath`` and ``Path`` all work, and
        only the last component counts (spaces and non-ASCII included)."""
        flac = AUDIO_FORMATS[".flac"]
        self.assertIs(audio_format_for("jazz/Miles Davis/So What.flac"), flac)
        self.assertIs(audio_format_for(PurePosixPath("a/b/Café.flac")), flac)
        self.assertIs(audio_format_for(PurePath("x.flac")), flac)
        self.assertIs(audio_format_for(Path("dir") / "x.flac"), flac)
        self.assertIs(audio_format_for("album.mp3/cover.png"), None)
        self.assertIs(audio_format_for("a.b.c.ogg"), AUDIO_FORMATS[".ogg"])

    def test_dotfiles(self) -> None:
        """A name starting with a dot is never audio: a bare ``.mp3``, a
        hidden track, or a macOS ``._`` resource fork."""
        for name in (".mp3", ".FLAC", "._Song.mp3", ".hidden.flac", "music/.ogg", "a/._b.m4a"):
            self.assertIsNone(audio_format_for(name), name)

    def test_not_audio(self) -> None:
        """Names without an audio extension give ``None``: images, text,
        playlists, video, partial downloads, no extension, empty names."""
        for name in (
            "cover.png",
            "cover.jpg",
            "notes.txt",
            "playlist.m3u",
            "playlist.m3u8",
            "album.cue",
            "video.mp4",
            "track.wv",
            "song.mp3.part",
            "song.mp3~",
            "song.",
            "mp3",
            "README",
            "",
        ):
            self.assertIsNone(audio_format_for(name), name)

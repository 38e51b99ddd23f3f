"""Tests for :mod:`streamsrv.audio.artwork`: embedded pictures, folder images, their priority."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import mutagen
from mutagen.flac import Picture
from mutagen.id3 import APIC
from mutagen.mp4 import MP4Cover
from twisted.trial import unittest

from streamsrv.audio import artwork
from streamsrv.audio.artwork import find_artwork, folder_image, is_folder_image_name, sniff_image_type
from tests import audiogen

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\0" * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
WEBP = b"RIFF\x20\0\0\0WEBPVP8 " + b"\0" * 30


class SniffTests(unittest.SynchronousTestCase):
    """The image type comes from the bytes, never from a name or tag."""

    def test_types(self) -> None:
        """JPEG, PNG, WebP, GIF and BMP are recognised; anything else is None."""
        self.assertEqual(sniff_image_type(JPEG), "image/jpeg")
        self.assertEqual(sniff_image_type(PNG), "image/png")
        self.assertEqual(sniff_image_type(WEBP), "image/webp")
        self.assertEqual(sniff_image_type(b"GIF89a" + b"\0" * 8), "image/gif")
        self.assertEqual(sniff_image_type(b"BM" + b"\0" * 14), "image/bmp")
        for junk in (b"", b"<svg", b"BM", b"RIFF\0\0\0\0WAVE"):
            self.assertIsNone(sniff_image_type(junk), junk)

    def test_folder_names(self) -> None:
        """cover/folder/front with jpg/jpeg/png/webp, any case, are candidates."""
        for name in ("cover.jpg", "Cover.JPG", "folder.png", "FRONT.webp", "cover.jpeg"):
            self.assertTrue(is_folder_image_name(name), name)
        for name in ("cover", "back.jpg", "cover.gif", "covers.jpg", ".cover.jpg.txt"):
            self.assertFalse(is_folder_image_name(name), name)


class FindArtworkTests(unittest.SynchronousTestCase):
    """find_artwork prefers embedded front covers, then folder images in order."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "album").mkdir(parents=True)

    def track(self, fmt: str, name: str = "t") -> str:
        audiogen.write_tone(self.root / "album" / f"{name}.{fmt}", fmt, 0.2)
        return f"album/{name}.{fmt}"

    def test_none(self) -> None:
        """A track without pictures or folder images has no artwork; nor does a missing one."""
        track = self.track("mp3")
        self.assertIsNone(find_artwork(self.root, track))
        self.assertIsNone(find_artwork(self.root, "album/missing.mp3"))

    def test_id3_front_cover_preferred(self) -> None:
        """Of several APIC frames the front cover (type 3) wins; the type is sniffed."""
        track = self.track("mp3")
        f = mutagen.File(self.root / track)
        f.tags.add(APIC(encoding=3, mime="image/jpeg", type=4, desc="back", data=JPEG))
        f.tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="front", data=PNG))
        f.save()
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual((art.data, art.mime, art.source), (PNG, "image/png", "embedded"))

    def test_other_picture_types(self) -> None:
        """Without a front cover the first usable picture is taken; junk bytes are skipped."""
        track = self.track("mp3")
        f = mutagen.File(self.root / track)
        f.tags.add(APIC(encoding=3, mime="image/png", type=0, desc="junk", data=b"not an image"))
        f.tags.add(APIC(encoding=3, mime="image/png", type=4, desc="back", data=JPEG))
        f.save()
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual(art.mime, "image/jpeg")

    def test_flac_m4a_ogg(self) -> None:
        """FLAC picture blocks, MP4 covr atoms and Vorbis METADATA_BLOCK_PICTURE are read."""
        flac = self.track("flac")
        picture = Picture()
        picture.type = 3
        picture.data = JPEG
        f = mutagen.File(self.root / flac)
        f.add_picture(picture)
        f.save()
        m4a = self.track("m4a")
        f = mutagen.File(self.root / m4a)
        f["covr"] = [MP4Cover(PNG, imageformat=MP4Cover.FORMAT_PNG)]
        f.save()
        ogg = self.track("ogg")
        f = mutagen.File(self.root / ogg)
        block = Picture()
        block.type = 3
        block.data = WEBP
        f["metadata_block_picture"] = [base64.b64encode(block.write()).decode("ascii")]
        f.save()
        for track, mime in ((flac, "image/jpeg"), (m4a, "image/png"), (ogg, "image/webp")):
            art = find_artwork(self.root, track)
            assert art is not None, track
            self.assertEqual((art.mime, art.source), (mime, "embedded"), track)

    def test_folder_priority(self) -> None:
        """cover before folder before front, .jpg before .png; names match in any case."""
        track = self.track("flac")
        album = self.root / "album"
        (album / "front.jpg").write_bytes(JPEG)
        (album / "Folder.PNG").write_bytes(PNG)
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual((art.mime, art.source), ("image/png", "folder"))
        (album / "cover.png").write_bytes(PNG)
        (album / "COVER.jpg").write_bytes(JPEG)
        self.assertEqual(folder_image(album, self.root), album / "COVER.jpg")

    def test_embedded_beats_folder(self) -> None:
        """An embedded picture is preferred to cover.jpg beside the file."""
        track = self.track("mp3")
        (self.root / "album" / "cover.jpg").write_bytes(JPEG)
        f = mutagen.File(self.root / track)
        f.tags.add(APIC(encoding=3, mime="image/png", type=3, desc="", data=PNG))
        f.save()
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual((art.mime, art.source), ("image/png", "embedded"))

    def test_folder_image_must_be_an_image(self) -> None:
        """A cover.jpg that is not an image is skipped for the next candidate."""
        track = self.track("wav")
        (self.root / "album" / "cover.jpg").write_bytes(b"<html>nope</html>")
        (self.root / "album" / "folder.jpg").write_bytes(JPEG)
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual(art.data, JPEG)

    def test_too_large_ignored(self) -> None:
        """Images over MAX_ARTWORK_BYTES are treated as absent."""
        self.patch(artwork, "MAX_ARTWORK_BYTES", 16)
        track = self.track("aiff")
        (self.root / "album" / "cover.jpg").write_bytes(JPEG)
        self.assertIsNone(find_artwork(self.root, track))

    def test_symlinks_outside_root(self) -> None:
        """A folder image, or a track, that resolves outside the root is ignored."""
        outside = Path(self.mktemp()).resolve()
        outside.mkdir()
        (outside / "cover.jpg").write_bytes(JPEG)
        audiogen.write_tone(outside / "x.mp3", "mp3", 0.2)
        track = self.track("flac")
        os.symlink(outside / "cover.jpg", self.root / "album" / "cover.jpg")
        self.assertIsNone(find_artwork(self.root, track))
        os.symlink(outside / "x.mp3", self.root / "album" / "link.mp3")
        self.assertIsNone(find_artwork(self.root, "album/link.mp3"))
        inside = self.root / "art.png"
        inside.write_bytes(PNG)
        os.symlink(inside, self.root / "album" / "folder.png")
        art = find_artwork(self.root, track)
        assert art is not None
        self.assertEqual(art.mime, "image/png")

    def test_corrupt_track(self) -> None:
        """A corrupt track never raises: its folder image (if any) answers."""
        (self.root / "album" / "bad.mp3").write_bytes(b"ID3" + b"\xff" * 40)
        self.assertIsNone(find_artwork(self.root, "album/bad.mp3"))
        (self.root / "album" / "cover.jpg").write_bytes(JPEG)
        art = find_artwork(self.root, "album/bad.mp3")
        assert art is not None
        self.assertEqual(art.source, "folder")

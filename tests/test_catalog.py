"""Tests for :mod:`streamsrv.audio.catalog`: scanning, persistence, events, search, paths."""

from __future__ import annotations

import os
import sqlite3
import threading
import unicodedata
from pathlib import Path
from typing import Any

import mutagen
from mutagen.id3 import APIC
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.trial import unittest

from streamsrv.audio.catalog import (
    CATALOG_FILENAME,
    MAX_LIMIT,
    Catalog,
    CatalogError,
    CatalogEvent,
    InvalidCursor,
    ScanCancelled,
    ScanSummary,
    TrackRecord,
    encode_cursor,
)
from streamsrv.audio.metadata import MetadataError, TrackMetadata, read_metadata
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.health.checks import DEGRADED, FAILING, OK
from streamsrv.media.identity import make_etag
from tests import audiogen
from tests.test_metadata import FIELDS, tag_file

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 40


def result(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (synchronous catalog), raising its failure."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class SpyReader:
    """read_metadata that counts its calls (or fakes tags for non-audio stand-ins)."""

    def __init__(self, fake: bool = False) -> None:
        self.calls: list[str] = []
        self.fake = fake
        #: fs path -> tag overrides for fake reads.
        self.tags: dict[str, dict[str, Any]] = {}

    def __call__(
        self, root: Path, track: str, stat: os.stat_result, *, folder_artwork: bool | None = None
    ) -> TrackMetadata:
        self.calls.append(track)
        if not self.fake:
            return read_metadata(root, track, stat, folder_artwork=folder_artwork)
        if stat.st_size == 0:
            raise MetadataError("empty file")
        tags: dict[str, Any] = {"title": track.rsplit("/", 1)[-1], "artist": None, "album": None}
        tags.update(self.tags.get(track, {}))
        return TrackMetadata(
            path=track,
            title=tags["title"],
            artist=tags["artist"],
            album=tags["album"],
            album_artist=tags.get("album_artist"),
            track_number=None,
            disc_number=None,
            genre=None,
            year=None,
            duration_s=1.0,
            codec="mp3",
            bitrate=128000,
            sample_rate=44100,
            channels=2,
            size=stat.st_size,
            etag=make_etag(stat.st_size, stat.st_mtime_ns, stat.st_ino),
            has_artwork=False,
            replaygain=None,
        )


class CatalogCase(unittest.SynchronousTestCase):
    """A synchronous catalog over a temporary media root."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        self.root = base / "media"
        self.root.mkdir(parents=True)
        self.data = base / "data"
        self.db = self.data / CATALOG_FILENAME
        self.reader = SpyReader()
        self.events: list[CatalogEvent] = []
        self.catalog = self.open_catalog()

    def tearDown(self) -> None:
        if self.catalog.opened:
            result(self.catalog.close())

    def open_catalog(self, reader: Any = None) -> Catalog:
        catalog = Catalog(
            self.db,
            self.root,
            reactor=ImmediateReactor(),
            threadpool=SynchronousThreadPool(),
            reader=reader or self.reader,
            batch_size=3,
        )
        result(catalog.open())
        catalog.subscribe(self.events.append)
        return catalog

    def scan(self, **kwargs: Any) -> ScanSummary:
        summary = result(self.catalog.scan(**kwargs))
        assert isinstance(summary, ScanSummary)
        return summary

    def get(self, path: str) -> TrackRecord | None:
        return result(self.catalog.get(path))  # type: ignore[no-any-return]

    def write(self, rel: str, fmt: str | None = None, seconds: float = 0.3) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        audiogen.write_tone(path, fmt or path.suffix[1:], seconds)
        return path

    def fake(self, rel: str, data: bytes = b"x" * 100) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def kinds(self) -> list[tuple[str, str]]:
        kinds = [(e.kind, e.path) for e in self.events]
        self.events.clear()
        return kinds


class FormatTests(CatalogCase):
    """Every format's tags, written with mutagen, come back through Catalog.get().to_json()."""

    def test_every_format(self) -> None:
        """MP3 (ID3), M4A, FLAC, Ogg Vorbis, Opus, WAV and AIFF round-trip their tags."""
        formats = {"mp3": "mp3", "m4a": "aac", "flac": "flac", "ogg": "vorbis", "opus": "opus"}
        formats.update(wav="pcm", aiff="pcm")
        for fmt in formats:
            path = self.write(f"Artist/Album/{fmt} track.{fmt}", seconds=1.0)
            tag_file(path, title=f"Song {fmt}", artist="Ärtist", album="Albüm", track="2/9", date="2001")
        summary = self.scan()
        self.assertEqual((summary.added, summary.failed), (7, 0))
        for fmt, codec in formats.items():
            rel = f"Artist/Album/{fmt} track.{fmt}"
            record = self.get(rel)
            assert record is not None, fmt
            document = record.to_json()
            self.assertEqual(tuple(document), FIELDS)
            info = os.stat(self.root / rel)
            self.assertEqual(document["path"], rel)
            self.assertEqual(document["title"], f"Song {fmt}")
            self.assertEqual(document["artist"], "Ärtist")
            self.assertEqual(document["album"], "Albüm")
            self.assertEqual(document["track_number"], 2)
            self.assertEqual(document["year"], 2001)
            self.assertEqual(document["codec"], codec)
            self.assertEqual(document["size"], info.st_size)
            self.assertEqual(document["etag"], make_etag(info.st_size, info.st_mtime_ns, info.st_ino))
            self.assertEqual(document["has_artwork"], False)
            self.assertLess(abs(float(document["duration_s"]) - 1.0), 0.002, fmt)  # type: ignore[arg-type]
            self.assertNotIn(str(self.root), repr(document))
            self.assertTrue(self.catalog.is_audio(rel))

    def test_unreadable_files(self) -> None:
        """0-byte, truncated and non-audio files are recorded with reasons, listed
        nowhere, and leave the catalog healthy and the other tracks served."""
        self.write("good.flac")
        self.fake("empty.mp3", b"")
        wav = self.write("cut.wav").read_bytes()
        (self.root / "cut.wav").write_bytes(wav[: len(wav) // 2])
        self.fake("notes.mp3", b"this is a shopping list, not a song\n" * 10)
        summary = self.scan()
        self.assertEqual((summary.added, summary.failed), (1, 3))
        reasons = dict(summary.failures)
        self.assertEqual(reasons["empty.mp3"], "empty file")
        self.assertIn("truncated", reasons["cut.wav"])
        self.assertEqual(reasons["notes.mp3"], "not audio data")
        self.assertEqual(self.catalog.failures(), reasons)
        for bad in reasons:
            self.assertFalse(self.catalog.is_audio(bad))
            self.assertIsNone(self.get(bad))
        page = result(self.catalog.search())
        self.assertEqual([r.path for r in page.items], ["good.flac"])
        self.assertEqual(self.catalog.check().status, OK)
        self.assertEqual(self.kinds(), [("added", "good.flac")])
        # Unchanged failures are not re-read, and still reported.
        self.reader.calls.clear()
        self.assertEqual(self.scan().failed, 3)
        self.assertEqual(self.reader.calls, [])


class IncrementalTests(CatalogCase):
    """Unchanged files are not re-read; changes and deletions are announced."""

    def setUp(self) -> None:
        super().setUp()
        for name in ("a.mp3", "b.flac", "c/d.ogg", "c/e.wav"):
            self.write(name)
        self.first = self.scan()

    def test_counts(self) -> None:
        """The first scan adds everything (in path order), the second reads nothing."""
        self.assertEqual(self.first.added, 4)
        self.assertEqual(self.first.reads, 4)
        self.assertEqual(self.kinds(), [("added", p) for p in ("a.mp3", "b.flac", "c/d.ogg", "c/e.wav")])
        self.reader.calls.clear()
        second = self.scan()
        self.assertEqual((second.unchanged, second.added, second.reads), (4, 0, 0))
        self.assertEqual(self.reader.calls, [])
        self.assertEqual(self.kinds(), [])

    def test_changed(self) -> None:
        """A retagged file is re-read alone, announced as changed with a new etag."""
        old = self.get("b.flac")
        assert old is not None
        self.kinds()
        tag_file(self.root / "b.flac", title="New title")
        self.reader.calls.clear()
        summary = self.scan()
        self.assertEqual((summary.changed, summary.unchanged), (1, 3))
        self.assertEqual(self.reader.calls, ["b.flac"])
        [event] = self.events
        self.assertEqual((event.kind, event.path), ("changed", "b.flac"))
        assert event.record is not None
        self.assertEqual(event.record.metadata.title, "New title")
        self.assertNotEqual(event.record.etag, old.etag)
        new = self.get("b.flac")
        assert new is not None
        self.assertEqual(new.metadata.title, "New title")
        entry = self.catalog.lookup("b.flac")
        assert entry is not None
        self.assertEqual(entry.etag, new.etag)

    def test_replaced_by_rename(self) -> None:
        """A file replaced by another with the same size and mtime (new inode) is re-read."""
        info = os.stat(self.root / "a.mp3")
        replacement = self.root / "a.tmp"
        replacement.write_bytes((self.root / "a.mp3").read_bytes())
        os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(replacement, self.root / "a.mp3")
        self.kinds()
        self.assertEqual(self.scan().changed, 1)
        self.assertEqual(self.kinds(), [("changed", "a.mp3")])

    def test_removed(self) -> None:
        """A deleted file is announced as removed and forgotten."""
        self.kinds()
        (self.root / "c" / "d.ogg").unlink()
        summary = self.scan()
        self.assertEqual((summary.removed, summary.unchanged), (1, 3))
        self.assertEqual(self.kinds(), [("removed", "c/d.ogg")])
        self.assertFalse(self.catalog.is_audio("c/d.ogg"))
        self.assertIsNone(self.get("c/d.ogg"))

    def test_became_unreadable(self) -> None:
        """A track overwritten with garbage is removed from listings and recorded as failed."""
        self.kinds()
        (self.root / "a.mp3").write_bytes(b"garbage" * 10)
        summary = self.scan()
        self.assertEqual((summary.failed, summary.removed), (1, 0))
        self.assertEqual(self.kinds(), [("removed", "a.mp3")])
        self.assertFalse(self.catalog.is_audio("a.mp3"))
        self.write("a.mp3")
        self.assertEqual(self.scan().added, 1)
        self.assertEqual(self.kinds(), [("added", "a.mp3")])

    def test_full_rescan(self) -> None:
        """scan(full=True) re-reads everything; files that did not change count as unchanged."""
        self.reader.calls.clear()
        summary = self.scan(full=True)
        self.assertEqual(len(self.reader.calls), 4)
        self.assertEqual((summary.reads, summary.changed, summary.unchanged), (4, 0, 4))

    def test_restart_keeps_catalog(self) -> None:
        """A new Catalog on the same database knows every track before scanning,
        and its first scan reads nothing."""
        result(self.catalog.close())
        reader = SpyReader()
        self.catalog = self.open_catalog(reader)
        self.assertTrue(self.catalog.is_audio("c/e.wav"))
        record = self.get("c/e.wav")
        assert record is not None
        self.assertEqual(record.metadata.codec, "pcm")
        summary = self.scan()
        self.assertEqual((summary.unchanged, summary.reads), (4, 0))
        self.assertEqual(reader.calls, [])
        self.assertEqual(self.catalog.stats().tracks, 4)

    def test_rescan_paths(self) -> None:
        """rescan_paths updates single files and directories, and removes
        what no longer exists below a path."""
        self.kinds()
        self.write("c/new.flac")
        (self.root / "a.mp3").unlink()
        self.reader.calls.clear()
        summary = result(self.catalog.rescan_paths(["c/new.flac", "a.mp3"]))
        self.assertEqual((summary.added, summary.removed), (1, 1))
        self.assertEqual(self.reader.calls, ["c/new.flac"])
        self.assertEqual(self.kinds(), [("added", "c/new.flac"), ("removed", "a.mp3")])
        for name in os.listdir(self.root / "c"):
            (self.root / "c" / name).unlink()
        (self.root / "c").rmdir()
        result(self.catalog.rescan_paths(["c"]))
        self.assertEqual(
            sorted(self.kinds()), [("removed", "c/d.ogg"), ("removed", "c/e.wav"), ("removed", "c/new.flac")]
        )
        self.assertTrue(self.catalog.is_audio("b.flac"))
        # Unsafe paths are ignored.
        summary = result(self.catalog.rescan_paths(["../x.mp3", ".hidden/y.mp3"]))
        self.assertEqual(summary.files, 0)
        self.assertTrue(self.catalog.is_audio("b.flac"))

    def test_subscribers(self) -> None:
        """unsubscribe stops delivery; a subscriber that raises does not stop others."""
        seen: list[str] = []

        def broken(event: CatalogEvent) -> None:
            raise RuntimeError("bug")

        self.catalog.subscribe(broken)
        unsubscribe = self.catalog.subscribe(lambda e: seen.append(e.path))
        (self.root / "a.mp3").unlink()
        self.scan()
        self.assertEqual(seen, ["a.mp3"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        unsubscribe()
        unsubscribe()
        (self.root / "b.flac").unlink()
        self.scan()
        self.assertEqual(seen, ["a.mp3"])
        self.flushLoggedErrors(RuntimeError)

    def test_close_from_subscriber(self) -> None:
        """A subscriber that closes the catalog mid-scan (synchronous pool) does not
        deadlock: the scan stops with ScanCancelled, keeping what it wrote."""
        for i in range(5):
            self.write(f"n{i}.wav")

        def close_on_first(event: CatalogEvent) -> None:
            if not closing:
                closing.append(self.catalog.close())

        closing: list[Deferred[None]] = []
        self.catalog.subscribe(close_on_first)
        self.assertRaises(ScanCancelled, self.scan)
        self.assertEqual(result(closing[0]), None)
        self.assertFalse(self.catalog.opened)
        self.catalog = self.open_catalog()
        self.assertTrue(self.catalog.is_audio("n0.wav"))

    def test_another_writer(self) -> None:
        """Changes another process (streamsrv scan) made to the database are
        announced at the next scan without re-reading the files."""
        other = Catalog(self.db, self.root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool())
        result(other.open())
        self.write("z.mp3")
        result(other.scan())
        result(other.close())
        self.kinds()
        self.reader.calls.clear()
        summary = self.scan()
        self.assertEqual(self.reader.calls, [])
        self.assertEqual(summary.unchanged, 5)
        self.assertEqual(self.kinds(), [("added", "z.mp3")])
        self.assertTrue(self.catalog.is_audio("z.mp3"))


class ProgressTests(CatalogCase):
    """scan(progress=...) reports how far it is."""

    def test_progress(self) -> None:
        """Progress starts at 0 files, never goes back, and ends at the total."""
        for i in range(5):
            self.write(f"{i}.wav")
        updates: list[tuple[int, int]] = []
        self.scan(progress=lambda p: updates.append((p.files_done, p.files_total)))
        self.assertEqual(updates[0], (0, 0))
        self.assertEqual(updates[-1], (5, 5))
        done = [d for d, _ in updates]
        self.assertEqual(done, sorted(done))


class PathTests(CatalogCase):
    """What counts as a track: dotfiles, symlinks, names, other files."""

    def setUp(self) -> None:
        super().setUp()
        self.reader = SpyReader(fake=True)
        result(self.catalog.close())
        self.catalog = self.open_catalog(self.reader)

    def paths(self) -> list[str]:
        self.scan()
        return [r.path for r in result(self.catalog.search(limit=MAX_LIMIT)).items]

    def test_dotfiles_and_other_types(self) -> None:
        """Dotfiles, dot-directories, macOS ._ files and non-audio files are skipped."""
        for rel in ("a.mp3", ".hidden.mp3", "._a.mp3", ".git/x.mp3", "d/.cache/y.flac", "cover.jpg"):
            self.fake(rel)
        self.fake("notes.txt")
        self.fake("B.MP3")
        self.assertEqual(self.paths(), ["B.MP3", "a.mp3"])

    def test_symlinks(self) -> None:
        """Symlinks are followed inside the root only; a loop does not hang the walk."""
        outside = self.root.parent / "outside"
        outside.mkdir()
        (outside / "x.mp3").write_bytes(b"x" * 10)
        self.fake("real/a.mp3")
        os.symlink(outside / "x.mp3", self.root / "out.mp3")
        os.symlink(outside, self.root / "outdir")
        os.symlink(self.root / "real" / "a.mp3", self.root / "in.mp3")
        os.symlink(self.root / "real", self.root / "indir")
        os.symlink(self.root, self.root / "real" / "loop")
        os.symlink(self.root / "missing.mp3", self.root / "dangling.mp3")
        paths = self.paths()
        self.assertEqual(paths, ["in.mp3", "indir/a.mp3", "real/a.mp3"])
        self.assertFalse(self.catalog.is_audio("out.mp3"))
        self.assertFalse(self.catalog.is_audio("outdir/x.mp3"))
        # A symlink retargeted outside is dropped by a rescan of that path.
        self.kinds()
        os.unlink(self.root / "in.mp3")
        os.symlink(outside / "x.mp3", self.root / "in.mp3")
        result(self.catalog.rescan_paths(["in.mp3"]))
        self.assertEqual(self.kinds(), [("removed", "in.mp3")])

    def test_unicode_nfc(self) -> None:
        """A file named in NFD on disk is known by its NFC name, and read by its disk name."""
        nfd = unicodedata.normalize("NFD", "Beyoncé/Café.mp3")
        nfc = unicodedata.normalize("NFC", nfd)
        self.assertNotEqual(nfd, nfc)
        self.fake(nfd)
        self.assertEqual(self.paths(), [nfc])
        self.assertTrue(self.catalog.is_audio(nfc))
        self.assertFalse(self.catalog.is_audio(nfd))
        self.assertEqual(self.reader.calls, [nfd])
        entry = self.catalog.lookup(nfc)
        assert entry is not None
        self.assertEqual(entry.fs_path, nfd)
        record = self.get(nfd)
        assert record is not None
        self.assertEqual(record.path, nfc)

    def test_unservable_names(self) -> None:
        """Names /stream could never serve (backslash, control characters) are skipped."""
        self.fake("ok.mp3")
        self.fake("back\\slash.mp3")
        self.fake("bell\x07.mp3")
        self.assertEqual(self.paths(), ["ok.mp3"])

    def test_media_root_missing(self) -> None:
        """A scan of a missing media root fails and removes nothing; check is degraded."""
        self.fake("a.mp3")
        self.scan()
        moved = self.root.parent / "moved"
        self.root.rename(moved)
        self.kinds()
        self.assertRaises(CatalogError, self.scan)
        self.assertEqual(self.kinds(), [])
        self.assertTrue(self.catalog.is_audio("a.mp3"))
        check = self.catalog.check()
        self.assertEqual(check.status, DEGRADED)
        self.assertNotIn(str(self.root), repr(check))
        moved.rename(self.root)
        self.scan()
        self.assertEqual(self.catalog.check().status, OK)

    def test_unlistable_directory(self) -> None:
        """Tracks below a directory that cannot be listed are kept as they were."""
        self.fake("locked/a.mp3")
        self.fake("b.mp3")
        self.scan()
        real_scandir = os.scandir
        locked = str(self.root / "locked")

        def scandir(path: Any) -> Any:
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied")
            return real_scandir(path)

        self.patch(os, "scandir", scandir)
        self.kinds()
        summary = self.scan()
        self.assertEqual(summary.removed, 0)
        self.assertTrue(self.catalog.is_audio("locked/a.mp3"))


class ArtworkTests(CatalogCase):
    """has_artwork: embedded pictures and folder images, kept current."""

    def test_embedded_and_folder(self) -> None:
        """An embedded picture or a cover.jpg beside the file sets has_artwork;
        adding a folder image later changes the record without re-reading."""
        embedded = self.write("one/a.mp3")
        f = mutagen.File(embedded)
        f.tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="", data=JPEG))
        f.save()
        self.write("two/b.flac")
        self.write("three/c.flac")
        (self.root / "two" / "Folder.PNG").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
        self.scan()
        flags = {p: self.get(p).metadata.has_artwork for p in ("one/a.mp3", "two/b.flac", "three/c.flac")}  # type: ignore[union-attr]
        self.assertEqual(flags, {"one/a.mp3": True, "two/b.flac": True, "three/c.flac": False})
        self.kinds()
        self.reader.calls.clear()
        (self.root / "three" / "cover.jpg").write_bytes(JPEG)
        summary = self.scan()
        self.assertEqual((summary.changed, self.reader.calls), (1, []))
        [event] = self.events
        assert event.record is not None
        self.assertEqual(
            (event.kind, event.path, event.record.metadata.has_artwork), ("changed", "three/c.flac", True)
        )
        record = self.get("three/c.flac")
        assert record is not None
        self.assertTrue(record.metadata.has_artwork)
        # A folder image change seen by the watcher rescans its directory.
        self.events.clear()
        (self.root / "three" / "cover.jpg").unlink()
        result(self.catalog.rescan_paths(["three/cover.jpg"]))
        self.assertEqual(self.kinds(), [("changed", "three/c.flac")])
        self.assertFalse(self.get("three/c.flac").metadata.has_artwork)  # type: ignore[union-attr]
        # The embedded flag survives a folder image coming and going.
        (self.root / "one" / "cover.jpg").write_bytes(JPEG)
        self.scan()
        (self.root / "one" / "cover.jpg").unlink()
        self.scan()
        self.assertTrue(self.get("one/a.mp3").metadata.has_artwork)  # type: ignore[union-attr]


class SearchTests(CatalogCase):
    """search(): q, artist, album, ordering and the cursor."""

    def setUp(self) -> None:
        super().setUp()
        self.reader = SpyReader(fake=True)
        result(self.catalog.close())
        self.catalog = self.open_catalog(self.reader)
        library = {
            "jazz/01.mp3": ("So What", "Miles Davis", "Kind of Blue"),
            "jazz/02.mp3": ("Freddie Freeloader", "Miles Davis", "Kind of Blue"),
            "jazz/03.mp3": ("Blue in Green", "MILES DAVIS", "Kind Of Blue"),
            "pop/01.mp3": ("Jóga", "Björk", "Homogenic"),
            "pop/02.mp3": ("Hunter", "Björk", "Homogenic"),
            "pop/03.mp3": ("Blue Monday", "New Order", "Power, Corruption & Lies"),
            "misc/untagged.mp3": ("untagged.mp3", None, None),
        }
        for rel, (title, artist, album) in library.items():
            self.fake(rel)
            self.reader.tags[rel] = {"title": title, "artist": artist, "album": album}
        self.scan()

    def search(self, **kwargs: Any) -> list[str]:
        return [r.path for r in result(self.catalog.search(**kwargs)).items]

    def test_q(self) -> None:
        """q matches title, artist and album, case-insensitively, every word."""
        self.assertEqual(self.search(q="blue"), ["jazz/01.mp3", "jazz/02.mp3", "jazz/03.mp3", "pop/03.mp3"])
        self.assertEqual(self.search(q="BLUE monday"), ["pop/03.mp3"])
        self.assertEqual(self.search(q="BJÖRK"), ["pop/01.mp3", "pop/02.mp3"])
        self.assertEqual(self.search(q=unicodedata.normalize("NFD", "jóga")), ["pop/01.mp3"])
        self.assertEqual(self.search(q="%"), [])
        self.assertEqual(self.search(q="  "), self.search())
        self.assertEqual(len(self.search()), 7)

    def test_artist_album(self) -> None:
        """artist= and album= match the whole value, case-insensitively."""
        self.assertEqual(self.search(artist="miles davis"), ["jazz/01.mp3", "jazz/02.mp3", "jazz/03.mp3"])
        self.assertEqual(self.search(artist="Miles"), [])
        self.assertEqual(self.search(album="kind of blue", q="green"), ["jazz/03.mp3"])
        self.assertEqual(self.search(artist="björk", album="HOMOGENIC"), ["pop/01.mp3", "pop/02.mp3"])

    def test_pagination(self) -> None:
        """Pages follow each other by cursor, in path order, without gaps or repeats;
        the last page has no cursor; the JSON has the contract's shape."""
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = result(self.catalog.search(limit=2, cursor=cursor))
            document = page.to_json()
            self.assertEqual(set(document), {"items", "next_cursor"})
            seen += [item["path"] for item in document["items"]]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        self.assertEqual(pages, 4)
        self.assertEqual(seen, sorted(self.search()))
        filtered = result(self.catalog.search(q="blue", limit=3))
        self.assertIsNotNone(filtered.next_cursor)
        rest = result(self.catalog.search(q="blue", limit=3, cursor=filtered.next_cursor))
        self.assertEqual([r.path for r in rest.items], ["pop/03.mp3"])
        self.assertIsNone(rest.next_cursor)
        exact = result(self.catalog.search(q="blue", limit=4))
        self.assertIsNone(exact.next_cursor)

    def test_limit_clamped(self) -> None:
        """limit is clamped to 1..MAX_LIMIT."""
        self.assertEqual(len(self.search(limit=0)), 1)
        self.assertEqual(len(self.search(limit=10_000)), 7)

    def test_malformed_cursor(self) -> None:
        """A cursor the catalog did not issue raises InvalidCursor, a ValueError."""
        for bad in ("", "!!!", "cDE6", "bm90IGEgY3Vyc29y", "x" * 10_000, "cDE6_w"):
            with self.assertRaises(InvalidCursor, msg=bad):
                self.catalog.search(cursor=bad)
        self.assertTrue(issubclass(InvalidCursor, ValueError))
        # A well-formed cursor for a path that is gone still continues after it.
        self.assertEqual(
            self.search(cursor=encode_cursor("m")),
            ["misc/untagged.mp3", "pop/01.mp3", "pop/02.mp3", "pop/03.mp3"],
        )


class DatabaseTests(CatalogCase):
    """The SQLite file: schema versions, corruption, health."""

    def test_wal_and_version(self) -> None:
        """The database is in WAL mode with the schema version set."""
        connection = sqlite3.connect(self.db)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(connection.execute("PRAGMA user_version").fetchone()[0], 1)

    def test_newer_schema_refused(self) -> None:
        """A database from a newer streamsrv is refused, not overwritten."""
        result(self.catalog.close())
        connection = sqlite3.connect(self.db)
        connection.execute("PRAGMA user_version = 99")
        connection.close()
        catalog = Catalog(self.db, self.root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool())
        self.assertRaises(CatalogError, result, catalog.open())
        self.assertFalse(catalog.opened)

    def test_older_schema_rebuilt(self) -> None:
        """An older or unversioned database is rebuilt (it is only a cache of the disk)."""
        self.write("a.wav")
        self.scan()
        result(self.catalog.close())
        connection = sqlite3.connect(self.db)
        connection.execute("PRAGMA user_version = 0")
        connection.close()
        self.catalog = self.open_catalog()
        self.assertFalse(self.catalog.is_audio("a.wav"))
        self.assertEqual(self.scan().added, 1)

    def test_corrupt_database(self) -> None:
        """A corrupt file is moved aside and the catalog rebuilt from the media root."""
        self.write("a.wav")
        result(self.catalog.close())
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        self.db.write_bytes(b"this is not a database" * 100)
        self.catalog = self.open_catalog()
        self.assertEqual(self.scan().added, 1)
        self.assertEqual(len(list(self.data.glob(f"{CATALOG_FILENAME}.corrupt-*"))), 1)

    def test_media_root_changed(self) -> None:
        """Opening the database with another media root starts afresh."""
        self.write("a.wav")
        self.scan()
        result(self.catalog.close())
        other = self.root.parent / "other"
        other.mkdir()
        catalog = Catalog(self.db, other, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool())
        result(catalog.open())
        self.addCleanup(lambda: result(catalog.close()))
        self.assertFalse(catalog.is_audio("a.wav"))

    def test_check(self) -> None:
        """check(): degraded before the first full scan, ok after, failing once closed."""
        self.assertEqual(self.catalog.check().status, DEGRADED)
        self.scan()
        self.assertEqual(self.catalog.check().status, OK)
        result(self.catalog.close())
        self.assertEqual(self.catalog.check().status, FAILING)
        self.assertRaises(CatalogError, result, self.catalog.scan())


class ThreadedTests(unittest.TestCase):
    """With its own thread pools the catalog works off the reactor thread."""

    def test_threads(self) -> Deferred[None]:
        """Scanning runs in another thread; events and results arrive on the reactor thread."""
        base = Path(self.mktemp()).resolve()
        root = base / "media"
        root.mkdir(parents=True)
        audiogen.write_tone(root / "a.flac", "flac", 0.2)
        reader_threads: list[threading.Thread] = []
        event_threads: list[threading.Thread] = []

        def reader(*args: Any, **kwargs: Any) -> TrackMetadata:
            reader_threads.append(threading.current_thread())
            return read_metadata(*args, **kwargs)

        catalog = Catalog(base / "data" / CATALOG_FILENAME, root, reactor=global_reactor, reader=reader)

        async def go() -> None:
            await catalog.open()
            catalog.subscribe(lambda e: event_threads.append(threading.current_thread()))
            summary = await catalog.scan()
            self.assertEqual(summary.added, 1)
            record = await catalog.get("a.flac")
            assert record is not None
            self.assertEqual(record.metadata.codec, "flac")
            page = await catalog.search(q="a")
            self.assertEqual(len(page.items), 1)
            await catalog.close()

        def check(_: object) -> None:
            self.assertEqual(len(reader_threads), 1)
            self.assertIsNot(reader_threads[0], threading.main_thread())
            self.assertEqual(event_threads, [threading.main_thread()])

        return ensureDeferred(go()).addCallback(check)


class GenerationTests(CatalogCase):
    """``generation``: a digest of the index that changes with it, and only with it."""

    def test_follows_the_index(self) -> None:
        """Adding, changing and removing a track change it; a scan that finds nothing new does not."""
        empty = self.catalog.generation
        self.write("a.wav")
        self.scan()
        one = self.catalog.generation
        self.assertNotEqual(one, empty)
        self.scan()
        self.assertEqual(self.catalog.generation, one)
        self.write("b.wav")
        self.scan()
        two = self.catalog.generation
        self.assertNotIn(two, (empty, one))
        path = self.write("a.wav", seconds=0.5)
        os.utime(path, ns=(1, 1))
        self.scan()
        changed = self.catalog.generation
        self.assertNotIn(changed, (empty, one, two))
        (self.root / "b.wav").unlink()
        path.unlink()
        self.scan()
        self.assertEqual(self.catalog.generation, empty)

    def test_same_everywhere(self) -> None:
        """Another process's catalog of the same library, and this one reopened, give the same value."""
        self.write("x/a.wav")
        self.write("x/b.wav")
        self.scan()
        here = self.catalog.generation
        other = Catalog(self.db, self.root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool())
        result(other.open())
        self.addCleanup(lambda: result(other.close()))
        self.assertEqual(other.generation, here)
        result(self.catalog.close())
        self.catalog = self.open_catalog()
        self.assertEqual(self.catalog.generation, here)

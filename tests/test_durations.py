"""``X-Content-Duration`` from the catalog's records (``TrackDurations``), never parsed on the reactor.

:class:`TrackDurationsTests` pins the memo on its own; :class:`StreamDurationTests`
pins ``/stream`` through a real site: the header carries the catalog's
duration of the file version served, a track the catalog does not know gets
none, and mutagen is never asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mutagen
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from streamsrv.media.identity import make_etag
from streamsrv.streaming.durations import TrackDurations
from tests.sitehelpers import build_site, stub_for

TRACK = "jazz/So What.mp3"
URL = "http://streamsrv.test/stream/jazz/So%20What.mp3"


def record(etag: str, duration_s: float | None) -> Any:
    """What the catalog's ``get`` gives: an etag and the metadata's duration."""
    return SimpleNamespace(etag=etag, metadata=SimpleNamespace(duration_s=duration_s))


class FakeCatalog:
    """``Catalog.get`` from a table; counts its reads; may hold them until told."""

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.reads: list[str] = []
        self.held: list[tuple[Deferred[Any], str]] | None = None

    def get(self, track: str) -> Deferred[Any]:
        self.reads.append(track)
        if self.held is not None:
            d: Deferred[Any] = Deferred()
            self.held.append((d, track))
            return d
        return succeed(self.records.get(track))

    def release(self) -> None:
        held, self.held = self.held or [], None
        for d, track in held:
            d.callback(self.records.get(track))


class TrackDurationsTests(unittest.SynchronousTestCase):
    """The memo of durations by track and file version."""

    def setUp(self) -> None:
        self.catalog = FakeCatalog()
        self.durations = TrackDurations(self.catalog.get, max_entries=8)

    def load(self, track: str) -> None:
        self.successResultOf(Deferred.fromCoroutine(self.durations.load(track)))

    def test_known_after_load(self) -> None:
        """A loaded track answers its duration for its own etag without asking the catalog again."""
        self.catalog.records[TRACK] = record('"e1"', 12.5)
        self.assertFalse(self.durations.known(TRACK))
        self.load(TRACK)
        self.assertTrue(self.durations.known(TRACK))
        self.assertEqual(self.durations.get(TRACK, '"e1"'), 12.5)
        self.assertEqual(self.durations.get(TRACK, '"e1"'), 12.5)
        self.assertEqual(self.catalog.reads, [TRACK])

    def test_unknown_track(self) -> None:
        """A track the catalog does not know is not remembered and has no duration."""
        self.load(TRACK)
        self.assertFalse(self.durations.known(TRACK))
        self.assertIsNone(self.durations.get(TRACK, '"e1"'))

    def test_other_version_forgotten(self) -> None:
        """A record of another file version gives no duration and is asked for again next time."""
        self.catalog.records[TRACK] = record('"old"', 3.0)
        self.load(TRACK)
        self.assertIsNone(self.durations.get(TRACK, '"new"'))
        self.assertFalse(self.durations.known(TRACK))

    def test_bounded(self) -> None:
        """Past its bound the oldest tracks are forgotten."""
        for n in range(20):
            self.catalog.records[f"{n}.mp3"] = record('"e"', float(n))
            self.load(f"{n}.mp3")
        self.assertLessEqual(len(self.durations), 8)
        self.assertTrue(self.durations.known("19.mp3"))
        self.assertFalse(self.durations.known("0.mp3"))

    def test_invalid_bound(self) -> None:
        """At least one entry."""
        self.assertRaises(ValueError, TrackDurations, self.catalog.get, 0)


class StreamDurationTests(unittest.TestCase):
    """``/stream`` originals and ``X-Content-Duration``."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        (root / "jazz").mkdir(parents=True)
        path = root / TRACK
        path.write_bytes(b"\xff\xfb" + bytes(5000))
        info = os.stat(path)
        self.etag = make_etag(info.st_size, info.st_mtime_ns, info.st_ino)
        self.catalog = FakeCatalog()
        built = build_site(root, durations=TrackDurations(self.catalog.get))
        self.stub = stub_for(built)

        def no_parsing(*args: object, **kwargs: object) -> None:
            raise AssertionError("mutagen asked on the reactor thread")

        self.patch(mutagen, "File", no_parsing)

    def duration_header(self, method: str = "GET") -> str | None:
        d = self.stub.request(method, URL)
        self.stub.flush()
        response = self.successResultOf(d)
        self.successResultOf(response.content())
        self.assertEqual(response.code, 200)
        values = response.headers.getRawHeaders("x-content-duration")
        return values[0] if values else None

    def test_from_catalog_record(self) -> None:
        """The header is the catalog's duration; the catalog is read once for many requests."""
        self.catalog.records[TRACK] = record(self.etag, 184.3216)
        self.assertEqual(self.duration_header(), "184.322")
        self.assertEqual(self.duration_header("HEAD"), "184.322")
        self.assertEqual(self.catalog.reads, [TRACK])

    def test_not_in_catalog(self) -> None:
        """A track the catalog has not read yet is served without the header (not parsed here)."""
        self.assertIsNone(self.duration_header())

    def test_stale_record(self) -> None:
        """A record of another file version gives no header; once rescanned, the header comes back."""
        self.catalog.records[TRACK] = record('"another-version"', 10.0)
        self.assertIsNone(self.duration_header())
        self.catalog.records[TRACK] = record(self.etag, 10.0)
        self.assertEqual(self.duration_header(), "10.000")

    def test_waits_for_catalog_read(self) -> None:
        """The first request of a track waits for the catalog's (threaded) read, then answers."""
        self.catalog.records[TRACK] = record(self.etag, 2.0)
        self.catalog.held = []
        d = self.stub.get(URL)
        self.stub.flush()
        self.assertNoResult(d)
        self.catalog.release()
        self.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders("x-content-duration"), ["2.000"])

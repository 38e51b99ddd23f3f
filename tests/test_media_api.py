"""``/api/v1/waveform``, ``/spectrum`` and ``/artwork`` through the real site.

Real audio written with PyAV, a real worker pool (one spawned process) and a
real artifact cache in a temporary directory; requests go through the site's
guard, so signed URLs, path refusals and the JSON errors are the daemon's own.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.audio.library import MediaLibrary
from streamsrv.audio.workers import WorkerPool
from streamsrv.auth.principal import anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import sign_url
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.threads import InlineThreads
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, stub_for
from tests.test_guard import KEYS

TRACK = "Artist/Album/01 Tone.flac"


async def settle(stub: Any, d: Deferred[Any]) -> Any:
    """Wait for a StubTreq request whose handler awaits the worker pool (real reactor)."""
    done: list[Any] = []
    d.addBoth(lambda result: done.append(result) or result)
    for _ in range(3000):
        stub.flush()
        if done:
            break
        await deferLater(reactor, 0.01, lambda: None)
    return await d


class MediaApiTests(unittest.TestCase):
    """The derived-data routes of the media API."""

    timeout = 120

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "Artist" / "Album").mkdir(parents=True)
        write_tone(self.root / TRACK, "flac", seconds=3.0, freq=1000.0, channels=2, amplitude=0.5)
        (self.root / "Artist" / "Album" / "cover.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 17
        )
        (self.root / "notes.txt").write_text("not audio")
        self.pool = WorkerPool(reactor, size=1, max_queue=4)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.cache = ArtifactCache(Path(self.mktemp()), 64 * 1024 * 1024, threads=InlineThreads())
        self.library = MediaLibrary(self.root, catalog=None, pool=self.pool, cache=self.cache)
        guard = Guard(
            verifier=None,
            url_keys=KEYS,
            url_max_ttl_s=604800,
            revocations=None,
            limiter=None,
            policies=DEFAULT_POLICIES,
            anonymous=anonymous_principal(DEFAULT_ROLES),
            clock=reactor,
        )
        self.built = build_site(self.root, clock=reactor, guard=guard, media=self.library)
        self.stub = stub_for(self.built)

    async def get(self, target: str, **headers: str) -> tuple[int, Any, bytes]:
        d = self.stub.get("http://streamsrv.test" + target, headers={k: [v] for k, v in headers.items()})
        response = await settle(self.stub, d)
        body = await settle(self.stub, response.content())
        return response.code, response.headers, body

    def url(self, route: str, query: str = "") -> str:
        return f"/api/v1/{route}/{quote(TRACK)}" + (f"?{query}" if query else "")

    async def test_waveform_json_of_known_amplitude(self) -> None:
        """A tone of amplitude 0.5 gives 8-bit peaks of about ±64 in audiowaveform's v2 JSON."""
        code, headers, body = await self.get(self.url("waveform"))
        self.assertEqual(code, 200, body)
        doc = json.loads(body)
        self.assertEqual((doc["version"], doc["bits"], doc["samples_per_pixel"]), (2, 8, 256))
        self.assertEqual(doc["channels"], 1)
        self.assertEqual(doc["length"], -(-3 * 44100 // 256))
        peaks = doc["data"][:-4]
        self.assertTrue(all(60 <= abs(v) <= 65 for v in peaks[2:]), peaks[:20])
        self.assertEqual(headers.getRawHeaders(b"cross-origin-resource-policy"), [b"cross-origin"])
        self.assertTrue(headers.getRawHeaders(b"etag"))

    async def test_zooms_derive_from_the_base_level(self) -> None:
        """A coarser zoom and 16 bits come from the cached base level: one decode for both."""
        code, _, body = await self.get(self.url("waveform", "samples_per_pixel=1024&bits=16"))
        self.assertEqual(code, 200, body)
        doc = json.loads(body)
        self.assertEqual((doc["samples_per_pixel"], doc["bits"]), (1024, 16))
        self.assertTrue(16000 <= max(doc["data"]) <= 16500)
        self.assertEqual(len(self.cache), 1)  # only the base level was computed and kept
        code, _, _ = await self.get(self.url("waveform", "samples_per_pixel=512"))
        self.assertEqual((code, len(self.cache)), (200, 1))

    async def test_dat_and_wavesurfer(self) -> None:
        """``.dat`` is BBC's v2 binary layout; wavesurfer gets a duration and float peaks per channel."""
        code, headers, body = await self.get(self.url("waveform", "format=dat&channels=split"))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/octet-stream"])
        version, flags, rate, spp, length, channels = struct.unpack("<iIiiIi", body[:24])
        self.assertEqual((version, flags, rate, spp, channels), (2, 1, 44100, 256, 2))
        self.assertEqual(len(body), 24 + length * channels * 2)
        code, _, body = await self.get(self.url("waveform", "format=wavesurfer"))
        doc = json.loads(body)
        self.assertAlmostEqual(doc["duration"], 3.0, places=2)
        self.assertTrue(all(abs(v) <= 1.0 for v in doc["peaks"][0]))

    async def test_detail_window(self) -> None:
        """``start``/``end`` give the pixels of that window only."""
        code, _, body = await self.get(self.url("waveform", "start=1&end=2"))
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["length"], -(-44100 // 256))

    async def test_bad_parameters(self) -> None:
        """Each malformed parameter is a 400 BAD_REQUEST naming it; nothing is computed."""
        for query in (
            "bits=3", "samples_per_pixel=abc", "samples_per_pixel=1",
            "samples_per_pixel=256&pixels_per_second=10", "channels=both", "format=xml",
            "start=2&end=1", "start=-1", "end=nan", "bits=8&bits=16",
        ):  # fmt: skip
            code, _, body = await self.get(self.url("waveform", query))
            self.assertEqual((code, json.loads(body)["error"]["code"]), (400, "BAD_REQUEST"), query)
        for query in (
            "fft_size=1000",
            "window=kaiser",
            "format=gif",
            "hop=0",
            "frames=0",
            "bins=2000",
            "axes=2",
        ):
            code, _, body = await self.get(self.url("spectrum", query))
            self.assertEqual((code, json.loads(body)["error"]["code"]), (400, "BAD_REQUEST"), query)
        self.assertEqual(len(self.cache), 0)

    async def test_not_found_and_hostile_paths(self) -> None:
        """Non-audio files, missing tracks and traversal are 404; traversal is a security event."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for path in (
            "notes.txt",
            "missing.mp3",
            "..%2f..%2fetc%2fpasswd",
            "Artist/../../x.mp3",
            ".hidden.mp3",
        ):
            code, _, body = await self.get(f"/api/v1/waveform/{path}")
            self.assertEqual((code, json.loads(body)["error"]["code"]), (404, "NOT_FOUND"), path)
            self.assertNotIn(str(self.root).encode(), body)
        self.assertIn("path_refused", [e.get("kind") for e in events if e.get("event_kind") == "security"])

    async def test_conditional(self) -> None:
        """The ETag revalidates: If-None-Match answers 304 without a body."""
        _, headers, _ = await self.get(self.url("waveform"))
        (etag,) = headers.getRawHeaders(b"etag")
        code, _, body = await self.get(self.url("waveform"), **{"If-None-Match": etag.decode()})
        self.assertEqual((code, body), (304, b""))

    async def test_spectrum_peaks_at_the_tone(self) -> None:
        """A 1 kHz tone's average spectrum peaks at 1 kHz; the PNG is a PNG."""
        code, _, body = await self.get(self.url("spectrum"))
        self.assertEqual(code, 200, body)
        doc = json.loads(body)
        self.assertLessEqual(abs(doc["peak_hz"] - 1000.0), 2 * 44100 / 4096)
        code, headers, body = await self.get(self.url("spectrum", "format=png&height=64"))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"image/png"])
        self.assertTrue(body.startswith(b"\x89PNG\r\n\x1a\n"))

    async def test_spectrogram_grid_and_axes(self) -> None:
        """JSON has a frames x bins log-frequency spectrogram (not with spectrogram=0); axes widen the PNG."""
        code, _, body = await self.get(self.url("spectrum", "frames=16&bins=32"))
        self.assertEqual(code, 200, body)
        grid = json.loads(body)["spectrogram"]
        self.assertEqual((grid["bins"], grid["scale"], len(grid["db"][0])), (32, "log", 32))
        self.assertLessEqual(grid["frames"], 16)
        loudest = max(range(32), key=lambda row: sum(frame[row] for frame in grid["db"]))
        self.assertLess(abs(math.log(grid["frequencies_hz"][loudest] / 1000.0)), 0.25)
        code, _, body = await self.get(self.url("spectrum", "spectrogram=0"))
        self.assertNotIn("spectrogram", json.loads(body))
        code, _, body = await self.get(self.url("spectrum", "frames=3000"))
        self.assertEqual(json.loads(body)["error"]["message"], "frames must be within 1..2000")
        code, _, body = await self.get(self.url("spectrum", "format=png&axes=true&width=100&height=64"))
        self.assertEqual(code, 200)
        self.assertEqual(struct.unpack(">II", body[16:24]), (100 + 40, 64 + 20))

    async def test_artwork_from_folder(self) -> None:
        """The cover beside the track is served as an image with a validator."""
        code, headers, body = await self.get(self.url("artwork"))
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"image/png"])
        self.assertTrue(body.startswith(b"\x89PNG"))

    async def test_signed_url_clamps_caching(self) -> None:
        """A signed waveform URL (for peaks.js) is served, cacheable no longer than it is valid."""
        expires = int(reactor.seconds()) + 120
        target = urlsplit(sign_url("http://x", f"/api/v1/waveform/{TRACK}", keys=KEYS, expires=expires))
        code, headers, body = await self.get(target.path + "?" + target.query)
        self.assertEqual(code, 200, body)
        (cache_control,) = headers.getRawHeaders(b"cache-control")
        self.assertLessEqual(int(cache_control.split(b"max-age=")[1]), 120)
        tampered = target.path + "?" + target.query.replace("expires=", "expires=1")
        code, _, body = await self.get(tampered)
        self.assertEqual((code, json.loads(body)["error"]["code"]), (403, "SIGNATURE_INVALID"))


class CatalogRoutesTests(unittest.TestCase):
    """``/api/v1/tracks`` and the catalog's gate on /stream and the media routes."""

    timeout = 120

    async def asyncSetUp(self) -> None:
        from mutagen.flac import FLAC

        from streamsrv.audio.catalog import Catalog
        from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool

        self.root = Path(self.mktemp()).resolve()
        (self.root / "Artist" / "Album").mkdir(parents=True)
        for n, title in enumerate(("Morning", "Noon", "Night"), 1):
            path = self.root / "Artist" / "Album" / f"0{n} {title}.flac"
            write_tone(path, "flac", seconds=1.0)
            tags = FLAC(path)
            tags.update({"title": title, "artist": "Artist", "album": "Album", "tracknumber": str(n)})
            tags.save()
        self.catalog = Catalog(
            Path(self.mktemp()), self.root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool()
        )
        await self.catalog.open()
        self.addCleanup(self.catalog.close)
        await self.catalog.scan()
        # Arrive after the scan: on disk, not (yet) in the catalog; one of them is no audio.
        write_tone(self.root / "Artist" / "Album" / "04 Late.flac", "flac", seconds=1.0)
        (self.root / "Artist" / "Album" / "05 Broken.flac").write_bytes(b"not flac at all" * 10)
        pool = WorkerPool(reactor, size=1, max_queue=4, eager=False)
        pool.startService()
        self.addCleanup(pool.stopService)
        library = MediaLibrary(
            self.root,
            catalog=self.catalog,
            pool=pool,
            cache=ArtifactCache(Path(self.mktemp()), 1 << 24, threads=InlineThreads()),
        )
        guard = Guard(
            verifier=None, url_keys=(), url_max_ttl_s=60, revocations=None, limiter=None,
            policies=DEFAULT_POLICIES, anonymous=anonymous_principal(DEFAULT_ROLES), clock=reactor,
        )  # fmt: skip
        self.built = build_site(
            self.root,
            clock=reactor,
            guard=guard,
            media=library,
            is_audio=self.catalog.is_audio,
            index_missing=self.catalog.index_missing,
        )
        self.stub = stub_for(self.built)

    async def get_json(self, target: str) -> tuple[int, Any]:
        d = self.stub.get("http://streamsrv.test" + target)
        response = await settle(self.stub, d)
        body = await settle(self.stub, response.content())
        return response.code, json.loads(body)

    async def test_listing_and_search(self) -> None:
        """Items in path order with DESIGN's fields; q matches titles case-insensitively; cursors page."""
        await self.asyncSetUp()
        code, page = await self.get_json("/api/v1/tracks?limit=2")
        self.assertEqual(code, 200)
        self.assertEqual([item["title"] for item in page["items"]], ["Morning", "Noon"])
        self.assertIsNotNone(page["next_cursor"])
        code, rest = await self.get_json(f"/api/v1/tracks?limit=2&cursor={page['next_cursor']}")
        self.assertEqual(([i["title"] for i in rest["items"]], rest["next_cursor"]), (["Night"], None))
        code, found = await self.get_json("/api/v1/tracks?q=nIGHT")
        self.assertEqual([i["path"] for i in found["items"]], ["Artist/Album/03 Night.flac"])
        item = found["items"][0]
        for field in ("path", "title", "artist", "album", "duration_s", "codec", "sample_rate", "etag"):
            self.assertIn(field, item)

    async def test_bad_listing_parameters(self) -> None:
        """limit out of bounds, a forged cursor or a repeated parameter: 400."""
        await self.asyncSetUp()
        for query in ("limit=0", "limit=201", "limit=x", "cursor=not-a-cursor", "q=a&q=b", "q=" + "x" * 600):
            code, body = await self.get_json(f"/api/v1/tracks?{query}")
            self.assertEqual((code, body["error"]["code"]), (400, "BAD_REQUEST"), query)

    async def test_track_metadata(self) -> None:
        """One track's metadata; a track on disk the catalog does not know yet is read on demand;
        an unreadable one, a missing one, a traversal and a directory are 404."""
        await self.asyncSetUp()
        code, track = await self.get_json("/api/v1/tracks/" + quote("Artist/Album/02 Noon.flac"))
        self.assertEqual((code, track["title"], track["track_number"]), (200, "Noon", 2))
        code, late = await self.get_json("/api/v1/tracks/" + quote("Artist/Album/04 Late.flac"))
        self.assertEqual((code, late["path"], late["codec"]), (200, "Artist/Album/04 Late.flac", "flac"))
        self.assertTrue(self.catalog.is_audio("Artist/Album/04 Late.flac"))
        for path in (
            "Artist/Album/05%20Broken.flac",
            "Artist/Album/06%20Missing.flac",
            "..%2f..%2fetc%2fpasswd",
            "Artist/Album",
        ):
            code, body = await self.get_json(f"/api/v1/tracks/{path}")
            self.assertEqual((code, body["error"]["code"]), (404, "NOT_FOUND"), path)
        self.assertIn("Artist/Album/05 Broken.flac", self.catalog.failures())
        code, body = await self.get_json("/api/v1/waveform/" + quote("Artist/Album/05 Broken.flac"))
        self.assertEqual(code, 404)

    async def test_stream_serves_tracks_not_catalogued_yet(self) -> None:
        """/stream reads an audio file the catalog does not know yet and serves it (the scan
        then persists it and announces it once, as added); an unreadable one is 404."""
        await self.asyncSetUp()
        events: list[Any] = []
        self.catalog.subscribe(events.append)
        d = self.stub.get("http://streamsrv.test/stream/" + quote("Artist/Album/01 Morning.flac"))
        self.assertEqual((await settle(self.stub, d)).code, 200)
        late = self.root / "Artist" / "Album" / "04 Late.flac"
        d = self.stub.get("http://streamsrv.test/stream/" + quote("Artist/Album/04 Late.flac"))
        response = await settle(self.stub, d)
        self.assertEqual(response.code, 200)
        self.assertEqual(await settle(self.stub, response.content()), late.read_bytes())
        self.assertEqual([(e.kind, e.path) for e in events], [("added", "Artist/Album/04 Late.flac")])
        code, body = await self.get_json("/stream/" + quote("Artist/Album/05 Broken.flac"))
        self.assertEqual((code, body["error"]["code"]), (404, "NOT_FOUND"))
        summary = await self.catalog.scan()
        self.assertEqual((summary.added, summary.unchanged, summary.failed), (0, 4, 1))
        self.assertEqual(len(events), 1)

"""REDbot's verdict on every cacheable GET route, as assertions.

REDbot (the HTTP linter) flagged gzip answers without ``Vary:
Accept-Encoding``, one ETag for the gzip and the identity representation,
JPEG artwork gzipped, and the HLS master and ``/openapi.json`` without
validators or ``Cache-Control``.  This table runs the same checks on every
route: each GET with and without ``Accept-Encoding: gzip``, a HEAD, and a
revalidation with each form of the entity-tag, on the bytes the daemon's
own site writes (a real protocol, so nothing decodes or adds headers).

The media routes are warmed first through StubTreq (their first answer
waits for the worker pool); the checked answers come from the artifact
cache, synchronously.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from streamsrv.audio.library import MediaLibrary
from streamsrv.audio.workers import WorkerPool
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.middleware.compression import (
    accepts_gzip,
    compressible,
    gzip_etag,
    identity_if_none_match,
)
from streamsrv.threads import InlineThreads
from streamsrv.web.factory import make_hls
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, parse_head, scanned_catalog, site_settings, stub_for
from tests.test_catalog import result
from tests.test_media_api import settle

TRACK = "Artist/Album/01 Tone.flac"

#: A JPEG that gzip cannot shrink (random bytes after the markers).
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes((i * 7919) % 251 for i in range(4000)) + b"\xff\xd9"

#: Every cacheable GET route: target, whether gzip applies, Cache-Control expected.
ROUTES: list[tuple[str, bool, str]] = [
    ("/api/v1/tracks", True, "private, no-cache"),
    (f"/api/v1/tracks/{quote(TRACK)}", True, "private, no-cache"),
    (f"/api/v1/waveform/{quote(TRACK)}", True, "private, max-age=3600"),
    (f"/api/v1/waveform/{quote(TRACK)}?format=dat", False, "private, max-age=3600"),
    (f"/api/v1/spectrum/{quote(TRACK)}", True, "private, max-age=3600"),
    (f"/api/v1/spectrum/{quote(TRACK)}?format=png", False, "private, max-age=3600"),
    (f"/api/v1/artwork/{quote(TRACK)}", False, "private, max-age=3600"),
    ("/openapi.json", True, "max-age=300"),
    ("/", True, "max-age=300"),
    (f"/hls/{quote(TRACK)}/master.m3u8", True, "private, no-cache"),
]


def _decoded(headers: dict[str, str], body: bytes) -> bytes:
    """The body without chunked framing and content coding."""
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while body:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, body = out + body[:size], body[size + 2 :]
        body = out
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return body


def exchange(built: Any, method: str, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request's raw answer on a real protocol, closed afterwards (no timeout left behind)."""
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
    proto = built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    proto.makeConnection(transport)
    proto.dataReceived(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode("latin-1"))
    raw = transport.value()
    proto.connectionLost(Failure(ConnectionDone()))
    return parse_head(raw)


class HeaderPolicyTests(unittest.SynchronousTestCase):
    """The pure parts: what compresses, what accepts gzip, the two ETag forms."""

    def test_compressible(self) -> None:
        """JSON, text, m3u8, SVG compress; images and audio never."""
        for ctype in (b"application/json; charset=utf-8", b"text/plain", b"application/vnd.apple.mpegurl",
                      b"image/svg+xml", b"application/problem+json"):  # fmt: skip
            self.assertTrue(compressible(ctype), ctype)
        for ctype in (b"image/jpeg", b"image/png", b"audio/mpeg", b"application/octet-stream", None, b""):
            self.assertFalse(compressible(ctype), ctype)

    def test_accepts_gzip(self) -> None:
        """gzip with a non-zero weight, or * when gzip is not named; q=0 refuses."""
        for header in (b"gzip", b"deflate, gzip;q=0.5", b"*", b"br;q=1, *;q=0.1", b"x-gzip", b"GZIP"):
            self.assertTrue(accepts_gzip(header), header)
        for header in (None, b"", b"identity", b"gzip;q=0", b"gzip;q=0.000", b"*;q=0", b"*, gzip;q=0",
                       b"gzip;q=nope"):  # fmt: skip
            self.assertFalse(accepts_gzip(header), header)

    def test_etag_forms(self) -> None:
        """The gzip ETag is the identity one with -gzip inside the quotes; If-None-Match folds it back."""
        self.assertEqual(gzip_etag(b'"abc"'), b'"abc-gzip"')
        self.assertEqual(gzip_etag(b'W/"abc"'), b'W/"abc-gzip"')
        self.assertEqual(identity_if_none_match('"abc-gzip", W/"x-gzip", "y"'), '"abc", W/"x", "y"')
        self.assertIsNone(identity_if_none_match(None))


class RouteHeaderTests(unittest.TestCase):
    """Vary, distinct ETags, compression only where it helps, validators and caching on every route."""

    timeout = 180

    async def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "Artist" / "Album").mkdir(parents=True)
        write_tone(self.root / TRACK, "flac", seconds=2.0, freq=1000.0)
        (self.root / "Artist" / "Album" / "cover.jpg").write_bytes(JPEG)
        catalog = scanned_catalog(self, self.root)
        self.pool = WorkerPool(reactor, size=1, max_queue=8)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        cache = ArtifactCache(Path(self.mktemp()), 64 * 1024 * 1024, threads=InlineThreads())
        library = MediaLibrary(self.root, catalog=catalog, pool=self.pool, cache=cache)
        self.built = build_site(self.root, clock=reactor, media=library, is_audio=catalog.is_audio)
        self.built.site.resource._media[b"hls"] = make_hls(
            site_settings(),
            self.root,
            url_keys=(),
            guard=self.built.guard,
            pool=self.pool,
            cache=cache,
            clock=reactor,
            catalog=catalog,
        )
        stub = stub_for(self.built)
        for target, _gzip, _cache in ROUTES:
            response = await settle(stub, stub.get("http://streamsrv.test" + target))
            await settle(stub, response.content())
            self.assertEqual(response.code, 200, target)

    def exchange(self, method: str, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return exchange(self.built, method, target, **headers)

    def check_route(self, target: str, gzips: bool, cache_control: str) -> None:
        plain_status, plain, plain_body = self.exchange("GET", target)
        gz_status, gz, gz_body = self.exchange("GET", target, Accept_Encoding="gzip")
        self.assertEqual((plain_status, gz_status), (200, 200), target)
        self.assertEqual(_decoded(gz, gz_body), _decoded(plain, plain_body), target)
        for head in (plain, gz):
            self.assertIn("etag", head, target)
            self.assertEqual(head.get("cache-control"), cache_control, target)
        self.assertNotIn("content-encoding", plain, target)
        if gzips:
            self.assertEqual(gz.get("content-encoding"), "gzip", target)
            for head in (plain, gz):
                self.assertIn("accept-encoding", head.get("vary", "").lower(), target)
            self.assertEqual(gz["etag"].encode(), gzip_etag(plain["etag"].encode()), target)
        else:
            self.assertNotIn("content-encoding", gz, target)
            self.assertEqual(gz["etag"], plain["etag"], target)
        # HEAD describes the same representation as GET.
        _, head_gz, head_body = self.exchange("HEAD", target, Accept_Encoding="gzip")
        self.assertEqual(head_body, b"", target)
        for name in ("etag", "vary", "content-encoding", "cache-control", "content-type"):
            self.assertEqual(head_gz.get(name), gz.get(name), (target, name))
        # Either form of the ETag revalidates; the 304 carries the form of the selected representation.
        for held in (plain["etag"], gz["etag"]):
            for accept, selected in (("gzip", gz), ("identity", plain)):
                status, head, body = self.exchange("GET", target, Accept_Encoding=accept, If_None_Match=held)
                self.assertEqual((status, body), (304, b""), (target, held, accept))
                self.assertEqual(head.get("etag"), selected["etag"], (target, held, accept))
                self.assertEqual(head.get("vary"), selected.get("vary"), (target, held, accept))
                self.assertEqual(head.get("cache-control"), cache_control, (target, held, accept))
        status, _, _ = self.exchange("GET", target, Accept_Encoding="gzip", If_None_Match='"other"')
        self.assertEqual(status, 200, target)

    def test_every_route(self) -> None:
        """Each route of the table passes REDbot's checks on validators, Vary, ETags and compression."""
        for target, gzips, cache_control in ROUTES:
            self.check_route(target, gzips, cache_control)

    def test_jpeg_not_gzipped(self) -> None:
        """JPEG artwork is sent as it is to a client that accepts gzip (it would only grow)."""
        _, head, body = self.exchange("GET", f"/api/v1/artwork/{quote(TRACK)}", Accept_Encoding="gzip")
        self.assertEqual(head["content-type"], "image/jpeg")
        self.assertNotIn("content-encoding", head)
        self.assertEqual(_decoded(head, body), JPEG)


class ListingValidatorTests(unittest.TestCase):
    """The track listing's ETag follows the catalog: 304 while nothing changed, 200 once a track is added."""

    def test_generation_etag(self) -> None:
        """Revalidation answers 304 until a scan adds a track; the query is part of the validator."""
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        write_tone(root / "a.wav", "wav", seconds=0.2)
        catalog = scanned_catalog(self, root)
        library = MediaLibrary(root, catalog=catalog, pool=None, cache=None)  # type: ignore[arg-type]
        built = build_site(root, media=library, is_audio=catalog.is_audio)
        status, head, _ = exchange(built, "GET", "/api/v1/tracks")
        self.assertEqual(status, 200)
        etag = head["etag"]
        self.assertEqual(exchange(built, "GET", "/api/v1/tracks", If_None_Match=etag)[0], 304)
        self.assertNotEqual(exchange(built, "GET", "/api/v1/tracks?limit=1")[1]["etag"], etag)
        write_tone(root / "b.wav", "wav", seconds=0.2)
        result(catalog.scan())
        status, head, body = exchange(built, "GET", "/api/v1/tracks", If_None_Match=etag)
        self.assertEqual(status, 200)
        self.assertNotEqual(head["etag"], etag)
        self.assertIn(b"b.wav", _decoded(head, body))

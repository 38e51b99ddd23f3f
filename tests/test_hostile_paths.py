"""One table of hostile request paths against every route that takes a track path.

``/stream``, ``/hls`` and each ``/api/v1/*`` route that names a track get
the same raw request lines (sent as bytes on a real protocol, so no client
normalises them first): doubled and encoded slashes, ``..`` in every
spelling, NUL and control characters, backslashes, bytes that are not
UTF-8, overlong paths.  (Raw bytes that are not ASCII on the request line
are the HTTP parser's to refuse, with a plain 400, as DESIGN allows.)
Every answer must be the contract's JSON 404 ``NOT_FOUND`` with
``X-Request-ID`` — never a redirect, never HTML, never the path — and every
hostile one a security event for that request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.analytics.api import AnalyticsApi
from streamsrv.audio.library import MediaLibrary
from streamsrv.web.analytics import AnalyticsRoutes
from streamsrv.web.factory import make_hls
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, jwt_guard, parse_head, raw_exchange, scanned_catalog, site_settings
from tests.test_paths import REFUSED

SECRET = "a-hostile-paths-test-secret-long-enough-0123456789"

#: Route prefix and suffix around the track path.
ROUTES: list[tuple[bytes, bytes]] = [
    (b"/stream/", b""),
    (b"/hls/", b"/master.m3u8"),
    (b"/api/v1/tracks/", b""),
    (b"/api/v1/artwork/", b""),
    (b"/api/v1/waveform/", b""),
    (b"/api/v1/spectrum/", b""),
    (b"/api/v1/analytics/tracks/", b""),
]

#: Raw track paths (after the route prefix) and whether each is hostile (a
#: security event).  The path battery of ``tests.test_paths`` (less what an
#: HTTP request line cannot carry: whitespace), and what the router used to
#: answer outside the error model: a doubled slash and an encoded slash
#: (308 with an HTML page), bytes that are not UTF-8 (400 ``text/html``).
HOSTILE: list[tuple[bytes, bool]] = [
    *((raw, reason != "empty path") for raw, reason in REFUSED if not any(c in raw for c in b" \t")),
    (b"/etc/passwd", True),
    (b"Artist//../../etc/passwd", True),
    (b"%2fetc%2fpasswd", True),
    (b"%2Fetc/passwd", True),
    (b"%ff%fe%fd.mp3", True),
    (b"a%00", True),
    (b"%5c..%5c..%5cetc%5cpasswd", True),
    (b"x" * 5000 + b".mp3", True),
]

#: What no error body may contain.
LEAKS = (b"passwd", b"Traceback", b"/etc")


class HostilePathTests(unittest.TestCase):
    """The same hostile-path table on /stream, /hls and every path-taking /api/v1 route."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        (self.root / "Artist").mkdir(parents=True)
        write_tone(self.root / "Artist" / "tone.flac", "flac", seconds=0.5)
        catalog = scanned_catalog(self, self.root)
        # Nothing below the path checks runs for these requests: no pool, no cache, no store.
        library = MediaLibrary(self.root, catalog=catalog, pool=None, cache=None)  # type: ignore[arg-type]
        clock = Clock()
        clock.advance(1_767_225_600)
        issuer, guard = jwt_guard(SECRET, clock)
        self.token = issuer.issue(sub="root", roles=["admin"], ttl_s=600).encode("ascii")
        self.built = build_site(self.root, clock=clock, guard=guard, media=library, is_audio=catalog.is_audio)
        self.built.api._analytics = AnalyticsRoutes(AnalyticsApi(None, clock), clock)  # type: ignore[arg-type]
        hls = make_hls(
            site_settings(),
            self.root,
            url_keys=(),
            guard=guard,
            pool=None,
            cache=None,
            clock=clock,
            catalog=catalog,
        )
        self.built.site.resource._media[b"hls"] = hls
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def exchange(self, target: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one GET for the raw *target*; the status, headers and body."""
        raw = raw_exchange(
            self.built,
            b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + self.token + b"\r\n\r\n",
        )
        return parse_head(raw)

    def security_kinds(self, request_id: str) -> list[str]:
        return [
            e.get("kind", "")
            for e in self.events
            if e.get("event_kind") == "security" and e.get("request_id") == request_id
        ]

    def test_control(self) -> None:
        """The table's control: the real track is served by every route that has no missing part."""
        for target in (b"/stream/Artist/tone.flac", b"/api/v1/tracks/Artist/tone.flac"):
            status, _headers, _body = self.exchange(target)
            self.assertEqual(status, 200, target)

    def test_table_size(self) -> None:
        """The table holds every hostile spelling of the path battery and the router's own cases."""
        self.assertGreaterEqual(len(HOSTILE), 55)

    def test_every_route_refuses_every_path(self) -> None:
        """Every route answers every hostile path: JSON 404 NOT_FOUND, X-Request-ID, a security event."""
        for prefix, suffix in ROUTES:
            for raw, hostile in HOSTILE:
                target = prefix + raw + suffix
                label = target[:120]
                status, headers, body = self.exchange(target)
                self.assertEqual(status, 404, label)
                self.assertEqual(headers.get("content-type"), "application/json; charset=utf-8", label)
                self.assertNotIn("location", headers, label)
                error = json.loads(body)["error"]
                self.assertEqual(error["code"], "NOT_FOUND", label)
                self.assertEqual(error["request_id"], headers["x-request-id"], label)
                for leak in (*LEAKS, str(self.root).encode()):
                    self.assertNotIn(leak, body, label)
                if hostile:
                    self.assertIn("path_refused", self.security_kinds(error["request_id"]), label)

    def test_router_never_redirects(self) -> None:
        """Paths the router itself refuses (no route matches) are JSON 404s, a security event when hostile."""
        for target, hostile in [
            (b"/api//v1/tracks", True),
            (b"//api/v1/tracks", True),
            (b"/api/v1%2ftracks", True),
            (b"/api/v1/tracks/", False),
            (b"/api/v1/nope/%ff%fe", True),
            (b"/api/v1/nope/..%2f..%2fetc", True),
            (b"/openapi.json/", False),
        ]:
            status, headers, body = self.exchange(target)
            self.assertEqual(status, 404, target)
            self.assertNotIn("location", headers, target)
            error = json.loads(body)["error"]
            self.assertEqual(
                (error["code"], error["request_id"]), ("NOT_FOUND", headers["x-request-id"]), target
            )
            self.assertEqual("path_refused" in self.security_kinds(error["request_id"]), hostile, target)

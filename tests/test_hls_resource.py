"""``/hls/…`` through a real site: admission, signed child URIs, path safety, segments, caching.

Real audio written with PyAV, a real worker pool (one spawned process) and a
real artifact cache in a temporary directory; requests go through
:class:`~streamsrv.web.site.StreamsrvSite` and the guard, so signed URLs,
JWTs, path refusals and JSON errors are the daemon's own.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit

import m3u8
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource

from streamsrv.audio.workers import WorkerPool
from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import sign_url, verify
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.health.metrics import Metrics
from streamsrv.hls.playlists import aac_ladder
from streamsrv.hls.resource import HlsResource
from streamsrv.hls.segments import AAC_LADDER
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.threads import InlineThreads
from streamsrv.web.site import StreamsrvSite
from tests.audiogen import write_samples
from tests.sitehelpers import parse_head, stub_for
from tests.test_guard import KEYS, SECRET
from tests.test_hls_segments import music
from tests.test_media_api import settle

TRACK = "Artist/Album/01 Tone.flac"
#: 13 s: two full segments and a short third.
SECONDS = 13.0


class HlsSite:
    """A site with ``/hls`` mounted over a temporary library, a pool and a cache."""

    def __init__(
        self,
        case: unittest.TestCase,
        *,
        url_keys: Any = KEYS,
        anonymous: bool = True,
        pool_size: int = 1,
        ladder: Any = AAC_LADDER,
    ) -> None:
        self.root = Path(case.mktemp()).resolve()
        (self.root / "Artist" / "Album").mkdir(parents=True)
        write_samples(self.root / TRACK, "flac", music(SECONDS), 44100)
        (self.root / "notes.txt").write_text("not audio")
        (self.root / ".hidden.flac").write_bytes((self.root / TRACK).read_bytes())
        self.pool = WorkerPool(reactor, size=pool_size, max_queue=16)
        self.pool.startService()
        case.addCleanup(self.pool.stopService)
        self.cache = ArtifactCache(Path(case.mktemp()), 64 * 1024 * 1024, threads=InlineThreads())
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=reactor
        )
        verifier = JwtVerifier(
            secret=SECRET,
            public_key_pem=None,
            jwks=None,
            issuer=None,
            audience=None,
            leeway_s=30,
            clock=reactor,
            roles=DEFAULT_ROLES,
        )
        self.guard = Guard(
            verifier=verifier,
            url_keys=KEYS,
            url_max_ttl_s=604800,
            revocations=None,
            limiter=None,
            policies=DEFAULT_POLICIES,
            anonymous=anonymous_principal(DEFAULT_ROLES) if anonymous else None,
            clock=reactor,
        )
        self.metrics = Metrics(process=False)
        self.segments_seen: list[tuple[str, int, int]] = []
        self.hls = HlsResource(
            self.root,
            guard=self.guard,
            pool=self.pool,
            cache=self.cache,
            url_keys=url_keys,
            clock=reactor,
            metrics=self.metrics,
            on_segment=lambda request, track, n, sent: self.segments_seen.append((track, n, sent)),
            ladder=ladder,
        )
        root = Resource()
        root.putChild(b"hls", self.hls)
        self.site = StreamsrvSite(root, metrics=self.metrics, clock=reactor)
        self.stub = stub_for(self)  # type: ignore[arg-type]

    async def get(self, target: str, **headers: str) -> tuple[int, Any, bytes]:
        d = self.stub.get("http://streamsrv.test" + target, headers={k: [v] for k, v in headers.items()})
        response = await settle(self.stub, d)
        body = await settle(self.stub, response.content())
        return response.code, response.headers, body

    def token(self, roles: tuple[str, ...] = ("listener",), sub: str = "alice") -> str:
        return self.issuer.issue(sub=sub, roles=list(roles), ttl_s=900)

    def signed(self, path: str, seconds: int = 600, **bound: str) -> str:
        """A signed request target (path and query) for the decoded *path*."""
        url = urlsplit(
            sign_url("http://x", path, keys=KEYS, expires=int(reactor.seconds()) + seconds, bound=bound)
        )
        return f"{url.path}?{url.query}"

    async def settle_prefetch(self) -> None:
        """Wait for the background encodes started by the last segment request."""
        while self.hls.prefetching:
            await settle(self.stub, gatherResults(list(self.hls.prefetching), consumeErrors=True))


def master_path() -> str:
    return f"/hls/{TRACK}/master.m3u8"


class HlsResourceTests(unittest.TestCase):
    """The ``/hls`` routes through the real site."""

    timeout = 120

    def setUp(self) -> None:
        self.hls = HlsSite(self)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def code(self, body: bytes) -> str:
        return json.loads(body)["error"]["code"]

    def check_child(self, base_target: str, uri: str) -> str:
        """*uri* is relative, and its query verifies with the server's keys for the path it resolves to."""
        self.assertNotIn("://", uri)
        self.assertFalse(uri.startswith("/"), uri)
        resolved = urlsplit(urljoin("http://streamsrv.test" + base_target, uri))
        pairs = parse_qsl(resolved.query, keep_blank_values=True)
        names = [name for name, _ in pairs]
        self.assertIn("kid", names)
        verify(unquote(resolved.path), pairs, keys=KEYS, now=reactor.seconds(), max_ttl_s=604800)
        return f"{resolved.path}?{resolved.query}"

    async def test_signed_master_lists_signed_children(self) -> None:
        """A signed master answers the AAC ladder with relative child URIs signed with the server's key."""
        target = self.hls.signed(master_path())
        code, headers, body = await self.hls.get(target)
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/vnd.apple.mpegurl"])
        self.assertEqual(headers.getRawHeaders(b"cross-origin-resource-policy"), [b"cross-origin"])
        self.assertIn(b"no-cache", headers.getRawHeaders(b"cache-control")[0])
        playlist = m3u8.loads(body.decode())
        self.assertTrue(playlist.is_variant)
        self.assertEqual(len(playlist.playlists), 4)  # no lossless rung without hq=1
        for child in playlist.playlists:
            self.assertEqual(child.stream_info.codecs, "mp4a.40.2")
            self.check_child(target.partition("?")[0], child.uri)

    async def test_whole_chain_plays_with_child_credentials_only(self) -> None:
        """Media playlist, init and every segment answer with the credentials the playlists carry."""
        anonymous_off = HlsSite(self, anonymous=False)
        master = anonymous_off.signed(master_path())
        code, _, body = await anonymous_off.get(master)
        self.assertEqual(code, 200, body)
        variant = m3u8.loads(body.decode()).playlists[1]
        media_target = self.check_child(master.partition("?")[0], variant.uri)
        code, headers, body = await anonymous_off.get(media_target)
        self.assertEqual(code, 200, body)
        media = m3u8.loads(body.decode())
        self.assertEqual(len(media.segments), 3)
        base = media_target.partition("?")[0]
        init_target = self.check_child(base, media.segment_map[0].uri)
        code, headers, init = await anonymous_off.get(init_target)
        self.assertEqual(code, 200, init)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"audio/mp4"])
        self.assertEqual(init[4:8], b"ftyp")
        for segment in media.segments:
            segment_target = self.check_child(base, segment.uri)
            code, headers, data = await anonymous_off.get(segment_target)
            self.assertEqual(code, 200, data)
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"audio/mp4"])
            self.assertEqual(data[4:8], b"moof")
            (cache_control,) = headers.getRawHeaders(b"cache-control")
            self.assertTrue(cache_control.startswith(b"private, max-age="))
            expires = int(dict(parse_qsl(segment_target.partition("?")[2]))["expires"])
            self.assertLessEqual(int(cache_control.split(b"=")[1]), expires - int(reactor.seconds()) + 1)
            self.assertTrue(headers.getRawHeaders(b"etag"))
            await anonymous_off.settle_prefetch()
        self.assertEqual([n for _, n, _ in anonymous_off.segments_seen], [0, 1, 2])
        # Without credentials, nothing is served.
        code, _, body = await anonymous_off.get(base)
        self.assertEqual((code, self.code(body)), (401, "UNAUTHENTICATED"))

    async def test_tampered_and_expired(self) -> None:
        """A tampered signature is 403 SIGNATURE_INVALID; a child URI of another variant does not transfer."""
        target = self.hls.signed(master_path())
        code, _, body = await self.hls.get(target.replace("expires=", "expires=1"))
        self.assertEqual((code, self.code(body)), (403, "SIGNATURE_INVALID"))
        _, _, body = await self.hls.get(target)
        child = m3u8.loads(body.decode()).playlists[0].uri  # 64k/index.m3u8?…
        moved = f"/hls/{quote(TRACK)}/160k/index.m3u8?" + child.partition("?")[2]
        code, _, body = await self.hls.get(moved)
        self.assertEqual((code, self.code(body)), (403, "SIGNATURE_INVALID"))
        self.assertIn("signature_invalid", [e.get("kind") for e in self.events if e.get("event_kind")])

    async def test_jwt_master_binds_uid_and_hq_rung(self) -> None:
        """A premium JWT gets the lossless rung; its children are signed and bind the token's sub as uid."""
        token = self.hls.token(("premium",), sub="bob")
        code, _, body = await self.hls.get(
            f"/hls/{quote(TRACK)}/master.m3u8", Authorization=f"Bearer {token}"
        )
        self.assertEqual(code, 200, body)
        playlist = m3u8.loads(body.decode())
        codecs = [p.stream_info.codecs for p in playlist.playlists]
        self.assertEqual(codecs, ["mp4a.40.2"] * 4 + ["fLaC"])
        lossless = playlist.playlists[-1].uri
        self.assertTrue(lossless.startswith("flac/index.m3u8?"))
        self.assertIn(("uid", "bob"), parse_qsl(lossless.partition("?")[2]))
        resolved = self.check_child(f"/hls/{quote(TRACK)}/master.m3u8", lossless)
        code, _, body = await self.hls.get(resolved)
        self.assertEqual(code, 200, body)
        # A listener's token gets no lossless rung, and cannot fetch it directly.
        listener = self.hls.token()
        _, _, body = await self.hls.get(
            f"/hls/{quote(TRACK)}/master.m3u8", Authorization=f"Bearer {listener}"
        )
        self.assertNotIn(b"fLaC", body)
        code, _, body = await self.hls.get(
            f"/hls/{quote(TRACK)}/flac/index.m3u8", Authorization=f"Bearer {listener}"
        )
        self.assertEqual((code, self.code(body)), (403, "FORBIDDEN"))

    async def test_signed_master_hq_only_when_bound(self) -> None:
        """A signed master lists the lossless rung only when the backend bound ``hq=1``."""
        code, _, body = await self.hls.get(self.hls.signed(master_path(), hq="1"))
        self.assertEqual(code, 200, body)
        self.assertIn(b'CODECS="fLaC"', body)

    async def test_hostile_and_unknown_paths(self) -> None:
        """Traversal is 404 and a security event; non-audio, dotfiles, bad variants and numbers are 404."""
        for path in (
            "/hls/..%2f..%2fetc%2fpasswd/master.m3u8",
            "/hls/Artist/../../x.flac/master.m3u8",
            "/hls/notes.txt/master.m3u8",
            "/hls/.hidden.flac/master.m3u8",
            f"/hls/{quote(TRACK)}/320k/index.m3u8",
            f"/hls/{quote(TRACK)}/128k/3.m4s",
            f"/hls/{quote(TRACK)}/128k/01.m4s",
            f"/hls/{quote(TRACK)}/128k/x.m4s",
            f"/hls/{quote(TRACK)}",
            f"/hls/{quote(TRACK)}/128k/",
        ):
            code, _, body = await self.hls.get(path)
            self.assertEqual((code, self.code(body)), (404, "NOT_FOUND"), path)
            self.assertNotIn(str(self.hls.root).encode(), body)
        kinds = [e.get("kind") for e in self.events if e.get("event_kind") == "security"]
        self.assertIn("path_refused", kinds)

    async def test_segment_cached_conditional_and_prefetched(self) -> None:
        """A segment is encoded once, cached, revalidated by ETag; the next ones are prefetched."""
        base = f"/hls/{quote(TRACK)}/96k"
        code, headers, first = await self.hls.get(f"{base}/0.m4s")
        self.assertEqual(code, 200, first)
        await self.hls.settle_prefetch()
        self.assertEqual(len(self.hls.cache), 3)  # segment 0, and 1 and 2 prefetched
        completed = self.hls.pool.completed
        code, headers, again = await self.hls.get(f"{base}/0.m4s")
        self.assertEqual((code, again), (200, first))
        code, _, _ = await self.hls.get(f"{base}/1.m4s")
        self.assertEqual(code, 200)
        self.assertEqual(self.hls.pool.completed, completed)  # served from the cache
        (etag,) = headers.getRawHeaders(b"etag")
        code, _, body = await self.hls.get(f"{base}/0.m4s", **{"If-None-Match": etag.decode()})
        self.assertEqual((code, body), (304, b""))
        metrics = self.hls.metrics.render()
        self.assertIn(b'streamsrv_hls_segment_cache_total{result="hit"}', metrics)

    async def test_concurrent_requests_share_one_encode(self) -> None:
        """Five clients asking for a cold segment at once cost one encode."""
        target = f"/hls/{quote(TRACK)}/64k/2.m4s"
        before = self.hls.pool.completed
        requests = [self.hls.get(target) for _ in range(5)]
        results = [await r for r in requests]
        self.assertEqual({(code, len(body)) for code, _, body in results}, {(200, len(results[0][2]))})
        self.assertEqual(self.hls.pool.completed - before, 2)  # the probe, then one encode

    async def test_head_and_gzip(self) -> None:
        """HEAD has the headers without a body; playlists are gzip-encoded for clients that accept it."""
        await self.hls.get(f"/hls/{quote(TRACK)}/128k/index.m3u8")  # probes the track
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        protocol = self.hls.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(transport)
        target = f"/hls/{quote(TRACK)}/128k/index.m3u8"
        protocol.dataReceived(f"GET {target} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n".encode())
        code, headers, body = parse_head(transport.value())
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            (code, headers["content-encoding"], headers["vary"]), (200, "gzip", "Accept-Encoding")
        )
        self.assertTrue(gzip.decompress(body).startswith(b"#EXTM3U"))
        d = self.hls.stub.head(f"http://streamsrv.test/hls/{quote(TRACK)}/128k/init.mp4")
        response = await settle(self.hls.stub, d)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"audio/mp4"])
        self.assertGreater(int(response.headers.getRawHeaders(b"content-length")[0]), 100)


class HlsUnsignedChildrenTests(unittest.TestCase):
    """Without a URL signing key, children carry no credentials (the player sends its JWT)."""

    timeout = 60

    async def test_plain_children(self) -> None:
        """Child URIs are bare relative names."""
        site = HlsSite(self, url_keys=())
        code, _, body = await site.get(f"/hls/{quote(TRACK)}/master.m3u8")
        self.assertEqual(code, 200, body)
        self.assertEqual(m3u8.loads(body.decode()).playlists[0].uri, "64k/index.m3u8")
        code, _, body = await site.get(f"/hls/{quote(TRACK)}/64k/index.m3u8")
        media = m3u8.loads(body.decode())
        self.assertEqual((media.segment_map[0].uri, media.segments[0].uri), ("init.mp4", "0.m4s"))


class HlsLadderTests(unittest.TestCase):
    """``STREAMSRV_HLS_LADDER``: the rungs a deployment configures are the ones served."""

    timeout = 120

    async def test_configured_ladder(self) -> None:
        """A 48/112 kb/s ladder lists exactly those rungs, lowest first; their segments are
        served at about their bit rate; a default rung that is not configured is 404."""
        site = HlsSite(self, ladder=aac_ladder((112, 48)))
        code, _, body = await site.get(master_path())
        self.assertEqual(code, 200)
        names = [line.split("/")[0] for line in body.decode().splitlines() if not line.startswith("#")]
        self.assertEqual(names, ["48k", "112k"])
        code, _, segment = await site.get(f"/hls/{TRACK}/112k/0.m4s")
        self.assertEqual((code, segment[4:8]), (200, b"moof"))
        code, _, _ = await site.get(f"/hls/{TRACK}/128k/index.m3u8")
        self.assertEqual(code, 404)

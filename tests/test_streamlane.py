"""The ``/stream`` fast lane answers exactly as the full path does, on real loopback sockets.

Every story sends the same raw bytes to two sites built alike, one with the
lane (:mod:`streamsrv.web.streamlane`) and one without, and compares what
came back: status line, every header in order (``Date`` and a generated
``X-Request-ID`` aside), the body; then the metrics, the audit events and the
listening sessions each site recorded.  Requests the lane must leave alone
(a query, ``If-Range``, ``Origin``, several ranges, 416, 401, ``HEAD``...)
are checked to have taken the full path.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import SigningKey, sign_url
from streamsrv.middleware.cors import CorsPolicy
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import MemoryRateLimiter, Policies, Policy
from streamsrv.processes.identity import identify_worker
from streamsrv.streaming.durations import TrackDurations
from streamsrv.web.streamlane import StreamLane
from tests.sitehelpers import BuiltSite, build_site
from tests.test_sockets import media_fds

SECRET = "stream-lane-test-secret-0123456789abcdef"
KEY = SigningKey("k1", b"stream-lane-url-key-0123456789abcdef")
SIZE = 3 * 1024 * 1024 + 77
SMALL = 40_192
#: Roomy limits that refill slowly, so ``RateLimit-Remaining`` is the same on both sites.
POLICIES = Policies(
    api_ip=Policy("api_ip", 100_000, 86400.0),
    api_user=Policy("api_user", 100_000, 86400.0),
    stream_ip=Policy("stream_ip", 50_000, 86400.0),
    stream_user=Policy("stream_user", 60_000, 86400.0),
)


class _Record:
    def __init__(self, etag: str, duration: float) -> None:
        self.etag = etag
        self.metadata = type("M", (), {"duration_s": duration})()


#: The metric families both sites must agree on.
BOOKS = (
    "streamsrv_requests_total", "streamsrv_file_access", "streamsrv_range", "streamsrv_stream_bytes",
    "streamsrv_streams_aborted", "streamsrv_errors",
)  # fmt: skip


class Client(protocol.Protocol):
    """Sends raw bytes, collects every byte answered until *expect* responses are complete."""

    def __init__(self, raw: bytes, expect: int, stop_after: int | None = None) -> None:
        self.raw = raw
        self.expect = expect
        self.stop_after = stop_after
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.stop_after is not None:
            self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.transport.write(self.raw)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.stop_after is not None and len(self.data) >= self.stop_after:
            self.transport.abortConnection()
            return
        if (
            len(split_responses(self.data, self.raw.startswith(b"HEAD "))) >= self.expect
            and not self.done.called
        ):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.data)


def split_responses(data: bytes, bodiless: bool = False) -> list[tuple[bytes, bytes]]:
    """Complete ``(head, body)`` pairs in *data* (bodies framed by ``Content-Length``; none if *bodiless*)."""
    out = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = data[:end]
        match = re.search(rb"\r\nContent-Length: (\d+)", head)
        length = int(match[1]) if match and not head.startswith(b"HTTP/1.1 304") else 0
        if bodiless:
            length = 0
        if len(data) < end + 4 + length:
            return out
        out.append((head, data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]


def normalised(head: bytes, keep_id: bool) -> bytes:
    """*head* without what differs between two answers by design (``Date``, a generated id, timing)."""
    head = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", head)
    # Seconds until the bucket is full again: it refills with the time between the two sites' requests.
    head = re.sub(rb"\r\nRatelimit-Reset: [0-9]+", b"\r\nRatelimit-Reset: -", head)
    if not keep_id:
        head = re.sub(rb"\r\nX-Request-Id: [^\r]*", b"\r\nX-Request-Id: -", head)
    return re.sub(rb"boundary=[0-9a-f]{32}", b"boundary=-", head)


def _no_id(body: bytes) -> bytes:
    """An error body without its generated request id."""
    body = re.sub(rb"[0-9a-f]{32}", b"BOUNDARY", body)  # a multipart body's random boundary
    return re.sub(rb'"request_id":"[0-9a-f]{24}"', b'"request_id":"-"', body)


class LaneEquivalenceTests(unittest.TestCase):
    """One site with the lane, one without; same requests, same answers."""

    timeout = 60

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.root.mkdir()
        (self.root / "sub").mkdir()
        (self.root / "big.flac").write_bytes(bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256))
        (self.root / "sub" / "small song.mp3").write_bytes(bytes(reversed(range(256))) * (SMALL // 256))
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=reactor
        )
        self.token = self.issuer.issue(sub="alice", roles=["listener"], ttl_s=3600)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.sites = {"lane": self.serve(lane=True), "full": self.serve(lane=False)}

    def serve(self, *, lane: bool, cors: tuple[str, ...] = (), trusted: tuple[str, ...] = ()) -> BuiltSite:
        verifier = JwtVerifier(
            secret=SECRET, public_key_pem=None, jwks=None, issuer=None, audience=None,
            leeway_s=30, clock=reactor, roles=DEFAULT_ROLES,
        )  # fmt: skip
        guard = Guard(
            verifier=verifier, url_keys=(KEY,), url_max_ttl_s=7200, revocations=None,
            limiter=MemoryRateLimiter(reactor), policies=POLICIES, anonymous=None, clock=reactor,
        )  # fmt: skip

        async def record_of(track: str) -> Any:
            from streamsrv.media.identity import make_etag

            if not (self.root / track).exists():
                return None
            info = (self.root / track).stat()
            return _Record(make_etag(info.st_size, info.st_mtime_ns, info.st_ino), 212.5)

        built = build_site(
            self.root, clock=reactor, use_sendfile=True, guard=guard, durations=TrackDurations(record_of)
        )
        built.site.cors = CorsPolicy(cors)
        if trusted:
            from streamsrv.middleware.clientaddr import parse_networks

            built.site.trusted_proxies = parse_networks(trusted)
        if lane:
            self.assertIsInstance(built.site.stream_lane, StreamLane)
        else:
            built.site.stream_lane = None
        port = reactor.listenTCP(0, built.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        built.port = port.getHost().port  # type: ignore[attr-defined]
        return built

    async def send(
        self, built: BuiltSite, raw: bytes, expect: int = 1, stop_after: int | None = None
    ) -> bytes:
        client = Client(raw, expect, stop_after)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", built.port), client)  # type: ignore[attr-defined]
        data = await client.done
        # Let the server see the end of the connection and finish its bookkeeping.
        for _ in range(20):
            if built.tracker.open_count == 0:
                break
            await deferLater(reactor, 0.01, lambda: None)
        return data

    def get(
        self, path: str = "/stream/big.flac", *extra: str, auth: bool = True, method: str = "GET"
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: example.test", "User-Agent: test-player/1.0"]
        if auth:
            lines.append(f"Authorization: Bearer {self.token}")
        lines.extend(extra)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def both(self, raw: bytes, expect: int = 1, keep_id: bool = False) -> list[tuple[bytes, bytes]]:
        """Send *raw* to both sites; assert the answers match; return the lane's."""
        answers = {}
        for name, built in self.sites.items():
            answers[name] = split_responses(await self.send(built, raw, expect), raw.startswith(b"HEAD "))
        lane, full = answers["lane"], answers["full"]
        self.assertEqual(len(lane), expect)
        self.assertEqual(
            [(normalised(h, keep_id), _no_id(b)) for h, b in lane],
            [(normalised(h, keep_id), _no_id(b)) for h, b in full],
        )
        return lane

    def lane_count(self) -> int:
        return self.sites["lane"].site.stream_lane.answered  # type: ignore[no-any-return]

    def assert_same_books(self) -> None:
        """Both sites counted, audited and tracked the same."""
        rendered = {}
        for name, built in self.sites.items():
            text = built.metrics.render().decode()
            keep = [
                line for line in text.splitlines()
                if line.startswith(BOOKS)
            ]  # fmt: skip
            rendered[name] = sorted(line for line in keep if "_created" not in line)
        self.assertEqual(rendered["lane"], rendered["full"])
        self.assertTrue(rendered["lane"])

    async def warm(self, path: str = "/stream/big.flac") -> None:
        """The first request of a file (and of a token) takes the full path on both sites."""
        await self.both(self.get(path, "Range: bytes=0-0"))

    async def test_range_requests(self) -> None:
        """Closed, open and clamped ranges, from the start and from the middle."""
        await self.warm()
        before = self.lane_count()
        for spec in ("100-16483", "0-", "5000-", f"{SIZE - 10}-{SIZE + 500}", "0-0", f"{SIZE - 1}-"):
            [(head, _)] = await self.both(self.get("/stream/big.flac", f"Range: bytes={spec}"))
            self.assertTrue(head.startswith(b"HTTP/1.1 206 Partial Content"), head)
        self.assertEqual(self.lane_count() - before, 6)
        self.assert_same_books()
        scraped = self.sites["lane"].metrics.render().decode()
        self.assertIn(f"\nstreamsrv_stream_lane_requests_total {float(self.lane_count())}\n", scraped)

    async def test_whole_file_goes_on_after_the_lane(self) -> None:
        """A body the socket does not take at once is finished by the sender."""
        await self.warm()
        before = self.lane_count()
        [(head, body)] = await self.both(self.get())
        self.assertEqual(len(body), SIZE)
        self.assertIn(b"\r\nContent-Length: %d" % SIZE, head)
        self.assertEqual(self.lane_count() - before, 1)
        self.assert_same_books()

    async def test_pipelined(self) -> None:
        """Three requests in one write, the middle one a whole file: answered in order."""
        await self.warm()
        await self.warm("/stream/sub/small%20song.mp3")
        raw = (
            self.get("/stream/big.flac", "Range: bytes=10-20")
            + self.get("/stream/sub/small%20song.mp3")
            + self.get("/stream/big.flac", "Range: bytes=30-40", 'If-Range: "nope"')
        )
        answers = await self.both(raw, expect=3)
        self.assertEqual(len(answers[1][1]), SMALL)
        self.assert_same_books()

    async def test_request_id_and_headers(self) -> None:
        """A client's request id comes back; neutral headers change nothing."""
        await self.warm()
        before = self.lane_count()
        extra = ("X-Request-ID: abc-123", "Accept: */*", "Accept-Encoding: gzip", "Connection: keep-alive",
                 "Referer: https://app.example/", "Sec-Fetch-Dest: audio")  # fmt: skip
        [(head, _)] = await self.both(self.get("/stream/big.flac", "Range: bytes=1-2", *extra), keep_id=True)
        self.assertIn(b"\r\nX-Request-Id: abc-123\r\n", head)
        self.assertEqual(self.lane_count() - before, 1)

    async def test_full_path_cases(self) -> None:
        """What the lane must leave alone is answered by the full path, alike on both sites."""
        await self.warm()
        before = self.lane_count()
        cases = [
            self.get("/stream/big.flac?download=1", "Range: bytes=0-9"),
            self.get("/stream/big.flac", "Range: bytes=0-9", 'If-Range: "x"'),
            self.get("/stream/big.flac", "Range: bytes=0-9", "If-None-Match: *"),
            self.get("/stream/big.flac", "Range: bytes=0-9,20-29"),
            self.get("/stream/big.flac", "Range: bytes=-100"),
            self.get("/stream/big.flac", f"Range: bytes={SIZE}-"),
            self.get("/stream/big.flac", "Range: bytes=9-3"),
            self.get("/stream/big.flac", "Range: bytes = 0-9"),
            self.get("/stream/big.flac", "Range: bytes=0-9", auth=False),
            self.get("/stream/big.flac", "Range: bytes=0-9", method="HEAD"),
            self.get("/stream/big.flac", "Range: bytes=0-9", "Connection: close"),
            self.get("/stream/missing.flac", "Range: bytes=0-9"),
            self.get("/stream/../big.flac", "Range: bytes=0-9"),
            self.get("/stream/big.flac", "Range: bytes=0-9", "Range: bytes=0-3"),
            self.get("/stream/big.flac", "Range: bytes=0-9", "X-Something: 1"),
        ]
        for raw in cases:
            await self.both(raw)
        self.assertEqual(self.lane_count(), before)
        self.assert_same_books()

    async def test_token_first_seen(self) -> None:
        """A token not verified yet takes the full path once, then the lane."""
        await self.warm()
        self.token = self.issuer.issue(sub="bob", roles=["listener"], ttl_s=3600)
        before = self.lane_count()
        await self.both(self.get("/stream/big.flac", "Range: bytes=0-9"))
        self.assertEqual(self.lane_count(), before)
        await self.both(self.get("/stream/big.flac", "Range: bytes=0-9"))
        self.assertEqual(self.lane_count(), before + 1)

    async def test_worker_cors_and_proxies(self) -> None:
        """A worker's name, CORS's ``Vary`` and a trusted proxy's client address, as on the full path."""
        self.sites = {
            "lane": self.serve(lane=True, cors=("https://app.example",), trusted=("127.0.0.1/32",)),
            "full": self.serve(lane=False, cors=("https://app.example",), trusted=("127.0.0.1/32",)),
        }
        for built in self.sites.values():
            identify_worker(built.site, 3)
        await self.warm()
        before = self.lane_count()
        raw = self.get("/stream/big.flac", "Range: bytes=0-9", "X-Forwarded-For: 203.0.113.9")
        [(head, _)] = await self.both(raw)
        self.assertTrue(head.split(b"\r\n")[1] == b"X-Streamsrv-Worker: 3", head)
        self.assertIn(b"\r\nVary: Origin\r\n", head)
        self.assertEqual(self.lane_count(), before + 1)
        # An allowed Origin gets its grant, another only Vary, as on the full path.
        [(head, _)] = await self.both(
            self.get("/stream/big.flac", "Range: bytes=0-9", "Origin: https://app.example")
        )
        self.assertIn(b"\r\nAccess-Control-Allow-Origin: https://app.example\r\n", head)
        [(head, _)] = await self.both(
            self.get("/stream/big.flac", "Range: bytes=0-9", "Origin: https://evil.example")
        )
        self.assertNotIn(b"Access-Control-Allow-Origin", head)
        self.assertEqual(self.lane_count(), before + 3)
        clients = [e.get("client") for e in self.events if e.get("event_kind") == "file_access"]
        self.assertIn("203.0.113.9", clients)

    async def test_client_leaves_mid_body(self) -> None:
        """An abandoned whole-file body is accounted as aborted, on both sites alike."""
        await self.warm()
        for built in self.sites.values():
            await self.send(built, self.get(), stop_after=100_000)
            for _ in range(100):
                if built.tracker.open_count == 0:
                    break
                await deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(built.tracker.open_count, 0)
        outcomes = {
            name: [
                line
                for line in built.metrics.render().decode().splitlines()
                if "aborted" in line and "#" not in line and "_created" not in line
            ]
            for name, built in self.sites.items()
        }
        self.assertEqual(outcomes["lane"], outcomes["full"])
        self.assertTrue(any(line.endswith(" 1.0") for line in outcomes["lane"]), outcomes)

    def signed(self, path: str, ttl_s: int = 5000, **bound: str) -> str:
        """The path and query of a URL signed for *path* (``max-age`` stays 3600 when *ttl_s* > 3600)."""
        url = sign_url("http://h", path, keys=[KEY], expires=int(reactor.seconds()) + ttl_s, bound=bound)
        return url[len("http://h") :]

    async def test_signed_urls(self) -> None:
        """A signed URL verified before takes the lane; one with other parameters, the full path."""
        await self.warm()
        url = self.signed("/stream/big.flac", uid="carol")
        before = self.lane_count()
        await self.both(self.get(url, "Range: bytes=0-99", auth=False))  # verified on the full path
        self.assertEqual(self.lane_count(), before)
        for spec in ("100-199", "0-", "5000-9000"):
            [(head, _)] = await self.both(self.get(url, f"Range: bytes={spec}", auth=False))
            self.assertIn(b"\r\nCache-Control: private, max-age=3600\r\n", head)
        self.assertEqual(self.lane_count(), before + 3)
        # A short-lived URL caps max-age at its expiry (the same on both sites, up to the second).
        short = self.signed("/stream/big.flac", ttl_s=600)
        await self.both(self.get(short, "Range: bytes=0-9", auth=False))
        answers = [split_responses(await self.send(b, self.get(short, "Range: bytes=1-9", auth=False)))[0][0]
                   for b in self.sites.values()]  # fmt: skip
        ages = [int(re.search(rb"max-age=(\d+)", head)[1]) for head in answers]  # type: ignore[index]
        self.assertTrue(all(590 <= age <= 600 for age in ages), ages)
        self.assertEqual(self.lane_count(), before + 4)
        # Other parameters, another client's address, a tampered signature: the full path.
        after = self.lane_count()
        for raw in (
            self.get(self.signed("/stream/big.flac", download="1"), "Range: bytes=0-9", auth=False),
            self.get(self.signed("/stream/big.flac", download="1"), "Range: bytes=0-9", auth=False),
            self.get(url + ";format=mp3", "Range: bytes=0-9", auth=False),
            self.get(url.replace("sig=", "sig=0"), "Range: bytes=0-9", auth=False),
        ):
            await self.both(raw)
        self.assertEqual(self.lane_count(), after)
        self.assert_same_books()

    async def test_a_browsers_media_request(self) -> None:
        """Chromium 156's own headers for an ``<audio>`` range, and Safari's playback session id."""
        await self.warm()
        before = self.lane_count()
        chromium = (
            "Connection: keep-alive", 'sec-ch-ua-platform: "Linux"',
            'sec-ch-ua: "Not:A-Brand";v="8", "Chromium";v="156"', "sec-ch-ua-mobile: ?0", "Accept: */*",
            "Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors",
            "Sec-Fetch-Dest: audio", "Referer: https://app.example/", "Accept-Encoding: identity",
            "Accept-Language: en-US,en;q=0.9", "Range: bytes=0-",
        )  # fmt: skip
        await self.both(self.get("/stream/big.flac", *chromium))
        await self.both(self.get("/stream/big.flac", "Range: bytes=65536-", "X-Playback-Session-Id: 1F2E-AB"))
        self.assertEqual(self.lane_count(), before + 2)

    async def test_file_changed_between_requests(self) -> None:
        """The lane's kept descriptor never serves a file that was rewritten, replaced, chmodded, removed."""
        await self.warm()
        big = self.root / "big.flac"
        ranged = self.get("/stream/big.flac", "Range: bytes=10-4105")
        before = self.lane_count()
        await self.both(ranged)
        await self.both(ranged)
        self.assertEqual(self.lane_count(), before + 2)
        self.assertEqual(len(self.sites["lane"].site.stream_lane._resource._open_files), 1)  # kept, once
        # Rewritten in place (same inode, new bytes and size).
        with big.open("r+b") as f:
            f.write(b"REWRITTEN" * 500)
            f.truncate(SIZE - 1000)
        [(_, body)] = await self.both(ranged)
        self.assertTrue(body.startswith(b"EWRITTENR"), body[:20])
        # Replaced by a rename, as a library tool saves a file.
        (self.root / "new.tmp").write_bytes(b"N" * 9000)
        (self.root / "new.tmp").rename(big)
        for _ in range(2):
            [(head, body)] = await self.both(ranged)
            self.assertEqual(body, b"N" * 4096)
            self.assertIn(b"/9000\r\n", head)
        big.chmod(0o600)
        await self.both(ranged)
        big.unlink()
        [(head, _)] = await self.both(ranged)
        self.assertTrue(head.startswith(b"HTTP/1.1 404"), head)
        self.assertEqual(media_fds(self.root), [])
        self.assert_same_books()

# -*- test-case-name: tests.test_guard -*-
"""Admission on /stream through the real site: JWT, signed URLs, permissions,
rate limits, CORS, trusted proxies, and the size limits of the HTTP layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import SigningKey, sign_url
from streamsrv.config import load_settings
from streamsrv.hls.resource import HlsResource
from streamsrv.middleware.cors import CorsPolicy
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import MemoryRateLimiter, Policies, Policy
from tests.sitehelpers import build_site, parse_head, raw_exchange

SECRET = "a-test-secret-that-is-long-enough-0123456789"
KEYS = (
    SigningKey("k2", b"current-url-signing-key-0123456789abcdef"),
    SigningKey("k1", b"previous-url-signing-key-0123456789abcdef"),
)
NOW = 1_800_000_000
BODY = b"\xff\xfb" + bytes(range(256)) * 100
POLICIES = Policies(
    api_ip=Policy("api_ip", 5, 60.0),
    api_user=Policy("api_user", 100, 60.0),
    stream_ip=Policy("stream_ip", 100, 60.0),
    stream_user=Policy("stream_user", 3, 60.0),
)


class GuardMixin:
    """A site whose guard takes HS256 JWTs and signed URLs, with small limits."""

    anonymous: Any = None
    #: The guard's revocation checker (``None``: no revocation).
    revocations: Any = None
    #: The guard's rate-limit policies.
    policies: Policies = POLICIES

    def setUp(self) -> None:
        root = Path(self.mktemp())  # type: ignore[attr-defined]
        (root / "jazz").mkdir(parents=True)
        (root / "jazz" / "So What.mp3").write_bytes(BODY)
        self.media_root = root
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=self.clock
        )
        verifier = JwtVerifier(
            secret=SECRET,
            public_key_pem=None,
            jwks=None,
            issuer=None,
            audience=None,
            leeway_s=30,
            clock=self.clock,
            roles=DEFAULT_ROLES,
        )
        self.limiter = MemoryRateLimiter(self.clock)
        guard = Guard(
            verifier=verifier,
            url_keys=KEYS,
            url_max_ttl_s=7 * 86400,
            revocations=self.revocations,
            limiter=self.limiter,
            policies=self.policies,
            anonymous=self.anonymous,
            clock=self.clock,
        )
        self.built = build_site(root, clock=self.clock, guard=guard)
        self.built.site.cors = CorsPolicy(("https://app.example.com",))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[attr-defined]

    def token(self, roles: tuple[str, ...] = ("listener",), **kw: Any) -> str:
        return self.issuer.issue(
            sub=kw.pop("sub", "alice"), roles=list(roles), ttl_s=kw.pop("ttl_s", 900), **kw
        )

    def fetch(
        self, target: str, method: str = "GET", peer: str = "10.0.0.7", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        raw = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode()
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 5000))
        proto = self.built.site.buildProtocol(IPv4Address("TCP", peer, 5000))
        proto.makeConnection(transport)
        proto.dataReceived(raw)
        out = b""
        for _ in range(1000):
            out += transport.value()
            transport.clear()
            if self.built.tracker.open_count == 0:
                break
            transport.producer.resumeProducing()
        return parse_head(out + transport.value())

    def code(self, body: bytes) -> str:
        return json.loads(body)["error"]["code"]

    def security_kinds(self) -> list[str]:
        return [e["kind"] for e in self.events if e.get("event_kind") == "security"]


TRACK = "/stream/jazz/So%20What.mp3"


class JwtAdmissionTests(GuardMixin, unittest.TestCase):
    """Bearer tokens on /stream."""

    def test_no_credentials(self) -> None:
        """Without anonymous access, a request without credentials is 401 UNAUTHENTICATED."""
        status, _, body = self.fetch(TRACK)
        self.assertEqual((status, self.code(body)), (401, "UNAUTHENTICATED"))

    def test_listener_streams(self) -> None:
        """A listener's token streams the file."""
        status, headers, body = self.fetch(TRACK, authorization="Bearer " + self.token())
        self.assertEqual(status, 200)
        self.assertEqual(body, BODY)
        self.assertIn("ratelimit-remaining", headers)

    def test_file_access_audited(self) -> None:
        """Each media body sent is one file_access event with who, what, range, bytes and outcome."""
        self.fetch(TRACK, authorization="Bearer " + self.token(), range="bytes=0-99")
        (event,) = [e for e in self.events if e.get("event_kind") == "file_access"]
        self.assertEqual(
            (event["sub"], event["via"], event["track"], event["range"], event["sent"], event["outcome"]),
            ("alice", "jwt", "jazz/So What.mp3", "bytes=0-99", 100, "complete"),
        )
        text = self.built.metrics.render().decode()
        self.assertIn('streamsrv_file_access_total{outcome="complete"} 1.0', text)

    def test_bad_tokens(self) -> None:
        """Garbage, wrong-secret and expired tokens are refused with their codes and logged."""
        other = TokenIssuer(
            secret="another-secret-long-enough-0123456789abc",
            private_key_pem=None,
            issuer=None,
            audience=None,
            clock=self.clock,
        )
        cases = [
            ("Bearer not.a.token", "TOKEN_INVALID"),
            ("Bearer " + other.issue(sub="a", roles=["admin"], ttl_s=60), "TOKEN_INVALID"),
            ("Bearer " + self.token(ttl_s=1), "TOKEN_EXPIRED"),
        ]
        self.clock.advance(120)
        for header, code in cases:
            status, _, body = self.fetch(TRACK, authorization=header)
            self.assertEqual((status, self.code(body)), (401, code))
        self.assertEqual(self.security_kinds(), ["token_invalid", "token_invalid", "token_expired"])

    def test_cached_token_still_expires(self) -> None:
        """A token accepted (and cached) before its exp is refused after it."""
        token = self.token(ttl_s=60)
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + token, range="bytes=0-0")[0], 206)
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + token, range="bytes=1-1")[0], 206)
        self.clock.advance(120)
        status, _, body = self.fetch(TRACK, authorization="Bearer " + token, range="bytes=2-2")
        self.assertEqual((status, self.code(body)), (401, "TOKEN_EXPIRED"))

    def test_refresh_token_refused_as_bearer(self) -> None:
        """A refresh token used as a bearer is TOKEN_INVALID."""
        status, _, body = self.fetch(TRACK, authorization="Bearer " + self.token(typ="refresh"))
        self.assertEqual((status, self.code(body)), (401, "TOKEN_INVALID"))

    def test_download_needs_permission(self) -> None:
        """?download=1 needs stream:download: a listener gets 403, premium gets an attachment."""
        status, _, body = self.fetch(TRACK + "?download=1", authorization="Bearer " + self.token())
        self.assertEqual((status, self.code(body)), (403, "FORBIDDEN"))
        status, headers, _ = self.fetch(
            TRACK + "?download=1", authorization="Bearer " + self.token(("premium",))
        )
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-disposition"].startswith("attachment;"))

    def test_no_token_in_logs(self) -> None:
        """Neither a token nor a signature appears in any log event."""
        token = self.token()
        self.fetch(TRACK, authorization="Bearer " + token)
        self.fetch(TRACK, authorization="Bearer " + token[:-3] + "xyz")
        url = sign_url("http://x", "/stream/jazz/So What.mp3", keys=KEYS, expires=NOW + 60)
        parts = urlsplit(url)
        self.fetch(parts.path + "?" + parts.query)
        signature = parts.query.rsplit("sig=", 1)[1]
        dump = repr(self.events)
        self.assertNotIn(token, dump)
        self.assertNotIn(token.split(".")[2], dump)
        self.assertNotIn(signature, dump)


class SignedUrlAdmissionTests(GuardMixin, unittest.TestCase):
    """Signed URLs on /stream."""

    def signed(
        self,
        path: str = "/stream/jazz/So What.mp3",
        keys: tuple[SigningKey, ...] = KEYS,
        expires: int = NOW + 600,
        **bound: str,
    ) -> str:
        parts = urlsplit(sign_url("http://x", path, keys=keys, expires=expires, bound=bound or None))
        return parts.path + "?" + parts.query

    def test_signed_url_streams(self) -> None:
        """A valid signed URL streams without any header, cacheable no longer than its expiry."""
        status, headers, body = self.fetch(self.signed())
        self.assertEqual(status, 200)
        self.assertEqual(body, BODY)
        self.assertEqual(headers["cache-control"], "private, max-age=600")

    def test_old_kid_still_valid(self) -> None:
        """A URL signed with the previous key (named by kid) still verifies."""
        status, _, _ = self.fetch(self.signed(keys=(KEYS[1],)))
        self.assertEqual(status, 200)

    def test_tampering(self) -> None:
        """A changed path, expiry, signature or an added parameter is SIGNATURE_INVALID."""
        good = self.signed()
        tampered = [
            good.replace("So%20What", "So%20What2"),
            good.replace(f"expires={NOW + 600}", f"expires={NOW + 601}"),
            good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
            good + "&format=flac",
        ]
        for target in tampered:
            status, _, body = self.fetch(target)
            self.assertEqual((status, self.code(body)), (403, "SIGNATURE_INVALID"), target)

    def test_expired(self) -> None:
        """A genuine but expired URL is URL_EXPIRED."""
        target = self.signed(expires=NOW - 1)
        status, _, body = self.fetch(target)
        self.assertEqual((status, self.code(body)), (403, "URL_EXPIRED"))
        self.assertIn("url_expired", self.security_kinds())

    def test_bound_ip(self) -> None:
        """A URL bound to an address works from it and nowhere else."""
        target = self.signed(ip="10.0.0.7")
        self.assertEqual(self.fetch(target, peer="10.0.0.7")[0], 200)
        status, _, body = self.fetch(target, peer="10.0.0.8")
        self.assertEqual((status, self.code(body)), (403, "SIGNATURE_INVALID"))

    def test_remembered_url_still_expires(self) -> None:
        """A URL verified (and remembered) while valid answers URL_EXPIRED once its time is up."""
        target = self.signed(expires=NOW + 10)
        self.assertEqual(self.fetch(target)[0], 200)
        self.assertEqual(self.fetch(target)[0], 200)
        self.clock.advance(10)
        status, _, body = self.fetch(target)
        self.assertEqual((status, self.code(body)), (403, "URL_EXPIRED"))

    def test_remembered_url_is_per_address(self) -> None:
        """An ip-bound URL remembered for its address is still refused from another one."""
        target = self.signed(ip="10.0.0.7")
        for _ in range(2):
            self.assertEqual(self.fetch(target, peer="10.0.0.7")[0], 200)
            status, _, body = self.fetch(target, peer="10.0.0.8")
            self.assertEqual((status, self.code(body)), (403, "SIGNATURE_INVALID"))

    def test_signed_download_allowed(self) -> None:
        """A signed URL authorises exactly what was bound into it, download included."""
        status, headers, _ = self.fetch(self.signed(download="1"))
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-disposition"].startswith("attachment;"))


class RateLimitTests(GuardMixin, unittest.TestCase):
    """Rate limits through the guard."""

    def test_user_stream_starts_limited(self) -> None:
        """The user's stream-start bucket (3) refuses the 4th start with 429 and Retry-After."""
        token = self.token()
        for _ in range(3):
            self.assertEqual(self.fetch(TRACK, authorization="Bearer " + token)[0], 200)
        status, headers, body = self.fetch(TRACK, authorization="Bearer " + token)
        self.assertEqual((status, self.code(body)), (429, "RATE_LIMITED"))
        self.assertEqual(headers["ratelimit-limit"], "3")
        self.assertEqual(headers["ratelimit-remaining"], "0")
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        message = json.loads(body)["error"]["message"]
        self.assertIn("per-user stream limit (3/min)", message)
        self.assertIn(f"retry in {headers['retry-after']} s", message)
        # Seeks (ranges not from 0) are API calls, not stream starts.
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + token, range="bytes=100-199")[0], 206)
        # Another user from the same address is not limited by alice's bucket.
        self.assertEqual(self.fetch(TRACK, authorization="Bearer " + self.token(sub="bob"))[0], 200)

    def test_ip_limit_counts_bad_credentials(self) -> None:
        """Refused credentials draw from the address's API bucket until it answers 429."""
        statuses = [self.fetch(TRACK, authorization="Bearer junk", range="bytes=5-6")[0] for _ in range(7)]
        self.assertEqual(statuses[:5], [401] * 5)
        self.assertEqual(statuses[5:], [429, 429])


class RateLimitMessageTests(GuardMixin, unittest.TestCase):
    """The 429 names the bucket that refused."""

    policies = Policies(
        api_ip=Policy("api_ip", 300, 60.0),
        api_user=Policy("api_user", 600, 60.0),
        stream_ip=Policy("stream_ip", 60, 60.0),
        stream_user=Policy("stream_user", 120, 60.0),
    )

    def test_message_names_ip_stream_bucket(self) -> None:
        """The 61st stream start in a minute from one address is refused by the per-IP stream bucket,
        which the message names with its rate (ffmpeg probing many files meets this one)."""
        token = self.token()
        for _ in range(60):
            self.assertEqual(self.fetch(TRACK, authorization="Bearer " + token, range="bytes=0-1")[0], 206)
        status, headers, body = self.fetch(TRACK, authorization="Bearer " + token, range="bytes=0-1")
        self.assertEqual((status, self.code(body)), (429, "RATE_LIMITED"))
        self.assertEqual(headers["retry-after"], "1")
        self.assertEqual(
            json.loads(body)["error"]["message"],
            "Too many requests: the per-IP stream limit (60/min) is used up; retry in 1 s.",
        )


class StreamStartTests(GuardMixin, unittest.TestCase):
    """Which requests the routes charge as stream starts (DESIGN's rate-limit rule)."""

    anonymous = anonymous_principal(DEFAULT_ROLES)

    def setUp(self) -> None:
        super().setUp()
        hls = HlsResource(
            Path(self.mktemp()),
            guard=self.built.guard,
            pool=None,  # type: ignore[arg-type]
            cache=None,  # type: ignore[arg-type]
            url_keys=(),
            clock=self.clock,
        )
        self.built.site.resource._media[b"hls"] = hls

    def test_table(self) -> None:
        """
        A /stream GET or HEAD of a track from the first byte (or with a Range
        /stream ignores) and an HLS master playlist draw from the stream
        buckets; seeks, suffix ranges, other methods, other HLS files and
        other paths do not.
        """
        table: list[tuple[str, str, str | None, bool]] = [
            ("GET", TRACK, None, True),
            ("HEAD", TRACK, None, True),
            ("GET", "/stream/a.mp3?format=opus&t=30", None, True),
            ("GET", TRACK, "bytes=0-", True),
            ("GET", TRACK, "bytes=0-1", True),
            ("GET", TRACK, "Bytes = 0 - 499", True),
            ("GET", TRACK, "bytes=0-99,200-299", True),
            ("GET", TRACK, "garbage", True),
            ("GET", TRACK, "bytes=5-0", True),
            ("GET", TRACK, "bytes=1000-", False),
            ("GET", TRACK, "bytes=1-", False),
            ("GET", TRACK, "bytes=-500", False),
            ("GET", TRACK, "bytes=100-199,0-99", False),
            ("HEAD", TRACK, "bytes=1000-", False),
            ("POST", TRACK, None, False),
            ("GET", "/stream/", None, False),
            ("GET", "/stream", None, False),
            ("GET", "/stream//", None, True),
            ("GET", "/streams/a.mp3", None, False),
            ("GET", "/hls/jazz/a.mp3/master.m3u8", None, True),
            ("HEAD", "/hls/a.mp3/master.m3u8", None, True),
            ("GET", "/hls/a.mp3/master.m3u8", "bytes=100-", True),
            ("GET", "/hls//master.m3u8", None, False),
            ("GET", "/hls/a.mp3/aac_128/index.m3u8", None, False),
            ("GET", "/hls/a.mp3/aac_128/3.m4s", None, False),
            ("GET", "/api/v1/tracks", None, False),
            ("GET", "/health", None, False),
        ]
        for n, (method, target, range_header, expected) in enumerate(table):
            headers = {"range": range_header} if range_header is not None else {}
            # A fresh address per row: the API bucket (5) must not run dry.
            _, answer, _ = self.fetch(target, method=method, peer=f"10.1.0.{n + 1}", **headers)
            drew_stream = answer.get("ratelimit-limit") == str(POLICIES.stream_ip.count)
            self.assertEqual(drew_stream, expected, (method, target, range_header))


class TrustedProxyTests(GuardMixin, unittest.TestCase):
    """X-Forwarded-For only from trusted proxies."""

    def test_forwarded_address_used_for_bound_ip(self) -> None:
        """Behind a trusted proxy, the forwarded client address is the one bound URLs compare."""
        self.built.site.trusted_proxies = __import__(
            "streamsrv.middleware.clientaddr", fromlist=["parse_networks"]
        ).parse_networks(["10.0.0.0/8"])
        target = urlsplit(
            sign_url(
                "http://x",
                "/stream/jazz/So What.mp3",
                keys=KEYS,
                expires=NOW + 60,
                bound={"ip": "203.0.113.5"},
            )
        )
        path = target.path + "?" + target.query
        self.assertEqual(self.fetch(path, peer="10.0.0.7", x_forwarded_for="203.0.113.5")[0], 200)
        # From an untrusted peer the header is ignored.
        self.assertEqual(self.fetch(path, peer="198.51.100.1", x_forwarded_for="203.0.113.5")[0], 403)


class CorsTests(GuardMixin, unittest.TestCase):
    """CORS for configured origins."""

    anonymous = None

    def test_preflight(self) -> None:
        """A preflight from an allowed origin is 204 with methods, headers and max-age, no auth needed."""
        status, headers, _ = self.fetch(
            TRACK,
            method="OPTIONS",
            origin="https://app.example.com",
            access_control_request_method="GET",
            access_control_request_headers="range, authorization",
        )
        self.assertEqual(status, 204)
        self.assertEqual(headers["access-control-allow-origin"], "https://app.example.com")
        self.assertIn("Range", headers["access-control-allow-headers"])
        self.assertIn("Authorization", headers["access-control-allow-headers"])
        self.assertEqual(headers["access-control-max-age"], "600")

    def test_actual_request_exposes_headers(self) -> None:
        """An allowed origin may read Content-Range, Accept-Ranges and Content-Length."""
        _, headers, _ = self.fetch(
            TRACK, origin="https://app.example.com", range="bytes=0-1", authorization="Bearer " + self.token()
        )
        exposed = headers["access-control-expose-headers"]
        for name in ("Content-Range", "Accept-Ranges", "Content-Length"):
            self.assertIn(name, exposed)
        self.assertEqual(headers["access-control-allow-credentials"], "true")
        self.assertEqual(headers["vary"], "Origin")

    def test_other_origin(self) -> None:
        """Another origin gets no CORS headers."""
        _, headers, _ = self.fetch(
            TRACK, origin="https://evil.example.com", authorization="Bearer " + self.token()
        )
        self.assertNotIn("access-control-allow-origin", headers)


class DevelopmentCorsTests(GuardMixin, unittest.TestCase):
    """The development profile's default origins: loopback pages on any port."""

    anonymous = None

    def setUp(self) -> None:
        super().setUp()
        self.built.site.cors = CorsPolicy(load_settings(environ={}).cors_origins)

    def test_loopback_origins_any_port(self) -> None:
        """A page on localhost, 127.0.0.1 or [::1], on any port, may read a stream and its headers."""
        for origin in (
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "http://[::1]:8000",
            "http://localhost",
        ):
            _, headers, _ = self.fetch(
                TRACK, origin=origin, range="bytes=0-1", authorization="Bearer " + self.token()
            )
            self.assertEqual(headers.get("access-control-allow-origin"), origin, origin)
            self.assertIn("Content-Range", headers["access-control-expose-headers"])

    def test_loopback_preflight(self) -> None:
        """A preflight from a Vite dev server (localhost:5173) asking for Range and Authorization is 204."""
        status, headers, _ = self.fetch(
            TRACK,
            method="OPTIONS",
            origin="http://localhost:5173",
            access_control_request_method="GET",
            access_control_request_headers="range, authorization",
        )
        self.assertEqual(status, 204)
        self.assertEqual(headers["access-control-allow-origin"], "http://localhost:5173")
        self.assertIn("Range", headers["access-control-allow-headers"])

    def test_other_hosts_refused(self) -> None:
        """Other hosts, https on loopback and look-alike hosts get no CORS headers."""
        for origin in (
            "https://evil.example.com",
            "http://localhost.evil.example:3000",
            "http://evil.example/http://localhost:3000",
            "https://localhost:3000",
            "http://localhost:",
            "null",
        ):
            _, headers, _ = self.fetch(TRACK, origin=origin, authorization="Bearer " + self.token())
            self.assertNotIn("access-control-allow-origin", headers, origin)

    def test_configured_origins_replace_the_default(self) -> None:
        """With STREAMSRV_CORS_ORIGINS set, only those origins are allowed, loopback included."""
        settings = load_settings(environ={"STREAMSRV_CORS_ORIGINS": "https://app.example.com"})
        self.built.site.cors = CorsPolicy(settings.cors_origins)
        _, headers, _ = self.fetch(
            TRACK, origin="http://localhost:5173", authorization="Bearer " + self.token()
        )
        self.assertNotIn("access-control-allow-origin", headers)
        status, headers, _ = self.fetch(
            TRACK, method="OPTIONS", origin="http://localhost:5173", access_control_request_method="GET"
        )
        self.assertNotEqual(status, 204)
        self.assertNotIn("access-control-allow-origin", headers)

    def test_production_allows_no_origin(self) -> None:
        """Production (and staging) keep no default origin: a loopback page gets no CORS headers."""
        for env in ("staging", "production"):
            environ = {
                "STREAMSRV_ENV": env,
                "STREAMSRV_MEDIA_DIR": str(self.media_root),
                "STREAMSRV_ALLOW_ANONYMOUS": "false",
                "STREAMSRV_JWT_SECRET": "a-production-like-secret-0123456789abcdef",
            }
            self.assertEqual(load_settings(environ=environ).cors_origins, ())
        self.built.site.cors = CorsPolicy(())
        status, headers, _ = self.fetch(
            TRACK, method="OPTIONS", origin="http://localhost:5173", access_control_request_method="GET"
        )
        self.assertNotEqual(status, 204)
        self.assertNotIn("access-control-allow-origin", headers)


class SizeLimitTests(GuardMixin, unittest.TestCase):
    """Oversized requests answered with the contract's codes."""

    def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        return parse_head(raw_exchange(self.built, raw))

    def test_long_uri(self) -> None:
        """A request line over the limit is 414 URI_TOO_LONG as JSON."""
        status, headers, body = self.exchange(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
        self.assertEqual((status, self.code(body)), (414, "URI_TOO_LONG"))
        self.assertEqual(headers["connection"], "close")

    def test_huge_header(self) -> None:
        """A 100 KB header is 431 HEADERS_TOO_LARGE."""
        status, _, body = self.exchange(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        )
        self.assertEqual((status, self.code(body)), (431, "HEADERS_TOO_LARGE"))

    def test_too_many_headers(self) -> None:
        """More headers than allowed is 431."""
        status, _, _ = self.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 600 + b"\r\n")
        self.assertEqual(status, 431)

    def test_large_body(self) -> None:
        """A declared body over STREAMSRV_MAX_BODY_BYTES is 413 before it is read."""
        status, _, body = self.exchange(
            b"POST /api/v1/auth/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
        )
        self.assertEqual((status, self.code(body)), (413, "PAYLOAD_TOO_LARGE"))

    def test_large_chunked_body(self) -> None:
        """A chunked body that grows past the limit is 413."""
        chunk = b"%x\r\n%s\r\n" % (600 * 1024, b"a" * 600 * 1024)
        status, _, _ = self.exchange(
            b"POST /api/v1/auth/refresh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2
        )
        self.assertEqual(status, 413)

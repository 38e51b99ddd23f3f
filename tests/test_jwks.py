# -*- test-case-name: tests.test_jwks -*-
"""Tests for :mod:`streamsrv.auth.jwks`: parsing a JWKS, caching, rotation, the refetch floor, failures.

Most tests drive :class:`JwksCache` through an injected ``http_get`` and a
:class:`twisted.internet.task.Clock`; :class:`RealHttpTests` serve the set
from a ``twisted.web`` site on a loopback port and fetch it with real treq.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from streamsrv.auth import jwks as jwks_module
from streamsrv.auth.jwks import (
    MAX_JWKS_BYTES,
    JwksCache,
    JwksFetchError,
    parse_jwks,
    public_key_algorithm,
    treq_http_get,
)
from streamsrv.auth.jwt import JwtVerifier
from streamsrv.auth.principal import AuthError
from streamsrv.auth.roles import DEFAULT_ROLES
from tests.test_jwt import NOW, claims, ec_key, ed_key, public_jwk, rsa_key, signed

URL = "https://backend.test/.well-known/jwks.json?api_key=hunter2"

#: The real reactor, untyped (its interfaces are provided dynamically).
reactor: Any = _global_reactor


class FakeJwksServer:
    """An ``http_get`` double: answers the current key set, or fails, or holds the answer."""

    def __init__(self, *jwks: dict[str, Any]) -> None:
        self.keys: list[dict[str, Any]] = list(jwks)
        self.status = 200
        self.body: bytes | None = None
        self.error: Exception | None = None
        self.hold = False
        self.held: list[Deferred[tuple[int, bytes]]] = []
        self.requests: list[str] = []

    def get(self, url: str) -> Deferred[tuple[int, bytes]]:
        """Record the request and answer it as configured."""
        self.requests.append(url)
        if self.hold:
            d: Deferred[tuple[int, bytes]] = Deferred()
            self.held.append(d)
            return d
        if self.error is not None:
            return fail(self.error)
        return succeed((self.status, self.current()))

    def current(self) -> bytes:
        """The body to serve now."""
        return self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()


class CacheMixin:
    """A clock at :data:`NOW`, a fake server, and a cache recording its metrics events."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.server = FakeJwksServer(public_jwk(rsa_key(), "a"))
        self.events: list[str] = []
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)  # type: ignore[attr-defined]

    def cache(self, **overrides: Any) -> JwksCache:
        """A cache over the fake server: TTL 300 s, floor 30 s."""
        options: dict[str, Any] = {
            "clock": self.clock,
            "http_get": self.server.get,
            "ttl_s": 300,
            "min_refetch_interval_s": 30,
            "metrics_hook": self.events.append,
        }
        options.update(overrides)
        return JwksCache(URL, **options)

    def key(self, cache: JwksCache, kid: str | None, alg: str = "RS256") -> Any:
        """The key *cache* gives for *kid*, synchronously."""
        return self.successResultOf(ensureDeferred(cache.key_for(kid, alg)))  # type: ignore[attr-defined]

    def refused(self, cache: JwksCache, kid: str | None, alg: str = "RS256") -> AuthError:
        """The error *cache* raises for *kid*, synchronously."""
        failure = self.failureResultOf(ensureDeferred(cache.key_for(kid, alg)), AuthError)  # type: ignore[attr-defined]
        error: AuthError = failure.value
        return error


class ParseJwksTests(CacheMixin, unittest.TestCase):
    """Which keys of a set are kept."""

    def test_supported_keys(self) -> None:
        """RSA, EC P-256 and Ed25519 public keys are kept with their kid and algorithm."""
        keys = parse_jwks(
            json.dumps(
                {"keys": [public_jwk(rsa_key(), "r"), public_jwk(ec_key(), "e"), public_jwk(ed_key(), "d")]}
            ).encode()
        )
        self.assertEqual([(k.kid, k.alg) for k in keys], [("r", "RS256"), ("e", "ES256"), ("d", "EdDSA")])
        assert isinstance(keys[0].key, rsa.RSAPublicKey)
        self.assertEqual(keys[0].key.public_numbers(), rsa_key().public_key().public_numbers())

    def test_unusable_keys_skipped(self) -> None:
        """Symmetric, other-curve, weak, encryption-only, mislabelled and broken keys are skipped."""
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        p384 = ec.generate_private_key(ec.SECP384R1())
        entries: list[Any] = [
            {"kty": "oct", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "alg": "HS256"},
            public_jwk(p384, "p384"),
            public_jwk(weak, "weak"),
            public_jwk(rsa_key(), "enc", use="enc"),
            public_jwk(rsa_key(), "rs512", alg="RS512"),
            public_jwk(rsa_key(), "es", alg="ES256"),
            public_jwk(rsa_key(), "ops", key_ops=["encrypt"]),
            {**public_jwk(rsa_key(), "broken"), "n": "!!!"},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"},
            {"kty": "EC", "crv": 5, "kid": "crv"},
            {"kid": "no-kty"},
            public_jwk(ec_key(), 42),  # type: ignore[arg-type]
            "not an object",
            None,
            public_jwk(ec_key(), "good", use="sig", key_ops=["verify"], alg="ES256"),
        ]
        keys = parse_jwks(json.dumps({"keys": entries}).encode())
        self.assertEqual([k.kid for k in keys], ["good"])
        skipped = [e for e in self.logged if "skipped" in e.get("log_format", "")]
        self.assertEqual(len(skipped), len(entries) - 1)

    def test_duplicate_kid(self) -> None:
        """A second key with the same kid and algorithm is ignored; the first wins."""
        keys = parse_jwks(
            json.dumps({"keys": [public_jwk(rsa_key(), "k"), public_jwk(rsa_key(1), "k")]}).encode()
        )
        self.assertEqual(len(keys), 1)
        assert isinstance(keys[0].key, rsa.RSAPublicKey)
        self.assertEqual(keys[0].key.public_numbers(), rsa_key().public_key().public_numbers())

    def test_private_parameters_never_used_nor_logged(self) -> None:
        """A JWK leaking private parameters yields only its public half, and nothing secret is logged."""
        from jwt.algorithms import RSAAlgorithm

        private_jwk = RSAAlgorithm.to_jwk(rsa_key(), as_dict=True)
        private_jwk["kid"] = "leaky"
        del private_jwk["key_ops"]  # ["sign"], which alone would get it skipped
        (key,) = parse_jwks(json.dumps({"keys": [private_jwk]}).encode())
        self.assertIsInstance(key.key, rsa.RSAPublicKey)
        text = " ".join(formatEvent(e) for e in self.logged)
        self.assertIn("PRIVATE", text)
        for member in ("d", "p", "q", "n"):
            self.assertNotIn(private_jwk[member][:16], text)

    def test_not_a_jwks(self) -> None:
        """Bytes that are not a JSON object with a ``keys`` list raise :class:`JwksFetchError`."""
        for body in (b"", b"<html>", b"[]", b'{"keys": {}}', b'{"key": []}', b"\xff", b"[" * 100_000):
            with self.assertRaises(JwksFetchError):
                parse_jwks(body)
        self.assertEqual(parse_jwks(b'{"keys": []}'), ())

    def test_public_key_algorithm(self) -> None:
        """Each supported public key type maps to its one algorithm; others raise ``ValueError``."""
        self.assertEqual(public_key_algorithm(rsa_key().public_key()), "RS256")
        self.assertEqual(public_key_algorithm(ec_key().public_key()), "ES256")
        self.assertEqual(public_key_algorithm(ed_key().public_key()), "EdDSA")
        for bad in (ec.generate_private_key(ec.SECP521R1()).public_key(), rsa_key(), b"pem", None):
            with self.assertRaises(ValueError):
                public_key_algorithm(bad)


class JwksCacheTests(CacheMixin, unittest.TestCase):
    """Caching, TTL, rotation, the refetch floor and failures, on a deterministic clock."""

    def test_fetched_once_then_cached(self) -> None:
        """The first lookup fetches; later ones within the TTL do not."""
        cache = self.cache()
        self.assertIsNone(cache.fetched_at)
        first = self.key(cache, "a")
        self.clock.advance(299)
        self.assertIs(self.key(cache, "a"), first)
        self.assertEqual(self.server.requests, [URL])
        self.assertEqual(self.events, ["fetch"])
        self.assertEqual((cache.key_ids, cache.fetched_at), (("a",), NOW))

    def test_key_rotation(self) -> None:
        """A new kid published by the backend is picked up by a refetch on first sight."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.keys.append(public_jwk(ec_key(), "b"))
        self.clock.advance(30)
        self.assertIsInstance(self.key(cache, "b", "ES256"), ec.EllipticCurvePublicKey)
        self.assertEqual(len(self.server.requests), 2)
        self.assertEqual(cache.key_ids, ("a", "b"))

    def test_rotation_within_the_floor_waits(self) -> None:
        """A new kid seen within the floor interval of the last fetch is unknown until the floor passes."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.keys = [public_jwk(rsa_key(1), "b")]
        self.clock.advance(10)
        self.assertEqual(self.refused(cache, "b").reason, "unknown_kid")
        self.assertEqual(len(self.server.requests), 1)
        self.clock.advance(20)
        self.key(cache, "b")
        self.assertEqual(self.refused(cache, "a").reason, "unknown_kid")  # rotated out
        self.assertEqual(len(self.server.requests), 2)

    def test_refetch_floor(self) -> None:
        """Many unknown-kid lookups within the floor interval cause one fetch, not one each."""
        cache = self.cache()
        self.key(cache, "a")
        self.clock.advance(31)
        for n in range(200):
            error = self.refused(cache, f"forged-{n}")
            self.assertEqual((error.code, error.reason), ("TOKEN_INVALID", "unknown_kid"))
        self.assertEqual(len(self.server.requests), 2)  # the first use, then one refetch
        self.clock.advance(29)
        self.refused(cache, "forged-again")
        self.assertEqual(len(self.server.requests), 2)
        self.clock.advance(1)
        self.refused(cache, "forged-again")
        self.assertEqual(len(self.server.requests), 3)

    def test_ttl_expiry_refreshes(self) -> None:
        """Once the TTL has passed, the next lookup refetches and sees the new set."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.keys = [public_jwk(rsa_key(1), "b")]
        self.clock.advance(299)
        self.key(cache, "a")
        self.assertEqual(len(self.server.requests), 1)
        self.clock.advance(1)
        self.key(cache, "b")
        self.assertEqual(len(self.server.requests), 2)
        self.assertEqual(self.refused(cache, "a").reason, "unknown_kid")
        self.assertEqual(self.events, ["fetch", "fetch"])

    def test_stale_on_server_error(self) -> None:
        """When a refetch fails (HTTP 500), the cached keys keep working and the hook hears it."""
        cache = self.cache()
        original = self.key(cache, "a")
        self.server.status = 500
        self.clock.advance(300)
        self.assertIs(self.key(cache, "a"), original)
        self.assertEqual(self.events, ["fetch", "error", "stale"])
        self.clock.advance(10)
        self.key(cache, "a")  # within the floor: no new attempt, still stale
        self.assertEqual(self.events, ["fetch", "error", "stale", "stale"])
        self.assertEqual(len(self.server.requests), 2)
        warnings = [formatEvent(e) for e in self.logged if "failed" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertIn("HTTP status 500", warnings[0])
        self.assertNotIn("hunter2", warnings[0])
        self.assertNotIn("api_key", warnings[0])

    def test_stale_keys_still_verify_tokens(self) -> None:
        """Through the verifier: a JWKS outage after the first fetch does not log anyone out."""
        cache = self.cache()
        verifier = JwtVerifier(
            secret=None,
            public_key_pem=None,
            jwks=cache,
            issuer=None,
            audience=None,
            leeway_s=30,
            clock=self.clock,
            roles=DEFAULT_ROLES,
        )
        self.successResultOf(ensureDeferred(verifier.verify(signed("RS256", rsa_key(), claims(), kid="a"))))
        self.server.error = ConnectionRefusedError()
        self.clock.advance(3600)
        token = signed("RS256", rsa_key(), claims(iat=NOW + 3600, exp=NOW + 4000), kid="a")
        principal = self.successResultOf(ensureDeferred(verifier.verify(token)))
        self.assertEqual(principal.sub, "user-42")
        self.assertEqual(self.events, ["fetch", "error", "stale"])

    def test_stale_on_bad_document(self) -> None:
        """A refetch answering something that is not a JWKS keeps the cached keys too."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.body = b"<html>maintenance</html>"
        self.clock.advance(300)
        self.key(cache, "a")
        self.assertEqual(self.events, ["fetch", "error", "stale"])

    def test_first_fetch_fails(self) -> None:
        """With no key ever fetched and the backend down, the answer is ``UNAVAILABLE``, not a 401."""
        self.server.status = 503
        cache = self.cache()
        error = self.refused(cache, "a")
        self.assertEqual((error.code, error.reason), ("UNAVAILABLE", "jwks_unavailable"))
        self.server.status = 200
        self.clock.advance(29)
        self.assertEqual(self.refused(cache, "a").code, "UNAVAILABLE")
        self.clock.advance(1)
        self.key(cache, "a")
        self.assertEqual(self.events, ["error", "fetch"])

    def test_unknown_kid_while_backend_down(self) -> None:
        """An unknown kid whose refetch fails is ``UNAVAILABLE`` (cannot tell); known kids still work."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.error = ConnectionRefusedError()
        self.clock.advance(60)
        self.assertEqual(self.refused(cache, "new").code, "UNAVAILABLE")
        self.key(cache, "a")
        self.assertEqual(self.events, ["fetch", "error"])

    def test_concurrent_lookups_share_one_fetch(self) -> None:
        """Lookups arriving while a fetch is under way wait for it instead of starting their own."""
        self.server.hold = True
        cache = self.cache()
        first = ensureDeferred(cache.key_for("a", "RS256"))
        second = ensureDeferred(cache.key_for("a", "RS256"))
        third = ensureDeferred(cache.key_for("zzz", "RS256"))
        self.assertNoResult(first)
        self.assertEqual(len(self.server.held), 1)
        self.server.held[0].callback((200, self.server.current()))
        self.assertIs(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(self.failureResultOf(third, AuthError).value.reason, "unknown_kid")
        self.assertEqual(len(self.server.requests), 1)

    def test_cancelled_lookup_leaves_others_alone(self) -> None:
        """A lookup cancelled while the fetch is under way (client gone) does not disturb the others."""
        self.server.hold = True
        cache = self.cache()
        gone = ensureDeferred(cache.key_for("a", "RS256"))
        waiting = ensureDeferred(cache.key_for("a", "RS256"))
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.server.held[0].callback((200, self.server.current()))
        self.assertIsInstance(self.successResultOf(waiting), rsa.RSAPublicKey)
        self.assertEqual(cache.key_ids, ("a",))

    def test_no_kid(self) -> None:
        """Without a kid the set's only key of the algorithm is used; with several, ``missing_kid``."""
        self.server.keys = [public_jwk(rsa_key(), "r"), public_jwk(ec_key(), "e")]
        cache = self.cache()
        self.assertIsInstance(self.key(cache, None, "RS256"), rsa.RSAPublicKey)
        self.assertIsInstance(self.key(cache, None, "ES256"), ec.EllipticCurvePublicKey)
        self.assertEqual(self.refused(cache, None, "EdDSA").reason, "unknown_kid")
        self.server.keys.append(public_jwk(rsa_key(1), "r1"))
        self.clock.advance(300)
        self.assertEqual(self.refused(cache, None, "RS256").reason, "missing_kid")
        self.assertIsInstance(self.key(cache, None, "ES256"), ec.EllipticCurvePublicKey)

    def test_kid_without_kid_member(self) -> None:
        """A key without a kid in the set is only found by a token without one."""
        self.server.keys = [{k: v for k, v in public_jwk(ed_key(), None).items()}]
        cache = self.cache()
        self.assertIsInstance(self.key(cache, None, "EdDSA"), ed25519.Ed25519PublicKey)
        self.assertEqual(self.refused(cache, "x", "EdDSA").reason, "unknown_kid")

    def test_alg_mismatch(self) -> None:
        """A kid of an RSA key named with ``alg: ES256`` is ``alg_mismatch``, without a refetch."""
        cache = self.cache()
        self.key(cache, "a")
        self.clock.advance(60)
        self.assertEqual(self.refused(cache, "a", "ES256").reason, "alg_mismatch")
        self.assertEqual(len(self.server.requests), 1)

    def test_symmetric_algorithms_never(self) -> None:
        """A JWKS never answers for HS256 (or any non-JWKS algorithm), and does not fetch to try."""
        cache = self.cache()
        for alg in ("HS256", "none", "RS512"):
            self.assertEqual(self.refused(cache, "a", alg).reason, "alg_not_allowed")
        self.assertEqual(self.server.requests, [])

    def test_refresh_never_raises(self) -> None:
        """``refresh()`` fetches now, whatever the floor, and reports failures instead of raising."""
        cache = self.cache()
        self.successResultOf(ensureDeferred(cache.refresh()))
        self.server.error = RuntimeError("boom")
        self.successResultOf(ensureDeferred(cache.refresh()))
        self.assertEqual(self.events, ["fetch", "error"])
        self.assertEqual(cache.key_ids, ("a",))

    def test_empty_set_is_authoritative(self) -> None:
        """A valid set with no usable key replaces the cache (the backend withdrew its keys)."""
        cache = self.cache()
        self.key(cache, "a")
        self.server.keys = []
        self.clock.advance(300)
        self.assertEqual(self.refused(cache, "a").reason, "unknown_kid")
        self.assertEqual(cache.key_ids, ())

    def test_hook_failure_is_contained(self) -> None:
        """A metrics hook that raises is logged and does not break lookups."""

        def hook(event: str) -> None:
            raise ZeroDivisionError(event)

        cache = self.cache(metrics_hook=hook)
        self.key(cache, "a")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_no_hook(self) -> None:
        """Without a metrics hook, failures and staleness are still handled."""
        cache = self.cache(metrics_hook=None)
        self.key(cache, "a")
        self.server.status = 500
        self.clock.advance(300)
        self.key(cache, "a")

    def test_arguments_checked(self) -> None:
        """An empty URL, a non-positive TTL or a negative floor is a ``ValueError``."""
        for url, options in (
            ("", {}),
            (URL, {"ttl_s": 0}),
            (URL, {"ttl_s": float("inf")}),
            (URL, {"min_refetch_interval_s": -1}),
        ):
            with self.assertRaises(ValueError):
                JwksCache(url, clock=self.clock, http_get=self.server.get, **options)

    def test_default_http_get(self) -> None:
        """Without ``http_get``, treq runs on the clock's reactor; a clock that is no reactor is refused."""
        made: list[Any] = []

        def fake_factory(**kwargs: Any) -> Any:
            made.append(kwargs)
            return self.server.get

        self.patch(jwks_module, "treq_http_get", fake_factory)
        self.assertRaises(TypeError, JwksCache, URL, clock=self.clock)
        JwksCache(URL, clock=reactor)
        self.assertEqual(made, [{"reactor": reactor}])


# --- a real HTTP server on loopback --------------------------------------------------


class JwksResource(Resource):
    """Serves a JWKS that the test can change, or an error, a redirect, or too much."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None
        self.redirect: bytes | None = None
        self.hits = 0

    def render_GET(self, request: Request) -> bytes:
        """Answer as configured."""
        self.hits += 1
        if self.redirect is not None and request.path != self.redirect:
            request.redirect(self.redirect)
            return b""
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        return self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()


class RealHttpTests(unittest.TestCase):
    """The real path: a twisted.web site on 127.0.0.1, fetched with treq on the real reactor."""

    timeout = 30

    def setUp(self) -> None:
        self.resource = JwksResource()
        self.resource.keys = [public_jwk(rsa_key(), "a")]
        port = reactor.listenTCP(0, Site(self.resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/.well-known/jwks.json"
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)
        self.events: list[str] = []

    def cache(self, **overrides: Any) -> JwksCache:
        """A cache fetching from the loopback site with real treq."""
        options: dict[str, Any] = {
            "clock": reactor,
            "http_get": treq_http_get(reactor=reactor, pool=self.pool),
            "metrics_hook": self.events.append,
        }
        options.update(overrides)
        return JwksCache(self.url, **options)

    async def test_verify_through_a_real_fetch(self) -> None:
        """A token signed by the backend's key verifies with the key fetched over HTTP."""
        verifier = JwtVerifier(
            secret=None,
            public_key_pem=None,
            jwks=self.cache(),
            issuer=None,
            audience=None,
            leeway_s=30,
            clock=reactor,
            roles=DEFAULT_ROLES,
        )
        now = int(time.time())
        token = signed("RS256", rsa_key(), claims(iat=now, exp=now + 600), kid="a")
        principal = await verifier.verify(token)
        self.assertEqual((principal.sub, principal.via), ("user-42", "jwt"))
        await verifier.verify(token)
        self.assertEqual(self.resource.hits, 1)
        self.assertEqual(self.events, ["fetch"])

    async def test_rotation_over_http(self) -> None:
        """A key added on the server is fetched when a token names it."""
        cache = self.cache(min_refetch_interval_s=0)
        await cache.key_for("a", "RS256")
        self.resource.keys.append(public_jwk(ed_key(), "b"))
        key = await cache.key_for("b", "EdDSA")
        self.assertIsInstance(key, ed25519.Ed25519PublicKey)
        self.assertEqual(self.resource.hits, 2)

    async def test_server_error_keeps_the_cache(self) -> None:
        """An HTTP 500 from the server keeps the cached set and reports an error."""
        cache = self.cache()
        key = await cache.key_for("a", "RS256")
        self.resource.status = 500
        await cache.refresh()
        self.assertIs(await cache.key_for("a", "RS256"), key)
        self.assertEqual(self.events, ["fetch", "error"])

    async def test_redirect_not_followed(self) -> None:
        """A redirect is a failed fetch: the JWKS location is exactly the configured URL."""
        self.resource.redirect = b"/elsewhere.json"
        cache = self.cache()
        with self.assertRaises(AuthError) as raised:
            await cache.key_for("a", "RS256")
        self.assertEqual(raised.exception.code, "UNAVAILABLE")
        self.assertEqual((self.resource.hits, self.events), (1, ["error"]))

    async def test_oversized_body(self) -> None:
        """A body over the 1 MiB limit is a failed fetch; the download is cut short."""
        padding = "x" * (2 * MAX_JWKS_BYTES)
        self.resource.body = json.dumps({"keys": [public_jwk(rsa_key(), "a")], "padding": padding}).encode()
        cache = self.cache()
        with self.assertRaises(AuthError):
            await cache.key_for("k0", "RS256")
        self.assertEqual(self.events, ["error"])

    async def test_connection_refused(self) -> None:
        """Nothing listening is a failed fetch, reported and survived."""
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        cache = JwksCache(
            f"http://127.0.0.1:{number}/jwks",
            clock=reactor,
            http_get=treq_http_get(reactor=reactor, pool=self.pool),
            metrics_hook=self.events.append,
        )
        with self.assertRaises(AuthError):
            await cache.key_for("a", "RS256")
        self.assertEqual(self.events, ["error"])

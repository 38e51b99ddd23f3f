"""``POST /api/v1/auth/refresh`` and ``/api/v1/auth/revoke`` through the real site.

The token service runs over a real SQLite store (its thread answers on the
real reactor) and the guard checks revocations on every request, so these
tests follow a token from the wire to the store and back: rotation,
reuse revoking the family (access tokens included), admin revocation,
refusals with contract codes, and no token in any log line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from tests.sitehelpers import BuiltSite, build_site, stub_for
from tests.test_refresh import TokenServiceMixin


async def settle(d: Deferred[Any], built: BuiltSite, stub: Any) -> Any:
    """Wait for a StubTreq request whose handler awaits the database thread.

    ``d.called`` is not enough: treq's Deferred is "called" while it waits on
    an inner one, so completion is observed through a callback.
    """
    done: list[Any] = []
    d.addBoth(lambda result: done.append(result) or result)
    for _ in range(2000):
        stub.flush()
        if done:
            break
        await deferLater(reactor, 0.005, lambda: None)
    return await d


class AuthRoutesTests(TokenServiceMixin, unittest.TestCase):
    """The refresh and revoke routes on a real site."""

    async def build(self, *, tokens: bool = True, development: bool = True) -> BuiltSite:
        service = await self.service() if tokens else None
        guard = Guard(
            verifier=self.verifier(),
            url_keys=(),
            url_max_ttl_s=604800,
            revocations=self.cache if tokens else None,
            limiter=None,
            policies=DEFAULT_POLICIES,
            anonymous=None,
            clock=self.clock,
        )
        media = Path(self.mktemp())
        media.mkdir()
        self.built = build_site(media, clock=self.clock, guard=guard, tokens=service, development=development)
        self.stub = stub_for(self.built)
        return self.built

    async def post(self, path: str, body: bytes, token: str | None = None) -> tuple[int, Any, Any]:
        headers = {b"content-type": [b"application/json"]}
        if token is not None:
            headers[b"authorization"] = [b"Bearer " + token.encode()]
        d = self.stub.post("http://streamsrv.test" + path, data=body, headers=headers)
        response = await settle(d, self.built, self.stub)
        d = response.content()
        content = await settle(d, self.built, self.stub)
        return response.code, response.headers, json.loads(content)

    async def get_status(self, path: str, token: str) -> tuple[int, Any]:
        d = self.stub.get(
            "http://streamsrv.test" + path, headers={b"authorization": [b"Bearer " + token.encode()]}
        )
        response = await settle(d, self.built, self.stub)
        content = await settle(response.content(), self.built, self.stub)
        return response.code, json.loads(content)

    def admin(self) -> str:
        return self.issuer().issue(sub="root", roles=["admin"], ttl_s=600)

    async def test_rotation_over_http(self) -> None:
        """A refresh token gives an access token that works and a new refresh token; no-store."""
        await self.build()
        first = self.first_refresh()
        code, headers, body = await self.post(
            "/api/v1/auth/refresh", json.dumps({"refresh_token": first}).encode()
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(set(body), {"access_token", "refresh_token", "token_type", "expires_in"})
        self.assertNotEqual(body["refresh_token"], first)
        code, _ = await self.get_status("/health/detailed", body["access_token"])
        self.assertEqual(code, 200)  # development: open; the token is at least accepted

    async def test_reuse_revokes_family_and_access_tokens(self) -> None:
        """A spent refresh token presented again revokes the family: its access token gets 401."""
        await self.build()
        first = self.first_refresh()
        _, _, rotated = await self.post("/api/v1/auth/refresh", json.dumps({"refresh_token": first}).encode())
        access = rotated["access_token"]
        code, _, body = await self.post("/api/v1/auth/refresh", json.dumps({"refresh_token": first}).encode())
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_REVOKED"))
        # The access token of the family is refused on an authenticated route (revoke, as a non-admin).
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"jti":"x"}', token=access)
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_REVOKED"))
        # And the rotated refresh token is dead too.
        code, _, body = await self.post(
            "/api/v1/auth/refresh", json.dumps({"refresh_token": rotated["refresh_token"]}).encode()
        )
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_REVOKED"))

    async def test_revoke_requires_admin(self) -> None:
        """A listener calling the admin route gets 403 FORBIDDEN; no credential gets 401."""
        await self.build()
        listener = self.issuer().issue(sub="bob", roles=["listener"], ttl_s=600)
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"sub":"alice"}', token=listener)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"sub":"alice"}')
        self.assertEqual((code, body["error"]["code"]), (401, "UNAUTHENTICATED"))

    async def test_revoke_subject(self) -> None:
        """An admin revokes every token of a sub issued before now: the next request with one is 401."""
        await self.build()
        alice = self.issuer().issue(sub="alice", roles=["listener"], ttl_s=600)
        self.clock.advance(1)
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"sub":"alice"}', token=self.admin())
        self.assertEqual(code, 200, body)
        self.assertEqual(body["revoked"]["sub"], "alice")
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"jti":"x"}', token=alice)
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_REVOKED"))

    async def test_revoke_jti(self) -> None:
        """Revoking one jti leaves the sub's other tokens alone."""
        await self.build()
        one = self.issuer().issue(sub="carol", roles=["admin"], ttl_s=600)
        other = self.issuer().issue(sub="carol", roles=["admin"], ttl_s=600)
        jti = json.loads(__import__("base64").urlsafe_b64decode(one.split(".")[1] + "=="))["jti"]
        code, _, _ = await self.post(
            "/api/v1/auth/revoke", json.dumps({"jti": jti}).encode(), token=self.admin()
        )
        self.assertEqual(code, 200)
        code, _, body = await self.post("/api/v1/auth/revoke", b'{"jti":"nothing"}', token=one)
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_REVOKED"))
        code, _, _ = await self.post("/api/v1/auth/revoke", b'{"jti":"nothing"}', token=other)
        self.assertEqual(code, 200)

    async def test_bad_bodies(self) -> None:
        """Malformed bodies answer 400 BAD_REQUEST without echoing them; an access token is TOKEN_INVALID."""
        await self.build()
        for raw in (b"", b"not json", b"[]", b'{"refresh_token": 5}', b"\xff\xfe"):
            code, _, body = await self.post("/api/v1/auth/refresh", raw)
            self.assertEqual((code, body["error"]["code"]), (400, "BAD_REQUEST"), raw)
            self.assertNotIn("not json", body["error"]["message"])
        access = self.issuer().issue(sub="alice", roles=["listener"], ttl_s=600)
        code, _, body = await self.post(
            "/api/v1/auth/refresh", json.dumps({"refresh_token": access}).encode()
        )
        self.assertEqual((code, body["error"]["code"]), (401, "TOKEN_INVALID"))
        for raw in (b"{}", b'{"jti":"a","sub":"b"}', b'{"jti":""}', b'{"who":"x"}'):
            code, _, body = await self.post("/api/v1/auth/revoke", raw, token=self.admin())
            self.assertEqual((code, body["error"]["code"]), (400, "BAD_REQUEST"), raw)

    async def test_get_not_allowed(self) -> None:
        """GET on the POST-only routes is 405 with Allow."""
        await self.build()
        d = self.stub.get("http://streamsrv.test/api/v1/auth/refresh")
        response = await settle(d, self.built, self.stub)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])

    async def test_not_configured(self) -> None:
        """Without a token service the routes answer 501 NOT_CONFIGURED."""
        await self.build(tokens=False)
        code, _, body = await self.post("/api/v1/auth/refresh", b'{"refresh_token":"x"}')
        self.assertEqual((code, body["error"]["code"]), (501, "NOT_CONFIGURED"))

    async def test_no_token_in_logs(self) -> None:
        """No log line, including the security events of reuse, holds a token or its signature."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        await self.build()
        first = self.first_refresh()
        _, _, rotated = await self.post("/api/v1/auth/refresh", json.dumps({"refresh_token": first}).encode())
        await self.post("/api/v1/auth/refresh", json.dumps({"refresh_token": first}).encode())
        self.assertIn("refresh_reuse", [kind for kind, _ in self.events])
        text = repr(events) + repr(self.events)
        for token in (first, rotated["access_token"], rotated["refresh_token"]):
            for part in token.split("."):
                self.assertNotIn(part, text)

    async def test_detailed_health_for_admins(self) -> None:
        """Outside development an admin's JWT opens /health/detailed; a listener's is 403, none is 401."""
        await self.build(development=False)
        code, body = await self.get_status("/health/detailed", self.admin())
        self.assertEqual(code, 200, body)
        self.assertIn("checks", body)
        listener = self.issuer().issue(sub="bob", roles=["listener"], ttl_s=600)
        code, body = await self.get_status("/health/detailed", listener)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))
        code, body = await self.get_status("/health/detailed", "not-a-jwt")
        self.assertEqual((code, body["error"]["code"]), (401, "UNAUTHENTICATED"))

# -*- test-case-name: tests.test_mint -*-
"""Tests for :mod:`streamsrv.auth.mint`: ``streamsrv mint-token`` output verifies with the real verifier."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.mint import MAX_TTL_S, mint_cli
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.refresh import ACCESS_TTL_S, REFRESH_TTL_S, TokenService
from streamsrv.auth.revocation import AUTH_DB_FILE, RevocationCache, SqliteRevocationStore
from streamsrv.auth.roles import DEFAULT_ROLES
from tests.test_jwt import SECRET, decode_unverified, ec_key, private_pem
from tests.test_revocation import NOW


class MintTests(unittest.TestCase):
    """What ``mint_cli`` prints, and that it verifies."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def issuer(self, **overrides: Any) -> TokenIssuer:
        """The HS256 issuer at :data:`NOW`."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "private_key_pem": None,
            "issuer": None,
            "audience": None,
            "clock": self.clock,
        }
        options.update(overrides)
        return TokenIssuer(**options)

    def verifier(self, **overrides: Any) -> JwtVerifier:
        """The HS256 verifier at :data:`NOW`."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "public_key_pem": None,
            "jwks": None,
            "issuer": None,
            "audience": None,
            "leeway_s": 0,
            "clock": self.clock,
            "roles": DEFAULT_ROLES,
        }
        options.update(overrides)
        return JwtVerifier(**options)

    def mint(self, *argv: str, issuer: TokenIssuer | None = None) -> tuple[int, str, str]:
        """Run ``mint_cli``: its status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        status = mint_cli(argv, issuer=issuer or self.issuer(), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def minted(self, *argv: str, issuer: TokenIssuer | None = None) -> str:
        """The token ``mint_cli`` prints, checking it is the one line of stdout and absent from stderr."""
        status, out, err = self.mint(*argv, issuer=issuer)
        self.assertEqual(status, 0, err)
        self.assertTrue(out.endswith("\n"))
        token = out[:-1]
        self.assertNotIn("\n", token)
        self.assertNotIn(token.split(".")[2], err)
        return token

    async def verify(self, token: str, typ: str = "access", verifier: JwtVerifier | None = None) -> Principal:
        """The principal the real verifier makes of *token*."""
        return await (verifier or self.verifier()).verify(token, typ=typ)

    async def test_default_access_token(self) -> None:
        """By default: an access token for the listener role, valid 15 minutes, summarised on stderr."""
        status, out, err = self.mint("--sub", "alice")
        self.assertEqual(status, 0)
        principal = await self.verify(out.strip())
        self.assertEqual((principal.sub, principal.roles), ("alice", frozenset({"listener"})))
        self.assertEqual(principal.expires_at, NOW + ACCESS_TTL_S)
        self.assertIsNone(principal.family)
        self.assertEqual(decode_unverified(out.strip())[1]["typ"], "access")
        self.assertEqual(
            err,
            "streamsrv mint-token: access token for 'alice', roles listener, expires 2026-01-01T00:15:00Z\n",
        )

    async def test_roles_permissions_ttl(self) -> None:
        """Repeated ``--role`` and ``--permission`` and ``--ttl`` land in the claims."""
        token = self.minted(
            "--sub", "bob", "--role", "premium", "--role", "artist",
            "--permission", "notifications:send", "--ttl", "60",
        )  # fmt: skip
        principal = await self.verify(token)
        self.assertEqual(principal.roles, frozenset({"premium", "artist"}))
        self.assertEqual(principal.token_permissions, frozenset({"notifications:send"}))
        self.assertTrue(principal.can("stream:hq"))
        self.assertEqual(principal.expires_at, NOW + 60)
        self.clock.advance(60)
        with self.assertRaises(AuthError) as raised:
            await self.verify(token)
        self.assertEqual(raised.exception.code, "TOKEN_EXPIRED")

    async def test_refresh_token(self) -> None:
        """``--refresh`` mints a refresh token (30 days by default), without ``fam`` unless ``--family``."""
        token = self.minted("--sub", "alice", "--refresh")
        principal = await self.verify(token, typ="refresh")
        self.assertEqual((principal.family, principal.expires_at), (None, NOW + REFRESH_TTL_S))
        with self.assertRaises(AuthError) as raised:
            await self.verify(token)  # not usable as a bearer
        self.assertEqual(raised.exception.code, "TOKEN_INVALID")
        family = await self.verify(
            self.minted("--sub", "alice", "--refresh", "--family", "F-1"), typ="refresh"
        )
        self.assertEqual(family.family, "F-1")

    async def test_asymmetric_key(self) -> None:
        """With a private key the token is signed by it and verifies with the public half."""
        issuer = self.issuer(secret=None, private_key_pem=private_pem(ec_key()))
        assert issuer.public_key_pem is not None
        token = self.minted("--sub", "alice", issuer=issuer)
        self.assertEqual(decode_unverified(token)[0]["alg"], "ES256")
        verifier = self.verifier(secret=None, public_key_pem=issuer.public_key_pem)
        self.assertEqual((await self.verify(token, verifier=verifier)).sub, "alice")

    async def test_minted_refresh_token_rotates(self) -> None:
        """A refresh token from ``mint-token`` is accepted by ``/auth/refresh`` and starts a family."""
        token = self.minted("--sub", "alice", "--refresh", "--role", "premium")
        store = SqliteRevocationStore(Path(self.mktemp()) / AUTH_DB_FILE, self.clock, reactor=reactor)
        self.addCleanup(store.close)
        await store.start()
        service = TokenService(
            verifier=self.verifier(),
            issuer=self.issuer(),
            revocations=RevocationCache(store, self.clock),
            store=store,
            clock=self.clock,
            on_security_event=lambda kind, fields: None,
        )
        answer = await service.refresh(json.dumps({"refresh_token": token}).encode())
        access = await self.verify(str(answer["access_token"]))
        self.assertEqual(
            (access.roles, access.family), (frozenset({"premium"}), decode_unverified(token)[1]["jti"])
        )

    def test_no_signing_key(self) -> None:
        """Without a signing key: status 1, a NOT_CONFIGURED message naming the variables, no output."""
        status, out, err = self.mint("--sub", "alice", issuer=self.issuer(secret=None))
        self.assertEqual((status, out), (1, ""))
        self.assertIn("NOT_CONFIGURED", err)
        self.assertIn("STREAMSRV_JWT_SECRET", err)
        self.assertIn("STREAMSRV_JWT_PRIVATE_KEY_FILE", err)

    def test_bad_values(self) -> None:
        """A lifetime out of range or an empty value: status 1 with a message, no output."""
        for argv in (
            ("--sub", "alice", "--ttl", "0"),
            ("--sub", "alice", "--ttl", str(MAX_TTL_S + 1)),
            ("--sub", ""),
            ("--sub", "alice", "--family", ""),
            ("--sub", "alice", "--role", ""),
            ("--sub", "alice", "--permission", ""),
        ):
            status, out, err = self.mint(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertTrue(err.startswith("streamsrv mint-token: "), err)

    def test_usage_errors(self) -> None:
        """A wrong command line is status 2 with the usage on stderr."""
        for argv in ((), ("--role", "admin"), ("--sub", "a", "--ttl", "soon"), ("--sub", "a", "--bogus")):
            status, out, err = self.mint(*argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn("usage: streamsrv mint-token", err)

    def test_help(self) -> None:
        """``--help`` prints the help on stdout, status 0, even without ``--sub``."""
        for argv in (("--help",), ("-h",), ("--sub", "a", "--help")):
            status, out, err = self.mint(*argv)
            self.assertEqual((status, err), (0, ""))
            self.assertIn("--refresh", out)

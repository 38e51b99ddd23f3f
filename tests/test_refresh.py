# -*- test-case-name: tests.test_refresh -*-
"""Tests for :mod:`streamsrv.auth.refresh`: rotation, reuse detection, revocation.

Real keys, the real :class:`JwtVerifier` and :class:`TokenIssuer`, a real
SQLite store in a temporary directory, and one :class:`task.Clock` that every
part tells the time by (``iat`` and ``exp`` follow it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import Principal
from streamsrv.auth.refresh import (
    ACCESS_TTL_S,
    MAX_BODY_BYTES,
    REFRESH_TTL_S,
    TokenService,
    make_revocation_store,
)
from streamsrv.auth.revocation import (
    AUTH_DB_FILE,
    IRevocationStore,
    RevocationCache,
    SqliteRevocationStore,
)
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.config import load_settings
from streamsrv.errors import ApiError
from tests.test_jwt import SECRET, claims, decode_unverified, ed_key, hs256, private_pem
from tests.test_revocation import NOW, BreakableStore

DAY = 24 * 3600


def body(**fields: Any) -> bytes:
    """A JSON request body."""
    return json.dumps(fields).encode()


class TokenServiceMixin:
    """A token service over a fresh SQLite store, all on one clock at :data:`NOW`."""

    clock: Clock

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.path = Path(self.mktemp()) / AUTH_DB_FILE  # type: ignore[attr-defined]
        self.events: list[tuple[str, dict[str, Any]]] = []

    def verifier(self, **overrides: Any) -> JwtVerifier:
        """The HS256 verifier, 30 s leeway."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "public_key_pem": None,
            "jwks": None,
            "issuer": None,
            "audience": None,
            "leeway_s": 30,
            "clock": self.clock,
            "roles": DEFAULT_ROLES,
        }
        options.update(overrides)
        return JwtVerifier(**options)

    def issuer(self, **overrides: Any) -> TokenIssuer:
        """The HS256 issuer."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "private_key_pem": None,
            "issuer": None,
            "audience": None,
            "clock": self.clock,
        }
        options.update(overrides)
        return TokenIssuer(**options)

    async def open_store(self) -> SqliteRevocationStore:
        """A started store on the test's file (another instance is another process)."""
        store = SqliteRevocationStore(self.path, self.clock, reactor=reactor)
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        await store.start()
        return store

    async def service(
        self,
        *,
        issuer: TokenIssuer | None = None,
        verifier: JwtVerifier | None = None,
        store: Any = None,
    ) -> TokenService:
        """A token service; its cache is :attr:`cache`."""
        self.store: IRevocationStore = store if store is not None else await self.open_store()
        self.cache = RevocationCache(self.store, self.clock)
        await self.cache.update()
        return TokenService(
            verifier=verifier or self.verifier(),
            issuer=issuer or self.issuer(),
            revocations=self.cache,
            store=self.store,
            clock=self.clock,
            on_security_event=lambda kind, fields: self.events.append((kind, fields)),
        )

    def first_refresh(self, **overrides: Any) -> str:
        """A refresh token as a backend (or ``mint-token``) issues it: no ``fam`` unless given."""
        options: dict[str, Any] = {"sub": "alice", "roles": ["listener"], "typ": "refresh", "ttl_s": 7 * DAY}
        options.update(overrides)
        return self.issuer().issue(**options)

    async def access(self, token: str) -> Principal:
        """The principal of an access token (verified)."""
        return await self.verifier().verify(token, typ="access")

    async def refused(self, call: Any, code: str) -> ApiError:
        """*call* (an awaitable) fails with ApiError *code*; nothing of a token in the message."""
        try:
            await call
        except ApiError as e:
            self.assertEqual(e.code, code)  # type: ignore[attr-defined]
            self.assertNotIn("eyJ", e.message)  # type: ignore[attr-defined]
            return e
        raise AssertionError(f"expected {code}")


class RefreshTests(TokenServiceMixin, unittest.TestCase):
    """``/auth/refresh``: rotation."""

    async def test_rotation(self) -> None:
        """A refresh token buys an access token and a rotated refresh token of the same family and claims."""
        service = await self.service()
        first = self.first_refresh(roles=["premium", "artist"], permissions=["notifications:send"])
        first_jti = decode_unverified(first)[1]["jti"]
        self.clock.advance(60)
        answer = await service.refresh(body(refresh_token=first))
        self.assertEqual(set(answer), {"access_token", "refresh_token", "token_type", "expires_in"})
        self.assertEqual((answer["token_type"], answer["expires_in"]), ("Bearer", ACCESS_TTL_S))
        access = await self.access(str(answer["access_token"]))
        self.assertEqual(access.sub, "alice")
        self.assertEqual(access.roles, frozenset({"premium", "artist"}))
        self.assertEqual(access.token_permissions, frozenset({"notifications:send"}))
        self.assertEqual(access.family, first_jti)  # a token without fam starts its own family
        self.assertEqual((access.issued_at, access.expires_at), (NOW + 60, NOW + 60 + ACCESS_TTL_S))
        self.assertEqual(
            decode_unverified(str(answer["access_token"]))[1]["permissions"], ["notifications:send"]
        )
        rotated = await self.verifier().verify(str(answer["refresh_token"]), typ="refresh")
        self.assertEqual((rotated.family, rotated.sub, rotated.roles), (first_jti, "alice", access.roles))
        self.assertNotEqual(rotated.token_id, first_jti)
        self.assertFalse(self.cache.is_revoked(access))
        self.clock.advance(60)
        again = await service.refresh(body(refresh_token=answer["refresh_token"]))
        self.assertEqual((await self.access(str(again["access_token"]))).family, first_jti)
        self.assertEqual(self.events, [])

    async def test_family_kept(self) -> None:
        """A first refresh token that carries ``fam`` keeps it through rotation."""
        service = await self.service()
        answer = await service.refresh(body(refresh_token=self.first_refresh(family="fam-from-backend")))
        self.assertEqual((await self.access(str(answer["access_token"]))).family, "fam-from-backend")

    async def test_families_are_separate(self) -> None:
        """Two tokens without ``fam`` start two families."""
        service = await self.service()
        families = set()
        for _ in range(2):
            answer = await service.refresh(body(refresh_token=self.first_refresh()))
            families.add((await self.access(str(answer["access_token"]))).family)
        self.assertEqual(len(families), 2)

    async def test_family_never_extended(self) -> None:
        """A rotated refresh token expires when its predecessor did: a family ends at its first expiry."""
        service = await self.service()
        first = self.first_refresh(ttl_s=3600)
        self.clock.advance(1000.5)
        answer = await service.refresh(body(refresh_token=first))
        rotated = await self.verifier().verify(str(answer["refresh_token"]), typ="refresh")
        self.assertEqual(rotated.expires_at, NOW + 3600)

    async def test_refresh_ttl_cap(self) -> None:
        """A long-lived first refresh token rotates into one of at most :data:`REFRESH_TTL_S`."""
        service = await self.service()
        answer = await service.refresh(body(refresh_token=self.first_refresh(ttl_s=90 * DAY)))
        rotated = await self.verifier().verify(str(answer["refresh_token"]), typ="refresh")
        self.assertEqual(rotated.expires_at, NOW + REFRESH_TTL_S)

    async def test_asymmetric_key(self) -> None:
        """With an Ed25519 signing key the rotated tokens are EdDSA and verify with the public key."""
        issuer = self.issuer(secret=None, private_key_pem=private_pem(ed_key()))
        assert issuer.public_key_pem is not None
        verifier = self.verifier(secret=None, public_key_pem=issuer.public_key_pem)
        service = await self.service(issuer=issuer, verifier=verifier)
        first = issuer.issue(sub="alice", roles=["listener"], typ="refresh", ttl_s=3600)
        answer = await service.refresh(body(refresh_token=first))
        self.assertEqual(decode_unverified(str(answer["access_token"]))[0]["alg"], "EdDSA")
        self.assertEqual((await verifier.verify(str(answer["access_token"]))).sub, "alice")


class ReuseTests(TokenServiceMixin, unittest.TestCase):
    """Presenting a spent refresh token revokes its family."""

    async def test_reuse_revokes_the_family(self) -> None:
        """
        The second use of a refresh token is ``TOKEN_REVOKED``, and so is
        everything of its family afterwards: the access and refresh tokens
        the first use bought, here and in another process.
        """
        service = await self.service()
        first = self.first_refresh()
        answer = await service.refresh(body(refresh_token=first))
        access = await self.access(str(answer["access_token"]))
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_REVOKED")
        self.assertTrue(self.cache.is_revoked(access))
        await self.refused(service.refresh(body(refresh_token=answer["refresh_token"])), "TOKEN_REVOKED")
        other = RevocationCache(await self.open_store(), self.clock)
        await other.update()
        self.assertTrue(other.is_revoked(access))
        self.assertFalse(
            other.is_revoked(await self.access(self.issuer().issue(sub="alice", roles=[], ttl_s=60)))
        )

    async def test_reuse_is_a_security_event_without_the_token(self) -> None:
        """Reuse is reported as ``refresh_reuse`` with sub, jti and family, and no token."""
        service = await self.service()
        first = self.first_refresh()
        jti = decode_unverified(first)[1]["jti"]
        answer = await service.refresh(body(refresh_token=first))
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_REVOKED")
        reuse = [fields for kind, fields in self.events if kind == "refresh_reuse"]
        self.assertEqual(reuse, [{"sub": "alice", "jti": jti, "family": jti}])
        text = repr(self.events)
        for token in (first, answer["access_token"], answer["refresh_token"]):
            for piece in str(token).split("."):
                self.assertNotIn(piece, text)

    async def test_concurrent_reuse(self) -> None:
        """Of ten simultaneous uses of one refresh token, one is served and nine revoke the family."""
        service = await self.service()
        first = self.first_refresh()
        outcomes: list[str] = []

        async def attempt() -> None:
            try:
                await service.refresh(body(refresh_token=first))
                outcomes.append("ok")
            except ApiError as e:
                outcomes.append(e.code)

        await gatherResults([Deferred.fromCoroutine(attempt()) for _ in range(10)])
        self.assertEqual(sorted(outcomes), ["TOKEN_REVOKED"] * 9 + ["ok"])
        family = decode_unverified(first)[1]["jti"]
        self.assertIn(family, self.cache.snapshot.families)

    async def test_revoked_family_refused_before_spending(self) -> None:
        """A refresh token of a family revoked elsewhere is refused, and not spent."""
        service = await self.service()
        first = self.first_refresh(family="f-1")
        other = RevocationCache(await self.open_store(), self.clock)
        await other.revoke_family("f-1", NOW + 7 * DAY)
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_REVOKED")
        self.assertEqual([kind for kind, _ in self.events], ["refresh_refused"])
        self.assertEqual(self.events[0][1]["reason"], "revoked")
        self.assertTrue(await self.store.spend_refresh(decode_unverified(first)[1]["jti"], "f-1", NOW + 60))


class RefreshRefusalTests(TokenServiceMixin, unittest.TestCase):
    """What ``/auth/refresh`` refuses, and with which code."""

    async def test_access_token(self) -> None:
        """An access token sent to refresh is ``TOKEN_INVALID``."""
        service = await self.service()
        access = self.issuer().issue(sub="alice", roles=["listener"], ttl_s=600)
        await self.refused(service.refresh(body(refresh_token=access)), "TOKEN_INVALID")
        self.assertEqual(self.events, [("refresh_refused", {"code": "TOKEN_INVALID", "reason": "wrong_typ"})])

    async def test_expired(self) -> None:
        """An expired refresh token is ``TOKEN_EXPIRED``, also within the verifier's leeway."""
        service = await self.service()
        first = self.first_refresh(ttl_s=600)
        self.clock.advance(600)  # past exp, within the 30 s leeway: nothing left to rotate
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_EXPIRED")
        self.clock.advance(60)
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_EXPIRED")

    async def test_invalid_tokens(self) -> None:
        """Garbage, a wrong signature and a refresh token without ``jti`` are ``TOKEN_INVALID``."""
        service = await self.service()
        for token in (
            "garbage",
            hs256(claims(typ="refresh"), secret="another-secret-of-enough-length-0123456789"),
            hs256(claims(typ="refresh", jti=None, iat=NOW, exp=NOW + 600)),
        ):
            await self.refused(service.refresh(body(refresh_token=token)), "TOKEN_INVALID")

    async def test_malformed_bodies(self) -> None:
        """A body that is not a JSON object with a string ``refresh_token`` is ``BAD_REQUEST``."""
        service = await self.service()
        token = self.first_refresh()
        for raw in (
            b"",
            b"not json",
            b"\xff\xfe",
            b"[]",
            b'"token"',
            b"{}",
            b'{"refresh_token": null}',
            b'{"refresh_token": 42}',
            b'{"refresh_token": ["a"]}',
            json.dumps({"refresh_token": token, "pad": "x" * MAX_BODY_BYTES}).encode(),
        ):
            error = await self.refused(service.refresh(raw), "BAD_REQUEST")
            self.assertEqual(error.status, 400)
        self.assertEqual(self.events, [])

    async def test_not_configured(self) -> None:
        """Without a signing key refresh is ``NOT_CONFIGURED`` (501), whatever the body."""
        service = await self.service(issuer=self.issuer(secret=None))
        for raw in (body(refresh_token=self.first_refresh()), b"garbage"):
            error = await self.refused(service.refresh(raw), "NOT_CONFIGURED")
            self.assertEqual(error.status, 501)

    async def test_store_unavailable(self) -> None:
        """When the store cannot spend the token: ``UNAVAILABLE``, and no token is issued."""
        store = BreakableStore(await self.open_store())
        service = await self.service(store=store)
        store.broken = True
        await self.refused(service.refresh(body(refresh_token=self.first_refresh())), "UNAVAILABLE")


class RevokeTests(TokenServiceMixin, unittest.TestCase):
    """``/auth/revoke``: by ``jti`` or by ``sub``, admins only."""

    def admin(self) -> Principal:
        """An admin principal."""
        return Principal(
            sub="root", roles=frozenset({"admin"}), permissions=DEFAULT_ROLES["admin"], via="jwt"
        )

    async def test_by_jti(self) -> None:
        """Revoking a jti revokes that token (here and in other processes), no other."""
        service = await self.service()
        target = await self.access(self.issuer().issue(sub="alice", roles=["listener"], ttl_s=600, jti="j-9"))
        bystander = await self.access(self.issuer().issue(sub="alice", roles=["listener"], ttl_s=600))
        answer = await service.revoke(self.admin(), body(jti="j-9"))
        self.assertEqual(answer, {"revoked": {"jti": "j-9"}})
        self.assertTrue(self.cache.is_revoked(target))
        self.assertFalse(self.cache.is_revoked(bystander))
        other = RevocationCache(await self.open_store(), self.clock)
        await other.update()
        self.assertTrue(other.is_revoked(target))
        self.assertEqual(self.events, [("revoke", {"by": "root", "jti": "j-9"})])

    async def test_by_jti_refuses_refresh(self) -> None:
        """A refresh token revoked by jti cannot be refreshed."""
        service = await self.service()
        first = self.first_refresh(jti="r-1")
        await service.revoke(self.admin(), body(jti="r-1"))
        await self.refused(service.refresh(body(refresh_token=first)), "TOKEN_REVOKED")

    async def test_by_sub(self) -> None:
        """Revoking a sub revokes its tokens issued before now, not later ones nor other subs'."""
        service = await self.service()
        before = await self.access(self.issuer().issue(sub="alice", roles=["listener"], ttl_s=3600))
        refresh_before = self.first_refresh()
        bob = await self.access(self.issuer().issue(sub="bob", roles=["listener"], ttl_s=3600))
        self.clock.advance(10)
        answer = await service.revoke(self.admin(), body(sub="alice"))
        self.assertEqual(answer, {"revoked": {"sub": "alice", "before": NOW + 10}})
        self.assertTrue(self.cache.is_revoked(before))
        self.assertFalse(self.cache.is_revoked(bob))
        await self.refused(service.refresh(body(refresh_token=refresh_before)), "TOKEN_REVOKED")
        self.clock.advance(1)
        after = await self.access(self.issuer().issue(sub="alice", roles=["listener"], ttl_s=3600))
        self.assertFalse(self.cache.is_revoked(after))
        answer = await service.refresh(body(refresh_token=self.first_refresh()))
        self.assertFalse(self.cache.is_revoked(await self.access(str(answer["access_token"]))))

    async def test_forbidden(self) -> None:
        """A non-admin may not revoke (``FORBIDDEN``, a security event); nothing is revoked."""
        service = await self.service()
        premium = Principal(
            sub="alice", roles=frozenset({"premium"}), permissions=DEFAULT_ROLES["premium"], via="jwt"
        )
        error = await self.refused(service.revoke(premium, body(sub="bob")), "FORBIDDEN")
        self.assertEqual(error.status, 403)
        self.assertEqual(self.events, [("forbidden", {"sub": "alice", "action": "revoke"})])
        self.assertEqual(await self.store.version(), 0)

    async def test_malformed_bodies(self) -> None:
        """Anything but exactly one of ``jti``/``sub``, a non-empty string, is ``BAD_REQUEST``."""
        service = await self.service()
        for raw in (
            b"",
            b"nope",
            b"[]",
            b"{}",
            body(jti="a", sub="b"),
            body(jti="a", reason="x"),
            body(user="a"),
            body(jti=""),
            body(sub=7),
            body(sub=None),
            body(jti="x" * 2000),
            b"{" + b" " * MAX_BODY_BYTES + b'"jti": "a"}',
        ):
            await self.refused(service.revoke(self.admin(), raw), "BAD_REQUEST")
        self.assertEqual(await self.store.version(), 0)

    async def test_store_unavailable(self) -> None:
        """When the store refuses the write: ``UNAVAILABLE`` (still enforced in this process)."""
        store = BreakableStore(await self.open_store())
        service = await self.service(store=store)
        store.broken = True
        await self.refused(service.revoke(self.admin(), body(jti="j-1")), "UNAVAILABLE")
        self.assertIn("j-1", self.cache.snapshot.tokens)


class MakeRevocationStoreTests(unittest.TestCase):
    """The factory picks the store the configuration asks for."""

    async def test_sqlite_in_data_dir(self) -> None:
        """Without ``STREAMSRV_REDIS_URL``: SQLite at ``<data_dir>/auth.sqlite3``, created at start."""
        data_dir = Path(self.mktemp())
        store = make_revocation_store(load_settings(environ={"STREAMSRV_DATA_DIR": str(data_dir)}), reactor)
        assert isinstance(store, SqliteRevocationStore)
        self.addCleanup(store.close)
        self.assertEqual(store.path, data_dir / AUTH_DB_FILE)
        await store.start()
        self.assertTrue((data_dir / AUTH_DB_FILE).is_file())

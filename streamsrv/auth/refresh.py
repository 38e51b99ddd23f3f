# -*- test-case-name: tests.test_refresh -*-
"""``/auth/refresh`` and ``/auth/revoke``: refresh-token rotation with reuse detection, and revocation.

:meth:`TokenService.refresh` trades a refresh token for a new access token
and a new refresh token of the same family (``fam``), spending the old one
atomically in the shared store; presenting a spent refresh token again means
it was copied, so its whole family (access tokens included) is revoked and
the attempt answered ``TOKEN_REVOKED``.  A family never outlives its first
refresh token: each rotated refresh token expires when its predecessor did
(at most :data:`REFRESH_TTL_S` later), so only a fresh login extends a
session.  :meth:`TokenService.revoke` lets an admin revoke one token by
``jti`` or every token of a subject issued before now.  Errors are
:class:`~streamsrv.web.errors.ApiError` with contract codes.  This module
must never log, return or put into an error message or security event a
token (only its ``jti``, family id and ``sub``), and never issue a token
for a refresh token it could not mark spent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.revocation import (
    AUTH_DB_FILE,
    REVOCATION_RETENTION_S,
    IRevocationStore,
    RedisRevocationStore,
    RevocationCache,
    SqliteRevocationStore,
)
from streamsrv.errors import ApiError
from streamsrv.redisconn import RedisConnection

if TYPE_CHECKING:
    from streamsrv.config import Settings

__all__ = [
    "ACCESS_TTL_S",
    "MAX_BODY_BYTES",
    "REFRESH_TTL_S",
    "TokenService",
    "make_revocation_store",
]

log = Logger()

#: Lifetime of the access tokens ``/auth/refresh`` issues (``expires_in``).
ACCESS_TTL_S: Final = 15 * 60

#: Longest lifetime of a rotated refresh token (never beyond its predecessor's expiry).
REFRESH_TTL_S: Final = 30 * 24 * 3600

#: Largest request body ``refresh`` and ``revoke`` read.
MAX_BODY_BYTES: Final = 16 * 1024

#: Kept beyond a token's ``exp`` in revocations and spent marks: covers the
#: verifier's leeway (``STREAMSRV_JWT_LEEWAY_S``, 30 s by default) with room.
EXPIRY_MARGIN_S: Final = 3600

#: Longest ``jti`` or ``sub`` accepted by ``revoke``.
MAX_NAME_LENGTH: Final = 1024

#: Called with a kind (``refresh_reuse``, ``refresh_refused``, ``revoke``,
#: ``forbidden``) and fields that never include a token.
SecurityEventSink = Callable[[str, dict[str, Any]], None]


def _bad_request(message: str) -> NoReturn:
    raise ApiError("BAD_REQUEST", message)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    """
    *body* as a JSON object.

    :raise ApiError: ``BAD_REQUEST`` (never quoting the body).
    """
    if len(body) > MAX_BODY_BYTES:
        _bad_request(f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        _bad_request(f"The body must be a JSON object {what}.")
    if not isinstance(value, dict):
        _bad_request(f"The body must be a JSON object {what}.")
    return value


class TokenService:
    """
    Refresh-token rotation and admin revocation, for the HTTP routes to call.

    :param verifier: Verifies the presented refresh tokens.
    :param issuer: Signs the new tokens; without a signing key, ``refresh``
        answers ``NOT_CONFIGURED``.
    :param revocations: This process's revocation cache (checked, and
        written through).
    :param store: The same store the cache reads: spends refresh tokens.
    :param clock: Tells the time.
    :param on_security_event: Told of reuse (``refresh_reuse``), refused
        refresh tokens (``refresh_refused``, with ``code`` and ``reason``),
        admin revocations (``revoke``) and non-admin attempts (``forbidden``);
        its exceptions are logged, never raised.
    """

    def __init__(
        self,
        *,
        verifier: JwtVerifier,
        issuer: TokenIssuer,
        revocations: RevocationCache,
        store: IRevocationStore,
        clock: IReactorTime,
        on_security_event: SecurityEventSink,
    ) -> None:
        self._verifier = verifier
        self._issuer = issuer
        self._revocations = revocations
        self._store = store
        self._clock = clock
        self._on_security_event = on_security_event

    def _event(self, kind: str, **fields: Any) -> None:
        try:
            self._on_security_event(kind, fields)
        except Exception:
            log.failure("the security-event callback failed for {kind}", kind=kind)

    def _refused(self, code: str, reason: str, **fields: Any) -> NoReturn:
        self._event("refresh_refused", code=code, reason=reason, **fields)
        raise ApiError(code)

    async def refresh(self, body: bytes) -> dict[str, object]:
        """
        Rotate a refresh token.

        :param body: The request body, ``{"refresh_token": "…"}``.
        :return: ``{"access_token", "refresh_token", "token_type": "Bearer",
            "expires_in"}``.
        :raise ApiError: ``NOT_CONFIGURED`` without a signing key;
            ``BAD_REQUEST`` for a body that is not a JSON object (at most
            :data:`MAX_BODY_BYTES`) with a string ``refresh_token``;
            ``TOKEN_INVALID`` / ``TOKEN_EXPIRED`` from verification (an
            access token is ``TOKEN_INVALID``, as is a refresh token without
            ``jti``); ``TOKEN_REVOKED`` for a revoked token and for a reused
            one (whose family is then revoked); ``UNAVAILABLE`` when the store
            cannot spend the token.
        """
        if not self._issuer.configured:
            raise ApiError(
                "NOT_CONFIGURED", "Token refresh is not configured on this server (no signing key)."
            )
        fields = _json_object(body, 'with a string "refresh_token"')
        token = fields.get("refresh_token")
        if not isinstance(token, str):
            _bad_request('The body must be a JSON object with a string "refresh_token".')
        try:
            principal = await self._verifier.verify(token, typ="refresh")
        except AuthError as e:
            self._refused(e.code, e.reason)
        jti = principal.token_id
        if jti is None:
            self._refused("TOKEN_INVALID", "missing_jti", sub=principal.sub)
        family = principal.family if principal.family is not None else jti
        exp = principal.expires_at
        assert exp is not None  # the verifier requires exp
        await self._revocations.update()  # a revocation made by another process a moment ago counts
        if self._revocations.is_revoked(principal):
            self._refused("TOKEN_REVOKED", "revoked", sub=principal.sub, jti=jti, family=family)
        now = self._clock.seconds()
        remaining = math.floor(exp) - math.floor(now)
        if remaining < 1:  # within the leeway: nothing left to rotate into
            self._refused("TOKEN_EXPIRED", "expired", sub=principal.sub, jti=jti)
        try:
            first_time = await self._store.spend_refresh(jti, family, exp + EXPIRY_MARGIN_S)
        except Exception as e:
            log.error(
                "refresh: the revocation store failed to spend a refresh token: {error}",
                error=f"{type(e).__name__}: {e}",
            )
            raise ApiError("UNAVAILABLE")
        if not first_time:
            await self._reused(principal, jti, family, exp)
        roles = sorted(principal.roles)
        permissions = sorted(principal.token_permissions)
        access = self._issuer.issue(
            sub=principal.sub,
            roles=roles,
            permissions=permissions,
            typ="access",
            ttl_s=ACCESS_TTL_S,
            family=family,
        )
        refresh = self._issuer.issue(
            sub=principal.sub,
            roles=roles,
            permissions=permissions,
            typ="refresh",
            ttl_s=min(REFRESH_TTL_S, remaining),
            family=family,
        )
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL_S,
        }

    async def _reused(self, principal: Principal, jti: str, family: str, exp: float) -> NoReturn:
        """A spent refresh token came back: revoke its family and refuse."""
        # Access tokens of the family live at most ACCESS_TTL_S past its last refresh token.
        expires_at = exp + ACCESS_TTL_S + EXPIRY_MARGIN_S
        try:
            await self._revocations.revoke_family(family, expires_at)
        except Exception as e:
            # Already in force in this process; the others learn it once the store is back.
            log.error(
                "refresh: could not store the revocation of family {family}: {error}",
                family=family,
                error=f"{type(e).__name__}: {e}",
            )
        self._event("refresh_reuse", sub=principal.sub, jti=jti, family=family)
        raise ApiError("TOKEN_REVOKED")

    async def revoke(self, principal: Principal, body: bytes) -> dict[str, object]:
        """
        Revoke by ``jti``, or every token of a ``sub`` issued before now.

        :param principal: Who asks; must be an admin.
        :param body: ``{"jti": "…"}`` or ``{"sub": "…"}``.
        :return: ``{"revoked": {"jti": …}}`` or ``{"revoked": {"sub": …, "before": <unix>}}``.
        :raise ApiError: ``FORBIDDEN`` for a non-admin; ``BAD_REQUEST`` unless
            the body is a JSON object with exactly one of ``jti`` and ``sub``,
            a non-empty string; ``UNAVAILABLE`` when the store fails.
        """
        if not principal.is_admin:
            self._event("forbidden", sub=principal.sub, action="revoke")
            raise ApiError("FORBIDDEN")
        what = 'with exactly one of "jti" and "sub", a non-empty string'
        fields = _json_object(body, what)
        if len(fields) != 1 or not fields.keys() <= {"jti", "sub"}:
            _bad_request(f"The body must be a JSON object {what}.")
        ((name, value),) = fields.items()
        if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
            _bad_request(f'"{name}" must be a non-empty string of at most {MAX_NAME_LENGTH} characters.')
        now = self._clock.seconds()
        try:
            if name == "jti":
                await self._revocations.revoke_token(value, now + REVOCATION_RETENTION_S)
                revoked: dict[str, object] = {"jti": value}
            else:
                await self._revocations.revoke_subject(value, now)
                revoked = {"sub": value, "before": now}
        except Exception as e:
            log.error("revoke: the revocation store failed: {error}", error=f"{type(e).__name__}: {e}")
            raise ApiError("UNAVAILABLE")
        self._event("revoke", by=principal.sub, **revoked)
        return {"revoked": revoked}


def make_revocation_store(
    settings: Settings, clock: IReactorTime, *, redis: RedisConnection | None = None
) -> IRevocationStore:
    """
    The revocation store the configuration asks for: Redis when
    ``STREAMSRV_REDIS_URL`` is set, else SQLite in ``STREAMSRV_DATA_DIR``.

    :param clock: Tells the time and is the reactor: SQLite's thread runs on
        it, and with Redis and no *redis* the store connects with it.
    :param redis: The process's Redis connection (``RedisService.connection``)
        to share; without it a connection of the store's own is opened, and
        closed by its ``close()``.
    """
    if settings.redis_url is None:
        return SqliteRevocationStore(settings.data_dir / AUTH_DB_FILE, clock, reactor=clock)
    if redis is not None:
        return RedisRevocationStore(redis, clock)
    from streamsrv.redisconn import connect_redis

    connection = connect_redis(settings.redis_url, clock)
    return RedisRevocationStore(connection, clock, on_close=connection.disconnect)

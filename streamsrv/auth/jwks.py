# -*- test-case-name: tests.test_jwks -*-
"""Fetch and cache the backend's JSON Web Key Set (RFC 7517) for JWT verification.

:class:`JwksCache` fetches ``STREAMSRV_JWT_JWKS_URL`` with treq (TLS verified
against the system trust roots, hostname checked with service-identity, no
redirects, bounded size and time), keeps the usable signature keys, refetches
when they are older than a TTL or when a token names an unknown ``kid`` — but
never more often than a floor interval, so a flood of forged ``kid`` values
cannot turn into a flood of fetches — and keeps serving the last good set
when a fetch fails.  This module must never follow a key location named by a
token (``jku``, ``x5u``, ``jwk``), never accept a symmetric (``oct``) key from
the set, never log key material, a token, or the URL's query or credentials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from streamsrv.auth.principal import AuthError

__all__ = [
    "DEFAULT_MIN_REFETCH_INTERVAL_S",
    "DEFAULT_TTL_S",
    "FETCH_TIMEOUT_S",
    "JWKS_ALGORITHMS",
    "MAX_JWKS_BYTES",
    "MIN_RSA_BITS",
    "JwksCache",
    "JwksFetchError",
    "PublicKey",
    "parse_jwks",
    "public_key_algorithm",
    "treq_http_get",
]

log = Logger()

#: Algorithms a JWKS key may verify (never HS*: a shared secret is not published).
JWKS_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")

#: How long a fetched set is fresh, seconds.
DEFAULT_TTL_S: Final = 300.0

#: The least time between two fetch attempts, seconds.
DEFAULT_MIN_REFETCH_INTERVAL_S: Final = 30.0

#: The longest a fetch (connect, headers and body) may take, seconds.
FETCH_TIMEOUT_S: Final = 5.0

#: The largest JWKS document accepted, bytes.
MAX_JWKS_BYTES: Final = 1024 * 1024

#: The smallest RSA modulus accepted, bits.
MIN_RSA_BITS: Final = 2048

#: A public key PyJWT verifies with.
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

HttpGet = Callable[[str], "Deferred[tuple[int, bytes]]"]


class JwksFetchError(Exception):
    """
    A JWKS could not be fetched or read.  The message is safe to log.
    """


def public_key_algorithm(key: object) -> str:
    """
    The one JWT algorithm streamsrv verifies with *key*.

    :param key: A ``cryptography`` public key.
    :return: ``RS256`` (RSA of at least :data:`MIN_RSA_BITS`), ``ES256``
        (P-256) or ``EdDSA`` (Ed25519).
    :raise ValueError: For any other key.
    """
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"EC key on curve {key.curve.name}; ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported key type {type(key).__name__} (RSA, EC P-256 or Ed25519)")


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str
    key: PublicKey


#: ``(kty, crv)`` of a JWK to the algorithm it is used with.
_ALGORITHM_FOR_KTY: Final = {("RSA", None): "RS256", ("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}


class _Skip(Exception):
    """A JWK that cannot or must not be used; the message says why."""


def _parse_jwk(jwk: object, position: int) -> _Key | None:
    """
    One usable signature key from a JWK, or ``None`` (logged) if it is not one.
    """
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    try:
        return _key_from_jwk(jwk)
    except _Skip as e:
        log.warn(
            "JWKS key #{position} (kid {kid!r}) skipped: {why}",
            position=position,
            kid=kid if isinstance(kid, str) else None,
            why=str(e),
        )
        return None


def _key_from_jwk(jwk: object) -> _Key:
    """
    :raise _Skip: If *jwk* is not a public signature key for an allowed algorithm.
    """
    if not isinstance(jwk, dict):
        raise _Skip("not an object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _Skip("'kid' is not a string")
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    alg = _ALGORITHM_FOR_KTY.get((kty, crv)) if isinstance(kty, str) and isinstance(crv, str | None) else None
    if alg is None:
        raise _Skip("not an RSA, EC P-256 or Ed25519 key")
    if jwk.get("alg", alg) != alg:
        raise _Skip(f"its 'alg' does not match {alg}")
    if jwk.get("use", "sig") != "sig":
        raise _Skip("its 'use' is not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _Skip("its 'key_ops' do not include 'verify'")
    try:
        key: Any = PyJWK(jwk, algorithm=alg).key
    except (PyJWTError, ValueError, TypeError, KeyError):
        raise _Skip("its parameters do not form a valid key")
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        log.warn(
            "JWKS key (kid {kid!r}) publishes PRIVATE key parameters; only its public half is used. "
            "Fix the JWKS endpoint.",
            kid=kid,
        )
        key = key.public_key()
    try:
        if public_key_algorithm(key) != alg:
            raise _Skip("its key type does not match")
    except ValueError as e:
        raise _Skip(str(e))
    return _Key(kid=kid, alg=alg, key=key)


def parse_jwks(body: bytes) -> tuple[_Key, ...]:
    """
    The usable signature keys of a JWKS document.

    Keys streamsrv cannot or must not use (``oct``, other curves, RSA under
    :data:`MIN_RSA_BITS`, ``use`` other than ``sig``, an ``alg`` that does
    not fit the key) are skipped with a warning; a second key with the same
    ``kid`` and algorithm is ignored.

    :param body: The document's bytes.
    :raise JwksFetchError: If it is not a JSON object with a ``keys`` list.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksFetchError("the JWKS is not JSON")
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("the JWKS is not an object with a 'keys' list")
    keys: list[_Key] = []
    for position, jwk in enumerate(document["keys"], start=1):
        key = _parse_jwk(jwk, position)
        if key is None:
            continue
        if key.kid is not None and any(k.kid == key.kid and k.alg == key.alg for k in keys):
            log.warn("JWKS key #{position}: duplicate kid {kid!r} ignored", position=position, kid=key.kid)
            continue
        keys.append(key)
    return tuple(keys)


def _display_url(url: str) -> str:
    """*url* without credentials, query or fragment, for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _TooLarge(Exception):
    pass


def treq_http_get(
    *,
    reactor: Any,
    pool: Any = None,
    timeout_s: float = FETCH_TIMEOUT_S,
    max_bytes: int = MAX_JWKS_BYTES,
) -> HttpGet:
    """
    A ``GET`` with treq, for :class:`JwksCache`.

    TLS is verified by Twisted's default policy (system trust roots,
    service-identity hostname check).  Redirects are not followed; the
    whole exchange must finish within *timeout_s*; a body over *max_bytes*
    aborts the connection.

    :param reactor: The reactor to connect with; the global one if ``None``
        (imported when the first request is made, not before).
    :param pool: A ``twisted.web.client.HTTPConnectionPool``; treq's shared
        pool if ``None``.
    :return: ``url -> Deferred[(status, body)]``.
    """

    async def get(url: str, reactor: Any) -> tuple[int, bytes]:
        import treq

        response = await treq.get(
            url,
            headers=Headers({b"Accept": [b"application/jwk-set+json, application/json"]}),
            allow_redirects=False,
            pool=pool,
            reactor=reactor,
            timeout=timeout_s,
        )
        chunks: list[bytes] = []
        received = 0

        def collect(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received > max_bytes:
                raise _TooLarge()
            chunks.append(data)

        await treq.collect(response, collect)
        return response.code, b"".join(chunks)

    def http_get(url: str) -> Deferred[tuple[int, bytes]]:
        d = ensureDeferred(get(url, reactor))
        d.addTimeout(timeout_s, reactor)
        return d

    return http_get


class JwksCache:
    """
    A JWKS fetched with treq and cached.

    :param url: The JWKS URL (``https://`` in production).
    :param clock: Tells the time (TTL, refetch floor).  Its reactor is also
        used for the default *http_get* when it is a full reactor.
    :param http_get: ``url -> Deferred[(status, body)]``; defaults to
        :func:`treq_http_get`.
    :param ttl_s: How long a fetched set is fresh.
    :param min_refetch_interval_s: The least time between two fetch attempts,
        whatever asks for them.
    :param metrics_hook: Called with ``"fetch"`` after each successful fetch,
        ``"error"`` after each failed one, and ``"stale"`` each time a key is
        served from a set older than *ttl_s* (because refetching failed or
        was held back by the floor).
    """

    def __init__(
        self,
        url: str,
        *,
        clock: IReactorTime,
        http_get: HttpGet | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        min_refetch_interval_s: float = DEFAULT_MIN_REFETCH_INTERVAL_S,
        metrics_hook: Callable[[str], None] | None = None,
    ) -> None:
        if not url:
            raise ValueError("the JWKS URL is empty")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError("ttl_s must be a positive number")
        if not (math.isfinite(min_refetch_interval_s) and min_refetch_interval_s >= 0):
            raise ValueError("min_refetch_interval_s must be a number >= 0")
        self._url = url
        self._clock = clock
        if http_get is None:
            if not IReactorTCP.providedBy(clock):
                raise TypeError("without http_get, the clock must be the reactor treq connects with")
            http_get = treq_http_get(reactor=clock)
        self._http_get = http_get
        self._ttl_s = ttl_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._metrics_hook = metrics_hook
        self._keys: tuple[_Key, ...] = ()
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_ok = True
        self._waiters: list[Deferred[None]] = []

    @property
    def key_ids(self) -> tuple[str | None, ...]:
        """
        The ``kid`` of every cached key, in the set's order.
        """
        return tuple(k.kid for k in self._keys)

    @property
    def fetched_at(self) -> float | None:
        """
        When the cached set was fetched (clock seconds), or ``None`` if never.
        """
        return self._fetched_at

    async def key_for(self, kid: str | None, alg: str) -> PublicKey:
        """
        The public key that verifies a token with this ``kid`` and ``alg``.

        Fetches the set on first use and when it is older than the TTL;
        refetches once when *kid* is unknown; in both cases only if the last
        attempt is at least the floor interval ago.  Without a *kid*, the
        set's only key for *alg* is used.

        :param kid: The token header's ``kid``.
        :param alg: The token header's ``alg``, already checked against the
            verifier's allow-list.
        :raise AuthError: ``TOKEN_INVALID`` with reason ``unknown_kid`` (no
            such key), ``missing_kid`` (no *kid* and several candidate keys),
            ``alg_mismatch`` (the key is for another algorithm) or
            ``alg_not_allowed`` (not a JWKS algorithm); ``UNAVAILABLE``
            (reason ``jwks_unavailable``) when the key is unknown and the
            last fetch failed, so whether it exists cannot be told.
        """
        if alg not in JWKS_ALGORITHMS:
            raise AuthError("TOKEN_INVALID", reason="alg_not_allowed")
        if self._expired() and self._may_fetch():
            await self.refresh()
        found = self._find(kid, alg)
        if found is None and self._may_fetch():
            await self.refresh()
            found = self._find(kid, alg)
        if found is None:
            if not self._last_ok:
                raise AuthError("UNAVAILABLE", reason="jwks_unavailable")
            raise AuthError("TOKEN_INVALID", reason="unknown_kid")
        if self._expired():
            self._report("stale")
        return found.key

    async def refresh(self) -> None:
        """
        Fetch the set now (joining a fetch already under way); never raises.

        On success the cached set is replaced; on failure it is kept, the
        failure is logged and reported to the metrics hook.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            ensureDeferred(self._fetch()).addBoth(self._wake)
        await waiter

    def _wake(self, _: object) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _fetch(self) -> None:
        self._last_attempt = self._clock.seconds()
        try:
            try:
                status, body = await self._http_get(self._url)
            except Exception as e:
                raise JwksFetchError(f"request failed ({type(e).__name__})")
            if status != 200:
                raise JwksFetchError(f"HTTP status {status}")
            keys = parse_jwks(body)
        except JwksFetchError as e:
            self._last_ok = False
            log.warn(
                "JWKS fetch from {url} failed: {why}; keeping {count} cached key(s)",
                url=_display_url(self._url),
                why=str(e),
                count=len(self._keys),
            )
            self._report("error")
            return
        except Exception:
            self._last_ok = False
            log.failure("JWKS fetch from {url} failed unexpectedly", url=_display_url(self._url))
            self._report("error")
            return
        if not keys:
            log.warn("JWKS at {url} holds no usable signature key", url=_display_url(self._url))
        added = sorted(str(k.kid) for k in keys if k not in self._keys)
        if added and self._fetched_at is not None:
            log.info("JWKS at {url}: new key(s) {kids}", url=_display_url(self._url), kids=added)
        self._keys = keys
        self._fetched_at = self._clock.seconds()
        self._last_ok = True
        self._report("fetch")

    def _expired(self) -> bool:
        return self._fetched_at is None or self._clock.seconds() - self._fetched_at >= self._ttl_s

    def _may_fetch(self) -> bool:
        if self._waiters or self._last_attempt is None:
            return True
        return self._clock.seconds() - self._last_attempt >= self._min_refetch_interval_s

    def _find(self, kid: str | None, alg: str) -> _Key | None:
        if kid is None:
            candidates: Sequence[_Key] = [k for k in self._keys if k.alg == alg]
            if len(candidates) > 1:
                raise AuthError("TOKEN_INVALID", reason="missing_kid")
            return candidates[0] if candidates else None
        named = [k for k in self._keys if k.kid == kid]
        for key in named:
            if key.alg == alg:
                return key
        if named:
            raise AuthError("TOKEN_INVALID", reason="alg_mismatch")
        return None

    def _report(self, event: str) -> None:
        if self._metrics_hook is None:
            return
        try:
            self._metrics_hook(event)
        except Exception:
            log.failure("JWKS metrics hook failed on {event}", event=event)

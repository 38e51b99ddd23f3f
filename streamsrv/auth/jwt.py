# -*- test-case-name: tests.test_jwt -*-
"""JWT verification (:class:`JwtVerifier`) and issuing (:class:`TokenIssuer`).

The verifier parses a compact JWS itself (strict base64url, JSON objects
without duplicate names), refuses any ``alg`` outside its allow-list
(``none`` first of all), picks the key by the algorithm's family — HS256
only ever with the shared secret, RS256/ES256/EdDSA only with a public key
of that type (from the key file or the JWKS) — verifies the signature with
PyJWT's algorithm objects, and only then reads the claims, checking every
time against the injected clock.  This module must never log, store or echo
a token (errors carry a code and a machine reason, nothing of the input),
never use a public key's bytes as an HMAC secret, never let the token's
header choose the key family or a key location (``jku``, ``x5u``, ``jwk``
are ignored), and never read a claim before the signature is verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError
from twisted.internet.interfaces import IReactorTime

from streamsrv.auth.jwks import JWKS_ALGORITHMS, JwksCache, PublicKey, public_key_algorithm
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.roles import effective_permissions

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "TOKEN_TYPES",
    "JwtVerifier",
    "TokenIssuer",
    "bearer_token",
]

#: Every algorithm streamsrv can be configured to accept.
ALLOWED_ALGORITHMS: Final = ("HS256", "RS256", "ES256", "EdDSA")

#: The longest token accepted, in characters (also the bearer limit).
MAX_TOKEN_LENGTH: Final = 8 * 1024

#: Values of the ``typ`` claim; absent means ``access``.
TOKEN_TYPES: Final = ("access", "refresh")

#: The largest magnitude a NumericDate claim may have (exact in a float).
_MAX_NUMERIC_DATE: Final = 2**53

_ALGORITHMS: Final[Mapping[str, Algorithm]] = {
    name: algorithm for name, algorithm in get_default_algorithms().items() if name in ALLOWED_ALGORITHMS
}

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_TOKEN68: Final = re.compile(rb"[A-Za-z0-9._~+/-]+=*")


def _invalid(reason: str) -> NoReturn:
    raise AuthError("TOKEN_INVALID", reason=reason)


# --- parsing -----------------------------------------------------------------


def _b64decode(segment: str) -> bytes:
    """
    Strict, unpadded, canonical base64url.

    :raise AuthError: ``bad_base64``.
    """
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        _invalid("bad_base64")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        _invalid("bad_base64")  # stray bits in the last character: not the canonical form
    return data


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _refuse_constant(_: str) -> NoReturn:
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(data: bytes, reason: str) -> dict[str, Any]:
    """
    A UTF-8 JSON object without duplicate names.

    :raise AuthError: With *reason* otherwise.
    """
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):
        _invalid(reason)
    if not isinstance(value, dict):
        _invalid(reason)
    return value


def _split(token: str) -> tuple[dict[str, Any], bytes, bytes, str]:
    """
    A compact JWS's header (decoded, not trusted), signing input, signature
    and (still encoded) payload.

    :raise AuthError: ``too_long``, ``malformed``, ``bad_base64``, ``bad_header``.
    """
    if not isinstance(token, str):
        _invalid("malformed")
    if len(token) > MAX_TOKEN_LENGTH:
        _invalid("too_long")
    segments = token.split(".")
    if len(segments) != 3 or not (segments[0] and segments[1]):
        _invalid("malformed")  # an empty signature is left to the alg and signature checks
    header_segment, payload_segment, signature_segment = segments
    for segment in segments:
        if not _BASE64URL.fullmatch(segment):
            _invalid("bad_base64")
    header = _json_object(_b64decode(header_segment), "bad_header")
    signature = _b64decode(signature_segment)
    _b64decode(payload_segment)  # syntax only: the claims are read once the signature holds
    return header, f"{header_segment}.{payload_segment}".encode("ascii"), signature, payload_segment


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _invalid(f"bad_{name}")
    if not (math.isfinite(value) and -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE):
        _invalid(f"bad_{name}")
    return float(value)


def _optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        _invalid(f"bad_{name}")
    return value


def _string_list(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _invalid(f"bad_{name}")
    return value


# --- keys --------------------------------------------------------------------


def _load_public_key(pem: bytes) -> PublicKey:
    """
    A public key from a PEM ``PUBLIC KEY`` block or an X.509 certificate.

    :raise ValueError: Without quoting the PEM.
    """
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        hint = " (it is a private key; give the public half)" if b"PRIVATE KEY-----" in pem else ""
        raise ValueError(f"not a PEM public key or certificate{hint}")
    public_key_algorithm(key)  # raises ValueError for unsupported types
    return key


_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: The members of each key type's RFC 7638 thumbprint.
_THUMBPRINT_MEMBERS: Final = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def _load_private_key(pem: bytes) -> _PrivateKey:
    """
    :raise ValueError: Without quoting the PEM.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; give an unencrypted PEM (protect the file instead)")
    except (ValueError, binascii.Error):
        raise ValueError("not a PEM private key")
    if not isinstance(key, _PrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__} (RSA, EC P-256 or Ed25519)")
    public_key_algorithm(key.public_key())
    return key


def _hmac_key(secret: str) -> bytes:
    if not secret:
        raise ValueError("the JWT secret is empty")
    try:
        return _ALGORITHMS["HS256"].prepare_key(secret.encode("utf-8"))
    except InvalidKeyError:
        raise ValueError("the JWT secret looks like a key (PEM, SSH, DER or JWK), not a shared secret")


def _thumbprint(key: PublicKey, alg: str) -> str:
    """The RFC 7638 JWK thumbprint of *key*, base64url."""
    jwk = _ALGORITHMS[alg].to_jwk(key, as_dict=True)
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- verifying ---------------------------------------------------------------


class JwtVerifier:
    """
    Verifies bearer tokens and turns them into principals.

    The allow-list is the union of what is configured: HS256 with *secret*;
    the one algorithm of *public_key_pem*'s type (RS256 for RSA ≥ 2048 bits,
    ES256 for P-256, EdDSA for Ed25519); RS256, ES256 and EdDSA with *jwks*.
    A token with a ``kid`` is looked up in the JWKS first (falling back to
    the key file when the JWKS does not know the ``kid``); one without is
    verified with the key file, else with the JWKS's only key of its
    algorithm.

    :param secret: The HS256 shared secret (``STREAMSRV_JWT_SECRET``).
    :param public_key_pem: A PEM public key or certificate.
    :param jwks: The backend's key set.
    :param issuer: Required ``iss`` when set.
    :param audience: Required in ``aud`` (a string or a list) when set.
    :param leeway_s: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    :param clock: Tells the time.
    :param roles: The roles table (from :func:`streamsrv.auth.roles.load_roles`).
    :raise ValueError: If a key is unusable (never quoting it).
    """

    def __init__(
        self,
        *,
        secret: str | None,
        public_key_pem: bytes | None,
        jwks: JwksCache | None,
        issuer: str | None,
        audience: str | None,
        leeway_s: float,
        clock: IReactorTime,
        roles: Mapping[str, frozenset[str]],
    ) -> None:
        if not (math.isfinite(leeway_s) and leeway_s >= 0):
            raise ValueError("leeway_s must be a number >= 0")
        self._hmac_key = None if secret is None else _hmac_key(secret)
        self._public_key: PublicKey | None = None
        self._public_alg: str | None = None
        if public_key_pem is not None:
            self._public_key = _load_public_key(public_key_pem)
            self._public_alg = public_key_algorithm(self._public_key)
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock
        self._roles = roles
        allowed: set[str] = set()
        if self._hmac_key is not None:
            allowed.add("HS256")
        if self._public_alg is not None:
            allowed.add(self._public_alg)
        if jwks is not None:
            allowed.update(JWKS_ALGORITHMS)
        self._allowed = frozenset(allowed)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """
        The algorithms this verifier accepts, in :data:`ALLOWED_ALGORITHMS` order.
        """
        return tuple(alg for alg in ALLOWED_ALGORITHMS if alg in self._allowed)

    @property
    def configured(self) -> bool:
        """
        Whether at least one algorithm is accepted.
        """
        return bool(self._allowed)

    async def verify(self, token: str, *, typ: str = "access") -> Principal:
        """
        The principal a token stands for.

        :param token: A compact JWS, as sent after ``Bearer``.
        :param typ: The use it is presented for: ``access`` (a bearer) or
            ``refresh`` (``/auth/refresh``); a token of the other type is
            refused.
        :raise AuthError: ``TOKEN_EXPIRED`` (reason ``expired``) for a token
            that is valid but for its age; ``TOKEN_INVALID`` for everything
            else, with a precise reason (``alg_none``, ``alg_not_allowed``,
            ``bad_signature``, ``wrong_audience``, ``wrong_typ``,
            ``unknown_kid``…); ``UNAVAILABLE`` when the JWKS cannot be
            fetched and the key is not cached.
        """
        if typ not in TOKEN_TYPES:
            raise ValueError(f"typ must be one of {TOKEN_TYPES}, got {typ!r}")
        header, signing_input, signature, payload_segment = _split(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            _invalid("missing_alg")
        if alg.lower() == "none":
            _invalid("alg_none")
        if alg not in ALLOWED_ALGORITHMS:
            _invalid("alg_unsupported")
        if alg not in self._allowed:
            _invalid("alg_not_allowed")
        if "crit" in header or "b64" in header:
            _invalid("crit_unsupported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            _invalid("bad_kid")
        if not await self._signature_holds(alg, kid, signing_input, signature):
            _invalid("bad_signature")
        claims = _json_object(_b64decode(payload_segment), "bad_payload")
        return self._principal(claims, typ)

    async def _signature_holds(
        self, alg: str, kid: str | None, signing_input: bytes, signature: bytes
    ) -> bool:
        """
        Verify with the key of *alg*'s family, never another.

        :raise AuthError: From the JWKS (``unknown_kid``…).
        """
        if alg == "HS256":
            assert self._hmac_key is not None  # HS256 is allowed only with a secret
            return _check(alg, self._hmac_key, signing_input, signature)
        static = self._public_key if self._public_alg == alg else None
        if self._jwks is not None and (kid is not None or static is None):
            try:
                key = await self._jwks.key_for(kid, alg)
            except AuthError as e:
                if static is None or e.reason != "unknown_kid":
                    raise
            else:
                return _check(alg, key, signing_input, signature)
        if static is None:
            _invalid("alg_not_allowed")
        return _check(alg, static, signing_input, signature)

    def _principal(self, claims: Mapping[str, Any], typ: str) -> Principal:
        """
        Check the claims against the configuration and the clock.

        Expiry is checked last, so ``TOKEN_EXPIRED`` (which tells a client
        to refresh) is only ever said of a token that is otherwise valid.
        """
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if exp is None:
            _invalid("missing_exp")
        token_typ = claims.get("typ", "access")
        if token_typ not in TOKEN_TYPES:
            _invalid("bad_typ")
        if token_typ != typ:
            _invalid("wrong_typ")
        sub = claims.get("sub")
        if sub is None:
            _invalid("missing_sub")
        if not isinstance(sub, str) or not sub:
            _invalid("bad_sub")
        if self._issuer is not None:
            if "iss" not in claims:
                _invalid("missing_iss")
            if claims["iss"] != self._issuer:
                _invalid("wrong_issuer")
        if self._audience is not None:
            if "aud" not in claims:
                _invalid("missing_aud")
            aud = claims["aud"]
            audiences = aud if isinstance(aud, list) else [aud]
            if self._audience not in [a for a in audiences if isinstance(a, str)]:
                _invalid("wrong_audience")
        roles = _string_list(claims, "roles")
        permissions = _string_list(claims, "permissions")
        jti = _optional_string(claims, "jti")
        fam = _optional_string(claims, "fam")
        now = self._clock.seconds()
        if nbf is not None and now + self._leeway_s < nbf:
            _invalid("not_yet_valid")
        if iat is not None and iat > now + self._leeway_s:
            _invalid("iat_in_future")
        if now >= exp + self._leeway_s:
            raise AuthError("TOKEN_EXPIRED", reason="expired")
        return Principal(
            sub=sub,
            roles=frozenset(roles),
            permissions=effective_permissions(roles, permissions, self._roles),
            via="jwt",
            token_id=jti,
            family=fam,
            issued_at=iat,
            expires_at=exp,
            token_permissions=frozenset(permissions),
        )


def _check(alg: str, key: object, signing_input: bytes, signature: bytes) -> bool:
    """
    Whether *signature* is *alg* of *signing_input* under *key* (already
    prepared: HMAC bytes checked at start-up, or a ``cryptography`` public
    key of *alg*'s type).  HMAC is compared in constant time by PyJWT.
    """
    try:
        return bool(_ALGORITHMS[alg].verify(signing_input, key, signature))
    except (ValueError, TypeError, InvalidKeyError):
        return False


# --- issuing -----------------------------------------------------------------


class TokenIssuer:
    """
    Signs tokens: refresh rotation, ``streamsrv mint-token``, the development token.

    With a private key it signs with the key's algorithm (RS256, ES256 or
    EdDSA) and sets the header's ``kid`` to the key's RFC 7638 thumbprint;
    with only a secret, HS256 (no ``kid``).

    :param secret: ``STREAMSRV_JWT_SECRET``.
    :param private_key_pem: The PEM of ``STREAMSRV_JWT_PRIVATE_KEY_FILE``
        (unencrypted).
    :param issuer: ``iss`` of every token, when set.
    :param audience: ``aud`` of every token, when set.
    :param clock: Tells the time.
    :raise ValueError: If a key is unusable (never quoting it).
    """

    def __init__(
        self,
        *,
        secret: str | None,
        private_key_pem: bytes | None,
        issuer: str | None,
        audience: str | None,
        clock: IReactorTime,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._key: Any = None
        self._alg: str | None = None
        self._kid: str | None = None
        self._public_key: PublicKey | None = None
        if private_key_pem is not None:
            private = _load_private_key(private_key_pem)
            self._public_key = private.public_key()
            self._alg = public_key_algorithm(self._public_key)
            self._key = _ALGORITHMS[self._alg].prepare_key(private)
            self._kid = _thumbprint(self._public_key, self._alg)
        elif secret is not None:
            self._key = _hmac_key(secret)
            self._alg = "HS256"

    @property
    def configured(self) -> bool:
        """
        Whether a signing key is configured.
        """
        return self._alg is not None

    @property
    def algorithm(self) -> str | None:
        """
        The algorithm tokens are signed with, if configured.
        """
        return self._alg

    @property
    def key_id(self) -> str | None:
        """
        The ``kid`` put in token headers (asymmetric keys only).
        """
        return self._kid

    @property
    def public_key_pem(self) -> bytes | None:
        """
        The public half of the private key, as PEM, so a verifier can accept
        what this issuer signs; ``None`` with a shared secret.
        """
        if self._public_key is None:
            return None
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def issue(
        self,
        *,
        sub: str,
        roles: Sequence[str],
        permissions: Sequence[str] = (),
        typ: str = "access",
        ttl_s: float,
        family: str | None = None,
        jti: str | None = None,
    ) -> str:
        """
        A signed token.

        Claims: ``sub``, ``roles``, ``permissions`` (when any), ``typ``,
        ``iat`` (now, whole seconds), ``exp`` (``iat`` + *ttl_s*, rounded
        down), ``jti`` (random when not given), ``fam`` (when given), ``iss``
        and ``aud`` (when configured).

        :raise AuthError: ``NOT_CONFIGURED`` without a signing key.
        :raise ValueError: For a bad argument (an empty ``sub``, a ``ttl_s``
            under a second, an unknown ``typ``).
        :raise TypeError: For *roles* or *permissions* given as one string.
        """
        if self._alg is None:
            raise AuthError("NOT_CONFIGURED", reason="no_signing_key")
        if not isinstance(sub, str) or not sub:
            raise ValueError("sub must be a non-empty string")
        if typ not in TOKEN_TYPES:
            raise ValueError(f"typ must be one of {TOKEN_TYPES}, got {typ!r}")
        if not (math.isfinite(ttl_s) and ttl_s >= 1):
            raise ValueError("ttl_s must be at least 1 second")
        for name, values in (("roles", roles), ("permissions", permissions)):
            if isinstance(values, str | bytes) or not all(isinstance(v, str) for v in values):
                raise TypeError(f"{name} must be a sequence of strings, not one string")
        iat = math.floor(self._clock.seconds())
        claims: dict[str, Any] = {"sub": sub, "roles": list(roles)}
        if permissions:
            claims["permissions"] = list(permissions)
        claims.update(typ=typ, iat=iat, exp=math.floor(iat + ttl_s), jti=jti or secrets.token_urlsafe(16))
        if family is not None:
            claims["fam"] = family
        if self._issuer is not None:
            claims["iss"] = self._issuer
        if self._audience is not None:
            claims["aud"] = self._audience
        header: dict[str, str] = {"alg": self._alg, "typ": "JWT"}
        if self._kid is not None:
            header["kid"] = self._kid
        signing_input = f"{_b64encode_json(header)}.{_b64encode_json(claims)}".encode("ascii")
        signature = _ALGORITHMS[self._alg].sign(signing_input, self._key)
        return f"{signing_input.decode('ascii')}.{_b64encode(signature)}"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64encode_json(value: Mapping[str, Any]) -> str:
    return _b64encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


# --- the header ----------------------------------------------------------------


def bearer_token(authorization: bytes | None) -> str | None:
    """
    The token of an ``Authorization: Bearer …`` header value.

    :param authorization: The header's value, or ``None`` if absent.
    :return: The token; ``None`` when the header is absent or uses another
        scheme (``Basic``…), so the caller can try other credentials.
    :raise AuthError: ``TOKEN_INVALID`` (reason ``malformed_bearer`` or
        ``too_long``) for a ``Bearer`` header without a single token68 of at
        most :data:`MAX_TOKEN_LENGTH` characters.
    """
    if authorization is None:
        return None
    value = authorization.strip(b" \t")
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = rest.strip(b" ")
    if len(token) > MAX_TOKEN_LENGTH:
        _invalid("too_long")
    if not _TOKEN68.fullmatch(token):
        _invalid("malformed_bearer")
    return token.decode("ascii")

# -*- test-case-name: tests.test_jwt -*-
"""Tests for :mod:`streamsrv.auth.jwt`: every attack we know of, the claims, issuing, the header.

Tokens are hand-crafted (header, payload and signature built here, not by
the code under test) so that malformed and hostile ones can be made; time is
a :class:`twisted.internet.task.Clock`.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwks import JwksCache
from streamsrv.auth.jwt import (
    ALLOWED_ALGORITHMS,
    MAX_TOKEN_LENGTH,
    JwtVerifier,
    TokenIssuer,
    _thumbprint,
    bearer_token,
)
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.roles import DEFAULT_ROLES

#: 2026-01-01T00:00:00Z, the tests' "now".
NOW = 1_767_225_600

SECRET = "test-only-hs256-secret-0123456789abcdef-xyz"
OTHER_SECRET = "another-hs256-secret-0123456789abcdef-xyz"


# --- keys and tokens made by hand -------------------------------------------------


@functools.cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """An RSA-2048 private key, one per *n*, made once per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key, one per *n*."""
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def ed_key(n: int = 0) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key, one per *n*."""
    return ed25519.Ed25519PrivateKey.generate()


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

KEY_FOR_ALG: dict[str, Callable[..., PrivateKey]] = {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key}


def public_pem(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of *key*'s public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """The PKCS#8 PEM of *key*, encrypted when *password* is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if password is None else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_jwk(key: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of *key* with *kid* and extra members."""
    alg = "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        alg = "ES256"
    jwk: dict[str, Any] = get_default_algorithms()[alg].to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    """The base64url of *value* as compact JSON (bytes are taken as they are)."""
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return b64(raw)


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid access token's claims at :data:`NOW`; ``None`` values are removed."""
    base: dict[str, Any] = {
        "sub": "user-42",
        "roles": ["listener"],
        "iat": NOW,
        "exp": NOW + 600,
        "jti": "jti-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: Any, secret: bytes | str = SECRET, header: Mapping[str, Any] | None = None) -> str:
    """A token whose signature is HMAC-SHA256 with *secret*, made with :mod:`hmac` directly."""
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{segment(dict(header or {'alg': 'HS256', 'typ': 'JWT'}))}.{segment(payload)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def signed(
    alg: str, key: PrivateKey, payload: Any, kid: str | None = None, header: Mapping[str, Any] | None = None
) -> str:
    """A token signed with *key* under *alg* (header built here)."""
    hdr: dict[str, Any] = dict(header) if header is not None else {"alg": alg, "typ": "JWT"}
    if kid is not None:
        hdr["kid"] = kid
    signing_input = f"{segment(hdr)}.{segment(payload)}".encode()
    algorithm = get_default_algorithms()[alg]
    return f"{signing_input.decode()}.{b64(algorithm.sign(signing_input, algorithm.prepare_key(key)))}"


def self_signed_certificate(key: rsa.RSAPrivateKey) -> bytes:
    """A PEM certificate for *key*."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def static_jwks(*jwks: dict[str, Any]) -> tuple[list[str], Any]:
    """An ``http_get`` answering a JWKS of *jwks*, and the list of URLs it was asked for."""
    asked: list[str] = []

    def http_get(url: str) -> Deferred[tuple[int, bytes]]:
        asked.append(url)
        return succeed((200, json.dumps({"keys": list(jwks)}).encode()))

    return asked, http_get


class VerifierMixin:
    """Build verifiers at :data:`NOW` and run them synchronously."""

    clock: Clock

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def verifier(self, **overrides: Any) -> JwtVerifier:
        """A verifier with *overrides* over: HS256 secret, no keys, no iss/aud, 30 s leeway."""
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

    def accepted(self, verifier: JwtVerifier, token: str, typ: str = "access") -> Principal:
        """The principal *verifier* makes of *token*."""
        result: Principal = self.successResultOf(ensureDeferred(verifier.verify(token, typ=typ)))  # type: ignore[attr-defined]
        return result

    def refused(self, verifier: JwtVerifier, token: str, typ: str = "access") -> AuthError:
        """The error *verifier* refuses *token* with; also checks the error quotes nothing of it."""
        failure = self.failureResultOf(ensureDeferred(verifier.verify(token, typ=typ)), AuthError)  # type: ignore[attr-defined]
        error: AuthError = failure.value
        for text in (str(error), repr(error), error.message, error.reason):
            for piece in token.split("."):
                if len(piece) >= 8:
                    assert piece not in text, "an error quotes the token"
        return error

    def assertInvalid(self, verifier: JwtVerifier, token: str, reason: str, typ: str = "access") -> None:
        """*token* is ``TOKEN_INVALID`` for *reason*."""
        error = self.refused(verifier, token, typ)
        self.assertEqual((error.code, error.reason), ("TOKEN_INVALID", reason))  # type: ignore[attr-defined]


# --- the attacks --------------------------------------------------------------------


class AlgorithmTests(VerifierMixin, unittest.TestCase):
    """The header's ``alg`` is checked against the allow-list before anything else."""

    def test_alg_none_refused(self) -> None:
        """``alg: none`` in any spelling, with or without a signature, is refused as ``alg_none``."""
        verifier = self.verifier()
        for alg in ("none", "None", "NONE", "nOnE"):
            unsigned = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}"
            self.assertInvalid(verifier, unsigned + ".", "alg_none")
            self.assertInvalid(verifier, unsigned + "." + b64(b"x" * 32), "alg_none")

    def test_missing_alg(self) -> None:
        """A header without ``alg``, or with a non-string one, is refused."""
        verifier = self.verifier()
        for header in ({"typ": "JWT"}, {"alg": None}, {"alg": 256}, {"alg": ""}, {"alg": ["HS256"]}):
            self.assertInvalid(verifier, hs256(claims(), header=header), "missing_alg")

    def test_unsupported_algorithms(self) -> None:
        """Algorithms outside the allow-list (HS512, PS256, RS512…) are refused."""
        verifier = self.verifier()
        for alg in ("HS512", "HS384", "PS256", "RS512", "ES384", "ES256K", "hs256", "RSA-OAEP"):
            self.assertInvalid(verifier, hs256(claims(), header={"alg": alg}), "alg_unsupported")

    def test_algorithm_not_configured(self) -> None:
        """An allowed algorithm that this verifier is not configured for is refused."""
        rs_only = self.verifier(secret=None, public_key_pem=public_pem(rsa_key()))
        self.assertInvalid(rs_only, hs256(claims()), "alg_not_allowed")
        self.assertInvalid(rs_only, signed("ES256", ec_key(), claims()), "alg_not_allowed")
        hs_only = self.verifier()
        self.assertInvalid(hs_only, signed("RS256", rsa_key(), claims()), "alg_not_allowed")

    def test_hs_rs_key_confusion(self) -> None:
        """HS256 signed with the RSA public key's PEM as HMAC secret is refused, even with HS256 on."""
        pem = public_pem(rsa_key())
        forged = hs256(claims(roles=["admin"]), secret=pem)
        self.assertInvalid(self.verifier(secret=None, public_key_pem=pem), forged, "alg_not_allowed")
        both = self.verifier(public_key_pem=pem)
        self.assertInvalid(both, forged, "bad_signature")
        der = (
            rsa_key()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        self.assertInvalid(both, hs256(claims(), secret=der), "bad_signature")

    def test_key_confusion_with_jwks(self) -> None:
        """With a JWKS, an HS256 token "signed" with a JWK's JSON is refused: JWKS never enables HS256."""
        jwk = public_jwk(rsa_key(), "k1")
        _, http_get = static_jwks(jwk)
        jwks = JwksCache("https://backend.test/jwks", clock=self.clock, http_get=http_get)
        verifier = self.verifier(secret=None, jwks=jwks)
        forged = hs256(claims(), secret=json.dumps(jwk).encode(), header={"alg": "HS256", "kid": "k1"})
        self.assertInvalid(verifier, forged, "alg_not_allowed")

    def test_crit_refused(self) -> None:
        """A ``crit`` header (an extension we do not implement) or ``b64`` is refused."""
        verifier = self.verifier()
        for header in ({"alg": "HS256", "crit": ["exp"], "exp": 1}, {"alg": "HS256", "b64": False}):
            self.assertInvalid(verifier, hs256(claims(), header=header), "crit_unsupported")

    def test_kid_must_be_a_string(self) -> None:
        """A non-string ``kid`` is refused."""
        self.assertInvalid(self.verifier(), hs256(claims(), header={"alg": "HS256", "kid": 7}), "bad_kid")

    def test_key_location_headers_ignored(self) -> None:
        """``jku``, ``x5u`` and ``jwk`` in the header are never followed nor used as keys."""
        attacker = rsa_key(9)
        header = {
            "alg": "RS256",
            "jku": "https://attacker.test/jwks",
            "x5u": "https://attacker.test/cert",
            "jwk": public_jwk(attacker, None),
        }
        verifier = self.verifier(secret=None, public_key_pem=public_pem(rsa_key()))
        self.assertInvalid(verifier, signed("RS256", attacker, claims(), header=header), "bad_signature")


class SignatureTests(VerifierMixin, unittest.TestCase):
    """Signatures: the right key verifies, anything else does not."""

    def test_hs256_accepted(self) -> None:
        """A token signed with the shared secret is accepted."""
        principal = self.accepted(self.verifier(), hs256(claims()))
        self.assertEqual(principal.sub, "user-42")

    def test_wrong_secret(self) -> None:
        """A token signed with another secret is refused as ``bad_signature``."""
        self.assertInvalid(self.verifier(), hs256(claims(), secret=OTHER_SECRET), "bad_signature")

    def test_tampered_payload(self) -> None:
        """Swapping the payload of a valid token (roles → admin) breaks its signature."""
        token = hs256(claims())
        header, _, signature = token.split(".")
        tampered = f"{header}.{segment(claims(roles=['admin']))}.{signature}"
        self.assertInvalid(self.verifier(), tampered, "bad_signature")

    def test_tampered_signature(self) -> None:
        """A signature with one bit flipped, truncated or empty is refused."""
        token = hs256(claims())
        head, body, signature = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
        raw[0] ^= 1
        verifier = self.verifier()
        self.assertInvalid(verifier, f"{head}.{body}.{b64(bytes(raw))}", "bad_signature")
        self.assertInvalid(verifier, f"{head}.{body}.{b64(bytes(raw[:16]))}", "bad_signature")
        self.assertInvalid(verifier, f"{head}.{body}.", "bad_signature")

    def test_asymmetric_accepted_with_the_right_key(self) -> None:
        """RS256, ES256 and EdDSA tokens verify with the matching public key file."""
        for alg, make in KEY_FOR_ALG.items():
            key = make()
            verifier = self.verifier(secret=None, public_key_pem=public_pem(key))
            self.assertEqual(verifier.algorithms, (alg,))
            principal = self.accepted(verifier, signed(alg, key, claims()))
            self.assertEqual((principal.sub, principal.via), ("user-42", "jwt"))

    def test_asymmetric_refused_with_another_key(self) -> None:
        """A token signed with another key of the same type is ``bad_signature``."""
        for alg, make in KEY_FOR_ALG.items():
            verifier = self.verifier(secret=None, public_key_pem=public_pem(make()))
            self.assertInvalid(verifier, signed(alg, make(1), claims()), "bad_signature")

    def test_es256_signature_malleability(self) -> None:
        """An ES256 signature in DER (not the raw r||s JWS form) is refused."""
        key = ec_key()
        token = signed("ES256", key, claims())
        head, body, _ = token.split(".")
        der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        verifier = self.verifier(secret=None, public_key_pem=public_pem(key))
        self.assertInvalid(verifier, f"{head}.{body}.{b64(der)}", "bad_signature")

    def test_certificate_as_key_file(self) -> None:
        """An X.509 certificate PEM is accepted as the public key file."""
        verifier = self.verifier(secret=None, public_key_pem=self_signed_certificate(rsa_key()))
        self.assertEqual(self.accepted(verifier, signed("RS256", rsa_key(), claims())).sub, "user-42")

    def test_secret_and_key_together(self) -> None:
        """With a secret and a public key, the allow-list is their union and each verifies its own."""
        verifier = self.verifier(public_key_pem=public_pem(ec_key()))
        self.assertEqual(verifier.algorithms, ("HS256", "ES256"))
        self.accepted(verifier, hs256(claims()))
        self.accepted(verifier, signed("ES256", ec_key(), claims()))
        self.assertInvalid(verifier, signed("RS256", rsa_key(), claims()), "alg_not_allowed")


class MalformedTokenTests(VerifierMixin, unittest.TestCase):
    """Whatever arrives, the answer is a precise ``TOKEN_INVALID``, never a crash."""

    def test_garbage(self) -> None:
        """Strings that are not three segments are ``malformed``."""
        verifier = self.verifier()
        for token in ("", "abc", "a.b", "a.b.c.d", "..", "a..c", ".b.c", "a.b.c.d.e"):
            self.assertInvalid(verifier, token, "malformed")

    def test_two_segments(self) -> None:
        """A token without its signature segment is ``malformed``."""
        head, body, _ = hs256(claims()).split(".")
        self.assertInvalid(self.verifier(), f"{head}.{body}", "malformed")

    def test_bad_base64(self) -> None:
        """Characters outside base64url, padding, an impossible length or stray bits are ``bad_base64``."""
        head, body, sig = hs256(claims()).split(".")
        verifier = self.verifier()
        for token in (
            f"{head}!.{body}.{sig}",
            f"{head}.{body}.{sig}==",
            f"{head}.{body}+/.{sig}",
            f"{head}.{body}.{sig[:-2]}",  # length 4k+1 is never base64
            f"{head}.{body}.{sig} ",
            f"{head}.{body}.é{sig}",
        ):
            self.assertInvalid(verifier, token, "bad_base64")
        # "QQ" is "A"; "QR" has non-zero unused bits: an alternative spelling, refused.
        self.assertInvalid(verifier, f"QR.{body}.{sig}", "bad_base64")

    def test_header_not_a_json_object(self) -> None:
        """A header that is not JSON, not UTF-8, not an object, or repeats a name is ``bad_header``."""
        _, body, sig = hs256(claims()).split(".")
        verifier = self.verifier()
        for header in (
            b"not json",
            b"\xff\xfe{}",
            b'["HS256"]',
            b'"HS256"',
            b"null",
            b'{"alg":"none","alg":"HS256"}',
            b'{"alg":"HS256",}',
            b"[" * 5000,
        ):
            self.assertInvalid(verifier, f"{b64(header)}.{body}.{sig}", "bad_header")

    def test_payload_not_a_json_object(self) -> None:
        """A correctly signed payload that is not a JSON object is ``bad_payload``."""
        verifier = self.verifier()
        for payload in (
            b"[1,2]",
            b'"sub"',
            b"42",
            b"not json",
            b'{"sub":"a","sub":"b","exp":9999999999}',
            b'{"sub":"a","exp":NaN}',
            b'{"sub":"a","exp":Infinity}',
        ):
            self.assertInvalid(verifier, hs256(payload), "bad_payload")

    def test_huge_token(self) -> None:
        """A token over 8 KiB is refused as ``too_long`` without being parsed."""
        big = hs256(claims(pad="x" * MAX_TOKEN_LENGTH))
        self.assertGreater(len(big), MAX_TOKEN_LENGTH)
        self.assertInvalid(self.verifier(), big, "too_long")
        self.assertInvalid(self.verifier(), "a" * 10_000_000, "too_long")

    def test_not_a_string(self) -> None:
        """A token that is not a ``str`` is ``malformed``."""
        error = self.failureResultOf(ensureDeferred(self.verifier().verify(b"a.b.c")), AuthError).value  # type: ignore[arg-type]
        self.assertEqual(error.reason, "malformed")


# --- the claims -------------------------------------------------------------------------


class TimeClaimTests(VerifierMixin, unittest.TestCase):
    """``exp`` (required), ``nbf`` and ``iat`` against the injected clock, with leeway."""

    def test_expired(self) -> None:
        """A token past ``exp`` + leeway is ``TOKEN_EXPIRED`` (reason ``expired``)."""
        error = self.refused(self.verifier(), hs256(claims(exp=NOW - 31)))
        self.assertEqual((error.code, error.reason), ("TOKEN_EXPIRED", "expired"))

    def test_expired_boundary(self) -> None:
        """Valid strictly before ``exp`` + leeway; expired at that instant."""
        verifier = self.verifier(leeway_s=30)
        self.accepted(verifier, hs256(claims(exp=NOW - 29)))
        self.assertEqual(self.refused(verifier, hs256(claims(exp=NOW - 30))).code, "TOKEN_EXPIRED")

    def test_within_leeway_accepted(self) -> None:
        """A token that expired less than the leeway ago is accepted; with no leeway it is not."""
        token = hs256(claims(exp=NOW - 10))
        self.accepted(self.verifier(leeway_s=30), token)
        self.assertEqual(self.refused(self.verifier(leeway_s=0), token).code, "TOKEN_EXPIRED")

    def test_expiry_follows_the_clock(self) -> None:
        """The same token is accepted, then refused once the clock passes ``exp`` + leeway."""
        verifier = self.verifier()
        token = hs256(claims(exp=NOW + 60))
        self.accepted(verifier, token)
        self.clock.advance(89)
        self.accepted(verifier, token)
        self.clock.advance(1)
        self.assertEqual(self.refused(verifier, token).code, "TOKEN_EXPIRED")

    def test_exp_required(self) -> None:
        """A token without ``exp`` is refused (``missing_exp``)."""
        self.assertInvalid(self.verifier(), hs256(claims(exp=None)), "missing_exp")

    def test_bad_numeric_dates(self) -> None:
        """``exp``, ``nbf``, ``iat`` must be finite numbers: strings, booleans, huge values are refused."""
        verifier = self.verifier()
        for name in ("exp", "nbf", "iat"):
            for value in ("1767225600", True, [1], {"t": 1}, 10**30, -(10**30)):
                self.assertInvalid(verifier, hs256(claims(**{name: value})), f"bad_{name}")
            self.assertInvalid(verifier, hs256(f'{{"sub":"u","{name}":1e999}}'.encode()), f"bad_{name}")

    def test_fractional_dates(self) -> None:
        """NumericDates may be fractional."""
        principal = self.accepted(self.verifier(), hs256(claims(exp=NOW + 0.5, iat=NOW - 0.25)))
        self.assertEqual((principal.expires_at, principal.issued_at), (NOW + 0.5, NOW - 0.25))

    def test_nbf_in_the_future(self) -> None:
        """``nbf`` beyond now + leeway is ``not_yet_valid``; within the leeway it is accepted."""
        verifier = self.verifier(leeway_s=30)
        self.assertInvalid(verifier, hs256(claims(nbf=NOW + 31)), "not_yet_valid")
        self.accepted(verifier, hs256(claims(nbf=NOW + 30)))
        self.accepted(verifier, hs256(claims(nbf=NOW - 1000)))

    def test_iat_in_the_future(self) -> None:
        """``iat`` beyond now + leeway is ``iat_in_future``; within the leeway it is accepted."""
        verifier = self.verifier(leeway_s=30)
        self.assertInvalid(verifier, hs256(claims(iat=NOW + 31)), "iat_in_future")
        self.accepted(verifier, hs256(claims(iat=NOW + 30)))
        self.accepted(verifier, hs256(claims(iat=None)))

    def test_expired_reported_only_for_an_otherwise_valid_token(self) -> None:
        """An expired token that is also wrong in another way is ``TOKEN_INVALID``, not ``TOKEN_EXPIRED``."""
        verifier = self.verifier(audience="streamsrv")
        self.assertInvalid(verifier, hs256(claims(exp=NOW - 1000, aud="other")), "wrong_audience")
        self.assertInvalid(
            verifier, hs256(claims(exp=NOW - 1000, aud="streamsrv", typ="refresh")), "wrong_typ"
        )
        self.assertInvalid(
            self.verifier(), hs256(claims(exp=NOW - 1000), secret=OTHER_SECRET), "bad_signature"
        )


class IssuerAudienceTests(VerifierMixin, unittest.TestCase):
    """``iss`` and ``aud`` are required and checked when configured, ignored otherwise."""

    def test_issuer(self) -> None:
        """The configured issuer must be present and equal."""
        verifier = self.verifier(issuer="https://api.example.com")
        self.accepted(verifier, hs256(claims(iss="https://api.example.com")))
        self.assertInvalid(verifier, hs256(claims()), "missing_iss")
        self.assertInvalid(verifier, hs256(claims(iss="https://evil.example.com")), "wrong_issuer")
        self.assertInvalid(verifier, hs256(claims(iss="https://api.example.com/")), "wrong_issuer")
        self.assertInvalid(verifier, hs256(claims(iss=["https://api.example.com"])), "wrong_issuer")

    def test_audience(self) -> None:
        """The configured audience must be ``aud`` or one of its list's strings."""
        verifier = self.verifier(audience="streamsrv")
        self.accepted(verifier, hs256(claims(aud="streamsrv")))
        self.accepted(verifier, hs256(claims(aud=["api", "streamsrv"])))
        self.assertInvalid(verifier, hs256(claims()), "missing_aud")
        self.assertInvalid(verifier, hs256(claims(aud="api")), "wrong_audience")
        self.assertInvalid(verifier, hs256(claims(aud=["api"])), "wrong_audience")
        self.assertInvalid(verifier, hs256(claims(aud=[])), "wrong_audience")
        self.assertInvalid(verifier, hs256(claims(aud={"streamsrv": True})), "wrong_audience")
        self.assertInvalid(verifier, hs256(claims(aud="STREAMSRV")), "wrong_audience")

    def test_not_configured_not_checked(self) -> None:
        """Without configuration, ``iss`` and ``aud`` are not checked."""
        self.accepted(self.verifier(), hs256(claims(iss="anyone", aud="anything")))


class ClaimTests(VerifierMixin, unittest.TestCase):
    """``typ``, ``sub``, ``roles``, ``permissions``, ``jti``, ``fam`` and the principal made of them."""

    def test_principal_fields(self) -> None:
        """Every claim lands in its principal field."""
        principal = self.accepted(
            self.verifier(), hs256(claims(roles=["premium"], jti="j-9", fam="f-1", iat=NOW - 5))
        )
        self.assertEqual(
            principal,
            Principal(
                sub="user-42",
                roles=frozenset({"premium"}),
                permissions=DEFAULT_ROLES["premium"],
                via="jwt",
                token_id="j-9",
                family="f-1",
                issued_at=NOW - 5,
                expires_at=NOW + 600,
            ),
        )

    def test_typ_absent_is_access(self) -> None:
        """Without ``typ`` a token is an access token: accepted as access, refused as refresh."""
        token = hs256(claims())
        self.accepted(self.verifier(), token)
        self.assertInvalid(self.verifier(), token, "wrong_typ", typ="refresh")

    def test_refresh_token_as_access(self) -> None:
        """A refresh token presented as a bearer is ``TOKEN_INVALID`` (``wrong_typ``)."""
        token = hs256(claims(typ="refresh"))
        self.assertInvalid(self.verifier(), token, "wrong_typ")
        self.accepted(self.verifier(), token, typ="refresh")

    def test_access_token_as_refresh(self) -> None:
        """An explicit access token sent to refresh is ``wrong_typ``."""
        self.assertInvalid(self.verifier(), hs256(claims(typ="access")), "wrong_typ", typ="refresh")

    def test_unknown_typ(self) -> None:
        """A ``typ`` other than access/refresh is ``bad_typ``; asking for one is a programming error."""
        for value in ("id", "Access", "", 1, None):
            payload = claims()
            payload["typ"] = value
            self.assertInvalid(self.verifier(), hs256(payload), "bad_typ")
        self.failureResultOf(ensureDeferred(self.verifier().verify(hs256(claims()), typ="id")), ValueError)

    def test_sub_required(self) -> None:
        """``sub`` must be a non-empty string."""
        verifier = self.verifier()
        self.assertInvalid(verifier, hs256(claims(sub=None)), "missing_sub")
        for value in ("", 42, ["u"], True):
            self.assertInvalid(verifier, hs256(claims(sub=value)), "bad_sub")

    def test_roles_and_permissions_are_lists_of_strings(self) -> None:
        """``roles``/``permissions`` that are not lists of strings are refused; absent means none."""
        verifier = self.verifier()
        for name in ("roles", "permissions"):
            for value in ("listener", ["listener", 1], {"a": 1}, [None]):
                self.assertInvalid(verifier, hs256(claims(**{name: value})), f"bad_{name}")
        principal = self.accepted(verifier, hs256(claims(roles=None)))
        self.assertEqual((principal.roles, principal.permissions), (frozenset(), frozenset()))

    def test_token_permissions_add_to_roles(self) -> None:
        """A token's ``permissions`` are added to its roles' permissions."""
        principal = self.accepted(
            self.verifier(), hs256(claims(roles=["listener"], permissions=["notifications:send"]))
        )
        self.assertEqual(principal.permissions, DEFAULT_ROLES["listener"] | {"notifications:send"})
        self.assertTrue(principal.can("notifications:send"))
        self.assertFalse(principal.can("stream:hq"))

    def test_token_permissions_are_the_claim_alone(self) -> None:
        """``token_permissions`` holds the token's own ``permissions`` claim, not the effective set."""
        verifier = self.verifier()
        principal = self.accepted(verifier, hs256(claims(roles=["premium"], permissions=["x:y", "a:b"])))
        self.assertEqual(principal.token_permissions, frozenset({"x:y", "a:b"}))
        self.assertEqual(principal.permissions, DEFAULT_ROLES["premium"] | {"x:y", "a:b"})
        self.assertEqual(self.accepted(verifier, hs256(claims())).token_permissions, frozenset())

    def test_unknown_roles_contribute_nothing(self) -> None:
        """An unknown role is kept in ``roles`` but grants nothing."""
        principal = self.accepted(self.verifier(), hs256(claims(roles=["superuser", "listener"])))
        self.assertEqual(principal.roles, frozenset({"superuser", "listener"}))
        self.assertEqual(principal.permissions, DEFAULT_ROLES["listener"])
        self.assertFalse(principal.is_admin)

    def test_roles_table_is_the_configured_one(self) -> None:
        """Permissions come from the verifier's roles table."""
        table = {"listener": frozenset({"stream:read"})}
        principal = self.accepted(self.verifier(roles=table), hs256(claims()))
        self.assertEqual(principal.permissions, frozenset({"stream:read"}))

    def test_admin(self) -> None:
        """The admin role makes an admin principal."""
        self.assertTrue(self.accepted(self.verifier(), hs256(claims(roles=["admin"]))).is_admin)

    def test_jti_and_fam_strings(self) -> None:
        """``jti`` and ``fam`` are optional, but strings when present."""
        verifier = self.verifier()
        principal = self.accepted(verifier, hs256(claims(jti=None)))
        self.assertEqual((principal.token_id, principal.family), (None, None))
        self.assertInvalid(verifier, hs256(claims(jti=7)), "bad_jti")
        self.assertInvalid(verifier, hs256(claims(fam=["f"])), "bad_fam")


# --- configuration ----------------------------------------------------------------------


class ConfigurationTests(VerifierMixin, unittest.TestCase):
    """What each configuration accepts, and keys that are refused up front."""

    def test_allow_list(self) -> None:
        """The allow-list is the union of what is configured."""
        clock = self.clock
        jwks = JwksCache("https://backend.test/jwks", clock=clock, http_get=static_jwks()[1])
        cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
            ({}, ("HS256",)),
            ({"secret": None}, ()),
            ({"secret": None, "public_key_pem": public_pem(rsa_key())}, ("RS256",)),
            ({"secret": None, "public_key_pem": public_pem(ed_key())}, ("EdDSA",)),
            ({"jwks": jwks}, ("HS256", "RS256", "ES256", "EdDSA")),
        ]
        for overrides, algorithms in cases:
            verifier = self.verifier(**overrides)
            self.assertEqual(verifier.algorithms, algorithms)
            self.assertEqual(verifier.configured, bool(algorithms))
        self.assertEqual(ALLOWED_ALGORITHMS, ("HS256", "RS256", "ES256", "EdDSA"))

    def test_nothing_configured_refuses_everything(self) -> None:
        """A verifier with no key refuses every token as ``alg_not_allowed``."""
        self.assertInvalid(self.verifier(secret=None), hs256(claims()), "alg_not_allowed")

    def test_unusable_keys(self) -> None:
        """Bad PEM, private keys, RSA-1024, P-384, empty or key-like secrets: ValueError, quoting nothing."""
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        p384 = ec.generate_private_key(ec.SECP384R1())
        for overrides in (
            {"public_key_pem": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
            {"public_key_pem": b"garbage"},
            {"public_key_pem": private_pem(rsa_key())},
            {"public_key_pem": public_pem(weak)},
            {"public_key_pem": public_pem(p384)},
            {"secret": ""},
            {"secret": public_pem(rsa_key()).decode()},
            {"secret": json.dumps(public_jwk(rsa_key(), "k"))},
            {"leeway_s": -1},
            {"leeway_s": float("nan")},
        ):
            with self.assertRaises(ValueError) as raised:
                self.verifier(**overrides)
            self.assertNotIn("MII", str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            self.verifier(public_key_pem=private_pem(rsa_key()))
        self.assertIn("private key", str(raised.exception))


class JwksVerifierTests(VerifierMixin, unittest.TestCase):
    """A verifier backed by a JWKS (fetched through an injected ``http_get``)."""

    def jwks_verifier(self, *jwks: dict[str, Any], **overrides: Any) -> tuple[JwtVerifier, list[str]]:
        """A verifier with no secret and a JWKS of *jwks*; and the fetch log."""
        asked, http_get = static_jwks(*jwks)
        cache = JwksCache("https://backend.test/jwks", clock=self.clock, http_get=http_get)
        options: dict[str, Any] = {"secret": None, "jwks": cache}
        options.update(overrides)
        return self.verifier(**options), asked

    def test_each_algorithm_by_kid(self) -> None:
        """RS256, ES256 and EdDSA tokens verify with the JWKS key their ``kid`` names."""
        verifier, asked = self.jwks_verifier(
            public_jwk(rsa_key(), "r"), public_jwk(ec_key(), "e"), public_jwk(ed_key(), "d")
        )
        for alg, kid in (("RS256", "r"), ("ES256", "e"), ("EdDSA", "d")):
            self.accepted(verifier, signed(alg, KEY_FOR_ALG[alg](), claims(), kid=kid))
        self.assertEqual(len(asked), 1)

    def test_unknown_kid(self) -> None:
        """A ``kid`` the JWKS does not hold is ``unknown_kid``."""
        verifier, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"))
        self.assertInvalid(verifier, signed("RS256", rsa_key(), claims(), kid="nope"), "unknown_kid")

    def test_kid_of_another_key(self) -> None:
        """A token naming one key's ``kid`` but signed by another is ``bad_signature``."""
        verifier, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"), public_jwk(rsa_key(1), "r1"))
        self.assertInvalid(verifier, signed("RS256", rsa_key(1), claims(), kid="r"), "bad_signature")

    def test_kid_for_another_algorithm(self) -> None:
        """Naming an RSA key's ``kid`` with ``alg: ES256`` is ``alg_mismatch``."""
        verifier, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"))
        self.assertInvalid(verifier, signed("ES256", ec_key(), claims(), kid="r"), "alg_mismatch")

    def test_no_kid(self) -> None:
        """Without ``kid`` the only key of the algorithm verifies; with several, ``missing_kid``."""
        single, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"))
        self.accepted(single, signed("RS256", rsa_key(), claims()))
        several, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"), public_jwk(rsa_key(1), "r1"))
        self.assertInvalid(several, signed("RS256", rsa_key(), claims()), "missing_kid")

    def test_key_file_fallback(self) -> None:
        """With a key file too, a ``kid`` the JWKS lacks falls back to the key file."""
        verifier, _ = self.jwks_verifier(public_jwk(rsa_key(), "r"), public_key_pem=public_pem(rsa_key(1)))
        self.accepted(verifier, signed("RS256", rsa_key(1), claims(), kid="issuer-key"))
        self.accepted(verifier, signed("RS256", rsa_key(1), claims()))
        self.accepted(verifier, signed("RS256", rsa_key(), claims(), kid="r"))
        self.assertInvalid(verifier, signed("RS256", rsa_key(2), claims(), kid="other"), "bad_signature")


# --- issuing ----------------------------------------------------------------------------


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of *token*, for inspection only."""
    head, body, _ = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(head + "==")),
        json.loads(base64.urlsafe_b64decode(body + "==")),
    )


class TokenIssuerTests(VerifierMixin, unittest.TestCase):
    """Issued tokens carry the promised claims and verify."""

    def issuer(self, **overrides: Any) -> TokenIssuer:
        """An issuer with *overrides* over: the HS256 secret, no key, no iss/aud."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "private_key_pem": None,
            "issuer": None,
            "audience": None,
            "clock": self.clock,
        }
        options.update(overrides)
        return TokenIssuer(**options)

    def test_hs256_round_trip(self) -> None:
        """An HS256 token verifies with the same secret and carries the claims."""
        self.clock.advance(0.75)
        token = self.issuer().issue(sub="u1", roles=["premium"], permissions=["x:y"], ttl_s=900.9)
        header, body = decode_unverified(token)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        expected = {"sub": "u1", "roles": ["premium"], "permissions": ["x:y"], "typ": "access"}
        self.assertEqual(
            {k: v for k, v in body.items() if k != "jti"}, {**expected, "iat": NOW, "exp": NOW + 900}
        )
        principal = self.accepted(self.verifier(), token)
        self.assertEqual(principal.permissions, DEFAULT_ROLES["premium"] | {"x:y"})
        self.assertEqual(principal.token_id, body["jti"])

    def test_asymmetric_round_trip(self) -> None:
        """With a private key, tokens are signed by its algorithm, carry its thumbprint, and verify."""
        for alg, make in KEY_FOR_ALG.items():
            issuer = self.issuer(secret=None, private_key_pem=private_pem(make()))
            self.assertEqual(issuer.algorithm, alg)
            token = issuer.issue(sub="u1", roles=["listener"], ttl_s=60)
            header, _ = decode_unverified(token)
            self.assertEqual(header, {"alg": alg, "typ": "JWT", "kid": issuer.key_id})
            assert issuer.public_key_pem is not None
            verifier = self.verifier(secret=None, public_key_pem=issuer.public_key_pem)
            self.assertEqual(self.accepted(verifier, token).sub, "u1")
            self.assertInvalid(self.verifier(), token, "alg_not_allowed")

    def test_private_key_wins_over_secret(self) -> None:
        """With both a secret and a private key, the private key signs."""
        issuer = self.issuer(private_key_pem=private_pem(ed_key()))
        self.assertEqual(issuer.algorithm, "EdDSA")

    def test_thumbprint_rfc7638_vector(self) -> None:
        """The ``kid`` is the RFC 7638 thumbprint (the RFC's own example key)."""
        jwk = {
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
            "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
            "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
            "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        }
        key = PyJWK(jwk, algorithm="RS256").key
        self.assertEqual(_thumbprint(key, "RS256"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")

    def test_refresh_family_issuer_audience(self) -> None:
        """``typ``, ``fam``, a given ``jti``, ``iss`` and ``aud`` are set and verified."""
        issuer = self.issuer(issuer="https://streamsrv.test", audience="streamsrv")
        token = issuer.issue(sub="u1", roles=[], typ="refresh", ttl_s=3600, family="fam-1", jti="j-1")
        _, body = decode_unverified(token)
        self.assertEqual(
            (body["typ"], body["fam"], body["jti"], body["iss"], body["aud"]),
            ("refresh", "fam-1", "j-1", "https://streamsrv.test", "streamsrv"),
        )
        self.assertNotIn("permissions", body)
        verifier = self.verifier(issuer="https://streamsrv.test", audience="streamsrv")
        principal = self.accepted(verifier, token, typ="refresh")
        self.assertEqual((principal.family, principal.token_id), ("fam-1", "j-1"))
        self.assertInvalid(verifier, token, "wrong_typ")

    def test_random_jti(self) -> None:
        """Without a ``jti``, each token gets a fresh random one."""
        issuer = self.issuer()
        jtis = {decode_unverified(issuer.issue(sub="u", roles=[], ttl_s=60))[1]["jti"] for _ in range(50)}
        self.assertEqual(len(jtis), 50)
        self.assertTrue(all(len(j) >= 20 for j in jtis))

    def test_issued_token_expires(self) -> None:
        """An issued token expires ``ttl_s`` later on the clock (plus leeway)."""
        verifier = self.verifier(leeway_s=0)
        token = self.issuer().issue(sub="u", roles=[], ttl_s=60)
        self.clock.advance(59)
        self.accepted(verifier, token)
        self.clock.advance(1)
        self.assertEqual(self.refused(verifier, token).code, "TOKEN_EXPIRED")

    def test_not_configured(self) -> None:
        """Without a signing key the issuer is not configured and ``issue`` says ``NOT_CONFIGURED``."""
        issuer = self.issuer(secret=None)
        self.assertFalse(issuer.configured)
        self.assertIsNone(issuer.public_key_pem)
        with self.assertRaises(AuthError) as raised:
            issuer.issue(sub="u", roles=[], ttl_s=60)
        self.assertEqual(raised.exception.code, "NOT_CONFIGURED")
        self.assertTrue(self.issuer().configured)

    def test_bad_arguments(self) -> None:
        """Empty ``sub``, sub-second TTL, unknown ``typ`` and a bare string of roles are refused."""
        issuer = self.issuer()
        for kwargs in ({"sub": ""}, {"ttl_s": 0.5}, {"ttl_s": float("inf")}, {"typ": "id"}):
            with self.assertRaises(ValueError):
                issuer.issue(**{"sub": "u", "roles": [], "ttl_s": 60, **kwargs})  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            issuer.issue(sub="u", roles="admin", ttl_s=60)
        with self.assertRaises(TypeError):
            issuer.issue(sub="u", roles=[], permissions="stream:hq", ttl_s=60)

    def test_unusable_private_keys(self) -> None:
        """An encrypted, malformed or weak private key is a ``ValueError`` quoting nothing."""
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        for pem in (
            private_pem(rsa_key(), password=b"pw"),
            b"garbage",
            public_pem(rsa_key()),
            private_pem(weak),
        ):
            with self.assertRaises(ValueError) as raised:
                self.issuer(private_key_pem=pem)
            self.assertNotIn("MII", str(raised.exception))


# --- the header ---------------------------------------------------------------------------


class BearerTokenTests(unittest.TestCase):
    """``Authorization`` header parsing."""

    def assertMalformed(self, value: bytes, reason: str = "malformed_bearer") -> None:
        """*value* is a refused bearer header."""
        with self.assertRaises(AuthError) as raised:
            bearer_token(value)
        self.assertEqual((raised.exception.code, raised.exception.reason), ("TOKEN_INVALID", reason))

    def test_absent_or_other_scheme(self) -> None:
        """No header, or another scheme, gives ``None``."""
        for value in (None, b"", b"Basic dXNlcjpwYXNz", b"Digest x", b"Bearerx", b"Token abc", b"\xff\xfe"):
            self.assertIsNone(bearer_token(value))

    def test_token(self) -> None:
        """``Bearer x`` in any case, with surrounding blanks, gives the token."""
        token = "eyJh.eyJz.c2ln"
        for value in (b"Bearer ", b"bearer ", b"BEARER ", b"  Bearer   ", b"\tbEaReR "):
            self.assertEqual(bearer_token(value + token.encode() + b" \t"), token)
        self.assertEqual(bearer_token(b"Bearer abc~+/=="), "abc~+/==")

    def test_malformed(self) -> None:
        """An empty bearer, inner spaces, a comma list or non-token68 characters are ``malformed_bearer``."""
        for value in (
            b"Bearer",
            b"Bearer ",
            b"Bearer    ",
            b"Bearer a b",
            b"Bearer a,b",
            b"Bearer a\tb",
            b"Bearer \xc3\xa9t\xc3\xa9",
            b"Bearer a\x00b",
            b"Bearer a=b",
            b'Bearer "abc"',
        ):
            self.assertMalformed(value)

    def test_size_limit(self) -> None:
        """A token of 8 KiB is accepted; one byte more is ``too_long``."""
        self.assertEqual(bearer_token(b"Bearer " + b"a" * MAX_TOKEN_LENGTH), "a" * MAX_TOKEN_LENGTH)
        self.assertMalformed(b"Bearer " + b"a" * (MAX_TOKEN_LENGTH + 1), "too_long")
        self.assertMalformed(b"Bearer " + b"a" * 1_000_000, "too_long")

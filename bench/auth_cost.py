"""Cost of admitting a request: JWT verification and signed-URL verification, in µs.

Runs each verification many times in-process (no network, no reactor spin)
and prints the median of several rounds, for HS256, RS256, ES256 and EdDSA
tokens and for signed URLs with and without bound parameters, plus the whole
``Guard.admit`` path (verification + revocation check + in-memory rate
limit) for a JWT and a signed URL.

    .venv/bin/python bench/auth_cost.py [--rounds 7] [--number 2000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import SigningKey, parse_query_pairs, sign_url, verify
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES, MemoryRateLimiter

NOW = 1_800_000_000.0


def _pem_pair(private: Any) -> tuple[bytes, bytes]:
    priv = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


def _verifier_and_token(kind: str, clock: Clock) -> tuple[JwtVerifier, str]:
    secret = priv = pub = None
    if kind == "HS256":
        secret = "a-benchmark-secret-that-is-long-enough-0123456789"
    else:
        key = {
            "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate,
        }[kind]()
        priv, pub = _pem_pair(key)
    issuer = TokenIssuer(secret=secret, private_key_pem=priv, issuer=None, audience=None, clock=clock)
    verifier = JwtVerifier(
        secret=secret, public_key_pem=pub, jwks=None, issuer=None, audience=None,
        leeway_s=30, clock=clock, roles=DEFAULT_ROLES,
    )
    return verifier, issuer.issue(sub="alice", roles=["listener"], ttl_s=10**8)


def _time_us(fn: Callable[[], object], number: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(results)


class _Request:
    """Just what Guard.admit reads and writes."""

    method = b"GET"
    client_ip = "10.0.0.1"

    def __init__(self, path: bytes, query: bytes, authorization: bytes | None) -> None:
        self.path = path
        self.uri = path + (b"?" + query if query else b"")
        self._auth = authorization
        self.headers: dict[bytes, bytes] = {}
        self.user = self.auth_via = self.signed_expires = None

    def getHeader(self, name: bytes) -> bytes | None:
        return self._auth if name == b"authorization" else None

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clock = Clock()
    clock.advance(NOW)
    results: dict[str, float] = {}

    def run_coro(coro: Any) -> None:
        d = ensureDeferred(coro)
        failures: list[Any] = []
        d.addErrback(failures.append)
        if failures:
            failures[0].raiseException()

    for kind in ("HS256", "RS256", "ES256", "EdDSA"):
        verifier, token = _verifier_and_token(kind, clock)
        results[f"jwt_verify_{kind}_us"] = _time_us(
            lambda v=verifier, t=token: run_coro(v.verify(t)), args.number, args.rounds
        )

    keys = (SigningKey("k1", b"a-benchmark-url-signing-key-0123456789ab"),)
    path = "/stream/jazz/Miles Davis/So What.mp3"
    for label, bound in (("plain", None), ("bound_uid_format", {"uid": "42", "format": "mp3"})):
        url = sign_url("http://x", path, keys=keys, expires=int(NOW) + 3600, bound=bound)
        query = url.split("?", 1)[1].encode()
        results[f"signed_url_verify_{label}_us"] = _time_us(
            lambda q=query: verify(path, parse_query_pairs(q), keys=keys, now=NOW, max_ttl_s=86400),
            args.number, args.rounds,
        )

    hs_verifier, hs_token = _verifier_and_token("HS256", clock)
    guard = Guard(
        verifier=hs_verifier, url_keys=keys, url_max_ttl_s=10**7, revocations=None,
        limiter=MemoryRateLimiter(clock, max_buckets=1000), policies=DEFAULT_POLICIES,
        anonymous=None, clock=clock,
    )
    raw_path = b"/stream/jazz/Miles%20Davis/So%20What.mp3"
    bearer = b"Bearer " + hs_token.encode()

    def admit_jwt() -> None:
        clock.advance(1.0)  # keep the buckets from emptying
        request = _Request(raw_path, b"", bearer)
        run_coro(guard.admit(request, permission="stream:read", signed=True, stream_start=True))

    url = sign_url("http://x", path, keys=keys, expires=int(NOW) + 10**6)
    signed_query = url.split("?", 1)[1].encode()

    def admit_signed() -> None:
        clock.advance(1.0)
        request = _Request(raw_path, signed_query, None)
        run_coro(guard.admit(request, permission="stream:read", signed=True, stream_start=True))

    results["guard_admit_jwt_HS256_us"] = _time_us(admit_jwt, args.number, args.rounds)
    results["guard_admit_signed_url_us"] = _time_us(admit_signed, args.number, args.rounds)

    width = max(len(k) for k in results)
    print(f"median of {args.rounds} rounds x {args.number} calls, one core, in-process")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:8.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

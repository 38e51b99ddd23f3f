# -*- test-case-name: tests.test_tap -*-
"""Builds the credential parts of the daemon from its settings: issuer, verifier, revocations, refresh.

:func:`make_auth` reads the configured (or generated development) signing
material, builds the JWT verifier (with a JWKS cache when
``STREAMSRV_JWT_JWKS_URL`` is set), the token issuer, the revocation store
and its cache (services added to *parent* in start order) and the refresh
token service.  The request guard that uses them is built by
:mod:`streamsrv.middleware.factory`.  This module must never read a request,
never import the HTTP adapters, and never start a service itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IServiceCollection

from streamsrv.auth.devcredentials import DevCredentials, SigningMaterial, signing_material
from streamsrv.auth.jwks import JwksCache
from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.refresh import TokenService, make_revocation_store
from streamsrv.auth.revocation import RevocationCache, RevocationStoreService
from streamsrv.auth.revocationsignal import open_signal
from streamsrv.auth.signing import SigningKey
from streamsrv.config import Settings


@dataclass(frozen=True)
class AuthParts:
    """What the rest of the daemon needs of the credential parts."""

    verifier: JwtVerifier
    issuer: TokenIssuer
    url_keys: tuple[SigningKey, ...]
    roles: dict[str, frozenset[str]]
    dev: DevCredentials | None
    revocations: RevocationCache
    tokens: TokenService


def make_issuer(settings: Settings, material: SigningMaterial, clock: Any) -> TokenIssuer:
    """The token issuer of the configured (or generated development) signing key."""
    return TokenIssuer(
        secret=material.jwt_secret,
        private_key_pem=material.private_key_pem,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=clock,
    )


def make_verifier(
    settings: Settings,
    material: SigningMaterial,
    issuer: TokenIssuer,
    roles: dict[str, frozenset[str]],
    *,
    reactor: Any,
    metrics: Any,
) -> JwtVerifier:
    """The JWT verifier: the HS secret, the public key (file, or the signing key's), the JWKS URL."""
    public_pem = settings.jwt_public_key_file.read_bytes() if settings.jwt_public_key_file else None
    if public_pem is None and material.private_key_pem is not None:
        public_pem = issuer.public_key_pem
    jwks = None
    if settings.jwt_jwks_url is not None:
        jwks = JwksCache(
            settings.jwt_jwks_url,
            clock=reactor,
            metrics_hook=lambda event: metrics.security_events.labels(f"jwks_{event}").inc(),
        )
    return JwtVerifier(
        secret=material.jwt_secret,
        public_key_pem=public_pem,
        jwks=jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        clock=reactor,
        roles=roles,
    )


def make_auth(
    settings: Settings,
    reactor: Any,
    parent: IServiceCollection,
    roles: dict[str, frozenset[str]],
    metrics: Any,
    redis: Any,
    on_security_event: Callable[[str, dict[str, Any]], None],
) -> AuthParts:
    """The credential parts; the revocation store and cache join *parent*, the store first.

    :param redis: the process's Redis connection, or ``None`` (revocations
        and refresh families then live in the SQLite data store).
    :param on_security_event: told of security events of token refresh.
    """
    material = signing_material(settings)
    issuer = make_issuer(settings, material, reactor)
    verifier = make_verifier(settings, material, issuer, roles, reactor=reactor, metrics=metrics)
    store = make_revocation_store(settings, reactor, redis=redis)
    RevocationStoreService(store).setServiceParent(parent)
    # The doorbell of the host's processes (workers, daemons sharing the data dir).
    revocations = RevocationCache(store, reactor, signal=open_signal(settings.data_dir))
    revocations.setServiceParent(parent)
    tokens = TokenService(
        verifier=verifier,
        issuer=issuer,
        revocations=revocations,
        store=store,
        clock=reactor,
        on_security_event=on_security_event,
    )
    return AuthParts(verifier, issuer, material.url_keys, roles, material.dev, revocations, tokens)

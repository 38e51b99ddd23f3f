# -*- test-case-name: tests.test_config -*-
"""Rules across variables: what production refuses, what worker processes cannot share, warnings.

:func:`production_problems` and :func:`workers_problems` turn valid values
into problems where their combination cannot run; :func:`config_warnings`
lists valid but probably unintended configurations.  They look only at a
:class:`~streamsrv.config.settings.Settings`, and must never quote a secret.
"""

from __future__ import annotations

from streamsrv.config.settings import EXAMPLE_SECRET_BYTES, MIN_SECRET_BYTES, Settings
from streamsrv.config.values import echo, endpoint_arguments, is_loopback_endpoint

__all__ = ["config_warnings", "production_problems", "workers_problems"]


def workers_problems(settings: Settings) -> list[str]:
    """
    Listeners that worker processes cannot share, when ``STREAMSRV_WORKERS`` > 1.

    A UNIX socket adopted by several processes would be re-permissioned by
    each and unlinked by the first to stop, so ``unix:`` (and systemd's
    ``domain=UNIX``) need a single process.

    :param settings: Settings as read (a refused listen list is the default one).
    :return: The problems, possibly none.
    """
    if settings.workers <= 1:
        return []
    problems: list[str] = []
    for description in settings.listen:
        kind, _positional, keywords = endpoint_arguments(description)
        if kind == "unix" or (kind == "systemd" and keywords.get("domain") == "UNIX"):
            problems.append(
                f"STREAMSRV_WORKERS: {settings.workers} worker processes cannot share "
                f"{echo(description)} (UNIX sockets need STREAMSRV_WORKERS=1; use a tcp: "
                "listener on loopback instead)"
            )
    return problems


def production_problems(settings: Settings, refused: set[str]) -> list[str]:
    """
    What production refuses, each its own problem.

    :param settings: Settings whose profile is production.
    :param refused: Variables already reported as invalid, whose absence
        from *settings* must not be reported again as missing.
    :return: The problems, possibly none.
    """
    problems: list[str] = []
    if settings.jwt_secret is not None:
        problems.extend(_weak_secret("STREAMSRV_JWT_SECRET", settings.jwt_secret.encode("utf-8")))
    for kid, key in settings.url_signing_keys:
        problems.extend(_weak_secret("STREAMSRV_URL_SIGNING_KEYS", key, f"the secret of kid {kid!r}"))
    if settings.metrics_token is not None:
        problems.extend(_weak_secret("STREAMSRV_METRICS_TOKEN", settings.metrics_token.encode("utf-8")))
    if "*" in settings.cors_origins:
        problems.append("STREAMSRV_CORS_ORIGINS: '*' is refused in production; list the exact origins")
    if settings.media_dir is None and "STREAMSRV_MEDIA_DIR" not in refused:
        problems.append(
            "STREAMSRV_MEDIA_DIR: required in production (the generated demo library is for development)"
        )
    if settings.allow_anonymous:
        problems.append("STREAMSRV_ALLOW_ANONYMOUS: anonymous access is refused in production")
    verifiers = ("STREAMSRV_JWT_SECRET", "STREAMSRV_JWT_PUBLIC_KEY_FILE", "STREAMSRV_JWT_JWKS_URL")
    no_verifier = settings.jwt_secret is None and settings.jwt_public_key_file is None
    if no_verifier and settings.jwt_jwks_url is None and refused.isdisjoint(verifiers):
        problems.append(
            "STREAMSRV_JWT_SECRET: production needs a way to verify tokens: set STREAMSRV_JWT_SECRET, "
            "STREAMSRV_JWT_PUBLIC_KEY_FILE or STREAMSRV_JWT_JWKS_URL (none is set, so no token "
            "algorithm would be accepted)"
        )
    return problems


def _weak_secret(name: str, secret: bytes, what: str = "the secret") -> list[str]:
    """
    Why production refuses *secret*, if it does.

    :param name: The variable holding it.
    :param secret: Its bytes.
    :param what: How to call it in the problem.
    :return: At most one problem, never quoting the secret.
    """
    if secret in EXAMPLE_SECRET_BYTES:
        return [f"{name}: {what} is a documented example value; generate a new one"]
    if len(secret) < MIN_SECRET_BYTES:
        return [f"{name}: {what} is {len(secret)} bytes; production needs at least {MIN_SECRET_BYTES}"]
    return []


def _utf8(value: str | None) -> bytes | None:
    """
    *value*'s UTF-8 bytes, if set.
    """
    return None if value is None else value.encode("utf-8")


def config_warnings(settings: Settings) -> list[str]:
    """
    Valid but probably unintended configurations, for ``config check`` and start-up logs.

    :param settings: Validated settings.
    :return: Warnings, each starting with the variable it concerns; never a secret.
    """
    warnings: list[str] = []
    if settings.workers > 1 and settings.redis_url is None:
        warnings.append(
            "STREAMSRV_WORKERS > 1 without STREAMSRV_REDIS_URL: rate limits are per process "
            "(and so are WebSocket fan-out and the shared metadata cache)"
        )
    if settings.allow_anonymous:
        exposed = [e for e in settings.listen if is_loopback_endpoint(e) is False]
        if exposed:
            warnings.append(
                "STREAMSRV_ALLOW_ANONYMOUS: anonymous listeners are allowed and "
                f"{' '.join(exposed)} accepts connections from other hosts"
            )
    if not settings.is_production:
        examples = [
            name
            for name, secrets in (
                ("STREAMSRV_JWT_SECRET", [_utf8(settings.jwt_secret)]),
                ("STREAMSRV_URL_SIGNING_KEYS", [key for _, key in settings.url_signing_keys]),
                ("STREAMSRV_METRICS_TOKEN", [_utf8(settings.metrics_token)]),
            )
            if any(secret in EXAMPLE_SECRET_BYTES for secret in secrets)
        ]
        warnings.extend(
            f"{name}: uses a documented example value (production refuses it)" for name in examples
        )
    if settings.env != "development" and settings.metrics_token is None:
        warnings.append(
            "STREAMSRV_METRICS_TOKEN: not set, so /metrics is open to anyone who reaches a listener"
        )
    if settings.env != "development" and not settings.url_signing_keys:
        warnings.append("STREAMSRV_URL_SIGNING_KEYS: not set, so signed URLs are refused (JWT only)")
    return warnings

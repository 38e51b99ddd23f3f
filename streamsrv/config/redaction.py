# -*- test-case-name: tests.test_config -*-
"""Show the configuration without its secrets, for ``streamsrv config check``.

:func:`redacted` gives the effective configuration as JSON-friendly values,
every secret replaced with :data:`REDACTED`; :func:`redact_url` hides a URL's
password and secret query values (also used in problems about URLs).  This
module must never let a secret's value through, whatever the input.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from streamsrv.config.settings import Settings

__all__ = ["REDACTED", "redact_url", "redacted"]

#: The placeholder that stands for a secret in :func:`redacted` output.
REDACTED = "<redacted>"

#: Query parameters of a URL whose values are secrets.
_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "passwd", "pass", "secret", "token", "sslpassword", "access_token", "api_key"}
)


def redact_url(url: str) -> str:
    """
    *url* with the password of its user part and secret query values replaced.

    :param url: Any string; one that does not parse is fully redacted.
    :return: A display form that holds no secret.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else netloc
    query = "&".join(
        f"{name}={REDACTED}"
        if name.lower() in _SECRET_QUERY_PARAMETERS and equals
        else f"{name}{equals}{val}"
        for name, equals, val in (piece.partition("=") for piece in parts.query.split("&"))
    )
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if parts.query:
        shown += f"?{query}"
    if parts.fragment:
        shown += f"#{REDACTED}"
    return shown


def _redact_optional(value: str | None) -> str | None:
    """
    :data:`REDACTED` for a set secret, ``None`` for an unset one.
    """
    return None if value is None else REDACTED


def _path(value: Path | None) -> str | None:
    """
    A path as a JSON-friendly string.
    """
    return None if value is None else str(value)


def redacted(settings: Settings) -> dict[str, object]:
    """
    The effective configuration for display, with every secret replaced.

    :param settings: The settings to show.
    :return: ``{STREAMSRV_NAME: value}`` for every :data:`KNOWN_VARIABLES`
        name, JSON-serialisable (strings, numbers, booleans, ``None``, lists of
        strings).  The JWT secret, the metrics token and the signing keys'
        secrets (their kids are kept, as ``kid:<redacted>``) become
        :data:`REDACTED`, as do passwords and secret query parameters inside
        the Redis, analytics and JWKS URLs; the SMTP and SMS URLs and the VAPID
        private key are redacted whole (their user part is a credential).  The
        analytics DSN is the effective one.
    """
    return {
        "STREAMSRV_ENV": settings.env,
        "STREAMSRV_ENV_FILE": _path(settings.env_file),
        "STREAMSRV_MEDIA_DIR": _path(settings.media_dir),
        "STREAMSRV_LISTEN": list(settings.listen),
        "STREAMSRV_DATA_DIR": str(settings.data_dir),
        "STREAMSRV_JWT_SECRET": _redact_optional(settings.jwt_secret),
        "STREAMSRV_JWT_PUBLIC_KEY_FILE": _path(settings.jwt_public_key_file),
        "STREAMSRV_JWT_PRIVATE_KEY_FILE": _path(settings.jwt_private_key_file),
        "STREAMSRV_JWT_JWKS_URL": None
        if settings.jwt_jwks_url is None
        else redact_url(settings.jwt_jwks_url),
        "STREAMSRV_JWT_ISSUER": settings.jwt_issuer,
        "STREAMSRV_JWT_AUDIENCE": settings.jwt_audience,
        "STREAMSRV_JWT_LEEWAY_S": settings.jwt_leeway_s,
        "STREAMSRV_URL_SIGNING_KEYS": [f"{kid}:{REDACTED}" for kid, _ in settings.url_signing_keys],
        "STREAMSRV_URL_MAX_TTL_S": settings.url_max_ttl_s,
        "STREAMSRV_REDIS_URL": None if settings.redis_url is None else redact_url(settings.redis_url),
        "STREAMSRV_ANALYTICS_DSN": redact_url(settings.analytics_dsn_effective),
        "STREAMSRV_ANALYTICS_RETENTION_DAYS": settings.analytics_retention_days,
        "STREAMSRV_CORS_ORIGINS": list(settings.cors_origins),
        "STREAMSRV_TRUSTED_PROXIES": list(settings.trusted_proxies),
        "STREAMSRV_LOG_LEVEL": settings.log_level,
        "STREAMSRV_LOG_FORMAT": settings.log_format,
        "STREAMSRV_WORKERS": settings.workers,
        "STREAMSRV_ALLOW_ANONYMOUS": settings.allow_anonymous,
        "STREAMSRV_METRICS_TOKEN": _redact_optional(settings.metrics_token),
        "STREAMSRV_SHUTDOWN_GRACE_S": settings.shutdown_grace_s,
        "STREAMSRV_RATELIMIT_API_PER_IP": str(settings.ratelimit_api_per_ip),
        "STREAMSRV_RATELIMIT_API_PER_USER": str(settings.ratelimit_api_per_user),
        "STREAMSRV_RATELIMIT_STREAM_PER_IP": str(settings.ratelimit_stream_per_ip),
        "STREAMSRV_RATELIMIT_STREAM_PER_USER": str(settings.ratelimit_stream_per_user),
        "STREAMSRV_WS_AUTH_TIMEOUT_S": settings.ws_auth_timeout_s,
        "STREAMSRV_WS_MAX_FRAME": settings.ws_max_frame,
        "STREAMSRV_MAX_RANGES": settings.max_ranges,
        "STREAMSRV_SENDFILE": settings.sendfile,
        "STREAMSRV_ROLES_FILE": _path(settings.roles_file),
        "STREAMSRV_CACHE_MAX_BYTES": settings.cache_max_bytes,
        "STREAMSRV_MAX_BODY_BYTES": settings.max_body_bytes,
        "STREAMSRV_HLS_LADDER": ",".join(map(str, settings.hls_ladder)),
        "STREAMSRV_ALERT_RULES_FILE": _path(settings.alert_rules_file),
        "STREAMSRV_ALERT_INTERVAL_S": settings.alert_interval_s,
        "STREAMSRV_NOTIFY_TEMPLATES_DIR": _path(settings.notify_templates_dir),
        "STREAMSRV_NOTIFY_MAX_RECIPIENTS": settings.notify_max_recipients,
        "STREAMSRV_NOTIFY_MAX_ATTEMPTS": settings.notify_max_attempts,
        "STREAMSRV_NOTIFY_DEFAULT_CAPS": settings.notify_default_caps,
        "STREAMSRV_NOTIFY_RETENTION_DAYS": settings.notify_retention_days,
        "STREAMSRV_NOTIFY_BATCH": settings.notify_batch,
        "STREAMSRV_NOTIFY_LEASE_S": settings.notify_lease_s,
        "STREAMSRV_NOTIFY_RETRY_BASE_S": settings.notify_retry_base_s,
        "STREAMSRV_SMTP_POOL_SIZE": settings.smtp_pool_size,
        "STREAMSRV_SMTP_URL": _redact_optional(settings.smtp_url),
        "STREAMSRV_SMTP_FROM": settings.smtp_from,
        "STREAMSRV_SMS_URL": _redact_optional(settings.sms_url),
        "STREAMSRV_VAPID_PRIVATE_KEY": _redact_optional(settings.vapid_private_key),
        "STREAMSRV_VAPID_SUBJECT": settings.vapid_subject,
        "STREAMSRV_DEMO_UI": settings.demo_ui,
    }

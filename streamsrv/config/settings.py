# -*- test-case-name: tests.test_config -*-
"""The configuration's vocabulary: the known variables, their constants, and the :class:`Settings` value.

:class:`Settings` is the frozen result of :func:`streamsrv.config.load_settings`,
one field per ``STREAMSRV_*`` variable of :data:`KNOWN_VARIABLES`;
:class:`ConfigError` carries every problem found at once.  This module only
defines values: it must never read the environment, a file or the disk.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "DEVELOPMENT_CORS_ORIGINS",
    "ENDPOINT_TYPES",
    "EXAMPLE_SECRETS",
    "EXAMPLE_SECRET_BYTES",
    "HLS_LADDER_DEFAULT",
    "HLS_LADDER_KBPS",
    "HLS_LADDER_MAX_RUNGS",
    "KNOWN_VARIABLES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MIN_SECRET_BYTES",
    "PREFIX",
    "PROFILES",
    "ConfigError",
    "RateLimit",
    "Settings",
    "format_number",
]

#: Every variable name starts with this.
PREFIX = "STREAMSRV_"

#: The profiles, in order of strictness.
PROFILES: tuple[str, ...] = ("development", "staging", "production")

#: Every ``STREAMSRV_*`` variable the daemon understands.
KNOWN_VARIABLES: tuple[str, ...] = (
    "STREAMSRV_ENV",
    "STREAMSRV_ENV_FILE",
    "STREAMSRV_MEDIA_DIR",
    "STREAMSRV_LISTEN",
    "STREAMSRV_DATA_DIR",
    "STREAMSRV_JWT_SECRET",
    "STREAMSRV_JWT_PUBLIC_KEY_FILE",
    "STREAMSRV_JWT_PRIVATE_KEY_FILE",
    "STREAMSRV_JWT_JWKS_URL",
    "STREAMSRV_JWT_ISSUER",
    "STREAMSRV_JWT_AUDIENCE",
    "STREAMSRV_JWT_LEEWAY_S",
    "STREAMSRV_URL_SIGNING_KEYS",
    "STREAMSRV_URL_MAX_TTL_S",
    "STREAMSRV_REDIS_URL",
    "STREAMSRV_ANALYTICS_DSN",
    "STREAMSRV_ANALYTICS_RETENTION_DAYS",
    "STREAMSRV_CORS_ORIGINS",
    "STREAMSRV_TRUSTED_PROXIES",
    "STREAMSRV_LOG_LEVEL",
    "STREAMSRV_LOG_FORMAT",
    "STREAMSRV_WORKERS",
    "STREAMSRV_ALLOW_ANONYMOUS",
    "STREAMSRV_METRICS_TOKEN",
    "STREAMSRV_SHUTDOWN_GRACE_S",
    "STREAMSRV_RATELIMIT_API_PER_IP",
    "STREAMSRV_RATELIMIT_API_PER_USER",
    "STREAMSRV_RATELIMIT_STREAM_PER_IP",
    "STREAMSRV_RATELIMIT_STREAM_PER_USER",
    "STREAMSRV_WS_AUTH_TIMEOUT_S",
    "STREAMSRV_WS_MAX_FRAME",
    "STREAMSRV_MAX_RANGES",
    "STREAMSRV_SENDFILE",
    "STREAMSRV_ROLES_FILE",
    "STREAMSRV_CACHE_MAX_BYTES",
    "STREAMSRV_MAX_BODY_BYTES",
    "STREAMSRV_HLS_LADDER",
    "STREAMSRV_ALERT_RULES_FILE",
    "STREAMSRV_ALERT_INTERVAL_S",
    "STREAMSRV_NOTIFY_TEMPLATES_DIR",
    "STREAMSRV_NOTIFY_MAX_RECIPIENTS",
    "STREAMSRV_NOTIFY_MAX_ATTEMPTS",
    "STREAMSRV_NOTIFY_DEFAULT_CAPS",
    "STREAMSRV_NOTIFY_RETENTION_DAYS",
    "STREAMSRV_NOTIFY_BATCH",
    "STREAMSRV_NOTIFY_LEASE_S",
    "STREAMSRV_NOTIFY_RETRY_BASE_S",
    "STREAMSRV_SMTP_POOL_SIZE",
    "STREAMSRV_SMTP_URL",
    "STREAMSRV_SMTP_FROM",
    "STREAMSRV_SMS_URL",
    "STREAMSRV_VAPID_PRIVATE_KEY",
    "STREAMSRV_VAPID_SUBJECT",
    "STREAMSRV_DEMO_UI",
)

#: The shortest secret production accepts, in bytes.
MIN_SECRET_BYTES = 32

#: The secrets shown in ``etc/streamsrv.env.example`` and ``docs/modules/config.md``.
#: Anyone can read them, so production refuses each of them whatever its length.
EXAMPLE_SECRETS: frozenset[str] = frozenset(
    {
        "example-jwt-secret-change-me-0123456789abcdef",
        "example-url-signing-key-current-0123456789abcdef",
        "example-url-signing-key-previous-0123456789abcdef",
        "example-metrics-token-change-me-0123456789abcdef",
        # The binary key of the signed-URL test vectors (docs/api/authentication.md).
        "base64:4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=",
    }
)

#: :data:`EXAMPLE_SECRETS` as the bytes a key is compared in.
EXAMPLE_SECRET_BYTES = frozenset(secret.encode("utf-8") for secret in EXAMPLE_SECRETS) | frozenset(
    base64.b64decode(secret[len("base64:") :]) for secret in EXAMPLE_SECRETS if secret.startswith("base64:")
)

#: ``STREAMSRV_CORS_ORIGINS`` in development when unset: pages served from this
#: machine on any port (a Vite, webpack or ``python -m http.server`` dev server)
#: may read the audio.  Staging and production allow no origin by default.
DEVELOPMENT_CORS_ORIGINS: tuple[str, ...] = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")

#: Twisted endpoint types ``STREAMSRV_LISTEN`` may use.
ENDPOINT_TYPES: tuple[str, ...] = ("tcp", "tcp6", "ssl", "unix", "systemd")

#: ``STREAMSRV_LOG_LEVEL`` values (the keys of :data:`streamsrv.logs.LEVELS`).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")

#: ``STREAMSRV_LOG_FORMAT`` values.
LOG_FORMATS: tuple[str, ...] = ("json", "text")

#: The HLS AAC-LC ladder in kb/s when ``STREAMSRV_HLS_LADDER`` is unset, and its bounds.
HLS_LADDER_DEFAULT: Final = (64, 96, 128, 160)
HLS_LADDER_KBPS: Final = (32, 320)
HLS_LADDER_MAX_RUNGS: Final = 8


class ConfigError(Exception):
    """
    The configuration cannot be used.

    :ivar problems: Every problem found, each starting with the name of the
        variable it concerns.  ``str(error)`` is them joined by newlines.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RateLimit:
    """
    A token bucket: *count* tokens refilled evenly over *seconds*.

    :ivar count: The bucket's size, at least 1.
    :ivar seconds: How long an empty bucket takes to fill, above 0.
    """

    count: int
    seconds: float

    def __str__(self) -> str:
        """
        The ``COUNT/SECONDS`` form the variables use, e.g. ``300/60``.
        """
        return f"{self.count}/{format_number(self.seconds)}"


@dataclass(frozen=True)
class Settings:
    """
    The validated, effective configuration; see ``docs/modules/config.md``.

    Each field is named after its ``STREAMSRV_*`` variable.
    """

    env: str
    media_dir: Path | None
    listen: tuple[str, ...]
    data_dir: Path
    jwt_secret: str | None
    jwt_public_key_file: Path | None
    jwt_private_key_file: Path | None
    jwt_jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    jwt_leeway_s: float
    url_signing_keys: tuple[tuple[str, bytes], ...]
    url_max_ttl_s: int
    redis_url: str | None
    analytics_dsn: str | None
    analytics_retention_days: float
    cors_origins: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    log_level: str
    log_format: str
    workers: int
    allow_anonymous: bool
    metrics_token: str | None
    shutdown_grace_s: float
    ratelimit_api_per_ip: RateLimit
    ratelimit_api_per_user: RateLimit
    ratelimit_stream_per_ip: RateLimit
    ratelimit_stream_per_user: RateLimit
    ws_auth_timeout_s: float
    ws_max_frame: int
    max_ranges: int
    sendfile: bool
    roles_file: Path | None
    cache_max_bytes: int
    max_body_bytes: int
    hls_ladder: tuple[int, ...]
    alert_rules_file: Path | None
    alert_interval_s: float
    notify_templates_dir: Path | None
    notify_max_recipients: int
    notify_max_attempts: int
    notify_default_caps: str
    notify_retention_days: float
    notify_batch: int
    notify_lease_s: float
    notify_retry_base_s: float
    smtp_pool_size: int
    smtp_url: str | None
    smtp_from: str | None
    sms_url: str | None
    vapid_private_key: str | None
    vapid_subject: str | None
    demo_ui: bool
    env_file: Path | None

    @property
    def is_production(self) -> bool:
        """
        Whether the production profile (and its refusals) applies.
        """
        return self.env == "production"

    @property
    def demo_library(self) -> bool:
        """
        Whether no media directory is configured, so a demo library is generated.
        """
        return self.media_dir is None

    @property
    def analytics_dsn_effective(self) -> str:
        """
        The analytics DSN: the configured one, or a SQLite file in the data dir.
        """
        if self.analytics_dsn is not None:
            return self.analytics_dsn
        return f"sqlite:///{self.data_dir.as_posix()}/analytics.sqlite3"


def format_number(value: float) -> str:
    """
    A number without a needless ``.0``.

    :param value: The number.
    :return: ``"60"`` for 60.0, ``"0.5"`` for 0.5.
    """
    return str(int(value)) if value.is_integer() else repr(value)

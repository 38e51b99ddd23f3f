# -*- test-case-name: tests.test_config -*-
"""Merge the configuration's layers and read every variable into one :class:`Settings`.

:func:`load_settings` merges four layers — the command line, the process
environment, an env file and the profile's defaults, in that order of
precedence — validates every value, and returns one frozen
:class:`~streamsrv.config.settings.Settings` or raises
:class:`~streamsrv.config.settings.ConfigError` naming *every* problem at
once, each prefixed with its variable's name.  It must never bind a port,
start a reactor, open a connection or write a file: it only reads the env
file and stats paths.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from streamsrv.config.envfile import read_env_file
from streamsrv.config.rules import production_problems, workers_problems
from streamsrv.config.settings import (
    DEVELOPMENT_CORS_ORIGINS,
    HLS_LADDER_DEFAULT,
    KNOWN_VARIABLES,
    LOG_FORMATS,
    LOG_LEVELS,
    PREFIX,
    PROFILES,
    ConfigError,
    RateLimit,
    Settings,
)
from streamsrv.config.values import (
    RefusedError,
    echo,
    parse_analytics_dsn,
    parse_boolean,
    parse_cors_origins,
    parse_data_dir,
    parse_jwks_url,
    parse_key_file,
    parse_ladder,
    parse_listen,
    parse_media_dir,
    parse_number,
    parse_rate,
    parse_redis_url,
    parse_signing_keys,
    parse_trusted_proxies,
    parse_whole,
)

__all__ = ["load_settings"]

_T = TypeVar("_T")

#: Names under this prefix belong to the test suite and CI
#: (``STREAMSRV_TEST_REQUIRE_SERVICES``), not to the daemon: never reported as unknown.
_RESERVED_PREFIX = "STREAMSRV_TEST_"

#: Profile defaults that depend on nothing else.
_DEFAULT_LISTEN: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)
_DEVELOPMENT_DATA_DIR = Path("streamsrv-data")
_SERVER_DATA_DIR = Path("/var/lib/streamsrv")

#: Rate limits (API per IP, API per user, stream starts per IP, per user): the
#: contract's defaults, and the development profile's, ten times larger so that
#: a person trying the server (ffmpeg probing a dozen files with range requests,
#: a player page reloaded) never meets them.
_RATE_DEFAULTS = (RateLimit(300, 60.0), RateLimit(600, 60.0), RateLimit(60, 60.0), RateLimit(120, 60.0))
_DEVELOPMENT_RATE_DEFAULTS = tuple(RateLimit(rate.count * 10, rate.seconds) for rate in _RATE_DEFAULTS)


def load_settings(
    cli: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
    checks: Iterable[Callable[[Settings], list[str]]] = (),
) -> Settings:
    """
    Build the settings from the command line, the environment and an env file.

    A value given in an earlier layer wins: *cli*, then *environ*, then the env
    file, then the profile's default.  An empty value (after stripping
    surrounding whitespace) stands for the default and still hides the layers
    below it.

    :param cli: Values from the command line, keyed by variable name without
        the ``STREAMSRV_`` prefix (``"MEDIA_DIR"``, ``"LISTEN"``), each a string
        exactly as the variable would hold it.
    :param environ: The process environment; :data:`os.environ` if ``None``.
        Only ``STREAMSRV_*`` names are looked at.
    :param env_file: The env file to read; if ``None``, ``ENV_FILE`` from
        *cli* or ``STREAMSRV_ENV_FILE`` from *environ*, if either is set.
    :param checks: More validation of the built settings by the parts that
        own a value's format (the notification channels' parsers, given by
        the composition root, since this floor imports no part): each returns
        its problems, every one starting with the variable's name.
    :return: The validated settings.
    :raise ConfigError: Listing every problem found, not just the first.
    """
    problems: list[str] = []
    cli_layer = {key if key.startswith(PREFIX) else PREFIX + key: value for key, value in (cli or {}).items()}
    source = os.environ if environ is None else environ
    env_layer = {key: value for key, value in source.items() if key.upper().startswith(PREFIX)}

    env_file_path: Path | None = None
    if env_file is not None:
        env_file_path = Path(env_file)
    else:
        named = _Layers([cli_layer, env_layer]).raw("STREAMSRV_ENV_FILE")
        if named is not None:
            env_file_path = Path(named)
    file_layer: dict[str, str] = {}
    if env_file_path is not None:
        file_layer = read_env_file(env_file_path, problems)
        env_file_path = env_file_path.expanduser()

    for name in _unknown_names([cli_layer, env_layer, file_layer]):
        problems.append(f"{name}: unknown variable{_suggestion(name)}")

    reader = _Reader(_Layers([cli_layer, env_layer, file_layer]), problems)
    settings = _build(reader, env_file_path)
    if settings.is_production:
        problems.extend(production_problems(settings, reader.refused))
    problems.extend(workers_problems(settings))
    for check in checks:
        problems.extend(check(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def _build(read: _Reader, env_file: Path | None) -> Settings:
    """
    Read and validate every variable, collecting problems in *read*.

    :param read: The layered values and the problem list.
    :param env_file: The env file read, if any.
    :return: Settings built from what could be parsed (defaults elsewhere);
        only meaningful when no problem was recorded.
    """
    env = read.choice("STREAMSRV_ENV", PROFILES, "development")
    development = env == "development"
    production = env == "production"

    jwt_secret = read.text("STREAMSRV_JWT_SECRET")
    jwt_jwks_url = read.parse("STREAMSRV_JWT_JWKS_URL", None, lambda v: parse_jwks_url(v, production))
    api_ip, api_user, stream_ip, stream_user = _DEVELOPMENT_RATE_DEFAULTS if development else _RATE_DEFAULTS
    return Settings(
        env=env,
        media_dir=read.parse("STREAMSRV_MEDIA_DIR", None, parse_media_dir),
        listen=read.parse("STREAMSRV_LISTEN", _DEFAULT_LISTEN, parse_listen),
        data_dir=read.parse(
            "STREAMSRV_DATA_DIR",
            _DEVELOPMENT_DATA_DIR if development else _SERVER_DATA_DIR,
            parse_data_dir,
        ),
        jwt_secret=jwt_secret,
        jwt_public_key_file=read.parse("STREAMSRV_JWT_PUBLIC_KEY_FILE", None, parse_key_file),
        jwt_private_key_file=read.parse("STREAMSRV_JWT_PRIVATE_KEY_FILE", None, parse_key_file),
        jwt_jwks_url=jwt_jwks_url,
        jwt_issuer=read.text("STREAMSRV_JWT_ISSUER"),
        jwt_audience=read.text("STREAMSRV_JWT_AUDIENCE"),
        jwt_leeway_s=read.number("STREAMSRV_JWT_LEEWAY_S", 30.0, minimum=0.0),
        url_signing_keys=read.parse("STREAMSRV_URL_SIGNING_KEYS", (), parse_signing_keys),
        url_max_ttl_s=read.whole("STREAMSRV_URL_MAX_TTL_S", 7 * 24 * 3600, minimum=1),
        redis_url=read.parse("STREAMSRV_REDIS_URL", None, parse_redis_url),
        analytics_dsn=read.parse("STREAMSRV_ANALYTICS_DSN", None, parse_analytics_dsn),
        analytics_retention_days=read.number(
            "STREAMSRV_ANALYTICS_RETENTION_DAYS", 365.0, minimum=0.0, inclusive=False
        ),
        cors_origins=read.parse(
            "STREAMSRV_CORS_ORIGINS", DEVELOPMENT_CORS_ORIGINS if development else (), parse_cors_origins
        ),
        trusted_proxies=read.parse("STREAMSRV_TRUSTED_PROXIES", (), parse_trusted_proxies),
        log_level=read.choice("STREAMSRV_LOG_LEVEL", LOG_LEVELS, "info", aliases={"warning": "warn"}),
        log_format=read.choice("STREAMSRV_LOG_FORMAT", LOG_FORMATS, "text" if development else "json"),
        workers=read.whole("STREAMSRV_WORKERS", 1, minimum=1),
        allow_anonymous=read.boolean("STREAMSRV_ALLOW_ANONYMOUS", development),
        metrics_token=read.text("STREAMSRV_METRICS_TOKEN"),
        shutdown_grace_s=read.number("STREAMSRV_SHUTDOWN_GRACE_S", 10.0, minimum=0.0),
        ratelimit_api_per_ip=read.parse("STREAMSRV_RATELIMIT_API_PER_IP", api_ip, parse_rate),
        ratelimit_api_per_user=read.parse("STREAMSRV_RATELIMIT_API_PER_USER", api_user, parse_rate),
        ratelimit_stream_per_ip=read.parse("STREAMSRV_RATELIMIT_STREAM_PER_IP", stream_ip, parse_rate),
        ratelimit_stream_per_user=read.parse("STREAMSRV_RATELIMIT_STREAM_PER_USER", stream_user, parse_rate),
        ws_auth_timeout_s=read.number("STREAMSRV_WS_AUTH_TIMEOUT_S", 10.0, minimum=0.0, inclusive=False),
        ws_max_frame=read.whole("STREAMSRV_WS_MAX_FRAME", 65536, minimum=1),
        max_ranges=read.whole("STREAMSRV_MAX_RANGES", 16, minimum=1),
        sendfile=read.boolean("STREAMSRV_SENDFILE", True),
        roles_file=read.parse("STREAMSRV_ROLES_FILE", None, parse_key_file),
        cache_max_bytes=read.whole("STREAMSRV_CACHE_MAX_BYTES", 2 * 1024**3, minimum=0),
        max_body_bytes=read.whole("STREAMSRV_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        hls_ladder=read.parse("STREAMSRV_HLS_LADDER", HLS_LADDER_DEFAULT, parse_ladder),
        alert_rules_file=read.parse("STREAMSRV_ALERT_RULES_FILE", None, parse_key_file),
        alert_interval_s=read.number("STREAMSRV_ALERT_INTERVAL_S", 15.0, minimum=0.0, inclusive=False),
        notify_templates_dir=read.parse("STREAMSRV_NOTIFY_TEMPLATES_DIR", None, parse_media_dir),
        notify_max_recipients=read.whole("STREAMSRV_NOTIFY_MAX_RECIPIENTS", 10000, minimum=1),
        notify_max_attempts=read.whole("STREAMSRV_NOTIFY_MAX_ATTEMPTS", 6, minimum=1),
        notify_default_caps=read.text("STREAMSRV_NOTIFY_DEFAULT_CAPS") or "4/12",
        notify_retention_days=read.number("STREAMSRV_NOTIFY_RETENTION_DAYS", 30.0, minimum=1.0),
        notify_batch=read.whole("STREAMSRV_NOTIFY_BATCH", 200, minimum=1),
        notify_lease_s=read.number("STREAMSRV_NOTIFY_LEASE_S", 180.0, minimum=0.0, inclusive=False),
        notify_retry_base_s=read.number("STREAMSRV_NOTIFY_RETRY_BASE_S", 30.0, minimum=0.0, inclusive=False),
        smtp_pool_size=read.whole("STREAMSRV_SMTP_POOL_SIZE", 4, minimum=1),
        smtp_url=read.text("STREAMSRV_SMTP_URL"),
        smtp_from=read.text("STREAMSRV_SMTP_FROM"),
        sms_url=read.text("STREAMSRV_SMS_URL"),
        vapid_private_key=read.text("STREAMSRV_VAPID_PRIVATE_KEY"),
        vapid_subject=read.text("STREAMSRV_VAPID_SUBJECT"),
        demo_ui=read.boolean("STREAMSRV_DEMO_UI", development),
        env_file=env_file,
    )


class _Layers:
    """
    Value lookup through layers of ``{STREAMSRV_NAME: value}``, first wins.
    """

    def __init__(self, layers: list[dict[str, str]]) -> None:
        self._layers = layers

    def raw(self, name: str) -> str | None:
        """
        The stripped value of *name* from the first layer holding it.

        :param name: The full variable name.
        :return: The value, or ``None`` when unset or empty (the default applies).
        """
        for layer in self._layers:
            if name in layer:
                return layer[name].strip() or None
        return None


class _Reader:
    """
    Typed access to the layered values; every failure becomes a problem.

    Each method returns the default after recording a problem, so that
    validation carries on and reports everything at once.
    """

    def __init__(self, layers: _Layers, problems: list[str]) -> None:
        self._layers = layers
        self.problems = problems
        #: The variables whose value was refused (their default stands in).
        self.refused: set[str] = set()

    def text(self, name: str) -> str | None:
        """
        A free-form string.

        :param name: The variable.
        :return: Its value, or ``None``.
        """
        return self._layers.raw(name)

    def parse(self, name: str, default: _T, parser: Callable[[str], _T]) -> _T:
        """
        A value converted by *parser*, which raises :class:`RefusedError` to refuse it.

        :param name: The variable.
        :param default: The value when unset (or refused).
        :param parser: Converts the raw string.
        :return: The converted value, or *default*.
        """
        value = self._layers.raw(name)
        if value is None:
            return default
        try:
            return parser(value)
        except RefusedError as e:
            self.problems.extend(f"{name}: {reason}" for reason in e.reasons)
            self.refused.add(name)
            return default

    def whole(self, name: str, default: int, minimum: int) -> int:
        """
        A whole number of at least *minimum*.

        :param name: The variable.
        :param default: The value when unset.
        :param minimum: The smallest value accepted.
        :return: The number, or *default*.
        """
        return self.parse(name, default, lambda v: parse_whole(v, minimum))

    def number(self, name: str, default: float, minimum: float, inclusive: bool = True) -> float:
        """
        A finite decimal number above (or at, if *inclusive*) *minimum*.

        :param name: The variable.
        :param default: The value when unset.
        :param minimum: The bound.
        :param inclusive: Whether *minimum* itself is accepted.
        :return: The number, or *default*.
        """
        return self.parse(name, default, lambda v: parse_number(v, minimum, inclusive))

    def boolean(self, name: str, default: bool) -> bool:
        """
        A boolean: 1/0, true/false, yes/no, on/off, in any case.

        :param name: The variable.
        :param default: The value when unset.
        :return: The boolean, or *default*.
        """
        return self.parse(name, default, parse_boolean)

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, aliases: Mapping[str, str] | None = None
    ) -> str:
        """
        One of *choices*, matched case-insensitively.

        :param name: The variable.
        :param choices: The values accepted.
        :param default: The value when unset.
        :param aliases: Other spellings accepted, and the choice each stands for.
        :return: The choice, or *default*.
        """

        def convert(value: str) -> str:
            lowered = value.lower()
            lowered = (aliases or {}).get(lowered, lowered)
            if lowered not in choices:
                raise RefusedError(f"must be one of {', '.join(choices)}, got {echo(value)}")
            return lowered

        return self.parse(name, default, convert)


def _unknown_names(layers: Iterable[Mapping[str, str]]) -> list[str]:
    """
    The ``STREAMSRV_*`` names that are not :data:`KNOWN_VARIABLES`, each once.

    :param layers: The layers to look through.
    :return: The unknown names, in order of appearance.
    """
    known = set(KNOWN_VARIABLES)
    seen: dict[str, None] = {}
    for layer in layers:
        for name in layer:
            if name not in known and not name.startswith(_RESERVED_PREFIX):
                seen.setdefault(name, None)
    return list(seen)


def _suggestion(name: str) -> str:
    """
    A " (did you mean STREAMSRV_X?)" hint for an unknown name, or nothing.

    :param name: The unknown name.
    :return: The hint, with its leading space, or ``""``.
    """
    suffixes = [known[len(PREFIX) :] for known in KNOWN_VARIABLES]
    close = difflib.get_close_matches(name.upper()[len(PREFIX) :], suffixes, n=1, cutoff=0.6)
    return f" (did you mean {PREFIX}{close[0]}?)" if close else ""

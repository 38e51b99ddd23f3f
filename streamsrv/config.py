# -*- test-case-name: tests.test_config -*-
"""Settings for the daemon, from ``STREAMSRV_*`` variables and an optional env file.

:func:`load_settings` merges four layers — the command line, the process
environment, an env file and the profile's defaults, in that order of
precedence — validates every value, and returns one frozen :class:`Settings`
or raises :class:`ConfigError` naming *every* problem at once, each prefixed
with its variable's name.  :func:`redacted` gives the effective configuration
for display with every secret replaced.  This module must never bind a port,
start a reactor, open a connection or write a file: it only reads the env file
and stats paths.  It must never put a secret's value into an error message, a
warning or :func:`redacted`'s output.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import SplitResult, urlsplit

__all__ = [
    "ENDPOINT_TYPES",
    "EXAMPLE_SECRETS",
    "KNOWN_VARIABLES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MIN_SECRET_BYTES",
    "PREFIX",
    "PROFILES",
    "REDACTED",
    "ConfigError",
    "RateLimit",
    "Settings",
    "config_warnings",
    "load_settings",
    "redacted",
]

_T = TypeVar("_T")

#: Every variable name starts with this.
PREFIX = "STREAMSRV_"

#: Names under this prefix belong to the test suite and CI
#: (``STREAMSRV_TEST_REQUIRE_SERVICES``), not to the daemon: never reported as unknown.
_RESERVED_PREFIX = "STREAMSRV_TEST_"

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
)

#: The placeholder that stands for a secret in :func:`redacted` output.
REDACTED = "<redacted>"

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

_EXAMPLE_SECRET_BYTES = frozenset(secret.encode("utf-8") for secret in EXAMPLE_SECRETS) | frozenset(
    base64.b64decode(secret[len("base64:") :]) for secret in EXAMPLE_SECRETS if secret.startswith("base64:")
)

#: Twisted endpoint types ``STREAMSRV_LISTEN`` may use.
ENDPOINT_TYPES: tuple[str, ...] = ("tcp", "tcp6", "ssl", "unix", "systemd")

#: ``STREAMSRV_LOG_LEVEL`` values (the keys of :data:`streamsrv.logs.LEVELS`).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")

#: ``STREAMSRV_LOG_FORMAT`` values.
LOG_FORMATS: tuple[str, ...] = ("json", "text")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

_DEFAULT_LISTEN: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)
_DEVELOPMENT_DATA_DIR = Path("streamsrv-data")
_SERVER_DATA_DIR = Path("/var/lib/streamsrv")

#: Query parameters of a URL whose values are secrets.
_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "passwd", "pass", "secret", "token", "sslpassword", "access_token", "api_key"}
)

_KID = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9.-]+", re.ASCII)

#: Longest value echoed back in a problem, in characters.
_ECHO_LIMIT = 60


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
        return f"{self.count}/{_format_number(self.seconds)}"


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


# --- loading ---------------------------------------------------------------


def load_settings(
    cli: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
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
        file_layer = _read_env_file(env_file_path, problems)
        env_file_path = env_file_path.expanduser()

    for name in _unknown_names([cli_layer, env_layer, file_layer]):
        problems.append(f"{name}: unknown variable{_suggestion(name)}")

    reader = _Reader(_Layers([cli_layer, env_layer, file_layer]), problems)
    settings = _build(reader, env_file_path)
    if settings.is_production:
        problems.extend(_production_problems(settings, reader.refused))
    problems.extend(_workers_problems(settings))
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
    jwt_jwks_url = read.parse("STREAMSRV_JWT_JWKS_URL", None, lambda v: _parse_jwks_url(v, production))
    return Settings(
        env=env,
        media_dir=read.parse("STREAMSRV_MEDIA_DIR", None, _parse_media_dir),
        listen=read.parse("STREAMSRV_LISTEN", _DEFAULT_LISTEN, _parse_listen),
        data_dir=read.parse(
            "STREAMSRV_DATA_DIR",
            _DEVELOPMENT_DATA_DIR if development else _SERVER_DATA_DIR,
            _parse_data_dir,
        ),
        jwt_secret=jwt_secret,
        jwt_public_key_file=read.parse("STREAMSRV_JWT_PUBLIC_KEY_FILE", None, _parse_key_file),
        jwt_private_key_file=read.parse("STREAMSRV_JWT_PRIVATE_KEY_FILE", None, _parse_key_file),
        jwt_jwks_url=jwt_jwks_url,
        jwt_issuer=read.text("STREAMSRV_JWT_ISSUER"),
        jwt_audience=read.text("STREAMSRV_JWT_AUDIENCE"),
        jwt_leeway_s=read.number("STREAMSRV_JWT_LEEWAY_S", 30.0, minimum=0.0),
        url_signing_keys=read.parse("STREAMSRV_URL_SIGNING_KEYS", (), _parse_signing_keys),
        url_max_ttl_s=read.whole("STREAMSRV_URL_MAX_TTL_S", 7 * 24 * 3600, minimum=1),
        redis_url=read.parse("STREAMSRV_REDIS_URL", None, _parse_redis_url),
        analytics_dsn=read.parse("STREAMSRV_ANALYTICS_DSN", None, _parse_analytics_dsn),
        analytics_retention_days=read.number(
            "STREAMSRV_ANALYTICS_RETENTION_DAYS", 365.0, minimum=0.0, inclusive=False
        ),
        cors_origins=read.parse("STREAMSRV_CORS_ORIGINS", (), _parse_cors_origins),
        trusted_proxies=read.parse("STREAMSRV_TRUSTED_PROXIES", (), _parse_trusted_proxies),
        log_level=read.choice("STREAMSRV_LOG_LEVEL", LOG_LEVELS, "info", aliases={"warning": "warn"}),
        log_format=read.choice("STREAMSRV_LOG_FORMAT", LOG_FORMATS, "text" if development else "json"),
        workers=read.whole("STREAMSRV_WORKERS", 1, minimum=1),
        allow_anonymous=read.boolean("STREAMSRV_ALLOW_ANONYMOUS", development),
        metrics_token=read.text("STREAMSRV_METRICS_TOKEN"),
        shutdown_grace_s=read.number("STREAMSRV_SHUTDOWN_GRACE_S", 10.0, minimum=0.0),
        ratelimit_api_per_ip=read.parse("STREAMSRV_RATELIMIT_API_PER_IP", RateLimit(300, 60.0), _parse_rate),
        ratelimit_api_per_user=read.parse(
            "STREAMSRV_RATELIMIT_API_PER_USER", RateLimit(600, 60.0), _parse_rate
        ),
        ratelimit_stream_per_ip=read.parse(
            "STREAMSRV_RATELIMIT_STREAM_PER_IP", RateLimit(60, 60.0), _parse_rate
        ),
        ratelimit_stream_per_user=read.parse(
            "STREAMSRV_RATELIMIT_STREAM_PER_USER", RateLimit(120, 60.0), _parse_rate
        ),
        ws_auth_timeout_s=read.number("STREAMSRV_WS_AUTH_TIMEOUT_S", 10.0, minimum=0.0, inclusive=False),
        ws_max_frame=read.whole("STREAMSRV_WS_MAX_FRAME", 65536, minimum=1),
        max_ranges=read.whole("STREAMSRV_MAX_RANGES", 16, minimum=1),
        sendfile=read.boolean("STREAMSRV_SENDFILE", True),
        roles_file=read.parse("STREAMSRV_ROLES_FILE", None, _parse_key_file),
        cache_max_bytes=read.whole("STREAMSRV_CACHE_MAX_BYTES", 2 * 1024**3, minimum=0),
        max_body_bytes=read.whole("STREAMSRV_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        hls_ladder=read.parse("STREAMSRV_HLS_LADDER", HLS_LADDER_DEFAULT, _parse_ladder),
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
        A value converted by *parser*, which raises :class:`_RefusedError` to refuse it.

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
        except _RefusedError as e:
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
        return self.parse(name, default, lambda v: _parse_whole(v, minimum))

    def number(self, name: str, default: float, minimum: float, inclusive: bool = True) -> float:
        """
        A finite decimal number above (or at, if *inclusive*) *minimum*.

        :param name: The variable.
        :param default: The value when unset.
        :param minimum: The bound.
        :param inclusive: Whether *minimum* itself is accepted.
        :return: The number, or *default*.
        """
        return self.parse(name, default, lambda v: _parse_number(v, minimum, inclusive))

    def boolean(self, name: str, default: bool) -> bool:
        """
        A boolean: 1/0, true/false, yes/no, on/off, in any case.

        :param name: The variable.
        :param default: The value when unset.
        :return: The boolean, or *default*.
        """
        return self.parse(name, default, _parse_boolean)

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
                raise _RefusedError(f"must be one of {', '.join(choices)}, got {_echo(value)}")
            return lowered

        return self.parse(name, default, convert)


class _RefusedError(Exception):
    """
    A value is refused; each reason is a problem without the variable's name.
    """

    def __init__(self, *reasons: str) -> None:
        super().__init__(*reasons)
        self.reasons = reasons


# --- the env file -----------------------------------------------------------


def _read_env_file(path: Path, problems: list[str]) -> dict[str, str]:
    """
    Read ``STREAMSRV_*`` assignments from an env file.

    :param path: The file.
    :param problems: Where to record an unreadable file or malformed lines.
    :return: ``{name: value}`` for every ``STREAMSRV_*`` name (other names
        are ignored); a later assignment wins over an earlier one.
    """
    try:
        text = path.expanduser().read_text(encoding="utf-8-sig")
    except OSError as e:
        problems.append(f"STREAMSRV_ENV_FILE: cannot read {str(path)!r}: {e.strerror or e}")
        return {}
    except UnicodeDecodeError:
        problems.append(f"STREAMSRV_ENV_FILE: {str(path)!r} is not UTF-8 text")
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = _parse_env_line(line)
        except _RefusedError as e:
            problems.extend(f"STREAMSRV_ENV_FILE: {str(path)!r} line {number}: {r}" for r in e.reasons)
            continue
        if parsed is None:
            continue
        key, value = parsed
        if key == "STREAMSRV_ENV_FILE":
            problems.append(
                f"STREAMSRV_ENV_FILE: cannot be set inside an env file ({str(path)!r} line {number})"
            )
        elif key.upper().startswith(PREFIX):
            values[key] = value
    return values


def _parse_env_line(line: str) -> tuple[str, str] | None:
    """
    Parse one env file line.

    Accepted: blank lines, ``# comments``, ``KEY=VALUE`` with an optional
    ``export`` prefix, the value optionally in single quotes (taken literally)
    or double quotes (where ``\\"`` and ``\\\\`` are escapes), and an unquoted
    value optionally followed by whitespace and a ``# comment``.  The line is
    never echoed in a reason: it may hold a secret.

    :param line: The line, without its newline.
    :return: ``(key, value)``, or ``None`` for a blank or comment line.
    :raise _RefusedError: If the line is malformed.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export") and stripped[6:7].isspace():
        stripped = stripped[6:].lstrip()
    key, equals, rest = stripped.partition("=")
    key = key.strip()
    if not equals:
        raise _RefusedError("expected KEY=VALUE")
    if not _ENV_KEY.fullmatch(key):
        raise _RefusedError("the name before '=' is not a valid variable name")
    rest = rest.lstrip()
    if rest[:1] in ("'", '"'):
        value, tail = _unquote(rest)
        tail = tail.strip()
        if tail and not tail.startswith("#"):
            raise _RefusedError("unexpected text after the closing quote")
        return key, value
    comment = re.search(r"\s#", rest)
    if comment is not None:
        rest = rest[: comment.start()]
    return key, rest.strip()


def _unquote(text: str) -> tuple[str, str]:
    """
    Split a quoted value from what follows its closing quote.

    :param text: Starts with ``'`` or ``"``.
    :return: ``(value, rest)``.
    :raise _RefusedError: If the quote is never closed.
    """
    quote = text[0]
    if quote == "'":
        end = text.find("'", 1)
        if end < 0:
            raise _RefusedError("unterminated single quote")
        return text[1:end], text[end + 1 :]
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] in ('"', "\\"):
            out.append(text[index + 1])
            index += 2
        elif char == '"':
            return "".join(out), text[index + 1 :]
        else:
            out.append(char)
            index += 1
    raise _RefusedError("unterminated double quote")


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


# --- value parsers ----------------------------------------------------------


def _echo(value: str) -> str:
    """
    A non-secret value quoted for a problem, shortened if long.

    :param value: What was given.
    :return: Its ``repr``, cut to :data:`_ECHO_LIMIT` characters.
    """
    if len(value) > _ECHO_LIMIT:
        value = value[:_ECHO_LIMIT] + "..."
    return repr(value)


def _format_number(value: float) -> str:
    """
    A number without a needless ``.0``.

    :param value: The number.
    :return: ``"60"`` for 60.0, ``"0.5"`` for 0.5.
    """
    return str(int(value)) if value.is_integer() else repr(value)


def _parse_whole(value: str, minimum: int) -> int:
    """
    A whole number of at least *minimum* (ASCII digits, optional sign).
    """
    if not _WHOLE.fullmatch(value) or int(value) < minimum:
        raise _RefusedError(f"must be a whole number >= {minimum}, got {_echo(value)}")
    return int(value)


def _parse_number(value: str, minimum: float, inclusive: bool) -> float:
    """
    A finite plain decimal at or above (or, if not *inclusive*, above) *minimum*.
    """
    bound = f"{'>=' if inclusive else '>'} {_format_number(minimum)}"
    if not _DECIMAL.fullmatch(value):
        raise _RefusedError(f"must be a number {bound}, got {_echo(value)}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (not inclusive and number == minimum):
        raise _RefusedError(f"must be a number {bound}, got {_echo(value)}")
    return number


def _parse_boolean(value: str) -> bool:
    """
    1/0, true/false, yes/no, on/off, in any case.
    """
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _RefusedError(f"must be a boolean (1/0, true/false, yes/no, on/off), got {_echo(value)}")


def _parse_rate(value: str) -> RateLimit:
    """
    ``COUNT/SECONDS`` with a whole COUNT > 0 and SECONDS > 0.
    """
    count, slash, seconds = value.partition("/")
    count, seconds = count.strip(), seconds.strip()
    ok = bool(slash) and bool(_WHOLE.fullmatch(count)) and bool(_DECIMAL.fullmatch(seconds))
    if ok and int(count) > 0 and math.isfinite(float(seconds)) and float(seconds) > 0:
        return RateLimit(int(count), float(seconds))
    raise _RefusedError(
        f"must be COUNT/SECONDS with a whole COUNT > 0 and SECONDS > 0 (e.g. 300/60), got {_echo(value)}"
    )


#: The HLS AAC-LC ladder in kb/s when ``STREAMSRV_HLS_LADDER`` is unset, and its bounds.
HLS_LADDER_DEFAULT: Final = (64, 96, 128, 160)
HLS_LADDER_KBPS: Final = (32, 320)
HLS_LADDER_MAX_RUNGS: Final = 8


def _parse_ladder(value: str) -> tuple[int, ...]:
    """
    Comma-separated kb/s of the HLS AAC rungs: 1 to 8 distinct whole numbers within 32..320, sorted here.
    """
    words = [word.strip() for word in value.split(",")]
    low, high = HLS_LADDER_KBPS
    if (
        all(_WHOLE.fullmatch(word) for word in words)
        and 1 <= len(words) <= HLS_LADDER_MAX_RUNGS
        and len(set(map(int, words))) == len(words)
        and all(low <= int(word) <= high for word in words)
    ):
        return tuple(sorted(int(word) for word in words))
    raise _RefusedError(
        f"must be 1 to {HLS_LADDER_MAX_RUNGS} distinct kb/s within {low}..{high}, comma-separated "
        f"(e.g. 64,96,128,160), got {_echo(value)}"
    )


def _parse_media_dir(value: str) -> Path:
    """
    An existing directory the process can list.
    """
    path = Path(value).expanduser()
    if not path.exists():
        raise _RefusedError(f"{value!r} does not exist")
    if not path.is_dir():
        raise _RefusedError(f"{value!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise _RefusedError(f"{value!r} is not readable")
    return path


def _parse_data_dir(value: str) -> Path:
    """
    A path that is a directory or does not exist yet (the daemon creates it).
    """
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise _RefusedError(f"{value!r} exists and is not a directory")
    return path


def _parse_key_file(value: str) -> Path:
    """
    An existing regular file the process can read.
    """
    path = Path(value).expanduser()
    if not path.exists():
        raise _RefusedError(f"{value!r} does not exist")
    if not path.is_file():
        raise _RefusedError(f"{value!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise _RefusedError(f"{value!r} is not readable")
    return path


def _split_list(value: str) -> list[str]:
    """
    The non-empty, stripped items of a comma-separated list.
    """
    return [item.strip() for item in value.split(",") if item.strip()]


def _parse_listen(value: str) -> tuple[str, ...]:
    """
    Space-separated endpoint strings, each checked by :func:`_endpoint_problems`.
    """
    endpoints = tuple(value.split())
    reasons = [reason for endpoint in endpoints for reason in _endpoint_problems(endpoint)]
    if reasons:
        raise _RefusedError(*reasons)
    return endpoints


def _split_endpoint(description: str) -> list[str]:
    """
    Split an endpoint string on the colons not escaped with a backslash.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _endpoint_arguments(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    An endpoint string as ``(type, positional arguments, keyword arguments)``.
    """
    kind, *rest = _split_endpoint(description)
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for part in rest:
        name, equals, argument = part.partition("=")
        if equals:
            keywords[name] = argument
        else:
            positional.append(part)
    return kind, positional, keywords


def _endpoint_problems(description: str) -> list[str]:
    """
    What is wrong with one endpoint string, without binding anything.

    :param description: e.g. ``tcp:8080:interface=127.0.0.1``.
    :return: Reasons, empty if it looks usable.
    """
    kind, positional, keywords = _endpoint_arguments(description)
    shown = _echo(description)
    if kind not in ENDPOINT_TYPES:
        return [f"{shown}: endpoint type must be one of {', '.join(ENDPOINT_TYPES)}, got {kind!r}"]
    if kind in ("tcp", "tcp6", "ssl"):
        port = keywords.get("port", positional[0] if positional else None)
        if port is None or port == "":
            return [f"{shown}: no port"]
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            return [f"{shown}: port must be a number from 0 to 65535, got {_echo(port)}"]
        if kind == "ssl" and not (keywords.get("privateKey") or keywords.get("certKey")):
            return [f"{shown}: ssl needs privateKey= (and certKey= unless the key file holds both)"]
    elif kind == "unix":
        if not (keywords.get("address") or (positional and positional[0])):
            return [f"{shown}: no socket path"]
    elif kind == "systemd":
        index = keywords.get("index")
        if keywords.get("domain") not in ("INET", "INET6", "UNIX"):
            return [f"{shown}: systemd needs domain=INET, INET6 or UNIX"]
        if index is None or not index.isdigit():
            return [f"{shown}: systemd needs index=N (a whole number)"]
    return []


def _is_loopback_endpoint(description: str) -> bool | None:
    """
    Whether an endpoint only accepts connections from this host.

    :param description: An endpoint string that passed validation.
    :return: ``True``/``False``, or ``None`` when it cannot be told (systemd).
    """
    kind, _positional, keywords = _endpoint_arguments(description)
    if kind == "unix":
        return True
    if kind == "systemd":
        return None
    interface = keywords.get("interface", "")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def _split_url(value: str, what: str) -> SplitResult:
    """
    :func:`urlsplit` that refuses what it cannot parse, port included.

    :param value: The URL.
    :param what: How to call it in a reason.
    :raise _RefusedError: If the URL or its port is malformed.
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _RefusedError(f"not a valid {what}")
    return parts


def _parse_jwks_url(value: str, production: bool) -> str:
    """
    An https URL with a host (http too outside *production*).
    """
    parts = _split_url(value, "URL")
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed or not parts.hostname:
        need = "an https:// URL (production refuses http)" if production else "an https:// or http:// URL"
        raise _RefusedError(f"must be {need}, got {_echo(_redact_url(value))}")
    return value


def _parse_redis_url(value: str) -> str:
    """
    A ``redis://``/``rediss://`` URL with a host and numeric database, or ``unix://`` with a path.
    """
    parts = _split_url(value, "Redis URL")
    shown = _echo(_redact_url(value))
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise _RefusedError(f"needs a host, as in redis://host:6379/0, got {shown}")
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise _RefusedError(f"the database after the host must be a number, got {shown}")
    elif parts.scheme == "unix":
        if not parts.path:
            raise _RefusedError(f"needs a socket path, as in unix:///run/redis/redis.sock, got {shown}")
    else:
        raise _RefusedError(f"must start with redis://, rediss:// or unix://, got {shown}")
    return value


def _parse_analytics_dsn(value: str) -> str:
    """
    ``sqlite:///`` followed by a path, or a ``postgresql://`` (``postgres://``) URL.
    """
    if value.startswith("sqlite:"):
        if not value.startswith("sqlite:///") or not value[len("sqlite:///") :]:
            raise _RefusedError(
                "a SQLite DSN is sqlite:///relative/path or sqlite:////absolute/path, "
                f"got {_echo(_redact_url(value))}"
            )
        return value
    parts = _split_url(value, "DSN")
    if parts.scheme not in ("postgresql", "postgres"):
        raise _RefusedError(f"must start with sqlite:/// or postgresql://, got {_echo(_redact_url(value))}")
    return value


def _parse_cors_origins(value: str) -> tuple[str, ...]:
    """
    Comma-separated origins, normalised by :func:`_parse_origin`, without duplicates.
    """
    origins: list[str] = []
    reasons: list[str] = []
    for item in _split_list(value):
        try:
            origin = _parse_origin(item)
        except _RefusedError as e:
            reasons.extend(e.reasons)
            continue
        if origin not in origins:
            origins.append(origin)
    if reasons:
        raise _RefusedError(*reasons)
    return tuple(origins)


def _parse_origin(item: str) -> str:
    """
    Normalise one CORS origin: lower case, default port dropped.

    :param item: ``*`` or ``scheme://host[:port]``.
    :return: The origin as a browser sends it in ``Origin``.
    :raise _RefusedError: If it is not an exact origin.
    """
    if item == "*":
        return item
    shown = _echo(item)
    parts = _split_url(item, f"origin: {shown}")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _RefusedError(f"{shown} is not an origin (scheme://host[:port], http or https)")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or item.endswith(("?", "#")):
        raise _RefusedError(f"{shown}: an origin has no path, query or user (drop any trailing '/')")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    elif not _HOST.fullmatch(host):
        raise _RefusedError(
            f"{shown}: the host is not valid (wildcards other than a lone '*' are not supported)"
        )
    scheme = parts.scheme.lower()
    port = parts.port
    default_port = 443 if scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{scheme}://{host}{suffix}"


def _parse_trusted_proxies(value: str) -> tuple[str, ...]:
    """
    Comma-separated IPs or CIDR networks, normalised, without duplicates.
    """
    proxies: list[str] = []
    reasons: list[str] = []
    for item in _split_list(value):
        try:
            normalised = str(ipaddress.ip_address(item)) if "/" not in item else _parse_network(item)
        except ValueError:
            reasons.append(f"{_echo(item)} is not an IP address or CIDR network")
            continue
        except _RefusedError as e:
            reasons.extend(e.reasons)
            continue
        if normalised not in proxies:
            proxies.append(normalised)
    if reasons:
        raise _RefusedError(*reasons)
    return tuple(proxies)


def _parse_network(item: str) -> str:
    """
    Normalise a CIDR network, refusing one with host bits set.

    :raise ValueError: If it is no network at all.
    :raise _RefusedError: If host bits are set (the intent is unclear).
    """
    try:
        return str(ipaddress.ip_network(item, strict=True))
    except ValueError:
        loose = ipaddress.ip_network(item, strict=False)
        raise _RefusedError(f"{_echo(item)} has host bits set; did you mean {loose}?")


def _parse_signing_keys(value: str) -> tuple[tuple[str, bytes], ...]:
    """
    ``kid:secret`` pairs, comma-separated, in order; kids unique; never echoes a secret.
    """
    keys: list[tuple[str, bytes]] = []
    reasons: list[str] = []
    for position, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        kid, colon, secret = item.partition(":")
        if not colon:
            reasons.append(f"entry {position} has no ':' (expected kid:secret)")
            continue
        if not _KID.fullmatch(kid):
            reasons.append(f"entry {position}: the kid must be non-empty [A-Za-z0-9._-], got {_echo(kid)}")
            continue
        try:
            key = _decode_secret(secret)
        except _RefusedError as e:
            reasons.extend(f"kid {kid!r}: {r}" for r in e.reasons)
            continue
        if any(kid == seen for seen, _ in keys):
            reasons.append(f"kid {kid!r} appears more than once")
            continue
        keys.append((kid, key))
    if reasons:
        raise _RefusedError(*reasons)
    if not keys:
        raise _RefusedError("no kid:secret entry")
    return tuple(keys)


def _decode_secret(secret: str) -> bytes:
    """
    A signing secret's bytes: UTF-8, or ``base64:…`` (standard or URL-safe).

    :raise _RefusedError: If it is empty or bad base64 (without echoing it).
    """
    if secret.startswith("base64:"):
        encoded = secret[len("base64:") :].strip()
        encoded = encoded.replace("-", "+").replace("_", "/")
        encoded += "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _RefusedError("the secret after 'base64:' is not valid base64")
    else:
        key = secret.encode("utf-8")
    if not key:
        raise _RefusedError("the secret is empty")
    return key


# --- production -------------------------------------------------------------


def _workers_problems(settings: Settings) -> list[str]:
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
        kind, _positional, keywords = _endpoint_arguments(description)
        if kind == "unix" or (kind == "systemd" and keywords.get("domain") == "UNIX"):
            problems.append(
                f"STREAMSRV_WORKERS: {settings.workers} worker processes cannot share "
                f"{_echo(description)} (UNIX sockets need STREAMSRV_WORKERS=1; use a tcp: "
                "listener on loopback instead)"
            )
    return problems


def _production_problems(settings: Settings, refused: set[str]) -> list[str]:
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
    if secret in _EXAMPLE_SECRET_BYTES:
        return [f"{name}: {what} is a documented example value; generate a new one"]
    if len(secret) < MIN_SECRET_BYTES:
        return [f"{name}: {what} is {len(secret)} bytes; production needs at least {MIN_SECRET_BYTES}"]
    return []


# --- presentation -----------------------------------------------------------


def _redact_url(url: str) -> str:
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
        the Redis, analytics and JWKS URLs.  The analytics DSN is the effective one.
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
        else _redact_url(settings.jwt_jwks_url),
        "STREAMSRV_JWT_ISSUER": settings.jwt_issuer,
        "STREAMSRV_JWT_AUDIENCE": settings.jwt_audience,
        "STREAMSRV_JWT_LEEWAY_S": settings.jwt_leeway_s,
        "STREAMSRV_URL_SIGNING_KEYS": [f"{kid}:{REDACTED}" for kid, _ in settings.url_signing_keys],
        "STREAMSRV_URL_MAX_TTL_S": settings.url_max_ttl_s,
        "STREAMSRV_REDIS_URL": None if settings.redis_url is None else _redact_url(settings.redis_url),
        "STREAMSRV_ANALYTICS_DSN": _redact_url(settings.analytics_dsn_effective),
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
    }


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
        exposed = [e for e in settings.listen if _is_loopback_endpoint(e) is False]
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
            if any(secret in _EXAMPLE_SECRET_BYTES for secret in secrets)
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

# -*- test-case-name: tests.test_config -*-
"""Parse and check one variable's value: numbers, booleans, paths, endpoints, URLs, lists, keys.

Each ``parse_*`` function takes the stripped string and returns the typed
value, or raises :class:`RefusedError` with every reason it is refused
(without the variable's name, which the reader adds).  Pure functions: they
may stat a path, but must never open a connection, bind a port or write, and
never echo a secret in a reason (values are shown through :func:`echo`, URLs
through :func:`~streamsrv.config.redaction.redact_url`, secrets never).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from streamsrv.config.redaction import redact_url
from streamsrv.config.settings import (
    ENDPOINT_TYPES,
    HLS_LADDER_KBPS,
    HLS_LADDER_MAX_RUNGS,
    RateLimit,
    format_number,
)

__all__ = [
    "RefusedError",
    "echo",
    "endpoint_arguments",
    "is_loopback_endpoint",
    "parse_analytics_dsn",
    "parse_boolean",
    "parse_cors_origins",
    "parse_data_dir",
    "parse_jwks_url",
    "parse_key_file",
    "parse_ladder",
    "parse_listen",
    "parse_media_dir",
    "parse_number",
    "parse_rate",
    "parse_redis_url",
    "parse_signing_keys",
    "parse_trusted_proxies",
    "parse_whole",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

_KID = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9.-]+", re.ASCII)

#: Longest value echoed back in a problem, in characters.
_ECHO_LIMIT = 60


class RefusedError(Exception):
    """
    A value is refused; each reason is a problem without the variable's name.
    """

    def __init__(self, *reasons: str) -> None:
        super().__init__(*reasons)
        self.reasons = reasons


def echo(value: str) -> str:
    """
    A non-secret value quoted for a problem, shortened if long.

    :param value: What was given.
    :return: Its ``repr``, cut to :data:`_ECHO_LIMIT` characters.
    """
    if len(value) > _ECHO_LIMIT:
        value = value[:_ECHO_LIMIT] + "..."
    return repr(value)


def parse_whole(value: str, minimum: int) -> int:
    """
    A whole number of at least *minimum* (ASCII digits, optional sign).
    """
    if not _WHOLE.fullmatch(value) or int(value) < minimum:
        raise RefusedError(f"must be a whole number >= {minimum}, got {echo(value)}")
    return int(value)


def parse_number(value: str, minimum: float, inclusive: bool) -> float:
    """
    A finite plain decimal at or above (or, if not *inclusive*, above) *minimum*.
    """
    bound = f"{'>=' if inclusive else '>'} {format_number(minimum)}"
    if not _DECIMAL.fullmatch(value):
        raise RefusedError(f"must be a number {bound}, got {echo(value)}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (not inclusive and number == minimum):
        raise RefusedError(f"must be a number {bound}, got {echo(value)}")
    return number


def parse_boolean(value: str) -> bool:
    """
    1/0, true/false, yes/no, on/off, in any case.
    """
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise RefusedError(f"must be a boolean (1/0, true/false, yes/no, on/off), got {echo(value)}")


def parse_rate(value: str) -> RateLimit:
    """
    ``COUNT/SECONDS`` with a whole COUNT > 0 and SECONDS > 0.
    """
    count, slash, seconds = value.partition("/")
    count, seconds = count.strip(), seconds.strip()
    ok = bool(slash) and bool(_WHOLE.fullmatch(count)) and bool(_DECIMAL.fullmatch(seconds))
    if ok and int(count) > 0 and math.isfinite(float(seconds)) and float(seconds) > 0:
        return RateLimit(int(count), float(seconds))
    raise RefusedError(
        f"must be COUNT/SECONDS with a whole COUNT > 0 and SECONDS > 0 (e.g. 300/60), got {echo(value)}"
    )


def parse_ladder(value: str) -> tuple[int, ...]:
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
    raise RefusedError(
        f"must be 1 to {HLS_LADDER_MAX_RUNGS} distinct kb/s within {low}..{high}, comma-separated "
        f"(e.g. 64,96,128,160), got {echo(value)}"
    )


def parse_media_dir(value: str) -> Path:
    """
    An existing directory the process can list.
    """
    path = Path(value).expanduser()
    if not path.exists():
        raise RefusedError(f"{value!r} does not exist")
    if not path.is_dir():
        raise RefusedError(f"{value!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise RefusedError(f"{value!r} is not readable")
    return path


def parse_data_dir(value: str) -> Path:
    """
    A path that is a directory or does not exist yet (the daemon creates it).
    """
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise RefusedError(f"{value!r} exists and is not a directory")
    return path


def parse_key_file(value: str) -> Path:
    """
    An existing regular file the process can read.
    """
    path = Path(value).expanduser()
    if not path.exists():
        raise RefusedError(f"{value!r} does not exist")
    if not path.is_file():
        raise RefusedError(f"{value!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise RefusedError(f"{value!r} is not readable")
    return path


def _split_list(value: str) -> list[str]:
    """
    The non-empty, stripped items of a comma-separated list.
    """
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_listen(value: str) -> tuple[str, ...]:
    """
    Space-separated endpoint strings, each checked by :func:`_endpoint_problems`.
    """
    endpoints = tuple(value.split())
    reasons = [reason for endpoint in endpoints for reason in _endpoint_problems(endpoint)]
    if reasons:
        raise RefusedError(*reasons)
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


def endpoint_arguments(description: str) -> tuple[str, list[str], dict[str, str]]:
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
    kind, positional, keywords = endpoint_arguments(description)
    shown = echo(description)
    if kind not in ENDPOINT_TYPES:
        return [f"{shown}: endpoint type must be one of {', '.join(ENDPOINT_TYPES)}, got {kind!r}"]
    if kind in ("tcp", "tcp6", "ssl"):
        port = keywords.get("port", positional[0] if positional else None)
        if port is None or port == "":
            return [f"{shown}: no port"]
        if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            return [f"{shown}: port must be a number from 0 to 65535, got {echo(port)}"]
        if kind == "ssl" and not (keywords.get("privateKey") or keywords.get("certKey")):
            return [f"{shown}: ssl needs privateKey= (and certKey= unless the key file holds both)"]
    elif kind == "unix":
        if not (keywords.get("address") or (positional and positional[0])):
            return [f"{shown}: no socket path"]
    elif kind == "systemd":
        index = keywords.get("index")
        if keywords.get("domain") not in ("INET", "INET6", "UNIX"):
            return [f"{shown}: systemd needs domain=INET, INET6 or UNIX"]
        if index is None or not (index.isascii() and index.isdigit()):
            return [f"{shown}: systemd needs index=N (a whole number)"]
    return []


def is_loopback_endpoint(description: str) -> bool | None:
    """
    Whether an endpoint only accepts connections from this host.

    :param description: An endpoint string that passed validation.
    :return: ``True``/``False``, or ``None`` when it cannot be told (systemd).
    """
    kind, _positional, keywords = endpoint_arguments(description)
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
    :raise RefusedError: If the URL or its port is malformed.
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise RefusedError(f"not a valid {what}")
    return parts


def parse_jwks_url(value: str, production: bool) -> str:
    """
    An https URL with a host (http too outside *production*).
    """
    parts = _split_url(value, "URL")
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed or not parts.hostname:
        need = "an https:// URL (production refuses http)" if production else "an https:// or http:// URL"
        raise RefusedError(f"must be {need}, got {echo(redact_url(value))}")
    return value


def parse_redis_url(value: str) -> str:
    """
    A ``redis://``/``rediss://`` URL with a host and numeric database, or ``unix://`` with a path.
    """
    parts = _split_url(value, "Redis URL")
    shown = echo(redact_url(value))
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise RefusedError(f"needs a host, as in redis://host:6379/0, got {shown}")
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise RefusedError(f"the database after the host must be a number, got {shown}")
    elif parts.scheme == "unix":
        if not parts.path:
            raise RefusedError(f"needs a socket path, as in unix:///run/redis/redis.sock, got {shown}")
    else:
        raise RefusedError(f"must start with redis://, rediss:// or unix://, got {shown}")
    return value


def parse_analytics_dsn(value: str) -> str:
    """
    ``sqlite:///`` followed by a path, or a ``postgresql://`` (``postgres://``) URL.
    """
    if value.startswith("sqlite:"):
        if not value.startswith("sqlite:///") or not value[len("sqlite:///") :]:
            raise RefusedError(
                "a SQLite DSN is sqlite:///relative/path or sqlite:////absolute/path, "
                f"got {echo(redact_url(value))}"
            )
        return value
    parts = _split_url(value, "DSN")
    if parts.scheme not in ("postgresql", "postgres"):
        raise RefusedError(f"must start with sqlite:/// or postgresql://, got {echo(redact_url(value))}")
    return value


def parse_cors_origins(value: str) -> tuple[str, ...]:
    """
    Comma-separated origins, normalised by :func:`_parse_origin`, without duplicates.
    """
    return _unique_items(value, _parse_origin)


def _unique_items(value: str, normalise: Callable[[str], str]) -> tuple[str, ...]:
    """
    The items of a comma-separated list, each normalised, without duplicates, in order.

    :param value: The list.
    :param normalise: Normalises one item, or raises :class:`RefusedError`.
    :raise RefusedError: With the reasons of every item refused.
    """
    items: list[str] = []
    reasons: list[str] = []
    for item in _split_list(value):
        try:
            normalised = normalise(item)
        except RefusedError as e:
            reasons.extend(e.reasons)
            continue
        if normalised not in items:
            items.append(normalised)
    if reasons:
        raise RefusedError(*reasons)
    return tuple(items)


def _parse_origin(item: str) -> str:
    """
    Normalise one CORS origin: lower case, default port dropped.

    :param item: ``*``, ``scheme://host[:port]``, or ``scheme://host:*`` (that
        host on any port, as in the development default ``http://localhost:*``).
    :return: The origin as a browser sends it in ``Origin`` (or the any-port form).
    :raise RefusedError: If it is not an exact origin.
    """
    if item == "*":
        return item
    if item.endswith(":*"):
        if item[:-2] in ("", "*") or _split_url(item[:-2], f"origin: {echo(item)}").port is not None:
            raise RefusedError(f"{echo(item)}: give one host and a port or ':*' (any port), not both")
        return _parse_origin(item[:-2]) + ":*"
    shown = echo(item)
    parts = _split_url(item, f"origin: {shown}")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RefusedError(f"{shown} is not an origin (scheme://host[:port], http or https)")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or item.endswith(("?", "#")):
        raise RefusedError(f"{shown}: an origin has no path, query or user (drop any trailing '/')")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    elif not _HOST.fullmatch(host):
        raise RefusedError(
            f"{shown}: the host is not valid (wildcards other than a lone '*' are not supported)"
        )
    scheme = parts.scheme.lower()
    port = parts.port
    default_port = 443 if scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{scheme}://{host}{suffix}"


def parse_trusted_proxies(value: str) -> tuple[str, ...]:
    """
    Comma-separated IPs or CIDR networks, normalised, without duplicates.
    """
    return _unique_items(value, _parse_proxy)


def _parse_proxy(item: str) -> str:
    """
    Normalise one IP address or CIDR network.

    :raise RefusedError: If it is neither, or a network with host bits set.
    """
    try:
        return str(ipaddress.ip_address(item)) if "/" not in item else _parse_network(item)
    except ValueError:
        raise RefusedError(f"{echo(item)} is not an IP address or CIDR network") from None


def _parse_network(item: str) -> str:
    """
    Normalise a CIDR network, refusing one with host bits set.

    :raise ValueError: If it is no network at all.
    :raise RefusedError: If host bits are set (the intent is unclear).
    """
    try:
        return str(ipaddress.ip_network(item, strict=True))
    except ValueError:
        loose = ipaddress.ip_network(item, strict=False)
        raise RefusedError(f"{echo(item)} has host bits set; did you mean {loose}?")


def parse_signing_keys(value: str) -> tuple[tuple[str, bytes], ...]:
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
            reasons.append(f"entry {position}: the kid must be non-empty [A-Za-z0-9._-], got {echo(kid)}")
            continue
        try:
            key = _decode_secret(secret)
        except RefusedError as e:
            reasons.extend(f"kid {kid!r}: {r}" for r in e.reasons)
            continue
        if any(kid == seen for seen, _ in keys):
            reasons.append(f"kid {kid!r} appears more than once")
            continue
        keys.append((kid, key))
    if reasons:
        raise RefusedError(*reasons)
    if not keys:
        raise RefusedError("no kid:secret entry")
    return tuple(keys)


def _decode_secret(secret: str) -> bytes:
    """
    A signing secret's bytes: UTF-8, or ``base64:…`` (standard or URL-safe).

    :raise RefusedError: If it is empty or bad base64 (without echoing it).
    """
    if secret.startswith("base64:"):
        encoded = secret[len("base64:") :].strip()
        encoded = encoded.replace("-", "+").replace("_", "/")
        encoded += "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RefusedError("the secret after 'base64:' is not valid base64")
    else:
        key = secret.encode("utf-8")
    if not key:
        raise RefusedError("the secret is empty")
    return key

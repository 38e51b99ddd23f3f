# -*- test-case-name: tests.test_signing -*-
"""Signed URLs: HMAC-SHA256 over ``expires``, the decoded request path and every bound parameter.

A backend (or ``streamsrv sign-url``) gives a client a URL such as
``/stream/jazz/So%20What.mp3?format=mp3&expires=1767225600&kid=k1&sig=…``;
:func:`verify` decides whether a request carrying it is authorised, and the
caller answers 403 ``URL_EXPIRED`` or ``SIGNATURE_INVALID`` from the
:class:`SignedUrlError` it raises. The message is
``expires "\\n" path ("\\n" name "=" value)*``, parameters sorted by the UTF-8
bytes of their names (see ``docs/api/authentication.md`` for the test vectors).
Everything here is pure: no reactor, no request object, no clock of its own, no
logging — the caller logs :attr:`SignedUrlError.reason` as a security event.

This module must never log, return or put into an exception a secret (a
:class:`SigningKey` does not even show it in its ``repr``), must never compare
signatures with ``==`` (only :func:`hmac.compare_digest`), and must never tell
a client more than "expired" about a URL whose signature did not verify.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import quote, unquote_to_bytes, urlsplit

from streamsrv.cliargs import RaisingParser, UsageError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_EXPIRES_IN_S",
    "RESERVED_PARAMETERS",
    "SIGNATURE_INVALID",
    "SIGNED_PREFIXES",
    "URL_EXPIRED",
    "SignedUrlError",
    "SigningKey",
    "decode_signed_path",
    "max_age_for",
    "parse_query_pairs",
    "sign",
    "sign_cli",
    "sign_url",
    "signature_message",
    "signed_query",
    "signing_keys",
    "verify",
]

#: Error code of a genuine signed URL whose ``expires`` has passed.
URL_EXPIRED = "URL_EXPIRED"

#: Error code of every other refusal.
SIGNATURE_INVALID = "SIGNATURE_INVALID"

#: Query parameters that carry the signature itself; every other one is bound.
RESERVED_PARAMETERS: frozenset[str] = frozenset({"expires", "kid", "sig"})

#: Request-path prefixes under which signed URLs are accepted (DESIGN, "Permissions per route").
SIGNED_PREFIXES: tuple[str, ...] = (
    "/stream/",
    "/hls/",
    "/api/v1/artwork/",
    "/api/v1/waveform/",
    "/api/v1/spectrum/",
)

#: ``streamsrv sign-url --base-url`` default: the development listener.
DEFAULT_BASE_URL = "http://127.0.0.1:8080"

#: ``streamsrv sign-url --expires-in`` default, in seconds.
DEFAULT_EXPIRES_IN_S = 3600

#: The most digits ``expires`` may have: far beyond any sane date, far below ``int()``'s limit.
_MAX_EXPIRES_DIGITS = 15

#: ``expires`` in canonical form: decimal ASCII digits, no sign, no leading zero.
_EXPIRES = re.compile(r"0|[1-9][0-9]*", re.ASCII)

#: A key id, as ``STREAMSRV_URL_SIGNING_KEYS`` accepts it.
_KID = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)

#: A well-formed percent escape.
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")

#: A percent escape in text that is meant to be decoded already (``sign-url`` warns about it).
_LOOKS_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")

#: Client-facing messages: the same for every reason of a code, so a forger learns nothing.
_MESSAGES = {
    URL_EXPIRED: "This signed URL has expired.",
    SIGNATURE_INVALID: "The URL signature is not valid for this request.",
}


@dataclass(frozen=True)
class SigningKey:
    """
    One URL signing key of ``STREAMSRV_URL_SIGNING_KEYS``.

    :ivar kid: The key id sent as ``kid``: non-empty ``[A-Za-z0-9._-]``.
    :ivar secret: The HMAC key: a secret's UTF-8 bytes, or the decoded bytes of
        a ``kid:base64:…`` entry. Left out of ``repr`` so that it never reaches a log.
    """

    kid: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KID.fullmatch(self.kid):
            raise ValueError(f"a key id must be non-empty [A-Za-z0-9._-], got {self.kid!r}")
        if not isinstance(self.secret, bytes) or not self.secret:
            raise ValueError(f"the secret of kid {self.kid!r} must be non-empty bytes")


class SignedUrlError(Exception):
    """
    A signed URL that does not authorise the request: answer 403 with :attr:`code`.

    :ivar code: ``"URL_EXPIRED"`` (only for a genuine URL past its ``expires``) or
        ``"SIGNATURE_INVALID"`` (everything else).
    :ivar reason: A short fixed word for the security log (``"expired"``,
        ``"bad_signature"``, ``"unknown_kid"``, …); never a secret, a value or a path.
    :ivar message: A human message safe to send to the client: one per code,
        whatever the reason.
    """

    def __init__(self, code: str, reason: str) -> None:
        """
        :param code: :data:`URL_EXPIRED` or :data:`SIGNATURE_INVALID`.
        :param reason: The fixed reason word.
        """
        if code not in _MESSAGES:
            raise ValueError(f"unknown signed-URL error code {code!r}")
        self.code = code
        self.reason = reason
        self.message = _MESSAGES[code]
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"SignedUrlError(code={self.code!r}, reason={self.reason!r})"


def _invalid(reason: str) -> SignedUrlError:
    return SignedUrlError(SIGNATURE_INVALID, reason)


def signing_keys(pairs: Iterable[tuple[str, bytes]]) -> tuple[SigningKey, ...]:
    """
    Turn ``Settings.url_signing_keys`` (``(kid, secret)`` pairs, current first) into keys.

    :param pairs: The pairs, in configuration order.
    :return: The keys in the same order.
    """
    return tuple(SigningKey(kid, secret) for kid, secret in pairs)


# --- the message ------------------------------------------------------------


def _check_parts(path: str, bound: Mapping[str, str]) -> None:
    """
    Refuse inputs that would make two different requests share a message.

    With no line feed in the path, names or values and no ``=`` in a name, the
    message splits back into exactly one ``(expires, path, bound)``: a bound
    ``ip`` cannot be folded into another parameter's value or into the path.

    :raise ValueError: On a line feed, an ``=`` in a name, a reserved name or a
        lone surrogate (which has no UTF-8 form).
    """
    if "\n" in path:
        raise ValueError("a signed path cannot contain a line feed")
    for name, value in bound.items():
        if name in RESERVED_PARAMETERS:
            raise ValueError(f"{name!r} cannot be a bound parameter")
        if "=" in name or "\n" in name:
            raise ValueError(f"a bound parameter name cannot contain '=' or a line feed: {name!r}")
        if "\n" in value:
            raise ValueError(f"the value of bound parameter {name!r} cannot contain a line feed")


def _sorted_bound(bound: Mapping[str, str]) -> list[tuple[str, str]]:
    """Bound parameters sorted by name; code-point order is UTF-8 byte order."""
    return sorted(bound.items())


def signature_message(path: str, expires: int, bound: Mapping[str, str]) -> bytes:
    """
    The bytes that are signed.

    :param path: The decoded request path exactly as requested, e.g.
        ``"/stream/jazz/So What.mp3"`` (no normalisation).
    :param expires: Unix seconds.
    :param bound: Every parameter other than ``sig``, ``kid`` and ``expires``, decoded.
    :return: ``f"{expires}\\n{path}"`` followed by ``f"\\n{name}={value}"`` for each
        bound parameter sorted by name, encoded as UTF-8.
    :raise ValueError: If the parts are not representable (see :func:`_check_parts`)
        or ``expires`` is not a non-negative integer.
    """
    if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
        raise ValueError(f"expires must be a non-negative integer, got {expires!r}")
    _check_parts(path, bound)
    text = f"{expires}\n{path}" + "".join(f"\n{name}={value}" for name, value in _sorted_bound(bound))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a signed path or parameter cannot contain a lone surrogate") from None


def _mac(key: SigningKey, message: bytes) -> str:
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(path: str, expires: int, key: SigningKey, bound: Mapping[str, str] | None = None) -> str:
    """
    The ``sig`` of a request.

    :param path: The decoded request path, starting with ``/``.
    :param expires: Unix seconds.
    :param key: The key to sign with.
    :param bound: The parameters to bind, decoded.
    :return: base64url without padding (43 characters) of HMAC-SHA256(key, message).
    :raise ValueError: If ``path`` does not start with ``/`` or the parts cannot be signed.
    """
    if not path.startswith("/"):
        raise ValueError(f"a signed path starts with '/': {path!r}")
    return _mac(key, signature_message(path, expires, bound or {}))


def _encode(text: str, safe: str = "") -> str:
    """Percent-encode the UTF-8 of ``text``, leaving only RFC 3986 unreserved characters (and ``safe``)."""
    return quote(text, safe=safe, encoding="utf-8", errors="strict")


def signed_query(
    path: str,
    expires: int,
    key: SigningKey,
    bound: Mapping[str, str] | None = None,
    include_kid: bool = True,
) -> str:
    """
    The query string that makes a request to ``path`` signed.

    :param path: The decoded request path, starting with ``/``.
    :param expires: Unix seconds.
    :param key: The key to sign with.
    :param bound: The parameters to bind, decoded.
    :param include_kid: Whether to send ``kid``. Without it only the *current*
        (first) key verifies, so a URL stops working as soon as keys rotate.
    :return: The bound parameters sorted by name, then ``expires``, ``kid`` and
        ``sig``, each ``name=value`` percent-encoded (everything but
        ``A-Za-z0-9-._~``; a space is ``%20``), joined by ``&``, without ``?``.
    """
    bound = bound or {}
    signature = sign(path, expires, key, bound)
    pairs = [*_sorted_bound(bound), ("expires", str(expires))]
    if include_kid:
        pairs.append(("kid", key.kid))
    pairs.append(("sig", signature))
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in pairs)


def sign_url(
    base_url: str,
    path: str,
    *,
    keys: Sequence[SigningKey],
    expires: int,
    bound: Mapping[str, str] | None = None,
) -> str:
    """
    A complete signed URL, signed with the current key (``keys[0]``), ``kid`` included.

    :param base_url: Scheme and authority (and an optional path prefix), e.g.
        ``"https://media.example.com"``; a trailing ``/`` is dropped.
    :param path: The decoded request path, starting with ``/``.
    :param keys: The configured keys, current first.
    :param expires: Unix seconds.
    :param bound: The parameters to bind, decoded.
    :return: ``base_url + percent-encoded path + "?" + signed_query(...)``.
    :raise ValueError: If there is no key or the parts cannot be signed.
    """
    if not keys:
        raise ValueError("no URL signing key is configured")
    return _join_url(base_url, path, signed_query(path, expires, keys[0], bound))


def _join_url(base_url: str, path: str, query: str) -> str:
    """``base_url`` without a trailing ``/``, the percent-encoded path (``/`` kept), ``?`` and the query."""
    return f"{base_url.rstrip('/')}{_encode(path, safe='/')}?{query}"


# --- the request side -------------------------------------------------------


def _percent_decode(raw: bytes) -> str:
    """
    Decode ``%XX`` escapes once, then strict UTF-8.

    :raise SignedUrlError: ``SIGNATURE_INVALID``/``bad_encoding`` on a ``%`` not
        followed by two hex digits, or bytes that are not UTF-8.
    """
    if raw.count(b"%") != len(_ESCAPE.findall(raw)):
        raise _invalid("bad_encoding")
    try:
        return unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _invalid("bad_encoding") from None


def decode_signed_path(raw_path: bytes) -> str:
    """
    The request path as it goes into the message: decoded once, not normalised.

    Unlike :func:`streamsrv.media.paths.decode_request_path` this applies no
    Unicode normalisation (the message holds the path exactly as requested) and
    refuses a malformed escape. ``+`` stays a plus sign.

    :param raw_path: The path of the request target, without the query, e.g.
        ``b"/stream/jazz/So%20What.mp3"``.
    :return: ``"/stream/jazz/So What.mp3"``.
    :raise SignedUrlError: ``SIGNATURE_INVALID``/``bad_encoding``.
    """
    return _percent_decode(raw_path)


def parse_query_pairs(raw_query: bytes) -> list[tuple[str, str]]:
    """
    Split and decode a raw query string, keeping order and repetitions.

    Pairs are separated by ``&`` (never ``;``); empty pairs are skipped; a pair
    without ``=`` has an empty value; the name ends at the first ``=``. ``+``
    means a space (``application/x-www-form-urlencoded``), then ``%XX`` escapes
    are decoded and the bytes read as strict UTF-8.

    :param raw_query: What follows ``?`` in the request target (without the ``?``).
    :return: The ``(name, value)`` pairs.
    :raise SignedUrlError: ``SIGNATURE_INVALID``/``bad_encoding`` on a malformed
        escape or invalid UTF-8.
    """
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        pairs.append((_percent_decode(name.replace(b"+", b" ")), _percent_decode(value.replace(b"+", b" "))))
    return pairs


def _same_address(bound: str, client: str | None) -> bool:
    """
    Whether a bound ``ip`` names the client's address.

    Both sides are parsed, so ``2001:db8::1`` equals ``2001:DB8:0:0:0:0:0:1`` and
    an IPv4-mapped IPv6 client (``::ffff:203.0.113.7``, as a dual-stack socket
    reports it) equals ``203.0.113.7``. Anything unparseable matches nothing.
    """
    if client is None:
        return False
    try:
        addresses = [ipaddress.ip_address(text.strip()) for text in (bound, client)]
    except ValueError:
        return False
    unmapped = [
        a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addresses
    ]
    return unmapped[0] == unmapped[1]


def verify(
    path: str,
    query: Sequence[tuple[str, str]],
    *,
    keys: Sequence[SigningKey],
    now: float,
    max_ttl_s: int,
    client_ip: str | None = None,
) -> dict[str, str]:
    """
    Check that a signed URL authorises the request it comes with.

    The checks, in order (the first failure is raised):

    1. no parameter appears twice (``repeated_param``);
    2. ``expires`` and ``sig`` are present (``missing_param``);
    3. ``expires`` is canonical decimal digits (``bad_expires``);
    4. the path starts with ``/`` and has no line feed (``bad_path``), no bound
       name has ``=`` or a line feed and no bound value a line feed (``bad_param``);
    5. the key: ``kid``'s if sent (``unknown_kid``), else the current one
       (``no_keys`` when none is configured);
    6. the signature, in constant time (``bad_signature``);
    7. a bound ``ip`` names ``client_ip`` (``ip_mismatch``);
    8. ``expires`` is at most ``max_ttl_s`` ahead of ``now`` (``ttl_too_long``);
    9. ``now`` is before ``expires`` (``URL_EXPIRED``/``expired``).

    The signature is checked before anything about time, so ``URL_EXPIRED``
    tells only the holder of a genuine URL that it has expired; a forged or
    altered URL is ``SIGNATURE_INVALID`` whatever its ``expires``.

    :param path: The decoded request path exactly as requested (see
        :func:`decode_signed_path`).
    :param query: The decoded query pairs (see :func:`parse_query_pairs`).
    :param keys: The configured keys, current first.
    :param now: Unix time.
    :param max_ttl_s: ``STREAMSRV_URL_MAX_TTL_S``.
    :param client_ip: The client's address after trusted-proxy handling.
    :return: The bound parameters (every one but ``expires``, ``kid`` and ``sig``).
    :raise SignedUrlError: If the URL does not authorise the request.
    """
    seen: dict[str, str] = {}
    for name, value in query:
        if name in seen:
            raise _invalid("repeated_param")
        seen[name] = value
    if "expires" not in seen or "sig" not in seen:
        raise _invalid("missing_param")
    expires_text = seen["expires"]
    if len(expires_text) > _MAX_EXPIRES_DIGITS or not _EXPIRES.fullmatch(expires_text):
        raise _invalid("bad_expires")
    expires = int(expires_text)
    bound = {name: value for name, value in seen.items() if name not in RESERVED_PARAMETERS}
    if not path.startswith("/") or "\n" in path:
        raise _invalid("bad_path")
    try:
        _check_parts(path, bound)
        message = signature_message(path, expires, bound)
    except ValueError:
        raise _invalid("bad_param") from None

    if "kid" in seen:
        key = next((k for k in keys if k.kid == seen["kid"]), None)
        if key is None:
            raise _invalid("unknown_kid")
    elif keys:
        key = keys[0]
    else:
        raise _invalid("no_keys")

    expected = _mac(key, message).encode("ascii")
    given = seen["sig"].encode("utf-8", errors="surrogatepass")
    if not hmac.compare_digest(expected, given):
        raise _invalid("bad_signature")

    if "ip" in bound and not _same_address(bound["ip"], client_ip):
        raise _invalid("ip_mismatch")
    if expires - now > max_ttl_s:
        raise _invalid("ttl_too_long")
    if now >= expires:
        raise SignedUrlError(URL_EXPIRED, "expired")
    return bound


def max_age_for(expires: int, now: float) -> int:
    """
    The ``max-age`` of ``Cache-Control: private, max-age=…`` for a signed response.

    :param expires: The URL's ``expires``.
    :param now: Unix time.
    :return: Whole seconds, rounded so that a cache never keeps the response past
        ``expires``: ``max(0, expires - ceil(now))``.
    """
    return max(0, expires - math.ceil(now))


# --- streamsrv sign-url -----------------------------------------------------


def sign_url_parser(
    prog: str = "streamsrv sign-url", base_url: str = DEFAULT_BASE_URL
) -> argparse.ArgumentParser:
    """
    The ``streamsrv sign-url`` argument parser (also for ``--help`` in ``streamsrv.cli``).

    :param prog: The program name shown in usage lines.
    :param base_url: ``--base-url``'s default: where the configured listener is reached.
    :return: A new parser whose ``error`` raises instead of exiting.
    """
    parser = RaisingParser(
        prog=prog,
        add_help=False,
        description=(
            "Print a signed URL for PATH, signed with the current key of "
            "STREAMSRV_URL_SIGNING_KEYS (or --kid's; in development with nothing configured, the "
            "daemon's generated key from STREAMSRV_DATA_DIR/dev-credentials.json). "
            "PATH is a track path relative to the "
            "media root ('jazz/So What.mp3', which means /stream/jazz/So What.mp3) or a full "
            "request path ('/hls/jazz/So What.mp3/master.m3u8'), written decoded: spaces as "
            "spaces, not %20."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="track path or full request path, decoded")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--expires-in",
        metavar="SECONDS",
        type=int,
        default=None,
        help=f"lifetime from now (default {DEFAULT_EXPIRES_IN_S}; at most STREAMSRV_URL_MAX_TTL_S)",
    )
    when.add_argument(
        "--expires", metavar="UNIX", type=int, default=None, help="absolute expiry, Unix seconds"
    )
    parser.add_argument(
        "--bind",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="bind a query parameter (uid, ip, format, bitrate, download...); repeatable",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        default=base_url,
        help="scheme, host and port (and a path prefix) to put before PATH; "
        f"default {base_url.replace('%', '%%')}, from STREAMSRV_LISTEN",
    )
    parser.add_argument("--kid", metavar="KID", default=None, help="sign with this key id (default: current)")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def _request_path(path: str) -> str:
    """
    The full request path of ``sign-url``'s PATH.

    :raise UsageError: For an empty path or a full path outside :data:`SIGNED_PREFIXES`.
    """
    if not path.strip("/"):
        raise UsageError("PATH is empty")
    if not path.startswith("/"):
        return "/stream/" + path
    if not path.startswith(SIGNED_PREFIXES):
        allowed = ", ".join(SIGNED_PREFIXES)
        raise UsageError(f"signed URLs are accepted only under {allowed}; got a path outside them")
    return path


def _parse_binds(items: Sequence[str]) -> dict[str, str]:
    """
    ``--bind NAME=VALUE`` items as a mapping.

    :raise UsageError: On a missing ``=``, an empty or reserved name, or a name given twice.
    """
    bound: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise UsageError(f"--bind expects NAME=VALUE, got {item!r}")
        if name in RESERVED_PARAMETERS:
            raise UsageError(f"--bind {name}=… is not allowed: {name} is part of the signature itself")
        if name in bound:
            raise UsageError(f"--bind {name} is given more than once")
        bound[name] = value
    return bound


def sign_cli(
    argv: Sequence[str],
    *,
    keys: Sequence[SigningKey],
    max_ttl_s: int,
    now: float,
    out: TextIO,
    err: TextIO | None = None,
    base_url: str = DEFAULT_BASE_URL,
) -> int:
    """
    ``streamsrv sign-url PATH [--expires-in S | --expires UNIX] [--bind N=V ...] [--base-url URL] [--kid K]``.

    Prints the signed URL, one line, on ``out``.

    :param argv: The arguments after ``sign-url``.
    :param keys: The configured keys, current first.
    :param max_ttl_s: ``STREAMSRV_URL_MAX_TTL_S``.
    :param now: Unix time; ``--expires-in`` counts from ``floor(now)``.
    :param out: Where the URL (or ``--help``) goes.
    :param err: Where problems and notes go; :data:`sys.stderr` if ``None``.
    :param base_url: ``--base-url``'s default (the configured listener's URL).
    :return: 0 on success; 1 when the input cannot be signed (no keys, lifetime
        beyond ``max_ttl_s``, a bad ``--bind``, unknown ``--kid``…); 2 when the
        command line itself is wrong (argparse's convention, as in ``streamsrv.cli``).
    """
    err = sys.stderr if err is None else err
    parser = sign_url_parser(base_url=base_url)
    try:
        args = parser.parse_args(list(argv))
    except UsageError as e:
        if "-h" in argv or "--help" in argv:
            parser.print_help(out)
            return 0
        parser.print_usage(err)
        print(f"streamsrv sign-url: error: {e}", file=err)
        return 2
    if args.help:
        parser.print_help(out)
        return 0

    def fail(message: str) -> int:
        print(f"streamsrv sign-url: {message}", file=err)
        return 1

    if not keys:
        return fail("STREAMSRV_URL_SIGNING_KEYS is not set; no key to sign with")
    if args.kid is None:
        key = keys[0]
    else:
        found = [k for k in keys if k.kid == args.kid]
        if not found:
            known = ", ".join(k.kid for k in keys)
            return fail(f"no signing key with kid {args.kid!r} (configured: {known})")
        key = found[0]

    try:
        path = _request_path(args.path)
        bound = _parse_binds(args.bind)
    except UsageError as e:
        return fail(str(e))

    if args.expires is not None:
        expires = args.expires
        if expires < 0:
            return fail(f"--expires {expires} is negative")
    else:
        expires_in = DEFAULT_EXPIRES_IN_S if args.expires_in is None else args.expires_in
        if expires_in < 1:
            return fail(f"--expires-in must be at least 1 second, got {expires_in}")
        if expires_in > max_ttl_s:
            return fail(
                f"--expires-in {expires_in} is beyond STREAMSRV_URL_MAX_TTL_S ({max_ttl_s} s); "
                "the server would refuse the URL"
            )
        expires = math.floor(now) + expires_in
    if expires - now > max_ttl_s:
        return fail(
            f"--expires {expires} is more than STREAMSRV_URL_MAX_TTL_S ({max_ttl_s} s) ahead; "
            "the server would refuse the URL"
        )

    base = urlsplit(args.base_url)
    if base.scheme not in ("http", "https") or not base.netloc or base.query or base.fragment:
        return fail(f"--base-url must be http(s)://host[:port][/prefix], got {args.base_url!r}")

    try:
        url = _join_url(args.base_url, path, signed_query(path, expires, key, bound))
    except ValueError as e:
        return fail(str(e))

    if _LOOKS_ENCODED.search(path):
        print(
            "streamsrv sign-url: note: PATH is taken as written (decoded); a '%XX' in it is a literal "
            "percent sign, encoded as %25",
            file=err,
        )
    if expires <= now:
        print(f"streamsrv sign-url: note: expires {expires} is already past; the URL is expired", file=err)
    print(url, file=out)
    return 0

# -*- test-case-name: tests.test_mint -*-
"""``streamsrv mint-token``: sign an access or refresh token from the command line.

For development and for backends that want streamsrv to hand out a first
refresh token: the token is signed by the configured
:class:`~streamsrv.auth.jwt.TokenIssuer` (``STREAMSRV_JWT_SECRET`` or
``STREAMSRV_JWT_PRIVATE_KEY_FILE``) and printed alone on stdout, so that
``TOKEN=$(streamsrv mint-token --sub alice)`` works; a one-line summary
goes to stderr.  This module must never print a token anywhere but that
one line of stdout, nor a secret anywhere, and never mint a token that
would outlive its own revocation (:data:`MAX_TTL_S`).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
from collections.abc import Sequence
from typing import Any, Final, TextIO

from streamsrv.auth.jwt import TokenIssuer
from streamsrv.auth.principal import AuthError
from streamsrv.auth.refresh import ACCESS_TTL_S, REFRESH_TTL_S
from streamsrv.auth.revocation import REVOCATION_RETENTION_S
from streamsrv.cliargs import EXIT_INVALID, EXIT_OK, EXIT_USAGE, RaisingParser, UsageError

__all__ = ["MAX_TTL_S", "mint_cli", "mint_token_parser"]

#: Longest lifetime accepted: a revocation by ``jti`` or ``sub`` is kept this long.
MAX_TTL_S: Final = REVOCATION_RETENTION_S

#: The role of a token minted without ``--role``.
DEFAULT_ROLE: Final = "listener"


def mint_token_parser(prog: str = "streamsrv mint-token") -> argparse.ArgumentParser:
    """
    The ``streamsrv mint-token`` argument parser.

    :param prog: The program name shown in usage lines.
    :return: A new parser whose ``error`` raises instead of exiting.
    """
    parser = RaisingParser(
        prog=prog,
        add_help=False,
        description=(
            "Print a JWT signed with STREAMSRV_JWT_SECRET (HS256) or STREAMSRV_JWT_PRIVATE_KEY_FILE "
            "(in development with nothing configured, the daemon's generated secret from "
            "STREAMSRV_DATA_DIR/dev-credentials.json). "
            "An access token by default; --refresh makes a refresh token to trade at "
            "POST /api/v1/auth/refresh (it starts a family of its own unless --family is given)."
        ),
    )
    parser.add_argument("--sub", metavar="SUB", required=True, help="the subject: the backend's user id")
    parser.add_argument(
        "--role",
        metavar="ROLE",
        action="append",
        default=[],
        help=f"a role (listener, premium, artist, admin…); repeatable; default {DEFAULT_ROLE}",
    )
    parser.add_argument(
        "--permission",
        metavar="PERMISSION",
        action="append",
        default=[],
        help="an extra permission on top of the roles' (stream:hq…); repeatable",
    )
    parser.add_argument(
        "--ttl",
        metavar="SECONDS",
        type=int,
        default=None,
        help=f"lifetime (default {ACCESS_TTL_S}, or {REFRESH_TTL_S} with --refresh; at most {MAX_TTL_S})",
    )
    parser.add_argument("--refresh", action="store_true", help="mint a refresh token (typ=refresh)")
    parser.add_argument("--family", metavar="FAMILY", default=None, help="the refresh family id (fam claim)")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def _own_claims(token: str) -> dict[str, Any]:
    """The claims of a token just signed here (so not verified again)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def mint_cli(argv: Sequence[str], *, issuer: TokenIssuer, out: TextIO, err: TextIO) -> int:
    """
    ``streamsrv mint-token --sub SUB [--role R ...] [--permission P ...] [--ttl S] [--refresh] [--family F]``.

    :param argv: The arguments after ``mint-token``.
    :param issuer: Signs the token (built from the configuration).
    :param out: Gets the token, one line (or ``--help``).
    :param err: Gets problems and a summary of what was minted.
    :return: 0 on success; 1 when nothing can be minted (no signing key, a
        lifetime out of range, an empty value); 2 for a wrong command line.
    """
    parser = mint_token_parser()
    try:
        args = parser.parse_args(list(argv))
    except UsageError as e:
        if "-h" in argv or "--help" in argv:
            parser.print_help(out)
            return EXIT_OK
        parser.print_usage(err)
        print(f"streamsrv mint-token: error: {e}", file=err)
        return EXIT_USAGE
    if args.help:
        parser.print_help(out)
        return EXIT_OK

    def fail(message: str) -> int:
        print(f"streamsrv mint-token: {message}", file=err)
        return EXIT_INVALID

    if not issuer.configured:
        return fail(
            "no signing key (NOT_CONFIGURED): set STREAMSRV_JWT_SECRET or STREAMSRV_JWT_PRIVATE_KEY_FILE"
        )
    typ = "refresh" if args.refresh else "access"
    ttl = args.ttl if args.ttl is not None else (REFRESH_TTL_S if args.refresh else ACCESS_TTL_S)
    if not 1 <= ttl <= MAX_TTL_S:
        return fail(f"--ttl must be between 1 and {MAX_TTL_S} seconds, got {ttl}")
    if not args.sub:
        return fail("--sub must not be empty")
    if args.family is not None and not args.family:
        return fail("--family must not be empty")
    for name, values in (("--role", args.role), ("--permission", args.permission)):
        if any(not value for value in values):
            return fail(f"{name} must not be empty")
    roles = args.role or [DEFAULT_ROLE]
    try:
        token = issuer.issue(
            sub=args.sub, roles=roles, permissions=args.permission, typ=typ, ttl_s=ttl, family=args.family
        )
    except AuthError as e:
        return fail(f"{e.message} ({e.code})")
    expires = datetime.datetime.fromtimestamp(_own_claims(token)["exp"], tz=datetime.UTC)
    family = f", family {args.family!r}" if args.family is not None else ""
    print(
        f"streamsrv mint-token: {typ} token for {args.sub!r}, roles {', '.join(roles)}{family}, "
        f"expires {expires:%Y-%m-%dT%H:%M:%SZ}",
        file=err,
    )
    print(token, file=out)
    return EXIT_OK

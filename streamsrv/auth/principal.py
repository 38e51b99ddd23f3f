# -*- test-case-name: tests.test_principal -*-
"""Who is asking, and what they may do: :class:`Principal` and :class:`AuthError`.

A principal is the verified outcome of a credential (a JWT, a signed URL) or
the development-only anonymous listener.  Permission checks are plain
method calls on it.  :class:`AuthError` carries a contract error code, a
client-safe message and a machine reason for the security log.  This module
must never hold or print a credential: a principal keeps the token's id
(``jti``), never the token, and an error's message never quotes a token, a
key or a library's exception text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from streamsrv.auth.roles import DEFAULT_ROLES, WILDCARD, effective_permissions
from streamsrv.errors import DEFAULT_MESSAGES

__all__ = ["ANONYMOUS", "AUTH_ERROR_CODES", "VIAS", "AuthError", "Principal", "anonymous_principal"]

#: How a principal was established.
VIAS: Final = frozenset({"jwt", "signed_url", "anonymous"})

#: The contract codes an :class:`AuthError` may carry (each is a key of
#: :data:`streamsrv.errors.STATUS_FOR_CODE`).
AUTH_ERROR_CODES: Final = frozenset(
    {
        "UNAUTHENTICATED",
        "TOKEN_EXPIRED",
        "TOKEN_INVALID",
        "TOKEN_REVOKED",
        "SIGNATURE_INVALID",
        "URL_EXPIRED",
        "FORBIDDEN",
        "NOT_CONFIGURED",
        "UNAVAILABLE",
    }
)

_MESSAGES: Final[Mapping[str, str]] = {code: DEFAULT_MESSAGES[code] for code in AUTH_ERROR_CODES}


class AuthError(Exception):
    """
    A credential was missing, refused, or is not allowed to do this.

    :ivar code: A contract error code from :data:`AUTH_ERROR_CODES`.
    :ivar message: What the client is told; never quotes the credential.
    :ivar reason: A short machine reason for the security log
        (``bad_signature``, ``alg_none``, ``expired``, ``wrong_audience``,
        ``unknown_kid``…); also never quotes the credential.
    """

    def __init__(self, code: str, message: str | None = None, *, reason: str | None = None) -> None:
        if code not in AUTH_ERROR_CODES:
            raise ValueError(f"not an authentication error code: {code!r}")
        self.code = code
        self.message = message or _MESSAGES[code]
        self.reason = reason or code.lower()
        super().__init__(code, self.reason)

    def __repr__(self) -> str:
        return f"AuthError({self.code!r}, reason={self.reason!r})"


@dataclass(frozen=True)
class Principal:
    """
    An authenticated (or anonymous) caller.

    :ivar sub: The subject: the backend's user id.
    :ivar roles: The role names the credential carried.
    :ivar permissions: Effective permissions: the union of the roles' and the
        credential's own ``permissions`` claim.
    :ivar via: ``"jwt"``, ``"signed_url"`` or ``"anonymous"``.
    :ivar token_id: The token's ``jti``, if any.
    :ivar family: The token's refresh family (``fam``), if any.
    :ivar issued_at: ``iat``, Unix seconds, if present.
    :ivar expires_at: ``exp``, Unix seconds, if any.
    :ivar token_permissions: The token's own ``permissions`` claim, without
        its roles' (a refresh re-issues these, not the effective set);
        empty for other credentials.
    """

    sub: str
    roles: frozenset[str]
    permissions: frozenset[str]
    via: str
    token_id: str | None = None
    family: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None
    token_permissions: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.via not in VIAS:
            raise ValueError(f"via must be one of {sorted(VIAS)}, got {self.via!r}")

    def can(self, permission: str) -> bool:
        """
        Whether this principal holds *permission*.

        ``*`` grants everything.  Permissions are hierarchical along ``:``:
        ``analytics:read`` grants ``analytics:read:own``, and ``analytics:*``
        grants every ``analytics:…`` permission (but not ``analytics``
        itself).  The empty permission is never granted.

        :param permission: What a route needs, e.g. ``stream:hq``.
        """
        if not permission:
            return False
        held = self.permissions
        if WILDCARD in held or permission in held:
            return True
        segments = permission.split(":")
        for end in range(len(segments) - 1, 0, -1):
            prefix = ":".join(segments[:end])
            if prefix in held or f"{prefix}:{WILDCARD}" in held:
                return True
        return False

    @property
    def is_admin(self) -> bool:
        """
        Whether this principal holds every permission (``*``), as the admin role does.

        Decided by effective permissions, not by the role's name, so a
        ``roles.toml`` that narrows ``admin`` narrows this too.
        """
        return WILDCARD in self.permissions


def anonymous_principal(table: Mapping[str, frozenset[str]]) -> Principal:
    """
    The development-only anonymous listener, under the roles of *table*.

    :param table: The roles table in force (from
        :func:`streamsrv.auth.roles.load_roles`).
    """
    roles = frozenset({"listener"})
    return Principal(
        sub="anonymous",
        roles=roles,
        permissions=effective_permissions(roles, (), table),
        via="anonymous",
    )


#: The anonymous listener under :data:`DEFAULT_ROLES`; used in development
#: when ``STREAMSRV_ALLOW_ANONYMOUS`` is on and no credential is sent.
ANONYMOUS: Final = anonymous_principal(DEFAULT_ROLES)

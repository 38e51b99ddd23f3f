# -*- test-case-name: tests.test_roles -*-
"""Roles and the permissions they grant.

A role names a set of permissions (``stream:read``, ``analytics:read:own``,
``*`` for everything).  :data:`DEFAULT_ROLES` is the contract's table;
:func:`load_roles` reads an operator's ``roles.toml`` (a role may inherit
others), and :func:`effective_permissions` gives a token's permissions: the
union of its roles' and its own ``permissions`` claim.  Pure functions: this
module must never touch the reactor or a request, and must never grant a
permission for a role it does not know (an unknown role contributes nothing).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "DEFAULT_ROLES",
    "PERMISSION_PATTERN",
    "ROLE_NAME_PATTERN",
    "WILDCARD",
    "effective_permissions",
    "load_roles",
]

#: The permission that grants every other one.
WILDCARD: Final = "*"

#: A role's name: what tokens carry in their ``roles`` claim.
ROLE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)

#: A permission: ``*``, or ``:``-separated segments, optionally ending in ``:*``
#: (``analytics:*`` grants every ``analytics:…`` permission).
PERMISSION_PATTERN: Final = re.compile(r"\*|[a-z0-9_-]+(?::[a-z0-9_-]+)*(?::\*)?", re.ASCII)

_LISTENER: Final = frozenset({"stream:read", "tracks:read", "ws:connect"})

#: The contract's roles.  ``etc/roles.toml`` spells out the same table.
DEFAULT_ROLES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "listener": _LISTENER,
        "premium": _LISTENER | {"stream:hq", "stream:download"},
        "artist": _LISTENER | {"analytics:read:own"},
        "admin": frozenset({WILDCARD}),
    }
)

_ROLE_KEYS: Final = frozenset({"permissions", "inherits", "limit_rate", "limit_rate_after"})


def load_roles(path: Path | None) -> dict[str, frozenset[str]]:
    """
    The roles table from a TOML file, or the defaults.

    The file holds one table per role::

        [roles.listener]
        permissions = ["stream:read", "tracks:read", "ws:connect"]

        [roles.premium]
        inherits = ["listener"]
        permissions = ["stream:hq", "stream:download"]

    The file is the *whole* table: a role it does not define does not exist
    (so an operator can remove one).  ``inherits`` names roles of the same
    file; their permissions, themselves resolved, are added.

    :param path: The file; ``None`` or a path that does not exist gives
        :data:`DEFAULT_ROLES`.
    :return: Each role's resolved permissions.
    :raise ValueError: Naming the file and every problem found: unreadable
        or not TOML, unknown keys, a badly named role or permission, an
        inherited role that is not defined, an inheritance cycle.
    """
    if path is None or not path.exists():
        return dict(DEFAULT_ROLES)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the roles file ({type(e).__name__})")
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}")
    problems: list[str] = []
    declared = _parse_document(document, problems)
    resolved = _resolve(declared, problems)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return resolved


_Declared = dict[str, tuple[set[str], list[str]]]


def _parse_document(document: Mapping[str, Any], problems: list[str]) -> _Declared:
    """
    Check the document's shape.

    :return: ``{role: (own permissions, inherited role names)}`` for each
        role that could be read; problems are appended to *problems*.
    """
    unknown = sorted(set(document) - {"roles"})
    if unknown:
        names = ", ".join(map(repr, unknown))
        problems.append(f"unknown top-level key(s) {names} (only [roles.NAME] tables)")
    roles = document.get("roles")
    if roles is None:
        problems.append("no [roles.NAME] table")
        return {}
    if not isinstance(roles, dict):
        problems.append("'roles' must be a table of [roles.NAME] tables")
        return {}
    declared: _Declared = {}
    for name, body in roles.items():
        if not ROLE_NAME_PATTERN.fullmatch(name):
            problems.append(f"role name {name!r} must match {ROLE_NAME_PATTERN.pattern}")
            continue
        if not isinstance(body, dict):
            problems.append(f"roles.{name} must be a table")
            continue
        extra = sorted(set(body) - _ROLE_KEYS)
        if extra:
            problems.append(
                f"roles.{name}: unknown key(s) {', '.join(map(repr, extra))} "
                "(only 'permissions', 'inherits', 'limit_rate', 'limit_rate_after')"
            )
        permissions = _string_list(body.get("permissions", []), f"roles.{name}.permissions", problems)
        for permission in permissions:
            if not PERMISSION_PATTERN.fullmatch(permission):
                problems.append(
                    f"roles.{name}.permissions: {permission!r} is not a permission "
                    "('*' or lower-case segments separated by ':', e.g. 'stream:read')"
                )
        inherits = _string_list(body.get("inherits", []), f"roles.{name}.inherits", problems)
        for key in ("limit_rate", "limit_rate_after"):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                problems.append(f"roles.{name}.{key} must be a whole number of bytes (per second) >= 0")
        declared[name] = (set(permissions), inherits)
    return declared


def _string_list(value: object, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where} must be a list of strings")
        return []
    return list(value)


def _resolve(declared: _Declared, problems: list[str]) -> dict[str, frozenset[str]]:
    """
    Expand inheritance, depth first, refusing undefined parents and cycles.
    """
    resolved: dict[str, frozenset[str]] = {}

    def visit(name: str, trail: tuple[str, ...]) -> frozenset[str]:
        if name in resolved:
            return resolved[name]
        own, parents = declared[name]
        granted = set(own)
        for parent in parents:
            if parent not in declared:
                problems.append(f"roles.{name}.inherits: {parent!r} is not a role defined in this file")
            elif parent in (path := (*trail, name)):
                cycle = " -> ".join((*path[path.index(parent) :], parent))
                problems.append(f"roles.{name}.inherits: inheritance cycle {cycle}")
            else:
                granted |= visit(parent, (*trail, name))
        resolved[name] = frozenset(granted)
        return resolved[name]

    for name in declared:
        visit(name, ())
    return resolved


def effective_permissions(
    roles: Iterable[str], extra: Iterable[str], table: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """
    The permissions of a holder of *roles* who is also granted *extra*.

    :param roles: Role names, e.g. a token's ``roles`` claim.
    :param extra: Permissions granted directly, e.g. a token's ``permissions``
        claim.  Empty strings are ignored.
    :param table: Role name to permissions, from :func:`load_roles`.
    :return: The union; a role missing from *table* contributes nothing.
    """
    granted: set[str] = set()
    for role in roles:
        granted |= table.get(role, frozenset())
    granted.update(permission for permission in extra if permission)
    return frozenset(granted)


@dataclass(frozen=True)
class Shaping:
    """A per-stream rate cap after a burst, as nginx's ``limit_rate_after`` + ``limit_rate``.

    :ivar rate: bytes per second once *after* bytes have been sent.
    :ivar after: bytes sent at full speed first (the player's buffer: seeking
        and the first seconds are never slowed).
    """

    rate: int
    after: int


def load_shaping(path: Path | None) -> dict[str, Shaping]:
    """
    The roles of the roles file that cap their streams (``limit_rate`` > 0).

    ``limit_rate`` is bytes per second (``0`` or absent: no cap),
    ``limit_rate_after`` the bytes sent at full speed first (default 0).
    Not inherited: each role says its own.  Call after :func:`load_roles`,
    which validates the file.
    """
    if path is None or not path.exists():
        return {}
    with path.open("rb") as f:
        roles = tomllib.load(f).get("roles", {})
    shaping: dict[str, Shaping] = {}
    for name, body in roles.items():
        rate = body.get("limit_rate") if isinstance(body, dict) else None
        if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0:
            after = body.get("limit_rate_after", 0)
            shaping[name] = Shaping(rate, after if isinstance(after, int) and after > 0 else 0)
    return shaping


def shaping_for(roles: Iterable[str], table: Mapping[str, Shaping]) -> Shaping | None:
    """The cap of a holder of *roles*: none if any of them is uncapped, else the most generous."""
    caps = []
    for role in roles:
        cap = table.get(role)
        if cap is None:
            return None
        caps.append(cap)
    if not caps:
        return None
    return max(caps, key=lambda cap: (cap.rate, cap.after))

# -*- test-case-name: tests.test_principal -*-
"""Tests for :mod:`streamsrv.auth.principal`: permission checks, the anonymous listener, errors."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.auth.principal import (
    ANONYMOUS,
    AUTH_ERROR_CODES,
    AuthError,
    Principal,
    anonymous_principal,
)
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.errors import DEFAULT_MESSAGES, STATUS_FOR_CODE


def principal(*permissions: str, roles: frozenset[str] = frozenset()) -> Principal:
    """A JWT principal holding *permissions*."""
    return Principal(sub="u", roles=roles, permissions=frozenset(permissions), via="jwt")


class CanTests(unittest.TestCase):
    """``Principal.can``."""

    def test_exact(self) -> None:
        """A held permission is granted; others are not."""
        p = principal("stream:read", "tracks:read")
        self.assertTrue(p.can("stream:read"))
        self.assertFalse(p.can("stream:hq"))
        self.assertFalse(p.can("stream"))

    def test_wildcard(self) -> None:
        """``*`` grants every permission."""
        p = principal("*")
        for permission in ("stream:read", "analytics:read:own", "notifications:send", "anything"):
            self.assertTrue(p.can(permission))

    def test_hierarchical(self) -> None:
        """A permission grants those below it along ``:``, not those beside or above it."""
        p = principal("analytics:read")
        self.assertTrue(p.can("analytics:read"))
        self.assertTrue(p.can("analytics:read:own"))
        self.assertTrue(p.can("analytics:read:own:deep"))
        self.assertFalse(p.can("analytics"))
        self.assertFalse(p.can("analytics:write"))
        self.assertFalse(p.can("analytics:reader"))
        self.assertFalse(principal("analytics:read:own").can("analytics:read"))

    def test_prefix_wildcard(self) -> None:
        """``analytics:*`` grants every ``analytics:…`` permission but not ``analytics`` itself."""
        p = principal("analytics:*")
        self.assertTrue(p.can("analytics:read"))
        self.assertTrue(p.can("analytics:read:own"))
        self.assertFalse(p.can("analytics"))
        self.assertFalse(p.can("analyticsx:read"))
        self.assertTrue(principal("analytics:read:*").can("analytics:read:own"))
        self.assertFalse(principal("analytics:read:*").can("analytics:write"))

    def test_empty_permission(self) -> None:
        """The empty permission is never granted, not even by ``*``."""
        self.assertFalse(principal("*").can(""))
        self.assertFalse(principal("").can(""))

    def test_segment_boundaries(self) -> None:
        """Prefixes only count at ``:`` boundaries."""
        self.assertFalse(principal("stream:r").can("stream:read"))
        self.assertFalse(principal("str").can("stream:read"))

    @given(
        st.lists(st.from_regex(r"[a-z]{1,2}", fullmatch=True), min_size=1, max_size=4),
        st.lists(st.from_regex(r"[a-z]{1,2}", fullmatch=True), max_size=3),
    )
    def test_every_prefix_grants(self, held: list[str], below: list[str]) -> None:
        """A held permission grants itself and every permission under it."""
        permission = ":".join(held)
        p = principal(permission)
        self.assertTrue(p.can(":".join(held + below)))
        if len(held) > 1:
            self.assertFalse(p.can(":".join(held[:-1])))


class PrincipalTests(unittest.TestCase):
    """The value object."""

    def test_admin(self) -> None:
        """``is_admin`` follows the ``*`` permission, not the role's name."""
        self.assertTrue(principal("*").is_admin)
        self.assertFalse(principal("stream:read", roles=frozenset({"admin"})).is_admin)
        self.assertFalse(principal("analytics:*").is_admin)

    def test_frozen_and_hashable(self) -> None:
        """A principal cannot be changed and can be a dictionary key."""
        p = principal("stream:read")
        with self.assertRaises(dataclasses.FrozenInstanceError):
            p.sub = "other"  # type: ignore[misc]
        self.assertEqual({p: 1}[principal("stream:read")], 1)

    def test_via(self) -> None:
        """``via`` is one of jwt, signed_url, anonymous."""
        for via in ("jwt", "signed_url", "anonymous"):
            Principal(sub="u", roles=frozenset(), permissions=frozenset(), via=via)
        with self.assertRaises(ValueError):
            Principal(sub="u", roles=frozenset(), permissions=frozenset(), via="cookie")

    def test_optional_fields_default_to_none(self) -> None:
        """Token id, family and times are ``None`` unless given."""
        p = principal()
        self.assertEqual((p.token_id, p.family, p.issued_at, p.expires_at), (None, None, None, None))


class AnonymousTests(unittest.TestCase):
    """The development-only anonymous listener."""

    def test_anonymous(self) -> None:
        """``ANONYMOUS`` is the listener role, via anonymous, with the listener's permissions only."""
        self.assertEqual(
            ANONYMOUS,
            Principal(
                sub="anonymous",
                roles=frozenset({"listener"}),
                permissions=DEFAULT_ROLES["listener"],
                via="anonymous",
            ),
        )
        self.assertTrue(ANONYMOUS.can("stream:read"))
        self.assertFalse(ANONYMOUS.can("stream:hq"))
        self.assertFalse(ANONYMOUS.is_admin)

    def test_under_a_configured_table(self) -> None:
        """``anonymous_principal`` follows the roles table in force; with no listener role, nothing."""
        narrowed = anonymous_principal({"listener": frozenset({"stream:read"})})
        self.assertEqual(narrowed.permissions, frozenset({"stream:read"}))
        self.assertEqual(anonymous_principal({}).permissions, frozenset())


class AuthErrorTests(unittest.TestCase):
    """The error every credential check raises."""

    def test_codes_are_contract_codes(self) -> None:
        """Every code an ``AuthError`` may carry is a contract code, with the contract's default message."""
        for code in AUTH_ERROR_CODES:
            self.assertIn(code, STATUS_FOR_CODE)
            self.assertEqual(AuthError(code).message, DEFAULT_MESSAGES[code])

    def test_unknown_code(self) -> None:
        """A code outside the set is a programming error."""
        for code in ("NOT_FOUND", "token_invalid", "BAD"):
            with self.assertRaises(ValueError):
                AuthError(code)

    def test_fields(self) -> None:
        """Code, message and reason are kept; the reason defaults to the code in lower case."""
        error = AuthError("TOKEN_INVALID", "Custom.", reason="bad_signature")
        self.assertEqual(
            (error.code, error.message, error.reason), ("TOKEN_INVALID", "Custom.", "bad_signature")
        )
        self.assertEqual(AuthError("TOKEN_EXPIRED").reason, "token_expired")
        self.assertEqual(repr(error), "AuthError('TOKEN_INVALID', reason='bad_signature')")
        self.assertIsInstance(error, Exception)

# -*- test-case-name: tests.test_roles -*-
"""Tests for :mod:`streamsrv.auth.roles`: the default table, ``roles.toml``, effective permissions."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.auth.roles import DEFAULT_ROLES, PERMISSION_PATTERN, effective_permissions, load_roles

#: The repository's shipped roles file.
SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "roles.toml"


class DefaultRolesTests(unittest.TestCase):
    """The contract's table."""

    def test_contract(self) -> None:
        """listener, premium, artist and admin grant exactly what DESIGN.md says."""
        listener = {"stream:read", "tracks:read", "ws:connect"}
        self.assertEqual(
            dict(DEFAULT_ROLES),
            {
                "listener": frozenset(listener),
                "premium": frozenset(listener | {"stream:hq", "stream:download"}),
                "artist": frozenset(listener | {"analytics:read:own"}),
                "admin": frozenset({"*"}),
            },
        )

    def test_immutable(self) -> None:
        """The default table cannot be changed in place."""
        with self.assertRaises(TypeError):
            DEFAULT_ROLES["guest"] = frozenset()  # type: ignore[index]
        self.assertTrue(all(isinstance(p, frozenset) for p in DEFAULT_ROLES.values()))

    def test_every_default_permission_is_well_formed(self) -> None:
        """Every default permission matches the permission syntax."""
        for permissions in DEFAULT_ROLES.values():
            for permission in permissions:
                self.assertRegex(permission, f"^(?:{PERMISSION_PATTERN.pattern})$")


class LoadRolesTests(unittest.TestCase):
    """Reading ``roles.toml``."""

    def write(self, text: str | bytes) -> Path:
        """A roles file holding *text*."""
        path = Path(self.mktemp())
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def assertProblem(self, text: str | bytes, *fragments: str) -> str:
        """Loading *text* raises a ``ValueError`` naming the file and every fragment."""
        path = self.write(text)
        with self.assertRaises(ValueError) as raised:
            load_roles(path)
        message = str(raised.exception)
        self.assertTrue(message.startswith(f"{path}: "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_none_or_missing_gives_defaults(self) -> None:
        """No path, or a path that does not exist, gives a copy of the defaults."""
        for path in (None, Path(self.mktemp())):
            table = load_roles(path)
            self.assertEqual(table, dict(DEFAULT_ROLES))
            table["listener"] = frozenset()
            self.assertEqual(
                DEFAULT_ROLES["listener"], frozenset({"stream:read", "tracks:read", "ws:connect"})
            )

    def test_shipped_file_is_the_defaults(self) -> None:
        """``etc/roles.toml`` spells out exactly the default table."""
        self.assertEqual(load_roles(SHIPPED), dict(DEFAULT_ROLES))

    def test_documented_example(self) -> None:
        """The ``roles.toml`` example in ``docs/modules/auth.md`` loads, with its inheritance resolved."""
        doc = (SHIPPED.parent.parent / "docs" / "modules" / "auth.md").read_text(encoding="utf-8")
        example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
        table = load_roles(self.write(example))
        self.assertEqual({k: v for k, v in table.items() if k != "label-manager"}, dict(DEFAULT_ROLES))
        self.assertEqual(
            table["label-manager"],
            DEFAULT_ROLES["artist"] | {"analytics:read", "notifications:send"},
        )

    def test_inheritance(self) -> None:
        """``inherits`` adds the parents' resolved permissions, across levels and diamonds."""
        table = load_roles(
            self.write(
                """
                [roles.base]
                permissions = ["a:read"]
                [roles.left]
                inherits = ["base"]
                permissions = ["b:read"]
                [roles.right]
                inherits = ["base"]
                permissions = ["c:read"]
                [roles.top]
                inherits = ["left", "right"]
                [roles.empty]
                """
            )
        )
        self.assertEqual(table["top"], frozenset({"a:read", "b:read", "c:read"}))
        self.assertEqual(table["left"], frozenset({"a:read", "b:read"}))
        self.assertEqual(table["empty"], frozenset())

    def test_file_is_the_whole_table(self) -> None:
        """A role the file does not define does not exist, even a default one."""
        table = load_roles(self.write('[roles.listener]\npermissions = ["stream:read"]\n'))
        self.assertEqual(table, {"listener": frozenset({"stream:read"})})

    def test_permission_syntax(self) -> None:
        """Wildcards and ``prefix:*`` are accepted; other shapes are refused with the offending value."""
        ok = load_roles(self.write('[roles.r]\npermissions = ["*", "analytics:*", "a-b_c:d0"]\n'))
        self.assertEqual(ok["r"], frozenset({"*", "analytics:*", "a-b_c:d0"}))
        for bad in ("Stream:Read", "stream read", "", "stream:", ":read", "*:read", "a:*:b", "a::b", "é"):
            self.assertProblem(f"[roles.r]\npermissions = [{bad!r}]\n".replace("'", '"'), repr(bad))

    def test_role_names(self) -> None:
        """Role names are short identifiers."""
        self.assertProblem('[roles."bad name"]\n', "'bad name'")
        self.assertProblem(f"[roles.{'x' * 65}]\n", "x" * 65)

    def test_shape_problems(self) -> None:
        """Unknown keys, wrong types and missing tables are each named."""
        self.assertProblem("", "no [roles.NAME] table")
        self.assertProblem("roles = 1\n", "'roles' must be a table")
        self.assertProblem("[roles]\nlistener = 1\n", "roles.listener must be a table")
        self.assertProblem("[role.listener]\n", "'role'", "no [roles.NAME] table")
        self.assertProblem("[roles.r]\npermission = []\n", "roles.r: unknown key(s) 'permission'")
        self.assertProblem('[roles.r]\npermissions = "stream:read"\n', "roles.r.permissions must be a list")
        self.assertProblem("[roles.r]\npermissions = [1]\n", "roles.r.permissions must be a list")
        self.assertProblem('[roles.r]\ninherits = "x"\n', "roles.r.inherits must be a list")

    def test_undefined_parent(self) -> None:
        """Inheriting a role the file does not define is refused, even a default role's name."""
        self.assertProblem('[roles.r]\ninherits = ["listener"]\n', "'listener' is not a role defined")

    def test_cycles(self) -> None:
        """Self-inheritance and longer cycles are refused, naming the cycle."""
        self.assertProblem('[roles.a]\ninherits = ["a"]\n', "inheritance cycle a -> a")
        self.assertProblem(
            '[roles.a]\ninherits = ["b"]\n[roles.b]\ninherits = ["c"]\n[roles.c]\ninherits = ["a"]\n',
            "inheritance cycle a -> b -> c -> a",
        )

    def test_every_problem_at_once(self) -> None:
        """Several problems are reported together."""
        message = self.assertProblem(
            '[roles.a]\npermissions = ["BAD"]\ninherits = ["ghost"]\n[roles.b]\nextra = 1\n',
            "'BAD'",
            "'ghost'",
            "'extra'",
        )
        self.assertEqual(message.count(";"), 2)

    def test_unreadable(self) -> None:
        """Not TOML, not UTF-8, or a directory: a ``ValueError`` naming the file."""
        self.assertProblem("[roles.r\n", "not valid TOML")
        self.assertProblem(b'[roles.r]\npermissions = ["\xff"]\n', "cannot read")
        directory = Path(self.mktemp())
        directory.mkdir()
        with self.assertRaises(ValueError) as raised:
            load_roles(directory)
        self.assertIn(str(directory), str(raised.exception))


_permission = st.from_regex(r"[a-z]{1,3}(:[a-z]{1,3}){0,2}", fullmatch=True)
_table = st.dictionaries(st.sampled_from(["r1", "r2", "r3", "r4"]), st.frozensets(_permission, max_size=4))


class EffectivePermissionsTests(unittest.TestCase):
    """The union of roles' and extra permissions."""

    def test_union(self) -> None:
        """Roles' permissions and extras are united; unknown roles and empty extras add nothing."""
        self.assertEqual(
            effective_permissions(["artist", "nobody"], ["notifications:send", ""], DEFAULT_ROLES),
            DEFAULT_ROLES["artist"] | {"notifications:send"},
        )
        self.assertEqual(effective_permissions([], [], DEFAULT_ROLES), frozenset())
        self.assertEqual(effective_permissions(iter(["admin"]), iter([]), DEFAULT_ROLES), frozenset({"*"}))

    @given(_table, st.lists(st.sampled_from(["r1", "r2", "r3", "r4", "r5"])), st.lists(_permission))
    def test_is_exactly_the_union(
        self, table: dict[str, frozenset[str]], roles: list[str], extra: list[str]
    ) -> None:
        """For any table, roles and extras, the result is the union of known roles' sets and extras."""
        expected = set(extra)
        for role in roles:
            expected |= table.get(role, frozenset())
        self.assertEqual(effective_permissions(roles, extra, table), frozenset(expected))


class ShapingTests(unittest.TestCase):
    """``limit_rate`` / ``limit_rate_after`` per role in the roles file."""

    def write(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text, encoding="utf-8")
        return path

    def test_parsed_and_chosen(self) -> None:
        """Capped roles are read; a holder's cap is the most generous, none if any role is uncapped."""
        from streamsrv.auth.roles import Shaping, load_shaping, shaping_for

        path = self.write(
            '[roles.free]\npermissions = ["stream:read"]\nlimit_rate = 40000\nlimit_rate_after = 500000\n'
            '[roles.mobile]\npermissions = ["stream:read"]\nlimit_rate = 64000\n'
            '[roles.premium]\npermissions = ["stream:read", "stream:hq"]\n'
        )
        self.assertIn("free", load_roles(path))
        table = load_shaping(path)
        self.assertEqual(table, {"free": Shaping(40000, 500000), "mobile": Shaping(64000, 0)})
        self.assertEqual(shaping_for(["free"], table), Shaping(40000, 500000))
        self.assertEqual(shaping_for(["free", "mobile"], table), Shaping(64000, 0))
        self.assertIsNone(shaping_for(["free", "premium"], table))
        self.assertIsNone(shaping_for([], table))
        self.assertEqual(load_shaping(None), {})

    def test_bad_values_refused(self) -> None:
        """A negative, fractional or textual limit is a roles-file error naming the key."""
        for value in ("-1", "1.5", '"fast"', "true"):
            path = self.write(f'[roles.x]\npermissions = ["stream:read"]\nlimit_rate = {value}\n')
            with self.assertRaises(ValueError) as caught:
                load_roles(path)
            self.assertIn("roles.x.limit_rate", str(caught.exception))

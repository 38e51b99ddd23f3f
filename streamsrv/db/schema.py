# -*- test-case-name: tests.test_analytics_store,tests.test_notify_outbox -*-
"""Versioned migrations, what differs between SQLite and PostgreSQL, and the runner.

A component's migrations are ``NNNN_name.sql`` files in a directory of its
own, numbered 1, 2, 3… without gaps; :func:`apply_migrations` runs the
pending ones in one transaction (in the database thread) and records them in
the component's :class:`History` table.  A
:class:`Dialect` holds what the two databases write differently (placeholder
substitutions, locks, parameter style, multi-row inserts).  This module must
never run on the reactor thread what touches a database (its functions taking
a ``txn`` are for ``runInteraction``), and never apply a migration outside
the transaction that records it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "POSTGRES",
    "POSTGRES_ROWS_PER_STATEMENT",
    "SQLITE",
    "Dialect",
    "History",
    "Migration",
    "apply_migrations",
    "load_migrations",
    "migration_statements",
]

#: Rows per multi-row ``INSERT`` on PostgreSQL.
POSTGRES_ROWS_PER_STATEMENT: Final = 1000

_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

#: A history table's name is written into statements: a plain identifier only.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*", re.ASCII)


@dataclass(frozen=True)
class Migration:
    """One versioned schema change: ``migrations/NNNN_name.sql``."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path) -> tuple[Migration, ...]:
    """
    The migrations in *directory*, in order.

    :raise ValueError: If a ``.sql`` file is misnamed or versions are not 1, 2, 3…
    """
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3… without gaps, got {versions}")
    return tuple(found)


def migration_statements(sql: str, substitutions: dict[str, str]) -> list[str]:
    """
    The statements of a migration, placeholders substituted, comments removed.

    :param sql: The file's text: statements each ending with ``;`` at the end
        of a line; ``--`` comments on lines of their own.
    :param substitutions: ``{"{{AUTO_ID}}": "…"}``.
    """
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    for placeholder, value in substitutions.items():
        text = text.replace(placeholder, value)
    if "{{" in text:
        raise ValueError("a migration uses a placeholder this dialect does not define")
    return [statement.strip() for statement in text.split(";") if statement.strip()]


# --- dialects -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """What differs between SQLite and PostgreSQL."""

    name: str
    substitutions: dict[str, str]
    #: Run first in a write transaction (SQLite: take the write lock now).
    begin_write: str | None
    #: Run first in the migration transaction with a :class:`History`'s key
    #: (PostgreSQL: serialise concurrent starters).
    migration_lock: str | None

    def sql(self, text: str) -> str:
        """*text*, written with ``?`` placeholders, in this driver's paramstyle."""
        return text if self.name == "sqlite" else text.replace("?", "%s")

    def insert_many(
        self, txn: Any, head: str, tail: str, width: int, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """
        Run ``head VALUES (…), (…) tail`` for *rows*.

        SQLite: ``executemany`` of a one-row statement (fast in-process);
        PostgreSQL: multi-row statements (one round trip per
        :data:`POSTGRES_ROWS_PER_STATEMENT` rows).
        """
        one = "(" + ", ".join("?" * width) + ")"
        if self.name == "sqlite":
            txn.executemany(f"{head} VALUES {one} {tail}", rows)
            return
        for start in range(0, len(rows), POSTGRES_ROWS_PER_STATEMENT):
            chunk = rows[start : start + POSTGRES_ROWS_PER_STATEMENT]
            statement = f"{head} VALUES {', '.join([one] * len(chunk))} {tail}"
            txn.execute(self.sql(statement), [value for row in chunk for value in row])


SQLITE: Final = Dialect(
    name="sqlite",
    substitutions={"{{AUTO_ID}}": "INTEGER PRIMARY KEY"},
    begin_write="BEGIN IMMEDIATE",
    migration_lock=None,
)

POSTGRES: Final = Dialect(
    name="postgresql",
    substitutions={"{{AUTO_ID}}": "BIGSERIAL PRIMARY KEY"},
    begin_write=None,  # psycopg2 opens the transaction itself
    migration_lock="SELECT pg_advisory_xact_lock({key})",
)


@dataclass(frozen=True)
class History:
    """Where a component records the migrations it applied.

    :ivar table: the table of applied versions (one per component, so two
        components sharing a database never read each other's versions).
    :ivar pg_lock_key: the PostgreSQL advisory lock serialising the
        component's concurrent starters (an arbitrary constant of its own).
    """

    table: str
    pg_lock_key: int

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.table):
            raise ValueError(f"not a plain SQL identifier: {self.table!r}")

    def create(self) -> str:
        """The statement creating :attr:`table` if it is missing."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )


def apply_migrations(
    txn: Any,
    dialect: Dialect,
    migrations: Sequence[Migration],
    now: float,
    *,
    history: History,
    begin: bool = True,
    substitutions: dict[str, str] | None = None,
) -> list[int]:
    """
    In the database thread: apply the pending *migrations* in this transaction.

    Creates the *history* table if needed, takes the dialect's locks, runs
    every migration not recorded there and records it at *now*.

    :param begin: run the dialect's ``begin_write`` first (``False`` when the
        caller's transaction already took the write lock).
    :param substitutions: placeholders of the migration files, if not the dialect's.
    :return: The versions applied (empty if the schema was current).
    """
    if begin and dialect.begin_write is not None:
        txn.execute(dialect.begin_write)
    if dialect.migration_lock is not None:
        txn.execute(dialect.migration_lock.format(key=history.pg_lock_key))
    txn.execute(history.create())
    txn.execute(f"SELECT version FROM {history.table}")  # noqa: S608 (an identifier checked by History)
    done = {int(row[0]) for row in txn.fetchall()}
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        for statement in migration_statements(migration.sql, substitutions or dialect.substitutions):
            txn.execute(statement)
        txn.execute(
            dialect.sql(f"INSERT INTO {history.table} (version, name, applied_at) VALUES (?, ?, ?)"),  # noqa: S608
            (migration.version, migration.name, now),
        )
        applied.append(migration.version)
    return applied

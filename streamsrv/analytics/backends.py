# -*- test-case-name: tests.test_analytics_store -*-
"""The two analytics databases, SQLite in the data dir (the default) and PostgreSQL by DSN; the factory.

:class:`SqliteAnalyticsStore` and :class:`PostgresAnalyticsStore` are
:class:`~streamsrv.analytics.store.AnalyticsStore` with their own
connection pool (``adbapi``: every statement runs in a database thread);
:func:`make_analytics_store` builds the one ``STREAMSRV_ANALYTICS_DSN`` asks
for.  This module must never log or quote a DSN (it may carry a password),
and never run a statement on the reactor thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorThreads, IReactorTime

from streamsrv.analytics.spill import SPILL_DIR, SpillDirectory
from streamsrv.analytics.store import AnalyticsStore
from streamsrv.db.pgpool import postgres_pool
from streamsrv.db.schema import POSTGRES, SQLITE
from streamsrv.db.sqlitepool import sqlite_pool
from streamsrv.threads import threads_for

__all__ = ["ANALYTICS_DB_FILE", "PostgresAnalyticsStore", "SqliteAnalyticsStore", "make_analytics_store"]

#: The SQLite file in ``STREAMSRV_DATA_DIR`` used when no DSN is configured.
ANALYTICS_DB_FILE: Final = "analytics.sqlite3"


class SqliteAnalyticsStore(AnalyticsStore):
    """
    Analytics in a SQLite file (WAL), written by one database thread.

    Every write is one ``BEGIN IMMEDIATE`` transaction, so several processes
    on the host may share the file.  ``synchronous = NORMAL``: a committed
    flush survives a crash of the process, not necessarily of the machine.
    """

    def __init__(self, path: Path, clock: IReactorTime, *, reactor: Any, **options: Any) -> None:
        """
        :param path: The database file; its directory is created if missing.
        :param clock: See :class:`AnalyticsStore`.
        :param reactor: Runs the database thread (``IReactorThreads``).
        :param options: ``flush_interval_s``, ``flush_threshold``, ``max_buffered``.
        """
        super().__init__(SQLITE, clock, **options)
        self.path = path
        self._reactor = reactor

    def _open_pool(self) -> adbapi.ConnectionPool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite_pool(self.path, self._reactor)


class PostgresAnalyticsStore(AnalyticsStore):
    """
    Analytics in PostgreSQL through psycopg2, shared by every process and host.

    A broken connection is replaced on the next attempt, quietly (the store
    logs the outage once); see :mod:`streamsrv.db.pgpool`.
    """

    def __init__(self, dsn: str, clock: IReactorTime, *, reactor: Any, **options: Any) -> None:
        """
        :param dsn: A ``postgresql://`` URL (or libpq key=value string); never logged.
        :param clock: See :class:`AnalyticsStore`.
        :param reactor: Runs the database threads (``IReactorThreads``).
        :param options: ``flush_interval_s``, ``flush_threshold``, ``max_buffered``.
        """
        super().__init__(POSTGRES, clock, **options)
        self._dsn = dsn
        self._reactor = reactor

    def _open_pool(self) -> adbapi.ConnectionPool:
        return postgres_pool(self._dsn, self._reactor, application_name="streamsrv-analytics")


def make_analytics_store(
    dsn: str | None, data_dir: Path, reactor: Any, **options: Any
) -> SqliteAnalyticsStore | PostgresAnalyticsStore:
    """
    The store the configuration asks for.

    :param dsn: ``STREAMSRV_ANALYTICS_DSN``: ``None`` for
        ``<data_dir>/analytics.sqlite3``; ``sqlite:///relative/path`` or
        ``sqlite:////absolute/path``; ``postgresql://…`` or ``postgres://…``.
    :param data_dir: ``STREAMSRV_DATA_DIR``; what the final flush cannot
        write goes to spill files in its ``analytics-spill/``, read back at start.
    :param reactor: The reactor: clock of the flush loop and runner of the
        database threads and the spill files' reads and writes.
    :param options: ``flush_interval_s``, ``flush_threshold``, ``max_buffered``.
    :raise ValueError: For any other DSN (the message does not quote it).
    """
    threads = reactor if IReactorThreads.providedBy(reactor) else None  # a test clock runs no threads
    options.setdefault("spill", SpillDirectory(data_dir / SPILL_DIR, threads_for(reactor)))
    if dsn is None:
        return SqliteAnalyticsStore(data_dir / ANALYTICS_DB_FILE, reactor, reactor=threads, **options)
    if dsn.startswith("sqlite:///") and len(dsn) > len("sqlite:///"):
        return SqliteAnalyticsStore(Path(dsn[len("sqlite:///") :]), reactor, reactor=threads, **options)
    if dsn.startswith(("postgresql://", "postgres://")):
        return PostgresAnalyticsStore(dsn, reactor, reactor=threads, **options)
    raise ValueError("the analytics DSN must start with sqlite:/// or postgresql://")

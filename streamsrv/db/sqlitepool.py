# -*- test-case-name: tests.test_analytics_store,tests.test_revocation -*-
"""A SQLite file that every process on the host shares, behind one ``adbapi`` database thread.

The analytics store and the revocation store keep their data the same way:
WAL journal, ``synchronous = NORMAL``, a busy timeout so another process's
write lock is waited for rather than failed on, autocommit with explicit
transactions (``BEGIN IMMEDIATE`` for writes), and one connection in one
thread.  This module must never open the file on the reactor thread (the pool
connects in its own thread) and never use the global reactor (the caller
passes the one that runs the thread).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from twisted.enterprise import adbapi

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "sqlite_pool"]

#: How long SQLite waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000


def _connect(connection: Any) -> None:
    connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


def sqlite_pool(path: Path, reactor: Any) -> adbapi.ConnectionPool:
    """
    A one-thread connection pool on the SQLite file at *path* (its directory must exist).

    :param reactor: Runs the database thread (``IReactorThreads``; never left to adbapi's global default).
    """
    return adbapi.ConnectionPool(
        "sqlite3",
        str(path),
        check_same_thread=False,
        isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE for writes
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        cp_min=1,
        cp_max=1,
        cp_openfun=_connect,
        cp_reactor=reactor,
    )

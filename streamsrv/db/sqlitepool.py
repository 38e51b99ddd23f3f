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

import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from twisted.enterprise import adbapi

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "sqlite_pool", "use_wal"]

#: How long SQLite waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000


def use_wal(connection: Any, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """``PRAGMA journal_mode = WAL`` on *connection*, waiting out another process doing the same.

    Two processes opening a new database file at once (the workers of a
    fresh data dir) both switch it to WAL, which takes an exclusive lock:
    SQLite answers the loser "database is locked" at once, without its busy
    handler (about 1 % of simultaneous first opens here).  Retried for up to
    *timeout_s*, as the busy timeout would; in the database's own thread,
    never on the reactor.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _connect(connection: Any) -> None:
    connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    use_wal(connection)
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

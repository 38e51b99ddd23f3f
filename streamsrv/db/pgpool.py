# -*- test-case-name: tests.test_faults_analytics -*-
"""A PostgreSQL ``adbapi`` pool that replaces a broken connection quietly.

``adbapi.ConnectionPool(cp_reconnect=True)`` already replaces a connection
whose rollback fails, but logs two tracebacks (``log.err``: "Rollback
failed") for every statement that meets a dead connection: a PostgreSQL
restart then floods the log with errors for an outage the caller already
reports once.  :func:`postgres_pool` builds a pool whose connections drop a
dead connection without logging; the statement's own error still reaches the
caller.  This module must never log or quote the DSN and never use the
global reactor (the caller passes the one that runs the threads).
"""

from __future__ import annotations

from typing import Any, Final

from twisted.enterprise import adbapi

__all__ = ["POSTGRES_CONNECT_TIMEOUT_S", "POSTGRES_KEEPALIVES", "postgres_pool"]

#: How long connecting to PostgreSQL may take.
POSTGRES_CONNECT_TIMEOUT_S: Final = 5

#: libpq TCP keepalives, unless the DSN sets its own: a connection whose
#: server vanished without a reset (a host down, a partition) is declared
#: dead after about idle + interval x count = 30 s, so a statement waiting on
#: it fails and is retried on a new connection instead of hanging until the
#: kernel gives up (hours).
POSTGRES_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class _QuietConnection(adbapi.Connection):
    """A pooled connection whose failed rollback disconnects it without logging or raising."""

    def rollback(self) -> None:
        try:
            self._connection.rollback()
        except Exception:
            # The connection is gone: the next statement on this thread connects anew.
            self._pool.disconnect(self._connection)


class _QuietPool(adbapi.ConnectionPool):
    connectionFactory = _QuietConnection


def postgres_pool(dsn: str, reactor: Any, *, application_name: str, size: int = 2) -> adbapi.ConnectionPool:
    """
    A pool of up to *size* psycopg2 connections to *dsn*, replaced when broken.

    :param reactor: Runs the database threads (``IReactorThreads``).
    :param application_name: What ``pg_stat_activity`` shows.
    """
    keepalives = {} if "keepalives" in dsn else POSTGRES_KEEPALIVES
    return _QuietPool(
        "psycopg2",
        dsn,
        **keepalives,
        connect_timeout=POSTGRES_CONNECT_TIMEOUT_S,
        application_name=application_name,
        cp_min=1,
        cp_max=size,
        cp_noisy=False,
        cp_reactor=reactor,
    )

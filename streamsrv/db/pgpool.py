# -*- test-case-name: tests.test_faults_analytics -*-
"""A PostgreSQL ``adbapi`` pool that replaces a broken connection quietly.

``adbapi.ConnectionPool(cp_reconnect=True)`` already replaces a connection
whose rollback fails, but logs two tracebacks (``log.err``: "Rollback
failed") for every statement that meets a dead connection: a PostgreSQL
restart then floods the log with errors for an outage the caller already
reports once.  :func:`postgres_pool` builds a pool whose connections drop a
dead connection without logging; a write's own error still reaches the
caller, and a read that met a dead connection is tried once more on a new
one.  This module must never log or quote the DSN and never use the
global reactor (the caller passes the one that runs the threads).
"""

from __future__ import annotations

from typing import Any, Final

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

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


def _connection_lost(failure: Failure) -> bool:
    """Whether *failure* is the connection failing (no SQLSTATE), not the server refusing the statement."""
    import psycopg2  # loaded with the pool's first connection anyway; not at import time

    error = failure.value
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)) and (
        getattr(error, "pgcode", None) is None
    )


class _QuietPool(adbapi.ConnectionPool):
    connectionFactory = _QuietConnection

    def runQuery(self, *args: Any, **kw: Any) -> Deferred[Any]:
        """A read, tried once more on a new connection if the first met a dead one.

        After an outage every pooled connection is dead, and each would fail
        one statement before being replaced: a reader (the analytics API)
        would get an error per thread once the database is back.  A read is
        safe to repeat; writes (``runInteraction``) are never retried here.
        """
        d: Deferred[Any] = super().runQuery(*args, **kw)

        def again(failure: Failure) -> Any:
            if not _connection_lost(failure):
                return failure
            return super(_QuietPool, self).runQuery(*args, **kw)

        return d.addErrback(again)


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

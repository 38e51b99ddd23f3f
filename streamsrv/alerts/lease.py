# -*- test-case-name: tests.test_alerts_lease -*-
"""One alert evaluator at a time across worker processes and hosts: a renewable lease.

An :class:`ILease` is taken (or renewed) by :meth:`~ILease.acquire`, which
answers whether this holder has it now, and given up by
:meth:`~ILease.release`.  A holder that stops renewing (killed, stalled,
partitioned) loses the lease once its time-to-live passes, and another
takes over.  :class:`RedisLease` keeps it in Redis (``SET NX PX`` with a
random token inside a script, so that renewing and releasing only ever touch
the holder's own lease); :class:`SqliteLease` keeps it in a small table of a
SQLite file in the data dir (``BEGIN IMMEDIATE``, for the workers of one
host), its blocking work on an injected :class:`~streamsrv.threads.IThreads`;
:class:`SoleLease` is always held (one process, or tests).  This module must
never run SQLite on the reactor thread, never use the global reactor, and
never import txredisapi.
"""

from __future__ import annotations

import math
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from streamsrv.db.sqlitepool import SQLITE_BUSY_TIMEOUT_MS
from streamsrv.threads import IThreads

__all__ = ["LEASE_NAME", "ILease", "RedisLease", "SoleLease", "SqliteLease", "new_holder"]

#: The name of the evaluator's lease (a Redis key suffix, a row of the SQLite table).
LEASE_NAME: Final = "alerts-evaluator"

#: Longest wait for a Redis reply about the lease.
REDIS_TIMEOUT_S: Final = 2.0

# KEYS[1] the lease; ARGV[1] the holder's token, ARGV[2] the time to live in ms.
# Free: take it (SET NX PX).  Ours: renew it.  Someone else's: leave it.
_REDIS_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] the lease; ARGV[1] the holder's token.  Only the holder deletes it.
_REDIS_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS leases"
    " (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL)"
)


def new_holder() -> str:
    """A random token naming one holder (one evaluator of one process)."""
    return secrets.token_hex(16)


class ILease(Interface):
    """A lease that one holder at a time has, until it lets it go or stops renewing."""

    holder: str = Attribute("This holder's token.")
    ttl_s: float = Attribute("How long the lease lasts unless renewed, in seconds.")

    def acquire() -> Deferred[bool]:
        """Take the lease if free (or expired), renew it if ours: fires with whether we hold it now."""

    def release() -> Deferred[None]:
        """Give the lease up if we hold it (another holder may then take it at once)."""


@implementer(ILease)
class SoleLease:
    """Always held: for a single evaluator (one process, tests)."""

    def __init__(self, holder: str | None = None, ttl_s: float = math.inf) -> None:
        self.holder = holder or new_holder()
        self.ttl_s = ttl_s

    def acquire(self) -> Deferred[bool]:
        return succeed(True)

    def release(self) -> Deferred[None]:
        return succeed(None)


@implementer(ILease)
class RedisLease:
    """
    The lease as a Redis key holding the holder's token, with a time to live.

    :param redis: A txredisapi connection (``RedisService.connection``).
    :param clock: Times commands out.
    :param key: The key (e.g. ``streamsrv:alerts:lease``).
    :param ttl_s: Time to live of a take or a renewal.
    """

    def __init__(
        self, redis: Any, clock: IReactorTime, key: str, ttl_s: float, holder: str | None = None
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._key = key
        self.ttl_s = ttl_s
        self.holder = holder or new_holder()

    def _ttl_ms(self) -> str:
        return str(max(1, math.ceil(self.ttl_s * 1000)))

    def acquire(self) -> Deferred[bool]:
        d = self._redis.eval(_REDIS_ACQUIRE, [self._key], [self.holder, self._ttl_ms()])
        d.addTimeout(REDIS_TIMEOUT_S, self._clock)
        return d.addCallback(lambda reply: int(reply) == 1)

    def release(self) -> Deferred[None]:
        d = self._redis.eval(_REDIS_RELEASE, [self._key], [self.holder])
        d.addTimeout(REDIS_TIMEOUT_S, self._clock)
        return d.addCallback(lambda _: None)


@implementer(ILease)
class SqliteLease:
    """
    The lease as a row ``(name, holder, expires_at)`` of a SQLite file shared by a host's processes.

    Expiry is judged by *clock* (every process of a host shares its wall clock).

    :param path: The SQLite file (its directory must exist).
    :param threads: Runs the blocking SQLite calls.
    :param clock: Tells the time.
    :param name: The lease's row.
    """

    def __init__(
        self,
        path: Path,
        threads: IThreads,
        clock: IReactorTime,
        ttl_s: float,
        name: str = LEASE_NAME,
        holder: str | None = None,
    ) -> None:
        self._path = path
        self._threads = threads
        self._clock = clock
        self._name = name
        self.ttl_s = ttl_s
        self.holder = holder or new_holder()

    def acquire(self) -> Deferred[bool]:
        now = self._clock.seconds()
        d: Deferred[bool] = self._threads.defer(self._acquire, now, now + self.ttl_s)
        return d

    def release(self) -> Deferred[None]:
        d: Deferred[None] = self._threads.defer(self._release)
        return d

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            str(self._path), timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        connection.execute(_SCHEMA)
        return connection

    def _acquire(self, now: float, expires_at: float) -> bool:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", (self._name,)
            ).fetchone()
            if row is not None and row[0] != self.holder and row[1] > now:
                connection.execute("ROLLBACK")
                return False
            connection.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                (self._name, self.holder, expires_at),
            )
            connection.execute("COMMIT")
            return True
        finally:
            connection.close()

    def _release(self) -> None:
        connection = self._connect()
        try:
            connection.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (self._name, self.holder))
        finally:
            connection.close()

# -*- test-case-name: tests.test_revocation,tests.test_revocation_redis -*-
"""Revoked tokens, families and subjects, and spent refresh tokens, shared by every process.

A revocation names one token (its ``jti``), a refresh family (``fam``: every
access and refresh token of it) or a subject (every token of that ``sub``
issued before a cut-off).  An :class:`IRevocationStore` keeps them where
every process sees them: :class:`SqliteRevocationStore` in
``<data_dir>/auth.sqlite3`` (one host), :class:`RedisRevocationStore` in Redis
(many hosts); it also marks refresh tokens spent, atomically, which is how a
reused refresh token is detected.  Each process answers "is this token
revoked?" from a :class:`RevocationCache`, an in-memory
:class:`RevocationSnapshot` refreshed by polling a version counter, so the
check costs no I/O.  Entries are kept until the tokens they concern would
have expired anyway, then purged.  This module must never hold, log or
return a token (only its ``jti``, family id and ``sub``), never let a
failing store stop the cache from answering (it keeps the last snapshot),
and never put a raw token-chosen string into a Redis key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from streamsrv.auth.principal import Principal
from streamsrv.auth.revocationsignal import RevocationSignal
from streamsrv.db.sqlitepool import sqlite_pool
from streamsrv.health.checks import DEGRADED, OK, CheckResult
from streamsrv.redisconn import RedisConnection
from streamsrv.service import PeriodicService

__all__ = [
    "AUTH_DB_FILE",
    "POLL_INTERVAL_S",
    "REVOCATION_RETENTION_S",
    "IRevocationStore",
    "RedisRevocationStore",
    "RevocationCache",
    "RevocationSnapshot",
    "RevocationStoreService",
    "SqliteRevocationStore",
]

log = Logger()

_T = TypeVar("_T")

#: The SQLite file in ``STREAMSRV_DATA_DIR`` that holds revocations and spent refresh tokens.
AUTH_DB_FILE: Final = "auth.sqlite3"

#: How long a subject revocation is kept, and the lifetime assumed for a token
#: revoked by ``jti`` alone (its ``exp`` unknown): a year, longer than any
#: token streamsrv issues.  A token living longer would outlive its revocation.
REVOCATION_RETENTION_S: Final = 366 * 24 * 3600

#: How often a :class:`RevocationCache` asks the store whether anything changed.
POLL_INTERVAL_S: Final = 1.0

#: Expired SQLite rows are deleted by the next write at most this often.
PURGE_INTERVAL_S: Final = 60.0

#: How long a Redis command may take before it counts as failed.  Redis
#: commands wait while the connection is down, so every one has this timeout.
REDIS_TIMEOUT_S: Final = 2.0

#: The version of a cache that has not loaded a snapshot yet; stores count from 0.
UNLOADED: Final = -1


# --- the snapshot -------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationSnapshot:
    """
    Everything revoked and still relevant, as of one version of the store.

    :ivar version: The store's version counter when this was read.
    :ivar tokens: Revoked ``jti`` values.
    :ivar families: Revoked refresh families (``fam``).
    :ivar subjects: For each revoked ``sub``, the cut-off: its tokens with an
        ``iat`` before it are revoked.
    """

    version: int
    tokens: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset()
    subjects: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", MappingProxyType(dict(self.subjects)))

    def revokes(self, principal: Principal) -> bool:
        """
        Whether *principal*'s token is revoked: its ``jti`` is, or its family
        is, or its subject is and the token was issued before the cut-off (a
        token without ``iat`` cannot show it was issued after, so it is).

        Meant for JWT principals; a signed URL has neither ``jti`` nor family.
        """
        if principal.token_id is not None and principal.token_id in self.tokens:
            return True
        if principal.family is not None and principal.family in self.families:
            return True
        cutoff = self.subjects.get(principal.sub)
        return cutoff is not None and (principal.issued_at is None or principal.issued_at < cutoff)

    def with_token(self, jti: str) -> RevocationSnapshot:
        """This snapshot plus a revoked ``jti`` (same version)."""
        return replace(self, tokens=self.tokens | {jti})

    def with_family(self, family: str) -> RevocationSnapshot:
        """This snapshot plus a revoked family (same version)."""
        return replace(self, families=self.families | {family})

    def with_subject(self, sub: str, before: float) -> RevocationSnapshot:
        """This snapshot plus a subject cut-off (the later one wins; same version)."""
        subjects = dict(self.subjects)
        subjects[sub] = max(before, subjects.get(sub, before))
        return replace(self, subjects=subjects)


# --- the stores ------------------------------------------------------------------------


class IRevocationStore(Interface):
    """
    Where revocations and spent refresh tokens live, shared by every process.

    Times are Unix seconds.  An entry whose ``expires_at`` has passed is no
    longer relevant (its tokens are expired) and is purged.
    """

    def start() -> Deferred[None]:
        """Prepare the store (create the schema…); operations may be issued before it fires."""

    def close() -> Deferred[None]:
        """Release the store's resources; no operation may follow."""

    def revoke_token(jti: str, expires_at: float) -> Deferred[None]:  # noqa: N805 - zope interface
        """Revoke one token, kept until *expires_at* (when it would expire anyway)."""

    def revoke_subject(sub: str, before: float) -> Deferred[None]:  # noqa: N805 - zope interface
        """Revoke every token of *sub* with ``iat`` < *before*; kept :data:`REVOCATION_RETENTION_S`."""

    def revoke_family(family: str, expires_at: float) -> Deferred[None]:  # noqa: N805 - zope interface
        """Revoke every token carrying ``fam`` = *family*, kept until *expires_at*."""

    def spend_refresh(jti: str, family: str, expires_at: float) -> Deferred[bool]:  # noqa: N805 - zope interface
        """
        Atomically mark a refresh token spent (remembered until *expires_at*):
        ``True`` the first time, ``False`` on every later attempt, from any process.
        """

    def snapshot() -> Deferred[RevocationSnapshot]:
        """Everything revoked and still relevant, with the version it was read at."""

    def version() -> Deferred[int]:
        """A counter that changes on every revocation; cheap to poll."""


_SQLITE_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS revoked_token (jti TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revoked_token_expiry ON revoked_token (expires_at)",
    "CREATE TABLE IF NOT EXISTS revoked_family (family TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revoked_family_expiry ON revoked_family (expires_at)",
    "CREATE TABLE IF NOT EXISTS revoked_subject"
    " (sub TEXT PRIMARY KEY, cutoff REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revoked_subject_expiry ON revoked_subject (expires_at)",
    "CREATE TABLE IF NOT EXISTS spent_refresh"
    " (jti TEXT PRIMARY KEY, family TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS spent_refresh_expiry ON spent_refresh (expires_at)",
    "CREATE TABLE IF NOT EXISTS revocation_version"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO revocation_version (id, version) VALUES (1, 0)",
)

_SQLITE_TABLES: Final = ("revoked_token", "revoked_family", "revoked_subject", "spent_refresh")

_BUMP_VERSION: Final = "UPDATE revocation_version SET version = version + 1 WHERE id = 1"


@implementer(IRevocationStore)
class SqliteRevocationStore:
    """
    Revocations in a SQLite file that every process on the host shares.

    Runs SQLite in a one-thread :class:`twisted.enterprise.adbapi.ConnectionPool`
    (WAL, ``busy_timeout``); every write is one ``BEGIN IMMEDIATE``
    transaction, so processes serialise on the file's lock, and a revocation
    bumps the version in the same transaction.  Expired rows are deleted by
    writes (at most every :data:`PURGE_INTERVAL_S`) and by :meth:`purge`.
    """

    def __init__(self, path: Path, clock: IReactorTime, *, reactor: Any) -> None:
        """
        :param path: The database file, usually ``<data_dir>/auth.sqlite3``;
            its directory is created if missing.
        :param clock: Tells the time (what has expired).
        :param reactor: Runs the database thread (``IReactorThreads``; often
            *clock* itself).
        """
        self.path = path
        self._clock = clock
        self._last_purge = -math.inf
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None
        self._closed = False

    def start(self) -> Deferred[None]:
        """Open the database (its thread starts here, not in the constructor) and create the tables."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._pool is None:
            self._pool = sqlite_pool(self.path, self._reactor)
        return self._db().runInteraction(self._create)

    def close(self) -> Deferred[None]:
        if not self._closed:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
        return succeed(None)

    def _db(self) -> adbapi.ConnectionPool:
        if self._pool is None or self._closed:
            raise RuntimeError("the revocation store is not open")
        return self._pool

    @staticmethod
    def _create(txn: Any) -> None:
        txn.execute("BEGIN IMMEDIATE")
        for statement in _SQLITE_SCHEMA:
            txn.execute(statement)

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]], *, bump: bool) -> Deferred[int]:
        """
        Run *statements* in one write transaction (purging first when due);
        fires with the row count of the last one.
        """
        now = self._clock.seconds()
        purge = now - self._last_purge >= PURGE_INTERVAL_S
        if purge:
            self._last_purge = now

        def interaction(txn: Any) -> int:
            txn.execute("BEGIN IMMEDIATE")
            if purge:
                self._delete_expired(txn, now)
            count = 0
            for sql, args in statements:
                txn.execute(sql, args)
                count = txn.rowcount
            if bump:
                txn.execute(_BUMP_VERSION)
            return count

        d: Deferred[int] = self._db().runInteraction(interaction)
        return d

    @staticmethod
    def _delete_expired(txn: Any, now: float) -> int:
        removed = 0
        for table in _SQLITE_TABLES:
            txn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))  # noqa: S608 (fixed names)
            removed += txn.rowcount
        return removed

    def purge(self) -> Deferred[int]:
        """
        Delete every expired row now.

        :return: A Deferred firing with the number of rows deleted.
        """
        now = self._clock.seconds()
        self._last_purge = now

        def interaction(txn: Any) -> int:
            txn.execute("BEGIN IMMEDIATE")
            return self._delete_expired(txn, now)

        d: Deferred[int] = self._db().runInteraction(interaction)
        return d

    def revoke_token(self, jti: str, expires_at: float) -> Deferred[None]:
        sql = (
            "INSERT INTO revoked_token (jti, expires_at) VALUES (?, ?) "
            "ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)"
        )
        return _discard(self._write([(sql, (jti, _finite(expires_at, "expires_at")))], bump=True))

    def revoke_family(self, family: str, expires_at: float) -> Deferred[None]:
        sql = (
            "INSERT INTO revoked_family (family, expires_at) VALUES (?, ?) "
            "ON CONFLICT (family) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)"
        )
        return _discard(self._write([(sql, (family, _finite(expires_at, "expires_at")))], bump=True))

    def revoke_subject(self, sub: str, before: float) -> Deferred[None]:
        sql = (
            "INSERT INTO revoked_subject (sub, cutoff, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (sub) DO UPDATE SET cutoff = max(cutoff, excluded.cutoff), "
            "expires_at = max(expires_at, excluded.expires_at)"
        )
        cutoff = _finite(before, "before")
        args = (sub, cutoff, cutoff + REVOCATION_RETENTION_S)
        return _discard(self._write([(sql, args)], bump=True))

    def spend_refresh(self, jti: str, family: str, expires_at: float) -> Deferred[bool]:
        # An expired row still present (not purged yet) is taken over: its token has expired.
        sql = (
            "INSERT INTO spent_refresh (jti, family, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (jti) DO UPDATE SET family = excluded.family, expires_at = excluded.expires_at "
            "WHERE spent_refresh.expires_at <= ?"
        )
        now = self._clock.seconds()
        d = self._write([(sql, (jti, family, _finite(expires_at, "expires_at"), now))], bump=False)
        return d.addCallback(lambda count: count == 1)

    def snapshot(self) -> Deferred[RevocationSnapshot]:
        now = self._clock.seconds()

        def interaction(txn: Any) -> RevocationSnapshot:
            txn.execute("BEGIN")  # one read transaction: the version and the rows agree
            txn.execute("SELECT version FROM revocation_version WHERE id = 1")
            version = int(txn.fetchone()[0])
            txn.execute("SELECT jti FROM revoked_token WHERE expires_at > ?", (now,))
            tokens = frozenset(row[0] for row in txn.fetchall())
            txn.execute("SELECT family FROM revoked_family WHERE expires_at > ?", (now,))
            families = frozenset(row[0] for row in txn.fetchall())
            txn.execute("SELECT sub, cutoff FROM revoked_subject WHERE expires_at > ?", (now,))
            subjects = {row[0]: float(row[1]) for row in txn.fetchall()}
            return RevocationSnapshot(version, tokens, families, subjects)

        d: Deferred[RevocationSnapshot] = self._db().runInteraction(interaction)
        return d

    def version(self) -> Deferred[int]:
        d: Deferred[list[tuple[int]]] = self._db().runQuery(
            "SELECT version FROM revocation_version WHERE id = 1"
        )
        return d.addCallback(lambda rows: int(rows[0][0]))


def _finite(value: float, name: str) -> float:
    """*value* as a float; :raise ValueError: if it is not a finite number."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number of Unix seconds")
    return number


def _discard(d: Deferred[Any]) -> Deferred[None]:
    return d.addCallback(lambda _: None)


#: Add *member* to the sorted set KEYS[1] with score ARGV[2] unless it is
#: there with a later one, drop members scored up to ARGV[3] (expired), and
#: bump the version KEYS[2]; all in one atomic step.
_REDIS_REVOKE: Final = """
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not current) or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return redis.call('INCR', KEYS[2])
"""

#: The version and every relevant member, read atomically.  KEYS: version,
#: tokens, families, subjects; ARGV: now, the oldest relevant subject cut-off.
_REDIS_SNAPSHOT: Final = """
local version = redis.call('GET', KEYS[1]) or '0'
return {
  version,
  redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf'),
  redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf'),
  redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[2], '+inf', 'WITHSCORES')
}
"""


def _score(value: float) -> str:
    return repr(float(value))


@implementer(IRevocationStore)
class RedisRevocationStore:
    """
    Revocations in Redis, shared by every process using the same prefix.

    Keys under *key_prefix*: ``version`` (a counter, ``INCR`` on every
    revocation), sorted sets ``tokens`` and ``families`` (member: the
    ``jti``/family, score: ``expires_at``) and ``subjects`` (score: the
    cut-off), and ``spent:<sha256 of jti>`` strings set with ``SET NX PX``.
    A revocation and its version bump run in one Lua script, which also drops
    the set's expired members; the snapshot is read in one script.  Every
    command fails after *timeout_s* rather than wait for a Redis that is away.
    """

    def __init__(
        self,
        redis: RedisConnection,
        clock: IReactorTime,
        *,
        key_prefix: str = "streamsrv:rev:",
        timeout_s: float = REDIS_TIMEOUT_S,
        on_close: Callable[[], Deferred[Any]] | None = None,
    ) -> None:
        """
        :param redis: A txredisapi connection (``RedisService.connection``).
        :param clock: Tells the time (what has expired) and times commands out.
        :param key_prefix: Prefix of every key.
        :param timeout_s: Longest wait for a reply.
        :param on_close: Called by :meth:`close`, e.g. to disconnect a
            connection this store owns.
        """
        self._redis = redis
        self._clock = clock
        self._prefix = key_prefix
        self._timeout_s = timeout_s
        self._on_close = on_close
        self._version_key = f"{key_prefix}version"
        self._tokens_key = f"{key_prefix}tokens"
        self._families_key = f"{key_prefix}families"
        self._subjects_key = f"{key_prefix}subjects"

    def start(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        on_close, self._on_close = self._on_close, None
        if on_close is None:
            return succeed(None)
        return _discard(on_close())

    def _timed(self, d: Deferred[_T]) -> Deferred[_T]:
        return d.addTimeout(self._timeout_s, self._clock)

    def _revoke(self, key: str, member: str, score: float, drop_through: float) -> Deferred[None]:
        args = [member, _score(_finite(score, "expires_at")), _score(drop_through)]
        return _discard(self._timed(self._redis.eval(_REDIS_REVOKE, [key, self._version_key], args)))

    def revoke_token(self, jti: str, expires_at: float) -> Deferred[None]:
        return self._revoke(self._tokens_key, jti, expires_at, self._clock.seconds())

    def revoke_family(self, family: str, expires_at: float) -> Deferred[None]:
        return self._revoke(self._families_key, family, expires_at, self._clock.seconds())

    def revoke_subject(self, sub: str, before: float) -> Deferred[None]:
        oldest = self._clock.seconds() - REVOCATION_RETENTION_S
        return self._revoke(self._subjects_key, sub, before, oldest)

    def spent_key(self, jti: str) -> str:
        """The key marking *jti* spent (hashed: a ``jti`` is chosen by whoever minted the token)."""
        return f"{self._prefix}spent:{hashlib.sha256(jti.encode('utf-8')).hexdigest()}"

    def spend_refresh(self, jti: str, family: str, expires_at: float) -> Deferred[bool]:
        ttl_ms = max(1, math.ceil((_finite(expires_at, "expires_at") - self._clock.seconds()) * 1000))
        d = self._redis.set(self.spent_key(jti), family, pexpire=ttl_ms, only_if_not_exists=True)
        return self._timed(d).addCallback(lambda reply: reply is not None)

    def snapshot(self) -> Deferred[RevocationSnapshot]:
        now = self._clock.seconds()
        keys = [self._version_key, self._tokens_key, self._families_key, self._subjects_key]
        d = self._redis.eval(_REDIS_SNAPSHOT, keys, [_score(now), _score(now - REVOCATION_RETENTION_S)])

        def parse(reply: list[Any]) -> RevocationSnapshot:
            version, tokens, families, flat = reply
            subjects = {str(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
            return RevocationSnapshot(
                int(version), frozenset(map(str, tokens)), frozenset(map(str, families)), subjects
            )

        return self._timed(d).addCallback(parse)

    def version(self) -> Deferred[int]:
        d = self._redis.get(self._version_key)
        return self._timed(d).addCallback(lambda reply: 0 if reply is None else int(reply))


# --- the per-process cache --------------------------------------------------------------


class RevocationCache(PeriodicService):
    """
    This process's view of the revocations, answering without I/O.

    Holds a :class:`RevocationSnapshot`; every *interval_s* (a
    :class:`~streamsrv.service.PeriodicService`, first poll at start) it asks the store
    for its version and reloads the snapshot when it changed.  Revocations
    made through this cache are written to the store and then applied to the
    snapshot at once.  While the store fails, the last snapshot stays in
    force; the outage is logged once (``event_kind="degraded"``) and its end
    once.  Until the first load, nothing is revoked: await :meth:`update`
    before serving if that matters (``/health/ready``: :attr:`loaded`).

    With a *signal* (the host's doorbell,
    :mod:`~streamsrv.auth.revocationsignal`) a revocation stored here rings
    it, and :meth:`current` tells a caller that another process of the host
    has stored one since this cache last looked: :meth:`catch_up` then
    reloads before the caller trusts :meth:`is_revoked`.
    """

    def __init__(
        self,
        store: IRevocationStore,
        clock: IReactorTime,
        interval_s: float = POLL_INTERVAL_S,
        *,
        signal: RevocationSignal | None = None,
    ) -> None:
        """
        :param store: Where revocations are kept.
        :param clock: Times the polls.
        :param interval_s: Seconds between polls.
        :param signal: The doorbell shared with the host's other processes
            (closed when this service stops), or ``None``.
        """
        super().__init__(
            interval_s, self.update, clock=clock, name="revocations", what="revocations: the poll"
        )
        self._store = store
        self._snapshot = RevocationSnapshot(UNLOADED)
        self._generation = 0  # bumped whenever the snapshot is replaced
        self._degraded = False
        self._signal = signal
        self._seen = signal.read() if signal is not None else b""
        self._waiting: list[Deferred[None]] = []

    @property
    def snapshot(self) -> RevocationSnapshot:
        """What is in force now."""
        return self._snapshot

    @property
    def loaded(self) -> bool:
        """Whether a snapshot has been read from the store at least once."""
        return self._snapshot.version != UNLOADED

    @property
    def degraded(self) -> bool:
        """Whether the last attempt to reach the store failed (the last snapshot is in force)."""
        return self._degraded

    def current(self) -> bool:
        """
        Whether no process of the host has stored a revocation since this
        cache last looked (always ``True`` without a doorbell); a memory read.
        """
        signal = self._signal
        return signal is None or signal.read() == self._seen

    def catch_up(self) -> Deferred[None]:
        """
        Reload from the store because the doorbell rang (one reload for
        every caller waiting meanwhile).  Never fails: like :meth:`update`,
        a failing store leaves the snapshot in force (and is not asked again
        until the next ring or poll).
        """
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            Deferred.fromCoroutine(self._reload())
        return waiter

    async def _reload(self) -> None:
        seen = self._signal.read() if self._signal is not None else b""
        try:
            await self.update()
        finally:
            self._seen = seen
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)

    def stopService(self) -> Deferred[None]:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.close()
        return super().stopService()

    def is_revoked(self, principal: Principal) -> bool:
        """Whether *principal*'s token is revoked, by the snapshot in force (no I/O)."""
        return self._snapshot.revokes(principal)

    def check(self) -> CheckResult:
        """For ``/health/detailed``: failing until loaded, degraded while the store fails."""
        detail: dict[str, object] = {"version": self._snapshot.version, "loaded": self.loaded}
        if not self.loaded:
            return CheckResult(DEGRADED, {**detail, "state": "loading"})
        return CheckResult(DEGRADED if self._degraded else OK, detail)

    async def update(self) -> bool:
        """
        Ask the store now, reloading the snapshot if its version changed.

        Never raises: a failure is logged (once per outage) and the snapshot
        in force is kept.

        :return: Whether the store answered.
        """
        generation = self._generation
        try:
            version = await self._store.version()
            if version != self._snapshot.version:
                snapshot = await self._store.snapshot()
                # A revocation made here while reading wins; the next poll reloads.
                if generation == self._generation:
                    self._replace(snapshot)
        except Exception:
            self._failed(Failure())
            return False
        if self._degraded:
            self._degraded = False
            log.info("revocations: the store answers again; version {version}", version=version)
        return True

    def _failed(self, failure: Failure) -> None:
        if self._degraded:
            return
        self._degraded = True
        log.warn(
            "revocations: the store failed ({error}); the last snapshot (version {version}) stays in force",
            error=f"{type(failure.value).__name__}: {failure.value}",
            version=self._snapshot.version,
            event_kind="degraded",
        )

    def _replace(self, snapshot: RevocationSnapshot) -> None:
        self._snapshot = snapshot
        self._generation += 1

    async def _write_through(
        self, write: Callable[[], Deferred[None]], local: Callable[[], RevocationSnapshot]
    ) -> None:
        try:
            await write()
        finally:
            # Applied even when the store failed, so this process enforces it meanwhile.
            self._replace(local())
        if self._signal is not None:
            self._signal.ring()  # the host's other processes reload before trusting their snapshot

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Revoke one token in the store, then here.  :raise Exception: From the store."""
        await self._write_through(
            lambda: self._store.revoke_token(jti, expires_at), lambda: self._snapshot.with_token(jti)
        )

    async def revoke_subject(self, sub: str, before: float) -> None:
        """Revoke a subject's tokens issued before *before*, in the store, then here."""
        await self._write_through(
            lambda: self._store.revoke_subject(sub, before), lambda: self._snapshot.with_subject(sub, before)
        )

    async def revoke_family(self, family: str, expires_at: float) -> None:
        """Revoke a refresh family in the store, then here."""
        await self._write_through(
            lambda: self._store.revoke_family(family, expires_at), lambda: self._snapshot.with_family(family)
        )


class RevocationStoreService(Service):
    """
    Starts a store with the application and closes it at the end.

    Put it in the service tree before the :class:`RevocationCache` that
    reads the store, so the store is closed after the cache stops.
    """

    def __init__(self, store: IRevocationStore) -> None:
        self.setName("revocation-store")
        self.store = store

    def startService(self) -> None:
        super().startService()
        self.store.start().addErrback(lambda f: log.failure("revocations: the store did not start", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()

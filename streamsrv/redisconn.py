# -*- test-case-name: tests.test_ratelimit_redis -*-
"""One way to reach Redis: a txredisapi connection built from ``STREAMSRV_REDIS_URL``.

Rate limits, revocations, refresh-token families and the event hub share Redis
between processes; this module turns the configured URL (``redis://``,
``rediss://`` or ``unix://``) into a lazy, self-reconnecting txredisapi
connection and into a :class:`RedisService` that opens it when the
application starts and closes it when it stops.  A connection is usable at
once: commands issued while Redis is away wait for it to come back, so callers
put their own timeout on every command (see ``ratelimit.RedisRateLimiter``).
This module must never log or repr a password, and never import txredisapi at
module level (txredisapi imports the global reactor when it is imported).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: The port of ``redis://host`` when none is given.
DEFAULT_PORT = 6379

#: How long a TCP (or UNIX socket) connection attempt may take.
CONNECT_TIMEOUT_S = 2.0

#: How long txredisapi waits for a reply before it drops the connection.
#: Callers use shorter timeouts of their own; this one unsticks a connection
#: to a server that accepted it and then hung.
REPLY_TIMEOUT_S = 5.0

#: First delay before reconnecting after a lost connection; it grows up to
#: :data:`RETRY_MAX_S`.
RETRY_INITIAL_S = 0.5

#: Longest delay between reconnection attempts while Redis is away.
RETRY_MAX_S = 5.0

#: Connections per process.  Commands are pipelined on each, so a few suffice.
POOL_SIZE = 2

#: What streamsrv code holds: txredisapi's connection handler, on which each
#: Redis command is a method returning a Deferred (``ping()``, ``get(key)``,
#: ``evalsha(sha, keys, args)``…).  txredisapi has no type information.
RedisConnection = Any


@dataclass(frozen=True)
class RedisTarget:
    """
    Where Redis is and how to log in, parsed from a URL.

    :ivar tls: ``rediss://``: TLS, verifying the server's certificate for
        ``host`` against the platform's trust store.
    :ivar host: For ``redis://`` and ``rediss://``.
    :ivar port: For ``redis://`` and ``rediss://``.
    :ivar path: The socket of ``unix://``.
    :ivar db: The database number, or ``None`` for the server's default.
    """

    host: str | None = None
    port: int = DEFAULT_PORT
    path: str | None = None
    db: int | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """
        Where this target points, for logs: never the credentials.
        """
        if self.path is not None:
            where = f"unix://{self.path}"
        else:
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            where = f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}"
        return where if self.db is None else f"{where}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """
    Parse ``STREAMSRV_REDIS_URL``.

    Accepted forms, as redis-py and most Redis clients spell them:
    ``redis://[[user]:password@]host[:port][/db]``, the same with ``rediss://``
    for TLS, and ``unix://[[user]:password@]/path/to/socket[?db=N]``.
    User and password are percent-decoded; ``?password=`` is accepted too.

    :raise ValueError: If the URL is none of these; the message never
        contains the password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid Redis URL") from None
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is None and "password" in query:
        password = query["password"][-1]
    db_text = query["db"][-1] if "db" in query else ""
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a Redis URL needs a host, as in redis://host:6379/0")
        path_db = parts.path.strip("/")
        db_text = path_db or db_text
        target_path = None
        host: str | None = parts.hostname
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path, as in unix:///run/redis/redis.sock")
        target_path = parts.path
        host = None
    else:
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    if db_text and not (db_text.isascii() and db_text.isdigit()):
        raise ValueError("the Redis database must be a number")
    return RedisTarget(
        host=host,
        port=port if port is not None else DEFAULT_PORT,
        path=target_path,
        db=int(db_text) if db_text else None,
        tls=parts.scheme == "rediss",
        username=username,
        password=password,
    )


def endpoint_for(target: RedisTarget, reactor: Any, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """
    A client endpoint reaching *target* (TCP, TLS over TCP, or a UNIX socket).

    Exposed for parts that need a txredisapi factory of their own (the pub/sub
    subscriber of the event hub).

    :param reactor: Providing ``IReactorTCP``/``IReactorUNIX`` and ``IReactorTime``.
    """
    endpoint: IStreamClientEndpoint
    if target.path is not None:
        endpoint = UNIXClientEndpoint(reactor, target.path, timeout=connect_timeout_s)
        return endpoint
    assert target.host is not None
    endpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=connect_timeout_s)
    if target.tls:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(target.host), endpoint)
    return endpoint


@functools.cache
def _txredisapi_classes() -> tuple[Any, Any]:
    """
    txredisapi's factory and protocol, minus one trap.

    When the connection is lost (or times out) during the AUTH or SELECT that
    open every connection, txredisapi stops reconnecting for good, as if the
    password had been refused: a Redis restart at the wrong moment would cut
    this process off from Redis until it restarts.  These subclasses keep
    reconnecting in that case; a refused password still stops (it needs a fix).
    """
    import txredisapi

    class Protocol(txredisapi.RedisProtocol):
        def auth(self, password: str, username: str | None = None) -> Deferred[Any]:
            return self._setup_step(super().auth(password, username))

        def select(self, index: int) -> Deferred[Any]:
            return self._setup_step(super().select(index))

        def _setup_step(self, d: Deferred[Any]) -> Deferred[Any]:
            def lost(failure: Failure) -> Failure:
                if failure.check(txredisapi.ConnectionError):
                    self.factory.lost_during_setup = True
                return failure

            return d.addErrback(lost)

    class Factory(txredisapi.RedisFactory):
        protocol = Protocol
        lost_during_setup = False

        def stopTrying(self) -> Deferred[Any]:
            if self.lost_during_setup:
                self.lost_during_setup = False
                return succeed(None)
            result: Deferred[Any] = super().stopTrying()
            return result

    return Factory, txredisapi


def _make_factory(
    target: RedisTarget,
    *,
    pool_size: int,
    reply_timeout_s: float,
    retry_initial_s: float,
    retry_max_s: float,
    convert_numbers: bool,
) -> Any:
    factory_class, txredisapi = _txredisapi_classes()
    handler = txredisapi.UnixConnectionHandler if target.path is not None else txredisapi.ConnectionHandler
    factory = factory_class(
        target.describe(),
        target.db or None,  # 0 is the default: no SELECT needed
        pool_size,
        isLazy=True,
        handler=handler,
        charset="utf-8",
        password=target.password,
        replyTimeout=reply_timeout_s,
        convertNumbers=convert_numbers,
        username=target.username,
    )
    factory.reconnect = True
    factory.initialDelay = retry_initial_s
    factory.maxDelay = retry_max_s

    def setup_failed(failure: Failure) -> None:
        # A lazy connection's first-connection Deferred has no other reader;
        # txredisapi fails it when setting up a connection (AUTH, SELECT) fails.
        if factory.disconnectCalled:
            return
        if factory.stopped:
            log.error(
                "Redis at {where} refused the connection, giving up: {why}",
                where=target.describe(),
                why=failure.getErrorMessage(),
            )
        else:
            log.warn(
                "Redis at {where}: a connection was lost while being set up, retrying: {why}",
                where=target.describe(),
                why=failure.getErrorMessage(),
            )

    factory.deferred.addErrback(setup_failed)
    return factory


class RedisService(Service):
    """
    Owns this process's Redis connection: connects on start, closes on stop.

    :attr:`connection` exists from construction, so the parts built before the
    application starts can hold it; commands sent before the service starts,
    or while Redis is away, wait until a connection is up.  A stopped service
    cannot be started again.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        pool_size: int = POOL_SIZE,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        convert_numbers: bool = False,
    ) -> None:
        """
        :param url: ``STREAMSRV_REDIS_URL``; see :func:`parse_redis_url`.
        :param reactor: Provides ``IReactorTCP`` (or ``IReactorUNIX``) and
            ``IReactorTime``, for connecting.  txredisapi itself schedules its
            reconnections and reply timeouts on the global reactor.
        :param convert_numbers: Let txredisapi turn replies that look like
            numbers into ``int``/``float``.  Off by default: values come back as
            the ``str`` that was stored (integer replies are ``int`` either way).
        :raise ValueError: If the URL is not valid.
        """
        self.setName("redis")
        self.target = parse_redis_url(url)
        self._endpoint = endpoint_for(self.target, reactor, connect_timeout_s)
        self._factory = _make_factory(
            self.target,
            pool_size=pool_size,
            reply_timeout_s=reply_timeout_s,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
            convert_numbers=convert_numbers,
        )
        self.connection: RedisConnection = self._factory.handler
        self._started = False

    def startService(self) -> None:
        if self._started:
            raise RuntimeError("a RedisService cannot be started twice")
        self._started = True
        super().startService()
        self._factory.startConnecting(self._endpoint)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d: Deferred[None] = self._factory.disconnect()
        return d


def connect_redis(url: str, reactor: Any, **options: Any) -> RedisConnection:
    """
    Open a Redis connection outside any service (CLI commands, tests).

    It starts connecting now and is returned at once; close it with
    ``connection.disconnect()``, which returns a Deferred that fires once every
    connection is closed.

    :param options: As for :class:`RedisService`.
    :raise ValueError: If the URL is not valid.
    """
    service = RedisService(url, reactor, **options)
    service.startService()
    return service.connection

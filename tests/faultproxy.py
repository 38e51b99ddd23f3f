"""A TCP forwarder a fault test can cut and restore: the network between the daemon and a service.

:class:`FaultProxy` listens on a free port of 127.0.0.1 and forwards every
connection to a real service (PostgreSQL, Redis).  :meth:`FaultProxy.cut`
stops listening and aborts every forwarded connection, as a service that
went away does (new connections are refused, established ones reset);
:meth:`FaultProxy.restore` listens again on the same port.  It runs in the
reactor of the test that owns it; the code under test talks to it from any
thread.  It never touches the service itself, so a shared server is safe.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol

__all__ = ["FaultProxy"]


class _Upstream(Protocol):
    """The proxy's connection to the service, paired with one client connection."""

    peer: _Downstream

    def connectionMade(self) -> None:
        self.peer.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.peer.transport.loseConnection()


class _UpstreamFactory(ClientFactory):
    def __init__(self, peer: _Downstream) -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> _Upstream:
        upstream = _Upstream()
        upstream.peer = self.peer
        return upstream

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.peer.transport.abortConnection()


class _Downstream(Protocol):
    """A client's connection to the proxy; bytes wait until the service's side is up."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.connections.add(self)
        self.proxy.reactor.connectTCP(self.proxy.target_host, self.proxy.target_port, _UpstreamFactory(self))

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.proxy.connections.discard(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class FaultProxy:
    """Forwards 127.0.0.1:*port* to *target_host*:*target_port* until cut."""

    def __init__(self, reactor: Any, target_host: str, target_port: int) -> None:
        self.reactor = reactor
        self.target_host = target_host
        self.target_port = target_port
        self.connections: set[_Downstream] = set()
        self.port = 0
        self._listening: IListeningPort | None = None
        self.cuts = 0

    def _factory(self) -> Factory:
        return protocol.Factory.forProtocol(lambda: _Downstream(self))

    def start(self) -> int:
        """Listen (on a free port the first time, then on the same one); the port."""
        if self._listening is None:
            self._listening = self.reactor.listenTCP(self.port, self._factory(), interface="127.0.0.1")
            self.port = self._listening.getHost().port
        return self.port

    restore = start

    async def cut(self) -> None:
        """Refuse new connections and reset every established one."""
        self.cuts += 1
        listening, self._listening = self._listening, None
        if listening is not None:
            await listening.stopListening()
        for connection in list(self.connections):
            connection.abort()

    async def stop(self) -> None:
        """Cut for good (for cleanup)."""
        await self.cut()

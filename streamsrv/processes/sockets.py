# -*- test-case-name: tests.test_workers_processes -*-
"""The listening sockets the supervisor binds and its workers adopt.

The supervisor binds every ``--listen`` endpoint through its endpoint string
(:func:`bind_listeners`: TLS certificates, ``interface=``, IPv6 and
systemd's inherited sockets are resolved exactly as with one process), never
reads them, hands them to each worker as inherited descriptors 3, 4, …
(:func:`child_fds`) and closes only its own copy on stop
(:func:`close_shared`).  A worker listens on them with
:func:`adopted_endpoint` (``ssl:`` wraps the adopted socket in TLS in the
worker).  This module must never accept a connection in the supervisor,
never ``shutdown()`` a socket the workers still listen on, and never import
:mod:`streamsrv.tap`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

#: The worker's file descriptor of the first listening socket (the next ones follow).
FIRST_LISTEN_FD: Final = 3


#: Endpoint types a worker can adopt (``unix:`` is refused by the configuration).
SHAREABLE_ENDPOINTS: Final = ("tcp", "tcp6", "ssl", "systemd")


def child_fds(parent_fds: Sequence[int]) -> dict[int, int | str]:
    """``spawnProcess``'s ``childFDs``: the supervisor's pipe as stdin, output pipes, then the sockets.

    :param parent_fds: the supervisor's listening descriptors, in order.
    """
    mapping: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    for offset, fd in enumerate(parent_fds):
        mapping[FIRST_LISTEN_FD + offset] = fd
    return mapping


class _NoConnections(Factory):
    """The factory of the supervisor's ports, which never read: no connection is ever built."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None

    def logPrefix(self) -> str:
        """What Twisted's port messages call it (``… starting on 8080``)."""
        return "streamsrv supervisor (sockets for the workers)"


def close_shared(port: IListeningPort) -> Deferred[Any]:
    """Stop listening on *port* without ``shutdown()``: close only this process's descriptor.

    Twisted's ``tcp.Port`` shuts a socket it bound itself down before closing
    it, which ends the listening in every process holding the socket,
    whatever they are doing; the workers stop listening themselves.
    """
    if hasattr(port, "_shouldShutdown"):
        port._shouldShutdown = False  # tcp._SocketCloser's switch (no public one)
    stop: Callable[[], Any] = port.stopListening
    return maybeDeferred(stop)


def bind_listeners(reactor: Any, descriptions: Sequence[str]) -> list[IListeningPort]:
    """Bind every endpoint, then stop reading it: the sockets are for the workers.

    Binding through the endpoint strings keeps their meaning (``interface=``,
    ``backlog=``, IPv6, systemd's inherited descriptors; ``ssl:`` checks its
    key and certificate now, and binds a plain TCP socket the workers wrap).

    :param reactor: the supervisor's reactor.
    :param descriptions: ``STREAMSRV_LISTEN``'s endpoint strings.
    :return: the ports, in order, not reading.
    :raise error.CannotListenError: (or what the endpoint raises) when one
        cannot be bound; the ones already bound are closed first.
    """
    ports: list[IListeningPort] = []
    try:
        for description in descriptions:
            kind = description.split(":", 1)[0].strip().lower()
            if kind not in SHAREABLE_ENDPOINTS:
                raise ValueError(f"{description}: {kind}: endpoints cannot be shared by worker processes")
            outcome: list[Any] = []
            serverFromString(reactor, description).listen(_NoConnections()).addBoth(outcome.append)
            if not outcome:  # pragma: no cover - every shareable endpoint listens synchronously
                raise ValueError(f"{description}: the endpoint did not listen at once")
            if isinstance(outcome[0], Failure):
                outcome[0].raiseException()
            port = outcome[0]
            port.stopReading()
            ports.append(port)
    except BaseException:
        for port in ports:
            port.stopListening()
        raise
    return ports


def socket_family(fd: int) -> int:
    """The address family of the socket open at *fd* (without closing it)."""
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return int(probe.family)
    finally:
        probe.close()


class _InheritedSocketReactor:
    """A reactor for parsing one endpoint string in a worker: listening adopts the inherited socket.

    Everything but the ``listen*`` methods is the real reactor's.  The
    inherited descriptor is closed once adopted (the port holds its own
    duplicate), so that closing the port really stops this process listening.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> IListeningPort:
        return self._adopt(factory)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,  # noqa: N803 - IReactorSSL's name, passed by keyword
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def _adopt(self, factory: Any) -> IListeningPort:
        fdesc.setNonBlocking(self._fd)
        try:
            port: IListeningPort = self._reactor.adoptStreamPort(self._fd, socket_family(self._fd), factory)
        finally:
            os.close(self._fd)
        return port


def adopted_endpoints(
    reactor: Any, descriptions: Sequence[str], fds: Sequence[int]
) -> list[IStreamServerEndpoint]:
    """The endpoints a worker listens with: each of *descriptions* on its inherited socket, in order."""
    return [
        adopted_endpoint(reactor, description, fd) for description, fd in zip(descriptions, fds, strict=True)
    ]


def adopted_endpoint(reactor: Any, description: str, fd: int) -> IStreamServerEndpoint:
    """The endpoint a worker listens with: *description*'s meaning, on inherited socket *fd*.

    ``tcp:``/``tcp6:`` adopt the socket as it is; ``ssl:`` builds its TLS
    context here (key and certificate read by the worker) and wraps the
    adopted socket; ``systemd:`` adopts it as a plain socket.

    :raise ValueError: for an endpoint type workers cannot share.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "systemd":
        return AdoptedStreamServerEndpoint(reactor, fd, socket_family(fd))
    if kind in ("tcp", "tcp6", "ssl"):
        endpoint: IStreamServerEndpoint = serverFromString(_InheritedSocketReactor(reactor, fd), description)
        return endpoint
    raise ValueError(f"{description}: {kind}: endpoints cannot be shared by worker processes")

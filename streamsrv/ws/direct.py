# -*- test-case-name: tests.test_ws_direct -*-
"""Writing an event frame straight into a plain TCP socket, for the fan-out of one event to many sockets.

``transport.write`` on a Twisted TCP connection never writes: it buffers the
bytes, registers the descriptor with the reactor (an ``epoll_ctl``), and the
reactor writes them on its next turn through its dispatch machinery, then
unregisters the descriptor (another ``epoll_ctl``).  For one event to 5,000
sockets that is 15,000 system calls and as many reactor dispatches where one
``send`` each would do.  :func:`direct_transport` tells whether a transport
can take the shortcut (a plain, non-TLS :class:`twisted.internet.tcp.Server`,
nothing wrapped around it) and :func:`write` sends through it: straight into
the socket when the transport has nothing buffered, the rest (or all of it)
through ``transport.write`` as before, so the order of bytes, the transport's
buffer limit, its producer's pause and a connection error (found by the
reactor's next write, as before) stay Twisted's.

This module must never write to a transport with bytes buffered ahead (they
would be overtaken), a TLS transport, one being closed, or through anything
but the transport's own socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["direct_transport", "holds_back", "send_now", "write"]


def direct_transport(transport: Any) -> tcp.Server | None:
    """
    *transport* if :func:`write` may send through its socket: exactly a
    :class:`twisted.internet.tcp.Server` (no subclass, which might count or
    change what is written; no wrapper such as TLS), else ``None``.
    """
    if type(transport) is tcp.Server:
        return transport
    return None


def holds_back(transport: tcp.Server) -> bool:
    """Whether bytes for *transport* must wait behind its buffer (or it is TLS, closing or closed)."""
    return bool(
        transport.dataBuffer
        or transport._tempDataBuffer
        or transport.TLS
        or transport.disconnecting
        or transport._aborting
        or not transport.connected
        or transport._writeDisconnecting
        or transport._writeDisconnected
    )


def send_now(transport: tcp.Server, data: bytes) -> bool:
    """
    Send *data* through the socket of a *transport* that does not hold back
    (:func:`holds_back`); what the socket does not take now (all of it if it
    would block or fails) goes through ``transport.write``.

    :return: Whether all of *data* went straight into the socket (the
        transport still holds nothing).
    """
    try:
        sent = transport.socket.send(data)
    except OSError:
        # EAGAIN/ENOBUFS: nothing went; anything else (a reset peer): the
        # reactor's own write finds it and loses the connection, as before.
        transport.write(data)
        return False
    if sent < len(data):
        transport.write(data[sent:])
        return False
    return True


def write(transport: tcp.Server, data: bytes) -> bool:
    """
    What ``transport.write(data)`` does, sending at once when nothing is
    buffered ahead (:func:`send_now`), else through ``transport.write``.

    :return: Whether all of *data* went straight into the socket.
    """
    if holds_back(transport):
        transport.write(data)
        return False
    return send_now(transport, data)

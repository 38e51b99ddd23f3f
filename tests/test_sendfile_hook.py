"""``streamsrv.streaming.sendfile``: the Twisted TCP internals the sendfile hook relies on, pinned.

Every behaviour the module docstring lists is checked here on a real
``tcp.Server`` over loopback and the real reactor, so an upgrade of Twisted
that changes one of them fails these tests instead of corrupting responses:
the class of an accepted transport, the private buffer fields that hold
written bytes, the class's ``doWrite`` flushing them, the reactor calling an
instance attribute ``doWrite`` and losing the connection on what it returns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import abstract, defer, error, protocol, reactor, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from streamsrv.streaming.sendfile import TransportHook, qualifies


class ServerSide(protocol.Protocol):
    """The accepted end: hands its transport over, records connectionLost."""

    def __init__(self, connected: defer.Deferred[Any]) -> None:
        self.on_connect = connected
        self.lost: defer.Deferred[Any] = defer.Deferred()

    def connectionMade(self) -> None:
        self.on_connect.callback(self)

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.lost.callback(None)


class ClientSide(protocol.Protocol):
    """The connecting end: collects what arrives."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[Any] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.lost.callback(None)


class TransportHookTests(unittest.TestCase):
    """The hook on a real accepted TCP connection."""

    timeout = 20

    async def connect(self) -> tuple[ServerSide, ClientSide]:
        connected: defer.Deferred[Any] = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: ServerSide(connected))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = ClientSide()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, client)
        server: ServerSide = await connected

        async def close() -> None:
            server.transport.loseConnection()
            client.transport.loseConnection()
            await defer.DeferredList([server.lost, client.lost])

        self.addCleanup(lambda: defer.ensureDeferred(close()))
        return server, client

    async def until(self, predicate: Any) -> None:
        for _ in range(400):
            if predicate():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not reached in time")

    async def test_accepted_transport_qualifies(self) -> None:
        """An accepted plain-TCP connection's transport is exactly tcp.Server; others never qualify."""
        server, _ = await self.connect()
        self.assertIs(type(server.transport), tcp.Server)
        self.assertTrue(qualifies(server.transport))
        self.assertFalse(qualifies(StringTransport()))
        self.assertFalse(qualifies(None))

    async def test_buffer_fields(self) -> None:
        """Written bytes wait in dataBuffer/offset/_tempDataLen until the class's doWrite sends them."""
        server, client = await self.connect()
        transport = server.transport
        for name in ("dataBuffer", "offset", "_tempDataLen", "_tempDataBuffer"):
            self.assertTrue(hasattr(transport, name), name)
        self.assertIn("doWrite", vars(abstract.FileDescriptor))
        hook = TransportHook(transport)
        self.assertFalse(hook.pending())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(hook.pending())
        self.assertEqual(transport._tempDataLen, 19)
        self.assertIsNone(hook.flush())
        self.assertFalse(hook.pending())
        await self.until(lambda: client.received == b"HTTP/1.1 200 OK\r\n\r\n")

    async def test_reactor_calls_instance_do_write(self) -> None:
        """The reactor calls a doWrite set on the instance; release restores the class's."""
        server, client = await self.connect()
        transport = server.transport
        hook = TransportHook(transport)
        path = Path(self.mktemp())
        path.write_bytes(os.urandom(100_000))
        calls: list[int] = []
        sent = [0]

        with open(path, "rb") as fileobj:

            def do_write() -> object:
                calls.append(1)
                if hook.pending():
                    result = hook.flush()
                    if result is not None or hook.pending():
                        return result
                try:
                    sent[0] += hook.send(fileobj, sent[0], 100_000 - sent[0])
                except BlockingIOError:
                    pass
                if sent[0] < 100_000:
                    hook.wait_writable()
                else:
                    hook.release()
                return None

            transport.write(b"head:")
            hook.take(do_write)
            await self.until(lambda: sent[0] == 100_000)
        self.assertGreaterEqual(len(calls), 1)
        self.assertNotIn("doWrite", vars(transport))
        await self.until(lambda: len(client.received) == 100_005)
        self.assertEqual(client.received, b"head:" + path.read_bytes())
        hook.release()  # idempotent
        transport.write(b"after")  # Twisted's own doWrite is back
        await self.until(lambda: client.received.endswith(b"after"))

    async def test_do_write_error_loses_connection(self) -> None:
        """An exception returned by the hooked doWrite makes the reactor drop the connection."""
        server, _ = await self.connect()
        hook = TransportHook(server.transport)
        hook.take(lambda: error.ConnectionLost())
        await server.lost
        self.assertTrue(server.reason.check(error.ConnectionLost))

    async def test_release_when_bytes_remain(self) -> None:
        """Released with bytes still buffered, the transport goes on writing them its own way."""
        server, client = await self.connect()
        hook = TransportHook(server.transport)
        hook.take(lambda: None)
        server.transport.write(b"still queued")
        hook.release()
        await self.until(lambda: client.received == b"still queued")

    async def test_send_head_goes_straight_out(self) -> None:
        """send_head sends what it is given at once: nothing stays buffered, write is the class's again."""
        server, client = await self.connect()
        transport = server.transport
        hook = TransportHook(transport)
        hook.send_head(lambda: transport.writeSequence([b"HTTP/1.1 ", b"200 OK\r\n\r\n"]))
        self.assertFalse(hook.pending())
        self.assertNotIn("write", vars(transport))
        self.assertNotIn("writeSequence", vars(transport))
        await self.until(lambda: client.received == b"HTTP/1.1 200 OK\r\n\r\n")

    async def test_send_head_behind_buffered_bytes(self) -> None:
        """With bytes already buffered, send_head writes behind them: the order on the wire holds."""
        server, client = await self.connect()
        transport = server.transport
        hook = TransportHook(transport)
        transport.write(b"first;")
        hook.send_head(lambda: transport.write(b"second"))
        self.assertTrue(hook.pending())
        await self.until(lambda: client.received == b"first;second")

    async def test_send_head_rest_buffered(self) -> None:
        """What the socket does not take is buffered and sent by the transport after what it took."""
        server, client = await self.connect()
        transport = server.transport
        hook = TransportHook(transport)
        real = transport.socket

        class Short:
            def send(self, data: bytes, flags: int = 0) -> int:
                return real.send(data[:3], flags)

        transport.socket = Short()
        try:
            hook.send_head(lambda: transport.write(b"abcdef"))
        finally:
            transport.socket = real
        self.assertTrue(hook.pending())
        await self.until(lambda: client.received == b"abcdef")

"""Event frames written straight into the socket (:mod:`streamsrv.ws.direct`): the same bytes, the same rules.

:class:`DirectWriteTests` pins :func:`~streamsrv.ws.direct.write` against a
stub transport (when it may send itself, and what it leaves to
``transport.write``).  :class:`FanOutOverTcpTests` runs the real site on
127.0.0.1 with raw-socket clients that read the frames byte by byte: every
socket gets the same, well-formed frames in order, and a socket that does not
read is paused, has events dropped and is closed with 4008 as before, its
stream still whole and in order up to the close.  Nothing asserts on timing.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from streamsrv.auth.principal import Principal
from streamsrv.events.hub import SYSTEM_CHANNEL, InProcessHub
from streamsrv.ws import direct
from streamsrv.ws.limits import WsLimits
from streamsrv.ws.protocol import CLOSE_SLOW_CONSUMER, EventSocketFactory
from tests.sitehelpers import serve_websocket

TOKEN = "direct-write-token-51f0"


class _StubSocket:
    def __init__(self, takes: int | None = None, error: OSError | None = None) -> None:
        self.takes = takes
        self.error = error
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class _StubTransport:
    """The attributes of a ``tcp.Server`` that :func:`direct.write` reads, and a recording ``write``."""

    def __init__(self, sock: _StubSocket) -> None:
        self.socket = sock
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.TLS = False
        self.connected = 1
        self.disconnecting = 0
        self._aborting = False
        self._writeDisconnecting = False
        self._writeDisconnected = False
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


class DirectWriteTests(unittest.TestCase):
    """When ``direct.write`` sends into the socket itself, and what it leaves to ``transport.write``."""

    def write(self, transport: _StubTransport, data: bytes) -> None:
        direct.write(transport, data)  # type: ignore[arg-type]

    def test_idle_transport_sends_at_once(self) -> None:
        """Nothing buffered: one send into the socket, nothing through the transport's buffer."""
        transport = _StubTransport(_StubSocket())
        self.write(transport, b"frame")
        self.assertEqual(transport.socket.sent, [b"frame"])
        self.assertEqual(transport.written, [])

    def test_partial_send_buffers_the_rest(self) -> None:
        """What the socket does not take goes through ``transport.write``, in order."""
        transport = _StubTransport(_StubSocket(takes=3))
        self.write(transport, b"abcdefgh")
        self.assertEqual(transport.socket.sent, [b"abc"])
        self.assertEqual(transport.written, [b"defgh"])

    def test_would_block_or_error_leaves_it_all_to_the_transport(self) -> None:
        """EAGAIN, or a reset peer: every byte goes through ``transport.write`` (which finds the error)."""
        for error in (BlockingIOError(), ConnectionResetError(), BrokenPipeError()):
            transport = _StubTransport(_StubSocket(error=error))
            self.write(transport, b"frame")
            self.assertEqual(transport.written, [b"frame"], error)

    def test_buffered_bytes_are_never_overtaken(self) -> None:
        """With bytes already buffered (either buffer), the frame queues behind them."""
        for attribute, value in (("dataBuffer", b"old"), ("_tempDataBuffer", [b"old"])):
            transport = _StubTransport(_StubSocket())
            setattr(transport, attribute, value)
            self.write(transport, b"frame")
            self.assertEqual(transport.socket.sent, [], attribute)
            self.assertEqual(transport.written, [b"frame"], attribute)

    def test_tls_or_closing_transport_is_left_alone(self) -> None:
        """TLS started, closing, aborted, not connected, half-closed: ``transport.write`` decides."""
        for attribute, value in (
            ("TLS", True),
            ("disconnecting", 1),
            ("_aborting", True),
            ("connected", 0),
            ("_writeDisconnecting", True),
            ("_writeDisconnected", True),
        ):
            transport = _StubTransport(_StubSocket())
            setattr(transport, attribute, value)
            self.write(transport, b"frame")
            self.assertEqual(transport.socket.sent, [], attribute)
            self.assertEqual(transport.written, [b"frame"], attribute)

    def test_only_a_plain_tcp_server_transport_qualifies(self) -> None:
        """Exactly ``tcp.Server``: not a subclass, not a wrapper or an in-memory transport."""

        class Counting(tcp.Server):
            pass

        self.assertIsNone(direct.direct_transport(StringTransport()))
        self.assertIsNone(direct.direct_transport(Counting.__new__(Counting)))
        server = tcp.Server.__new__(tcp.Server)
        self.assertIs(direct.direct_transport(server), server)


def _handshake(url_port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", url_port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws?access_token=" + TOKEN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    return sock


def _masked(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Reader:
    """Reads one socket's bytes and splits them into (first byte, payload) frames, checking each header."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed")
        self.buf += data

    def frame(self) -> tuple[int, bytes]:
        while len(self.buf) < 2:
            self._more()
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "a server frame is never masked"
        n, start = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self._more()
            n, start = int.from_bytes(self.buf[2:4], "big"), 4
            assert n >= 126, "the shortest length encoding"
        elif n == 127:
            while len(self.buf) < 10:
                self._more()
            n, start = int.from_bytes(self.buf[2:10], "big"), 10
            assert n >= 65536, "the shortest length encoding"
        while len(self.buf) < start + n:
            self._more()
        payload, self.buf = self.buf[start : start + n], self.buf[start + n :]
        return b0, payload

    def message(self) -> dict[str, Any]:
        b0, payload = self.frame()
        assert b0 == 0x81, f"a final text frame, not {b0:#x}"
        message: dict[str, Any] = json.loads(payload)
        return message


class OverTcp(unittest.TestCase):
    """A ``/ws`` factory on a loopback port and raw clients; no tests of its own (a base to derive from)."""

    timeout = 60
    limits = WsLimits(auth_timeout_s=10, ping_interval_s=0, queue_max=4, max_dropped=8)

    def setUp(self) -> None:
        self.serve(self.limits)

    def serve(self, limits: WsLimits) -> None:
        """A factory with *limits* on an in-process hub, served on a free loopback port; admin token."""
        self.hub = InProcessHub()
        admin = Principal(sub="root", roles=frozenset({"admin"}), permissions=frozenset({"*"}), via="jwt")

        async def authenticate(token: str) -> Principal:
            assert token == TOKEN
            return admin

        self.limits = limits
        self.factory = EventSocketFactory(
            hub=self.hub, authenticate=authenticate, clock=reactor, limits=self.limits
        )
        url = serve_websocket(self, self.factory)
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.readers: list[_Reader] = []
        self.addCleanup(self.close_readers)

    async def close_readers(self) -> None:
        """Close the client sockets, wait for the server to see it, and cancel Autobahn's close timers
        (it leaves a closing handshake's timer behind when the peer just goes)."""
        protocols = list(self.factory.sockets) + getattr(self, "closed_protocols", [])
        for reader in self.readers:
            reader.sock.close()
        while self.factory.sockets:
            await deferLater(reactor, 0.01, lambda: None)
        for protocol in protocols:
            call = protocol.closeHandshakeTimeoutCall
            if call is not None:
                call.cancel()

    def open_subscribed(self, count: int) -> list[_Reader]:
        """*count* sockets, each authenticated (``ready``) and subscribed to ``system`` (in a thread)."""
        readers = []
        for _ in range(count):
            reader = _Reader(_handshake(self.port))
            self.readers.append(reader)
            assert reader.head().startswith(b"HTTP/1.1 101")
            assert reader.message()["type"] == "ready"
            reader.sock.sendall(_masked(b'{"type":"subscribe","data":{"channels":["system"]}}'))
            assert reader.message()["type"] == "subscribed"
            readers.append(reader)
        return readers


class FanOutOverTcpTests(OverTcp):
    """The real site on a loopback port, clients on raw sockets."""

    async def test_every_socket_gets_the_same_frames(self) -> None:
        """40 sockets, 30 events of 3 sizes: each socket reads the same byte-exact frames, in order."""
        readers = await deferToThread(self.open_subscribed, 40)
        self.assertEqual(len(self.factory.sockets), 40)
        self.assertTrue(all(s._direct is not None for s in self.factory.sockets))
        events = [{"type": "alert", "seq": n, "pad": "é" * (n * 200)} for n in range(30)]
        for event in events:
            self.hub.publish(SYSTEM_CHANNEL, event)

        def read_all() -> list[list[tuple[int, bytes]]]:
            return [[r.frame() for _ in events] for r in readers]

        frames = await deferToThread(read_all)
        for got in frames:
            self.assertEqual(got, frames[0])  # byte for byte the same on every socket
        for (b0, payload), event in zip(frames[0], events, strict=True):
            self.assertEqual(b0, 0x81)
            message = json.loads(payload.decode("utf-8"))
            self.assertEqual(set(message), {"type", "id", "ts", "data"})
            self.assertEqual(message["type"], "event")
            self.assertEqual(message["data"], {"channel": "system", "event": event})
        self.assertEqual(len({json.loads(p)["id"] for _, p in frames[0]}), 30)
        self.assertEqual(self.factory.stats.events_sent, 40 * 30)

    async def test_a_partly_sent_frame_is_never_overtaken(self) -> None:
        """A frame the socket took only part of: the next one waits behind its rest, even once the
        socket could take it (the peer read meanwhile, the reactor has not written the rest yet)."""
        [reader] = await deferToThread(self.open_subscribed, 1)
        [protocol] = self.factory.sockets
        protocol.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.hub.publish(SYSTEM_CHANNEL, {"type": "alert", "seq": 0, "pad": "x" * 50_000})
        self.assertTrue(protocol.transport._tempDataBuffer)  # the rest waits for the reactor
        self.assertFalse(protocol._paused)  # under the transport's limit: the next frame is not queued
        reader.sock.setblocking(False)
        try:
            while True:  # the peer reads what the kernel holds; the reactor does not run meanwhile
                reader.buf += reader.sock.recv(65536)
        except BlockingIOError:
            pass
        reader.sock.setblocking(True)
        self.hub.publish(SYSTEM_CHANNEL, {"type": "alert", "seq": 1})

        def read_two() -> list[int]:
            return [json.loads(reader.frame()[1])["data"]["event"]["seq"] for _ in range(2)]

        self.assertEqual(await deferToThread(read_two), [0, 1])

    async def test_slow_reader_is_paused_then_closed_4008(self) -> None:
        """A socket that does not read: buffered, paused, events dropped, 4008; its stream stays whole."""
        [reader] = await deferToThread(self.open_subscribed, 1)
        [protocol] = self.factory.sockets
        protocol.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.closed_protocols = [protocol]
        published = 0
        while protocol.dropped < self.limits.max_dropped and published < 2000:
            self.hub.publish(SYSTEM_CHANNEL, {"type": "alert", "seq": published, "pad": "x" * 8000})
            published += 1
            if published % 20 == 0:
                await deferLater(reactor, 0.001, lambda: None)  # let the reactor write what it can
        self.assertGreater(self.factory.stats.events_sent, 0)
        self.assertEqual(protocol.dropped, self.limits.max_dropped)

        def read_until_close() -> tuple[list[int], int]:
            seqs = []
            while True:
                b0, payload = reader.frame()
                if b0 == 0x88:
                    return seqs, int.from_bytes(payload[:2], "big")
                self.assertEqual(b0, 0x81)
                seqs.append(json.loads(payload)["data"]["event"]["seq"])

        seqs, code = await deferToThread(read_until_close)
        self.assertEqual(code, CLOSE_SLOW_CONSUMER)
        # Each frame whole, in order from the first; the dropped ones (the oldest queued) missing.
        self.assertEqual(seqs[0], 0)
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertLessEqual(len(seqs) + protocol.dropped, published)
        self.assertLess(len(seqs), published)
        reader.sock.close()
        while not self.factory.stats.closes:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(dict(self.factory.stats.closes), {CLOSE_SLOW_CONSUMER: 1})

# -*- test-case-name: tests.test_sockets -*-
"""End-to-end truth on real loopback sockets and the real reactor.

A reader that stops reading must leave the server's user-space buffer
bounded (both senders); a client vanishing mid-stream, a malformed request
line or a 100 KB header must neither stop the server nor leak a file
descriptor.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from streamsrv.streaming.producers import CHUNK_SIZE, FileBodyProducer, SendfileSender
from tests.sitehelpers import build_site

SIZE = 32 * 1024 * 1024


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def media_fds(root: Path) -> list[str]:
    """Open descriptors that point at a file below *root*."""
    prefix = os.path.realpath(root) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds in user space."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class StalledReader(protocol.Protocol):
    """Sends a request, reads the first bytes, then stops reading."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = 0
        self.first = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.first is not None:
            self.transport.pauseProducing()
            d, self.first = self.first, None
            d.callback(None)


class RealSocketTests(unittest.TestCase):
    """A real listening port on the real reactor."""

    timeout = 60

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        with open(root / "big.flac", "wb") as f:
            f.truncate(SIZE)  # sparse: fast to make, real bytes to send
        self.root = root

    def listen(self, use_sendfile: bool) -> Any:
        self.built = build_site(self.root, clock=reactor, use_sendfile=use_sendfile)
        port = reactor.listenTCP(0, self.built.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if predicate():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail("condition not reached in time")

    async def stalled_download(self, use_sendfile: bool) -> None:
        port = self.listen(use_sendfile)
        await deferLater(reactor, 0, lambda: None)
        fds_before = open_fds()
        client = StalledReader(b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\n\r\n")
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        await client.first
        # Give the server ample time to fill every kernel buffer on the way.
        await deferLater(reactor, 0.5, lambda: None)
        (sender,) = list(self.built.tracker._open)
        kind = SendfileSender if use_sendfile else FileBodyProducer
        self.assertIsInstance(sender, kind)
        transport = sender._request.channel.transport
        held = buffered(transport)
        self.assertLessEqual(held, 2 * CHUNK_SIZE + 4096)
        self.assertLess(sender.bytes_written, SIZE)
        # Still stalled a while later: nothing more is held.
        await deferLater(reactor, 0.3, lambda: None)
        self.assertLessEqual(buffered(transport), 2 * CHUNK_SIZE + 4096)
        # The client vanishes: the stream ends and its file is closed.
        client.transport.abortConnection()
        await self.wait_for(lambda: self.built.tracker.open_count == 0)
        await self.wait_for(lambda: open_fds() <= fds_before)
        self.assertEqual(media_fds(self.root), [])

    async def test_stalled_reader_producer(self) -> None:
        """Portable producer: a stalled reader leaves at most two chunks buffered, then is cleaned up."""
        await self.stalled_download(use_sendfile=False)

    async def test_stalled_reader_sendfile(self) -> None:
        """sendfile: a stalled reader leaves nothing buffered in user space, then is cleaned up."""
        await self.stalled_download(use_sendfile=True)

    async def fetch(self, port: int, raw: bytes) -> bytes:
        received: list[bytes] = []
        done: defer.Deferred[None] = defer.Deferred()

        class Collect(protocol.Protocol):
            def connectionMade(self) -> None:
                self.transport.write(raw)

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason: Any = None) -> None:
                done.callback(None)

        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Collect())
        await done
        return b"".join(received)

    async def check_full_download(self, use_sendfile: bool) -> None:
        port = self.listen(use_sendfile)
        data = await self.fetch(
            port,
            b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\n"
            b"Range: bytes=1000-1999\r\nConnection: close\r\n\r\n",
        )
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"206", head.split(b"\r\n")[0])
        self.assertEqual(body, b"\0" * 1000)
        data = await self.fetch(port, b"GET /stream/big.flac HTTP/1.0\r\nHost: x\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertEqual(len(body), SIZE)
        await self.wait_for(lambda: self.built.tracker.open_count == 0)

    async def test_download_sendfile(self) -> None:
        """sendfile delivers exact ranges and whole files over real sockets."""
        await self.check_full_download(use_sendfile=True)

    async def test_download_producer(self) -> None:
        """The portable producer delivers exact ranges and whole files over real sockets."""
        await self.check_full_download(use_sendfile=False)

    async def test_keepalive_after_sendfile(self) -> None:
        """After a sendfile body the same connection serves the next request."""
        port = self.listen(use_sendfile=True)
        data = await self.fetch(
            port,
            b"GET /stream/big.flac HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99999\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(data.count(b"HTTP/1.1 206"), 1)
        self.assertIn(b'"status":"ok"', data)

    async def test_hostile_requests_leave_server_up(self) -> None:
        """A malformed request line and a 100 KB header are refused; the server keeps serving."""
        port = self.listen(use_sendfile=True)
        await deferLater(reactor, 0, lambda: None)
        fds_before = open_fds()
        bad_line = await self.fetch(port, b"GARBAGE\x00\x01 / HTTP/9.9 extra\r\n\r\n")
        self.assertTrue(bad_line.startswith(b"HTTP/1.1 400"), bad_line[:40])
        huge = await self.fetch(
            port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        )
        # Twisted answers 400 and closes; the client may instead see a reset,
        # because the server closes with unread bytes. Either way: refused.
        self.assertFalse(huge.startswith(b"HTTP/1.1 2"))
        many = await self.fetch(
            port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
        )
        self.assertFalse(many.startswith(b"HTTP/1.1 2"))
        ok = await self.fetch(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(ok.startswith(b"HTTP/1.1 200"))
        await self.wait_for(lambda: open_fds() <= fds_before)
        self.assertEqual(media_fds(self.root), [])

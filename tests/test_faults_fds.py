# -*- test-case-name: tests.test_faults_fds -*-
"""File descriptors of a real daemon return to their baseline once idle connections close.

A ``twistd -n streamsrv`` process gets 300 idle keep-alive HTTP connections
(one answered request each) and 200 authenticated WebSocket sockets; its
descriptor count (``/proc/PID/fd``) must rise by about that much and, once
the clients close them, come back to what it was before.  No timing is
asserted (``bench/idle_load.py`` measures latencies with 10 000 + 2 000).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any

from twisted.trial import unittest

from tests.test_daemon import DaemonTestCase
from tests.test_faults_kill import SECRET, token_for

#: How long the descriptors may take to come back.
WAIT_S = 60.0

HTTP_CONNECTIONS = 300
WS_SOCKETS = 200


def fds(pid: int) -> int:
    """Open file descriptors of *pid*."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class DescriptorTests(DaemonTestCase):
    """Idle connections cost one descriptor each, and give it back."""

    def setUp(self) -> None:
        super().setUp()
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("counts descriptors in /proc")
        try:
            import websockets  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None

    def test_back_to_baseline(self) -> None:
        """500 idle connections (HTTP keep-alive and WebSocket) raise the count by 500; closed, it returns."""
        daemon = self.start(["--media-dir", str(self.media_dir())], {"STREAMSRV_JWT_SECRET": SECRET})
        daemon.wait_ready()
        pid = daemon.process.pid
        daemon.request("GET", "/health")
        baseline = fds(pid)
        clients: list[socket.socket] = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for _ in range(HTTP_CONNECTIONS):
            client = socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT_S)
            clients.append(client)
            client.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = client.recv(4096)
                self.assertTrue(chunk, "closed before answering")
                answer += chunk
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])

        async def sockets() -> None:
            import websockets

            token = token_for("fds")
            opened: list[Any] = []
            for _ in range(WS_SOCKETS):
                ws = await websockets.connect(f"ws://127.0.0.1:{daemon.port}/ws", open_timeout=WAIT_S)
                opened.append(ws)
                await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
                self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))["type"], "ready")
            # One each (a few of the baseline may be transient: the probe connection, a thread).
            self.assertGreaterEqual(fds(pid), baseline + HTTP_CONNECTIONS + WS_SOCKETS - 5)
            await asyncio.gather(*(ws.close() for ws in opened))

        asyncio.run(sockets())
        for client in clients:
            client.close()
        deadline = time.monotonic() + WAIT_S
        while fds(pid) > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertLessEqual(fds(pid), baseline)
        response, _ = daemon.request("GET", "/health")
        self.assertEqual(response.status, 200)

"""Playback reports over real WebSockets at a known rate, for fault tests and benchmarks.

:class:`ReportDriver` opens *sockets* ``/ws`` connections to a running
daemon, authenticates each with a token, and sends ``playback.progress``
reports: socket *i* reports on track ``faults/{i}.mp3`` with positions
``0, 1, 2, …`` (one per report), so every row the store writes names the
report it came from.  After every few reports a ``ping`` is sent; its
``pong`` proves the daemon has taken every earlier report of that socket
(a socket's messages are handled in order), which is what "acknowledged"
means here.  It needs the ``websockets`` client library; it never raises
from a socket the daemon dropped (a killed daemon is the point).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReportDriver", "SocketLog"]

#: Reports between two pings: the WebSocket rate limit (10 messages/s, burst 20) counts both.
REPORTS_PER_PING = 2


@dataclass
class SocketLog:
    """What one socket sent and what the daemon acknowledged."""

    path: str
    sent: int = 0
    #: Reports acknowledged (a later pong came back), and when (``time.monotonic()``).
    acked: int = 0
    acked_at: float = 0.0
    #: When each report was sent (``time.monotonic()``), by position.
    sent_at: list[float] = field(default_factory=list)


class ReportDriver:
    """Sends playback reports from *sockets* sockets, *rate* messages per second each, until stopped."""

    def __init__(self, port: int, token: str, sockets: int, rate: float = 8.0) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.token = token
        self.logs = [SocketLog(path=f"faults/{i}.mp3") for i in range(sockets)]
        self.interval = 1.0 / rate
        self.stopping = asyncio.Event()
        self.connected = 0

    @property
    def sent(self) -> int:
        """Reports sent so far, on every socket."""
        return sum(log.sent for log in self.logs)

    @property
    def acked(self) -> int:
        """Reports acknowledged so far, on every socket."""
        return sum(log.acked for log in self.logs)

    async def run(self) -> None:
        """Drive every socket until :meth:`stop` or until the daemon goes away."""
        await asyncio.gather(*(self._socket(i, log) for i, log in enumerate(self.logs)))

    def stop(self) -> None:
        """Stop sending (sockets close after their current message)."""
        self.stopping.set()

    async def _socket(self, index: int, log: SocketLog) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, open_timeout=30, max_queue=None) as ws:
                await ws.send(json.dumps({"type": "auth", "data": {"token": self.token}}))
                ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if ready.get("type") != "ready":
                    raise RuntimeError(f"socket {index} not authenticated: {ready}")
                self.connected += 1
                await self._send_loop(ws, log)
        except (TimeoutError, OSError, websockets.ConnectionClosed):
            return  # the daemon went away: what was sent is in the log

    async def _send_loop(self, ws: Any, log: SocketLog) -> None:
        started = time.monotonic()
        message = 0
        pending_pings: dict[str, int] = {}
        reader = asyncio.ensure_future(self._read_pongs(ws, log, pending_pings))
        try:
            while not self.stopping.is_set():
                if message % (REPORTS_PER_PING + 1) == REPORTS_PER_PING:
                    ping_id = f"p{message}"
                    pending_pings[ping_id] = log.sent
                    await ws.send(json.dumps({"type": "ping", "id": ping_id, "data": {}}))
                else:
                    report = {
                        "session_id": f"fault-{log.path[7:-4]}",
                        "path": log.path,
                        "position_s": log.sent,
                    }
                    await ws.send(json.dumps({"type": "playback.progress", "data": report}))
                    log.sent_at.append(time.monotonic())
                    log.sent += 1
                message += 1
                delay = started + message * self.interval - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        finally:
            reader.cancel()

    @staticmethod
    async def _read_pongs(ws: Any, log: SocketLog, pending: dict[str, int]) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "pong" and frame.get("id") in pending:
                log.acked = max(log.acked, pending.pop(frame["id"]))
                log.acked_at = time.monotonic()
            elif frame.get("type") == "error":
                raise RuntimeError(f"the daemon refused a report: {frame}")

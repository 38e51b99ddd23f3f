"""A lean WebSocket client for ``bench/ws_fanout.py``: many sockets, raw frames, kernel receive times.

One process holds thousands of sockets on one ``epoll``: it writes the upgrade
request itself, checks the 101 (status and ``Sec-WebSocket-Accept``), sends
the masked ``subscribe`` frame, and parses the server's frames itself
(unmasked, FIN, no RSV bits, text, ping answered with pong).  Every event
frame's payload must be byte-identical on every socket of the process (the
server frames an event once, with one ``id`` and ``ts``, per process): the
first copy is parsed as JSON, checked (``type`` ``event``, the ``system``
channel, an ``id``, a ``ts``) and remembered; ``variants_max`` is the most
different payloads seen for one event (1 with one server process, at most
the number of workers with several).

Each socket has ``SO_TIMESTAMPNS`` on, so every read carries the time the
kernel queued its last segment: the event's latency is that time minus the
publish stamp in the event (``t``), which does not depend on how soon this
process got round to reading (so a busy client core does not make the
server look slow; an earlier frame in the same read is charged the later
segment's time, which errs on the slow side).  The time of the read itself
is recorded too (``user``).  Linux only.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

#: ``SO_TIMESTAMPNS`` (and ``SCM_TIMESTAMPNS``) on Linux; Python has no constant for it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_SIZE = 65536
ANC_SIZE = socket.CMSG_SPACE(16)
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN, *opcode*, masked as a client must)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


@dataclass
class _Conn:
    sock: socket.socket
    key: bytes
    buf: bytearray = field(default_factory=bytearray)
    upgraded: bool = False
    subscribed: bool = False
    closed: bool = False


@dataclass
class RawClients:
    """*count* sockets to ``ws://127.0.0.1:{port}{path}``, each subscribed to ``system``."""

    port: int
    path: str
    count: int
    run_id: str
    latencies: list[float] = field(default_factory=list)
    user_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    received: int = 0
    subscribed: int = 0
    variants_max: int = 0
    foreign: int = 0
    closed: int = 0
    _conns: dict[int, _Conn] = field(default_factory=dict)
    _known: dict[bytes, float] = field(default_factory=dict)
    _variants: dict[Any, int] = field(default_factory=dict)
    _epoll: Any = None

    def connect(self, batch: int, timeout_s: float) -> None:
        """Open every socket, *batch* at a time, and wait until each has answered ``subscribed``."""
        self._epoll = select.epoll()
        deadline = time.monotonic() + timeout_s
        opened = 0
        while opened < self.count:
            n = min(batch, self.count - opened)
            for _ in range(n):
                self._open_one()
            opened += n
            while self.subscribed < opened:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.subscribed}/{opened} sockets subscribed in time; {self.errors[:3]}"
                    )
                self.poll(0.5)

    def _open_one(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16))
        request = (
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            ).encode()
            + b"Sec-WebSocket-Key: "
            + key
            + b"\r\n\r\n"
        )
        sock.sendall(request)
        sock.setblocking(False)
        self._conns[sock.fileno()] = _Conn(sock, key)
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def poll(self, timeout_s: float) -> None:
        """Read whatever the sockets have, once."""
        for fd, _ in self._epoll.poll(timeout_s):
            conn = self._conns.get(fd)
            if conn is not None:
                self._read(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data, anc, _, _ = conn.sock.recvmsg(READ_SIZE, ANC_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(conn, f"read: {errno.errorcode.get(e.errno or 0, e)}")
            return
        now = time.time()
        if not data:
            self._lost(conn, "closed by the server")
            return
        stamp = now
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack("@qq", value[:16])
                stamp = sec + nsec / 1e9
        conn.buf += data
        if not conn.upgraded and not self._upgrade(conn):
            return
        self._frames(conn, stamp, now)

    def _upgrade(self, conn: _Conn) -> bool:
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(conn.buf[:end]).decode("latin-1").split("\r\n")
        del conn.buf[: end + 4]
        accept = base64.b64encode(hashlib.sha1(conn.key + WS_GUID).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if not head[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
            self._lost(conn, f"upgrade refused: {head[0]!r}")
            return False
        conn.upgraded = True
        subscribe = {"type": "subscribe", "data": {"channels": ["system"]}}
        conn.sock.send(masked_frame(OP_TEXT, json.dumps(subscribe).encode()))
        return True

    def _frames(self, conn: _Conn, stamp: float, now: float) -> None:
        buf = conn.buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if size < start + n:
                break
            payload = bytes(buf[start : start + n])
            pos = start + n
            if b0 & 0x70 or b1 & 0x80 or not b0 & 0x80:
                self.errors.append(f"bad frame header {b0:#x} {b1:#x}")
                continue
            self._frame(conn, b0 & 0x0F, payload, stamp, now)
        del buf[:pos]

    def _frame(self, conn: _Conn, opcode: int, payload: bytes, stamp: float, now: float) -> None:
        if opcode == OP_TEXT:
            t = self._known.get(payload)
            if t is None:
                t = self._parse(conn, payload)
                if t is not None:
                    self._known[payload] = t
            if t is not None:
                self.received += 1
                self.latencies.append((stamp - t) * 1000)
                self.user_latencies.append((now - t) * 1000)
        elif opcode == OP_PING:
            conn.sock.send(masked_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._lost(conn, f"close frame {code}")
        elif opcode != OP_PONG:
            self.errors.append(f"unexpected opcode {opcode}")

    def _parse(self, conn: _Conn, payload: bytes) -> float | None:
        """The publish stamp of an event frame of this run; None for anything else (after its checks)."""
        message = json.loads(payload)
        kind = message.get("type")
        if kind == "subscribed":
            if message["data"]["channels"] == ["system"] and not conn.subscribed:
                conn.subscribed = True
                self.subscribed += 1
            return None
        if kind != "event":
            if kind != "ready":
                self.errors.append(f"unexpected message {payload[:200]!r}")
            return None
        data = message["data"]
        event = data["event"]
        if event.get("run") != self.run_id:
            self.foreign += 1
            return None
        if not (
            data["channel"] == "system" and isinstance(message["id"], str) and message["ts"].endswith("Z")
        ):
            self.errors.append(f"malformed event frame {payload[:200]!r}")
        seq = event.get("seq")
        self._variants[seq] = self._variants.get(seq, 0) + 1
        self.variants_max = max(self.variants_max, self._variants[seq])
        return float(event["t"])

    def _lost(self, conn: _Conn, why: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.closed += 1
        self.errors.append(why)
        fd = conn.sock.fileno()
        self._epoll.unregister(fd)
        del self._conns[fd]
        conn.sock.close()

    def close(self) -> None:
        """Close every socket (a TCP close: the server sees 1006)."""
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        if self._epoll is not None:
            self._epoll.close()

"""The Python cost of one ``/ws`` publish per socket, the kernel's ``send`` stubbed out.

    .venv/bin/python bench/ws_publish_cost.py [--sockets 5000] [--publishes 30]

Builds an :class:`~streamsrv.ws.protocol.EventSocketFactory` with *sockets*
open, authenticated sockets subscribed to ``system`` on an in-process hub,
each on a ``twisted.internet.tcp.Server`` whose socket's ``send`` takes
everything at once and does nothing (so the direct path of
:mod:`streamsrv.ws.direct` runs, without the system call), and prints the
process CPU time of ``hub.publish`` per socket: the median over
*publishes*.  What ``bench/ws_fanout.py`` measures minus this is the
kernel's part.  It uses private attributes of the protocol and of Twisted's
transport to stand the sockets up without a network: a measuring tool, not
an example.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class _NullSocket:
    sent = 0

    def send(self, data: bytes) -> int:
        _NullSocket.sent += 1
        return len(data)


def _transport() -> object:
    from twisted.internet import tcp

    transport = tcp.Server.__new__(tcp.Server)
    transport.socket = _NullSocket()  # type: ignore[assignment]
    transport.dataBuffer = b""
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    transport.connected = 1
    transport.disconnecting = 0
    return transport


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=5000)
    p.add_argument("--publishes", type=int, default=30)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
    from twisted.internet.task import Clock

    from streamsrv.events.hub import InProcessHub
    from streamsrv.ws.limits import WsLimits
    from streamsrv.ws.protocol import EventSocketFactory

    async def refuse(token: str) -> object:
        raise AssertionError("no authentication here")

    hub = InProcessHub()
    factory = EventSocketFactory(
        hub=hub, authenticate=refuse, clock=Clock(), limits=WsLimits(ping_interval_s=0)
    )
    for _ in range(args.sockets):
        socket = factory.buildProtocol(None)
        socket.transport = _transport()
        socket.state = WebSocketProtocol.STATE_OPEN
        socket._perMessageCompress = None
        socket.send_queue = deque()
        socket.trafficStats = TrafficStats()
        socket._direct = socket._ready = socket.transport  # as onOpen sets them for a plain TCP transport
        fanout = getattr(factory, "fanout", None)  # None before the fan-out groups (#13)
        socket._subs["system"] = (
            fanout.subscribe("system", "system", socket)
            if fanout is not None
            else hub.subscribe("system", functools.partial(socket._on_event, "system"))
        )
    times = []
    for n in range(args.publishes):
        started = time.process_time()
        hub.publish("system", {"type": "alert", "seq": n, "t": time.time()})
        times.append(time.process_time() - started)
    if _NullSocket.sent != args.sockets * args.publishes:
        raise SystemExit(f"the direct path did not run: {_NullSocket.sent} sends")
    per_socket = statistics.median(times) / args.sockets * 1e6
    print(f"{per_socket:.2f} µs of CPU per socket per publish", end=" ")
    print(f"({args.sockets} sockets, median of {args.publishes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""WebSocket fan-out latency: one event, N connected sockets, time from publish to receipt.

    .venv/bin/python bench/ws_fanout.py [--sockets 1000] [--events 200] [--interval-ms 50]
                                        [--client-procs 2] [--out FILE.json]

Starts a streamsrv ``/ws`` server process (the real site, factory and
in-process hub, pinned to core 0) and ``--client-procs`` Autobahn client
processes (pinned to core 1) that open ``--sockets`` sockets between them,
authenticate by query parameter and subscribe to ``system``.  Once every
socket is subscribed, the server publishes ``--events`` events, one every
``--interval-ms``, each stamped with the wall-clock time just before
``hub.publish``; every client records ``receipt time - stamp`` for every event
on every socket.  Prints p50/p90/p99/max over all (socket, event) pairs, the
delivered share, and the server's CPU time; the raw summary goes to a JSON
file.  Goal (issue 6): p99 < 50 ms at 5 000 sockets.

Every process it starts is stopped on exit, Ctrl-C and errors included; it
binds and connects to 127.0.0.1 only.  Both sides run on one machine, so the
clock is shared and latencies are exact up to scheduling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVER_CORE = 0
CLIENT_CORE = 1
TOKEN = "bench-token"
#: Sockets a client process opens at once before waiting for them to be subscribed.
CONNECT_BATCH = 250
#: How long clients keep waiting for missing events after the last one was published.
TAIL_S = 5.0


def _pin(core: int) -> None:
    try:
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- server process ---------------------------------------------------------------------


def serve(port: int) -> None:
    """The server: real site + factory + in-process hub; publishes on ``GO events interval_ms``."""
    _pin(SERVER_CORE)
    _raise_fd_limit()
    sys.path.insert(0, str(REPO))
    from twisted.internet import reactor, stdio
    from twisted.internet.task import LoopingCall
    from twisted.protocols.basic import LineReceiver
    from twisted.web.resource import Resource

    from streamsrv.auth.principal import AuthError, Principal
    from streamsrv.events.hub import InProcessHub
    from streamsrv.health.metrics import Metrics
    from streamsrv.web.site import StreamsrvSite
    from streamsrv.ws.limits import WsLimits
    from streamsrv.ws.protocol import EventSocketFactory
    from streamsrv.ws.resource import EventSocketResource

    hub = InProcessHub()
    admin = Principal(sub="bench", roles=frozenset({"admin"}), permissions=frozenset({"*"}), via="jwt")

    async def authenticate(token: str) -> Principal:
        if token != TOKEN:
            raise AuthError("TOKEN_INVALID")
        return admin

    factory = EventSocketFactory(
        hub=hub,
        authenticate=authenticate,
        clock=reactor,
        limits=WsLimits(auth_timeout_s=120, ping_interval_s=0),
    )
    root = Resource()
    root.putChild(b"ws", EventSocketResource(factory))
    site = StreamsrvSite(root, metrics=Metrics(process=False), clock=reactor, access_log=False)
    reactor.listenTCP(port, site, backlog=4096, interface="127.0.0.1")

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            words = line.decode().split()
            if words[:1] == ["GO"]:
                self.go(int(words[1]), float(words[2]) / 1000)
            elif words[:1] == ["QUIT"]:
                reactor.stop()

        def go(self, events: int, interval_s: float) -> None:
            sent = [0]
            before = resource.getrusage(resource.RUSAGE_SELF)

            def publish() -> None:
                hub.publish("system", {"type": "alert", "seq": sent[0], "t": time.time()})
                sent[0] += 1
                if sent[0] == events:
                    loop.stop()
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                    report = {
                        "sockets": len(factory.sockets),
                        "cpu_s": cpu,
                        "stats": {
                            "events_sent": factory.stats.events_sent,
                            "events_dropped": factory.stats.events_dropped,
                        },
                    }
                    self.sendLine(b"DONE " + json.dumps(report).encode())

            loop = LoopingCall(publish)
            loop.start(interval_s)

    stdio.StandardIO(Control())
    print("READY", flush=True)
    reactor.run()


# --- client processes ---------------------------------------------------------------------


def clients(port: int, count: int, events: int) -> None:
    """Open *count* sockets, subscribe each to ``system``, record latencies, print them as JSON."""
    _pin(CLIENT_CORE)
    _raise_fd_limit()
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    latencies: list[float] = []
    state = {"subscribed": 0, "received": 0, "closed": 0}
    batch_done: list[Deferred[None]] = []

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:
            self.sendMessage(json.dumps({"type": "subscribe", "data": {"channels": ["system"]}}).encode())

        def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn
            now = time.time()
            message = json.loads(payload)
            kind = message["type"]
            if kind == "event":
                latencies.append((now - message["data"]["event"]["t"]) * 1000)
                state["received"] += 1
                if state["received"] == count * events:
                    finish()
            elif kind == "subscribed":
                state["subscribed"] += 1
                if batch_done and state["subscribed"] >= batch_done[0].target:  # type: ignore[attr-defined]
                    batch_done.pop(0).callback(None)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
            state["closed"] += 1

    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws?access_token={TOKEN}")
    factory.protocol = Client
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=60)

    def finish() -> None:
        if not reactor.running:
            return
        sys.stdout.write(
            "RESULT "
            + json.dumps(
                {"latencies_ms": [round(x, 3) for x in latencies], "subscribed": state["subscribed"]}
            )
            + "\n"
        )
        sys.stdout.flush()
        reactor.stop()

    async def connect_all() -> None:
        opened = 0
        while opened < count:
            n = min(CONNECT_BATCH, count - opened)
            d: Deferred[None] = Deferred()
            d.target = opened + n  # type: ignore[attr-defined]
            batch_done.append(d)
            for _ in range(n):
                reactor.connectTCP("127.0.0.1", port, factory, timeout=60)
            opened += n
            await d
        print("READY", flush=True)
        # Wait for "TAIL" from the orchestrator (after the last event): then report what arrived.
        line = await _read_line()
        if line.startswith("TAIL"):
            reactor.callLater(TAIL_S, finish)

    from twisted.internet.defer import ensureDeferred

    ensureDeferred(connect_all()).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


async def _read_line() -> str:
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    _ = reactor
    line: str = await deferToThread(sys.stdin.readline)
    return line


# --- orchestrator ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def _expect(process: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"process {process.args!r} exited before {prefix}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"no {prefix} from {process.args!r} within {timeout_s} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    processes: list[subprocess.Popen[str]] = []

    def spawn(*extra: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*me, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        processes.append(process)
        return process

    try:
        server = spawn("--role", "server", "--port", str(port))
        _expect(server, "READY", 30)
        shares = [args.sockets // args.client_procs] * args.client_procs
        shares[0] += args.sockets - sum(shares)
        started = time.monotonic()
        client_procs = [
            spawn("--role", "clients", "--port", str(port), "--count", str(n), "--events", str(args.events))
            for n in shares
            if n
        ]
        for process in client_procs:
            _expect(process, "READY", args.connect_timeout)
        connect_s = time.monotonic() - started
        assert server.stdin is not None
        server.stdin.write(f"GO {args.events} {args.interval_ms}\n")
        server.stdin.flush()
        done = json.loads(_expect(server, "DONE", args.events * args.interval_ms / 1000 + 60))
        latencies: list[float] = []
        for process in client_procs:
            assert process.stdin is not None
            process.stdin.write("TAIL\n")
            process.stdin.flush()
        for process in client_procs:
            result = json.loads(_expect(process, "RESULT", TAIL_S + 60))
            latencies += result["latencies_ms"]
        latencies.sort()
        expected = args.sockets * args.events
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "sockets": args.sockets,
            "events": args.events,
            "interval_ms": args.interval_ms,
            "client_procs": args.client_procs,
            "connect_s": round(connect_s, 2),
            "delivered": len(latencies),
            "expected": expected,
            "p50_ms": _percentile(latencies, 50),
            "p90_ms": _percentile(latencies, 90),
            "p99_ms": _percentile(latencies, 99),
            "max_ms": latencies[-1] if latencies else float("nan"),
            "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
            "server_cpu_s": round(done["cpu_s"], 3),
            "server": done,
        }
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="WebSocket fan-out latency from publish to receipt.")
    p.add_argument(
        "--role",
        choices=("orchestrator", "server", "clients"),
        default="orchestrator",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sockets", type=int, default=1000, help="connected sockets (default 1000)")
    p.add_argument("--events", type=int, default=200, help="events published (default 200)")
    p.add_argument("--interval-ms", type=float, default=50.0, help="between events (default 50)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--connect-timeout", type=float, default=120.0, help="seconds to connect all sockets")
    p.add_argument("--out", type=Path, help="JSON result (default bench/results/ws-fanout-TIME.json)")
    args = p.parse_args(argv)
    if args.role == "server":
        serve(args.port)
        return 0
    if args.role == "clients":
        clients(args.port, args.count, args.events)
        return 0
    result = run(args)
    print(
        f"{result['sockets']} sockets x {result['events']} events: delivered {result['delivered']}"
        f"/{result['expected']}; latency p50 {result['p50_ms']:.2f} ms, p90 {result['p90_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms; "
        f"server CPU {result['server_cpu_s']} s; connect {result['connect_s']} s"
    )
    out = args.out or BENCH_DIR / "results" / f"ws-fanout-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

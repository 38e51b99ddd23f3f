"""WebSocket fan-out latency: one event, N connected sockets, time from publish to receipt.

    .venv/bin/python bench/ws_fanout.py [--sockets 1000] [--events 200] [--interval-ms 50]
                                        [--client-procs 2] [--client raw|autobahn]
                                        [--workers N] [--redis-url URL] [--out FILE.json]

Without ``--workers``: starts a streamsrv ``/ws`` server process (the real
site, factory and in-process hub, pinned to core 0) and ``--client-procs``
client processes (pinned to core 1) that open ``--sockets`` sockets between
them, authenticate by query parameter and subscribe to ``system``.  Once
every socket is subscribed, the server publishes ``--events`` events, one
every ``--interval-ms``, each stamped with the wall-clock time just before
``hub.publish``.

With ``--workers N``: starts the real daemon (``twistd -n streamsrv``) with
``STREAMSRV_WORKERS=N`` and ``STREAMSRV_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``), worker *i* pinned to core *i* modulo the
cores, JWT on; the clients (unpinned, ``nice`` 10) connect with an admin
token in ``access_token`` and the kernel spreads their connections over the
workers (the split is read with ``ss`` and reported).  The events are
published into Redis as another process's hub would (``PUBLISH
streamsrv:ev:system`` with the hub's envelope), stamped just before the
``PUBLISH``; every worker's hub hands them to its sockets.  The server CPU is
the workers' (from ``/proc``) while the events go out.

Clients (``--client``): ``raw`` (default; :mod:`wsraw`) parses frames itself,
checks that every socket gets byte-identical event frames, and takes each
frame's time from the kernel's receive timestamp (``SO_TIMESTAMPNS``), so a
busy client core does not count against the server; it reports the time its
read ran as well (``user_*``).  ``autobahn`` is the Autobahn client of the
first version of this bench (receipt time taken in ``onMessage``).

Prints p50/p90/p99/max over all (socket, event) pairs, the delivered share,
and the server's CPU time; without ``--workers`` also one publish's (one
fan-out's) wall and CPU time and how often the server was preempted while
the events went out (the server's core is shared with whatever else runs
on the machine: a fan-out whose wall time is well above its CPU time waited
for the core); the raw summary goes to a JSON file.  Goal (issues
6 and 13): p99 < 50 ms at 5 000 sockets on one process, and 10 000 over two
workers.

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
sys.path.insert(0, str(BENCH_DIR))

import procstats  # noqa: E402

SERVER_CORE = 0
CLIENT_CORE = 1
TOKEN = "bench-token"
#: The daemon's JWT secret (``--workers``) and a rate limit nothing reaches.
JWT_SECRET = "bench-ws-fanout-secret-0123456789abcdef"
UNLIMITED = "1000000000/1"
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


def serve(port: int, run_id: str) -> None:
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
            walls: list[float] = []
            cpus: list[float] = []

            def publish() -> None:
                wall, cpu = time.perf_counter(), time.thread_time()
                hub.publish("system", {"type": "alert", "seq": sent[0], "run": run_id, "t": time.time()})
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.thread_time() - cpu) * 1000)
                sent[0] += 1
                if sent[0] == events:
                    loop.stop()
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                    walls.sort()
                    cpus.sort()
                    report = {
                        "sockets": len(factory.sockets),
                        "cpu_s": cpu,
                        # One publish (the whole fan-out): wall and CPU time, and how often
                        # the server was preempted meanwhile (others' processes on its core).
                        "publish_wall_ms": [_percentile(walls, q) for q in (50, 90, 99)],
                        "publish_cpu_ms": [_percentile(cpus, q) for q in (50, 90, 99)],
                        "preempted": after.ru_nivcsw - before.ru_nivcsw,
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
            words = line.split()
            reactor.callLater(float(words[1]) if len(words) > 1 else TAIL_S, finish)

    from twisted.internet.defer import ensureDeferred

    ensureDeferred(connect_all()).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


def raw_clients(port: int, path: str, count: int, events: int, run_id: str, pin: bool) -> None:
    """:class:`wsraw.RawClients`: open, subscribe, print READY, read until all came or TAIL + TAIL_S."""
    import select

    from wsraw import RawClients

    if pin:
        _pin(CLIENT_CORE)
    _raise_fd_limit()
    clients = RawClients(port=port, path=path, count=count, run_id=run_id)
    clients.connect(CONNECT_BATCH, 120.0)
    cpu_ready = time.process_time()
    print("READY", flush=True)
    stdin = select.poll()
    stdin.register(sys.stdin.fileno(), select.POLLIN)
    stop_at = float("inf")
    while clients.received < count * events and time.monotonic() < stop_at:
        clients.poll(0.01)
        if stop_at == float("inf") and stdin.poll(0):
            words = sys.stdin.readline().split()  # TAIL [seconds]: the last event is out
            stop_at = time.monotonic() + (float(words[1]) if len(words) > 1 else TAIL_S)
    result = {
        "latencies_ms": [round(x, 3) for x in clients.latencies],
        "user_latencies_ms": [round(x, 3) for x in clients.user_latencies],
        "subscribed": clients.subscribed,
        "variants_max": clients.variants_max,
        "foreign": clients.foreign,
        "closed": clients.closed,
        "errors": clients.errors[:20],
        # CPU this client process spent reading the events (after READY).
        "cpu_s": time.process_time() - cpu_ready,
    }
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    clients.close()


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


class Daemon:
    """``twistd -n streamsrv`` with ``STREAMSRV_WORKERS=workers``, Redis and JWT; its log in *tmp*."""

    def __init__(self, tmp: Path, workers: int, redis_url: str) -> None:
        self.port = _free_port()
        (tmp / "media").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSRV_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "STREAMSRV_DATA_DIR": str(tmp / "data"),
                "STREAMSRV_JWT_SECRET": JWT_SECRET,
                "STREAMSRV_LOG_LEVEL": "warn",
                "STREAMSRV_WORKERS": str(workers),
                "STREAMSRV_REDIS_URL": redis_url,
                "STREAMSRV_RATELIMIT_API_PER_IP": UNLIMITED,
                "STREAMSRV_RATELIMIT_API_PER_USER": UNLIMITED,
                "STREAMSRV_WS_AUTH_TIMEOUT_S": "120",
            }
        )
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        argv += ["--logfile", str(tmp / "daemon.log"), "streamsrv", "--media-dir", str(tmp / "media")]
        argv += ["--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096"]
        self.log_path = tmp / "daemon.log"
        self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL)
        self.workers = workers

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{self._log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health/ready")
                if conn.getresponse().status == 200 and len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the daemon did not become ready:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The workers: the supervisor's children (or the daemon itself with one worker)."""
        if self.workers <= 1:
            return [self.process.pid]
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sorted(int(c) for c in children)

    def stop(self) -> None:
        procstats.terminate(self.process)


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _connections_per_pid(port: int) -> dict[str, int]:
    """Established server-side connections on *port*, per process (from ``ss``)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        pid = line.partition("pid=")[2].partition(",")[0] or "?"
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def _admin_token() -> str:
    import jwt

    claims = {"sub": "bench-admin", "roles": ["admin"], "exp": int(time.time()) + 3600}
    return str(jwt.encode(claims, JWT_SECRET, "HS256"))


def _redis_publish_all(redis_url: str, run_id: str, events: int, interval_s: float) -> dict[str, Any]:
    """Publish the events into Redis as a hub would, one every *interval_s*; the receivers each counted."""
    from urllib.parse import urlsplit

    url = urlsplit(redis_url)
    channel = b"streamsrv:ev:system"
    receivers: list[int] = []
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=10) as sock:
        reader = sock.makefile("rb")
        if url.password:
            sock.sendall(
                _resp(b"AUTH", *([url.username.encode()] if url.username else []), url.password.encode())
            )
            reader.readline()
        started = time.monotonic()
        for seq in range(events):
            delay = started + seq * interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = {"type": "alert", "seq": seq, "run": run_id, "t": time.time()}
            envelope = json.dumps({"v": 1, "o": "bench-" + run_id, "e": event}, separators=(",", ":"))
            sock.sendall(_resp(b"PUBLISH", channel, envelope.encode()))
            receivers.append(int(reader.readline()[1:]))
    return {"redis_receivers_min": min(receivers), "redis_receivers_max": max(receivers)}


def _commit() -> str:
    git = ["git", "-C", str(REPO)]
    out = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "streamsrv"], capture_output=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _resp(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def _spawn_clients(args: argparse.Namespace, spawn: Any, port: int, path: str, run_id: str) -> list[Any]:
    shares = [args.sockets // args.client_procs] * args.client_procs
    shares[0] += args.sockets - sum(shares)
    procs = []
    for n in shares:
        if not n:
            continue
        common = ["--port", str(port), "--count", str(n), "--events", str(args.events)]
        if args.client == "autobahn":
            procs.append(spawn("--role", "clients", *common))
        else:
            pin = [] if args.workers else ["--pin"]
            procs.append(spawn("--role", "rawclients", *common, "--path", path, "--run", run_id, *pin))
    return procs


def _summary(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    user = sorted(x for r in results for x in r.get("user_latencies_ms", []))
    summary: dict[str, Any] = {
        "delivered": len(latencies),
        "expected": args.sockets * args.events,
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
    }
    if user:
        summary.update(
            {
                "user_p50_ms": _percentile(user, 50),
                "user_p99_ms": _percentile(user, 99),
                "user_max_ms": user[-1],
            }
        )
    for key in ("foreign", "closed"):
        summary[key] = sum(r.get(key, 0) for r in results)
    summary["variants_max"] = max((r.get("variants_max", 0) for r in results), default=0)
    summary["clients_cpu_s"] = round(sum(r.get("cpu_s", 0.0) for r in results), 3)
    summary["errors"] = [e for r in results for e in r.get("errors", [])][:10]
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    _raise_fd_limit()
    run_id = os.urandom(4).hex()
    me = [sys.executable, str(Path(__file__).resolve())]
    processes: list[subprocess.Popen[str]] = []
    daemon: Daemon | None = None

    def spawn(*extra: str) -> subprocess.Popen[str]:
        nice = (lambda: os.nice(10)) if args.workers and "--role" in extra and "server" not in extra else None
        process = subprocess.Popen(
            [*me, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=nice
        )
        processes.append(process)
        return process

    tmp = tempfile.TemporaryDirectory(prefix="ws-fanout-")
    #: The daemon's log lines about Redis (lost, reconnected), filled in once it has stopped.
    daemon_redis_log: list[str] = []
    try:
        if args.workers:
            daemon = Daemon(Path(tmp.name), args.workers, args.redis_url)
            daemon.wait_ready()
            server_pids = daemon.worker_pids()
            for i, pid in enumerate(server_pids):
                os.sched_setaffinity(pid, {i % (os.cpu_count() or 1)})
            port, path = daemon.port, f"/ws?access_token={_admin_token()}"
        else:
            port, path = _free_port(), f"/ws?access_token={TOKEN}"
            server = spawn("--role", "server", "--port", str(port), "--run", run_id)
            _expect(server, "READY", 30)
        started = time.monotonic()
        client_procs = _spawn_clients(args, spawn, port, path, run_id)
        for process in client_procs:
            _expect(process, "READY", args.connect_timeout)
        connect_s = time.monotonic() - started
        extra: dict[str, Any] = {}
        if daemon is not None:
            extra["connections_per_worker"] = _connections_per_pid(port)
            before = _cpu_s(server_pids)
            extra.update(_redis_publish_all(args.redis_url, run_id, args.events, args.interval_ms / 1000))
        else:
            assert server.stdin is not None
            server.stdin.write(f"GO {args.events} {args.interval_ms}\n")
            server.stdin.flush()
            done = json.loads(_expect(server, "DONE", args.events * args.interval_ms / 1000 + 60))
            extra.update({"server_cpu_s": round(done["cpu_s"], 3), "server": done})
        tail_s = args.tail_s if args.tail_s is not None else (30.0 if daemon is not None else TAIL_S)
        for process in client_procs:
            assert process.stdin is not None
            process.stdin.write(f"TAIL {tail_s}\n")
            process.stdin.flush()
        results = [json.loads(_expect(p, "RESULT", tail_s + 120)) for p in client_procs]
        if daemon is not None:
            # From the first PUBLISH until every client had every event (or gave up after the tail).
            extra["server_cpu_s"] = round(_cpu_s(server_pids) - before, 3)
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "tree": str(REPO),
            "commit": _commit(),
            "sockets": args.sockets,
            "events": args.events,
            "interval_ms": args.interval_ms,
            "client_procs": args.client_procs,
            "client": args.client,
            "workers": args.workers,
            "connect_s": round(connect_s, 2),
            "daemon_redis_log": daemon_redis_log,
            **_summary(args, results),
            **extra,
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
        if daemon is not None:
            daemon.stop()
            if daemon.log_path.exists():
                lines = daemon.log_path.read_text(errors="replace").splitlines()
                daemon_redis_log[:] = [line for line in lines if "Redis" in line][:20]
        tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="WebSocket fan-out latency from publish to receipt.")
    p.add_argument(
        "--role",
        choices=("orchestrator", "server", "clients", "rawclients"),
        default="orchestrator",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--run", default="", help=argparse.SUPPRESS)
    p.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sockets", type=int, default=1000, help="connected sockets (default 1000)")
    p.add_argument("--events", type=int, default=200, help="events published (default 200)")
    p.add_argument("--interval-ms", type=float, default=50.0, help="between events (default 50)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--client", choices=("raw", "autobahn"), default="raw", help="client kind (default raw)")
    p.add_argument("--workers", type=int, default=0, help="run the real daemon with this many workers")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="with --workers (default local)")
    p.add_argument("--tail-s", type=float, help="wait for late events (default 5 s, 30 s with --workers)")
    p.add_argument("--connect-timeout", type=float, default=120.0, help="seconds to connect all sockets")
    p.add_argument("--out", type=Path, help="JSON result (default bench/results/ws-fanout-TIME.json)")
    args = p.parse_args(argv)
    if args.role == "server":
        serve(args.port, args.run)
        return 0
    if args.role == "clients":
        clients(args.port, args.count, args.events)
        return 0
    if args.role == "rawclients":
        raw_clients(args.port, args.path, args.count, args.events, args.run, args.pin)
        return 0
    result = run(args)
    line = (
        f"{result['sockets']} sockets x {result['events']} events ({args.client} clients"
        f"{f', {args.workers} workers' if args.workers else ''}): delivered {result['delivered']}"
        f"/{result['expected']}; latency p50 {result['p50_ms']:.2f} ms, p90 {result['p90_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms; "
    )
    if "user_p99_ms" in result:
        line += f"read by the client p50 {result['user_p50_ms']:.2f} / p99 {result['user_p99_ms']:.2f} ms; "
    line += f"server CPU {result['server_cpu_s']} s, clients' {result['clients_cpu_s']} s; "
    line += f"connect {result['connect_s']} s"
    print(line)
    if "publish_wall_ms" in result.get("server", {}):
        server = result["server"]
        wall, cpu = server["publish_wall_ms"], server["publish_cpu_ms"]
        print(
            f"one publish (p50/p90/p99): wall {wall[0]:.1f}/{wall[1]:.1f}/{wall[2]:.1f} ms, "
            f"CPU {cpu[0]:.1f}/{cpu[1]:.1f}/{cpu[2]:.1f} ms; server preempted {server['preempted']} times"
        )
    if "connections_per_worker" in result:
        print(f"connections per worker pid: {result['connections_per_worker']}")
        print(f"PUBLISH receivers: {result['redis_receivers_min']}..{result['redis_receivers_max']}")
    for line in result["daemon_redis_log"][:5]:
        print(f"daemon: {line}")
    if result.get("variants_max", 0) > max(1, args.workers) or result.get("closed") or result.get("errors"):
        problem = f"payloads per event {result['variants_max']}, closed {result['closed']}"
        print(f"PROBLEM: {problem}, {result['errors']}")
    out = args.out or BENCH_DIR / "results" / f"ws-fanout-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One notification to 10,000 users on websocket + email, through a real daemon and a real SMTP sink.

    .venv/bin/python bench/notifications.py [--users 10000] [--sockets 50] [--rounds 3]
                                            [--pool-size 4] [--outage S] [--out FILE.json]

Each round starts a light SMTP sink process (this file with ``--sink``: asyncio, EHLO / MAIL /
RCPT / DATA / RSET / QUIT, recording the arrival time and ``Message-ID`` of every message and
nothing else), seeds ``--users`` users' preferences (email on, an address each) in a fresh
SQLite outbox, starts ``twistd -n streamsrv`` with ``STREAMSRV_SMTP_URL`` pointing at the sink,
opens ``--sockets`` WebSocket clients (``websockets``) as users spread evenly over the range,
subscribed to ``user:me``, then POSTs one ``new-release`` notification to every user on
``["websocket", "email"]`` and reports:

- POST→202: the client's time for the whole request (10,000 deliveries x 2 committed);
- emails/s accepted at the sink: all messages over the span first→last arrival, and from the
  202 to the last arrival (end to end);
- WebSocket p50/p99 from the POST (and from the 202) to the ``notification`` frame;
- duplicates: Message-IDs seen twice (the Message-ID is stable per delivery);
- every websocket delivery, not only the sockets' (the daemon's own
  ``streamsrv_notification_delivery_seconds{channel="websocket"}`` histogram, read from
  ``/metrics`` at the end: acceptance to publish, server side): the share published within
  0.1 s, and the histogram bucket the 99th percentile falls in.

The baseline, run in the same round on a fresh sink: Python's ``smtplib`` sending the same
number of messages of the same size over as many connections as ``--pool-size`` (one thread
each), the "wire speed" of this sink on this machine; the table gives streamsrv/smtplib.
``--outage S`` adds, per round, a run where the sink is down for S seconds from just before
the POST (with the default back-off, ``STREAMSRV_NOTIFY_RETRY_BASE_S=30``): it reports when the
last email arrived after the sink came back, and that none was lost or sent twice.

Everything binds 127.0.0.1 only, writes only to a temp dir (removed unless ``--keep-tmp``),
and every process started is stopped on exit (errors and Ctrl-C included).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import procstats  # noqa: E402

SECRET = "bench-notifications-secret-0123456789abcdef"
SENDER = "noreply@example.com"
DATA = {"artist": "Miles Davis", "album": "Kind of Blue", "track_count": 5, "url": "https://e.example/a"}
#: Far above what the benchmark asks, so no request is refused.
UNLIMITED = "1000000000/1"
READY_TIMEOUT_S = 60.0
#: What the summary gives the median of, for streamsrv.
REPORTED = (
    "post_202_ms",
    "emails_per_s",
    "emails_per_s_end_to_end",
    "last_email_after_202_s",
    "ws_p50_ms",
    "ws_p99_ms",
    "ws_p50_from_202_ms",
    "ws_p99_from_202_ms",
    "ws_all_within_100ms",
    "ws_all_p99_le_s",
    "duplicates",
    "post_cpu_ms",
    "send_cpu_s",
    "emails_per_cpu_s",
    "sqlite_floor_ms",
    "post_202_vs_floor",
)


# -- the sink --------------------------------------------------------------------------------


def run_sink(directory: Path, port: int) -> None:
    """The sink process: accept SMTP on 127.0.0.1:*port*, log ``time message-id`` per message."""
    log = (directory / "received.log").open("a", buffering=1 << 16)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        in_data = False
        message_id = ""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        log.write(f"{time.time():.6f} {message_id}\n")
                        writer.write(b"250 2.0.0 OK\r\n")
                    elif not message_id and line[:11].lower() == b"message-id:":
                        message_id = line[11:].strip().decode("ascii", "replace")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
                elif verb == b"DATA":
                    in_data, message_id = True, ""
                    writer.write(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:  # HELO, MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(session, "127.0.0.1", port, reuse_address=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        parent = os.getppid()
        while not stop.is_set() and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                log.flush()
        server.close()
        log.flush()

    asyncio.run(main())


class Sink:
    """The sink as a child process; restartable on the same port (an outage)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        command = [sys.executable, __file__, "--sink", str(self.directory), "--sink-port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"READY":
            raise RuntimeError("the SMTP sink did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def arrivals(self) -> list[tuple[float, str]]:
        path = self.directory / "received.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            stamp, _, message_id = line.partition(" ")
            found.append((float(stamp), message_id))
        return found


# -- the daemon ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(sub: str, roles: list[str]) -> str:
    import jwt

    return jwt.encode({"sub": sub, "roles": roles, "exp": int(time.time()) + 3600}, SECRET, "HS256")


def user_id(n: int) -> str:
    return f"u{n:05d}"


def seed_preferences(data_dir: Path, users: int) -> None:
    """Every user: email on with an address, websocket on (written straight into the outbox)."""
    sys.path.insert(0, str(REPO))
    from streamsrv.notifications.caps import DEFAULT_CAPS
    from streamsrv.notifications.outboxdb import OUTBOX_DB_FILE, SqliteOutboxDatabase
    from streamsrv.notifications.preferences import parse_preferences

    path = data_dir / OUTBOX_DB_FILE
    database = SqliteOutboxDatabase(path)
    database.migrate(time.time())
    database.close()
    rows = []
    for n in range(users):
        body = {"channels": {"email": {"enabled": True, "address": f"{user_id(n)}@example.com"}}}
        document = parse_preferences(body, DEFAULT_CAPS).to_json()
        rows.append((user_id(n), json.dumps(document, separators=(",", ":"), sort_keys=True), time.time()))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO notification_preferences (user_id, document, updated_at) VALUES (?, ?, ?)", rows
        )


class Daemon:
    """``twistd -n streamsrv`` with the email channel on the sink."""

    def __init__(
        self, tmp: Path, sink_port: int, extra_env: dict[str, str], profile_path: str | None = None
    ) -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        media = tmp / "media"
        media.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSRV_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "STREAMSRV_DATA_DIR": str(self.data_dir),
                "STREAMSRV_JWT_SECRET": SECRET,
                "STREAMSRV_LOG_LEVEL": "warn",
                "STREAMSRV_SMTP_URL": f"smtp://127.0.0.1:{sink_port}",
                "STREAMSRV_SMTP_FROM": SENDER,
                "STREAMSRV_RATELIMIT_API_PER_IP": UNLIMITED,
                "STREAMSRV_RATELIMIT_API_PER_USER": UNLIMITED,
                **extra_env,
            }
        )
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        profile = ["--profile", profile_path, "--profiler", "cprofile", "--savestats"] if profile_path else []
        argv = [*twistd, "-n", "--pidfile=", *profile, "streamsrv", "--media-dir", str(media)]
        argv += ["--listen", f"tcp:{self.port}:interface=127.0.0.1"]
        self.log_path = tmp / "daemon.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def request(self, method: str, path: str, body: bytes | None = None, auth: str | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the daemon did not become ready")

    def stop(self) -> None:
        procstats.terminate(self.process)
        self._log.close()


# -- one streamsrv round -----------------------------------------------------------------------


async def _ws_client(port: int, sub: str, ready: asyncio.Event, arrived: dict[str, float]) -> None:
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "data": {"token": token(sub, ["listener"])}}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        await ws.send(json.dumps({"type": "subscribe", "data": {"channels": ["user:me"]}}))
        while json.loads(await ws.recv())["type"] != "subscribed":
            pass
        ready.set()
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "notification":
                arrived[sub] = time.time()
                return


def websocket_histogram(daemon: Daemon) -> dict[str, float]:
    """Every websocket delivery's latency as the daemon's histogram counts it (acceptance → publish)."""
    status, body = daemon.request("GET", "/metrics")
    if status != 200:
        return {}
    buckets: list[tuple[float, float]] = []
    prefix = 'streamsrv_notification_delivery_seconds_bucket{channel="websocket",le="'
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith(prefix):
            bound, _, count = line[len(prefix) :].partition('"} ')
            buckets.append((float(bound), float(count)))
    total = max((count for _, count in buckets), default=0.0)
    if not total:
        return {}
    within = next((count for bound, count in buckets if bound == 0.1), float("nan"))
    p99 = next(bound for bound, count in sorted(buckets) if count >= 0.99 * total)
    return {"ws_all_count": total, "ws_all_within_100ms": within / total, "ws_all_p99_le_s": p99}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process *pid* has used: what it got, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(daemon: Daemon, users: int) -> tuple[float, float, int]:
    body = json.dumps(
        {
            "template": "new-release",
            "user_ids": [user_id(n) for n in range(users)],
            "data": DATA,
            "channels": ["websocket", "email"],
        }
    ).encode()
    admin = token("bench-admin", ["admin"])
    started = time.time()
    status, _ = daemon.request("POST", "/api/v1/notifications", body, admin)
    return started, time.time(), status


async def _drive(daemon: Daemon, sink: Sink, args: argparse.Namespace, outage_s: float) -> dict[str, Any]:
    step = max(1, args.users // max(1, args.sockets))
    subs = [user_id(n) for n in range(step - 1, args.users, step)][: args.sockets]
    arrived: dict[str, float] = {}
    events = [asyncio.Event() for _ in subs]
    clients = [
        asyncio.create_task(_ws_client(daemon.port, s, e, arrived)) for s, e in zip(subs, events, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    loop = asyncio.get_running_loop()
    if outage_s:
        sink.stop()
    cpu_before = cpu_s(daemon.process.pid)
    started, accepted, status = await loop.run_in_executor(None, _post, daemon, args.users)
    cpu_accepted = cpu_s(daemon.process.pid)
    if status != 202:
        raise RuntimeError(f"POST answered {status}")
    back = None
    if outage_s:
        await asyncio.sleep(max(0.0, started + outage_s - time.time()))
        sink.start()
        back = time.time()
    deadline = time.time() + args.timeout + outage_s
    while time.time() < deadline:
        if len(sink.arrivals()) >= args.users and len(arrived) == len(subs):
            break
        await asyncio.sleep(0.2)
    cpu_done = cpu_s(daemon.process.pid)
    await asyncio.sleep(1.0)  # anything sent twice would arrive now
    histogram = await loop.run_in_executor(None, websocket_histogram, daemon)
    for client in clients:
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    arrivals = sink.arrivals()
    times = sorted(t for t, _ in arrivals)
    ids = [m for _, m in arrivals]
    ws = sorted(arrived.values())
    result: dict[str, Any] = {
        "post_202_ms": (accepted - started) * 1000,
        "emails": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "ws_frames": len(ws),
        "ws_sockets": len(subs),
        # CPU the daemon got: the 202's cost, and sending (10,000 emails + 10,000 frames).
        "post_cpu_ms": (cpu_accepted - cpu_before) * 1000,
        "send_cpu_s": cpu_done - cpu_accepted,
        "emails_per_cpu_s": args.users / (cpu_done - cpu_accepted)
        if cpu_done > cpu_accepted
        else float("nan"),
    }
    if times:
        span = times[-1] - times[0]
        result["emails_per_s"] = (len(times) - 1) / span if span > 0 else float("nan")
        result["emails_per_s_end_to_end"] = len(times) / (times[-1] - accepted)
        result["last_email_after_202_s"] = times[-1] - accepted
    if back is not None and times:
        result["last_email_after_sink_back_s"] = times[-1] - back
    if ws:
        from_post = [(t - started) * 1000 for t in ws]
        from_202 = [(t - accepted) * 1000 for t in ws]
        result["ws_p50_ms"] = percentile(from_post, 50)
        result["ws_p99_ms"] = percentile(from_post, 99)
        result["ws_p50_from_202_ms"] = percentile(from_202, 50)
        result["ws_p99_from_202_ms"] = percentile(from_202, 99)
    result.update(histogram)
    return result


def streamsrv_round(tmp: Path, args: argparse.Namespace, outage_s: float = 0.0) -> dict[str, Any]:
    sink = Sink(tmp / "sink", free_port())
    sink.start()
    daemon = None
    try:
        extra = {"STREAMSRV_SMTP_POOL_SIZE": str(args.pool_size)}
        extra.update(dict(e.split("=", 1) for e in args.env))
        seed_preferences(tmp / "data", args.users)
        daemon = Daemon(tmp, sink.port, extra, args.profile)
        daemon.wait_ready()
        return asyncio.run(_drive(daemon, sink, args, outage_s))
    finally:
        if daemon is not None:
            daemon.stop()
        sink.stop()


# -- the baselines: the bare SQLite commit, smtplib ----------------------------------------------


def sqlite_floor_ms(tmp: Path, users: int) -> float:
    """
    The durability floor of the 202: the same 2 x *users* delivery rows inserted and committed
    with plain ``sqlite3`` (WAL, ``synchronous = FULL``) into the outbox's own schema.
    """
    sys.path.insert(0, str(REPO))
    from streamsrv.notifications.outboxdb import SqliteOutboxDatabase

    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "floor.sqlite3"
    database = SqliteOutboxDatabase(path)
    database.migrate(time.time())
    database.close()
    now = time.time()
    nid = f"{int(now * 1000):012x}{os.urandom(10).hex()}"
    rows = [
        (
            f"{nid}{n:06x}",
            nid,
            n,
            user_id(n // 2),
            ("websocket", "email")[n % 2],
            "queued",
            None,
            now,
            now,
            now,
        )
        for n in range(2 * users)
    ]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    started = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO notifications (id, template, data, priority, idempotency_key, created_at) "
        "VALUES (?, 'new-release', '{}', 'normal', NULL, ?)",
        (nid, now),
    )
    db.executemany(
        "INSERT INTO notification_deliveries (id, notification_id, position, user_id, channel, state, "
        "reason, not_before, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("COMMIT")
    elapsed = (time.perf_counter() - started) * 1000
    db.close()
    return elapsed


def sample_message() -> bytes:
    sys.path.insert(0, str(REPO))
    from streamsrv.notifications.channels.base import EmailMessage
    from streamsrv.notifications.channels.email import build_email
    from streamsrv.notifications.channels.settings import parse_smtp_from
    from streamsrv.notifications.templates import TemplateSet, default_templates_dir

    rendered = TemplateSet.load(default_templates_dir()).render("new-release", "email", None, DATA)
    message = EmailMessage("u00000@example.com", rendered.subject or "", rendered.text, rendered.html)
    return build_email(message, parse_smtp_from(SENDER), now=time.time())[1]


def smtplib_round(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    sink = Sink(tmp / "sink", free_port())
    sink.start()
    try:
        data = sample_message()
        per = [
            args.users // args.pool_size + (1 if i < args.users % args.pool_size else 0)
            for i in range(args.pool_size)
        ]

        def send(count: int, first: int) -> None:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=60) as client:
                client.ehlo("bench.example")
                for n in range(first, first + count):
                    body = data.replace(b"Message-ID: <", f"Message-ID: <b{n}.".encode(), 1)
                    client.sendmail(SENDER, [f"{user_id(n)}@example.com"], body)

        threads, first = [], 0
        for count in per:
            threads.append(threading.Thread(target=send, args=(count, first)))
            first += count
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.3)
        times = sorted(t for t, _ in sink.arrivals())
        return {"emails": len(times), "emails_per_s": (len(times) - 1) / (times[-1] - times[0])}
    finally:
        sink.stop()


# -- report --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rounds if key in r]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--outage", type=float, default=0.0, help="also a run with the sink down S seconds")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the daemon")
    parser.add_argument("--profile", help="write the daemon's cProfile stats to this file (one round)")
    parser.add_argument("--out")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--sink")
    parser.add_argument("--sink-port", type=int)
    args = parser.parse_args()
    if args.sink:
        run_sink(Path(args.sink), args.sink_port)
        return 0
    top = Path(tempfile.mkdtemp(prefix="streamsrv-notify-bench-"))
    results: dict[str, list[dict[str, Any]]] = {"streamsrv": [], "smtplib": [], "outage": []}
    try:
        for n in range(args.rounds):
            base = smtplib_round(top / f"r{n}-smtplib", args)
            mine = streamsrv_round(top / f"r{n}-streamsrv", args)
            mine["ratio_vs_smtplib"] = mine.get("emails_per_s", float("nan")) / base["emails_per_s"]
            mine["sqlite_floor_ms"] = sqlite_floor_ms(top / f"r{n}-floor", args.users)
            mine["post_202_vs_floor"] = mine["post_202_ms"] / mine["sqlite_floor_ms"]
            results["smtplib"].append(base)
            results["streamsrv"].append(mine)
            print(f"round {n + 1}: smtplib {json.dumps(base)}", flush=True)
            print(f"round {n + 1}: streamsrv {json.dumps(mine)}", flush=True)
            if args.outage:
                down = streamsrv_round(top / f"r{n}-outage", args, outage_s=args.outage)
                results["outage"].append(down)
                print(f"round {n + 1}: outage {args.outage:g}s {json.dumps(down)}", flush=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(top, ignore_errors=True)
    mine, base = results["streamsrv"], results["smtplib"]
    print()
    print(
        f"medians over {len(mine)} rounds, {args.users} users, {args.sockets} sockets, pool {args.pool_size}:"
    )
    for key in REPORTED:
        print(f"  streamsrv {key:28} {median_of(mine, key):10.1f}")
    print(f"  smtplib   {'emails_per_s':28} {median_of(base, 'emails_per_s'):10.1f}")
    print(
        f"  ratio streamsrv/smtplib (median of per-round ratios): {median_of(mine, 'ratio_vs_smtplib'):.2f}"
    )
    if results["outage"]:
        for key in ("last_email_after_sink_back_s", "emails", "duplicates"):
            print(f"  outage    {key:28} {median_of(results['outage'], key):10.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

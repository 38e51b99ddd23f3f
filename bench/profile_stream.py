"""Where a ``/stream`` range request spends its CPU: in-process profile, timing, and wrk A/B.

    .venv/bin/python bench/profile_stream.py profile [-n 3000] [--top 35] [--sort tottime] [--socket]
    .venv/bin/python bench/profile_stream.py time [-n 3000] [--rounds 5] [--repo DIR ...] [--socket]
    .venv/bin/python bench/profile_stream.py wrk [--variant NAME=DIR[,VAR=VALUE...] ...]
        [--baselines static,nginx] [--mode range|full] [-c 16] [-d 5] [--rounds 3]
        [--span BYTES] [--production]

``--production`` (every command) runs streamsrv in the production profile as the issue
measures it: ``STREAMSRV_ENV=production``, anonymous access off, an HS256 JWT secret,
every request carrying ``Authorization: Bearer`` with an access token, log level
``error``; rate limiting and audit stay on (the limits lifted as above).

``profile`` and ``time`` build the daemon exactly as ``twistd streamsrv`` does
(:func:`streamsrv.tap.makeService`, development profile, ``STREAMSRV_LOG_LEVEL=warn``,
rate limits lifted as in bench/run_streaming.py, the log observer installed as twistd
installs it), take the real :class:`~streamsrv.web.site.StreamsrvSite` out of the
service tree, and feed it N keep-alive requests for random 256 KiB ranges over ONE
in-memory connection (a transport that counts and discards what is written). Nothing
runs the reactor: every request is answered synchronously, so the run is deterministic
(a fixed seed picks files and offsets). The body goes through the portable push
producer (an in-memory transport has no socket for ``sendfile``), so 256 KiB are read
and written in four 64 KiB chunks per request; ``--span 1`` makes that part negligible
and leaves the per-request overhead.

``--socket`` (``profile``, ``time``) makes that connection a real loopback TCP one
instead: the transport a client's connection gets, so the ``/stream`` fast lane answers
and bodies leave with ``sendfile``; each request is handed to the channel as the
reactor's read would hand it and the answer is read off the client socket in the same
process (its ``recv`` counts in the time).  What it leaves out is the reactor's own part
(``epoll_wait`` and the dispatch of the read) and the server's ``recv``.

``profile`` prints the top functions by own time (cProfile) and µs per request with and
without the profiler. ``time`` runs each ``--repo`` (a checkout, e.g. one made with
``git archive HEAD | tar -x -C /tmp/base``) in its own subprocess, alternating between
them for ``--rounds`` rounds, and prints the median CPU µs per request of each (process
time, so time spent descheduled by other processes does not count): the way to compare two
versions of the code on a noisy machine.

``wrk`` starts every ``--variant`` (a checkout plus extra ``STREAMSRV_*`` settings) and
the chosen baselines at once, each on its own port, all pinned to core 0, then loads
them in turn from core 1 with ``wrk -t1 -cC -dD -s bench/ranges.lua`` (random 256 KiB
ranges), rotating the order every round, and prints the median req/s and server CPU µs
per request of each and the ratio of each rate to the first variant's. Idle servers cost nothing
while another is loaded.

Everything stays on 127.0.0.1 and in a temp dir removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SPAN = 256 * 1024
SEED = 20240601
UNLIMITED = "1000000000/1"

#: The environment run_streaming.py gives streamsrv.
BENCH_ENV = {
    "STREAMSRV_ENV": "development",
    "STREAMSRV_LOG_LEVEL": "warn",
    "STREAMSRV_SHUTDOWN_GRACE_S": "1",
    "STREAMSRV_RATELIMIT_API_PER_IP": UNLIMITED,
    "STREAMSRV_RATELIMIT_API_PER_USER": UNLIMITED,
    "STREAMSRV_RATELIMIT_STREAM_PER_IP": UNLIMITED,
    "STREAMSRV_RATELIMIT_STREAM_PER_USER": UNLIMITED,
}

#: What ``--production`` adds to :data:`BENCH_ENV` (the secret is for benchmarks only).
JWT_SECRET = "bench-only-hs256-secret-0123456789abcdef-0123456789"
PRODUCTION_ENV = {
    "STREAMSRV_ENV": "production",
    "STREAMSRV_LOG_LEVEL": "error",
    "STREAMSRV_ALLOW_ANONYMOUS": "false",
    "STREAMSRV_JWT_SECRET": JWT_SECRET,
}


def bearer(repo: Path = REPO) -> str:
    """``Authorization`` for ``--production``: an access token for a listener, valid a day."""
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # after PYTHONPATH: a checkout under test keeps its own streamsrv
    from streamsrv.auth.jwt import TokenIssuer

    class _Now:
        def seconds(self) -> float:
            return time.time()

    issuer = TokenIssuer(secret=JWT_SECRET, private_key_pem=None, issuer=None, audience=None, clock=_Now())
    return "Bearer " + issuer.issue(sub="bench-user", roles=["listener"], ttl_s=24 * 3600)


# --------------------------------------------------------------------------- in-process


class _Sink:
    """What an in-memory transport needs to count (and drop) the bytes written to it."""

    def __init__(self) -> None:
        self.bytes = 0
        self.statuses: dict[bytes, int] = {}

    def note(self, data: bytes) -> None:
        self.bytes += len(data)
        if data.startswith(b"HTTP/1.1 "):
            status = data[9:12]
            self.statuses[status] = self.statuses.get(status, 0) + 1


def _make_transport(sink: _Sink) -> Any:
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    class SinkTransport(StringTransport):
        """A StringTransport that counts what is written instead of keeping it."""

        def write(self, data: bytes) -> None:
            sink.note(data)

        def writeSequence(self, seq: Any) -> None:
            sink.note(b"".join(seq))

    return SinkTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
    )


def _build(tmp: Path, tracks: int, production: bool) -> tuple[Any, list[tuple[str, int]], Any, Any]:
    """The daemon as ``twistd streamsrv`` builds it: its site, corpus, stream tracker and root service."""
    sys.path.insert(0, str(BENCH_DIR))
    from corpus import MIB, make_corpus

    corpus = make_corpus(tmp / "media", tracks=tracks, track_min=1 * MIB, track_max=4 * MIB, long_count=0)
    os.environ.update(BENCH_ENV)
    if production:
        os.environ.update(PRODUCTION_ENV)
    os.environ["STREAMSRV_DATA_DIR"] = str(tmp / "data")
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from streamsrv.tap import Options, makeService

    config = Options()
    config.parseOptions(["--media-dir", str(corpus.root), "--listen", "tcp:0:interface=127.0.0.1"])
    root = makeService(config, reactor)
    observer = getattr(root, "log_observer", None)
    if observer is not None:
        # What twistd does with the application's ILogObserver.
        globalLogBeginner.beginLoggingTo([observer], discardBuffer=True, redirectStandardIO=False)
    site = None
    for service in root:
        if isinstance(service, StreamServerEndpointService):
            site = service.factory
    assert site is not None, "makeService built no listener"
    tracker = root.getServiceNamed("streams")
    return site, [(f.name, f.size) for f in corpus.tracks], tracker, root


def _requests(
    files: list[tuple[str, int]], n: int, span: int, seed: int, authorization: str | None = None
) -> list[bytes]:
    rng = random.Random(seed)
    extra = b"Authorization: %s\r\n" % authorization.encode() if authorization else b""
    out = []
    for _ in range(n):
        name, size = files[rng.randrange(len(files))]
        first = rng.randint(0, size - span)
        out.append(
            b"GET /stream/%s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nRange: bytes=%d-%d\r\n%s\r\n"
            % (name.encode(), first, first + span - 1, extra)
        )
    return out


class Bench:
    """One connection to the real site, and a way to push requests through it.

    By default the connection is an in-memory transport (no ``sendfile``, so
    the full path and its portable producer).  With *socket*, :meth:`connect`
    opens a real loopback TCP connection to the site (the transport a plain
    TCP client gets, so the ``/stream`` fast lane and ``sendfile`` are used);
    :meth:`run` then hands each request to the channel itself, as the
    reactor's read would, and reads the answer off the client socket in this
    process, so the time measured includes the client's ``recv``.
    """

    def __init__(
        self, tmp: Path, span: int, tracks: int = 8, production: bool = False, socket: bool = False
    ) -> None:
        from twisted.internet.address import IPv4Address

        self.site, self.files, self.tracker, self.root = _build(tmp, tracks, production)
        self.span = span
        self.authorization = bearer() if production else None
        self.sink = _Sink()
        self.client: Any = None
        self.protocol: Any = None
        if not socket:
            self.transport = _make_transport(self.sink)
            self.protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            self.protocol.makeConnection(self.transport)

    def connect(self) -> None:
        """Open the loopback connection (the reactor accepts it on its next turn)."""
        import socket

        from twisted.internet import reactor

        build = self.site.buildProtocol

        def capture(addr: Any) -> Any:
            self.protocol = build(addr)
            return self.protocol

        self.site.buildProtocol = capture
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.client.setblocking(False)

    def run(self, requests: list[bytes]) -> None:
        if self.client is not None:
            self._run_socket(requests)
            return
        transport = self.transport
        tracker = self.tracker
        feed = self.protocol.dataReceived
        for raw in requests:
            feed(raw)
            # This transport never pauses the producer, so every body is
            # written within dataReceived; this loop is a safety net.
            for _ in range(100):
                if not tracker.open_count:
                    break
                transport.producer.resumeProducing()

    def _run_socket(self, requests: list[bytes]) -> None:
        feed = self.protocol.dataReceived
        recv = self.client.recv
        transport = getattr(self.protocol, "_channel", self.protocol).transport  # twisted.web's wrapper
        tracker = self.tracker
        for raw in requests:
            feed(raw)
            for _ in range(1000):
                try:
                    data = recv(1 << 20)
                except BlockingIOError:
                    if not tracker.open_count:
                        break
                    transport.doWrite()  # a body left to the sender: what the reactor would do
                    continue
                self.sink.note(data)

    probes = 0

    def probe(self) -> bool:
        """Send one range request; whether it was answered 206."""
        before = self.sink.statuses.get(b"206", 0)
        self.run(_requests(self.files, 1, self.span, SEED + 2, self.authorization))
        self.probes += 1
        ok = self.sink.statuses.get(b"206", 0) > before
        if ok:
            self.probes = 1
            self.sink.statuses.clear()
            self.sink.statuses[b"206"] = 1
        return ok

    def check(self, expected: int) -> None:
        got = self.sink.statuses.get(b"206", 0)
        if got != expected:
            raise SystemExit(f"expected {expected} responses 206, got {self.sink.statuses}")


def _in_process(args: argparse.Namespace) -> None:
    """Start the daemon's services under the reactor, wait until /stream answers, then measure.

    The measurement runs inside one reactor callback: the reactor is blocked
    meanwhile, so nothing else (timers, threads' results) interleaves with it.
    """
    from twisted.internet import reactor

    with tempfile.TemporaryDirectory(prefix="profile-stream-") as tmp_name:
        bench = Bench(Path(tmp_name), args.span, production=args.production, socket=args.socket)
        deadline = time.monotonic() + 120
        failure: list[str] = []

        def measure() -> None:
            try:
                auth = bench.authorization
                warm = _requests(bench.files, args.warmup, args.span, SEED + 1, auth)
                bench.run(warm)
                requests = _requests(bench.files, args.n, args.span, SEED, auth)
                if args.command == "profile":
                    _profile(bench, requests, args)
                    batches = 2
                else:
                    batches = args.batches
                    for _ in range(batches):
                        # CPU time of this process: time spent descheduled (other
                        # processes on a shared machine) does not count.
                        started = time.process_time()
                        bench.run(requests)
                        elapsed = time.process_time() - started
                        print(f"US_PER_REQ {1e6 * elapsed / len(requests):.2f}", flush=True)
                bench.check(bench.probes + args.warmup + len(requests) * batches)
            except BaseException as e:
                failure.append(f"{type(e).__name__}: {e}")
            finally:
                reactor.stop()

        def when_ready() -> None:
            # The catalog scans the library when the daemon starts; /stream
            # serves only tracks it knows.
            if bench.protocol is None:
                if bench.client is None:
                    bench.connect()
                reactor.callLater(0.1, when_ready)
                return
            if bench.probe():
                # Let the start-up work (scan, workers) settle first.
                reactor.callLater(1.0, measure)
            elif time.monotonic() > deadline:
                failure.append(f"/stream never answered 206: {bench.sink.statuses}")
                reactor.stop()
            else:
                reactor.callLater(0.2, when_ready)

        reactor.callWhenRunning(bench.root.startService)
        reactor.addSystemEventTrigger("before", "shutdown", bench.root.stopService)
        reactor.callWhenRunning(when_ready)
        reactor.run()
        if failure:
            raise SystemExit(failure[0])


def _profile(bench: Bench, requests: list[bytes], args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    started = time.perf_counter()
    bench.run(requests)
    plain = time.perf_counter() - started
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    bench.run(requests)
    profiler.disable()
    profiled = time.perf_counter() - started
    n = len(requests)
    print(
        f"{n} requests of {args.span} bytes over one keep-alive connection: "
        f"{1e6 * plain / n:.1f} us/request ({n / plain:,.0f} req/s), "
        f"{1e6 * profiled / n:.1f} us/request under cProfile"
    )
    stats = pstats.Stats(profiler)
    stats.sort_stats(args.sort)
    stats.print_stats(args.top)
    if args.callers:
        stats.print_callers(args.callers)
    if args.out:
        stats.dump_stats(args.out)
        print(f"profile written to {args.out} (pstats format)")


def _time(args: argparse.Namespace) -> None:
    repos = [Path(r).resolve() for r in (args.repo or [str(REPO)])]
    results: dict[Path, list[float]] = {r: [] for r in repos}
    for round_no in range(args.rounds):
        order = repos[round_no % len(repos) :] + repos[: round_no % len(repos)]
        for repo in order:
            env = dict(os.environ)
            env["PYTHONPATH"] = str(repo)
            argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "_time",
                "-n",
                str(args.n),
                "--span",
                str(args.span),
                "--warmup",
                str(args.warmup),
                "--batches",
                str(args.batches),
                *(["--production"] if args.production else []),
                *(["--socket"] if args.socket else []),
            ]
            out = subprocess.run(argv, env=env, cwd=repo, capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise SystemExit(f"{repo}: {out.stderr.strip()[-2000:]}")
            values = [
                float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("US_PER_REQ")
            ]
            best = min(values)
            results[repo].append(best)
            print(
                f"round {round_no + 1} {repo}: best of {len(values)} batches {best:.1f} us/request",
                flush=True,
            )
    first = statistics.median(results[repos[0]])
    print()
    for repo in repos:
        median = statistics.median(results[repo])
        print(
            f"{repo!s:<40} median {median:7.1f} us/request  ({1e6 / median:,.0f} req/s in-process)"
            f"  x{median / first:.2f} of {repos[0].name}"
        )


# --------------------------------------------------------------------------- real sockets


def _wrk(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH_DIR))
    import drivers
    import procstats
    import servers
    from corpus import MIB, make_corpus

    pin_server = ["taskset", "-c", "0"]
    pin_load = ["taskset", "-c", "1"]
    variants = args.variant or [f"streamsrv={REPO}"]
    authorization = bearer() if args.production else None
    with tempfile.TemporaryDirectory(prefix="profile-stream-wrk-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = make_corpus(tmp / "media", tracks=20, track_min=1 * MIB, track_max=10 * MIB, long_count=0)
        manifest = corpus.write_manifest(tmp / "manifest.txt", corpus.tracks)
        started: list[tuple[str, Any]] = []
        try:
            for spec in variants:
                name, _, rest = spec.partition("=")
                repo_text, *settings = rest.split(",")
                extra = dict(PRODUCTION_ENV) if args.production else {}
                extra.update(setting.split("=", 1) for setting in settings)
                vtmp = tmp / f"v-{name}"
                vtmp.mkdir()
                server = servers.streamsrv(
                    vtmp, Path(repo_text).resolve(), corpus, servers.free_port(), extra
                )
                server.authorization = authorization
                server.start(pin_server, corpus, 60)
                started.append((name, server))
            for baseline in filter(None, (args.baselines or "").split(",")):
                btmp = tmp / f"b-{baseline}"
                btmp.mkdir()
                if baseline == "static":
                    server = servers.static_file(btmp, corpus, servers.free_port(), access_log=False)
                elif baseline == "nginx":
                    server = servers.nginx(btmp, corpus, servers.free_port(), access_log=False)
                else:
                    raise SystemExit(f"unknown baseline {baseline!r}")
                server.start(pin_server, corpus, 60)
                started.append((baseline, server))
            results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in started}
            latencies: dict[str, list[float]] = {name: [] for name, _ in started}
            for round_no in range(args.rounds):
                k = round_no % len(started)
                for name, server in started[k:] + started[:k]:
                    drivers.http_load(
                        use_wrk=True, pin=pin_load, port=server.port, manifest=manifest,
                        prefix=server.prefix, mode=args.mode, concurrency=args.c, duration=1,
                        seed=SEED + round_no, span=args.span, authorization=server.authorization,
                    )  # fmt: skip
                    time.sleep(0.3)
                    cpu0 = procstats.cpu_seconds(server.pid)
                    result = drivers.http_load(
                        use_wrk=True, pin=pin_load, port=server.port, manifest=manifest,
                        prefix=server.prefix, mode=args.mode, concurrency=args.c, duration=args.d,
                        seed=SEED, span=args.span, authorization=server.authorization,
                    )  # fmt: skip
                    time.sleep(0.3)
                    cpu = procstats.cpu_seconds(server.pid) - cpu0
                    seconds = result["duration_us"] / 1e6
                    rate = result["requests"] / seconds
                    cpu_us = 1e6 * cpu / max(1, result["requests"])
                    errors = {k: v for k, v in result.get("errors", {}).items() if v}
                    results[name].append((rate, cpu_us))
                    p99 = result.get("latency_us", {}).get("p99", 0) / 1000
                    latencies[name].append(p99)
                    print(
                        f"round {round_no + 1} {name:<12} {rate:8,.0f} req/s  {cpu_us:6.0f} us CPU/req"
                        f"  p99 {p99:7.1f} ms" + (f"  errors {errors}" if errors else ""),
                        flush=True,
                    )
        finally:
            for _, server in started:
                server.stop()
        profile = "production (JWT)" if args.production else "development"
        print(
            f"\nmedians over {args.rounds} interleaved rounds, {args.mode} of {args.span} B, c={args.c}, "
            f"{args.d:g} s each, {profile}:"
        )
        first = started[0][0]
        base_rate = statistics.median(r for r, _ in results[first])
        for name, _ in started:
            rate = statistics.median(r for r, _ in results[name])
            cpu_us = statistics.median(c for _, c in results[name])
            # Each round's ratio is taken within seconds: the figure to trust on a noisy machine.
            pairs = list(zip(results[name], results[first], strict=True))
            per_round = statistics.median(r / b for (r, _), (b, _) in pairs)
            cpu_ratio = statistics.median(c / b for (_, c), (_, b) in pairs)
            p99 = statistics.median(latencies[name])
            print(
                f"  {name:<12} {rate:8,.0f} req/s  {cpu_us:6.0f} us CPU/req  p99 {p99:7.1f} ms   "
                f"{name}/{first} = {rate / base_rate:.2f}x (median of per-round ratios {per_round:.2f}x,"
                f" CPU/req {cpu_ratio:.2f}x)"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("profile", "time", "_time"):
        p = sub.add_parser(command)
        p.add_argument("-n", type=int, default=3000, help="requests measured")
        p.add_argument("--span", type=int, default=SPAN, help="bytes per range (default 256 KiB)")
        p.add_argument("--warmup", type=int, default=300, help="requests before measuring")
        p.add_argument("--production", action="store_true", help="production profile, JWT on every request")
        p.add_argument(
            "--socket",
            action="store_true",
            help="a real loopback TCP connection (the /stream fast lane, sendfile) instead of memory",
        )
        if command == "profile":
            p.add_argument("--top", type=int, default=35)
            p.add_argument("--sort", default="tottime")
            p.add_argument("--callers", default=None, help="also print callers of functions matching this")
            p.add_argument("--out", default=None, help="write the pstats file here")
        else:
            p.add_argument("--batches", type=int, default=3, help="timed batches per process (best is kept)")
        if command == "time":
            p.add_argument("--rounds", type=int, default=5)
            p.add_argument("--repo", action="append", help="checkout to time (repeatable; default this one)")
    p = sub.add_parser("wrk")
    p.add_argument("--variant", action="append", help="NAME=CHECKOUT[,STREAMSRV_X=V...] (repeatable)")
    p.add_argument("--baselines", default="", help="comma-separated: static, nginx")
    p.add_argument(
        "--mode",
        choices=("range", "full", "mix"),
        default="range",
        help="ranges of --span, whole files, or a seek mix (70 %% 256 KiB, 20 %% 1 MiB, 10 %% whole)",
    )
    p.add_argument("-c", type=int, default=16, help="connections")
    p.add_argument("-d", type=float, default=5, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--span", type=int, default=SPAN, help="bytes per range (default 256 KiB)")
    p.add_argument("--production", action="store_true", help="production profile, JWT on every request")
    args = parser.parse_args(argv)
    if args.command == "time":
        _time(args)
    elif args.command == "wrk":
        _wrk(args)
    else:
        _in_process(args)


if __name__ == "__main__":
    main()

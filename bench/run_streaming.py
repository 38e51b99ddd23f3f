"""Benchmark streamsrv's streaming core against twisted.web.static.File and nginx, in one command.

    .venv/bin/python bench/run_streaming.py [--quick] [--duration S] [--out FILE.json]

Generates a deterministic corpus in a temp dir, starts each server in turn on a free
loopback port pinned to core 0, drives it from core 1 with the same load (random 256 KiB
ranges at several concurrencies, full-file downloads, 500 slow readers), measures
throughput, latency, server CPU per request and RSS, and prints one table with the
medians over ``--repeat`` runs and the ratios streamsrv/nginx and streamsrv/static.File;
the raw runs go to a JSON file. ``--workers 1,2`` runs streamsrv once per
``STREAMSRV_WORKERS`` value (``streamsrv``, ``streamsrv-w2``…, interleaved in every
repeat, with ratios between them); any value above 1 leaves every process unpinned, since
N worker processes need more than one core. A server that cannot start is skipped with the reason.
Every process it starts is stopped on exit, Ctrl-C and errors included; it binds and
connects to 127.0.0.1 only and writes nothing outside its temp dir and ``--out``.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import drivers
import procstats
import report
import servers
from corpus import MIB, Corpus, make_corpus
from profile_stream import PRODUCTION_ENV, bearer

BENCH_DIR = Path(__file__).resolve().parent
STREAMSRV = report.STREAMSRV
STREAMSRV_BASE = report.STREAMSRV_BASE
REPO = BENCH_DIR.parent
RANGE_SPAN = 256 * 1024
RANGE_CONCURRENCY = (1, 16, 128, 512)
FULL_CONCURRENCY = (16, 128)
#: Pause between scenarios, so connections of the last one are gone.
SETTLE_S = 1.0
#: How long after the slow readers leave the "after" RSS is read.
AFTER_S = 2.0
#: Other processes' CPU (% of one core) during a run above which the run is flagged.
NOISY_PCT = 10.0
SERVER_CORE = 0
LOAD_CORE = 1
SERVER_ORDER = ("streamsrv", "static.File", "nginx")
SERVER_ALIASES = {
    "streamsrv": "streamsrv",
    "static": "static.File",
    "static.file": "static.File",
    "nginx": "nginx",
}


@dataclass(frozen=True)
class Scenario:
    """One load shape: 'range' or 'full' (wrk/loadgen) or 'slow' (slow readers)."""

    key: str
    label: str
    kind: str
    concurrency: int


def span_label(span: int) -> str:
    """``256K`` for 262144 bytes (KiB when whole, else bytes)."""
    return f"{span // 1024}K" if span % 1024 == 0 else f"{span}B"


def scenarios(slow_readers: int, only: list[str] | None = None, span: int = RANGE_SPAN) -> list[Scenario]:
    """The scenarios to run (all, or those whose kind or key is in ``only``), in order."""
    size = span_label(span)
    out = [Scenario(f"range-c{c}", f"{size} ranges c={c}", "range", c) for c in RANGE_CONCURRENCY]
    out += [Scenario(f"full-c{c}", f"full files c={c}", "full", c) for c in FULL_CONCURRENCY]
    out.append(Scenario(f"slow-{slow_readers}", f"{slow_readers} slow readers", "slow", slow_readers))
    return [s for s in out if not only or s.kind in only or s.key in only]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line, with --quick filling in whatever was not given explicitly."""
    p = argparse.ArgumentParser(
        description="Benchmark streamsrv against twisted.web.static.File and nginx.",
        epilog="Default full run: about 10 minutes on 2 cores; --quick: about 2.",
    )
    p.add_argument("--quick", action="store_true", help="3 s scenarios, 8 s slow readers, 1 repeat")
    p.add_argument("--duration", type=float, help="seconds per range/full scenario (default 10, quick 3)")
    p.add_argument("--slow-duration", type=float, help="seconds of slow reading (default 20, quick 8)")
    p.add_argument("--repeat", type=int, help="runs per scenario, median reported (default 3, quick 1)")
    p.add_argument(
        "--slow-repeat",
        type=int,
        default=1,
        help="runs of the slow-reader scenario per server (default 1: it is a capacity check, not a rate)",
    )
    p.add_argument("--slow-readers", type=int, default=500, help="number of slow readers (default 500)")
    p.add_argument("--slow-rate", type=int, default=16 * 1024, help="bytes/s per slow reader (default 16384)")
    p.add_argument(
        "--servers",
        default="streamsrv,static,nginx",
        help="comma-separated subset of streamsrv,static,nginx (default: all)",
    )
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk if installed (auto), or the Python fallback loadgen.py",
    )
    p.add_argument(
        "--access-log",
        choices=("auto", "on", "off"),
        default="auto",
        help="baselines' access logs: auto = on iff streamsrv at warn writes access lines",
    )
    p.add_argument(
        "--only",
        help="comma-separated scenario kinds or keys: range, full, slow, range-c512, ... (default: all)",
    )
    p.add_argument(
        "--streamsrv-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for streamsrv, repeatable (e.g. STREAMSRV_SENDFILE=false)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each scenario wait up to S s for other processes to go quiet (default 0: don't)",
    )
    p.add_argument(
        "--workers",
        default="1",
        metavar="N[,N...]",
        help="STREAMSRV_WORKERS values, each run as its own server (streamsrv, streamsrv-w2, ...); "
        "any N > 1 leaves every process unpinned (default 1)",
    )
    p.add_argument(
        "--baseline-repo",
        type=Path,
        metavar="DIR",
        help="also run streamsrv from this checkout (e.g. a git worktree of the commit before) as "
        "server streamsrv-base, interleaved with the others, for before/after ratios",
    )
    p.add_argument(
        "--range-bytes",
        type=int,
        default=RANGE_SPAN,
        metavar="B",
        help="bytes per range in the range scenarios (default 262144; issue 13 uses 16384)",
    )
    p.add_argument(
        "--production",
        action="store_true",
        help="streamsrv in the production profile with a JWT on every request (bench/profile_stream.py's "
        "PRODUCTION_ENV); range and full scenarios only",
    )
    p.add_argument("--seed", type=int, default=20240601, help="corpus and request seed")
    p.add_argument("--start-timeout", type=float, default=30.0, help="seconds a server has to start")
    p.add_argument("--out", type=Path, help="JSON result file (default bench/results/streaming-TIME.json)")
    p.add_argument("--from-json", type=Path, metavar="FILE", help="only print the table of an earlier run")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (corpus, configs, logs)")
    args = p.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.slow_duration = args.slow_duration or (8.0 if args.quick else 20.0)
    args.repeat = args.repeat or (1 if args.quick else 3)
    chosen = []
    for name in args.servers.split(","):
        if name.strip().lower() not in SERVER_ALIASES:
            p.error(f"unknown server {name!r}")
        chosen.append(SERVER_ALIASES[name.strip().lower()])
    args.servers = [s for s in SERVER_ORDER if s in chosen]
    try:
        args.workers = sorted({int(n) for n in args.workers.split(",")})
    except ValueError:
        p.error(f"--workers {args.workers!r}: expected whole numbers, e.g. 1,2")
    if args.workers[0] < 1:
        p.error("--workers: each value must be at least 1")
    if STREAMSRV in args.servers:
        at = args.servers.index(STREAMSRV)
        args.servers[at : at + 1] = [streamsrv_name(n) for n in args.workers]
    if args.baseline_repo is not None:
        args.baseline_repo = args.baseline_repo.resolve()
        at = args.servers.index(STREAMSRV) + 1 if STREAMSRV in args.servers else 0
        args.servers.insert(at, STREAMSRV_BASE)
    args.only = [o.strip() for o in args.only.split(",")] if args.only else None
    for item in args.streamsrv_env:
        if "=" not in item or not item.split("=", 1)[0]:
            p.error(f"--streamsrv-env {item!r}: expected NAME=VALUE")
    args.streamsrv_env = dict(item.split("=", 1) for item in args.streamsrv_env)
    if not scenarios(args.slow_readers, args.only):
        p.error(f"--only {','.join(args.only or [])} selects no scenario")
    if args.range_bytes < 1:
        p.error("--range-bytes must be at least 1")
    if args.production and any(s.kind == "slow" for s in scenarios(args.slow_readers, args.only)):
        p.error("--production: the slow readers send no token; add --only range,full")
    return args


def streamsrv_name(workers: int) -> str:
    """The server name of streamsrv with ``STREAMSRV_WORKERS=workers``."""
    return STREAMSRV if workers == 1 else f"{STREAMSRV}-w{workers}"


def streamsrv_workers(name: str) -> int | None:
    """``STREAMSRV_WORKERS`` of a streamsrv server name; None for a baseline."""
    if name == STREAMSRV:
        return 1
    if name.startswith(f"{STREAMSRV}-w") and name[len(STREAMSRV) + 2 :].isdigit():
        return int(name[len(STREAMSRV) + 2 :])
    return None


def pinning(workers: list[int] | None = None) -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and the load generator, and a note saying so."""
    if workers and max(workers) > 1:
        return (
            [],
            [],
            f"UNPINNED: --workers {','.join(map(str, workers))} (N worker processes need more than "
            "one core); every server, its workers and the load generator share all cores",
        )
    taskset = shutil.which("taskset")
    cpus = os.sched_getaffinity(0)
    if taskset is None:
        return [], [], "UNPINNED: taskset is missing; servers and load generators share all cores"
    if not {SERVER_CORE, LOAD_CORE} <= cpus:
        return [], [], f"UNPINNED: cores 0 and 1 are not both available (affinity {sorted(cpus)})"
    # The harness itself only sleeps and reads /proc; keep it off the server's core.
    os.sched_setaffinity(0, {LOAD_CORE})
    return (
        [taskset, "-c", str(SERVER_CORE)],
        [taskset, "-c", str(LOAD_CORE)],
        f"server pinned to core {SERVER_CORE} (taskset -c {SERVER_CORE}), "
        f"load generator and harness on core {LOAD_CORE}",
    )


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import twisted

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kib / MIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "nginx": servers.nginx_version(),
        "wrk": drivers.wrk_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def mib(kib: float) -> float:
    """KiB to MiB."""
    return kib / 1024


def _core_figures(
    before: dict[int, procstats.CoreTimes], after: dict[int, procstats.CoreTimes], ctx: dict[str, Any]
) -> dict[str, float]:
    """Busy and steal % of the server core and the load core (only when pinned)."""
    if not ctx["server_pin"]:
        return {}
    out = {}
    for role, core in (("server_core", SERVER_CORE), ("load_core", LOAD_CORE)):
        for key, value in procstats.core_busy_pct(before, after, core).items():
            out[f"{role}_{key}"] = value
    return out


def _foreign_pct(before: dict[int, int], server_pid: int, wall: float) -> float:
    """CPU % (of one core) used since ``before`` by processes other than the server and harness."""
    ours = {os.getpid(), *procstats.process_tree(server_pid)}
    return 100 * procstats.foreign_cpu_seconds(before, procstats.all_cpu_ticks(), ours) / wall


def settle(server_pid: int, quiet_wait: float) -> float:
    """Pause between scenarios; with ``quiet_wait``, also wait for other processes to calm down.

    Waits SETTLE_S, then (if ``quiet_wait`` > 0) samples 1 s windows until processes other
    than the server and the harness use under NOISY_PCT of a core, or ``quiet_wait``
    seconds have passed. Returns the seconds spent waiting for quiet.
    """
    time.sleep(SETTLE_S)
    started = time.monotonic()
    while quiet_wait > 0:
        before = procstats.all_cpu_ticks()
        time.sleep(1.0)
        if _foreign_pct(before, server_pid, 1.0) < NOISY_PCT:
            break
        if time.monotonic() - started >= quiet_wait:
            break
    return time.monotonic() - started


def _noise_note(run: dict[str, Any]) -> None:
    """Flag a run during which other processes used a noticeable share of the CPUs."""
    if run.get("foreign_cpu_pct", 0) >= NOISY_PCT:
        run["notes"].append(f"NOISY: other processes used {run['foreign_cpu_pct']:.0f}% of a core")


def run_http(
    server: servers.Server, scenario: Scenario, args: argparse.Namespace, ctx: dict[str, Any]
) -> dict[str, Any]:
    """One range or full-file scenario against a running server; the run's metrics."""
    pid = server.pid
    before = procstats.memory(pid)
    cpu0 = procstats.cpu_seconds(pid)
    cores0 = procstats.core_times()
    everyone0 = procstats.all_cpu_ticks()
    sampler = procstats.RssSampler(pid).start()
    t0 = time.monotonic()
    result = drivers.http_load(
        use_wrk=ctx["use_wrk"],
        pin=ctx["load_pin"],
        port=server.port,
        manifest=ctx["manifest"],
        prefix=server.prefix,
        mode=scenario.kind,
        concurrency=scenario.concurrency,
        duration=args.duration,
        seed=args.seed,
        span=args.range_bytes,
        authorization=ctx["authorization"],
    )
    time.sleep(0.3)  # let the server handle the disconnects, and charge it for them
    wall = time.monotonic() - t0
    cpu = procstats.cpu_seconds(pid) - cpu0
    cores = procstats.core_times()
    foreign = _foreign_pct(everyone0, pid, wall)
    peak = sampler.stop()
    after = procstats.memory(pid)
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    errors = sum(result["errors"].values())
    notes = []
    if errors:
        notes.append("errors " + ", ".join(f"{k} {v}" for k, v in result["errors"].items() if v))
    # wrk counts the bytes of responses still in flight at the end, up to one per connection.
    ceiling = (requests + scenario.concurrency) * (args.range_bytes + 4096)
    if scenario.kind == "range" and requests and result["bytes"] > ceiling:
        notes.append(f"{result['bytes'] / requests / MIB:.1f} MiB per response: Range ignored?")
    if not server.alive():
        notes.append("server died")
    return {
        "requests": requests,
        "rps": requests / seconds if seconds else 0.0,
        "mbps": result["bytes"] / seconds / 1e6 if seconds else 0.0,
        "p50_ms": result["latency_us"]["p50"] / 1e3,
        "p99_ms": result["latency_us"]["p99"] / 1e3,
        "max_ms": result["latency_us"]["max"] / 1e3,
        "cpu_s": cpu,
        "cpu_us_per_req": cpu * 1e6 / requests if requests else None,
        "cpu_pct": 100 * cpu / wall,
        "loadgen_cpu_pct": result["loadgen_cpu_pct"],
        **_core_figures(cores0, cores, ctx),
        "foreign_cpu_pct": foreign,
        "rss_before_mib": mib(before.rss_kib),
        "rss_peak_mib": mib(peak),
        "rss_growth_mib": mib(peak - before.rss_kib),
        "rss_after_mib": mib(after.rss_kib),
        "hwm_mib": mib(after.hwm_kib),
        "errors": errors,
        "notes": notes,
        "raw": result,
    }


def _not_receiving(reader: dict[str, Any], stalled: bool) -> str | None:
    """Why a slow reader did not keep receiving, or None if it did."""
    if reader["error"]:
        return f"error {reader['error'].split(':')[0]}"
    if reader["closed_by_server"]:
        return "closed by server"
    if reader["status"] != 200:
        return f"status {reader['status']}"
    if stalled:
        return "stalled >= 2 s"
    return None


def run_slow(
    server: servers.Server, scenario: Scenario, args: argparse.Namespace, ctx: dict[str, Any]
) -> dict[str, Any]:
    """The slow-reader scenario: RSS before, during and after, and who kept receiving."""
    corpus: Corpus = ctx["corpus"]
    pid = server.pid
    before = procstats.memory(pid)
    cpu0 = procstats.cpu_seconds(pid)
    cores0 = procstats.core_times()
    everyone0 = procstats.all_cpu_ticks()
    sampler = procstats.RssSampler(pid, interval=0.5).start()
    t0 = time.monotonic()
    result = drivers.slow_readers(
        pin=ctx["load_pin"],
        port=server.port,
        paths=[server.url_path(f.name) for f in corpus.long_files],
        connections=scenario.concurrency,
        rate=args.slow_rate,
        rcvbuf=4096,
        duration=args.slow_duration,
    )
    wall = time.monotonic() - t0
    cpu = procstats.cpu_seconds(pid) - cpu0
    cores = procstats.core_times()
    foreign = _foreign_pct(everyone0, pid, wall)
    peak = sampler.stop()
    time.sleep(AFTER_S)
    after = procstats.memory(pid)
    readers = result["readers"]
    connected = [r for r in readers if r["connected_at"] is not None]
    # Judge from the first whole second after everyone connected to the last whole one.
    first = math.ceil(max([r["connected_at"] for r in connected], default=0.0)) + 1
    last = int(args.slow_duration) - 1
    kept = 0
    why_not: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    for r in readers:
        window = r["windows"][first:last]
        stalled = any(a == 0 and b == 0 for a, b in itertools.pairwise(window))
        reason = _not_receiving(r, stalled or not window)
        if reason is None:
            kept += 1
        else:
            why_not[reason] = why_not.get(reason, 0) + 1
            if len(examples) < 5:
                examples.append({k: r[k] for k in ("status", "connected_at", "error", "windows")})
    received = [r["received"] for r in readers]
    measured_s = max(1, last - first)
    rates = [sum(r["windows"][first:last]) / measured_s for r in readers]
    notes = [f"{kept}/{len(readers)} kept receiving"]
    notes += [f"{count} {reason}" for reason, count in sorted(why_not.items())]
    notes.append(
        f"RSS {mib(before.rss_kib):.1f}/{mib(peak):.1f}/{mib(after.rss_kib):.1f} MiB before/peak/after"
    )
    if not server.alive():
        notes.append("server died")
    return {
        "readers": len(readers),
        "connected": len(connected),
        "kept_receiving": kept,
        "judged_window_s": [first, last],
        "not_kept": why_not,
        "not_kept_examples": examples,
        "connect_s_max": max([r["connected_at"] for r in connected], default=None),
        "reader_rate_median_Bps": statistics.median(rates) if rates else 0.0,
        "reader_rate_min_Bps": min(rates, default=0.0),
        "mbps": sum(received) / result["duration_s"] / 1e6,
        "cpu_s": cpu,
        "cpu_pct": 100 * cpu / wall,
        "loadgen_cpu_pct": result["loadgen_cpu_pct"],
        **_core_figures(cores0, cores, ctx),
        "foreign_cpu_pct": foreign,
        "rss_before_mib": mib(before.rss_kib),
        "rss_peak_mib": mib(peak),
        "rss_growth_mib": mib(peak - before.rss_kib),
        "rss_after_mib": mib(after.rss_kib),
        "hwm_mib": mib(after.hwm_kib),
        "notes": notes,
    }


def make_server(name: str, ctx: dict[str, Any], access_log: bool) -> servers.Server:
    """A fresh, not yet started Server object with a free port."""
    tmp: Path = ctx["tmp"]
    corpus: Corpus = ctx["corpus"]
    port = servers.free_port()
    if name == STREAMSRV_BASE:
        repo: Path = ctx["baseline_repo"]
        reason = servers.streamsrv_plugin_visible(repo)
        if reason:
            raise servers.ServerStartError(reason)
        own = tmp / STREAMSRV_BASE  # its own data dir and log
        own.mkdir(exist_ok=True)
        server = servers.streamsrv(own, repo, corpus, port, dict(ctx["streamsrv_env"]))
        server.name = name
        server.authorization = ctx["authorization"]
        return server
    workers = streamsrv_workers(name)
    if workers is not None:
        reason = servers.streamsrv_plugin_visible(REPO)
        if reason:
            raise servers.ServerStartError(reason)
        env = dict(ctx["streamsrv_env"])
        if workers > 1:
            env["STREAMSRV_WORKERS"] = str(workers)
        server = servers.streamsrv(tmp, REPO, corpus, port, env)
        server.name = name
        server.authorization = ctx["authorization"]
        return server
    if name == "static.File":
        return servers.static_file(tmp, corpus, port, access_log)
    return servers.nginx(tmp, corpus, port, access_log)


def log(message: str) -> None:
    """Progress to stderr, with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def estimate_s(args: argparse.Namespace, n_servers: int) -> float:
    """Rough wall time of the whole run, for the banner."""
    plan = scenarios(args.slow_readers, args.only, args.range_bytes)
    duration: float = args.duration
    slow_duration: float = args.slow_duration
    loads = sum(1 for s in plan if s.kind != "slow")
    per_repeat = loads * (duration + SETTLE_S + 0.5) + 2.5
    slow = (slow_duration + AFTER_S + SETTLE_S + 2) if any(s.kind == "slow" for s in plan) else 0.0
    repeat: int = args.repeat
    slow_repeat: int = min(args.slow_repeat, repeat)
    return n_servers * (repeat * per_repeat + slow_repeat * slow) + 5


def benchmark(args: argparse.Namespace, ctx: dict[str, Any], record: dict[str, Any]) -> None:
    """Run every scenario against every server, ``args.repeat`` times, into ``record``."""
    plan = scenarios(args.slow_readers, args.only, args.range_bytes)
    status: dict[str, dict[str, Any]] = record["servers"]
    access_log: bool | None = {"on": True, "off": False}.get(args.access_log)
    for repeat in range(args.repeat):
        # Rotate the order in later repeats so slow drift of a noisy machine does not
        # always favour the same server; streamsrv goes first in the first repeat so
        # that its access logging is known before the baselines are configured.
        shift = repeat % len(args.servers)
        for name in args.servers[shift:] + args.servers[:shift]:
            if status.get(name, {}).get("skipped"):
                continue
            if streamsrv_workers(name) is None and access_log is None:
                access_log = False  # streamsrv did not run, so nothing to match: measure serving only
                record["access_log_policy"] = "off (streamsrv not running, nothing to match)"
            log(f"repeat {repeat + 1}/{args.repeat}: starting {name}")
            server: servers.Server | None = None
            try:
                server = make_server(name, ctx, bool(access_log))
                ctx["running"].append(server)
                server.start(ctx["server_pin"], ctx["corpus"], args.start_timeout)
            except (servers.ServerStartError, OSError, ValueError, subprocess.SubprocessError) as e:
                log(f"  {name} skipped: {e}")
                if server is not None:
                    server.stop()
                    ctx["running"].remove(server)
                if name in status:  # it ran in an earlier repeat: keep those runs
                    status[name].setdefault("failed_starts", []).append(str(e))
                else:
                    status[name] = {"skipped": True, "reason": str(e)}
                continue
            info = status.setdefault(name, {"skipped": False})
            info["command"] = " ".join(ctx["server_pin"] + server.argv)
            if streamsrv_workers(name) is not None:
                info["env"] = {
                    k: v for k, v in server.env.items() if k.startswith(("STREAMSRV_", "PYTHONPATH"))
                }
                info["cwd"] = str(server.cwd)
                info.setdefault("source_digests", []).append(servers.source_digest(REPO))
                if "access_lines_per_request" not in info:
                    try:
                        lines = servers.count_access_lines(server, ctx["corpus"])
                    except (servers.ServerStartError, OSError, http.client.HTTPException) as e:
                        log(f"  could not check streamsrv's access logging ({e}); assuming none")
                        lines = 0
                    info["access_lines_per_request"] = lines / 3
                    level = server.env.get("STREAMSRV_LOG_LEVEL", "warn")
                    info["logs"] = (
                        f"access lines at STREAMSRV_LOG_LEVEL={level} ({lines} for 3 requests) to stdout"
                        if lines
                        else f"no access lines at STREAMSRV_LOG_LEVEL={level}"
                    )
                    if access_log is None:
                        access_log = lines > 0
                        record["access_log_policy"] = (
                            f"{'on' if access_log else 'off'} (matches streamsrv at warn: "
                            f"{lines} access lines for 3 requests)"
                        )
            else:
                info["logs"] = server.access_log
            try:
                for scenario in plan:
                    if scenario.kind == "slow" and repeat >= args.slow_repeat:
                        continue
                    waited = settle(server.pid, args.quiet_wait)
                    if not server.alive():
                        log(f"  {name} is not running any more; skipping its remaining scenarios")
                        break
                    duration = args.slow_duration if scenario.kind == "slow" else args.duration
                    log(f"  {name}: {scenario.label} for {duration:g} s")
                    try:
                        runner = run_slow if scenario.kind == "slow" else run_http
                        run = runner(server, scenario, args, ctx)
                    except drivers.DriverError as e:
                        log(f"    load generator failed: {e}")
                        run = {"notes": [f"load generator failed: {e}"]}
                    run.update(server=name, scenario=scenario.key, repeat=repeat, quiet_wait_s=waited)
                    _noise_note(run)
                    record["runs"].append(run)
                    log("    " + _summary(run))
            finally:
                server.stop()
                ctx["running"].remove(server)


SUMMARY_FIELDS = (
    ("rps", "req/s"),
    ("mbps", "MB/s"),
    ("p50_ms", "ms p50"),
    ("p99_ms", "ms p99"),
    ("cpu_us_per_req", "us CPU/req"),
    ("cpu_pct", "% CPU"),
    ("rss_peak_mib", "MiB RSS"),
)


def _summary(run: dict[str, Any]) -> str:
    parts = []
    for key, unit in SUMMARY_FIELDS:
        value = run.get(key)
        if isinstance(value, int | float):
            parts.append(f"{value:,.1f} {unit}")
    return ", ".join(parts + run.get("notes", []))


def worker_ratios(by_server: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """streamsrv-wN's medians divided by one worker's, then by each baseline's."""
    out: dict[str, dict[str, float]] = {}
    for name, ours in by_server.items():
        if (streamsrv_workers(name) or 1) == 1:
            continue
        for other in (STREAMSRV, *report.BASELINES):
            theirs = by_server.get(other)
            if not theirs:
                continue
            row = {}
            for column in (c for c in report.COLUMNS if c.ratio):
                a, b = ours.get(column.key), theirs.get(column.key)
                if isinstance(a, int | float) and isinstance(b, int | float) and b:
                    row[column.key] = a / b
            out[f"{name}/{other}"] = row
    return out


def finish(record: dict[str, Any]) -> str:
    """Medians and ratios into ``record`` (from its runs and settings); return the table."""
    settings = record["settings"]
    plan = scenarios(settings["slow_readers"], settings.get("only"), settings.get("range_bytes", RANGE_SPAN))
    order: list[str] = settings["servers"]
    results: dict[str, dict[str, Any]] = {}
    all_ratios: dict[str, Any] = {}
    for scenario in plan:
        expected = settings["slow_repeat"] if scenario.kind == "slow" else settings["repeat"]
        by_server = {}
        for name in order:
            runs = [
                {k: v for k, v in r.items() if k != "raw"}
                for r in record["runs"]
                if r["server"] == name and r["scenario"] == scenario.key
            ]
            if runs:
                by_server[name] = report.medians(runs)
                if len(runs) < expected:
                    by_server[name]["notes"].append(f"only {len(runs)} of {expected} runs")
        results[scenario.key] = by_server
        all_ratios[scenario.key] = {**report.ratios(by_server), **worker_ratios(by_server)}
    record["medians"] = results
    record["ratios"] = all_ratios
    present = [s for s in order if any(s in v for v in results.values())]
    return report.render_table([(s.key, s.label) for s in plan], present, results, all_ratios)


def render(record: dict[str, Any], out: Path) -> str:
    """The whole printed report of a finished (or interrupted) run."""
    table = finish(record)
    settings = record["settings"]
    m = record["machine"]
    lines = [
        f"streamsrv streaming benchmark, {record['mode']} run ({settings['duration_s']:g} s per scenario, "
        f"median of {settings['repeat']}; slow readers {settings['slow_duration_s']:g} s "
        f"x {settings['slow_repeat']}){' INTERRUPTED' if record.get('interrupted') else ''}",
        f"machine: {m['nproc']} x {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, {m['nginx'] or 'no nginx'}, {m['wrk'] or 'no wrk'}",
        f"pinning: {record['pinning']}",
        f"load generator: {record['load_generator']}",
    ]
    for name in settings["servers"]:
        info = record["servers"].get(name, {})
        if info.get("skipped"):
            lines.append(f"{name}: SKIPPED: {info['reason']}")
            continue
        extra = ", ".join(f"{k}={v}" for k, v in settings.get("streamsrv_env", {}).items())
        suffix = f" (extra env: {extra})" if streamsrv_workers(name) is not None and extra else ""
        lines.append(f"{name}: logs: {info.get('logs', '?')}{suffix}")
        for reason in info.get("failed_starts", []):
            lines.append(f"{name}: FAILED TO START in a later repeat: {reason[:300]}")
        if len(set(info.get("source_digests", []))) > 1:
            lines.append(f"{name}: WARNING: its source code changed between repeats of this run")
    if "access_log_policy" in record:
        lines.append(f"baseline access logs: {record['access_log_policy']}")
    lines += [
        "",
        table.rstrip("\n"),
        "",
        "ratios: streamsrv value / baseline value (req/s, MB/s: higher is better for streamsrv; "
        f"latency, CPU, RSS: lower is better). Total {record['elapsed_s']:.0f} s. JSON: {out}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 if at least one server was measured."""
    args = parse_args(argv)
    if args.from_json:
        print(render(json.loads(args.from_json.read_text()), args.from_json), end="")
        return 0
    server_pin, load_pin, pin_note = pinning(args.workers)
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and drivers.wrk_binary() is not None)
    if args.loadgen == "wrk" and drivers.wrk_binary() is None:
        print("--loadgen wrk: wrk is not installed", file=sys.stderr)
        return 2
    loadgen_note = (
        "wrk -t1 with bench/ranges.lua"
        if use_wrk
        else "Python fallback bench/loadgen.py (asyncio, HTTP/1.1 keep-alive)"
        + ("" if args.loadgen == "python" else ": wrk is not installed")
    )
    started = datetime.now(UTC)
    out = args.out or BENCH_DIR / "results" / f"streaming-{started:%Y%m%d-%H%M%S}.json"
    tmp = Path(tempfile.mkdtemp(prefix="streamsrv-bench-"))
    ctx: dict[str, Any] = {
        "tmp": tmp,
        "server_pin": server_pin,
        "load_pin": load_pin,
        "use_wrk": use_wrk,
        "running": [],
        "streamsrv_env": {**(PRODUCTION_ENV if args.production else {}), **args.streamsrv_env},
        "baseline_repo": args.baseline_repo,
        # Sent with every request of the range/full loads (to the baselines too, so
        # every server gets the same bytes) and with streamsrv's start probes.
        "authorization": bearer() if args.production else None,
    }
    record: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "duration_s": args.duration,
            "slow_duration_s": args.slow_duration,
            "repeat": args.repeat,
            "slow_repeat": min(args.slow_repeat, args.repeat),
            "slow_readers": args.slow_readers,
            "slow_rate_Bps": args.slow_rate,
            "range_bytes": args.range_bytes,
            "production": args.production,
            "seed": args.seed,
            "quiet_wait_s": args.quiet_wait,
            "servers": args.servers,
            "only": args.only,
            "streamsrv_env": args.streamsrv_env,
            "workers": args.workers,
        },
        "machine": machine(),
        "pinning": pin_note,
        "load_generator": loadgen_note,
        "servers": {},
        "runs": [],
    }

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicit, so Ctrl-C and SIGTERM stop the run even where SIGINT was inherited as
    # ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    log(pin_note)
    log(f"load generator: {loadgen_note}")
    wait_note = f" (+ up to {args.quiet_wait:g} s per scenario waiting for quiet)" if args.quiet_wait else ""
    log(f"estimated run time: ~{estimate_s(args, len(args.servers)) / 60:.0f} min{wait_note}")
    interrupted = False
    try:
        corpus = make_corpus(tmp / "media", seed=args.seed)
        ctx["corpus"] = corpus
        ctx["manifest"] = corpus.write_manifest(tmp / "tracks.txt", corpus.tracks)
        log(
            f"corpus: {len(corpus.tracks)} tracks of 1-10 MiB and {len(corpus.long_files)} of "
            f"{corpus.long_files[0].size // MIB} MiB ({corpus.total_bytes / MIB:.0f} MiB) in {corpus.root}"
        )
        record["corpus"] = {
            "tracks": [[f.name, f.size] for f in corpus.tracks],
            "long_files": [[f.name, f.size] for f in corpus.long_files],
        }
        benchmark(args, ctx, record)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers and load generators")
    except Exception:
        log("harness error, stopping everything; partial results follow:\n" + traceback.format_exc())
        record["error"] = traceback.format_exc(limit=3)
    finally:
        # Cleanup is bounded (servers get 10 s, then SIGKILL): let nothing interrupt it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        drivers.stop_all()
        for server in list(ctx["running"]):
            server.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    record["interrupted"] = interrupted
    record["elapsed_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    text = render(record, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print()
    print(text, end="")
    measured = any("rps" in r or "kept_receiving" in r for r in record["runs"])
    if interrupted:
        return 130
    return 0 if measured and "error" not in record else 1


if __name__ == "__main__":
    sys.exit(main())

"""Python load generators for the streaming benchmark: HTTP/1.1 keep-alive and slow readers.

Two subcommands, each run by ``run_streaming.py`` as a subprocess pinned to the load
core, each printing one JSON object on stdout:

``http``  the fallback when ``wrk`` is missing: N keep-alive connections (asyncio
          streams) each sending GETs back to back for a fixed time, a random file and,
          in range mode, a random 256 KiB window per request (seeded); output has the
          same shape as the ``WRKJSON`` line of ``ranges.lua``. It is slower than wrk:
          at high throughput it, not the server, may be the bottleneck.
``slow``  N connections each downloading a large file at a fixed byte rate through a
          small SO_RCVBUF, polling non-blocking sockets on a timer; reports, per
          reader, the bytes received in each one-second window, so the harness can
          tell whether every reader kept receiving data.

Only ever connects to the host and port it is given (the harness passes 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

RANGE_SPAN = 256 * 1024


@dataclass
class HttpStats:
    """Counters shared by the workers of one ``http`` run."""

    requests: int = 0
    bytes: int = 0
    latencies_us: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    )


def read_manifest(path: str, prefix: str) -> list[tuple[str, int]]:
    """(url path, size) for every ``name size`` line of the manifest."""
    files = []
    with open(path, encoding="ascii") as manifest:
        for line in manifest:
            name, size = line.split()
            files.append((prefix + name, int(size)))
    return files


def build_request(host: str, path: str, first: int | None, span: int) -> bytes:
    """An HTTP/1.1 keep-alive GET, with a Range header when ``first`` is given."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    if first is not None:
        lines.append(f"Range: bytes={first}-{first + span - 1}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, Content-Length (None if absent) and whether the server will close."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    close = lines[0].startswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection":
            close = value.strip().lower() == "close"
    return status, length, close


async def http_worker(
    host: str,
    port: int,
    files: list[tuple[str, int]],
    mode: str,
    span: int,
    rng: random.Random,
    stats: HttpStats,
) -> None:
    """Send requests on one keep-alive connection (reconnecting if needed) forever."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while True:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            except OSError:
                stats.errors["connect"] += 1
                await asyncio.sleep(0.05)
                continue
        assert reader is not None
        path, size = files[rng.randrange(len(files))]
        first = rng.randint(0, size - span) if mode == "range" else None
        started = time.perf_counter()
        try:
            writer.write(build_request(host, path, first, span))
            status, length, close = parse_head(await reader.readuntil(b"\r\n\r\n"))
            if length is None:
                raise ValueError("no Content-Length")
            remaining = length
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConnectionError("closed mid-body")
                remaining -= len(chunk)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            stats.errors["read"] += 1
            writer.close()
            writer = None
            continue
        stats.latencies_us.append((time.perf_counter() - started) * 1e6)
        stats.requests += 1
        stats.bytes += length
        if not 200 <= status < 400:
            stats.errors["status"] += 1
        if close:
            writer.close()
            writer = None


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


async def run_http(args: argparse.Namespace) -> dict[str, Any]:
    """Drive ``args.concurrency`` workers for ``args.duration`` seconds."""
    files = read_manifest(args.manifest, args.prefix)
    rng = random.Random(args.seed)
    stats = HttpStats()
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(http_worker(args.host, args.port, files, args.mode, args.span, rng, stats))
        for _ in range(args.concurrency)
    ]
    await asyncio.sleep(args.duration)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - started
    lat = sorted(stats.latencies_us)
    return {
        "duration_us": elapsed * 1e6,
        "requests": stats.requests,
        "bytes": stats.bytes,
        "errors": stats.errors,
        "latency_us": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else 0.0,
            "mean": statistics.fmean(lat) if lat else 0.0,
        },
    }


@dataclass
class Reader:
    """State of one slow reader."""

    status: int | None = None
    head: bytes = b""
    received: int = 0
    windows: dict[int, int] = field(default_factory=dict)
    connected_at: float | None = None
    error: str | None = None
    closed_by_server: bool = False


async def slow_reader(
    reader: Reader,
    host: str,
    port: int,
    path: str,
    rate: int,
    rcvbuf: int,
    tick: float,
    started: float,
    deadline: float,
) -> None:
    """Download ``path`` at ``rate`` bytes/s until ``deadline``, recording arrivals."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii")
            await loop.sock_sendall(sock, request)
        except OSError as e:
            reader.error = f"connect: {e}"
            return
        reader.connected_at = time.monotonic() - started
        per_tick = max(1, int(rate * tick))
        buf = bytearray(per_tick * 2)
        allowance = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(tick)
            allowance = min(allowance + per_tick, len(buf))
            try:
                n = sock.recv_into(buf, allowance)
            except BlockingIOError:
                continue
            except OSError as e:
                reader.error = f"recv: {e}"
                return
            if n == 0:
                reader.closed_by_server = True
                return
            allowance -= n
            if reader.status is None:
                reader.head += bytes(buf[:n])
                if b"\r\n" in reader.head:
                    reader.status = int(reader.head.split(b" ", 2)[1])
            reader.received += n
            window = int(time.monotonic() - started)
            reader.windows[window] = reader.windows.get(window, 0) + n
    finally:
        sock.close()


async def run_slow(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.connections`` slow readers for ``args.duration`` seconds."""
    paths = args.path
    started = time.monotonic()
    deadline = started + args.duration
    readers = [Reader() for _ in range(args.connections)]
    await asyncio.gather(
        *(
            slow_reader(
                r,
                args.host,
                args.port,
                paths[i % len(paths)],
                args.rate,
                args.rcvbuf,
                args.tick,
                started,
                deadline,
            )
            for i, r in enumerate(readers)
        )
    )
    seconds = int(args.duration)
    return {
        "duration_s": time.monotonic() - started,
        "readers": [
            {
                "status": r.status,
                "received": r.received,
                "connected_at": r.connected_at,
                "error": r.error,
                "closed_by_server": r.closed_by_server,
                "windows": [r.windows.get(w, 0) for w in range(seconds)],
            }
            for r in readers
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run one load, print its JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    http = sub.add_parser("http", help="keep-alive GET load (wrk fallback)")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, required=True)
    http.add_argument("--manifest", required=True)
    http.add_argument("--prefix", required=True)
    http.add_argument("--mode", choices=["range", "full"], default="range")
    http.add_argument("--seed", type=int, default=1)
    http.add_argument("--span", type=int, default=RANGE_SPAN)
    http.add_argument("--concurrency", type=int, default=1)
    http.add_argument("--duration", type=float, default=10.0)
    slow = sub.add_parser("slow", help="slow readers of large files")
    slow.add_argument("--host", default="127.0.0.1")
    slow.add_argument("--port", type=int, required=True)
    slow.add_argument("--path", action="append", required=True, help="URL path; repeatable")
    slow.add_argument("--connections", type=int, default=500)
    slow.add_argument("--rate", type=int, default=16 * 1024, help="bytes/s per reader")
    slow.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF in bytes")
    slow.add_argument("--tick", type=float, default=0.25, help="seconds between reads")
    slow.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    runner = run_http if args.command == "http" else run_slow
    result = asyncio.run(runner(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""Idle load: many idle keep-alive connections and WebSocket sockets on one daemon process.

    .venv/bin/python bench/idle_load.py [--http 10000] [--ws 2000] [--probes 200]

Starts one ``twistd -n streamsrv`` process (the limit on open files raised
for it and for this script), measures ``GET /health`` latency on fresh
connections (the baseline), then opens ``--http`` keep-alive connections
that each make one request and stay idle, and ``--ws`` WebSocket sockets
that authenticate and stay idle.  With all of them open it measures
``/health`` again, interleaving probes so both sets see the same machine,
reports the daemon's file descriptors and memory, closes everything and
waits for the descriptors to return to the baseline.  Issue 14's goal:
``/health`` under 50 ms with 10 000 + 2 000 idle connections, descriptors
back to the baseline afterwards.

Client and daemon share the machine: the latencies include the client's
own scheduling.  Every process started is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_daemon import Daemon, free_port  # noqa: E402
from tests.test_faults_kill import SECRET, token_for  # noqa: E402

#: Connections opened at once before waiting for them.
BATCH = 500


def raise_nofile(wanted: int) -> int:
    """Raise this process's (and so its children's) open-file limit towards *wanted*.

    Raising the hard limit needs privileges a container may lack: then the
    soft limit goes up to the hard one, and the run says if that is short.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < wanted:
        print(f"warning: open files limited to {limit} (wanted {wanted})", file=sys.stderr)
    return limit


def fds(pid: int) -> int:
    """Open file descriptors of *pid*."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    """Resident memory of *pid*, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def health_ms(port: int) -> float:
    """One ``GET /health`` on a fresh connection, milliseconds to the whole answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    elapsed = (time.perf_counter() - started) * 1000
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return elapsed


async def probes(port: int, count: int) -> list[float]:
    """*count* sequential ``/health`` probes, 20 ms apart."""
    out = []
    for _ in range(count):
        out.append(await health_ms(port))
        await asyncio.sleep(0.02)
    return out


async def idle_http(port: int, count: int) -> list[asyncio.StreamWriter]:
    """*count* keep-alive connections, each after one answered request."""
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ]
        if lengths:
            await reader.readexactly(lengths[0])
        else:  # chunked
            await reader.readuntil(b"0\r\n\r\n")
        writers.append(writer)

    for start in range(0, count, BATCH):
        await asyncio.gather(*(one() for _ in range(min(BATCH, count - start))))
    return writers


async def idle_ws(port: int, count: int) -> list[Any]:
    """*count* authenticated WebSocket sockets."""
    import websockets

    token = token_for("idle")
    sockets: list[Any] = []

    async def one() -> None:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=60, ping_interval=None)
        await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        sockets.append(ws)

    for start in range(0, count, BATCH):
        await asyncio.gather(*(one() for _ in range(min(BATCH, count - start))))
    return sockets


def summary(values: list[float]) -> dict[str, float]:
    """Median, p99 and max, rounded."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ordered[-1], 2),
    }


async def run(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """The measurement (see the module docstring)."""
    pid, port = daemon.process.pid, daemon.port
    await probes(port, 20)  # warm up
    baseline_fds = fds(pid)
    before = await probes(port, args.probes)
    started = time.monotonic()
    writers = await idle_http(port, args.http)
    sockets = await idle_ws(port, args.ws)
    opened_s = time.monotonic() - started
    loaded_fds, loaded_rss = fds(pid), rss_mib(pid)
    during = await probes(port, args.probes)
    still_open = sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())
    for writer in writers:
        writer.close()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    closed_at = time.monotonic()
    while fds(pid) > baseline_fds and time.monotonic() - closed_at < 60:
        await asyncio.sleep(0.1)
    return {
        "http_idle": args.http,
        "ws_idle": args.ws,
        "opened_in_s": round(opened_s, 1),
        "fds": {"baseline": baseline_fds, "loaded": loaded_fds, "after_close": fds(pid)},
        "fds_back_after_s": round(time.monotonic() - closed_at, 2),
        "rss_mib": {"loaded": round(loaded_rss, 1), "after_close": round(rss_mib(pid), 1)},
        "health_idle_daemon": summary(before),
        "health_with_idle_connections": summary(during),
        "http_connections_still_open_at_end": still_open,
    }


def main() -> None:
    """Parse the arguments, start the daemon, measure, print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http", type=int, default=10_000)
    parser.add_argument("--ws", type=int, default=2_000)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    limit = raise_nofile(args.http + args.ws + 1024)  # each side holds one end
    with tempfile.TemporaryDirectory() as tmp:
        media, data = Path(tmp) / "media", Path(tmp) / "data"
        media.mkdir()
        data.mkdir()
        port = free_port()
        env = {"STREAMSRV_DATA_DIR": str(data), "STREAMSRV_JWT_SECRET": SECRET}
        listen = ["--media-dir", str(media), "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096"]
        daemon = Daemon(Path(tmp), listen, env, port)
        try:
            daemon.wait_ready(60)
            result = asyncio.run(run(daemon, args))
        finally:
            daemon.stop()
    result["nofile_limit"] = limit
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Load drivers: run wrk (or the Python fallback) and the slow readers, parse their output.

Every driver runs as a subprocess pinned to the load core (``pin``), with a hard
timeout, in its own process group so that ``stop_all`` can end it on Ctrl-C. The
results are plain dicts in one shape whichever driver produced them. This module never
talks to a server itself; it only launches load generators against 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "ranges.lua"
LOADGEN = BENCH_DIR / "loadgen.py"
#: wrk's default 2 s timeout would drop (not count) slow responses at c=512.
WRK_TIMEOUT = "30s"
#: Extra wall time a driver may take beyond its nominal duration before it is killed.
SLACK_S = 60.0

_running: set[subprocess.Popen[str]] = set()


class DriverError(Exception):
    """A load generator failed or printed nothing usable."""


def wrk_binary() -> str | None:
    """Path of wrk, or None."""
    return shutil.which("wrk")


def wrk_version() -> str | None:
    """First line of ``wrk -v``, or None without wrk."""
    binary = wrk_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip().splitlines()[0].split(" Copyright")[0]


def _run(argv: list[str], timeout: float, authorization: str | None = None) -> tuple[str, float, float]:
    """Run ``argv`` in its own process group; return stdout, its CPU seconds and wall seconds.

    ``authorization`` reaches ranges.lua as ``BENCH_AUTHORIZATION``.

    The CPU time comes from RUSAGE_CHILDREN around the wait: the servers are children
    too, but they are only reaped when stopped, so they do not count here.
    """
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    env = dict(os.environ)
    env.pop("BENCH_AUTHORIZATION", None)
    if authorization:
        env["BENCH_AUTHORIZATION"] = authorization
    popen = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _running.add(popen)
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(popen)
        raise DriverError(f"{Path(argv[0]).name} ran over {timeout:.0f} s and was killed") from None
    except BaseException:  # Ctrl-C or SIGTERM of the harness: the load stops with it
        _kill(popen)
        raise
    finally:
        _running.discard(popen)
    if popen.returncode != 0:
        raise DriverError(f"{Path(argv[0]).name} exited {popen.returncode}: {err.strip()[-500:]}")
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return out, cpu, time.monotonic() - started


def _kill(popen: subprocess.Popen[str]) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    popen.communicate()


def stop_all() -> None:
    """Kill every load generator still running (used on Ctrl-C and errors)."""
    for popen in list(_running):
        _kill(popen)
        _running.discard(popen)


_LATENCY_LINE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(output: str) -> dict[str, Any]:
    """The WRKJSON line of ranges.lua's done(); wrk's --latency text as a cross-check."""
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            text = {f"p{p}": float(v) * _UNIT_US[u] for p, v, u in _LATENCY_LINE.findall(output)}
            result["latency_text_us"] = text
            return result
    raise DriverError("wrk printed no WRKJSON line: " + output.strip()[-500:])


def http_load(
    *,
    use_wrk: bool,
    pin: list[str],
    port: int,
    manifest: Path,
    prefix: str,
    mode: str,
    concurrency: int,
    duration: float,
    seed: int,
    span: int,
    authorization: str | None = None,
) -> dict[str, Any]:
    """Keep ``concurrency`` connections busy for ``duration`` s; return counts and latency.

    ``authorization``, when given, is sent as the ``Authorization`` header of every
    request (wrk only).
    """
    url = f"http://127.0.0.1:{port}"
    if use_wrk:
        binary = wrk_binary()
        assert binary is not None
        argv = [
            *pin,
            binary,
            "-t1",
            f"-c{concurrency}",
            f"-d{duration:g}s",
            "--latency",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(LUA_SCRIPT),
            url,
            "--",
            str(manifest),
            prefix,
            mode,
            str(seed),
            str(span),
        ]
        out, cpu, wall = _run(argv, duration + SLACK_S, authorization)
        result = parse_wrk(out)
    else:
        argv = [
            *pin,
            sys.executable,
            str(LOADGEN),
            "http",
            "--port",
            str(port),
            "--manifest",
            str(manifest),
            "--prefix",
            prefix,
            "--mode",
            mode,
            "--seed",
            str(seed),
            "--span",
            str(span),
            "--concurrency",
            str(concurrency),
            "--duration",
            f"{duration:g}",
        ]
        out, cpu, wall = _run(argv, duration + SLACK_S)
        result = json.loads(out)
    result["driver"] = "wrk" if use_wrk else "loadgen.py"
    result["loadgen_cpu_pct"] = 100 * cpu / wall
    return result


def slow_readers(
    *,
    pin: list[str],
    port: int,
    paths: list[str],
    connections: int,
    rate: int,
    rcvbuf: int,
    duration: float,
) -> dict[str, Any]:
    """Run the slow readers for ``duration`` s; return loadgen.py's per-reader record."""
    argv = [
        *pin,
        sys.executable,
        str(LOADGEN),
        "slow",
        "--port",
        str(port),
        *[arg for path in paths for arg in ("--path", path)],
        "--connections",
        str(connections),
        "--rate",
        str(rate),
        "--rcvbuf",
        str(rcvbuf),
        "--duration",
        f"{duration:g}",
    ]
    out, cpu, wall = _run(argv, duration + SLACK_S)
    result: dict[str, Any] = json.loads(out)
    result["loadgen_cpu_pct"] = 100 * cpu / wall
    return result

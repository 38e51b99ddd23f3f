"""Read a server's CPU time and memory from ``/proc``, for the process and its children.

Figures are summed over the process tree rooted at the server's pid (twistd or nginx,
plus any worker it forks), so a server that spreads work over helpers is charged for
all of it. Summed RSS counts shared pages once per process: with one process, as in
every default configuration here, that is exact. This module only reads ``/proc``; it
never signals or otherwise touches the processes it watches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None if gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by ``pid``'s tree."""
    ticks = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            # utime and stime are fields 14 and 15 of stat; 12 and 13 after ")".
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def all_cpu_ticks() -> dict[int, int]:
    """utime+stime clock ticks of every process on the machine, by pid."""
    ticks = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def foreign_cpu_seconds(before: dict[int, int], after: dict[int, int], ours: set[int]) -> float:
    """CPU seconds used between two ``all_cpu_ticks`` snapshots by processes not in ``ours``.

    Counts processes alive at the second snapshot (a process that came and went in
    between is missed), so it is a lower bound of what else ran on the machine.
    """
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in ours)
    return max(0, ticks) / CLOCK_TICKS


@dataclass(frozen=True)
class CoreTimes:
    """Cumulative jiffies of one core from ``/proc/stat``."""

    busy: int
    steal: int
    total: int


def core_times() -> dict[int, CoreTimes]:
    """Per-core busy (user, nice, system, irq, softirq), steal and total jiffies.

    Unlike a process's utime and stime, a core's busy time includes softirq work, which
    is where much of loopback TCP delivery is done and charged to no process.
    """
    cores = {}
    for line in (PROC / "stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
        busy = user + nice + system + irq + softirq
        cores[int(name[3:])] = CoreTimes(busy, steal, busy + idle + iowait + steal)
    return cores


def core_busy_pct(before: dict[int, CoreTimes], after: dict[int, CoreTimes], core: int) -> dict[str, float]:
    """Busy and steal percentages of ``core`` between two ``core_times`` snapshots."""
    if core not in before or core not in after:
        return {}
    total = after[core].total - before[core].total
    if total <= 0:
        return {}
    return {
        "busy_pct": 100 * (after[core].busy - before[core].busy) / total,
        "steal_pct": 100 * (after[core].steal - before[core].steal) / total,
    }


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process tree, in KiB: now (VmRSS) and peak (VmHWM)."""

    rss_kib: int
    hwm_kib: int
    processes: int


def memory(pid: int) -> Memory:
    """Sum VmRSS and VmHWM over ``pid``'s tree."""
    rss = hwm = count = 0
    for member in process_tree(pid):
        try:
            lines = (PROC / str(member) / "status").read_text().splitlines()
        except OSError:
            continue
        count += 1
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return Memory(rss, hwm, count)


@dataclass
class RssSampler:
    """Sample a tree's VmRSS every ``interval`` seconds in a thread until stopped."""

    pid: int
    interval: float = 0.2
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        """Take a first sample now and keep sampling in the background."""
        self.samples.append(memory(self.pid).rss_kib)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(memory(self.pid).rss_kib)

    def stop(self) -> int:
        """Stop sampling; return the peak VmRSS seen, in KiB."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(memory(self.pid).rss_kib)
        return max(self.samples)


def terminate(process: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """SIGTERM *process* if it still runs, SIGKILL it after *grace* seconds; reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

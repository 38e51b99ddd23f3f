"""Turn benchmark runs into medians, ratios and the one table the harness prints.

Pure functions over plain dicts (no I/O, no processes): ``medians`` takes each metric's
median over the repeats of a (server, scenario) independently, ``ratios`` divides
streamsrv's medians by each baseline's, ``render_table`` lays everything out as text.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

STREAMSRV = "streamsrv"
#: The same daemon from another checkout (``run_streaming.py --baseline-repo``).
STREAMSRV_BASE = "streamsrv-base"
BASELINES = (STREAMSRV_BASE, "nginx", "static.File")


@dataclass(frozen=True)
class Column:
    """One numeric column of the table: its run-dict key, header and format."""

    key: str
    header: str
    fmt: Callable[[float], str]
    width: int
    #: Whether streamsrv/baseline of this column means anything.
    ratio: bool = True


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


COLUMNS: tuple[Column, ...] = (
    Column("rps", "req/s", _fixed(0), 8),
    Column("mbps", "MB/s", _fixed(1), 8),
    Column("p50_ms", "p50 ms", _fixed(2), 8),
    Column("p99_ms", "p99 ms", _fixed(2), 8),
    Column("cpu_us_per_req", "CPU us/req", _fixed(0), 10),
    Column("cpu_pct", "CPU %", _fixed(0), 6),
    Column("server_core_busy_pct", "core0 %", _fixed(0), 7, ratio=False),
    Column("load_core_busy_pct", "core1 %", _fixed(0), 7, ratio=False),
    Column("foreign_cpu_pct", "other %", _fixed(0), 7, ratio=False),
    Column("rss_peak_mib", "RSS MiB", _fixed(1), 8),
    Column("rss_growth_mib", "dRSS MiB", _fixed(1), 8),
)


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric medians over ``runs`` (numbers only); notes of every run, deduplicated.

    ``NOISY`` notes are summarised as how many of the runs were disturbed.
    """
    if not runs:
        return {}
    out: dict[str, Any] = {"repeats": len(runs)}
    keys = {
        k for run in runs for k, v in run.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for key in sorted(keys):
        values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
        if values:
            out[key] = statistics.median(values)
    notes: list[str] = []
    noisy = 0
    for run in runs:
        run_notes = run.get("notes", [])
        noisy += any(note.startswith("NOISY") for note in run_notes)
        for note in run_notes:
            if note not in notes and not note.startswith("NOISY"):
                notes.append(note)
    if noisy:
        notes.append(f"NOISY in {noisy}/{len(runs)} runs")
    out["notes"] = notes
    return out


def ratios(by_server: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """streamsrv's median divided by each present baseline's, per column with data."""
    ours = by_server.get(STREAMSRV)
    if not ours:
        return {}
    out: dict[str, dict[str, float]] = {}
    for baseline in BASELINES:
        theirs = by_server.get(baseline)
        if not theirs:
            continue
        row = {}
        for column in (c for c in COLUMNS if c.ratio):
            a, b = ours.get(column.key), theirs.get(column.key)
            if isinstance(a, int | float) and isinstance(b, int | float) and b:
                row[column.key] = a / b
        out[f"{STREAMSRV}/{baseline}"] = row
    return out


def render_table(
    scenarios: Sequence[tuple[str, str]],
    servers: Sequence[str],
    results: dict[str, dict[str, dict[str, Any]]],
    scenario_ratios: dict[str, dict[str, dict[str, float]]],
) -> str:
    """The table: per scenario, a row per server, then a row per ratio.

    ``scenarios`` is (key, label) in order; ``results[scenario][server]`` the medians.
    """
    name_width = max([len(s) for s in servers] + [len("streamsrv/static.File")]) + 2
    label_width = max(len(label) for _, label in scenarios) + 2
    header = "scenario".ljust(label_width) + "server".ljust(name_width)
    header += "".join(c.header.rjust(c.width + 1) for c in COLUMNS) + "  notes"
    lines = [header, "-" * len(header)]
    for key, label in scenarios:
        first = True
        for server in servers:
            row = results.get(key, {}).get(server)
            if not row:
                continue
            cells = "".join(_cell(row.get(c.key), c.fmt, c.width) for c in COLUMNS)
            notes = "; ".join(row.get("notes", []))
            lines.append(
                (label if first else "").ljust(label_width) + server.ljust(name_width) + cells + "  " + notes
            )
            first = False
        for ratio_name, values in scenario_ratios.get(key, {}).items():
            cells = "".join(_cell(values.get(c.key), lambda v: f"{v:.2f}x", c.width) for c in COLUMNS)
            lines.append("".ljust(label_width) + ratio_name.ljust(name_width) + cells)
        if not first:
            lines.append("")
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


def _cell(value: Any, fmt: Callable[[float], str], width: int) -> str:
    text = fmt(value) if isinstance(value, int | float) else "-"
    return text.rjust(width + 1)

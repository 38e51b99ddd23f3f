"""Idle memory of a serving streamsrv: RSS per process, and what a large catalog adds.

    .venv/bin/python bench/rss.py [--variant NAME=CHECKOUT ...] [--workers 1,2] [--tracks 0]
        [--settle 5] [--rounds 1]

Starts each ``--variant`` (a checkout; default this one) under ``twistd streamsrv``
exactly as ``bench/profile_stream.py wrk`` does (development profile, warn logging),
with ``STREAMSRV_WORKERS`` set to each of ``--workers``, waits until ``/health`` answers
and one range of every track was served (``/stream`` only serves tracks the catalog
scanned), lets it settle ``--settle`` seconds, and prints the VmRSS of every process of
the server's tree (the supervisor and each worker with ``STREAMSRV_WORKERS`` > 1),
their sum, and whether PyAV or numpy are loaded in each (``/proc/PID/maps``).

``--tracks N`` adds a library of N tiny files (``library/Artist NNNN/NNNNNN.mp3``, the
first 4 KiB of a corpus track each) to the small corpus: the catalog scans all N at start-up
(waited for: ``/stream`` serves the last one), so its RSS minus that of an empty library
is what N tracks cost.  ``--restart`` stops the daemon once the scan is done and measures
a second start on the same data (a catalog loaded, not scanned for the first time).
Variants are started one after another, in rotating order when ``--rounds`` > 1.
Everything stays in a temp dir, removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import procstats  # noqa: E402
import servers  # noqa: E402
from corpus import MIB, make_corpus  # noqa: E402


def _tiny_library(root: Path, tracks: int, body: bytes) -> None:
    """*tracks* files holding *body*, 100 to a directory."""
    for n in range(tracks):
        folder = root / f"Artist {n // 100:04d}"
        if n % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:06d}.mp3").write_bytes(body)


def _loaded(pid: int) -> str:
    """Which of PyAV (libavcodec) and numpy are mapped into *pid*."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "?"
    found = [name for name, mark in (("av", "libavcodec"), ("numpy", "_multiarray_umath")) if mark in maps]
    return "+".join(found) or "neither"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait_catalog(port: int, tracks: int, timeout: float) -> float:
    """Seconds until ``/stream`` serves the last tiny track (the catalog scanned the library)."""
    started = time.monotonic()
    n = tracks - 1
    url = f"http://127.0.0.1:{port}/stream/library/Artist%20{n // 100:04d}/{n:06d}.mp3"
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the catalog did not list {tracks} tracks in {timeout:.0f} s")


def measure(
    name: str, repo: Path, tmp: Path, workers: int, tracks: int, settle: float, restart: bool = False
) -> int:
    vtmp = Path(tempfile.mkdtemp(prefix=f"{name}-w{workers}-", dir=tmp))
    corpus = make_corpus(vtmp / "media", tracks=2, track_min=1 * MIB, track_max=2 * MIB, long_count=0)
    if tracks:
        # Each tiny track is the first 4 KiB (about ten MPEG frames) of a corpus track.
        _tiny_library(
            corpus.root / "library", tracks, (corpus.root / corpus.tracks[0].name).read_bytes()[:4096]
        )
    env = {"STREAMSRV_WORKERS": str(workers)}
    server = servers.streamsrv(vtmp, repo, corpus, servers.free_port(), env)
    server.start([], corpus, 600)
    if restart:
        # Measure a daemon that starts on a catalog it already has (the usual case), not the
        # one whose first scan just filled it.
        if tracks:
            _wait_catalog(server.port, tracks, 1800)
        server.stop()
        server.start([], corpus, 600)
    try:
        scan_s = _wait_catalog(server.port, tracks, 1800) if tracks else 0.0
        time.sleep(settle)
        pids = procstats.process_tree(server.pid)
        rows = [(pid, _rss_kib(pid), _loaded(pid)) for pid in pids]
        rows = [r for r in rows if r[1] > 0]
        total = sum(r[1] for r in rows)
        detail = ", ".join(f"pid {pid}: {rss / 1024:.1f} MiB ({libs})" for pid, rss, libs in rows)
        extra = f", catalog of {tracks} scanned in {scan_s:.0f} s" if tracks else ""
        print(
            f"{name:<10} workers={workers} tracks={tracks}: total {total / 1024:6.1f} MiB"
            f" over {len(rows)} processes{extra}\n    {detail}",
            flush=True,
        )
        return total
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", help="NAME=CHECKOUT (repeatable)")
    parser.add_argument("--workers", default="1", help="comma-separated STREAMSRV_WORKERS values")
    parser.add_argument("--tracks", type=int, default=0, help="serve a synthetic library of this many tracks")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--restart", action="store_true", help="measure a second start on the same data")
    args = parser.parse_args(argv)
    variants = [v.partition("=")[::2] for v in (args.variant or [f"streamsrv={REPO}"])]
    with tempfile.TemporaryDirectory(prefix="rss-") as tmp_name:
        for round_no in range(args.rounds):
            k = round_no % len(variants)
            for name, repo in variants[k:] + variants[:k]:
                for workers in (int(w) for w in args.workers.split(",")):
                    measure(
                        name, Path(repo).resolve(), Path(tmp_name), workers, args.tracks, args.settle,
                        args.restart,
                    )  # fmt: skip


if __name__ == "__main__":
    main()

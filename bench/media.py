"""Waveforms and metadata: the costs issue 4 asks to measure, in one run.

1. Waveform generation of one track, single-threaded, against the best
   baseline on this machine: BBC ``audiowaveform`` when it is on PATH (the
   same flags: ``-z 256 -b 8``), and always ``ffmpeg -threads 1 -i IN -f null -``
   (decoding alone: a floor no waveform tool can beat, since each must decode).
2. 50 concurrent requests for the waveform of one uncached track through
   :class:`~streamsrv.audio.library.MediaLibrary` and a real worker pool:
   wall time, and how many jobs the pool ran (the goal: one decode).
3. Metadata cache hit latency: ``Catalog.get`` of a track whose record is in
   the in-process LRU (µs).

    .venv/bin/python bench/media.py [--seconds 300] [--rounds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task

from streamsrv.audio import waveform
from tests import audiogen


def _median_s(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def waveform_costs(track: Path, out: Path, rounds: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result["streamsrv_s"] = _median_s(
        lambda: waveform.to_dat(waveform.generate(str(track), samples_per_pixel=256, bits=8)), rounds
    )
    if shutil.which("ffmpeg"):
        result["ffmpeg_decode_only_s"] = _median_s(
            lambda: subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(track), "-f", "null", "-"],
                check=True,
            ),
            rounds,
        )
    if shutil.which("audiowaveform"):
        result["audiowaveform_s"] = _median_s(
            lambda: subprocess.run(
                ["audiowaveform", "-q", "-i", str(track), "-o", str(out / "aw.dat"), "-z", "256", "-b", "8"],
                check=True,
            ),
            rounds,
        )
    else:
        result["audiowaveform_s"] = None
        result["audiowaveform_note"] = "not installed (not packaged for this machine's Debian)"
    return result


def coalescing(track: Path, tmp: Path, concurrent: int) -> dict[str, Any]:
    """N simultaneous uncached waveform requests: wall time and pool jobs run."""
    from twisted.internet import reactor

    from streamsrv.audio.library import MediaLibrary, WaveformOptions
    from streamsrv.audio.workers import WorkerPool
    from streamsrv.cache.artifacts import ArtifactCache
    from streamsrv.threads import ReactorThreads

    result: dict[str, Any] = {}

    async def run() -> None:
        pool = WorkerPool(reactor, size=1, max_queue=concurrent + 4)
        pool.startService()
        await task.deferLater(reactor, 2.0, lambda: None)  # let the worker warm up
        library = MediaLibrary(
            track.parent,
            catalog=None,
            pool=pool,
            cache=ArtifactCache(tmp / "cache", 1 << 28, threads=ReactorThreads(reactor)),
        )
        info = os.stat(track)
        before = pool.completed
        started = time.perf_counter()
        await defer.gatherResults(
            [
                defer.ensureDeferred(library.waveform(track.name, track, info, WaveformOptions()))
                for _ in range(concurrent)
            ]
        )
        result["wall_s"] = time.perf_counter() - started
        result["jobs_run"] = pool.completed - before
        result["requests"] = concurrent
        await pool.stopService()

    d = defer.ensureDeferred(run())
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return result


def metadata_hit_us(tmp: Path, number: int) -> float:
    from streamsrv.audio.catalog import Catalog
    from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool

    root = tmp / "lib"
    root.mkdir()
    audiogen.write_tone(root / "a.flac", "flac", 1.0)
    catalog = Catalog(
        tmp / "cat.sqlite3", root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool()
    )
    catalog.open()
    catalog.scan()
    catalog.get("a.flac")  # fills the LRU
    started = time.perf_counter()
    for _ in range(number):
        catalog.get("a.flac")
    elapsed = time.perf_counter() - started
    catalog.close()
    return elapsed / number * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300.0, help="length of the generated track")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrent", type=int, default=50)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamsrv-media-bench-") as name:
        tmp = Path(name)
        track = tmp / "track.flac"
        audiogen.write_tone(track, "flac", args.seconds, channels=2)
        record: dict[str, Any] = {"track": f"{args.seconds:g} s stereo 44.1 kHz FLAC"}
        record["waveform"] = waveform_costs(track, tmp, args.rounds)
        record["metadata_hit_us"] = metadata_hit_us(tmp, 20000)
        record["coalescing"] = coalescing(track, tmp, args.concurrent)
    w = record["waveform"]
    print(f"track: {record['track']}, medians of {args.rounds}")
    print(f"  waveform (streamsrv, -z 256 -b 8 .dat)   {w['streamsrv_s'] * 1000:8.0f} ms")
    if w.get("ffmpeg_decode_only_s"):
        ratio = w["ffmpeg_decode_only_s"] / w["streamsrv_s"]
        print(f"  ffmpeg -threads 1 decode to null         {w['ffmpeg_decode_only_s'] * 1000:8.0f} ms"
              f"   (streamsrv at {ratio:.2f}x of decode-only speed)")  # fmt: skip
    if w.get("audiowaveform_s"):
        print(f"  audiowaveform -z 256 -b 8                {w['audiowaveform_s'] * 1000:8.0f} ms"
              f"   (streamsrv {w['audiowaveform_s'] / w['streamsrv_s']:.2f}x faster)")  # fmt: skip
    else:
        print(f"  audiowaveform: {w['audiowaveform_note']}")
    c = record["coalescing"]
    print(f"  {c['requests']} concurrent uncached waveform requests: {c['wall_s'] * 1000:.0f} ms, "
          f"{c['jobs_run']} decode job(s)")  # fmt: skip
    print(f"  metadata cache hit (Catalog.get):        {record['metadata_hit_us']:8.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

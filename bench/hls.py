"""HLS: first segment of a cold track, and whole-track encode speed against ``ffmpeg -f hls``.

Writes a synthetic stereo 44.1 kHz FLAC source (the same music-like signal
as ``bench/transcode.py``) into a temp dir, then measures, as medians over
``--runs``:

- **first segment, cold, over HTTP**: a real :class:`~streamsrv.hls.resource.HlsResource`
  on a loopback port with a started worker pool (one process, preloaded) and
  an empty artifact cache; each run uses a fresh copy of the track (a new
  file identity, so nothing is cached or probed) and times
  ``GET …/master.m3u8`` + ``GET …/128k/init.mp4`` + ``GET …/128k/0.m4s``
  (what a player does before its first sample), and the segment request alone;
- **first segment, in the worker**: ``probe_track`` + ``encode_segment(…, 0)``
  in this process (the pool's share of the above);
- **whole track**: every 128 kb/s segment encoded in turn in one process,
  against ``ffmpeg -threads 1 -c:a aac -b:a 128k -f hls -hls_segment_type
  fmp4 -hls_time 6`` on the same file, in times realtime, and their ratio.

    .venv/bin/python bench/hls.py [--seconds 120] [--runs 5] [--json OUT]

``ffmpeg`` is Debian's (FFmpeg 5.1); PyAV's wheel carries its own FFmpeg.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.transcode import _source
from streamsrv.hls.segments import AAC_LADDER, encode_segment, probe_track

VARIANT = AAC_LADDER[2]  # 128k


def _worker_first_segment(source: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        track = probe_track(source)
        encode_segment(source, VARIANT, 0, track)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _whole_track(source: str, runs: int) -> float:
    track = probe_track(source)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for n in range(track.segment_count):
            encode_segment(source, VARIANT, n, track)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _ffmpeg_hls(source: str, directory: Path, runs: int) -> float | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    times = []
    for run in range(runs):
        out = directory / f"ff{run}"
        out.mkdir()
        command = [
            ffmpeg, "-v", "error", "-y", "-threads", "1", "-i", source, "-c:a", "aac", "-b:a", "128k",
            "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "6", "-hls_playlist_type", "vod",
            str(out / "index.m3u8"),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _http_first_segment(source: Path, directory: Path, runs: int) -> list[tuple[float, float]]:
    """Median seconds of master + init + segment 0 of a cold track, and of segment 0 alone, over HTTP."""
    import treq
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.web.resource import Resource

    from streamsrv.audio.workers import WorkerPool
    from streamsrv.auth.guard import Guard
    from streamsrv.auth.principal import anonymous_principal
    from streamsrv.auth.roles import DEFAULT_ROLES
    from streamsrv.cache.artifacts import ArtifactCache
    from streamsrv.health.metrics import Metrics
    from streamsrv.hls.resource import HlsResource
    from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
    from streamsrv.web.site import StreamsrvSite

    library = directory / "library"
    library.mkdir()
    results: list[tuple[float, float]] = []

    async def run() -> None:
        pool = WorkerPool(reactor, size=1, preload=("streamsrv.audio.decode", "streamsrv.hls.segments"))
        pool.startService()
        guard = Guard(
            verifier=None, url_keys=(), url_max_ttl_s=604800, revocations=None, limiter=None,
            policies=DEFAULT_POLICIES, anonymous=anonymous_principal(DEFAULT_ROLES), clock=reactor,
        )  # fmt: skip
        metrics = Metrics(process=False)
        hls = HlsResource(
            library, guard=guard, pool=pool, cache=ArtifactCache(directory / "cache", 1 << 30),
            url_keys=(), clock=reactor, metrics=metrics, prefetch=0,
        )  # fmt: skip
        root = Resource()
        root.putChild(b"hls", hls)
        port = reactor.listenTCP(
            0, StreamsrvSite(root, metrics=metrics, clock=reactor), interface="127.0.0.1"
        )
        base = f"http://127.0.0.1:{port.getHost().port}/hls"
        try:
            warm = library / "warm.flac"
            shutil.copy(source, warm)
            await (await treq.get(f"{base}/warm.flac/128k/0.m4s")).content()  # workers up and imported
            for index in range(runs):
                name = f"cold{index}.flac"
                shutil.copy(source, library / name)
                started = time.perf_counter()
                for leaf in ("master.m3u8", "128k/init.mp4"):
                    response = await treq.get(f"{base}/{name}/{leaf}")
                    await response.content()
                segment_started = time.perf_counter()
                response = await treq.get(f"{base}/{name}/128k/0.m4s")
                body = await response.content()
                assert response.code == 200 and body[4:8] == b"moof", response.code
                ended = time.perf_counter()
                results.append((ended - started, ended - segment_started))
        finally:
            await port.stopListening()
            await pool.stopService()

    failures: list[Any] = []
    done = ensureDeferred(run())
    done.addErrback(failures.append)
    done.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP first-segment measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = _source(directory, args.seconds)
        report: dict[str, Any] = {"seconds": args.seconds, "runs": args.runs, "variant": VARIANT.name}
        if not args.no_http:
            results = _http_first_segment(source, directory, args.runs)
            report["http_cold_master_init_segment_ms"] = round(
                statistics.median(r[0] for r in results) * 1000, 1
            )
            report["http_cold_segment_ms"] = round(statistics.median(r[1] for r in results) * 1000, 1)
        report["worker_first_segment_ms"] = round(_worker_first_segment(str(source), args.runs) * 1000, 1)
        ours = _whole_track(str(source), args.runs)
        report["segments_x_realtime"] = round(args.seconds / ours, 1)
        theirs = _ffmpeg_hls(str(source), directory, args.runs)
        if theirs is not None:
            report["ffmpeg_hls_x_realtime"] = round(args.seconds / theirs, 1)
            report["ratio_vs_ffmpeg"] = round(theirs / ours, 2)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

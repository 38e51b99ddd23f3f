"""HLS: first segment of a cold track, and whole-track encode cost against ``ffmpeg -f hls``.

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
- **whole track**, in interleaved rounds (so a busy neighbour slows both
  sides of a round alike): every segment of ``--variant`` encoded in turn in
  this process, ``ffmpeg -threads 1 -c:a aac -b:a 128k -f hls
  -hls_segment_type fmp4 -hls_time 6`` on the same file, and one PyAV encoder
  over the whole decoded track (what the segments would cost without a fresh
  encoder per segment).  Each is timed in wall seconds and in CPU seconds
  (this process's for ours, ``RUSAGE_CHILDREN`` for ffmpeg): the CPU figures
  are the ones to compare on a shared machine.  Ratios are medians of the
  per-round ratios (> 1: ours is faster);
- **bit rates**: the largest full segment's rate and the whole rendition's
  average, container included, against the playlist's ``BANDWIDTH`` and
  ``AVERAGE-BANDWIDTH``.

``--compare-warm`` adds to every round the segments encoded with the
measured, not adopted silence warm-up (``warmup=1`` of
:func:`streamsrv.transcode.aac.packets_within`: one frame of digital silence
before each encoder's window) beside the served ones (cold encoders): both
in one run.  Every segment encoded again because it overran its 105 % budget
is counted (``reencoded_segments``; ``warm_reencoded_segments``).

``--quality`` measures instead, for every AAC rung, how the served segments
decode against the source, beside one continuous encode (what ``ffmpeg``
makes) and beside the warmed segments (``warmup=1``): SNR over the whole
track and within 4096 samples of every segment boundary, the log-spectral
distance below 8 kHz (dB, lower is better), CPU seconds, the bit rates
against the declared ones, and how many segments were encoded again for the
budget.  ``--source FILE`` uses a file of yours instead of the synthetic signal.

    .venv/bin/python bench/hls.py [--seconds 120] [--runs 5] [--variant 128k] [--no-http] [--json OUT]
    .venv/bin/python bench/hls.py --no-http --compare-warm [--source FILE]
    .venv/bin/python bench/hls.py --quality [--source FILE] [--seconds 60]
    valgrind --tool=callgrind .venv/bin/python bench/hls.py --source FILE --encode-once warm|cold|none

``ffmpeg`` is Debian's (FFmpeg 5.1); PyAV's wheel carries its own FFmpeg.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.transcode import _source
from streamsrv.hls.playlists import bandwidth
from streamsrv.hls.segments import (
    AAC_FRAME,
    AAC_LADDER,
    AAC_PRIMING,
    VARIANTS,
    Track,
    Variant,
    _aac_encoder,
    _window,
    encode_segment,
    probe_track,
)
from streamsrv.transcode import aac

VARIANT = VARIANTS["128k"]


def _worker_first_segment(source: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        track = probe_track(source)
        encode_segment(source, VARIANT, 0, track)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _counting(warmup: int | None = None) -> Iterator[list[int]]:
    """Count the encodes of every segment (> 1: re-encoded for its budget).

    :param warmup: frames of silence before each window (``packets_within``'s
        ``warmup``); ``None``: the served default.
    """
    within, window = aac.packets_within, aac.encode_window
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> list[bytes]:
        calls[0] += 1
        return window(*args, **kwargs)

    aac.encode_window = counted  # type: ignore[assignment]
    if warmup is not None:
        aac.packets_within = functools.partial(within, warmup=warmup)  # type: ignore[assignment]
    try:
        yield calls
    finally:
        aac.encode_window, aac.packets_within = window, within  # type: ignore[assignment]


def _segments(
    source: str, track: Track, variant: Variant, warmup: int | None = None
) -> tuple[float, float, list[int], int]:
    """Wall and CPU seconds of every segment of *variant* encoded in turn, their sizes, and re-encodes."""
    sizes, reencoded = [], 0
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(track.segment_count):
        with _counting(warmup) as calls:
            sizes.append(len(encode_segment(source, variant, n, track)))
        reencoded += calls[0] > 1
    return time.perf_counter() - wall, time.process_time() - cpu, sizes, reencoded


def _continuous(source: str, track: Track, variant: Variant) -> tuple[float, float]:
    """Wall and CPU seconds of one encoder over the whole track (decode included), as ffmpeg does."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = -(-track.samples // AAC_FRAME)
    samples = _window(source, track, 0, frames * AAC_FRAME, track.sample_rate, 2)
    assert variant.bitrate_kbps is not None
    aac.encode_window(samples, track.sample_rate, 2, variant.bitrate_kbps * 1000)
    return time.perf_counter() - wall, time.process_time() - cpu


def _ffmpeg_hls(ffmpeg: str, source: str, out: Path, variant: Variant) -> tuple[float, float]:
    """Wall and CPU seconds of ``ffmpeg -f hls`` (fMP4, 6 s) on *source*, single-threaded."""
    out.mkdir()
    command = [
        ffmpeg, "-nostdin", "-v", "error", "-y", "-threads", "1", "-i", source, "-c:a", "aac",
        "-b:a", f"{variant.bitrate_kbps}k", "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "6",
        "-hls_playlist_type", "vod", str(out / "index.m3u8"),
    ]  # fmt: skip
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True)
    return time.perf_counter() - wall, _children_cpu() - cpu


def _whole_track(
    source: str, directory: Path, runs: int, variant: Variant, seconds: float, warm: bool = False
) -> dict[str, Any]:
    """Interleaved rounds of ours (and warmed), ffmpeg and one continuous PyAV encode: speeds, rates."""
    track = probe_track(source)
    ffmpeg = shutil.which("ffmpeg")
    ours: list[tuple[float, float]] = []
    warms: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    continuous: list[tuple[float, float]] = []
    sizes: list[int] = []
    reencoded = warm_reencoded = 0
    for run in range(runs):
        wall, cpu, sizes, reencoded = _segments(source, track, variant)
        ours.append((wall, cpu))
        if warm:
            wall, cpu, _, warm_reencoded = _segments(source, track, variant, warmup=1)
            warms.append((wall, cpu))
        continuous.append(_continuous(source, track, variant))
        if ffmpeg is not None:
            theirs.append(_ffmpeg_hls(ffmpeg, source, directory / f"ff{run}", variant))
    med = statistics.median
    count = track.segment_count
    report: dict[str, Any] = {
        "segments": count,
        "reencoded_segments": reencoded,
        "segments_x_realtime": round(seconds / med(w for w, _ in ours), 1),
        "segments_cpu_x_realtime": round(seconds / med(c for _, c in ours), 1),
        "segments_per_cpu_s": round(count / med(c for _, c in ours), 1),
        "continuous_cpu_x_realtime": round(seconds / med(c for _, c in continuous), 1),
        "ratio_vs_continuous_cpu": round(med(k[1] / o[1] for k, o in zip(continuous, ours, strict=True)), 2),
    }
    if warms:
        report.update(
            warm_reencoded_segments=warm_reencoded,
            warm_cpu_x_realtime=round(seconds / med(c for _, c in warms), 1),
            ratio_vs_warm_cpu=round(med(w[1] / o[1] for w, o in zip(warms, ours, strict=True)), 2),
        )
    if theirs:
        report.update(
            ffmpeg_hls_x_realtime=round(seconds / med(w for w, _ in theirs), 1),
            ffmpeg_hls_cpu_x_realtime=round(seconds / med(c for _, c in theirs), 1),
            ratio_vs_ffmpeg=round(med(t[0] / o[0] for t, o in zip(theirs, ours, strict=True)), 2),
            ratio_vs_ffmpeg_cpu=round(med(t[1] / o[1] for t, o in zip(theirs, ours, strict=True)), 2),
        )
        if warms:
            report["warm_ratio_vs_ffmpeg_cpu"] = round(
                med(t[1] / w[1] for t, w in zip(theirs, warms, strict=True)), 2
            )
    durations = track.durations(variant)
    spans = [track.segment_span(variant, n) for n in range(count)]
    full = [
        size * 8 * track.sample_rate / (end - start)
        for size, (start, end) in zip(sizes, spans, strict=True)
        if end - start == track.segment_samples
    ]
    declared = bandwidth(track, variant)
    report.update(
        peak_segment_kbps=round(max(full or [0.0]) / 1000, 1),
        bandwidth_kbps=declared.peak / 1000,
        average_kbps=round(sum(sizes) * 8 / sum(durations) / 1000, 1),
        average_bandwidth_kbps=declared.average / 1000,
    )
    return report


def _continuous_packets(samples: Any, track: Track, variant: Variant) -> tuple[list[bytes], bytes]:
    """One encoder over the whole track: its packets (priming first) and its AudioSpecificConfig."""
    assert variant.bitrate_kbps is not None
    packets = aac.encode_window(samples, track.sample_rate, 2, variant.bitrate_kbps * 1000)
    return packets, bytes(_aac_encoder(track, variant).extradata or b"")


def _payloads(segment: bytes) -> list[bytes]:
    """The AAC frames of a media segment (``moof`` + ``mdat``), from its ``trun`` sample sizes."""
    moof_size = struct.unpack(">I", segment[:4])[0]
    at = segment.find(b"trun", 0, moof_size) + 4
    flags = int.from_bytes(segment[at + 1 : at + 4], "big")
    count = struct.unpack(">I", segment[at + 4 : at + 8])[0]
    at += 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
    fields = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    sizes = []
    for _ in range(count):
        if not flags & 0x200:
            raise ValueError("trun without sample sizes")
        offset = at + (4 if flags & 0x100 else 0)
        sizes.append(struct.unpack(">I", segment[offset : offset + 4])[0])
        at += fields
    data, payloads = segment[moof_size + 8 :], []
    for size in sizes:
        payloads.append(data[:size])
        data = data[size:]
    return payloads


def _decode_aac(packets: list[bytes], config: bytes, rate: int) -> Any:
    import av

    decoder: Any = av.CodecContext.create("aac", "r")
    decoder.extradata = config
    chunks = [f.to_ndarray() for p in packets for f in decoder.decode(av.Packet(p))]
    chunks += [f.to_ndarray() for f in decoder.decode(None)]
    return np.concatenate(chunks, axis=1)[:, AAC_PRIMING:]


def _snr_db(reference: Any, decoded: Any) -> float:
    error = float(np.sum((reference - decoded) ** 2))
    return 10 * float(np.log10(float(np.sum(reference**2)) / max(error, 1e-20)))


def _lsd_db(reference: Any, decoded: Any, rate: int, fmax: float = 8000.0) -> float:
    """Mean log-spectral distance below *fmax* (2048-point Hann frames, hop 1024), in dB."""
    size, hop = 2048, 1024
    window = np.hanning(size)
    bins = int(fmax * size / rate)
    frames = (reference.shape[1] - size) // hop
    index = np.arange(size)[None, :] + hop * np.arange(frames)[:, None]
    distances = []
    for channel in range(reference.shape[0]):
        a = np.abs(np.fft.rfft(reference[channel][index] * window, axis=1))[:, :bins] ** 2 + 1e-10
        b = np.abs(np.fft.rfft(decoded[channel][index] * window, axis=1))[:, :bins] ** 2 + 1e-10
        distances.append(np.sqrt(np.mean((10 * np.log10(a / b)) ** 2, axis=1)))
    return float(np.mean(distances))


def _quality(source: str) -> dict[str, Any]:
    """Per rung: SNR, LSD, CPU and bit rates of the segments, one continuous encode, the warmed segments."""
    track = probe_track(source)
    frames = -(-track.samples // AAC_FRAME)
    samples = _window(source, track, 0, frames * AAC_FRAME, track.sample_rate, 2)
    spans = [track.segment_span(AAC_LADDER[0], n) for n in range(track.segment_count)]
    near = np.zeros(track.samples, bool)
    for start, _ in spans[1:]:
        near[max(start - 4096, 0) : start + 4096] = True
    reference = samples[:, : track.samples]
    durations = track.durations(AAC_LADDER[0])
    report: dict[str, Any] = {"segments": track.segment_count}
    for variant in AAC_LADDER:
        declared = bandwidth(track, variant)
        cpu = time.process_time()
        with _counting() as calls:
            segments = [encode_segment(source, variant, n, track) for n in range(track.segment_count)]
        ours_cpu = time.process_time() - cpu
        cpu = time.process_time()
        with _counting(warmup=1) as warm_calls:
            warm_segments = [encode_segment(source, variant, n, track) for n in range(track.segment_count)]
        warm_cpu = time.process_time() - cpu
        cpu = time.process_time()
        continuous, config = _continuous_packets(samples, track, variant)
        continuous_cpu = time.process_time() - cpu
        ours = [_payloads(segment) for segment in segments]
        per = track.segment_frames
        cut = [continuous[(0 if n == 0 else n * per + 1) : (n + 1) * per + 1] for n in range(len(spans))]
        rows: dict[str, Any] = {}
        encodes = {"segments": calls[0], "continuous": 1, "warm_segments": warm_calls[0]}
        for name, parts, seconds in (
            ("segments", ours, ours_cpu),
            ("continuous", cut, continuous_cpu),
            ("warm_segments", [_payloads(segment) for segment in warm_segments], warm_cpu),
        ):
            decoded = _decode_aac([p for part in parts for p in part], config, track.sample_rate)
            decoded = decoded[:, : track.samples]
            rates = [
                sum(map(len, part)) * 8 * track.sample_rate / (end - start)
                for part, (start, end) in zip(parts, spans, strict=True)
                if end - start == track.segment_samples
            ]
            payload = sum(len(p) for part in parts for p in part)
            whole = segments if name == "segments" else warm_segments if name == "warm_segments" else []
            full_rates = [
                len(data) * 8 * track.sample_rate / (end - start)
                for data, (start, end) in zip(whole, spans, strict=bool(whole))
                if end - start == track.segment_samples
            ]
            rows[name] = {
                "snr_db": round(_snr_db(reference, decoded), 2),
                "snr_boundaries_db": round(_snr_db(reference[:, near], decoded[:, near]), 2),
                "lsd8_db": round(_lsd_db(reference, decoded, track.sample_rate), 2),
                "cpu_s": round(seconds, 2),
                "peak_payload_kbps": round(max(rates or [0.0]) / 1000, 1),
                "average_payload_kbps": round(payload * 8 * track.sample_rate / track.samples / 1000, 1),
                "reencodes": encodes[name] - (1 if name == "continuous" else len(spans)),
                "peak_segment_kbps": round(max(full_rates or [0.0]) / 1000, 1),
                "average_kbps": round(sum(map(len, whole)) * 8 / sum(durations) / 1000, 1),
            }
        rows["declared"] = {"bandwidth_kbps": declared.peak / 1000, "average_kbps": declared.average / 1000}
        report[variant.name] = rows
    return report


def _http_first_segment(source: Path, directory: Path, runs: int) -> list[tuple[float, float]]:
    """Median seconds of master + init + segment 0 of a cold track, and of segment 0 alone, over HTTP."""
    import treq
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.web.resource import Resource

    from streamsrv.audio.workers import WorkerPool
    from streamsrv.auth.principal import anonymous_principal
    from streamsrv.auth.roles import DEFAULT_ROLES
    from streamsrv.cache.artifacts import ArtifactCache
    from streamsrv.health.metrics import Metrics
    from streamsrv.hls.resource import HlsResource
    from streamsrv.middleware.guard import Guard
    from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
    from streamsrv.threads import ReactorThreads
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
            library, guard=guard, pool=pool,
            cache=ArtifactCache(directory / "cache", 1 << 30, threads=ReactorThreads(reactor)),
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
    parser.add_argument("--quality", action="store_true", help="SNR, LSD and bit rates per rung instead")
    parser.add_argument(
        "--compare-warm", action="store_true", help="also the warmed segments (warmup=1), in the same rounds"
    )
    parser.add_argument(
        "--source", type=Path, default=None, help="a file to use instead of the synthetic one"
    )
    aac = sorted(name for name, v in VARIANTS.items() if not v.lossless)
    parser.add_argument("--variant", choices=aac, default="128k", help="the rung timed whole (default 128k)")
    parser.add_argument(
        "--encode-once",
        choices=("warm", "cold", "none"),
        help="with --source: only encode every segment of --variant once, warmup=1 or 0 (none: probe"
        " only), for valgrind --tool=callgrind",
    )
    args = parser.parse_args()
    variant = VARIANTS[args.variant]
    if args.encode_once is not None:
        source_path, track = str(args.source.resolve()), probe_track(str(args.source.resolve()))
        with _counting(warmup=1 if args.encode_once == "warm" else 0):
            for n in range(track.segment_count if args.encode_once != "none" else 0):
                encode_segment(source_path, variant, n, track)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = _source(directory, args.seconds) if args.source is None else args.source.resolve()
        report: dict[str, Any] = {"seconds": args.seconds, "runs": args.runs, "variant": variant.name}
        if args.quality:
            report = _quality(str(source))
        elif not args.no_http:
            results = _http_first_segment(source, directory, args.runs)
            report["http_cold_master_init_segment_ms"] = round(
                statistics.median(r[0] for r in results) * 1000, 1
            )
            report["http_cold_segment_ms"] = round(statistics.median(r[1] for r in results) * 1000, 1)
        if not args.quality:
            report["worker_first_segment_ms"] = round(_worker_first_segment(str(source), args.runs) * 1000, 1)
            seconds = probe_track(str(source)).duration_s
            report.update(
                _whole_track(str(source), directory, args.runs, variant, seconds, args.compare_warm)
            )
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

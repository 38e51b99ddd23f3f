"""Progressive transcodes: encode cost against the ffmpeg command line, and first-byte latency.

Writes a synthetic stereo 44.1 kHz FLAC source (tones, a chirp and some
noise, so the psychoacoustic models have work to do; ``--source FILE`` uses
a file of yours) into a temp dir, then for MP3 192 kb/s, Opus 96 kb/s and
AAC 128 kb/s in M4A (``--formats`` picks some) measures:

- ``encode_full`` (chunked, one process, one thread) against ``ffmpeg
  -threads 1`` with the same codec, bit rate and CBR settings (AAC: FFmpeg's
  native encoder into a plain ``.m4a``), in interleaved rounds (ours, then
  ffmpeg, ``--runs`` times: a busy neighbour slows both sides of a round
  alike).  Each side is timed in wall seconds and in CPU seconds (this
  process's for ours, ``RUSAGE_CHILDREN`` for ffmpeg); the ratios are medians
  of the per-round ratios (> 1: ours is faster; the goal is >= 0.9 in CPU);
- the output bit rates of both sides, payload only (the codec frames: for
  M4A the ``mdat`` boxes, without the ``free`` boxes that pad every fragment
  to its budget) and the whole file, so "the same bit rate" can be checked;
- with ``--compare-warm``, AAC's fragments also encoded with the measured,
  not adopted silence warm-up (``warmup=1`` of
  :func:`streamsrv.transcode.aac.packets_within`) in the same rounds;
- ``ffmpeg`` with LAME's default settings too (bit reservoir on), for reference;
- the first-byte latency of a cold rendition: ``encode_range`` for bytes
  0-65535 with the source already probed, and with ``probe_source`` first.

    .venv/bin/python bench/transcode.py [--seconds 120] [--runs 5] [--json OUT]
    .venv/bin/python bench/transcode.py --formats aac --compare-warm [--source FILE]

Uses the ``ffmpeg`` on PATH (Debian's FFmpeg, LAME and libopus).  Ours encodes
MP3 with the LAME linked into the ``lameenc`` wheel, through its C API
(:mod:`streamsrv.transcode.lame`; PyAV's libmp3lame when lameenc is missing:
the backend is printed), and Opus with the libopus inside PyAV's wheel; the
builds are part of what is compared.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsrv.transcode import Rendition, SourceInfo, aac, encode_full, encode_range, lame, probe_source
from tests import audiogen

#: Bytes of the first-byte request (a browser's first read is about this big).
FIRST_BYTES = 65536

CASES = (
    ("mp3 192k", Rendition("mp3", 192), ["-c:a", "libmp3lame", "-b:a", "192k", "-reservoir", "0"], ".mp3"),
    ("opus 96k", Rendition("opus", 96), ["-c:a", "libopus", "-b:a", "96k", "-vbr", "off"], ".opus"),
    ("aac 128k m4a", Rendition("aac", 128), ["-c:a", "aac", "-b:a", "128k"], ".m4a"),
)
REFERENCE = {"mp3 192k": ["-c:a", "libmp3lame", "-b:a", "192k"]}


def _source(directory: Path, seconds: float) -> Path:
    """A music-like test signal written as FLAC."""
    rate = 44100
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(1)
    mono = (
        0.25 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
        + 0.15 * np.sin(2 * np.pi * 2000 * t * (1 + t / seconds))
        + 0.05 * rng.standard_normal(t.size)
    )
    samples = np.vstack([mono, np.roll(mono, 300)]).astype(np.float32)
    return audiogen.write_samples(directory / "source.flac", "flac", samples, rate)


def _median_s(runs: int, action: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Median wall time of ``action(*args, **kwargs)`` over ``runs`` runs."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_ours(source: str, rendition: Rendition, out: Path, info: SourceInfo) -> tuple[float, float]:
    """Wall and CPU seconds of ``encode_full`` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    encode_full(source, rendition, str(out), source=info)
    return time.perf_counter() - wall, time.process_time() - cpu


def _timed_ffmpeg(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``ffmpeg`` run (a child: ``RUSAGE_CHILDREN``)."""
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True)
    return time.perf_counter() - wall, _children_cpu() - cpu


@contextmanager
def _warm_aac() -> Iterator[None]:
    """AAC fragments from encoders warmed up by one frame of silence (``warmup=1``; served: cold)."""
    original = aac.packets_within
    aac.packets_within = functools.partial(original, warmup=1)  # type: ignore[assignment]
    try:
        yield
    finally:
        aac.packets_within = original  # type: ignore[assignment]


def _boxes(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Top-level ISO BMFF boxes: ``(type, offset, size)``."""
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        elif size == 0:
            size = len(data) - at
        yield kind, at, size
        at += size


def _payload_bytes(path: Path) -> int:
    """Codec bytes of an output: the ``mdat`` payloads of an MP4, the whole file otherwise."""
    data = path.read_bytes()
    if path.suffix != ".m4a":
        return len(data)
    return sum(size - 8 for kind, _, size in _boxes(data) if kind == b"mdat")


def _probe_then_range(source: str, rendition: Rendition) -> bytes:
    """A cold request for a never-probed file: probe, then the first bytes."""
    return encode_range(source, rendition, 0, FIRST_BYTES, source=probe_source(source))


def _ffmpeg_command(ffmpeg: str, source: str, args: list[str], out: Path) -> list[str]:
    return [ffmpeg, "-v", "error", "-y", "-threads", "1", "-i", source, *args, "-threads", "1", str(out)]


def _rounds(
    source: str, case: tuple[str, Rendition, list[str], str], directory: Path, runs: int, warm: bool
) -> dict[str, float]:
    """Interleaved rounds of ours (and warmed AAC) and ffmpeg: speeds, CPU ratios, bit rates."""
    name, rendition, ffmpeg_args, suffix = case
    info = probe_source(source)
    duration = info.frames / info.sample_rate
    ffmpeg = shutil.which("ffmpeg")
    out, ref = directory / f"ours{suffix}", directory / f"ffmpeg{suffix}"
    ours, theirs, warms = [], [], []
    warm = warm and rendition.format == "aac"
    for _ in range(runs):
        ours.append(_timed_ours(source, rendition, out, info))
        if warm:
            with _warm_aac():
                warms.append(_timed_ours(source, rendition, directory / f"warm{suffix}", info))
        if ffmpeg is not None:
            theirs.append(_timed_ffmpeg(_ffmpeg_command(ffmpeg, source, ffmpeg_args, ref)))
    med = statistics.median
    row = {
        "ours_x": duration / med(w for w, _ in ours),
        "ours_cpu_x": duration / med(c for _, c in ours),
        "ours_payload_kbps": _payload_bytes(out) * 8 / duration / 1000,
        "ours_file_kbps": out.stat().st_size * 8 / duration / 1000,
    }
    if warms:
        row["warm_cpu_x"] = duration / med(c for _, c in warms)
        row["ours_vs_warm_cpu"] = med(w[1] / o[1] for w, o in zip(warms, ours, strict=True))
        row["warm_payload_kbps"] = _payload_bytes(directory / f"warm{suffix}") * 8 / duration / 1000
    if theirs:
        row["ffmpeg_x"] = duration / med(w for w, _ in theirs)
        row["ffmpeg_cpu_x"] = duration / med(c for _, c in theirs)
        row["ratio"] = med(t[0] / o[0] for t, o in zip(theirs, ours, strict=True))
        row["ratio_cpu"] = med(t[1] / o[1] for t, o in zip(theirs, ours, strict=True))
        row["ffmpeg_payload_kbps"] = _payload_bytes(ref) * 8 / duration / 1000
        row["ffmpeg_file_kbps"] = ref.stat().st_size * 8 / duration / 1000
        if warms:
            row["warm_ratio_cpu"] = med(t[1] / w[1] for t, w in zip(theirs, warms, strict=True))
        if name in REFERENCE:
            plain = _ffmpeg_command(ffmpeg, source, REFERENCE[name], ref)
            row["ffmpeg_default_x"] = duration / _median_s(runs, subprocess.run, plain, check=True)
    return row


def _latencies(source: str, rendition: Rendition, out: Path, runs: int) -> dict[str, float]:
    """First-byte latencies of a cold rendition: the first 64 KiB, with a probe, and mid-file."""
    info = probe_source(source)
    middle = out.stat().st_size // 2
    return {
        "first_64k_ms": 1000 * _median_s(runs, encode_range, source, rendition, 0, FIRST_BYTES, source=info),
        "first_64k_with_probe_ms": 1000 * _median_s(runs, _probe_then_range, source, rendition),
        "mid_64k_ms": 1000
        * _median_s(runs, encode_range, source, rendition, middle, middle + FIRST_BYTES, source=info),
    }


COLUMNS = (
    ("ours x", "ours_x"),
    ("ours cpu x", "ours_cpu_x"),
    ("ffmpeg cpu x", "ffmpeg_cpu_x"),
    ("ratio", "ratio"),
    ("ratio cpu", "ratio_cpu"),
    ("warm ratio cpu", "warm_ratio_cpu"),
    ("ours kb/s", "ours_payload_kbps"),
    ("ffmpeg kb/s", "ffmpeg_payload_kbps"),
    ("ffmpeg dflt x", "ffmpeg_default_x"),
    ("1st 64K ms", "first_64k_ms"),
    ("+probe ms", "first_64k_with_probe_ms"),
    ("mid 64K ms", "mid_64k_ms"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the source (default 120)")
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per measurement; medians are shown (default 5)"
    )
    parser.add_argument("--source", type=Path, help="a file to use instead of the synthetic one")
    parser.add_argument(
        "--formats", default="mp3,opus,aac", help="comma-separated formats to measure (default all)"
    )
    parser.add_argument(
        "--compare-warm", action="store_true", help="AAC: also warmed encoders (warmup=1), in the same rounds"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    formats = set(args.formats.split(","))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="streamsrv-bench-") as tmp:
        directory = Path(tmp)
        source = str(_source(directory, args.seconds) if args.source is None else args.source.resolve())
        info = probe_source(source)
        duration = info.frames / info.sample_rate
        for case in CASES:
            name, rendition, _, suffix = case
            if rendition.format not in formats:
                continue
            row = _rounds(source, case, directory, args.runs, args.compare_warm)
            row.update(_latencies(source, rendition, directory / f"ours{suffix}", args.runs))
            results[name] = row
    print(
        f"source: {duration:.1f} s stereo {info.sample_rate} Hz; medians of {args.runs} interleaved rounds;"
        " x = times realtime; ratios > 1: ours faster; kb/s: payload"
    )
    print(f"mp3 encoder: {lame.backend()}")
    print("  ".join(f"{h:>14}" for h in ("rendition", *(c for c, _ in COLUMNS))))
    for name, row in results.items():
        cells = [name] + [f"{row[k]:.2f}" if k in row else "-" for _, k in COLUMNS]
        print("  ".join(f"{c:>14}" for c in cells))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"seconds": duration, "runs": args.runs, "mp3_encoder": lame.backend(), "results": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

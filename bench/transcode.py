"""Progressive transcodes: encode speed against the ffmpeg command line, and first-byte latency.

Writes a synthetic stereo 44.1 kHz FLAC source (tones, a chirp and some
noise, so the psychoacoustic models have work to do) into a temp dir, then
for MP3 192 kb/s, Opus 96 kb/s and AAC 128 kb/s in M4A measures, as medians
over ``--runs``:

- ``encode_full`` (chunked, one process, one thread) against ``ffmpeg
  -threads 1`` with the same codec, bit rate and CBR settings (AAC: FFmpeg's
  native encoder into a plain ``.m4a``), in times realtime, and their ratio
  (goal: >= 0.9);
- ``ffmpeg`` with LAME's default settings too (bit reservoir on), for reference;
- the first-byte latency of a cold rendition: ``encode_range`` for bytes
  0-65535 with the source already probed, and with ``probe_source`` first.

    .venv/bin/python bench/transcode.py [--seconds 120] [--runs 5] [--json OUT]

Uses the ``ffmpeg`` on PATH (Debian's FFmpeg, LAME and libopus).  Ours encodes
MP3 with the LAME linked into the ``lameenc`` wheel, through its C API
(:mod:`streamsrv.transcode.lame`; PyAV's libmp3lame when lameenc is missing:
the backend is printed), and Opus with the libopus inside PyAV's wheel; the
builds are part of what is compared.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsrv.transcode import Rendition, encode_full, encode_range, lame, probe_source
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


def _probe_then_range(source: str, rendition: Rendition) -> bytes:
    """A cold request for a never-probed file: probe, then the first bytes."""
    return encode_range(source, rendition, 0, FIRST_BYTES, source=probe_source(source))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the source (default 120)")
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per measurement; medians are shown (default 5)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="streamsrv-bench-") as tmp:
        directory = Path(tmp)
        source = str(_source(directory, args.seconds))
        info = probe_source(source)
        duration = info.frames / info.sample_rate
        for name, rendition, ffmpeg_args, suffix in CASES:
            row: dict[str, float] = {}
            out = directory / f"ours{suffix}"
            row["ours_x"] = duration / _median_s(
                args.runs, encode_full, source, rendition, str(out), source=info
            )
            if ffmpeg is not None:
                ref = directory / f"ffmpeg{suffix}"
                command = [
                    ffmpeg,
                    "-v",
                    "error",
                    "-y",
                    "-threads",
                    "1",
                    "-i",
                    source,
                    *ffmpeg_args,
                    "-threads",
                    "1",
                ]
                row["ffmpeg_x"] = duration / _median_s(
                    args.runs, subprocess.run, [*command, str(ref)], check=True
                )
                row["ratio"] = row["ours_x"] / row["ffmpeg_x"]
                if name in REFERENCE:
                    plain = [ffmpeg, "-v", "error", "-y", "-threads", "1", "-i", source, *REFERENCE[name]]
                    row["ffmpeg_default_x"] = duration / _median_s(
                        args.runs, subprocess.run, [*plain, "-threads", "1", str(ref)], check=True
                    )
            row["first_64k_ms"] = 1000 * _median_s(
                args.runs, encode_range, source, rendition, 0, FIRST_BYTES, source=info
            )
            row["first_64k_with_probe_ms"] = 1000 * _median_s(
                args.runs,
                _probe_then_range,
                source,
                rendition,
            )
            middle = out.stat().st_size // 2
            row["mid_64k_ms"] = 1000 * _median_s(
                args.runs, encode_range, source, rendition, middle, middle + FIRST_BYTES, source=info
            )
            results[name] = row
    print(f"source: {duration:.1f} s stereo 44.1 kHz FLAC; medians of {args.runs} runs; x = times realtime")
    print(f"mp3 encoder: {lame.backend()}")
    header = (
        "rendition",
        "ours x",
        "ffmpeg x",
        "ratio",
        "ffmpeg dflt x",
        "1st 64K ms",
        "+probe ms",
        "mid 64K ms",
    )
    print("  ".join(f"{h:>13}" for h in header))
    for name, row in results.items():
        cells = [name] + [
            f"{row[k]:.2f}" if k in row else "-"
            for k in (
                "ours_x",
                "ffmpeg_x",
                "ratio",
                "ffmpeg_default_x",
                "first_64k_ms",
                "first_64k_with_probe_ms",
                "mid_64k_ms",
            )
        ]
        print("  ".join(f"{c:>13}" for c in cells))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"seconds": duration, "runs": args.runs, "mp3_encoder": lame.backend(), "results": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

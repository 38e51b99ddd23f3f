"""Catalog scan speed: a cold scan and a warm (nothing changed) rescan, in files/s.

Generates ``--files`` small tagged MP3s (one 0.2 s tone encoded once with
PyAV, then copied with a different ID3 tag each: artist/album/title) in a
temp dir laid out ``Artist NN/Album NNN/NNNNN Title.mp3``, then, ``--rounds``
times, scans it into a fresh catalog (cold: every file read with mutagen)
and rescans it (warm: nothing changed, nothing read), and prints the medians.
The catalog runs synchronously in this process, as ``streamsrv scan`` does;
the page cache is warm for both (the cold figure is the parsing cost, not the
disk's).

    .venv/bin/python bench/catalog_scan.py [--files 10000] [--rounds 3] [--json OUT] [--keep-tmp]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mutagen.id3 import ID3, TALB, TIT2, TPE1, TRCK

from streamsrv.audio.catalog import CATALOG_FILENAME, Catalog
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from tests import audiogen

#: Tracks per album and albums per artist in the generated tree.
TRACKS_PER_ALBUM = 12
ALBUMS_PER_ARTIST = 5


def _result(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def generate(root: Path, count: int) -> float:
    """Write ``count`` tagged MP3s below ``root``; returns the seconds it took."""
    started = time.perf_counter()
    template = audiogen.write_tone(root / "template.mp3", "mp3", 0.2)
    frames = template.read_bytes()
    template.unlink()
    for i in range(count):
        album_no = i // TRACKS_PER_ALBUM
        artist_no = album_no // ALBUMS_PER_ARTIST
        directory = root / f"Artist {artist_no:03d}" / f"Album {album_no:04d}"
        if i % TRACKS_PER_ALBUM == 0:
            directory.mkdir(parents=True, exist_ok=True)
        title = f"Title {i:05d}"
        tags = ID3()
        tags.add(TIT2(encoding=3, text=title))
        tags.add(TPE1(encoding=3, text=f"Artist {artist_no:03d}"))
        tags.add(TALB(encoding=3, text=f"Album {album_no:04d}"))
        tags.add(TRCK(encoding=3, text=str(i % TRACKS_PER_ALBUM + 1)))
        buffer = io.BytesIO()
        tags.save(buffer)
        (directory / f"{i % TRACKS_PER_ALBUM + 1:02d} {title}.mp3").write_bytes(buffer.getvalue() + frames)
    return time.perf_counter() - started


def one_round(root: Path, data: Path) -> tuple[float, float, int]:
    """A cold scan into a new database, then a warm rescan; returns both durations and the count."""
    shutil.rmtree(data, ignore_errors=True)
    catalog = Catalog(
        data / CATALOG_FILENAME, root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool()
    )
    _result(catalog.open())
    started = time.perf_counter()
    cold = _result(catalog.scan())
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = _result(catalog.scan())
    warm_s = time.perf_counter() - started
    _result(catalog.close())
    if cold.failed or warm.reads:
        raise SystemExit(f"unexpected: {cold.failed} failed, {warm.reads} re-read on the warm scan")
    return cold_s, warm_s, cold.files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="streamsrv-catalog-bench-"))
    try:
        root = tmp / "media"
        root.mkdir()
        generation_s = generate(root, args.files)
        print(f"generated {args.files} MP3s in {generation_s:.1f} s under {tmp}", flush=True)
        colds: list[float] = []
        warms: list[float] = []
        for n in range(args.rounds):
            cold_s, warm_s, files = one_round(root, tmp / "data")
            colds.append(files / cold_s)
            warms.append(files / warm_s)
            print(
                f"round {n + 1}: cold {cold_s:.2f} s ({files / cold_s:,.0f} files/s), "
                f"warm {warm_s:.3f} s ({files / warm_s:,.0f} files/s)",
                flush=True,
            )
        results = {
            "files": args.files,
            "rounds": args.rounds,
            "cold_files_per_s": round(statistics.median(colds), 1),
            "warm_files_per_s": round(statistics.median(warms), 1),
        }
        print(
            f"median of {args.rounds}: cold scan {results['cold_files_per_s']:,.0f} files/s, "
            f"warm rescan {results['warm_files_per_s']:,.0f} files/s"
        )
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

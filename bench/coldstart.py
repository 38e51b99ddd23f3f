"""Cold start: time to ``/health/ready`` and to the first full catalog scan, for a large library.

Generates ``--files`` small tagged MP3s in a temp dir (one 0.2 s tone encoded
once, tagged once, then hard-linked -- ``--copy`` writes real copies -- laid
out ``Artist NNN/Album NNNN/NNNNNN Title.mp3``), then, ``--rounds`` times,
starts a real ``twistd -n streamsrv`` on it with a fresh data dir (so the
catalog is empty: the worst cold start) and measures from the spawn:

- ``ready_s``: ``/health/ready`` answers 200 (the catalog open; before #14 it
  also waited for the first scan, i.e. it came at ``scan_s``);
- ``first_request``: right then, the last track in path order (the one the
  scan reaches last) is asked for with ``Range: bytes=0-99``: its status
  (206: read on demand) and latency;
- ``scan_s``: ``/health/detailed`` reports the catalog's first scan done
  (``last_scan_at`` set), with the progress it showed on the way.

Prints one JSON document (medians over the rounds, and every round).

    .venv/bin/python bench/coldstart.py --files 10000 [--rounds 3] [--copy] [--keep-tmp]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mutagen.id3 import ID3, TALB, TIT2, TPE1  # noqa: E402

from tests import audiogen  # noqa: E402

#: Tracks per album and albums per artist in the generated tree.
TRACKS_PER_ALBUM = 12
ALBUMS_PER_ARTIST = 5

#: Hard links made to one source file before the next copy.
LINKS_PER_SOURCE = 50_000

#: How often readiness and the scan are polled, seconds.
POLL_S = 0.05

#: Longest wait for readiness or the scan, seconds.
TIMEOUT_S = 1800.0


def generate(root: Path, count: int, *, copy: bool) -> list[str]:
    """Write *count* MP3s below *root*; their track paths, in path order."""
    templates = root.parent / "templates"
    templates.mkdir(exist_ok=True)
    template = audiogen.write_tone(templates / "template.mp3", "mp3", 0.2)
    tags = ID3()
    tags.add(TPE1(encoding=3, text="Bench Artist"))
    tags.add(TALB(encoding=3, text="Bench Album"))
    tags.add(TIT2(encoding=3, text="Bench Title"))
    tags.save(template)
    tracks = []
    for i in range(count):
        album_no = i // TRACKS_PER_ALBUM
        directory = root / f"Artist {album_no // ALBUMS_PER_ARTIST:03d}" / f"Album {album_no:04d}"
        if i % TRACKS_PER_ALBUM == 0:
            directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{i:06d} Title.mp3"
        if copy:
            shutil.copyfile(template, target)
        else:
            if i % LINKS_PER_SOURCE == 0:  # a file takes at most 65 000 links (ext4)
                source = templates / f"source-{i}.mp3"
                shutil.copyfile(template, source)
            os.link(source, target)
        tracks.append(target.relative_to(root).as_posix())
    return sorted(tracks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def one_round(root: Path, tmp: Path, last_track: str) -> dict[str, Any]:
    """Start a daemon on a fresh data dir; the figures of one cold start."""
    data = Path(tempfile.mkdtemp(dir=tmp, prefix="data-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSRV_")}
    env.update(STREAMSRV_DATA_DIR=str(data), STREAMSRV_LOG_LEVEL="warn", STREAMSRV_ENV="development")
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
    argv += ["streamsrv", "--media-dir", str(root), "--listen", f"tcp:{port}:interface=127.0.0.1"]
    log = (tmp / f"daemon-{port}.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    figures: dict[str, Any] = {}
    try:
        deadline = started + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if get(port, "/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}")
            time.sleep(POLL_S)
        figures["ready_s"] = round(time.monotonic() - started, 3)
        asked = time.monotonic()
        status, _ = get(port, "/stream/" + quote(last_track), {"Range": "bytes=0-99"})
        figures["first_request"] = {"status": status, "ms": round((time.monotonic() - asked) * 1000, 1)}
        progress: list[Any] = []
        while time.monotonic() < deadline:
            _, body = get(port, "/health/detailed")
            catalog = json.loads(body)["checks"]["catalog"]
            if "last_scan_at" in catalog:
                break
            seen = catalog.get("scan_progress")
            if seen is not None and (not progress or progress[-1][1] != seen):
                progress.append((round(time.monotonic() - started, 1), seen))
            time.sleep(POLL_S * 4)
        figures["scan_s"] = round(time.monotonic() - started, 3)
        figures["tracks"] = catalog.get("tracks")
        # (seconds since the spawn, what /health/detailed said): files_total 0 while walking.
        figures["progress_seen"] = progress[:2] + progress[-2:] if len(progress) > 4 else progress
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copy", action="store_true", help="real copies instead of hard links")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamsrv-coldstart-"))
    try:
        root = tmp / "media"
        root.mkdir()
        t0 = time.monotonic()
        tracks = generate(root, args.files, copy=args.copy)
        generated_s = round(time.monotonic() - t0, 1)
        rounds = [one_round(root, tmp, tracks[-1]) for _ in range(args.rounds)]
        document = {
            "files": args.files,
            "generated_s": generated_s,
            "median_ready_s": statistics.median(r["ready_s"] for r in rounds),
            "median_scan_s": statistics.median(r["scan_s"] for r in rounds),
            "median_ready_to_scan_ratio": round(
                statistics.median(r["ready_s"] / r["scan_s"] for r in rounds), 4
            ),
            "rounds": rounds,
        }
        print(json.dumps(document, indent=2))
    finally:
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

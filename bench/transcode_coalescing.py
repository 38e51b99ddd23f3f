"""Many listeners, one encode: 50 concurrent cold requests for one rendition.

Writes the music-like 60 s FLAC of ``bench/transcode.py``, serves it from a
real ``/stream`` resource (the site of the tests, with a started two-process
worker pool and an empty artifact cache) on a loopback port, and for each
rendition:

- one cold request for the whole rendition (a fresh copy of the file, so
  nothing is cached or probed), as the baseline;
- ``--concurrent`` simultaneous cold requests for the whole rendition of
  another fresh copy, each on its own connection.

It checks that every response is complete and identical, and reports the
encode jobs the pool ran for the burst (progressive renditions: one per
chunk; ADTS and FLAC: one whole encode) against what one listener costs,
and both wall times.

    .venv/bin/python bench/transcode_coalescing.py [--seconds 60] [--concurrent 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.transcode import _source

#: ``(label, query)`` of each rendition measured.
CASES = (
    ("mp3 192k", "format=mp3&bitrate=192"),
    ("opus 96k", "format=opus&bitrate=96"),
    ("aac 128k m4a", "format=aac&bitrate=128"),
    ("aac 128k adts", "format=aac&container=adts&bitrate=128"),
)


def run(source: Path, directory: Path, concurrent: int) -> list[dict[str, Any]]:
    """Measure every case; returns one row per case."""
    import treq
    from twisted.internet import defer, reactor
    from twisted.web.client import HTTPConnectionPool

    from streamsrv.audio.workers import WorkerPool
    from streamsrv.cache.artifacts import ArtifactCache
    from streamsrv.streaming.transcoded import TranscodeService
    from streamsrv.threads import ReactorThreads
    from tests.sitehelpers import build_site

    library = directory / "library"
    library.mkdir()
    rows: list[dict[str, Any]] = []

    async def fetch(url: str, pool: HTTPConnectionPool) -> tuple[int, bytes]:
        response = await treq.get(url, pool=pool)
        body = await response.content()
        assert response.code == 200, response.code
        return response.length, body

    async def main() -> None:
        workers = WorkerPool(reactor, size=2, max_queue=4 * concurrent)
        workers.startService()
        built = build_site(
            library,
            clock=reactor,
            transcodes=lambda tracker, metrics: TranscodeService(
                pool=workers,
                cache=ArtifactCache(directory / "cache", 1 << 31, threads=ReactorThreads(reactor)),
                tracker=tracker,
                metrics=metrics,
                clock=reactor,
            ),
        )
        port = reactor.listenTCP(0, built.site, backlog=4 * concurrent, interface="127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}/stream"
        connections = HTTPConnectionPool(reactor, persistent=False)
        try:
            shutil.copy(source, library / "warm.flac")
            await fetch(f"{base}/warm.flac?format=opus&bitrate=32", connections)  # workers up
            for index, (label, query) in enumerate(CASES):
                shutil.copy(source, library / f"one{index}.flac")
                shutil.copy(source, library / f"many{index}.flac")
                before = workers.completed
                started = time.perf_counter()
                length, single = await fetch(f"{base}/one{index}.flac?{query}", connections)
                one_s = time.perf_counter() - started
                one_jobs = workers.completed - before
                assert length == len(single)
                before = workers.completed
                started = time.perf_counter()
                results = await defer.gatherResults(
                    [
                        defer.ensureDeferred(fetch(f"{base}/many{index}.flac?{query}", connections))
                        for _ in range(concurrent)
                    ]
                )
                many_s = time.perf_counter() - started
                many_jobs = workers.completed - before
                bodies = {body for _, body in results}
                assert len(bodies) == 1 and all(n == len(b) for n, b in results), label
                assert bodies == {single}, f"{label}: the burst's bytes differ from the single request's"
                rows.append(
                    {
                        "rendition": label,
                        "bytes": len(single),
                        "one_request_jobs": one_jobs,
                        "one_request_s": one_s,
                        "concurrent": concurrent,
                        "concurrent_jobs": many_jobs,
                        "concurrent_s": many_s,
                    }
                )
        finally:
            await connections.closeCachedConnections()
            await port.stopListening()
            await built.tracker.stopService()
            await workers.stopService()

    failures: list[Any] = []
    done = defer.ensureDeferred(main())
    done.addErrback(failures.append)
    done.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()
    return rows


def main() -> None:
    """Run every case and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated track")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--log", action="store_true", help="print the server's log to stderr")
    args = parser.parse_args()
    if args.log:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    with tempfile.TemporaryDirectory(prefix="streamsrv-bench-") as tmp:
        directory = Path(tmp)
        source = _source(directory, args.seconds)
        rows = run(source, directory, args.concurrent)
    print(f"source: {args.seconds:.0f} s stereo 44.1 kHz FLAC; jobs = encode jobs the worker pool ran")
    columns = ("bytes", "1 req jobs", "1 req s", "N", "N req jobs", "N req s")
    print(f"{'rendition':>16} " + " ".join(f"{c:>11}" for c in columns))
    for row in rows:
        values = (row["bytes"], row["one_request_jobs"], f"{row['one_request_s']:.2f}", row["concurrent"],
                  row["concurrent_jobs"], f"{row['concurrent_s']:.2f}")  # fmt: skip
        print(f"{row['rendition']:>16} " + " ".join(f"{v:>11}" for v in values))
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

# -*- test-case-name: tests.test_scan_cli -*-
"""``streamsrv scan``: bring the catalog up to date from the command line, with progress.

Runs the same incremental scan as the daemon, on the same database
(``<data dir>/catalog.sqlite3``), in this process and without a reactor
(the catalog runs with :class:`~streamsrv.audio.synchronous.SynchronousThreadPool`).
A running daemon sees the result at its next periodic rescan (SQLite's WAL
lets both open the file; writes wait for each other).

Output: on a terminal, a progress bar redrawn in place on ``err``; otherwise
a plain line at every tenth of the way.  Then a summary on ``out``
(added/changed/removed/unchanged/failed, files per second) and the files that
could not be read, each with its reason; or one JSON document with ``--json``.

Exit status: 0 when the scan ran and every audio file could be read; 3
(:data:`EXIT_SOME_FAILED`) when it ran but some files could not be read (they
are listed; the rest is catalogued), so scripts notice; 1 when the media root
or the database cannot be used; 2 for a bad command line (argparse's
convention, as in :mod:`streamsrv.cli`); 130 when interrupted (what was
scanned so far is kept).

This command must never start the reactor, and never print a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from streamsrv.audio.catalog import (
    CATALOG_FILENAME,
    Catalog,
    CatalogError,
    ScanProgress,
    ScanSummary,
)
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.cliargs import EXIT_INVALID, EXIT_OK, RaisingParser, parse_arguments

__all__ = ["EXIT_INTERRUPTED", "EXIT_SOME_FAILED", "scan_cli", "scan_parser"]

#: Exit status when interrupted (the others are :mod:`streamsrv.cliargs`').
EXIT_INTERRUPTED = 130

#: Exit status of a scan that ran but could not read some files.
EXIT_SOME_FAILED = 3

#: Width of the progress bar, in characters.
BAR_WIDTH = 30

#: Least time between two redraws of the bar, in seconds.
REDRAW_INTERVAL_S = 0.1

#: Failed files listed before "... and N more" (``--all-failures`` lists all).
MAX_LISTED_FAILURES = 50


def scan_parser(prog: str = "streamsrv scan") -> argparse.ArgumentParser:
    """The ``streamsrv scan`` argument parser."""
    parser = RaisingParser(
        prog=prog,
        add_help=False,
        description=(
            "Scan the media library into the catalog the daemon uses: new and changed files are "
            "read, unchanged ones skipped, missing ones removed."
        ),
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument(
        "--media-dir", type=Path, default=None, help="the media root (default: STREAMSRV_MEDIA_DIR)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the catalog lives (default: STREAMSRV_DATA_DIR)"
    )
    parser.add_argument("--full", action="store_true", help="re-read every file, changed or not")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress")
    parser.add_argument("--all-failures", action="store_true", help="list every unreadable file")
    return parser


def scan_cli(
    argv: Sequence[str],
    *,
    data_dir: Path,
    media_root: Path | None,
    out: TextIO,
    err: TextIO | None = None,
    isatty: bool | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    catalog_factory: Callable[[Path, Path], Catalog] | None = None,
) -> int:
    """``streamsrv scan [--media-dir DIR] [--data-dir DIR] [--full] [--json] [--no-progress]``.

    :param argv: the arguments after ``scan``.
    :param data_dir: ``STREAMSRV_DATA_DIR`` (``--data-dir`` wins).
    :param media_root: ``STREAMSRV_MEDIA_DIR``, or ``None`` for the demo
        library the daemon generates in the data dir (``--media-dir`` wins).
    :param out: where the summary goes.
    :param err: where progress and problems go; :data:`sys.stderr` if ``None``.
    :param isatty: whether ``err`` is a terminal; asked of ``err`` if ``None``.
    :param monotonic: the clock for redraws and files/s.
    :param catalog_factory: makes the catalog from ``(db_path, media_root)``
        (tests inject one); it must run synchronously.
    :returns: the exit status (see the module docstring).
    """
    err = sys.stderr if err is None else err
    args = parse_arguments(scan_parser(), argv, out=out, err=err)
    if isinstance(args, int):
        return args

    data_dir = args.data_dir or data_dir
    root = args.media_dir or media_root
    if root is None:
        root = data_dir / "demo"
        if not root.is_dir():
            print("streamsrv scan: STREAMSRV_MEDIA_DIR is not set (and there is no demo library)", file=err)
            return EXIT_INVALID
    if not root.is_dir():
        print(f"streamsrv scan: media root is not a directory: {root}", file=err)
        return EXIT_INVALID
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"streamsrv scan: cannot create the data dir {data_dir}: {e.strerror}", file=err)
        return EXIT_INVALID

    db_path = data_dir / CATALOG_FILENAME
    if catalog_factory is None:
        catalog = Catalog(db_path, root, reactor=ImmediateReactor(), threadpool=SynchronousThreadPool())
    else:
        catalog = catalog_factory(db_path, root)
    tty = err.isatty() if isatty is None else isatty
    display = _Progress(err, tty=tty, monotonic=monotonic, enabled=not args.no_progress and not args.json)
    started = monotonic()
    try:
        _result(catalog.open())
        try:
            summary = _result(catalog.scan(display.update, full=args.full))
        finally:
            display.finish()
            _result(catalog.close())
    except KeyboardInterrupt:
        display.finish()
        print("streamsrv scan: interrupted; what was scanned so far is kept", file=err)
        return EXIT_INTERRUPTED
    except CatalogError as e:
        print(f"streamsrv scan: {e}", file=err)
        return EXIT_INVALID
    elapsed = max(monotonic() - started, 1e-9)
    if args.json:
        document = summary.to_json()
        document["files_per_s"] = round(summary.files / elapsed, 1)
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        _print_summary(summary, root, elapsed, out, all_failures=args.all_failures)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (synchronous catalog)."""
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise RuntimeError("the catalog did not run synchronously")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def _print_summary(
    summary: ScanSummary, root: Path, elapsed: float, out: TextIO, *, all_failures: bool
) -> None:
    rate = summary.files / elapsed
    files = f"{summary.files} audio file{'' if summary.files == 1 else 's'}"
    print(f"scanned {root}: {files} in {elapsed:.1f} s ({rate:.0f} files/s)", file=out)
    for label, value in (
        ("added", summary.added),
        ("changed", summary.changed),
        ("removed", summary.removed),
        ("unchanged", summary.unchanged),
        ("failed", summary.failed),
    ):
        print(f"  {label:<10}{value:>8}", file=out)
    if summary.failures:
        print("unreadable files:", file=out)
        shown = summary.failures if all_failures else summary.failures[:MAX_LISTED_FAILURES]
        for path, reason in shown:
            print(f"  {path}: {reason}", file=out)
        if len(shown) < len(summary.failures):
            more = len(summary.failures) - len(shown)
            print(f"  ... and {more} more (--all-failures lists them)", file=out)


class _Progress:
    """A progress bar on a terminal, a line per tenth otherwise."""

    def __init__(self, err: TextIO, *, tty: bool, monotonic: Callable[[], float], enabled: bool) -> None:
        self._err = err
        self._tty = tty
        self._monotonic = monotonic
        self._enabled = enabled
        self._last_draw = float("-inf")
        self._last_tenth = -1
        self._drawn = False

    def update(self, progress: ScanProgress) -> None:
        if not self._enabled:
            return
        if progress.files_total == 0:
            if self._tty:
                self._draw("walking the media root...")
            else:
                print("scan: walking the media root", file=self._err, flush=True)
            return
        fraction = progress.files_done / progress.files_total
        done = progress.files_done == progress.files_total
        if self._tty:
            now = self._monotonic()
            if not done and now - self._last_draw < REDRAW_INTERVAL_S:
                return
            self._last_draw = now
            filled = round(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self._draw(
                f"[{bar}] {progress.files_done}/{progress.files_total} files {fraction:4.0%}"
                f"  read {progress.reads}, unreadable {progress.failed}"
            )
            return
        tenth = int(fraction * 10)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            print(
                f"scan: {progress.files_done}/{progress.files_total} files ({fraction:.0%}), "
                f"{progress.reads} read, {progress.failed} unreadable",
                file=self._err,
                flush=True,
            )

    def _draw(self, line: str) -> None:
        self._err.write("\r\x1b[2K" + line)
        self._err.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._err.write("\n")
            self._err.flush()
            self._drawn = False

# -*- test-case-name: tests.test_demo -*-
"""Generate the demo library a development server starts with, once, atomically.

With no media of its own, a development server serves this library, so that a
first ``twistd -n streamsrv`` has real tracks to stream, tag, draw and seek
(what it holds: :mod:`streamsrv.demo.tracks`).  :func:`ensure_demo_library`
generates it once: into a temporary directory beside the destination, with
:data:`DEMO_MARKER` written last, then renamed into place, so an interrupted
run never leaves a half library where the server looks.  It blocks for a few
seconds of CPU work: call it before the reactor runs or in a thread, never on
the reactor thread.  It must never write outside the destination's parent
directory, never delete a directory it did not make (one without the marker
that holds anything but demo files is refused), and never serve production
(start-up refuses the demo library there).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Final

from twisted.logger import Logger

from streamsrv.audio.formats import audio_format_for
from streamsrv.demo.cover import cover_png
from streamsrv.demo.encode import encode
from streamsrv.demo.synth import peak_and_power, render_music, render_rain
from streamsrv.demo.tags import replay_gains, tag_track
from streamsrv.demo.tracks import COVER_FILE, DEMO_TRACKS, SUNRISE_COVER, DemoTrack

__all__ = [
    "DEMO_MARKER",
    "DEMO_VERSION",
    "STALE_PARTIAL_S",
    "ensure_demo_library",
    "generate_demo_library",
]

log = Logger()

#: Name of the file written last inside a complete demo library.
DEMO_MARKER: Final[str] = ".streamsrv-demo"

#: Bumped whenever the generated content changes (recorded in the marker).
DEMO_VERSION: Final[int] = 1

#: Prefix of the temporary directories generation works in, beside ``dest``.
_PARTIAL_PREFIX: Final[str] = ".streamsrv-demo-partial-"

#: Partial directories older than this are leftovers of a crashed run.
STALE_PARTIAL_S: Final[float] = 600.0

#: Threads encoding tracks at once (PyAV releases the GIL while encoding).
_MAX_WORKERS: Final[int] = 4


def ensure_demo_library(dest: Path) -> list[Path]:
    """Make sure a complete demo library exists at ``dest``.

    Blocks for a few seconds when it has to generate; returns at once when
    ``dest`` already holds a complete library.

    :param dest: the library directory; its parent is created if needed and
        must be writable.
    :returns: the paths of the library's tracks.
    :raises FileExistsError: when ``dest`` exists without :data:`DEMO_MARKER`
        and holds something the demo generator would not have written.
    """
    marker = dest / DEMO_MARKER
    if marker.is_file():
        return _existing_tracks(dest)
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest.parent)
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=dest.parent))
    try:
        generate_demo_library(partial)
        _install(partial, dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "generated the demo library in {dest} ({elapsed:.1f} s)",
        dest=str(dest),
        elapsed=time.monotonic() - started,
    )
    return _existing_tracks(dest)


def generate_demo_library(root: Path) -> list[Path]:
    """Write every demo track, the loose cover and then the marker into
    ``root``.

    Unlike :func:`ensure_demo_library` this writes in place, non-atomically.

    :param root: an existing, preferably empty, directory.
    :returns: the track paths, in :data:`DEMO_TRACKS` order.
    """
    paths = [root / PurePosixPath(track.path) for track in DEMO_TRACKS]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    # Longest first, so the three-minute track does not start last.
    order = sorted(range(len(DEMO_TRACKS)), key=lambda i: -DEMO_TRACKS[i].sample_count)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {i: pool.submit(_render_and_encode, DEMO_TRACKS[i], paths[i]) for i in order}
        try:
            loudness = {i: futures[i].result() for i in order}
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
    gains = replay_gains(DEMO_TRACKS, loudness)
    for track, path, track_gains in zip(DEMO_TRACKS, paths, gains, strict=True):
        tag_track(path, track, track_gains)
    (root / PurePosixPath(COVER_FILE)).write_bytes(cover_png(SUNRISE_COVER))
    manifest = {
        "version": DEMO_VERSION,
        "tracks": [track.path for track in DEMO_TRACKS],
    }
    (root / DEMO_MARKER).write_text(json.dumps(manifest, indent=1) + "\n")
    return paths


def _existing_tracks(dest: Path) -> list[Path]:
    """The tracks of a complete library, as its marker lists them.

    :param dest: a directory holding :data:`DEMO_MARKER`.
    :returns: the listed tracks that exist; every audio file below ``dest``
        when the marker cannot be read.
    """
    try:
        manifest = json.loads((dest / DEMO_MARKER).read_text())
        listed = [dest / PurePosixPath(p) for p in manifest["tracks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(p for p in dest.rglob("*") if p.is_file() and audio_format_for(p) is not None)
    return [p for p in listed if p.is_file()]


def _demo_file_names() -> frozenset[PurePosixPath]:
    """Every file and directory a demo library may contain."""
    names = {PurePosixPath(DEMO_MARKER), PurePosixPath(COVER_FILE)}
    for track in DEMO_TRACKS:
        names.add(PurePosixPath(track.path))
    for name in list(names):
        names.update(name.parents)
    names.discard(PurePosixPath("."))
    return frozenset(names)


def _check_replaceable(dest: Path) -> None:
    """Refuse to replace a directory that is not a (partial) demo library.

    :param dest: the library directory, which may not exist.
    :raises FileExistsError: when ``dest`` is not a directory, or holds a
        file the demo generator does not write.
    """
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise FileExistsError(f"{dest} exists and is not a demo library")
    allowed = _demo_file_names()
    for found in dest.rglob("*"):
        if PurePosixPath(found.relative_to(dest).as_posix()) not in allowed:
            raise FileExistsError(
                f"{dest} has no {DEMO_MARKER} and holds other files; refusing to replace it"
            )


def _remove_stale_partials(parent: Path) -> None:
    """Delete partial directories that crashed runs left behind.

    Only those older than :data:`STALE_PARTIAL_S`: a younger one may belong
    to another process generating right now.

    :param parent: the directory libraries are generated in.
    """
    now = time.time()
    for partial in parent.glob(_PARTIAL_PREFIX + "*"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            continue


def _install(partial: Path, dest: Path) -> None:
    """Move a complete library into place.

    :param partial: the generated library, marker included.
    :param dest: where it goes; if it exists it is an incomplete library
        (checked by :func:`_check_replaceable`) and is replaced, unless
        another process installed a complete one meanwhile, which wins.
    """
    try:
        os.rename(partial, dest)
        return
    except OSError:
        if (dest / DEMO_MARKER).is_file():
            return  # another process finished first; keep its library
        if not dest.exists():
            raise
    # An incomplete library: set it aside, move ours in, then delete it.
    aside = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=dest.parent))
    try:
        os.rename(dest, aside / "old")
        os.rename(partial, dest)
    except OSError:
        if not (dest / DEMO_MARKER).is_file():
            raise
        # another process installed its library between the two renames
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _render_and_encode(track: DemoTrack, path: Path) -> tuple[float, float]:
    """Synthesise one track and write it, untagged.

    :param track: what to make.
    :param path: the file to write.
    :returns: the rendered peak and mean power (for ReplayGain).
    """
    if track.style is None:
        samples = render_rain(track.sample_count, track.sample_rate, seed=7)
    else:
        samples = render_music(track.style, track.sample_count, track.sample_rate)
    if track.channels == 1 and samples.shape[0] != 1:
        samples = samples.mean(axis=0, keepdims=True)
    peak, power = peak_and_power(samples)
    encode(path, track.encoding, samples, track.sample_rate)
    return peak, power

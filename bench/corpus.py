"""Deterministic benchmark corpus: random bytes in MPEG frames, named ``*.mp3``.

The benchmark only serves bytes, so the payload is random; but every 417 bytes it
carries a valid MPEG-1 Layer III frame header (128 kb/s, 44.1 kHz), so a catalog that
probes files with mutagen sees a plausible MP3 with a duration rather than junk.
The same seed always gives the same files. This module never writes outside the
directory it is given and never deletes anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024

#: MPEG-1 Layer III, 128 kb/s, 44.1 kHz, no CRC, no padding, joint stereo.
FRAME_HEADER = bytes.fromhex("fffb9064")
#: 144 * 128000 / 44100, rounded down: the length of one such frame.
FRAME_SIZE = 417


@dataclass(frozen=True)
class MediaFile:
    """One file of the corpus: its name relative to the media root and its size."""

    name: str
    size: int


@dataclass(frozen=True)
class Corpus:
    """The generated media root and the files in it, by use."""

    root: Path
    #: Track-sized files (1-10 MiB): random ranges and full-file downloads.
    tracks: tuple[MediaFile, ...]
    #: Large files (hour-long mixes): slow readers, sized so they never finish.
    long_files: tuple[MediaFile, ...]

    def write_manifest(self, path: Path, files: tuple[MediaFile, ...]) -> Path:
        """Write ``name size`` lines for ``files`` (what the wrk script reads)."""
        path.write_text("".join(f"{f.name} {f.size}\n" for f in files), encoding="ascii")
        return path

    @property
    def total_bytes(self) -> int:
        """Bytes on disk over every file of the corpus."""
        return sum(f.size for f in self.tracks + self.long_files)


def mpeg_framed_random(rng: random.Random, size: int) -> bytes:
    """Return ``size`` random bytes with an MPEG frame header every FRAME_SIZE bytes."""
    data = bytearray(rng.randbytes(size))
    for k, byte in enumerate(FRAME_HEADER):
        count = len(range(k, size, FRAME_SIZE))
        data[k::FRAME_SIZE] = bytes([byte]) * count
    return bytes(data)


def make_corpus(
    root: Path,
    seed: int = 20240601,
    tracks: int = 20,
    track_min: int = 1 * MIB,
    track_max: int = 10 * MIB,
    long_count: int = 2,
    long_size: int = 64 * MIB,
) -> Corpus:
    """Create ``root`` and fill it with the corpus; return what was written."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    made_tracks: list[MediaFile] = []
    for i in range(tracks):
        size = rng.randint(track_min, track_max)
        name = f"track-{i:02d}.mp3"
        (root / name).write_bytes(mpeg_framed_random(rng, size))
        made_tracks.append(MediaFile(name, size))
    made_long: list[MediaFile] = []
    for i in range(long_count):
        name = f"long-{i}.mp3"
        (root / name).write_bytes(mpeg_framed_random(rng, long_size))
        made_long.append(MediaFile(name, long_size))
    return Corpus(root, tuple(made_tracks), tuple(made_long))

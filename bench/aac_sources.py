"""Sources for ``bench/hls.py --quality`` and ``bench/transcode.py --source``: music and speech.

Writes, into ``--out``, three 60 s stereo 44.1 kHz FLAC files made from fixed
seeds, so the AAC quality and cost tables of ``docs/performance.md`` ("AAC
warm-up: measured, not adopted") can be measured again:

- ``song.flac``: a General-MIDI band (drums, finger bass, overdriven guitar
  chords, a square-wave lead from bar 5), 120 bpm;
- ``song2.flac``: piano arpeggios over a string pad and a cello line;
- ``speech.flac``: espeak-ng reading 40 random sentences (digital silence
  between phrases, the case that overshoots AAC's rate control).

The MIDI files are written here (no MIDI library needed) and rendered with
fluidsynth and the FluidR3_GM sound font; needs ``fluidsynth``,
``fluid-soundfont-gm``, ``espeak-ng`` and ``ffmpeg`` (Debian packages).

    .venv/bin/python bench/aac_sources.py --out DIR
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Final

SOUND_FONT: Final = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TICKS: Final = 480  # per quarter note; 120 bpm: 2 s a bar
BARS: Final = 30
#: (bass root, chord) per bar, in turn: Am, F, C, G.
PROGRESSION: Final = ((57, (57, 60, 64)), (53, (53, 57, 60)), (48, (48, 52, 55)), (55, (55, 59, 62)))

Event = tuple[int, int, bytes]  # (tick, order at that tick: note-offs first, message)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[Event]) -> bytes:
    data, now = b"", 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        data += _vlq(tick - now) + message
        now = tick
    data += _vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(data)) + data


def _write_midi(path: Path, tracks: list[list[Event]]) -> None:
    """A type-1 MIDI file at 120 bpm: a tempo track, then *tracks*."""
    head = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks) + 1, TICKS)
    tempo = _track([(0, 0, b"\xff\x51\x03" + (500000).to_bytes(3, "big"))])
    path.write_bytes(head + tempo + b"".join(_track(t) for t in tracks))


def _note(events: list[Event], channel: int, tick: int, length: int, pitch: int, velocity: int) -> None:
    events.append((tick, 1, bytes((0x90 | channel, pitch, velocity))))
    events.append((tick + length, 0, bytes((0x80 | channel, pitch, 0))))


def _program(channel: int, program: int) -> list[Event]:
    return [(0, 0, bytes((0xC0 | channel, program)))]


def band(rng: random.Random) -> list[list[Event]]:
    """Drums, bass, overdriven guitar chords and a lead line."""
    drums: list[Event] = []
    bass, guitar, lead = _program(1, 33), _program(2, 29), _program(3, 81)
    for bar in range(BARS):
        root, chord = PROGRESSION[bar % 4]
        start = bar * 4 * TICKS
        for eighth in range(8):
            tick = start + eighth * TICKS // 2
            _note(drums, 9, tick, TICKS // 4, 42, 70 + rng.randint(0, 20))
            if eighth in (0, 4):
                _note(drums, 9, tick, TICKS // 2, 36, 110)
            if eighth in (2, 6):
                _note(drums, 9, tick, TICKS // 2, 38, 105)
            _note(bass, 1, tick, TICKS // 2 - 20, root - 24 + (7 if eighth % 4 == 3 else 0), 100)
        if bar % 4 == 0:
            _note(drums, 9, start, TICKS, 49, 100)
        for beat in range(4):
            for pitch in chord:
                _note(guitar, 2, start + beat * TICKS, TICKS - 40, pitch, 80)
        if bar >= 4:
            for eighth in range(8):
                pitch = chord[rng.randrange(3)] + 12 + rng.choice((0, 2, 0, 12))
                _note(lead, 3, start + eighth * TICKS // 2, TICKS // 2, pitch, 90)
    return [drums, bass, guitar, lead]


def chamber(rng: random.Random) -> list[list[Event]]:
    """Piano arpeggios, a string pad and a cello line."""
    piano, strings, cello = _program(0, 0), _program(1, 48), _program(2, 42)
    for bar in range(BARS):
        root, chord = PROGRESSION[bar % 4]
        start = bar * 4 * TICKS
        for sixteenth in range(16):
            pitch = chord[sixteenth % 3] + 12 * (sixteenth // 3 % 2)
            _note(piano, 0, start + sixteenth * TICKS // 4, TICKS // 2, pitch, 60 + rng.randint(0, 30))
        for pitch in chord:
            _note(strings, 1, start, 4 * TICKS - 10, pitch + 12, 70)
        _note(cello, 2, start, 2 * TICKS, root - 12, 80)
        _note(cello, 2, start + 2 * TICKS, 2 * TICKS, root - 5, 75)
    return [piano, strings, cello]


def sentences() -> str:
    """40 sentences of 5-12 words from a small vocabulary (fixed seed)."""
    rng = random.Random(5)
    words = (
        "the quick brown fox jumps over a lazy dog while streams of audio travel across the network"
        " to every listener in the house and beyond"
    ).split()
    return ". ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) for _ in range(40)) + "."


def _to_flac(wav: Path, out: Path) -> None:
    """The first 60 s of *wav* as 44.1 kHz stereo FLAC."""
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(wav),
            "-t",
            "60",
            "-ar",
            "44100",
            "-ac",
            "2",
            str(out),
        ],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for song/song2/speech.flac")
    args = parser.parse_args()
    missing = [tool for tool in ("fluidsynth", "espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing or not SOUND_FONT.exists():
        raise SystemExit(
            f"needs {', '.join(missing) or SOUND_FONT} (fluidsynth fluid-soundfont-gm espeak-ng ffmpeg)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Gains keep both renders' peaks below full scale (about -4 and -10 dBFS).
        rng = random.Random(7)  # one generator, the band first: the renders measured
        song, song2 = band(rng), chamber(rng)
        for name, tracks, gain in (("song", song, "0.3"), ("song2", song2, "0.6")):
            _write_midi(work / f"{name}.mid", tracks)
            wav = work / f"{name}.wav"
            subprocess.run(
                [
                    "fluidsynth",
                    "-ni",
                    "-F",
                    str(wav),
                    "-r",
                    "44100",
                    "-g",
                    gain,
                    str(SOUND_FONT),
                    str(work / f"{name}.mid"),
                ],
                check=True,
                capture_output=True,
            )
            _to_flac(wav, args.out / f"{name}.flac")
        (work / "speech.txt").write_text(sentences())
        subprocess.run(
            ["espeak-ng", "-f", str(work / "speech.txt"), "-w", str(work / "speech.wav")], check=True
        )
        _to_flac(work / "speech.wav", args.out / "speech.flac")
    print(f"wrote song.flac, song2.flac and speech.flac to {args.out}")


if __name__ == "__main__":
    main()

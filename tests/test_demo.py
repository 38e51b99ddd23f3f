"""Tests for :mod:`streamsrv.demo`.

Generating the real library takes a few seconds, so it is made once per test
run (:func:`shared_library`) and only read by the tests that share it; tests
of the install logic swap the generator for a fast fake.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import tempfile
import time
import unicodedata
import zlib
from pathlib import Path, PurePosixPath

import av
import mutagen
import numpy as np
from mutagen.flac import Picture
from mutagen.mp3 import BitrateMode
from twisted.trial import unittest

from streamsrv import demo
from streamsrv.audio.formats import audio_format_for
from streamsrv.audio.probe import probe_duration
from streamsrv.demo import library
from tests import audiogen

#: The contract's tolerance on durations.
TOLERANCE_S = 0.05

#: FFmpeg decoder name expected for each demo file extension.
DECODERS = {
    ".mp3": "mp3float",
    ".flac": "flac",
    ".ogg": "vorbis",
    ".opus": "opus",
    ".m4a": "aac",
    ".wav": "pcm_s16le",
}

_shared: tuple[Path, list[Path]] | None = None


def shared_library() -> tuple[Path, list[Path]]:
    """The real demo library, generated on first use in this test run.

    It lives below trial's working directory, which trial cleans before each
    run.  Tests must not modify it.

    :returns: the library root and the track paths ``ensure_demo_library``
        returned.
    """
    global _shared
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="shared-demo-", dir=os.getcwd())) / "demo"
        _shared = (root, demo.ensure_demo_library(root))
    return _shared


def assert_within(
    case: unittest.SynchronousTestCase, actual: float, expected: float, delta: float, msg: str = ""
) -> None:
    """Fail unless ``actual`` is within ``delta`` of ``expected``.

    trial's ``assertAlmostEqual`` accepts ``delta`` but ignores it.
    """
    case.assertLessEqual(
        abs(actual - expected), delta, f"{msg}: {actual!r} not within {delta} of {expected!r}"
    )


def check_png(case: unittest.SynchronousTestCase, data: bytes, size: int = demo.COVER_SIZE) -> None:
    """Fail unless ``data`` is a well-formed ``size``-square 8-bit RGB PNG.

    Checks the signature, every chunk's CRC, the header, and that the image
    data inflates to exactly one filter byte plus one RGB row per line.
    """
    case.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        case.assertEqual(zlib.crc32(kind + body) & 0xFFFFFFFF, crc, kind)
        chunks.append((kind, body))
        position += 12 + length
    kinds = [kind for kind, _ in chunks]
    case.assertEqual((kinds[0], kinds[-1]), (b"IHDR", b"IEND"))
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    case.assertEqual((width, height, depth, colour), (size, size, 8, 2))
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    case.assertEqual(len(pixels), size * (1 + 3 * size))


def decode_head(path: Path, seconds: float = 6.0) -> tuple[np.ndarray, int, str]:
    """Decode the first ``seconds`` of a file.

    :returns: ``(channels, n)`` float samples, the sample rate and the name of
        the decoder FFmpeg chose.
    """
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        decoder = stream.codec_context.name
        resampler = av.AudioResampler(format="fltp")
        chunks, rate, count = [], stream.codec_context.sample_rate, 0
        for frame in container.decode(stream):
            for planar in resampler.resample(frame):
                chunks.append(planar.to_ndarray())
                count += planar.samples
            if count >= seconds * rate:
                break
    return np.concatenate(chunks, axis=1), rate, decoder


def tag_text(path: Path) -> dict[str, str]:
    """The common tags of a demo track, read back with mutagen, as text.

    :returns: ``title``, ``artist``, ``album``, ``albumartist``,
        ``tracknumber``, ``discnumber``, ``genre`` and ``date``, numbers
        without their totals.
    """
    keys = ("title", "artist", "album", "albumartist", "tracknumber", "discnumber", "genre", "date")
    if path.suffix == ".wav":
        tags = mutagen.File(path).tags
        frames = {
            "title": "TIT2",
            "artist": "TPE1",
            "album": "TALB",
            "albumartist": "TPE2",
            "tracknumber": "TRCK",
            "genre": "TCON",
            "date": "TDRC",
        }
        found = {key: str(tags[frame].text[0]) for key, frame in frames.items()}
        found["discnumber"] = "1"
    else:
        easy = mutagen.File(path, easy=True)
        found = {key: str(easy[key][0]) for key in keys}
    for key in ("tracknumber", "discnumber"):
        found[key] = found[key].split("/")[0]
    return found


def replaygain_text(path: Path) -> dict[str, str]:
    """ReplayGain values of an MP3 (``TXXX``) or FLAC (comments), lowercase."""
    parsed = mutagen.File(path)
    if path.suffix == ".mp3":
        return {
            frame.desc.lower(): str(frame.text[0])
            for frame in parsed.tags.getall("TXXX")
            if frame.desc.lower().startswith("replaygain_")
        }
    return {
        key.lower(): values[0] for key, values in parsed.tags.items() if key.lower().startswith("replaygain_")
    }


def artwork(path: Path) -> list[bytes]:
    """Every embedded picture of a track, whatever its tag format."""
    parsed = mutagen.File(path)
    suffix = path.suffix
    if suffix in (".mp3", ".wav"):
        return [frame.data for frame in parsed.tags.getall("APIC")]
    if suffix == ".flac":
        return [picture.data for picture in parsed.pictures]
    if suffix == ".m4a":
        return [bytes(cover) for cover in parsed.tags.get("covr", [])]
    blocks = parsed.tags.get("metadata_block_picture", [])
    return [Picture(base64.b64decode(block)).data for block in blocks]


class DemoLibraryTests(unittest.SynchronousTestCase):
    """The generated library, made once and shared by these tests."""

    def setUp(self) -> None:
        self.root, self.paths = shared_library()

    def test_layout(self) -> None:
        """Every listed track exists where ``DEMO_TRACKS`` says, in that
        order, beside the marker (which lists them) and the loose cover."""
        self.assertEqual(self.paths, [self.root / PurePosixPath(t.path) for t in demo.DEMO_TRACKS])
        for path in self.paths:
            self.assertTrue(path.is_file(), path)
            self.assertGreater(path.stat().st_size, 10_000, path)
        manifest = json.loads((self.root / demo.DEMO_MARKER).read_text())
        self.assertEqual(manifest["version"], demo.DEMO_VERSION)
        self.assertEqual(manifest["tracks"], [t.path for t in demo.DEMO_TRACKS])
        check_png(self, (self.root / PurePosixPath(demo.COVER_FILE)).read_bytes())

    def test_variety(self) -> None:
        """The library spans 6 to 8 tracks in six audio formats, lengths from
        10 s to 3 min, and a mono 22.05 kHz recording."""
        self.assertTrue(6 <= len(demo.DEMO_TRACKS) <= 8)
        suffixes = {path.suffix for path in self.paths}
        self.assertEqual(suffixes, {".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav"})
        for path in self.paths:
            self.assertIsNotNone(audio_format_for(path), path)
        lengths = [t.seconds for t in demo.DEMO_TRACKS]
        self.assertEqual((min(lengths), max(lengths)), (10.0, 180.0))
        self.assertIn((1, 22050), {(t.channels, t.sample_rate) for t in demo.DEMO_TRACKS})

    def test_names_need_url_encoding(self) -> None:
        """Paths hold spaces and a non-ASCII name, stored in NFC."""
        names = [t.path for t in demo.DEMO_TRACKS]
        self.assertTrue(all(" " in name for name in names if "/" in name))
        non_ascii = [name for name in names if not name.isascii()]
        self.assertEqual(len(non_ascii), 1)
        self.assertTrue(unicodedata.is_normalized("NFC", non_ascii[0]))
        self.assertIn("Caf\u00e9.mp3", non_ascii[0])
        self.assertTrue(any(p.name == "03 - Caf\u00e9.mp3" for p in self.paths))

    def test_decodes_to_intended_length(self) -> None:
        """Every track decodes with PyAV, with the expected decoder, sample
        rate and channels, to within 50 ms of its intended length."""
        for track, path in zip(demo.DEMO_TRACKS, self.paths, strict=True):
            with av.open(str(path)) as container:
                context = container.streams.audio[0].codec_context
                self.assertEqual(context.name, DECODERS[path.suffix], path)
                self.assertEqual(context.sample_rate, track.sample_rate, path)
                self.assertEqual(context.channels, track.channels, path)
            assert_within(self, audiogen.decoded_duration(path), track.seconds, TOLERANCE_S, track.path)

    def test_probe_duration(self) -> None:
        """``probe_duration`` reads every track's length within 50 ms."""
        for track, path in zip(demo.DEMO_TRACKS, self.paths, strict=True):
            duration = probe_duration(path)
            assert duration is not None, track.path
            assert_within(self, duration, track.seconds, TOLERANCE_S, track.path)

    def test_sounds_like_music(self) -> None:
        """Tracks are loud enough, not clipped, and (when stereo) panned: the
        channels differ; the music has bass, middle and treble energy."""
        for track, path in zip(demo.DEMO_TRACKS, self.paths, strict=True):
            samples, rate, _ = decode_head(path)
            peak = float(np.abs(samples).max())
            self.assertTrue(0.3 < peak <= 1.0, f"{track.path}: peak {peak}")
            if track.channels == 2:
                left, right = samples[0], samples[1]
                self.assertGreater(float(np.abs(left - right).max()), 0.05, track.path)
            if track.style is not None:
                spectrum = np.abs(np.fft.rfft(samples.mean(axis=0))) ** 2
                freqs = np.fft.rfftfreq(samples.shape[1], 1.0 / rate)
                total = spectrum.sum()
                for low, high in ((30, 200), (200, 2000), (2000, 12000)):
                    band = spectrum[(freqs >= low) & (freqs < high)].sum()
                    self.assertGreater(band / total, 0.002, f"{track.path} {low}-{high} Hz")

    def test_tags(self) -> None:
        """Title, artists, album, track and disc numbers, genre and year read
        back with mutagen from every track."""
        for track, path in zip(demo.DEMO_TRACKS, self.paths, strict=True):
            t = track.tags
            expected = {
                "title": t.title,
                "artist": t.artist,
                "album": t.album,
                "albumartist": t.album_artist,
                "tracknumber": str(t.track_number),
                "discnumber": str(t.disc_number),
                "genre": t.genre,
                "date": str(t.year),
            }
            self.assertEqual(tag_text(path), expected, track.path)

    def test_replaygain(self) -> None:
        """The ReplayGain album carries track and album gain and peak; the
        album values agree across its tracks and bound the track peaks."""
        tagged = [(t, p) for t, p in zip(demo.DEMO_TRACKS, self.paths, strict=True) if t.replaygain]
        self.assertGreaterEqual(len(tagged), 2)
        albums = set()
        for track, path in tagged:
            values = replaygain_text(path)
            self.assertEqual(
                set(values),
                {
                    "replaygain_track_gain",
                    "replaygain_track_peak",
                    "replaygain_album_gain",
                    "replaygain_album_peak",
                },
                track.path,
            )
            for key in ("replaygain_track_gain", "replaygain_album_gain"):
                self.assertTrue(values[key].endswith(" dB"), values[key])
                self.assertTrue(-20.0 < float(values[key][:-3]) < 20.0, values[key])
            self.assertLessEqual(
                float(values["replaygain_track_peak"]), float(values["replaygain_album_peak"])
            )
            self.assertTrue(0.0 < float(values["replaygain_track_peak"]) <= 1.0)
            albums.add((values["replaygain_album_gain"], values["replaygain_album_peak"]))
        self.assertEqual(len(albums), 1)

    def test_artwork(self) -> None:
        """Tracks with a cover embed exactly one valid PNG (APIC, FLAC
        picture, ``covr``, Vorbis picture block); the others embed none."""
        formats_with_art = set()
        for track, path in zip(demo.DEMO_TRACKS, self.paths, strict=True):
            pictures = artwork(path)
            if track.cover is None:
                self.assertEqual(pictures, [], track.path)
                continue
            self.assertEqual(len(pictures), 1, track.path)
            check_png(self, pictures[0])
            formats_with_art.add(path.suffix)
        self.assertTrue({".mp3", ".flac", ".m4a"} <= formats_with_art)

    def test_mp3_bitrate_modes(self) -> None:
        """One MP3 is CBR 192 kb/s, the three-minute one is VBR."""
        modes = {}
        for path in self.paths:
            if path.suffix == ".mp3":
                info = mutagen.File(path).info
                modes[path.name] = (info.bitrate_mode, info.bitrate)
        self.assertEqual(modes["01 - Sunrise.mp3"], (BitrateMode.CBR, 192_000))
        self.assertEqual(modes["03 - Caf\u00e9.mp3"][0], BitrateMode.VBR)

    def test_idempotent(self) -> None:
        """A second call returns the same tracks without generating again or
        touching a single file."""

        def fail(root: Path) -> list[Path]:
            raise AssertionError("regenerated")

        self.patch(library, "generate_demo_library", fail)
        before = {p: p.stat().st_mtime_ns for p in self.root.rglob("*")}
        self.assertEqual(demo.ensure_demo_library(self.root), self.paths)
        self.assertEqual({p: p.stat().st_mtime_ns for p in self.root.rglob("*")}, before)


class FakeGenerator:
    """Stands in for ``generate_demo_library``: tiny files, a real marker.

    :param fail_after: write this many tracks, then raise ``RuntimeError``.
    :param before_return: called with the partial directory at the end.
    """

    def __init__(self, fail_after: int | None = None, before_return: object = None) -> None:
        self.roots: list[Path] = []
        self.fail_after = fail_after
        self.before_return = before_return

    def __call__(self, root: Path) -> list[Path]:
        self.roots.append(root)
        paths = []
        for n, track in enumerate(demo.DEMO_TRACKS):
            if n == self.fail_after:
                raise RuntimeError("generation interrupted")
            path = root / PurePosixPath(track.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"fresh")
            paths.append(path)
        manifest = {"version": demo.DEMO_VERSION, "tracks": [t.path for t in demo.DEMO_TRACKS]}
        (root / demo.DEMO_MARKER).write_text(json.dumps(manifest))
        if callable(self.before_return):
            self.before_return(root)
        return paths


class EnsureDemoLibraryTests(unittest.SynchronousTestCase):
    """``ensure_demo_library``'s install logic, with a fake generator."""

    def setUp(self) -> None:
        self.parent = Path(self.mktemp())
        self.parent.mkdir()
        self.dest = self.parent / "demo"

    def use(self, generator: FakeGenerator) -> FakeGenerator:
        """Make ``ensure_demo_library`` call ``generator``."""
        self.patch(library, "generate_demo_library", generator)
        return generator

    def leftovers(self) -> list[str]:
        """Names in the parent directory other than the library itself."""
        return sorted(p.name for p in self.parent.iterdir() if p != self.dest)

    def test_generates_beside_then_renames(self) -> None:
        """Without a library, generation runs once in a hidden directory
        beside ``dest``, which is then renamed to ``dest`` and leaves nothing
        else behind."""
        generator = self.use(FakeGenerator())
        paths = demo.ensure_demo_library(self.dest)
        self.assertEqual(len(generator.roots), 1)
        self.assertEqual(generator.roots[0].parent, self.parent)
        self.assertTrue(generator.roots[0].name.startswith("."))
        self.assertEqual(paths, [self.dest / PurePosixPath(t.path) for t in demo.DEMO_TRACKS])
        self.assertTrue((self.dest / demo.DEMO_MARKER).is_file())
        self.assertEqual(self.leftovers(), [])

    def test_existing_library_is_kept(self) -> None:
        """With the marker present nothing is generated."""
        generator = self.use(FakeGenerator())
        first = demo.ensure_demo_library(self.dest)
        second = demo.ensure_demo_library(self.dest)
        self.assertEqual(first, second)
        self.assertEqual(len(generator.roots), 1)

    def test_interrupted_generation_is_redone(self) -> None:
        """A library whose marker is missing (an interrupted or damaged run)
        is generated again and replaces the old files."""
        generator = self.use(FakeGenerator())
        demo.ensure_demo_library(self.dest)
        (self.dest / demo.DEMO_MARKER).unlink()
        stale = self.dest / PurePosixPath(demo.DEMO_TRACKS[0].path)
        stale.write_bytes(b"stale")
        (self.dest / PurePosixPath(demo.DEMO_TRACKS[1].path)).unlink()
        paths = demo.ensure_demo_library(self.dest)
        self.assertEqual(len(generator.roots), 2)
        self.assertTrue((self.dest / demo.DEMO_MARKER).is_file())
        self.assertTrue(all(p.read_bytes() == b"fresh" for p in paths))
        self.assertEqual(len(paths), len(demo.DEMO_TRACKS))
        self.assertEqual(self.leftovers(), [])

    def test_empty_directory_is_filled(self) -> None:
        """An existing empty ``dest`` (made by an operator) is filled."""
        self.use(FakeGenerator())
        self.dest.mkdir()
        self.assertEqual(len(demo.ensure_demo_library(self.dest)), len(demo.DEMO_TRACKS))

    def test_failure_leaves_nothing(self) -> None:
        """A generation that fails half-way raises, and leaves neither a
        library nor a partial directory."""
        self.use(FakeGenerator(fail_after=3))
        self.assertRaises(RuntimeError, demo.ensure_demo_library, self.dest)
        self.assertFalse(self.dest.exists())
        self.assertEqual(self.leftovers(), [])

    def test_foreign_directory_is_refused(self) -> None:
        """A ``dest`` without the marker that holds files the generator does
        not write is not replaced: ``FileExistsError``, files untouched."""
        generator = self.use(FakeGenerator())
        self.dest.mkdir()
        (self.dest / "Demo Artist").mkdir()
        mine = self.dest / "Demo Artist" / "my song.mp3"
        mine.write_bytes(b"precious")
        self.assertRaises(FileExistsError, demo.ensure_demo_library, self.dest)
        self.assertEqual(mine.read_bytes(), b"precious")
        self.assertEqual(generator.roots, [])

    def test_file_is_refused(self) -> None:
        """A ``dest`` that is a file is refused and left alone."""
        self.use(FakeGenerator())
        self.dest.write_bytes(b"not a directory")
        self.assertRaises(FileExistsError, demo.ensure_demo_library, self.dest)
        self.assertEqual(self.dest.read_bytes(), b"not a directory")

    def test_concurrent_winner_is_kept(self) -> None:
        """When another process installs a complete library while this one
        generates, its library is kept and this one's is discarded."""

        def other_process_finishes(partial: Path) -> None:
            (self.dest / "Field Recordings").mkdir(parents=True)
            winner = self.dest / PurePosixPath(demo.DEMO_TRACKS[-1].path)
            winner.write_bytes(b"winner")
            manifest = {"version": demo.DEMO_VERSION, "tracks": [demo.DEMO_TRACKS[-1].path]}
            (self.dest / demo.DEMO_MARKER).write_text(json.dumps(manifest))

        self.use(FakeGenerator(before_return=other_process_finishes))
        paths = demo.ensure_demo_library(self.dest)
        self.assertEqual(paths, [self.dest / PurePosixPath(demo.DEMO_TRACKS[-1].path)])
        self.assertEqual(paths[0].read_bytes(), b"winner")
        self.assertEqual(self.leftovers(), [])

    def test_stale_partials_are_removed(self) -> None:
        """Partial directories of crashed runs older than the staleness limit
        are deleted; a young one (another process at work) is kept."""
        self.use(FakeGenerator())
        old = self.parent / ".streamsrv-demo-partial-old"
        young = self.parent / ".streamsrv-demo-partial-young"
        for partial in (old, young):
            (partial / "Demo Artist").mkdir(parents=True)
        long_ago = time.time() - demo.STALE_PARTIAL_S - 60
        os.utime(old, (long_ago, long_ago))
        demo.ensure_demo_library(self.dest)
        self.assertEqual(self.leftovers(), [young.name])

    def test_unreadable_marker(self) -> None:
        """With a marker that is not the expected JSON, the audio files found
        below ``dest`` are returned (sorted; no cover, no marker)."""
        generator = self.use(FakeGenerator())
        demo.ensure_demo_library(self.dest)
        (self.dest / demo.DEMO_MARKER).write_text("garbage")
        (self.dest / "Demo Artist" / "First Light" / "cover.png").write_bytes(b"png")
        paths = demo.ensure_demo_library(self.dest)
        expected = sorted(self.dest / PurePosixPath(t.path) for t in demo.DEMO_TRACKS)
        self.assertEqual(paths, expected)
        self.assertEqual(len(generator.roots), 1)

    def test_deleted_track_is_omitted(self) -> None:
        """A track listed in the marker but deleted since is not returned."""
        self.use(FakeGenerator())
        paths = demo.ensure_demo_library(self.dest)
        paths[0].unlink()
        self.assertEqual(demo.ensure_demo_library(self.dest), paths[1:])


class GenerateDemoLibraryTests(unittest.SynchronousTestCase):
    """``generate_demo_library`` writes its marker last."""

    def test_no_marker_after_failure(self) -> None:
        """When a track fails to render, the marker is not written."""

        def render(track: demo.DemoTrack, path: Path) -> tuple[float, float]:
            if track is demo.DEMO_TRACKS[2]:
                raise RuntimeError("encoder failed")
            return 0.5, 0.1

        self.patch(library, "_render_and_encode", render)
        root = Path(self.mktemp())
        root.mkdir()
        self.assertRaises(RuntimeError, demo.generate_demo_library, root)
        self.assertFalse((root / demo.DEMO_MARKER).exists())


class SynthesisTests(unittest.SynchronousTestCase):
    """The numpy synthesis and the cover images."""

    style = demo.DEMO_TRACKS[0].style

    def test_deterministic(self) -> None:
        """The same recipe renders the same samples; another seed does not."""
        assert self.style is not None
        first = demo.render_music(self.style, 44100 * 2, 44100)
        again = demo.render_music(self.style, 44100 * 2, 44100)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(demo.render_rain(22050, 22050, 7), demo.render_rain(22050, 22050, 7))

    def test_levels_and_fades(self) -> None:
        """A rendering has the asked shape, peaks at -1 dBFS, and starts and
        ends in silence (no click)."""
        assert self.style is not None
        samples = demo.render_music(self.style, 44100 * 3, 44100)
        self.assertEqual((samples.shape, samples.dtype), ((2, 44100 * 3), np.float32))
        assert_within(self, float(np.abs(samples).max()), 10 ** (-1 / 20), 1e-5, "peak")
        self.assertEqual(float(np.abs(samples[:, 0]).max()), 0.0)
        self.assertLess(float(np.abs(samples[:, -1]).max()), 1e-3)
        rain = demo.render_rain(22050 * 2, 22050, 7)
        self.assertEqual(rain.shape, (1, 22050 * 2))

    def test_sample_count(self) -> None:
        """A track renders ``seconds * rate`` samples, rounded up to whole
        1024-sample frames for AAC so its last frame carries no padding."""
        for track in demo.DEMO_TRACKS:
            exact = round(track.seconds * track.sample_rate)
            if track.encoding.frame_align > 1:
                self.assertEqual(track.sample_count % 1024, 0)
                self.assertTrue(exact <= track.sample_count < exact + 1024)
            else:
                self.assertEqual(track.sample_count, exact)

    def test_cover_png(self) -> None:
        """Covers are valid PNGs of the asked size, different per colour."""
        check_png(self, demo.cover_png((10, 200, 30)))
        check_png(self, demo.cover_png((10, 200, 30), size=17), size=17)
        self.assertNotEqual(demo.cover_png((10, 200, 30)), demo.cover_png((200, 10, 30)))


class ShippedFilesTests(unittest.SynchronousTestCase):
    """Nothing about the library depends on the machine that made it."""

    def test_marker_names_relative_paths(self) -> None:
        """The marker lists paths relative to the library, so a library can
        be moved or mounted elsewhere."""
        root, _ = shared_library()
        copy = Path(self.mktemp())
        shutil.copytree(root, copy)
        paths = demo.ensure_demo_library(copy)
        self.assertEqual(paths, [copy / PurePosixPath(t.path) for t in demo.DEMO_TRACKS])

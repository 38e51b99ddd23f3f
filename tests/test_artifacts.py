# -*- test-case-name: tests.test_artifacts -*-
"""Tests for :mod:`streamsrv.cache.artifacts`.

Recency runs on an injected clock (:class:`_Clock`), so eviction order is
exact; a crash mid-write is simulated both with an exception and with a real
child process that dies with ``os._exit`` halfway through an artifact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.cache.artifacts import (
    STALE_TEMP_AFTER_S,
    TEMP_PREFIX,
    TOUCH_INTERVAL_S,
    ArtifactCache,
    FileIdentity,
    artifact_key,
)
from streamsrv.threads import InlineThreads, IThreads

#: The repository, for child processes that import streamsrv.
REPO = Path(__file__).resolve().parent.parent

#: A source file version used throughout.
IDENTITY = FileIdentity(
    path="jazz/Miles Davis/So What.mp3", size=9_000_000, mtime_ns=1_700_000_000_123_456_789, inode=42
)

#: The clock's start, a plausible wall-clock time.
T0 = 1_750_000_000.0


class _Clock:
    """A settable wall clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _key(name: str) -> str:
    """A distinct artifact key per name."""
    return artifact_key(IDENTITY, "waveform", {"name": name})


def _temp_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob(TEMP_PREFIX + "*"))


def _artifacts(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))


class FileIdentityTests(unittest.TestCase):
    """A file's identity comes from its stat."""

    def test_of_stat(self) -> None:
        """``FileIdentity.of`` takes size, mtime (ns) and inode from the stat, the track name as given."""
        path = Path(self.mktemp())
        path.write_bytes(b"abc")
        stat = os.stat(path)
        identity = FileIdentity.of("a/b.mp3", stat)
        self.assertEqual(identity, FileIdentity("a/b.mp3", 3, stat.st_mtime_ns, stat.st_ino))
        self.assertEqual(hash(identity), hash(FileIdentity("a/b.mp3", 3, stat.st_mtime_ns, stat.st_ino)))


class ArtifactKeyTests(unittest.TestCase):
    """Keys are stable for equal inputs and differ for any change."""

    def test_documented_canonical_form(self) -> None:
        """The key is SHA-256 of the documented canonical JSON, so other tools can compute it."""
        canonical = (
            '{"identity":{"inode":42,"mtime_ns":1700000000123456789,"path":"jazz/Miles Davis/So What.mp3",'
            '"size":9000000},"kind":"transcode","params":{"bitrate":192,"format":"mp3"}}'
        )
        self.assertEqual(
            artifact_key(IDENTITY, "transcode", {"format": "mp3", "bitrate": 192}),
            hashlib.sha256(canonical.encode("ascii")).hexdigest(),
        )

    def test_same_inputs_same_key(self) -> None:
        """Equal inputs give the same key whatever the parameters' order."""
        one = artifact_key(
            IDENTITY, "transcode", {"format": "mp3", "bitrate": 192, "nested": {"b": 1, "a": 2}}
        )
        two = artifact_key(
            FileIdentity(IDENTITY.path, IDENTITY.size, IDENTITY.mtime_ns, IDENTITY.inode),
            "transcode",
            {"nested": {"a": 2, "b": 1}, "bitrate": 192, "format": "mp3"},
        )
        self.assertEqual(one, two)
        self.assertRegex(one, r"\A[0-9a-f]{64}\Z")

    def test_stable_across_processes(self) -> None:
        """Another interpreter (another hash seed) computes the same key."""
        script = (
            "from streamsrv.cache.artifacts import FileIdentity, artifact_key\n"
            "print(artifact_key(FileIdentity('jazz/Miles Davis/So What.mp3', 9000000, "
            "1700000000123456789, 42), 'hls',\n"
            "    {'variant': 'aac-128', 'segment': 7, 'é': [1.5, None, True]}))\n"
        )
        environment = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
        output = subprocess.run(
            [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
        ).stdout.strip()
        self.assertEqual(
            output,
            artifact_key(IDENTITY, "hls", {"segment": 7, "variant": "aac-128", "é": [1.5, None, True]}),
        )

    def test_any_identity_change_changes_the_key(self) -> None:
        """Path, size, mtime and inode each change the key."""
        base = artifact_key(IDENTITY, "waveform", {})
        for changed in (
            FileIdentity("jazz/Miles Davis/So What.flac", IDENTITY.size, IDENTITY.mtime_ns, IDENTITY.inode),
            FileIdentity(IDENTITY.path, IDENTITY.size + 1, IDENTITY.mtime_ns, IDENTITY.inode),
            FileIdentity(IDENTITY.path, IDENTITY.size, IDENTITY.mtime_ns + 1, IDENTITY.inode),
            FileIdentity(IDENTITY.path, IDENTITY.size, IDENTITY.mtime_ns, IDENTITY.inode + 1),
        ):
            self.assertNotEqual(artifact_key(changed, "waveform", {}), base, changed)

    def test_kind_and_params_change_the_key(self) -> None:
        """The kind, a parameter's value, an added parameter and a value's type each change the key."""
        keys = {
            artifact_key(IDENTITY, "waveform", {}),
            artifact_key(IDENTITY, "spectrum", {}),
            artifact_key(IDENTITY, "waveform", {"bits": 8}),
            artifact_key(IDENTITY, "waveform", {"bits": 16}),
            artifact_key(IDENTITY, "waveform", {"bits": 8, "channels": "merge"}),
            artifact_key(IDENTITY, "waveform", {"bits": 8.0}),
            artifact_key(IDENTITY, "waveform", {"bits": "8"}),
            artifact_key(IDENTITY, "waveform", {"flag": True}),
            artifact_key(IDENTITY, "waveform", {"flag": 1}),
            artifact_key(IDENTITY, "waveform", {"flag": None}),
        }
        self.assertEqual(len(keys), 10)

    def test_unusable_params_are_refused(self) -> None:
        """A value with no JSON form, or a NaN, is an error rather than an unstable key."""
        self.assertRaises(TypeError, artifact_key, IDENTITY, "waveform", {"x": object()})
        self.assertRaises(ValueError, artifact_key, IDENTITY, "waveform", {"x": math.nan})

    def test_names_that_are_not_utf8(self) -> None:
        """A track name with an undecodable byte (a surrogate escape) still has a key."""
        odd = FileIdentity("caf\udce9.mp3", 1, 2, 3)
        self.assertRegex(artifact_key(odd, "waveform", {}), r"\A[0-9a-f]{64}\Z")

    def test_nested_params(self) -> None:
        """Parameters holding lists and mappings are fine (the canonical form sorts nested keys)."""
        params = {"ladder": [{"codec": "aac", "kbps": 64}, {"codec": "aac", "kbps": 128}]}
        key = artifact_key(IDENTITY, "hls", params)
        canonical = json.dumps(
            {
                "identity": {
                    "path": IDENTITY.path,
                    "size": IDENTITY.size,
                    "mtime_ns": IDENTITY.mtime_ns,
                    "inode": 42,
                },
                "kind": "hls",
                "params": params,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        self.assertEqual(key, hashlib.sha256(canonical.encode()).hexdigest())

    @given(
        first=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
        second=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
    )
    def test_keys_equal_exactly_when_params_equal(
        self, first: dict[str, object], second: dict[str, object]
    ) -> None:
        """Two parameter sets share a key exactly when they are equal."""
        same = artifact_key(IDENTITY, "hls", first) == artifact_key(IDENTITY, "hls", second)
        self.assertEqual(same, first == second)


class PathTests(unittest.TestCase):
    """Where artifacts live, and which names are refused."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.cache = ArtifactCache(self.root, 10**6, threads=InlineThreads())

    def test_layout(self) -> None:
        """``<root>/<kind>/<first two hex digits>/<key><suffix>``."""
        key = _key("a")
        self.assertEqual(self.cache.path_for(key, "hls", ".m4s"), self.root / "hls" / key[:2] / f"{key}.m4s")
        self.assertEqual(self.cache.path_for(key, "waveform"), self.root / "waveform" / key[:2] / key)

    def test_bad_names_are_refused(self) -> None:
        """A kind, key or suffix that could leave the directory, or hide, is a ``ValueError``."""
        key = _key("a")
        for kind in ("", "..", ".tmp", "a/b", "Hls", "x" * 40, "hls\x00"):
            self.assertRaises(ValueError, self.cache.path_for, key, kind)
            self.assertRaises(ValueError, self.cache.get, key, kind)
        for bad in ("", "../../etc", "ABCDEF0123", "abc", key + "/x", "g" * 64):
            self.assertRaises(ValueError, self.cache.path_for, bad, "hls")
        for suffix in ("/x", "x", ".a/b", "..", ".m4s\x00", ".a.b.c.d"):
            self.assertRaises(ValueError, self.cache.path_for, key, "hls", suffix)
        self.assertRaises(ValueError, self.cache.temp_path, "../up")


class RoundTripTests(unittest.TestCase):
    """What is put can be got."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.events: list[str] = []
        self.cache = ArtifactCache(
            self.root, 10**6, clock=_Clock(), on_event=self.events.append, threads=InlineThreads()
        )

    def test_put_bytes_then_get(self) -> None:
        """``put_bytes`` stores the bytes; ``get`` returns the path, counted as a hit."""
        key = _key("a")
        path = self.cache.put_bytes(key, "waveform", b"peaks", ".dat")
        self.assertEqual(path, self.cache.path_for(key, "waveform", ".dat"))
        found = self.cache.get(key, "waveform", ".dat")
        self.assertEqual(found, path)
        assert found is not None
        self.assertEqual(found.read_bytes(), b"peaks")
        self.assertEqual((self.cache.hits, self.cache.misses, self.cache.bytes_written), (1, 0, 5))
        self.assertEqual((self.cache.total_bytes, len(self.cache)), (5, 1))
        self.assertEqual(self.events, ["hit"])

    def test_miss(self) -> None:
        """Another key, kind or suffix is a miss, counted."""
        key = _key("a")
        self.cache.put_bytes(key, "waveform", b"peaks", ".dat")
        self.assertIsNone(self.cache.get(_key("b"), "waveform", ".dat"))
        self.assertIsNone(self.cache.get(key, "spectrum", ".dat"))
        self.assertIsNone(self.cache.get(key, "waveform", ".json"))
        self.assertEqual((self.cache.hits, self.cache.misses), (0, 3))
        self.assertEqual(self.events, ["miss"] * 3)

    def test_writer(self) -> None:
        """``writer`` takes an artifact in pieces and commits it on a clean exit."""
        key = _key("a")
        with self.cache.writer(key, "transcode", ".mp3") as output:
            for _ in range(10):
                output.write(b"x" * 100_000)
        found = self.cache.get(key, "transcode", ".mp3")
        assert found is not None
        self.assertEqual(found.stat().st_size, 1_000_000)
        self.assertEqual(self.cache.total_bytes, 1_000_000)
        self.assertEqual(_temp_files(self.root), [])

    def test_writer_file_closed_by_caller(self) -> None:
        """A file the block closed itself (as some encoders do) is still committed whole."""
        key = _key("a")
        with self.cache.writer(key, "transcode", ".mp3") as output:
            output.write(b"x" * 1000)
            output.close()
        found = self.cache.get(key, "transcode", ".mp3")
        assert found is not None
        self.assertEqual(found.read_bytes(), b"x" * 1000)
        self.assertEqual(_temp_files(self.root), [])

    def test_replace(self) -> None:
        """Putting a key again replaces the file and its size in the total."""
        key = _key("a")
        self.cache.put_bytes(key, "waveform", b"12345")
        self.cache.put_bytes(key, "waveform", b"12")
        self.assertEqual((self.cache.total_bytes, len(self.cache), self.cache.bytes_written), (2, 1, 7))
        self.assertEqual(self.cache.path_for(key, "waveform").read_bytes(), b"12")

    def test_stats(self) -> None:
        """``stats`` reports counters, entries and bytes together."""
        self.cache.put_bytes(_key("a"), "waveform", b"123")
        self.cache.get(_key("a"), "waveform")
        self.cache.get(_key("b"), "waveform")
        stats = self.cache.stats
        self.assertEqual(
            (stats.hits, stats.misses, stats.evictions, stats.entries, stats.bytes, stats.bytes_written),
            (1, 1, 0, 1, 3, 3),
        )


class AtomicityTests(unittest.TestCase):
    """A crash mid-write never leaves a visible half artifact, and its debris is cleared."""

    def test_exception_inside_writer(self) -> None:
        """An exception in the block discards the temp file, leaves nothing visible and propagates."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        key = _key("a")
        with self.assertRaises(ZeroDivisionError):
            with cache.writer(key, "transcode", ".mp3") as output:
                output.write(b"half")
                self.assertFalse(cache.path_for(key, "transcode", ".mp3").exists())
                1 / 0  # noqa: B018
        self.assertIsNone(cache.get(key, "transcode", ".mp3"))
        self.assertEqual(_temp_files(root), [])
        self.assertEqual((cache.total_bytes, len(cache), cache.bytes_written), (0, 0, 0))

    def test_nothing_visible_until_commit(self) -> None:
        """While a writer is open the final name does not exist, even for another cache on the directory."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        other = ArtifactCache(root, 10**6, threads=InlineThreads())
        key = _key("a")
        with cache.writer(key, "hls", ".m4s") as output:
            output.write(b"x" * 1000)
            output.flush()
            self.assertIsNone(other.get(key, "hls", ".m4s"))
            self.assertEqual(len(_temp_files(root)), 1)
        self.assertIsNotNone(other.get(key, "hls", ".m4s"))

    def test_process_killed_mid_write(self) -> None:
        """
        A process that dies halfway through ``writer()`` leaves only a temp
        file, no artifact; the next cache opened on the directory removes it.
        """
        root = Path(self.mktemp())
        key = _key("a")
        script = (
            "import os, sys\n"
            "from pathlib import Path\n"
            "from streamsrv.cache.artifacts import ArtifactCache\n"
            "from streamsrv.threads import InlineThreads\n"
            "cache = ArtifactCache(Path(sys.argv[1]), 10**9, threads=InlineThreads())\n"
            "with cache.writer(sys.argv[2], 'transcode', '.mp3') as output:\n"
            "    output.write(b'\\xff' * 50_000)\n"
            "    output.flush()\n"
            "    os._exit(1)\n"
        )
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.run(
            [sys.executable, "-c", script, str(root), key], env=environment, capture_output=True, check=False
        )
        self.assertEqual(child.returncode, 1, child.stderr)
        leftovers = _temp_files(root)
        self.assertEqual(len(leftovers), 1)
        self.assertEqual(leftovers[0].stat().st_size, 50_000)
        self.assertEqual(_artifacts(root), [])

        cache = ArtifactCache(root, 10**9, threads=InlineThreads())
        self.assertEqual(_temp_files(root), [])
        self.assertIsNone(cache.get(key, "transcode", ".mp3"))
        self.assertEqual(cache.total_bytes, 0)

    def test_live_process_temp_files_are_kept(self) -> None:
        """A temp file of a live process (another cache may be writing it) survives a start."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        in_progress = cache.temp_path("transcode")
        in_progress.write_bytes(b"partial")
        ArtifactCache(root, 10**6, threads=InlineThreads())
        self.assertTrue(in_progress.exists())

    def test_stale_temp_files_are_removed(self) -> None:
        """A temp file older than the stale age goes at start even if its pid is alive (reused)."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        stale = cache.temp_path("transcode")
        stale.write_bytes(b"partial")
        old = stale.stat().st_mtime - STALE_TEMP_AFTER_S - 60
        os.utime(stale, (old, old))
        ArtifactCache(root, 10**6, threads=InlineThreads())
        self.assertFalse(stale.exists())

    def test_dead_process_temp_from_temp_path_is_removed(self) -> None:
        """A ``temp_path`` file named by a process that is gone is removed at start."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        dead_pid = int(child.stdout)
        ours = cache.temp_path("hls")
        orphan = ours.with_name(f"{TEMP_PREFIX}{dead_pid}-{'0' * 16}")
        orphan.write_bytes(b"partial")
        ArtifactCache(root, 10**6, threads=InlineThreads())
        self.assertFalse(orphan.exists())

    def test_foreign_files_are_never_touched(self) -> None:
        """Files the cache did not name are neither counted, evicted nor removed."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 10**6, threads=InlineThreads())
        key = _key("a")
        cache.put_bytes(key, "hls", b"x" * 10, ".m4s")
        shard = cache.path_for(key, "hls", ".m4s").parent
        foreign = [
            root / "README.txt",
            root / "hls" / "notes.txt",
            shard / "notes.txt",
            shard / ".tmp-notes",
            shard / (_key("b") + ".m4s"),  # an artifact name in the wrong shard
        ]
        for path in foreign:
            path.write_bytes(b"keep me")
        reopened = ArtifactCache(root, 0, threads=InlineThreads())
        self.assertEqual((reopened.total_bytes, len(reopened)), (0, 0))
        for path in foreign:
            self.assertTrue(path.exists(), path)
        self.assertFalse(cache.path_for(key, "hls", ".m4s").exists())


class EvictionTests(unittest.TestCase):
    """The least recently used go first, until the total fits."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.clock = _Clock()
        self.events: list[str] = []
        self.cache = ArtifactCache(
            self.root, 300, clock=self.clock, on_event=self.events.append, threads=InlineThreads()
        )

    def _put(self, name: str, size: int = 100) -> None:
        self.clock.now += 10
        self.cache.put_bytes(_key(name), "hls", b"x" * size, ".m4s")

    def _has(self, name: str) -> bool:
        return self.cache.path_for(_key(name), "hls", ".m4s").exists()

    def test_oldest_first(self) -> None:
        """Over the limit, the artifact used longest ago is deleted, and the total fits again."""
        for name in "abc":
            self._put(name)
        self.assertEqual(self.cache.evictions, 0)
        self._put("d")
        self.assertEqual([self._has(name) for name in "abcd"], [False, True, True, True])
        self.assertEqual(self.cache.total_bytes, 300)
        self.assertEqual(self.cache.evictions, 1)
        self.assertEqual(self.events, ["eviction"])

    def test_large_put_evicts_several(self) -> None:
        """One large artifact evicts as many old ones as it takes."""
        for name in "abc":
            self._put(name)
        self._put("big", 250)
        self.assertEqual([self._has(name) for name in ("a", "b", "c", "big")], [False, False, False, True])
        self.assertEqual(self.cache.total_bytes, 250)
        self.assertEqual(self.cache.evictions, 3)

    def test_hit_refreshes_recency(self) -> None:
        """A hit makes an artifact the most recent: the next eviction takes another."""
        for name in "abc":
            self._put(name)
        self.clock.now += 10
        self.assertIsNotNone(self.cache.get(_key("a"), "hls", ".m4s"))
        self._put("d")
        self.assertEqual([self._has(name) for name in "abcd"], [True, False, True, True])

    def test_hit_touches_mtime_at_most_once_a_minute(self) -> None:
        """A hit sets the mtime to now only when the last touch is a minute old."""
        self._put("a")
        path = self.cache.path_for(_key("a"), "hls", ".m4s")
        written = self.clock.now
        self.assertEqual(path.stat().st_mtime, written)
        self.clock.now = written + TOUCH_INTERVAL_S - 1
        self.cache.get(_key("a"), "hls", ".m4s")
        self.assertEqual(path.stat().st_mtime, written)
        self.clock.now = written + TOUCH_INTERVAL_S
        self.cache.get(_key("a"), "hls", ".m4s")
        self.assertEqual(path.stat().st_mtime, written + TOUCH_INTERVAL_S)
        self.clock.now += 1
        self.cache.get(_key("a"), "hls", ".m4s")
        self.assertEqual(path.stat().st_mtime, written + TOUCH_INTERVAL_S)

    def test_evict_on_demand_returns_bytes_freed(self) -> None:
        """``evict()`` frees nothing when within the limit, and reports the bytes it freed otherwise."""
        self._put("a")
        self.assertEqual(self.cache.evict(), 0)
        self._put("huge", 500)
        self.assertTrue(self._has("huge"))
        self.assertEqual(self.cache.evict(), 500)
        self.assertEqual((self.cache.total_bytes, len(self.cache)), (0, 0))

    def test_oversize_artifact_is_kept_until_the_next_eviction(self) -> None:
        """An artifact bigger than the limit evicts everything else; its path exists when the put returns."""
        for name in "ab":
            self._put(name)
        self._put("huge", 500)
        self.assertEqual([self._has(name) for name in ("a", "b", "huge")], [False, False, True])
        self._put("c")
        self.assertEqual([self._has(name) for name in ("huge", "c")], [False, True])
        self.assertEqual(self.cache.total_bytes, 100)

    def test_lower_limit_at_start(self) -> None:
        """A cache opened with a lower limit evicts the oldest at start."""
        for name in "abc":
            self._put(name)
        smaller = ArtifactCache(self.root, 150, clock=self.clock, threads=InlineThreads())
        self.assertEqual([self._has(name) for name in "abc"], [False, False, True])
        self.assertEqual(smaller.total_bytes, 100)


class RebuildTests(unittest.TestCase):
    """The index is rebuilt from the directory at start."""

    def test_index_rebuilt(self) -> None:
        """A new cache on the directory knows every artifact, its size and the total."""
        root = Path(self.mktemp())
        clock = _Clock()
        cache = ArtifactCache(root, 10**6, clock=clock, threads=InlineThreads())
        cache.put_bytes(_key("a"), "hls", b"x" * 10, ".m4s")
        cache.put_bytes(_key("b"), "waveform", b"x" * 20, ".dat")
        cache.put_bytes(_key("c"), "transcode", b"x" * 30)
        reopened = ArtifactCache(root, 10**6, clock=clock, threads=InlineThreads())
        self.assertEqual((reopened.total_bytes, len(reopened)), (60, 3))
        self.assertIsNotNone(reopened.get(_key("b"), "waveform", ".dat"))
        self.assertEqual(reopened.misses, 0)

    def test_recency_survives_a_restart(self) -> None:
        """Recency comes back from mtimes: the artifact hit before the restart outlives older ones."""
        root = Path(self.mktemp())
        clock = _Clock()
        cache = ArtifactCache(root, 10**6, clock=clock, threads=InlineThreads())
        for name in "abc":
            clock.now += 100
            cache.put_bytes(_key(name), "hls", b"x" * 100, ".m4s")
        clock.now += 100
        cache.get(_key("a"), "hls", ".m4s")
        reopened = ArtifactCache(root, 10**6, clock=clock, threads=InlineThreads())
        clock.now += 100
        reopened.put_bytes(_key("d"), "hls", b"x" * 100, ".m4s")
        smaller = ArtifactCache(root, 200, clock=clock, threads=InlineThreads())
        self.assertEqual(
            [smaller.get(_key(name), "hls", ".m4s") is not None for name in "abcd"],
            [True, False, False, True],
        )


class SharingTests(unittest.TestCase):
    """Several caches (processes) on one directory."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        self.clock = _Clock()
        self.first = ArtifactCache(root, 250, clock=self.clock, threads=InlineThreads())
        self.second = ArtifactCache(root, 250, clock=self.clock, threads=InlineThreads())

    def test_artifact_written_by_another_is_a_hit(self) -> None:
        """An artifact the other cache wrote is a hit, and joins this cache's index."""
        key = _key("a")
        self.first.put_bytes(key, "waveform", b"x" * 100)
        self.assertEqual(self.second.get(key, "waveform"), self.first.path_for(key, "waveform"))
        self.assertEqual(self.second.total_bytes, 100)

    def test_artifact_evicted_by_another_is_a_miss(self) -> None:
        """An artifact the other cache deleted is a miss, never an error, and leaves the index."""
        self.first.put_bytes(_key("a"), "waveform", b"x" * 100)
        self.assertIsNotNone(self.second.get(_key("a"), "waveform"))
        self.clock.now += 10
        self.first.put_bytes(_key("b"), "waveform", b"x" * 100)
        self.clock.now += 10
        self.first.put_bytes(_key("c"), "waveform", b"x" * 100)  # evicts "a"
        self.assertIsNone(self.second.get(_key("a"), "waveform"))
        self.assertEqual((self.second.total_bytes, self.second.misses), (0, 1))

    def test_evicting_what_another_already_deleted(self) -> None:
        """Evicting an artifact that is already gone frees nothing, raises nothing, and forgets it."""
        for name in "ab":
            self.clock.now += 10
            self.first.put_bytes(_key(name), "waveform", b"x" * 100)
            self.second.get(_key(name), "waveform")
        self.first.path_for(_key("a"), "waveform").unlink()
        self.clock.now += 10
        self.second.put_bytes(_key("c"), "waveform", b"x" * 100)
        self.assertEqual((self.second.total_bytes, self.second.evictions), (200, 0))
        self.assertTrue(self.second.path_for(_key("b"), "waveform").exists())

    def test_rescan_picks_up_the_others_work(self) -> None:
        """``rescan`` brings in the other cache's artifacts; ``evict`` then keeps the shared total."""
        for name in "abc":
            self.clock.now += 10
            self.first.put_bytes(_key(name), "waveform", b"x" * 50)
        self.clock.now += 10
        self.second.put_bytes(_key("d"), "waveform", b"x" * 150)
        self.second.rescan()
        self.assertEqual(self.second.total_bytes, 300)
        self.assertEqual(self.second.evict(), 50)
        self.assertFalse(self.second.path_for(_key("a"), "waveform").exists())
        self.assertIsNone(self.first.get(_key("a"), "waveform"))

    def test_threads_on_one_cache(self) -> None:
        """Threads putting and getting at once keep the index equal to the files on disk, within the limit."""
        root = Path(self.mktemp())
        cache = ArtifactCache(root, 2000, threads=InlineThreads())
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for round_ in range(40):
                    name = f"{(worker * 7 + round_) % 30}"
                    if cache.get(_key(name), "hls", ".m4s") is None:
                        cache.put_bytes(_key(name), "hls", b"x" * (100 + int(name)), ".m4s")
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        on_disk = sum(path.stat().st_size for path in _artifacts(root))
        self.assertEqual(cache.total_bytes, on_disk)
        self.assertLessEqual(on_disk, 2000)
        self.assertEqual(_temp_files(root), [])


class CommitFileTests(unittest.TestCase):
    """Adopting a file written elsewhere, e.g. by a worker process."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.cache = ArtifactCache(self.root, 10**6, threads=InlineThreads())

    def test_temp_path(self) -> None:
        """``temp_path`` gives distinct, not yet existing paths on the cache's file system."""
        first, second = self.cache.temp_path("transcode"), self.cache.temp_path("transcode")
        self.assertNotEqual(first, second)
        self.assertFalse(first.exists())
        self.assertTrue(first.is_relative_to(self.root))
        self.assertTrue(first.name.startswith(TEMP_PREFIX))
        self.assertEqual(os.stat(first.parent).st_dev, os.stat(self.root).st_dev)

    def test_commit_file(self) -> None:
        """A finished temp file is moved into place, counted, and found by ``get``."""
        temp = self.cache.temp_path("transcode")
        temp.write_bytes(b"encoded audio")
        key = _key("a")
        path = self.cache.commit_file(key, "transcode", temp, ".opus")
        self.assertFalse(temp.exists())
        self.assertEqual(self.cache.get(key, "transcode", ".opus"), path)
        self.assertEqual(path.read_bytes(), b"encoded audio")
        self.assertEqual((self.cache.total_bytes, self.cache.bytes_written), (13, 13))

    def test_commit_file_written_by_a_worker_process(self) -> None:
        """A file another process wrote at ``temp_path`` is adopted intact."""
        temp = self.cache.temp_path("transcode")
        subprocess.run(
            [sys.executable, "-c", "import sys; open(sys.argv[1], 'wb').write(b'y' * 4096)", str(temp)],
            check=True,
        )
        path = self.cache.commit_file(_key("a"), "transcode", temp, ".mp3")
        self.assertEqual(path.read_bytes(), b"y" * 4096)

    def test_commit_missing_file(self) -> None:
        """Committing a file that does not exist raises ``FileNotFoundError`` and changes nothing."""
        temp = self.cache.temp_path("transcode")
        self.assertRaises(FileNotFoundError, self.cache.commit_file, _key("a"), "transcode", temp)
        self.assertEqual((self.cache.total_bytes, len(self.cache), self.cache.bytes_written), (0, 0, 0))


class OpenTests(unittest.TestCase):
    """Opening a cache."""

    def test_creates_root(self) -> None:
        """The root is created, parents included."""
        root = Path(self.mktemp()) / "data" / "cache"
        ArtifactCache(root, 10, threads=InlineThreads())
        self.assertTrue(root.is_dir())

    def test_negative_limit(self) -> None:
        """A negative limit is a programming error."""
        self.assertRaises(ValueError, ArtifactCache, Path(self.mktemp()), -1, threads=InlineThreads())


class _RecordingThreads:
    """An IThreads that runs calls inline and remembers the names of the functions it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def defer(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.ran.append(getattr(f, "__name__", repr(f)))
        return InlineThreads().defer(f, *args, **kwargs)


class AsyncTests(unittest.TestCase):
    """The reactor-side methods hand every write, fsync, rename and whole-file read to ``threads``."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.threads = _RecordingThreads()
        self.cache = ArtifactCache(self.root, 10**6, threads=self.threads)

    def test_threads_attribute(self) -> None:
        """The cache exposes the threads it was given, an IThreads."""
        self.assertIs(self.cache.threads, self.threads)
        verifyObject(IThreads, InlineThreads())

    def test_store_bytes(self) -> None:
        """``store_bytes`` writes the artifact in ``threads`` and fires with its path."""
        key = _key("a")
        path = self.successResultOf(self.cache.store_bytes(key, "waveform", b"peaks", ".dat"))
        self.assertEqual(path, self.cache.path_for(key, "waveform", ".dat"))
        self.assertEqual(path.read_bytes(), b"peaks")
        self.assertEqual(self.threads.ran, ["put_bytes"])

    def test_read_bytes(self) -> None:
        """``read_bytes`` reads a found artifact whole in ``threads``."""
        key = _key("a")
        self.successResultOf(self.cache.store_bytes(key, "spectrum", b"{}", ".json"))
        found = self.cache.get(key, "spectrum", ".json")
        assert found is not None
        self.assertEqual(self.successResultOf(self.cache.read_bytes(found)), b"{}")
        self.assertEqual(self.threads.ran, ["put_bytes", "read_bytes"])

    def test_read_bytes_of_a_vanished_artifact(self) -> None:
        """An artifact evicted between ``get`` and the read fails the Deferred with FileNotFoundError."""
        key = _key("a")
        self.successResultOf(self.cache.store_bytes(key, "waveform", b"x"))
        found = self.cache.get(key, "waveform")
        assert found is not None
        found.unlink()
        self.failureResultOf(self.cache.read_bytes(found), FileNotFoundError)

    def test_commit(self) -> None:
        """``commit`` fsyncs and renames a finished temp file in ``threads``; fires with the path."""
        key = _key("a")
        temp = self.cache.temp_path("transcode")
        temp.write_bytes(b"aac")
        path = self.successResultOf(self.cache.commit(key, "transcode", temp, ".aac"))
        self.assertEqual(path.read_bytes(), b"aac")
        self.assertFalse(temp.exists())
        self.assertEqual(self.threads.ran, ["commit_file"])

    def test_commit_of_a_missing_file(self) -> None:
        """A missing temp file fails the Deferred with FileNotFoundError."""
        missing = self.root / "transcode" / f"{TEMP_PREFIX}1-0000000000000000"
        self.failureResultOf(self.cache.commit(_key("a"), "transcode", missing), FileNotFoundError)

"""The open-file cache: descriptors shared by leases, checked by ``lstat``, closed when no one holds them."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.media.openfiles import OpenFileCache
from tests.test_sockets import media_fds as open_fds_to


class OpenFileCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        if not os.path.isdir("/proc/self/fd"):
            raise unittest.SkipTest("needs /proc/self/fd to count descriptors")
        self.root = Path(self.mktemp()).resolve()
        self.root.mkdir()
        self.a = self.root / "a.flac"
        self.a.write_bytes(b"a" * 100)
        self.clock = Clock()
        self.cache = OpenFileCache(self.clock.seconds, max_entries=2, idle_s=10)

    def test_one_descriptor_for_many_leases(self) -> None:
        """Leases of one file share one descriptor; it stays kept after they close."""
        first = self.cache.lease(str(self.a))
        second = self.cache.lease(str(self.a))
        assert first is not None and second is not None
        self.assertEqual(first[0].fileno(), second[0].fileno())
        self.assertEqual(first[1].st_size, 100)
        self.assertEqual(os.pread(first[0].fileno(), 3, 97), b"aaa")
        first[0].close()
        first[0].close()  # at most once
        second[0].close()
        self.assertTrue(second[0].closed)
        self.assertRaises(ValueError, second[0].fileno)
        self.assertEqual(len(open_fds_to(self.root)), 1)
        self.cache.clear()
        self.assertEqual(open_fds_to(self.root), [])

    def test_replaced_file_is_opened_again(self) -> None:
        """A rename over the path, a chmod, a removal: the kept descriptor is not used again."""
        lease, _ = self.cache.lease(str(self.a))  # type: ignore[misc]
        old_fd = lease.fileno()
        (self.root / "tmp").write_bytes(b"b" * 50)
        (self.root / "tmp").rename(self.a)
        new, info = self.cache.lease(str(self.a))  # type: ignore[misc]
        self.assertEqual(info.st_size, 50)
        self.assertEqual(os.pread(new.fileno(), 1, 0), b"b")
        self.assertEqual(os.pread(old_fd, 1, 0), b"a")  # still the old file for the request holding it
        lease.close()
        self.a.chmod(0o400)
        again, _ = self.cache.lease(str(self.a))  # type: ignore[misc]
        self.assertNotEqual(again.fileno(), -1)
        new.close()
        again.close()
        self.assertEqual(len(open_fds_to(self.root)), 1)
        self.a.unlink()
        self.assertIsNone(self.cache.lease(str(self.a)))
        self.assertEqual(open_fds_to(self.root), [])

    def test_not_a_regular_file(self) -> None:
        """A directory, a symlink (last component) or a missing path is never opened."""
        (self.root / "dir").mkdir()
        (self.root / "link").symlink_to(self.a)
        for name in ("dir", "link", "missing"):
            self.assertIsNone(self.cache.lease(str(self.root / name)))
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(open_fds_to(self.root), [])

    def test_symlink_put_in_place(self) -> None:
        """A kept file replaced by a symlink to it is not served through the cache."""
        self.cache.lease(str(self.a))[0].close()  # type: ignore[index]
        real = self.root / "real.flac"
        self.a.rename(real)
        self.a.symlink_to(real)
        self.assertIsNone(self.cache.lease(str(self.a)))

    def test_least_recently_used_goes_first(self) -> None:
        """Past *max_entries* the least recently used is closed, unless a request still holds it."""
        b, c = self.root / "b.flac", self.root / "c.flac"
        b.write_bytes(b"b")
        c.write_bytes(b"c")
        held, _ = self.cache.lease(str(self.a))  # type: ignore[misc]
        self.cache.lease(str(b))[0].close()  # type: ignore[index]
        self.cache.lease(str(self.a))[0].close()  # type: ignore[index]  # a is now the most recent
        self.cache.lease(str(c))[0].close()  # type: ignore[index]  # b goes
        self.assertEqual(sorted(Path(p).name for p in open_fds_to(self.root)), ["a.flac", "c.flac"])
        self.cache.lease(str(b))[0].close()  # type: ignore[index]  # a goes from the cache...
        self.assertEqual(len(self.cache), 2)
        self.assertIn(str(self.a), open_fds_to(self.root))  # ...but its request still holds it
        self.assertEqual(os.pread(held.fileno(), 1, 0), b"a")
        held.close()
        self.assertNotIn(str(self.a), open_fds_to(self.root))

    def test_idle_descriptors_close_at_the_next_look_up(self) -> None:
        """A descriptor unused for *idle_s* is closed by the next look-up of any file."""
        b = self.root / "b.flac"
        b.write_bytes(b"b")
        self.cache.lease(str(self.a))[0].close()  # type: ignore[index]
        self.clock.advance(6)
        self.cache.lease(str(b))[0].close()  # type: ignore[index]
        self.clock.advance(6)
        self.cache.lease(str(b))[0].close()  # type: ignore[index]
        self.assertEqual([Path(p).name for p in open_fds_to(self.root)], ["b.flac"])

    def test_lost_lease_gives_its_share_back(self) -> None:
        """A lease dropped without ``close`` is released when collected."""
        self.cache.lease(str(self.a))
        self.cache.clear()
        self.assertEqual(open_fds_to(self.root), [])

    def test_a_dropped_cache_closes_its_descriptors(self) -> None:
        """A cache thrown away (a site no longer used) leaves nothing open."""
        self.cache.lease(str(self.a))[0].close()  # type: ignore[index]
        self.assertEqual(len(open_fds_to(self.root)), 1)
        del self.cache
        self.assertEqual(open_fds_to(self.root), [])

    def test_a_fifo_in_a_tracks_place(self) -> None:
        """A FIFO put where a kept track was is refused at once (``open`` would wait for a writer)."""
        self.cache.lease(str(self.a))[0].close()  # type: ignore[index]
        self.a.unlink()
        os.mkfifo(self.a)
        self.assertIsNone(self.cache.lease(str(self.a)))
        self.assertEqual(open_fds_to(self.root), [])

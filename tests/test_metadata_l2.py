"""Metadata shared between hosts through a real Redis (the catalog's second level)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from streamsrv.audio.catalog import Catalog
from streamsrv.audio.l2 import RedisMetadataL2
from streamsrv.audio.metadata import read_metadata
from streamsrv.redisconn import connect_redis
from tests.audiogen import write_tone
from tests.services import redis_url_or_skip


class CountingReader:
    """read_metadata, counting the files it really parses."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return read_metadata(*args, **kwargs)


class MetadataL2Tests(unittest.TestCase):
    """Two catalogs ("hosts") over one media volume and one Redis."""

    timeout = 60

    async def test_second_host_reads_nothing(self) -> None:
        """The second host's cold scan takes every record from Redis; a changed file is read again."""
        url = redis_url_or_skip(self)
        redis = connect_redis(url, reactor)
        self.addCleanup(redis.disconnect)
        prefix = f"streamsrv-test:{secrets.token_hex(6)}:md:"
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        for n in range(3):
            write_tone(root / f"{n}.flac", "flac", 0.5)

        async def scan(reader: CountingReader) -> tuple[Catalog, RedisMetadataL2]:
            l2 = RedisMetadataL2(redis, reactor, reader, prefix=prefix)
            catalog = Catalog(Path(self.mktemp()), root, reactor=reactor, reader=l2)
            await catalog.open()
            self.addCleanup(catalog.close)
            await catalog.scan()
            return catalog, l2

        first_reader = CountingReader()
        first, first_l2 = await scan(first_reader)
        self.assertEqual((first_reader.reads, first_l2.stats.misses), (3, 3))
        second_reader = CountingReader()
        second, second_l2 = await scan(second_reader)
        self.assertEqual((second_reader.reads, second_l2.stats.hits), (0, 3))
        for n in range(3):
            a = await first.get(f"{n}.flac")
            b = await second.get(f"{n}.flac")
            self.assertEqual(a.to_json(), b.to_json())
        write_tone(root / "1.flac", "flac", 0.75)  # a new version: a new key
        third_reader = CountingReader()
        await scan(third_reader)
        self.assertEqual(third_reader.reads, 1)
        keys = await redis.keys(prefix + "*")
        self.addCleanup(lambda: redis.delete(*keys) if keys else None)
        self.assertEqual(len(keys), 4)

    def test_on_the_reactor_thread_it_just_reads(self) -> None:
        """Called on the reactor thread (where it would wait on itself), it reads the file, no Redis."""
        reader = CountingReader()
        l2 = RedisMetadataL2(object(), reactor, reader)
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        write_tone(root / "a.flac", "flac", 0.2)
        metadata = l2(root, "a.flac", (root / "a.flac").stat())
        self.assertEqual((metadata.path, reader.reads), ("a.flac", 1))

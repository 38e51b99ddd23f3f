# -*- test-case-name: tests.test_metadata_l2 -*-
"""Metadata shared through Redis: the second level behind every host's catalog.

Each host scans the (shared) media volume into its own SQLite catalog; with
``STREAMSRV_REDIS_URL`` set, the metadata one host has read from a file is
stored in Redis under the file's identity (its ``/stream`` ETag: size,
modification time and inode, plus whether a folder image is beside it), so
the other hosts' scans take it from there instead of parsing the file again.
A changed file has another ETag, hence another key: nothing is ever stale,
and old keys expire.

The catalog reads metadata in its own threads; :class:`RedisMetadataL2`
wraps its reader and talks to Redis through the reactor with a short
timeout.  Redis being away or slow only means reading the file, as without
the second level.  It is never called on the reactor thread (where it would
wait on itself): there it reads the file directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python import threadable

from streamsrv.audio.catalog import Reader
from streamsrv.audio.metadata import TrackMetadata
from streamsrv.cache.lru import CacheStats
from streamsrv.media.identity import make_etag

__all__ = ["RedisMetadataL2"]

log = Logger()

#: Prefix of the keys.
KEY_PREFIX: Final = "streamsrv:md:"

#: How long an entry lives unless read again (a scan renews what it reads).
TTL_S: Final = 30 * 24 * 3600

#: How long one Redis command may take before the file is read instead.
TIMEOUT_S: Final = 1.0

#: Version of the stored JSON; bump to orphan older entries.
VERSION: Final = 1

_FIELDS: Final = {f.name for f in fields(TrackMetadata)}


class RedisMetadataL2:
    """
    A :class:`~streamsrv.audio.catalog.Reader` wrapper that consults Redis first.

    :param redis: The process's Redis connection (``RedisService.connection``).
    :param reactor: The reactor the connection runs on.
    :param inner: The reader used on a miss (:func:`~streamsrv.audio.metadata.read_metadata`).
    :param prefix: Of every key (tests use their own).
    """

    def __init__(self, redis: Any, reactor: Any, inner: Reader, *, prefix: str = KEY_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._reactor = reactor
        self._inner = inner
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0

    @property
    def stats(self) -> CacheStats:
        """Counters for ``/metrics`` (Redis holds the entries; none are counted here)."""
        with self._lock:
            return CacheStats(hits=self.hits, misses=self.misses, evictions=0, entries=0, bytes=0)

    def key(self, track: str, etag: str, folder_artwork: bool | None) -> str:
        """The Redis key of one file version's metadata."""
        material = json.dumps([VERSION, track, etag, folder_artwork]).encode("utf-8")
        return self._prefix + hashlib.sha256(material).hexdigest()

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        def command() -> Any:
            d = getattr(self._redis, name)(*args, **kwargs)
            return d.addTimeout(TIMEOUT_S, self._reactor)

        return threads.blockingCallFromThread(self._reactor, command)

    def __call__(
        self, root: Path, track: str, stat: os.stat_result, *, folder_artwork: bool | None = None
    ) -> TrackMetadata:
        """Metadata of *track*: from Redis when another host read this very file version, else read."""
        if (
            threadable.isInIOThread()
            or threading.current_thread() is threading.main_thread()
            or not getattr(self._reactor, "running", False)
        ):
            # The reactor's own thread (or no running reactor): waiting on it would never end.
            return self._inner(root, track, stat, folder_artwork=folder_artwork)
        metadata = self._inner_or_none(root, track, stat, folder_artwork)
        if metadata is not None:
            return metadata
        metadata = self._inner(root, track, stat, folder_artwork=folder_artwork)
        try:
            key = self.key(track, metadata.etag, folder_artwork)
            self._call("set", key, json.dumps(metadata.to_json(), separators=(",", ":")), expire=TTL_S)
        except Exception as e:
            self._failed(e)
        return metadata

    def _inner_or_none(
        self, root: Path, track: str, stat: os.stat_result, folder_artwork: bool | None
    ) -> TrackMetadata | None:
        """The stored metadata of this file version, or ``None`` (a miss, or Redis unavailable)."""
        etag = make_etag(stat.st_size, stat.st_mtime_ns, stat.st_ino)
        try:
            raw = self._call("get", self.key(track, etag, folder_artwork))
        except Exception as e:
            self._failed(e)
            return None
        if raw is not None:
            try:
                document = json.loads(raw)
                if isinstance(document, dict) and set(document) == _FIELDS and document["etag"] == etag:
                    with self._lock:
                        self.hits += 1
                    return TrackMetadata(**document)
            except (ValueError, TypeError):
                pass
        with self._lock:
            self.misses += 1
        return None

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self.errors += 1
            first = self.errors == 1
        if first:
            log.warn("metadata L2: Redis did not answer ({error}); reading files instead", error=repr(error))

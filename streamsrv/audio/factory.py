# -*- test-case-name: tests.test_tap -*-
"""Builds the audio parts of the daemon: the decode/encode pool and the catalog, and what others get of them.

:func:`make_pool` starts the process pool that decodes, encodes and
segments; :func:`make_catalog` opens the catalog in the data dir, with the
Redis second-level metadata cache when Redis is configured, and the service
that scans and watches the media root.  :class:`ReplayGainOf` is the lookup
transcodes use for ``replaygain=``; :class:`CatalogAnnouncements` publishes
the catalog's changes on the event hub.  This module must never read a
request and never run a job on the reactor thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.interfaces import IReactorFromThreads

from streamsrv.audio.catalog import CATALOG_FILENAME, Catalog, CatalogEvent
from streamsrv.audio.l2 import RedisMetadataL2
from streamsrv.audio.metadata import read_metadata
from streamsrv.audio.watcher import CatalogService
from streamsrv.audio.workers import WorkerPool
from streamsrv.config import Settings
from streamsrv.events.hub import SYSTEM_CHANNEL, track_channel
from streamsrv.health.checks import HealthChecks
from streamsrv.health.collectors import CacheCollector, WorkerPoolCollector

#: Modules every pool process imports once at start, not with its first job.
POOL_PRELOAD = ("streamsrv.audio.decode", "streamsrv.transcode.encode", "streamsrv.hls.segments")


def make_pool(
    reactor: Any, parent: IServiceCollection, *, size: int | None, checks: HealthChecks, metrics: Any
) -> WorkerPool:
    """The decode/encode process pool, a service of *parent*, with its check and metrics.

    :param size: processes (``None``: one per CPU this process may use).
    The processes start with the service on a reactor that runs threads; a
    test's memory reactor starts none until a job asks.
    """
    pool = WorkerPool(reactor, size=size, preload=POOL_PRELOAD, eager=IReactorFromThreads.providedBy(reactor))
    pool.setServiceParent(parent)
    checks.register("worker_pool", pool.check)
    metrics.registry.register(WorkerPoolCollector(pool))
    return pool


def make_catalog(
    settings: Settings,
    media_root: Path,
    reactor: Any,
    parent: IServiceCollection,
    redis: Any,
    checks: HealthChecks,
    metrics: Any,
    artifacts: Any,
) -> Catalog:
    """The catalog of *media_root* and its scanning service (a service of *parent*).

    :param reactor: provides ``callFromThread`` (the catalog's threads report back with it).
    :param redis: the process's Redis connection, or ``None``; with one,
        hosts sharing a media volume share what they read of it.
    :param artifacts: the artifact cache, counted with the metadata cache.
    """
    reader: Any = read_metadata
    if redis is not None:
        reader = RedisMetadataL2(redis, reactor, read_metadata)
    catalog = Catalog(settings.data_dir / CATALOG_FILENAME, media_root, reactor=reactor, reader=reader)
    CatalogService(catalog, clock=reactor).setServiceParent(parent)
    checks.register("catalog", catalog.check)
    metrics.registry.register(
        CacheCollector(
            {"metadata": lambda: catalog.metadata_cache_stats, "artifacts": lambda: artifacts.stats}
        )
    )
    return catalog


class ReplayGainOf:
    """A track's ReplayGain values from the catalog, for ``replaygain=`` on transcodes."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def __call__(self, track: str) -> Any:
        record = await self._catalog.get(track)
        return record.to_json().get("replaygain") if record is not None else None


class CatalogAnnouncements:
    """Publishes catalog changes on *hub*: ``system`` (admins) and, but for additions, the track's channel."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    def __call__(self, event: CatalogEvent) -> None:
        fields: dict[str, Any] = {"type": f"track.{event.kind}", "path": event.path}
        if event.record is not None:
            fields.update(event.record.to_json())
        self._hub.publish(SYSTEM_CHANNEL, fields)
        if event.kind != "added":
            self._hub.publish(track_channel(event.path), fields)

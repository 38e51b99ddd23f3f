"""Caches: an in-process LRU for small values (metadata) and an on-disk cache of derived files.

:class:`~streamsrv.cache.lru.LruCache` holds values in memory, bounded by
entries and bytes; :class:`~streamsrv.cache.artifacts.ArtifactCache` holds
waveforms, spectra, transcodes and HLS segments under
``<STREAMSRV_DATA_DIR>/cache``, bounded by ``STREAMSRV_CACHE_MAX_BYTES``. Both
are keyed on the identity of the source file, so a changed file misses instead
of being invalidated. See ``docs/modules/cache.md``.

Neither cache touches the reactor or runs a timer of its own: the owner of a
cache decides which thread calls it and when eviction or a rescan runs.
"""

from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.cache.lru import CacheStats, LruCache, estimate_size

__all__ = [
    "ArtifactCache",
    "CacheStats",
    "FileIdentity",
    "LruCache",
    "artifact_key",
    "estimate_size",
]

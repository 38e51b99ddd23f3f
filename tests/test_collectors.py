"""The Prometheus collectors that read plain counters at scrape time."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from twisted.trial import unittest

from streamsrv.cache.lru import CacheStats
from streamsrv.health.collectors import AnalyticsCollector, CacheCollector, EventHubCollector


class CollectorTests(unittest.SynchronousTestCase):
    """Each collector renders its part's current numbers, under stable names."""

    def render(self, collector: object) -> str:
        registry = CollectorRegistry()
        registry.register(collector)  # type: ignore[arg-type]
        return generate_latest(registry).decode()

    def test_caches(self) -> None:
        """Hits, misses, evictions, entries and bytes per cache, read at each scrape."""
        stats = {"n": CacheStats(hits=3, misses=1, evictions=0, entries=2, bytes=100)}
        text = self.render(CacheCollector({"metadata": lambda: stats["n"]}))
        self.assertIn('streamsrv_cache_hits_total{cache="metadata"} 3.0', text)
        self.assertIn('streamsrv_cache_bytes{cache="metadata"} 100.0', text)
        stats["n"] = CacheStats(hits=4, misses=1, evictions=1, entries=1, bytes=50)
        self.assertIn('streamsrv_cache_evictions_total{cache="metadata"} 1.0', self.render(
            CacheCollector({"metadata": lambda: stats["n"]})))  # fmt: skip

    def test_hub_and_analytics(self) -> None:
        """The hub's link state and counters; the store's counters with the buffer as a gauge."""
        hub = self.render(EventHubCollector(lambda: SimpleNamespace(published=2, delivered=5), lambda: False))
        self.assertIn("streamsrv_events_redis_connected 0.0", hub)
        self.assertIn("streamsrv_events_published_total 2.0", hub)
        store = self.render(
            AnalyticsCollector(lambda: SimpleNamespace(events_written=7, flush_failures=0, buffer_size=3))
        )
        self.assertIn("streamsrv_analytics_events_written_total 7.0", store)
        self.assertIn("streamsrv_analytics_buffer_size 3.0", store)

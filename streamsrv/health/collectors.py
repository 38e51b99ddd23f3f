# -*- test-case-name: tests.test_collectors -*-
"""Prometheus collectors for parts that keep plain counters.

The WebSocket factory, the event hub and the analytics store count what they
do in plain attributes (no prometheus-client in their hot paths, and nothing
global); these collectors read them at scrape time.  Each takes a callable
returning the current numbers, so it never holds a part alive or reaches into
it beyond that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "AnalyticsCollector",
    "CacheCollector",
    "EventHubCollector",
    "WebSocketCollector",
    "WorkerPoolCollector",
]


def _counters(obj: Any) -> Mapping[str, Any]:
    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else dict(vars(obj))


class WebSocketCollector(Collector):
    """``streamsrv_ws_*``: open sockets, and counters of a :class:`~streamsrv.ws.limits.WsStats`."""

    def __init__(self, stats: Callable[[], Any], open_sockets: Callable[[], int]) -> None:
        self._stats = stats
        self._open = open_sockets

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "streamsrv_ws_connections_open", "WebSocket connections open", value=self._open()
        )
        stats = self._stats()
        for name, help_text, attribute in (
            ("streamsrv_ws_connections", "WebSocket connections accepted", "connections"),
            ("streamsrv_ws_authenticated", "WebSocket authentications that succeeded", "authenticated"),
            ("streamsrv_ws_auth_failures", "WebSocket authentications refused", "auth_failures"),
            ("streamsrv_ws_messages_received", "WebSocket messages from clients", "messages_in"),
            ("streamsrv_ws_frames_sent", "WebSocket frames sent", "frames_out"),
            ("streamsrv_ws_events_sent", "Events delivered to sockets", "events_sent"),
            ("streamsrv_ws_events_dropped", "Events dropped for slow consumers", "events_dropped"),
            ("streamsrv_ws_rate_limited", "Client messages refused by the rate limit", "rate_limited"),
            ("streamsrv_ws_playback_reports", "Playback reports received", "playback_reports"),
        ):
            yield CounterMetricFamily(name, help_text, value=getattr(stats, attribute))
        closes = CounterMetricFamily("streamsrv_ws_closes", "WebSocket closes by code", labels=["code"])
        for code, count in sorted(stats.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes


class EventHubCollector(Collector):
    """``streamsrv_events_*``: a hub's :class:`~streamsrv.events.hub.HubStats` and its Redis link."""

    def __init__(self, stats: Callable[[], Any], connected: Callable[[], bool]) -> None:
        self._stats = stats
        self._connected = connected

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "streamsrv_events_redis_connected",
            "1 when the event hub reaches Redis (or needs none), else 0",
            value=1 if self._connected() else 0,
        )
        for name, value in _counters(self._stats()).items():
            yield CounterMetricFamily(
                f"streamsrv_events_{name}", f"Event hub: {name.replace('_', ' ')}", value=value
            )


class AnalyticsCollector(Collector):
    """``streamsrv_analytics_*``: a store's :class:`~streamsrv.analytics.store.StoreCounters`."""

    def __init__(self, counters: Callable[[], Any]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Any]:
        counters = _counters(self._counters())
        for name, value in counters.items():
            if name == "buffer_size":
                yield GaugeMetricFamily(
                    "streamsrv_analytics_buffer_size", "Analytics records waiting to be written", value=value
                )
            else:
                yield CounterMetricFamily(
                    f"streamsrv_analytics_{name}", f"Analytics store: {name.replace('_', ' ')}", value=value
                )


class CacheCollector(Collector):
    """``streamsrv_cache_*{cache}``: hits, misses, evictions, entries and bytes of each named cache.

    :param caches: cache name → a callable returning its
        :class:`~streamsrv.cache.lru.CacheStats`.
    """

    def __init__(self, caches: Mapping[str, Callable[[], Any]]) -> None:
        self._caches = dict(caches)

    def collect(self) -> Iterator[Any]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "hits": CounterMetricFamily("streamsrv_cache_hits", "Cache lookups that hit", labels=["cache"]),
            "misses": CounterMetricFamily(
                "streamsrv_cache_misses", "Cache lookups that missed", labels=["cache"]
            ),
            "evictions": CounterMetricFamily(
                "streamsrv_cache_evictions", "Entries dropped to respect a bound", labels=["cache"]
            ),
            "entries": GaugeMetricFamily("streamsrv_cache_entries", "Entries held", labels=["cache"]),
            "bytes": GaugeMetricFamily("streamsrv_cache_bytes", "Bytes held", labels=["cache"]),
        }
        for name, stats in self._caches.items():
            snapshot = stats()
            for field, family in families.items():
                family.add_metric([name], getattr(snapshot, field))
        yield from families.values()


class WorkerPoolCollector(Collector):
    """``streamsrv_workers_*``: the decode/encode pool's size, running and queued jobs, and its counters."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Any]:
        pool = self._pool
        yield GaugeMetricFamily("streamsrv_workers_size", "Worker processes", value=pool.size)
        yield GaugeMetricFamily(
            "streamsrv_workers_running", "Jobs running (transcodes, decodes)", value=pool.running
        )
        yield GaugeMetricFamily("streamsrv_workers_queued", "Jobs waiting for a worker", value=pool.queued)
        yield CounterMetricFamily("streamsrv_workers_completed", "Jobs finished", value=pool.completed)
        yield CounterMetricFamily(
            "streamsrv_workers_coalesced", "Requests that joined an identical job", value=pool.coalesced
        )
        yield CounterMetricFamily(
            "streamsrv_workers_crashes", "Worker processes that died", value=pool.crashes
        )

# -*- test-case-name: tests.test_health -*-
"""Prometheus metrics of one streamsrv process.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (not the global
one), so a test can build as many sites as it likes and read exact values.
Route labels are a small fixed set (``stream``, ``health``, ``api``…), never
raw paths, so label cardinality stays bounded whatever clients request.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streamsrv import __version__

#: Request-duration buckets in seconds, from cache hits to long downloads.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: Route labels; anything else is counted as "other".
ROUTES = frozenset({"stream", "hls", "health", "metrics", "api", "openapi", "ws", "other"})


class Metrics:
    """The metric families of one process, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        """
        :param registry: where to register; a fresh one by default.
        :param process: also collect process, platform and GC metrics.
        """
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        Info("streamsrv_build", "streamsrv version", registry=r).info({"version": __version__})
        self.requests = Counter(
            "streamsrv_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "streamsrv_http_request_duration_seconds",
            "Time from request to last byte or abort",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.response_bytes = Counter(
            "streamsrv_http_response_bytes",
            "Body bytes sent, by route",
            ["route"],
            registry=r,
        )
        self.errors = Counter(
            "streamsrv_http_errors",
            "Error responses by contract error code",
            ["code"],
            registry=r,
        )
        self.streams_active = Gauge(
            "streamsrv_streams_active",
            "Response bodies being streamed right now",
            registry=r,
        )
        self.stream_bytes = Counter(
            "streamsrv_stream_bytes_sent",
            "Media bytes sent by /stream, by sender",
            ["sender"],
            registry=r,
        )
        self.range_requests = Counter(
            "streamsrv_range_requests",
            "Range requests by outcome (single, multi, unsatisfiable, ignored, if_range_mismatch)",
            ["kind"],
            registry=r,
        )
        self.aborted = Counter(
            "streamsrv_streams_aborted",
            "Streams whose client left before the last byte",
            registry=r,
        )
        self.security_events = Counter(
            "streamsrv_security_events",
            "Security events by kind",
            ["kind"],
            registry=r,
        )
        self.ratelimit_backend = Enum(
            "streamsrv_ratelimit_backend",
            "Where rate-limit buckets live now: redis, or local while Redis is unreachable",
            states=["local", "redis"],
            registry=r,
        )
        self.file_access = Counter(
            "streamsrv_file_access",
            "Audited media accesses by outcome (complete, partial, aborted, refused)",
            ["outcome"],
            registry=r,
        )

    def observe_request(self, *, route: str, method: str, status: int, duration_s: float, sent: int) -> None:
        """Record one finished (or aborted) request."""
        route = route if route in ROUTES else "other"
        self.requests.labels(route, method if method in _METHODS else "OTHER", str(status)).inc()
        self.request_duration.labels(route).observe(duration_s)
        if sent:
            self.response_bytes.labels(route).inc(sent)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

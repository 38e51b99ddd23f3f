# -*- test-case-name: tests.test_health -*-
"""Prometheus metrics of one streamsrv process.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (not the global
one), so a test can build as many sites as it likes and read exact values.
Route labels are a small fixed set (``stream``, ``health``, ``api``…), never
raw paths, so label cardinality stays bounded whatever clients request.

The labelled families remember the child of each label tuple they have handed
out, so the per-request ``labels(...)`` of the hot path is one dict lookup
instead of prometheus-client's locked validation and conversion.
"""

from __future__ import annotations

import bisect
from typing import Any

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

#: Children remembered per family by their exact label values (beyond this,
#: ``labels()`` takes prometheus-client's own path every time).
LABEL_CACHE_SIZE = 1024


class _RememberedLabels:
    """Mixin: ``labels(*values)`` answered from a dict of the children already made.

    prometheus-client returns the same child for the same values anyway (it
    keeps them in ``_metrics``); this skips its lock, validation and ``str()``
    conversions on repeat.  :meth:`remove`, :meth:`remove_by_labels` and
    :meth:`clear` forget the remembered children too.
    """

    #: The children handed out so far, by label values; made on the first
    #: ``labels()`` call (prometheus-client's ``__init__`` is not ours to extend).
    _remembered: dict[tuple[Any, ...], Any]

    def labels(self, *values: Any, **kwargs: Any) -> Any:
        if kwargs:
            return super().labels(*values, **kwargs)  # type: ignore[misc]
        try:
            remembered = self._remembered
        except AttributeError:
            remembered = self._remembered = {}
        child = remembered.get(values)
        if child is None:
            child = super().labels(*values)  # type: ignore[misc]
            if len(remembered) < LABEL_CACHE_SIZE:
                remembered[values] = child
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.pop("_remembered", None)
        super().remove(*values)  # type: ignore[misc]

    def remove_by_labels(self, labels: dict[str, str]) -> None:
        self.__dict__.pop("_remembered", None)
        super().remove_by_labels(labels)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.pop("_remembered", None)
        super().clear()  # type: ignore[misc]


class _Counter(_RememberedLabels, Counter):
    """A Counter whose ``labels()`` remembers its children."""


class _Histogram(_RememberedLabels, Histogram):
    """A Histogram whose ``labels()`` remembers its children."""


#: Route labels; anything else is counted as "other".
ROUTES = frozenset({"stream", "hls", "health", "metrics", "api", "openapi", "ws", "other"})


class _PendingCounts:
    """Counter increments of the request path, summed in plain numbers until collected.

    ``add`` is a dict update: no lock, no prometheus child call per request.
    Registered as the registry's first collector, so every scrape (and
    :meth:`Metrics.render`) adds what is pending to the children before any
    family is read; it yields no metrics itself.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        #: Histogram child -> [sum of the values, count per bucket...], as ``observe`` would add them.
        self.observed: dict[Any, list[float]] = {}

    def add(self, family: Any, values: tuple[str, ...], amount: float = 1.0) -> None:
        counts = self.counts
        key = (family, values)
        counts[key] = counts.get(key, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)`` (a histogram's child), summed until the next flush."""
        pending = self.observed.get(child)
        if pending is None:
            pending = self.observed[child] = [0.0] * (len(child._upper_bounds) + 1)
        pending[0] += value
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        pending[bisect.bisect_left(child._upper_bounds, value) + 1] += 1

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for (family, values), amount in counts.items():
            family.labels(*values).inc(amount)
        observed, self.observed = self.observed, {}
        for child, (total, *buckets) in observed.items():
            child._sum.inc(total)
            for bucket, count in zip(child._buckets, buckets, strict=False):
                if count:
                    bucket.inc(count)

    def collect(self) -> list[Any]:
        self.flush()
        return []

    def describe(self) -> list[Any]:
        return []


class Metrics:
    """The metric families of one process, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        """
        :param registry: where to register; a fresh one by default.
        :param process: also collect process, platform and GC metrics.
        """
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        r = self.registry
        #: Counts of the request path (:meth:`count`), added to their families at each scrape.
        self.pending = _PendingCounts()
        r.register(self.pending)
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        Info("streamsrv_build", "streamsrv version", registry=r).info({"version": __version__})
        self.requests = _Counter(
            "streamsrv_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = _Histogram(
            "streamsrv_http_request_duration_seconds",
            "Time from request to last byte or abort",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.response_bytes = _Counter(
            "streamsrv_http_response_bytes",
            "Body bytes sent, by route",
            ["route"],
            registry=r,
        )
        self.errors = _Counter(
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
        self.stream_bytes = _Counter(
            "streamsrv_stream_bytes_sent",
            "Media bytes sent by /stream, by sender",
            ["sender"],
            registry=r,
        )
        self.range_requests = _Counter(
            "streamsrv_range_requests",
            "Range requests by outcome (single, multi, unsatisfiable, ignored, if_range_mismatch)",
            ["kind"],
            registry=r,
        )
        self.aborted = _Counter(
            "streamsrv_streams_aborted",
            "Streams whose client left before the last byte",
            registry=r,
        )
        self.security_events = _Counter(
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
        self.file_access = _Counter(
            "streamsrv_file_access",
            "Audited media accesses by outcome (complete, partial, aborted, refused)",
            ["outcome"],
            registry=r,
        )

    def observe_request(self, *, route: str, method: str, status: int, duration_s: float, sent: int) -> None:
        """Record one finished (or aborted) request."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._bind_request(route, method, status)
        requests, duration, sent_bytes = children
        pending = self.pending
        add = pending.add
        add(self.requests, requests)
        pending.observe(duration, duration_s)
        if sent:
            add(self.response_bytes, sent_bytes, sent)

    def _bind_request(self, route: str, method: str, status: int) -> tuple[Any, Any, Any]:
        """The children :meth:`observe_request` updates for these labels, bound once."""
        label = route if route in ROUTES else "other"
        children = (
            (label, method if method in _METHODS else "OTHER", str(status)),
            self.request_duration.labels(label),
            (label,),
        )
        if len(self._request_children) < LABEL_CACHE_SIZE:
            self._request_children[(route, method, status)] = children
        return children

    def count(self, family: Any, *values: str, amount: float = 1.0) -> None:
        """``family.labels(*values).inc(amount)``, added at the next scrape (see :class:`_PendingCounts`)."""
        self.pending.add(family, values, amount)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        self.pending.flush()
        return generate_latest(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

# -*- test-case-name: tests.test_alerts_measures -*-
"""The measures alert rules watch, as pure functions over snapshots of the daemon's metrics.

A :class:`MetricsSnapshot` is what the daemon's Prometheus registry held at
one instant (the samples of the families the measures read), plus a few
values the registry does not carry (reactor lag, free disk space), read from
*probes*.  Each :class:`Measure` turns the previous snapshot and the current
one into a number, or ``None`` when there is nothing to measure yet: gauges
read the current snapshot, ratios are the deltas of counters between the two
(no traffic in between is a ratio of 0, never a division by zero).  Tests
build snapshots by hand.  Measures never touch the reactor, a request or
the disk; :func:`take_snapshot` only reads a registry and calls the probes it
is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from twisted.logger import Logger

__all__ = [
    "MEASURES",
    "PROBE_DISK_FREE",
    "PROBE_REACTOR_LAG",
    "Measure",
    "MetricsSnapshot",
    "take_snapshot",
]

#: Probe names: the reactor's lag in seconds, and the data dir's disk free fraction.
PROBE_REACTOR_LAG: Final = "reactor_lag_seconds"
PROBE_DISK_FREE: Final = "disk_free_ratio"

#: The routes whose answers count as streams (``route`` label of ``streamsrv_http_requests``).
STREAM_ROUTES: Final = frozenset({"stream", "hls"})

_REQUESTS: Final = "streamsrv_http_requests_total"
_STREAMS_ACTIVE: Final = "streamsrv_streams_active"
_WORKERS_QUEUED: Final = "streamsrv_workers_queued"
_REDIS_CONNECTED: Final = "streamsrv_events_redis_connected"
_ANALYTICS_BUFFER: Final = "streamsrv_analytics_buffer_size"
_WS_SENT: Final = "streamsrv_ws_events_sent_total"
_WS_DROPPED: Final = "streamsrv_ws_events_dropped_total"

#: The sample names a snapshot keeps (everything else in the registry is skipped).
SAMPLE_NAMES: Final = frozenset(
    {_REQUESTS, _STREAMS_ACTIVE, _WORKERS_QUEUED, _REDIS_CONNECTED, _ANALYTICS_BUFFER, _WS_SENT, _WS_DROPPED}
)

log = Logger()

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricsSnapshot:
    """
    The metrics at one instant.

    :ivar at: When it was taken (clock seconds).
    :ivar samples: Sample name → ``(labels, value)`` of each series; labels
        are sorted ``(name, value)`` pairs.
    :ivar probes: Probe name → value (a probe that failed is absent).
    """

    at: float
    samples: Mapping[str, tuple[tuple[Labels, float], ...]] = field(default_factory=dict)
    probes: Mapping[str, float] = field(default_factory=dict)

    def total(self, name: str, where: Callable[[Mapping[str, str]], bool] | None = None) -> float | None:
        """
        The sum of the series called *name* (those *where* accepts), or
        ``None`` when there is no such series at all.
        """
        series = self.samples.get(name)
        if series is None:
            return None
        return sum(value for labels, value in series if where is None or where(dict(labels)))

    @classmethod
    def of(
        cls, at: float, samples: Mapping[str, Iterable[tuple[Mapping[str, str], float]]], **probes: float
    ) -> MetricsSnapshot:
        """A snapshot from plain dicts of labels (for tests and tools)."""
        return cls(
            at,
            {
                name: tuple((tuple(sorted(labels.items())), float(value)) for labels, value in series)
                for name, series in samples.items()
            },
            dict(probes),
        )


def take_snapshot(
    registry: Any, at: float, probes: Mapping[str, Callable[[], float]] | None = None
) -> MetricsSnapshot:
    """
    The samples of *registry* that measures read, and the probes' values.

    A probe that raises is left out (its measure has no data this time).

    :param registry: A prometheus-client ``CollectorRegistry``.
    :param at: The time to stamp it with.
    """
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in SAMPLE_NAMES:
                samples.setdefault(sample.name, []).append(
                    (tuple(sorted(sample.labels.items())), sample.value)
                )
    values: dict[str, float] = {}
    for name, probe in (probes or {}).items():
        try:
            values[name] = float(probe())
        except Exception:
            log.failure("alert probe {probe} failed; its measure has no data", probe=name)
    return MetricsSnapshot(at, {name: tuple(series) for name, series in samples.items()}, values)


Compute = Callable[["MetricsSnapshot | None", MetricsSnapshot], "float | None"]


@dataclass(frozen=True)
class Measure:
    """
    One measure: its name, unit, definition and how it is computed.

    :ivar compute: ``(previous, current) -> value``; *previous* is ``None``
        at the first evaluation.  ``None``: no data.
    """

    name: str
    unit: str
    description: str
    compute: Compute


def _delta(
    previous: MetricsSnapshot | None, current: MetricsSnapshot, name: str, where: Any = None
) -> float | None:
    """The growth of a counter between two snapshots; ``None`` without both, or after a reset."""
    if previous is None:
        return None
    now, before = current.total(name, where), previous.total(name, where)
    if now is None:
        return None
    delta = now - (before or 0.0)
    return delta if delta >= 0 else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None:
        return None
    return part / whole if whole > 0 else 0.0


def _is_5xx(labels: Mapping[str, str]) -> bool:
    return labels.get("status", "").startswith("5")


def _stream(labels: Mapping[str, str]) -> bool:
    return labels.get("route") in STREAM_ROUTES


def _stream_5xx(labels: Mapping[str, str]) -> bool:
    return _stream(labels) and _is_5xx(labels)


def http_5xx_ratio(previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
    """Requests answered 5xx over all requests, since the previous snapshot."""
    return _ratio(_delta(previous, current, _REQUESTS, _is_5xx), _delta(previous, current, _REQUESTS))


def stream_errors_ratio(previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
    """``/stream`` and ``/hls`` requests answered 5xx over all of theirs, since the previous snapshot."""
    return _ratio(
        _delta(previous, current, _REQUESTS, _stream_5xx), _delta(previous, current, _REQUESTS, _stream)
    )


def ws_dropped_ratio(previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
    """WebSocket events dropped for slow consumers over events sent or dropped, since the last snapshot."""
    dropped = _delta(previous, current, _WS_DROPPED)
    sent = _delta(previous, current, _WS_SENT)
    return _ratio(dropped, None if dropped is None or sent is None else dropped + sent)


def _gauge(name: str) -> Compute:
    return lambda previous, current: current.total(name)


def _probe(name: str, scale: float = 1.0) -> Compute:
    def compute(previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
        value = current.probes.get(name)
        return None if value is None else value * scale

    return compute


#: Every measure a rule may name, by name.
MEASURES: Final[Mapping[str, Measure]] = MappingProxyType(
    {
        m.name: m
        for m in (
            Measure(
                "http_5xx_ratio",
                "ratio 0-1",
                "HTTP requests answered 5xx over all requests, between two evaluations",
                http_5xx_ratio,
            ),
            Measure(
                "stream_errors_ratio",
                "ratio 0-1",
                "/stream and /hls requests answered 5xx over all of theirs, between two evaluations",
                stream_errors_ratio,
            ),
            Measure(
                "reactor_lag_ms",
                "milliseconds",
                "the worst lateness of the reactor's timers over the last minute",
                _probe(PROBE_REACTOR_LAG, 1000.0),
            ),
            Measure(
                "disk_free_ratio",
                "ratio 0-1",
                "free space over total size of the disk holding the data dir",
                _probe(PROBE_DISK_FREE),
            ),
            Measure(
                "decode_queue",
                "jobs",
                "decode/encode jobs waiting for a worker process (streamsrv_workers_queued)",
                _gauge(_WORKERS_QUEUED),
            ),
            Measure(
                "redis_up",
                "1 or 0",
                "1 when the event hub reaches Redis, or when no Redis is configured; else 0",
                _gauge(_REDIS_CONNECTED),
            ),
            Measure(
                "analytics_backlog",
                "records",
                "analytics records waiting to be written (streamsrv_analytics_buffer_size)",
                _gauge(_ANALYTICS_BUFFER),
            ),
            Measure(
                "active_streams",
                "streams",
                "response bodies being streamed right now (streamsrv_streams_active)",
                _gauge(_STREAMS_ACTIVE),
            ),
            Measure(
                "ws_dropped_ratio",
                "ratio 0-1",
                "WebSocket events dropped for slow consumers over those sent or dropped, between evaluations",
                ws_dropped_ratio,
            ),
        )
    }
)

"""Tests for :mod:`streamsrv.alerts.measures`: measures over handmade and real snapshots."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial import unittest

from streamsrv.alerts.measures import (
    MEASURES,
    PROBE_DISK_FREE,
    PROBE_REACTOR_LAG,
    MetricsSnapshot,
    take_snapshot,
)
from streamsrv.health.collectors import (
    AnalyticsCollector,
    EventHubCollector,
    WebSocketCollector,
    WorkerPoolCollector,
)
from streamsrv.health.metrics import Metrics

_REQ = "streamsrv_http_requests_total"


def _requests(at: float, **counts: float) -> MetricsSnapshot:
    """``route_status=count`` keyword arguments as request counters."""
    series = []
    for key, count in counts.items():
        route, status = key.split("_")
        series.append(({"route": route, "method": "GET", "status": status}, count))
    return MetricsSnapshot.of(at, {_REQ: series})


def _value(name: str, previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
    return MEASURES[name].compute(previous, current)


class RatioMeasureTests(unittest.TestCase):
    """Ratios from counter deltas between two snapshots."""

    def test_http_5xx_ratio(self) -> None:
        """5xx growth over all growth, between the two snapshots only."""
        before = _requests(0, api_200=100, api_500=50)
        after = _requests(15, api_200=130, api_500=60, stream_503=0)
        self.assertAlmostEqual(_value("http_5xx_ratio", before, after), 10 / 40)

    def test_no_traffic_is_zero(self) -> None:
        """No request between the snapshots: a ratio of 0, not a division by zero."""
        snap = _requests(0, api_200=10, api_500=10)
        self.assertEqual(_value("http_5xx_ratio", snap, _requests(15, api_200=10, api_500=10)), 0.0)
        self.assertEqual(
            _value(
                "ws_dropped_ratio",
                MetricsSnapshot(0),
                MetricsSnapshot.of(
                    15,
                    {
                        "streamsrv_ws_events_sent_total": [({}, 0)],
                        "streamsrv_ws_events_dropped_total": [({}, 0)],
                    },
                ),
            ),
            0.0,
        )

    def test_first_evaluation_has_no_data(self) -> None:
        """Without a previous snapshot a ratio is ``None`` (no data)."""
        self.assertIsNone(_value("http_5xx_ratio", None, _requests(0, api_200=1)))

    def test_series_appearing_count_from_zero(self) -> None:
        """A label set that appears between snapshots counts all of its value."""
        before = _requests(0, stream_200=10)
        after = _requests(15, stream_200=10, stream_500=5, hls_200=5)
        self.assertAlmostEqual(_value("stream_errors_ratio", before, after), 0.5)

    def test_stream_errors_only_stream_routes(self) -> None:
        """``stream_errors_ratio`` ignores API answers."""
        before = _requests(0, stream_200=0, api_500=0)
        after = _requests(15, stream_200=9, hls_502=1, api_500=100)
        self.assertAlmostEqual(_value("stream_errors_ratio", before, after), 0.1)

    def test_counter_reset_is_no_data(self) -> None:
        """A counter that went down (a reset) gives no data rather than a negative ratio."""
        self.assertIsNone(_value("http_5xx_ratio", _requests(0, api_500=10), _requests(15, api_500=2)))

    def test_ws_dropped_ratio(self) -> None:
        """Dropped over sent plus dropped."""

        def snap(at: float, sent: float, dropped: float) -> MetricsSnapshot:
            return MetricsSnapshot.of(
                at,
                {
                    "streamsrv_ws_events_sent_total": [({}, sent)],
                    "streamsrv_ws_events_dropped_total": [({}, dropped)],
                },
            )

        self.assertAlmostEqual(_value("ws_dropped_ratio", snap(0, 100, 0), snap(15, 190, 10)), 0.1)


class GaugeMeasureTests(unittest.TestCase):
    """Gauges and probes read the current snapshot."""

    def test_probes(self) -> None:
        """Reactor lag is the probe's seconds in milliseconds; disk free the probe's ratio."""
        snap = MetricsSnapshot(0, {}, {PROBE_REACTOR_LAG: 0.25, PROBE_DISK_FREE: 0.4})
        self.assertEqual(_value("reactor_lag_ms", None, snap), 250.0)
        self.assertEqual(_value("disk_free_ratio", None, snap), 0.4)
        self.assertIsNone(_value("disk_free_ratio", None, MetricsSnapshot(0)))

    def test_missing_gauge_is_no_data(self) -> None:
        """A gauge absent from the registry is no data."""
        self.assertIsNone(_value("decode_queue", None, MetricsSnapshot(0)))

    def test_gauges_from_a_real_registry(self) -> None:
        """Each gauge measure reads the metric the daemon's collectors export, summed over labels."""
        metrics = Metrics(process=False)
        metrics.streams_active.set(7)
        registry = metrics.registry
        registry.register(
            WorkerPoolCollector(
                SimpleNamespace(size=2, running=1, queued=4, completed=0, coalesced=0, crashes=0)
            )
        )
        registry.register(EventHubCollector(lambda: SimpleNamespace(published=1), lambda: False))
        registry.register(AnalyticsCollector(lambda: SimpleNamespace(buffer_size=12, written=3)))
        stats = SimpleNamespace(
            connections=0,
            authenticated=0,
            auth_failures=0,
            messages_in=0,
            frames_out=0,
            events_sent=90,
            events_dropped=10,
            rate_limited=0,
            playback_reports=0,
            closes={},
        )
        registry.register(WebSocketCollector(lambda: stats, lambda: 0))
        metrics.observe_request(route="stream", method="GET", status=500, duration_s=0.1, sent=0)
        snap = take_snapshot(registry, 15.0, {PROBE_DISK_FREE: lambda: 0.5, PROBE_REACTOR_LAG: lambda: 1 / 0})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            {name: _value(name, MetricsSnapshot(0), snap) for name in MEASURES},
            {
                "http_5xx_ratio": 1.0,
                "stream_errors_ratio": 1.0,
                "reactor_lag_ms": None,
                "disk_free_ratio": 0.5,
                "decode_queue": 4.0,
                "redis_up": 0.0,
                "analytics_backlog": 12.0,
                "active_streams": 7.0,
                "ws_dropped_ratio": 0.1,
            },
        )

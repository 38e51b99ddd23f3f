# -*- test-case-name: tests.test_health -*-
"""Health endpoints, health checks, the reactor-lag monitor and /metrics."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from streamsrv import __version__
from streamsrv.health.checks import (
    CHECK_TIMEOUT_S,
    DEGRADED,
    FAILING,
    OK,
    CheckResult,
    HealthChecks,
    ReactorLagMonitor,
    disk_space_check,
    media_root_check,
)
from streamsrv.health.metrics import DURATION_BUCKETS, Metrics
from tests.sitehelpers import build_site, stub_for

TOKEN = "metrics-token-for-tests-0123456789abcdef"

DiskUsage = namedtuple("DiskUsage", "total used free")


class HealthSiteMixin:
    """A real StreamsrvSite built with the daemon's factories (its checks included), on a memory clock."""

    development = True
    metrics_token: str | None = None

    def setUp(self) -> None:
        self.media = Path(self.mktemp())  # type: ignore[attr-defined]
        self.media.mkdir()
        (self.media / "a.mp3").write_bytes(b"\xff\xfb" + b"\0" * 1000)
        self.data = Path(self.mktemp())  # type: ignore[attr-defined]
        self.data.mkdir()
        self.clock = MemoryReactorClock()
        self.built = build_site(
            self.media,
            clock=self.clock,
            development=self.development,
            metrics_token=self.metrics_token,
            data_dir=self.data,
        )
        self.lag = self.built.lag
        self.stub = stub_for(self.built)

    def start(self, method: str, path: str, headers: dict[str, str] | None = None) -> Deferred[Any]:
        """Send a request; return the Deferred of its response (after one flush)."""
        hdrs = {k: [v] for k, v in (headers or {}).items()}
        d = self.stub.request(method, "http://streamsrv.test" + path, headers=hdrs)
        self.stub.flush()
        return d

    def finish(self, d: Deferred[Any]) -> tuple[Any, bytes]:
        """The response of *d* and its body."""
        self.stub.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body_d = response.content()
        self.stub.flush()
        return response, self.successResultOf(body_d)  # type: ignore[attr-defined]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
        """GET *path*; return the response and its body."""
        return self.finish(self.start("GET", path, headers))

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> tuple[Any, Any]:
        """GET *path*; return the response and its JSON body."""
        response, body = self.get(path, headers)
        self.assertEqual(  # type: ignore[attr-defined]
            response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"]
        )
        return response, json.loads(body)

    def assert_unauthenticated(self, response: Any, body: bytes) -> None:
        """*response* is the contract's 401 UNAUTHENTICATED JSON error."""
        self.assertEqual(response.code, 401)  # type: ignore[attr-defined]
        error = json.loads(body)["error"]
        self.assertEqual(error["code"], "UNAUTHENTICATED")  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            [error["request_id"]], response.headers.getRawHeaders("x-request-id")
        )


class LivenessTests(HealthSiteMixin, unittest.TestCase):
    """GET /health: the process answers."""

    def test_body(self) -> None:
        """/health answers 200 with status ok, the version and the uptime, not cacheable."""
        response, data = self.get_json("/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(data, {"status": "ok", "version": __version__, "uptime_s": 0})
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertTrue(response.headers.getRawHeaders("x-request-id"))

    def test_uptime_follows_clock(self) -> None:
        """uptime_s is the time since the app was built, on the injected clock."""
        self.clock.advance(12.5)
        _, data = self.get_json("/health")
        self.assertEqual(data["uptime_s"], 12.5)
        self.clock.advance(100)
        _, data = self.get_json("/health")
        self.assertEqual(data["uptime_s"], 112.5)

    def test_alive_while_not_ready(self) -> None:
        """Liveness does not depend on readiness."""
        self.built.api.ready = False
        response, _ = self.get("/health")
        self.assertEqual(response.code, 200)

    def test_head(self) -> None:
        """HEAD /health answers 200 with no body."""
        response, body = self.finish(self.start("HEAD", "/health"))
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")


class ReadinessTests(HealthSiteMixin, unittest.TestCase):
    """GET /health/ready: 200 once started and the media root is usable."""

    def test_not_ready_before_start(self) -> None:
        """Before the readiness flag is set the answer is 503; after, 200."""
        self.built.api.ready = False
        response, data = self.get_json("/health/ready")
        self.assertEqual(response.code, 503)
        self.assertEqual(data["status"], "starting")
        self.built.api.ready = True
        response, data = self.get_json("/health/ready")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["status"], "ready")
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    def test_media_root_gone(self) -> None:
        """With the media root removed readiness is 503 naming the check, never the path."""
        shutil.rmtree(self.media)
        response, body = self.get("/health/ready")
        self.assertEqual(response.code, 503)
        self.assertEqual(json.loads(body), {"status": "not_ready", "failing": ["media_root"]})
        self.assertNotIn(str(self.media).encode(), body)

    def test_other_degraded_check_still_ready(self) -> None:
        """A degraded check elsewhere does not take the process out of rotation."""
        self.built.checks.register("extra", lambda: CheckResult(DEGRADED))
        response, _ = self.get("/health/ready")
        self.assertEqual(response.code, 200)


class DetailedTests(HealthSiteMixin, unittest.TestCase):
    """GET /health/detailed in development: open, every check with status and timing."""

    def test_lists_every_check(self) -> None:
        """The body lists media_root, disk_space, reactor_lag and open_streams with status and duration."""
        response, data = self.get_json("/health/detailed")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["status"], OK)
        self.assertEqual(data["version"], __version__)
        self.assertEqual(sorted(data["checks"]), ["disk_space", "media_root", "open_streams", "reactor_lag"])
        for name, report in data["checks"].items():
            self.assertIn(report["status"], (OK, DEGRADED, FAILING), name)
            self.assertIsInstance(report["duration_ms"], (int, float), name)
        self.assertEqual(data["checks"]["open_streams"]["count"], 0)
        self.assertEqual(data["checks"]["reactor_lag"]["lag_ms"], 0)
        self.assertIn("free_ratio", data["checks"]["disk_space"])

    def test_no_paths_in_body(self) -> None:
        """Neither the media root nor the data dir appear in the report, even failing."""
        shutil.rmtree(self.media)
        shutil.rmtree(self.data)
        response, body = self.get("/health/detailed")
        self.assertEqual(response.code, 503)
        self.assertNotIn(str(self.media).encode(), body)
        self.assertNotIn(str(self.data).encode(), body)
        checks = json.loads(body)["checks"]
        self.assertEqual(checks["media_root"]["status"], FAILING)
        self.assertEqual(checks["disk_space"]["status"], FAILING)

    def test_raising_check_is_failing(self) -> None:
        """A check that raises is reported failing by exception name; no traceback escapes."""

        def broken() -> CheckResult:
            raise ZeroDivisionError("secret detail /etc/passwd")

        self.built.checks.register("broken", broken)
        response, body = self.get("/health/detailed")
        self.assertEqual(response.code, 503)
        data = json.loads(body)
        self.assertEqual(data["status"], FAILING)
        self.assertEqual(data["checks"]["broken"]["status"], FAILING)
        self.assertEqual(data["checks"]["broken"]["error"], "ZeroDivisionError")
        self.assertEqual(data["checks"]["media_root"]["status"], OK)
        self.assertNotIn(b"Traceback", body)
        self.assertNotIn(b"secret detail", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_async_check_times_out(self) -> None:
        """An async check that never answers is failing after CHECK_TIMEOUT_S on the clock."""
        never: Deferred[CheckResult] = Deferred()
        self.built.checks.register("stuck", lambda: never)
        d = self.start("GET", "/health/detailed")
        self.assertNoResult(d)
        self.clock.advance(CHECK_TIMEOUT_S - 0.01)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        response, body = self.finish(d)
        self.assertEqual(response.code, 503)
        stuck = json.loads(body)["checks"]["stuck"]
        self.assertEqual(stuck["status"], FAILING)
        self.assertEqual(stuck["error"], "TimeoutError")
        self.assertEqual(stuck["duration_ms"], CHECK_TIMEOUT_S * 1000)
        self.assertEqual(len(self.flushLoggedErrors(TimeoutError)), 1)

    def test_async_check_answers(self) -> None:
        """A coroutine check that answers is reported like a plain one."""

        async def fine() -> CheckResult:
            return CheckResult(OK, {"pool": 4})

        self.built.checks.register("pool", fine)
        response, data = self.get_json("/health/detailed")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["checks"]["pool"]["status"], OK)
        self.assertEqual(data["checks"]["pool"]["pool"], 4)

    def test_degraded_is_200(self) -> None:
        """A degraded check makes the whole degraded, answered 200."""
        self.built.checks.register("slow", lambda: CheckResult(DEGRADED))
        response, data = self.get_json("/health/detailed")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["status"], DEGRADED)

    def test_failing_beats_degraded(self) -> None:
        """Failing anywhere makes the whole failing (503), whatever the order."""
        self.built.checks.register("bad", lambda: CheckResult(FAILING))
        self.built.checks.register("slow", lambda: CheckResult(DEGRADED))
        response, data = self.get_json("/health/detailed")
        self.assertEqual(response.code, 503)
        self.assertEqual(data["status"], FAILING)

    def test_open_streams_count(self) -> None:
        """open_streams reports the tracker's count."""

        class Sender:
            def abort(self) -> None:
                pass

        self.built.tracker.add(Sender())
        _, data = self.get_json("/health/detailed")
        self.assertEqual(data["checks"]["open_streams"]["count"], 1)

    def test_reactor_lag_reported(self) -> None:
        """A late reactor tick shows in reactor_lag and degrades the whole."""
        self.lag.startService()
        self.addCleanup(self.lag.stopService)
        self.clock.advance(1.5)
        response, data = self.get_json("/health/detailed")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["checks"]["reactor_lag"], {"status": DEGRADED, "duration_ms": 0, "lag_ms": 500})
        self.assertEqual(data["status"], DEGRADED)


class DetailedProtectedTests(HealthSiteMixin, unittest.TestCase):
    """GET /health/detailed outside development needs the bearer token."""

    development = False
    metrics_token = TOKEN

    def test_no_credentials(self) -> None:
        """Without Authorization the answer is the JSON 401 UNAUTHENTICATED, with no check data."""
        response, body = self.get("/health/detailed")
        self.assert_unauthenticated(response, body)
        self.assertNotIn(b"media_root", body)

    def test_wrong_token(self) -> None:
        """A wrong bearer token, or another scheme, is refused."""
        for value in ("Bearer nope", "Basic " + TOKEN, TOKEN, "Bearer " + TOKEN + "x"):
            response, body = self.get("/health/detailed", {"Authorization": value})
            self.assert_unauthenticated(response, body)

    def test_token(self) -> None:
        """With ``Authorization: Bearer <metrics token>`` the report is served."""
        response, data = self.get_json("/health/detailed", {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)
        self.assertIn("media_root", data["checks"])

    def test_liveness_and_readiness_stay_open(self) -> None:
        """/health and /health/ready need no credential anywhere."""
        self.assertEqual(self.get("/health")[0].code, 200)
        self.assertEqual(self.get("/health/ready")[0].code, 200)


class DetailedNoTokenTests(HealthSiteMixin, unittest.TestCase):
    """Outside development with no token configured, /health/detailed is closed."""

    development = False

    def test_closed(self) -> None:
        """Any bearer, even an empty one, is refused when no token is configured."""
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            response, body = self.get("/health/detailed", headers)
            self.assert_unauthenticated(response, body)


class EmptyTokenTests(HealthSiteMixin, unittest.TestCase):
    """An empty metrics token counts as none: it never opens anything."""

    development = False
    metrics_token = ""

    def test_empty_bearer_refused(self) -> None:
        """``Authorization: Bearer`` with nothing after it does not match an empty token."""
        response, body = self.get("/health/detailed", {"Authorization": "Bearer "})
        self.assert_unauthenticated(response, body)

    def test_metrics_open(self) -> None:
        """With an empty token /metrics is as open as with none."""
        self.assertEqual(self.get("/metrics")[0].code, 200)


def _samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called *name* in exposition *text*, keyed by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


class MetricsEndpointTests(HealthSiteMixin, unittest.TestCase):
    """GET /metrics without a token configured."""

    def test_requests_counted(self) -> None:
        """After a request, streamsrv_http_requests_total has its route, method and status."""
        self.get("/health")
        self.get("/nope")
        response, body = self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/plain; version=0.0.4; charset=utf-8"]
        )
        self.assertIn(b"\nstreamsrv_http_requests_total{", body)
        requests = _samples(body, "streamsrv_http_requests_total")
        self.assertEqual(requests[(("method", "GET"), ("route", "health"), ("status", "200"))], 1.0)
        self.assertEqual(requests[(("method", "GET"), ("route", "other"), ("status", "404"))], 1.0)
        errors = _samples(body, "streamsrv_http_errors_total")
        self.assertEqual(errors[(("code", "NOT_FOUND"),)], 1.0)

    def test_build_info(self) -> None:
        """The build info carries the version."""
        _, body = self.get("/metrics")
        self.assertEqual(_samples(body, "streamsrv_build_info"), {(("version", __version__),): 1.0})


class MetricsProtectedTests(HealthSiteMixin, unittest.TestCase):
    """GET /metrics with STREAMSRV_METRICS_TOKEN set."""

    metrics_token = TOKEN

    def test_refused_without_token(self) -> None:
        """Without the bearer token /metrics is 401 UNAUTHENTICATED with WWW-Authenticate."""
        response, body = self.get("/metrics")
        self.assert_unauthenticated(response, body)
        self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ["Bearer"])
        self.assertNotIn(b"streamsrv_http", body)

    def test_refused_with_wrong_token(self) -> None:
        """A wrong token is refused."""
        response, body = self.get("/metrics", {"Authorization": "Bearer wrong"})
        self.assert_unauthenticated(response, body)

    def test_served_with_token(self) -> None:
        """With the bearer token /metrics is served."""
        response, body = self.get("/metrics", {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)
        self.assertIn(b"streamsrv_http_requests_total", body)


class MetricsTests(unittest.SynchronousTestCase):
    """The Metrics object itself."""

    def test_labels_remembered(self) -> None:
        """labels() hands out the same child for the same values; clear() forgets them."""
        metrics = Metrics(process=False)
        child = metrics.range_requests.labels("single")
        self.assertIs(metrics.range_requests.labels("single"), child)
        self.assertIs(metrics.range_requests.labels(kind="single"), child)
        child.inc()
        metrics.range_requests.clear()
        fresh = metrics.range_requests.labels("single")
        self.assertIsNot(fresh, child)
        self.assertIn(b'streamsrv_range_requests_total{kind="single"} 0.0', metrics.render())

    def test_observe_request_bound_children(self) -> None:
        """Repeated observations of one route, method and status add up; odd labels are folded."""
        metrics = Metrics(process=False)
        for _ in range(3):
            metrics.observe_request(route="stream", method="GET", status=206, duration_s=0.01, sent=10)
        metrics.observe_request(route="/weird", method="BREW", status=418, duration_s=0.01, sent=0)
        text = metrics.render()
        self.assertIn(b'streamsrv_http_requests_total{method="GET",route="stream",status="206"} 3.0', text)
        self.assertIn(b'streamsrv_http_response_bytes_total{route="stream"} 30.0', text)
        self.assertIn(b'streamsrv_http_requests_total{method="OTHER",route="other",status="418"} 1.0', text)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(min_value=0.0, max_value=1000.0), max_size=40))
    def test_durations_as_prometheus_observes_them(self, durations: list[float]) -> None:
        """The request durations, summed until a scrape, land in the buckets ``Histogram.observe`` picks."""
        m = Metrics(process=False)
        reference = Histogram("d", "d", buckets=DURATION_BUCKETS, registry=None)
        for duration in durations:
            m.observe_request(route="stream", method="GET", status=206, duration_s=duration, sent=1)
            reference.observe(duration)
        mine = {
            sample.labels.get("le"): sample.value
            for family in text_string_to_metric_families(m.render().decode())
            if family.name == "streamsrv_http_request_duration_seconds"
            for sample in family.samples
            if sample.name.endswith("_bucket")
        }
        theirs = {
            sample.labels["le"]: sample.value
            for sample in reference.collect()[0].samples
            if sample.name.endswith("_bucket")
        }
        if durations:
            self.assertEqual(mine, theirs)
            total = m.registry.get_sample_value(
                "streamsrv_http_request_duration_seconds_sum", {"route": "stream"}
            )
            self.assertAlmostEqual(total, sum(durations), places=6)

    def test_process_metrics(self) -> None:
        """By default the registry has process, platform and GC metrics."""
        if not os.path.exists("/proc/self/stat"):
            raise unittest.SkipTest("process metrics need /proc")
        text = Metrics().render()
        self.assertIn(b"process_cpu_seconds_total", text)
        self.assertIn(b"process_resident_memory_bytes", text)
        self.assertIn(b"python_info", text)
        self.assertIn(b"python_gc_objects_collected_total", text)

    def test_without_process_metrics(self) -> None:
        """process=False leaves them out."""
        self.assertNotIn(b"process_", Metrics(process=False).render())

    def test_registries_independent(self) -> None:
        """Two Metrics count separately (no global registry)."""
        a, b = Metrics(process=False), Metrics(process=False)
        a.observe_request(route="health", method="GET", status=200, duration_s=0.01, sent=10)
        labels = {"route": "health", "method": "GET", "status": "200"}
        self.assertEqual(a.registry.get_sample_value("streamsrv_http_requests_total", labels), 1.0)
        self.assertIsNone(b.registry.get_sample_value("streamsrv_http_requests_total", labels))

    def test_labels_bounded(self) -> None:
        """Unknown routes count as ``other`` and unknown methods as ``OTHER``."""
        m = Metrics(process=False)
        m.observe_request(route="/etc/passwd", method="BREW", status=405, duration_s=0.0, sent=0)
        labels = {"route": "other", "method": "OTHER", "status": "405"}
        self.assertEqual(m.registry.get_sample_value("streamsrv_http_requests_total", labels), 1.0)

    def test_bytes_and_duration(self) -> None:
        """Sent bytes and the duration histogram are recorded per route."""
        m = Metrics(process=False)
        m.observe_request(route="stream", method="GET", status=206, duration_s=0.3, sent=1000)
        m.observe_request(route="stream", method="GET", status=206, duration_s=0.3, sent=0)
        reg = m.registry
        self.assertEqual(
            reg.get_sample_value("streamsrv_http_response_bytes_total", {"route": "stream"}), 1000
        )
        self.assertEqual(
            reg.get_sample_value("streamsrv_http_request_duration_seconds_count", {"route": "stream"}), 2
        )
        self.assertEqual(
            reg.get_sample_value(
                "streamsrv_http_request_duration_seconds_bucket", {"route": "stream", "le": "0.5"}
            ),
            2,
        )


class HealthChecksTests(unittest.SynchronousTestCase):
    """The check registry run directly."""

    def run_checks(self, checks: HealthChecks) -> tuple[str, dict[str, dict[str, object]]]:
        """Run *checks*, which must finish synchronously here."""
        return self.successResultOf(ensureDeferred(checks.run()))

    def test_empty(self) -> None:
        """No checks is ok."""
        self.assertEqual(self.run_checks(HealthChecks(Clock())), (OK, {}))

    def test_order_and_timing(self) -> None:
        """Reports keep registration order and time each check on the clock."""
        clock = Clock()
        checks = HealthChecks(clock)

        def slow() -> CheckResult:
            clock.advance(0.25)
            return CheckResult(OK)

        checks.register("b", slow)
        checks.register("a", lambda: CheckResult(OK, {"n": 1}))
        self.assertEqual(checks.names, ["b", "a"])
        overall, reports = self.run_checks(checks)
        self.assertEqual(overall, OK)
        self.assertEqual(list(reports), ["b", "a"])
        self.assertEqual(reports["b"], {"status": OK, "duration_ms": 250.0})
        self.assertEqual(reports["a"], {"status": OK, "duration_ms": 0.0, "n": 1})

    def test_unknown_status_is_failing(self) -> None:
        """A check answering a status outside ok/degraded/failing counts as failing; the rest still run."""
        checks = HealthChecks(Clock())
        checks.register("odd", lambda: CheckResult("weird"))
        checks.register("fine", lambda: CheckResult(OK))
        overall, reports = self.run_checks(checks)
        self.assertEqual(overall, FAILING)
        self.assertEqual(reports["odd"]["status"], FAILING)
        self.assertEqual(reports["fine"]["status"], OK)

    def test_detail_cannot_override_status(self) -> None:
        """A detail key named ``status`` or ``duration_ms`` does not replace the real ones."""
        checks = HealthChecks(Clock())
        checks.register("sneaky", lambda: CheckResult(FAILING, {"status": OK, "duration_ms": -1}))
        overall, reports = self.run_checks(checks)
        self.assertEqual(overall, FAILING)
        self.assertEqual(reports["sneaky"], {"status": FAILING, "duration_ms": 0.0})

    def test_wrong_return_type_is_failing(self) -> None:
        """A check returning something other than a CheckResult is failing, not a crash."""
        checks = HealthChecks(Clock())
        checks.register("bad", lambda: "ok")  # type: ignore[arg-type,return-value]
        overall, reports = self.run_checks(checks)
        self.assertEqual(overall, FAILING)
        self.assertEqual(reports["bad"]["status"], FAILING)
        self.assertEqual(reports["bad"]["error"], "TypeError")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_async_wrong_return_type_is_failing(self) -> None:
        """An async check answering something other than a CheckResult is failing too."""

        async def bad() -> object:
            return {"status": "ok"}

        checks = HealthChecks(Clock())
        checks.register("bad", bad)  # type: ignore[arg-type]
        checks.register("fine", lambda: CheckResult(OK))
        overall, reports = self.run_checks(checks)
        self.assertEqual(overall, FAILING)
        self.assertEqual(reports["bad"]["error"], "TypeError")
        self.assertEqual(reports["fine"]["status"], OK)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_register_replaces(self) -> None:
        """Registering a name again replaces the check."""
        checks = HealthChecks(Clock())
        checks.register("x", lambda: CheckResult(FAILING))
        checks.register("x", lambda: CheckResult(OK))
        self.assertEqual(self.run_checks(checks)[0], OK)


class ReactorLagMonitorTests(unittest.SynchronousTestCase):
    """ReactorLagMonitor measures how late its timer runs, on an injected clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.monitor = ReactorLagMonitor(self.clock, interval=1.0, degraded_s=0.1, failing_s=1.0)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def test_on_time(self) -> None:
        """Ticks that run on time report no lag and an ok check."""
        self.clock.pump([1.0] * 10)
        self.assertEqual(self.monitor.lag_s, 0.0)
        self.assertEqual(self.monitor.check(), CheckResult(OK, {"lag_ms": 0.0}))

    def test_small_lag_ok(self) -> None:
        """A tick late by less than the degraded threshold is still ok, with its lag reported."""
        self.clock.advance(1.05)
        self.assertAlmostEqual(self.monitor.lag_s, 0.05)
        self.assertEqual(self.monitor.check().status, OK)
        self.assertEqual(self.monitor.check().detail["lag_ms"], 50.0)

    def test_late_tick_degraded(self) -> None:
        """A tick late by more than degraded_s (but under failing_s) is degraded."""
        self.clock.advance(1.0)
        self.clock.advance(1.5)
        self.assertAlmostEqual(self.monitor.lag_s, 0.5)
        self.assertEqual(self.monitor.check().status, DEGRADED)
        self.assertEqual(self.monitor.check().detail["lag_ms"], 500.0)

    def test_very_late_tick_failing(self) -> None:
        """A tick late by failing_s or more is failing."""
        self.clock.advance(3.5)
        self.assertAlmostEqual(self.monitor.lag_s, 2.5)
        self.assertEqual(self.monitor.check().status, FAILING)

    def test_lag_after_late_tick_measured_from_schedule(self) -> None:
        """After a late tick, the next one's lag is measured from when the loop scheduled it."""
        self.clock.advance(1.09)  # due at 1.0, ran at 1.09: ok; the loop runs next at 2.0
        self.assertEqual(self.monitor.check().status, OK)
        self.clock.advance(1.06)  # due at 2.0, ran at 2.15: 150 ms late
        self.assertEqual(self.monitor.check(), CheckResult(DEGRADED, {"lag_ms": 150.0}))

    def test_overdue_tick_counts(self) -> None:
        """A tick that is overdue but has not run yet already shows as lag."""
        self.clock.advance(1.0)
        self.clock.rightNow += 1.5  # due at 2.0; at 2.5 it still has not run
        self.assertEqual(self.monitor.check(), CheckResult(DEGRADED, {"lag_ms": 500.0}))

    def test_not_started(self) -> None:
        """A monitor that never ran reports no lag."""
        monitor = ReactorLagMonitor(Clock())
        self.assertEqual(monitor.check(), CheckResult(OK, {"lag_ms": 0.0}))

    def test_lag_forgotten_after_a_minute(self) -> None:
        """The reported lag is the worst of the last minute; on-time ticks after it bring ok back."""
        self.clock.advance(1.5)
        self.assertEqual(self.monitor.check().status, DEGRADED)
        self.clock.pump([0.5] + [1.0] * 59)
        self.assertEqual(self.monitor.check().status, DEGRADED)
        self.clock.advance(1.0)
        self.assertEqual(self.monitor.check().status, OK)

    def test_window_is_a_minute_whatever_the_interval(self) -> None:
        """With a 5 s interval the window still spans about a minute, not 60 ticks."""
        clock = Clock()
        monitor = ReactorLagMonitor(clock, interval=5.0)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(5.5)
        clock.pump([4.5] + [5.0] * 11)
        self.assertEqual(monitor.check().status, DEGRADED)
        clock.pump([5.0])
        self.assertEqual(monitor.check().status, OK)

    def test_stop_stops_the_loop(self) -> None:
        """After stopService nothing is scheduled on the clock."""
        self.monitor.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DiskSpaceCheckTests(unittest.SynchronousTestCase):
    """disk_space_check with a patched shutil.disk_usage."""

    def check_with(self, usage: Any) -> CheckResult:
        def fake(path: object) -> Any:
            self.seen.append(path)
            if isinstance(usage, Exception):
                raise usage
            return usage

        self.seen: list[object] = []
        self.patch(shutil, "disk_usage", fake)
        path = Path(self.mktemp())
        result = disk_space_check(path)()
        self.assertEqual(self.seen, [path])
        self.assertNotIn(str(path), repr(result))
        return result

    def test_plenty(self) -> None:
        """Half the disk free is ok, with free bytes and ratio."""
        result = self.check_with(DiskUsage(1000, 500, 500))
        self.assertEqual(result, CheckResult(OK, {"free_bytes": 500, "free_ratio": 0.5}))

    def test_low(self) -> None:
        """Under 5 % free is degraded."""
        self.assertEqual(self.check_with(DiskUsage(1000, 960, 40)).status, DEGRADED)

    def test_critical(self) -> None:
        """Under 1 % free is failing."""
        self.assertEqual(self.check_with(DiskUsage(1000, 995, 5)).status, FAILING)

    def test_boundaries(self) -> None:
        """Exactly 5 % is ok, exactly 1 % degraded."""
        self.assertEqual(self.check_with(DiskUsage(1000, 950, 50)).status, OK)
        self.assertEqual(self.check_with(DiskUsage(1000, 990, 10)).status, DEGRADED)

    def test_error(self) -> None:
        """An OSError (missing dir) is failing with a reason and no path."""
        result = self.check_with(FileNotFoundError(2, "No such file", "/somewhere"))
        self.assertEqual(result, CheckResult(FAILING, {"reason": "data dir not accessible"}))

    def test_zero_total(self) -> None:
        """A disk reporting zero size is failing rather than dividing by zero."""
        self.assertEqual(self.check_with(DiskUsage(0, 0, 0)).status, FAILING)


class MediaRootCheckTests(unittest.SynchronousTestCase):
    """media_root_check."""

    def test_ok(self) -> None:
        """An existing, listable directory is ok."""
        root = Path(self.mktemp())
        root.mkdir()
        self.assertEqual(media_root_check(root)(), CheckResult(OK))

    def test_missing(self) -> None:
        """A missing root is failing; the reason never names the path."""
        root = Path(self.mktemp())
        result = media_root_check(root)()
        self.assertEqual(result.status, FAILING)
        self.assertNotIn(str(root), repr(result))

    def test_file(self) -> None:
        """A regular file where the root should be is failing."""
        root = Path(self.mktemp())
        root.write_bytes(b"")
        self.assertEqual(media_root_check(root)().status, FAILING)

    def test_unreadable(self) -> None:
        """A directory that cannot be listed is failing."""
        if sys.platform == "win32" or os.geteuid() == 0:
            raise unittest.SkipTest("permissions are not enforced here")
        root = Path(self.mktemp())
        root.mkdir()
        root.chmod(0)
        self.addCleanup(root.chmod, 0o755)
        self.assertEqual(media_root_check(root)().status, FAILING)

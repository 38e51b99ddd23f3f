"""Tests for the alert evaluator (:mod:`streamsrv.alerts.service`) as :func:`make_alerts` builds it.

Time is a :class:`~twisted.internet.task.Clock`; the measures read a real
:class:`~streamsrv.health.metrics.Metrics` registry; events and
notifications go to lists; the lease is SQLite on inline threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.alerts.dispatch import rfc3339
from streamsrv.alerts.factory import Alerts, disk_free_probe, make_alerts
from streamsrv.alerts.measures import PROBE_DISK_FREE
from streamsrv.alerts.rules import Notify, Rule, RuleSet
from streamsrv.health.metrics import Metrics
from streamsrv.threads import InlineThreads

START = 1_767_225_600.0

STREAMS = Rule(
    "streams_high", "active_streams", 10, True, 30, 5, "critical", Notify("alert", ("ops",), ("email",))
)
DISK = Rule("disk_low", "disk_free_ratio", 0.1, False, 0, 0.1, "info")


class Recorder:
    """Collects published events and notifications; notify fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Mapping[str, Any]]] = []
        self.notifications: list[tuple[str, tuple[str, ...], tuple[str, ...], Mapping[str, Any], str]] = []
        self.failing = False

    def publish(self, channel: str, event: Mapping[str, Any]) -> None:
        self.events.append((channel, dict(event)))

    def notify(
        self,
        template: str,
        user_ids: Sequence[str],
        channels: Sequence[str],
        data: Mapping[str, Any],
        priority: str,
    ) -> Deferred[Any]:
        self.notifications.append((template, tuple(user_ids), tuple(channels), dict(data), priority))
        return fail(RuntimeError("gateway down")) if self.failing else succeed({"id": "n1"})


class EvaluatorTests(unittest.TestCase):
    """Evaluations, announcements, the gauge and the history."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.metrics = Metrics(process=False)
        self.recorder = Recorder()
        self.disk_free = 0.5
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.alerts = self._alerts()

    def _alerts(self, rules: RuleSet | None = None, registry: Any = None) -> Alerts:
        return make_alerts(
            registry=registry or self.metrics.registry,
            clock=self.clock,
            publish=self.recorder.publish,
            system_channel="system",
            notify=self.recorder.notify,
            threads=InlineThreads(),
            interval_s=15,
            data_dir=self.data_dir,
            probes={PROBE_DISK_FREE: lambda: self.disk_free},
            host="stream-1",
            rules=rules or RuleSet((STREAMS, DISK)),
        )

    def _start(self, alerts: Alerts) -> None:
        alerts.evaluator.startService()
        self.addCleanup(alerts.evaluator.stopService)

    def _tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(15)

    def _gauge(self, rule: str, severity: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "streamsrv_alerts_firing", {"rule": rule, "severity": severity}
        )

    def test_fires_once_after_for_then_resolves(self) -> None:
        """Over the threshold for ``for`` seconds: one event and one notification however long it lasts;
        under ``clear``: one resolution event and notification."""
        self._start(self.alerts)
        self.metrics.streams_active.set(20)
        self._tick(2)  # pending at +15, 15 s held at +30
        self.assertEqual(self.recorder.events, [])
        self._tick()  # 30 s held
        self._tick(5)
        self.assertEqual([e["type"] for _, e in self.recorder.events], ["alert.firing"])
        channel, event = self.recorder.events[0]
        self.assertEqual(channel, "system")
        self.assertEqual(
            event,
            {
                "type": "alert.firing",
                "alert": "streams_high",
                "status": "firing",
                "severity": "critical",
                "source": "rule",
                "measure": "active_streams",
                "value": 20.0,
                "threshold": 10,
                "started_at": rfc3339(START + 15),
                "host": "stream-1",
            },
        )
        self.assertEqual(len(self.recorder.notifications), 1)
        template, users, channels, data, priority = self.recorder.notifications[0]
        self.assertEqual(
            (template, users, channels, priority), ("alert-firing", ("ops",), ("email",), "urgent")
        )
        self.assertEqual(data, {k: v for k, v in event.items() if k != "type"})
        self.assertEqual(self._gauge("streams_high", "critical"), 1.0)
        self.metrics.streams_active.set(7)  # between clear and threshold: still firing
        self._tick(3)
        self.assertEqual(len(self.recorder.events), 1)
        self.metrics.streams_active.set(5)
        self._tick()
        self.assertEqual([e["type"] for _, e in self.recorder.events], ["alert.firing", "alert.resolved"])
        resolved = self.recorder.events[1][1]
        self.assertEqual(resolved["started_at"], rfc3339(START + 15))
        self.assertEqual(resolved["resolved_at"], rfc3339(self.clock.seconds()))
        self.assertEqual([n[0] for n in self.recorder.notifications], ["alert-firing", "alert-resolved"])
        self.assertEqual(self._gauge("streams_high", "critical"), 0.0)

    def test_gauge_exists_for_every_rule(self) -> None:
        """Every rule has its gauge series at 0 from the start."""
        self.assertEqual(self._gauge("streams_high", "critical"), 0.0)
        self.assertEqual(self._gauge("disk_low", "info"), 0.0)

    def test_notify_failure_does_not_stop_the_loop(self) -> None:
        """A notification that fails is logged; evaluations go on and the resolution is still announced."""
        self.recorder.failing = True
        self._start(self.alerts)
        self.disk_free = 0.05
        self._tick()
        self.assertEqual(
            len(self.flushLoggedErrors(RuntimeError)), 0
        )  # no notify for a rule without recipients
        self.metrics.streams_active.set(20)
        self._tick(3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.metrics.streams_active.set(0)
        self._tick()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        types = [(e["alert"], e["type"]) for _, e in self.recorder.events]
        self.assertEqual(
            types,
            [
                ("disk_low", "alert.firing"),
                ("streams_high", "alert.firing"),
                ("streams_high", "alert.resolved"),
            ],
        )

    def test_status_document(self) -> None:
        """``status()`` lists each rule with its state, the firing alerts and the resolved ones."""
        self._start(self.alerts)
        self.disk_free = 0.05
        self.metrics.streams_active.set(20)
        self._tick()
        status = self.alerts.status()
        self.assertEqual(status["evaluator"], {"leading": True, "interval_s": 15.0, "host": "stream-1"})
        states = {r["name"]: (r["state"], r["value"]) for r in status["rules"]}
        self.assertEqual(states, {"streams_high": ("pending", 20.0), "disk_low": ("firing", 0.05)})
        self.assertEqual([a["alert"] for a in status["firing"]], ["disk_low"])
        self.assertEqual(status["rules"][1]["below"], 0.1)
        self.assertNotIn("notify", status["rules"][0])
        self.disk_free = 0.5
        self._tick()
        status = self.alerts.status()
        self.assertEqual((status["firing"], [a["alert"] for a in status["resolved"]]), ([], ["disk_low"]))

    def test_one_evaluator_at_a_time(self) -> None:
        """Two processes sharing the data dir: one evaluates; when it stops, the other takes over."""
        other_metrics = Metrics(process=False)
        first, second = self.alerts, self._alerts(registry=other_metrics.registry)
        self._start(first)
        self._start(second)
        self.disk_free = 0.05
        self._tick()
        self.assertEqual((first.evaluator.leading, second.evaluator.leading), (True, False))
        self.assertEqual(len(self.recorder.events), 1)
        self.successResultOf(first.evaluator.stopService())
        self._tick()
        self.assertTrue(second.evaluator.leading)
        self.assertEqual(second.status()["firing"][0]["alert"], "disk_low")

    def test_takeover_after_expiry(self) -> None:
        """A holder that stops renewing (stalled) loses the lease after three intervals, and steps down."""
        other_metrics = Metrics(process=False)
        first, second = self.alerts, self._alerts(registry=other_metrics.registry)
        self.disk_free = 0.05
        self.successResultOf(Deferred.fromCoroutine(first.evaluator.evaluate()))
        self.assertTrue(first.evaluator.leading)
        self.clock.advance(30)
        self.successResultOf(Deferred.fromCoroutine(second.evaluator.evaluate()))
        self.assertFalse(second.evaluator.leading)
        self.clock.advance(16)
        self.successResultOf(Deferred.fromCoroutine(second.evaluator.evaluate()))
        self.assertTrue(second.evaluator.leading)
        self.successResultOf(Deferred.fromCoroutine(first.evaluator.evaluate()))
        self.assertFalse(first.evaluator.leading)
        self.assertEqual(first.status()["firing"], [])
        self.assertEqual(
            self.metrics.registry.get_sample_value(
                "streamsrv_alerts_firing", {"rule": "disk_low", "severity": "info"}
            ),
            0.0,
        )

    def test_lease_failure_skips_evaluation(self) -> None:
        """A lease that cannot be reached is logged and the evaluation skipped; the loop goes on."""
        self.data_dir.rmdir()
        self._start(self.alerts)
        self.disk_free = 0.05
        self._tick(2)
        self.assertEqual(self.recorder.events, [])
        self.assertEqual(len(self.flushLoggedErrors()), 2)

    def test_disk_free_probe(self) -> None:
        """The disk probe is a ratio between 0 and 1."""
        ratio = disk_free_probe(self.data_dir)()
        self.assertTrue(0 <= ratio <= 1)

"""Tests for :mod:`streamsrv.alerts.alertmanager`: the webhook, strictly parsed and deduplicated."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial import unittest

from streamsrv.alerts.alertmanager import AlertmanagerReceiver, parse_webhook
from streamsrv.alerts.dispatch import AlertDispatcher
from streamsrv.alerts.rules import Notify, Rule, RuleSet
from streamsrv.errors import ApiError
from tests.test_alerts_service import Recorder


def _alert(status: str = "firing", fingerprint: str = "f1", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighLatency", "severity": "critical", **labels},
        "annotations": {"summary": "p99 over 2 s"},
        "startsAt": "2026-01-01T10:00:00.123456789Z",
        "endsAt": "2026-01-01T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def _webhook(*alerts: dict[str, Any], **overrides: Any) -> bytes:
    document = {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "streamsrv",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        **overrides,
    }
    return json.dumps(document).encode()


class ParseWebhookTests(unittest.TestCase):
    """The body is checked strictly; the first bad field is named."""

    def test_valid(self) -> None:
        """A version 4 webhook is read with each alert's fields."""
        message = parse_webhook(_webhook(_alert(), _alert("resolved", "f2")))
        self.assertEqual((message.status, message.receiver, len(message.alerts)), ("firing", "streamsrv", 2))
        self.assertEqual(message.alerts[1].ends_at, "2026-01-01T10:20:00Z")

    def _refused(self, body: bytes) -> str:
        error = self.assertRaises(ApiError, parse_webhook, body)
        self.assertEqual(error.code, "BAD_REQUEST")
        return error.message

    def test_bad_fields_named(self) -> None:
        """Each malformed field is named in the 400's message."""
        cases = {
            b"not json": "The body is not JSON.",
            b"[]": "The body must be a JSON object.",
            _webhook(version="3"): "version:",
            _webhook(status="pending"): "status:",
            _webhook(alerts={}): "alerts:",
            _webhook(_alert(), receiver=None): "receiver:",
            _webhook(_alert(), "x"): "alerts[1]:",
            _webhook({**_alert(), "status": "active"}): "alerts[0].status:",
            _webhook({**_alert(), "labels": {"severity": "critical"}}): "alerts[0].labels.alertname:",
            _webhook({**_alert(), "labels": {"alertname": "a", "n": 1}}): "alerts[0].labels:",
            _webhook({**_alert(), "startsAt": "yesterday"}): "alerts[0].startsAt:",
            _webhook({**_alert(), "fingerprint": ""}): "alerts[0].fingerprint:",
        }
        for body, expected in cases.items():
            self.assertTrue(self._refused(body).startswith(expected), (body, expected))


class ReceiverTests(unittest.TestCase):
    """Alerts are routed like the daemon's own, once per fingerprint and status."""

    def setUp(self) -> None:
        self.recorder = Recorder()
        self.dispatcher = AlertDispatcher(
            publish=self.recorder.publish, system_channel="system", notify=self.recorder.notify, host="h"
        )
        rules = RuleSet(
            (
                Rule(
                    "DiskFull", "disk_free_ratio", 0.1, False, 0, 0.1, "warning", Notify("disk", ("storage",))
                ),
            ),
            alertmanager=Notify("alert", ("ops",), ("push",)),
        )
        self.receiver = AlertmanagerReceiver(self.dispatcher, rules)

    def test_routed_as_events_and_notifications(self) -> None:
        """Each alert becomes an ``alert.firing``/``alert.resolved`` event and a notification."""
        answer = self.receiver.receive(_webhook(_alert()))
        self.assertEqual(answer, {"received": 1, "announced": 1, "duplicates": 0})
        channel, event = self.recorder.events[0]
        self.assertEqual((channel, event["type"], event["alert"]), ("system", "alert.firing", "HighLatency"))
        self.assertEqual(
            (event["severity"], event["source"], event["value"]), ("critical", "alertmanager", "p99 over 2 s")
        )
        self.assertEqual(event["labels"]["alertname"], "HighLatency")
        template, users, channels, _data, priority = self.recorder.notifications[0]
        self.assertEqual(
            (template, users, channels, priority), ("alert-firing", ("ops",), ("push",), "urgent")
        )
        self.assertEqual([a.name for a in self.dispatcher.firing()], ["HighLatency"])

    def test_repeated_webhook_notifies_once(self) -> None:
        """The same webhook again (Alertmanager's repeat or retry) announces nothing new."""
        self.receiver.receive(_webhook(_alert()))
        answer = self.receiver.receive(_webhook(_alert()))
        self.assertEqual(answer, {"received": 1, "announced": 0, "duplicates": 1})
        self.assertEqual(len(self.recorder.notifications), 1)
        self.receiver.receive(_webhook(_alert("resolved"), status="resolved"))
        self.receiver.receive(_webhook(_alert("resolved"), status="resolved"))
        self.assertEqual([n[0] for n in self.recorder.notifications], ["alert-firing", "alert-resolved"])
        self.assertEqual((self.dispatcher.firing(), len(self.dispatcher.resolved())), ([], 1))
        self.receiver.receive(_webhook(_alert()))  # firing again: a new incident
        self.assertEqual(len(self.recorder.notifications), 3)

    def test_rule_of_the_same_name_gives_recipients(self) -> None:
        """An alert named like a rule notifies that rule's recipients; unknown severities become warning."""
        self.receiver.receive(_webhook(_alert(alertname="DiskFull", severity="page")))
        template, users, _channels, _data, priority = self.recorder.notifications[0]
        self.assertEqual((template, users, priority), ("disk-firing", ("storage",), "normal"))
        self.assertEqual(self.recorder.events[0][1]["severity"], "warning")

    def test_bad_webhook_announces_nothing(self) -> None:
        """A webhook with one bad alert is refused whole."""
        self.assertRaises(ApiError, self.receiver.receive, _webhook(_alert(), {**_alert(), "status": "x"}))
        self.assertEqual(self.recorder.events, [])

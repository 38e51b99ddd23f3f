# -*- test-case-name: tests.test_alerts_alertmanager -*-
"""Prometheus Alertmanager's webhook (version 4 JSON) routed like the daemon's own alerts.

:func:`parse_webhook` checks a webhook body strictly and names the first bad
field in its ``BAD_REQUEST``; :class:`AlertmanagerReceiver` turns each alert
of it into an :class:`~streamsrv.alerts.dispatch.Alert` (``labels.alertname``
its name, ``labels.severity`` its severity) and hands it to the dispatcher,
which publishes the same ``alert.firing`` / ``alert.resolved`` events and
sends the same notifications as a rule would: to the recipients of the rule
of the same name, else those of the rules file's ``[alertmanager]`` table.
Alertmanager repeats a firing alert every ``repeat_interval`` and retries a
webhook that failed: an alert whose fingerprint was last seen with the same
status is not announced again.  This module never takes a request (it is
given the body's bytes) and raises only :class:`~streamsrv.errors.ApiError`.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from streamsrv.alerts.dispatch import Alert, AlertDispatcher
from streamsrv.alerts.rules import SEVERITIES, RuleSet
from streamsrv.errors import ApiError

__all__ = ["MAX_ALERTS", "AlertmanagerReceiver", "WebhookAlert", "WebhookMessage", "parse_webhook"]

#: The most alerts one webhook may carry (Alertmanager's ``max_alerts`` is unlimited by default).
MAX_ALERTS: Final = 1000

#: Fingerprints whose last status is remembered, for deduplication.
DEDUPE_CAPACITY: Final = 10_000

#: The severity of an alert whose ``severity`` label is missing or not one of ours.
DEFAULT_SEVERITY: Final = "warning"

_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_STATUSES: Final = ("firing", "resolved")


@dataclass(frozen=True)
class WebhookAlert:
    """One alert of a webhook."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    fingerprint: str


@dataclass(frozen=True)
class WebhookMessage:
    """A whole webhook (the fields routing uses)."""

    status: str
    receiver: str
    group_key: str
    alerts: tuple[WebhookAlert, ...]


def _bad(field: str, what: str) -> ApiError:
    return ApiError("BAD_REQUEST", f"{field}: {what}")


def _string(obj: dict[str, Any], key: str, where: str, *, empty: bool = True) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(f"{where}{key}", "required, a string" if empty else "required, a non-empty string")
    return value


def _labels(obj: dict[str, Any], key: str, where: str, *, required: bool) -> dict[str, str]:
    value = obj.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(f"{where}{key}", "an object of strings")
    return dict(value)


def _time(obj: dict[str, Any], key: str, where: str) -> str:
    value = _string(obj, key, where)
    if not _RFC3339.fullmatch(value):
        raise _bad(f"{where}{key}", "an RFC 3339 time")
    return value


def _alert(raw: object, index: int) -> WebhookAlert:
    where = f"alerts[{index}]."
    if not isinstance(raw, dict):
        raise _bad(f"alerts[{index}]", "an object")
    status = _string(raw, "status", where)
    if status not in _STATUSES:
        raise _bad(f"{where}status", "firing or resolved")
    labels = _labels(raw, "labels", where, required=True)
    if not labels.get("alertname"):
        raise _bad(f"{where}labels.alertname", "required, a non-empty string")
    return WebhookAlert(
        status=status,
        labels=labels,
        annotations=_labels(raw, "annotations", where, required=False),
        starts_at=_time(raw, "startsAt", where),
        ends_at=_time(raw, "endsAt", where),
        fingerprint=_string(raw, "fingerprint", where, empty=False),
    )


def parse_webhook(body: bytes) -> WebhookMessage:
    """
    Check and read an Alertmanager webhook body (version ``"4"``).

    :raise ApiError: ``BAD_REQUEST`` naming the first bad field (``alerts[2].status``…).
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError("BAD_REQUEST", "The body is not JSON.") from None
    if not isinstance(document, dict):
        raise ApiError("BAD_REQUEST", "The body must be a JSON object.")
    if document.get("version") != "4":
        raise _bad("version", 'must be "4" (Alertmanager\'s webhook format)')
    status = _string(document, "status", "")
    if status not in _STATUSES:
        raise _bad("status", "firing or resolved")
    alerts = document.get("alerts")
    if not isinstance(alerts, list):
        raise _bad("alerts", "required, an array")
    if len(alerts) > MAX_ALERTS:
        raise _bad("alerts", f"at most {MAX_ALERTS} alerts per webhook")
    return WebhookMessage(
        status=status,
        receiver=_string(document, "receiver", ""),
        group_key=_string(document, "groupKey", ""),
        alerts=tuple(_alert(raw, index) for index, raw in enumerate(alerts)),
    )


def severity_of(labels: dict[str, str]) -> str:
    """``labels.severity`` if it is one of ours (case aside), else :data:`DEFAULT_SEVERITY`."""
    severity = labels.get("severity", "").lower()
    return severity if severity in SEVERITIES else DEFAULT_SEVERITY


class AlertmanagerReceiver:
    """
    Route Alertmanager's alerts through the dispatcher, once per fingerprint and status.

    :param dispatcher: Announces them.
    :param rules: Recipients: the rule named like the alert, else ``[alertmanager]``.
    """

    def __init__(self, dispatcher: AlertDispatcher, rules: RuleSet, capacity: int = DEDUPE_CAPACITY) -> None:
        self._dispatcher = dispatcher
        self._rules = rules
        self._capacity = capacity
        #: fingerprint → the last status announced, oldest first.
        self._last: OrderedDict[str, str] = OrderedDict()

    def receive(self, body: bytes) -> dict[str, Any]:
        """
        Announce each new alert of a webhook body.

        :return: ``{"received", "announced", "duplicates"}`` counts.
        :raise ApiError: ``BAD_REQUEST`` for a body that is not a version 4 webhook;
            nothing is announced then.
        """
        message = parse_webhook(body)
        announced = 0
        for alert in message.alerts:
            if self._last.get(alert.fingerprint) == alert.status:
                continue
            self._remember(alert.fingerprint, alert.status)
            self._announce(alert)
            announced += 1
        received = len(message.alerts)
        return {"received": received, "announced": announced, "duplicates": received - announced}

    def _remember(self, fingerprint: str, status: str) -> None:
        self._last[fingerprint] = status
        self._last.move_to_end(fingerprint)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)

    def _announce(self, received: WebhookAlert) -> None:
        labels, annotations = received.labels, received.annotations
        name = labels["alertname"]
        rule = self._rules.by_name(name)
        recipients = rule.notify if rule is not None else self._rules.alertmanager
        alert = Alert(
            key=f"alertmanager:{received.fingerprint}",
            name=name,
            severity=severity_of(labels),
            status=received.status,
            source="alertmanager",
            started_at=received.starts_at,
            resolved_at=received.ends_at if received.status == "resolved" else None,
            measure=labels.get("measure") or name,
            value=annotations.get("value") or annotations.get("summary"),
            threshold=annotations.get("threshold"),
            labels=labels,
            annotations=annotations,
        )
        self._dispatcher.announce(alert, recipients)

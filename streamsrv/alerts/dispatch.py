# -*- test-case-name: tests.test_alerts_service,tests.test_alerts_alertmanager -*-
"""Announcing alerts: ``system`` events, notifications, the firing gauge and the recent history.

An :class:`Alert` fired or resolved (by a rule of this daemon, or received
from Alertmanager) is announced by :meth:`AlertDispatcher.announce`: an
``alert.firing`` / ``alert.resolved`` event on the hub's ``system`` channel,
a notification to the rule's recipients through the injected *notify*
callable (template ``{template}-firing`` or ``{template}-resolved``, urgent
for critical alerts), and the alert kept in the history ``GET
/api/v1/alerts`` lists (firing now, and the latest resolved).  A failing
*notify* is logged and never reaches the caller.  This module never imports
the web layer or the notifications package (it is handed callables), and
never blocks: *notify* returns a Deferred it does not wait for.
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamsrv.alerts.engine import FIRING, RESOLVED
from streamsrv.alerts.rules import Notify

__all__ = [
    "EVENT_FIRING",
    "EVENT_RESOLVED",
    "Alert",
    "AlertDispatcher",
    "Notifier",
    "Publisher",
    "rfc3339",
]

log = Logger()

#: The event types on the ``system`` channel.
EVENT_FIRING: Final = "alert.firing"
EVENT_RESOLVED: Final = "alert.resolved"

#: Resolved alerts kept for ``GET /api/v1/alerts``, newest first.
RESOLVED_KEPT: Final = 100

#: What sends a notification: ``notify(template, user_ids, channels, data, priority)``
#: (the notifications component's entry point); fires once it is queued.
Notifier = Callable[[str, Sequence[str], Sequence[str], Mapping[str, Any], str], "Deferred[Any]"]

#: What publishes an event on a hub channel: ``publish(channel, event)``.
Publisher = Callable[[str, Mapping[str, Any]], None]


def rfc3339(seconds: float) -> str:
    """*seconds* since the epoch as an RFC 3339 UTC time (``2026-01-01T10:00:00Z``)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """
    One alert as it is announced and listed.

    :ivar key: What identifies it while it fires: ``rule:{name}``, or
        ``alertmanager:{fingerprint}``.
    :ivar name: The rule's name, or Alertmanager's ``alertname``.
    :ivar status: ``firing`` or ``resolved``.
    :ivar source: ``rule`` or ``alertmanager``.
    :ivar started_at: RFC 3339.
    :ivar resolved_at: RFC 3339 once resolved.
    :ivar measure: The measure (a rule's), or what Alertmanager's labels say.
    :ivar value: The value that made it fire or resolve (``None``: unknown).
    :ivar threshold: The rule's threshold (``None``: unknown).
    :ivar labels: Alertmanager's labels (empty for a rule).
    :ivar annotations: Alertmanager's annotations (empty for a rule).
    """

    key: str
    name: str
    severity: str
    status: str
    source: str
    started_at: str
    resolved_at: str | None = None
    measure: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self, host: str) -> dict[str, Any]:
        """The event's fields and the notification's data (the templates' variables)."""
        data: dict[str, Any] = {
            "alert": self.name,
            "status": self.status,
            "severity": self.severity,
            "source": self.source,
            "measure": self.measure if self.measure is not None else "",
            "value": self.value if self.value is not None else "",
            "threshold": self.threshold if self.threshold is not None else "",
            "started_at": self.started_at,
            "host": host,
        }
        if self.resolved_at is not None:
            data["resolved_at"] = self.resolved_at
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data


class AlertDispatcher:
    """
    Announce alerts and remember them.

    :param publish: Publishes an event on a hub channel (``hub.publish``).
    :param system_channel: The channel of alert events (``SYSTEM_CHANNEL``).
    :param notify: Sends a notification; ``None``: no notifications.
    :param host: Names this host in events and notifications.
    :param on_change: Told ``(alert)`` after each announcement (the gauge).
    """

    def __init__(
        self,
        *,
        publish: Publisher,
        system_channel: str,
        notify: Notifier | None,
        host: str,
        on_change: Callable[[Alert], None] | None = None,
        resolved_kept: int = RESOLVED_KEPT,
    ) -> None:
        self._publish = publish
        self._channel = system_channel
        self._notify = notify
        self.host = host
        self._on_change = on_change
        self._firing: dict[str, Alert] = {}
        self._resolved: deque[Alert] = deque(maxlen=resolved_kept)

    def firing(self) -> list[Alert]:
        """The alerts firing now, oldest first."""
        return sorted(self._firing.values(), key=lambda a: a.started_at)

    def resolved(self) -> list[Alert]:
        """The latest resolved alerts, newest first."""
        return list(self._resolved)

    def forget(self, key: str) -> None:
        """Drop a firing alert without announcing anything (another evaluator took over)."""
        self._firing.pop(key, None)

    def announce(self, alert: Alert, recipients: Notify | None) -> None:
        """Publish *alert*'s event, notify *recipients*, and record it; never raises for a notify failure."""
        if alert.status == FIRING:
            self._firing[alert.key] = alert
        else:
            fired = self._firing.pop(alert.key, None)
            if fired is not None and alert.started_at != fired.started_at:
                alert = replace(alert, started_at=fired.started_at)
            self._resolved.appendleft(alert)
        data = alert.to_json(self.host)
        kind = EVENT_FIRING if alert.status == FIRING else EVENT_RESOLVED
        try:
            self._publish(self._channel, {"type": kind, **data})
        except Exception:
            log.failure("publishing {kind} of alert {alert} failed", kind=kind, alert=alert.name)
        if self._on_change is not None:
            self._on_change(alert)
        if recipients is not None and self._notify is not None:
            self._send(alert, recipients, data)

    def _send(self, alert: Alert, recipients: Notify, data: Mapping[str, Any]) -> None:
        template = f"{recipients.template}-{'firing' if alert.status == FIRING else RESOLVED}"
        priority = "urgent" if alert.severity == "critical" else "normal"
        assert self._notify is not None
        try:
            d = self._notify(template, recipients.user_ids, recipients.channels, data, priority)
        except Exception:
            log.failure("notifying {alert} ({status}) failed", alert=alert.name, status=alert.status)
            return

        def failed(failure: Failure) -> None:
            log.failure("notifying {alert} ({status}) failed", failure, alert=alert.name, status=alert.status)

        d.addErrback(failed)

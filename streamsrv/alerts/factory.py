# -*- test-case-name: tests.test_alerts_service -*-
"""Build the alerts component from its dependencies: :func:`make_alerts`, called by the composition root.

It reads the rules file, chooses the lease (Redis when a connection is
given, else a SQLite file in the data dir, else none needed), registers the
``streamsrv_alerts_firing`` gauge on the daemon's registry, and returns an
:class:`Alerts`: the evaluator service to start, and what the two HTTP routes
call (:meth:`Alerts.status`, :meth:`Alerts.ingest`).  Every dependency is
passed in (:func:`add_alerts` maps the daemon's settings onto them); this
module never imports the web layer or the notifications package, and never
uses the global reactor.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from prometheus_client import Gauge
from twisted.application.service import IServiceCollection
from twisted.internet.interfaces import IReactorTime

from streamsrv.alerts.alertmanager import AlertmanagerReceiver
from streamsrv.alerts.dispatch import AlertDispatcher, Notifier, Publisher
from streamsrv.alerts.lease import ILease, RedisLease, SoleLease, SqliteLease
from streamsrv.alerts.measures import (
    MEASURES,
    PROBE_DISK_FREE,
    PROBE_REACTOR_LAG,
    MetricsSnapshot,
    take_snapshot,
)
from streamsrv.alerts.rules import RulesError, RuleSet, default_rules_file, load_rules
from streamsrv.alerts.service import DEFAULT_INTERVAL_S, FIRING_GAUGE, AlertEvaluator
from streamsrv.config import Settings
from streamsrv.events.hub import SYSTEM_CHANNEL
from streamsrv.threads import IThreads, threads_for

__all__ = [
    "LEASE_FILENAME",
    "Alerts",
    "add_alerts",
    "alert_rules_problems",
    "disk_free_probe",
    "make_alerts",
    "rules_of",
]

#: The SQLite file of the lease, in the data dir.
LEASE_FILENAME: Final = "alerts.sqlite3"

#: The lease lasts this many intervals unless renewed (one late evaluation does not lose it).
LEASE_INTERVALS: Final = 3


class Alerts:
    """
    The alerts component: its evaluator service, and what its routes answer.

    :ivar evaluator: The :class:`AlertEvaluator` (an ``IService``) to start.
    :ivar dispatcher: Announces and remembers alerts.
    :ivar receiver: Routes Alertmanager's webhooks.
    """

    def __init__(
        self, evaluator: AlertEvaluator, dispatcher: AlertDispatcher, receiver: AlertmanagerReceiver
    ) -> None:
        self.evaluator = evaluator
        self.dispatcher = dispatcher
        self.receiver = receiver

    @property
    def rules(self) -> RuleSet:
        """The rules evaluated."""
        return self.evaluator.rules

    def status(self) -> dict[str, Any]:
        """What ``GET /api/v1/alerts`` answers: rules with their state, firing and recent resolved alerts."""
        host = self.dispatcher.host
        rules = []
        for rule in self.rules.rules:
            state = self.evaluator.state_of(rule.name)
            rules.append(
                {
                    **rule.to_json(),
                    "state": state.state,
                    "value": state.value,
                    "active_since": state.active_since,
                    "fired_at": state.fired_at,
                    "resolved_at": state.resolved_at,
                    "evaluated_at": state.evaluated_at,
                }
            )
        return {
            "evaluator": {
                "leading": self.evaluator.leading,
                "interval_s": self.evaluator.interval_s,
                "host": host,
            },
            "rules": rules,
            "firing": [alert.to_json(host) for alert in self.dispatcher.firing()],
            "resolved": [alert.to_json(host) for alert in self.dispatcher.resolved()],
        }

    def ingest(self, body: bytes) -> dict[str, Any]:
        """What ``POST /api/v1/alerts/alertmanager`` answers; raises ``ApiError`` for a bad webhook."""
        return self.receiver.receive(body)


def _lease(
    redis: Any, data_dir: Path | None, threads: IThreads, clock: IReactorTime, ttl_s: float, key_prefix: str
) -> ILease:
    if redis is not None:
        return RedisLease(redis, clock, f"{key_prefix}alerts:lease", ttl_s)
    if data_dir is not None:
        return SqliteLease(data_dir / LEASE_FILENAME, threads, clock, ttl_s)
    return SoleLease()


def make_alerts(
    *,
    registry: Any,
    clock: IReactorTime,
    publish: Publisher,
    system_channel: str,
    notify: Notifier | None,
    threads: IThreads,
    rules_file: Path | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
    data_dir: Path | None = None,
    redis: Any = None,
    probes: Mapping[str, Callable[[], float]] | None = None,
    host: str | None = None,
    key_prefix: str = "streamsrv:",
    rules: RuleSet | None = None,
) -> Alerts:
    """
    The alerts component, ready to be started (``alerts.evaluator.setServiceParent(root)``).

    :param registry: The daemon's ``CollectorRegistry``: read by the measures,
        and where ``streamsrv_alerts_firing`` is registered.
    :param clock: The reactor.
    :param publish: ``hub.publish``.
    :param system_channel: ``streamsrv.events.hub.SYSTEM_CHANNEL``.
    :param notify: ``notify(template, user_ids, channels, data, priority) -> Deferred``,
        or ``None`` while no notifications component is wired (events only).
    :param threads: Runs the SQLite lease's blocking calls.
    :param rules_file: ``STREAMSRV_ALERT_RULES_FILE`` (``None``: the packaged ``etc/alerts.toml``).
    :param interval_s: ``STREAMSRV_ALERT_INTERVAL_S``.
    :param data_dir: ``STREAMSRV_DATA_DIR`` (the SQLite lease, without Redis).
    :param redis: The txredisapi connection (``RedisService.connection``), or ``None``.
    :param probes: Values the registry lacks: ``reactor_lag_seconds``
        (``ReactorLagMonitor.lag_s``) and ``disk_free_ratio``.
    :param host: Names this host in events (default: the host name).
    :param rules: Rules already loaded (tests); *rules_file* is then not read.
    :raise RulesError: If the rules file is unreadable or invalid (every problem listed).
    """
    if rules is None:
        rules = load_rules(rules_file if rules_file is not None else default_rules_file(), MEASURES)
    gauge = Gauge(
        FIRING_GAUGE, "1 while the alert rule fires, else 0", ["rule", "severity"], registry=registry
    )
    dispatcher = AlertDispatcher(
        publish=publish, system_channel=system_channel, notify=notify, host=host or socket.gethostname()
    )

    def snapshot() -> MetricsSnapshot:
        return take_snapshot(registry, clock.seconds(), probes)

    evaluator = AlertEvaluator(
        rules=rules,
        snapshot=snapshot,
        dispatcher=dispatcher,
        lease=_lease(redis, data_dir, threads, clock, LEASE_INTERVALS * interval_s, key_prefix),
        clock=clock,
        interval_s=interval_s,
        gauge=gauge,
    )
    return Alerts(evaluator, dispatcher, AlertmanagerReceiver(dispatcher, rules))


def rules_of(settings: Settings) -> RuleSet:
    """
    The rules ``STREAMSRV_ALERT_RULES_FILE`` names (else the packaged file), read now (blocking).

    :raise RulesError: Listing every problem.
    """
    path = settings.alert_rules_file if settings.alert_rules_file is not None else default_rules_file()
    return load_rules(path, MEASURES)


def alert_rules_problems(settings: Settings) -> list[str]:
    """
    Every problem of the rules file, each ``STREAMSRV_ALERT_RULES_FILE: rule 'x': field: what``.

    For ``load_settings(checks=...)``: ``streamsrv config check`` and the
    daemon's start report an invalid rules file with the rest of the
    configuration, before anything is built or printed.
    """
    try:
        rules_of(settings)
    except RulesError as e:
        return [f"STREAMSRV_ALERT_RULES_FILE: {problem}" for problem in e.problems]
    return []


def disk_free_probe(path: Path) -> Callable[[], float]:
    """The ``disk_free_ratio`` probe: free over total space of the disk holding *path* (one ``statvfs``)."""

    def probe() -> float:
        usage = shutil.disk_usage(path)
        return usage.free / usage.total if usage.total else 0.0

    return probe


class _LagProbe:
    """The ``reactor_lag_seconds`` probe: the lag monitor's worst lag of its last window."""

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor

    def __call__(self) -> float:
        return float(self._monitor.lag_s)


def add_alerts(
    settings: Settings,
    reactor: Any,
    parent: IServiceCollection,
    metrics: Any,
    hub: Any,
    redis: Any,
    lag: Any,
    notify: Notifier | None = None,
) -> Alerts:
    """The daemon's alerts from its settings, the evaluator a service of *parent*.

    :param metrics: the daemon's :class:`~streamsrv.health.metrics.Metrics` (its registry is read).
    :param redis: the Redis connection (the evaluator's lease), or ``None`` (SQLite in the data dir).
    :param hub: the event hub (``alert.*`` events go to its ``system`` channel).
    :param lag: the :class:`~streamsrv.health.checks.ReactorLagMonitor`.
    :param notify: the notifications component's sender (``None``: events only).
    :raise RulesError: for an unreadable or invalid rules file (a ``ValueError``).
    """
    alerts = make_alerts(
        registry=metrics.registry,
        clock=reactor,
        publish=hub.publish,
        system_channel=SYSTEM_CHANNEL,
        notify=notify,
        threads=threads_for(reactor),
        rules_file=settings.alert_rules_file,
        interval_s=settings.alert_interval_s,
        data_dir=settings.data_dir,
        redis=redis,
        probes={PROBE_REACTOR_LAG: _LagProbe(lag), PROBE_DISK_FREE: disk_free_probe(settings.data_dir)},
    )
    alerts.evaluator.setServiceParent(parent)
    return alerts

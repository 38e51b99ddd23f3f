# -*- test-case-name: tests.test_alerts_service -*-
"""The alert evaluator: every ``STREAMSRV_ALERT_INTERVAL_S`` seconds, every rule, by one process at a time.

:class:`AlertEvaluator` is a :class:`~streamsrv.service.PeriodicService`.
Each call first takes or renews the evaluator's lease; a process that does
not hold it evaluates nothing (and, if it held it before, forgets its alerts
without announcing them: the new holder speaks for them now).  The holder
takes a :class:`~streamsrv.alerts.measures.MetricsSnapshot`, computes each
rule's measure against the previous snapshot, steps each rule's state
machine, hands each firing and resolution to the
:class:`~streamsrv.alerts.dispatch.AlertDispatcher` (so a firing alert is
announced and notified once, not at every evaluation), and keeps the
``streamsrv_alerts_firing{rule,severity}`` gauge.  On stop it gives the lease
up.  This module never uses the global reactor (the clock is injected),
never lets one rule's error stop the others, and never takes a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.alerts.dispatch import Alert, AlertDispatcher, rfc3339
from streamsrv.alerts.engine import FIRING, AlertState, Transition, step
from streamsrv.alerts.lease import ILease
from streamsrv.alerts.measures import MEASURES, Measure, MetricsSnapshot
from streamsrv.alerts.rules import Rule, RuleSet
from streamsrv.service import PeriodicService

__all__ = ["DEFAULT_INTERVAL_S", "FIRING_GAUGE", "AlertEvaluator"]

log = Logger()

#: ``STREAMSRV_ALERT_INTERVAL_S`` when unset.
DEFAULT_INTERVAL_S: Final = 15.0

#: The gauge's name: 1 while a rule fires (in the evaluating process), else 0.
FIRING_GAUGE: Final = "streamsrv_alerts_firing"


class AlertEvaluator(PeriodicService):
    """
    Evaluate *rules* every *interval_s* seconds while holding *lease*.

    :param rules: The rules.
    :param snapshot: Takes a snapshot of the metrics now.
    :param dispatcher: Announces firings and resolutions.
    :param lease: One evaluator at a time.
    :param clock: Times the evaluations and tells the time.
    :param gauge: The ``streamsrv_alerts_firing`` gauge (labels ``rule``,
        ``severity``), or ``None``.
    :param measures: The measures by name.
    """

    def __init__(
        self,
        *,
        rules: RuleSet,
        snapshot: Callable[[], MetricsSnapshot],
        dispatcher: AlertDispatcher,
        lease: ILease,
        clock: IReactorTime,
        interval_s: float = DEFAULT_INTERVAL_S,
        gauge: Any = None,
        measures: Mapping[str, Measure] = MEASURES,
    ) -> None:
        super().__init__(
            interval_s, self.evaluate, clock=clock, now=False, name="alerts", what="alert evaluation"
        )
        self.rules = rules
        self._snapshot = snapshot
        self._dispatcher = dispatcher
        self._lease = lease
        self._measures = measures
        self._gauge = gauge
        self._states: dict[str, AlertState] = {rule.name: AlertState() for rule in rules.rules}
        self._previous: MetricsSnapshot | None = None
        #: Whether this process held the lease at its last evaluation.
        self.leading = False
        for rule in rules.rules:
            self._set_gauge(rule, False)

    def state_of(self, name: str) -> AlertState:
        """The state of the rule called *name* (as this process sees it)."""
        return self._states[name]

    async def evaluate(self) -> None:
        """One evaluation: the lease, a snapshot, every rule."""
        try:
            held = await self._lease.acquire()
        except Exception:
            log.failure("the alert evaluator's lease could not be taken or renewed; skipping this evaluation")
            held = False
        if not held:
            if self.leading:
                log.info("another process evaluates alerts now")
                self._step_down()
            return
        if not self.leading:
            log.info("this process evaluates alerts now ({rules} rules)", rules=len(self.rules.rules))
            self.leading = True
        current = self._snapshot()
        previous, self._previous = self._previous, current
        for rule in self.rules.rules:
            try:
                self._evaluate_rule(rule, previous, current)
            except Exception:
                log.failure("evaluating alert rule {rule} failed", rule=rule.name)

    def _evaluate_rule(self, rule: Rule, previous: MetricsSnapshot | None, current: MetricsSnapshot) -> None:
        value = self._measures[rule.measure].compute(previous, current)
        state, transition = step(rule, self._states[rule.name], current.at, value)
        self._states[rule.name] = state
        if transition is not None:
            self._announce(transition)

    def _announce(self, transition: Transition) -> None:
        rule, state = transition.rule, transition.state
        started = state.active_since if state.active_since is not None else state.fired_at
        alert = Alert(
            key=f"rule:{rule.name}",
            name=rule.name,
            severity=rule.severity,
            status=transition.kind,
            source="rule",
            started_at=rfc3339(started if started is not None else transition.at),
            resolved_at=None if transition.kind == FIRING else rfc3339(transition.at),
            measure=rule.measure,
            value=transition.value,
            threshold=rule.threshold,
        )
        log.info(
            "alert {alert} {status}: {measure} = {value} (threshold {threshold})",
            alert=rule.name,
            status=transition.kind,
            measure=rule.measure,
            value=transition.value,
            threshold=rule.threshold,
        )
        self._dispatcher.announce(alert, rule.notify)
        self._set_gauge(rule, transition.kind == FIRING)

    def _set_gauge(self, rule: Rule, firing: bool) -> None:
        if self._gauge is not None:
            self._gauge.labels(rule.name, rule.severity).set(1 if firing else 0)

    def _step_down(self) -> None:
        """Forget every alert without announcing: the lease's new holder evaluates from now on."""
        self.leading = False
        self._previous = None
        for rule in self.rules.rules:
            self._states[rule.name] = AlertState()
            self._dispatcher.forget(f"rule:{rule.name}")
            self._set_gauge(rule, False)

    def stopService(self) -> Deferred[None]:
        """Stop evaluating, then give the lease up so another process takes over at once."""
        stopped = super().stopService()

        async def release(_: object) -> None:
            if self.leading:
                self.leading = False
                try:
                    await self._lease.release()
                except Exception:
                    log.failure("releasing the alert evaluator's lease failed (it will expire)")

        return stopped.addCallback(lambda result: Deferred.fromCoroutine(release(result)))

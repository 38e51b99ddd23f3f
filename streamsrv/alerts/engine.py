# -*- test-case-name: tests.test_alerts_engine -*-
"""The state machine of one alert rule: inactive → pending → firing → resolved, with hysteresis.

:func:`step` takes a rule, its current :class:`AlertState`, the time and the
measure's value, and returns the next state and, when the alert fires or
resolves, the :class:`Transition` to announce.  The condition must hold at
every evaluation for the rule's ``for`` seconds before the alert fires; a
firing alert resolves only once the value reaches the rule's ``clear``
threshold, so a value flapping around the threshold fires once and resolves
once.  A resolved alert is inactive again at the next evaluation (or pending,
or firing, if the condition holds again).  A value of ``None`` (no data)
abandons a pending alert and leaves a firing one firing.  Pure: this module
never reads a clock, the reactor or any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from streamsrv.alerts.rules import Rule

__all__ = ["FIRING", "INACTIVE", "PENDING", "RESOLVED", "STATES", "AlertState", "Transition", "step"]

INACTIVE: Final = "inactive"
PENDING: Final = "pending"
FIRING: Final = "firing"
RESOLVED: Final = "resolved"

#: Every state, in lifecycle order.
STATES: Final = (INACTIVE, PENDING, FIRING, RESOLVED)


@dataclass(frozen=True)
class AlertState:
    """
    Where one rule stands.

    :ivar state: One of :data:`STATES`.
    :ivar active_since: When the condition started holding (pending and
        firing), else ``None``.
    :ivar fired_at: When it last fired (kept once resolved).
    :ivar resolved_at: When it last resolved.
    :ivar value: The measure's value at the last evaluation (``None``: no data).
    :ivar evaluated_at: When it was last evaluated.
    """

    state: str = INACTIVE
    active_since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    evaluated_at: float | None = None


@dataclass(frozen=True)
class Transition:
    """
    An alert fired or resolved: what is announced.

    :ivar kind: :data:`FIRING` or :data:`RESOLVED`.
    :ivar at: The evaluation's time.
    :ivar value: The value that made it happen.
    :ivar state: The rule's state after it.
    """

    rule: Rule
    kind: str
    at: float
    value: float
    state: AlertState


def step(
    rule: Rule, state: AlertState, now: float, value: float | None
) -> tuple[AlertState, Transition | None]:
    """
    Evaluate *rule* once.

    :param state: Its state before this evaluation.
    :param now: The evaluation's time (seconds, never going back).
    :param value: The measure's value now, or ``None`` for no data.
    :return: The new state, and the transition to announce if it fired or resolved.
    """
    seen = replace(state, value=value, evaluated_at=now)
    if value is None:
        if state.state == FIRING:
            return seen, None
        return replace(seen, state=INACTIVE, active_since=None), None
    if state.state == FIRING:
        if not rule.cleared(value):
            return seen, None
        after = replace(seen, state=RESOLVED, active_since=None, resolved_at=now)
        return after, Transition(rule, RESOLVED, now, value, after)
    if not rule.condition(value):
        return replace(seen, state=INACTIVE, active_since=None), None
    since = state.active_since if state.state == PENDING and state.active_since is not None else now
    if now - since >= rule.for_s:
        after = replace(seen, state=FIRING, active_since=since, fired_at=now)
        return after, Transition(rule, FIRING, now, value, after)
    return replace(seen, state=PENDING, active_since=since), None

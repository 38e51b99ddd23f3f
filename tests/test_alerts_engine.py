"""Tests for :mod:`streamsrv.alerts.engine`: the per-rule state machine, with hysteresis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.alerts.engine import FIRING, INACTIVE, PENDING, RESOLVED, AlertState, Transition, step
from streamsrv.alerts.rules import Rule


def _rule(for_s: float = 30.0, threshold: float = 0.5, clear: float = 0.3, above: bool = True) -> Rule:
    return Rule("r", "http_5xx_ratio", threshold, above, for_s, clear, "warning")


def _run(rule: Rule, points: list[tuple[float, float | None]]) -> tuple[AlertState, list[Transition]]:
    state, transitions = AlertState(), []
    for now, value in points:
        state, transition = step(rule, state, now, value)
        if transition is not None:
            transitions.append(transition)
    return state, transitions


class StepTests(unittest.TestCase):
    """Single evaluations."""

    def test_pending_then_firing(self) -> None:
        """The condition goes pending, and fires once it has held for ``for`` seconds."""
        rule = _rule(for_s=30)
        state, t = step(rule, AlertState(), 0, 0.9)
        self.assertEqual((state.state, state.active_since, t), (PENDING, 0, None))
        state, t = step(rule, state, 15, 0.9)
        self.assertEqual((state.state, t), (PENDING, None))
        state, t = step(rule, state, 30, 0.9)
        self.assertEqual(state.state, FIRING)
        assert t is not None
        self.assertEqual(
            (t.kind, t.at, t.value, state.fired_at, state.active_since), (FIRING, 30, 0.9, 30, 0)
        )

    def test_zero_for_fires_at_once(self) -> None:
        """A rule with ``for = 0`` fires at the first evaluation where its condition holds."""
        state, t = step(_rule(for_s=0), AlertState(), 5, 0.6)
        self.assertEqual((state.state, t and t.kind), (FIRING, FIRING))

    def test_pending_abandoned(self) -> None:
        """A pending alert whose condition stops holding is inactive again, announcing nothing."""
        rule = _rule()
        state, _ = step(rule, AlertState(), 0, 0.9)
        state, t = step(rule, state, 15, 0.1)
        self.assertEqual((state.state, state.active_since, t), (INACTIVE, None, None))

    def test_hysteresis(self) -> None:
        """A firing alert stays firing between clear and threshold, and resolves at ``clear``."""
        rule = _rule(for_s=0)
        state, _ = step(rule, AlertState(), 0, 0.9)
        state, t = step(rule, state, 15, 0.4)
        self.assertEqual((state.state, t), (FIRING, None))
        state, t = step(rule, state, 30, 0.3)
        self.assertEqual((state.state, state.resolved_at), (RESOLVED, 30))
        assert t is not None
        self.assertEqual(t.kind, RESOLVED)
        state, t = step(rule, state, 45, 0.4)
        self.assertEqual((state.state, t), (INACTIVE, None))

    def test_below_rule(self) -> None:
        """A ``below`` rule fires under its threshold and resolves at or over ``clear``."""
        rule = _rule(for_s=0, threshold=0.1, clear=0.2, above=False)
        state, _ = step(rule, AlertState(), 0, 0.05)
        self.assertEqual(state.state, FIRING)
        state, _ = step(rule, state, 15, 0.15)
        self.assertEqual(state.state, FIRING)
        state, _ = step(rule, state, 30, 0.2)
        self.assertEqual(state.state, RESOLVED)

    def test_no_data(self) -> None:
        """No data abandons a pending alert and leaves a firing one firing."""
        rule = _rule()
        pending, _ = step(rule, AlertState(), 0, 0.9)
        self.assertEqual(step(rule, pending, 15, None)[0].state, INACTIVE)
        firing, _ = step(_rule(for_s=0), AlertState(), 0, 0.9)
        state, t = step(rule, firing, 15, None)
        self.assertEqual((state.state, state.value, t), (FIRING, None, None))

    def test_flapping_fires_once_resolves_once(self) -> None:
        """A value flapping around the threshold (above ``clear``) fires once; clear resolves it once."""
        rule = _rule(for_s=30, threshold=0.5, clear=0.3)
        points: list[tuple[float, float | None]] = [(t * 15.0, 0.9) for t in range(3)]
        points += [(45 + t * 15.0, 0.51 if t % 2 else 0.49) for t in range(40)]
        points += [(700.0, 0.2), (715.0, 0.49), (730.0, 0.51)]
        state, transitions = _run(rule, points)
        self.assertEqual([t.kind for t in transitions], [FIRING, RESOLVED])
        self.assertEqual(state.state, PENDING)


_values = st.one_of(st.none(), st.floats(0, 1))


class StateMachinePropertyTests(unittest.TestCase):
    """Whatever the sequence of values, the announcements make sense."""

    @given(
        for_s=st.sampled_from([0.0, 15.0, 30.0, 100.0]),
        threshold=st.floats(0.1, 0.9),
        gap=st.floats(0, 0.5),
        above=st.booleans(),
        points=st.lists(st.tuples(st.floats(0.5, 60), _values), max_size=60),
    )
    def test_alternation_for_and_clear(
        self,
        for_s: float,
        threshold: float,
        gap: float,
        above: bool,
        points: list[tuple[float, float | None]],
    ) -> None:
        """Firings and resolutions alternate (firing first); a firing follows ``for`` seconds of
        continuous condition; a resolution happens only at a value on the clear side."""
        rule = _rule(for_s, threshold, threshold - gap if above else threshold + gap, above)
        state, now, run_start, last_kind = AlertState(), 0.0, None, RESOLVED
        for dt, value in points:
            now += dt
            held = value is not None and rule.condition(value)
            if not held:
                run_start = None
            elif run_start is None:
                run_start = now
            state, transition = step(rule, state, now, value)
            if transition is None:
                continue
            self.assertNotEqual(transition.kind, last_kind)
            last_kind = transition.kind
            if transition.kind == FIRING:
                assert run_start is not None
                self.assertTrue(held)
                self.assertGreaterEqual(now - run_start, for_s)
            else:
                assert value is not None
                self.assertTrue(rule.cleared(value))
        self.assertIn(state.state, (INACTIVE, PENDING, FIRING, RESOLVED))

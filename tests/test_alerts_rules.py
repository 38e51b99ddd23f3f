"""Tests for :mod:`streamsrv.alerts.rules`: the rules file into frozen values, every problem named."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.alerts.measures import MEASURES
from streamsrv.alerts.rules import (
    DEFAULT_TEMPLATE,
    Notify,
    Rule,
    RulesError,
    default_rules_file,
    load_rules,
    parse_rules,
)


def _parse(document: dict[str, Any]) -> Any:
    return parse_rules(document, MEASURES)


def _problems(document: dict[str, Any]) -> list[str]:
    try:
        _parse(document)
    except RulesError as e:
        return e.problems
    raise AssertionError("no RulesError")


GOOD = {"name": "errors", "measure": "http_5xx_ratio", "above": 0.05, "for": 60, "clear": 0.02}


class ParseRulesTests(unittest.TestCase):
    """Valid documents become rules; invalid ones list every problem."""

    def test_valid_rule(self) -> None:
        """A complete rule is parsed with its fields, severity defaulting to warning and no notify."""
        rules = _parse({"rules": [GOOD]})
        self.assertEqual(
            rules.rules, (Rule("errors", "http_5xx_ratio", 0.05, True, 60.0, 0.02, "warning", None),)
        )

    def test_clear_defaults_to_threshold(self) -> None:
        """Without ``clear`` the clear threshold is the threshold itself (no hysteresis)."""
        (rule,) = _parse({"rules": [{"name": "r", "measure": "redis_up", "below": 1}]}).rules
        self.assertEqual((rule.clear, rule.above, rule.for_s), (1.0, False, 0.0))

    def test_notify(self) -> None:
        """``notify`` gives template, user ids and channels; the template defaults to ``alert``."""
        document = {"rules": [{**GOOD, "notify": {"user_ids": ["ops"], "channels": ["email", "sms"]}}]}
        (rule,) = _parse(document).rules
        self.assertEqual(rule.notify, Notify(DEFAULT_TEMPLATE, ("ops",), ("email", "sms")))

    def test_alertmanager_table(self) -> None:
        """``[alertmanager] notify`` names the recipients of received alerts."""
        rules = _parse({"alertmanager": {"notify": {"template": "page", "user_ids": ["a", "b"]}}})
        self.assertEqual(rules.alertmanager, Notify("page", ("a", "b"), ()))

    def test_every_problem_at_once(self) -> None:
        """Several bad rules: each problem is listed, naming its rule and field."""
        problems = _problems(
            {
                "rules": [
                    {"name": "a", "measure": "nope", "above": 1},
                    {"name": "b", "measure": "redis_up", "above": 1, "below": 0},
                    {"name": "c", "measure": "redis_up"},
                    {"name": "d", "measure": "http_5xx_ratio", "above": 0.1, "clear": 0.2},
                    {"name": "e", "measure": "redis_up", "below": 1, "clear": 0.5},
                    {"name": "f", "measure": "redis_up", "below": 1, "for": -1},
                    {"name": "g", "measure": "redis_up", "below": 1, "severity": "page"},
                    {"name": "h", "measure": "redis_up", "below": 1, "notify": {"user_ids": []}},
                    {
                        "name": "i",
                        "measure": "redis_up",
                        "below": 1,
                        "notify": {"user_ids": ["x"], "channels": ["fax"]},
                    },
                    {"name": "j", "measure": "redis_up", "below": 1, "colour": "red"},
                ]
            }
        )
        expected = [
            "rule 'a': measure",
            "rule 'b': above/below",
            "rule 'c': above/below",
            "rule 'd': clear",
            "rule 'e': clear",
            "rule 'f': for",
            "rule 'g': severity",
            "rule 'h': notify.user_ids",
            "rule 'i': notify.channels",
            "rule 'j': colour: unknown field",
        ]
        self.assertEqual(len(problems), len(expected), problems)
        for prefix, problem in zip(expected, problems, strict=True):
            self.assertTrue(problem.startswith(prefix), (prefix, problem))

    def test_duplicate_and_bad_names(self) -> None:
        """A name used twice, and a missing name, are problems."""
        problems = _problems({"rules": [GOOD, GOOD, {"measure": "redis_up", "below": 1}]})
        self.assertEqual(problems[0], "rule 'errors': name: used by an earlier rule")
        self.assertTrue(problems[1].startswith("rule #3: name:"))

    def test_booleans_are_not_numbers(self) -> None:
        """TOML ``true`` is not a threshold."""
        self.assertIn(
            "rule 'r': above: must be a number",
            _problems({"rules": [{"name": "r", "measure": "redis_up", "above": True}]}),
        )

    def test_unknown_top_level_table(self) -> None:
        """A misspelt top-level table is reported rather than ignored."""
        self.assertEqual(_problems({"rule": []})[0].split(":")[0], "rule")

    @given(
        threshold=st.floats(-1e6, 1e6),
        clear=st.floats(-1e6, 1e6),
        above=st.booleans(),
        for_s=st.floats(-100, 1e5),
    )
    def test_accepted_rules_are_consistent(
        self, threshold: float, clear: float, above: bool, for_s: float
    ) -> None:
        """Any numbers: an accepted rule has ``for`` >= 0 and clear on the right side; others are refused."""
        raw = {
            "name": "r",
            "measure": "active_streams",
            "above" if above else "below": threshold,
            "clear": clear,
            "for": for_s,
        }
        try:
            (rule,) = _parse({"rules": [raw]}).rules
        except RulesError as e:
            self.assertTrue(all(p.startswith("rule 'r': ") for p in e.problems))
            self.assertTrue(for_s < 0 or (clear > threshold if above else clear < threshold))
            return
        self.assertGreaterEqual(rule.for_s, 0)
        self.assertTrue(rule.clear <= rule.threshold if above else rule.clear >= rule.threshold)
        # The clear side and the condition never overlap.
        self.assertFalse(rule.condition(rule.clear))


class LoadRulesTests(unittest.TestCase):
    """Reading the file."""

    def test_shipped_rules_are_valid(self) -> None:
        """``etc/alerts.toml`` parses, and uses every measure at least once."""
        rules = load_rules(default_rules_file(), MEASURES)
        self.assertEqual({rule.measure for rule in rules.rules}, set(MEASURES))

    def test_unreadable_and_bad_toml(self) -> None:
        """A missing file and a file that is not TOML are one problem each."""
        missing = Path(self.mktemp())
        self.assertEqual(len(self.assertRaises(RulesError, load_rules, missing, MEASURES).problems), 1)
        missing.write_text("[[rules]\n")
        error = self.assertRaises(RulesError, load_rules, missing, MEASURES)
        self.assertIn("not valid TOML", error.problems[0])

    def test_example_in_docs_parses(self) -> None:
        """The first TOML example of docs/modules/alerts.md is a valid rules file."""
        text = (Path(__file__).parents[1] / "docs" / "modules" / "alerts.md").read_text(encoding="utf-8")
        example = text.split("```toml\n", 1)[1].split("```", 1)[0]
        parse_rules(tomllib.loads(example), MEASURES)

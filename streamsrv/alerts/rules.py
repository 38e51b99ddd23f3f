# -*- test-case-name: tests.test_alerts_rules -*-
"""The alert rules file (``STREAMSRV_ALERT_RULES_FILE``, TOML) parsed into frozen values.

A rules file is a list of ``[[rules]]`` tables (``name``, ``measure``,
``above`` or ``below``, ``for``, ``clear``, ``severity``, ``notify``) and an
optional ``[alertmanager]`` table giving the recipients of alerts received
from Prometheus Alertmanager.  :func:`parse_rules` validates a decoded
document and lists every problem at once, each naming the rule and the field;
:func:`load_rules` reads the file first.  This module is pure: it never
touches the reactor, a request or anything but the one file it is asked to
read, and it never accepts a rule it cannot evaluate.
"""

from __future__ import annotations

import math
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CHANNELS",
    "DEFAULT_TEMPLATE",
    "RULE_NAME_PATTERN",
    "SEVERITIES",
    "Notify",
    "Rule",
    "RuleSet",
    "RulesError",
    "default_rules_file",
    "load_rules",
    "parse_rules",
]

#: The severities a rule may carry, least urgent first.
SEVERITIES: Final = ("info", "warning", "critical")

#: The notification channels a rule may name (those of the notifications component).
CHANNELS: Final = ("websocket", "email", "sms", "push")

#: The template prefix when ``notify.template`` is left out: ``alert-firing`` and
#: ``alert-resolved`` are shipped in ``etc/notifications/``.
DEFAULT_TEMPLATE: Final = "alert"

#: A rule's name: what the metric label, the events and ``GET /api/v1/alerts`` carry.
RULE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", re.ASCII)

#: A template prefix: a notification template's name without its ``-firing``/``-resolved``.
_TEMPLATE_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)

#: Most recipients one rule may name (a rule pages operators, not an audience).
MAX_RECIPIENTS: Final = 100

#: Most rules one file may hold.
MAX_RULES: Final = 500

_RULE_KEYS: Final = frozenset({"name", "measure", "above", "below", "for", "clear", "severity", "notify"})
_NOTIFY_KEYS: Final = frozenset({"template", "user_ids", "channels"})
_TOP_KEYS: Final = frozenset({"rules", "alertmanager"})
_ALERTMANAGER_KEYS: Final = frozenset({"notify"})

_CHECKOUT_FILE: Final = Path(__file__).resolve().parents[2] / "etc" / "alerts.toml"
_INSTALLED_FILE: Final = Path("share") / "streamsrv" / "alerts.toml"


class RulesError(ValueError):
    """
    The rules cannot be used.

    :ivar problems: Every problem found, each naming the rule (or table) and
        the field.  ``str(error)`` is them joined by newlines.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Notify:
    """
    Who hears of an alert, and how.

    :ivar template: The templates' prefix: ``{template}-firing`` when the
        alert fires, ``{template}-resolved`` when it resolves.
    :ivar user_ids: The operators to reach (streamsrv keeps no user directory).
    :ivar channels: The channels to use; empty: each user's enabled channels.
    """

    template: str
    user_ids: tuple[str, ...]
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """
    One alert rule.

    :ivar name: Unique in its file.
    :ivar measure: A key of :data:`streamsrv.alerts.measures.MEASURES`.
    :ivar threshold: The value the measure is compared with.
    :ivar above: ``True``: the condition is ``value > threshold``; ``False``:
        ``value < threshold``.
    :ivar for_s: Seconds the condition must hold before the alert fires.
    :ivar clear: A firing alert resolves once the value is at or past this
        (``value <= clear`` for ``above``, ``>=`` for ``below``); equal to
        the threshold when the file gives none (no hysteresis).
    :ivar severity: One of :data:`SEVERITIES`.
    :ivar notify: The recipients, or ``None`` (events and the metric only).
    """

    name: str
    measure: str
    threshold: float
    above: bool
    for_s: float
    clear: float
    severity: str
    notify: Notify | None = None

    def condition(self, value: float) -> bool:
        """Whether *value* is past the threshold (the alert's condition holds)."""
        return value > self.threshold if self.above else value < self.threshold

    def cleared(self, value: float) -> bool:
        """Whether *value* is at or past the clear threshold (a firing alert resolves)."""
        return value <= self.clear if self.above else value >= self.clear

    def to_json(self) -> dict[str, Any]:
        """The rule as ``GET /api/v1/alerts`` shows it (recipients left out)."""
        return {
            "name": self.name,
            "measure": self.measure,
            "above" if self.above else "below": self.threshold,
            "for": self.for_s,
            "clear": self.clear,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class RuleSet:
    """
    A whole rules file.

    :ivar rules: In file order.
    :ivar alertmanager: Recipients of alerts from Alertmanager whose
        ``alertname`` matches no rule here (``None``: events only).
    """

    rules: tuple[Rule, ...] = ()
    alertmanager: Notify | None = None

    def by_name(self, name: str) -> Rule | None:
        """The rule called *name*, if any."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None


def default_rules_file() -> Path:
    """
    The packaged rules: ``etc/alerts.toml`` of a checkout (or an editable
    install), else ``<prefix>/share/streamsrv/alerts.toml`` where ``pip
    install`` puts it.
    """
    if _CHECKOUT_FILE.is_file():
        return _CHECKOUT_FILE
    return Path(sys.prefix) / _INSTALLED_FILE


def load_rules(path: Path, measures: Iterable[str]) -> RuleSet:
    """
    Read and validate the rules file at *path*.

    This reads a file: call it at start-up or off the reactor thread.

    :param measures: The measure names a rule may use.
    :raise RulesError: Listing every problem (an unreadable file or bad TOML is one).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RulesError([f"alert rules file: cannot read it ({e.strerror})"]) from None
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RulesError(["alert rules file: not UTF-8"]) from None
    except tomllib.TOMLDecodeError as e:
        raise RulesError([f"alert rules file: not valid TOML ({e})"]) from None
    return parse_rules(document, measures)


def parse_rules(document: Mapping[str, Any], measures: Iterable[str]) -> RuleSet:
    """
    Validate a decoded rules document into a :class:`RuleSet`.

    :param measures: The measure names a rule may use.
    :raise RulesError: Listing every problem, each as ``rule 'name': field: what``.
    """
    known = frozenset(measures)
    problems: list[str] = []
    for key in sorted(set(document) - _TOP_KEYS):
        problems.append(f"{key}: unknown table (expected [[rules]] and [alertmanager])")
    raw_rules = document.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        problems.append("rules: must be an array of tables ([[rules]])")
        raw_rules = []
    if len(raw_rules) > MAX_RULES:
        problems.append(f"rules: more than {MAX_RULES} rules")
        raw_rules = raw_rules[:MAX_RULES]
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _rule(raw, index, known, problems)
        if rule is None:
            continue
        if rule.name in seen:
            problems.append(f"rule {rule.name!r}: name: used by an earlier rule")
        seen.add(rule.name)
        rules.append(rule)
    alertmanager = _alertmanager(document.get("alertmanager"), problems)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), alertmanager)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _rule(raw: Mapping[str, Any], index: int, measures: frozenset[str], problems: list[str]) -> Rule | None:
    name = raw.get("name")
    if isinstance(name, str) and RULE_NAME_PATTERN.fullmatch(name):
        where = f"rule {name!r}"
    else:
        where = f"rule #{index + 1}"
        problems.append(
            f"{where}: name: required, 1-128 of A-Z a-z 0-9 _ . : - (starting with a letter or digit)"
        )
    before = len(problems)
    for key in sorted(set(raw) - _RULE_KEYS):
        problems.append(f"{where}: {key}: unknown field")
    measure = raw.get("measure")
    if not isinstance(measure, str) or measure not in measures:
        problems.append(f"{where}: measure: must be one of {', '.join(sorted(measures))}")
    threshold, above = _threshold(raw, where, problems)
    for_s = _number(raw.get("for", 0))
    if for_s is None or for_s < 0:
        problems.append(f"{where}: for: must be a number of seconds >= 0")
        for_s = 0.0
    clear = threshold
    if "clear" in raw:
        given = _number(raw["clear"])
        if given is None:
            problems.append(f"{where}: clear: must be a number")
        elif threshold is not None and (given > threshold if above else given < threshold):
            side = "at or below" if above else "at or above"
            problems.append(f"{where}: clear: must be {side} the threshold ({threshold:g}) for hysteresis")
        else:
            clear = given
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        problems.append(f"{where}: severity: must be one of {', '.join(SEVERITIES)}")
    notify = _notify(raw["notify"], f"{where}: notify", problems) if "notify" in raw else None
    if len(problems) > before or where.startswith("rule #") or threshold is None or clear is None:
        return None
    return Rule(str(name), str(measure), threshold, above, for_s, clear, str(severity), notify)


def _threshold(raw: Mapping[str, Any], where: str, problems: list[str]) -> tuple[float | None, bool]:
    if ("above" in raw) == ("below" in raw):
        problems.append(f"{where}: above/below: give exactly one of them")
        return None, True
    above = "above" in raw
    key = "above" if above else "below"
    threshold = _number(raw[key])
    if threshold is None:
        problems.append(f"{where}: {key}: must be a number")
    return threshold, above


def _notify(raw: object, where: str, problems: list[str]) -> Notify | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table {{template, user_ids, channels}}")
        return None
    before = len(problems)
    for key in sorted(set(raw) - _NOTIFY_KEYS):
        problems.append(f"{where}.{key}: unknown field")
    template = raw.get("template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or not _TEMPLATE_PATTERN.fullmatch(template):
        problems.append(f"{where}.template: a template name prefix (lower case, digits, _ and -)")
    user_ids = raw.get("user_ids")
    if (
        not isinstance(user_ids, list)
        or not 1 <= len(user_ids) <= MAX_RECIPIENTS
        or not all(isinstance(u, str) and 0 < len(u) <= 1024 for u in user_ids)
    ):
        problems.append(f"{where}.user_ids: a list of 1 to {MAX_RECIPIENTS} user ids (non-empty strings)")
    elif len(set(user_ids)) != len(user_ids):
        problems.append(f"{where}.user_ids: a user id is named twice")
    channels = raw.get("channels", [])
    if not isinstance(channels, list) or not all(c in CHANNELS for c in channels):
        problems.append(f"{where}.channels: a list of {', '.join(CHANNELS)}")
    elif len(set(channels)) != len(channels):
        problems.append(f"{where}.channels: a channel is named twice")
    if len(problems) > before:
        return None
    assert isinstance(user_ids, list) and isinstance(channels, list)
    return Notify(str(template), tuple(user_ids), tuple(channels))


def _alertmanager(raw: object, problems: list[str]) -> Notify | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("alertmanager: must be a table")
        return None
    for key in sorted(set(raw) - _ALERTMANAGER_KEYS):
        problems.append(f"alertmanager.{key}: unknown field")
    if "notify" not in raw:
        return None
    return _notify(raw["notify"], "alertmanager.notify", problems)

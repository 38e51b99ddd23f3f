# -*- test-case-name: tests.test_deploy_files -*-
"""The deployment files: systemd units, Dockerfile, Compose, Kubernetes, Prometheus.

Neither Docker nor a running systemd is needed: these tests check what can be
checked without them.  Every ``STREAMSRV_*`` name in the files is a variable the
daemon knows, and each environment they set up is a configuration
:func:`~streamsrv.config.load_settings` accepts; the YAML files parse; the
command lines parse with twistd's own options and the plugin's; the probe and
scrape paths exist; the shutdown timeouts leave the daemon its grace period; and
the alert rules name only metrics and labels a real daemon exports.  Then the
daemon is started the way the systemd unit (socket activation included) and the
Dockerfile start it, and answers.  ``systemd-analyze verify`` runs when it is
installed.

PyYAML is not a dependency of streamsrv, and is not added for this: the files
are written in a small subset of YAML that :func:`load_yaml` reads (block
mappings and sequences, plain and quoted scalars, flow lists of scalars,
literal blocks) and refuses anything else, including the scalars YAML 1.1
would silently turn into something else (``yes``, ``0750``, ``22:22``).
Where PyYAML is installed, its reading of each file must be the same.

Where the real tools are installed (promtool, docker-compose, kubectl,
the kubernetes-validate package), the files also go through their checks;
those tests skip otherwise, except under ``STREAMSRV_TEST_REQUIRE_SERVICES=1``
(CI: ``.ci/run`` installs promtool, docker-compose, kubernetes-validate and
PyYAML), where a missing one of those four fails.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NoReturn

from twisted.scripts.twistd import ServerOptions
from twisted.trial import unittest

from streamsrv.config import KNOWN_VARIABLES, ConfigError, Settings, load_settings
from streamsrv.processes.supervisor import STOP_MARGIN_S
from streamsrv.tap import Options
from tests.services import REQUIRE_ENV, services_required
from tests.test_daemon import (
    CLEAN_EXITS,
    EXIT_TIMEOUT_S,
    TWISTD,
    Daemon,
    DaemonTestCase,
    free_port,
    write_wav,
)
from tests.test_workers_processes import _SOCKET_ACTIVATION

REPO_ROOT = Path(__file__).resolve().parent.parent
ETC = REPO_ROOT / "etc"
ENV_EXAMPLE = ETC / "streamsrv.env.example"
SERVICE_UNIT = ETC / "systemd" / "streamsrv.service"
SOCKET_UNIT = ETC / "systemd" / "streamsrv.socket"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
KUBERNETES = ETC / "kubernetes"
PROMETHEUS_CONFIG = ETC / "prometheus" / "prometheus.yml"
ALERT_RULES = ETC / "prometheus" / "streamsrv-alerts.yml"
ALERT_RULE_TESTS = ETC / "prometheus" / "streamsrv-alerts.test.yml"
DEPLOY_DOC = REPO_ROOT / "docs" / "integration" / "deploy.md"

#: Every file this module vouches for.
DEPLOY_FILES = (
    SERVICE_UNIT,
    SOCKET_UNIT,
    DOCKERFILE,
    DOCKERIGNORE,
    COMPOSE,
    PROMETHEUS_CONFIG,
    ALERT_RULES,
    ALERT_RULE_TESTS,
    DEPLOY_DOC,
    *sorted(KUBERNETES.glob("*.yaml")),
)

#: The YAML files among them.
YAML_FILES = (
    COMPOSE,
    PROMETHEUS_CONFIG,
    ALERT_RULES,
    ALERT_RULE_TESTS,
    *sorted(KUBERNETES.glob("*.yaml")),
)

#: Where the daemon keeps state in every deployment (the staging/production default).
DATA_DIR = "/var/lib/streamsrv"

#: A STREAMSRV_* name in a file (``STREAMSRV_*`` itself, a wildcard in prose, is not one).
_NAME = re.compile(r"\bSTREAMSRV_[A-Z0-9_]*[A-Z0-9]\b")

#: The test suite's own reserved prefix (docs/modules/config.md).
_TEST_PREFIX = "STREAMSRV_TEST_"


# -- a small YAML subset -------------------------------------------------------------


class YamlSubsetError(ValueError):
    """The text is outside the YAML subset :func:`load_yaml` reads."""


_KEY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.\-/]*):(?:\s+|$)(.*)$")
_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?[0-9]+\.[0-9]+$")
#: Plain scalars YAML 1.1 (PyYAML) reads as something else than they look, or that
#: this reader would type differently: octal, hex, binary and sexagesimal numbers,
#: ``1_000``, ``1.`` and ``.5``, dates, exponents, yes/no/on/off booleans.
_AMBIGUOUS = re.compile(
    r"^([-+]?0[0-9_]+|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*"
    r"|[-+]?[0-9.]+[eE][-+]?[0-9]+|[-+]?\.(inf|Inf|INF|nan|NaN|NAN)|[-+]?0[xb][0-9a-fA-F_]+"
    r"|[-+]?[0-9][0-9_]*_[0-9_.]*|[-+]?[0-9][0-9_]*\.|[-+]?\.[0-9_]+"
    r"|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|True|TRUE|False|FALSE|Null|NULL)$"
)
_INDICATORS = tuple("&*!%@`{}|>?,#")


def _strip_comment(text: str) -> str:
    """*text* without a trailing ``# comment``; a quote opens only where a scalar may start."""
    quote: str | None = None
    for i, char in enumerate(text):
        if quote is not None:
            if char == quote:
                if quote == "'" and text[i + 1 : i + 2] == "'":
                    continue
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"" and (i == 0 or text[i - 1] in " [,"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str) -> Any:
    """One scalar (or a flow list of scalars) as PyYAML's safe loader reads it."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise YamlSubsetError(f"unterminated or trailing text after a quoted scalar: {text!r}")
        try:
            value = json.loads(text)
        except ValueError:
            raise YamlSubsetError(f"escape outside the subset in {text!r}") from None
        if not isinstance(value, str):
            raise YamlSubsetError(f"not one quoted scalar: {text!r}")
        return value
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'") or re.search(r"(?<!')'(?!')", text[1:-1]):
            raise YamlSubsetError(f"not one single-quoted scalar: {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlSubsetError(f"unterminated flow sequence: {text!r}")
        inner = text[1:-1].strip()
        return [_scalar(item.strip()) for item in _split_flow(inner)] if inner else []
    if text == "{}":
        return {}
    if text.startswith(_INDICATORS) or text.startswith(("- ", "---")) or ": " in text or " #" in text:
        raise YamlSubsetError(f"plain scalar outside the subset (quote it): {text!r}")
    if text in ("", "~", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if _AMBIGUOUS.match(text):
        raise YamlSubsetError(f"ambiguous plain scalar (quote it): {text!r}")
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _split_flow(inner: str) -> list[str]:
    """Split a flow sequence's inside on the commas outside quotes."""
    items: list[str] = []
    quote: str | None = None
    start = 0
    for i, char in enumerate(inner):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[]{}":
            raise YamlSubsetError(f"nested flow collection: {inner!r}")
        elif char == ",":
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return items


class _YamlParser:
    """Recursive descent over the lines of one document."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0

    def _peek(self) -> tuple[int, str] | None:
        """The next significant line as (indent, text without comment), or None at the end."""
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            stripped = line.lstrip(" ")
            if stripped.startswith("\t"):
                raise YamlSubsetError(f"line {self.pos + 1}: tab in indentation")
            text = _strip_comment(stripped)
            if text:
                return len(line) - len(stripped), text
            self.pos += 1
        return None

    def document(self) -> Any:
        first = self._peek()
        if first is None:
            return None
        value = self._value(first[0])
        rest = self._peek()
        if rest is not None:
            raise YamlSubsetError(f"line {self.pos + 1}: unexpected indentation")
        return value

    def _value(self, indent: int) -> Any:
        peeked = self._peek()
        assert peeked is not None
        text = peeked[1]
        if text == "-" or text.startswith("- "):
            return self._sequence(indent)
        if _KEY.match(text):
            return self._mapping(indent)
        self.pos += 1
        return _scalar(text)

    def _sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (peeked := self._peek()) is not None and peeked[0] == indent:
            text = peeked[1]
            if not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].lstrip(" ")
            if not rest:
                self.pos += 1
                child = self._peek()
                if child is None or child[0] <= indent:
                    items.append(None)
                else:
                    items.append(self._value(child[0]))
                continue
            inner = indent + len(text) - len(rest)
            # The item's content continues at its own column: rewrite the line that way.
            self.lines[self.pos] = " " * inner + rest
            items.append(self._value(inner))
        self._check_dedent(indent)
        return items

    def _mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while (peeked := self._peek()) is not None and peeked[0] == indent:
            match = _KEY.match(peeked[1])
            if match is None:
                if peeked[1].startswith("- "):
                    break
                raise YamlSubsetError(f"line {self.pos + 1}: not a key: {peeked[1]!r}")
            key, rest = match.group(1), match.group(2)
            if key in result:
                raise YamlSubsetError(f"line {self.pos + 1}: duplicate key {key!r}")
            self.pos += 1
            if rest in ("|", "|-"):
                result[key] = self._literal(indent, keep_newline=rest == "|")
            elif rest == "":
                child = self._peek()
                if child is not None and (
                    child[0] > indent or (child[0] == indent and child[1].startswith("- "))
                ):
                    result[key] = self._value(child[0])
                else:
                    result[key] = None
            else:
                result[key] = _scalar(rest)
        self._check_dedent(indent)
        return result

    def _literal(self, indent: int, keep_newline: bool) -> str:
        """A ``|`` or ``|-`` block: raw lines more indented than its key."""
        body: list[str] = []
        content_indent: int | None = None
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line.strip():
                this_indent = len(line) - len(line.lstrip(" "))
                if this_indent <= indent:
                    break
                if content_indent is None:
                    content_indent = this_indent
                if this_indent < content_indent:
                    raise YamlSubsetError(f"line {self.pos + 1}: literal block dedents")
                body.append(line[content_indent:])
            else:
                body.append("")
            self.pos += 1
        while body and not body[-1]:
            body.pop()
        text = "\n".join(body)
        return text + "\n" if keep_newline and text else text

    def _check_dedent(self, indent: int) -> None:
        peeked = self._peek()
        if peeked is not None and peeked[0] > indent:
            raise YamlSubsetError(f"line {self.pos + 1}: unexpected indentation")


def load_yaml(text: str) -> list[Any]:
    """The documents of *text* (``---``-separated), read in the subset described above."""
    documents: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.rstrip() == "---":
            documents.append([])
        elif line.startswith("..."):
            raise YamlSubsetError("document end marker")
        else:
            documents[-1].append(line)
    loaded = [_YamlParser(lines).document() for lines in documents]
    return [doc for doc in loaded if doc is not None]


def load_yaml_file(path: Path) -> Any:
    """The single document of a YAML file."""
    documents = load_yaml(path.read_text(encoding="utf-8"))
    if len(documents) != 1:
        raise YamlSubsetError(f"{path.name}: {len(documents)} documents, expected one")
    return documents[0]


# -- systemd units, Dockerfile, env files ---------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"{path.name}: not a setting: {line!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    """The one value of *key* in *section*."""
    values = unit[section][key]
    if len(values) != 1:
        raise AssertionError(f"{section}.{key}: {values}")
    return values[0]


def systemd_duration_s(value: str) -> float:
    """A systemd time span (``30``, ``30s``, ``1min 30s``) in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def systemd_environment_file(path: Path) -> dict[str, str]:
    """Variables as systemd's ``EnvironmentFile=`` reads the (simple) lines of *path*.

    Comment lines start with ``#`` or ``;``; a value may be wholly in single or
    double quotes, which are removed; a ``#`` after a value is part of it (systemd
    has no trailing comments).  Anything fancier is refused here.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or value.endswith("\\"):
            raise ValueError(f"{path.name}:{number}: outside what systemd and streamsrv read alike")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            inner = value[1:-1]
            if "\\" in inner or value[0] in inner:
                raise ValueError(f"{path.name}:{number}: escapes inside quotes")
            value = inner
        values[key] = value
    return values


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """The instructions of a Dockerfile as (INSTRUCTION, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_final_stage(path: Path) -> list[tuple[str, str]]:
    """The instructions of the last stage (from its FROM on)."""
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The ``ENV KEY=VALUE ...`` settings of a stage."""
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                if not sep:
                    raise AssertionError(f"ENV without '=': {rest!r}")
                env[key] = value
    return env


def streamsrv_names(path: Path) -> set[str]:
    """Every STREAMSRV_* name written in *path*."""
    return set(_NAME.findall(path.read_text(encoding="utf-8")))


def settings_of(environ: dict[str, str], **override: str) -> Settings:
    """:func:`load_settings` of *environ* with *override*; fails the test with every problem."""
    merged = {**environ, **{f"STREAMSRV_{k}": v for k, v in override.items()}}
    try:
        return load_settings(environ=merged)
    except ConfigError as e:
        raise AssertionError("\n".join(e.problems)) from None


def compose_interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` against *variables*."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        current = variables.get(name, "")
        if operator == ":-":
            return current or argument
        if operator == ":?" and not current:
            raise AssertionError(f"compose would stop: {argument}")
        return current

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", replace, value)


def generated_secret() -> str:
    """A secret production accepts."""
    return secrets.token_urlsafe(48)


def kubernetes_documents() -> dict[str, Any]:
    """Every manifest of etc/kubernetes by file name."""
    return {path.name: load_yaml_file(path) for path in sorted(KUBERNETES.glob("*.yaml"))}


def _pod_spec() -> dict[str, Any]:
    """The Deployment's pod spec."""
    return kubernetes_documents()["deployment.yaml"]["spec"]["template"]["spec"]


def _container() -> dict[str, Any]:
    """The Deployment's one container."""
    (container,) = _pod_spec()["containers"]
    return container


def _kubernetes_environment(secret_values: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a pod gets from the ConfigMap and the (example) Secret."""
    documents = kubernetes_documents()
    environ = dict(documents["configmap.yaml"]["data"])
    environ.update(
        secret_values if secret_values is not None else documents["secret.example.yaml"]["stringData"]
    )
    return environ


# -- Prometheus exposition and expressions ----------------------------------------------


#: Labels Prometheus adds to every scraped series, and series it makes itself.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
SYNTHETIC_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)


def exposition_labels(text: str) -> dict[str, set[str]]:
    """Every series name of a /metrics text and the label names its samples carry."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            series.setdefault(name, set())
            if kind in ("histogram", "summary"):
                for suffix in ("_bucket", "_sum", "_count"):
                    series.setdefault(name + suffix, set())
            continue
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        assert match is not None, line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
        series.setdefault(match.group(1), set()).update(labels)
    return series


def promql_references(expr: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """The series names, every label name, and the labels matched per series, in *expr*.

    Good for the rule files here, not a PromQL parser: strings and range
    durations are blanked, grouping clauses and selector braces read for labels,
    and a name not followed by ``(`` that is no keyword is a series.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    labels: set[str] = set()
    grouping = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
    for match in grouping.finditer(text):
        labels.update(label.strip() for label in match.group(1).split(",") if label.strip())
    text = grouping.sub(" ", text)
    matched: dict[str, set[str]] = {}
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", text):
        names = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2)))
        matched.setdefault(match.group(1), set()).update(names)
        labels.update(names)
    text = re.sub(r"\{[^}]*\}", " ", text)
    series: set[str] = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _PROMQL_WORDS:
            continue
        series.add(match.group(0))
    return series, labels, matched


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of the alert rules file."""
    document = load_yaml_file(ALERT_RULES)
    return [rule for group in document["groups"] for rule in group["rules"]]


def prometheus_duration_s(value: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", value)
    if "".join(n + u for n, u in parts) != value or not parts:
        raise AssertionError(f"not a Prometheus duration: {value!r}")
    return float(sum(int(n) * units[u] for n, u in parts))


def assert_alerts_match(testcase: unittest.SynchronousTestCase, exposition: str) -> None:
    """Every series and label the alert rules use exists in *exposition*."""
    exported = exposition_labels(exposition)
    for rule in alert_rules():
        series, labels, matched = promql_references(rule["expr"])
        testcase.assertTrue(series, rule["alert"])
        available = set(TARGET_LABELS)
        for name in series:
            if name in SYNTHETIC_SERIES:
                continue
            testcase.assertIn(name, exported, f"{rule['alert']}: {name} is not exported")
            available |= exported[name]
            for label in matched.get(name, set()) - TARGET_LABELS:
                testcase.assertIn(label, exported[name], f"{rule['alert']}: {name} has no label {label}")
        testcase.assertEqual(labels - available, set(), rule["alert"])
        templates = " ".join(str(v) for v in rule.get("annotations", {}).values())
        used = set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", templates))
        testcase.assertEqual(used - available, set(), f"{rule['alert']}: annotations")


# -- tests ------------------------------------------------------------------------------


class YamlSubsetTests(unittest.SynchronousTestCase):
    """The YAML reader these tests use instead of PyYAML."""

    def test_reads_the_subset(self) -> None:
        """Mappings, sequences of mappings, scalars, flow lists, literal blocks and comments."""
        text = (
            "# comment\n"
            "a: 1\n"
            'b: "x: y # not a comment"  # a comment\n'
            "c:\n"
            "  - name: n\n"
            "    value: 'it''s'\n"
            "  - plain text with {{ braces }}\n"
            "d: [\"CMD\", 'x', 3]\n"
            "e: |-\n"
            "  line one\n"
            "    indented # kept\n"
            "f:\n"
            "g: true\n"
            "h: 0.5\n"
            "i:\n"
            "- j\n"
        )
        self.assertEqual(
            load_yaml(text),
            [
                {
                    "a": 1,
                    "b": "x: y # not a comment",
                    "c": [{"name": "n", "value": "it's"}, "plain text with {{ braces }}"],
                    "d": ["CMD", "x", 3],
                    "e": "line one\n  indented # kept",
                    "f": None,
                    "g": True,
                    "h": 0.5,
                    "i": ["j"],
                }
            ],
        )

    def test_refuses_what_yaml_1_1_reads_otherwise(self) -> None:
        """Octal-looking numbers, sexagesimal ports, yes/no and dates must be quoted."""
        for scalar in ("0750", "22:22", "yes", "off", "2025-01-01", "1e3"):
            self.assertRaises(YamlSubsetError, load_yaml, f"key: {scalar}\n")
        self.assertEqual(load_yaml('key: "8080:8080"\n'), [{"key": "8080:8080"}])

    def test_refuses_the_rest(self) -> None:
        """Anchors, flow mappings, tags, duplicate keys and stray indentation are errors."""
        for text in ("a: &x 1\n", "a: {b: 1}\n", "a: !!str 1\n", "a: 1\na: 2\n", "a: 1\n  b: 2\n"):
            self.assertRaises(YamlSubsetError, load_yaml, text)

    def test_same_as_pyyaml(self) -> None:
        """Where PyYAML is installed, it reads every deployment YAML file the same way."""
        try:
            import yaml
        except ImportError:
            _checker_missing("PyYAML is not installed (not a dependency)")
        for path in YAML_FILES:
            text = path.read_text(encoding="utf-8")
            self.assertEqual(load_yaml(text), list(yaml.safe_load_all(text)), path.name)


class VariableNameTests(unittest.SynchronousTestCase):
    """Every STREAMSRV_* name in the deployment files is a variable the daemon knows."""

    def test_known_names_only(self) -> None:
        """No typo, no invented variable, in any of the files."""
        known = set(KNOWN_VARIABLES)
        for path in DEPLOY_FILES:
            unknown = {n for n in streamsrv_names(path) if n not in known and not n.startswith(_TEST_PREFIX)}
            self.assertEqual(unknown, set(), path.relative_to(REPO_ROOT).as_posix())

    def test_files_exist_and_parse(self) -> None:
        """The files DESIGN's shape lists exist; every YAML file reads in the subset."""
        for path in DEPLOY_FILES:
            self.assertTrue(path.is_file(), path)
        for path in YAML_FILES:
            self.assertTrue(load_yaml(path.read_text(encoding="utf-8")), path.name)

    def test_no_machine_paths(self) -> None:
        """No absolute path of a development machine leaks into the files."""
        for path in DEPLOY_FILES:
            text = path.read_text(encoding="utf-8")
            for marker in ("/home/", "/root/", "/work/", "/tmp/", "/Users/"):
                self.assertNotIn(marker, text, path.name)


class SystemdUnitTests(unittest.SynchronousTestCase):
    """etc/systemd/streamsrv.service and streamsrv.socket."""

    def setUp(self) -> None:
        self.service = read_unit(SERVICE_UNIT)
        self.socket = read_unit(SOCKET_UNIT)

    def exec_start(self) -> list[str]:
        """ExecStart's words."""
        return shlex.split(unit_value(self.service, "Service", "ExecStart"))

    def example_settings(self) -> Settings:
        """The example env file's settings (staging: its example secrets are fine there)."""
        media = Path(self.mktemp())
        media.mkdir()
        environ = systemd_environment_file(ENV_EXAMPLE)
        return settings_of(environ, ENV="staging", MEDIA_DIR=str(media.absolute()))

    def test_exec_start_parses(self) -> None:
        """ExecStart is twistd in the foreground, no pid file, the plugin with a systemd listener."""
        argv = self.exec_start()
        self.assertEqual(Path(argv[0]).name, "twistd")
        self.assertTrue(argv[0].startswith("/opt/streamsrv/"), argv[0])
        options = ServerOptions()
        options.parseOptions(argv[1:])
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["pidfile"], "")
        self.assertEqual(options.subCommand, "streamsrv")
        self.assertIsInstance(options.subOptions, Options)
        plugin = Options()
        plugin.parseOptions(argv[argv.index("streamsrv") + 1 :])
        self.assertEqual(plugin["listen"], ["systemd:domain=INET:index=0"])
        media = Path(self.mktemp())
        media.mkdir()
        settings = load_settings(cli={**plugin.cli_values(), "MEDIA_DIR": str(media)}, environ={})
        self.assertEqual(settings.listen, ("systemd:domain=INET:index=0",))

    def test_socket_matches_listener(self) -> None:
        """The socket unit's one stream socket is IPv4 (domain=INET) and the first (index=0)."""
        (listen,) = self.socket["Socket"]["ListenStream"]
        host, _, port = listen.rpartition(":")
        self.assertIsInstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
        self.assertTrue(1 <= int(port) <= 65535)
        self.assertEqual(self.service["Unit"]["Requires"], ["streamsrv.socket"])
        self.assertIn("streamsrv.socket", " ".join(self.service["Unit"]["After"]))
        self.assertEqual(self.socket["Install"]["WantedBy"], ["sockets.target"])

    def test_stop_timeout_covers_grace(self) -> None:
        """systemd waits longer than the grace period plus the supervisor's margin, and signals
        only the main process first (KillMode=mixed)."""
        grace = self.example_settings().shutdown_grace_s
        timeout = systemd_duration_s(unit_value(self.service, "Service", "TimeoutStopSec"))
        self.assertGreater(timeout, grace + STOP_MARGIN_S)
        self.assertEqual(unit_value(self.service, "Service", "KillMode"), "mixed")
        self.assertEqual(unit_value(self.service, "Service", "KillSignal"), "SIGTERM")

    def test_environment_and_state(self) -> None:
        """The env file is the documented one, the data dir is writable and is the working directory."""
        service = self.service["Service"]
        self.assertEqual(service["EnvironmentFile"], ["/etc/streamsrv/streamsrv.env"])
        self.assertEqual(str(self.example_settings().data_dir), DATA_DIR)
        self.assertEqual(service["StateDirectory"], ["streamsrv"])
        self.assertIn(DATA_DIR, service["ReadWritePaths"])
        self.assertEqual(service["WorkingDirectory"], [DATA_DIR])

    def test_hardening(self) -> None:
        """Not root, no new privileges, a read-only system but for the data dir, no capabilities."""
        service = self.service["Service"]
        self.assertNotIn(service["User"][0], ("root", "0"))
        for key, value in (
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
            ("Type", "exec"),
        ):
            self.assertEqual(service[key], [value], key)
        self.assertNotIn("NotifyAccess", service)

    def test_env_example_reads_alike(self) -> None:
        """systemd's EnvironmentFile= and streamsrv's --env-file read the example to the same settings."""
        media = Path(self.mktemp()).absolute()
        media.mkdir()
        overrides = {"STREAMSRV_ENV": "staging", "STREAMSRV_MEDIA_DIR": str(media)}
        by_systemd = load_settings(environ={**systemd_environment_file(ENV_EXAMPLE), **overrides})
        by_streamsrv = load_settings(environ=overrides, env_file=ENV_EXAMPLE)
        self.assertEqual(by_systemd, dataclasses.replace(by_streamsrv, env_file=None))

    def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verify finds nothing to say about the units (ExecStart pointed at this
        checkout's twistd, since /opt/streamsrv does not exist here)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed")
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise unittest.SkipTest("no twistd script beside this Python")
        units = Path(self.mktemp()).absolute()
        units.mkdir()
        text = SERVICE_UNIT.read_text(encoding="utf-8")
        program = self.exec_start()[0]
        (units / "streamsrv.service").write_text(text.replace(program, str(twistd)), encoding="utf-8")
        shutil.copy(SOCKET_UNIT, units / "streamsrv.socket")
        result = subprocess.run(
            [analyze, "verify", str(units / "streamsrv.service"), str(units / "streamsrv.socket")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


class DockerfileTests(unittest.SynchronousTestCase):
    """The Dockerfile and .dockerignore (checked by reading them: no Docker here)."""

    def setUp(self) -> None:
        self.stage = dockerfile_final_stage(DOCKERFILE)
        self.env = dockerfile_env(self.stage)

    def instruction(self, word: str) -> str:
        (found,) = [rest for w, rest in self.stage if w == word]
        return found

    def test_base_user_port_signal(self) -> None:
        """python:3.11-slim, a non-root user, port 8080, SIGTERM, the data dir on a volume."""
        for word, rest in dockerfile_instructions(DOCKERFILE):
            if word == "FROM":
                self.assertTrue(rest.startswith("python:3.11-slim"), rest)
        self.assertNotIn(self.instruction("USER"), ("root", "0"))
        self.assertEqual(self.instruction("EXPOSE"), "8080")
        self.assertEqual(self.instruction("STOPSIGNAL"), "SIGTERM")
        self.assertEqual(json.loads(self.instruction("VOLUME")), [DATA_DIR])
        self.assertEqual(self.env["STREAMSRV_DATA_DIR"], DATA_DIR)
        self.assertEqual(self.instruction("WORKDIR"), DATA_DIR)

    def test_installs_like_the_readme(self) -> None:
        """The package goes in with `pip install .`; no ffmpeg (PyAV's wheels carry it)."""
        runs = " ".join(rest for word, rest in dockerfile_instructions(DOCKERFILE) if word == "RUN")
        self.assertIn("pip install --no-cache-dir .", runs)
        self.assertNotIn("ffmpeg", runs)

    def test_command_parses(self) -> None:
        """CMD is twistd in the foreground without a pid file, running the plugin; the listener
        in ENV is one the daemon accepts, on the exposed port, on every interface."""
        self.assertEqual(json.loads(self.instruction("ENTRYPOINT")), ["tini", "--"])
        cmd = json.loads(self.instruction("CMD"))
        self.assertEqual(cmd[0], "twistd")
        options = ServerOptions()
        options.parseOptions(cmd[1:])
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["pidfile"], "")
        self.assertEqual(options.subCommand, "streamsrv")
        self.assertEqual(options.subOptions.cli_values(), {})
        media = Path(self.mktemp()).absolute()
        media.mkdir()
        environ = {k: v for k, v in self.env.items() if k.startswith("STREAMSRV_")}
        settings = settings_of(environ, MEDIA_DIR=str(media))
        self.assertEqual(settings.listen, ("tcp:8080:interface=0.0.0.0",))

    def test_healthcheck_uses_python(self) -> None:
        """The health check runs the image's Python against /health (no curl in the slim image)."""
        healthcheck = self.instruction("HEALTHCHECK")
        command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
        self.assertEqual(command[:2], ["python", "-c"])
        self.assertIn("http://127.0.0.1:8080/health'", command[2])
        compile(command[2], "HEALTHCHECK", "exec")

    def test_dockerignore_keeps_the_build_inputs(self) -> None:
        """What `pip install .` reads stays in the build context; the venv and VCS do not."""
        patterns = [
            line.strip()
            for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]

        def ignored(path: str) -> bool:
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            return any(
                fnmatch(prefix, pattern.removeprefix("**/"))
                or fnmatch(parts[-1], pattern.removeprefix("**/"))
                for pattern in patterns
                for prefix in prefixes
            )

        for needed in (
            "setup.py",
            "pyproject.toml",
            "README.md",
            "streamsrv/__init__.py",
            "streamsrv/py.typed",
            "streamsrv/analytics/migrations",
            "twisted/plugins/streamsrv_plugin.py",
        ):
            self.assertFalse(ignored(needed), needed)
            self.assertTrue((REPO_ROOT / needed).exists(), needed)
        for dropped in (".venv/bin/python", ".git/HEAD", "_trial_temp/x", "streamsrv-data/demo"):
            self.assertTrue(ignored(dropped), dropped)


class ComposeTests(unittest.SynchronousTestCase):
    """docker-compose.yml: streamsrv with Redis and PostgreSQL."""

    def setUp(self) -> None:
        self.compose = load_yaml_file(COMPOSE)
        self.services = self.compose["services"]
        self.streamsrv = self.services["streamsrv"]

    def environment(self, **dotenv: str) -> dict[str, str]:
        values = {
            "STREAMSRV_JWT_SECRET": generated_secret(),
            "POSTGRES_PASSWORD": generated_secret(),
            **dotenv,
        }
        return {k: compose_interpolate(str(v), values) for k, v in self.streamsrv["environment"].items()}

    def test_services(self) -> None:
        """streamsrv is built from the Dockerfile; Redis and PostgreSQL are healthy before it starts."""
        self.assertEqual(set(self.services), {"streamsrv", "redis", "postgres"})
        self.assertEqual(self.streamsrv["build"], ".")
        for dependency in ("redis", "postgres"):
            self.assertEqual(self.streamsrv["depends_on"][dependency], {"condition": "service_healthy"})
            self.assertIn("healthcheck", self.services[dependency])

    def test_environment_is_valid(self) -> None:
        """With the secrets of a .env, the environment is a valid configuration (staging, and
        production with real secrets) reaching the compose services by name."""
        media = Path(self.mktemp()).absolute()
        media.mkdir()
        environ = self.environment()
        settings = settings_of(environ, MEDIA_DIR=str(media))
        self.assertEqual(settings.env, "staging")
        self.assertEqual(str(settings.data_dir), DATA_DIR)
        self.assertEqual(settings.redis_url, "redis://redis:6379/0")
        self.assertTrue(settings.analytics_dsn_effective.startswith("postgresql://streamsrv:"))
        self.assertIn("@postgres:5432/streamsrv", settings.analytics_dsn_effective)
        production = self.environment(STREAMSRV_ENV="production", STREAMSRV_METRICS_TOKEN=generated_secret())
        settings_of(production, MEDIA_DIR=str(media))

    def test_secrets_are_required(self) -> None:
        """Without a .env, compose stops instead of starting without a JWT secret or database password."""
        self.assertRaises(
            AssertionError,
            compose_interpolate,
            self.streamsrv["environment"]["STREAMSRV_JWT_SECRET"],
            {},
        )

    def test_volumes_and_stop(self) -> None:
        """The data dir is a named volume, media read-only, and docker stop waits past the grace."""
        volumes = self.streamsrv["volumes"]
        self.assertIn(f"streamsrv-data:{DATA_DIR}", volumes)
        self.assertIn("streamsrv-data", self.compose["volumes"])
        self.assertTrue(any(v.endswith(":/srv/music:ro") for v in volumes), volumes)
        grace = float(self.streamsrv["environment"]["STREAMSRV_SHUTDOWN_GRACE_S"])
        self.assertGreater(prometheus_duration_s(self.streamsrv["stop_grace_period"]), grace + STOP_MARGIN_S)
        self.assertTrue(self.streamsrv["init"])


class KubernetesTests(unittest.SynchronousTestCase):
    """etc/kubernetes: Deployment, Service, ConfigMap, Secret example, PVC, kustomization."""

    def setUp(self) -> None:
        self.documents = kubernetes_documents()
        self.pod = _pod_spec()
        self.container = _container()

    def media(self) -> str:
        media = Path(self.mktemp()).absolute()
        media.mkdir()
        return str(media)

    def test_kinds(self) -> None:
        """Each manifest is one object of the expected kind; the kustomization lists all but the Secret."""
        kinds = {name: doc["kind"] for name, doc in self.documents.items()}
        self.assertEqual(
            kinds,
            {
                "configmap.yaml": "ConfigMap",
                "deployment.yaml": "Deployment",
                "kustomization.yaml": "Kustomization",
                "media-pvc.yaml": "PersistentVolumeClaim",
                "secret.example.yaml": "Secret",
                "service.yaml": "Service",
            },
        )
        resources = self.documents["kustomization.yaml"]["resources"]
        self.assertEqual(
            sorted(resources), sorted(set(self.documents) - {"kustomization.yaml", "secret.example.yaml"})
        )

    def test_config_values_are_strings(self) -> None:
        """ConfigMap data and Secret stringData hold strings only (Kubernetes refuses numbers there)."""
        for value in self.documents["configmap.yaml"]["data"].values():
            self.assertIsInstance(value, str)
        for value in self.documents["secret.example.yaml"]["stringData"].values():
            self.assertIsInstance(value, str)

    def test_environment_is_valid(self) -> None:
        """ConfigMap plus a Secret of real secrets is a valid production configuration; the example
        Secret is refused, so an unedited copy cannot run."""
        example = self.documents["secret.example.yaml"]["stringData"]
        real = {k: generated_secret() for k in example}
        real["STREAMSRV_URL_SIGNING_KEYS"] = "k1:" + generated_secret()
        real["STREAMSRV_ANALYTICS_DSN"] = "postgresql://streamsrv:pw@postgres:5432/streamsrv"
        settings = settings_of(_kubernetes_environment(real), MEDIA_DIR=self.media())
        self.assertTrue(settings.is_production)
        self.assertEqual(str(settings.data_dir), DATA_DIR)
        with self.assertRaises(AssertionError) as raised:
            settings_of(_kubernetes_environment(), MEDIA_DIR=self.media())
        self.assertIn("STREAMSRV_JWT_SECRET", str(raised.exception))

    def test_env_from(self) -> None:
        """The pod reads the ConfigMap and the Secret by their names."""
        refs = self.container["envFrom"]
        self.assertEqual(
            refs[0]["configMapRef"]["name"], self.documents["configmap.yaml"]["metadata"]["name"]
        )
        self.assertEqual(
            refs[1]["secretRef"]["name"], self.documents["secret.example.yaml"]["metadata"]["name"]
        )

    def test_probes(self) -> None:
        """Liveness and startup on /health, readiness on /health/ready, on the container's named port,
        which is the port of STREAMSRV_LISTEN."""
        (port,) = self.container["ports"]
        self.assertEqual(port["name"], "http")
        listen = self.documents["configmap.yaml"]["data"]["STREAMSRV_LISTEN"]
        self.assertEqual(listen, f"tcp:{port['containerPort']}:interface=0.0.0.0")
        for probe, path in (
            ("startupProbe", "/health"),
            ("livenessProbe", "/health"),
            ("readinessProbe", "/health/ready"),
        ):
            self.assertEqual(self.container[probe]["httpGet"], {"path": path, "port": "http"}, probe)
        (service_port,) = self.documents["service.yaml"]["spec"]["ports"]
        self.assertEqual(service_port["targetPort"], "http")
        self.assertEqual(
            self.documents["service.yaml"]["spec"]["selector"],
            self.documents["deployment.yaml"]["spec"]["template"]["metadata"]["labels"],
        )

    def test_termination_grace(self) -> None:
        """Kubernetes waits longer than preStop plus the grace period plus the supervisor's margin."""
        grace = float(self.documents["configmap.yaml"]["data"]["STREAMSRV_SHUTDOWN_GRACE_S"])
        pre_stop = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        total = float(pre_stop[1]) + grace + STOP_MARGIN_S
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], total)

    def test_volumes_resources_security(self) -> None:
        """The data dir is a volume, media read-only, requests set, not root, read-only root file system."""
        mounts = {m["mountPath"]: m for m in self.container["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        data = volumes[mounts[DATA_DIR]["name"]]
        self.assertTrue("emptyDir" in data or "persistentVolumeClaim" in data, data)
        media_dir = self.documents["configmap.yaml"]["data"]["STREAMSRV_MEDIA_DIR"]
        self.assertTrue(mounts[media_dir]["readOnly"])
        claim = volumes[mounts[media_dir]["name"]]["persistentVolumeClaim"]["claimName"]
        self.assertEqual(claim, self.documents["media-pvc.yaml"]["metadata"]["name"])
        self.assertEqual(set(self.container["resources"]["requests"]), {"cpu", "memory"})
        self.assertTrue(self.pod["securityContext"]["runAsNonRoot"])
        self.assertTrue(self.container["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(self.container["securityContext"]["allowPrivilegeEscalation"])


class PrometheusConfigTests(unittest.SynchronousTestCase):
    """etc/prometheus: the scrape config and the alert rules, read without Prometheus."""

    def test_scrape_config(self) -> None:
        """Every job scrapes /metrics with a bearer token; the rule file it loads exists."""
        config = load_yaml_file(PROMETHEUS_CONFIG)
        for rule_file in config["rule_files"]:
            self.assertTrue((PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file)
        jobs = config["scrape_configs"]
        self.assertTrue(jobs)
        for job in jobs:
            self.assertEqual(job["metrics_path"], "/metrics")
            self.assertEqual(job["authorization"]["type"], "Bearer")
            self.assertTrue(job["job_name"].startswith("streamsrv"))

    def test_rule_shapes(self) -> None:
        """Each rule has a unique name, an expression, a severity and a summary; durations parse."""
        rules = alert_rules()
        names = [rule["alert"] for rule in rules]
        self.assertEqual(len(names), len(set(names)))
        for rule in rules:
            self.assertEqual(set(rule) - {"alert", "expr", "for", "labels", "annotations"}, set())
            self.assertIn(rule["labels"]["severity"], ("critical", "warning", "info"))
            self.assertTrue(rule["annotations"]["summary"])
            if "for" in rule:
                prometheus_duration_s(rule["for"])
            for duration in re.findall(r"\[([^\]]+)\]", rule["expr"]):
                prometheus_duration_s(duration)

    def test_reference_extraction(self) -> None:
        """The expression reader finds series and labels, not functions, keywords or durations."""
        series, labels, matched = promql_references(
            'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{route=~"api|x"}[5m]))) > 1 '
            "and on (instance) b == 0"
        )
        self.assertEqual(series, {"a_bucket", "b"})
        self.assertEqual(labels, {"job", "le", "route", "instance"})
        self.assertEqual(matched, {"a_bucket": {"route"}})


def _checker_missing(reason: str) -> NoReturn:
    """Skip for a checker that is not installed; fail instead where CI says it must be."""
    if services_required():
        raise AssertionError(f"{reason} (and {REQUIRE_ENV} is set: .ci/run installs it)")
    raise unittest.SkipTest(reason)


def _tool(name: str, *, required_in_ci: bool = True) -> str:
    """The path of an external checker, or skip the test (fail in CI when *required_in_ci*)."""
    found = shutil.which(name)
    if found is None:
        if required_in_ci:
            _checker_missing(f"{name} is not installed")
        raise unittest.SkipTest(f"{name} is not installed")
    return found


def _run(
    argv: list[str], *, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a checker, capturing its text output.

    Without this interpreter's ``PYTHONPATH``/``PYTHONHOME`` (``trial -j`` sets
    ``PYTHONPATH`` to its own ``sys.path``): docker-compose is a Python program
    of the system's own Python, which must not load another's stdlib modules.
    """
    clean = {
        k: v for k, v in (os.environ if env is None else env).items() if k not in ("PYTHONPATH", "PYTHONHOME")
    }
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=clean, **kwargs)


class CheckerMissingTests(unittest.SynchronousTestCase):
    """A missing checker skips on a workstation and fails in CI."""

    def test_skip_or_fail(self) -> None:
        """Without STREAMSRV_TEST_REQUIRE_SERVICES a missing checker skips; with it, it fails."""
        self.patch(os, "environ", {**os.environ, REQUIRE_ENV: ""})
        self.assertRaises(unittest.SkipTest, _tool, "no-such-checker-streamsrv")
        self.patch(os, "environ", {**os.environ, REQUIRE_ENV: "1"})
        with self.assertRaises(AssertionError) as raised:
            _tool("no-such-checker-streamsrv")
        self.assertIn("no-such-checker-streamsrv is not installed", str(raised.exception))
        self.assertRaises(unittest.SkipTest, _tool, "no-such-checker-streamsrv", required_in_ci=False)


class ExternalCheckerTests(unittest.SynchronousTestCase):
    """The files through the real tools' own checks, where those tools are installed
    (Debian: ``prometheus`` for promtool, ``docker-compose``, ``kubectl``)."""

    def test_promtool_rules(self) -> None:
        """promtool accepts the alert rules, and their unit tests pass."""
        promtool = _tool("promtool")
        for command in ("check", "test"):
            target = ALERT_RULES if command == "check" else ALERT_RULE_TESTS
            result = _run([promtool, command, "rules", target.name], cwd=target.parent)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_promtool_config(self) -> None:
        """promtool accepts the scrape config (with a token file that exists).  A build without
        Kubernetes service discovery (Debian's) is given the config without that job."""
        promtool = _tool("promtool")
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        token = directory / "token"
        token.write_text("t" * 40)
        shutil.copy(ALERT_RULES, directory / ALERT_RULES.name)
        config_path = directory / "prometheus.yml"
        text = PROMETHEUS_CONFIG.read_text(encoding="utf-8")
        config_path.write_text(text.replace("/etc/prometheus/streamsrv-metrics-token", str(token)))
        result = _run([promtool, "check", "config", str(config_path)])
        if (
            result.returncode != 0
            and "field kubernetes_sd_configs not found" in result.stdout + result.stderr
        ):
            config = load_yaml_file(PROMETHEUS_CONFIG)
            config["scrape_configs"] = [
                j for j in config["scrape_configs"] if "kubernetes_sd_configs" not in j
            ]
            for job in config["scrape_configs"]:
                job["authorization"]["credentials_file"] = str(token)
            config_path.write_text(json.dumps(config))  # JSON is YAML
            result = _run([promtool, "check", "config", str(config_path)])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_docker_compose_config(self) -> None:
        """docker-compose validates the file with the secrets set, and refuses it without them."""
        compose = _tool("docker-compose")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMSRV_", "POSTGRES_"))}
        project = Path(self.mktemp()).absolute()
        project.mkdir()
        shutil.copy(COMPOSE, project / COMPOSE.name)
        argv = [
            compose,
            "--project-directory",
            str(project),
            "-f",
            str(project / COMPOSE.name),
            "config",
            "-q",
        ]
        env = {**base, "STREAMSRV_JWT_SECRET": generated_secret(), "POSTGRES_PASSWORD": generated_secret()}
        result = _run(argv, env=env)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        result = _run(argv, env=base)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("set STREAMSRV_JWT_SECRET in .env", result.stdout + result.stderr)

    def test_kustomize_build(self) -> None:
        """kubectl builds the kustomization offline."""
        kubectl = _tool("kubectl", required_in_ci=False)  # not packaged by Debian
        result = _run([kubectl, "kustomize", str(KUBERNETES)])
        self.assertEqual(result.returncode, 0, result.stderr)
        for kind in ("ConfigMap", "Deployment", "Service", "PersistentVolumeClaim"):
            self.assertIn(f"kind: {kind}\n", result.stdout)
        self.assertNotIn("kind: Secret\n", result.stdout)

    def test_kubernetes_schemas(self) -> None:
        """Each manifest validates strictly against the Kubernetes API schemas (kubernetes-validate,
        when installed; it is no dependency of streamsrv)."""
        try:
            import kubernetes_validate
        except ImportError:
            _checker_missing("kubernetes-validate is not installed")
        for name, document in kubernetes_documents().items():
            if name == "kustomization.yaml":
                continue
            for version in ("1.29.0", kubernetes_validate.latest_version()):
                kubernetes_validate.validate(document, version, strict=True)


def _media_with_track(testcase: unittest.SynchronousTestCase) -> Path:
    media = Path(testcase.mktemp()).absolute()
    media.mkdir()
    write_wav(media / "tone.wav", 20_000)
    return media


class _Launched(Daemon):
    """A daemon started from an exact argv in a working directory of its own."""

    def __init__(self, workdir: Path, argv: list[str], env: dict[str, str], port: int, cwd: Path) -> None:
        super().__init__(workdir, [], env, port, argv=argv, cwd=cwd)


class DeployedCommandLineTests(DaemonTestCase):
    """The daemon started exactly as the systemd unit and the Dockerfile start it."""

    def launch(self, argv: list[str], env: dict[str, str], port: int) -> _Launched:
        workdir = Path(self.mktemp())
        workdir.mkdir()
        cwd = Path(self.mktemp()).absolute()
        cwd.mkdir()
        daemon = _Launched(workdir, argv, env, port, cwd)
        self.addCleanup(daemon.stop)
        return daemon

    def stop_within(self, daemon: Daemon, limit_s: float) -> None:
        """SIGTERM ends the daemon cleanly within *limit_s* (what systemd or Docker would allow)."""
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.wait(min(limit_s, EXIT_TIMEOUT_S))
        self.assertLess(time.monotonic() - started, limit_s)
        self.assertIn(code, CLEAN_EXITS, daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    def test_systemd_unit(self) -> None:
        """ExecStart's arguments, socket-activated on the socket unit's kind of socket, with the
        example env file as EnvironmentFile= reads it (staging, so its example secrets pass):
        /health and /health/ready answer, /metrics wants the token Prometheus sends, and the
        alert rules' series and labels are all in it."""
        service = read_unit(SERVICE_UNIT)
        argv = shlex.split(unit_value(service, "Service", "ExecStart"))
        environ = systemd_environment_file(ENV_EXAMPLE)
        token = environ["STREAMSRV_METRICS_TOKEN"]
        environ.update(
            STREAMSRV_ENV="staging",
            STREAMSRV_MEDIA_DIR=str(_media_with_track(self)),
            STREAMSRV_DATA_DIR=str(self.data),
            STREAMSRV_REDIS_URL="",
            STREAMSRV_SHUTDOWN_GRACE_S="1",
        )
        port = free_port()
        daemon = self.launch([sys.executable, "-c", _SOCKET_ACTIVATION, str(port), *argv[1:]], environ, port)
        daemon.wait_ready()
        response, body = daemon.request("GET", "/health")
        self.assertEqual((response.status, json.loads(body)["status"]), (200, "ok"))
        response, _ = daemon.request("GET", "/metrics")
        self.assertEqual(response.status, 401)
        # Some traffic, so that the labelled families have samples to compare labels with.
        response, _ = daemon.request("GET", "/stream/tone.wav?expires=4102444800&sig=AAAA")
        self.assertEqual(response.status, 403)
        daemon.request("GET", "/no/such/route")
        (metrics_path,) = {job["metrics_path"] for job in load_yaml_file(PROMETHEUS_CONFIG)["scrape_configs"]}
        response, metrics = daemon.request("GET", metrics_path, {"Authorization": f"Bearer {token}"})
        self.assertEqual(response.status, 200)
        assert_alerts_match(self, metrics.decode())
        timeout = systemd_duration_s(unit_value(service, "Service", "TimeoutStopSec"))
        self.stop_within(daemon, timeout)

    def test_dockerfile_command(self) -> None:
        """CMD with the image's ENV (its data dir and port swapped for the test's) serves /health
        and the Kubernetes probe paths, the HEALTHCHECK command passes against it, and fails once
        the daemon is gone."""
        stage = dockerfile_final_stage(DOCKERFILE)
        env = {k: v for k, v in dockerfile_env(stage).items() if k != "PATH"}
        cmd = json.loads(next(rest for word, rest in stage if word == "CMD"))
        healthcheck = next(rest for word, rest in stage if word == "HEALTHCHECK")
        probe = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
        port = free_port()
        env["STREAMSRV_LISTEN"] = env["STREAMSRV_LISTEN"].replace(":8080:", f":{port}:")
        env.update(
            STREAMSRV_DATA_DIR=str(self.data),
            STREAMSRV_MEDIA_DIR=str(_media_with_track(self)),
            STREAMSRV_SHUTDOWN_GRACE_S="1",
        )
        self.assertEqual(cmd[0], "twistd")
        daemon = self.launch([sys.executable, *TWISTD, *cmd[1:]], env, port)
        daemon.wait_ready()
        response, body = daemon.request("GET", "/health")
        self.assertEqual((response.status, json.loads(body)["status"]), (200, "ok"))
        # The same image in Kubernetes: its probes' paths answer 200.
        container = _container()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            response, _ = daemon.request("GET", container[kind]["httpGet"]["path"])
            self.assertEqual(response.status, 200, kind)
        self.assertEqual(probe[0], "python")
        check = [sys.executable, *probe[1:-1], probe[-1].replace(":8080/", f":{port}/")]
        self.assertEqual(subprocess.run(check, capture_output=True, timeout=30).returncode, 0)
        self.stop_within(
            daemon,
            prometheus_duration_s(load_yaml_file(COMPOSE)["services"]["streamsrv"]["stop_grace_period"]),
        )
        self.assertNotEqual(subprocess.run(check, capture_output=True, timeout=30).returncode, 0)

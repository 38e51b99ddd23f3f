# -*- test-case-name: tests.test_notify_templatecheck -*-
"""``streamsrv notify-template check``: every problem of a templates directory, by file and line.

:func:`check_templates` reads a directory the way the daemon does
(:meth:`~.templates.TemplateSet.load`), then, for every template file:
compiles it in the sandboxed environment (a syntax error, with its line),
looks for what the sandbox would refuse even on a branch the sample data
never takes (an attribute starting with ``_``, ``mro``, frame and code
internals), checks each variable it reads against its ``{name}.sample.json``
(the line where the first missing one is read), and renders it with that
sample data (what still fails, with its line when known).  It also reports
sample data that is not a JSON object, files that are neither templates nor
samples, and a locale variant without the default file to fall back on.
Blocking (it reads files): for the command line, never the reactor.  It
never puts a directory path in a problem, only file names.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
)

from streamsrv.cliargs import EXIT_INVALID, EXIT_OK, EXIT_USAGE, RaisingParser, parse_arguments
from streamsrv.config import Settings
from streamsrv.notifications.templates import (
    SAMPLE_SUFFIX,
    TEMPLATE_SUFFIX,
    TemplateProblem,
    TemplateSet,
    default_templates_dir,
    parse_template_file,
)

__all__ = [
    "CheckReport",
    "Problem",
    "check_templates",
    "notify_template_cli",
    "template_check_lines",
    "templates_problems",
]

_SAMPLE_FILE: Final = re.compile(r"([a-z0-9][a-z0-9_-]{0,63})\.sample\.json")

#: Attribute names no template may reach, whatever the object: the sandbox refuses
#: every name starting with ``_`` and these internals (:func:`jinja2.sandbox.is_internal_attribute`).
_INTERNALS: Final = frozenset(
    {
        "mro",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "tb_frame",
        "tb_next",
        *UNSAFE_FUNCTION_ATTRIBUTES,
        *UNSAFE_METHOD_ATTRIBUTES,
        *UNSAFE_GENERATOR_ATTRIBUTES,
        *UNSAFE_COROUTINE_ATTRIBUTES,
        *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    }
)

_NOT_A_TEMPLATE: Final = (
    "neither a template ({name}.{channel}.j2, {name}.{locale}.{channel}.j2) "
    "nor sample data ({name}.sample.json)"
)


@dataclass(frozen=True, order=True)
class Problem:
    """
    One problem: the file (a name, never a path), the line when known, what is wrong.
    """

    file: str
    line: int = 0
    message: str = ""

    def __str__(self) -> str:
        """``file:line: message`` (``file: message`` without a line), as compilers print them."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """
    What :func:`check_templates` found.

    :ivar templates: How many template files were checked.
    :ivar names: The template names (``new-release``…), sorted.
    :ivar problems: Sorted by file, then line; empty when all is well.
    """

    templates: int
    names: tuple[str, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether there is no problem."""
        return not self.problems


def check_templates(directory: Path) -> CheckReport:
    """
    Check every file of *directory* (blocking: it reads them).

    :return: The report; a directory that cannot be read is one problem.
    """
    problems: list[Problem] = []
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as e:
        return CheckReport(
            0, (), (Problem(directory.name or str(directory), 0, f"cannot be read ({e.strerror})"),)
        )
    sources: dict[str, str] = {}
    samples: dict[str, Any] = {}
    for path in files:
        _read(path, sources, samples, problems)
    templates = TemplateSet(sources)
    for name, locale, channel in templates.variants():
        filename = _filename(name, locale, channel)
        problems.extend(_check_one(templates, (name, locale, channel), filename, samples))
    return CheckReport(len(sources), templates.names(), tuple(sorted(problems)))


def _read(path: Path, sources: dict[str, str], samples: dict[str, Any], problems: list[Problem]) -> None:
    """Sort one file into *sources* or *samples*, or record why it is neither."""
    sample = _SAMPLE_FILE.fullmatch(path.name)
    is_template = parse_template_file(path.name) is not None
    if not is_template and sample is None:
        if not path.name.startswith("."):
            problems.append(Problem(path.name, 0, _NOT_A_TEMPLATE))
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(Problem(path.name, 0, "not UTF-8 text"))
        return
    except OSError as e:
        problems.append(Problem(path.name, 0, f"cannot be read ({e.strerror})"))
        return
    if is_template:
        sources[path.name] = text
        return
    assert sample is not None
    try:
        samples[sample.group(1)] = json.loads(text)
    except ValueError as e:
        problems.append(Problem(path.name, getattr(e, "lineno", 0), f"not valid JSON ({e})"))


def _filename(name: str, locale: str | None, channel: str) -> str:
    middle = f".{locale}" if locale else ""
    return f"{name}{middle}.{channel}{TEMPLATE_SUFFIX}"


def _check_one(
    templates: TemplateSet, variant: tuple[str, str | None, str], filename: str, samples: dict[str, Any]
) -> Iterator[Problem]:
    """The problems of one template file: compiled, then scanned, then rendered with its sample."""
    name, locale, channel = variant
    if locale is not None and channel not in templates.channels(name):
        yield Problem(filename, 0, f"no default {_filename(name, None, channel)} to fall back on")
    tree, unsafe = _compiled(templates, variant, filename)
    yield from unsafe
    if tree is None:
        return
    data = samples.get(name)
    if not isinstance(data, dict):
        yield Problem(filename, 0, f"no sample data ({name}{SAMPLE_SUFFIX} holding an object)")
        return
    missing = _missing_variables(tree, data)
    for line, variable in missing:
        yield Problem(filename, line, f"needs data.{variable}, which {name}{SAMPLE_SUFFIX} lacks")
    if unsafe or missing:
        return  # rendering would only repeat the first of them
    try:
        templates.attempt(name, locale, channel, data)
    except TemplateProblem as e:
        yield Problem(filename, e.line or 0, e.detail)


def _compiled(
    templates: TemplateSet, variant: tuple[str, str | None, str], filename: str
) -> tuple[nodes.Template | None, list[Problem]]:
    """The template's syntax tree (``None`` if it does not compile), and what the sandbox would refuse."""
    try:
        tree = ImmutableSandboxedEnvironment().parse(templates.source(*variant))
    except TemplateSyntaxError as e:
        return None, [Problem(filename, e.lineno, f"does not compile: {e.message}")]
    refused = "the sandbox refuses Python internals"
    return tree, [Problem(filename, line, f"reaches {a!r}: {refused}") for line, a in _unsafe_accesses(tree)]


def templates_problems(settings: Settings) -> list[str]:
    """
    What would keep the daemon's templates from loading or compiling, each
    ``STREAMSRV_NOTIFY_TEMPLATES_DIR: file:line: what`` (blocking: it reads them).

    For ``load_settings(checks=...)``: the directory cannot be read or holds
    no template, a template does not compile or reaches for Python
    internals.  Sample data is ``notify-template check``'s business, not the
    daemon's.
    """
    directory = settings.notify_templates_dir or default_templates_dir()
    name = "STREAMSRV_NOTIFY_TEMPLATES_DIR"
    try:
        templates = TemplateSet.load(directory)
    except OSError as e:
        return [f"{name}: the templates directory cannot be read ({e.strerror})"]
    except UnicodeDecodeError:
        return [f"{name}: a template is not UTF-8 text"]
    if not templates.names():
        return [f"{name}: no *.j2 template in the templates directory"]
    problems: list[Problem] = []
    for variant in templates.variants():
        problems.extend(_compiled(templates, variant, _filename(*variant))[1])
    return [f"{name}: {problem}" for problem in sorted(problems)]


def _unsafe_accesses(tree: nodes.Template) -> Iterator[tuple[int, str]]:
    """``(line, attribute)`` of each ``x.attr`` / ``x['attr']`` the sandbox refuses whatever ``x`` is."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attribute: object = None
        if isinstance(node, nodes.Getattr):
            attribute = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attribute = node.arg.value
        if not isinstance(attribute, str):
            continue
        if attribute.startswith("_") or attribute in _INTERNALS:
            yield node.lineno, attribute


def _missing_variables(tree: nodes.Template, data: dict[str, Any]) -> list[tuple[int, str]]:
    """``(line of first use, name)`` of each top-level variable the template reads and *data* lacks."""
    missing = meta.find_undeclared_variables(tree) - set(data) - set(ImmutableSandboxedEnvironment().globals)
    first: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in missing and node.ctx == "load":
            first[node.name] = min(first.get(node.name, node.lineno), node.lineno)
    return sorted((first.get(n, 0), n) for n in missing)


def template_check_lines(report: CheckReport, shown_dir: str) -> list[str]:
    """The lines ``streamsrv notify-template check`` prints for *report*: each problem, then a summary."""
    lines = [str(problem) for problem in report.problems]
    files = f"{report.templates} template file{'' if report.templates == 1 else 's'}"
    if report.ok:
        lines.append(
            f"notification templates OK: {files} ({', '.join(report.names) or 'none'}) in {shown_dir}"
        )
    else:
        count = len(report.problems)
        lines.append(f"{count} problem{'' if count == 1 else 's'} in {files} in {shown_dir}")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = RaisingParser(
        prog="streamsrv notify-template",
        add_help=False,
        description=(
            "Check the notification templates: compile each in the sandbox, look for what the "
            "sandbox refuses, check its variables against {name}.sample.json and render it with "
            "that data. Prints every problem as FILE:LINE: MESSAGE and exits 1 if there is any."
        ),
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("action", choices=("check",), help="check: the only action")
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=None,
        help="the templates directory (default: STREAMSRV_NOTIFY_TEMPLATES_DIR, else the packaged one)",
    )
    return parser


def notify_template_cli(
    argv: Sequence[str], *, settings: Callable[[], Settings | None], out: TextIO, err: TextIO
) -> int:
    """
    ``streamsrv notify-template check [DIR]``.

    :param argv: The arguments after ``streamsrv notify-template``.
    :param settings: Loads the configuration (only when no DIR is given), or
        answers ``None`` after printing its problems.
    :param out: Where the summary of a clean check (and ``--help``) goes.
    :param err: Where the problems and usage errors go.
    :return: 0 when every template is fine, 1 on any problem (or an invalid
        configuration), 2 for a command-line mistake.
    """
    if not argv or argv[0] in ("-h", "--help"):
        _parser().print_help(out if argv else err)
        return EXIT_OK if argv else EXIT_USAGE
    args = parse_arguments(_parser(), argv, out=out, err=err)
    if isinstance(args, int):
        return args
    directory: Path | None = args.directory
    if directory is None:
        loaded = settings()
        if loaded is None:
            return EXIT_INVALID
        directory = loaded.notify_templates_dir or default_templates_dir()
    report = check_templates(directory)
    lines = template_check_lines(report, str(directory))
    for line in lines:
        print(line, file=out if report.ok else err)
    return EXIT_OK if report.ok else EXIT_INVALID

"""``streamsrv notify-template check``: every problem of a templates directory, by file and line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.trial import unittest

from streamsrv.cli import main
from streamsrv.notifications.templatecheck import Problem, check_templates

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc" / "notifications"

PUSH = "{% block title %}{{ title }}{% endblock %}\n{% block text %}{{ text }}{% endblock %}\n"


class CheckTemplatesTests(unittest.TestCase):
    """check_templates: compile, sandbox scan, variables against the sample, render."""

    def directory(self, files: dict[str, str]) -> Path:
        """A new directory holding *files* (name -> text)."""
        d = Path(self.mktemp())
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text, encoding="utf-8")
        return d

    def test_shipped_clean(self) -> None:
        """Every shipped template compiles, is safe and renders with its sample data."""
        report = check_templates(SHIPPED)
        self.assertEqual(report.problems, ())
        self.assertEqual(report.templates, 17)
        self.assertEqual(report.names, ("account-security", "alert-firing", "alert-resolved", "new-release"))

    def test_broken_template(self) -> None:
        """A syntax error is reported with its file and line, and nothing else of that file."""
        d = self.directory({"n.sms.j2": "Hi {{ a }}\n{% if %}\n", "n.sample.json": '{"a": 1}'})
        (problem,) = check_templates(d).problems
        self.assertEqual((problem.file, problem.line), ("n.sms.j2", 2))
        self.assertTrue(problem.message.startswith("does not compile:"), problem.message)

    def test_missing_variables(self) -> None:
        """Each variable the sample lacks is named with the line of its first use."""
        d = self.directory(
            {
                "n.push.j2": "{% block title %}T{% endblock %}\n{% block text %}\n{{ b }} {{ a }}\n{{ b }}"
                "{% endblock %}",
                "n.sample.json": "{}",
            }
        )
        self.assertEqual(
            check_templates(d).problems,
            (
                Problem("n.push.j2", 3, "needs data.a, which n.sample.json lacks"),
                Problem("n.push.j2", 3, "needs data.b, which n.sample.json lacks"),
            ),
        )

    def test_sandbox_escape(self) -> None:
        """Reaching for Python internals is found, even on a branch the sample never takes."""
        d = self.directory(
            {
                "n.sms.j2": "ok\n{% if false %}{{ ''.__class__.__mro__[1] }}{% endif %}\n{{ x['__dict__'] }}",
                "n.sample.json": '{"x": {}}',
                "m.sms.j2": "{{ cycler.__init__.__globals__ }}",
                "m.sample.json": "{}",
            }
        )
        problems = [str(p) for p in check_templates(d).problems]
        self.assertEqual(
            problems,
            [
                "m.sms.j2:1: reaches '__globals__': the sandbox refuses Python internals",
                "m.sms.j2:1: reaches '__init__': the sandbox refuses Python internals",
                "n.sms.j2:2: reaches '__class__': the sandbox refuses Python internals",
                "n.sms.j2:2: reaches '__mro__': the sandbox refuses Python internals",
                "n.sms.j2:3: reaches '__dict__': the sandbox refuses Python internals",
            ],
        )

    def test_runtime_sandbox_refusal(self) -> None:
        """What only the render finds (a list modified) is reported with its line."""
        d = self.directory({"n.sms.j2": "a\nb {{ x.append(1) }}", "n.sample.json": '{"x": []}'})
        (problem,) = check_templates(d).problems
        self.assertEqual((problem.file, problem.line), ("n.sms.j2", 2))
        self.assertIn("sandbox forbids", problem.message)

    def test_render_failures(self) -> None:
        """Errors on the sample data, a missing block and a missing nested value carry their lines."""
        d = self.directory(
            {
                "d.sms.j2": "\n\n{{ a / b }}",
                "d.sample.json": '{"a": 1, "b": 0}',
                "e.email.j2": "{% block subject %}s{% endblock %}{% block text %}t{% endblock %}",
                "e.sample.json": "{}",
                "t.push.j2": "{% block title %}\n{{ track.title }}{% endblock %}"
                "{% block text %}x{% endblock %}",
                "t.sample.json": '{"track": {}}',
            }
        )
        self.assertEqual(
            [str(p) for p in check_templates(d).problems],
            [
                "d.sms.j2:3: failed on the data: ZeroDivisionError",
                "e.email.j2: has no 'html' block",
                "t.push.j2:2: needs a value the data lacks: 'dict object' has no attribute 'title'",
            ],
        )

    def test_files_and_samples(self) -> None:
        """Missing samples, bad JSON, stray files and orphan locales are reported by file."""
        d = self.directory(
            {
                "ok.sms.j2": "{{ a }}",
                "ok.sample.json": '{"a": 1}',
                "nosample.sms.j2": "x",
                "bad.sample.json": "{\n nope",
                "list.sms.j2": "x",
                "list.sample.json": "[1]",
                "orphan.fr.push.j2": PUSH,
                "orphan.sample.json": json.dumps({"title": 1, "text": 2}),
                "notes.txt": "",
                ".hidden": "",
            }
        )
        problems = check_templates(d).problems
        self.assertEqual([(p.file, p.line) for p in problems], [
            ("bad.sample.json", 2), ("list.sms.j2", 0), ("nosample.sms.j2", 0), ("notes.txt", 0),
            ("orphan.fr.push.j2", 0),
        ])  # fmt: skip
        self.assertIn("not valid JSON", problems[0].message)
        self.assertEqual(problems[2].message, "no sample data (nosample.sample.json holding an object)")
        self.assertTrue(problems[3].message.startswith("neither a template"))
        self.assertEqual(problems[4].message, "no default orphan.push.j2 to fall back on")
        for problem in problems:
            self.assertNotIn(str(d), str(problem))

    def test_unreadable_directory(self) -> None:
        """A directory that does not exist is one problem, not a crash."""
        report = check_templates(Path(self.mktemp()))
        self.assertEqual(len(report.problems), 1)
        self.assertIn("cannot be read", report.problems[0].message)


class NotifyTemplateCommandTests(unittest.TestCase):
    """``streamsrv notify-template check [DIR]`` through the real command."""

    def run_command(self, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of ``streamsrv *argv``."""
        out, err = io.StringIO(), io.StringIO()
        env = {"STREAMSRV_DATA_DIR": self.mktemp(), **(environ or {})}
        status = main(list(argv), environ=env, stdout=out, stderr=err)
        return status, out.getvalue(), err.getvalue()

    def test_default_directory_clean(self) -> None:
        """Without DIR the daemon's directory (the packaged one) is checked: exit 0 and a summary."""
        status, out, err = self.run_command("notify-template", "check")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("notification templates OK: 17 template files", out)

    def test_configured_directory(self) -> None:
        """Without DIR, STREAMSRV_NOTIFY_TEMPLATES_DIR is the one checked, as the daemon would load."""
        d = Path(self.mktemp())
        d.mkdir()
        (d / "n.sms.j2").write_text("{{ missing }}")
        (d / "n.sample.json").write_text("{}")
        status, out, err = self.run_command(
            "notify-template", "check", environ={"STREAMSRV_NOTIFY_TEMPLATES_DIR": str(d)}
        )
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertEqual(
            err.splitlines(),
            [
                "n.sms.j2:1: needs data.missing, which n.sample.json lacks",
                f"1 problem in 1 template file in {d}",
            ],
        )

    def test_every_problem_printed(self) -> None:
        """A broken template, a missing variable and a sandbox escape are each printed; exit 1."""
        d = Path(self.mktemp())
        d.mkdir()
        (d / "a.sms.j2").write_text("{% for %}")
        (d / "b.sms.j2").write_text("{{ x }}\n{{ y }}")
        (d / "c.sms.j2").write_text("{{ ''.__class__ }}")
        for name in "abc":
            (d / f"{name}.sample.json").write_text('{"x": 1}')
        status, out, err = self.run_command("notify-template", "check", str(d))
        self.assertEqual((status, out), (1, ""))
        lines = err.splitlines()
        self.assertEqual(len(lines), 4, lines)
        self.assertTrue(lines[0].startswith("a.sms.j2:1: does not compile:"), lines[0])
        self.assertEqual(lines[1], "b.sms.j2:2: needs data.y, which b.sample.json lacks")
        self.assertEqual(lines[2], "c.sms.j2:1: reaches '__class__': the sandbox refuses Python internals")
        self.assertEqual(lines[3], f"3 problems in 3 template files in {d}")

    def test_usage(self) -> None:
        """No action or an unknown one is a usage error (2); --help prints help (0)."""
        self.assertEqual(self.run_command("notify-template")[0], 2)
        self.assertEqual(self.run_command("notify-template", "render")[0], 2)
        status, out, _ = self.run_command("notify-template", "--help")
        self.assertEqual(status, 0)
        self.assertIn("notify-template", out)

    def test_invalid_configuration(self) -> None:
        """Without DIR an invalid configuration is reported and exits 1."""
        status, _, err = self.run_command(
            "notify-template", "check", environ={"STREAMSRV_NOTIFY_MAX_ATTEMPTS": "zero"}
        )
        self.assertEqual(status, 1)
        self.assertIn("STREAMSRV_NOTIFY_MAX_ATTEMPTS", err)

# -*- test-case-name: tests.test_readme -*-
"""The README's first two commands, and the CI entry point that runs one of them.

A new user copies the README's first command (install and run the daemon) and
its second (install the test extras and run the suite); ``.ci/run`` finds the
second with a ``grep -E`` and runs it verbatim on a clean clone.  These tests
keep the three in step: each line has the expected form, the test line is
the first line ``.ci/run``'s pattern matches, and the run line does not match
it (CI would start the daemon instead of the tests).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from twisted.trial import unittest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"

#: The install-and-run line: a venv, the package, then twistd in the foreground
#: (options such as ``--pidfile=`` allowed around ``-n``).
RUN_LINE = re.compile(
    r"python3 -m venv \.venv && \.venv/bin/pip install \. && "
    r"\.venv/bin/twistd( --?[\w-]+(=\S*)?)* -n( --?[\w-]+(=\S*)?)* streamsrv( .*)?"
)

#: The install-and-test line.
TEST_LINE = (
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m twisted.trial tests"
)


def code_lines(text: str) -> list[str]:
    """The lines inside the README's fenced code blocks, in order."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line)
    return lines


def ci_pattern() -> str:
    """The extended regular expression ``.ci/run`` greps the README with."""
    match = re.search(
        r'^test_line=\$\(grep -E "([^"]+)" README\.md \| head -n 1\)$', CI_RUN.read_text(), re.M
    )
    assert match is not None, ".ci/run no longer finds the test line with grep -E"
    return match.group(1)


class ReadmeLinesTests(unittest.SynchronousTestCase):
    """The README's first commands and .ci/run agree."""

    def setUp(self) -> None:
        self.text = README.read_text(encoding="utf-8")
        self.code = code_lines(self.text)

    def test_first_command_installs_and_runs(self) -> None:
        """The first command in the README creates the venv, installs the package and runs the daemon."""
        self.assertTrue(self.code, "README.md has no code block")
        self.assertRegex(self.code[0], RUN_LINE)
        shlex.split(self.code[0])  # a shell could read it

    def test_second_command_installs_and_tests(self) -> None:
        """The second command installs the test extras and runs the whole suite with trial."""
        self.assertEqual(self.code[1], TEST_LINE)

    def test_ci_runs_the_test_line(self) -> None:
        """.ci/run's pattern picks the README's test line first, as grep itself shows, and
        never the run line."""
        pattern = ci_pattern()
        matching = [line for line in self.text.splitlines() if re.search(pattern, line)]
        self.assertEqual(matching[:1], [TEST_LINE])
        self.assertIsNone(re.search(pattern, self.code[0]))
        grep = subprocess.run(
            ["grep", "-E", pattern, str(README)], capture_output=True, text=True, check=False, timeout=30
        )
        self.assertEqual(grep.stdout.splitlines()[:1], [TEST_LINE])

    def test_ci_summary_line(self) -> None:
        """.ci/run ends with the "N passed, N failed, N skipped" line, and counts ruff and mypy."""
        text = CI_RUN.read_text()
        self.assertIn('echo "${passed} passed, ${failed} failed, ${skipped} skipped"', text)
        self.assertIn(".venv/bin/ruff check streamsrv tests bench twisted setup.py", text)
        self.assertIn(".venv/bin/mypy streamsrv", text)

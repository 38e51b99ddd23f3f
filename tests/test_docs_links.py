# -*- test-case-name: tests.test_docs_links -*-
"""Every relative link in README.md and docs/ leads somewhere: a file that exists, and its heading.

Links are read the way GitHub renders Markdown: ``[text](target)`` and
``[text]: target`` definitions, outside fenced code blocks and inline code.
A target with a scheme (``https:``, ``mailto:``) is not followed; any other
is resolved against the linking file's directory and must exist inside the
checkout; a ``#fragment`` must name a heading of the target Markdown file
(GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, ``-1``,
``-2``... for repeats) or an explicit ``<a id>``/``<a name>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from twisted.trial import unittest

REPO = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files() -> list[Path]:
    """README.md and every Markdown file under docs/, sorted."""
    # Not what npm put beside an example (node_modules/: other projects' READMEs).
    pages = (page for page in (REPO / "docs").rglob("*.md") if "node_modules" not in page.parts)
    return [REPO / "README.md", *sorted(pages)]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        marker = _FENCE.match(line)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif marker.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """Every link target of a Markdown text, with its line number."""
    found: list[tuple[int, str]] = []
    for number, raw in prose_lines(text):
        line = _INLINE_CODE.sub("", raw)
        found.extend((number, match.group(1)) for match in _LINK.finditer(line))
        definition = _DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors a Markdown text defines: its headings' (de-duplicated as GitHub does) and HTML ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(text):
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def problems_of(path: Path) -> list[str]:
    """What is wrong with the links of one Markdown file, one line each."""
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(REPO)
    problems: list[str] = []
    for number, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        file_part, _, fragment = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{where}:{number}: {target!r} is absolute; link relative to the file")
            continue
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.is_relative_to(REPO):
            problems.append(f"{where}:{number}: {target!r} leads outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}:{number}: {target!r}: no such file")
        elif fragment:
            if resolved.suffix != ".md" or resolved.is_dir():
                problems.append(f"{where}:{number}: {target!r}: an anchor into a file that is not Markdown")
            elif unquote(fragment) not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{where}:{number}: {target!r}: no heading with that anchor")
    return problems


class SlugTests(unittest.SynchronousTestCase):
    """The anchor rules the link check relies on."""

    def test_slug(self) -> None:
        """Lower case, punctuation dropped (but hyphens, underscores), spaces to hyphens, code unquoted."""
        self.assertEqual(slug("Signed URLs"), "signed-urls")
        self.assertEqual(slug("`/health/ready`: readiness"), "healthready-readiness")
        self.assertEqual(
            slug("401, 403 and 429: what each code means"), "401-403-and-429-what-each-code-means"
        )
        self.assertEqual(slug("STREAMSRV_CORS_ORIGINS (dev)"), "streamsrv_cors_origins-dev")

    def test_repeated_headings(self) -> None:
        """A repeated heading gets -1, -2...; fenced code is not a heading; HTML ids count."""
        text = '# A\n## Notes\n```\n# not a heading\n```\n## Notes\n<a id="x-y"></a>\n'
        self.assertEqual(anchors(text), {"a", "notes", "notes-1", "x-y"})

    def test_links(self) -> None:
        """Inline links, images and definitions are found; links inside code are not."""
        text = "See [a](x.md#b) and ![i](img.png 'title').\n`[c](no.md)`\n```\n[d](no.md)\n```\n[e]: y.md\n"
        self.assertEqual([t for _, t in links(text)], ["x.md#b", "img.png", "y.md"])

    def test_problems_found(self) -> None:
        """A missing file, a missing anchor and an absolute path are each reported with the line."""
        docs = REPO / "docs"
        probe = docs / "_probe_links.md"
        probe.write_text(
            "[a](nope.md)\n[b](../README.md#no-such-heading)\n[c](/etc/passwd)\n[d](#here)\n# Here\n"
        )
        self.addCleanup(probe.unlink)
        problems = problems_of(probe)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("_probe_links.md:1:", problems[0])
        self.assertIn("no heading", problems[1])
        self.assertIn("absolute", problems[2])


class DocsLinksTests(unittest.SynchronousTestCase):
    """The links of the documentation set."""

    def test_every_relative_link_resolves(self) -> None:
        """Every relative link and anchor in README.md and docs/**/*.md leads to a file and heading."""
        problems = [problem for path in markdown_files() for problem in problems_of(path)]
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def test_documentation_set(self) -> None:
        """The pages a reader of the project looks for exist and README.md links each of them."""
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        for page in (
            "docs/modules/health.md",
            "docs/modules/notifications.md",
            "docs/modules/alerts.md",
            "docs/integration/architecture.md",
            "docs/examples/curl-examples.md",
            "docs/examples/go-examples.md",
            "docs/examples/react-examples.md",
            "docs/examples/deployment.md",
            "docs/troubleshooting.md",
            "docs/upgrading.md",
        ):
            self.assertTrue((REPO / page).is_file(), page)
            self.assertIn(f"]({page})", readme, page)

"""The shape of the package (DESIGN.md, "Shape"), checked on its source with ``ast``.

Layers, from the ground up: the floor (errors, config, logs, media identity
and path rules, database migrations, thread pools, the timer base), domain
parts (auth, audio, transcode, analytics, events, cache, notifications,
alerts, the demo library), HTTP and WebSocket adapters (web, middleware,
streaming, hls, ws), and the composition root (tap, startup, processes,
cli).  Arrows point down only, there is no import circle, a domain part
never takes a ``request``, and no module grows past what a reader can hold.
These tests read the files; they import nothing of streamsrv.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from twisted.trial import unittest

PACKAGE = Path(__file__).resolve().parent.parent / "streamsrv"

#: Packages of domain logic: they return data and raise ``streamsrv.errors.ApiError``.
DOMAIN = frozenset(
    {"auth", "audio", "transcode", "analytics", "events", "cache", "notifications", "alerts", "demo"}
)

#: What turns requests and sockets into calls on the domain, and the composition root.
ADAPTERS = frozenset({"web", "middleware", "streaming", "hls", "ws"})
ROOT = frozenset({"tap", "processes", "cli", "startup"})

#: The floor: every part may import these, and each imports only what its
#: entry names (and itself).
FLOOR = {
    "errors": frozenset(),
    "media": frozenset({"errors"}),
    "logs": frozenset(),
    "config": frozenset({"errors"}),
    "db": frozenset(),
    "threads": frozenset(),
    "service": frozenset(),
    "redisconn": frozenset(),
    "cliargs": frozenset(),
}

MAX_MODULE_LINES = 800
MAX_TAP_LINES = 300
MAX_TAP_FUNCTION_LINES = 40


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The streamsrv modules *name* imports, with the line of each import.

    ``from a import b`` counts as an import of ``a.b`` when that is a module,
    else of ``a``; imports inside functions and ``TYPE_CHECKING`` blocks count
    too (a lazy import still points its arrow).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "streamsrv":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "streamsrv":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno


def part(module: str) -> str:
    """The top-level part of a dotted name: ``streamsrv.audio.catalog`` -> ``audio``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target, _ in imports(name, path, known)} - {name} for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


class ImportGraphTests(unittest.TestCase):
    """The arrows between the package's parts."""

    def test_no_circle(self) -> None:
        """No set of modules imports itself round in a circle.

        A package's ``__init__`` that only holds a docstring does not count as
        importing its submodules, so a package and its modules may refer to
        one another only when the code really does.
        """
        self.assertEqual(cycles(graph()), [])

    def test_domain_imports_no_adapter(self) -> None:
        """A domain part imports neither an adapter (web, middleware, streaming, hls, ws) nor the root."""
        known = modules()
        upward = {
            f"{name}:{line} imports {target}"
            for name, path in known.items()
            if part(name) in DOMAIN
            for target, line in imports(name, path, known)
            if part(target) in ADAPTERS | ROOT
        }
        self.assertEqual(sorted(upward), [])

    def test_adapters_import_no_root(self) -> None:
        """The adapters never import the composition root (tap, processes, cli)."""
        known = modules()
        upward = {
            f"{name}:{line} imports {target}"
            for name, path in known.items()
            if part(name) in ADAPTERS | DOMAIN
            for target, line in imports(name, path, known)
            if part(target) in ROOT
        }
        self.assertEqual(sorted(upward), [])

    def test_floor_imports_nothing_above(self) -> None:
        """The floor's modules (errors, media, config, db, ...) stand on nothing above them."""
        known = modules()
        upward = {
            f"{name}:{line} imports {target}"
            for name, path in known.items()
            if part(name) in FLOOR
            for target, line in imports(name, path, known)
            if part(target) not in FLOOR[part(name)] | {part(name)}
        }
        self.assertEqual(sorted(upward), [])


class DomainSignatureTests(unittest.TestCase):
    """A domain part is handed values, never an HTTP request."""

    def test_no_request_parameter(self) -> None:
        """No function or method of a domain package has a parameter named ``request``."""
        offenders = []
        for name, path in modules().items():
            if part(name) not in DOMAIN:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                    if any(a.arg == "request" for a in arguments):
                        offenders.append(f"{name}:{node.lineno} {node.name}")
        self.assertEqual(offenders, [])


class SizeTests(unittest.TestCase):
    """Modules a reader can hold in mind, and a composition root that only wires."""

    def test_module_length(self) -> None:
        """No module of the package is longer than 800 lines."""
        long = {
            name: n
            for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        }
        self.assertEqual(long, {})

    def test_tap_is_wiring(self) -> None:
        """tap.py is under 300 lines and none of its functions is longer than 40."""
        path = PACKAGE / "tap.py"
        source = path.read_text(encoding="utf-8")
        self.assertLess(len(source.splitlines()), MAX_TAP_LINES)
        long = {
            node.name: node.end_lineno - node.lineno + 1
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_TAP_FUNCTION_LINES
        }
        self.assertEqual(long, {})


class LightProcessTests(unittest.TestCase):
    """The HTTP process does not carry the decoders: PyAV and numpy load in the workers, on first use."""

    def test_tap_imports_no_av_or_numpy(self) -> None:
        code = (
            "import sys, streamsrv.tap, streamsrv.web.factory, streamsrv.hls.resource; "
            "import streamsrv.streaming.transcoded; "
            "print(sorted(m for m in ('av', 'numpy', 'lameenc') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PACKAGE.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "[]"), out.stderr[-2000:])


class CheckerTests(unittest.TestCase):
    """The checker itself finds what it is meant to find."""

    def test_cycle_found(self) -> None:
        """A two-module circle and a longer one are both reported; a chain is not."""
        edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"g"}, "g": set()}
        self.assertEqual(sorted(cycles(edges)), [["a", "b"], ["c", "d", "e"]])

    def test_relative_imports_resolved(self) -> None:
        """``from . import x`` and ``from .x import y`` name the modules they import."""
        path = Path(self.mktemp())
        path.write_text("from . import paths\nfrom .identity import make_etag\nimport streamsrv.errors\n")
        known = {"streamsrv.media.paths": path, "streamsrv.media.identity": path, "streamsrv.errors": path}
        found = sorted(target for target, _ in imports("streamsrv.media.other", path, known))
        self.assertEqual(found, ["streamsrv.errors", "streamsrv.media.identity", "streamsrv.media.paths"])

"""The demo player and the React example in a real browser: headless Chromium driven by playwright-core.

A real ``twistd -n streamsrv`` process serves the generated demo library;
``tests/browser/player.mjs`` opens the player URL the daemon prints (its
development token in the fragment) in the system's Chromium and checks what
a person would: the page loads without console errors, a track plays through
hls.js and through a progressive transcode with the right duration, a seek
into a never-seen transcode resumes there, the waveform is drawn (pixels in
a screenshot of its box), zooms and seeks on click, and a notification sent through
the API appears.  The React example (``docs/examples/react``, built with
npm) plays a track from another origin.

Needs ``chromium``, ``node`` and ``npm`` (skips without them, fails under
``STREAMSRV_TEST_REQUIRE_SERVICES=1``).  ``playwright-core`` comes from
``tests/browser/node_modules`` (``.ci/run`` runs ``npm ci`` there) or is
installed into a temporary directory; it never downloads a browser.
``STREAMSRV_TEST_PLAYER_SCREENSHOT=docs/images/player.png`` (a path
relative to the checkout) also saves a screenshot of the player: how the
README's picture is made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.audiogen import write_tone
from tests.services import chromium_node_or_skip, free_port, unavailable
from tests.test_daemon import DEMO_READY_TIMEOUT_S, REPO_ROOT, DaemonTestCase

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
REACT_DIR = REPO_ROOT / "docs" / "examples" / "react"

#: How long one run of the browser script may take (it bounds each of its waits itself).
SCRIPT_TIMEOUT_S = 180.0

#: How long ``npm ci`` (and the React build) may take.
NPM_TIMEOUT_S = 300.0

#: The checks ``player.mjs`` makes on the demo player.
PLAYER_CHECKS = {
    "page loads",
    "hls.js plays",
    "waveform renders",
    "progressive transcode plays",
    "seek into a never-seen transcode",
    "notification appears",
}

#: The line the daemon prints with the player's URL (its token in the fragment).
PLAYER_LINE = re.compile(r"player, open in a browser:\s+(\S+/demo/#token=(\S+))")


def _npm(testcase: DaemonTestCase, npm: str, args: list[str], cwd: Path) -> None:
    """Run ``npm *args`` in *cwd*; skip (fail in CI) when it cannot."""
    done = subprocess.run(
        [npm, *args, "--no-audit", "--no-fund"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        unavailable(testcase, f"npm {' '.join(args)} failed in {cwd.name}: {done.stderr[-500:]}")


def _copy_project(source: Path, target: Path) -> Path:
    """A copy of an npm project's files (not its node_modules or build output)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules", "dist"))
    return target


class BrowserTestCase(DaemonTestCase):
    """Runs ``tests/browser/player.mjs`` with playwright-core against the system Chromium."""

    def setUp(self) -> None:
        super().setUp()
        self.chromium, self.node, self.npm = chromium_node_or_skip(self)

    def script_dir(self) -> Path:
        """Where ``player.mjs`` runs with ``playwright-core`` beside it (installed on demand)."""
        if (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
            return BROWSER_DIR
        target = _copy_project(BROWSER_DIR, Path(self.mktemp()).absolute())
        _npm(self, self.npm, ["ci"], target)
        return target

    def run_script(self, config: dict[str, Any]) -> dict[str, Any]:
        """Run the browser script with *config*; its JSON result (failing with its output if none)."""
        script = self.script_dir() / "player.mjs"
        done = subprocess.run(
            [self.node, str(script), json.dumps({"chromium": self.chromium, **config})],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
        try:
            result: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            self.fail(f"player.mjs exited {done.returncode} without a result:\n{done.stdout}\n{done.stderr}")
        return result

    def assert_checks(self, result: dict[str, Any], expected: set[str]) -> None:
        """Every expected check ran and passed, and the pages logged no error."""
        checks = result["checks"]
        self.assertEqual(set(checks), expected)
        failed = {name: check for name, check in checks.items() if not check["ok"]}
        self.assertEqual(failed, {})
        self.assertEqual(result["consoleErrors"], [])


class PlayerTests(BrowserTestCase):
    """The demo player, opened as a person would from the URL the daemon prints."""

    def test_player(self) -> None:
        """
        The player loads without console errors, plays through hls.js and a
        progressive transcode (duration right), resumes a seek into a
        never-seen transcode, draws the waveform and seeks on a click, and
        shows a notification sent through the API.
        """
        daemon = self.start([])
        daemon.wait_ready(DEMO_READY_TIMEOUT_S)
        found = PLAYER_LINE.search(daemon.stderr())
        self.assertIsNotNone(found, daemon.stderr())
        assert found is not None
        url, token = found.group(1), found.group(2)
        self.assertEqual(url, f"http://127.0.0.1:{daemon.port}/demo/#token={token}")
        config: dict[str, Any] = {
            "base": f"http://127.0.0.1:{daemon.port}",
            "playerUrl": url,
            "apiToken": token,
        }
        screenshot = os.environ.get("STREAMSRV_TEST_PLAYER_SCREENSHOT")
        if screenshot:
            # Relative to the checkout (trial runs in _trial_temp).
            config["screenshot"] = str(REPO_ROOT / screenshot)
        result = self.run_script(config)
        self.assert_checks(result, PLAYER_CHECKS)
        checks = result["checks"]
        self.assertTrue(checks["hls.js plays"]["src"].startswith("blob:"))
        self.assertIn("format=mp3", checks["progressive transcode plays"]["src"])
        seek = checks["seek into a never-seen transcode"]
        self.assertGreater(seek["currentTime"], seek["target"])


class ReactExampleTests(BrowserTestCase):
    """``docs/examples/react`` built with npm, served from another origin, plays a track."""

    def built_example(self) -> Path:
        """The example's ``dist/`` (``.ci/run`` builds it), or a fresh build in a temporary copy."""
        if (REACT_DIR / "dist" / "index.html").is_file():
            return REACT_DIR / "dist"
        copy = _copy_project(REACT_DIR, Path(self.mktemp()).absolute())
        _npm(self, self.npm, ["ci"], copy)
        _npm(self, self.npm, ["run", "build"], copy)
        return copy / "dist"

    def test_react_example(self) -> None:
        """The built example lists the catalog over CORS and plays a transcode in Chromium."""
        dist = self.built_example()
        static_port = free_port()
        origin = f"http://127.0.0.1:{static_port}"
        static = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1", "-d", str(dist)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(static.wait)
        self.addCleanup(static.kill)
        media = self.media_dir()
        write_tone(media / "tone.flac", "flac", seconds=8.0)
        daemon = self.start(["--media-dir", str(media)], env={"STREAMSRV_CORS_ORIGINS": origin})
        daemon.wait_ready()
        base = f"http://127.0.0.1:{daemon.port}"
        result = self.run_script({"base": base, "reactUrl": f"{origin}/?server={base}"})
        self.assert_checks(result, {"react example plays"})

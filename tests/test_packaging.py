"""``setup.py`` ships the whole daemon.

The suite runs from the checkout, so a package missing from ``setup.py``
would pass every other test and break the README's install line.  This test
runs ``setup.py`` with ``setuptools.setup`` captured and compares what it
declares with the source tree.
"""

from __future__ import annotations

import fnmatch
import runpy
from pathlib import Path
from typing import Any

import setuptools
from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


def declared() -> dict[str, Any]:
    """The keyword arguments ``setup.py`` passes to ``setup()``."""
    captured: dict[str, Any] = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)  # type: ignore[assignment]
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
    return captured


class SetupTests(unittest.TestCase):
    """Every package, migration and the plugin are declared."""

    def test_every_package_declared(self) -> None:
        """Each directory of streamsrv/ holding Python modules is a declared package."""
        packages = set(declared()["packages"])
        on_disk = {
            ".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "streamsrv").rglob("*.py")
        }
        self.assertEqual(sorted(on_disk - packages), [])
        self.assertIn("twisted.plugins", packages)
        for package in on_disk:
            self.assertTrue((ROOT / package.replace(".", "/") / "__init__.py").exists(), package)

    def test_data_files_declared(self) -> None:
        """Files the daemon reads at run time (migrations, the player's files) match package_data."""
        package_data: dict[str, list[str]] = declared()["package_data"]
        static = (ROOT / "streamsrv" / "web" / "player" / "static").rglob("*")
        served = [path for path in static if path.is_file() and not path.name.startswith(".")]
        self.assertIn(ROOT / "streamsrv" / "web" / "player" / "static" / "index.html", served)
        for path in [*(ROOT / "streamsrv").rglob("*.sql"), *served]:
            package = ".".join(path.parent.relative_to(ROOT).parts)
            owners = [name for name in package_data if package == name or package.startswith(name + ".")]
            owner = max(owners, key=len, default=None)
            relative = path.relative_to(ROOT / (owner or "").replace(".", "/")).as_posix() if owner else ""
            self.assertTrue(
                owner is not None and any(fnmatch.fnmatch(relative, p) for p in package_data[owner]),
                f"{path.relative_to(ROOT)} is not in package_data",
            )

"""Packaging for streamsrv.

``twisted.plugins`` is listed as a package so that a regular install puts
``twisted/plugins/streamsrv_plugin.py`` where twistd's plugin scan looks.  An
editable (PEP 660) install cannot do that by itself, so ``streamsrv.pth`` —
written into the wheel's root by :class:`BuildPyWithPth` only for editable
builds — adds the checkout to ``sys.path`` and the scan finds the plugin there.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "streamsrv" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__ in streamsrv/__init__.py")


class BuildPyWithPth(build_py):
    """For editable installs, also ship a ``.pth`` pointing at the checkout.

    twistd finds plugins by scanning ``<sys.path entry>/twisted/plugins``;
    setuptools' editable finder maps ``streamsrv`` but not that directory.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "streamsrv-plugins.pth"
            target.write_text(str(HERE.resolve()) + "\n")


setup(
    name="streamsrv",
    version=_version(),
    description="On-demand audio streaming daemon on Twisted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=[
        "streamsrv",
        "streamsrv.web",
        "streamsrv.middleware",
        "streamsrv.streaming",
        "streamsrv.health",
        "streamsrv.audio",
        "twisted.plugins",
    ],
    package_data={"streamsrv": ["py.typed"]},
    cmdclass={"build_py": BuildPyWithPth},
    install_requires=[
        "twisted[tls]>=24.10",
        "klein>=24.8",
        "autobahn>=24.4",
        "treq>=24.9",
        "pyjwt[crypto]>=2.8",
        "txredisapi>=1.4.10",
        "mutagen>=1.47",
        "numpy>=1.26",
        "av>=12",
        "prometheus-client>=0.20",
        "service-identity>=24.1",
    ],
    extras_require={
        "test": ["hypothesis>=6.100", "psycopg2-binary>=2.9"],
        "dev": ["hypothesis>=6.100", "ruff>=0.6", "mypy>=1.11", "mypy-zope>=1.0", "tox>=4"],
    },
    entry_points={"console_scripts": ["streamsrv = streamsrv.cli:console_main"]},
)

"""Packaging for streamsrv.

``twisted.plugins`` is listed as a package so that a regular install puts
``twisted/plugins/streamsrv_plugin.py`` where twistd's plugin scan looks.  An
editable (PEP 660) install cannot do that by itself, so
:class:`EditableWheelWithPlugins` adds a ``.pth`` naming the checkout, and
the scan finds the plugin there.
"""

from pathlib import Path
from typing import Any

from setuptools import find_packages, setup
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "streamsrv" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__ in streamsrv/__init__.py")


class EditableWheelWithPlugins(editable_wheel):
    """Editable installs also ship ``streamsrv-plugins.pth`` naming the checkout.

    twistd finds plugins by scanning ``<sys.path entry>/twisted/plugins``;
    setuptools' editable finder maps ``streamsrv`` but puts no directory on
    ``sys.path``, so without this twistd would not see the plugin.  Wraps the
    strategy setuptools picks (a private hook: if it disappears, use
    ``pip install -e . --config-settings editable_mode=compat``).
    """

    def _select_strategy(self, name: str, tag: str, build_lib: str) -> Any:
        inner = super()._select_strategy(name, tag, build_lib)
        root = str(HERE.resolve())

        class WithPluginPath:
            def __enter__(self) -> "WithPluginPath":
                inner.__enter__()
                return self

            def __exit__(self, *exc: object) -> Any:
                return inner.__exit__(*exc)

            def __call__(self, wheel: Any, files: Any, mapping: Any) -> None:
                inner(wheel, files, mapping)
                wheel.writestr("streamsrv-plugins.pth", root + "\n")

        return WithPluginPath()


#: What the test suite imports beyond the package's own requirements.
TEST_REQUIRES = [
    "hypothesis>=6.100",
    "websockets>=12",
    "m3u8>=4",
    # The real SMTP server (STARTTLS, AUTH) the email channel's tests run in a child process.
    "aiosmtpd>=1.4",
    # An aes128gcm decryptor independent of the push channel's own, for the push service stand-in.
    "http-ece>=1.2",
]

setup(
    name="streamsrv",
    version=_version(),
    description="On-demand audio streaming daemon on Twisted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # Every package under streamsrv/, found rather than listed, so a new one cannot be left
    # out of a wheel (tests run from the checkout and would not notice).
    packages=[*find_packages(where=str(HERE), include=["streamsrv", "streamsrv.*"]), "twisted.plugins"],
    package_data={
        "streamsrv": ["py.typed"],
        "streamsrv.analytics": ["migrations/*.sql"],
        "streamsrv.notifications": ["migrations/*.sql"],
        # The demo player's page, modules and vendored browser libraries (with their licences).
        "streamsrv.web.player": ["static/*.*", "static/js/*.js", "static/vendor/*.*"],
    },
    data_files=[
        # The default alert rules, found there by streamsrv.alerts.rules.default_rules_file().
        ("share/streamsrv", ["etc/alerts.toml"]),
        # The notification templates (streamsrv.notifications.templates.default_templates_dir()).
        (
            "share/streamsrv/notifications",
            sorted(
                str(p.relative_to(HERE)) for p in (HERE / "etc" / "notifications").glob("*") if p.is_file()
            ),
        ),
    ],
    cmdclass={"editable_wheel": EditableWheelWithPlugins},
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
        # MP3 transcodes: lameenc's LAME through its exported C API (PyAV's LAME build is ~3x slower).
        "lameenc>=1.7",
        "prometheus-client>=0.20",
        "service-identity>=24.1",
        # Web Push encryption (ECDH P-256, HKDF, AES-128-GCM) and VAPID keys; also what pyjwt[crypto] and
        # twisted[tls] already pull in, named because the push channel uses it directly.
        "cryptography>=42",
        # PostgreSQL for analytics (STREAMSRV_ANALYTICS_DSN) through twisted.enterprise.adbapi.
        "psycopg2-binary>=2.9",
        # Notification templates (streamsrv.notifications.templates): its sandboxed environment.
        "jinja2>=3.1",
        # Request heads parsed by llhttp (streamsrv.web.fastchannel), as uvicorn does; optional at run time.
        "httptools>=0.6",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        # Everything the suite needs, and the lint and typing tools tox runs.
        "dev": [*TEST_REQUIRES, "ruff>=0.6", "mypy>=1.11", "mypy-zope>=1.0", "tox>=4"],
    },
    entry_points={"console_scripts": ["streamsrv = streamsrv.cli:console_main"]},
)

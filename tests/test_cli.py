# -*- test-case-name: tests.test_cli -*-
"""Tests for :mod:`streamsrv.cli`, the ``streamsrv`` admin command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from twisted.trial import unittest

from streamsrv import cli
from streamsrv.config import KNOWN_VARIABLES, REDACTED, load_settings, redacted

REPO = Path(__file__).resolve().parent.parent

JWT_SECRET = "jwt-Qw3eR6tY9uI2oP5aS8dF1gH4jK7lZ0xC"
METRICS_TOKEN = "metrics-Mn5bV8cX1zL4kJ7hG0fD3sA6pO9iU2yT"
SIGNING_SECRET = "url-Ty6uI9oP2aS5dF8gH1jK4lZ7xC0vB3nM"
REDIS_PASSWORD = "redis-pw-Gh7jK0lZ3xC6vB9nM2qW"
SECRETS = (JWT_SECRET, METRICS_TOKEN, SIGNING_SECRET, REDIS_PASSWORD)


class _Run:
    """
    The outcome of one :func:`cli.main` call.
    """

    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.status = status
        self.stdout = stdout
        self.stderr = stderr


def run(argv: list[str], environ: Mapping[str, str] | None = None) -> _Run:
    """
    Run ``streamsrv ARGV`` in-process with *environ* (empty by default), capturing output.
    """
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(argv, environ={} if environ is None else environ, stdout=out, stderr=err)
    return _Run(status, out.getvalue(), err.getvalue())


class ConfigCheckTests(unittest.SynchronousTestCase):
    """
    ``streamsrv config check``.
    """

    def setUp(self) -> None:
        media = Path(self.mktemp())
        media.mkdir()
        self.production = {
            "STREAMSRV_ENV": "production",
            "STREAMSRV_MEDIA_DIR": str(media),
            "STREAMSRV_JWT_SECRET": JWT_SECRET,
            "STREAMSRV_METRICS_TOKEN": METRICS_TOKEN,
            "STREAMSRV_URL_SIGNING_KEYS": f"live:{SIGNING_SECRET}",
            "STREAMSRV_REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0",
            "STREAMSRV_CORS_ORIGINS": "https://app.example.com",
        }

    def assertNoSecret(self, result: _Run) -> None:
        """
        Assert no test secret appears in either output stream.
        """
        for secret in SECRETS:
            self.assertNotIn(secret, result.stdout)
            self.assertNotIn(secret, result.stderr)

    def test_valid_table(self) -> None:
        """
        A valid configuration prints a table of every variable, secrets redacted, and exits 0.
        """
        result = run(["config", "check"], self.production)
        self.assertEqual(result.status, 0)
        self.assertEqual(result.stderr, "")
        self.assertIn("production profile", result.stdout)
        for name in KNOWN_VARIABLES:
            self.assertIn(f"  {name} ", result.stdout)
        lines = {
            line.split()[0]: line.split(None, 1)[1]
            for line in result.stdout.splitlines()
            if "  STREAMSRV_" in line
        }
        self.assertEqual(lines["STREAMSRV_JWT_SECRET"], REDACTED)
        self.assertEqual(lines["STREAMSRV_URL_SIGNING_KEYS"], f"live:{REDACTED}")
        self.assertEqual(lines["STREAMSRV_REDIS_URL"], f"redis://:{REDACTED}@cache.internal:6379/0")
        self.assertEqual(lines["STREAMSRV_ALLOW_ANONYMOUS"], "false")
        self.assertEqual(lines["STREAMSRV_RATELIMIT_API_PER_IP"], "300/60")
        self.assertEqual(lines["STREAMSRV_JWT_ISSUER"], "-")
        self.assertTrue(result.stdout.rstrip().endswith("configuration OK (0 warnings)"))
        self.assertNoSecret(result)

    def test_valid_json(self) -> None:
        """
        ``--json`` prints one document: ok, the redacted settings and the warnings.
        """
        result = run(["config", "check", "--json"], self.production)
        self.assertEqual(result.status, 0)
        document = json.loads(result.stdout)
        self.assertEqual(document["ok"], True)
        self.assertEqual(document["settings"], redacted(load_settings(environ=self.production)))
        self.assertEqual(document["warnings"], [])
        self.assertNoSecret(result)

    def test_warnings_after_table(self) -> None:
        """
        Warnings follow the table, and the exit status stays 0.
        """
        result = run(["config", "check"], {"STREAMSRV_WORKERS": "4"})
        self.assertEqual(result.status, 0)
        table_end = result.stdout.index("STREAMSRV_SENDFILE")
        warning = result.stdout.index(
            "warning: STREAMSRV_WORKERS > 1 without STREAMSRV_REDIS_URL: rate limits are per process"
        )
        self.assertGreater(warning, table_end)
        self.assertIn("configuration OK (1 warning)", result.stdout)

    def test_warnings_json(self) -> None:
        """
        With ``--json`` the warnings are a list in the document.
        """
        document = json.loads(run(["config", "check", "--json"], {"STREAMSRV_WORKERS": "4"}).stdout)
        self.assertEqual(len(document["warnings"]), 1)
        self.assertTrue(document["warnings"][0].startswith("STREAMSRV_WORKERS > 1"))

    def test_invalid(self) -> None:
        """
        An invalid configuration prints every problem to stderr, nothing to stdout, and exits 1.
        """
        environ = {"STREAMSRV_WORKERS": "x", "STREAMSRV_SENDFILE": "perhaps", "STREAMSRV_LISTNE": "tcp:1"}
        result = run(["config", "check"], environ)
        self.assertEqual(result.status, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn("invalid configuration (3 problems)", result.stderr)
        self.assertIn("  - STREAMSRV_WORKERS: must be a whole number >= 1, got 'x'\n", result.stderr)
        self.assertIn("  - STREAMSRV_SENDFILE: ", result.stderr)
        self.assertIn(
            "  - STREAMSRV_LISTNE: unknown variable (did you mean STREAMSRV_LISTEN?)\n", result.stderr
        )

    def test_alert_rules_and_templates_checked(self) -> None:
        """
        An invalid rules file, a template that does not compile, a rule's
        missing template and an unconfigured channel are each a problem of
        ``config check``, naming the variable, file and field.
        """
        rules = Path(self.mktemp())
        rules.write_text(
            '[[rules]]\nname = "x"\nmeasure = "nonsense"\nabove = 1\n'
            '[[rules]]\nname = "y"\nmeasure = "redis_up"\nbelow = 1\n'
            'notify = { template = "pager", user_ids = ["ops"], channels = ["email"] }\n'
        )
        templates = Path(self.mktemp())
        templates.mkdir()
        (templates / "pager-firing.sms.j2").write_text("fired {{ rule }}")
        (templates / "broken.sms.j2").write_text("ok\n{% if %}")
        environ = {"STREAMSRV_ALERT_RULES_FILE": str(rules), "STREAMSRV_NOTIFY_TEMPLATES_DIR": str(templates)}
        result = run(["config", "check"], environ)
        self.assertEqual(result.status, 1)
        problems = [line[4:] for line in result.stderr.splitlines() if line.startswith("  - ")]
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(
            problems[0].startswith("STREAMSRV_NOTIFY_TEMPLATES_DIR: broken.sms.j2:2: does not compile")
        )
        self.assertTrue(
            problems[1].startswith("STREAMSRV_ALERT_RULES_FILE: rule 'x': measure: must be one of")
        )
        rules.write_text(rules.read_text().replace("nonsense", "redis_up"))
        (templates / "broken.sms.j2").unlink()
        problems = [line[4:] for line in run(["config", "check"], environ).stderr.splitlines()[1:]]
        self.assertEqual(
            problems,
            [
                "STREAMSRV_ALERT_RULES_FILE: rule 'y': notify.template: no pager-resolved template "
                "in STREAMSRV_NOTIFY_TEMPLATES_DIR",
                "STREAMSRV_ALERT_RULES_FILE: rule 'y': notify.channels: the 'email' channel is not "
                "configured (see docs/modules/notification-channels.md)",
            ],
        )
        (templates / "pager-resolved.sms.j2").write_text("resolved {{ rule }}")
        rules.write_text(rules.read_text().replace('"email"', '"websocket"'))
        self.assertEqual(run(["config", "check"], environ).status, 0)

    def test_invalid_json(self) -> None:
        """
        With ``--json`` an invalid configuration also gives ``{"ok": false, "problems": [...]}``.
        """
        result = run(["config", "check", "--json"], {"STREAMSRV_WORKERS": "0"})
        self.assertEqual(result.status, 1)
        self.assertEqual(
            json.loads(result.stdout),
            {"ok": False, "problems": ["STREAMSRV_WORKERS: must be a whole number >= 1, got '0'"]},
        )
        self.assertIn("STREAMSRV_WORKERS", result.stderr)

    def test_production_refusals_hide_secrets(self) -> None:
        """
        Production refusing weak secrets names them without printing them.
        """
        environ = dict(self.production)
        environ["STREAMSRV_JWT_SECRET"] = JWT_SECRET[:20]
        environ["STREAMSRV_METRICS_TOKEN"] = METRICS_TOKEN[:20]
        environ["STREAMSRV_URL_SIGNING_KEYS"] = f"live:{SIGNING_SECRET[:20]}"
        for argv in (["config", "check"], ["config", "check", "--json"]):
            result = run(argv, environ)
            self.assertEqual(result.status, 1)
            self.assertEqual(result.stderr.count("production needs at least 32"), 3)
            for secret in SECRETS:
                self.assertNotIn(secret[:20], result.stdout + result.stderr)

    def test_env_file_option(self) -> None:
        """
        ``--env-file`` is read, and the table says which file was used.
        """
        path = Path(self.mktemp())
        path.write_text("STREAMSRV_WORKERS=3\nSTREAMSRV_REDIS_URL=redis://cache\n", encoding="utf-8")
        result = run(["config", "check", "--env-file", str(path)])
        self.assertEqual(result.status, 0, result.stderr)
        self.assertIn(f"env file {path}", result.stdout)
        self.assertRegex(result.stdout, r"STREAMSRV_WORKERS +3\n")

    def test_env_file_from_environment(self) -> None:
        """
        Without ``--env-file``, ``STREAMSRV_ENV_FILE`` from the environment is read.
        """
        path = Path(self.mktemp())
        path.write_text("STREAMSRV_MAX_RANGES=4\n", encoding="utf-8")
        result = run(["config", "check", "--json"], {"STREAMSRV_ENV_FILE": str(path)})
        self.assertEqual(json.loads(result.stdout)["settings"]["STREAMSRV_MAX_RANGES"], 4)

    def test_missing_env_file(self) -> None:
        """
        A missing ``--env-file`` is a problem, exit 1.
        """
        result = run(["config", "check", "--env-file", self.mktemp()])
        self.assertEqual(result.status, 1)
        self.assertIn("STREAMSRV_ENV_FILE: cannot read", result.stderr)

    def test_os_environ_and_std_streams(self) -> None:
        """
        Without injected arguments, :func:`cli.main` reads :data:`os.environ` and writes to
        :data:`sys.stdout` / :data:`sys.stderr`.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(os, "environ", {"STREAMSRV_WORKERS": "zero"})
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["config", "check"]), 1)
        self.assertIn("STREAMSRV_WORKERS: must be a whole number", err.getvalue())
        self.assertEqual(out.getvalue(), "")


class UsageTests(unittest.SynchronousTestCase):
    """
    The command line itself.
    """

    def test_no_command(self) -> None:
        """
        ``streamsrv`` alone prints usage to stderr and exits 2.
        """
        result = run([])
        self.assertEqual(result.status, 2)
        self.assertIn("usage: streamsrv", result.stderr)
        self.assertIn("config", result.stderr)

    def test_config_without_action(self) -> None:
        """
        ``streamsrv config`` alone prints the config group's usage and exits 2.
        """
        result = run(["config"])
        self.assertEqual(result.status, 2)
        self.assertIn("usage: streamsrv config", result.stderr)
        self.assertIn("check", result.stderr)

    def test_unknown_command(self) -> None:
        """
        An unknown command is a usage error on stderr, exit 2.
        """
        result = run(["frobnicate"])
        self.assertEqual(result.status, 2)
        self.assertIn("invalid choice", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_unknown_option(self) -> None:
        """
        An unknown option of ``config check`` is a usage error, exit 2.
        """
        result = run(["config", "check", "--yaml"])
        self.assertEqual(result.status, 2)
        self.assertIn("unrecognized arguments: --yaml", result.stderr)

    def test_help(self) -> None:
        """
        ``--help`` prints to stdout and exits 0, at every level.
        """
        for argv in (["--help"], ["config", "--help"], ["config", "check", "--help"]):
            result = run(argv)
            self.assertEqual(result.status, 0, argv)
            self.assertIn("usage: streamsrv", result.stdout)
        self.assertIn("--env-file FILE", run(["config", "check", "--help"]).stdout)

    def test_version(self) -> None:
        """
        ``--version`` prints the package version and exits 0.
        """
        from streamsrv import __version__

        result = run(["--version"])
        self.assertEqual(result.status, 0)
        self.assertEqual(result.stdout.strip(), f"streamsrv {__version__}")

    def test_parser_has_config_check(self) -> None:
        """
        :func:`cli.build_parser` routes ``config check`` to :func:`cli.config_check`.
        """
        args = cli.build_parser().parse_args(["config", "check", "--json", "--env-file", "f.env"])
        self.assertIs(args.command, cli.config_check)
        self.assertEqual((args.json, args.env_file), (True, "f.env"))

    def test_console_main(self) -> None:
        """
        The console script exits the process with :func:`cli.main`'s status.
        """
        self.patch(sys, "argv", ["streamsrv", "config", "check"])
        self.patch(os, "environ", {"STREAMSRV_WORKERS": "-3"})
        self.patch(sys, "stderr", io.StringIO())
        error = self.assertRaises(SystemExit, cli.console_main)
        self.assertEqual(error.code, 1)

    def test_subprocess(self) -> None:
        """
        ``python -m streamsrv.cli config check --json`` works in a real process with a
        clean environment and prints no secret.
        """
        workdir = Path(self.mktemp())
        workdir.mkdir()
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "STREAMSRV_JWT_SECRET": JWT_SECRET,
        }
        completed = subprocess.run(
            [sys.executable, "-m", "streamsrv.cli", "config", "check", "--json"],
            cwd=workdir,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        document = json.loads(completed.stdout)
        self.assertEqual(document["settings"]["STREAMSRV_JWT_SECRET"], REDACTED)
        self.assertNotIn(JWT_SECRET, completed.stdout + completed.stderr)
        self.assertFalse(list(workdir.iterdir()), "config check must not create files")


class SignUrlCommandTests(unittest.SynchronousTestCase):
    """``streamsrv sign-url`` through the CLI, with keys from the environment."""

    KEYS = "new:a-new-signing-secret-that-is-long-enough-1234,old:the-old-signing-secret-long-enough-5678"

    def test_signs_with_current_key(self) -> None:
        """The URL is signed with the first key and verifies with the signing module."""
        from urllib.parse import urlsplit

        from streamsrv.auth.signing import parse_query_pairs, signing_keys, verify

        result = run(
            ["sign-url", "jazz/So What.mp3", "--expires-in", "3600", "--bind", "format=mp3"],
            {"STREAMSRV_URL_SIGNING_KEYS": self.KEYS},
        )
        self.assertEqual(result.status, 0, result.stderr)
        url = urlsplit(result.stdout.strip())
        self.assertEqual(url.path, "/stream/jazz/So%20What.mp3")
        pairs = parse_query_pairs(url.query.encode())
        self.assertIn(("kid", "new"), pairs)
        settings = load_settings(environ={"STREAMSRV_URL_SIGNING_KEYS": self.KEYS})
        bound = verify(
            "/stream/jazz/So What.mp3",
            pairs,
            keys=signing_keys(settings.url_signing_keys),
            now=__import__("time").time(),
            max_ttl_s=3600,
        )
        self.assertEqual(bound, {"format": "mp3"})
        self.assertNotIn("a-new-signing-secret", result.stdout + result.stderr)

    def test_without_keys(self) -> None:
        """Outside development, without STREAMSRV_URL_SIGNING_KEYS the command says so and exits 1."""
        result = run(["sign-url", "a.mp3"], {"STREAMSRV_ENV": "staging"})
        self.assertEqual(result.status, 1)
        self.assertIn("STREAMSRV_URL_SIGNING_KEYS", result.stderr)

    def test_development_key_is_the_daemons(self) -> None:
        """In development with nothing configured, the URL is signed with the data dir's key (kid dev),
        which the daemon verifies, and starts with the configured listener's address."""
        from urllib.parse import urlsplit

        from streamsrv.auth.devcredentials import DEV_KID, ensure_dev_credentials
        from streamsrv.auth.signing import SigningKey, parse_query_pairs, verify

        data = Path(self.mktemp())
        creds = ensure_dev_credentials(data)
        environ = {"STREAMSRV_DATA_DIR": str(data), "STREAMSRV_LISTEN": "tcp:9123:interface=127.0.0.1"}
        result = run(["sign-url", "jazz/So What.mp3"], environ)
        self.assertEqual(result.status, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("http://127.0.0.1:9123/stream/jazz/So%20What.mp3?"))
        url = urlsplit(result.stdout.strip())
        pairs = parse_query_pairs(url.query.encode())
        self.assertIn(("kid", DEV_KID), pairs)
        keys = (SigningKey(DEV_KID, creds.url_key),)
        now = __import__("time").time()
        self.assertEqual(verify("/stream/jazz/So What.mp3", pairs, keys=keys, now=now, max_ttl_s=3600), {})

    def test_development_without_the_daemons_credentials(self) -> None:
        """Where the daemon's data dir holds no credentials, one line on stderr says where it looked and
        what to do, exit 1, and nothing is created (a fresh key would sign URLs the daemon refuses)."""
        data = Path(self.mktemp())
        result = run(["sign-url", "a.mp3"], {"STREAMSRV_DATA_DIR": str(data)})
        self.assertEqual((result.status, result.stdout), (1, ""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(str((data / "dev-credentials.json").absolute()), result.stderr)
        self.assertIn("STREAMSRV_DATA_DIR", result.stderr)
        self.assertFalse(data.exists())

    def test_base_url_from_listener(self) -> None:
        """The URL starts with the first TCP listener (loopback for a wildcard interface); --base-url wins."""
        keys = {"STREAMSRV_URL_SIGNING_KEYS": self.KEYS}
        cases = {
            "tcp:9000": "http://127.0.0.1:9000/",
            "tcp:port=9001:interface=0.0.0.0": "http://127.0.0.1:9001/",
            "unix:/run/x.sock tcp6:9002:interface=\\:\\:1": "http://[::1]:9002/",
            "tcp:9003:interface=192.0.2.7": "http://192.0.2.7:9003/",
        }
        for listen, prefix in cases.items():
            result = run(["sign-url", "a.mp3"], {**keys, "STREAMSRV_LISTEN": listen})
            self.assertEqual(result.status, 0, result.stderr)
            self.assertTrue(result.stdout.startswith(prefix + "stream/a.mp3?"), (listen, result.stdout))
        result = run(["sign-url", "a.mp3", "--base-url", "https://media.example.com"], keys)
        self.assertTrue(result.stdout.startswith("https://media.example.com/stream/a.mp3?"))
        self.assertTrue(run(["sign-url", "a.mp3"], keys).stdout.startswith("http://127.0.0.1:8080/"))

    def test_help(self) -> None:
        """--help needs no credentials, writes spaces as %20 (not %%20) and names the listener's URL."""
        result = run(
            ["sign-url", "--help"], {"STREAMSRV_LISTEN": "tcp:9444", "STREAMSRV_DATA_DIR": self.mktemp()}
        )
        self.assertEqual(result.status, 0, result.stderr)
        self.assertIn("%20.", result.stdout)
        self.assertNotIn("%%", result.stdout)
        self.assertIn("http://127.0.0.1:9444", result.stdout)

    def test_invalid_config(self) -> None:
        """An invalid configuration is reported by variable name, exit 1."""
        result = run(["sign-url", "a.mp3"], {"STREAMSRV_URL_SIGNING_KEYS": "no-colon"})
        self.assertEqual(result.status, 1)
        self.assertIn("STREAMSRV_URL_SIGNING_KEYS", result.stderr)


class MintTokenCommandTests(unittest.SynchronousTestCase):
    """``streamsrv mint-token`` through the CLI: the configured key, or the development one."""

    SECRET = "a-mint-test-secret-that-is-long-enough-0123456789"

    def test_configured_secret(self) -> None:
        """The token verifies with STREAMSRV_JWT_SECRET and carries the asked roles."""
        import time

        from twisted.internet.defer import ensureDeferred
        from twisted.internet.task import Clock

        from streamsrv.auth.jwt import JwtVerifier
        from streamsrv.auth.roles import DEFAULT_ROLES

        result = run(
            ["mint-token", "--sub", "carol", "--role", "premium"], {"STREAMSRV_JWT_SECRET": self.SECRET}
        )
        self.assertEqual(result.status, 0, result.stderr)
        clock = Clock()
        clock.advance(time.time())
        verifier = JwtVerifier(secret=self.SECRET, public_key_pem=None, jwks=None, issuer=None, audience=None,
                               leeway_s=30, clock=clock, roles=DEFAULT_ROLES)  # fmt: skip
        principal = self.successResultOf(ensureDeferred(verifier.verify(result.stdout.strip())))
        self.assertEqual(principal.sub, "carol")
        self.assertTrue(principal.can("stream:hq"))
        self.assertNotIn(result.stdout.strip(), result.stderr)

    def test_development_key_is_the_daemons(self) -> None:
        """Without configuration, the token is signed with the data dir's development secret."""
        from streamsrv.auth.devcredentials import ensure_dev_credentials

        data = self.mktemp()
        creds = ensure_dev_credentials(__import__("pathlib").Path(data))
        result = run(["mint-token", "--sub", "dev"], {"STREAMSRV_DATA_DIR": data})
        self.assertEqual(result.status, 0, result.stderr)
        import jwt as pyjwt

        claims = pyjwt.decode(result.stdout.strip(), creds.jwt_secret, algorithms=["HS256"])
        self.assertEqual(claims["sub"], "dev")

    def test_development_without_the_daemons_credentials(self) -> None:
        """Run away from the daemon's data dir, it refuses in one line (exit 1) rather than minting with a
        fresh secret the daemon would refuse, and creates nothing; --help still works."""
        data = Path(self.mktemp())
        result = run(["mint-token", "--sub", "dev"], {"STREAMSRV_DATA_DIR": str(data)})
        self.assertEqual((result.status, result.stdout), (1, ""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("no development credentials at " + str(data.absolute()), result.stderr)
        self.assertFalse(data.exists())
        self.assertEqual(run(["mint-token", "--help"], {"STREAMSRV_DATA_DIR": str(data)}).status, 0)
        self.assertFalse(data.exists())

    def test_default_data_dir_is_the_daemons(self) -> None:
        """Without STREAMSRV_DATA_DIR the daemon's default, ./streamsrv-data, is read (from the current
        directory, as the daemon resolves it)."""
        import jwt as pyjwt

        from streamsrv.auth.devcredentials import ensure_dev_credentials

        here = Path(self.mktemp())
        creds = ensure_dev_credentials(here / "streamsrv-data")
        cwd = os.getcwd()
        os.chdir(here)
        self.addCleanup(os.chdir, cwd)
        result = run(["mint-token", "--sub", "dev"], {})
        self.assertEqual(result.status, 0, result.stderr)
        self.assertEqual(
            pyjwt.decode(result.stdout.strip(), creds.jwt_secret, algorithms=["HS256"])["sub"], "dev"
        )

    def test_no_key_in_production(self) -> None:
        """With no signing key at all, it refuses with exit status 1 (configuration invalid)."""
        result = run(["mint-token", "--sub", "x"], {"STREAMSRV_ENV": "production"})
        self.assertEqual(result.status, 1)


class WaveformCommandTests(unittest.SynchronousTestCase):
    """``streamsrv waveform`` through the CLI."""

    def test_json_and_dat(self) -> None:
        """A generated tone gives audiowaveform JSON and .dat files; a missing input is status 1."""
        import json
        from pathlib import Path

        from tests.audiogen import write_tone

        d = Path(self.mktemp())
        d.mkdir()
        write_tone(d / "t.flac", "flac", 1.0, amplitude=0.5)
        result = run(["waveform", str(d / "t.flac"), "-o", str(d / "t.json"), "-z", "512", "-b", "8"])
        self.assertEqual(result.status, 0, result.stderr)
        doc = json.loads((d / "t.json").read_text())
        self.assertEqual((doc["version"], doc["samples_per_pixel"], doc["bits"]), (2, 512, 8))
        result = run(["waveform", str(d / "t.flac"), "-o", str(d / "t.dat"), "--split-channels"])
        self.assertEqual(result.status, 0, result.stderr)
        self.assertEqual((d / "t.dat").read_bytes()[:4], b"\x02\0\0\0")
        self.assertEqual(run(["waveform", str(d / "missing.wav"), "-o", str(d / "x.json")]).status, 1)


class BaseUrlTests(unittest.SynchronousTestCase):
    """``startup.base_url``: where this host reaches the configured listener (sign-url, the try-me lines)."""

    def test_listeners(self) -> None:
        """The first TCP listener decides: loopback for every-address interfaces, the interface otherwise,
        https for ssl:, [::1] for tcp6:; without a TCP listener, http://127.0.0.1:8080."""
        from streamsrv.startup import FALLBACK_BASE_URL, base_url

        cases = {
            ("tcp:8080:interface=127.0.0.1",): "http://127.0.0.1:8080",
            ("tcp:9000",): "http://127.0.0.1:9000",
            ("tcp:port=9001:interface=0.0.0.0",): "http://127.0.0.1:9001",
            ("tcp:9002:interface=\\:\\:",): "http://127.0.0.1:9002",
            ("tcp6:9003",): "http://[::1]:9003",
            ("tcp6:9004:interface=\\:\\:1",): "http://[::1]:9004",
            ("tcp:9005:interface=localhost",): "http://localhost:9005",
            ("ssl:8443:privateKey=key.pem",): "https://127.0.0.1:8443",
            ("unix:/run/streamsrv.sock", "tcp:9006:interface=192.0.2.7"): "http://192.0.2.7:9006",
            ("systemd:domain=INET:index=0",): FALLBACK_BASE_URL,
            (): FALLBACK_BASE_URL,
        }
        for listen, expected in cases.items():
            self.assertEqual(base_url(listen), expected, listen)

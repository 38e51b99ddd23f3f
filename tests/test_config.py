# -*- test-case-name: tests.test_config -*-
"""Tests for :mod:`streamsrv.config`."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from twisted.trial import unittest

from streamsrv.config import (
    EXAMPLE_SECRETS,
    KNOWN_VARIABLES,
    MIN_SECRET_BYTES,
    REDACTED,
    ConfigError,
    RateLimit,
    Settings,
    config_warnings,
    load_settings,
    redacted,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ENV_FILE = REPO / "etc" / "streamsrv.env.example"
CONFIG_DOC = REPO / "docs" / "modules" / "config.md"

#: Strong, distinctive secrets: a test fails if any of them leaks into output.
JWT_SECRET = "jwt-Kq8vN2xR7tY4wZ1bC6dF9gH3jL5mP0sU"
METRICS_TOKEN = "metrics-Vb7nM4qW1eR8tY5uI2oP9aS6dF3gH0jK"
SIGNING_SECRET = "url-Lz2xC5vB8nM1qW4eR7tY0uI3oP6aS9dF"
BINARY_KEY = bytes(range(200, 240))
BINARY_KEY_B64 = base64.b64encode(BINARY_KEY).decode()
REDIS_PASSWORD = "redis-pw-Hx4cV7bN0mQ3wE6rT9yU"
DB_PASSWORD = "db-pw-Jk2lZ5xC8vB1nM4qW7eR"


def _load(
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """
    :func:`load_settings` with an empty environment unless one is given.
    """
    return load_settings(cli=cli, environ={} if environ is None else environ, env_file=env_file)


class _ConfigTestCase(unittest.SynchronousTestCase):
    """
    Helpers: temporary files and directories, and problem assertions.
    """

    def directory(self) -> Path:
        """
        A new, empty temporary directory.
        """
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return path

    def env_file(self, text: str, name: str = "streamsrv.env") -> Path:
        """
        A temporary env file holding *text*.
        """
        path = self.directory() / name
        path.write_text(text, encoding="utf-8")
        return path

    def problems(
        self,
        environ: Mapping[str, str] | None = None,
        cli: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
    ) -> list[str]:
        """
        The problems :func:`load_settings` raises for this input (it must raise).
        """
        error = self.assertRaises(ConfigError, _load, environ, cli, env_file)
        return error.problems

    def assertOneProblem(self, environ: Mapping[str, str], name: str, *fragments: str) -> str:
        """
        Assert *environ* gives exactly one problem, about *name*, containing *fragments*.
        """
        problems = self.problems(environ)
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith(f"{name}: "), problems[0])
        for fragment in fragments:
            self.assertIn(fragment, problems[0])
        return problems[0]


class DefaultsTests(_ConfigTestCase):
    """
    What each profile gives when nothing else is set.
    """

    def test_development(self) -> None:
        """
        No configuration at all is a valid development setup on loopback, with the
        demo library, anonymous access, text logs and a data dir under the working directory.
        """
        settings = _load()
        self.assertEqual(settings.env, "development")
        self.assertIsNone(settings.media_dir)
        self.assertTrue(settings.demo_library)
        self.assertFalse(settings.is_production)
        self.assertEqual(settings.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(settings.data_dir, Path("streamsrv-data"))
        self.assertTrue(settings.allow_anonymous)
        self.assertEqual(settings.log_format, "text")
        self.assertEqual(settings.log_level, "info")
        self.assertIsNone(settings.jwt_secret)
        self.assertIsNone(settings.jwt_public_key_file)
        self.assertIsNone(settings.jwt_private_key_file)
        self.assertIsNone(settings.jwt_jwks_url)
        self.assertIsNone(settings.jwt_issuer)
        self.assertIsNone(settings.jwt_audience)
        self.assertEqual(settings.jwt_leeway_s, 30.0)
        self.assertEqual(settings.url_signing_keys, ())
        self.assertEqual(settings.url_max_ttl_s, 604800)
        self.assertIsNone(settings.redis_url)
        self.assertIsNone(settings.analytics_dsn)
        self.assertEqual(
            settings.cors_origins, ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
        )
        self.assertEqual(settings.trusted_proxies, ())
        self.assertEqual(settings.workers, 1)
        self.assertIsNone(settings.metrics_token)
        self.assertEqual(settings.shutdown_grace_s, 10.0)
        # Ten times the contract's defaults, which staging and production keep.
        self.assertEqual(settings.ratelimit_api_per_ip, RateLimit(3000, 60.0))
        self.assertEqual(settings.ratelimit_api_per_user, RateLimit(6000, 60.0))
        self.assertEqual(settings.ratelimit_stream_per_ip, RateLimit(600, 60.0))
        self.assertEqual(settings.ratelimit_stream_per_user, RateLimit(1200, 60.0))
        self.assertEqual(settings.ws_auth_timeout_s, 10.0)
        self.assertEqual(settings.ws_max_frame, 65536)
        self.assertEqual(settings.max_ranges, 16)
        self.assertTrue(settings.sendfile)
        self.assertIsNone(settings.env_file)

    def test_staging(self) -> None:
        """
        Staging takes production's defaults: anonymous off, JSON logs, /var/lib/streamsrv.
        """
        settings = _load({"STREAMSRV_ENV": "staging"})
        self.assertEqual(settings.env, "staging")
        self.assertFalse(settings.allow_anonymous)
        self.assertEqual(settings.log_format, "json")
        self.assertEqual(settings.data_dir, Path("/var/lib/streamsrv"))
        self.assertFalse(settings.is_production)
        self.assertEqual(settings.cors_origins, ())
        self.assertEqual(settings.ratelimit_stream_per_ip, RateLimit(60, 60.0))

    def test_production(self) -> None:
        """
        A minimal valid production setup gets anonymous off, JSON logs, /var/lib/streamsrv.
        """
        media = self.directory()
        settings = _load(
            {
                "STREAMSRV_ENV": "production",
                "STREAMSRV_MEDIA_DIR": str(media),
                "STREAMSRV_JWT_SECRET": JWT_SECRET,
            }
        )
        self.assertTrue(settings.is_production)
        self.assertFalse(settings.allow_anonymous)
        self.assertEqual(settings.log_format, "json")
        self.assertEqual(settings.data_dir, Path("/var/lib/streamsrv"))
        self.assertEqual(settings.media_dir, media)
        self.assertFalse(settings.demo_library)
        self.assertEqual(settings.cors_origins, ())
        self.assertEqual(settings.ratelimit_api_per_ip, RateLimit(300, 60.0))
        self.assertEqual(settings.ratelimit_api_per_user, RateLimit(600, 60.0))
        self.assertEqual(settings.ratelimit_stream_per_ip, RateLimit(60, 60.0))
        self.assertEqual(settings.ratelimit_stream_per_user, RateLimit(120, 60.0))

    def test_profile_name_case(self) -> None:
        """
        The profile name is matched case-insensitively and stored in lower case.
        """
        self.assertEqual(_load({"STREAMSRV_ENV": "Staging"}).env, "staging")

    def test_analytics_dsn_effective(self) -> None:
        """
        Without a DSN the analytics store is ``analytics.sqlite3`` in the data dir,
        written as ``sqlite:///`` followed by the path; a DSN given wins.
        """
        self.assertEqual(_load().analytics_dsn_effective, "sqlite:///streamsrv-data/analytics.sqlite3")
        self.assertEqual(
            _load({"STREAMSRV_ENV": "staging"}).analytics_dsn_effective,
            "sqlite:////var/lib/streamsrv/analytics.sqlite3",
        )
        dsn = "postgresql://streamsrv@db.internal/streamsrv"
        self.assertEqual(_load({"STREAMSRV_ANALYTICS_DSN": dsn}).analytics_dsn_effective, dsn)

    def test_os_environ_by_default(self) -> None:
        """
        Without *environ*, :data:`os.environ` is read.
        """
        self.patch(os, "environ", {"STREAMSRV_WORKERS": "3", "HOME": "/nowhere"})
        self.assertEqual(load_settings().workers, 3)

    def test_other_variables_ignored(self) -> None:
        """
        Variables without the STREAMSRV_ prefix are none of our business.
        """
        self.assertEqual(_load({"PATH": "/bin", "WORKERS": "x", "STREAMSRVX": "1"}).workers, 1)

    def test_test_variables_reserved(self) -> None:
        """
        ``STREAMSRV_TEST_*`` names (CI's ``STREAMSRV_TEST_REQUIRE_SERVICES``) are not unknown variables.
        """
        self.assertEqual(_load({"STREAMSRV_TEST_REQUIRE_SERVICES": "1"}).env, "development")

    def test_settings_frozen(self) -> None:
        """
        Settings cannot be changed after loading.
        """
        settings = _load()
        with self.assertRaises(AttributeError):
            settings.workers = 2  # type: ignore[misc]

    def test_rate_limit_str(self) -> None:
        """
        A rate limit prints as its COUNT/SECONDS variable form.
        """
        self.assertEqual(str(RateLimit(300, 60.0)), "300/60")
        self.assertEqual(str(RateLimit(5, 0.5)), "5/0.5")


class PrecedenceTests(_ConfigTestCase):
    """
    Command line > environment > env file > profile default.
    """

    def test_layers(self) -> None:
        """
        Each layer beats every layer below it.
        """
        path = self.env_file("STREAMSRV_WORKERS=2\n")
        self.assertEqual(_load({}, {}, path).workers, 2)
        self.assertEqual(_load({"STREAMSRV_WORKERS": "3"}, {}, path).workers, 3)
        self.assertEqual(_load({"STREAMSRV_WORKERS": "3"}, {"WORKERS": "4"}, path).workers, 4)
        self.assertEqual(_load({}, {"WORKERS": "4"}, path).workers, 4)
        self.assertEqual(_load().workers, 1)

    def test_cli_listen(self) -> None:
        """
        ``LISTEN`` on the command line is space-separated endpoints, like the variable.
        """
        settings = _load({"STREAMSRV_LISTEN": "tcp:1"}, {"LISTEN": "tcp:8081 unix:/run/s.sock"})
        self.assertEqual(settings.listen, ("tcp:8081", "unix:/run/s.sock"))

    def test_cli_prefixed_key(self) -> None:
        """
        A command-line key that already carries the prefix is not prefixed twice.
        """
        self.assertEqual(_load(cli={"STREAMSRV_WORKERS": "5"}).workers, 5)

    def test_profile_from_file(self) -> None:
        """
        The profile set in the env file decides the defaults of every other variable.
        """
        settings = _load(env_file=self.env_file("STREAMSRV_ENV=staging\n"))
        self.assertEqual(settings.log_format, "json")
        self.assertFalse(settings.allow_anonymous)

    def test_profile_from_cli_over_environment(self) -> None:
        """
        The profile itself follows the precedence, and the defaults follow the profile.
        """
        settings = _load({"STREAMSRV_ENV": "staging"}, {"ENV": "development"})
        self.assertEqual(settings.env, "development")
        self.assertEqual(settings.log_format, "text")

    def test_explicit_values_beat_profile(self) -> None:
        """
        A value given for a profile-dependent setting wins over the profile's default.
        """
        settings = _load({"STREAMSRV_ENV": "staging", "STREAMSRV_LOG_FORMAT": "text"})
        self.assertEqual(settings.log_format, "text")

    def test_empty_value_means_default(self) -> None:
        """
        An empty value stands for the default and hides the layers below it.
        """
        path = self.env_file("STREAMSRV_WORKERS=2\nSTREAMSRV_REDIS_URL=redis://cache:6379/0\n")
        settings = _load({"STREAMSRV_WORKERS": "", "STREAMSRV_REDIS_URL": "  "}, None, path)
        self.assertEqual(settings.workers, 1)
        self.assertIsNone(settings.redis_url)

    def test_whitespace_stripped(self) -> None:
        """
        Surrounding whitespace is not part of a value.
        """
        self.assertEqual(_load({"STREAMSRV_WORKERS": " 7 \n"}).workers, 7)

    def test_env_file_from_environment(self) -> None:
        """
        ``STREAMSRV_ENV_FILE`` in the environment names the env file, recorded in ``env_file``.
        """
        path = self.env_file("STREAMSRV_WORKERS=6\n")
        settings = _load({"STREAMSRV_ENV_FILE": str(path)})
        self.assertEqual(settings.workers, 6)
        self.assertEqual(settings.env_file, path)

    def test_env_file_from_cli(self) -> None:
        """
        ``ENV_FILE`` on the command line beats ``STREAMSRV_ENV_FILE`` in the environment.
        """
        chosen = self.env_file("STREAMSRV_WORKERS=6\n")
        other = self.env_file("STREAMSRV_WORKERS=9\n")
        settings = _load({"STREAMSRV_ENV_FILE": str(other)}, {"ENV_FILE": str(chosen)})
        self.assertEqual(settings.workers, 6)
        self.assertEqual(settings.env_file, chosen)

    def test_env_file_argument(self) -> None:
        """
        The *env_file* argument beats both, and may be a path object.
        """
        chosen = self.env_file("STREAMSRV_WORKERS=6\n")
        other = self.env_file("STREAMSRV_WORKERS=9\n")
        settings = _load({"STREAMSRV_ENV_FILE": str(other)}, {"ENV_FILE": str(other)}, chosen)
        self.assertEqual(settings.workers, 6)
        self.assertEqual(settings.env_file, chosen)


class EnvFileTests(_ConfigTestCase):
    """
    The env file syntax.
    """

    def load_file(self, text: str, environ: Mapping[str, str] | None = None) -> Settings:
        """
        Load settings from an env file holding *text*.
        """
        return _load(environ, None, self.env_file(text))

    def test_syntax(self) -> None:
        """
        Comments, blank lines, ``export``, spaces around ``=``, quotes and inline comments.
        """
        settings = self.load_file(
            "# a comment\n"
            "\n"
            "   # an indented comment\n"
            "export STREAMSRV_WORKERS=3\n"
            "STREAMSRV_JWT_ISSUER = https://api.example.com   # trailing comment\n"
            "STREAMSRV_JWT_AUDIENCE='it is # not a comment'  # but this is\n"
            'STREAMSRV_METRICS_TOKEN="a \\"quoted\\" \\\\ value" # comment\n'
            "STREAMSRV_JWT_SECRET=abc#def\n"
            "STREAMSRV_REDIS_URL=redis://cache:6379/0?a=b\n"
        )
        self.assertEqual(settings.workers, 3)
        self.assertEqual(settings.jwt_issuer, "https://api.example.com")
        self.assertEqual(settings.jwt_audience, "it is # not a comment")
        self.assertEqual(settings.metrics_token, 'a "quoted" \\ value')
        self.assertEqual(settings.jwt_secret, "abc#def")
        self.assertEqual(settings.redis_url, "redis://cache:6379/0?a=b")

    def test_single_quotes_literal(self) -> None:
        """
        Single quotes keep everything inside, backslashes and ``#`` included.
        """
        settings = self.load_file("STREAMSRV_JWT_SECRET='x\\y # z \"q\"'\n")
        self.assertEqual(settings.jwt_secret, 'x\\y # z "q"')

    def test_double_quote_other_escapes_kept(self) -> None:
        """
        In double quotes a backslash before anything but ``"`` or ``\\`` is kept.
        """
        self.assertEqual(self.load_file('STREAMSRV_JWT_SECRET="a\\nb"\n').jwt_secret, "a\\nb")

    def test_base64_padding_value(self) -> None:
        """
        A value may contain ``=``: only the first one separates name and value.
        """
        settings = self.load_file("STREAMSRV_URL_SIGNING_KEYS=k1:base64:AAECAw==\n")
        self.assertEqual(settings.url_signing_keys, (("k1", b"\x00\x01\x02\x03"),))

    def test_later_assignment_wins(self) -> None:
        """
        When a name is assigned twice, the later line wins.
        """
        self.assertEqual(self.load_file("STREAMSRV_WORKERS=2\nSTREAMSRV_WORKERS=5\n").workers, 5)

    def test_other_names_ignored(self) -> None:
        """
        Names without the prefix are ignored, so the file can be shared.
        """
        self.assertEqual(self.load_file("PGHOST=db\nexport LANG=C\nSTREAMSRV_WORKERS=2\n").workers, 2)

    def test_byte_order_mark(self) -> None:
        """
        A UTF-8 byte order mark at the start is skipped.
        """
        path = self.directory() / "bom.env"
        path.write_bytes(b"\xef\xbb\xbfSTREAMSRV_WORKERS=4\n")
        self.assertEqual(_load(env_file=path).workers, 4)

    def test_crlf(self) -> None:
        """
        Windows line endings are accepted.
        """
        self.assertEqual(self.load_file("STREAMSRV_WORKERS=4\r\nSTREAMSRV_MAX_RANGES=2\r\n").max_ranges, 2)

    def test_malformed_lines(self) -> None:
        """
        Each malformed line is a problem naming STREAMSRV_ENV_FILE and its line number,
        and the line's content (possibly a secret) is never echoed.
        """
        path = self.env_file(
            "STREAMSRV_WORKERS=2\n"
            "no-equals-sign-SECRETVALUE\n"
            "BAD NAME=SECRETVALUE\n"
            "STREAMSRV_JWT_SECRET='SECRETVALUE\n"
            'STREAMSRV_METRICS_TOKEN="SECRETVALUE\n'
            "STREAMSRV_JWT_ISSUER='a' SECRETVALUE\n"
        )
        problems = self.problems(env_file=path)
        self.assertEqual(len(problems), 5, problems)
        for number, problem in zip((2, 3, 4, 5, 6), problems, strict=True):
            self.assertTrue(problem.startswith("STREAMSRV_ENV_FILE: "), problem)
            self.assertIn(f"line {number}:", problem)
            self.assertNotIn("SECRETVALUE", problem)
        self.assertIn("expected KEY=VALUE", problems[0])
        self.assertIn("unterminated single quote", problems[2])
        self.assertIn("unterminated double quote", problems[3])
        self.assertIn("after the closing quote", problems[4])

    def test_missing(self) -> None:
        """
        A missing env file is a problem naming STREAMSRV_ENV_FILE, not a silent no-op.
        """
        missing = Path(self.mktemp())
        problems = self.problems(env_file=missing)
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("STREAMSRV_ENV_FILE: cannot read"), problems[0])
        self.assertIn(str(missing), problems[0])

    def test_missing_named_by_environment(self) -> None:
        """
        The same holds when the environment names the missing file.
        """
        problems = self.problems({"STREAMSRV_ENV_FILE": self.mktemp()})
        self.assertTrue(problems[0].startswith("STREAMSRV_ENV_FILE: "), problems)

    def test_directory(self) -> None:
        """
        A directory is not a readable env file.
        """
        problems = self.problems(env_file=self.directory())
        self.assertTrue(problems[0].startswith("STREAMSRV_ENV_FILE: cannot read"), problems)

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is a problem.
        """
        path = self.directory() / "latin1.env"
        path.write_bytes(b"STREAMSRV_JWT_ISSUER=caf\xe9\n")
        problems = self.problems(env_file=path)
        self.assertEqual(len(problems), 1)
        self.assertIn("not UTF-8", problems[0])

    def test_env_file_inside_env_file(self) -> None:
        """
        An env file cannot name another env file.
        """
        problems = self.problems(env_file=self.env_file("STREAMSRV_ENV_FILE=other.env\n"))
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("STREAMSRV_ENV_FILE: cannot be set inside an env file"))

    def test_unknown_name(self) -> None:
        """
        A misspelt name in the env file is reported with a suggestion.
        """
        problems = self.problems(env_file=self.env_file("STREAMSRV_MEDIADIR=/srv\n"))
        self.assertEqual(
            problems, ["STREAMSRV_MEDIADIR: unknown variable (did you mean STREAMSRV_MEDIA_DIR?)"]
        )

    def test_example_file(self) -> None:
        """
        ``etc/streamsrv.env.example`` parses, uses only known names, and production refuses
        it only for its example secrets (all of them, each its own problem).
        """
        text = EXAMPLE_ENV_FILE.read_text(encoding="utf-8")
        names = set(re.findall(r"^#? ?(STREAMSRV_[A-Z0-9_]+)=", text, re.MULTILINE))
        self.assertEqual(names, set(KNOWN_VARIABLES))
        problems = self.problems(cli={"MEDIA_DIR": str(self.directory())}, env_file=EXAMPLE_ENV_FILE)
        self.assertEqual(len(problems), 4, problems)
        for problem in problems:
            self.assertIn("documented example value", problem)
        self.assertEqual(
            sorted(problem.split(":")[0] for problem in problems),
            [
                "STREAMSRV_JWT_SECRET",
                "STREAMSRV_METRICS_TOKEN",
                "STREAMSRV_URL_SIGNING_KEYS",
                "STREAMSRV_URL_SIGNING_KEYS",
            ],
        )

    def test_example_file_staging(self) -> None:
        """
        The example file is valid under the staging profile, which skips production's refusals.
        """
        settings = _load({"STREAMSRV_ENV": "staging"}, {"MEDIA_DIR": str(self.directory())}, EXAMPLE_ENV_FILE)
        self.assertEqual(settings.env, "staging")
        self.assertEqual([kid for kid, _ in settings.url_signing_keys], ["2025-06", "2025-01"])
        for _kid, key in settings.url_signing_keys:
            self.assertIn(key.decode("utf-8"), EXAMPLE_SECRETS)


class ValidationTests(_ConfigTestCase):
    """
    Every value is validated, and every problem names its variable.
    """

    def test_unknown_variable(self) -> None:
        """
        An unknown STREAMSRV_ name is a problem, with a difflib suggestion when one is close.
        """
        self.assertOneProblem(
            {"STREAMSRV_WORKER": "2"},
            "STREAMSRV_WORKER",
            "unknown variable (did you mean STREAMSRV_WORKERS?)",
        )
        problem = self.assertOneProblem({"STREAMSRV_ZZZZZZ": "1"}, "STREAMSRV_ZZZZZZ")
        self.assertEqual(problem, "STREAMSRV_ZZZZZZ: unknown variable")

    def test_hls_ladder(self) -> None:
        """
        The HLS ladder is 1 to 8 distinct kb/s within 32..320, kept sorted; anything else is refused.
        """
        self.assertEqual(_load({}).hls_ladder, (64, 96, 128, 160))
        self.assertEqual(_load({"STREAMSRV_HLS_LADDER": "160, 48,96"}).hls_ladder, (48, 96, 160))
        for bad in ("64,64", "16,64", "64,400", "64k", "1,2,3,4,5,6,7,8,9", "64;96"):
            self.assertOneProblem({"STREAMSRV_HLS_LADDER": bad}, "STREAMSRV_HLS_LADDER", "32..320")

    def test_unknown_lower_case(self) -> None:
        """
        A lower-case spelling of a known name is caught too (environment names are case-sensitive).
        """
        self.assertOneProblem(
            {"streamsrv_workers": "2"}, "streamsrv_workers", "did you mean STREAMSRV_WORKERS?"
        )

    def test_unknown_cli_key(self) -> None:
        """
        An unknown command-line key is reported like an unknown variable.
        """
        problems = self.problems(cli={"WORKERZ": "2"})
        self.assertEqual(problems, ["STREAMSRV_WORKERZ: unknown variable (did you mean STREAMSRV_WORKERS?)"])

    def test_profile(self) -> None:
        """
        The profile must be one of the three.
        """
        self.assertOneProblem(
            {"STREAMSRV_ENV": "prod"}, "STREAMSRV_ENV", "development, staging, production", "'prod'"
        )

    def test_whole_numbers(self) -> None:
        """
        Whole-number settings refuse words, fractions, signs below the minimum, and exponents,
        with the exact wording the contract shows.
        """
        self.assertEqual(
            self.problems({"STREAMSRV_WORKERS": "x"}),
            ["STREAMSRV_WORKERS: must be a whole number >= 1, got 'x'"],
        )
        for name in (
            "STREAMSRV_WORKERS",
            "STREAMSRV_WS_MAX_FRAME",
            "STREAMSRV_MAX_RANGES",
            "STREAMSRV_URL_MAX_TTL_S",
        ):
            for bad in ("0", "-1", "1.5", "1e3", "1_000", "٣", ""):
                if bad == "":
                    continue
                self.assertOneProblem({name: bad}, name, "must be a whole number >= 1", repr(bad))
        settings = _load(
            {
                "STREAMSRV_WORKERS": "4",
                "STREAMSRV_WS_MAX_FRAME": "1048576",
                "STREAMSRV_MAX_RANGES": "+2",
                "STREAMSRV_URL_MAX_TTL_S": "3600",
            }
        )
        self.assertEqual(
            (settings.workers, settings.ws_max_frame, settings.max_ranges, settings.url_max_ttl_s),
            (4, 1048576, 2, 3600),
        )

    def test_long_value_shortened(self) -> None:
        """
        A long bad value is cut short in the problem.
        """
        problem = self.assertOneProblem({"STREAMSRV_WORKERS": "x" * 500}, "STREAMSRV_WORKERS")
        self.assertLess(len(problem), 150)

    def test_numbers(self) -> None:
        """
        Durations refuse negatives, words, nan and infinity; the WebSocket auth timeout refuses 0.
        """
        for name in ("STREAMSRV_JWT_LEEWAY_S", "STREAMSRV_SHUTDOWN_GRACE_S"):
            for bad in ("-1", "abc", "nan", "inf", "1e2", "-0.5"):
                self.assertOneProblem({name: bad}, name, "must be a number >= 0", repr(bad))
        for bad in ("0", "-1", "0.0"):
            self.assertOneProblem(
                {"STREAMSRV_WS_AUTH_TIMEOUT_S": bad}, "STREAMSRV_WS_AUTH_TIMEOUT_S", "must be a number > 0"
            )
        settings = _load(
            {
                "STREAMSRV_JWT_LEEWAY_S": "0",
                "STREAMSRV_SHUTDOWN_GRACE_S": "2.5",
                "STREAMSRV_WS_AUTH_TIMEOUT_S": ".5",
            }
        )
        self.assertEqual(
            (settings.jwt_leeway_s, settings.shutdown_grace_s, settings.ws_auth_timeout_s), (0, 2.5, 0.5)
        )

    def test_booleans(self) -> None:
        """
        Booleans accept 1/0, true/false, yes/no, on/off in any case, and nothing else.
        """
        for word in ("1", "true", "YES", "On"):
            self.assertTrue(_load({"STREAMSRV_SENDFILE": word}).sendfile, word)
        for word in ("0", "False", "no", "OFF"):
            self.assertFalse(_load({"STREAMSRV_SENDFILE": word}).sendfile, word)
        for name in ("STREAMSRV_SENDFILE", "STREAMSRV_ALLOW_ANONYMOUS"):
            self.assertOneProblem({name: "maybe"}, name, "must be a boolean", "'maybe'")

    def test_log_level(self) -> None:
        """
        Log levels are matched case-insensitively; ``warning`` means ``warn``; others are refused.
        """
        self.assertEqual(_load({"STREAMSRV_LOG_LEVEL": "DEBUG"}).log_level, "debug")
        self.assertEqual(_load({"STREAMSRV_LOG_LEVEL": "warning"}).log_level, "warn")
        self.assertOneProblem({"STREAMSRV_LOG_LEVEL": "verbose"}, "STREAMSRV_LOG_LEVEL", "debug, info, warn")

    def test_log_format(self) -> None:
        """
        The log format is json or text.
        """
        self.assertEqual(_load({"STREAMSRV_LOG_FORMAT": "JSON"}).log_format, "json")
        self.assertOneProblem({"STREAMSRV_LOG_FORMAT": "xml"}, "STREAMSRV_LOG_FORMAT", "json, text")

    def test_listen_valid(self) -> None:
        """
        Every supported endpoint type passes, escaped colons included; nothing is bound.
        """
        endpoints = (
            "tcp:8080:interface=127.0.0.1",
            "tcp:port=0",
            r"tcp6:8443:interface=\:\:1",
            "ssl:8443:privateKey=key.pem:certKey=cert.pem",
            "unix:/run/streamsrv.sock:mode=660",
            "unix:address=/run/s.sock",
            "systemd:domain=INET:index=0",
        )
        self.assertEqual(_load({"STREAMSRV_LISTEN": "  ".join(endpoints)}).listen, endpoints)

    def test_listen_invalid(self) -> None:
        """
        Unknown types, missing or bad ports, ssl without a key, unix without a path and
        systemd without domain or index are each a problem.
        """
        cases = {
            "http:8080": "endpoint type must be one of tcp, tcp6, ssl, unix, systemd",
            "TCP:8080": "endpoint type must be one of",
            "8080": "endpoint type must be one of",
            "tcp": "no port",
            "tcp:interface=127.0.0.1": "no port",
            "tcp:http": "port must be a number from 0 to 65535",
            "tcp:65536": "port must be a number from 0 to 65535",
            "ssl:8443": "ssl needs privateKey=",
            "unix": "no socket path",
            "systemd:index=0": "systemd needs domain=",
            "systemd:domain=INET": "systemd needs index=",
        }
        for endpoint, reason in cases.items():
            self.assertOneProblem({"STREAMSRV_LISTEN": endpoint}, "STREAMSRV_LISTEN", reason, repr(endpoint))
        problems = self.problems({"STREAMSRV_LISTEN": "tcp:8080 http:80 ftp:21"})
        self.assertEqual(len(problems), 2, problems)

    def test_media_dir(self) -> None:
        """
        The media dir must exist and be a directory.
        """
        missing = self.mktemp()
        self.assertOneProblem({"STREAMSRV_MEDIA_DIR": missing}, "STREAMSRV_MEDIA_DIR", "does not exist")
        afile = self.env_file("x", "file.mp3")
        self.assertOneProblem({"STREAMSRV_MEDIA_DIR": str(afile)}, "STREAMSRV_MEDIA_DIR", "not a directory")
        media = self.directory()
        self.assertEqual(_load({"STREAMSRV_MEDIA_DIR": str(media)}).media_dir, media)

    def test_media_dir_unreadable(self) -> None:
        """
        A media dir the process cannot list is a problem.
        """
        media = self.directory()
        self.patch(os, "access", lambda path, mode: False)  # as if it were mode 000 and we not root
        self.assertOneProblem({"STREAMSRV_MEDIA_DIR": str(media)}, "STREAMSRV_MEDIA_DIR", "not readable")

    def test_data_dir(self) -> None:
        """
        The data dir may not exist yet (it is created at start) but must not be a file.
        """
        future = Path(self.mktemp())
        self.assertEqual(_load({"STREAMSRV_DATA_DIR": str(future)}).data_dir, future)
        self.assertFalse(future.exists())
        afile = self.env_file("x", "data")
        self.assertOneProblem({"STREAMSRV_DATA_DIR": str(afile)}, "STREAMSRV_DATA_DIR", "not a directory")

    def test_key_files(self) -> None:
        """
        JWT key files must exist and be regular files.
        """
        key = self.env_file("-----BEGIN PUBLIC KEY-----\n", "public.pem")
        settings = _load(
            {"STREAMSRV_JWT_PUBLIC_KEY_FILE": str(key), "STREAMSRV_JWT_PRIVATE_KEY_FILE": str(key)}
        )
        self.assertEqual((settings.jwt_public_key_file, settings.jwt_private_key_file), (key, key))
        for name in ("STREAMSRV_JWT_PUBLIC_KEY_FILE", "STREAMSRV_JWT_PRIVATE_KEY_FILE"):
            self.assertOneProblem({name: self.mktemp()}, name, "does not exist")
            self.assertOneProblem({name: str(self.directory())}, name, "not a regular file")

    def test_key_file_unreadable(self) -> None:
        """
        A key file the process cannot read is a problem.
        """
        key = self.env_file("secret", "private.pem")
        self.patch(os, "access", lambda path, mode: False)  # as if it were mode 000 and we not root
        self.assertOneProblem(
            {"STREAMSRV_JWT_PRIVATE_KEY_FILE": str(key)}, "STREAMSRV_JWT_PRIVATE_KEY_FILE", "not readable"
        )

    def test_jwks_url(self) -> None:
        """
        The JWKS URL is https (or http outside production) with a host.
        """
        for url in ("https://auth.example.com/.well-known/jwks.json", "http://localhost:9000/jwks"):
            self.assertEqual(_load({"STREAMSRV_JWT_JWKS_URL": url}).jwt_jwks_url, url)
        for bad in (
            "ftp://auth.example.com/jwks",
            "https:///jwks",
            "auth.example.com/jwks",
            "https://h:99999/",
        ):
            self.assertOneProblem({"STREAMSRV_JWT_JWKS_URL": bad}, "STREAMSRV_JWT_JWKS_URL")

    def test_signing_keys(self) -> None:
        """
        Signing keys keep their order (current first); UTF-8 secrets are their bytes, and
        ``base64:`` secrets are decoded, standard or URL-safe, padded or not.
        """
        urlsafe = base64.urlsafe_b64encode(BINARY_KEY).decode().rstrip("=")
        standard = base64.b64encode(BINARY_KEY).decode()
        value = f"cur:{SIGNING_SECRET}, old.1:base64:{urlsafe} ,old_2:base64:{standard},é:x:y"
        value = value.replace(",é:x:y", ",k-3:pässword:with:colons")
        settings = _load({"STREAMSRV_URL_SIGNING_KEYS": value})
        self.assertEqual(
            settings.url_signing_keys,
            (
                ("cur", SIGNING_SECRET.encode()),
                ("old.1", BINARY_KEY),
                ("old_2", BINARY_KEY),
                ("k-3", "pässword:with:colons".encode()),
            ),
        )

    def test_signing_keys_invalid(self) -> None:
        """
        Missing colon, empty or bad kid, duplicate kid, empty secret and bad base64 are
        each a problem, and no problem quotes a secret.
        """
        s = SIGNING_SECRET
        value = f"nocolon{s},:{s},bad kid:{s},a:{s},a:x,b:,c:base64:!{s}"
        problems = self.problems({"STREAMSRV_URL_SIGNING_KEYS": value})
        self.assertEqual(len(problems), 6, problems)
        for problem in problems:
            self.assertTrue(problem.startswith("STREAMSRV_URL_SIGNING_KEYS: "), problem)
            self.assertNotIn(SIGNING_SECRET, problem)
        joined = "\n".join(problems)
        self.assertIn("entry 1 has no ':'", joined)
        self.assertIn("entry 2: the kid must be non-empty", joined)
        self.assertIn("entry 3: the kid must be non-empty", joined)
        self.assertIn("kid 'a' appears more than once", joined)
        self.assertIn("kid 'b': the secret is empty", joined)
        self.assertIn("kid 'c': the secret after 'base64:' is not valid base64", joined)

    def test_signing_keys_only_commas(self) -> None:
        """
        A value with no entry at all is a problem, not an empty key list.
        """
        self.assertOneProblem(
            {"STREAMSRV_URL_SIGNING_KEYS": ", ,"}, "STREAMSRV_URL_SIGNING_KEYS", "no kid:secret"
        )

    def test_rate_limits(self) -> None:
        """
        Rate limits are COUNT/SECONDS with a whole COUNT > 0 and SECONDS > 0.
        """
        settings = _load({"STREAMSRV_RATELIMIT_STREAM_PER_USER": "10 / 1.5"})
        self.assertEqual(settings.ratelimit_stream_per_user, RateLimit(10, 1.5))
        names = (
            "STREAMSRV_RATELIMIT_API_PER_IP",
            "STREAMSRV_RATELIMIT_API_PER_USER",
            "STREAMSRV_RATELIMIT_STREAM_PER_IP",
            "STREAMSRV_RATELIMIT_STREAM_PER_USER",
        )
        for name in names:
            for bad in ("0/60", "10/0", "10", "a/b", "10/-1", "1.5/60", "10/inf", "/60", "10/"):
                self.assertOneProblem({name: bad}, name, "must be COUNT/SECONDS", repr(bad))

    def test_redis_url(self) -> None:
        """
        Redis URLs are redis://, rediss:// (with a host) or unix:// (with a path).
        """
        for url in (
            "redis://localhost:6379/0",
            "rediss://u:p@cache.internal:6380",
            "unix:///run/redis.sock?db=1",
        ):
            self.assertEqual(_load({"STREAMSRV_REDIS_URL": url}).redis_url, url)
        for bad in (
            "http://localhost:6379",
            "redis://",
            "redis://h:port/0",
            "redis://h/db",
            "unix://",
            "localhost",
        ):
            self.assertOneProblem({"STREAMSRV_REDIS_URL": bad}, "STREAMSRV_REDIS_URL")

    def test_redis_url_problem_hides_password(self) -> None:
        """
        A problem with a Redis URL shows it with its password redacted.
        """
        problem = self.assertOneProblem(
            {"STREAMSRV_REDIS_URL": f"http://user:{REDIS_PASSWORD}@cache"}, "STREAMSRV_REDIS_URL", REDACTED
        )
        self.assertNotIn(REDIS_PASSWORD, problem)

    def test_analytics_dsn(self) -> None:
        """
        The DSN is sqlite:/// plus a path, or postgresql:// (postgres:// too).
        """
        for dsn in (
            "sqlite:///analytics.db",
            "sqlite:////var/lib/x.db",
            "postgresql://u:p@db:5432/x",
            "postgres:///x",
        ):
            self.assertEqual(_load({"STREAMSRV_ANALYTICS_DSN": dsn}).analytics_dsn, dsn)
        for bad in (
            "sqlite://host/x.db",
            "sqlite:///",
            "mysql://db/x",
            "analytics.db",
            "postgresql://db:x/y",
        ):
            self.assertOneProblem({"STREAMSRV_ANALYTICS_DSN": bad}, "STREAMSRV_ANALYTICS_DSN")
        problem = self.assertOneProblem(
            {"STREAMSRV_ANALYTICS_DSN": f"mysql://u:{DB_PASSWORD}@db/x"}, "STREAMSRV_ANALYTICS_DSN"
        )
        self.assertNotIn(DB_PASSWORD, problem)

    def test_cors_origins(self) -> None:
        """
        Origins are normalised as browsers send them: lower case, default port dropped,
        duplicates removed; ``*`` is accepted outside production.
        """
        settings = _load(
            {
                "STREAMSRV_CORS_ORIGINS": "https://App.Example.com:443, http://localhost:3000,"
                "https://app.example.com,http://[::1]:8080,http://x.test:80,*"
            }
        )
        self.assertEqual(
            settings.cors_origins,
            ("https://app.example.com", "http://localhost:3000", "http://[::1]:8080", "http://x.test", "*"),
        )

    def test_cors_origins_any_port(self) -> None:
        """
        ``scheme://host:*`` allows that host on any port; a value set replaces the
        development default, and an empty one keeps it.
        """
        settings = _load(
            {"STREAMSRV_CORS_ORIGINS": "http://LocalHost:*, http://[::1]:*,https://app.example.com:*"}
        )
        self.assertEqual(
            settings.cors_origins, ("http://localhost:*", "http://[::1]:*", "https://app.example.com:*")
        )
        self.assertEqual(
            _load({"STREAMSRV_CORS_ORIGINS": "https://a.example"}).cors_origins, ("https://a.example",)
        )
        self.assertEqual(len(_load({"STREAMSRV_CORS_ORIGINS": " "}).cors_origins), 3)
        for bad in ("http://localhost:3000:*", "*:*", ":*", "http://*:*", "http://localhost/:*"):
            self.assertOneProblem({"STREAMSRV_CORS_ORIGINS": bad}, "STREAMSRV_CORS_ORIGINS")

    def test_cors_origins_invalid(self) -> None:
        """
        Paths (even a trailing slash), queries, user parts, other schemes, wildcard
        subdomains, bad ports and bare hosts are each refused.
        """
        for bad in (
            "https://app.example.com/",
            "https://app.example.com/app",
            "https://app.example.com?x=1",
            "https://app.example.com#",
            "https://u@app.example.com",
            "ftp://app.example.com",
            "https://*.example.com",
            "https://app.example.com:99999",
            "app.example.com",
            "null",
        ):
            self.assertOneProblem({"STREAMSRV_CORS_ORIGINS": bad}, "STREAMSRV_CORS_ORIGINS", repr(bad))

    def test_trusted_proxies(self) -> None:
        """
        Proxies are IPs or CIDR networks, stored normalised and without duplicates.
        """
        settings = _load(
            {"STREAMSRV_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,0:0:0:0:0:0:0:1,2001:DB8::/32,127.0.0.1"}
        )
        self.assertEqual(settings.trusted_proxies, ("10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32"))

    def test_trusted_proxies_invalid(self) -> None:
        """
        Garbage is refused, and a network with host bits set gets the likely intended network.
        """
        self.assertOneProblem(
            {"STREAMSRV_TRUSTED_PROXIES": "10.1.2.3/8"},
            "STREAMSRV_TRUSTED_PROXIES",
            "did you mean 10.0.0.0/8?",
        )
        for bad in ("proxy.internal", "10.0.0.256", "10.0.0.0/33"):
            self.assertOneProblem({"STREAMSRV_TRUSTED_PROXIES": bad}, "STREAMSRV_TRUSTED_PROXIES", repr(bad))

    def test_all_problems_at_once(self) -> None:
        """
        Every problem is reported in one error, each starting with its variable's name,
        and ``str(error)`` is them joined by newlines.
        """
        environ = {
            "STREAMSRV_ENV": "nope",
            "STREAMSRV_WORKERZ": "1",
            "STREAMSRV_WORKERS": "x",
            "STREAMSRV_SENDFILE": "perhaps",
            "STREAMSRV_LISTEN": "http:80",
            "STREAMSRV_MEDIA_DIR": self.mktemp(),
            "STREAMSRV_RATELIMIT_API_PER_IP": "0/0",
            "STREAMSRV_CORS_ORIGINS": "https://a.example/",
            "STREAMSRV_TRUSTED_PROXIES": "x",
            "STREAMSRV_REDIS_URL": "http://r",
            "STREAMSRV_LOG_LEVEL": "loud",
        }
        error = self.assertRaises(ConfigError, _load, environ, None, self.mktemp())
        names = [problem.split(":", 1)[0] for problem in error.problems]
        self.assertEqual(set(names), set(environ) | {"STREAMSRV_ENV_FILE"})
        self.assertEqual(len(error.problems), len(environ) + 1)
        self.assertEqual(str(error), "\n".join(error.problems))


class ProductionTests(_ConfigTestCase):
    """
    What production refuses, each as its own problem.
    """

    def setUp(self) -> None:
        self.media = self.directory()
        self.base = {
            "STREAMSRV_ENV": "production",
            "STREAMSRV_MEDIA_DIR": str(self.media),
            "STREAMSRV_JWT_SECRET": JWT_SECRET,
        }

    def production(self, **changes: str) -> dict[str, str]:
        """
        The valid production environment with *changes* (an empty string removes a variable).
        """
        environ = dict(self.base)
        for name, value in changes.items():
            if value:
                environ[f"STREAMSRV_{name}"] = value
            else:
                environ.pop(f"STREAMSRV_{name}", None)
        return environ

    def test_valid(self) -> None:
        """
        Strong secrets, exact origins and a media dir pass; no URL signing keys is fine.
        """
        settings = _load(
            self.production(
                METRICS_TOKEN=METRICS_TOKEN,
                URL_SIGNING_KEYS=f"k1:{SIGNING_SECRET},k2:base64:{base64.b64encode(BINARY_KEY).decode()}",
                CORS_ORIGINS="https://app.example.com",
                JWT_JWKS_URL="https://auth.example.com/jwks.json",
            )
        )
        self.assertTrue(settings.is_production)
        self.assertEqual(_load(self.production()).url_signing_keys, ())

    def test_secret_length_boundary(self) -> None:
        """
        32 bytes pass and 31 fail; the length counts UTF-8 bytes, not characters.
        """
        self.assertEqual(MIN_SECRET_BYTES, 32)
        _load(self.production(JWT_SECRET="a" * 32))
        self.assertOneProblem(self.production(JWT_SECRET="a" * 31), "STREAMSRV_JWT_SECRET", "31 bytes")
        _load(self.production(JWT_SECRET="é" * 16))
        self.assertOneProblem(self.production(JWT_SECRET="é" * 15 + "a"), "STREAMSRV_JWT_SECRET", "31 bytes")

    def test_short_jwt_secret(self) -> None:
        """
        A JWT secret under 32 bytes is refused without being quoted.
        """
        problem = self.assertOneProblem(
            self.production(JWT_SECRET="hunter2"), "STREAMSRV_JWT_SECRET", "at least 32"
        )
        self.assertNotIn("hunter2", problem)

    def test_short_signing_key(self) -> None:
        """
        Each short URL signing secret is refused by kid, decoded length for base64 keys.
        """
        problems = self.problems(
            self.production(URL_SIGNING_KEYS=f"good:{SIGNING_SECRET},weak:tooshort,bin:base64:AAECAw==")
        )
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("kid 'weak'", problems[0])
        self.assertIn("kid 'bin'", problems[1])
        self.assertIn("4 bytes", problems[1])
        for problem in problems:
            self.assertTrue(problem.startswith("STREAMSRV_URL_SIGNING_KEYS: "))
            self.assertNotIn("tooshort", problem)

    def test_short_metrics_token(self) -> None:
        """
        A metrics token under 32 bytes is refused.
        """
        self.assertOneProblem(self.production(METRICS_TOKEN="abc"), "STREAMSRV_METRICS_TOKEN", "at least 32")

    def test_example_secrets(self) -> None:
        """
        Every documented example value is refused in every secret variable, however long.
        """
        for example in sorted(EXAMPLE_SECRETS):
            self.assertGreaterEqual(len(example.encode()), MIN_SECRET_BYTES)
            for name, value in (
                ("JWT_SECRET", example),
                ("METRICS_TOKEN", example),
                ("URL_SIGNING_KEYS", f"k:{example}"),
                ("URL_SIGNING_KEYS", f"k:base64:{base64.b64encode(example.encode()).decode()}"),
            ):
                problem = self.assertOneProblem(
                    self.production(**{name: value}), f"STREAMSRV_{name}", "documented example value"
                )
                self.assertNotIn(example, problem)

    def test_example_secrets_documented(self) -> None:
        """
        The example secrets are exactly those written in the docs and the example env file.
        """
        doc = CONFIG_DOC.read_text(encoding="utf-8")
        example_file = EXAMPLE_ENV_FILE.read_text(encoding="utf-8")
        for secret in EXAMPLE_SECRETS:
            self.assertIn(secret, doc)
        named = {secret for secret in EXAMPLE_SECRETS if secret.startswith("example-")}
        self.assertEqual(set(re.findall(r"example-[a-z-]+-[0-9a-f]{16}", doc)), named)
        shown = set(re.findall(r"example-[a-z-]+-[0-9a-f]{16}", example_file))
        self.assertLessEqual(shown, EXAMPLE_SECRETS)

    def test_cors_wildcard(self) -> None:
        """
        ``*`` in the CORS origins is refused, even next to exact origins.
        """
        self.assertOneProblem(
            self.production(CORS_ORIGINS="https://app.example.com,*"),
            "STREAMSRV_CORS_ORIGINS",
            "'*' is refused",
        )

    def test_demo_library(self) -> None:
        """
        Production needs a media dir: the demo library is refused.
        """
        self.assertOneProblem(self.production(MEDIA_DIR=""), "STREAMSRV_MEDIA_DIR", "required in production")

    def test_bad_media_dir_reported_once(self) -> None:
        """
        A media dir that does not exist is one problem, not also "required".
        """
        self.assertOneProblem(
            self.production(MEDIA_DIR=self.mktemp()), "STREAMSRV_MEDIA_DIR", "does not exist"
        )

    def test_anonymous(self) -> None:
        """
        ``STREAMSRV_ALLOW_ANONYMOUS=true`` is refused.
        """
        self.assertOneProblem(self.production(ALLOW_ANONYMOUS="true"), "STREAMSRV_ALLOW_ANONYMOUS", "refused")
        self.assertFalse(_load(self.production(ALLOW_ANONYMOUS="false")).allow_anonymous)

    def test_no_jwt_algorithm(self) -> None:
        """
        With no JWT secret, public key file or JWKS URL, no token could be verified: refused.
        """
        self.assertOneProblem(
            self.production(JWT_SECRET=""),
            "STREAMSRV_JWT_SECRET",
            "STREAMSRV_JWT_PUBLIC_KEY_FILE",
            "STREAMSRV_JWT_JWKS_URL",
        )

    def test_public_key_or_jwks_suffices(self) -> None:
        """
        A public key file, or a JWKS URL, alone is a JWT configuration.
        """
        key = self.env_file("-----BEGIN PUBLIC KEY-----\n", "public.pem")
        _load(self.production(JWT_SECRET="", JWT_PUBLIC_KEY_FILE=str(key)))
        _load(self.production(JWT_SECRET="", JWT_JWKS_URL="https://auth.example.com/jwks"))

    def test_invalid_verifier_reported_once(self) -> None:
        """
        A JWKS URL that is itself invalid is reported as such, not also as "no algorithm".
        """
        self.assertOneProblem(
            self.production(JWT_SECRET="", JWT_JWKS_URL="ftp://x"), "STREAMSRV_JWT_JWKS_URL", "https://"
        )

    def test_jwks_http(self) -> None:
        """
        A JWKS URL over plain http is refused in production.
        """
        self.assertOneProblem(
            self.production(JWT_JWKS_URL="http://auth.example.com/jwks"),
            "STREAMSRV_JWT_JWKS_URL",
            "production",
        )

    def test_every_refusal_at_once(self) -> None:
        """
        All refusals come in one error, each its own problem.
        """
        problems = self.problems(
            self.production(
                JWT_SECRET="",
                MEDIA_DIR="",
                METRICS_TOKEN="short",
                URL_SIGNING_KEYS="a:short,b:short",
                CORS_ORIGINS="*",
                ALLOW_ANONYMOUS="yes",
            )
        )
        self.assertEqual(len(problems), 7, problems)

    def test_staging_skips_refusals(self) -> None:
        """
        Staging has only development's checks: weak secrets, ``*``, the demo library,
        anonymous access and http JWKS are all accepted there.
        """
        settings = _load(
            {
                "STREAMSRV_ENV": "staging",
                "STREAMSRV_JWT_SECRET": "short",
                "STREAMSRV_METRICS_TOKEN": "short",
                "STREAMSRV_URL_SIGNING_KEYS": "a:short",
                "STREAMSRV_CORS_ORIGINS": "*",
                "STREAMSRV_ALLOW_ANONYMOUS": "true",
                "STREAMSRV_JWT_JWKS_URL": "http://auth.internal/jwks",
            }
        )
        self.assertTrue(settings.demo_library)
        self.assertTrue(settings.allow_anonymous)


class RedactionTests(_ConfigTestCase):
    """
    :func:`redacted` shows everything but secrets.
    """

    def full_settings(self) -> Settings:
        """
        Settings with every secret set to a distinctive value.
        """
        key = self.env_file("-----BEGIN PUBLIC KEY-----\n", "public.pem")
        return _load(
            {
                "STREAMSRV_ENV": "production",
                "STREAMSRV_MEDIA_DIR": str(self.directory()),
                "STREAMSRV_JWT_SECRET": JWT_SECRET,
                "STREAMSRV_JWT_PUBLIC_KEY_FILE": str(key),
                "STREAMSRV_JWT_JWKS_URL": f"https://jwks:{DB_PASSWORD}@auth.example.com/jwks?token={METRICS_TOKEN}",
                "STREAMSRV_METRICS_TOKEN": METRICS_TOKEN,
                "STREAMSRV_URL_SIGNING_KEYS": f"cur:{SIGNING_SECRET},old:base64:{BINARY_KEY_B64}",
                "STREAMSRV_REDIS_URL": f"rediss://default:{REDIS_PASSWORD}@cache.internal:6380/2",
                "STREAMSRV_ANALYTICS_DSN": (
                    f"postgresql://streamsrv:{DB_PASSWORD}@db:5432/s?sslmode=require&password={DB_PASSWORD}"
                ),
                "STREAMSRV_CORS_ORIGINS": "https://app.example.com",
                "STREAMSRV_TRUSTED_PROXIES": "10.0.0.0/8",
                "STREAMSRV_WORKERS": "2",
            }
        )

    def test_every_variable(self) -> None:
        """
        The output is keyed by every known variable name.
        """
        self.assertEqual(list(redacted(_load())), list(KNOWN_VARIABLES))
        self.assertEqual(len(set(KNOWN_VARIABLES)), len(KNOWN_VARIABLES))

    def test_json_serialisable(self) -> None:
        """
        The output survives a JSON round trip unchanged.
        """
        shown = redacted(self.full_settings())
        self.assertEqual(json.loads(json.dumps(shown)), shown)

    def test_no_secret_anywhere(self) -> None:
        """
        No secret, nor the base64 or text form of a binary key, appears in the output.
        """
        text = json.dumps(redacted(self.full_settings()))
        for secret in (
            JWT_SECRET,
            METRICS_TOKEN,
            SIGNING_SECRET,
            REDIS_PASSWORD,
            DB_PASSWORD,
            base64.b64encode(BINARY_KEY).decode(),
            BINARY_KEY.decode("latin-1"),
        ):
            self.assertNotIn(secret, text)

    def test_values(self) -> None:
        """
        Secrets become ``<redacted>``, kids and URL structure stay, the rest is shown as set.
        """
        shown = redacted(self.full_settings())
        self.assertEqual(shown["STREAMSRV_JWT_SECRET"], REDACTED)
        self.assertEqual(shown["STREAMSRV_METRICS_TOKEN"], REDACTED)
        self.assertEqual(shown["STREAMSRV_URL_SIGNING_KEYS"], [f"cur:{REDACTED}", f"old:{REDACTED}"])
        self.assertEqual(shown["STREAMSRV_REDIS_URL"], f"rediss://default:{REDACTED}@cache.internal:6380/2")
        self.assertEqual(
            shown["STREAMSRV_ANALYTICS_DSN"],
            f"postgresql://streamsrv:{REDACTED}@db:5432/s?sslmode=require&password={REDACTED}",
        )
        self.assertEqual(
            shown["STREAMSRV_JWT_JWKS_URL"], f"https://jwks:{REDACTED}@auth.example.com/jwks?token={REDACTED}"
        )
        self.assertEqual(shown["STREAMSRV_ENV"], "production")
        self.assertEqual(shown["STREAMSRV_WORKERS"], 2)
        self.assertEqual(shown["STREAMSRV_CORS_ORIGINS"], ["https://app.example.com"])
        self.assertEqual(shown["STREAMSRV_TRUSTED_PROXIES"], ["10.0.0.0/8"])
        self.assertEqual(shown["STREAMSRV_RATELIMIT_API_PER_IP"], "300/60")
        self.assertEqual(shown["STREAMSRV_LISTEN"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(shown["STREAMSRV_ALLOW_ANONYMOUS"], False)

    def test_unset_values(self) -> None:
        """
        Unset secrets are ``None`` (not "<redacted>"), and the analytics DSN is the effective one.
        """
        shown = redacted(_load())
        self.assertIsNone(shown["STREAMSRV_JWT_SECRET"])
        self.assertIsNone(shown["STREAMSRV_METRICS_TOKEN"])
        self.assertEqual(shown["STREAMSRV_URL_SIGNING_KEYS"], [])
        self.assertEqual(shown["STREAMSRV_ANALYTICS_DSN"], "sqlite:///streamsrv-data/analytics.sqlite3")

    def test_redis_user_without_password(self) -> None:
        """
        A URL with a user name but no password keeps the user name.
        """
        shown = redacted(_load({"STREAMSRV_REDIS_URL": "redis://reader@cache:6379/0"}))
        self.assertEqual(shown["STREAMSRV_REDIS_URL"], "redis://reader@cache:6379/0")

    def test_problems_never_quote_secrets(self) -> None:
        """
        Whatever is wrong with a secret, the problem list does not contain it.
        """
        environ = {
            "STREAMSRV_ENV": "production",
            "STREAMSRV_JWT_SECRET": "shortsecretvalue",
            "STREAMSRV_METRICS_TOKEN": "shortmetricsvalue",
            "STREAMSRV_URL_SIGNING_KEYS": "k:shortsigningvalue,shortsigningnocolon,j:base64:shortsigning%%",
            "STREAMSRV_REDIS_URL": "redis://:shortredisvalue@",
        }
        text = str(self.assertRaises(ConfigError, _load, environ))
        for secret in ("shortsecretvalue", "shortmetricsvalue", "shortsigning", "shortredisvalue"):
            self.assertNotIn(secret, text)


class WarningsTests(_ConfigTestCase):
    """
    :func:`config_warnings`: valid but probably unintended setups.
    """

    def test_none_by_default(self) -> None:
        """
        The zero-configuration development setup has nothing to warn about.
        """
        self.assertEqual(config_warnings(_load()), [])

    def test_workers_without_redis(self) -> None:
        """
        Several workers without Redis means per-process rate limits.
        """
        warnings = config_warnings(_load({"STREAMSRV_WORKERS": "2"}))
        self.assertEqual(len(warnings), 1)
        self.assertTrue(
            warnings[0].startswith(
                "STREAMSRV_WORKERS > 1 without STREAMSRV_REDIS_URL: rate limits are per process"
            )
        )
        self.assertEqual(
            config_warnings(_load({"STREAMSRV_WORKERS": "2", "STREAMSRV_REDIS_URL": "redis://r"})), []
        )

    def test_anonymous_beyond_loopback(self) -> None:
        """
        Anonymous access on a listener reachable from other hosts is worth a warning;
        loopback and unix sockets are not.
        """
        for listen in ("tcp:8080", "tcp:8080:interface=0.0.0.0", "ssl:8443:privateKey=k.pem"):
            warnings = config_warnings(_load({"STREAMSRV_LISTEN": listen}))
            self.assertEqual(len(warnings), 1, listen)
            self.assertTrue(warnings[0].startswith("STREAMSRV_ALLOW_ANONYMOUS: "))
        for listen in (r"tcp6:8080:interface=\:\:1", "tcp:1:interface=localhost", "unix:/run/s.sock"):
            self.assertEqual(config_warnings(_load({"STREAMSRV_LISTEN": listen})), [], listen)
        self.assertEqual(
            config_warnings(_load({"STREAMSRV_LISTEN": "tcp:8080", "STREAMSRV_ALLOW_ANONYMOUS": "no"})), []
        )

    def test_example_secret_outside_production(self) -> None:
        """
        An example secret is accepted outside production but named in a warning (not quoted).
        """
        example = sorted(EXAMPLE_SECRETS)[0]
        warnings = config_warnings(
            _load({"STREAMSRV_JWT_SECRET": example, "STREAMSRV_URL_SIGNING_KEYS": f"k:{example}"})
        )
        self.assertEqual(
            [w.split(":")[0] for w in warnings], ["STREAMSRV_JWT_SECRET", "STREAMSRV_URL_SIGNING_KEYS"]
        )
        self.assertNotIn(example, "\n".join(warnings))

    def test_server_profiles(self) -> None:
        """
        Outside development, a missing metrics token and missing signing keys are pointed out.
        """
        warnings = config_warnings(_load({"STREAMSRV_ENV": "staging"}))
        self.assertEqual(
            [w.split(":")[0] for w in warnings], ["STREAMSRV_METRICS_TOKEN", "STREAMSRV_URL_SIGNING_KEYS"]
        )


class DocumentationTests(_ConfigTestCase):
    """
    The docs describe exactly the variables the code knows.
    """

    def test_every_variable_documented(self) -> None:
        """
        ``docs/modules/config.md`` has a table row for each known variable and none other.
        """
        doc = CONFIG_DOC.read_text(encoding="utf-8")
        rows = re.findall(r"^\| `(STREAMSRV_[A-Z0-9_]+)` \|", doc, re.MULTILINE)
        self.assertEqual(rows, list(KNOWN_VARIABLES))

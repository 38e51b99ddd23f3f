"""The notification variables: defaults, the channels' parsers at start, redaction."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial import unittest

from streamsrv.cli import main
from streamsrv.config import ConfigError, Settings, load_settings, redacted
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.channels.settings import b64url_encode
from streamsrv.notifications.options import notify_options, notify_problems
from streamsrv.notifications.templates import default_templates_dir
from streamsrv.startup import CONFIG_CHECKS

SMTP_PASSWORD = "smtp-pw-Qa1sW2dE3rF4tG5y"
SMS_TOKEN = "sms-token-Zx9cV8bN7mL6kJ5h"


def _vapid_key() -> str:
    """A fresh raw P-256 private key, base64url, as ``web-push generate-vapid-keys`` prints it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))


def _load(environ: Mapping[str, str]) -> Settings:
    return load_settings(cli={}, environ=dict(environ), checks=CONFIG_CHECKS)


def _problems(environ: Mapping[str, str]) -> list[str]:
    try:
        _load(environ)
    except ConfigError as e:
        return e.problems
    return []


class NotifyOptionsTests(unittest.SynchronousTestCase):
    """``STREAMSRV_NOTIFY_*``, SMTP, SMS and VAPID, read at start."""

    def full(self) -> dict[str, str]:
        """Every channel configured, with distinctive secrets."""
        return {
            "STREAMSRV_SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@smtp.example.com:587",
            "STREAMSRV_SMTP_FROM": "Streamsrv <noreply@example.com>",
            "STREAMSRV_SMS_URL": (
                f"https://ACabc:{SMS_TOKEN}@api.twilio.com/2010-04-01/Accounts/ACabc/Messages.json"
                "?From=%2B15550001111"
            ),
            "STREAMSRV_VAPID_PRIVATE_KEY": _vapid_key(),
            "STREAMSRV_VAPID_SUBJECT": "mailto:ops@example.com",
        }

    def test_defaults(self) -> None:
        """Unset: 10000 recipients, 6 attempts, caps 4/12, the packaged templates, websocket only."""
        options = notify_options(_load({}))
        self.assertEqual(options.max_recipients, 10000)
        self.assertEqual(options.max_attempts, 6)
        self.assertEqual(options.default_caps, Caps(4, 12))
        self.assertEqual(options.templates_dir, default_templates_dir())
        self.assertEqual(options.configured_channels, frozenset({"websocket"}))

    def test_sending_knobs(self) -> None:
        """Batch, lease, back-off and SMTP pool: defaults, values, and each bad value named."""
        options = notify_options(_load({}))
        self.assertEqual(
            (options.batch, options.lease_s, options.retry_base_s, options.smtp_pool_size),
            (200, 180.0, 30.0, 4),
        )
        options = notify_options(
            _load({"STREAMSRV_NOTIFY_BATCH": "50", "STREAMSRV_NOTIFY_LEASE_S": "4.5",
                   "STREAMSRV_NOTIFY_RETRY_BASE_S": "0.5", "STREAMSRV_SMTP_POOL_SIZE": "8"})
        )  # fmt: skip
        self.assertEqual(
            (options.batch, options.lease_s, options.retry_base_s, options.smtp_pool_size), (50, 4.5, 0.5, 8)
        )
        problems = _problems(
            {"STREAMSRV_NOTIFY_BATCH": "10001", "STREAMSRV_NOTIFY_LEASE_S": "0",
             "STREAMSRV_NOTIFY_RETRY_BASE_S": "-1", "STREAMSRV_SMTP_POOL_SIZE": "65"}
        )  # fmt: skip
        self.assertEqual(
            sorted(p.split(":")[0] for p in problems),
            ["STREAMSRV_NOTIFY_BATCH", "STREAMSRV_NOTIFY_LEASE_S", "STREAMSRV_NOTIFY_RETRY_BASE_S",
             "STREAMSRV_SMTP_POOL_SIZE"],
        )  # fmt: skip
        self.assertEqual(
            _problems({"STREAMSRV_SMTP_POOL_SIZE": "0"})[0].split(":")[0], "STREAMSRV_SMTP_POOL_SIZE"
        )

    def test_every_channel(self) -> None:
        """With every variable set, the four channels are configured and the values parsed."""
        options = notify_options(_load({**self.full(), "STREAMSRV_NOTIFY_DEFAULT_CAPS": "2/5"}))
        self.assertEqual(options.configured_channels, frozenset({"websocket", "email", "sms", "push"}))
        self.assertEqual(options.default_caps, Caps(2, 5))
        assert options.smtp is not None and options.vapid is not None
        self.assertEqual(options.smtp.host, "smtp.example.com")
        self.assertEqual(options.vapid.subject, "mailto:ops@example.com")

    def test_bad_values_named(self) -> None:
        """Each bad value is one problem starting with its variable, found with the other problems."""
        problems = _problems(
            {
                "STREAMSRV_NOTIFY_DEFAULT_CAPS": "four",
                "STREAMSRV_NOTIFY_MAX_RECIPIENTS": "0",
                "STREAMSRV_SMTP_URL": "http://smtp.example.com",
                "STREAMSRV_SMTP_FROM": "not an address",
                "STREAMSRV_SMS_URL": "https://api.twilio.com/x",
                "STREAMSRV_VAPID_PRIVATE_KEY": "nope",
                "STREAMSRV_VAPID_SUBJECT": "ops@example.com",
                "STREAMSRV_WORKERS": "zero",
            }
        )
        names = {p.split(":")[0] for p in problems}
        self.assertEqual(
            names,
            {
                "STREAMSRV_NOTIFY_DEFAULT_CAPS",
                "STREAMSRV_NOTIFY_MAX_RECIPIENTS",
                "STREAMSRV_SMTP_URL",
                "STREAMSRV_SMTP_FROM",
                "STREAMSRV_SMS_URL",
                "STREAMSRV_VAPID_PRIVATE_KEY",
                "STREAMSRV_VAPID_SUBJECT",
                "STREAMSRV_WORKERS",
            },
        )

    def test_pairs(self) -> None:
        """The SMTP URL needs a sender and the VAPID key a subject (and the other way round)."""
        full = self.full()
        self.assertEqual(
            _problems({"STREAMSRV_SMTP_URL": full["STREAMSRV_SMTP_URL"]}),
            ["STREAMSRV_SMTP_FROM: required with STREAMSRV_SMTP_URL"],
        )
        self.assertEqual(
            _problems({"STREAMSRV_VAPID_SUBJECT": "mailto:ops@example.com"}),
            ["STREAMSRV_VAPID_PRIVATE_KEY: required with STREAMSRV_VAPID_SUBJECT"],
        )

    def test_templates_dir(self) -> None:
        """A missing or empty templates directory is refused by name; one with templates is used."""
        missing = self.mktemp()
        self.assertEqual(
            [p.split(":")[0] for p in _problems({"STREAMSRV_NOTIFY_TEMPLATES_DIR": missing})],
            ["STREAMSRV_NOTIFY_TEMPLATES_DIR"],
        )
        here = Path(self.mktemp())
        here.mkdir()
        self.assertEqual(
            _problems({"STREAMSRV_NOTIFY_TEMPLATES_DIR": str(here)}),
            ["STREAMSRV_NOTIFY_TEMPLATES_DIR: no *.j2 template in the templates directory"],
        )
        (here / "n.sms.j2").write_text("{{ a }}")
        self.assertEqual(
            notify_options(_load({"STREAMSRV_NOTIFY_TEMPLATES_DIR": str(here)})).templates_dir, here
        )

    def test_secrets_never_shown(self) -> None:
        """Neither the redacted configuration nor a problem holds a password, token or key."""
        full = self.full()
        text = json.dumps(redacted(_load(full)))
        for secret in (SMTP_PASSWORD, SMS_TOKEN, full["STREAMSRV_VAPID_PRIVATE_KEY"]):
            self.assertNotIn(secret, text)
        shown = redacted(_load(full))
        self.assertEqual(shown["STREAMSRV_SMTP_URL"], "<redacted>")
        self.assertEqual(shown["STREAMSRV_SMTP_FROM"], "Streamsrv <noreply@example.com>")
        bad = {
            "STREAMSRV_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@/",
            "STREAMSRV_SMTP_FROM": "noreply@example.com",
            "STREAMSRV_SMS_URL": f"http://ACabc:{SMS_TOKEN}@example.com/x",
        }
        problems = "\n".join(_problems(bad))
        self.assertIn("STREAMSRV_SMTP_URL", problems)
        self.assertNotIn(SMTP_PASSWORD, problems)
        self.assertNotIn(SMS_TOKEN, problems)

    def test_without_checks(self) -> None:
        """``load_settings`` alone keeps the raw values; the checks are the component's."""
        settings = load_settings(cli={}, environ={"STREAMSRV_SMTP_URL": "http://x"})
        self.assertEqual(settings.smtp_url, "http://x")
        self.assertEqual(notify_problems(settings)[0].split(":")[0], "STREAMSRV_SMTP_URL")

    def test_config_check_command(self) -> None:
        """``streamsrv config check`` reports a bad channel value by name and exits 1."""
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(
            ["config", "check"], environ={"STREAMSRV_SMS_URL": "ftp://x"}, stdout=stdout, stderr=stderr
        )
        self.assertEqual(status, 1)
        self.assertIn("STREAMSRV_SMS_URL", stderr.getvalue())

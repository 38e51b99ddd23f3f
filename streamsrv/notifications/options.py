# -*- test-case-name: tests.test_notify_options -*-
"""The notifications component's ``STREAMSRV_*`` values, parsed by the parts that own their formats.

:func:`notify_problems` checks the raw values :class:`~streamsrv.config.Settings`
holds with the channels' own parsers (:mod:`.channels.settings`) and
:func:`~.caps.parse_caps_setting`, each problem starting with its variable's
name, so the composition root hands it to ``load_settings(checks=...)`` and a
bad value is reported at start like every other one.  :func:`notify_options`
gives the parsed :class:`NotifyOptions`.  This module must never read the
environment, a file or the network, and never put a secret in a problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamsrv.config import ConfigError, Settings
from streamsrv.notifications.caps import DEFAULT_CAPS, Caps, parse_caps_setting
from streamsrv.notifications.channels.settings import (
    ChannelConfigError,
    SmsSettings,
    SmtpSender,
    SmtpSettings,
    VapidSettings,
    parse_sms_url,
    parse_smtp_from,
    parse_smtp_url,
    parse_vapid_private_key,
    parse_vapid_subject,
)
from streamsrv.notifications.templates import default_templates_dir

__all__ = ["NotifyOptions", "notify_options", "notify_problems"]

#: The largest ``STREAMSRV_NOTIFY_BATCH``: one claim's rows stay a bounded transaction.
MAX_BATCH = 10000
#: The largest ``STREAMSRV_SMTP_POOL_SIZE``: more sessions than this only load the server.
MAX_SMTP_POOL_SIZE = 64

_T = TypeVar("_T")


@dataclass(frozen=True)
class NotifyOptions:
    """
    The component's configuration, parsed; a channel is ``None`` when its variables are unset.

    :ivar templates_dir: ``STREAMSRV_NOTIFY_TEMPLATES_DIR`` or the packaged templates.
    """

    templates_dir: Path
    max_recipients: int
    max_attempts: int
    default_caps: Caps
    batch: int
    lease_s: float
    retry_base_s: float
    smtp_pool_size: int
    smtp: SmtpSettings | None
    smtp_from: SmtpSender | None
    sms: SmsSettings | None
    vapid: VapidSettings | None

    @property
    def configured_channels(self) -> frozenset[str]:
        """The channels that can send: websocket always, the others when configured."""
        configured = {"websocket"}
        if self.smtp is not None and self.smtp_from is not None:
            configured.add("email")
        if self.sms is not None:
            configured.add("sms")
        if self.vapid is not None:
            configured.add("push")
        return frozenset(configured)


class _Parse:
    """Runs each parser, collecting ``NAME: reason`` problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, name: str, value: str | None, parser: Callable[[str], _T]) -> _T | None:
        if value is None:
            return None
        try:
            return parser(value)
        except ChannelConfigError as e:
            self.problems.extend(f"{name}: {reason}" for reason in e.reasons)
        except ValueError as e:
            self.problems.append(f"{name}: {e}")
        return None

    def pair(self, first: str, first_value: Any, second: str, second_value: Any) -> None:
        """Both or neither: a problem naming the one missing."""
        if (first_value is None) != (second_value is None):
            missing, other = (second, first) if second_value is None else (first, second)
            self.problems.append(f"{missing}: required with {other}")


def _options(settings: Settings) -> tuple[NotifyOptions, list[str]]:
    parse = _Parse()
    caps = parse("STREAMSRV_NOTIFY_DEFAULT_CAPS", settings.notify_default_caps, parse_caps_setting)
    smtp = parse("STREAMSRV_SMTP_URL", settings.smtp_url, parse_smtp_url)
    sender = parse("STREAMSRV_SMTP_FROM", settings.smtp_from, parse_smtp_from)
    sms = parse("STREAMSRV_SMS_URL", settings.sms_url, parse_sms_url)
    key = parse("STREAMSRV_VAPID_PRIVATE_KEY", settings.vapid_private_key, parse_vapid_private_key)
    subject = parse("STREAMSRV_VAPID_SUBJECT", settings.vapid_subject, parse_vapid_subject)
    parse.pair("STREAMSRV_SMTP_URL", settings.smtp_url, "STREAMSRV_SMTP_FROM", settings.smtp_from)
    if settings.notify_batch > MAX_BATCH:
        parse.problems.append(f"STREAMSRV_NOTIFY_BATCH: at most {MAX_BATCH}, got {settings.notify_batch}")
    if settings.smtp_pool_size > MAX_SMTP_POOL_SIZE:
        parse.problems.append(
            f"STREAMSRV_SMTP_POOL_SIZE: at most {MAX_SMTP_POOL_SIZE}, got {settings.smtp_pool_size}"
        )
    parse.pair(
        "STREAMSRV_VAPID_PRIVATE_KEY",
        settings.vapid_private_key,
        "STREAMSRV_VAPID_SUBJECT",
        settings.vapid_subject,
    )
    options = NotifyOptions(
        templates_dir=settings.notify_templates_dir or default_templates_dir(),
        max_recipients=settings.notify_max_recipients,
        max_attempts=settings.notify_max_attempts,
        default_caps=caps if caps is not None else DEFAULT_CAPS,
        batch=settings.notify_batch,
        lease_s=settings.notify_lease_s,
        retry_base_s=settings.notify_retry_base_s,
        smtp_pool_size=settings.smtp_pool_size,
        smtp=smtp,
        smtp_from=sender,
        sms=sms,
        vapid=VapidSettings(private_key=key, subject=subject) if key is not None and subject else None,
    )
    return options, parse.problems


def notify_problems(settings: Settings) -> list[str]:
    """Every problem of the notification variables, each ``STREAMSRV_NAME: reason``."""
    return _options(settings)[1]


def notify_options(settings: Settings) -> NotifyOptions:
    """
    The parsed options.

    :raise ConfigError: Listing :func:`notify_problems` (a ``ValueError`` is not raised).
    """
    options, problems = _options(settings)
    if problems:
        raise ConfigError(problems)
    return options

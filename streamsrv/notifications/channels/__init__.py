"""The notification channels: email (SMTP), sms (Twilio-style HTTP gateway), push (Web Push).

Each channel is a small class behind :class:`~.base.IChannel` (``send(message)`` →
``Deferred[SendResult]``, failing with a retryable or permanent :class:`~.base.ChannelError`),
in its own module: :mod:`.email`, :mod:`.sms`, :mod:`.push`; :mod:`.settings` parses their
``STREAMSRV_*`` values.  This package re-exports only the pure parts, so importing it loads no
protocol client; it must never import ``streamsrv.web``, ``streaming``, ``hls``, ``ws``,
``middleware`` or ``tap``, nor use the global reactor.
"""

from streamsrv.notifications.channels.base import (
    ChannelError,
    EmailMessage,
    IChannel,
    PermanentError,
    PushMessage,
    PushSubscription,
    RetryableError,
    SendResult,
    SmsMessage,
    SubscriptionGone,
)
from streamsrv.notifications.channels.settings import (
    ChannelConfigError,
    SmsSettings,
    SmtpSender,
    SmtpSettings,
    VapidSettings,
    parse_sms_url,
    parse_smtp_from,
    parse_smtp_url,
    parse_vapid,
)

__all__ = [
    "ChannelConfigError",
    "ChannelError",
    "EmailMessage",
    "IChannel",
    "PermanentError",
    "PushMessage",
    "PushSubscription",
    "RetryableError",
    "SendResult",
    "SmsMessage",
    "SmsSettings",
    "SmtpSender",
    "SmtpSettings",
    "SubscriptionGone",
    "VapidSettings",
    "parse_sms_url",
    "parse_smtp_from",
    "parse_smtp_url",
    "parse_vapid",
]

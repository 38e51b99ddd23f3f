# -*- test-case-name: tests.test_notify_email,tests.test_notify_sms,tests.test_notify_push -*-
"""The channel interface, the messages each channel sends, and how a send fails.

:class:`IChannel` is the seam between the outbox and a transport: ``send(message)`` gives a
``Deferred`` that fires with a :class:`SendResult` once the server accepted the message, or
fails with a :class:`ChannelError` that says whether trying again later can help
(:class:`RetryableError`: network errors, timeouts, 4xx SMTP replies, HTTP 408/429/5xx with an
optional ``Retry-After``) or not (:class:`PermanentError`: a refusal that no retry can turn
around; :class:`SubscriptionGone` for a push subscription the caller must delete).  Pure values
and functions only: this module must never open a connection, and an error's text must never
carry a password, token, key or message body.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass, field
from typing import ClassVar

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = [
    "URGENCIES",
    "ChannelError",
    "EmailMessage",
    "IChannel",
    "PermanentError",
    "PushMessage",
    "PushSubscription",
    "RetryableError",
    "SendResult",
    "SmsMessage",
    "SubscriptionGone",
    "http_failure",
    "parse_retry_after",
]

#: RFC 8030 section 5.3 urgencies, lowest first.
URGENCIES = ("very-low", "low", "normal", "high")

#: The longest ``Retry-After`` honoured, in seconds (a day): a larger one is clamped.
MAX_RETRY_AFTER_S = 86400.0


class IChannel(Interface):
    """
    One way of reaching a user: email, SMS, Web Push.
    """

    name = Attribute("The channel's name as the contract spells it: 'email', 'sms', 'push'.")

    def send(message: object) -> Deferred[SendResult]:  # noqa: N805 - zope.interface style
        """
        Hand one message to the channel's server.

        :param message: The channel's message value (:class:`EmailMessage`,
            :class:`SmsMessage` or :class:`PushMessage`).
        :return: Fires with a :class:`SendResult` once the server accepted it; fails with
            a :class:`ChannelError` otherwise (never another exception type).
        """


@dataclass(frozen=True)
class EmailMessage:
    """
    One email to one recipient; *html* ``None`` sends a plain-text message only.

    *headers* are extra header fields (``List-Unsubscribe``, ``X-Entity-Ref-ID``…); they may
    not replace the ones the channel writes (From, To, Subject, Date, Message-ID, MIME ones).
    *ref* (letters, digits, ``.``, ``_``, ``-``; the outbox passes the delivery id) makes the
    Message-ID ``<ref@sender-domain>``, the same on every attempt, so a receiver can drop a
    copy sent twice; without it the Message-ID is random.
    """

    to: str
    subject: str
    text: str
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    ref: str | None = None


@dataclass(frozen=True)
class SmsMessage:
    """
    One text message; *to* is an E.164 number (``+33612345678``).
    """

    to: str
    body: str


@dataclass(frozen=True)
class PushSubscription:
    """
    What a browser's ``PushSubscription.toJSON()`` gives: the endpoint and its two keys.

    *p256dh* is the user agent's P-256 public key (uncompressed point) and *auth* its 16-byte
    authentication secret, both base64url as the browser writes them.
    """

    endpoint: str
    p256dh: str
    auth: str = field(repr=False)


@dataclass(frozen=True)
class PushMessage:
    """
    One Web Push message: the bytes to encrypt for *subscription* and RFC 8030 headers.

    *ttl_s* is how long the push service keeps it for an offline device (0: deliver now or
    drop), *urgency* one of :data:`URGENCIES`, *topic* (at most 32 base64url characters)
    lets a newer message replace a pending one with the same topic.
    """

    subscription: PushSubscription
    payload: bytes
    ttl_s: int = 86400
    urgency: str = "normal"
    topic: str | None = None


@dataclass(frozen=True)
class SendResult:
    """
    A message the server accepted.

    :ivar channel: The channel's name.
    :ivar provider_id: The server's id for it when it gives one: the email's Message-ID,
        the SMS gateway's ``sid``, the push service's message ``Location``.
    :ivar status: The HTTP status or SMTP reply code of the acceptance.
    """

    channel: str
    provider_id: str | None
    status: int


class ChannelError(Exception):
    """
    A send that did not succeed.

    :ivar channel: The channel's name.
    :ivar reason: A short stable code for logs, metrics and the delivery's last error
        (``timeout``, ``network_error``, ``recipient_refused``, ``subscription_gone``…).
    :ivar detail: A human sentence without secrets (the server's own words where safe).
    :ivar status: The HTTP status or SMTP reply code, if the server answered.
    :ivar retry_after_s: For a retryable error, the server's ``Retry-After`` in seconds.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        channel: str,
        reason: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(channel, reason, detail)
        self.channel = channel
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def subscription_gone(self) -> bool:
        """
        Whether the caller must delete the push subscription this was sent to.
        """
        return False

    def __str__(self) -> str:
        kind = "retryable" if self.retryable else "permanent"
        status = "" if self.status is None else f" ({self.status})"
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.channel} {kind} {self.reason}{status}{detail}"


class RetryableError(ChannelError):
    """
    The same message may succeed later: the outbox backs off and tries again.
    """

    retryable = True


class PermanentError(ChannelError):
    """
    The server refused this message for good: the delivery fails at once.
    """


class SubscriptionGone(PermanentError):
    """
    The push service no longer knows the subscription (404/410): remove it.
    """

    def __init__(self, channel: str, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(channel, "subscription_gone", detail, status=status)

    @property
    def subscription_gone(self) -> bool:
        return True


def parse_retry_after(value: str | None, now: float) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    :param value: The header's value, or ``None``.
    :param now: The current POSIX time, to turn a date into a delay.
    :return: Seconds (≥ 0, at most :data:`MAX_RETRY_AFTER_S`), or ``None`` if absent or
        unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() accepts and float() refuses
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - now
    if math.isnan(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


#: HTTP statuses worth another try besides 5xx: timeout, too early, too many requests.
_RETRYABLE_4XX = frozenset({408, 425, 429})


def http_failure(channel: str, status: int, detail: str, retry_after_s: float | None) -> ChannelError:
    """
    The error for a gateway's non-success HTTP answer, by the usual rules.

    408, 425, 429 and every 5xx are retryable (keeping *retry_after_s*); any other status is
    permanent with reason ``http_<status>``.  A channel handles its own special cases
    (push's 404/410, SMS's 401) before calling this.
    """
    if status in _RETRYABLE_4XX or status >= 500:
        reason = "rate_limited" if status == 429 else f"http_{status}"
        return RetryableError(channel, reason, detail, status=status, retry_after_s=retry_after_s)
    return PermanentError(channel, f"http_{status}", detail, status=status)

# -*- test-case-name: tests.test_notify_sms -*-
"""The SMS channel: Twilio's Messages REST API shape, so any Twilio-compatible gateway works.

:class:`SmsChannel` POSTs ``To``, ``From`` (or ``MessagingServiceSid``) and ``Body`` as an
``application/x-www-form-urlencoded`` form to ``STREAMSRV_SMS_URL``'s resource
(``/2010-04-01/Accounts/{AccountSid}/Messages.json``) with HTTP basic auth
``AccountSid:AuthToken``, through treq.  201 with the message JSON is sent (its ``sid`` kept);
400 and other refusals with Twilio's error JSON (``code``, ``message``) are permanent; 401 (the
gateway refuses our credentials: fixing the configuration lets a retry succeed), 408, 429
(with ``Retry-After``), 5xx, network errors and timeouts are retryable.  This module must never
put the auth token, the ``Authorization`` header or a message body into a log or an error,
nor use the global reactor.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, fail
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamsrv.notifications.channels.base import (
    ChannelError,
    IChannel,
    PermanentError,
    RetryableError,
    SendResult,
    SmsMessage,
    http_failure,
    parse_retry_after,
)
from streamsrv.notifications.channels.http import HttpAnswer, HttpChannel, HttpSender
from streamsrv.notifications.channels.settings import SmsSettings, is_e164

__all__ = ["SmsChannel", "sms_form"]

CHANNEL = "sms"

#: Seconds one send may take, connection included.
SEND_TIMEOUT_S = 15.0
#: Twilio's limit on ``Body``, in characters (it splits longer texts into up to 10 segments).
MAX_BODY_CHARS = 1600
#: Longest gateway error text kept in an error.
_DETAIL_LIMIT = 200


def sms_form(settings: SmsSettings, message: SmsMessage) -> bytes:
    """
    The form body for *message*: ``To``, the configured sender fields, ``Body``, UTF-8.

    :raise PermanentError: ``bad_number`` for a number that is not E.164, ``bad_body`` for an
        empty body or one over :data:`MAX_BODY_CHARS`.
    """
    if not is_e164(message.to):
        raise PermanentError(CHANNEL, "bad_number", "the recipient is not an E.164 number (+33612345678)")
    if not message.body.strip() or len(message.body) > MAX_BODY_CHARS:
        raise PermanentError(CHANNEL, "bad_body", f"the text must have 1 to {MAX_BODY_CHARS} characters")
    return urlencode([("To", message.to), *settings.fields, ("Body", message.body)]).encode("ascii")


def _gateway_detail(answer: HttpAnswer) -> str:
    """
    ``code: message`` from Twilio's error JSON, else a short note; never the request.
    """
    try:
        error = json.loads(answer.body)
    except ValueError:
        return f"the gateway answered {answer.status} without a JSON error"
    if not isinstance(error, dict):
        return f"the gateway answered {answer.status}"
    code, text = error.get("code"), error.get("message")
    detail = " ".join(str(text).split()) if text else f"the gateway answered {answer.status}"
    return (f"{code}: {detail}" if code is not None else detail)[:_DETAIL_LIMIT]


@implementer(IChannel)
class SmsChannel(HttpChannel):
    """
    Sends :class:`~.base.SmsMessage` values to a Twilio-style gateway.
    """

    name = CHANNEL

    def __init__(self, settings: SmsSettings, http: HttpSender) -> None:
        """
        :param http: The HTTP side (``HttpSender(reactor, "sms", timeout_s=SEND_TIMEOUT_S)``):
            its reactor, pool, TLS trust and deadline.
        """
        self._settings = settings
        self._http = http
        credentials = f"{settings.account_sid}:{settings.auth_token}".encode()
        self._headers = {
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Accept": [b"application/json"],
            b"Authorization": [b"Basic " + base64.b64encode(credentials)],
        }

    def send(self, message: object) -> Deferred[SendResult]:
        """
        POST *message* (an :class:`~.base.SmsMessage`) to the gateway.
        """
        if not isinstance(message, SmsMessage):
            raise TypeError(f"the sms channel sends SmsMessage, not {type(message).__name__}")
        try:
            body = sms_form(self._settings, message)
        except ChannelError as e:
            return fail(e)
        d = self._http.post(self._settings.url, Headers(self._headers), body)
        return d.addCallback(self._result)

    def _result(self, answer: HttpAnswer) -> SendResult:
        if 200 <= answer.status < 300:
            try:
                sid = json.loads(answer.body).get("sid")
            except (ValueError, AttributeError):
                sid = None
            return SendResult(CHANNEL, sid if isinstance(sid, str) else None, answer.status)
        detail = _gateway_detail(answer)
        if answer.status == 401:
            raise RetryableError(CHANNEL, "gateway_auth_failed", detail, status=401)
        retry_after = parse_retry_after(answer.header(b"Retry-After"), self._http.reactor.seconds())
        raise http_failure(CHANNEL, answer.status, detail, retry_after)

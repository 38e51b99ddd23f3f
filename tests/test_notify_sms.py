"""Tests for the SMS channel: the URL parser, and sends to a local Twilio-shaped HTTP server.

The server is a Twisted ``Site`` on 127.0.0.1 whose resource checks each request exactly as
Twilio's Messages API documents it (POST to ``/2010-04-01/Accounts/{AccountSid}/Messages.json``,
``application/x-www-form-urlencoded``, basic auth ``AccountSid:AuthToken``, ``To``/``From``/
``Body``) and answers what the test scripts.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from urllib.parse import parse_qsl

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.server import Request as WebRequest
from zope.interface.verify import verifyObject

from streamsrv.notifications.channels.base import (
    ChannelError,
    IChannel,
    PermanentError,
    RetryableError,
    SendResult,
    SmsMessage,
)
from streamsrv.notifications.channels.http import HttpSender
from streamsrv.notifications.channels.settings import ChannelConfigError, SmsSettings, parse_sms_url
from streamsrv.notifications.channels.sms import SEND_TIMEOUT_S, SmsChannel, sms_form
from tests.services import send_failure

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "tok-9f8e7d6c5b4a"
PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
SENDER = "+15550001111"

#: A Twilio error answer, as documented (https://www.twilio.com/docs/errors/21211).
INVALID_NUMBER = {
    "code": 21211,
    "message": "The 'To' number +15555 is not a valid phone number.",
    "more_info": "https://www.twilio.com/docs/errors/21211",
    "status": 400,
}


class SmsUrlTests(unittest.SynchronousTestCase):
    """
    ``STREAMSRV_SMS_URL`` parsing.
    """

    def test_twilio_url(self) -> None:
        """
        Credentials come from the user information, the sender from the query; the URL to POST
        keeps neither.
        """
        settings = parse_sms_url(f"https://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}?From=%2B15550001111")
        self.assertEqual(
            settings,
            SmsSettings(f"https://api.twilio.com{PATH}", ACCOUNT, TOKEN, (("From", "+15550001111"),)),
        )
        self.assertNotIn(TOKEN, repr(settings))

    def test_messaging_service_and_callback(self) -> None:
        """
        ``MessagingServiceSid`` may replace ``From``; ``StatusCallback`` is passed along.
        """
        settings = parse_sms_url(
            f"https://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}?MessagingServiceSid=MG1&StatusCallback=https%3A%2F%2Fx.example%2Fcb"
        )
        self.assertEqual(
            settings.fields, (("MessagingServiceSid", "MG1"), ("StatusCallback", "https://x.example/cb"))
        )

    def test_errors_without_the_token(self) -> None:
        """
        Each problem is named and the token never shows.
        """
        for value, expected in [
            (f"http://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}?From=%2B1555", "https://"),
            (f"https://api.twilio.com{PATH}?From=%2B1555", "SID:TOKEN@"),
            (f"https://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}", "exactly one of"),
            (
                f"https://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}?From=a&MessagingServiceSid=b",
                "exactly one of",
            ),
            (f"https://{ACCOUNT}:{TOKEN}@api.twilio.com{PATH}?From=a&Foo=b", "unknown query fields Foo"),
        ]:
            with self.assertRaises(ChannelConfigError) as caught:
                parse_sms_url(value)
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn(TOKEN, str(caught.exception))

    def test_http_to_loopback(self) -> None:
        """
        Plain http is accepted for a gateway on this machine only.
        """
        self.assertEqual(
            parse_sms_url(f"http://a:b@127.0.0.1:8000{PATH}?From=x").url, f"http://127.0.0.1:8000{PATH}"
        )

    def test_form_refuses_bad_numbers_and_bodies(self) -> None:
        """
        A number that is not E.164, an empty body or one over 1600 characters is permanent.
        """
        settings = parse_sms_url(f"https://a:b@api.twilio.com{PATH}?From=x")
        for message, reason in [
            (SmsMessage("0612345678", "hi"), "bad_number"),
            (SmsMessage("+33612345678", "  "), "bad_body"),
            (SmsMessage("+33612345678", "x" * 1601), "bad_body"),
        ]:
            with self.assertRaises(PermanentError) as caught:
                sms_form(settings, message)
            self.assertEqual(caught.exception.reason, reason)


class TwilioStandIn(Resource):
    """
    The Messages resource, strict about the documented request; answers with ``self.answer``.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, object]] = []
        self.problems: list[str] = []
        self.answer: Callable[[WebRequest], bytes | int] = self.created

    def render(self, request: WebRequest) -> bytes | int:
        expected_auth = b"Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
        checks = [
            (request.method == b"POST", f"method {request.method!r}"),
            (request.path == PATH.encode(), f"path {request.path!r}"),
            (request.uri == PATH.encode(), f"a query string in {request.uri!r}"),
            (
                request.getHeader(b"content-type") == b"application/x-www-form-urlencoded",
                f"content type {request.getHeader(b'content-type')!r}",
            ),
            (request.getHeader(b"authorization") == expected_auth, "basic auth"),
        ]
        self.problems += [problem for ok, problem in checks if not ok]
        assert request.content is not None
        fields = parse_qsl(
            request.content.read().decode("ascii"), keep_blank_values=True, strict_parsing=True
        )
        self.requests.append(dict(fields))
        return self.answer(request)

    def created(self, request: WebRequest) -> bytes:
        request.setResponseCode(201)
        request.setHeader(b"content-type", b"application/json")
        fields = self.requests[-1]
        return json.dumps(
            {
                "sid": f"SM{len(self.requests):032x}",
                "account_sid": ACCOUNT,
                "to": fields.get("To"),
                "from": fields.get("From"),
                "body": fields.get("Body"),
                "status": "queued",
                "num_segments": "1",
            }
        ).encode()


def status_answer(
    status: int, body: object = None, headers: dict[bytes, bytes] | None = None
) -> Callable[..., bytes]:
    def answer(request: WebRequest) -> bytes:
        request.setResponseCode(status)
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        return json.dumps(body).encode() if body is not None else b""

    return answer


class SmsChannelTests(unittest.TestCase):
    """
    :class:`SmsChannel` against the stand-in over a real socket.
    """

    def setUp(self) -> None:
        self.gateway = TwilioStandIn()
        self.port = reactor.listenTCP(0, Site(self.gateway), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        number = self.port.getHost().port
        self.settings = parse_sms_url(
            f"http://{ACCOUNT}:{TOKEN}@127.0.0.1:{number}{PATH}?From=%2B15550001111"
        )

    def channel(self, settings: SmsSettings | None = None, timeout_s: float = SEND_TIMEOUT_S) -> SmsChannel:
        channel = SmsChannel(settings or self.settings, HttpSender(reactor, "sms", timeout_s=timeout_s))
        self.addCleanup(channel.close)
        return channel

    async def failure_of(self, d: Deferred[SendResult]) -> ChannelError:
        return await send_failure(d)

    async def test_sent_exactly_as_twilio_documents(self) -> None:
        """
        A POST with the documented path, form content type, basic auth and To/From/Body (UTF-8)
        is sent; the 201's ``sid`` is kept.
        """
        channel = self.channel()
        self.assertTrue(verifyObject(IChannel, channel))
        result = await channel.send(SmsMessage("+33612345678", "Nouvel album : « Été » 🎵 & plus"))
        self.assertEqual(self.gateway.problems, [])
        self.assertEqual(
            self.gateway.requests,
            [{"To": "+33612345678", "From": SENDER, "Body": "Nouvel album : « Été » 🎵 & plus"}],
        )
        self.assertEqual(result, SendResult("sms", "SM" + "0" * 31 + "1", 201))

    async def test_messaging_service_sid(self) -> None:
        """
        With ``MessagingServiceSid`` in the URL, that field is sent instead of ``From``.
        """
        number = self.port.getHost().port
        settings = parse_sms_url(f"http://{ACCOUNT}:{TOKEN}@127.0.0.1:{number}{PATH}?MessagingServiceSid=MG9")
        await self.channel(settings).send(SmsMessage("+33612345678", "hi"))
        self.assertEqual(
            self.gateway.requests, [{"To": "+33612345678", "MessagingServiceSid": "MG9", "Body": "hi"}]
        )

    async def test_400_is_permanent_with_twilio_code(self) -> None:
        """
        Twilio's 400 error JSON fails permanently with its code and message.
        """
        self.gateway.answer = status_answer(400, INVALID_NUMBER)
        error = await self.failure_of(self.channel().send(SmsMessage("+15555555", "hi")))
        self.assertIsInstance(error, PermanentError)
        self.assertEqual((error.reason, error.status), ("http_400", 400))
        self.assertIn("21211: The 'To' number", error.detail)
        self.assertNotIn(TOKEN, str(error))

    async def test_retryable_answers(self) -> None:
        """
        429 (keeping ``Retry-After``), 500, 503 and 401 are retryable.
        """
        channel = self.channel()
        for status, headers, reason, retry_after in [
            (429, {b"retry-after": b"7"}, "rate_limited", 7.0),
            (500, {}, "http_500", None),
            (503, {b"retry-after": b"120"}, "http_503", 120.0),
            (401, {}, "gateway_auth_failed", None),
        ]:
            self.gateway.answer = status_answer(status, {"code": 20003, "message": "x"}, headers)
            error = await self.failure_of(channel.send(SmsMessage("+33612345678", "hi")))
            self.assertIsInstance(error, RetryableError)
            self.assertEqual((error.reason, error.status, error.retry_after_s), (reason, status, retry_after))

    async def test_other_4xx_is_permanent(self) -> None:
        """
        A 404 (wrong account path) or 403 cannot succeed on retry.
        """
        channel = self.channel()
        for status in (403, 404):
            self.gateway.answer = status_answer(status, {"code": 20404, "message": "not found"})
            error = await self.failure_of(channel.send(SmsMessage("+33612345678", "hi")))
            self.assertIsInstance(error, PermanentError)
            self.assertEqual(error.status, status)

    async def test_timeout_is_retryable(self) -> None:
        """
        A gateway that never answers fails the send as a retryable ``timeout``.
        """
        self.gateway.answer = lambda request: NOT_DONE_YET
        error = await self.failure_of(self.channel(timeout_s=0.2).send(SmsMessage("+33612345678", "hi")))
        self.assertIsInstance(error, RetryableError)
        self.assertEqual(error.reason, "timeout")

    async def test_down_gateway_is_retryable(self) -> None:
        """
        A refused connection is a retryable ``network_error``.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        settings = parse_sms_url(f"http://{ACCOUNT}:{TOKEN}@127.0.0.1:{free}{PATH}?From=x")
        error = await self.failure_of(self.channel(settings).send(SmsMessage("+33612345678", "hi")))
        self.assertIsInstance(error, RetryableError)
        self.assertEqual(error.reason, "network_error")
        self.assertNotIn(TOKEN, str(error))

    async def test_bad_number_is_not_sent(self) -> None:
        """
        A number that is not E.164 fails permanently without a request.
        """
        error = await self.failure_of(self.channel().send(SmsMessage("12345", "hi")))
        self.assertEqual(error.reason, "bad_number")
        self.assertEqual(self.gateway.requests, [])

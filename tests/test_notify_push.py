"""Tests for the push channel: VAPID values, RFC 8291 encryption, and sends to a push service stand-in.

The stand-in (:mod:`tests.push_service`) verifies each VAPID JWT with the ``k`` it is given and
decrypts each body with the subscription's private key using ``http_ece``, an implementation
independent of the channel's, so a message it accepts was encrypted right.
"""

from __future__ import annotations

import json

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from streamsrv.notifications.channels.base import (
    ChannelError,
    IChannel,
    PermanentError,
    PushMessage,
    PushSubscription,
    RetryableError,
    SendResult,
    SubscriptionGone,
)
from streamsrv.notifications.channels.http import HttpSender
from streamsrv.notifications.channels.push import (
    MAX_PAYLOAD_BYTES,
    SEND_TIMEOUT_S,
    PushChannel,
    VapidSigner,
    encrypt_aes128gcm,
    push_origin,
)
from streamsrv.notifications.channels.settings import (
    ChannelConfigError,
    VapidSettings,
    b64url_decode,
    b64url_encode,
    parse_vapid,
    parse_vapid_private_key,
    parse_vapid_subject,
)
from tests.push_service import PushServiceStandIn
from tests.services import send_failure

SUBJECT = "mailto:ops@example.com"

# RFC 8291 Appendix A: published test data (not credentials).
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_UA_PUBLIC = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
    "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)


def _raw(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))


def _key(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


class VapidValueTests(unittest.SynchronousTestCase):
    """
    ``STREAMSRV_VAPID_PRIVATE_KEY`` and ``STREAMSRV_VAPID_SUBJECT`` parsing.
    """

    def test_key_forms(self) -> None:
        """
        The raw base64url scalar, PKCS #8 PEM, SEC 1 PEM and PEM with literal ``\\n`` all give
        the same key.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        expected = key.private_numbers().private_value
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        sec1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        for value in (_raw(key), _raw(key) + "=", pkcs8, sec1, pkcs8.replace("\n", "\\n")):
            self.assertEqual(parse_vapid_private_key(value).private_numbers().private_value, expected)

    def test_refused_keys_are_never_shown(self) -> None:
        """
        A key of the wrong curve or type, or garbage, is refused without echoing it.
        """
        p384 = ec.generate_private_key(ec.SECP384R1())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for key in (p384, rsa_key):
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            with self.assertRaises(ChannelConfigError) as caught:
                parse_vapid_private_key(pem)
            self.assertIn("P-256", str(caught.exception))
        with self.assertRaises(ChannelConfigError) as caught:
            parse_vapid_private_key("c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LWEta2V5")
        self.assertNotIn("c2VjcmV0", str(caught.exception))

    def test_subject(self) -> None:
        """
        The subject is a mailto: address or an https: URL.
        """
        self.assertEqual(parse_vapid_subject("mailto:ops@example.com"), "mailto:ops@example.com")
        self.assertEqual(parse_vapid_subject("https://example.com/contact"), "https://example.com/contact")
        for bad in ("ops@example.com", "mailto:nobody", "http://example.com"):
            with self.assertRaises(ChannelConfigError):
                parse_vapid_subject(bad)

    def test_both_values_problems_listed(self) -> None:
        """
        :func:`parse_vapid` names each variable with its problem.
        """
        with self.assertRaises(ChannelConfigError) as caught:
            parse_vapid("nope", "nope")
        self.assertEqual(len(caught.exception.reasons), 2)
        self.assertTrue(caught.exception.reasons[0].startswith("STREAMSRV_VAPID_PRIVATE_KEY"))
        self.assertTrue(caught.exception.reasons[1].startswith("STREAMSRV_VAPID_SUBJECT"))
        settings = parse_vapid(_raw(ec.generate_private_key(ec.SECP256R1())), SUBJECT)
        self.assertEqual(len(b64url_decode(settings.public_key)), 65)
        self.assertNotIn("private", repr(settings).replace("VapidSettings(", ""))


class EncryptionTests(unittest.SynchronousTestCase):
    """
    :func:`encrypt_aes128gcm`.
    """

    def test_rfc_8291_appendix_a(self) -> None:
        """
        With the RFC's salt and sender key, the body equals the RFC's, byte for byte.
        """
        body = encrypt_aes128gcm(
            RFC_PLAINTEXT,
            b64url_decode(RFC_UA_PUBLIC),
            b64url_decode(RFC_AUTH),
            salt=b64url_decode(RFC_SALT),
            server_key=_key(RFC_AS_PRIVATE),
        )
        self.assertEqual(b64url_encode(body), RFC_BODY)

    def test_independent_decryption(self) -> None:
        """
        A fresh encryption (random salt and key) decrypts with ``http_ece`` to the payload.
        """
        ua = ec.generate_private_key(ec.SECP256R1())
        point = ua.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        payload = "Nouvel album — « Été » 🎵".encode() * 40
        first = encrypt_aes128gcm(payload, point, b"0123456789abcdef")
        second = encrypt_aes128gcm(payload, point, b"0123456789abcdef")
        self.assertNotEqual(first, second)
        for body in (first, second):
            self.assertEqual(
                http_ece.decrypt(body, private_key=ua, auth_secret=b"0123456789abcdef", version="aes128gcm"),
                payload,
            )

    def test_largest_payload(self) -> None:
        """
        3993 bytes fill one 4096-byte record; one more byte is refused.
        """
        point = b64url_decode(RFC_UA_PUBLIC)
        self.assertEqual(len(encrypt_aes128gcm(b"x" * MAX_PAYLOAD_BYTES, point, b"a" * 16)), 4096)
        self.assertRaises(ValueError, encrypt_aes128gcm, b"x" * (MAX_PAYLOAD_BYTES + 1), point, b"a" * 16)


class VapidSignerTests(unittest.SynchronousTestCase):
    """
    :class:`VapidSigner` and :func:`push_origin`.
    """

    def test_origin(self) -> None:
        """
        The audience is scheme, host and a non-default port, nothing else.
        """
        self.assertEqual(
            push_origin("https://fcm.googleapis.com/fcm/send/abc?x=1"), "https://fcm.googleapis.com"
        )
        self.assertEqual(push_origin("https://push.example:443/a"), "https://push.example")
        self.assertEqual(push_origin("http://127.0.0.1:8080/push/1"), "http://127.0.0.1:8080")

    def test_claims_and_reuse(self) -> None:
        """
        The token is ES256 over aud/exp/sub (exp 12 h ahead), verifiable with ``k``; reused for
        the same origin within half its life, renewed after, separate per origin.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        settings = VapidSettings(ec.generate_private_key(ec.SECP256R1()), SUBJECT)
        signer = VapidSigner(settings, clock)
        header = signer.authorization("https://push.example/a")
        token, key = header.removeprefix("vapid t=").split(", k=")
        self.assertEqual(key, settings.public_key)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        claims = jwt.decode(
            token,
            public,
            algorithms=["ES256"],
            audience="https://push.example",
            options={"verify_exp": False},
        )
        self.assertEqual(
            claims, {"aud": "https://push.example", "exp": 1_700_000_000 + 12 * 3600, "sub": SUBJECT}
        )
        self.assertEqual(signer.authorization("https://push.example/b"), header)
        self.assertNotEqual(signer.authorization("https://other.example/b"), header)
        clock.advance(6 * 3600 + 1)
        self.assertNotEqual(signer.authorization("https://push.example/a"), header)


class PushChannelTests(unittest.TestCase):
    """
    :class:`PushChannel` against the stand-in over a real socket.
    """

    def setUp(self) -> None:
        self.vapid = VapidSettings(ec.generate_private_key(ec.SECP256R1()), SUBJECT)
        self.service = PushServiceStandIn(self.vapid.public_key, max_body=1024)
        port = reactor.listenTCP(0, Site(self.service), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.service.origin = f"http://127.0.0.1:{port.getHost().port}"

    def channel(self, vapid: VapidSettings | None = None) -> PushChannel:
        channel = PushChannel(vapid or self.vapid, HttpSender(reactor, "push", timeout_s=SEND_TIMEOUT_S))
        self.addCleanup(channel.close)
        return channel

    async def failure_of(self, d: Deferred[SendResult]) -> ChannelError:
        return await send_failure(d)

    async def test_encrypted_signed_and_decrypted(self) -> None:
        """
        Messages to two subscriptions arrive decrypted to their payloads with TTL, Urgency and
        Topic, under a VAPID token whose claims the service checked; the message URL is kept.
        """
        channel = self.channel()
        self.assertTrue(verifyObject(IChannel, channel))
        first, second = self.service.subscribe(), self.service.subscribe()
        payload = json.dumps({"title": "Nouvel album", "body": "« Été » 🎵"}).encode()
        result = await channel.send(
            PushMessage(first, payload, ttl_s=3600, urgency="high", topic="new-release")
        )
        await channel.send(PushMessage(second, b"second", ttl_s=0))
        self.assertEqual(self.service.problems, [])
        self.assertEqual(result, SendResult("push", f"{self.service.origin}/message/1", 201))
        one, two = self.service.received
        self.assertEqual(
            (one.subscription, one.payload, one.ttl, one.urgency, one.topic),
            ("s1", payload, 3600, "high", "new-release"),
        )
        self.assertEqual(
            (two.subscription, two.payload, two.ttl, two.urgency, two.topic),
            ("s2", b"second", 0, "normal", None),
        )
        self.assertEqual(one.claims["aud"], self.service.origin)
        self.assertEqual(one.claims["sub"], SUBJECT)
        self.assertEqual(self.service.tokens[0], self.service.tokens[1])

    async def test_gone_subscription(self) -> None:
        """
        410 and 404 fail with :class:`SubscriptionGone`: permanent, ``subscription_gone``.
        """
        channel = self.channel()
        for status in (410, 404):
            subscription = self.service.subscribe()
            self.service.script(subscription, status)
            error = await self.failure_of(channel.send(PushMessage(subscription, b"hi")))
            self.assertIsInstance(error, SubscriptionGone)
            self.assertIsInstance(error, PermanentError)
            self.assertTrue(error.subscription_gone)
            self.assertEqual((error.reason, error.status), ("subscription_gone", status))

    async def test_too_large_for_the_service(self) -> None:
        """
        The service's 413 is a permanent ``payload_too_large``, not a gone subscription.
        """
        error = await self.failure_of(self.channel().send(PushMessage(self.service.subscribe(), b"x" * 2000)))
        self.assertIsInstance(error, PermanentError)
        self.assertFalse(error.subscription_gone)
        self.assertEqual((error.reason, error.status), ("payload_too_large", 413))

    async def test_retryable_answers(self) -> None:
        """
        429 with ``Retry-After`` and 5xx are retryable.
        """
        channel = self.channel()
        for status, headers, retry_after in [
            (429, {b"retry-after": b"30"}, 30.0),
            (500, {}, None),
            (503, {}, None),
        ]:
            subscription = self.service.subscribe()
            self.service.script(subscription, status, headers)
            error = await self.failure_of(channel.send(PushMessage(subscription, b"hi")))
            self.assertIsInstance(error, RetryableError)
            self.assertEqual((error.status, error.retry_after_s), (status, retry_after))

    async def test_wrong_vapid_key_is_refused(self) -> None:
        """
        A token from a key other than the service's application server key is refused (401,
        permanent): the service does not take any key it is shown.
        """
        other = VapidSettings(ec.generate_private_key(ec.SECP256R1()), SUBJECT)
        error = await self.failure_of(self.channel(other).send(PushMessage(self.service.subscribe(), b"hi")))
        self.assertIsInstance(error, PermanentError)
        self.assertEqual(error.status, 401)
        self.assertEqual(self.service.received, [])

    async def test_refused_before_sending(self) -> None:
        """
        A payload over one record, bad keys, a non-https endpoint, a bad urgency or topic fail
        permanently without a request.
        """
        channel = self.channel()
        good = self.service.subscribe()
        cases = [
            (PushMessage(good, b"x" * (MAX_PAYLOAD_BYTES + 1)), "payload_too_large"),
            (PushMessage(PushSubscription(good.endpoint, "AAAA", good.auth), b"hi"), "bad_subscription"),
            (PushMessage(PushSubscription(good.endpoint, good.p256dh, "AAAA"), b"hi"), "bad_subscription"),
            (
                PushMessage(PushSubscription("http://push.example/x", good.p256dh, good.auth), b"hi"),
                "bad_subscription",
            ),
            (
                PushMessage(PushSubscription(good.endpoint, "B" + "A" * 86, good.auth), b"hi"),
                "bad_subscription",
            ),
            (PushMessage(good, b"hi", urgency="asap"), "bad_message"),
            (PushMessage(good, b"hi", topic="has spaces"), "bad_message"),
            (PushMessage(good, b"hi", ttl_s=-1), "bad_message"),
        ]
        for message, reason in cases:
            error = await self.failure_of(channel.send(message))
            self.assertIsInstance(error, PermanentError)
            self.assertEqual(error.reason, reason)
        self.assertEqual(self.service.received, [])

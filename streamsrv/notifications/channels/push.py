# -*- test-case-name: tests.test_notify_push -*-
"""The push channel: Web Push (RFC 8030) with aes128gcm encryption (RFC 8291) and VAPID (RFC 8292).

:func:`encrypt_aes128gcm` encrypts a payload for one browser subscription with ``cryptography``
(ECDH on P-256 with a fresh sender key, HKDF with the subscription's auth secret, one
AES-128-GCM record); :class:`VapidSigner` makes the ``Authorization: vapid t=<JWT>, k=<key>``
header (ES256 with PyJWT; ``aud`` the endpoint's origin, ``exp`` 12 h ahead, ``sub`` the
operator's contact), reusing a token per origin for half its life.  :class:`PushChannel` POSTs
the encrypted body with ``TTL``, ``Urgency``, ``Topic`` and ``Content-Encoding: aes128gcm``
through treq: 201 is sent, 404/410 is :class:`~.base.SubscriptionGone`, 413 and other 4xx are
permanent, 429/5xx/network errors/timeouts retryable.  This module must never log or put into
an error the VAPID private key, a subscription's auth secret or a payload, nor use the global
reactor.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.internet.defer import Deferred, fail
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamsrv.notifications.channels.base import (
    URGENCIES,
    ChannelError,
    IChannel,
    PermanentError,
    PushMessage,
    PushSubscription,
    SendResult,
    SubscriptionGone,
    http_failure,
    parse_retry_after,
)
from streamsrv.notifications.channels.http import HttpAnswer, HttpChannel, HttpSender
from streamsrv.notifications.channels.settings import VapidSettings, b64url_decode, is_loopback_host

__all__ = ["MAX_PAYLOAD_BYTES", "PushChannel", "VapidSigner", "encrypt_aes128gcm", "push_origin"]

CHANNEL = "push"

#: The record size announced in the aes128gcm header: the whole body is one record.
RECORD_SIZE = 4096
#: Salt (16) + record size (4) + key id length (1) + the sender's public point (65).
HEADER_BYTES = 86
#: The largest payload one 4096-byte record holds: 4096 - 86 - 16 (GCM tag) - 1 (delimiter).
MAX_PAYLOAD_BYTES = RECORD_SIZE - HEADER_BYTES - 16 - 1
#: Seconds one send may take, connection included.
SEND_TIMEOUT_S = 15.0
#: Lifetime of a VAPID token (RFC 8292 allows at most 24 h).
VAPID_LIFETIME_S = 12 * 3600
#: The longest TTL asked of a push service (28 days, what the big services keep at most).
MAX_TTL_S = 28 * 86400

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)
_DETAIL_LIMIT = 200


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def encrypt_aes128gcm(
    payload: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    salt: bytes | None = None,
    server_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """
    The RFC 8291 ``aes128gcm`` body that only the subscription's browser can decrypt.

    :param ua_public: The subscription's ``p256dh`` (65-byte uncompressed point).
    :param auth_secret: The subscription's 16-byte ``auth``.
    :param salt: 16 random bytes; fresh if ``None`` (given only to check RFC test vectors).
    :param server_key: The sender's one-time P-256 key; fresh if ``None`` (likewise).
    :raise ValueError: For a payload over :data:`MAX_PAYLOAD_BYTES` or a point not on P-256.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a Web Push payload holds at most {MAX_PAYLOAD_BYTES} bytes")
    salt = os.urandom(16) if salt is None else salt
    server_key = ec.generate_private_key(ec.SECP256R1()) if server_key is None else server_key
    as_public = _point(server_key.public_key())
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    shared = server_key.exchange(ec.ECDH(), ua_key)
    # RFC 8291 section 3.4: mix in the auth secret and both public keys.
    ikm = _hkdf(auth_secret, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    # RFC 8188 section 2.2-2.3: content key and nonce for the single record.
    key = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(key).encrypt(nonce, payload + b"\x02", None)
    header = salt + RECORD_SIZE.to_bytes(4, "big") + bytes([len(as_public)]) + as_public
    return header + record


def push_origin(endpoint: str) -> str:
    """
    The ``aud`` of a VAPID token for *endpoint*: its origin (scheme, host, non-default port).
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class VapidSigner:
    """
    Makes RFC 8292 ``Authorization`` values, one token per push service origin, reused while
    more than half its life remains.
    """

    def __init__(self, vapid: VapidSettings, clock: Any, lifetime_s: int = VAPID_LIFETIME_S) -> None:
        """
        :param clock: Provides ``seconds()`` (the reactor, or ``task.Clock`` in tests).
        """
        self._vapid = vapid
        self._clock = clock
        self._lifetime_s = lifetime_s
        self._public_key = vapid.public_key
        self._tokens: dict[str, tuple[float, str]] = {}

    def authorization(self, endpoint: str) -> str:
        """
        ``vapid t=<JWT>, k=<public key>`` for a request to *endpoint*.
        """
        audience = push_origin(endpoint)
        now = self._clock.seconds()
        cached = self._tokens.get(audience)
        if cached is None or cached[0] - now < self._lifetime_s / 2:
            expires = int(now) + self._lifetime_s
            claims = {"aud": audience, "exp": expires, "sub": self._vapid.subject}
            token = jwt.encode(claims, self._vapid.private_key, algorithm="ES256", headers={"typ": "JWT"})
            cached = (float(expires), token)
            self._tokens[audience] = cached
        return f"vapid t={cached[1]}, k={self._public_key}"


def _check(message: PushMessage) -> tuple[bytes, bytes]:
    """
    The subscription's decoded keys, once the message is known to be sendable.

    :raise PermanentError: ``bad_subscription``, ``bad_message`` or ``payload_too_large``.
    """
    subscription: PushSubscription = message.subscription
    try:
        parts = urlsplit(subscription.endpoint)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if (
        parts is None
        or not host
        or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host)))
    ):
        raise PermanentError(CHANNEL, "bad_subscription", "the endpoint is not an https:// URL")
    try:
        ua_public, auth = b64url_decode(subscription.p256dh), b64url_decode(subscription.auth)
    except ValueError:
        raise PermanentError(CHANNEL, "bad_subscription", "the subscription's keys are not base64url")
    if len(ua_public) != 65 or ua_public[0] != 4 or len(auth) != 16:
        raise PermanentError(
            CHANNEL, "bad_subscription", "p256dh must be a 65-byte P-256 point and auth 16 bytes"
        )
    if len(message.payload) > MAX_PAYLOAD_BYTES:
        raise PermanentError(CHANNEL, "payload_too_large", f"the payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    if not 0 <= message.ttl_s <= MAX_TTL_S:
        raise PermanentError(CHANNEL, "bad_message", f"ttl_s must be 0 to {MAX_TTL_S}")
    if message.urgency not in URGENCIES:
        raise PermanentError(CHANNEL, "bad_message", f"urgency must be one of {', '.join(URGENCIES)}")
    if message.topic is not None and not _TOPIC.fullmatch(message.topic):
        raise PermanentError(CHANNEL, "bad_message", "topic must be 1 to 32 base64url characters")
    return ua_public, auth


@implementer(IChannel)
class PushChannel(HttpChannel):
    """
    Sends :class:`~.base.PushMessage` values to browsers' push services.
    """

    name = CHANNEL

    def __init__(self, vapid: VapidSettings, http: HttpSender) -> None:
        """
        :param http: The HTTP side (``HttpSender(reactor, "push", timeout_s=SEND_TIMEOUT_S)``):
            its reactor (also the VAPID clock), pool, TLS trust and deadline.
        """
        self._signer = VapidSigner(vapid, http.reactor)
        self._http = http

    def send(self, message: object) -> Deferred[SendResult]:
        """
        Encrypt *message* (a :class:`~.base.PushMessage`) and POST it to its endpoint.
        """
        if not isinstance(message, PushMessage):
            raise TypeError(f"the push channel sends PushMessage, not {type(message).__name__}")
        try:
            ua_public, auth = _check(message)
            body = encrypt_aes128gcm(message.payload, ua_public, auth)
        except ChannelError as e:
            return fail(e)
        except ValueError:
            return fail(PermanentError(CHANNEL, "bad_subscription", "p256dh is not a point on P-256"))
        endpoint = message.subscription.endpoint
        headers = Headers(
            {
                b"Authorization": [self._signer.authorization(endpoint).encode("ascii")],
                b"Content-Encoding": [b"aes128gcm"],
                b"Content-Type": [b"application/octet-stream"],
                b"TTL": [str(message.ttl_s).encode("ascii")],
                b"Urgency": [message.urgency.encode("ascii")],
            }
        )
        if message.topic is not None:
            headers.setRawHeaders(b"Topic", [message.topic.encode("ascii")])
        d = self._http.post(endpoint, headers, body)
        return d.addCallback(self._result)

    def _result(self, answer: HttpAnswer) -> SendResult:
        if 200 <= answer.status < 300:
            return SendResult(CHANNEL, answer.header(b"Location"), answer.status)
        detail = " ".join(answer.body.decode("utf-8", "replace").split())[:_DETAIL_LIMIT]
        if answer.status in (404, 410):
            raise SubscriptionGone(
                CHANNEL, detail or "the push service no longer knows this subscription", status=answer.status
            )
        if answer.status == 413:
            raise PermanentError(CHANNEL, "payload_too_large", detail, status=413)
        retry_after = parse_retry_after(answer.header(b"Retry-After"), self._http.reactor.seconds())
        raise http_failure(CHANNEL, answer.status, detail, retry_after)

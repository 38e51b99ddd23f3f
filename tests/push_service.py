"""A push service stand-in for the push channel's tests: checks VAPID and decrypts every message.

:class:`PushServiceStandIn` is a Twisted resource to serve on 127.0.0.1.  :meth:`subscribe`
makes a browser-like subscription (a P-256 key pair and a 16-byte auth secret, as
``PushManager.subscribe`` does) whose private half only the stand-in knows.  Each POST to a
subscription's endpoint must carry ``Content-Encoding: aes128gcm``, ``TTL`` and a valid RFC 8292
``Authorization: vapid t=…, k=…`` (ES256 signature checked with ``k``, ``aud`` this service's
origin, ``exp`` in the future and at most 24 h away, ``sub`` mailto: or https:); the body is
decrypted with ``http_ece`` — an implementation independent of the channel's — and kept in
:attr:`received`.  Problems are listed in :attr:`problems` (and answered 400/401/403).  A
subscription can be made gone (410), or scripted to answer another status.  Test support only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.web.resource import Resource
from twisted.web.server import Request

from streamsrv.notifications.channels.base import PushSubscription
from streamsrv.notifications.channels.settings import b64url_decode, b64url_encode

#: The most an RFC 8030 push service must accept; the stand-in answers 413 above ``max_body``.
DEFAULT_MAX_BODY = 4096


@dataclass
class Browser:
    """
    The private side of one subscription, as a browser keeps it.
    """

    key: ec.EllipticCurvePrivateKey
    auth: bytes
    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivered:
    """
    One message the stand-in accepted: the decrypted payload and the RFC 8030 headers.
    """

    subscription: str
    payload: bytes
    ttl: int
    urgency: str | None
    topic: str | None
    claims: dict[str, Any]


class PushServiceStandIn(Resource):
    """
    Endpoints ``/push/<id>``; ``origin`` must be set to ``http://127.0.0.1:<port>`` once listening.
    """

    isLeaf = True

    def __init__(self, application_server_key: str, max_body: int = DEFAULT_MAX_BODY) -> None:
        super().__init__()
        self.application_server_key = application_server_key
        self.max_body = max_body
        self.origin = ""
        self.browsers: dict[str, Browser] = {}
        self.received: list[Delivered] = []
        self.problems: list[str] = []
        self.tokens: list[str] = []

    def subscribe(self) -> PushSubscription:
        """
        A new subscription, as ``PushSubscription.toJSON()`` would give it to the server.
        """
        sid = f"s{len(self.browsers) + 1}"
        browser = Browser(ec.generate_private_key(ec.SECP256R1()), _random(16))
        self.browsers[sid] = browser
        point = browser.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return PushSubscription(
            f"{self.origin}/push/{sid}", b64url_encode(point), b64url_encode(browser.auth)
        )

    def script(
        self, subscription: PushSubscription, status: int, headers: dict[bytes, bytes] | None = None
    ) -> None:
        """
        Answer *status* (with *headers*) to every message for *subscription* from now on.
        """
        browser = self.browsers[subscription.endpoint.rsplit("/", 1)[1]]
        browser.status = status
        browser.headers = headers or {}

    def render_POST(self, request: Request) -> bytes:
        sid = request.path.decode().rsplit("/", 1)[1]
        browser = self.browsers.get(sid)
        if browser is None:
            request.setResponseCode(404)
            return b"no such subscription"
        if browser.status is not None:
            request.setResponseCode(browser.status)
            for name, value in browser.headers.items():
                request.setHeader(name, value)
            return b"scripted answer"
        assert request.content is not None
        body = request.content.read()
        if len(body) > self.max_body:
            request.setResponseCode(413)
            return b"payload too large"
        claims = self._check_vapid(request)
        if claims is None:
            request.setResponseCode(401)
            return b"bad VAPID"
        problem = self._check_headers(request)
        if problem:
            self.problems.append(problem)
            request.setResponseCode(400)
            return problem.encode()
        try:
            payload = http_ece.decrypt(
                body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
            )
        except Exception as e:  # the library raises several types for a bad body
            self.problems.append(f"cannot decrypt: {e!r}")
            request.setResponseCode(400)
            return b"cannot decrypt"
        topic = request.getHeader(b"topic")
        urgency = request.getHeader(b"urgency")
        self.received.append(
            Delivered(
                sid,
                payload,
                int(request.getHeader(b"ttl") or b"-1"),
                urgency.decode() if urgency else None,
                topic.decode() if topic else None,
                claims,
            )
        )
        request.setResponseCode(201)
        request.setHeader(b"location", f"{self.origin}/message/{len(self.received)}".encode())
        return b""

    def _check_headers(self, request: Request) -> str | None:
        if request.getHeader(b"content-encoding") != b"aes128gcm":
            return f"Content-Encoding {request.getHeader(b'content-encoding')!r}"
        ttl = request.getHeader(b"ttl")
        if ttl is None or not ttl.isdigit():
            return f"TTL {ttl!r}"
        urgency = request.getHeader(b"urgency")
        if urgency is not None and urgency not in (b"very-low", b"low", b"normal", b"high"):
            return f"Urgency {urgency!r}"
        return None

    def _check_vapid(self, request: Request) -> dict[str, Any] | None:
        header = (request.getHeader(b"authorization") or b"").decode()
        scheme, _, params = header.partition(" ")
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if scheme != "vapid" or set(fields) != {"t", "k"}:
            self.problems.append(f"Authorization is not 'vapid t=…, k=…': {header[:20]!r}")
            return None
        if fields["k"] != self.application_server_key:
            self.problems.append("k is not the application server key")
            return None
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(fields["k"]))
        try:
            header_fields = jwt.get_unverified_header(fields["t"])
            claims = jwt.decode(
                fields["t"],
                public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except jwt.PyJWTError as e:
            self.problems.append(f"VAPID JWT refused: {e}")
            return None
        if header_fields.get("typ") != "JWT":
            self.problems.append(f"JWT typ {header_fields.get('typ')!r}")
        if not claims["exp"] <= time.time() + 24 * 3600:
            self.problems.append("exp is more than 24 h away")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            self.problems.append(f"sub {claims['sub']!r}")
        self.tokens.append(fields["t"])
        return claims


def _random(n: int) -> bytes:
    import os

    return os.urandom(n)

# -*- test-case-name: tests.test_ws -*-
"""``/ws`` in the resource tree: hand the upgrade request's connection to an event socket.

:class:`EventSocketResource` is Autobahn's ``WebSocketResource`` with three
changes: the ``access_token`` query parameter is taken out of the request
before Autobahn (which logs and keeps the request line) or anything else sees
it, and given to the socket; the HTTP channel's producer registration on the
transport is undone, so that the socket can register itself and feel
backpressure; a request that is not a WebSocket upgrade gets the contract's
JSON error.  :func:`jwt_authenticator` builds the socket's ``authenticate``
from the JWT verifier and the revocation snapshot.

This module must never log the request URI or a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from autobahn.twisted.resource import WebSocketResource
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.server import NOT_DONE_YET

from streamsrv.auth.jwt import MAX_TOKEN_LENGTH, JwtVerifier
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.errors import ApiError
from streamsrv.web.errors import render_error
from streamsrv.ws.protocol import Authenticate, EventSocketFactory

__all__ = ["TOKEN_PARAM", "EventSocketResource", "jwt_authenticator", "take_query_token"]

log = Logger()

#: The query parameter that may carry the access token (browsers cannot set
#: headers on a WebSocket).
TOKEN_PARAM = "access_token"  # noqa: S105 - a parameter name, not a secret


def take_query_token(uri: bytes) -> tuple[bytes, str | None]:
    """
    Split the ``access_token`` parameter out of a request URI.

    :return: The URI without it (other parameters kept, in order) and its
        value (``None`` if absent, empty, or given more than once).
    """
    path, sep, query = uri.partition(b"?")
    if not sep:
        return uri, None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    tokens = [value for name, value in pairs if name == TOKEN_PARAM]
    rest = [(name, value) for name, value in pairs if name != TOKEN_PARAM]
    token = tokens[0] if len(tokens) == 1 and tokens[0] else None
    if not tokens:
        return uri, None
    new_query = urlencode(rest, safe="/:,").encode("latin-1")
    return (path + b"?" + new_query if new_query else path), token


class EventSocketResource(WebSocketResource):
    """The ``/ws`` leaf: upgrades the connection to an :class:`~streamsrv.ws.protocol.EventSocketProtocol`."""

    def __init__(self, factory: EventSocketFactory) -> None:
        super().__init__(factory)
        self.factory = factory

    def render(self, request: Any) -> bytes | int:
        request.route = "ws"
        uri, token = take_query_token(request.uri)
        if uri is not request.uri:
            request.uri = uri
            request.args.pop(TOKEN_PARAM.encode("ascii"), None)
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if request.channel.transport is None or upgrade != b"websocket":
            # HTTP/2, or a plain GET: not a WebSocket.
            body = render_error(request, ApiError("BAD_REQUEST", "This endpoint only speaks WebSocket."))
            request.setResponseCode(426)
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"connection", b"Upgrade")
            return body

        protocol = self._factory.buildProtocol(request.transport.getPeer())
        if protocol is None:
            return render_error(request, ApiError("INTERNAL"))
        protocol.query_token = token
        protocol.request_id = getattr(request, "request_id", None)
        protocol.client_ip = getattr(request, "client_ip", None) or getattr(
            request.getClientAddress(), "host", "-"
        )

        transport, request.channel.transport = request.channel.transport, None
        # The HTTP channel registered itself as the transport's producer; the
        # socket registers itself instead (to be paused when the peer reads slowly).
        try:
            transport.unregisterProducer()
        except Exception:
            log.failure("ws: could not unregister the HTTP channel as producer")
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        # The channel paused reading while it handled the request: resume.
        if hasattr(transport, "resumeProducing"):
            transport.resumeProducing()

        data = request.method + b" " + request.uri + b" HTTP/1.1\r\n"
        for name, values in request.requestHeaders.getAllRawHeaders():
            data += name + b": " + b",".join(values) + b"\r\n"
        data += b"\r\n"
        data += request.content.read()
        protocol.dataReceived(data)
        return NOT_DONE_YET


def jwt_authenticator(
    verifier: JwtVerifier,
    is_revoked: Callable[[Principal], bool] | None = None,
) -> Authenticate:
    """
    ``authenticate(token)`` for the factory: an access token verified by
    *verifier* (``typ`` access), then checked against the revocation snapshot.

    :param is_revoked: e.g. ``RevocationCache.is_revoked``.
    :raise AuthError: From the coroutine, as the verifier raises it, or
        ``TOKEN_REVOKED``; ``TOKEN_INVALID`` when JWT is not configured.
    """

    async def authenticate(token: str) -> Principal:
        if not verifier.configured:
            raise AuthError("TOKEN_INVALID", reason="jwt_not_configured")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("TOKEN_INVALID", reason="too_long")
        principal = await verifier.verify(token, typ="access")
        if is_revoked is not None and is_revoked(principal):
            raise AuthError("TOKEN_REVOKED", reason="revoked")
        return principal

    return authenticate

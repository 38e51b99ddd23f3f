# -*- test-case-name: tests.test_tap -*-
"""Builds the ``/ws`` WebSocket factory of the daemon and the service that closes its sockets.

:func:`make_ws` connects the sockets to the event hub, authenticates them
with the credential parts (:mod:`streamsrv.auth.factory`), hands playback
reports to *on_playback*, and adds the service that revalidates and, on
stop, closes the sockets (after the hub in start order, so they close before
it goes).  This module must never publish an event itself.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceCollection

from streamsrv.auth.factory import AuthParts
from streamsrv.auth.principal import anonymous_principal
from streamsrv.config import Settings
from streamsrv.health.collectors import WebSocketCollector
from streamsrv.ws.limits import WsLimits
from streamsrv.ws.playback import PlaybackSink
from streamsrv.ws.protocol import EventSocketFactory
from streamsrv.ws.resource import jwt_authenticator
from streamsrv.ws.service import EventSocketService


def make_ws(
    settings: Settings,
    reactor: Any,
    parent: IServiceCollection,
    *,
    hub: Any,
    auth: AuthParts,
    metrics: Any,
    on_playback: PlaybackSink,
) -> EventSocketFactory:
    """The WebSocket factory for ``/ws``; its service joins *parent*."""
    ws = EventSocketFactory(
        hub=hub,
        authenticate=jwt_authenticator(auth.verifier, auth.revocations.is_revoked),
        clock=reactor,
        limits=WsLimits(auth_timeout_s=settings.ws_auth_timeout_s, max_frame=settings.ws_max_frame),
        on_playback=on_playback,
        anonymous=anonymous_principal(auth.roles) if settings.allow_anonymous else None,
        is_revoked=auth.revocations.is_revoked,
        metrics=metrics,
    )
    EventSocketService(ws).setServiceParent(parent)
    metrics.registry.register(WebSocketCollector(lambda: ws.stats, lambda: len(ws.sockets)))
    return ws

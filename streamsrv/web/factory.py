# -*- test-case-name: tests.test_tap -*-
"""Builds the HTTP side of the daemon from its settings: the API app, ``/stream``, ``/hls`` and the site.

Each factory maps the settings onto one adapter's constructor, so the daemon
(:mod:`streamsrv.tap`) and the tests (``tests/sitehelpers.py``) build the
same thing.  :class:`Readiness` flips the API's readiness once every service
started before it has; :func:`request_security_event` lets a part that is
not handed the request (token refresh) log a security event for the current
one.  This module must never hold domain logic: it only connects parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceCollection, Service
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import IResource

from streamsrv.audio.factory import ReplayGainOf
from streamsrv.auth.factory import AuthParts
from streamsrv.auth.roles import load_shaping
from streamsrv.config import Settings
from streamsrv.health.checks import HealthChecks
from streamsrv.health.metrics import Metrics
from streamsrv.hls.playlists import aac_ladder
from streamsrv.hls.resource import HlsResource
from streamsrv.middleware.audit import security_event
from streamsrv.middleware.cors import CorsPolicy
from streamsrv.streaming.durations import TrackDurations
from streamsrv.streaming.resource import StreamResource
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.web.api import ApiApp, current_request
from streamsrv.web.fastchannel import LlhttpChannel, channel_class
from streamsrv.web.listening import HlsListening, StreamListening
from streamsrv.web.player.resource import BrowserHome, make_player
from streamsrv.web.root import RootResource
from streamsrv.web.site import StreamsrvSite
from streamsrv.web.streamlane import LaneMetrics, StreamLane
from streamsrv.ws.resource import EventSocketResource


def request_security_event(kind: str, fields: dict[str, Any]) -> None:
    """A security event from a part that is not handed the request (token refresh)."""
    security_event(current_request.get(), kind, **fields)


class Readiness(Service):
    """Flips the API's readiness once every service before it has started."""

    name = "readiness"  # type: ignore[assignment]

    def __init__(self, api: ApiApp) -> None:
        self._api = api

    def startService(self) -> None:
        super().startService()
        self._api.ready = True

    def stopService(self) -> None:
        self._api.ready = False
        super().stopService()


def make_api(
    settings: Settings,
    *,
    metrics: Metrics,
    checks: HealthChecks,
    clock: Any,
    guard: Any,
    tokens: Any = None,
    media: Any = None,
    analytics: Any = None,
    prerequisites: Mapping[str, Callable[[], bool]] | None = None,
    alerts: Any = None,
    notifications: Any = None,
) -> ApiApp:
    """The JSON API (``/health*``, ``/metrics``, ``/api/v1/…``)."""
    return ApiApp(
        metrics=metrics,
        checks=checks,
        clock=clock,
        detailed_open=settings.env == "development",
        metrics_token=settings.metrics_token,
        guard=guard,
        tokens=tokens,
        media=media,
        analytics=analytics,
        prerequisites=prerequisites,
        alerts=alerts,
        notifications=notifications,
    )


def make_stream(
    settings: Settings,
    media_root: Path,
    *,
    guard: Any,
    tracker: Any,
    metrics: Metrics,
    clock: Any,
    **parts: Any,
) -> StreamResource:
    """``/stream``; *parts* are its optional collaborators (``transcodes``, ``on_delivered``…)."""
    return StreamResource(
        media_root,
        guard=guard,
        tracker=tracker,
        metrics=metrics,
        clock=clock,
        max_ranges=settings.max_ranges,
        use_sendfile=settings.sendfile,
        **parts,
    )


def make_hls(settings: Settings, media_root: Path, *, url_keys: Any, **parts: Any) -> HlsResource:
    """``/hls``; *parts* are its collaborators (``guard``, ``pool``, ``cache``, ``catalog``…)."""
    return HlsResource(
        media_root,
        url_keys=url_keys,
        url_max_ttl_s=settings.url_max_ttl_s,
        ladder=aac_ladder(settings.hls_ladder),
        **parts,
    )


@dataclass(frozen=True)
class HttpParts:
    """The parts the daemon's HTTP adapters are built from (see :func:`make_children`)."""

    settings: Settings
    clock: Any
    media_root: Path
    metrics: Metrics
    auth: AuthParts
    guard: Any
    tracker: Any
    checks: HealthChecks
    pool: Any
    artifacts: Any
    catalog: Any


def make_children(parts: HttpParts, *, sessions: Any, ws: Any) -> dict[bytes, IResource]:
    """``/stream`` (with transcodes, shaping, ReplayGain), ``/hls`` and ``/ws`` as the daemon serves them.

    :param sessions: the session tracker, told what each response sent.
    :param ws: the WebSocket factory.
    """
    p = parts
    transcodes = TranscodeService(
        pool=p.pool, cache=p.artifacts, tracker=p.tracker, metrics=p.metrics, clock=p.clock
    )
    stream = make_stream(
        p.settings,
        p.media_root,
        guard=p.guard,
        tracker=p.tracker,
        metrics=p.metrics,
        clock=p.clock,
        on_delivered=StreamListening(sessions),
        is_audio=p.catalog.is_audio,
        index_missing=p.catalog.index_missing,
        durations=TrackDurations(p.catalog.get),
        transcodes=transcodes,
        shaping=load_shaping(p.settings.roles_file),
        replaygain_of=ReplayGainOf(p.catalog),
    )
    hls = make_hls(
        p.settings,
        p.media_root,
        url_keys=p.auth.url_keys,
        guard=p.guard,
        pool=p.pool,
        cache=p.artifacts,
        clock=p.clock,
        catalog=p.catalog,
        metrics=p.metrics,
        on_segment=HlsListening(sessions),
    )
    return {b"stream": stream, b"hls": hls, b"ws": EventSocketResource(ws)}


def make_site(
    settings: Settings, api: ApiApp, children: Mapping[bytes, IResource], *, metrics: Metrics, clock: Any
) -> StreamsrvSite:
    """The site: the API at the root, *children* (``stream``, ``hls``, ``ws``) beside it.

    With ``STREAMSRV_DEMO_UI`` the player is served at ``/demo/`` too, and
    browsers asking for ``/`` are sent there.
    """
    leaves, home = dict(children), None
    if settings.demo_ui:
        leaves[b"demo"], home = make_player(), BrowserHome()
    site = StreamsrvSite(
        RootResource(api.app.resource(), leaves, home),
        metrics=metrics,
        clock=clock,
        hsts=settings.is_production,
        cors=CorsPolicy(settings.cors_origins),
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    site.channel = channel_class()
    stream: Any = children.get(b"stream")
    if isinstance(stream, StreamResource) and site.channel is LlhttpChannel:
        site.stream_lane = StreamLane(site, stream, stream.guard)
        site.metrics.registry.register(LaneMetrics(site.stream_lane))
    return site


def add_listeners(
    parent: IServiceCollection, site: StreamsrvSite, endpoints: Iterable[IStreamServerEndpoint]
) -> None:
    """Serve *site* on each endpoint: one service each, listening when *parent* starts.

    A port that cannot be bound fails the start (twistd exits) instead of
    being logged and retried.
    """
    for endpoint in endpoints:
        listener = StreamServerEndpointService(endpoint, site)
        listener._raiseSynchronously = True
        listener.setServiceParent(parent)

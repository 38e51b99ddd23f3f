# -*- test-case-name: tests.test_web -*-
"""The Klein application: JSON endpoints (health, metrics, OpenAPI, ``/api``).

Routes live on :class:`ApiApp`, a class with instance state (Klein's
non-global-state pattern), so tests build as many apps as they like.
Handlers are ``async def``; every error leaves as the contract's JSON body
through one error handler, including Klein's own 404 and 405.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from streamsrv import __version__
from streamsrv.audio.library import Representation
from streamsrv.auth.jwt import bearer_token
from streamsrv.auth.principal import AuthError
from streamsrv.errors import ApiError
from streamsrv.health.checks import FAILING, HealthChecks
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.audit import security_event
from streamsrv.web.alerts import AlertRoutes
from streamsrv.web.analytics import AnalyticsRoutes
from streamsrv.web.errors import render_error
from streamsrv.web.media import JSON_TYPE, MediaRoutes, body_etag, json_bytes, validated
from streamsrv.web.notifications import NotificationRoutes
from streamsrv.web.openapi import openapi_document
from streamsrv.web.routing import configure_router, error_for_http_exception, hostile_reason

if TYPE_CHECKING:
    from streamsrv.alerts.factory import Alerts
    from streamsrv.analytics.api import AnalyticsApi
    from streamsrv.audio.library import MediaLibrary
    from streamsrv.auth.refresh import TokenService
    from streamsrv.middleware.guard import Guard
    from streamsrv.notifications.service import NotificationService

#: ``/`` and ``/openapi.json`` change only with the server's version: reused briefly, then revalidated.
OPENAPI_CACHE_CONTROL = b"max-age=300"

#: The request being handled, for callbacks (security events) that are not handed it.
current_request: ContextVar[Any] = ContextVar("current_request", default=None)


def json_body(request: Any, data: object, status: int = 200) -> bytes:
    """Serialise *data* as the JSON response of *request*."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ApiApp:
    """Health, metrics, OpenAPI and (as they land) the ``/api/v1`` routes.

    :param metrics: the process metrics.
    :param checks: the health-check registry.
    :param clock: for uptime.
    :param detailed_open: ``/health/detailed`` needs no credential
        (development).
    :param metrics_token: bearer token required by ``/metrics`` (and
        accepted by ``/health/detailed`` outside development) when set.
    :param guard: admission for the authenticated routes (``None``: they
        answer ``NOT_CONFIGURED``, and ``/health/detailed`` accepts only the
        metrics token).
    :param tokens: refresh and revocation (``None``: ``/auth/*`` answer
        ``NOT_CONFIGURED``).
    :param prerequisites: parts that must be up before ``/health/ready``
        answers 200, by name (e.g. the revocation list, the catalog).
    :param media: tracks, artwork, waveforms and spectra (``None``: those
        routes answer ``NOT_CONFIGURED``).
    :param analytics: the analytics routes (``None``: ``NOT_CONFIGURED``).
    :param alerts: the alerts component (``None``: its two routes answer
        501 ``NOT_CONFIGURED``, like every optional part here).
    :param notifications: the notifications component (``None``: its routes
        answer 501 ``NOT_CONFIGURED``).
    """

    app = Klein()
    # Paths are matched as they come: no redirect to a merged-slash twin, and
    # `tail` hands a track route the whole rest (see streamsrv.web.routing).
    configure_router(app.url_map)

    def __init__(
        self,
        *,
        metrics: Metrics,
        checks: HealthChecks,
        clock: IReactorTime,
        detailed_open: bool,
        metrics_token: str | None,
        guard: Guard | None = None,
        tokens: TokenService | None = None,
        prerequisites: Mapping[str, Callable[[], bool]] | None = None,
        media: MediaLibrary | None = None,
        analytics: AnalyticsApi | None = None,
        alerts: Alerts | None = None,
        notifications: NotificationService | None = None,
    ) -> None:
        self._metrics = metrics
        self._checks = checks
        self._clock = clock
        self._started = clock.seconds()
        self._detailed_open = detailed_open
        # An empty token is no token: it must never match an empty bearer.
        self._metrics_token = metrics_token or None
        self._guard = guard
        self._tokens = tokens
        self._prerequisites = dict(prerequisites or {})
        self._media = MediaRoutes(media, clock) if media is not None else None
        self._analytics = AnalyticsRoutes(analytics, clock) if analytics is not None else None
        self._alerts = AlertRoutes(alerts) if alerts is not None else None
        self._notifications = NotificationRoutes(notifications) if notifications is not None else None
        self.ready = False

    def _bearer_ok(self, request: Any) -> bool:
        if self._metrics_token is None:
            return False
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            token.strip(), self._metrics_token.encode("utf-8")
        )

    @app.handle_errors(ApiError)
    def _api_error(self, request: Any, failure: Failure) -> bytes:
        return render_error(request, failure.value)

    @app.handle_errors(NotFound)
    def _not_found(self, request: Any, failure: Failure) -> bytes:
        reason = hostile_reason(request.path)
        if reason is not None:
            security_event(request, "path_refused", reason=reason)
        return render_error(request, ApiError("NOT_FOUND"))

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request: Any, failure: Failure) -> bytes:
        allowed = ", ".join(sorted(failure.value.valid_methods or ()))
        return render_error(request, ApiError("METHOD_NOT_ALLOWED", headers={"Allow": allowed}))

    @app.handle_errors(HTTPException)
    def _router_error(self, request: Any, failure: Failure) -> bytes:
        return render_error(request, error_for_http_exception(failure.value))

    @app.route("/", methods=["GET", "HEAD"])
    async def index(self, request: Any) -> bytes:
        """What this server is, and where its API document lives."""
        request.route = "api"
        body = json_bytes(
            {"name": "streamsrv", "version": __version__, "openapi": "/openapi.json", "health": "/health"}
        )
        return validated(request, Representation(body, JSON_TYPE, body_etag(body)), OPENAPI_CACHE_CONTROL)

    @app.route("/health", methods=["GET", "HEAD"], strict_slashes=False)
    async def health(self, request: Any) -> bytes:
        """Liveness: the process answers."""
        request.route = "health"
        request.setHeader(b"cache-control", b"no-store")
        return json_body(
            request,
            {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(self._clock.seconds() - self._started, 3),
            },
        )

    @app.route("/health/ready", methods=["GET", "HEAD"])
    async def ready_check(self, request: Any) -> bytes:
        """Readiness: 200 once started and the media root is usable."""
        request.route = "health"
        request.setHeader(b"cache-control", b"no-store")
        if not self.ready:
            return json_body(request, {"status": "starting"}, 503)
        waiting = sorted(name for name, up in self._prerequisites.items() if not up())
        if waiting:
            return json_body(request, {"status": "starting", "waiting": waiting}, 503)
        _overall, reports = await self._checks.run()
        media = reports.get("media_root", {"status": "ok"})
        if media["status"] == FAILING:
            return json_body(request, {"status": "not_ready", "failing": ["media_root"]}, 503)
        return json_body(request, {"status": "ready"})

    @app.route("/health/detailed", methods=["GET", "HEAD"])
    async def detailed(self, request: Any) -> bytes:
        """Every check with its status and timing."""
        request.route = "health"
        request.setHeader(b"cache-control", b"no-store")
        if not (self._detailed_open or self._bearer_ok(request)):
            await self._admit_admin(request)
        overall, reports = await self._checks.run()
        return json_body(
            request,
            {
                "status": overall,
                "version": __version__,
                "uptime_s": round(self._clock.seconds() - self._started, 3),
                "checks": reports,
            },
            503 if overall == FAILING else 200,
        )

    @app.route("/metrics", methods=["GET", "HEAD"])
    async def metrics(self, request: Any) -> bytes:
        """Prometheus text exposition."""
        request.route = "metrics"
        if self._metrics_token is not None and not self._bearer_ok(request):
            raise ApiError("UNAUTHENTICATED", headers={"WWW-Authenticate": "Bearer"})
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render()

    @app.route("/openapi.json", methods=["GET", "HEAD"])
    async def openapi(self, request: Any) -> bytes:
        """The OpenAPI 3.1 document of this server."""
        request.route = "openapi"
        body = json_bytes(openapi_document())
        return validated(request, Representation(body, JSON_TYPE, body_etag(body)), OPENAPI_CACHE_CONTROL)

    async def _admit_admin(self, request: Any) -> None:
        """Let in an admin's access token (``*``); anything else is 401, or 403 for a valid non-admin."""
        try:
            token = bearer_token(request.getHeader(b"authorization"))
        except AuthError:
            token = None
        if self._guard is None or token is None:
            raise ApiError("UNAUTHENTICATED", headers={"WWW-Authenticate": "Bearer"})
        try:
            await self._guard.admit(request, permission="admin")
        except ApiError as e:
            if e.status == 401:
                raise ApiError("UNAUTHENTICATED", headers={"WWW-Authenticate": "Bearer"}) from None
            raise

    def _token_service(self) -> TokenService:
        if self._tokens is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "Token refresh and revocation are not configured.")
        return self._tokens

    @app.route("/api/v1/auth/refresh", methods=["POST"])
    async def refresh(self, request: Any) -> bytes:
        """Trade a refresh token for new access and refresh tokens (rotation, reuse detection)."""
        request.route = "auth"
        request.setHeader(b"cache-control", b"no-store")
        tokens = self._token_service()
        assert self._guard is not None
        await self._guard.limit(request, None)
        current_request.set(request)
        return json_body(request, await tokens.refresh(request.content.read()))

    @app.route("/api/v1/auth/revoke", methods=["POST"])
    async def revoke(self, request: Any) -> bytes:
        """Revoke one token by ``jti``, or every token of a ``sub`` issued before now (admin)."""
        request.route = "auth"
        request.setHeader(b"cache-control", b"no-store")
        tokens = self._token_service()
        assert self._guard is not None
        admission = await self._guard.admit(request, permission=None)
        current_request.set(request)
        return json_body(request, await tokens.revoke(admission.principal, request.content.read()))

    # -- media: artwork, waveforms, spectra (signed URLs accepted: <img> and peaks.js send no header) --

    async def _media_request(self, request: Any, route: str) -> tuple[MediaRoutes, bytes]:
        request.route = route
        if self._media is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "The media library is not configured.")
        await self._guard.admit(request, permission="tracks:read", signed=True)
        prefix = f"/api/v1/{route}/".encode("ascii")
        return self._media, request.path[len(prefix) :]

    async def _analytics_request(self, request: Any) -> tuple[AnalyticsRoutes, Any]:
        request.route = "analytics"
        request.setHeader(b"cache-control", b"private, no-cache")
        if self._analytics is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "Analytics are not configured.")
        admission = await self._guard.admit(request, permission="analytics:read:own")
        return self._analytics, admission.principal

    @app.route("/api/v1/analytics/summary", methods=["GET", "HEAD"])
    async def analytics_summary(self, request: Any) -> bytes:
        """Listeners, sessions, listening time and completion rate over ``from``–``to``."""
        analytics, principal = await self._analytics_request(request)
        return json_body(request, await analytics.summary(request, principal))

    @app.route("/api/v1/analytics/top-tracks", methods=["GET", "HEAD"])
    async def analytics_top_tracks(self, request: Any) -> bytes:
        """The most listened tracks over ``from``–``to`` (``limit``)."""
        analytics, principal = await self._analytics_request(request)
        return json_body(request, await analytics.top_tracks(request, principal))

    @app.route("/api/v1/analytics/tracks/<tail:_track>", methods=["GET", "HEAD"])
    async def analytics_track(self, request: Any, _track: str) -> bytes:
        """One track's listening as a series (``granularity``)."""
        analytics, principal = await self._analytics_request(request)
        raw = request.path[len(b"/api/v1/analytics/tracks/") :]
        return json_body(request, await analytics.track(request, principal, raw))

    @app.route("/api/v1/analytics/users/<_sub>", methods=["GET", "HEAD"])
    async def analytics_user(self, request: Any, _sub: str) -> bytes:
        """One user's listening (admins, or the user)."""
        request.route = "analytics"
        if self._analytics is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "Analytics are not configured.")
        admission = await self._guard.admit(request, permission=None)
        raw = request.path[len(b"/api/v1/analytics/users/") :]
        return json_body(request, await self._analytics.user(request, admission.principal, raw))

    @app.route("/api/v1/analytics/active", methods=["GET", "HEAD"])
    async def analytics_active(self, request: Any) -> bytes:
        """Listening sessions open now."""
        analytics, principal = await self._analytics_request(request)
        return json_body(request, await analytics.active(request, principal))

    @app.route("/api/v1/analytics/qoe", methods=["GET", "HEAD"])
    async def analytics_qoe(self, request: Any) -> bytes:
        """Startup time, stalls, seeks and bitrate switches over ``from``–``to``."""
        analytics, principal = await self._analytics_request(request)
        return json_body(request, await analytics.qoe(request, principal))

    async def _catalog_request(self, request: Any) -> MediaRoutes:
        request.route = "tracks"
        if self._media is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "The media library is not configured.")
        await self._guard.admit(request, permission="tracks:read")
        return self._media

    @app.route("/api/v1/tracks", methods=["GET", "HEAD"])
    async def tracks(self, request: Any) -> bytes:
        """The catalog: ``q`` (title, artist, album), ``artist``, ``album``, ``limit``, ``cursor``."""
        media = await self._catalog_request(request)
        return await media.tracks_answer(request)

    @app.route("/api/v1/tracks/<tail:_track>", methods=["GET", "HEAD"])
    async def track(self, request: Any, _track: str) -> bytes:
        """One track's metadata."""
        media = await self._catalog_request(request)
        return await media.track_answer(request, request.path[len(b"/api/v1/tracks/") :])

    @app.route("/api/v1/waveform/<tail:_track>", methods=["GET", "HEAD"])
    async def waveform(self, request: Any, _track: str) -> bytes:
        """Peaks in the audiowaveform formats (always 200, never 206)."""
        media, raw = await self._media_request(request, "waveform")
        return media.represent(request, await media.waveform(request, raw))

    @app.route("/api/v1/spectrum/<tail:_track>", methods=["GET", "HEAD"])
    async def spectrum(self, request: Any, _track: str) -> bytes:
        """Average spectrum, band energies, centroid, roll-off; spectrogram as JSON or PNG."""
        media, raw = await self._media_request(request, "spectrum")
        return media.represent(request, await media.spectrum(request, raw))

    @app.route("/api/v1/artwork/<tail:_track>", methods=["GET", "HEAD"])
    async def artwork(self, request: Any, _track: str) -> bytes:
        """The cover: embedded in the file, or ``cover.*``/``folder.*`` beside it."""
        media, raw = await self._media_request(request, "artwork")
        return media.represent(request, await media.artwork(request, raw))

    # -- alerts: the admin's view, and Prometheus Alertmanager's webhook receiver --

    async def _alerts_request(self, request: Any, permission: str) -> AlertRoutes:
        request.route = "alerts"
        request.setHeader(b"cache-control", b"no-store")
        if self._alerts is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "Alerts are not configured.")
        await self._guard.admit(request, permission=permission)
        return self._alerts

    @app.route("/api/v1/alerts", methods=["GET", "HEAD"])
    async def alerts(self, request: Any) -> bytes:
        """Alert rules with their state; firing and recently resolved alerts (admin)."""
        alerts = await self._alerts_request(request, "admin")
        return json_body(request, alerts.status())

    @app.route("/api/v1/alerts/alertmanager", methods=["POST"])
    async def alertmanager(self, request: Any) -> bytes:
        """Alertmanager's webhook (version 4 JSON), routed like internal alerts (``alerts:ingest``)."""
        alerts = await self._alerts_request(request, "alerts:ingest")
        return json_body(request, alerts.alertmanager(request.content.read()))

    # -- notifications: sending (a backend's notifications:send), a user's preferences --

    async def _notifications_request(
        self, request: Any, permission: str | None
    ) -> tuple[NotificationRoutes, Any]:
        request.route = "notifications"
        request.setHeader(b"cache-control", b"no-store")
        if self._notifications is None or self._guard is None:
            raise ApiError("NOT_CONFIGURED", "Notifications are not configured.")
        admission = await self._guard.admit(request, permission=permission)
        return self._notifications, admission.principal

    @app.route("/api/v1/notifications", methods=["POST"])
    async def notifications_send(self, request: Any) -> bytes:
        """Send a templated notification to users; 202 once it is durable (``notifications:send``)."""
        routes, _ = await self._notifications_request(request, "notifications:send")
        answer = await routes.send(request.content.read(), self._clock.seconds())
        return json_body(request, answer, 202)

    @app.route("/api/v1/notifications/<_id>", methods=["GET", "HEAD"])
    async def notifications_get(self, request: Any, _id: str) -> bytes:
        """A notification and each delivery's state (``notifications:send``)."""
        routes, _ = await self._notifications_request(request, "notifications:send")
        return json_body(request, await routes.get(request.path[len(b"/api/v1/notifications/") :]))

    @app.route("/api/v1/users/<_sub>/notification-preferences", methods=["GET", "HEAD", "PUT"])
    async def notification_preferences(self, request: Any, _sub: str) -> bytes:
        """A user's notification preferences: read or replace (the user or an admin)."""
        routes, principal = await self._notifications_request(request, None)
        raw = request.path[len(b"/api/v1/users/") : -len(b"/notification-preferences")]
        if request.method == b"PUT":
            now = self._clock.seconds()
            return json_body(
                request, await routes.put_preferences(principal, raw, request.content.read(), now)
            )
        return json_body(request, await routes.preferences(principal, raw))

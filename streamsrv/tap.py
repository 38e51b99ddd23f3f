# -*- test-case-name: tests.test_tap -*-
"""twistd's entry: command-line ``Options`` and ``makeService``.

This is the composition root and holds wiring only: it loads the settings,
builds each part with the part's own factory, and puts them in one
:class:`~streamsrv.service.RootService` in start order.  Invalid
configuration ends the process with status 1 before any port is bound.

With ``STREAMSRV_WORKERS`` > 1, :func:`makeService` builds the supervisor of
that many worker processes instead (:mod:`streamsrv.processes`), after doing
what must happen once per host; each worker builds the daemon with
:func:`makeWorkerService` on the sockets the supervisor bound.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import Info
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from streamsrv import __version__
from streamsrv.analytics.api import AnalyticsApi
from streamsrv.analytics.sessions import SessionTracker
from streamsrv.analytics.store import AnalyticsRetention, AnalyticsStore, make_analytics_store
from streamsrv.audio.catalog import CATALOG_FILENAME, Catalog, CatalogEvent
from streamsrv.audio.demo import ensure_demo_library
from streamsrv.audio.formats import audio_format_for
from streamsrv.audio.l2 import RedisMetadataL2
from streamsrv.audio.library import MediaLibrary
from streamsrv.audio.metadata import read_metadata
from streamsrv.audio.probe import DurationCache
from streamsrv.audio.watcher import CatalogService
from streamsrv.audio.workers import WorkerPool
from streamsrv.auth.devcredentials import DevCredentials, SigningMaterial, signing_material
from streamsrv.auth.guard import Guard
from streamsrv.auth.jwks import JwksCache
from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import Principal, anonymous_principal
from streamsrv.auth.refresh import TokenService, make_revocation_store
from streamsrv.auth.revocation import RevocationCache, RevocationStoreService
from streamsrv.auth.roles import load_roles, load_shaping
from streamsrv.auth.signing import SigningKey, sign_url
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.config import ConfigError, Settings, load_settings
from streamsrv.events.hub import SYSTEM_CHANNEL, make_hub, track_channel, user_channel
from streamsrv.health.checks import (
    DEGRADED,
    FAILING,
    OK,
    CheckResult,
    HealthChecks,
    ReactorLagMonitor,
    disk_space_check,
    media_root_check,
)
from streamsrv.health.collectors import (
    AnalyticsCollector,
    CacheCollector,
    EventHubCollector,
    WebSocketCollector,
    WorkerPoolCollector,
)
from streamsrv.health.metrics import Metrics
from streamsrv.hls.playlists import aac_ladder
from streamsrv.hls.resource import HlsResource
from streamsrv.logs import make_log_observer
from streamsrv.middleware.audit import security_event
from streamsrv.middleware.cors import CorsPolicy
from streamsrv.middleware.ratelimit import MemoryRateLimiter, Policies, RedisRateLimiter
from streamsrv.processes.identity import (
    WorkerLabelledRegistry,
    WorkerRole,
    available_cpus,
    identify_worker,
    pool_size,
    worker_log_observer,
)
from streamsrv.processes.relay import EventRelay, PassthroughRelay
from streamsrv.processes.sockets import adopted_endpoint
from streamsrv.processes.supervisor import (
    STOP_MARGIN_S,
    WorkerSupervisor,
    plugin_arguments,
    worker_command,
    worker_environment,
)
from streamsrv.redisconn import RedisService
from streamsrv.service import RootService
from streamsrv.streaming.resource import StreamResource
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.web.api import ApiApp, current_request
from streamsrv.web.root import RootResource
from streamsrv.web.site import StreamsrvSite
from streamsrv.ws.protocol import EventSocketFactory, EventSocketService, WsLimits
from streamsrv.ws.resource import EventSocketResource, jwt_authenticator

log = Logger()


class Options(usage.Options):
    """``twistd streamsrv`` options; each one also has a STREAMSRV_* variable."""

    synopsis = "[--media-dir DIR] [--listen ENDPOINT ...] [--env-file FILE]"
    longdesc = (
        "Serve audio from --media-dir (a generated demo library if none is given). "
        "Every option can also be set with its STREAMSRV_* environment variable; "
        "the command line wins over the environment, which wins over the env file."
    )
    optParameters = [
        ["media-dir", "m", None, "Media library root (STREAMSRV_MEDIA_DIR)."],
        ["env-file", None, None, "Read STREAMSRV_* settings from this file (STREAMSRV_ENV_FILE)."],
        ["env", None, None, "Profile: development, staging or production (STREAMSRV_ENV)."],
        ["data-dir", None, None, "Where state lives (STREAMSRV_DATA_DIR)."],
        ["workers", None, None, "Worker processes (STREAMSRV_WORKERS)."],
        ["log-level", None, None, "debug, info, warn, error (STREAMSRV_LOG_LEVEL)."],
        ["log-format", None, None, "json or text (STREAMSRV_LOG_FORMAT)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on an endpoint string, e.g. tcp:8080 (repeatable; STREAMSRV_LISTEN)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def cli_values(self) -> dict[str, str]:
        """The options given, keyed like STREAMSRV_* variables without the prefix."""
        values: dict[str, str] = {}
        for option in ("media-dir", "env-file", "env", "data-dir", "workers", "log-level", "log-format"):
            if self[option] is not None:
                values[option.upper().replace("-", "_")] = self[option]
        if self["listen"]:
            values["LISTEN"] = " ".join(self["listen"])
        return values


class _Readiness(Service):
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


class _OnStop(Service):
    """Run a clean-up callable when the daemon stops."""

    def __init__(self, callback: Any) -> None:
        self._callback = callback

    def stopService(self) -> None:
        super().stopService()
        self._callback()


def _load(config: Options) -> Settings:
    try:
        return load_settings(config.cli_values(), env_file=config["env-file"])
    except ConfigError as e:
        print("streamsrv: invalid configuration:", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def _log_observer(config: Options, settings: Settings) -> ILogObserver | None:
    """Our observer for foreground runs; twistd's own when it daemonizes or logs to a file.

    Under ``twistd -n`` (systemd, Docker, a terminal) logs go to stdout as
    JSON or text at ``STREAMSRV_LOG_LEVEL``.  When twistd forks into the
    background or is given ``--logfile``/``--syslog``, stdout is gone or the
    operator chose a destination, so twistd's observer is kept.
    """
    parent = getattr(config, "parent", None)
    if parent is not None:
        logfile = parent.get("logfile")
        if not parent.get("nodaemon") or logfile not in (None, "", "-") or parent.get("syslog"):
            return None
    return make_log_observer(settings.log_format, settings.log_level, sys.stdout)


def _media_root(settings: Settings, announce: bool = True) -> Path:
    """The media root: the configured one, or the demo library (generated the first time).

    :param announce: log a few commands to try the demo library (once per
        host: the supervisor does, its workers do not).
    """
    if settings.media_dir is not None:
        return settings.media_dir
    demo = settings.data_dir / "demo"
    tracks = ensure_demo_library(demo)
    if not announce:
        return demo
    base = _base_url(settings)
    log.info("serving the generated demo library ({count} tracks); try:", count=len(tracks))
    for track in tracks[:3]:
        rel = track.relative_to(demo).as_posix()
        log.info("  curl -r 1000-1999 -o /dev/null -D - {base}/stream/{url}", base=base, url=quote(rel))
    return demo


@dataclass(frozen=True)
class _Auth:
    guard: Guard
    verifier: JwtVerifier
    issuer: TokenIssuer
    url_keys: tuple[SigningKey, ...]
    roles: dict[str, frozenset[str]]
    dev: DevCredentials | None
    revocations: RevocationCache
    tokens: TokenService
    redis: RedisService | None


def _roles(settings: Settings) -> dict[str, frozenset[str]]:
    """The roles file's roles (exit 1, saying why, when it is invalid)."""
    try:
        return load_roles(settings.roles_file)
    except ValueError as e:
        print(f"streamsrv: STREAMSRV_ROLES_FILE: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _issuer(settings: Settings, material: SigningMaterial, reactor: Any) -> TokenIssuer:
    """The token issuer of the configured (or generated development) signing key."""
    return TokenIssuer(
        secret=material.jwt_secret,
        private_key_pem=material.private_key_pem,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=reactor,
    )


def _auth(settings: Settings, reactor: Any, root_service: RootService, metrics: Metrics) -> _Auth:
    """Credentials (configured, or generated for development), limits and the guard."""
    roles = _roles(settings)
    material = signing_material(settings)
    jwt_secret, url_keys, dev = material.jwt_secret, material.url_keys, material.dev
    private_pem = material.private_key_pem
    issuer = _issuer(settings, material, reactor)
    public_pem = settings.jwt_public_key_file.read_bytes() if settings.jwt_public_key_file else None
    if public_pem is None and private_pem is not None:
        public_pem = issuer.public_key_pem
    jwks = None
    if settings.jwt_jwks_url is not None:
        jwks = JwksCache(
            settings.jwt_jwks_url,
            clock=reactor,
            metrics_hook=lambda event: metrics.security_events.labels(f"jwks_{event}").inc(),
        )
    verifier = JwtVerifier(
        secret=jwt_secret,
        public_key_pem=public_pem,
        jwks=jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        clock=reactor,
        roles=roles,
    )
    local = MemoryRateLimiter(reactor)
    limiter: Any = local
    redis = None
    if settings.redis_url is not None:
        redis = RedisService(settings.redis_url, reactor)
        redis.setServiceParent(root_service)
        redis_limiter = RedisRateLimiter(
            redis.connection, reactor, local, on_state_change=metrics.ratelimit_backend.state
        )
        metrics.ratelimit_backend.state("redis")
        _OnStop(redis_limiter.close).setServiceParent(root_service)
        limiter = redis_limiter
    store = make_revocation_store(settings, reactor, redis=redis.connection if redis is not None else None)
    RevocationStoreService(store).setServiceParent(root_service)
    revocations = RevocationCache(store, reactor)
    revocations.setServiceParent(root_service)
    tokens = TokenService(
        verifier=verifier,
        issuer=issuer,
        revocations=revocations,
        store=store,
        clock=reactor,
        on_security_event=_request_security_event,
    )
    guard = Guard(
        verifier=verifier,
        url_keys=url_keys,
        url_max_ttl_s=settings.url_max_ttl_s,
        revocations=revocations,
        limiter=limiter,
        policies=Policies.from_settings(settings),
        anonymous=anonymous_principal(roles) if settings.allow_anonymous else None,
        clock=reactor,
    )
    return _Auth(guard, verifier, issuer, url_keys, roles, dev, revocations, tokens, redis)


def _request_security_event(kind: str, fields: dict[str, Any]) -> None:
    """A security event from a part that is not handed the request (token refresh)."""
    security_event(current_request.get(), kind, **fields)


def _realtime(
    settings: Settings,
    reactor: Any,
    root_service: RootService,
    auth: _Auth,
    metrics: Metrics,
    checks: HealthChecks,
    retention: bool = True,
) -> tuple[AnalyticsStore, SessionTracker, Any, EventSocketFactory]:
    """Analytics (store, retention, sessions), the event hub and the WebSocket factory.

    Start order is stop order reversed: the store starts first so it stops
    last and its final flush holds the sessions the tracker closes on stop;
    the hub starts before the sockets so they close before it goes.

    :param retention: run the retention purge here (one process per host
        does: the only one, or worker 0).
    """
    try:
        store = make_analytics_store(settings.analytics_dsn, settings.data_dir, reactor)
    except ValueError as e:
        print(f"streamsrv: STREAMSRV_ANALYTICS_DSN: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    store.setServiceParent(root_service)
    if retention:
        AnalyticsRetention(store, reactor, settings.analytics_retention_days).setServiceParent(root_service)
    metrics.registry.register(AnalyticsCollector(store.counters))
    checks.register("analytics", store.check)

    redis = auth.redis
    hub = make_hub(settings.redis_url, reactor, publisher=redis.connection if redis is not None else None)
    hub.setServiceParent(root_service)
    metrics.registry.register(EventHubCollector(lambda: hub.stats, lambda: hub.connected))
    checks.register(
        "events",
        lambda: CheckResult(OK if hub.connected else DEGRADED, {"redis": settings.redis_url is not None}),
    )

    def session_event(kind: str, fields: dict[str, Any]) -> None:
        event = {"type": kind, **fields}
        hub.publish(user_channel(fields["sub"]), event)
        hub.publish(track_channel(fields["path"]), event)

    sessions = SessionTracker(store, reactor, on_event=session_event)
    sessions.setServiceParent(root_service)

    def on_playback(principal: Principal, kind: str, data: Mapping[str, Any]) -> str | None:
        outcome = sessions.on_playback_report(principal.sub, {"type": f"playback.{kind}", **data})
        if not outcome.ok:
            return outcome.message or "The report was refused."
        event = {"type": f"playback.{kind}", "sub": principal.sub, **data}
        hub.publish(user_channel(principal.sub), event)
        if isinstance(data.get("path"), str):
            hub.publish(track_channel(data["path"]), event)
        return None

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
    EventSocketService(ws).setServiceParent(root_service)
    metrics.registry.register(WebSocketCollector(lambda: ws.stats, lambda: len(ws.sockets)))
    return store, sessions, hub, ws


def _replaygain_of(catalog: Catalog) -> Any:
    """A track's ReplayGain values from the catalog, for ``replaygain=`` on transcodes."""

    async def lookup(track: str) -> Any:
        record = await catalog.get(track)
        return record.to_json().get("replaygain") if record is not None else None

    return lookup


def _hls_listening(sessions: SessionTracker) -> Any:
    """What /hls tells the session tracker after each media segment it sends."""

    def segment(request: Any, track: str, n: int, sent: int) -> None:
        user = getattr(request, "user", None) or "anonymous"
        sessions.on_stream_activity(
            user, track, bytes_sent=sent, source="hls", segment=n, ip=getattr(request, "client_ip", None)
        )

    return segment


def _catalog_events(hub: Any) -> Any:
    """Publish catalog changes: ``system`` (admins) and the track's own channel."""

    def publish(event: CatalogEvent) -> None:
        fields: dict[str, Any] = {"type": f"track.{event.kind}", "path": event.path}
        if event.record is not None:
            fields.update(event.record.to_json())
        hub.publish(SYSTEM_CHANNEL, fields)
        if event.kind != "added":
            hub.publish(track_channel(event.path), fields)

    return publish


def _threads_reactor(reactor: Any) -> Any:
    """*reactor* if it runs threads; else (a test's memory reactor) the global one."""
    if IReactorFromThreads.providedBy(reactor):
        return reactor
    from twisted.internet import reactor as global_reactor

    return global_reactor


def _listening(sessions: SessionTracker) -> Any:
    """What /stream tells the session tracker after each body it sends."""

    def delivered(
        request: Any, track: str, spans: list[tuple[int, int]], sent: int, size: int, duration: float | None
    ) -> None:
        user = getattr(request, "user", None) or "anonymous"
        agent = request.getHeader(b"user-agent")
        remaining = sent
        for start, length in spans:
            part = min(remaining, length)
            remaining -= part
            sessions.on_stream_activity(
                user,
                track,
                bytes_sent=part,
                range_start=start,
                range_end=start + length - 1,
                size=size,
                duration_s=duration,
                ip=getattr(request, "client_ip", None),
                user_agent=agent.decode("latin-1") if agent else None,
            )

    return delivered


def _announce_dev_credentials(
    dev: DevCredentials | None,
    issuer: TokenIssuer,
    url_keys: tuple[SigningKey, ...],
    settings: Settings,
    media_root: Path,
    reactor: Any,
) -> None:
    """Print a ready token and signed URL for trying a development server.

    Printed to stderr, not logged: the log redacts credentials (and may be
    shipped elsewhere) and stdout carries JSON logs, while these are meant
    to be read and copied by a person.
    """
    if dev is None:
        return
    base = _base_url(settings)
    token = issuer.issue(sub="dev-admin", roles=["admin"], ttl_s=7 * 24 * 3600)
    lines = [
        "streamsrv development credentials (generated, kept in the data dir; never used in production):",
        f"  admin token, valid 7 days:  curl -H 'Authorization: Bearer {token}' {base}/health/detailed",
    ]
    track = next((p for p in sorted(media_root.rglob("*")) if audio_format_for(p) is not None), None)
    if track is not None:
        path = "/stream/" + track.relative_to(media_root).as_posix()
        url = sign_url(base, path, keys=url_keys, expires=int(reactor.seconds()) + 24 * 3600)
        lines.append(f"  signed URL, valid 24 h:     curl -o /dev/null -D - '{url}'")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _base_url(settings: Settings) -> str:
    first = settings.listen[0] if settings.listen else "tcp:8080"
    port = next((part for part in first.split(":")[1:2] if part.isdigit()), "8080")
    scheme = "https" if first.startswith("ssl:") else "http"
    return f"{scheme}://127.0.0.1:{port}"


def makeService(config: Options, reactor: Any = None) -> RootService:
    """Build the whole daemon from *config* (and the environment).

    With ``STREAMSRV_WORKERS`` > 1 this is the supervisor of the worker
    processes (which do the serving); otherwise the daemon itself.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    settings = _load(config)
    _make_data_dir(settings)
    if settings.workers > 1:
        return _supervisor(config, settings, reactor)
    root_service = RootService(_log_observer(config, settings))
    log.info("streamsrv {version} starting ({env} profile)", version=__version__, env=settings.env)
    _daemon(root_service, settings, reactor, worker=None)
    return root_service


def makeWorkerService(argv: Sequence[str], worker: WorkerRole, reactor: Any) -> RootService:
    """Build the daemon of one worker process, listening on the sockets it inherited.

    :param argv: the worker's ``twistd streamsrv`` options (from the supervisor).
    :raise usage.UsageError: when *argv* is not valid options.

    The same service tree as :func:`makeService` builds for one process,
    except what the supervisor or worker 0 already does for the whole host
    (see docs/modules/processes.md).  Its ``log_observer`` writes lines with
    the worker's index, for the supervisor to relay.
    """
    config = Options()
    config.parseOptions(list(argv))
    settings = _load(config)
    _make_data_dir(settings)
    if len(worker.listen_fds) != len(settings.listen):
        print(
            f"streamsrv worker {worker.index}: {len(worker.listen_fds)} sockets inherited "
            f"for {len(settings.listen)} listen endpoints",
            file=sys.stderr,
        )
        raise SystemExit(1)
    observer = worker_log_observer(settings.log_format, settings.log_level, sys.stdout, worker.index)
    root_service = RootService(observer)
    log.info(
        "streamsrv {version} worker {worker} of {count} starting (pid {pid}, {env} profile)",
        version=__version__,
        worker=worker.index,
        count=worker.count,
        pid=os.getpid(),
        env=settings.env,
    )
    _daemon(root_service, settings, reactor, worker=worker)
    return root_service


def _make_data_dir(settings: Settings) -> None:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"streamsrv: STREAMSRV_DATA_DIR: cannot create it ({e.strerror})", file=sys.stderr)
        raise SystemExit(1) from None


def _supervisor(config: Options, settings: Settings, reactor: Any) -> RootService:
    """The supervisor of ``STREAMSRV_WORKERS`` worker processes, after the once-per-host work.

    What a worker would otherwise do N times, or race to do, happens here,
    before any worker starts: checking the roles file (a worker that cannot
    start would only be restarted), generating the demo library and the
    development credentials (N generated secrets would disagree), and
    printing how to try them.
    """
    observer = _log_observer(config, settings)
    root_service = RootService(observer)
    log.info(
        "streamsrv {version} starting ({env} profile) with {workers} worker processes",
        version=__version__,
        env=settings.env,
        workers=settings.workers,
    )
    _roles(settings)
    media_root = _media_root(settings)
    material = signing_material(settings)
    _announce_dev_credentials(
        material.dev, _issuer(settings, material, reactor), material.url_keys, settings, media_root, reactor
    )
    # Foreground with our observer: workers write finished lines, passed on as they are.
    # Through twistd's observer: workers write JSON, turned back into events here.
    relay: Any = PassthroughRelay(sys.stdout, sys.stderr) if observer is not None else EventRelay()
    plugin_args = plugin_arguments(
        config.cli_values(), settings.listen, log_format=None if observer is not None else "json"
    )
    WorkerSupervisor(
        reactor,
        listen=settings.listen,
        count=settings.workers,
        command=lambda role: worker_command(role, plugin_args)[0],
        environ=worker_environment(os.environ),
        stop_timeout_s=settings.shutdown_grace_s + STOP_MARGIN_S,
        relay=relay,
    ).setServiceParent(root_service)
    return root_service


def _daemon(root_service: RootService, settings: Settings, reactor: Any, worker: WorkerRole | None) -> None:
    """Fill *root_service* with every part of the daemon, in start order.

    :param worker: ``None`` for the only process; a worker's role otherwise
        (adopted sockets, per-host work only in worker 0, its index on
        responses, metrics and logs).
    """
    media_root = _media_root(settings, announce=worker is None)

    metrics = Metrics(registry=WorkerLabelledRegistry(worker.index) if worker is not None else None)
    if worker is not None:
        Info("streamsrv_worker", "This worker process", registry=metrics.registry).info(
            {"pid": str(os.getpid()), "workers": str(worker.count)}
        )
    auth = _auth(settings, reactor, root_service, metrics)
    if worker is None:
        _announce_dev_credentials(auth.dev, auth.issuer, auth.url_keys, settings, media_root, reactor)
    tracker = StreamTracker(reactor, settings.shutdown_grace_s, metrics)
    tracker.setServiceParent(root_service)
    lag = ReactorLagMonitor(reactor)
    lag.setServiceParent(root_service)

    checks = HealthChecks(reactor)
    checks.register("media_root", media_root_check(media_root))
    checks.register("disk_space", disk_space_check(settings.data_dir))
    checks.register("reactor_lag", lag.check)
    checks.register("revocations", auth.revocations.check)
    checks.register("open_streams", lambda: CheckResult(OK, {"count": tracker.open_count}))

    # Warm workers for a real reactor; a test's memory reactor starts none until asked.
    pool = WorkerPool(
        _threads_reactor(reactor),
        # N workers share the host's CPUs out between their pools.
        size=pool_size(available_cpus(), worker.count) if worker is not None else None,
        preload=("streamsrv.audio.decode", "streamsrv.transcode.encode", "streamsrv.hls.segments"),
        eager=IReactorFromThreads.providedBy(reactor),
    )
    pool.setServiceParent(root_service)
    checks.register("worker_pool", pool.check)
    metrics.registry.register(WorkerPoolCollector(pool))
    artifacts = ArtifactCache(settings.data_dir / "cache", settings.cache_max_bytes)
    caches: dict[str, Any] = {"artifacts": lambda: artifacts.stats}
    reader: Any = read_metadata
    if auth.redis is not None:
        # Hosts sharing a media volume share what they read of it.
        reader = RedisMetadataL2(auth.redis.connection, _threads_reactor(reactor), read_metadata)
        caches["metadata_l2"] = lambda: reader.stats
    catalog = Catalog(
        settings.data_dir / CATALOG_FILENAME, media_root, reactor=_threads_reactor(reactor), reader=reader
    )
    caches["metadata"] = lambda: catalog.metadata_cache_stats
    CatalogService(catalog, clock=reactor).setServiceParent(root_service)
    checks.register("catalog", catalog.check)
    media = MediaLibrary(media_root, catalog=catalog, pool=pool, cache=artifacts)
    metrics.registry.register(
        CacheCollector(
            {"metadata": lambda: catalog.metadata_cache_stats, "artifacts": lambda: artifacts.stats}
        )
    )

    host_jobs = worker is None or worker.runs_host_jobs
    analytics, sessions, hub, ws = _realtime(
        settings, reactor, root_service, auth, metrics, checks, retention=host_jobs
    )
    # Every worker's catalog sees each change; through Redis one announcement reaches every worker.
    if host_jobs or settings.redis_url is None:
        catalog.subscribe(_catalog_events(hub))

    api = ApiApp(
        metrics=metrics,
        checks=checks,
        clock=reactor,
        detailed_open=settings.env == "development",
        metrics_token=settings.metrics_token,
        guard=auth.guard,
        tokens=auth.tokens,
        media=media,
        analytics=AnalyticsApi(analytics, reactor, catalog),
        prerequisites={
            "revocations": lambda: auth.revocations.loaded,
            "analytics": lambda: analytics.check().status != FAILING,
            # Opened, and scanned fully at least once (by this or another process).
            "catalog": lambda: catalog.opened and catalog.stats().last_scan_at is not None,
        },
    )
    transcodes = TranscodeService(pool=pool, cache=artifacts, tracker=tracker, metrics=metrics, clock=reactor)
    stream = StreamResource(
        media_root,
        guard=auth.guard,
        tracker=tracker,
        metrics=metrics,
        clock=reactor,
        durations=DurationCache(),
        max_ranges=settings.max_ranges,
        use_sendfile=settings.sendfile,
        on_delivered=_listening(sessions),
        is_audio=catalog.is_audio,
        transcodes=transcodes,
        shaping=load_shaping(settings.roles_file),
        replaygain_of=_replaygain_of(catalog),
    )
    hls = HlsResource(
        media_root,
        guard=auth.guard,
        pool=pool,
        cache=artifacts,
        url_keys=auth.url_keys,
        clock=reactor,
        catalog=catalog,
        metrics=metrics,
        url_max_ttl_s=settings.url_max_ttl_s,
        on_segment=_hls_listening(sessions),
        ladder=aac_ladder(settings.hls_ladder),
    )
    children = {b"stream": stream, b"hls": hls, b"ws": EventSocketResource(ws)}
    site = StreamsrvSite(
        RootResource(api.app.resource(), children),
        metrics=metrics,
        clock=reactor,
        hsts=settings.is_production,
        cors=CorsPolicy(settings.cors_origins),
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    if worker is not None:
        identify_worker(site, worker.index)
    for n, description in enumerate(settings.listen):
        endpoint = (
            serverFromString(reactor, description)
            if worker is None
            else adopted_endpoint(reactor, description, worker.listen_fds[n])
        )
        listener = StreamServerEndpointService(endpoint, site)
        listener._raiseSynchronously = True
        listener.setServiceParent(root_service)

    _Readiness(api).setServiceParent(root_service)

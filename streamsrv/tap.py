# -*- test-case-name: tests.test_tap -*-
"""twistd's entry: command-line ``Options`` and ``makeService``.

The composition root, wiring only: it loads the settings and builds each
part with the part's own factory (``make_auth``, ``make_catalog``,
``make_site``…) into one :class:`~streamsrv.service.RootService`, in start
order.  Invalid configuration ends the process with status 1 before any
port is bound.

With ``STREAMSRV_WORKERS`` > 1, :func:`makeService` builds the supervisor of
that many worker processes instead (:mod:`streamsrv.processes`), after doing
what must happen once per host; each worker process
(:mod:`streamsrv.processes.worker`) builds the daemon with
:func:`makeWorkerService` on the sockets the supervisor bound.  This module
must never hold a part's logic nor import the global reactor but as
twistd's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from streamsrv import __version__
from streamsrv.alerts.factory import add_alerts
from streamsrv.analytics.api import AnalyticsApi
from streamsrv.analytics.backends import make_analytics_store
from streamsrv.analytics.factory import add_analytics_store, make_sessions
from streamsrv.analytics.publishing import PlaybackReports
from streamsrv.audio.factory import CatalogAnnouncements, make_catalog, make_pool
from streamsrv.audio.library import MediaLibrary
from streamsrv.auth.factory import make_auth
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.config import Settings
from streamsrv.events.factory import make_event_hub
from streamsrv.health.factory import make_health, readiness_prerequisites
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.factory import make_guard, make_limiter
from streamsrv.notifications.factory import add_notifications
from streamsrv.processes.identity import (
    WorkerRole,
    available_cpus,
    identify_worker,
    pool_size,
    worker_log_observer,
    worker_metrics,
)
from streamsrv.processes.sockets import adopted_endpoints
from streamsrv.processes.supervisor import make_supervisor
from streamsrv.redisconn import RedisService
from streamsrv.service import RootService
from streamsrv.startup import (
    announce_dev_credentials,
    load_or_exit,
    log_observer,
    logs_to_stdout,
    make_data_dir,
    media_root,
    or_exit,
    prepare_host_or_exit,
    roles_or_exit,
    stop_once_on_signals,
)
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.threads import threads_for
from streamsrv.web.factory import (
    HttpParts,
    Readiness,
    add_listeners,
    make_api,
    make_children,
    make_site,
    request_security_event,
)
from streamsrv.ws.factory import make_ws

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


def makeService(config: Options, reactor: Any = None) -> RootService:
    """Build the whole daemon from *config* (and the environment).

    With ``STREAMSRV_WORKERS`` > 1 this is the supervisor of the worker
    processes (which do the serving); otherwise the daemon itself.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    settings = load_or_exit(config.cli_values(), config["env-file"])
    prepare_host_or_exit(settings)
    reactor.callWhenRunning(stop_once_on_signals, reactor)
    if settings.workers > 1:
        return _supervisor(config, settings, reactor)
    services = RootService(log_observer(getattr(config, "parent", None), settings, reactor))
    log.info("streamsrv {version} starting ({env} profile)", version=__version__, env=settings.env)
    _daemon(services, settings, reactor, worker=None)
    return services


def makeWorkerService(argv: Sequence[str], worker: WorkerRole, reactor: Any) -> RootService:
    """Build the daemon of one worker process, listening on the sockets it inherited.

    The same service tree as :func:`makeService` builds for one process,
    except what the supervisor or worker 0 already does for the whole host
    (see docs/modules/processes.md).  Its ``log_observer`` writes lines with
    the worker's index, for the supervisor to relay.

    :param argv: the worker's ``twistd streamsrv`` options (from the supervisor).
    :raise usage.UsageError: when *argv* is not valid options.
    """
    config = Options()
    config.parseOptions(list(argv))
    settings = load_or_exit(config.cli_values(), config["env-file"])
    make_data_dir(settings)
    if len(worker.listen_fds) != len(settings.listen):
        print(
            f"streamsrv worker {worker.index}: {len(worker.listen_fds)} sockets inherited "
            f"for {len(settings.listen)} listen endpoints",
            file=sys.stderr,
        )
        raise SystemExit(1)
    observer = worker_log_observer(settings.log_format, settings.log_level, sys.stdout, worker.index)
    services = RootService(observer)
    log.info(
        "streamsrv {version} worker {worker} of {count} starting (pid {pid}, {env} profile)",
        version=__version__,
        worker=worker.index,
        count=worker.count,
        pid=os.getpid(),
        env=settings.env,
    )
    _daemon(services, settings, reactor, worker=worker)
    return services


def _supervisor(config: Options, settings: Settings, reactor: Any) -> RootService:
    """The supervisor of ``STREAMSRV_WORKERS`` worker processes, after the once-per-host work.

    What a worker would otherwise do N times, or race to do, happens here,
    before any worker starts: checking the roles file (a worker that cannot
    start would only be restarted), generating the demo library and the
    development credentials (N generated secrets would disagree), and
    printing how to try them.
    """
    parent = getattr(config, "parent", None)
    services = RootService(log_observer(parent, settings, reactor))
    log.info(
        "streamsrv {version} starting ({env} profile) with {workers} worker processes",
        version=__version__,
        env=settings.env,
        workers=settings.workers,
    )
    roles_or_exit(settings)
    announce_dev_credentials(settings, media_root(settings), reactor)
    supervisor = make_supervisor(settings, config.cli_values(), reactor, foreground=logs_to_stdout(parent))
    supervisor.setServiceParent(services)
    return services


def _daemon(services: RootService, settings: Settings, reactor: Any, worker: WorkerRole | None) -> None:
    """Fill *services* with every part of the daemon, in start order.

    :param worker: ``None`` for the only process; a worker's role otherwise
        (adopted sockets, per-host work only in worker 0, its index on
        responses, metrics and logs).
    """
    root = media_root(settings, announce=worker is None)
    metrics = Metrics() if worker is None else worker_metrics(worker)
    redis = None
    if settings.redis_url is not None:
        (service := RedisService(settings.redis_url, reactor)).setServiceParent(services)
        redis = service.connection
    limiter = make_limiter(reactor, services, redis=redis, metrics=metrics)
    on_event = request_security_event
    auth = make_auth(settings, reactor, services, roles_or_exit(settings), metrics, redis, on_event)
    if worker is None:
        announce_dev_credentials(settings, root, reactor)
    tracker = StreamTracker(reactor, settings.shutdown_grace_s, metrics)
    tracker.setServiceParent(services)
    health = make_health(reactor, services, root, settings.data_dir, tracker, auth.revocations.check)
    # N workers share the host's CPUs out between their pools.
    size = pool_size(available_cpus(), worker.count) if worker is not None else None
    pool = make_pool(reactor, services, size=size, checks=health.checks, metrics=metrics)
    artifacts = ArtifactCache(
        settings.data_dir / "cache", settings.cache_max_bytes, threads=threads_for(reactor)
    )
    catalog = make_catalog(settings, root, reactor, services, redis, health.checks, metrics, artifacts)
    guard = make_guard(settings, reactor, auth, limiter, health.checks)
    checks = health.checks
    parts = HttpParts(
        settings, reactor, root, metrics, auth, guard, tracker, checks, pool, artifacts, catalog
    )
    _serve(services, parts, worker, redis, health.lag)


def _realtime(services: RootService, parts: HttpParts, redis: Any, host_jobs: bool) -> tuple[Any, ...]:
    """Analytics (store, retention, sessions), the event hub and the WebSocket factory, in start order.

    The store starts first so it stops last and its final flush holds the
    sessions the tracker closes on stop; the hub starts before the sockets so
    they close before it goes.
    """
    settings, reactor, checks, metrics = parts.settings, parts.clock, parts.checks, parts.metrics
    dsn = settings.analytics_dsn
    store = or_exit("STREAMSRV_ANALYTICS_DSN", make_analytics_store, dsn, settings.data_dir, reactor)
    days = settings.analytics_retention_days
    add_analytics_store(store, reactor, services, days, retention=host_jobs, checks=checks, metrics=metrics)
    hub = make_event_hub(settings, reactor, services, redis=redis, checks=checks, metrics=metrics)
    sessions = make_sessions(store, reactor, services, hub=hub)
    on_playback = PlaybackReports(sessions, hub)
    ws = make_ws(
        settings, reactor, services, hub=hub, auth=parts.auth, metrics=metrics, on_playback=on_playback
    )
    return store, sessions, hub, ws


def _serve(services: RootService, parts: HttpParts, worker: WorkerRole | None, redis: Any, lag: Any) -> None:
    """The real-time parts, alerts, the site on every listener, and readiness last."""
    settings, reactor, catalog = parts.settings, parts.clock, parts.catalog
    host_jobs = worker is None or worker.runs_host_jobs
    store, sessions, hub, ws = _realtime(services, parts, redis, host_jobs)
    # Every worker's catalog sees each change; through Redis one announcement reaches every worker.
    if host_jobs or settings.redis_url is None:
        catalog.subscribe(CatalogAnnouncements(hub))
    measured = (parts.metrics, hub, redis, lag)
    notify = or_exit(
        "STREAMSRV_NOTIFY_TEMPLATES_DIR", add_notifications, settings, reactor, services, hub, parts.metrics
    )
    alerts = or_exit(
        "STREAMSRV_ALERT_RULES_FILE", add_alerts, settings, reactor, services, *measured, notify=notify.notify
    )
    api = make_api(
        settings,
        metrics=parts.metrics,
        checks=parts.checks,
        clock=reactor,
        guard=parts.guard,
        tokens=parts.auth.tokens,
        media=MediaLibrary(parts.media_root, catalog=catalog, pool=parts.pool, cache=parts.artifacts),
        analytics=AnalyticsApi(store, reactor, catalog),
        prerequisites=readiness_prerequisites(parts.auth.revocations, store, catalog),
        alerts=alerts,
        notifications=notify,
    )
    children = make_children(parts, sessions=sessions, ws=ws)
    site = make_site(settings, api, children, metrics=parts.metrics, clock=reactor)
    if worker is None:
        add_listeners(services, site, [serverFromString(reactor, d) for d in settings.listen])
    else:
        identify_worker(site, worker.index)
        add_listeners(services, site, adopted_endpoints(reactor, settings.listen, worker.listen_fds))
    Readiness(api).setServiceParent(services)

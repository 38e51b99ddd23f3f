# -*- test-case-name: tests.test_tap -*-
"""Builds the event hub of the daemon: in-process, or over Redis pub/sub when Redis is configured.

:func:`make_event_hub` adds the hub to the service tree (before the parts
that publish or subscribe, so it stops after them) with its metrics and its
``events`` check.  This module must never publish an event itself.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceCollection

from streamsrv.config import Settings
from streamsrv.events.hub import make_hub
from streamsrv.health.checks import DEGRADED, OK, CheckResult, HealthChecks
from streamsrv.health.collectors import EventHubCollector


class HubCheck:
    """``events``: ok while events reach the other processes (always, in process), else degraded."""

    def __init__(self, hub: Any, shared: bool) -> None:
        self._hub = hub
        self._shared = shared

    def __call__(self) -> CheckResult:
        return CheckResult(OK if self._hub.connected else DEGRADED, {"redis": self._shared})


def make_event_hub(
    settings: Settings,
    reactor: Any,
    parent: IServiceCollection,
    *,
    redis: Any,
    checks: HealthChecks,
    metrics: Any,
) -> Any:
    """The hub (a service of *parent*) for ``STREAMSRV_REDIS_URL``, publishing on *redis* (a connection)."""
    hub = make_hub(settings.redis_url, reactor, publisher=redis)
    hub.setServiceParent(parent)
    metrics.registry.register(EventHubCollector(lambda: hub.stats, lambda: hub.connected))
    checks.register("events", HubCheck(hub, settings.redis_url is not None))
    return hub

# -*- test-case-name: tests.test_tap -*-
"""Builds the analytics parts of the daemon: the store's services and the session tracker.

Start order is stop order reversed, so the composition root adds the store
(:func:`add_analytics_store`) before the event hub and the session tracker
(:func:`make_sessions`) after it: the store stops last and its final flush
holds the sessions the tracker closes on stop.  This module must never read
a request, and never purge retention in more than one process per host (the
caller says which).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceCollection

from streamsrv.analytics.publishing import SessionEvents
from streamsrv.analytics.retention import AnalyticsRetention
from streamsrv.analytics.sessions import SessionTracker
from streamsrv.analytics.store import AnalyticsStore
from streamsrv.health.checks import HealthChecks
from streamsrv.health.collectors import AnalyticsCollector


def add_analytics_store(
    store: AnalyticsStore,
    reactor: Any,
    parent: IServiceCollection,
    retention_days: float,
    *,
    retention: bool,
    checks: HealthChecks,
    metrics: Any,
) -> None:
    """Add *store* (and, if *retention*, its retention purge) to *parent*, with its check and metrics.

    :param retention: run the retention purge here (one process per host
        does: the only one, or worker 0).
    """
    store.setServiceParent(parent)
    if retention:
        AnalyticsRetention(store, reactor, retention_days).setServiceParent(parent)
    metrics.registry.register(AnalyticsCollector(store.counters))
    checks.register("analytics", store.check)


def make_sessions(
    store: AnalyticsStore, reactor: Any, parent: IServiceCollection, *, hub: Any
) -> SessionTracker:
    """The session tracker (a service of *parent*), publishing its events on *hub*."""
    sessions = SessionTracker(store, reactor, on_event=SessionEvents(hub))
    sessions.setServiceParent(parent)
    return sessions

# -*- test-case-name: tests.test_health -*-
"""Builds the daemon's health checks: the reactor-lag monitor and the checks every process has.

:func:`make_health` adds the lag monitor to the service tree and registers,
in the order ``/health/detailed`` lists them, the media root, disk space,
reactor lag, (with credentials) revocations and open streams checks; the
parts built later register their own.  :func:`readiness_prerequisites` says
what ``/health/ready`` waits for.  This module must never run a check
itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceCollection

from streamsrv.health.checks import (
    FAILING,
    OK,
    CheckFunction,
    CheckResult,
    HealthChecks,
    ReactorLagMonitor,
    disk_space_check,
    media_root_check,
)


@dataclass(frozen=True)
class Health:
    """The checks (for the API and later parts to register in) and the lag monitor."""

    checks: HealthChecks
    lag: ReactorLagMonitor


class OpenStreamsCheck:
    """``open_streams``: how many streams the tracker has open (always ok)."""

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def __call__(self) -> CheckResult:
        return CheckResult(OK, {"count": self._tracker.open_count})


def make_health(
    reactor: Any,
    parent: IServiceCollection,
    media_root: Path,
    data_dir: Path,
    tracker: Any,
    revocations: CheckFunction | None = None,
) -> Health:
    """The lag monitor (a service of *parent*) and the checks every process registers first.

    :param tracker: the stream tracker (``open_count``).
    :param revocations: the revocation cache's check, when there is one.
    """
    lag = ReactorLagMonitor(reactor)
    lag.setServiceParent(parent)
    checks = HealthChecks(reactor)
    checks.register("media_root", media_root_check(media_root))
    checks.register("disk_space", disk_space_check(data_dir))
    checks.register("reactor_lag", lag.check)
    if revocations is not None:
        checks.register("revocations", revocations)
    checks.register("open_streams", OpenStreamsCheck(tracker))
    return Health(checks, lag)


def readiness_prerequisites(revocations: Any, analytics: Any, catalog: Any) -> dict[str, Callable[[], bool]]:
    """What ``/health/ready`` waits for besides the services having started.

    The revocations loaded, the analytics store not failing, and the catalog
    open: it knows every track the last run catalogued, and reads one that its
    first scan has not reached yet on demand (``Catalog.index_missing``), so
    readiness does not wait for that scan (its progress is in
    ``/health/detailed``).
    """
    return {
        "revocations": lambda: revocations.loaded,
        "analytics": lambda: analytics.check().status != FAILING,
        "catalog": lambda: catalog.opened,
    }

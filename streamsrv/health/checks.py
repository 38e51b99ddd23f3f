# -*- test-case-name: tests.test_health -*-
"""The registry of health checks behind ``/health/ready`` and ``/health/detailed``.

Parts of the daemon register named checks (media root, disk space, reactor
lag, open streams; later catalog, database, Redis, worker pool).  A check is
a callable returning a :class:`CheckResult` or a Deferred/coroutine of one;
it is run with a timeout, timed, and a check that raises is reported as
failing rather than breaking the endpoint.  Results never contain file-system
paths: a check describes a state ("not readable"), not where it is.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.service import PeriodicService

log = Logger()

OK: Final = "ok"
DEGRADED: Final = "degraded"
FAILING: Final = "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}

#: How long one check may take before it counts as failing.
CHECK_TIMEOUT_S = 2.0

#: How far back the reactor-lag monitor remembers late ticks.
LAG_WINDOW_S = 60.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: a status and a small JSON-able detail."""

    status: str
    detail: dict[str, object] = field(default_factory=dict)


CheckFunction = Callable[[], "CheckResult | Awaitable[CheckResult]"]


class HealthChecks:
    """Named checks, run together with timing and a timeout each."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._checks: dict[str, CheckFunction] = {}

    def register(self, name: str, check: CheckFunction) -> None:
        """Add (or replace) the check called *name*."""
        self._checks[name] = check

    @property
    def names(self) -> list[str]:
        """The registered check names, in registration order."""
        return list(self._checks)

    async def _run_one(self, check: CheckFunction) -> CheckResult:
        result: object = check()
        if inspect.isawaitable(result):
            d: Deferred[CheckResult] = ensureDeferred(_await(result))
            d.addTimeout(CHECK_TIMEOUT_S, self._clock)
            result = await d
        if not isinstance(result, CheckResult):
            raise TypeError(f"health check returned {type(result).__name__}, not CheckResult")
        return result

    async def _report(self, name: str, check: CheckFunction) -> dict[str, object]:
        started = self._clock.seconds()
        try:
            result = await self._run_one(check)
        except Exception as e:
            log.failure("health check {name} raised", name=name)
            result = CheckResult(FAILING, {"error": type(e).__name__})
        elapsed_ms = round((self._clock.seconds() - started) * 1000, 3)
        # A status outside ok/degraded/failing is a bug in the check: failing.
        status = result.status if result.status in _RANK else FAILING
        report: dict[str, object] = {"status": status, "duration_ms": elapsed_ms}
        report.update((k, v) for k, v in result.detail.items() if k not in report)
        return report

    async def run(self) -> tuple[str, dict[str, dict[str, object]]]:
        """Run every check concurrently; return the overall status and each one's report."""
        names = list(self._checks)
        results = await gatherResults(
            [ensureDeferred(self._report(name, self._checks[name])) for name in names]
        )
        reports = dict(zip(names, results, strict=True))
        overall = max((str(r["status"]) for r in reports.values()), key=_RANK.__getitem__, default=OK)
        return overall, reports


async def _await(awaitable: Awaitable[CheckResult]) -> CheckResult:
    return await awaitable


def media_root_check(root: Path) -> CheckFunction:
    """The media root exists, is a directory and can be listed."""

    def check() -> CheckResult:
        if not root.is_dir():
            return CheckResult(FAILING, {"reason": "media root is not a directory"})
        if not os.access(root, os.R_OK | os.X_OK):
            return CheckResult(FAILING, {"reason": "media root is not readable"})
        return CheckResult(OK)

    return check


def disk_space_check(path: Path, degraded_below: float = 0.05, failing_below: float = 0.01) -> CheckFunction:
    """Free space where the data dir lives, as a fraction of the disk."""

    def check() -> CheckResult:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return CheckResult(FAILING, {"reason": "data dir not accessible"})
        free = usage.free / usage.total if usage.total else 0.0
        detail: dict[str, object] = {"free_bytes": usage.free, "free_ratio": round(free, 4)}
        if free < failing_below:
            return CheckResult(FAILING, detail)
        if free < degraded_below:
            return CheckResult(DEGRADED, detail)
        return CheckResult(OK, detail)

    return check


class ReactorLagMonitor(PeriodicService):
    """Measure how late the reactor runs a timer: the event loop's health.

    Every ``interval`` seconds (a :class:`~streamsrv.service.PeriodicService`,
    first tick one interval after start) it notes how much later than
    scheduled it ran; the worst of the last :data:`LAG_WINDOW_S` seconds is
    the reported lag.
    """

    def __init__(
        self, clock: IReactorTime, interval: float = 1.0, degraded_s: float = 0.1, failing_s: float = 1.0
    ) -> None:
        super().__init__(interval, self._tick, clock=clock, now=False, name="reactor-lag")
        self._clock = clock
        self._interval = interval
        self._degraded_s = degraded_s
        self._failing_s = failing_s
        self._started_at = 0.0
        self._expected: float | None = None
        #: ``(when, lag)`` of the ticks of the last window, oldest first.
        self._recent: deque[tuple[float, float]] = deque()

    def startService(self) -> None:
        self._started_at = self._clock.seconds()
        self._expected = self._started_at + self._interval
        super().startService()

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._expected is not None:
            self._recent.append((now, max(0.0, now - self._expected)))
        while self._recent and self._recent[0][0] <= now - LAG_WINDOW_S:
            self._recent.popleft()
        # The timer (a LoopingCall) skips the intervals it missed and runs next at the
        # first point of its grid (start + k * interval) after now.
        elapsed = now - self._started_at
        self._expected = self._started_at + (math.floor(elapsed / self._interval) + 1) * self._interval

    @property
    def lag_s(self) -> float:
        """The worst lag of the last window, in seconds.

        A tick that is overdue right now counts too: a stalled loop shows
        before its timer finally runs.
        """
        now = self._clock.seconds()
        overdue = now - self._expected if self.running and self._expected is not None else 0.0
        recent = (lag for when, lag in self._recent if when > now - LAG_WINDOW_S)
        return max(overdue, *recent, 0.0)

    def check(self) -> CheckResult:
        """The health check for this monitor."""
        lag = self.lag_s
        detail: dict[str, object] = {"lag_ms": round(lag * 1000, 3)}
        if lag >= self._failing_s:
            return CheckResult(FAILING, detail)
        if lag >= self._degraded_s:
            return CheckResult(DEGRADED, detail)
        return CheckResult(OK, detail)

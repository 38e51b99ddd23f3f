# -*- test-case-name: tests.test_workers_processes -*-
"""How a worker process names itself: its role, its response header, its metric label, its log field.

:class:`WorkerRole` is who a worker is (its index among the supervisor's N,
its inherited sockets).  The worker's daemon marks everything it produces
with the index: :func:`identify_worker` puts ``X-Streamsrv-Worker`` on every
response, :class:`WorkerLabelledRegistry` a ``worker`` label on every metric,
:func:`worker_log_observer` a ``worker`` field in every log event.
:func:`pool_size` shares the host's CPUs out between the workers' decode
pools.  This module must never start, stop or signal a process, nor import
:mod:`streamsrv.tap`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from copy import copy
from dataclasses import dataclass
from typing import IO, Any, Final

from prometheus_client import CollectorRegistry, Info
from prometheus_client.metrics_core import Metric
from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer

from streamsrv.health.metrics import Metrics
from streamsrv.logs import LEVELS, LevelFilteringObserver, make_log_observer
from streamsrv.web.site import StreamsrvSite

#: The response header naming the worker that answered (its index, 0 to N-1).
WORKER_HEADER: Final = b"x-streamsrv-worker"


@dataclass(frozen=True)
class WorkerRole:
    """Who a worker process is.

    :ivar index: 0 to ``count - 1``; stable across restarts of the same slot.
    :ivar count: how many workers the supervisor runs.
    :ivar listen_fds: the inherited listening sockets, in ``STREAMSRV_LISTEN`` order.
    """

    index: int
    count: int
    listen_fds: tuple[int, ...] = ()

    @property
    def runs_host_jobs(self) -> bool:
        """Whether this worker also does what must happen once per host (worker 0)."""
        return self.index == 0


def pool_size(available_cpus: int, workers: int) -> int:
    """Decode/encode pool processes per worker: the host's CPUs shared out, at least one.

    :param available_cpus: CPUs this process may run on.
    :param workers: ``STREAMSRV_WORKERS``.
    """
    return max(1, available_cpus // max(1, workers))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def identify_worker(site: StreamsrvSite, index: int) -> None:
    """Make every response of *site* carry ``X-Streamsrv-Worker: <index>``.

    Except the WebSocket handshake, which Autobahn writes itself.
    """
    site.first_headers.append((WORKER_HEADER, str(index).encode("ascii")))


class WorkerLabelledRegistry(CollectorRegistry):
    """A Prometheus registry whose every sample carries ``worker="<index>"``.

    A scrape through the shared port reaches one worker, whichever accepts
    the connection; with the label, each worker's series stay apart (its
    counters are never mistaken for another's reset) and
    ``sum by (…) (rate(…))`` adds the workers up.
    """

    def __init__(self, index: int) -> None:
        super().__init__(auto_describe=True)
        self._worker = str(index)

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            labelled = copy(metric)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "worker": self._worker}) for sample in metric.samples
            ]
            yield labelled


@implementer(ILogObserver)
class _WorkerFields:
    """Adds ``worker`` to every event, and names the worker in text lines' ``[system]``."""

    def __init__(self, observer: ILogObserver, index: int) -> None:
        self._observer = observer
        self._index = index

    def __call__(self, event: dict[str, Any]) -> None:
        labelled = dict(event)
        labelled["worker"] = self._index
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            name = level.name if isinstance(level, type(LogLevel.info)) else "-"
            system = f"{event.get('log_namespace', '-')}#{name}"
        labelled["log_system"] = f"{system} worker={self._index}"
        self._observer(labelled)


def worker_log_observer(fmt: str, level: str, out: IO[str], index: int) -> ILogObserver:
    """A worker's observer: streamsrv's JSON or text lines, with the worker's index in each.

    Events below *level* are dropped before anything is copied, and
    ``streamsrv.logs.will_observe`` still sees the level.
    """
    inner = make_log_observer(fmt, "debug", out)
    return LevelFilteringObserver(_WorkerFields(inner, index), LEVELS.get(level, LogLevel.info))


def worker_metrics(role: WorkerRole) -> Metrics:
    """A worker's metrics: every sample labelled with its index, and ``streamsrv_worker_info``."""
    metrics = Metrics(registry=WorkerLabelledRegistry(role.index))
    Info("streamsrv_worker", "This worker process", registry=metrics.registry).info(
        {"pid": str(os.getpid()), "workers": str(role.count)}
    )
    return metrics

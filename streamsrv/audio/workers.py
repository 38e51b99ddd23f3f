# -*- test-case-name: tests.test_workers -*-
"""A bounded pool of worker processes for CPU-heavy work (decode, encode, FFT).

:class:`WorkerPool` is a Twisted service around a
:class:`concurrent.futures.ProcessPoolExecutor` started with the ``spawn``
method (a fork of a running reactor, its threads and its sockets is never
safe).  The reactor thread only hands work over and gets results back:
at most ``size`` jobs are in the executor at a time, at most ``max_queue``
more wait in the pool's own queue, and a job beyond that is refused at once
with :class:`PoolFull` (503 with ``Retry-After``) rather than piling up.
Jobs with the same key run once for every caller; a queued job nobody waits
for any more never runs; a worker that dies fails the jobs it took down and
the pool starts fresh processes for the next ones.

This module must never run a job on the reactor thread, nor block it: the
executor is shut down from a thread of its own.  Every method but the
worker-side initializer is called on the reactor thread only.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError as FutureCancelledError
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing.process import BaseProcess
from typing import Any, Final, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamsrv.health.checks import DEGRADED, FAILING, OK, CheckResult

log = Logger()

T = TypeVar("T")

#: The multiprocessing start method: a fresh interpreter per worker.
START_METHOD: Final = "spawn"

#: Modules each worker imports as it starts, so the first job does not pay
#: for importing PyAV and numpy.
DEFAULT_PRELOAD: Final[tuple[str, ...]] = ("streamsrv.audio.decode",)

#: Queue fill ratio above which the pool reports itself degraded.
DEGRADED_QUEUE_RATIO: Final = 0.75

#: Worker crashes in a row, with no job finishing between them, after which
#: the pool reports itself failing (a crash loop, not a bad file).
CRASH_LOOP_THRESHOLD: Final = 3

#: Bounds of the ``Retry-After`` suggested with :class:`PoolFull`, in seconds.
MIN_RETRY_AFTER_S: Final = 1
MAX_RETRY_AFTER_S: Final = 60

#: ``Retry-After`` suggested while the pool is stopped or stopping.
STOPPED_RETRY_AFTER_S: Final = 5

#: Weight of the newest job in the moving average of job durations.
_DURATION_SMOOTHING: Final = 0.2

#: Job duration assumed before any job has finished, in seconds.
_INITIAL_JOB_S: Final = 1.0

#: How long :meth:`WorkerPool.stopService` waits for running jobs before it
#: kills their processes, in seconds.
DEFAULT_STOP_TIMEOUT_S: Final = 30.0

#: How often a worker checks that the daemon that started it is still alive.
_ORPHAN_POLL_S: Final = 1.0


class PoolFull(Exception):
    """The pool's queue is full: try again later.

    :param retry_after_s: whole seconds after which a retry may succeed, for
        the ``Retry-After`` header.
    :param message: what to log.
    """

    def __init__(self, retry_after_s: int, message: str = "worker pool queue is full") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.message = message

    def __reduce__(self) -> tuple[type[PoolFull], tuple[int, str]]:
        """Pickle with both arguments."""
        return (type(self), (self.retry_after_s, self.message))


class PoolStopped(PoolFull):
    """The pool is not running (not started yet, or shutting down).

    A :class:`PoolFull`, so that callers answer it the same way: 503, retry
    later (on another node, when this one is going away).
    """

    def __init__(
        self, retry_after_s: int = STOPPED_RETRY_AFTER_S, message: str = "worker pool is not running"
    ) -> None:
        super().__init__(retry_after_s, message)


class WorkerCrashed(BrokenProcessPool):
    """The worker process running a job died (killed, out of memory, a crash in native code)."""


class _Job:
    """One execution and the callers waiting for it.

    :param fn: the module-level function to run.
    :param args: its arguments.
    :param key: the coalescing key, or ``None``.
    """

    __slots__ = ("args", "executor", "fn", "future", "key", "started", "waiters")

    def __init__(self, fn: Callable[..., Any], args: tuple[object, ...], key: str | None) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.waiters: list[Deferred[Any]] = []
        self.future: Future[Any] | None = None
        self.executor: ProcessPoolExecutor | None = None
        self.started = 0.0


class WorkerPool(Service):
    """A bounded pool of worker processes.

    ``size`` jobs run at once, one per process; up to ``max_queue`` more wait
    (first in, first out); a job beyond that gets :class:`PoolFull`.

    Coalescing: a job submitted with the ``key`` of a job that is queued or
    running joins it, and every caller gets the same result object (treat it
    as read-only).  Equal keys must mean equal work; the pool does not
    compare functions or arguments.

    Cancelling: cancelling the Deferred of :meth:`submit` detaches that caller
    (its Deferred fails with :class:`~twisted.internet.defer.CancelledError`).
    A queued job whose every caller has cancelled is dropped and never runs.
    A job already running cannot be interrupted: it finishes, its result goes
    to whoever joined it since under the same key, or nowhere.  A job that
    must keep its work when abandoned (a transcode filling the cache) writes
    its artifact itself, in the worker.

    Crashes: if a worker process dies, CPython's executor fails every job
    running in it at that moment with :class:`BrokenProcessPool` (it cannot
    tell which process held which job); the pool fails those jobs with
    :class:`WorkerCrashed` (a :class:`BrokenProcessPool`), starts a new
    executor, and runs the queued jobs there.  Crashed jobs are not retried:
    the job that killed one worker would kill the next.

    Exceptions raised by a job reach its callers as the same type, provided
    they pickle and unpickle (define ``__reduce__`` when ``__init__`` takes
    other arguments than ``args``; an exception that fails to unpickle breaks
    the executor).  Results must pickle too: return summaries, not PCM.

    :param reactor: provides ``IReactorFromThreads`` and ``IReactorTime``.
    :param size: worker processes; default the CPUs this process may run on.
    :param max_queue: jobs that may wait beyond the running ones.
    :param preload: modules every worker imports when it starts.
    :param stop_timeout_s: how long stopping waits for running jobs before it
        kills their processes.
    :param eager: start the worker processes with the service (warm for the
        first job); ``False`` starts them with the first job.
    """

    name = "workers"  # type: ignore[assignment]  # Twisted declares Service.name as None

    def __init__(
        self,
        reactor: Any,
        size: int | None = None,
        max_queue: int = 64,
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        eager: bool = True,
    ) -> None:
        if size is None:
            size = _available_cpus()
        if size < 1:
            raise ValueError("size must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must be at least 0")
        self._service_running = False
        self._eager = eager
        self._reactor = reactor
        self._size = size
        self._max_queue = max_queue
        self._preload = tuple(preload)
        self._stop_timeout_s = stop_timeout_s
        self._context = multiprocessing.get_context(START_METHOD)
        self._executor: ProcessPoolExecutor | None = None
        self._queue: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._by_key: dict[str, _Job] = {}
        self._average_job_s = _INITIAL_JOB_S
        self._consecutive_crashes = 0
        self._start_error: str | None = None
        #: Executions that ran to the end in a worker (returned or raised).
        self.completed = 0
        #: Submissions that joined an identical queued or running job.
        self.coalesced = 0
        #: Times a worker process died and took its executor down.
        self.crashes = 0

    # -- counters --------------------------------------------------------

    @property
    def size(self) -> int:
        """Worker processes (jobs that run at once)."""
        return self._size

    @property
    def max_queue(self) -> int:
        """Jobs that may wait beyond the running ones."""
        return self._max_queue

    @property
    def running(self) -> int:
        """Jobs handed to a worker and not finished yet.

        Note: :class:`~twisted.application.service.IService` also names an
        attribute ``running`` (is the service started?).  The job count wins
        here, as the pool's public contract; the service state is
        :attr:`service_running`, which :class:`Service` sets through this
        property's setter.  Twisted itself never reads a child service's
        ``running``.
        """
        return len(self._running)

    @running.setter
    def running(self, value: int) -> None:
        """Record the service state (called by :class:`Service`'s start and stop)."""
        self._service_running = bool(value)

    @property
    def service_running(self) -> bool:
        """Whether the service is started (and accepts jobs)."""
        return self._service_running

    @property
    def queued(self) -> int:
        """Jobs waiting for a free worker."""
        return len(self._queue)

    # -- service ---------------------------------------------------------

    def startService(self) -> None:
        """Start the executor and its worker processes."""
        super().startService()
        self._start_error = None
        if self._eager:
            self._executor_or_none()

    def stopService(self) -> Deferred[None]:
        """Refuse new jobs, drop queued ones, let running ones finish.

        Queued jobs fail with :class:`PoolStopped`.  The executor is shut
        down (``cancel_futures=True``) in a thread of its own; running jobs
        get ``stop_timeout_s`` to finish before their processes are killed
        (those jobs then fail with :class:`WorkerCrashed`).

        :returns: a Deferred that fires once every worker process has exited.
        """
        super().stopService()
        queued, self._queue = list(self._queue), deque()
        for job in queued:
            self._forget(job)
            self._fire(job, Failure(PoolStopped()))
        executor, self._executor = self._executor, None
        if executor is None:
            return succeed(None)
        processes: list[BaseProcess] = list((getattr(executor, "_processes", None) or {}).values())
        done: Deferred[None] = Deferred()

        def shut_down() -> None:
            try:
                executor.shutdown(wait=True, cancel_futures=True)
            finally:
                self._reactor.callFromThread(done.callback, None)

        threading.Thread(target=shut_down, name="streamsrv-workers-shutdown", daemon=True).start()
        timer = self._reactor.callLater(self._stop_timeout_s, _kill, processes)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done

    # -- jobs ------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: object, key: str | None = None) -> Deferred[T]:
        """Run ``fn(*args)`` in a worker process.

        :param fn: a module-level function (it is pickled by name).
        :param args: its arguments; they must pickle.
        :param key: jobs with the same key are run once for all their callers.
        :returns: a Deferred of the result, fired on the reactor thread; it
            fails with :class:`PoolFull` when the queue is full,
            :class:`PoolStopped` when the pool is not running,
            :class:`WorkerCrashed` when the worker died, or the job's own
            exception.
        :raises TypeError: when ``fn`` is a lambda or a nested function.
        """
        qualname = getattr(fn, "__qualname__", "")
        if "<lambda>" in qualname or "<locals>" in qualname:
            raise TypeError(f"{qualname} cannot be sent to a worker process: use a module-level function")
        if not self._service_running:
            return fail(PoolStopped())
        if key is not None:
            joined = self._by_key.get(key)
            if joined is not None:
                self.coalesced += 1
                return self._wait(joined)
        if len(self._running) >= self._size and len(self._queue) >= self._max_queue:
            return fail(PoolFull(self._retry_after_s()))
        job = _Job(fn, args, key)
        if key is not None:
            self._by_key[key] = job
        waiter: Deferred[T] = self._wait(job)
        if len(self._running) < self._size:
            self._start(job)
        else:
            self._queue.append(job)
        return waiter

    def check(self) -> CheckResult:
        """The pool's health, for ``/health/detailed``.

        ``failing`` when stopped, when worker processes cannot be started, or
        in a crash loop (:data:`CRASH_LOOP_THRESHOLD` crashes with no job
        finishing in between); ``degraded`` when the queue is more than
        :data:`DEGRADED_QUEUE_RATIO` full or the last job ended in a crash;
        else ``ok``.
        """
        detail: dict[str, object] = {
            "size": self._size,
            "running": self.running,
            "queued": self.queued,
            "max_queue": self._max_queue,
            "completed": self.completed,
            "coalesced": self.coalesced,
            "crashes": self.crashes,
        }
        if not self._service_running:
            return CheckResult(FAILING, {**detail, "reason": "worker pool is not running"})
        if self._start_error is not None:
            return CheckResult(FAILING, {**detail, "reason": "worker processes cannot be started"})
        if self._consecutive_crashes >= CRASH_LOOP_THRESHOLD:
            return CheckResult(FAILING, {**detail, "reason": "worker processes keep crashing"})
        if self.queued > DEGRADED_QUEUE_RATIO * self._max_queue:
            return CheckResult(DEGRADED, {**detail, "reason": "queue nearly full"})
        if self._consecutive_crashes:
            return CheckResult(DEGRADED, {**detail, "reason": "a worker process crashed"})
        return CheckResult(OK, detail)

    # -- internals -------------------------------------------------------

    def _wait(self, job: _Job) -> Deferred[Any]:
        """A new caller's Deferred for ``job``."""
        waiter: Deferred[Any] = Deferred(canceller=partial(self._cancel_waiter, job))
        job.waiters.append(waiter)
        return waiter

    def _cancel_waiter(self, job: _Job, waiter: Deferred[Any]) -> None:
        """A caller cancelled: detach it; drop the job if it was the last one and it has not started."""
        if waiter in job.waiters:
            job.waiters.remove(waiter)
        if job.waiters or job.future is not None:
            return
        try:
            self._queue.remove(job)
        except ValueError:
            return
        self._forget(job)
        log.debug("dropped a queued job nobody waits for")

    def _forget(self, job: _Job) -> None:
        """Stop coalescing new submissions into ``job``."""
        if job.key is not None and self._by_key.get(job.key) is job:
            del self._by_key[job.key]

    def _executor_or_none(self) -> ProcessPoolExecutor | None:
        """The current executor, started (and warmed up) if there is none."""
        if self._executor is None:
            try:
                executor = ProcessPoolExecutor(
                    max_workers=self._size,
                    mp_context=self._context,
                    initializer=_initialize_worker,
                    initargs=(os.getpid(), self._preload),
                )
                for _ in range(self._size):
                    executor.submit(_warm_up)  # start every process now, not on the first jobs
            except Exception as e:
                self._start_error = type(e).__name__
                log.failure("cannot start worker processes")
                return None
            self._start_error = None
            self._executor = executor
        return self._executor

    def _replace_executor(self, broken: ProcessPoolExecutor) -> None:
        """Discard a broken executor; the next job starts a new one."""
        if self._executor is broken:
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _start(self, job: _Job) -> None:
        """Hand ``job`` to a worker process."""
        job.started = self._reactor.seconds()
        self._running.add(job)
        error: BaseException | None = None
        for _attempt in range(2):
            executor = self._executor_or_none()
            if executor is None:
                error = WorkerCrashed("worker processes cannot be started")
                break
            try:
                future = executor.submit(job.fn, *job.args)
            except BrokenProcessPool:
                # It broke since the last job finished; start afresh once.
                self._replace_executor(executor)
                error = WorkerCrashed("worker processes cannot be started")
                continue
            job.future, job.executor = future, executor
            future.add_done_callback(partial(self._from_worker, job, executor))
            return
        self._running.discard(job)
        self._forget(job)
        assert error is not None
        self._fire(job, Failure(error))

    def _from_worker(self, job: _Job, executor: ProcessPoolExecutor, future: Future[Any]) -> None:
        """Future callback, on an executor thread: go back to the reactor thread."""
        self._reactor.callFromThread(self._finished, job, executor, future)

    def _finished(self, job: _Job, executor: ProcessPoolExecutor, future: Future[Any]) -> None:
        """A job's future is done: deliver its outcome and start the next job."""
        self._running.discard(job)
        self._forget(job)
        elapsed = max(self._reactor.seconds() - job.started, 0.0)
        outcome: object
        try:
            outcome = future.result()
        except FutureCancelledError:
            outcome = Failure(CancelledError())
        except BrokenProcessPool:
            if executor is self._executor:
                self.crashes += 1
                self._consecutive_crashes += 1
                self._replace_executor(executor)
                log.error("a worker process died; starting new ones")
            outcome = Failure(WorkerCrashed("the worker process running this job died"))
        except BaseException as e:
            self._job_ran(elapsed)
            outcome = Failure(e)
        else:
            self._job_ran(elapsed)
        self._fire(job, outcome)
        self._pump()

    def _job_ran(self, elapsed: float) -> None:
        """Count a job that ran to its end and learn how long jobs take."""
        self.completed += 1
        self._consecutive_crashes = 0
        self._average_job_s += _DURATION_SMOOTHING * (elapsed - self._average_job_s)

    def _fire(self, job: _Job, outcome: object) -> None:
        """Give the outcome (a result or a :class:`Failure`) to every caller."""
        waiters, job.waiters = job.waiters, []
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def _pump(self) -> None:
        """Start queued jobs while workers are free."""
        while self._service_running and self._queue and len(self._running) < self._size:
            self._start(self._queue.popleft())

    def _retry_after_s(self) -> int:
        """Seconds until the queue has likely moved on, for ``Retry-After``."""
        estimate = math.ceil(self._average_job_s * (len(self._queue) + 1) / self._size)
        return min(max(estimate, MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S)


def _available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _kill(processes: Sequence[BaseProcess]) -> None:
    """Kill worker processes still running after the stop timeout."""
    alive = [p for p in processes if p.is_alive()]
    if alive:
        log.warn("killing {count} worker processes still busy at shutdown", count=len(alive))
    for process in alive:
        process.kill()


# -- in the worker processes ----------------------------------------------


def _initialize_worker(parent_pid: int, preload: Sequence[str]) -> None:
    """Prepare a worker process (runs in the worker, before any job).

    Ctrl-C in a terminal reaches the whole process group; the daemon decides
    when workers stop, so they ignore SIGINT.  Preloaded modules are imported
    now.  A watchdog thread exits the worker if the daemon dies without
    shutting the pool down (killed with SIGKILL), so no orphans are left.

    :param parent_pid: the daemon's process id.
    :param preload: modules to import.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), name="streamsrv-orphan-watch", daemon=True
    ).start()


def _exit_with_parent(parent_pid: int) -> None:
    """Exit this worker as soon as its parent is gone."""
    while os.getppid() == parent_pid:
        time.sleep(_ORPHAN_POLL_S)
    os._exit(1)


def _warm_up() -> None:
    """A job that does nothing: submitted to start the processes early."""

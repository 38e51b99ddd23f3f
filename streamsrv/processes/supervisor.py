# -*- test-case-name: tests.test_workers_processes -*-
"""The supervisor: runs N worker processes on the shared sockets, restarts them, stops them.

:class:`WorkerSupervisor` binds the listening sockets
(:mod:`streamsrv.processes.sockets`), spawns ``STREAMSRV_WORKERS`` workers
(each running :mod:`streamsrv.processes.worker` with the arguments
:func:`worker_command` builds), restarts one that dies after a delay that
doubles with each quick death in a row (:class:`RestartBackoff`), and relays
their output (:mod:`streamsrv.processes.relay`).  On stop it closes its copy
of the sockets, sends SIGTERM to every worker (each drains its streams for
``STREAMSRV_SHUTDOWN_GRACE_S``), waits for them all, and kills any still
running after the grace period plus :data:`STOP_MARGIN_S`.  This module must
never restart a worker in a tight loop, never import the global reactor, and
never import :mod:`streamsrv.tap` (a worker process builds the daemon, not
the supervisor).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamsrv.config import Settings
from streamsrv.processes.identity import WorkerRole
from streamsrv.processes.relay import EventRelay, LogRelay, PassthroughRelay
from streamsrv.processes.sockets import FIRST_LISTEN_FD, bind_listeners, child_fds, close_shared

#: Every module of the package logs under the name operators know from its start.
log = Logger(namespace="streamsrv.processes")


#: How long past ``STREAMSRV_SHUTDOWN_GRACE_S`` a worker may take to exit after
#: SIGTERM (closing stores, flushing analytics) before it is killed, seconds.
STOP_MARGIN_S: Final = 10.0

#: First restart delay after a quick death, seconds; doubled for each further one.
RESTART_BASE_S: Final = 0.5

#: Longest restart delay, seconds.
RESTART_MAX_S: Final = 30.0

#: A worker that ran this long before dying starts the back-off afresh, seconds.
STABLE_AFTER_S: Final = 30.0


#: Environment variables of systemd socket activation, which name the supervisor's pid only.
_SYSTEMD_VARIABLES: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

#: What a worker process runs: ``sys.argv[1:]`` are :func:`streamsrv.processes.worker.run_worker`'s arguments.
_BOOTSTRAP: Final = (
    "import sys; sys.path.append({path!r}); "
    "from streamsrv.processes.worker import run_worker; sys.exit(run_worker(sys.argv[1:]))"
)


def plugin_arguments(
    cli_values: Mapping[str, str], listen: Sequence[str], log_format: str | None = None
) -> list[str]:
    """The ``twistd streamsrv`` options a worker is started with.

    :param cli_values: the supervisor's own command-line values
        (``Options.cli_values()``: ``{"MEDIA_DIR": …}``); the environment
        and the env file reach the worker unchanged.
    :param listen: the endpoints, in order; the worker's inherited sockets
        follow this order, so they are always given explicitly.
    :param log_format: overrides ``--log-format`` (``json`` when the
        supervisor parses its workers' lines).
    """
    args: list[str] = []
    for key, value in cli_values.items():
        if key in ("LISTEN", "LOG_FORMAT"):
            continue
        args += ["--" + key.lower().replace("_", "-"), value]
    chosen = log_format if log_format is not None else cli_values.get("LOG_FORMAT")
    if chosen is not None:
        args += ["--log-format", chosen]
    for description in listen:
        args += ["--listen", description]
    return args


def worker_command(
    role: WorkerRole, plugin_args: Sequence[str], python: str = sys.executable
) -> tuple[list[str], list[str]]:
    """The argv of a worker process, split as ``(argv, plugin arguments)``.

    :param role: the worker's index, count and inherited descriptors.
    :param plugin_args: from :func:`plugin_arguments`.
    :param python: the interpreter (the supervisor's own).
    :return: the complete argv, and the part :func:`run_worker` hands to
        ``Options.parseOptions`` (for logs and tests).
    """
    package_parent = str(Path(__file__).resolve().parents[2])
    fds = ",".join(str(fd) for fd in role.listen_fds)
    argv = [
        python,
        "-c",
        _BOOTSTRAP.format(path=package_parent),
        "--index",
        str(role.index),
        "--count",
        str(role.count),
        "--listen-fds",
        fds,
        "--",
        *plugin_args,
    ]
    return argv, list(plugin_args)


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: the supervisor's, without systemd's socket-activation variables."""
    return {key: value for key, value in environ.items() if key not in _SYSTEMD_VARIABLES}


@dataclass(frozen=True)
class RestartBackoff:
    """When to restart a worker that died: soon the first time, later if it keeps dying.

    :ivar base_s: the delay after the first quick death.
    :ivar max_s: the longest delay.
    :ivar stable_after_s: a worker that lived this long before dying is not
        part of a crash loop: its streak starts again at one.
    """

    base_s: float = RESTART_BASE_S
    max_s: float = RESTART_MAX_S
    stable_after_s: float = STABLE_AFTER_S

    def streak(self, previous: int, lived_s: float) -> int:
        """Quick deaths in a row, counting this one.

        :param previous: the streak before this death.
        :param lived_s: how long the worker that just died ran.
        """
        return 1 if lived_s >= self.stable_after_s else previous + 1

    def delay(self, streak: int) -> float:
        """Seconds to wait before restarting after *streak* quick deaths in a row."""
        if streak <= 1:
            return self.base_s
        return min(self.max_s, self.base_s * 2.0 ** min(streak - 1, 32))


def describe_exit(reason: Failure) -> str:
    """How a process ended, for the log: ``exited with status 1`` or ``killed by SIGKILL``."""
    value = reason.value
    code = getattr(value, "exitCode", None)
    sig = getattr(value, "signal", None)
    if sig is not None:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    if code is not None:
        return f"exited with status {code}"
    return "ended"


@dataclass
class _Slot:
    """One worker index: its current process and its crash history."""

    index: int
    process: Any = None
    pid: int | None = None
    started_at: float = 0.0
    streak: int = 0
    restart: IDelayedCall | None = None
    exited: list[Deferred[None]] = field(default_factory=list)


class _WorkerProtocol(ProcessProtocol):
    """The supervisor's end of one worker process."""

    def __init__(self, supervisor: WorkerSupervisor, slot: _Slot) -> None:
        self._supervisor = supervisor
        self._slot = slot

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self._supervisor.relay.received(self._slot.index, fd, data)

    def processExited(self, reason: Failure) -> None:
        self._supervisor._exited(self._slot, self, reason)

    def processEnded(self, reason: Failure) -> None:
        self._supervisor.relay.finished(self._slot.index)


class WorkerSupervisor(Service):
    """Runs *count* worker processes on the listening sockets it binds; restarts them; stops them.

    :param reactor: spawns the processes (``IReactorProcess``) and times
        restarts and kills (``IReactorTime``).
    :param listen: the endpoint strings to bind (in
        :meth:`privilegedStartService`, before twistd drops privileges).
    :param count: worker processes to keep running.
    :param command: ``(index, inherited fds) -> argv`` of a worker.
    :param environ: the workers' environment.
    :param stop_timeout_s: after SIGTERM, how long a worker may take to exit
        before it is killed (the grace period plus :data:`STOP_MARGIN_S`).
    :param relay: what to do with the workers' output.
    :param backoff: the restart policy.
    :param bind: ``(reactor, listen) -> ports``: :func:`bind_listeners`
        (tests pass a fake).
    """

    name = "workers"  # type: ignore[assignment]  # Twisted declares Service.name as None

    def __init__(
        self,
        reactor: Any,
        *,
        listen: Sequence[str],
        count: int,
        command: Callable[[WorkerRole], list[str]],
        environ: Mapping[str, str],
        stop_timeout_s: float,
        relay: LogRelay,
        backoff: RestartBackoff = RestartBackoff(),
        bind: Callable[[Any, Sequence[str]], list[IListeningPort]] = bind_listeners,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self._reactor = reactor
        self._listen = tuple(listen)
        self._command = command
        self._environ = dict(environ)
        self._stop_timeout_s = stop_timeout_s
        self._backoff = backoff
        self._bind = bind
        self.relay = relay
        self._slots = [_Slot(index) for index in range(count)]
        self._ports: list[IListeningPort] = []
        self._stopping = False
        #: Workers restarted after dying unexpectedly, so far.
        self.restarts = 0

    # ------------------------------------------------------------------
    # Service

    def privilegedStartService(self) -> None:
        """Bind the listening sockets (a privileged port needs root, later dropped by twistd)."""
        super().privilegedStartService()
        if not self._ports:
            self._ports = self._bind(self._reactor, self._listen)

    def startService(self) -> None:
        """Start every worker."""
        super().startService()
        if not self._ports:
            self._ports = self._bind(self._reactor, self._listen)
        self._stopping = False
        log.info(
            "supervising {count} worker processes on {listen}",
            count=len(self._slots),
            listen=" ".join(self._listen),
        )
        for slot in self._slots:
            self._spawn(slot)

    def stopService(self) -> Deferred[None]:
        """Close the sockets, SIGTERM every worker, wait for all (killing the late ones).

        The supervisor only closes its descriptors (:func:`close_shared`):
        each worker stops listening on its own SIGTERM, sent at the same
        moment, and the socket is gone when the last worker has closed it.
        (Shutting the shared socket down instead made a worker that was
        accepting at that instant log ``EINVAL`` as an unhandled error.)
        """
        super().stopService()
        self._stopping = True
        closing = [close_shared(port) for port in self._ports]
        self._ports = []
        waits: list[Deferred[Any]] = list(closing)
        for slot in self._slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
            if slot.process is not None:
                waits.append(self._when_exited(slot))
                self._signal(slot, "TERM")
        running = [slot for slot in self._slots if slot.process is not None]
        if running:
            log.info(
                "stopping {count} workers (they have {grace:g} s to finish)",
                count=len(running),
                grace=self._stop_timeout_s,
            )
        killer = self._reactor.callLater(self._stop_timeout_s, self._kill_late)
        done: Deferred[Any] = DeferredList(waits, consumeErrors=True)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()
            log.info("every worker has stopped")

        return done.addCallback(finished)

    # ------------------------------------------------------------------
    # Introspection (tests, logs)

    @property
    def pids(self) -> dict[int, int | None]:
        """Each worker index with its current pid (``None`` while it is down)."""
        return {slot.index: slot.pid for slot in self._slots}

    @property
    def listening_fds(self) -> list[int]:
        """The supervisor's listening descriptors, in ``listen`` order."""
        return [port.fileno() for port in self._ports]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------
    # Workers

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        fds = self.listening_fds
        role = WorkerRole(slot.index, len(self._slots), tuple(FIRST_LISTEN_FD + i for i in range(len(fds))))
        argv = self._command(role)
        protocol = _WorkerProtocol(self, slot)
        try:
            process = self._reactor.spawnProcess(
                protocol, argv[0], argv, env=self._environ, childFDs=child_fds(fds)
            )
        except Exception as e:
            log.error("worker {worker} could not be started: {error}", worker=slot.index, error=str(e))
            self._schedule_restart(slot, lived_s=0.0)
            return
        slot.process = process
        slot.pid = process.pid
        slot.started_at = self._reactor.seconds()
        log.info("worker {worker} started (pid {pid})", worker=slot.index, pid=process.pid)

    def _exited(self, slot: _Slot, protocol: _WorkerProtocol, reason: Failure) -> None:
        """A worker process exited (its pipes may still be open)."""
        pid = slot.pid
        lived = self._reactor.seconds() - slot.started_at
        slot.process = None
        slot.pid = None
        how = describe_exit(reason)
        if self._stopping:
            log.info("worker {worker} (pid {pid}) {how}", worker=slot.index, pid=pid, how=how)
            waiters, slot.exited = slot.exited, []
            for waiter in waiters:
                waiter.callback(None)
            return
        slot.streak = self._backoff.streak(slot.streak, lived)
        delay = self._backoff.delay(slot.streak)
        log.error(
            "worker {worker} (pid {pid}) {how} after {lived:.1f} s; restarting it in {delay:g} s",
            worker=slot.index,
            pid=pid,
            how=how,
            lived=lived,
            delay=delay,
        )
        self._schedule_restart(slot, lived_s=lived, delay=delay)

    def _schedule_restart(self, slot: _Slot, lived_s: float, delay: float | None = None) -> None:
        if delay is None:
            slot.streak = self._backoff.streak(slot.streak, lived_s)
            delay = self._backoff.delay(slot.streak)
        self.restarts += 1
        slot.restart = self._reactor.callLater(delay, self._spawn, slot)

    def _when_exited(self, slot: _Slot) -> Deferred[None]:
        if slot.process is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        slot.exited.append(d)
        return d

    def _signal(self, slot: _Slot, name: str) -> None:
        try:
            slot.process.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def _kill_late(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                log.warn(
                    "worker {worker} (pid {pid}) still running {timeout:g} s after SIGTERM: killing it",
                    worker=slot.index,
                    pid=slot.pid,
                    timeout=self._stop_timeout_s,
                )
                self._signal(slot, "KILL")


def make_supervisor(
    settings: Settings, cli_values: Mapping[str, str], reactor: Any, *, foreground: bool
) -> WorkerSupervisor:
    """The supervisor of ``STREAMSRV_WORKERS`` workers started with the supervisor's own options.

    :param cli_values: the supervisor's command-line values (``Options.cli_values()``).
    :param foreground: the supervisor logs with streamsrv's observer: its
        workers' lines are passed on as they are; otherwise (twistd's
        observer) the workers write JSON, turned back into events here.
    """
    relay: LogRelay = PassthroughRelay(sys.stdout, sys.stderr) if foreground else EventRelay()
    plugin_args = plugin_arguments(cli_values, settings.listen, log_format=None if foreground else "json")
    return WorkerSupervisor(
        reactor,
        listen=settings.listen,
        count=settings.workers,
        command=lambda role: worker_command(role, plugin_args)[0],
        environ=worker_environment(os.environ),
        stop_timeout_s=settings.shutdown_grace_s + STOP_MARGIN_S,
        relay=relay,
    )

# -*- test-case-name: tests.test_workers_processes -*-
"""``STREAMSRV_WORKERS=N``: N worker processes serving the same listening sockets.

With one worker (the default) none of this runs: twistd's process is the
daemon.  With N > 1, twistd's process becomes a supervisor that does no HTTP:
:class:`WorkerSupervisor` binds every ``--listen`` endpoint once (so TLS
certificates, ``interface=``, IPv6 and systemd's inherited sockets are
resolved exactly as with one process), stops reading them, and spawns N
copies of this Python running :func:`run_worker`, each handed the listening
sockets as inherited file descriptors (3, 4, …).  Each worker adopts them
(:func:`adopted_endpoint`: TLS is wrapped in the worker) and builds the normal
service tree (``streamsrv.tap.makeWorkerService``); the kernel gives each new
connection to whichever worker accepts it first.

The supervisor restarts a worker that dies, after a delay that doubles with
each quick death in a row (:class:`RestartBackoff`), and relays the workers'
log lines to its own stdout/stderr (:class:`PassthroughRelay`) or into its own
log system (:class:`EventRelay`), each line carrying its worker's index.  On
SIGTERM or SIGINT it closes its copy of the sockets, sends SIGTERM to every
worker (each drains its streams for ``STREAMSRV_SHUTDOWN_GRACE_S`` as a single
process would), waits for them all, and kills any still running after the
grace period plus :data:`STOP_MARGIN_S`.  A worker reads its stdin, a pipe
from the supervisor, and shuts down when it reaches end of file: workers never
outlive their supervisor, even one killed with SIGKILL.

Each worker answers for itself: ``X-Streamsrv-Worker`` on every response, a
``worker`` label on every metric (:class:`WorkerLabelledRegistry`), a
``worker`` field in every log event.  What must be shared between workers goes
through Redis or the data directory, as between hosts (docs/modules/processes.md).

This module must never accept a connection in the supervisor, never restart
a worker in a tight loop, never leave a worker running once the supervisor is
gone, and never import the global reactor outside :func:`run_worker` (the
entry point of a worker process).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from twisted.application.service import Service
from twisted.internet import error, fdesc
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReadDescriptor, IStreamServerEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from streamsrv.logs import LEVELS, LevelFilteringObserver, make_log_observer
from streamsrv.web.site import StreamsrvSite

__all__ = [
    "FIRST_LISTEN_FD",
    "STOP_MARGIN_S",
    "WORKER_HEADER",
    "EventRelay",
    "LineBuffer",
    "PassthroughRelay",
    "RestartBackoff",
    "WorkerLabelledRegistry",
    "WorkerRole",
    "WorkerSupervisor",
    "adopted_endpoint",
    "bind_listeners",
    "identify_worker",
    "pool_size",
    "run_worker",
    "worker_command",
    "worker_log_observer",
]

log = Logger()

#: The response header naming the worker that answered (its index, 0 to N-1).
WORKER_HEADER: Final = b"x-streamsrv-worker"

#: The worker's file descriptor of the first listening socket (the next ones follow).
FIRST_LISTEN_FD: Final = 3

#: How long past ``STREAMSRV_SHUTDOWN_GRACE_S`` a worker may take to exit after
#: SIGTERM (closing stores, flushing analytics) before it is killed, seconds.
STOP_MARGIN_S: Final = 10.0

#: First restart delay after a quick death, seconds; doubled for each further one.
RESTART_BASE_S: Final = 0.5

#: Longest restart delay, seconds.
RESTART_MAX_S: Final = 30.0

#: A worker that ran this long before dying starts the back-off afresh, seconds.
STABLE_AFTER_S: Final = 30.0

#: A relayed log line longer than this is passed on in pieces, bytes.
MAX_LINE_BYTES: Final = 1024 * 1024

#: Endpoint types a worker can adopt (``unix:`` is refused by the configuration).
SHAREABLE_ENDPOINTS: Final = ("tcp", "tcp6", "ssl", "systemd")

#: Environment variables of systemd socket activation, which name the supervisor's pid only.
_SYSTEMD_VARIABLES: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

#: What a worker process runs: ``sys.argv[1:]`` are :func:`run_worker`'s arguments.
_BOOTSTRAP: Final = (
    "import sys; sys.path.append({path!r}); "
    "from streamsrv.processes import run_worker; sys.exit(run_worker(sys.argv[1:]))"
)


# --------------------------------------------------------------------------
# Pure parts: roles, arguments, back-off, log lines


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
    package_parent = str(Path(__file__).resolve().parent.parent)
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


def child_fds(parent_fds: Sequence[int]) -> dict[int, int | str]:
    """``spawnProcess``'s ``childFDs``: the supervisor's pipe as stdin, output pipes, then the sockets.

    :param parent_fds: the supervisor's listening descriptors, in order.
    """
    mapping: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    for offset, fd in enumerate(parent_fds):
        mapping[FIRST_LISTEN_FD + offset] = fd
    return mapping


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


class LineBuffer:
    """Splits a byte stream into whole lines (a line longer than *limit* is cut into pieces)."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines *data* finishes, each with its ``\\n``."""
        pending = self._pending + data
        lines: list[bytes] = []
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            lines.append(pending[start : end + 1])
            start = end + 1
        rest = pending[start:]
        while len(rest) > self._limit:
            lines.append(rest[: self._limit] + b"\n")
            rest = rest[self._limit :]
        self._pending = rest
        return lines

    def flush(self) -> bytes:
        """What is left after the last ``\\n`` (a line the writer never finished); forgets it."""
        rest, self._pending = self._pending, b""
        return rest


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


# --------------------------------------------------------------------------
# Log relay (supervisor side)


class LogRelay(Protocol):
    """Where the supervisor puts what its workers write to stdout and stderr."""

    def received(self, worker: int, fd: int, data: bytes) -> None:
        """Bytes from worker *worker*'s descriptor *fd* (1 or 2)."""

    def finished(self, worker: int) -> None:
        """The worker's pipes are closed: pass on any unfinished line."""


class _Buffers:
    """One :class:`LineBuffer` per (worker, descriptor)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, int], LineBuffer] = {}

    def lines(self, worker: int, fd: int, data: bytes) -> list[bytes]:
        buffer = self._buffers.get((worker, fd))
        if buffer is None:
            buffer = self._buffers[(worker, fd)] = LineBuffer()
        return buffer.feed(data)

    def rest(self, worker: int) -> Iterator[tuple[int, bytes]]:
        for fd in (1, 2):
            buffer = self._buffers.pop((worker, fd), None)
            if buffer is not None:
                rest = buffer.flush()
                if rest:
                    yield fd, rest + b"\n"


def _write(out: IO[str], lines: Iterable[bytes]) -> None:
    """Write whole lines to *out* in one go (its byte buffer when it has one)."""
    data = b"".join(lines)
    if not data:
        return
    buffer = getattr(out, "buffer", None)
    try:
        if buffer is not None:
            out.flush()
            buffer.write(data)
            buffer.flush()
        else:
            out.write(data.decode("utf-8", "replace"))
            out.flush()
    except (OSError, ValueError):
        pass  # our own output is gone: nowhere to say so


class PassthroughRelay:
    """Workers' lines to the supervisor's stdout and stderr, whole lines only.

    For a foreground daemon (``twistd -n``) logging with streamsrv's observer:
    the workers format their events themselves (JSON or text, with their
    ``worker`` field), so stdout lines pass unchanged; stderr lines (what a
    library or a dying interpreter prints) are prefixed ``worker N: ``.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self._stdout = stdout
        self._stderr = stderr
        self._buffers = _Buffers()

    def received(self, worker: int, fd: int, data: bytes) -> None:
        lines = self._buffers.lines(worker, fd, data)
        self._emit(worker, fd, lines)

    def finished(self, worker: int) -> None:
        for fd, rest in self._buffers.rest(worker):
            self._emit(worker, fd, [rest])

    def _emit(self, worker: int, fd: int, lines: list[bytes]) -> None:
        if fd == 1:
            _write(self._stdout, lines)
        else:
            prefix = f"worker {worker}: ".encode()
            _write(self._stderr, (prefix + line for line in lines))


class EventRelay:
    """Workers' JSON lines republished as log events in the supervisor's log system.

    For a daemon that logs through twistd (``--logfile``, ``--syslog``, or
    in the background): workers are started with ``--log-format json`` and
    each line becomes an event again, with its namespace, level, message and
    fields, ``worker`` among them, and ``log_system`` ``worker N``.
    """

    def __init__(self, observer: ILogObserver | None = None) -> None:
        self._observer = observer
        self._buffers = _Buffers()

    def received(self, worker: int, fd: int, data: bytes) -> None:
        for line in self._buffers.lines(worker, fd, data):
            self._line(worker, fd, line)

    def finished(self, worker: int) -> None:
        for fd, rest in self._buffers.rest(worker):
            self._line(worker, fd, rest)

    def _line(self, worker: int, fd: int, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\n")
        if not text:
            return
        record: dict[str, Any] | None = None
        if fd == 1 and text.startswith("{"):
            try:
                loaded = json.loads(text)
            except ValueError:
                loaded = None
            record = loaded if isinstance(loaded, dict) else None
        logger = Logger(namespace="streamsrv.processes", observer=self._observer)
        if record is None:
            level = LogLevel.info if fd == 1 else LogLevel.warn
            system = f"{'stdout' if fd == 1 else 'stderr'} worker={worker}"
            logger.emit(level, "{line}", line=text, worker=worker, log_system=system)
            return
        (self._observer or globalLogPublisher)(event_from_json(record, worker))


def event_from_json(record: dict[str, Any], worker: int) -> dict[str, Any]:
    """A log event rebuilt from one of ``streamsrv.logs.event_as_json_line``'s lines.

    :param record: the decoded line.
    :param worker: the index of the worker that wrote it.
    """
    fields = dict(record)
    level_name = str(fields.pop("level", "info"))
    try:
        level = LogLevel.levelWithName(level_name)
    except Exception:
        level = LogLevel.info
    message = str(fields.pop("msg", ""))
    failure = fields.pop("failure", None)
    if isinstance(failure, str):
        message = f"{message}\n{failure}"
    when = time.time()
    stamp = fields.pop("ts", None)
    if isinstance(stamp, str) and len(stamp) >= 19:
        try:
            when = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
            if stamp[19:20] == "." and stamp[20:23].isdigit():
                when += int(stamp[20:23]) / 1000
        except ValueError:
            pass
    fields = {key: value for key, value in fields.items() if not key.startswith("log_")}
    namespace = str(fields.pop("ns", "-"))
    fields.update(
        log_namespace=namespace,
        log_level=level,
        log_format="{worker_message}",
        worker_message=message,
        log_time=when,
        log_system=f"{namespace}#{level.name} worker={worker}",
        worker=worker,
    )
    return fields


# --------------------------------------------------------------------------
# Listening sockets (supervisor side)


class _NoConnections(Factory):
    """The factory of the supervisor's ports, which never read: no connection is ever built."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None

    def logPrefix(self) -> str:
        """What Twisted's port messages call it (``… starting on 8080``)."""
        return "streamsrv supervisor (sockets for the workers)"


def close_shared(port: IListeningPort) -> Deferred[Any]:
    """Stop listening on *port* without ``shutdown()``: close only this process's descriptor.

    Twisted's ``tcp.Port`` shuts a socket it bound itself down before closing
    it, which ends the listening in every process holding the socket,
    whatever they are doing; the workers stop listening themselves.
    """
    if hasattr(port, "_shouldShutdown"):
        port._shouldShutdown = False  # tcp._SocketCloser's switch (no public one)
    stop: Callable[[], Any] = port.stopListening
    return maybeDeferred(stop)


def bind_listeners(reactor: Any, descriptions: Sequence[str]) -> list[IListeningPort]:
    """Bind every endpoint, then stop reading it: the sockets are for the workers.

    Binding through the endpoint strings keeps their meaning (``interface=``,
    ``backlog=``, IPv6, systemd's inherited descriptors; ``ssl:`` checks its
    key and certificate now, and binds a plain TCP socket the workers wrap).

    :param reactor: the supervisor's reactor.
    :param descriptions: ``STREAMSRV_LISTEN``'s endpoint strings.
    :return: the ports, in order, not reading.
    :raise error.CannotListenError: (or what the endpoint raises) when one
        cannot be bound; the ones already bound are closed first.
    """
    ports: list[IListeningPort] = []
    try:
        for description in descriptions:
            kind = description.split(":", 1)[0].strip().lower()
            if kind not in SHAREABLE_ENDPOINTS:
                raise ValueError(f"{description}: {kind}: endpoints cannot be shared by worker processes")
            outcome: list[Any] = []
            serverFromString(reactor, description).listen(_NoConnections()).addBoth(outcome.append)
            if not outcome:  # pragma: no cover - every shareable endpoint listens synchronously
                raise ValueError(f"{description}: the endpoint did not listen at once")
            if isinstance(outcome[0], Failure):
                outcome[0].raiseException()
            port = outcome[0]
            port.stopReading()
            ports.append(port)
    except BaseException:
        for port in ports:
            port.stopListening()
        raise
    return ports


# --------------------------------------------------------------------------
# Supervision (supervisor side)


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


# --------------------------------------------------------------------------
# Worker side


def socket_family(fd: int) -> int:
    """The address family of the socket open at *fd* (without closing it)."""
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return int(probe.family)
    finally:
        probe.close()


class _InheritedSocketReactor:
    """A reactor for parsing one endpoint string in a worker: listening adopts the inherited socket.

    Everything but the ``listen*`` methods is the real reactor's.  The
    inherited descriptor is closed once adopted (the port holds its own
    duplicate), so that closing the port really stops this process listening.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> IListeningPort:
        return self._adopt(factory)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,  # noqa: N803 - IReactorSSL's name, passed by keyword
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def _adopt(self, factory: Any) -> IListeningPort:
        fdesc.setNonBlocking(self._fd)
        try:
            port: IListeningPort = self._reactor.adoptStreamPort(self._fd, socket_family(self._fd), factory)
        finally:
            os.close(self._fd)
        return port


def adopted_endpoint(reactor: Any, description: str, fd: int) -> IStreamServerEndpoint:
    """The endpoint a worker listens with: *description*'s meaning, on inherited socket *fd*.

    ``tcp:``/``tcp6:`` adopt the socket as it is; ``ssl:`` builds its TLS
    context here (key and certificate read by the worker) and wraps the
    adopted socket; ``systemd:`` adopts it as a plain socket.

    :raise ValueError: for an endpoint type workers cannot share.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "systemd":
        return AdoptedStreamServerEndpoint(reactor, fd, socket_family(fd))
    if kind in ("tcp", "tcp6", "ssl"):
        endpoint: IStreamServerEndpoint = serverFromString(_InheritedSocketReactor(reactor, fd), description)
        return endpoint
    raise ValueError(f"{description}: {kind}: endpoints cannot be shared by worker processes")


def identify_worker(site: StreamsrvSite, index: int) -> None:
    """Make every response of *site* carry ``X-Streamsrv-Worker: <index>``.

    Except the WebSocket handshake, which Autobahn writes itself.
    """
    value = str(index).encode("ascii")
    base = site.requestFactory

    class WorkerRequest(base):  # type: ignore[valid-type, misc]
        """A request that names the worker process answering it."""

        def process(self) -> None:
            self.setHeader(WORKER_HEADER, value)
            super().process()

    site.requestFactory = WorkerRequest


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


@implementer(IReadDescriptor)
class ParentWatch:
    """Calls *on_gone* once the supervisor's end of our stdin pipe is closed (it exited or died)."""

    def __init__(self, reactor: Any, fd: int, on_gone: Callable[[], object]) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_gone = on_gone
        self._gone = False

    def start(self) -> None:
        """Start watching."""
        fdesc.setNonBlocking(self._fd)
        self._reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # the supervisor says nothing on this pipe; ignore whatever comes
        self._reactor.removeReader(self)
        self._lost()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the pipe hang up (epoll says so without a read)."""
        self._lost()

    def _lost(self) -> None:
        if not self._gone:
            self._gone = True
            self._on_gone()

    def logPrefix(self) -> str:
        return "supervisor-pipe"


class _StopOnce:
    """Stops the reactor the first time it is asked (SIGTERM, the supervisor gone…), then ignores."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.asked = False

    def __call__(self, why: str) -> None:
        if self.asked:
            return
        self.asked = True
        log.info("worker stopping: {why}", why=why)
        if self._reactor.running:
            self._reactor.stop()


def _install_signal_handlers(reactor: Any, stop: _StopOnce) -> None:
    """SIGTERM stops once, however many arrive (the supervisor and systemd may both send one);
    SIGINT is the supervisor's to act on (Ctrl-C reaches the whole process group)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stop, "SIGTERM"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parse_worker_arguments(argv: Sequence[str]) -> tuple[WorkerRole, list[str]]:
    parser = argparse.ArgumentParser(prog="streamsrv-worker", add_help=False)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--listen-fds", default="")
    parser.add_argument("plugin", nargs=argparse.REMAINDER)
    args = parser.parse_args(list(argv))
    plugin = list(args.plugin)
    if plugin[:1] == ["--"]:
        plugin = plugin[1:]
    fds = tuple(int(fd) for fd in args.listen_fds.split(",") if fd.strip())
    return WorkerRole(args.index, args.count, fds), plugin


def run_worker(argv: Sequence[str]) -> int:
    """The body of a worker process: build the daemon on the inherited sockets and run it.

    :param argv: ``--index I --count N --listen-fds 3,4 -- <twistd streamsrv options>``.
    :return: the exit status (0 after a clean stop).
    """
    role, plugin_args = _parse_worker_arguments(argv)
    # The entry point of a process of its own: the one place a global reactor belongs.
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner
    from twisted.python import usage

    from streamsrv import tap

    config = tap.Options()
    try:
        config.parseOptions(plugin_args)
    except usage.UsageError as e:
        print(f"streamsrv worker {role.index}: {e}", file=sys.stderr)
        return 2
    try:
        root = tap.makeWorkerService(config, role, reactor)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    observer = root.log_observer
    globalLogBeginner.beginLoggingTo([observer] if observer is not None else [], redirectStandardIO=True)
    stop = _StopOnce(reactor)
    try:
        root.privilegedStartService()
        root.startService()
    except Exception:
        log.failure("worker {worker} could not start", worker=role.index)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(_install_signal_handlers, reactor, stop)
    reactor.callWhenRunning(ParentWatch(reactor, 0, lambda: stop("the supervisor is gone")).start)
    reactor.run()
    return 0

# -*- test-case-name: tests.test_workers_processes -*-
"""The entry point of a worker process: ``python -c … run_worker`` as the supervisor starts it.

:func:`run_worker` parses the supervisor's arguments (the worker's
:class:`~streamsrv.processes.identity.WorkerRole` and the ``twistd
streamsrv`` options), builds the daemon with the composition root's worker
factory (:func:`streamsrv.tap.makeWorkerService`) on the inherited sockets,
and runs the reactor: SIGTERM stops it once (the daemon drains its streams
as a single process would), SIGINT is left to the supervisor, and
:class:`ParentWatch` stops it when the supervisor's pipe on stdin closes, so
a worker never outlives its supervisor.  This is the only module of the
package that imports :mod:`streamsrv.tap`, and the one place that imports
the global reactor (it is a process's ``main``); nothing imports it but the
worker's bootstrap and tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import fdesc
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from streamsrv.processes.identity import WorkerRole
from streamsrv.tap import makeWorkerService

#: Every module of the package logs under the name operators know from its start.
log = Logger(namespace="streamsrv.processes")


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

    try:
        root = makeWorkerService(plugin_args, role, reactor)
    except usage.UsageError as e:
        print(f"streamsrv worker {role.index}: {e}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":  # pragma: no cover - run as a script
    sys.exit(run_worker(sys.argv[1:]))

# -*- test-case-name: tests.test_workers_processes -*-
"""``STREAMSRV_WORKERS=N``: worker processes on shared sockets (streamsrv.processes).

Not the decode/encode pool (that is tests/test_workers.py).  The pure parts
(restart back-off, argument building, line splitting, log relays, metric
labels) are tested directly; the supervisor with a fake reactor and
``task.Clock``; a worker's adopted sockets with the real reactor; and the
whole thing end to end with real ``twistd -n streamsrv --workers 2``
processes: two workers answer, a killed one is replaced, SIGTERM stops
everything cleanly, and workers never outlive a killed supervisor.
"""

from __future__ import annotations

import datetime
import http.client
import io
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial import unittest

from streamsrv.config import ConfigError, config_warnings, load_settings
from streamsrv.health.metrics import Metrics
from streamsrv.logs import will_observe
from streamsrv.processes.identity import (
    WORKER_HEADER,
    WorkerLabelledRegistry,
    WorkerRole,
    identify_worker,
    pool_size,
    worker_log_observer,
)
from streamsrv.processes.relay import EventRelay, LineBuffer, PassthroughRelay
from streamsrv.processes.sockets import (
    FIRST_LISTEN_FD,
    adopted_endpoint,
    bind_listeners,
    child_fds,
    close_shared,
)
from streamsrv.processes.supervisor import (
    RestartBackoff,
    WorkerSupervisor,
    describe_exit,
    plugin_arguments,
    worker_command,
    worker_environment,
)
from streamsrv.processes.worker import ParentWatch, _parse_worker_arguments, _StopOnce
from tests.sitehelpers import build_site, parse_head, raw_exchange
from tests.test_daemon import (
    CLEAN_EXITS,
    EXIT_TIMEOUT_S,
    READY_TIMEOUT_S,
    Daemon,
    DaemonTestCase,
    free_port,
    server_send_buffer_max,
    write_wav,
)

# --------------------------------------------------------------------------
# Pure parts


class RestartBackoffTests(unittest.SynchronousTestCase):
    """When a dead worker is started again."""

    def test_doubles_then_caps(self) -> None:
        """Quick deaths in a row wait 0.5, 1, 2, 4… seconds, never more than the cap."""
        backoff = RestartBackoff(base_s=0.5, max_s=30.0)
        self.assertEqual([backoff.delay(n) for n in range(1, 8)], [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0])
        self.assertEqual(backoff.delay(10_000), 30.0)

    def test_streak_restarts_after_a_stable_run(self) -> None:
        """A worker that ran past stable_after_s before dying starts a new streak of one."""
        backoff = RestartBackoff(stable_after_s=30.0)
        self.assertEqual(backoff.streak(0, 1.0), 1)
        self.assertEqual(backoff.streak(3, 2.0), 4)
        self.assertEqual(backoff.streak(6, 30.0), 1)


class WorkerCommandTests(unittest.SynchronousTestCase):
    """The command line a worker process is started with."""

    def test_plugin_arguments(self) -> None:
        """Command-line values become options again; listen endpoints are always explicit, in order."""
        args = plugin_arguments(
            {"MEDIA_DIR": "/srv/music", "WORKERS": "2", "LISTEN": "tcp:1"},
            ["tcp:8080:interface=127.0.0.1", "ssl:8443:privateKey=k.pem"],
        )
        self.assertEqual(
            args,
            [
                "--media-dir",
                "/srv/music",
                "--workers",
                "2",
                "--listen",
                "tcp:8080:interface=127.0.0.1",
                "--listen",
                "ssl:8443:privateKey=k.pem",
            ],
        )

    def test_log_format_override(self) -> None:
        """The supervisor can ask its workers for JSON lines whatever the configuration says."""
        self.assertEqual(plugin_arguments({"LOG_FORMAT": "text"}, []), ["--log-format", "text"])
        self.assertEqual(plugin_arguments({"LOG_FORMAT": "text"}, [], "json"), ["--log-format", "json"])
        self.assertEqual(plugin_arguments({}, [], "json"), ["--log-format", "json"])

    def test_argv_round_trip(self) -> None:
        """What worker_command builds, the worker parses back into the same role and options."""
        role = WorkerRole(1, 4, (3, 4))
        argv, plugin = worker_command(role, ["--media-dir", "/m", "--listen", "tcp:80"], python="/py")
        self.assertEqual(argv[:2], ["/py", "-c"])
        self.assertIn("run_worker", argv[2])
        parsed, parsed_plugin = _parse_worker_arguments(argv[3:])
        self.assertEqual(parsed, role)
        self.assertEqual(parsed_plugin, plugin)
        self.assertEqual(parsed_plugin, ["--media-dir", "/m", "--listen", "tcp:80"])

    def test_child_fds(self) -> None:
        """stdin is the supervisor's pipe, stdout and stderr are read, sockets follow from fd 3."""
        self.assertEqual(FIRST_LISTEN_FD, 3)
        self.assertEqual(child_fds([17, 9]), {0: "w", 1: "r", 2: "r", 3: 17, 4: 9})

    def test_environment_drops_socket_activation(self) -> None:
        """systemd's LISTEN_* variables name the supervisor's pid; workers do not get them."""
        env = worker_environment({"PATH": "/bin", "LISTEN_FDS": "1", "LISTEN_PID": "7", "STREAMSRV_X": "y"})
        self.assertEqual(env, {"PATH": "/bin", "STREAMSRV_X": "y"})

    def test_pool_size(self) -> None:
        """The decode/encode pools share the CPUs out, at least one process each."""
        self.assertEqual(pool_size(8, 1), 8)
        self.assertEqual(pool_size(8, 2), 4)
        self.assertEqual(pool_size(2, 2), 1)
        self.assertEqual(pool_size(2, 8), 1)

    def test_describe_exit(self) -> None:
        """Exit statuses and signals read as a person would say them."""
        from twisted.internet.error import ProcessDone, ProcessTerminated

        self.assertEqual(describe_exit(Failure(ProcessDone(0))), "exited with status 0")
        self.assertEqual(describe_exit(Failure(ProcessTerminated(3))), "exited with status 3")
        self.assertEqual(
            describe_exit(Failure(ProcessTerminated(signal=signal.SIGKILL))), "killed by SIGKILL"
        )


class LineBufferTests(unittest.SynchronousTestCase):
    """A byte stream cut into whole lines."""

    def test_lines_across_chunks(self) -> None:
        """A line split over chunks comes out whole, once finished."""
        buffer = LineBuffer()
        self.assertEqual(buffer.feed(b"one\ntw"), [b"one\n"])
        self.assertEqual(buffer.feed(b"o\nthree\nfo"), [b"two\n", b"three\n"])
        self.assertEqual(buffer.flush(), b"fo")
        self.assertEqual(buffer.flush(), b"")

    def test_long_line_in_pieces(self) -> None:
        """A line longer than the limit is passed on in pieces rather than held without bound."""
        buffer = LineBuffer(limit=4)
        self.assertEqual(buffer.feed(b"abcdefghij"), [b"abcd\n", b"efgh\n"])
        self.assertEqual(buffer.feed(b"\n"), [b"ij\n"])


class RelayTests(unittest.SynchronousTestCase):
    """Workers' output reaches the supervisor's, line by line."""

    def test_passthrough(self) -> None:
        """stdout lines pass whole and unchanged; stderr lines name their worker; leftovers come last."""
        out, err = io.StringIO(), io.StringIO()
        relay = PassthroughRelay(out, err)
        relay.received(0, 1, b'{"msg":"a","worker":0}\n{"msg"')
        relay.received(1, 1, b'{"msg":"b","worker":1}\n')
        relay.received(0, 1, b':"c","worker":0}\n')
        relay.received(1, 2, b"Traceback (most recent call last):\n  boom")
        relay.finished(1)
        self.assertEqual(
            out.getvalue(), '{"msg":"a","worker":0}\n{"msg":"b","worker":1}\n{"msg":"c","worker":0}\n'
        )
        self.assertEqual(err.getvalue(), "worker 1: Traceback (most recent call last):\nworker 1:   boom\n")

    def test_event_relay(self) -> None:
        """A worker's JSON line becomes an event again: namespace, level, message, fields, time, worker."""
        events: list[dict[str, Any]] = []
        relay = EventRelay(events.append)
        line = {
            "ts": "2026-01-02T03:04:05.250Z",
            "level": "warn",
            "ns": "streamsrv.access",
            "msg": "GET /x {not a format}",
            "status": 404,
            "worker": 1,
        }
        relay.received(1, 1, json.dumps(line).encode() + b"\n")
        relay.received(1, 2, b"a stray line\n")
        [event, stray] = events
        self.assertEqual(event["log_namespace"], "streamsrv.access")
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["status"], 404)
        self.assertEqual(event["worker"], 1)
        self.assertEqual(event["log_time"], 1767323045.25)
        self.assertEqual(event["log_system"], "streamsrv.access#warn worker=1")
        from twisted.logger import formatEvent

        self.assertEqual(formatEvent(event), "GET /x {not a format}")
        self.assertEqual(formatEvent(stray), "a stray line")
        self.assertEqual(stray["log_level"], LogLevel.warn)
        self.assertEqual(stray["worker"], 1)


class WorkerLogObserverTests(unittest.SynchronousTestCase):
    """A worker's log lines say which worker wrote them."""

    def event(self, level: LogLevel = LogLevel.info) -> dict[str, Any]:
        return {
            "log_namespace": "streamsrv.test",
            "log_level": level,
            "log_format": "hello {who}",
            "who": "you",
            "log_time": 0.0,
        }

    def test_json_field(self) -> None:
        """JSON lines carry "worker": N beside the event's own fields."""
        out = io.StringIO()
        worker_log_observer("json", "info", out, 3)(self.event())
        record = json.loads(out.getvalue())
        self.assertEqual((record["worker"], record["msg"], record["who"]), (3, "hello you", "you"))

    def test_text_system(self) -> None:
        """Text lines name the worker inside the [system] part."""
        out = io.StringIO()
        worker_log_observer("text", "info", out, 2)(self.event())
        self.assertIn("[streamsrv.test#info worker=2] hello you", out.getvalue())

    def test_level(self) -> None:
        """Events below the level are dropped, and will_observe still tells (the access log's fast path)."""
        out = io.StringIO()
        observer = worker_log_observer("json", "warn", out, 0)
        observer(self.event(LogLevel.info))
        self.assertEqual(out.getvalue(), "")
        observer(self.event(LogLevel.error))
        self.assertEqual(json.loads(out.getvalue())["level"], "error")

        from twisted.logger import Logger, LogPublisher

        publisher = LogPublisher(observer)
        logger = Logger(observer=publisher)
        self.assertFalse(will_observe(logger, LogLevel.info))
        self.assertTrue(will_observe(logger, LogLevel.warn))


class WorkerIdentityTests(unittest.SynchronousTestCase):
    """Responses and metrics name the worker that produced them."""

    def test_header_on_every_response(self) -> None:
        """X-Streamsrv-Worker is on successes and errors alike."""
        media = Path(self.mktemp())
        media.mkdir()
        write_wav(media / "a.wav", 4096)
        built = build_site(media)
        identify_worker(built.site, 1)
        for target, status in ((b"/health", 200), (b"/stream/a.wav", 200), (b"/stream/missing.wav", 404)):
            raw = raw_exchange(built, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            code, headers, _ = parse_head(raw)
            self.assertEqual(code, status, target)
            self.assertEqual(headers.get(WORKER_HEADER.decode()), "1", target)

    def test_metrics_labelled(self) -> None:
        """Every sample of a worker's registry carries worker="N"; the families are unchanged."""
        metrics = Metrics(registry=WorkerLabelledRegistry(2))
        text = metrics.render().decode()
        samples = [line for line in text.splitlines() if line and not line.startswith("#")]
        self.assertTrue(samples)
        for line in samples:
            self.assertRegex(line, r'\{(.*,)?worker="2"(,.*)?\} ')
        self.assertIn('streamsrv_build_info{version="', text)


class ConfigTests(unittest.SynchronousTestCase):
    """What STREAMSRV_WORKERS > 1 refuses, and what `config check` says about it."""

    def test_unix_listeners_refused(self) -> None:
        """unix: (and systemd UNIX sockets) cannot be shared: refused at start, naming the variable."""
        for listen in ("unix:/run/streamsrv.sock", "systemd:domain=UNIX:index=0"):
            with self.assertRaises(ConfigError) as caught:
                load_settings({"WORKERS": "2", "LISTEN": f"tcp:8080 {listen}"}, environ={})
            [problem] = caught.exception.problems
            self.assertTrue(problem.startswith("STREAMSRV_WORKERS:"), problem)
            self.assertIn(listen, problem)
            self.assertEqual(load_settings({"LISTEN": listen}, environ={}).listen, (listen,))

    def test_shareable_listeners(self) -> None:
        """tcp, tcp6, ssl and systemd INET sockets are fine with several workers."""
        listen = "tcp:8080 tcp6:8081 ssl:8443:privateKey=k.pem systemd:domain=INET:index=0"
        self.assertEqual(load_settings({"WORKERS": "4", "LISTEN": listen}, environ={}).workers, 4)

    def test_warns_without_redis(self) -> None:
        """More than one worker without Redis: config check still says rate limits are per process."""
        warnings = config_warnings(load_settings({"WORKERS": "2"}, environ={}))
        self.assertTrue(
            any(w.startswith("STREAMSRV_WORKERS > 1 without STREAMSRV_REDIS_URL") for w in warnings)
        )
        redis = load_settings({"WORKERS": "2", "REDIS_URL": "redis://127.0.0.1:6379/0"}, environ={})
        self.assertFalse(any(w.startswith("STREAMSRV_WORKERS") for w in config_warnings(redis)))


class FakeReaderReactor:
    """Records addReader/removeReader, and whether stop was called."""

    def __init__(self) -> None:
        self.readers: list[Any] = []
        self.running = True
        self.stops = 0

    def addReader(self, reader: Any) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.remove(reader)

    def stop(self) -> None:
        self.stops += 1
        self.running = False


class WorkerSideTests(unittest.SynchronousTestCase):
    """A worker stops once, when told to or when its supervisor is gone."""

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.addCleanup(lambda: [_close(fd) for fd in (read, write)])
        return read, write

    def test_parent_watch_on_eof(self) -> None:
        """End of file on the supervisor's pipe calls on_gone once; bytes on it are ignored."""
        read, write = self.pipe()
        reactor = FakeReaderReactor()
        gone: list[bool] = []
        watch = ParentWatch(reactor, read, lambda: gone.append(True))
        watch.start()
        self.assertEqual(reactor.readers, [watch])
        os.write(write, b"noise")
        watch.doRead()
        self.assertEqual(gone, [])
        os.close(write)
        watch.doRead()
        self.assertEqual((gone, reactor.readers), ([True], []))
        watch.connectionLost(Failure(Exception("hung up")))
        self.assertEqual(gone, [True])

    def test_parent_watch_on_hangup(self) -> None:
        """A hang-up the reactor reports as a lost connection (epoll's EPOLLHUP) counts too."""
        read, _write = self.pipe()
        gone: list[bool] = []
        ParentWatch(FakeReaderReactor(), read, lambda: gone.append(True)).connectionLost(
            Failure(Exception("hung up"))
        )
        self.assertEqual(gone, [True])

    def test_stop_once(self) -> None:
        """SIGTERM from the supervisor and from systemd, then the pipe closing: one reactor.stop()."""
        reactor = FakeReaderReactor()
        stop = _StopOnce(reactor)
        stop("SIGTERM")
        stop("SIGTERM")
        stop("the supervisor is gone")
        self.assertEqual(reactor.stops, 1)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# --------------------------------------------------------------------------
# The supervisor, with a fake reactor


class FakeProcess:
    """What spawnProcess returns: a pid and the signals it was sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeProcessReactor(Clock):
    """A clock that records spawned processes instead of starting them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any], FakeProcess]] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: Any,
        childFDs: Any,  # noqa: N803 - IReactorProcess's name, passed by keyword
    ) -> Any:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, childFDs, process))
        return process

    def end(self, index: int, reason: Any) -> None:
        """Make the index-th spawned process exit with *reason*."""
        protocol = self.spawned[index][0]
        protocol.processExited(Failure(reason))
        protocol.processEnded(Failure(reason))


class FakePort:
    """A listening port that only knows its descriptor and whether it was closed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def stopListening(self) -> None:
        self.closed = True


class SupervisorTests(unittest.SynchronousTestCase):
    """WorkerSupervisor spawns, restarts with back-off, and stops its workers."""

    def setUp(self) -> None:
        from twisted.internet.error import ProcessDone, ProcessTerminated

        self.done, self.killed = ProcessDone(0), ProcessTerminated(signal=signal.SIGKILL)
        self.reactor = FakeProcessReactor()
        self.ports = [FakePort(11), FakePort(12)]
        self.out = io.StringIO()
        self.supervisor = WorkerSupervisor(
            self.reactor,
            listen=["tcp:1", "tcp:2"],
            count=2,
            command=lambda role: ["python", "worker", str(role.index), ",".join(map(str, role.listen_fds))],
            environ={"A": "b"},
            stop_timeout_s=20.0,
            relay=PassthroughRelay(self.out, io.StringIO()),
            backoff=RestartBackoff(base_s=0.5, max_s=4.0, stable_after_s=30.0),
            bind=lambda reactor, listen: list(self.ports),
        )
        self.supervisor.privilegedStartService()
        self.supervisor.startService()

    def test_spawns_each_worker_with_the_sockets(self) -> None:
        """Every worker gets the supervisor's sockets at fds 3, 4… and its own index."""
        self.assertEqual(len(self.reactor.spawned), 2)
        for index, (_protocol, args, fds, _process) in enumerate(self.reactor.spawned):
            self.assertEqual(args, ["python", "worker", str(index), "3,4"])
            self.assertEqual(fds, {0: "w", 1: "r", 2: "r", 3: 11, 4: 12})
        self.assertEqual(self.supervisor.pids, {0: 1000, 1: 1001})

    def test_output_relayed(self) -> None:
        """What a worker writes to stdout reaches the supervisor's stdout."""
        protocol = self.reactor.spawned[1][0]
        protocol.childDataReceived(1, b"hello\n")
        self.assertEqual(self.out.getvalue(), "hello\n")

    def test_restart_with_backoff(self) -> None:
        """Quick deaths in a row are restarted after 0.5, 1, 2, 4, 4 s; after a stable run, 0.5 s again."""
        waits = []
        current = 0
        for _ in range(5):
            self.reactor.advance(1.0)
            self.reactor.end(current, self.killed)
            self.assertIsNone(self.supervisor.pids[0])
            before = len(self.reactor.spawned)
            waited = 0.0
            while len(self.reactor.spawned) == before:
                self.reactor.advance(0.25)
                waited += 0.25
            waits.append(waited)
            current = len(self.reactor.spawned) - 1
            self.assertEqual(self.reactor.spawned[current][1][2], "0")
        self.assertEqual(waits, [0.5, 1.0, 2.0, 4.0, 4.0])
        self.reactor.advance(60.0)
        self.reactor.end(current, self.killed)
        self.reactor.advance(0.5)
        self.assertEqual(self.supervisor.pids[0], self.reactor.spawned[-1][3].pid)
        self.assertEqual(self.supervisor.pids[1], 1001)
        self.assertEqual(self.supervisor.restarts, 6)

    def test_stop(self) -> None:
        """stopService closes the sockets, SIGTERMs every worker, and fires once all have exited."""
        stopped = self.supervisor.stopService()
        self.assertTrue(all(port.closed for port in self.ports))
        self.assertEqual([p.signals for *_, p in self.reactor.spawned], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.reactor.end(0, self.done)
        self.assertNoResult(stopped)
        self.reactor.end(1, self.done)
        self.successResultOf(stopped)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 2, "no restart while stopping")
        self.assertEqual([p.signals for *_, p in self.reactor.spawned], [["TERM"], ["TERM"]])

    def test_stop_kills_the_late(self) -> None:
        """A worker still running stop_timeout_s after SIGTERM gets SIGKILL."""
        stopped = self.supervisor.stopService()
        self.reactor.end(0, self.done)
        self.reactor.advance(19.9)
        self.assertEqual(self.reactor.spawned[1][3].signals, ["TERM"])
        self.reactor.advance(0.2)
        self.assertEqual(self.reactor.spawned[1][3].signals, ["TERM", "KILL"])
        self.reactor.end(1, self.killed)
        self.successResultOf(stopped)

    def test_stop_cancels_pending_restart(self) -> None:
        """A worker waiting to be restarted when the stop comes is not started at all."""
        self.reactor.end(0, self.killed)
        stopped = self.supervisor.stopService()
        self.reactor.end(1, self.done)
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)


# --------------------------------------------------------------------------
# Sockets, with the real reactor


class _Hello(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello")
        self.transport.loseConnection()


class SocketTests(unittest.TestCase):
    """The supervisor binds without accepting; a worker adopts and serves."""

    def fetch(self, port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            data = b""
            while chunk := s.recv(100):
                data += chunk
            return data

    def test_bind_does_not_accept(self) -> None:
        """The supervisor's port listens (connections queue) but is never read: nothing answers."""
        [port] = bind_listeners(global_reactor, ["tcp:0:interface=127.0.0.1"])
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        with socket.create_connection(("127.0.0.1", number), timeout=5) as s:
            s.settimeout(0.3)
            with self.assertRaises(TimeoutError):
                s.recv(1)

    def test_bind_refuses_unix(self) -> None:
        """unix: endpoints are refused before anything is bound."""
        with self.assertRaises(ValueError):
            bind_listeners(global_reactor, ["unix:" + self.mktemp()])

    @inlineCallbacks
    def test_adopted_tcp(self) -> Any:
        """A worker adopts an inherited socket under its tcp: description, and closes the inherited fd."""
        [parent] = bind_listeners(global_reactor, ["tcp:0:interface=127.0.0.1"])
        self.addCleanup(parent.stopListening)
        number = parent.getHost().port
        fd = os.dup(parent.fileno())  # type: ignore[attr-defined]
        endpoint = adopted_endpoint(global_reactor, f"tcp:{number}:interface=127.0.0.1", fd)
        port = yield endpoint.listen(Factory.forProtocol(_Hello))
        with self.assertRaises(OSError):
            os.fstat(fd)  # adopted, then closed: only the port's own duplicate remains
        data = yield _in_thread(self.fetch, number)
        self.assertEqual(data, b"hello")
        yield port.stopListening()

    @inlineCallbacks
    def test_supervisor_close_leaves_workers_listening(self) -> Any:
        """The supervisor's stop closes only its own descriptor: a worker woken to accept at that
        instant finds no shut-down socket (in CI a shutdown() raced it and logged an unhandled
        EINVAL) and keeps serving until its own SIGTERM stops it."""
        [parent] = bind_listeners(global_reactor, ["tcp:0:interface=127.0.0.1"])
        number = parent.getHost().port
        fd = os.dup(parent.fileno())  # type: ignore[attr-defined]
        endpoint = adopted_endpoint(global_reactor, f"tcp:{number}:interface=127.0.0.1", fd)
        port = yield endpoint.listen(Factory.forProtocol(_Hello))
        yield close_shared(parent)
        port.doRead()  # the accept the worker's reactor would make in that instant
        self.assertEqual(self.flushLoggedErrors(), [])
        data = yield _in_thread(self.fetch, number)
        self.assertEqual(data, b"hello")
        yield port.stopListening()

    @inlineCallbacks
    def test_adopted_tcp6(self) -> Any:
        """tcp6: with an IPv6 interface is bound and adopted as an AF_INET6 socket."""
        if not socket.has_ipv6:
            raise unittest.SkipTest("no IPv6")
        try:
            [parent] = bind_listeners(global_reactor, ["tcp6:0:interface=\\:\\:1"])
        except Exception as e:
            raise unittest.SkipTest(f"cannot bind ::1 here: {e}") from None
        self.addCleanup(parent.stopListening)
        number = parent.getHost().port
        endpoint = adopted_endpoint(
            global_reactor,
            f"tcp6:{number}:interface=\\:\\:1",
            os.dup(parent.fileno()),  # type: ignore[attr-defined]
        )
        port = yield endpoint.listen(Factory.forProtocol(_Hello))

        def fetch6() -> bytes:
            with socket.create_connection(("::1", number), timeout=5) as s:
                data = b""
                while chunk := s.recv(100):
                    data += chunk
                return data

        data = yield _in_thread(fetch6)
        self.assertEqual(data, b"hello")
        yield port.stopListening()

    @inlineCallbacks
    def test_adopted_tls(self) -> Any:
        """An ssl: description wraps the adopted plain socket in TLS in the worker."""
        key, cert = make_certificate(Path(self.mktemp()))
        description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        [parent] = bind_listeners(global_reactor, [description])
        self.addCleanup(parent.stopListening)
        number = parent.getHost().port
        endpoint = adopted_endpoint(global_reactor, description, os.dup(parent.fileno()))  # type: ignore[attr-defined]
        port = yield endpoint.listen(Factory.forProtocol(_Hello))

        def fetch_tls() -> bytes:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", number), timeout=5) as raw:
                with context.wrap_socket(raw) as s:
                    data = b""
                    try:
                        while chunk := s.recv(100):
                            data += chunk
                    except ssl.SSLError:
                        pass
                    return data

        data = yield _in_thread(fetch_tls)
        self.assertEqual(data, b"hello")
        yield port.stopListening()


def _in_thread(f: Any, *args: Any) -> Deferred[Any]:
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in *directory*."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamsrv.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# --------------------------------------------------------------------------
# The real daemon


#: How long a replaced worker may take to answer again (0.5 s back-off plus start-up).
REPLACE_TIMEOUT_S = 20.0


def children(pid: int) -> list[int]:
    """The pids of *pid*'s children (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    """Every process below *pid*."""
    found: list[int] = []
    todo = children(pid)
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def alive(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int:
    """Which of *pids* holds the server end of the loopback TCP connection from *client_port*."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if int(local.rsplit(":", 1)[1], 16) == server_port and (
                    int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    inode = fields[9]
        if inode is not None and inode != "0":
            for pid in pids:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    try:
                        if os.readlink(fd) == f"socket:[{inode}]":
                            return pid
                    except OSError:
                        continue
        time.sleep(0.05)
    raise AssertionError(f"no process of {pids} holds the connection from port {client_port}")


class WorkerConnection:
    """A keep-alive connection, and the worker that accepted it."""

    def __init__(self, conn: http.client.HTTPConnection, worker: int) -> None:
        self.conn = conn
        self.worker = worker

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
        self.conn.request(method, path, headers=headers or {})
        response = self.conn.getresponse()
        body = response.read()
        assert int(response.getheader("X-Streamsrv-Worker", "-1")) == self.worker, "connection moved?"
        return response, body

    def pid(self) -> int:
        """The worker's pid, as its /metrics says."""
        _, body = self.request("GET", "/metrics")
        found = re.search(rb"streamsrv_worker_info\{([^}]*)\} 1\.0", body)
        assert found is not None, body[:500]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1).decode()))
        assert labels["worker"] == str(self.worker), labels
        return int(labels["pid"])


#: What systemd does before starting a socket-activated service: the listening socket at
#: fd 3, LISTEN_FDS=1, LISTEN_FDNAMES and LISTEN_PID naming the process, which execs the daemon.
_SOCKET_ACTIVATION = """
import os, socket, sys
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(128)
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="http", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-c",
         "from twisted.scripts.twistd import run; run()", *sys.argv[2:]])
"""


class SocketActivatedDaemon(Daemon):
    """A daemon started the way systemd starts a socket-activated service."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str], port: int) -> None:
        argv = [sys.executable, "-c", _SOCKET_ACTIVATION, str(port), "-n", "--pidfile=", "streamsrv", *args]
        super().__init__(workdir, args, env, port, argv=argv)


class MultiWorkerTestCase(DaemonTestCase):
    """Daemons with several workers, and ways to reach each worker."""

    def connect(
        self, daemon: Daemon, wanted: set[int], timeout: float = READY_TIMEOUT_S, tls: bool = False
    ) -> dict[int, WorkerConnection]:
        """A ready keep-alive connection to each *wanted* worker.

        Opens a batch of connections at once (the kernel gives each to
        whichever worker accepts first) and keeps one per worker that
        answers /health/ready with 200, until every wanted worker is found.
        """
        found: dict[int, WorkerConnection] = {}
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                raise AssertionError(f"daemon exited with {daemon.process.returncode}\n{daemon.output()}")
            batch = []
            for _ in range(8):
                if tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        "127.0.0.1", daemon.port, timeout=10, context=context
                    )
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
                try:
                    conn.connect()
                except OSError as e:
                    last = e
                    conn.close()
                    continue
                batch.append(conn)
            for conn in batch:
                try:
                    conn.request("GET", "/health/ready")
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as e:
                    last = e
                    conn.close()
                    continue
                worker = int(response.getheader("X-Streamsrv-Worker", "-1"))
                last = (response.status, worker)
                if response.status == 200 and worker in wanted and worker not in found:
                    found[worker] = WorkerConnection(conn, worker)
                    self.addCleanup(conn.close)
                else:
                    conn.close()
            if set(found) == wanted:
                return found
            time.sleep(0.1)
        raise AssertionError(
            f"workers {sorted(wanted - set(found))} not reached (last: {last!r})\n{daemon.output()}"
        )

    def wait_gone(self, pids: list[int], timeout: float) -> None:
        """Every pid in *pids* ends within *timeout*."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        self.assertEqual([p for p in pids if alive(p)], [], "processes left behind")


class MultiWorkerDaemonTests(MultiWorkerTestCase):
    """twistd -n streamsrv --workers 2, end to end."""

    def test_two_workers_replace_and_stop(self) -> None:
        """Two workers (two pids) serve byte-exact ranges; one killed with SIGKILL is replaced while the
        other keeps serving; SIGTERM to the supervisor then ends every process cleanly."""
        media = self.media_dir()
        data = write_wav(media / "tone.wav", 200_000)
        daemon = self.start(
            ["--media-dir", str(media), "--workers", "2"],
            {"STREAMSRV_LOG_FORMAT": "json", "STREAMSRV_SHUTDOWN_GRACE_S": "1"},
        )
        workers = self.connect(daemon, {0, 1})
        pids = {index: conn.pid() for index, conn in workers.items()}
        self.assertEqual(len(set(pids.values())), 2)
        self.assertEqual(sorted(children(daemon.process.pid)), sorted(pids.values()))
        for index, conn in workers.items():
            response, body = conn.request(
                "GET", "/stream/tone.wav", {"Range": "bytes=1000-1999", "X-Request-ID": f"w-{index}"}
            )
            self.assertEqual(response.status, 206)
            self.assertEqual(body, data[1000:2000])

        # A further request on the connection is read only after the range finished (and was logged).
        workers[0].request("GET", "/health")
        os.kill(pids[0], signal.SIGKILL)
        self.wait_gone([pids[0]], 5.0)
        # Worker 1 carries on meanwhile, on its connection and on new ones.
        response, body = workers[1].request("GET", "/stream/tone.wav", {"Range": "bytes=0-99"})
        self.assertEqual((response.status, body), (206, data[:100]))
        response, _ = daemon.request("GET", "/health")
        self.assertEqual(response.status, 200)
        replaced = self.connect(daemon, {0}, timeout=REPLACE_TIMEOUT_S)[0]
        new_pid = replaced.pid()
        self.assertNotEqual(new_pid, pids[0])
        self.assertIn(new_pid, children(daemon.process.pid))
        response, body = replaced.request("GET", "/stream/tone.wav", {"Range": "bytes=5-9"})
        self.assertEqual((response.status, body), (206, data[5:10]))

        everything = [daemon.process.pid, *descendants(daemon.process.pid)]
        for conn in (workers[1], replaced):
            conn.conn.close()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.wait(EXIT_TIMEOUT_S)
        self.assertIn(code, CLEAN_EXITS, daemon.output())
        self.wait_gone(everything, 5.0)
        self.assertTrue(daemon.refuses_connections())

        records = [json.loads(line) for line in daemon.stdout().splitlines()]
        restart = [r for r in records if "killed by SIGKILL" in r["msg"]]
        self.assertEqual(len(restart), 1, records)
        self.assertEqual((restart[0]["ns"], restart[0]["worker"]), ("streamsrv.processes", 0))
        access = {
            r["request_id"]: r["worker"]
            for r in records
            if r["ns"] == "streamsrv.access" and "request_id" in r
        }
        self.assertEqual((access["w-0"], access["w-1"]), (0, 1))
        self.assertNotIn("Traceback", daemon.output())

    def test_workers_follow_a_killed_supervisor(self) -> None:
        """Killed with SIGKILL, the supervisor takes its workers with it (they see their stdin close)."""
        media = self.media_dir()
        write_wav(media / "tone.wav", 10_000)
        daemon = self.start(
            ["--media-dir", str(media), "--workers", "2"], {"STREAMSRV_SHUTDOWN_GRACE_S": "1"}
        )
        for conn in self.connect(daemon, {0, 1}).values():
            conn.conn.close()
        below = descendants(daemon.process.pid)
        self.assertGreaterEqual(len(below), 2)
        daemon.process.kill()
        daemon.wait(EXIT_TIMEOUT_S)
        self.wait_gone(below, 10.0)
        self.assertTrue(daemon.refuses_connections())

    def test_sigterm_drains_streams_in_workers(self) -> None:
        """SIGTERM to the supervisor: no worker accepts any more at once, a download in flight keeps
        flowing for the grace period and is then cut, and everything exits cleanly."""
        grace_s = 1.0
        keep_reading = server_send_buffer_max() + 4 * 1024 * 1024
        media = self.media_dir()
        data = write_wav(media / "long.wav", 3 * keep_reading)
        daemon = self.start(
            ["--media-dir", str(media), "--workers", "2"], {"STREAMSRV_SHUTDOWN_GRACE_S": str(grace_s)}
        )
        for conn in self.connect(daemon, {0, 1}).values():
            conn.conn.close()
        client, body = self.start_long_download(daemon)

        started, got = self.terminate_while_reading(daemon, client, body, grace_s, keep_reading)
        self.assertEqual(got, data[: len(got)])
        code = daemon.wait(grace_s + EXIT_TIMEOUT_S)
        self.assertGreaterEqual(time.monotonic() - started, grace_s)
        self.assertIn(code, CLEAN_EXITS, daemon.output())
        self.assertIn("grace period over: cutting 1 streams", daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    def test_tls_listener(self) -> None:
        """An ssl: listener is bound by the supervisor and served over TLS by each worker."""
        media = self.media_dir()
        data = write_wav(media / "tone.wav", 10_000)
        key, cert = make_certificate(Path(self.mktemp()).absolute())
        port = free_port()
        workdir = Path(self.mktemp())
        workdir.mkdir()
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        env = {"STREAMSRV_DATA_DIR": str(self.data), "STREAMSRV_SHUTDOWN_GRACE_S": "1"}
        daemon = Daemon(workdir, ["--media-dir", str(media), "--workers", "2", "--listen", listen], env, port)
        self.addCleanup(daemon.stop)
        workers = self.connect(daemon, {0, 1}, tls=True)
        for conn in workers.values():
            response, body = conn.request("GET", "/stream/tone.wav", {"Range": "bytes=10-19"})
            self.assertEqual((response.status, body), (206, data[10:20]))
            conn.conn.close()
        daemon.process.send_signal(signal.SIGTERM)
        self.assertIn(daemon.wait(EXIT_TIMEOUT_S), CLEAN_EXITS, daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    def test_systemd_socket_activation(self) -> None:
        """systemd:domain=INET:index=0: the supervisor takes the inherited socket, both workers serve it."""
        media = self.media_dir()
        data = write_wav(media / "tone.wav", 10_000)
        port = free_port()
        workdir = Path(self.mktemp())
        workdir.mkdir()
        env = {"STREAMSRV_DATA_DIR": str(self.data), "STREAMSRV_SHUTDOWN_GRACE_S": "1"}
        daemon = SocketActivatedDaemon(
            workdir,
            ["--media-dir", str(media), "--workers", "2", "--listen", "systemd:domain=INET:index=0"],
            env,
            port,
        )
        self.addCleanup(daemon.stop)
        workers = self.connect(daemon, {0, 1})
        for conn in workers.values():
            response, body = conn.request("GET", "/stream/tone.wav", {"Range": "bytes=10-19"})
            self.assertEqual((response.status, body), (206, data[10:20]))
            conn.conn.close()
        for pid in children(daemon.process.pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            self.assertFalse([v for v in environ if v.startswith(b"LISTEN_")], "systemd's variables leaked")
        daemon.process.send_signal(signal.SIGTERM)
        self.assertIn(daemon.wait(EXIT_TIMEOUT_S), CLEAN_EXITS, daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    def test_one_worker_is_one_process(self) -> None:
        """STREAMSRV_WORKERS=1 (the default) is today's daemon: no worker process, header or label."""
        media = self.media_dir()
        write_wav(media / "tone.wav", 10_000)
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_SHUTDOWN_GRACE_S": "1"})
        daemon.wait_ready()
        response, _ = daemon.request("GET", "/health")
        self.assertIsNone(response.getheader("X-Streamsrv-Worker"))
        _, metrics = daemon.request("GET", "/metrics")
        self.assertNotIn(b'worker="', metrics)
        self.assertNotIn(b"streamsrv_worker_info", metrics)
        for pid in children(daemon.process.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            self.assertNotIn(b"run_worker", cmdline)
        daemon.process.send_signal(signal.SIGTERM)
        self.assertIn(daemon.wait(EXIT_TIMEOUT_S), CLEAN_EXITS, daemon.output())


#: The HS256 secret of the Redis test's deployment.
SECRET = "workers-test-secret-0123456789abcdef-0123456789abcdef"


class SharedCatalogEventsTests(MultiWorkerTestCase):
    """With Redis, a catalog change is announced once to every worker's sockets, not once per worker."""

    def test_one_announcement_per_change(self) -> None:
        """A file added to the library reaches a `system` subscriber on each worker exactly once."""
        try:
            import websockets
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None
        import asyncio

        from tests.services import RedisServerProcess

        redis = RedisServerProcess.start_for(self)
        media = self.media_dir()
        write_wav(media / "first.wav", 10_000)
        env = {
            "STREAMSRV_REDIS_URL": redis.url,
            "STREAMSRV_JWT_SECRET": SECRET,
            "STREAMSRV_SHUTDOWN_GRACE_S": "1",
        }
        daemon = self.start(["--media-dir", str(media), "--workers", "2"], env)
        worker_of_pid = {}
        for index, conn in self.connect(daemon, {0, 1}).items():
            worker_of_pid[conn.pid()] = index
            conn.conn.close()
        clock = Clock()
        clock.advance(time.time())
        from streamsrv.auth.jwt import TokenIssuer

        token = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock
        ).issue(sub="ops", roles=["admin"], ttl_s=600)

        async def subscriber(ws: Any) -> None:
            await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ready["type"] == "ready", ready
            await ws.send(json.dumps({"type": "subscribe", "data": {"channels": ["system"]}}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert subscribed["type"] == "subscribed", subscribed

        async def main() -> dict[int, list[dict[str, Any]]]:
            sockets: dict[int, Any] = {}
            spare: list[Any] = []
            deadline = time.monotonic() + READY_TIMEOUT_S
            while len(sockets) < 2 and time.monotonic() < deadline:
                ws = await websockets.connect(f"ws://127.0.0.1:{daemon.port}/ws", open_timeout=10)
                # The handshake is Autobahn's own 101 (no X-Streamsrv-Worker): ask the kernel.
                owner = socket_owner(daemon.port, ws.local_address[1], list(worker_of_pid))
                worker = worker_of_pid[owner]
                if worker in sockets:
                    spare.append(ws)
                else:
                    await subscriber(ws)
                    sockets[worker] = ws
            for ws in spare:
                await ws.close()
            assert len(sockets) == 2, f"sockets only on workers {sorted(sockets)}"
            # Moved in whole, as a finished file would be: one change to announce.
            staging = Path(self.mktemp())
            staging.mkdir()
            write_wav(staging / "second.wav", 10_000)
            os.rename(staging / "second.wav", media / "second.wav")
            received: dict[int, list[dict[str, Any]]] = {0: [], 1: []}

            async def collect(worker: int, ws: Any) -> None:
                try:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "event":
                            received[worker].append(frame["data"]["event"])
                except (asyncio.CancelledError, websockets.ConnectionClosed):
                    pass

            tasks = [asyncio.ensure_future(collect(w, ws)) for w, ws in sockets.items()]
            # inotify's debounce is 1 s: wait until both saw it, then as long again for duplicates.
            waited = 0.0
            while waited < 15 and not all(
                any(e.get("path") == "second.wav" for e in events) for events in received.values()
            ):
                await asyncio.sleep(0.1)
                waited += 0.1
            await asyncio.sleep(3.0)
            for task in tasks:
                task.cancel()
            for ws in sockets.values():
                await ws.close()
            return received

        received = asyncio.run(main())
        for worker, events in received.items():
            added = [e for e in events if e.get("type") == "track.added" and e.get("path") == "second.wav"]
            self.assertEqual(len(added), 1, f"worker {worker}'s socket got {events}\n{daemon.output()}")
        daemon.process.send_signal(signal.SIGTERM)
        self.assertIn(daemon.wait(EXIT_TIMEOUT_S), CLEAN_EXITS, daemon.output())


if sys.platform != "linux":  # pragma: no cover - /proc and inotify
    MultiWorkerDaemonTests.skip = "needs Linux /proc"  # type: ignore[attr-defined]

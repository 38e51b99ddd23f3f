# -*- test-case-name: tests.test_tap -*-
"""The composition root: Options, makeService, the twistd plugin and RootService."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application, IService, IServiceCollection, IServiceMaker, MultiService
from twisted.internet import reactor as global_reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import FilteringLogObserver, ILogObserver, Logger
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.syslog import SyslogObserver
from twisted.trial import unittest

from streamsrv import startup, tap
from streamsrv.alerts.service import AlertEvaluator
from streamsrv.health.checks import ReactorLagMonitor
from streamsrv.processes.relay import EventRelay
from streamsrv.processes.supervisor import WorkerSupervisor
from streamsrv.service import RootService
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.web.site import StreamsrvSite

TOKEN = "tap-test-metrics-token-0123456789abcdef"


class ThreadedMemoryReactor(MemoryReactorClock):
    """A memory reactor (ports recorded, time by hand) whose threads report back through the real one.

    The catalog's and the stores' threads call ``callFromThread`` (and the
    stores' pools start from ``callWhenRunning``); the daemon
    is handed this reactor explicitly, as twistd hands it the real one.  It
    does not claim ``IReactorFromThreads``, so the decode pool stays cold as
    under any test reactor.
    """

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        global_reactor.callFromThread(f, *args, **kwargs)

    def callWhenRunning(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        # The stores' connection pools start their threads when the reactor
        # runs (the real one is running under trial)...
        return global_reactor.callWhenRunning(f, *args, **kwargs)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *args: Any, **kwargs: Any) -> Any:
        # ...and stop them at its shutdown, so no pool thread outlives the run.
        return global_reactor.addSystemEventTrigger(phase, event, f, *args, **kwargs)

    def removeSystemEventTrigger(self, trigger: Any) -> None:
        global_reactor.removeSystemEventTrigger(trigger)


def _options(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.SynchronousTestCase):
    """Command-line parsing of ``twistd streamsrv``."""

    def test_defaults(self) -> None:
        """With no arguments nothing is set and cli_values is empty (env and profile decide)."""
        options = _options()
        self.assertIsNone(options["media-dir"])
        self.assertEqual(options["listen"], [])
        self.assertEqual(options.cli_values(), {})

    def test_media_dir(self) -> None:
        """--media-dir and -m set MEDIA_DIR."""
        self.assertEqual(_options("--media-dir", "music").cli_values(), {"MEDIA_DIR": "music"})
        self.assertEqual(_options("-m", "music").cli_values(), {"MEDIA_DIR": "music"})

    def test_listen_repeatable(self) -> None:
        """--listen and -l accumulate, in order, into one space-separated LISTEN."""
        options = _options("--listen", "tcp:8080:interface=127.0.0.1", "-l", "tcp6:8081:interface=\\:\\:1")
        self.assertEqual(options["listen"], ["tcp:8080:interface=127.0.0.1", "tcp6:8081:interface=\\:\\:1"])
        self.assertEqual(
            options.cli_values(), {"LISTEN": "tcp:8080:interface=127.0.0.1 tcp6:8081:interface=\\:\\:1"}
        )

    def test_listen_not_shared(self) -> None:
        """Each Options instance has its own listen list."""
        _options("--listen", "tcp:1")
        self.assertEqual(_options()["listen"], [])

    def test_cli_values_mapping(self) -> None:
        """Every option maps to its STREAMSRV_* name without the prefix."""
        options = _options(
            "--media-dir", "m",
            "--env-file", "f.env",
            "--env", "staging",
            "--data-dir", "d",
            "--workers", "3",
            "--log-level", "debug",
            "--log-format", "json",
            "-l", "tcp:1",
        )  # fmt: skip
        self.assertEqual(
            options.cli_values(),
            {
                "MEDIA_DIR": "m",
                "ENV_FILE": "f.env",
                "ENV": "staging",
                "DATA_DIR": "d",
                "WORKERS": "3",
                "LOG_LEVEL": "debug",
                "LOG_FORMAT": "json",
                "LISTEN": "tcp:1",
            },
        )
        self.assertEqual(options["env-file"], "f.env")

    def test_unknown_option(self) -> None:
        """An unknown option is a usage error."""
        self.assertRaises(usage.UsageError, _options, "--nope")

    def test_no_positional_arguments(self) -> None:
        """Stray positional arguments are refused."""
        self.assertRaises(usage.UsageError, _options, "extra")


class MakeServiceMixin:
    """makeService with the environment patched to temporary directories."""

    def setUp(self) -> None:
        self.media = Path(self.mktemp())  # type: ignore[attr-defined]
        self.media.mkdir()
        (self.media / "a.mp3").write_bytes(b"\xff\xfb" + b"\0" * 1000)
        self.data = Path(self.mktemp())  # type: ignore[attr-defined]
        self.environ: dict[str, str] = {"STREAMSRV_DATA_DIR": str(self.data)}
        self.patch(os, "environ", self.environ)  # type: ignore[attr-defined]
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)  # type: ignore[attr-defined]
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)  # type: ignore[attr-defined]
        self.reactor = ThreadedMemoryReactor()

    def make(self, *argv: str) -> RootService:
        """makeService for *argv* on the memory reactor."""
        return tap.makeService(_options(*argv), reactor=self.reactor)

    def make_failing(self, *argv: str) -> str:
        """makeService must exit with status 1; return what it wrote to stderr."""
        with self.assertRaises(SystemExit) as caught:  # type: ignore[attr-defined]
            self.make(*argv)
        self.assertEqual(caught.exception.code, 1)  # type: ignore[attr-defined]
        self.assertEqual(self.reactor.tcpServers, [])  # type: ignore[attr-defined]
        return self.stderr.getvalue()


def _listeners(root: MultiService) -> list[StreamServerEndpointService]:
    return [s for s in root if isinstance(s, StreamServerEndpointService)]


def _stub(site: StreamsrvSite) -> StubTreq:
    stub = StubTreq(site.resource)
    stub._agent._serverFactory = site
    return stub


class ReadinessTests(MakeServiceMixin, unittest.TestCase):
    """Readiness follows the service's life and the stores it waits for (real database thread)."""

    async def test_ports_bound_only_on_start(self) -> None:
        """Nothing is bound before start; readiness waits for the stores; stop unlistens."""
        root = self.make("--media-dir", str(self.media), "-l", "tcp:9004:interface=127.0.0.1")
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertTrue(self.data.is_dir())
        site = _listeners(root)[0].factory
        self.assertEqual(_get(site, "/health/ready").code, 503)
        root.startService()
        self.assertEqual(len(self.reactor.tcpServers), 1)
        for _ in range(1000):  # the SQLite threads answer on the real reactor
            if _get(site, "/health/ready").code == 200:
                break
            await deferLater(global_reactor, 0.01, lambda: None)
        self.assertTrue(root.getServiceNamed("revocations").loaded)
        self.assertEqual(_get(site, "/health/ready").code, 200)
        self.assertEqual(_get(site, "/health").code, 200)
        # The development profile serves /health/detailed without credentials.
        self.assertEqual(_get(site, "/health/detailed").code, 200)
        await root.stopService()
        self.assertEqual(_get(site, "/health/ready").code, 503)
        self.assertFalse(root.getServiceNamed("streams").accepting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


def _get(site: StreamsrvSite, path: str) -> Any:
    """GET *path* from *site* in memory, synchronously; return the response."""
    stub = _stub(site)
    d = stub.get("http://streamsrv.test" + path)
    stub.flush()
    result: list[Any] = []
    d.addBoth(result.append)
    return result[0]


class MakeServiceTests(MakeServiceMixin, unittest.SynchronousTestCase):
    """makeService wires the whole daemon into one RootService."""

    def get(self, site: StreamsrvSite, path: str, headers: dict[str, str] | None = None) -> Any:
        """GET *path* from *site* in memory; return the response."""
        stub = _stub(site)
        d = stub.get("http://streamsrv.test" + path, headers={k: [v] for k, v in (headers or {}).items()})
        stub.flush()
        return self.successResultOf(d)

    def test_children(self) -> None:
        """The root holds the tracker, the lag monitor, one listener per --listen and readiness, in order."""
        root = self.make(
            "--media-dir", str(self.media), "--listen", "tcp:0:interface=127.0.0.1", "-l", "tcp:0"
        )
        self.assertIsInstance(root, RootService)
        IService(root)
        children = list(root)
        names = [child.name for child in children]
        # The revocation store opens before the cache that reads it (and closes after it).
        self.assertLess(names.index("revocation-store"), names.index("revocations"))
        self.assertIsInstance(root.getServiceNamed("streams"), StreamTracker)
        self.assertIsInstance(root.getServiceNamed("reactor-lag"), ReactorLagMonitor)
        self.assertIsInstance(root.getServiceNamed("alerts"), AlertEvaluator)
        self.assertEqual(len(_listeners(root)), 2)
        self.assertEqual(children[-1].name, "readiness")
        sites = {listener.factory for listener in _listeners(root)}
        self.assertEqual(len(sites), 1)
        self.assertIsInstance(sites.pop(), StreamsrvSite)

    def test_default_listen(self) -> None:
        """Without --listen or STREAMSRV_LISTEN there is one loopback listener on 8080."""
        root = self.make("--media-dir", str(self.media))
        self.assertEqual(len(_listeners(root)), 1)
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([(p, i) for p, _, _, i in self.reactor.tcpServers], [(8080, "127.0.0.1")])

    def test_listen_from_environment(self) -> None:
        """STREAMSRV_LISTEN (space-separated) gives the listeners when --listen is absent."""
        self.environ["STREAMSRV_LISTEN"] = "tcp:9001:interface=127.0.0.1 tcp:9002:interface=127.0.0.1"
        root = self.make("--media-dir", str(self.media))
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual(sorted(p for p, _, _, _ in self.reactor.tcpServers), [9001, 9002])

    def test_command_line_beats_environment(self) -> None:
        """--listen and --media-dir win over their variables (even an invalid one)."""
        self.environ["STREAMSRV_LISTEN"] = "tcp:9001"
        self.environ["STREAMSRV_MEDIA_DIR"] = str(self.media / "missing")
        root = self.make("--media-dir", str(self.media), "-l", "tcp:9003:interface=127.0.0.1")
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([p for p, _, _, _ in self.reactor.tcpServers], [9003])

    def test_metrics_include_process(self) -> None:
        """The daemon's /metrics has request counters and the process collectors."""
        if not os.path.exists("/proc/self/stat"):
            raise unittest.SkipTest("process metrics need /proc")
        root = self.make("--media-dir", str(self.media), "-l", "tcp:9009")
        site = _listeners(root)[0].factory
        self.get(site, "/health")
        response = self.get(site, "/metrics")
        self.assertEqual(response.code, 200)
        body = self.successResultOf(response.content())
        self.assertIn(b'streamsrv_http_requests_total{method="GET",route="health",status="200"} 1.0', body)
        self.assertIn(b"process_resident_memory_bytes", body)

    def test_env_file(self) -> None:
        """--env-file is read: a metrics token set there protects /metrics."""
        env_file = Path(self.mktemp())
        env_file.write_text(f"STREAMSRV_METRICS_TOKEN={TOKEN}\n")
        root = self.make("--media-dir", str(self.media), "--env-file", str(env_file), "-l", "tcp:9006")
        site = _listeners(root)[0].factory
        self.assertEqual(self.get(site, "/metrics").code, 401)
        self.assertEqual(self.get(site, "/metrics", {"Authorization": "Bearer " + TOKEN}).code, 200)

    def test_environment_beats_env_file(self) -> None:
        """A variable in the environment wins over the same one in the env file."""
        env_file = Path(self.mktemp())
        env_file.write_text("STREAMSRV_LISTEN=tcp:9007\n")
        self.environ["STREAMSRV_ENV_FILE"] = str(env_file)
        self.environ["STREAMSRV_LISTEN"] = "tcp:9008"
        root = self.make("--media-dir", str(self.media))
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual([p for p, _, _, _ in self.reactor.tcpServers], [9008])

    def test_log_observer_offered(self) -> None:
        """The root carries a log observer for twistd."""
        root = self.make("--media-dir", str(self.media))
        self.assertTrue(ILogObserver.providedBy(root.log_observer))


class InvalidConfigTests(MakeServiceMixin, unittest.SynchronousTestCase):
    """Invalid configuration stops start-up with status 1, listing every problem."""

    def test_every_problem_listed(self) -> None:
        """Each bad variable is named on stderr, all at once, and no port is bound."""
        self.environ["STREAMSRV_WORKERS"] = "abc"
        self.environ["STREAMSRV_LOG_LEVEL"] = "loud"
        self.environ["STREAMSRV_SHUTDOWN_GRACE_S"] = "-1"
        err = self.make_failing("--media-dir", str(self.media))
        self.assertIn("invalid configuration", err)
        for name in ("STREAMSRV_WORKERS", "STREAMSRV_LOG_LEVEL", "STREAMSRV_SHUTDOWN_GRACE_S"):
            self.assertIn(name, err)
        self.assertGreaterEqual(len([line for line in err.splitlines() if line.startswith("  - ")]), 3)

    def test_missing_media_dir(self) -> None:
        """A --media-dir that does not exist is refused by name."""
        err = self.make_failing("--media-dir", str(self.media / "missing"))
        self.assertIn("STREAMSRV_MEDIA_DIR", err)

    def test_bad_alert_rules(self) -> None:
        """An invalid STREAMSRV_ALERT_RULES_FILE ends start-up with status 1, naming the variable and rule."""
        rules = Path(self.mktemp())
        rules.write_text('[[rules]]\nname = "x"\nmeasure = "nonsense"\nabove = 1\n')
        self.environ["STREAMSRV_ALERT_RULES_FILE"] = str(rules)
        err = self.make_failing("--media-dir", str(self.media))
        self.assertIn("STREAMSRV_ALERT_RULES_FILE", err)
        self.assertIn("rule 'x': measure: must be one of", err)
        # Refused with the configuration, before the development credentials are printed.
        self.assertIn("invalid configuration", err)
        self.assertNotIn("development credentials", err)
        self.assertNotIn("Bearer", err)

    def test_unknown_variable(self) -> None:
        """A misspelt STREAMSRV_* variable is a problem, not silently ignored."""
        self.environ["STREAMSRV_WORKER"] = "2"
        self.assertIn("STREAMSRV_WORKER", self.make_failing("--media-dir", str(self.media)))

    def test_bad_env_file(self) -> None:
        """A bad value in the env file is reported too."""
        env_file = Path(self.mktemp())
        env_file.write_text("STREAMSRV_MAX_RANGES=many\n")
        err = self.make_failing("--media-dir", str(self.media), "--env-file", str(env_file))
        self.assertIn("STREAMSRV_MAX_RANGES", err)

    def test_production_refusals(self) -> None:
        """Production without secrets is refused before anything is built."""
        err = self.make_failing("--env", "production", "--media-dir", str(self.media))
        self.assertIn("STREAMSRV_JWT_SECRET", err)

    def test_data_dir_not_creatable(self) -> None:
        """A data dir that cannot be created exits 1 naming STREAMSRV_DATA_DIR."""
        blocker = Path(self.mktemp())
        blocker.write_text("")
        self.environ["STREAMSRV_DATA_DIR"] = str(blocker / "sub")
        err = self.make_failing("--media-dir", str(self.media))
        self.assertIn("STREAMSRV_DATA_DIR", err)

    def test_no_secret_on_stderr(self) -> None:
        """A refused secret's value is never printed."""
        secret = "short-secret-value"
        self.environ["STREAMSRV_JWT_SECRET"] = secret
        err = self.make_failing("--env", "production", "--media-dir", str(self.media))
        self.assertIn("STREAMSRV_JWT_SECRET", err)
        self.assertNotIn(secret, err)


class PluginTests(unittest.SynchronousTestCase):
    """The twistd plugin."""

    def test_found(self) -> None:
        """getPlugins(IServiceMaker) finds exactly one ``streamsrv`` maker wired to streamsrv.tap."""
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "streamsrv"]
        self.assertEqual(len(makers), 1)
        maker = makers[0]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertEqual(maker.module, "streamsrv.tap")
        self.assertTrue(maker.description)


class RootServiceTests(unittest.SynchronousTestCase):
    """RootService offers its log observer to twistd's application."""

    def test_sets_observer_on_application(self) -> None:
        """Attached to an Application, it sets the ILogObserver component and becomes a child."""
        events: list[dict[str, Any]] = []
        observer = FilteringLogObserver(events.append, [])
        application = Application("streamsrv")
        root = RootService(observer)
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
        self.assertIn(root, list(IServiceCollection(application)))
        self.assertIs(root.parent, IServiceCollection(application))

    def test_no_observer(self) -> None:
        """Without an observer the application keeps twistd's default."""
        application = Application("streamsrv")
        RootService().setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_plain_parent(self) -> None:
        """Under a plain MultiService it is just a child."""
        parent = MultiService()
        root = RootService(FilteringLogObserver(lambda e: None, []))
        root.setServiceParent(parent)
        self.assertEqual(list(parent), [root])


class LogTargetTests(unittest.SynchronousTestCase):
    """log_target: where twistd's own options send the log, by twistd's rules."""

    def target(self, **options: Any) -> startup.LogTarget:
        return startup.log_target({"nodaemon": True, "logfile": None, "syslog": False, **options})

    def test_not_twistd(self) -> None:
        """Without twistd's options (a test, a bench): stdout."""
        self.assertEqual(startup.log_target(None), startup.LogTarget("stdout"))

    def test_foreground(self) -> None:
        """twistd -n, with no --logfile or with --logfile -: stdout."""
        self.assertEqual(self.target(), startup.LogTarget("stdout"))
        self.assertEqual(self.target(logfile="-"), startup.LogTarget("stdout"))

    def test_logfile(self) -> None:
        """--logfile FILE, in the foreground or not: that file."""
        self.assertEqual(self.target(logfile="s.log"), startup.LogTarget("file", path="s.log"))
        self.assertEqual(
            self.target(logfile="s.log", nodaemon=False), startup.LogTarget("file", path="s.log")
        )

    def test_daemon_default(self) -> None:
        """A daemon without --logfile writes twistd.log, as twistd does."""
        self.assertEqual(self.target(nodaemon=False), startup.LogTarget("file", path="twistd.log"))

    def test_daemon_stdout(self) -> None:
        """A daemon told --logfile - is left to twistd, which refuses it."""
        self.assertEqual(self.target(nodaemon=False, logfile="-"), startup.LogTarget("twistd"))

    def test_syslog(self) -> None:
        """--syslog wins over --logfile, with --prefix."""
        self.assertEqual(
            self.target(syslog=True, prefix="ss", logfile="s.log"), startup.LogTarget("syslog", prefix="ss")
        )

    def test_logs_to_stdout(self) -> None:
        """Only a stdout target is a foreground run for the supervisor's relay."""
        self.assertTrue(startup.logs_to_stdout(None))
        self.assertFalse(startup.logs_to_stdout({"nodaemon": True, "logfile": "s.log"}))
        self.assertFalse(startup.logs_to_stdout({"nodaemon": True, "syslog": True}))


class LogDestinationTests(MakeServiceMixin, unittest.SynchronousTestCase):
    """streamsrv's observer, at STREAMSRV_LOG_LEVEL, wherever twistd is told to log."""

    def setUp(self) -> None:
        super().setUp()
        self.rotated: list[tuple[Any, Any]] = []
        # No real SIGUSR1 handler in the test process: record what would be installed.
        self.patch(startup, "rotate_on_sigusr1", lambda f, r: self.rotated.append((f, r)))
        self.addCleanup(lambda: [f.close() for f, _ in self.rotated])
        self.opened: list[tuple[Any, ...]] = []
        self.sent: list[str] = []
        self.patch(SyslogObserver, "openlog", staticmethod(lambda *a: self.opened.append(a)))
        self.patch(SyslogObserver, "syslog", staticmethod(lambda p, m: self.sent.append(m)))

    def make_with_parent(self, level: str = "info", **parent: Any) -> RootService:
        self.environ["STREAMSRV_LOG_LEVEL"] = level
        self.environ["STREAMSRV_LOG_FORMAT"] = "json"
        options = _options("--media-dir", str(self.media))
        options.parent = {"nodaemon": True, "logfile": None, "syslog": False, **parent}  # type: ignore[attr-defined]
        return tap.makeService(options, reactor=self.reactor)

    def emit(self, root: RootService) -> None:
        """An info and an error event through the observer the root offers twistd."""
        observer = root.log_observer
        assert observer is not None
        log = Logger(namespace="streamsrv.access", observer=observer)
        log.info("GET /health 200")
        log.error("disk full")

    def assert_file(self, path: Path, kept: list[str]) -> None:
        """*path* holds JSON lines, the streamsrv.access ones' messages *kept*."""
        records = [json.loads(line) for line in path.read_text().splitlines()]
        self.assertEqual([r["msg"] for r in records if r["ns"] == "streamsrv.access"], kept)

    def test_foreground(self) -> None:
        """Under twistd -n without --logfile: JSON lines on stdout at the level."""
        self.emit(self.make_with_parent("error"))
        self.emit(self.make_with_parent("info"))
        records = [json.loads(line) for line in self.stdout.getvalue().splitlines()]
        messages = [r["msg"] for r in records if r["ns"] == "streamsrv.access"]
        self.assertEqual(messages, ["disk full", "GET /health 200", "disk full"])
        self.assertEqual(self.rotated, [])

    def test_logfile(self) -> None:
        """--logfile FILE: JSON lines in FILE at the level; SIGUSR1 rotates it on the daemon's reactor."""
        error_log, info_log = Path(self.mktemp()), Path(self.mktemp())
        self.emit(self.make_with_parent("error", logfile=str(error_log)))
        self.emit(self.make_with_parent("info", logfile=str(info_log)))
        self.assert_file(error_log, ["disk full"])
        self.assert_file(info_log, ["GET /health 200", "disk full"])
        self.assertEqual([r for _, r in self.rotated], [self.reactor] * 2)
        self.assertEqual(
            [f.path for f, _ in self.rotated], [str(error_log.absolute()), str(info_log.absolute())]
        )
        self.assertEqual(self.stdout.getvalue(), "")

    def test_daemon_writes_twistd_log(self) -> None:
        """A daemon without --logfile: twistd.log in the directory it was started from, at the level."""
        self.media = self.media.absolute()
        self.environ["STREAMSRV_DATA_DIR"] = str(self.data.absolute())
        self.addCleanup(os.chdir, os.getcwd())
        for level in ("error", "info"):
            where = Path(self.mktemp()).absolute()
            where.mkdir()
            os.chdir(where)
            self.emit(self.make_with_parent(level, nodaemon=False))
            self.assert_file(
                where / "twistd.log", ["disk full"] if level == "error" else ["GET /health 200", "disk full"]
            )

    def test_daemon_stdout_left_to_twistd(self) -> None:
        """A daemon told --logfile - gets no observer: twistd refuses to run."""
        self.assertIsNone(self.make_with_parent(nodaemon=False, logfile="-").log_observer)

    def test_syslog(self) -> None:
        """--syslog: twistd's syslog lines at the level, with --prefix."""
        self.emit(self.make_with_parent("error", syslog=True, prefix="streamsrv-e"))
        self.emit(self.make_with_parent("info", syslog=True, prefix="streamsrv-i"))
        self.assertEqual([a[0] for a in self.opened], ["streamsrv-e", "streamsrv-i"])
        self.assertEqual(self.sent, ["[-] disk full", "[-] GET /health 200", "[-] disk full"])
        self.assertEqual(self.rotated, [])

    def test_logfile_cannot_open(self) -> None:
        """A --logfile that cannot be opened ends start-up with status 1 and one line naming it."""
        path = Path(self.mktemp()) / "missing" / "streamsrv.log"
        with self.assertRaises(SystemExit) as caught:
            self.make_with_parent(logfile=str(path))
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            self.stderr.getvalue(), f"streamsrv: --logfile: cannot open {path} (No such file or directory)\n"
        )
        self.assertEqual(self.reactor.tcpServers, [])

    def test_supervisor_relays_events_to_the_file(self) -> None:
        """With worker processes and --logfile, the supervisor turns their JSON lines into events."""
        self.environ["STREAMSRV_WORKERS"] = "2"
        root = self.make_with_parent(logfile=self.mktemp())
        self.assertIsNotNone(root.log_observer)
        [supervisor] = [s for s in root if isinstance(s, WorkerSupervisor)]
        self.assertIsInstance(supervisor.relay, EventRelay)

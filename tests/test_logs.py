# -*- test-case-name: tests.test_logs -*-
"""The daemon's log observers: JSON lines, text, level filtering, no credentials."""

from __future__ import annotations

import io
import json
import signal
import syslog
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.python.syslog import SyslogObserver
from twisted.trial import unittest

from streamsrv.logs import (
    event_as_json_line,
    log_file_observer,
    make_log_observer,
    make_syslog_observer,
    rotate_on_sigusr1,
    will_observe,
)

#: A fixed event time: 2024-01-02T03:04:05.250Z.
T0 = 1704164645.25


def _event(fmt: str, level: LogLevel = LogLevel.info, **fields: Any) -> dict[str, Any]:
    """A twisted.logger event as a Logger would emit it."""
    event: dict[str, Any] = {
        "log_format": fmt,
        "log_level": level,
        "log_namespace": "streamsrv.test",
        "log_time": T0,
        "log_source": None,
    }
    event.update(fields)
    return event


def _emit(observer: Any) -> Logger:
    """A Logger in namespace ``streamsrv.test`` whose events reach *observer* only."""
    publisher = LogPublisher(observer)
    return Logger(namespace="streamsrv.test", observer=publisher)


class JsonLineTests(unittest.SynchronousTestCase):
    """event_as_json_line renders one event as one JSON object on one line."""

    def test_shape(self) -> None:
        """The line is a JSON object with ts, level, ns, msg and the event's fields."""
        line = event_as_json_line(_event("stream {path} ended after {sent} bytes", path="a b.mp3", sent=12))
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        record = json.loads(line)
        self.assertEqual(record["ts"], "2024-01-02T03:04:05.250Z")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["ns"], "streamsrv.test")
        self.assertEqual(record["msg"], "stream a b.mp3 ended after 12 bytes")
        self.assertEqual(record["path"], "a b.mp3")
        self.assertEqual(record["sent"], 12)

    def test_internal_fields_left_out(self) -> None:
        """twisted.logger's own ``log_*`` keys are not copied into the record."""
        record = json.loads(event_as_json_line(_event("hello")))
        self.assertEqual(sorted(record), ["level", "msg", "ns", "ts"])

    def test_newlines_stay_inside_one_line(self) -> None:
        """A message or field with newlines still gives exactly one line."""
        line = event_as_json_line(_event("a\nb {x}", x="c\nd"))
        self.assertEqual(line.count("\n"), 1)
        record = json.loads(line)
        self.assertEqual(record["msg"], "a\nb c\nd")
        self.assertEqual(record["x"], "c\nd")

    def test_levels(self) -> None:
        """Every twisted.logger level is written by its name."""
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
            record = json.loads(event_as_json_line(_event("x", level=level)))
            self.assertEqual(record["level"], level.name)

    def test_values_made_json(self) -> None:
        """Non-JSON values (bytes, objects, tuples, dicts) become JSON-friendly ones."""
        record = json.loads(
            event_as_json_line(_event("x", raw=b"abc", obj=object(), pair=(1, "b"), nested={1: [b"z"]}))
        )
        self.assertEqual(record["raw"], "abc")
        self.assertTrue(record["obj"].startswith("<object object"))
        self.assertEqual(record["pair"], [1, "b"])
        self.assertEqual(record["nested"], {"1": ["z"]})

    def test_credentials_never_written(self) -> None:
        """Fields named like credentials are left out, and out of the message too."""
        secrets = {
            "token": "s3cret-token",
            "access_token": "s3cret-access",
            "refresh_token": "s3cret-refresh",
            "authorization": "Bearer s3cret-auth",
            "Authorization": "Bearer s3cret-AUTH",
            "sig": "s3cret-sig",
            "secret": "s3cret-secret",
            "password": "s3cret-password",
            "metrics_token": "s3cret-metrics",
        }
        fmt = " ".join("{" + name + "}" for name in secrets)
        line = event_as_json_line(_event("got " + fmt, user="alice", **secrets))
        for value in secrets.values():
            self.assertNotIn(value, line)
        record = json.loads(line)
        for name in secrets:
            self.assertNotIn(name, record)
        self.assertEqual(record["user"], "alice")

    def test_nested_credentials_never_written(self) -> None:
        """A credential inside a dict field (headers, query) is not written either."""
        line = event_as_json_line(_event("x", headers={"authorization": "Bearer s3cret", "accept": "*/*"}))
        self.assertNotIn("s3cret", line)
        self.assertEqual(json.loads(line)["headers"]["accept"], "*/*")

    def test_failure_has_traceback(self) -> None:
        """An event with a failure carries its traceback in ``failure``."""
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(event_as_json_line(_event("oops", level=LogLevel.critical, log_failure=failure)))
        self.assertIn("Traceback", record["failure"])
        self.assertIn("ZeroDivisionError", record["failure"])
        self.assertEqual(record["msg"], "oops")

    def test_legacy_event(self) -> None:
        """An event from twisted.python.log is one clean line, without its legacy duplicates."""
        out = io.StringIO()
        observer = make_log_observer("json", "info", out)
        legacy = legacy_log.LogPublisher(publishPublisher=LogPublisher(observer))
        legacy.msg("(TCP Port 8080 Closed)", system="-")
        record = json.loads(out.getvalue())
        self.assertEqual(record["msg"], "(TCP Port 8080 Closed)")
        self.assertEqual(record["ns"], "log_legacy")
        self.assertEqual(record["level"], "info")
        for key in ("message", "isError", "time", "system"):
            self.assertNotIn(key, record)

    def test_missing_level_and_namespace(self) -> None:
        """An event without level or namespace (legacy log.msg) still renders."""
        record = json.loads(event_as_json_line({"log_format": "legacy", "log_time": T0}))
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["ns"], "-")
        self.assertEqual(record["msg"], "legacy")


class LogObserverTests(unittest.SynchronousTestCase):
    """make_log_observer: the observer offered to twistd."""

    def test_json_lines(self) -> None:
        """In JSON format every event at or above the level is one parseable line."""
        out = io.StringIO()
        log = _emit(make_log_observer("json", "info", out))
        log.info("one {n}", n=1)
        log.warn("two {n}", n=2)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(
            [(r["msg"], r["level"], r["n"]) for r in records], [("one 1", "info", 1), ("two 2", "warn", 2)]
        )

    def test_filters_below_level(self) -> None:
        """Events below the configured level are dropped; those at or above kept."""
        out = io.StringIO()
        log = _emit(make_log_observer("json", "warn", out))
        log.debug("debug")
        log.info("info")
        log.warn("warn")
        log.error("error")
        log.critical("critical")
        self.assertEqual(
            [json.loads(line)["msg"] for line in out.getvalue().splitlines()], ["warn", "error", "critical"]
        )

    def test_debug_keeps_everything(self) -> None:
        """At level debug nothing is filtered."""
        out = io.StringIO()
        log = _emit(make_log_observer("json", "debug", out))
        log.debug("d")
        log.info("i")
        self.assertEqual(len(out.getvalue().splitlines()), 2)

    def test_text_format(self) -> None:
        """In text format events are twistd's classic lines with namespace and level."""
        out = io.StringIO()
        log = _emit(make_log_observer("text", "info", out))
        log.debug("hidden")
        log.info("stream {path} started", path="a.mp3")
        text = out.getvalue()
        self.assertNotIn("hidden", text)
        self.assertEqual(len(text.splitlines()), 1)
        self.assertIn("[streamsrv.test#info] stream a.mp3 started", text)
        self.assertRaises(ValueError, json.loads, text)

    def test_text_format_hides_credentials(self) -> None:
        """Text lines do not show a credential even when the message names it."""
        out = io.StringIO()
        log = _emit(make_log_observer("text", "info", out))
        log.info("auth with {token}", token="s3cret-token")
        self.assertNotIn("s3cret-token", out.getvalue())
        self.assertIn("auth with", out.getvalue())

    def test_text_failure_has_traceback(self) -> None:
        """A logged failure shows its traceback in text format too."""
        out = io.StringIO()
        log = _emit(make_log_observer("text", "info", out))
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("it broke")
        self.assertIn("it broke", out.getvalue())
        self.assertIn("ZeroDivisionError", out.getvalue())


class WillObserveTests(unittest.TestCase):
    """Whether an event at a level can reach an observer that keeps it."""

    def test_level_observer_above(self) -> None:
        """Only level observers set above the level: nobody keeps the event."""
        publisher = LogPublisher(make_log_observer("json", "warn", io.StringIO()))
        logger = Logger(namespace="streamsrv.test", observer=publisher)
        self.assertFalse(will_observe(logger, LogLevel.info))
        self.assertTrue(will_observe(logger, LogLevel.warn))
        self.assertTrue(will_observe(logger, LogLevel.error))

    def test_level_observer_at_or_below(self) -> None:
        """A level observer at info keeps info events."""
        publisher = LogPublisher(make_log_observer("text", "info", io.StringIO()))
        logger = Logger(namespace="streamsrv.test", observer=publisher)
        self.assertTrue(will_observe(logger, LogLevel.info))
        self.assertFalse(will_observe(logger, LogLevel.debug))

    def test_other_observer(self) -> None:
        """Any other observer (a list, twistd's log file) counts as keeping everything."""
        events: list[dict[str, Any]] = []
        publisher = LogPublisher(make_log_observer("json", "error", io.StringIO()), events.append)
        logger = Logger(namespace="streamsrv.test", observer=publisher)
        self.assertTrue(will_observe(logger, LogLevel.debug))
        self.assertTrue(will_observe(Logger(observer=events.append), LogLevel.debug))

    def test_no_observer(self) -> None:
        """A publisher with no observer at all keeps nothing."""
        self.assertFalse(will_observe(Logger(observer=LogPublisher()), LogLevel.critical))


class LogFileObserverTests(unittest.SynchronousTestCase):
    """log_file_observer: ``twistd --logfile FILE`` with streamsrv's level and format."""

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def make(self, fmt: str, level: str) -> tuple[Logger, LogFile]:
        observer, log_file = log_file_observer(fmt, level, str(self.path))
        self.addCleanup(log_file.close)
        return _emit(observer), log_file

    def test_info_dropped_at_error(self) -> None:
        """At level error an info event is not written; an error event is, as one JSON line."""
        log, _ = self.make("json", "error")
        log.info("GET /health 200", status=200)
        log.error("disk full")
        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        self.assertEqual([(r["level"], r["msg"]) for r in records], [("error", "disk full")])

    def test_info_kept_at_info(self) -> None:
        """At level info the info event is written, every line parseable JSON with its fields."""
        log, _ = self.make("json", "info")
        log.debug("hidden")
        log.info("GET /health 200", status=200)
        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        self.assertEqual([(r["msg"], r["status"]) for r in records], [("GET /health 200", 200)])

    def test_text_format(self) -> None:
        """In text format the file has twistd's classic lines, credentials hidden."""
        log, _ = self.make("text", "info")
        log.info("auth with {token}", token="s3cret-token")
        text = self.path.read_text()
        self.assertIn("[streamsrv.test#info] auth with", text)
        self.assertNotIn("s3cret-token", text)
        self.assertRaises(ValueError, json.loads, text)

    def test_appends(self) -> None:
        """An existing file is appended to, as twistd does."""
        self.path.write_text("earlier line\n")
        log, _ = self.make("json", "info")
        log.info("later")
        lines = self.path.read_text().splitlines()
        self.assertEqual(lines[0], "earlier line")
        self.assertEqual(json.loads(lines[1])["msg"], "later")

    def test_twistds_rotation(self) -> None:
        """The file is twistd's LogFile (1 MB rotation, none deleted); rotating moves it to FILE.1."""
        log, log_file = self.make("json", "info")
        self.assertIsInstance(log_file, LogFile)
        self.assertEqual((log_file.rotateLength, log_file.maxRotatedFiles), (1000000, None))
        log.info("before")
        log_file.rotate()
        log.info("after")
        rotated = Path(f"{self.path}.1")
        self.assertEqual([json.loads(line)["msg"] for line in rotated.read_text().splitlines()], ["before"])
        self.assertEqual([json.loads(line)["msg"] for line in self.path.read_text().splitlines()], ["after"])

    def test_cannot_open(self) -> None:
        """A file in a directory that does not exist raises OSError."""
        self.assertRaises(OSError, log_file_observer, "json", "info", str(self.path / "no" / "such.log"))


class _Signals:
    """The part of the signal module rotate_on_sigusr1 uses, recording what it installs."""

    SIGUSR1 = signal.SIGUSR1

    def __init__(self, current: Any) -> None:
        self.handlers: dict[int, Any] = {signal.SIGUSR1: current}

    def getsignal(self, signalnum: int) -> Any:
        return self.handlers[signalnum]

    def signal(self, signalnum: int, handler: Any) -> Any:
        self.handlers[signalnum] = handler


class _CallNow:
    """A reactor whose callFromThread calls at once, recording what it was given."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.calls.append(f)
        f()


class RotateOnSignalTests(unittest.SynchronousTestCase):
    """rotate_on_sigusr1: SIGUSR1 rotates the log file, as twistd's own --logfile."""

    def setUp(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log_file = LogFile.fromFullPath(str(path))
        self.addCleanup(self.log_file.close)

    def test_rotates_in_reactor_thread(self) -> None:
        """The handler hands the rotation to the reactor; the file moves to FILE.1."""
        signals, reactor = _Signals(signal.SIG_DFL), _CallNow()
        self.assertTrue(rotate_on_sigusr1(self.log_file, reactor, signals))
        self.log_file.write("before\n")
        signals.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertEqual(reactor.calls, [self.log_file.rotate])
        self.assertEqual(Path(f"{self.path}.1").read_text(), "before\n")

    def test_unset_handler(self) -> None:
        """No handler at all (None, as getsignal says for one not set from Python) counts as free."""
        signals = _Signals(None)
        self.assertTrue(rotate_on_sigusr1(self.log_file, _CallNow(), signals))

    def test_existing_handler_kept(self) -> None:
        """A SIGUSR1 handler already installed is left alone (twistd's rule)."""

        def theirs(signum: int, frame: Any) -> None:
            pass

        signals = _Signals(theirs)
        self.assertFalse(rotate_on_sigusr1(self.log_file, _CallNow(), signals))
        self.assertIs(signals.handlers[signal.SIGUSR1], theirs)


class SyslogObserverTests(unittest.SynchronousTestCase):
    """make_syslog_observer: twistd's ``--syslog`` observer at STREAMSRV_LOG_LEVEL."""

    def setUp(self) -> None:
        self.opened: list[tuple[Any, ...]] = []
        self.sent: list[tuple[int, str]] = []
        # Class attributes called through the instance: staticmethod keeps them unbound.
        self.patch(SyslogObserver, "openlog", staticmethod(lambda *a: self.opened.append(a)))
        self.patch(SyslogObserver, "syslog", staticmethod(lambda p, m: self.sent.append((p, m))))

    def test_prefix(self) -> None:
        """The syslog connection is opened with twistd's --prefix."""
        make_syslog_observer("streamsrv-a", "info")
        self.assertEqual([a[0] for a in self.opened], ["streamsrv-a"])

    def test_info_dropped_at_error(self) -> None:
        """At level error an info event is not sent; an error is, as twistd would send it."""
        log = _emit(make_syslog_observer("streamsrv", "error"))
        log.info("GET /health 200")
        log.error("disk full")
        self.assertEqual([m for _, m in self.sent], ["[-] disk full"])

    def test_info_kept_at_info(self) -> None:
        """At level info the info event is sent at LOG_INFO; a failure at LOG_CRIT with its traceback."""
        log = _emit(make_syslog_observer("streamsrv", "info"))
        log.info("GET /health 200")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("it broke")
        self.assertEqual(self.sent[0], (syslog.LOG_INFO, "[-] GET /health 200"))
        self.assertEqual(self.sent[1], (syslog.LOG_CRIT, "[-] it broke"))
        self.assertTrue(any("ZeroDivisionError" in m for p, m in self.sent[2:] if p == syslog.LOG_CRIT))

    def test_priority_follows_the_level(self) -> None:
        """Each level has its syslog priority, so journald's and syslog's filters see what the level says."""
        log = _emit(make_syslog_observer("streamsrv", "debug"))
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log.critical("c")
        self.assertEqual(
            self.sent,
            [
                (syslog.LOG_DEBUG, "[-] d"),
                (syslog.LOG_INFO, "[-] i"),
                (syslog.LOG_WARNING, "[-] w"),
                (syslog.LOG_ERR, "[-] e"),
                (syslog.LOG_CRIT, "[-] c"),
            ],
        )

    def test_credentials_hidden(self) -> None:
        """A credential the message names is not sent."""
        log = _emit(make_syslog_observer("streamsrv", "info"))
        log.info("auth with {token}", token="s3cret-token")
        self.assertEqual(len(self.sent), 1)
        self.assertNotIn("s3cret-token", self.sent[0][1])

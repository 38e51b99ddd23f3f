# -*- test-case-name: tests.test_logs -*-
"""Log observers for the daemon: JSON lines or text, filtered by level.

streamsrv logs through ``twisted.logger`` with keyword fields.  This module
turns events into what operators read: one JSON object per line (for
journald, Docker, Loki…) or twistd's familiar text lines, keeping only events
at or above the configured level.  It never writes a field whose name says it
holds a credential, and it never blocks on anything but the output file.

:func:`will_observe` tells a hot path (the access log, the audit trail) whether
an event at some level can reach any observer at all, so that it need not build
an event every observer would drop.  Only observers made here know their level;
any other observer (a test's list) is assumed to want everything.

The same lines go wherever twistd is told to log: :func:`make_log_observer`
writes to stdout or to the :class:`~twisted.python.logfile.LogFile` of
``--logfile`` (:func:`log_file_observer`, rotated as twistd rotates it, on
SIGUSR1 too: :func:`rotate_on_sigusr1`); :func:`make_syslog_observer` is
twistd's ``--syslog`` observer behind the same level filter.
"""

from __future__ import annotations

import json
import signal
import time
from types import FrameType
from typing import IO, Any, Protocol, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

#: STREAMSRV_LOG_LEVEL values and the twisted.logger levels they stand for.
LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

#: Field names never written out, whatever their value (compared lower-cased).
_SECRET_FIELDS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "sig",
        "secret",
        "password",
        "api_key",
        "jwt",
    }
)

#: Name endings that also mark a credential (``metrics_token``, ``jwt_secret``…).
_SECRET_SUFFIXES = ("_token", "_secret", "_password")

#: Keys of events from the legacy ``twisted.python.log`` API that only repeat
#: what ``ts``, ``level`` and ``msg`` already say.
_LEGACY_KEYS = frozenset({"message", "time", "isError", "format", "why", "system"})

#: What a credential's value is replaced with where its name must stay.
REDACTED = "REDACTED"


def is_secret_field(name: object) -> bool:
    """Whether a field (or dict key) called *name* holds a credential."""
    if not isinstance(name, str):
        return False
    lowered = name.lower().replace("-", "_")
    return lowered in _SECRET_FIELDS or lowered.endswith(_SECRET_SUFFIXES)


def _redacted(event: dict[str, Any]) -> dict[str, Any]:
    """*event* with credential fields' values replaced, for formatting its message."""
    if not any(is_secret_field(key) for key in event):
        return event
    return {key: REDACTED if is_secret_field(key) else value for key, value in event.items()}


def _plain(value: object) -> object:
    """A JSON-friendly form of a log field value (scalars kept, others repr'd).

    Credentials inside a mapping (``headers``, ``query``…) are redacted.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): REDACTED if is_secret_field(k) else _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def event_as_json_line(event: dict[str, Any]) -> str:
    """Render one log event as a single JSON line.

    :param event: a twisted.logger event.
    :return: ``{"ts", "level", "ns", "msg", ...fields}`` plus a newline;
        ``ts`` is UTC with milliseconds (``2024-01-02T03:04:05.250Z``).
    """
    level = event.get("log_level")
    when = event.get("log_time")
    if not isinstance(when, (int, float)):
        when = time.time()
    millis = min(int(when % 1 * 1000), 999)
    namespace = event.get("log_namespace", "-")
    skipped = _LEGACY_KEYS if namespace == "log_legacy" else frozenset()
    record: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{millis:03d}Z",
        "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "ns": namespace,
        "msg": formatEvent(_redacted(event)),
    }
    for key, value in event.items():
        if key.startswith("log_") or is_secret_field(key) or key in record or key in skipped:
            continue
        record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


#: Levels in increasing order of severity, as numbers to compare.
_SEVERITY = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}


class LevelFilteringObserver(FilteringLogObserver):
    """A :class:`FilteringLogObserver` that drops everything below one level, and says which.

    :ivar min_severity: the rank of the lowest level it passes (see :func:`will_observe`).
    """

    def __init__(self, observer: ILogObserver, level: LogLevel) -> None:
        super().__init__(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])
        self.min_severity = _SEVERITY[level]


def will_observe(logger: Any, level: LogLevel) -> bool:
    """Whether an event *logger* emits at *level* can reach an observer that keeps it.

    ``False`` only when the logger publishes to a :class:`LogPublisher` all of
    whose observers are :class:`LevelFilteringObserver` set above *level*
    (twistd in the foreground with ``STREAMSRV_LOG_LEVEL=warn``: access events
    are dropped).  Any other observer counts as one that keeps everything.
    """
    publisher = logger.observer
    if type(publisher) is not LogPublisher:
        return True
    observers = getattr(publisher, "_observers", None)
    if observers is None:
        return True
    severity = _SEVERITY[level]
    for observer in observers:
        if severity >= getattr(observer, "min_severity", -1):
            return True
    return False


def make_log_observer(fmt: str, level: str, out: IO[str]) -> ILogObserver:
    """Build the observer streamsrv offers to twistd.

    :param fmt: ``json`` or ``text``.
    :param level: one of :data:`LEVELS`.
    :param out: the file to write to (captured now, before twistd redirects
        ``sys.stdout`` into the log system).
    """
    if fmt == "json":
        inner: ILogObserver = FileLogObserver(out, event_as_json_line)
    else:
        inner = FileLogObserver(out, lambda e: formatEventAsClassicLogText(_redacted(e)))
    return LevelFilteringObserver(inner, LEVELS.get(level, LogLevel.info))


def log_file_observer(fmt: str, level: str, path: str) -> tuple[ILogObserver, LogFile]:
    """The observer for ``twistd --logfile PATH``, and the file it writes to.

    The file is the one twistd itself would open: a
    :class:`~twisted.python.logfile.LogFile` from ``fromFullPath`` (created,
    or appended to; rotated to ``PATH.1``, ``PATH.2``… when it reaches 1 MB,
    none deleted), opened now.

    :param fmt: ``json`` or ``text``, as :func:`make_log_observer`.
    :param level: one of :data:`LEVELS`.
    :raise OSError: when the file cannot be opened or created.
    """
    log_file = LogFile.fromFullPath(path)
    return make_log_observer(fmt, level, cast(IO[str], log_file)), log_file


class SignalModule(Protocol):
    """What streamsrv uses of the :mod:`signal` module (tests pass their own)."""

    @property
    def SIGTERM(self) -> int: ...

    @property
    def SIGINT(self) -> int: ...

    @property
    def SIGUSR1(self) -> int: ...

    def getsignal(self, signalnum: int, /) -> Any: ...

    def signal(self, signalnum: int, handler: Any, /) -> Any: ...


def rotate_on_sigusr1(log_file: LogFile, reactor: Any, signals: SignalModule = signal) -> bool:
    """Rotate *log_file* on SIGUSR1, as twistd does for its own ``--logfile``.

    Like twistd, only when nothing else handles SIGUSR1 already, and the
    rotation itself happens in the reactor's thread, between two writes.

    :param reactor: runs the rotation (``callFromThread``).
    :return: whether the handler was installed.
    """
    if signals.getsignal(signals.SIGUSR1):
        return False

    def rotate(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(log_file.rotate)

    signals.signal(signals.SIGUSR1, rotate)
    return True


@implementer(ILogObserver)
class _Redacting:
    """Passes a copy of each event, its credential fields' values replaced, to a legacy observer."""

    def __init__(self, emit: Any) -> None:
        self._observer = LegacyLogObserverWrapper(emit)

    def __call__(self, event: dict[str, Any]) -> None:
        # A copy: the legacy wrapper adds its own keys to the event it is given.
        self._observer(dict(_redacted(event)))


@implementer(ILogObserver)
class _SyslogPriority:
    """Gives each event the syslog priority of its level (twistd: LOG_INFO, or LOG_ALERT for a failure)."""

    def __init__(self, observer: Any, priorities: dict[LogLevel, int]) -> None:
        self._observer = observer
        self._priorities = priorities

    def __call__(self, event: dict[str, Any]) -> None:
        priority = self._priorities.get(event.get("log_level"))  # type: ignore[arg-type]
        if priority is not None and "syslogPriority" not in event:
            event = {**event, "syslogPriority": priority}
        self._observer(event)


def make_syslog_observer(prefix: str, level: str) -> ILogObserver:
    """twistd's ``--syslog`` observer, with *prefix* (``--prefix``), keeping events at *level* and above.

    Lines are twistd's own (``[system] message``): syslog adds the time, host
    and prefix itself, so ``STREAMSRV_LOG_FORMAT`` does not apply.  The
    priority is the event's level (``debug`` ``LOG_DEBUG``, ``info``
    ``LOG_INFO``, ``warn`` ``LOG_WARNING``, ``error`` ``LOG_ERR``,
    ``critical`` and failures ``LOG_CRIT``), so that journald and syslog
    filter as the level says.  The syslog connection is opened now
    (``openlog``).
    """
    import syslog

    from twisted.python.syslog import SyslogObserver  # the syslog module: Unix only

    priorities = {
        LogLevel.debug: syslog.LOG_DEBUG,
        LogLevel.info: syslog.LOG_INFO,
        LogLevel.warn: syslog.LOG_WARNING,
        LogLevel.error: syslog.LOG_ERR,
        LogLevel.critical: syslog.LOG_CRIT,
    }
    inner = _SyslogPriority(_Redacting(SyslogObserver(prefix).emit), priorities)
    return LevelFilteringObserver(inner, LEVELS.get(level, LogLevel.info))

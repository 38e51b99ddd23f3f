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
any other observer (twistd's log file, a test's list) is assumed to want
everything.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    formatEvent,
    formatEventAsClassicLogText,
)

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

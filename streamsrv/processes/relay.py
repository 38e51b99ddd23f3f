# -*- test-case-name: tests.test_workers_processes -*-
"""The supervisor's side of its workers' output: log lines relayed whole, each naming its worker.

A worker writes log lines to stdout and stray text to stderr, both pipes
read by the supervisor.  :class:`LineBuffer` cuts the bytes into whole
lines; :class:`PassthroughRelay` passes them on to the supervisor's own
stdout/stderr (a foreground daemon logging with streamsrv's observer), and
:class:`EventRelay` turns the workers' JSON lines back into log events
(:func:`event_from_json`) in the supervisor's log system (twistd's log file
or syslog).  This module must never interleave two workers' lines within a
line, never block the reactor on its own output, and never import
:mod:`streamsrv.tap`.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Final, Protocol

from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

#: Every module of the package logs under the name operators know from its start.
log = Logger(namespace="streamsrv.processes")


#: A relayed log line longer than this is passed on in pieces, bytes.
MAX_LINE_BYTES: Final = 1024 * 1024


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

# -*- test-case-name: tests.test_analytics_spill -*-
"""What the analytics store still holds when it must close without its database: spill files.

When the final flush at stop fails (PostgreSQL restarting during a rolling
deploy), :class:`~streamsrv.analytics.store.AnalyticsStore` hands its buffer
to a :class:`SpillDirectory`, which writes it as one JSON-lines file of its
own, ``STREAMSRV_DATA_DIR/analytics-spill/<UTC time>-<pid>-<random>.jsonl``
(mode 0600; a temporary name, fsync, rename, fsync of the directory): a header line
with the counts, then one ``{"event": {…}}`` or ``{"session": {…}}`` per line.

At start a store *takes* the files it finds, oldest first: each is claimed by
taking an ``flock`` on it and renaming it to ``<stem>.<claimant>.claimed``,
so two processes starting together never take the same file; a claim whose
holder died (its lock went with it) is taken again.  The store puts the
records back into its buffer and has the file deleted only after the flush
that wrote them committed.  Every spilled event carries a ``spill_key``
(``<stem>:<n>``, kept by a re-spill) that the ``events`` table holds unique,
so a file replayed twice (a crash between the commit and the delete) still
writes each event once; sessions are upserted by id, so replaying one again
rewrites the same row.  At most *max_records* events (and as many sessions)
are taken: the newest; the rest are counted as dropped.

This module must never touch a file on the reactor thread (every call goes
through :class:`~streamsrv.threads.IThreads`), never let an unreadable file
stop start-up (it is renamed ``*.bad`` and reported once), and never import
the HTTP adapters or take a request.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from streamsrv.analytics.records import AnalyticsEvent, SessionRecord, SpilledEvent
from streamsrv.threads import IThreads

__all__ = [
    "SPILL_DIR",
    "Claim",
    "SpillDirectory",
    "Taken",
    "release_claims",
    "take_spills",
    "write_spill",
]

log = Logger()

#: The directory under ``STREAMSRV_DATA_DIR``.
SPILL_DIR: Final = "analytics-spill"

#: The ``spill`` field of a file's header line: the format this module writes and reads.
FORMAT_VERSION: Final = 1

_EVENT_FIELDS: Final = tuple(f.name for f in fields(AnalyticsEvent))
_SESSION_FIELDS: Final = tuple(f.name for f in fields(SessionRecord))


@dataclass(frozen=True)
class Claim:
    """A spill file this process took: where it now is, and the descriptor holding its lock."""

    path: Path
    fd: int


@dataclass
class Taken:
    """
    What :func:`take_spills` found.

    :ivar claims: The files taken (valid ones; their records are below).
    :ivar events: Their events, oldest first.
    :ivar sessions: Their sessions' latest states, by id, oldest first.
    :ivar events_dropped: Events beyond *max_records* (the oldest), not taken.
    :ivar sessions_dropped: Sessions beyond *max_records* (the oldest), not taken.
    :ivar set_aside: ``(file name, reason)`` of each unreadable file renamed ``*.bad``.
    :ivar skipped: ``(file name, reason)`` of each file an ``OSError`` kept from being
        claimed or read (left where it is, for a later start).
    """

    claims: list[Claim] = field(default_factory=list)
    events: list[SpilledEvent] = field(default_factory=list)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    events_dropped: int = 0
    sessions_dropped: int = 0
    set_aside: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --- writing --------------------------------------------------------------------------


def write_spill(
    directory: Path,
    events: Sequence[AnalyticsEvent],
    sessions: Sequence[SessionRecord],
    *,
    created_at: float,
    pid: int,
) -> Path:
    """
    Blocking: write *events* and *sessions* to a new spill file in *directory*; its path.

    The file appears whole or not at all (temporary name, fsync, rename,
    fsync of the directory).  An event already spilled once keeps its key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(created_at))}-{pid}-{secrets.token_hex(4)}"
    final = directory / f"{stem}.jsonl"
    temp = directory / f".{stem}.jsonl.tmp"
    header = {"spill": FORMAT_VERSION, "created_at": created_at, "pid": pid}
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)  # user data
    try:
        with open(descriptor, "w", encoding="utf-8") as out:
            out.write(json.dumps({**header, "events": len(events), "sessions": len(sessions)}) + "\n")
            for n, event in enumerate(events):
                record = {name: getattr(event, name) for name in _EVENT_FIELDS}
                record["spill_key"] = event.spill_key if isinstance(event, SpilledEvent) else f"{stem}:{n}"
                out.write(json.dumps({"event": record}) + "\n")
            for session in sessions:
                fields_ = {name: getattr(session, name) for name in _SESSION_FIELDS}
                out.write(json.dumps({"session": fields_}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.rename(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)  # a disk full half-way leaves nothing behind
        raise
    _fsync_directory(directory)
    return final


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- taking ---------------------------------------------------------------------------


def take_spills(directory: Path, max_records: int, *, claimant: str) -> Taken:
    """
    Blocking: claim every spill file in *directory* nobody holds, and read them.

    Files are taken oldest first (their names start with the time); a file
    that does not parse is renamed ``<name>.bad`` and reported in
    :attr:`Taken.set_aside`, its records left out.

    :param max_records: The most events (and, separately, sessions) kept: the newest.
    :param claimant: This taker's name in claimed files (unique per process and store).
    """
    taken = Taken()
    if not directory.is_dir():
        return taken
    events: deque[SpilledEvent] = deque(maxlen=max_records)
    sessions: dict[str, SessionRecord] = {}
    seen = 0
    candidates = [*directory.glob("*.jsonl"), *directory.glob("*.claimed")]
    for path in sorted(candidates, key=lambda p: p.name):
        records = _take_one(path, claimant, taken)
        if records is not None:
            seen += len(records[0])
            events.extend(records[0])
            for session in records[1]:
                _keep_latest(sessions, session)
    taken.events, taken.events_dropped = list(events), seen - len(events)
    taken.sessions_dropped = max(0, len(sessions) - max_records)
    taken.sessions = dict(list(sessions.items())[taken.sessions_dropped :])
    return taken


def _take_one(
    path: Path, claimant: str, taken: Taken
) -> tuple[list[SpilledEvent], list[SessionRecord]] | None:
    """Claim and read *path* (its claim added to *taken*); ``None`` if held, set aside or skipped."""
    try:
        claim = _claim(path, claimant)
    except OSError as error:
        taken.skipped.append((path.name, f"{type(error).__name__}: {error}"))
        return None
    if claim is None:
        return None
    try:
        records = _read(claim.path)
    except OSError as error:
        taken.skipped.append((path.name, f"{type(error).__name__}: {error}"))
        release_claims([claim], delete=False)
        return None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        taken.set_aside.append((path.name, f"{type(error).__name__}: {error}"))
        _set_aside(claim)
        return None
    taken.claims.append(claim)
    return records


def _stem(name: str) -> str:
    return name.split(".", 1)[0]


def _claim(path: Path, claimant: str) -> Claim | None:
    """Lock and rename *path* to a name of *claimant*'s; ``None`` if another process holds or took it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    claimed = path.with_name(f"{_stem(path.name)}.{claimant}.claimed")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(path, claimed)  # the name is gone once another taker renamed it
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Claim(claimed, fd)


def _read(path: Path) -> tuple[list[SpilledEvent], list[SessionRecord]]:
    """The records of one file; raises ``ValueError`` (or ``TypeError``, …) if any line does not parse."""
    events: list[SpilledEvent] = []
    sessions: list[SessionRecord] = []
    with open(path, encoding="utf-8") as lines:
        header = json.loads(next(lines, "null"))
        if not isinstance(header, dict) or header.get("spill") != FORMAT_VERSION:
            raise ValueError("the first line is not a spill header of this version")
        for number, line in enumerate(lines, start=2):
            try:
                item = json.loads(line)
                if "event" in item:
                    events.append(SpilledEvent(**item["event"]))
                else:
                    sessions.append(SessionRecord(**item["session"]))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise ValueError(f"line {number}: {error}") from error
    if (len(events), len(sessions)) != (header["events"], header["sessions"]):
        raise ValueError(
            f"truncated: {len(events)} events and {len(sessions)} sessions, "
            f"the header says {header['events']} and {header['sessions']}"
        )
    return events, sessions


def _keep_latest(sessions: dict[str, SessionRecord], session: SessionRecord) -> None:
    """Keep *session* unless a later state of it is kept already; the newest go last."""
    kept = sessions.get(session.id)
    if kept is not None and kept.last_activity_at > session.last_activity_at:
        return
    sessions.pop(session.id, None)
    sessions[session.id] = session


def _set_aside(claim: Claim) -> None:
    try:
        os.rename(claim.path, claim.path.with_name(f"{_stem(claim.path.name)}.jsonl.bad"))
    finally:
        os.close(claim.fd)


def release_claims(claims: Iterable[Claim], *, delete: bool = True) -> None:
    """Blocking: unlock *claims* and delete their files (unless not *delete*: the next start takes them)."""
    for claim in claims:
        try:
            if delete:
                claim.path.unlink(missing_ok=True)
        finally:
            os.close(claim.fd)


# --- the store's seam -------------------------------------------------------------------


class SpillDirectory:
    """
    The spill files of one store, in *directory*, every file operation run by *threads*.

    :param directory: ``STREAMSRV_DATA_DIR/analytics-spill``; created when first written.
    :param threads: Where the blocking calls run (``ReactorThreads`` in the daemon).
    :param wall: Wall-clock seconds, for file names (which sort by time).
    """

    def __init__(self, directory: Path, threads: IThreads, *, wall: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._threads = threads
        self._wall = wall
        self._claimant = f"{os.getpid()}-{secrets.token_hex(4)}"

    def take(self, max_records: int) -> Deferred[Taken]:
        """Claim and read the spill files nobody holds (:func:`take_spills`)."""
        d: Deferred[Taken] = self._threads.defer(
            take_spills, self.directory, max_records, claimant=self._claimant
        )
        return d.addCallback(self._report)

    def _report(self, taken: Taken) -> Taken:
        for name, reason in taken.skipped:
            log.warn(
                "analytics: spill file {name} in {directory} could not be taken ({reason}); "
                "left for a later start",
                name=name,
                directory=str(self.directory),
                reason=reason,
            )
        for name, reason in taken.set_aside:
            log.error(
                "analytics: spill file {name} in {directory} does not parse ({reason}); "
                "renamed {name}.bad and not replayed",
                name=name,
                directory=str(self.directory),
                reason=reason,
            )
        if taken.claims:
            log.info(
                "analytics: replaying {events} events and {sessions} sessions from {files} spill files "
                "in {directory} ({dropped} beyond the buffer limit dropped)",
                events=len(taken.events),
                sessions=len(taken.sessions),
                files=len(taken.claims),
                directory=str(self.directory),
                dropped=taken.events_dropped + taken.sessions_dropped,
            )
        return taken

    def write(self, events: Sequence[AnalyticsEvent], sessions: Sequence[SessionRecord]) -> Deferred[Path]:
        """Write a new spill file (:func:`write_spill`); fires with its path."""
        d: Deferred[Path] = self._threads.defer(
            write_spill,
            self.directory,
            list(events),
            list(sessions),
            created_at=self._wall(),
            pid=os.getpid(),
        )
        return d

    def release(self, claims: Sequence[Claim], *, delete: bool = True) -> Deferred[None]:
        """Delete (or, not *delete*, leave for the next start) the files of *claims*, and unlock them."""
        d: Deferred[None] = self._threads.defer(release_claims, list(claims), delete=delete)
        return d

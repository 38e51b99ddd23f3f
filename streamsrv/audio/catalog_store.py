# -*- test-case-name: tests.test_catalog -*-
"""The catalog's SQLite file: schema, connections, reads, batched writes, cursors.

:class:`CatalogStore` keeps one row per audio file in
``<data_dir>/catalog.sqlite3`` (WAL, schema versioned with ``PRAGMA
user_version``; an older schema is rebuilt, a corrupt file moved aside, a
newer one refused).  One writer connection, used under :attr:`CatalogStore.write_lock`,
and one read-only connection per reader thread.  Listings page by an opaque
cursor (:func:`encode_cursor`, :func:`decode_cursor`).

Every method blocks: the catalog calls them in its writer and reader thread
pools, and this module must never be called on the reactor thread, never
import the reactor, and never put a file-system path in an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from twisted.logger import Logger

from streamsrv.audio.catalog_values import (
    CatalogError,
    IndexChange,
    IndexEntry,
    InvalidCursor,
    Page,
    TrackRecord,
    fold,
)
from streamsrv.audio.metadata import TrackMetadata
from streamsrv.db.sqlitepool import use_wal
from streamsrv.media.identity import make_etag

__all__ = [
    "BUSY_TIMEOUT_MS",
    "SCHEMA_VERSION",
    "CatalogStore",
    "StoredRow",
    "decode_cursor",
    "encode_cursor",
    "error_row",
    "record_row",
]

log = Logger()

#: ``PRAGMA user_version`` of the schema this module writes.
SCHEMA_VERSION: Final[int] = 1

#: How long a connection waits for another writer (e.g. ``streamsrv scan``), in ms.
BUSY_TIMEOUT_MS: Final[int] = 10_000

#: Longest cursor accepted, in characters.
MAX_CURSOR_LENGTH: Final[int] = 8192

_CURSOR_PREFIX: Final[bytes] = b"p1:"


@dataclass(frozen=True)
class StoredRow:
    """What the scanner's diff needs of a stored row."""

    size: int
    mtime_ns: int
    inode: int
    error: str | None
    folder_artwork: bool


_COLUMNS: Final[tuple[str, ...]] = (
    "path",
    "fs_path",
    "size",
    "mtime_ns",
    "inode",
    "etag",
    "error",
    "title",
    "artist",
    "album",
    "album_artist",
    "track_number",
    "disc_number",
    "genre",
    "year",
    "duration_s",
    "codec",
    "bitrate",
    "sample_rate",
    "channels",
    "embedded_artwork",
    "folder_artwork",
    "replaygain",
    "search_text",
    "artist_key",
    "album_artist_key",
    "album_key",
    "scanned_at",
)

_SCHEMA: Final[str] = """
CREATE TABLE IF NOT EXISTS catalog_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tracks (
    path TEXT PRIMARY KEY,
    fs_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    etag TEXT NOT NULL,
    error TEXT,
    title TEXT,
    artist TEXT,
    album TEXT,
    album_artist TEXT,
    track_number INTEGER,
    disc_number INTEGER,
    genre TEXT,
    year INTEGER,
    duration_s REAL,
    codec TEXT,
    bitrate INTEGER,
    sample_rate INTEGER,
    channels INTEGER,
    embedded_artwork INTEGER NOT NULL DEFAULT 0,
    folder_artwork INTEGER NOT NULL DEFAULT 0,
    replaygain TEXT,
    search_text TEXT NOT NULL DEFAULT '',
    artist_key TEXT,
    album_artist_key TEXT,
    album_key TEXT,
    scanned_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tracks_artist ON tracks (artist_key, path) WHERE error IS NULL;
CREATE INDEX IF NOT EXISTS tracks_album_artist ON tracks (album_artist_key, path) WHERE error IS NULL;
CREATE INDEX IF NOT EXISTS tracks_album ON tracks (album_key, path) WHERE error IS NULL;
"""


_UPSERT: Final[str] = (
    f"INSERT OR REPLACE INTO tracks ({', '.join(_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)


_SELECT: Final[str] = f"SELECT {', '.join(_COLUMNS)} FROM tracks"  # noqa: S608 - fixed column names


def encode_cursor(path: str) -> str:
    """The opaque cursor that continues a listing after ``path``."""
    raw = _CURSOR_PREFIX + path.encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The path a cursor continues after.

    :raises InvalidCursor: for anything :func:`encode_cursor` did not make.
    """
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("malformed cursor")
    try:
        padded = cursor.encode("ascii") + b"=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        if not raw.startswith(_CURSOR_PREFIX):
            raise InvalidCursor("malformed cursor")
        path = raw[len(_CURSOR_PREFIX) :].decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        raise InvalidCursor("malformed cursor") from None
    if not path:
        raise InvalidCursor("malformed cursor")
    return path


def signed64(value: int) -> int:
    """An unsigned 64-bit inode as SQLite's signed INTEGER."""
    return value - (1 << 64) if value >= (1 << 63) else value


class CatalogStore:
    """The catalog's SQLite database; every method blocks (call it in a pool thread).

    Writes (:meth:`open`, :meth:`commit`, :meth:`set_last_scan_at`,
    :meth:`close_writer`, and the writer's reads :meth:`rows_under` and
    :meth:`reload`) go through the one writer connection and are serialised
    by :attr:`write_lock`; :meth:`get` and :meth:`search` use a read-only
    connection of their own thread.

    :param db_path: the SQLite file.
    :param now: wall clock, for the name a corrupt file is moved aside to.
    """

    def __init__(self, db_path: Path, *, now: Callable[[], float]) -> None:
        self._db_path = Path(db_path)
        self._now = now
        #: Held by whoever writes; re-entrant: with a synchronous pool a
        #: subscriber may call back in.
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None

    # ------------------------------------------------------------------
    # Connections

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _reader_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = ON")
            self._local.connection = connection
        return connection

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            raise CatalogError("catalog not open")
        return self._writer

    def close_connections(self) -> None:
        """Close every connection (once the pools have stopped)."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    # ------------------------------------------------------------------
    # Opening and closing (writer)

    def open(self, media_root: Path) -> tuple[dict[str, IndexEntry], dict[str, str], float | None]:
        """Open (creating, migrating or rebuilding) the database and read the index.

        :param media_root: the media root; rows stored for another root are dropped.
        :returns: readable tracks, unreadable files with their reasons, and
            when the last full scan finished.
        :raises CatalogError: for a database that is locked or written by a
            newer schema.
        """
        with self.write_lock:
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = self._prepare(self._connect())
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                    raise CatalogError("catalog database is locked") from None
                connection = self._recreate()
            self._writer = connection
            root = os.path.realpath(media_root)
            stored = self._meta(connection, "media_root")
            if stored is not None and stored != root:
                log.warn("media root changed since the last run; the catalog starts afresh")
                connection.execute("DELETE FROM tracks")
                connection.execute("DELETE FROM catalog_meta WHERE key = 'last_scan_at'")
            if stored != root:
                self._set_meta(connection, "media_root", root)
            index: dict[str, IndexEntry] = {}
            failed: dict[str, str] = {}
            for row in connection.execute("SELECT path, fs_path, size, mtime_ns, etag, error FROM tracks"):
                if row["error"] is None:
                    index[row["path"]] = _index_entry(row)
                else:
                    failed[row["path"]] = row["error"]
            last = self._meta(connection, "last_scan_at")
            return index, failed, float(last) if last is not None else None

    def _prepare(self, connection: sqlite3.Connection) -> sqlite3.Connection:
        """Set WAL and create or check the schema."""
        use_wal(connection)
        connection.execute("PRAGMA synchronous = NORMAL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            connection.close()
            raise CatalogError(f"catalog database has schema {version}, newer than this streamsrv's")
        if version != SCHEMA_VERSION:
            # An older (or unversioned) catalog is only a cache of the disk: rebuild it.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DROP TABLE IF EXISTS tracks")
            connection.execute("DROP TABLE IF EXISTS catalog_meta")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        return connection

    def _recreate(self) -> sqlite3.Connection:
        """Move a corrupt database aside and start a new one."""
        self.close_connections()
        aside = self._db_path.with_name(f"{self._db_path.name}.corrupt-{int(self._now())}")
        log.warn("catalog database unreadable; moved aside, rebuilding from the media root")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self._db_path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{aside}{suffix}"))
        return self._prepare(self._connect())

    @staticmethod
    def _meta(connection: sqlite3.Connection, key: str) -> str | None:
        row = connection.execute("SELECT value FROM catalog_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(connection: sqlite3.Connection, key: str, value: str) -> None:
        connection.execute("INSERT OR REPLACE INTO catalog_meta (key, value) VALUES (?, ?)", (key, value))

    def close_writer(self) -> None:
        """Optimise and let go of the writer connection (closed by :meth:`close_connections`)."""
        with self.write_lock:
            if self._writer is not None:
                try:
                    self._writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                self._writer = None

    # ------------------------------------------------------------------
    # Reads (reader threads)

    def get(self, path: str) -> TrackRecord | None:
        """The stored record of a readable track, or ``None``."""
        row = (
            self._reader_connection()
            .execute(_SELECT + " WHERE path = ? AND error IS NULL", (path,))
            .fetchone()
        )
        return None if row is None else record_from_row(row)

    def search(
        self,
        terms: tuple[str, ...],
        artist: str | None,
        album: str | None,
        limit: int,
        after: str | None,
    ) -> Page:
        """One page of readable tracks, in path order.

        :param terms: folded words that must each occur in the search text.
        :param artist: folded artist or album artist, whole.
        :param album: folded album, whole.
        :param limit: page size.
        :param after: the path the page starts after.
        """
        where = ["error IS NULL"]
        params: list[object] = []
        if after is not None:
            where.append("path > ?")
            params.append(after)
        if artist is not None:
            where.append("(artist_key = ? OR album_artist_key = ?)")
            params += [artist, artist]
        if album is not None:
            where.append("album_key = ?")
            params.append(album)
        for term in terms:
            where.append("instr(search_text, ?) > 0")
            params.append(term)
        params.append(limit + 1)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY path LIMIT ?"
        rows = self._reader_connection().execute(sql, params).fetchall()
        records = tuple(record_from_row(row) for row in rows[:limit])
        next_cursor = encode_cursor(records[-1].path) if len(rows) > limit else None
        return Page(records, next_cursor)

    # ------------------------------------------------------------------
    # The scan's reads and writes (writer)

    def rows_under(self, scopes: Sequence[str]) -> dict[str, StoredRow]:
        """The stored rows at or below each scope (``""`` is everything)."""
        connection = self._writer_connection()
        rows: dict[str, StoredRow] = {}
        sql = "SELECT path, size, mtime_ns, inode, error, folder_artwork FROM tracks"
        for scope in scopes:
            if scope:
                cursor = connection.execute(
                    sql + " WHERE path = ? OR (path >= ? AND path < ?)", (scope, scope + "/", scope + "0")
                )
            else:
                cursor = connection.execute(sql)
            for row in cursor:
                rows[row["path"]] = StoredRow(
                    row["size"], row["mtime_ns"], row["inode"], row["error"], bool(row["folder_artwork"])
                )
        return rows

    def commit(
        self,
        rows: Sequence[tuple[object, ...]],
        folder_updates: Sequence[tuple[int, str]],
        deletes: Sequence[str],
    ) -> None:
        """Write one batch in one transaction (nothing of it if it fails).

        :param rows: whole rows (:func:`record_row`, :func:`error_row`) to insert or replace.
        :param folder_updates: ``(folder_artwork, path)`` of rows whose folder image changed.
        :param deletes: paths whose rows go.
        """
        if not (rows or folder_updates or deletes):
            return
        connection = self._writer_connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_UPSERT, rows)
            connection.executemany("UPDATE tracks SET folder_artwork = ? WHERE path = ?", folder_updates)
            connection.executemany("DELETE FROM tracks WHERE path = ?", [(p,) for p in deletes])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def reload(self, paths: Sequence[tuple[str, bool]]) -> Iterator[IndexChange]:
        """Changes that announce rows as they are stored, without re-reading the files.

        :param paths: ``(path, reconcile)``: with ``reconcile`` the change is
            only announced if the index disagrees.
        """
        connection = self._writer_connection()
        for path, reconcile in paths:
            row = connection.execute(_SELECT + " WHERE path = ?", (path,)).fetchone()
            if row is None or row["error"] is not None:
                continue
            yield IndexChange(path, _index_entry(row), record_from_row(row), None, reconcile=reconcile)

    def set_last_scan_at(self, when: float) -> None:
        """Record when the last full scan finished (any process reads it at :meth:`open`)."""
        self._set_meta(self._writer_connection(), "last_scan_at", repr(when))


def _index_entry(row: sqlite3.Row) -> IndexEntry:
    return IndexEntry(row["size"], row["mtime_ns"], row["etag"], row["fs_path"])


def record_row(
    record: TrackRecord,
    fs_path: str,
    stat: os.stat_result,
    *,
    embedded: bool,
    folder_artwork: bool,
    now: float,
) -> tuple[object, ...]:
    """The row of a readable file.

    :param record: what was read (its path is the NFC track path).
    :param fs_path: the path as spelt on disk.
    :param stat: the file's ``stat`` when it was read.
    :param embedded: whether the file itself holds artwork.
    :param folder_artwork: whether its directory has a cover image.
    :param now: when it was read.
    """
    m = record.metadata
    return _row_values(
        path=m.path,
        fs_path=fs_path,
        size=m.size,
        mtime_ns=stat.st_mtime_ns,
        inode=signed64(stat.st_ino),
        etag=m.etag,
        error=None,
        title=m.title,
        artist=m.artist,
        album=m.album,
        album_artist=m.album_artist,
        track_number=m.track_number,
        disc_number=m.disc_number,
        genre=m.genre,
        year=m.year,
        duration_s=m.duration_s,
        codec=m.codec,
        bitrate=m.bitrate,
        sample_rate=m.sample_rate,
        channels=m.channels,
        embedded_artwork=int(embedded),
        folder_artwork=int(folder_artwork),
        replaygain=json.dumps(m.replaygain, sort_keys=True) if m.replaygain is not None else None,
        search_text="\n".join(fold(v) for v in (m.title, m.artist, m.album)),
        artist_key=fold(m.artist) if m.artist is not None else None,
        album_artist_key=fold(m.album_artist) if m.album_artist is not None else None,
        album_key=fold(m.album) if m.album is not None else None,
        scanned_at=now,
    )


def error_row(
    path: str, fs_path: str, stat: os.stat_result, error: str, *, folder_artwork: bool, now: float
) -> tuple[object, ...]:
    """The row of an unreadable audio file, with the reason."""
    return _row_values(
        path=path,
        fs_path=fs_path,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        inode=signed64(stat.st_ino),
        etag=make_etag(stat.st_size, stat.st_mtime_ns, stat.st_ino),
        error=error,
        folder_artwork=int(folder_artwork),
        scanned_at=now,
    )


def _row_values(**values: object) -> tuple[object, ...]:
    defaults: dict[str, object] = {"embedded_artwork": 0, "folder_artwork": 0, "search_text": ""}
    return tuple(values.get(column, defaults.get(column)) for column in _COLUMNS)


def record_from_row(row: sqlite3.Row) -> TrackRecord:
    replaygain = json.loads(row["replaygain"]) if row["replaygain"] else None
    metadata = TrackMetadata(
        path=row["path"],
        title=row["title"],
        artist=row["artist"],
        album=row["album"],
        album_artist=row["album_artist"],
        track_number=row["track_number"],
        disc_number=row["disc_number"],
        genre=row["genre"],
        year=row["year"],
        duration_s=row["duration_s"],
        codec=row["codec"],
        bitrate=row["bitrate"],
        sample_rate=row["sample_rate"],
        channels=row["channels"],
        size=row["size"],
        etag=row["etag"],
        has_artwork=bool(row["embedded_artwork"] or row["folder_artwork"]),
        replaygain=replaygain,
    )
    return TrackRecord(metadata, row["mtime_ns"])

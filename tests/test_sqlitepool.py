"""The SQLite files' WAL switch waits out another process making the same switch."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from streamsrv.db.sqlitepool import use_wal


class UseWalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.holder = sqlite3.connect(str(self.path), isolation_level=None)
        self.addCleanup(self.holder.close)
        self.holder.execute("CREATE TABLE t (x)")
        # Another process in the middle of its own first open: the file is locked.
        self.holder.execute("BEGIN EXCLUSIVE")
        self.opener = sqlite3.connect(
            str(self.path), isolation_level=None, timeout=0, check_same_thread=False
        )
        self.addCleanup(self.opener.close)

    def test_waits_for_the_lock(self) -> None:
        """A locked file is retried until the other side lets go, then switched to WAL."""
        errors: list[BaseException] = []

        def switch() -> None:
            try:
                use_wal(self.opener, timeout_s=30)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=switch)
        thread.start()
        time.sleep(0.1)  # the opener meets the lock at least once (not a timing assertion)
        self.holder.execute("COMMIT")
        thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.opener.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_gives_up_after_its_timeout(self) -> None:
        """Past *timeout_s* the "database is locked" error is raised, as the busy timeout would."""
        with self.assertRaises(sqlite3.OperationalError) as caught:
            use_wal(self.opener, timeout_s=0)
        self.assertIn("locked", str(caught.exception))
        self.holder.execute("COMMIT")

    def test_other_errors_are_not_retried(self) -> None:
        """Any other error is raised at once."""
        self.holder.execute("COMMIT")
        self.opener.close()
        self.assertRaises(sqlite3.ProgrammingError, use_wal, self.opener, 30)


class ConnectionLostTests(unittest.TestCase):
    """Which PostgreSQL errors a read is tried again for."""

    def test_only_a_lost_connection(self) -> None:
        import psycopg2
        from twisted.python.failure import Failure

        from streamsrv.db.pgpool import _connection_lost

        self.assertTrue(_connection_lost(Failure(psycopg2.OperationalError("server closed the connection"))))
        self.assertTrue(_connection_lost(Failure(psycopg2.InterfaceError("connection already closed"))))
        self.assertFalse(_connection_lost(Failure(psycopg2.ProgrammingError("syntax error"))))
        self.assertFalse(_connection_lost(Failure(ValueError("x"))))

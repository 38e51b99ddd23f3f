"""What every database-backed part shares: versioned migrations, SQL dialects, SQLite pools.

The analytics store, the revocation store and the notification outbox each
keep their own tables and migration history, and stand on this floor for the
mechanics: :mod:`streamsrv.db.schema` (migration files, the runner, what
differs between SQLite and PostgreSQL) and :mod:`streamsrv.db.sqlitepool`
(thread pools of SQLite connections).  Nothing here knows a component's
tables, and nothing here runs on the reactor thread.
"""

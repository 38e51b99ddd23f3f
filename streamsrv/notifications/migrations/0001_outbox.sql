-- streamsrv notification outbox, schema version 1.
--
-- Written in the SQL that SQLite and PostgreSQL both accept (read by
-- streamsrv.db.schema.load_migrations / migration_statements: statements
-- end with a semicolon at the end of a line, no semicolon anywhere else,
-- comments on lines of their own).  Times are Unix seconds (UTC) as DOUBLE
-- PRECISION; ids are text chosen by the server; data is JSON text.
-- Versions are recorded in notification_schema_migrations (not the analytics
-- schema_migrations: both may live in one PostgreSQL database).

-- One accepted POST /api/v1/notifications.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    data TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('normal', 'urgent')),
    idempotency_key TEXT,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX notifications_created_at ON notifications (created_at);

-- The idempotency keys seen in the last 24 hours; an older row is replaced
-- when its key comes again.
CREATE TABLE notification_idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL
);

-- One (user, channel) delivery.  A worker holds it while lease_owner is set
-- and lease_until is in the future; position keeps the order of the request.
CREATE TABLE notification_deliveries (
    id TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('websocket', 'email', 'sms', 'push')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'deferred', 'sent', 'failed', 'suppressed')),
    reason TEXT,
    not_before DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);

CREATE INDEX notification_deliveries_due ON notification_deliveries (not_before) WHERE state IN ('queued', 'deferred');
CREATE INDEX notification_deliveries_of ON notification_deliveries (notification_id, position);
CREATE INDEX notification_deliveries_sends ON notification_deliveries (user_id, channel, sent_at);

-- Each user's preferences document (JSON), as GET answers it.
CREATE TABLE notification_preferences (
    user_id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

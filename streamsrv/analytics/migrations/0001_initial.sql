-- streamsrv analytics, schema version 1.
--
-- Written in the SQL that SQLite and PostgreSQL both accept.  One placeholder
-- is substituted per dialect before running: {{AUTO_ID}} (an auto-numbered
-- primary key: INTEGER PRIMARY KEY in SQLite, BIGSERIAL PRIMARY KEY in
-- PostgreSQL).  Times are Unix seconds (UTC) as DOUBLE PRECISION; flags are
-- SMALLINT 0/1.  Statements end with a semicolon at the end of a line; no
-- semicolon may appear anywhere else (the loader splits on them).

-- One listening session: one user, one track, until an idle timeout.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_sub TEXT NOT NULL,
    track_path TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('stream', 'hls', 'client')),
    started_at DOUBLE PRECISION NOT NULL,
    last_activity_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    bytes_sent BIGINT NOT NULL DEFAULT 0,
    seconds_listened DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_position_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    duration_s DOUBLE PRECISION,
    completed SMALLINT NOT NULL DEFAULT 0,
    client_info TEXT,
    ip_network TEXT,
    client_session_id TEXT
);

CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_track_started ON sessions (track_path, started_at);
CREATE INDEX sessions_user_started ON sessions (user_sub, started_at);
CREATE INDEX sessions_last_activity ON sessions (last_activity_at);

-- Playback events reported by clients (and derived ones: bitrate.switch).
-- user_sub and track_path are copied from the session so that per-track and
-- per-artist queries need no join.
CREATE TABLE events (
    id {{AUTO_ID}},
    session_id TEXT NOT NULL,
    user_sub TEXT NOT NULL,
    track_path TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    position_s DOUBLE PRECISION,
    startup_ms DOUBLE PRECISION,
    stall_ms DOUBLE PRECISION,
    bitrate_kbps DOUBLE PRECISION,
    from_bitrate_kbps DOUBLE PRECISION,
    to_bitrate_kbps DOUBLE PRECISION
);

CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_track_ts ON events (track_path, ts);
CREATE INDEX events_session ON events (session_id);

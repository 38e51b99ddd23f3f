-- streamsrv analytics, schema version 2: events replayed from a spill file carry a key.
--
-- When the final flush at stop fails, the store saves what it holds to a spill
-- file in the data dir and the next start replays it (streamsrv/analytics/spill.py).
-- Each replayed event carries the key it was given when first spilled; the
-- unique index lets an event replayed twice (a crash between the commit and
-- the deletion of its file) be written once: INSERT ... ON CONFLICT DO NOTHING.
-- Events recorded live leave it NULL and are not indexed.  Both statements
-- are cheap on SQLite; on PostgreSQL the index build reads the events table
-- once, holding off writes meanwhile (flushes wait, records stay buffered).

ALTER TABLE events ADD COLUMN spill_key TEXT;

CREATE UNIQUE INDEX events_spill_key ON events (spill_key) WHERE spill_key IS NOT NULL;

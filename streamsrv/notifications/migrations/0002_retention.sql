-- streamsrv notification outbox, schema version 2: what the retention purge needs.
--
-- Deleting a notification deletes its idempotency key through the foreign
-- key; without an index on the referencing column both databases would scan
-- the whole key table for every notification deleted.  Keys older than the
-- 24-hour window are purged by their creation time.

CREATE INDEX notification_idempotency_keys_of ON notification_idempotency_keys (notification_id);
CREATE INDEX notification_idempotency_keys_created_at ON notification_idempotency_keys (created_at);

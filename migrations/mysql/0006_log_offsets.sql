-- Log chunks carry the agent's byte offset (issue 15): log_acked is how far into the try's
-- output the store has everything (the offset the agent resends from). It equals log_bytes
-- until the coordinator's log cap cuts the log; past the cap, output is acknowledged and dropped.
ALTER TABLE attempts ADD COLUMN log_acked BIGINT NOT NULL DEFAULT 0;
UPDATE attempts SET log_acked = log_bytes;

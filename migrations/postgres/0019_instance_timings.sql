-- Where an instance's time went (issue 19): the phase it is in since when, and the
-- milliseconds spent in each phase so far during its current run. Every transition adds the
-- phase it leaves in the UPDATE that changes the state, so the hot path gets no extra
-- statement. run_started_at is when the current run began (created_at, or the last redo);
-- NULL on instances created before this migration, whose timings were never recorded.
ALTER TABLE instances ADD COLUMN phase TEXT;
ALTER TABLE instances ADD COLUMN phase_since BIGINT;
ALTER TABLE instances ADD COLUMN run_started_at BIGINT;
ALTER TABLE instances ADD COLUMN ms_waiting_upstreams BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN ms_waiting_slots BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN ms_queued BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN ms_claimed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN ms_running BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN ms_retry_delays BIGINT NOT NULL DEFAULT 0;

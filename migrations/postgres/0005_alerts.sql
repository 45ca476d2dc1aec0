-- Alerts (issue 11): a task's expected duration and deadline, and every alert goflow raised
-- with its delivery to one channel.

ALTER TABLE tasks ADD COLUMN expected_duration_ms BIGINT;   -- NULL: none
ALTER TABLE tasks ADD COLUMN deadline TEXT;               -- "HH:MM TZ +N"; NULL: none

-- One row per (instance, kind, try, channel): a final failure reported twice alerts once.
-- kind: failed | retry | long_running | deadline; try_number 0 for a deadline.
-- state: pending (to send, at next_attempt_at) | sent | failed (gave up after attempts).
CREATE TABLE alerts (
    id              BIGSERIAL PRIMARY KEY,
    task_id         TEXT NOT NULL,
    etl_day         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    try_number      BIGINT NOT NULL,
    channel         TEXT NOT NULL,
    instance_state  TEXT NOT NULL,
    message         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    UNIQUE (task_id, etl_day, kind, try_number, channel)
);
CREATE INDEX alerts_due ON alerts(state, next_attempt_at);
CREATE INDEX alerts_created ON alerts(created_at);

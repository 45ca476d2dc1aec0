-- Alerts (issue 11): a task's expected duration and deadline, and every alert goflow raised
-- with its delivery to one channel.

ALTER TABLE tasks ADD COLUMN expected_duration_ms BIGINT;   -- NULL: none
ALTER TABLE tasks ADD COLUMN deadline VARCHAR(255);               -- "HH:MM TZ +N"; NULL: none

-- One row per (instance, kind, try, channel): a final failure reported twice alerts once.
-- kind: failed | retry | long_running | deadline; try_number 0 for a deadline.
-- state: pending (to send, at next_attempt_at) | sent | failed (gave up after attempts).
CREATE TABLE alerts (
    id              BIGINT AUTO_INCREMENT PRIMARY KEY,
    task_id         VARCHAR(128) NOT NULL,
    etl_day         VARCHAR(8) NOT NULL,
    kind            VARCHAR(32) NOT NULL,
    try_number      BIGINT NOT NULL,
    channel         VARCHAR(128) NOT NULL,
    instance_state  VARCHAR(32) NOT NULL,
    message         TEXT NOT NULL,
    state           VARCHAR(32) NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    UNIQUE KEY alerts_once (task_id, etl_day, kind, try_number, channel),
    INDEX alerts_due (state, next_attempt_at),
    INDEX alerts_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Backfills (issue 19), as migrations/sqlite.
CREATE TABLE backfills (
    id          BIGINT PRIMARY KEY,
    task_id     VARCHAR(255) NOT NULL,
    from_period VARCHAR(16) NOT NULL,
    to_period   VARCHAR(16) NOT NULL,
    down        BIGINT NOT NULL,
    parallelism BIGINT,
    state       VARCHAR(16) NOT NULL,
    created_by  VARCHAR(400) NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    instances   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
ALTER TABLE instances ADD COLUMN backfill_id BIGINT;
CREATE INDEX instances_backfill_state ON instances(backfill_id, state);

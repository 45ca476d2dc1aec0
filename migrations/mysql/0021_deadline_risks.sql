-- Deadlines at risk (as migrations/sqlite).
CREATE TABLE deadline_risks (
    task_id      VARCHAR(128) NOT NULL,
    etl_day      VARCHAR(16) NOT NULL,
    predicted_at BIGINT NOT NULL,
    raised       BIGINT NOT NULL,
    at_risk      BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (task_id, etl_day)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

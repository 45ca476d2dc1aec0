-- Deadlines at risk (as migrations/sqlite).
CREATE TABLE deadline_risks (
    task_id      TEXT NOT NULL,
    etl_day      TEXT NOT NULL,
    predicted_at BIGINT NOT NULL,
    raised       BIGINT NOT NULL,
    at_risk      BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (task_id, etl_day)
);

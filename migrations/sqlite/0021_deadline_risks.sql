-- Deadlines at risk (issue 19): per instance with a deadline, the prediction its last
-- `deadline_at_risk` alert was raised at, how many were raised (the alerts' try_number), and
-- whether it is at risk now (0 once the prediction came back inside the deadline).
CREATE TABLE deadline_risks (
    task_id      TEXT NOT NULL,
    etl_day      TEXT NOT NULL,
    predicted_at INTEGER NOT NULL,
    raised       INTEGER NOT NULL,
    at_risk      INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (task_id, etl_day)
);

-- Backfills (issue 19): a run over a range of periods, recorded as an object one can watch,
-- pause, resume, bound and cancel. `state` is what an operator asked (running, paused,
-- cancelled, or done once nothing of it is left to run, stored as it is first seen).
CREATE TABLE backfills (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL,
    from_period TEXT NOT NULL,
    to_period   TEXT NOT NULL,
    down        INTEGER NOT NULL,
    parallelism INTEGER,            -- NULL: bounded only by free slots
    state       TEXT NOT NULL,      -- running | paused | cancelled | done
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    instances   INTEGER NOT NULL    -- how many instances it covered when accepted
);
-- The backfill an instance was last run by (a later backfill takes it over); NULL: none.
ALTER TABLE instances ADD COLUMN backfill_id INTEGER;
CREATE INDEX instances_backfill_state ON instances(backfill_id, state);

-- goflow schema, SQLite flavour. Times are epoch milliseconds; data dates are yyyymmdd text.
-- The same tables, with the same names and keys, come for PostgreSQL and MySQL.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tasks (
    id             TEXT PRIMARY KEY,
    command        TEXT NOT NULL,
    schedule       TEXT,
    timezone       TEXT NOT NULL,
    day_offset     INTEGER NOT NULL,
    retries        INTEGER,            -- NULL: the configured default
    retry_delay_ms INTEGER,            -- NULL: the configured default
    timeout_ms     INTEGER,            -- NULL: none
    priority       INTEGER NOT NULL,
    queue          TEXT NOT NULL,
    start_day      TEXT,
    description    TEXT NOT NULL,
    paused         INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE dependencies (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    upstream_id TEXT NOT NULL REFERENCES tasks(id),
    day_offset  INTEGER NOT NULL,
    PRIMARY KEY (task_id, upstream_id, day_offset)
);
CREATE INDEX dependencies_upstream ON dependencies(upstream_id);

-- One row per schedule: when it last fired (or was defined), so downtime is caught up.
CREATE TABLE schedules (
    task_id      TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    expression   TEXT NOT NULL,
    last_fire_at INTEGER NOT NULL
);

-- Every fire that happened: unique on (schedule, fire time), so no two coordinators fire twice.
CREATE TABLE cron_fires (
    task_id    TEXT NOT NULL,
    fire_at    INTEGER NOT NULL,
    etl_day    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    skipped    INTEGER NOT NULL DEFAULT 0,   -- earlier fires missed while down, not run
    PRIMARY KEY (task_id, fire_at)
);

CREATE TABLE instances (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        TEXT NOT NULL,
    etl_day        TEXT NOT NULL,
    state          TEXT NOT NULL,
    try_number     INTEGER NOT NULL DEFAULT 0,   -- the current or last try; 0 = never queued
    max_tries      INTEGER NOT NULL DEFAULT 1,   -- last try number this run may reach
    lost_tries     INTEGER NOT NULL DEFAULT 0,   -- tries re-dispatched after their agent died
    priority       INTEGER NOT NULL,
    queue          TEXT NOT NULL,
    dispatch_epoch INTEGER NOT NULL DEFAULT 0,
    agent_id       TEXT,
    forced         INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    queued_at      INTEGER,
    started_at     INTEGER,
    finished_at    INTEGER,
    next_try_at    INTEGER,
    exit_code      INTEGER,
    message        TEXT NOT NULL DEFAULT '',
    UNIQUE (task_id, etl_day)
);
CREATE INDEX instances_day ON instances(etl_day);
CREATE INDEX instances_state ON instances(state);

CREATE TABLE attempts (
    id          TEXT PRIMARY KEY,              -- "<instance id>-<try number>", GOFLOW_ATTEMPT_ID
    instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    try_number  INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    state       TEXT NOT NULL,                 -- running, success, failed, timed_out, killed, lost
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    exit_code   INTEGER,
    log_bytes   INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    UNIQUE (instance_id, try_number)
);
CREATE INDEX attempts_agent_state ON attempts(agent_id, state);

CREATE TABLE log_chunks (
    attempt_id  TEXT NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    byte_offset INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (attempt_id, byte_offset)
);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    host              TEXT NOT NULL,
    slots             INTEGER NOT NULL,
    queues            TEXT NOT NULL,           -- comma-separated routing keys
    version           TEXT NOT NULL,
    registered_at     INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    state             TEXT NOT NULL            -- alive, dead
);

CREATE TABLE operations (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX operations_at ON operations(at);

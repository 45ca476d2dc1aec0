-- goflow schema, PostgreSQL flavour: the same tables, names and keys as migrations/sqlite.
-- Times are epoch milliseconds (BIGINT); data dates are yyyymmdd text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tasks (
    id             TEXT PRIMARY KEY,
    command        TEXT NOT NULL,
    schedule       TEXT,
    timezone       TEXT NOT NULL,
    day_offset     BIGINT NOT NULL,
    retries        BIGINT,
    retry_delay_ms BIGINT,
    timeout_ms     BIGINT,
    priority       BIGINT NOT NULL,
    queue          TEXT NOT NULL,
    start_day      TEXT,
    description    TEXT NOT NULL,
    paused         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE dependencies (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    upstream_id TEXT NOT NULL REFERENCES tasks(id),
    day_offset  BIGINT NOT NULL,
    PRIMARY KEY (task_id, upstream_id, day_offset)
);
CREATE INDEX dependencies_upstream ON dependencies(upstream_id);

CREATE TABLE schedules (
    task_id      TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    expression   TEXT NOT NULL,
    last_fire_at BIGINT NOT NULL
);

CREATE TABLE cron_fires (
    task_id    TEXT NOT NULL,
    fire_at    BIGINT NOT NULL,
    etl_day    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    skipped    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, fire_at)
);

CREATE TABLE instances (
    id             BIGSERIAL PRIMARY KEY,
    task_id        TEXT NOT NULL,
    etl_day        TEXT NOT NULL,
    state          TEXT NOT NULL,
    try_number     BIGINT NOT NULL DEFAULT 0,
    max_tries      BIGINT NOT NULL DEFAULT 1,
    lost_tries     BIGINT NOT NULL DEFAULT 0,
    priority       BIGINT NOT NULL,
    queue          TEXT NOT NULL,
    dispatch_epoch BIGINT NOT NULL DEFAULT 0,
    agent_id       TEXT,
    forced         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    queued_at      BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    next_try_at    BIGINT,
    exit_code      BIGINT,
    message        TEXT NOT NULL DEFAULT '',
    UNIQUE (task_id, etl_day)
);
CREATE INDEX instances_day ON instances(etl_day);
CREATE INDEX instances_state ON instances(state);

CREATE TABLE attempts (
    id          TEXT PRIMARY KEY,
    instance_id BIGINT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    try_number  BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    agent_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    exit_code   BIGINT,
    log_bytes   BIGINT NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    UNIQUE (instance_id, try_number)
);
CREATE INDEX attempts_agent_state ON attempts(agent_id, state);

CREATE TABLE log_chunks (
    attempt_id  TEXT NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    byte_offset BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (attempt_id, byte_offset)
);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    host              TEXT NOT NULL,
    slots             BIGINT NOT NULL,
    queues            TEXT NOT NULL,
    version           TEXT NOT NULL,
    registered_at     BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    state             TEXT NOT NULL
);

CREATE TABLE operations (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX operations_at ON operations(at);

-- goflow schema, MySQL 8 / MariaDB 10.6+ flavour: the same tables, names and keys as
-- migrations/sqlite. Times are epoch milliseconds (BIGINT); data dates are yyyymmdd text.
-- Binary collation: task ids are case-sensitive, as on SQLite and PostgreSQL. Keys are
-- VARCHAR (task and queue ids are at most 128 ASCII characters); TEXT columns have no
-- default because MySQL 8 allows none, so every insert names them.

CREATE TABLE meta (
    `key` VARCHAR(128) PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE tasks (
    id             VARCHAR(128) PRIMARY KEY,
    command        MEDIUMTEXT NOT NULL,
    schedule       TEXT,
    timezone       VARCHAR(64) NOT NULL,
    day_offset     BIGINT NOT NULL,
    retries        BIGINT,
    retry_delay_ms BIGINT,
    timeout_ms     BIGINT,
    priority       BIGINT NOT NULL,
    queue          VARCHAR(128) NOT NULL,
    start_day      VARCHAR(8),
    description    TEXT NOT NULL,
    paused         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE dependencies (
    task_id     VARCHAR(128) NOT NULL,
    upstream_id VARCHAR(128) NOT NULL,
    day_offset  BIGINT NOT NULL,
    PRIMARY KEY (task_id, upstream_id, day_offset),
    INDEX dependencies_upstream (upstream_id),
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE,
    FOREIGN KEY (upstream_id) REFERENCES tasks(id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE schedules (
    task_id      VARCHAR(128) PRIMARY KEY,
    expression   TEXT NOT NULL,
    last_fire_at BIGINT NOT NULL,
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE cron_fires (
    task_id    VARCHAR(128) NOT NULL,
    fire_at    BIGINT NOT NULL,
    etl_day    VARCHAR(8) NOT NULL,
    created_at BIGINT NOT NULL,
    skipped    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, fire_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE instances (
    id             BIGINT AUTO_INCREMENT PRIMARY KEY,
    task_id        VARCHAR(128) NOT NULL,
    etl_day        VARCHAR(8) NOT NULL,
    state          VARCHAR(32) NOT NULL,
    try_number     BIGINT NOT NULL DEFAULT 0,
    max_tries      BIGINT NOT NULL DEFAULT 1,
    lost_tries     BIGINT NOT NULL DEFAULT 0,
    priority       BIGINT NOT NULL,
    queue          VARCHAR(128) NOT NULL,
    dispatch_epoch BIGINT NOT NULL DEFAULT 0,
    agent_id       VARCHAR(255),
    forced         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    queued_at      BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    next_try_at    BIGINT,
    exit_code      BIGINT,
    message        TEXT NOT NULL,
    UNIQUE KEY instances_task_day (task_id, etl_day),
    INDEX instances_day (etl_day),
    INDEX instances_state (state)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE attempts (
    id          VARCHAR(64) PRIMARY KEY,
    instance_id BIGINT NOT NULL,
    try_number  BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    agent_id    VARCHAR(255) NOT NULL,
    state       VARCHAR(32) NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    exit_code   BIGINT,
    log_bytes   BIGINT NOT NULL DEFAULT 0,
    message     TEXT NOT NULL,
    UNIQUE KEY attempts_instance_try (instance_id, try_number),
    INDEX attempts_agent_state (agent_id, state),
    FOREIGN KEY (instance_id) REFERENCES instances(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE log_chunks (
    attempt_id  VARCHAR(64) NOT NULL,
    byte_offset BIGINT NOT NULL,
    data        LONGBLOB NOT NULL,
    PRIMARY KEY (attempt_id, byte_offset),
    FOREIGN KEY (attempt_id) REFERENCES attempts(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE agents (
    id                VARCHAR(255) PRIMARY KEY,
    host              VARCHAR(255) NOT NULL,
    slots             BIGINT NOT NULL,
    queues            TEXT NOT NULL,
    version           TEXT NOT NULL,
    registered_at     BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    state             VARCHAR(16) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE operations (
    id     BIGINT AUTO_INCREMENT PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    client TEXT NOT NULL,
    action VARCHAR(64) NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    INDEX operations_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

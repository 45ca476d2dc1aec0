-- Failed logins by scope (as migrations/sqlite).
CREATE TABLE login_failures (
    scope    VARCHAR(400) PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL,
    INDEX login_failures_last_at (last_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

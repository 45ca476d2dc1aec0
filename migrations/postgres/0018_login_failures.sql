-- Failed logins by scope (as migrations/sqlite).
CREATE TABLE login_failures (
    scope    TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL
);
CREATE INDEX login_failures_last_at ON login_failures(last_at);

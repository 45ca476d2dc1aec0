-- Per-agent credentials (as migrations/sqlite).

CREATE TABLE agent_tokens (
    agent_id     TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE embedded_agent_secret (
    id     INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);

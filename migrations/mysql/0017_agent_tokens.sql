-- Per-agent credentials (as migrations/sqlite).

CREATE TABLE agent_tokens (
    agent_id     VARCHAR(200) PRIMARY KEY,
    token_hash   VARCHAR(64) NOT NULL UNIQUE,
    created_by   VARCHAR(255) NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE embedded_agent_secret (
    id     INTEGER PRIMARY KEY,
    secret VARCHAR(128) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Users, sessions and API tokens (as migrations/sqlite).

CREATE TABLE users (
    name          VARCHAR(128) PRIMARY KEY,
    role          VARCHAR(16) NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE sessions (
    token_hash VARCHAR(64) PRIMARY KEY,
    user_name  VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    INDEX sessions_user (user_name),
    FOREIGN KEY (user_name) REFERENCES users(name) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE api_tokens (
    name         VARCHAR(128) PRIMARY KEY,
    token_hash   VARCHAR(64) NOT NULL UNIQUE,
    role         VARCHAR(16) NOT NULL,
    created_by   VARCHAR(255) NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

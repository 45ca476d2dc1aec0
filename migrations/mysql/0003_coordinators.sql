-- Several coordinators on one database (as migrations/sqlite).

ALTER TABLE leader ADD COLUMN token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leader ADD COLUMN holder VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE leader ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leader ADD COLUMN elected_revision BIGINT NOT NULL DEFAULT 0;

CREATE TABLE coordinators (
    id           VARCHAR(255) PRIMARY KEY,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Several coordinators on one database: who leads, with which fencing token, until when; and
-- every coordinator process with the address it serves at.

ALTER TABLE leader ADD COLUMN token INTEGER NOT NULL DEFAULT 0;        -- only grows; checked in every write
ALTER TABLE leader ADD COLUMN holder TEXT NOT NULL DEFAULT '';          -- coordinator id of the leader
ALTER TABLE leader ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;   -- epoch ms (the lease without etcd)
ALTER TABLE leader ADD COLUMN elected_revision INTEGER NOT NULL DEFAULT 0;  -- etcd election revision of the last takeover

CREATE TABLE coordinators (
    id           TEXT PRIMARY KEY,     -- host:pid
    address      TEXT NOT NULL,        -- where clients and other coordinators reach it
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);

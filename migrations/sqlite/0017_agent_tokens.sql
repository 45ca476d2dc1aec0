-- Per-agent credentials (`goflow agent-token create --id ID`): one token per agent id, stored
-- only as its SHA-256 (hex). A call made with it acts as that agent and no other.

CREATE TABLE agent_tokens (
    agent_id     TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

-- The secret coordinators give their own embedded agents (one per database, made by the first
-- coordinator that needs it): any coordinator of the cluster then recognises every embedded
-- agent's calls, also those a standby passes to the leader. Never given to remote agents.
CREATE TABLE embedded_agent_secret (
    id     INTEGER PRIMARY KEY,
    secret TEXT NOT NULL
);

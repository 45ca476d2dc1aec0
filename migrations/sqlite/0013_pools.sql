-- Pools (issue 16): at most `slots` tries of the tasks naming a pool run at once, across every
-- agent. A pool stays when a later file no longer lists it; `goflowctl pools delete` removes
-- one that no task names.
CREATE TABLE pools (
    id         TEXT PRIMARY KEY,
    slots      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
ALTER TABLE tasks ADD COLUMN pool TEXT;          -- NULL: no pool
ALTER TABLE tasks ADD COLUMN max_active INTEGER; -- NULL: no limit
-- The pool a try holds while it runs (its task's pool when it was claimed): the claim counts
-- the running tries holding a pool.
ALTER TABLE attempts ADD COLUMN pool TEXT;
CREATE INDEX attempts_pool_state ON attempts(pool, state);
-- Why a queued instance is held back (its pool or max_active is full); NULL: not held. Such
-- an instance is offered to agents again when a try of its pool or task ends.
ALTER TABLE instances ADD COLUMN pool_wait TEXT;

-- Definitions with history (issue 18). Every apply that changes a definition stores its new
-- version here as canonical YAML; kind is 'task' today ('calendar', 'pool' can follow).
CREATE TABLE definition_versions (
    kind       VARCHAR(32) NOT NULL,
    id         VARCHAR(128) NOT NULL,
    version    BIGINT NOT NULL,           -- from 1, per (kind, id); kept after a delete
    definition MEDIUMTEXT NOT NULL,       -- canonical YAML, one mapping
    created_at BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    client     TEXT NOT NULL,
    source     TEXT NOT NULL,             -- the file (or form) it was applied from
    changes    TEXT NOT NULL,             -- the fields that changed, comma-separated; '' for a first version
    PRIMARY KEY (kind, id, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- The DAG (a file's `dag: NAME`) a task belongs to; NULL: none.
ALTER TABLE tasks ADD COLUMN dag VARCHAR(128);
-- The task's current version; 0 until the coordinator records version 1 of a task defined
-- before this migration (it does so when it starts).
ALTER TABLE tasks ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tasks_dag ON tasks(dag);
-- The version an instance was created with (NULL: created before versions were kept).
ALTER TABLE instances ADD COLUMN definition_version BIGINT;
-- The version its tries run, set by `run --as-then`; NULL: the current definition.
ALTER TABLE instances ADD COLUMN run_version BIGINT;
-- The version a try ran (NULL: recorded before versions were kept).
ALTER TABLE attempts ADD COLUMN definition_version BIGINT;

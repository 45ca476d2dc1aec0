-- The coordinator epoch in its own row, and an index for every sweep (as migrations/sqlite).

CREATE TABLE leader (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO leader (id, epoch) VALUES (1, 0);

DROP INDEX instances_state ON instances;
CREATE INDEX instances_state_task ON instances(state, task_id);
CREATE INDEX instances_state_next_try ON instances(state, next_try_at);
CREATE INDEX instances_state_queued ON instances(state, queued_at);
CREATE INDEX attempts_state ON attempts(state, finished_at);

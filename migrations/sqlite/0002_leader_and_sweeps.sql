-- The coordinator epoch moves to its own row (the leadership issue adds the fencing token
-- beside it), and every sweep gets an index that serves it.

CREATE TABLE leader (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL          -- bumped by every start; dispatches of an older one are refused
);
INSERT INTO leader (id, epoch)
    SELECT 1, COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'epoch'), 0);
DELETE FROM meta WHERE key = 'epoch';

DROP INDEX instances_state;
-- waiting instances of a task (apply, unpause), instances in a state (recovery)
CREATE INDEX instances_state_task ON instances(state, task_id);
-- retries due
CREATE INDEX instances_state_next_try ON instances(state, next_try_at);
-- queued too long (re-push sweep)
CREATE INDEX instances_state_queued ON instances(state, queued_at);
-- running tries (recovery), killed tries still stopping
CREATE INDEX attempts_state ON attempts(state, finished_at);

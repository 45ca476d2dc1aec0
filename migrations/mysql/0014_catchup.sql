-- Catch-up (issue 16): a scheduled task's policy for fires missed while goflow was down or the
-- task paused: latest (the default, as before), all, none.
ALTER TABLE tasks ADD COLUMN catchup VARCHAR(16) NOT NULL DEFAULT 'latest';
-- Every fire is one row: fired (ran), skipped (not run, with its reason), held (missed while
-- the task is paused; decided by the catchup policy when it is unpaused).
ALTER TABLE cron_fires ADD COLUMN outcome VARCHAR(16) NOT NULL DEFAULT 'fired';
ALTER TABLE cron_fires ADD COLUMN reason VARCHAR(1024) NOT NULL DEFAULT '';
CREATE INDEX cron_fires_outcome ON cron_fires(outcome);

-- Issue 16: periods (hour, day, month) and business calendars.
-- An instance's period key lives in etl_day: yyyymmdd, yyyymmddHH or yyyymm, told apart by length.
ALTER TABLE tasks ADD COLUMN period VARCHAR(8) NOT NULL DEFAULT 'day';
ALTER TABLE tasks ADD COLUMN calendar VARCHAR(128);
-- A dependency may count its offset in a calendar's days (the previous business day).
ALTER TABLE dependencies ADD COLUMN calendar VARCHAR(128);
ALTER TABLE instances MODIFY etl_day VARCHAR(10) NOT NULL;
ALTER TABLE cron_fires MODIFY etl_day VARCHAR(10) NOT NULL;
ALTER TABLE alerts MODIFY etl_day VARCHAR(10) NOT NULL;
-- One row per calendar: its definition as JSON (weekdays, exclude, include, description).
CREATE TABLE calendars (
    id         VARCHAR(128) PRIMARY KEY,
    definition MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

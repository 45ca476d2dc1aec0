-- Issue 16: periods (hour, day, month) and business calendars.
-- An instance's period key lives in etl_day: yyyymmdd, yyyymmddHH or yyyymm, told apart by length.
ALTER TABLE tasks ADD COLUMN period TEXT NOT NULL DEFAULT 'day';
ALTER TABLE tasks ADD COLUMN calendar TEXT;
-- A dependency may count its offset in a calendar's days (the previous business day).
ALTER TABLE dependencies ADD COLUMN calendar TEXT;
-- One row per calendar: its definition as JSON (weekdays, exclude, include, description).
CREATE TABLE calendars (
    id         TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

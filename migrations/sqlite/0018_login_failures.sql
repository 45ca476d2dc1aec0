-- Failed logins, by scope (`source:<address>` and `account:<name>@<address>`), so that the
-- back-off holds across restarts and across coordinators (issue 20). Rows quiet for a day go.
CREATE TABLE login_failures (
    scope    TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at  INTEGER NOT NULL
);
CREATE INDEX login_failures_last_at ON login_failures(last_at);

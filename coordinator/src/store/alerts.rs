//! Alerts (issue 11): one row per (instance, kind, try, channel), unique, so an event reported
//! twice alerts once; the delivery loop sends the pending ones and records the outcome.

use super::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub task_id: String,
    pub etl_day: String,
    /// failed | retry | long_running | deadline
    pub kind: String,
    pub try_number: i64,
    pub channel: String,
    /// The instance's state when the alert was raised.
    pub instance_state: String,
    pub message: String,
    /// pending | sent | failed
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const ALERT_COLUMNS: &str = "id, task_id, etl_day, kind, try_number, channel, instance_state, message, state, \
                             attempts, next_attempt_at, last_error, created_at, sent_at";

/// What to record; one row per channel.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub task_id: &'a str,
    pub etl_day: &'a str,
    pub kind: &'a str,
    pub try_number: i64,
    pub instance_state: &'a str,
    pub message: &'a str,
}

/// Records the alert for `channel` unless it was recorded before. True when inserted.
pub async fn insert_alert(
    db: &mut impl Db,
    alert: &NewAlert<'_>,
    channel: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = d.insert_unless_exists(
        "alerts (task_id, etl_day, kind, try_number, channel, instance_state, message, state, attempts,
                 next_attempt_at, last_error, created_at)",
        "(?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, '', ?)",
        "task_id, etl_day, kind, try_number, channel",
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(alert.task_id)
        .bind(alert.etl_day)
        .bind(alert.kind)
        .bind(alert.try_number)
        .bind(channel)
        .bind(alert.instance_state)
        .bind(alert.message)
        .bind(now)
        .bind(now)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Pending alerts whose next attempt is due, oldest first.
pub async fn due_alerts(db: &mut impl Db, now: i64, limit: i64) -> anyhow::Result<Vec<AlertRow>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT {limit}"
    );
    Ok(sqlx::query_as(d.sql(&sql)).bind(now).fetch_all(db.conn()).await?)
}

/// When the next pending alert is due, if any is pending.
pub async fn next_alert_due(db: &mut impl Db) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT MIN(next_attempt_at) FROM alerts WHERE state = 'pending'"))
            .fetch_one(db.conn())
            .await?,
    )
}

/// Records one delivery attempt: sent, or failed with `error` (then pending again at
/// `next_attempt_at`, or `failed` for good when `next_attempt_at` is None).
pub async fn record_delivery(
    db: &mut impl Db,
    id: i64,
    error: Option<&str>,
    next_attempt_at: Option<i64>,
    now: i64,
) -> anyhow::Result<()> {
    let d = db.dialect();
    let query = match error {
        None => sqlx::query(d.sql(
            "UPDATE alerts SET state = 'sent', attempts = attempts + 1, sent_at = ? WHERE id = ? AND state = 'pending'",
        ))
        .bind(now)
        .bind(id),
        Some(error) => sqlx::query(d.sql(
            "UPDATE alerts SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ?
             WHERE id = ? AND state = 'pending'",
        ))
        .bind(if next_attempt_at.is_some() { "pending" } else { "failed" })
        .bind(next_attempt_at.unwrap_or(now))
        .bind(error.chars().take(2000).collect::<String>())
        .bind(id),
    };
    query.execute(db.conn()).await?;
    Ok(())
}

/// The latest alerts first; `task` filters when not empty.
pub async fn list_alerts(db: &mut impl Db, task: &str, limit: i64) -> anyhow::Result<Vec<AlertRow>> {
    let d = db.dialect();
    let filter = if task.is_empty() { "" } else { "WHERE task_id = ?" };
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY created_at DESC, id DESC LIMIT {limit}"
    );
    let mut query = sqlx::query_as(d.sql(&sql));
    if !task.is_empty() {
        query = query.bind(task);
    }
    Ok(query.fetch_all(db.conn()).await?)
}

/// The state of the instance of (task, day), if it exists.
pub async fn instance_state(db: &mut impl Db, task: &str, etl_day: &str) -> anyhow::Result<Option<String>> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT state FROM instances WHERE task_id = ? AND etl_day = ?"))
            .bind(task)
            .bind(etl_day)
            .fetch_optional(db.conn())
            .await?,
    )
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunningTry {
    pub task_id: String,
    pub etl_day: String,
    pub try_number: i64,
    pub started_at: i64,
}

/// Every try running now, with its instance.
pub async fn running_tries(db: &mut impl Db) -> anyhow::Result<Vec<RunningTry>> {
    let d = db.dialect();
    Ok(sqlx::query_as(d.sql(
        "SELECT i.task_id, i.etl_day, a.try_number, a.started_at
         FROM attempts a JOIN instances i ON i.id = a.instance_id WHERE a.state = 'running'",
    ))
    .fetch_all(db.conn())
    .await?)
}

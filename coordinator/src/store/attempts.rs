//! Tries of an instance (their logs: `logs.rs`).

use std::collections::HashSet;

use goflow_core::{EtlDay, InstanceKey};

use super::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub instance_id: i64,
    pub try_number: i64,
    pub epoch: i64,
    pub agent_id: String,
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub log_bytes: i64,
    pub message: String,
    /// The command line it ran, after templating; `None` for tries recorded before it was kept.
    pub command: Option<String>,
    /// Bytes of its log in the object `log_object` (issue 18); the rest is in `log_chunks`.
    pub log_archived_bytes: i64,
    pub log_object: Option<String>,
    /// The task's version it ran; `None` for tries recorded before versions were kept.
    pub definition_version: Option<i64>,
}

pub fn attempt_id(instance_id: i64, try_number: i64) -> String {
    format!("{instance_id}-{try_number}")
}

/// A try as its claim records it: one INSERT with everything known at the claim, so the
/// version and pool cost no statements of their own.
pub struct NewAttempt<'a> {
    pub instance_id: i64,
    pub try_number: i64,
    pub epoch: i64,
    pub agent: &'a str,
    /// The command line it runs, after templating.
    pub command: &'a str,
    /// The task's version it runs; None when not known.
    pub version: Option<i64>,
    /// The pool its slot is counted in; None: no pool.
    pub pool: Option<&'a str>,
    pub now: i64,
}

/// Records a new try. The (instance, try number) key is unique: a second claim of the same
/// try fails here instead of replacing the first one's row and logs.
pub async fn record_attempt(db: &mut impl Db, new: &NewAttempt<'_>) -> anyhow::Result<String> {
    let d = db.dialect();
    let id = attempt_id(new.instance_id, new.try_number);
    sqlx::query(d.sql(
        "INSERT INTO attempts (id, instance_id, try_number, epoch, agent_id, state, started_at, message, command,
                               definition_version, pool)
         VALUES (?, ?, ?, ?, ?, 'running', ?, '', ?, ?, ?)",
    ))
    .bind(&id)
    .bind(new.instance_id)
    .bind(new.try_number)
    .bind(new.epoch)
    .bind(new.agent)
    .bind(new.now)
    .bind(new.command)
    .bind(new.version)
    .bind(new.pool)
    .execute(db.conn())
    .await?;
    Ok(id)
}

/// [`record_attempt`] of a try with no version or pool recorded.
pub async fn insert_attempt(
    db: &mut impl Db,
    instance_id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    command: &str,
    now: i64,
) -> anyhow::Result<String> {
    let new = NewAttempt {
        instance_id,
        try_number,
        epoch,
        agent,
        command,
        version: None,
        pool: None,
        now,
    };
    record_attempt(db, &new).await
}

const ATTEMPT_COLUMNS: &str = "id, instance_id, try_number, epoch, agent_id, state, started_at, finished_at, exit_code, log_bytes, message, command, log_archived_bytes, log_object, definition_version";

pub async fn attempt(db: &mut impl Db, id: &str) -> anyhow::Result<Option<AttemptRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?");
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(id)
        .fetch_optional(db.conn())
        .await?)
}

pub async fn attempts_of(db: &mut impl Db, instance_id: i64) -> anyhow::Result<Vec<AttemptRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE instance_id = ? ORDER BY try_number");
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(instance_id)
        .fetch_all(db.conn())
        .await?)
}

pub async fn running_attempts_of_agent(db: &mut impl Db, agent: &str) -> anyhow::Result<Vec<AttemptRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE agent_id = ? AND state = 'running'");
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(agent)
        .fetch_all(db.conn())
        .await?)
}

pub async fn running_attempts(db: &mut impl Db) -> anyhow::Result<Vec<AttemptRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state = 'running'");
    Ok(sqlx::query_as(d.sql(&sql)).fetch_all(db.conn()).await?)
}

/// A running try closed with its outcome; bound by state, exit code, message, finished_at, id.
pub(super) const CLOSE_RUNNING_ATTEMPT: &str = "UPDATE attempts SET state = ?, exit_code = ?, message = ?, finished_at = ? WHERE id = ? AND state = 'running'";

/// running -> the try's outcome. False if the try was already closed.
pub async fn finish_attempt(
    db: &mut impl Db,
    id: &str,
    state: &str,
    exit_code: Option<i64>,
    message: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql(CLOSE_RUNNING_ATTEMPT))
        .bind(state)
        .bind(exit_code)
        .bind(message)
        .bind(now)
        .bind(id)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A killed try's agent reported its end: "killing" becomes "killed".
pub async fn settle_killing(db: &mut impl Db, id: &str, now: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(
        d.sql("UPDATE attempts SET state = 'killed', finished_at = ? WHERE id = ? AND state = 'killing'"),
    )
    .bind(now)
    .bind(id)
    .execute(db.conn())
    .await?;
    Ok(())
}

/// Instances with a try killed since `since` whose agent has not yet reported it gone.
pub async fn killing_instances(db: &mut impl Db, since: i64) -> anyhow::Result<HashSet<InstanceKey>> {
    let d = db.dialect();
    let rows: Vec<(String, String)> = sqlx::query_as(d.sql(
        "SELECT i.task_id, i.etl_day FROM attempts a JOIN instances i ON i.id = a.instance_id
         WHERE a.state = 'killing' AND a.finished_at >= ?",
    ))
    .bind(since)
    .fetch_all(db.conn())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(task, day)| Some(InstanceKey::new(&task, EtlDay::parse(&day).ok()?)))
        .collect())
}

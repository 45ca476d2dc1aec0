//! Tries of an instance and their logs.

use std::collections::HashSet;

use goflow_core::{EtlDay, InstanceKey};
use sqlx::Row;

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
}

pub fn attempt_id(instance_id: i64, try_number: i64) -> String {
    format!("{instance_id}-{try_number}")
}

/// Records a new try. The (instance, try number) key is unique: a second claim of the same
/// try fails here instead of replacing the first one's row and logs.
pub async fn insert_attempt(
    db: &mut impl Db,
    instance_id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    command: &str,
    now: i64,
) -> anyhow::Result<String> {
    let d = db.dialect();
    let id = attempt_id(instance_id, try_number);
    sqlx::query(d.sql(
        "INSERT INTO attempts (id, instance_id, try_number, epoch, agent_id, state, started_at, message, command)
         VALUES (?, ?, ?, ?, ?, 'running', ?, '', ?)",
    ))
    .bind(&id)
    .bind(instance_id)
    .bind(try_number)
    .bind(epoch)
    .bind(agent)
    .bind(now)
    .bind(command)
    .execute(db.conn())
    .await?;
    Ok(id)
}

const ATTEMPT_COLUMNS: &str = "id, instance_id, try_number, epoch, agent_id, state, started_at, finished_at, exit_code, log_bytes, message, command";

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
    let done = sqlx::query(d.sql(
        "UPDATE attempts SET state = ?, exit_code = ?, message = ?, finished_at = ? WHERE id = ? AND state = 'running'",
    ))
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

/// Appends log bytes to a try, up to `cap` bytes in all; past it, one marker and nothing more.
/// Returns the bytes stored, or None when no such try exists. The chunk's key is the try and
/// its byte offset, so two writers appending at the same offset cannot both succeed.
pub async fn append_log(
    db: &mut impl Db,
    attempt_id: &str,
    data: &[u8],
    cap: i64,
) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    let Some(current) = sqlx::query_scalar::<_, i64>(d.sql("SELECT log_bytes FROM attempts WHERE id = ?"))
        .bind(attempt_id)
        .fetch_optional(db.conn())
        .await?
    else {
        return Ok(None);
    };
    if current >= cap {
        return Ok(Some(0));
    }
    let room = (cap - current) as usize;
    let mut chunk = data.to_vec();
    if chunk.len() > room {
        chunk.truncate(room);
        chunk.extend_from_slice(
            format!("\n[goflow: log cut at {cap} bytes; the rest was dropped]\n").as_bytes(),
        );
    }
    sqlx::query(d.sql("INSERT INTO log_chunks (attempt_id, byte_offset, data) VALUES (?, ?, ?)"))
        .bind(attempt_id)
        .bind(current)
        .bind(&chunk)
        .execute(db.conn())
        .await?;
    // Past the cap the marker pushes log_bytes over it, which closes the log. The WHERE makes
    // the offset read above a compare-and-set too.
    let done =
        sqlx::query(d.sql("UPDATE attempts SET log_bytes = log_bytes + ? WHERE id = ? AND log_bytes = ?"))
            .bind(chunk.len() as i64)
            .bind(attempt_id)
            .bind(current)
            .execute(db.conn())
            .await?;
    anyhow::ensure!(
        done.rows_affected() == 1,
        "log of try {attempt_id} was appended to concurrently"
    );
    Ok(Some(chunk.len() as i64))
}

/// Log bytes of a try from `offset`, at most about `max` bytes.
pub async fn read_log(db: &mut impl Db, attempt_id: &str, offset: i64, max: i64) -> anyhow::Result<Vec<u8>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT byte_offset, data FROM log_chunks
         WHERE attempt_id = ? AND byte_offset + length(data) > ? AND byte_offset < ?
         ORDER BY byte_offset",
    ))
    .bind(attempt_id)
    .bind(offset)
    // Chunks start in order, so none starting past offset + max is needed: a 64 MiB log is
    // read a window at a time, never whole.
    .bind(offset + max)
    .fetch_all(db.conn())
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let start: i64 = row.try_get("byte_offset")?;
        let data: Vec<u8> = row.try_get("data")?;
        let skip = (offset - start).max(0) as usize;
        out.extend_from_slice(&data[skip.min(data.len())..]);
        if out.len() as i64 >= max {
            break;
        }
    }
    Ok(out)
}

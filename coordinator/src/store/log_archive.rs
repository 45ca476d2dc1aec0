//! The SQL side of logs archived to object storage (issue 18; the uploads: `crate::archive`).
//!
//! `attempts.log_archived_bytes` bytes of a try's log are in the object `log_object`; the rest
//! (output that arrived after the upload) is in `log_chunks`, at its usual offsets. Every append
//! sets `log_archive_due`; the upload that takes everything clears it.

use sqlx::Row;

use super::Db;

/// A try whose log has bytes to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDue {
    pub attempt_id: String,
    pub task_id: String,
    pub etl_day: String,
    pub log_bytes: i64,
    pub log_archived_bytes: i64,
    pub log_object: Option<String>,
}

/// Up to `limit` ended tries (finished before `finished_before`, epoch ms) whose log has bytes
/// not yet in its object, oldest first.
pub async fn logs_due_for_archive(
    db: &mut impl Db,
    finished_before: i64,
    limit: i64,
) -> anyhow::Result<Vec<ArchiveDue>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT a.id, i.task_id, i.etl_day, a.log_bytes, a.log_archived_bytes, a.log_object
         FROM attempts a JOIN instances i ON i.id = a.instance_id
         WHERE a.log_archive_due = 1 AND a.state <> 'running' AND a.finished_at < ?
         ORDER BY a.finished_at LIMIT ?",
    ))
    .bind(finished_before)
    .bind(limit)
    .fetch_all(db.conn())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ArchiveDue {
                attempt_id: row.try_get("id")?,
                task_id: row.try_get("task_id")?,
                etl_day: row.try_get("etl_day")?,
                log_bytes: row.try_get("log_bytes")?,
                log_archived_bytes: row.try_get("log_archived_bytes")?,
                log_object: row.try_get("log_object")?,
            })
        })
        .collect()
}

/// After an upload of the first `archived` bytes of the try's log to `object` was confirmed:
/// records it and deletes the chunks it holds, unless another upload recorded first (the
/// stored archived length is no longer `was`): then nothing changes and false is returned.
/// Output stored meanwhile (past `archived`) stays in chunks and keeps the try due.
pub async fn record_log_archived(
    db: &mut impl Db,
    attempt_id: &str,
    was: i64,
    archived: i64,
    object: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    // Locks the try's row first, as an append does, so the two take turns.
    sqlx::query(d.sql("UPDATE attempts SET log_acked = log_acked WHERE id = ?"))
        .bind(attempt_id)
        .execute(db.conn())
        .await?;
    let Some(row) = sqlx::query(d.sql("SELECT log_bytes, log_archived_bytes FROM attempts WHERE id = ?"))
        .bind(attempt_id)
        .fetch_optional(db.conn())
        .await?
    else {
        return Ok(false); // cleaned meanwhile
    };
    let stored: i64 = row.try_get("log_bytes")?;
    let current: i64 = row.try_get("log_archived_bytes")?;
    if current != was || archived > stored {
        return Ok(false);
    }
    sqlx::query(d.sql("DELETE FROM log_chunks WHERE attempt_id = ? AND byte_offset < ?"))
        .bind(attempt_id)
        .bind(archived)
        .execute(db.conn())
        .await?;
    let due = i64::from(stored > archived);
    sqlx::query(d.sql(
        "UPDATE attempts SET log_archived_bytes = ?, log_object = ?, log_archived_at = ?, log_archive_due = ?
         WHERE id = ?",
    ))
    .bind(archived)
    .bind(object)
    .bind(now)
    .bind(due)
    .bind(attempt_id)
    .execute(db.conn())
    .await?;
    Ok(true)
}

/// Where a try's log is: its archived length and object (0 and None: all in chunks).
pub async fn log_location(
    db: &mut impl Db,
    attempt_id: &str,
) -> anyhow::Result<Option<(i64, Option<String>)>> {
    let d = db.dialect();
    let row = sqlx::query(d.sql("SELECT log_archived_bytes, log_object FROM attempts WHERE id = ?"))
        .bind(attempt_id)
        .fetch_optional(db.conn())
        .await?;
    row.map(|row| Ok((row.try_get("log_archived_bytes")?, row.try_get("log_object")?)))
        .transpose()
}

/// How many log chunks the try has in the database.
pub async fn count_log_chunks(db: &mut impl Db, attempt_id: &str) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar::<_, i64>(d.sql("SELECT COUNT(*) FROM log_chunks WHERE attempt_id = ?"))
            .bind(attempt_id)
            .fetch_one(db.conn())
            .await?,
    )
}

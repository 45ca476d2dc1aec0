//! A try's log: chunks keyed by (try, byte offset), appended by whichever coordinator the agent
//! reached (DESIGN.md: append-only rows that no transition reads may be written by any
//! coordinator, under unique keys), and read by offset.
//!
//! The agent numbers its output by byte offset and resends from the last acknowledged one after
//! any failure, so the same bytes may arrive twice, or overlap what is stored. `attempts` keeps
//! two counters: `log_acked`, how far into the agent's output everything is stored (what the
//! agent resends from), and `log_bytes`, the bytes stored (readers' offsets). They are equal
//! until the coordinator's cap cuts the log: past it, output is acknowledged and dropped.

use sqlx::Row;

use super::Db;

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Every byte of the agent's output before this offset is stored. Less than the end of
    /// what was sent only when the chunk started past it (a gap): the agent resends from here.
    Acked(i64),
    /// No such try.
    NoSuchTry,
    /// The try runs on another agent: its output is not this agent's to write.
    NotYours,
}

/// Stores `data`, which starts at byte `offset` of the try's output, idempotently: bytes before
/// the acknowledged offset are skipped (a resend), a chunk starting past it is refused (never a
/// gap), and the log holds at most `cap` bytes (then one marker and nothing more). With
/// `agent`, only that agent's try is written.
///
/// The first statement locks the try's row (and, on SQLite, takes the write lock before
/// anything is read), so two coordinators appending to one try at once take turns.
pub async fn append_log_at(
    db: &mut impl Db,
    attempt_id: &str,
    agent: Option<&str>,
    offset: i64,
    data: &[u8],
    cap: i64,
) -> anyhow::Result<Appended> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE attempts SET log_acked = log_acked WHERE id = ?"))
        .bind(attempt_id)
        .execute(db.conn())
        .await?;
    let Some(row) = sqlx::query(d.sql("SELECT agent_id, log_bytes, log_acked FROM attempts WHERE id = ?"))
        .bind(attempt_id)
        .fetch_optional(db.conn())
        .await?
    else {
        return Ok(Appended::NoSuchTry);
    };
    let owner: String = row.try_get("agent_id")?;
    let stored: i64 = row.try_get("log_bytes")?;
    let acked: i64 = row.try_get("log_acked")?;
    if agent.is_some_and(|agent| agent != owner) {
        return Ok(Appended::NotYours);
    }
    let end = offset + data.len() as i64;
    if offset > acked || end <= acked {
        // A gap (refused), or bytes stored already.
        return Ok(Appended::Acked(acked));
    }
    let fresh = &data[(acked - offset) as usize..];
    let chunk = capped(fresh, stored, cap);
    if !chunk.is_empty() {
        sqlx::query(d.sql("INSERT INTO log_chunks (attempt_id, byte_offset, data) VALUES (?, ?, ?)"))
            .bind(attempt_id)
            .bind(stored)
            .bind(&chunk)
            .execute(db.conn())
            .await?;
    }
    // New bytes make the try's log due for (another) upload to the archive, if there is one.
    let update = if chunk.is_empty() {
        "UPDATE attempts SET log_bytes = log_bytes + ?, log_acked = ? WHERE id = ? AND log_acked = ?"
    } else {
        "UPDATE attempts SET log_bytes = log_bytes + ?, log_acked = ?, log_archive_due = 1 WHERE id = ? AND log_acked = ?"
    };
    let done = sqlx::query(d.sql(update))
        .bind(chunk.len() as i64)
        .bind(end)
        .bind(attempt_id)
        .bind(acked)
        .execute(db.conn())
        .await?;
    anyhow::ensure!(
        done.rows_affected() == 1,
        "log of try {attempt_id} was appended to concurrently"
    );
    Ok(Appended::Acked(end))
}

/// What of `fresh` fits in a log of `stored` bytes capped at `cap`: all of it, or the part
/// that fits and a marker (which pushes the log past the cap, closing it), or nothing.
fn capped(fresh: &[u8], stored: i64, cap: i64) -> Vec<u8> {
    if stored >= cap {
        return Vec::new();
    }
    let room = (cap - stored) as usize;
    let mut chunk = fresh.to_vec();
    if chunk.len() > room {
        chunk.truncate(room);
        chunk.extend_from_slice(
            format!("\n[goflow: log cut at {cap} bytes; the rest was dropped]\n").as_bytes(),
        );
    }
    chunk
}

/// Appends `data` at the end of what is stored (agents that stream without offsets). Returns
/// the bytes taken, or None when no such try exists.
pub async fn append_log(
    db: &mut impl Db,
    attempt_id: &str,
    data: &[u8],
    cap: i64,
) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    let Some(acked) = sqlx::query_scalar::<_, i64>(d.sql("SELECT log_acked FROM attempts WHERE id = ?"))
        .bind(attempt_id)
        .fetch_optional(db.conn())
        .await?
    else {
        return Ok(None);
    };
    match append_log_at(db, attempt_id, None, acked, data, cap).await? {
        Appended::Acked(end) => Ok(Some(end - acked)),
        Appended::NoSuchTry | Appended::NotYours => Ok(None),
    }
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
    let mut next = offset;
    for row in rows {
        let start: i64 = row.try_get("byte_offset")?;
        let data: Vec<u8> = row.try_get("data")?;
        // Chunks are contiguous by construction; should one be missing, stop before the hole
        // rather than splice what follows onto what precedes it.
        if start > next {
            tracing::error!(
                attempt_id,
                offset = next,
                "log chunk missing: reading stops there"
            );
            break;
        }
        let skip = (next - start) as usize;
        out.extend_from_slice(&data[skip.min(data.len())..]);
        next = start + data.len() as i64;
        if out.len() as i64 >= max {
            break;
        }
    }
    Ok(out)
}

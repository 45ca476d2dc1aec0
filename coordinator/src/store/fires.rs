//! Cron fires that did not simply run: skipped ones (with the reason history shows) and ones
//! held while their task is paused. A fire is one row of `cron_fires`, unique on (schedule,
//! fire time), so whatever is recorded first for a fire (run, skipped or held) is what happens.

use sqlx::Row;

use super::Db;

/// What became of a fire, as stored in `cron_fires.outcome`.
pub const FIRED: &str = "fired";
pub const SKIPPED: &str = "skipped";
pub const HELD: &str = "held";

/// Characters kept of a reason (MySQL's column is VARCHAR(1024)).
const MAX_REASON: usize = 1000;

/// One stored fire, for history listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRow {
    pub task_id: String,
    pub fire_at: i64,
    pub etl_day: String,
    pub outcome: String,
    pub reason: String,
}

fn capped(reason: &str) -> String {
    reason.chars().take(MAX_REASON).collect()
}

/// Inserts a fire row with its outcome and reason and moves the schedule's last fire to it;
/// false when this (task, fire time) was already recorded, by anyone.
pub async fn insert_fire(
    db: &mut impl Db,
    task: &str,
    fire_at: i64,
    period_key: &str,
    outcome: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = d.insert_unless_exists(
        "cron_fires (task_id, fire_at, etl_day, created_at, skipped, outcome, reason)",
        "(?, ?, ?, ?, 0, ?, ?)",
        "task_id, fire_at",
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(task)
        .bind(fire_at)
        .bind(period_key)
        .bind(now)
        .bind(outcome)
        .bind(capped(reason))
        .execute(db.conn())
        .await?;
    advance_last_fire(db, task, fire_at).await?;
    Ok(done.rows_affected() == 1)
}

async fn advance_last_fire(db: &mut impl Db, task: &str, fire_at: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE schedules SET last_fire_at = ? WHERE task_id = ? AND last_fire_at < ?"))
        .bind(fire_at)
        .bind(task)
        .bind(fire_at)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Records a fire that is not run, with the reason shown in history (for any reason: catch-up,
/// a calendar's day off), and writes it to the operations log as `skip-fire` on `task@period`.
/// False when this fire was already recorded (then nothing is written).
pub async fn record_skipped_fire(
    db: &mut impl Db,
    task: &str,
    fire_at: i64,
    period_key: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<bool> {
    if !insert_fire(db, task, fire_at, period_key, SKIPPED, reason, now).await? {
        return Ok(false);
    }
    let detail = format!("fire at {} not run: {reason}", fire_time(fire_at));
    super::record_operation(
        db,
        "goflow",
        "scheduler",
        "skip-fire",
        &format!("{task}@{period_key}"),
        &detail,
        now,
    )
    .await?;
    Ok(true)
}

/// A fire time as history prints it: `2026-01-01 05:00 UTC` (seconds only when not zero).
pub fn fire_time(fire_at: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(fire_at) {
        Some(t) if t.timestamp() % 60 == 0 => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => fire_at.to_string(),
    }
}

/// Decides a held fire: true when this writer changed it from held to `outcome`.
pub async fn settle_held_fire(
    db: &mut impl Db,
    task: &str,
    fire_at: i64,
    outcome: &str,
    reason: &str,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql(
        "UPDATE cron_fires SET outcome = ?, reason = ? WHERE task_id = ? AND fire_at = ? AND outcome = 'held'",
    ))
    .bind(outcome)
    .bind(capped(reason))
    .bind(task)
    .bind(fire_at)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fires held while their task was paused, by task, oldest first.
pub async fn held_fires(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64)>> {
    let d = db.dialect();
    let rows = sqlx::query(
        d.sql("SELECT task_id, fire_at FROM cron_fires WHERE outcome = 'held' ORDER BY task_id, fire_at"),
    )
    .fetch_all(db.conn())
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("task_id")?, r.try_get("fire_at")?)))
        .collect()
}

/// The schedule of `task` changed (or went away): fires held under the old one are skipped,
/// not run under the new one. Returns how many.
pub async fn drop_held_fires(db: &mut impl Db, task: &str, reason: &str) -> anyhow::Result<u64> {
    let d = db.dialect();
    let done = sqlx::query(
        d.sql("UPDATE cron_fires SET outcome = 'skipped', reason = ? WHERE task_id = ? AND outcome = 'held'"),
    )
    .bind(capped(reason))
    .bind(task)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected())
}

/// The newest `limit` fires of `task`, newest first.
pub async fn list_fires(db: &mut impl Db, task: &str, limit: i64) -> anyhow::Result<Vec<FireRow>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT task_id, fire_at, etl_day, outcome, reason FROM cron_fires
         WHERE task_id = ? ORDER BY fire_at DESC LIMIT ?",
    ))
    .bind(task)
    .bind(limit)
    .fetch_all(db.conn())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(FireRow {
                task_id: r.try_get("task_id")?,
                fire_at: r.try_get("fire_at")?,
                etl_day: r.try_get("etl_day")?,
                outcome: r.try_get("outcome")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

/// Starts a schedule's clock at `at` (the schedule clock's time, which tests may move; the row
/// was written with the system time).
pub async fn restart_schedule(db: &mut impl Db, task: &str, at: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE schedules SET last_fire_at = ? WHERE task_id = ?"))
        .bind(at)
        .bind(task)
        .execute(db.conn())
        .await?;
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use goflow_core::TaskSpec;

    use super::*;
    use crate::store::{Dialect, Store, list_operations, now_ms, upsert_task};
    use crate::testing::TestDatabase;

    const FIRE: i64 = 1_773_194_400_000; // 2026-03-11 02:00 UTC

    /// On each database: a skipped fire is recorded once with its reason and one history
    /// entry; a held fire is settled once, by whichever writer comes first; a schedule change
    /// skips the fires still held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skipped_and_held_fires_are_recorded_once_with_their_reason() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let db = TestDatabase::create(dialect).await;
            let one = Store::open(&db.database_url()).await.unwrap();
            let two = Store::open(&db.database_url()).await.unwrap();
            let mut spec = TaskSpec::new("a", "true");
            spec.schedule = Some("0 2 * * *".into());
            let mut tx = one.begin().await.unwrap();
            upsert_task(&mut tx, &spec, now_ms(), true).await.unwrap();
            restart_schedule(&mut tx, "a", FIRE - 86_400_000).await.unwrap();
            assert!(
                record_skipped_fire(&mut tx, "a", FIRE, "20260311", "not a cn_workday day", now_ms())
                    .await
                    .unwrap()
            );
            assert!(
                !record_skipped_fire(&mut tx, "a", FIRE, "20260311", "again", now_ms())
                    .await
                    .unwrap(),
                "{dialect:?}: a fire is recorded once"
            );
            for day in 1..=2 {
                let at = FIRE + day * 86_400_000;
                assert!(
                    insert_fire(&mut tx, "a", at, "x", HELD, "the task is paused", now_ms())
                        .await
                        .unwrap()
                );
            }
            tx.commit().await.unwrap();

            let ops = list_operations(&mut one.read().await.unwrap(), Some("a"), 10)
                .await
                .unwrap();
            assert_eq!(ops.len(), 1, "{dialect:?}: {ops:?}");
            assert_eq!(
                (
                    ops[0].action.as_str(),
                    ops[0].target.as_str(),
                    ops[0].detail.as_str()
                ),
                (
                    "skip-fire",
                    "a@20260311",
                    "fire at 2026-03-11 02:00 UTC not run: not a cn_workday day"
                )
            );
            let held = held_fires(&mut one.read().await.unwrap()).await.unwrap();
            assert_eq!(held.len(), 2, "{dialect:?}");

            // Two writers settle the first held fire: one wins.
            let mut results = vec![];
            for store in [&one, &two] {
                let mut tx = store.begin().await.unwrap();
                results.push(
                    settle_held_fire(&mut tx, "a", held[0].1, FIRED, "")
                        .await
                        .unwrap(),
                );
                tx.commit().await.unwrap();
            }
            assert_eq!(results, [true, false], "{dialect:?}");
            let mut tx = one.begin().await.unwrap();
            assert_eq!(
                drop_held_fires(&mut tx, "a", "the schedule changed while the task was paused")
                    .await
                    .unwrap(),
                1
            );
            tx.commit().await.unwrap();

            let fires = list_fires(&mut one.read().await.unwrap(), "a", 10).await.unwrap();
            let seen: Vec<(&str, &str)> = fires
                .iter()
                .map(|f| (f.outcome.as_str(), f.reason.as_str()))
                .collect();
            assert_eq!(
                seen,
                [
                    (SKIPPED, "the schedule changed while the task was paused"),
                    (FIRED, ""),
                    (SKIPPED, "not a cn_workday day"),
                ],
                "{dialect:?}: newest first"
            );
            let last = crate::store::schedule_last_fires(&mut one.read().await.unwrap())
                .await
                .unwrap();
            assert_eq!(last, [("a".to_string(), FIRE + 2 * 86_400_000)], "{dialect:?}");
        }
    }
}

//! Pools (their slots), the counts of running tries a claim decides on, and the queued
//! instances held back because their pool or max_active is full.

use std::collections::HashMap;

use goflow_core::PoolSpec;
use sqlx::Row;

use super::{Db, Dialect, InstanceRow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPool {
    pub id: String,
    pub slots: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn load_pools(db: &mut impl Db) -> anyhow::Result<Vec<StoredPool>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql("SELECT id, slots, created_at, updated_at FROM pools ORDER BY id"))
        .fetch_all(db.conn())
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(StoredPool {
                id: r.try_get("id")?,
                slots: r.try_get("slots")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Creates a pool or sets its slots.
pub async fn upsert_pool(db: &mut impl Db, pool: &PoolSpec, now: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = d.upsert(
        "pools (id, slots, created_at, updated_at)",
        "(?, ?, ?, ?)",
        "id",
        &["slots", "updated_at"],
    );
    sqlx::query(d.sql(&sql))
        .bind(&pool.id)
        .bind(i64::from(pool.slots))
        .bind(now)
        .bind(now)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Deletes a pool; false when there was none.
pub async fn delete_pool(db: &mut impl Db, id: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("DELETE FROM pools WHERE id = ?"))
        .bind(id)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Tasks naming `pool`.
pub async fn tasks_in_pool(db: &mut impl Db, pool: &str) -> anyhow::Result<Vec<String>> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT id FROM tasks WHERE pool = ? ORDER BY id"))
            .bind(pool)
            .fetch_all(db.conn())
            .await?,
    )
}

/// `FOR UPDATE` where the database has row locks; SQLite has one writer at a time already.
fn for_update(d: Dialect) -> &'static str {
    if d == Dialect::Sqlite { "" } else { " FOR UPDATE" }
}

/// A pool's slots, its row locked until the transaction ends (PostgreSQL, MySQL), so two
/// claims of the pool are decided one after the other whoever writes them. None: no such pool.
pub async fn lock_pool(db: &mut impl Db, pool: &str) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    let sql = format!("SELECT slots FROM pools WHERE id = ?{}", for_update(d));
    Ok(sqlx::query_scalar(d.sql(&sql))
        .bind(pool)
        .fetch_optional(db.conn())
        .await?)
}

/// Locks a task's row until the transaction ends (for its max_active), as `lock_pool`.
pub async fn lock_task(db: &mut impl Db, task: &str) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = format!("SELECT id FROM tasks WHERE id = ?{}", for_update(d));
    let _: Option<String> = sqlx::query_scalar(d.sql(&sql))
        .bind(task)
        .fetch_optional(db.conn())
        .await?;
    Ok(())
}

/// Running tries holding `pool`.
pub async fn pool_running(db: &mut impl Db, pool: &str) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM attempts WHERE pool = ? AND state = 'running'"))
            .bind(pool)
            .fetch_one(db.conn())
            .await?,
    )
}

/// Running tries of `task`, whatever their data date.
pub async fn task_running(db: &mut impl Db, task: &str) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM instances WHERE task_id = ? AND state = 'running'"))
            .bind(task)
            .fetch_one(db.conn())
            .await?,
    )
}

/// Running tries per pool held.
pub async fn running_by_pool(db: &mut impl Db) -> anyhow::Result<HashMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(d.sql(
        "SELECT pool, COUNT(*) FROM attempts WHERE state = 'running' AND pool IS NOT NULL GROUP BY pool",
    ))
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// Running tries per task.
pub async fn running_by_task(db: &mut impl Db) -> anyhow::Result<HashMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        d.sql("SELECT task_id, COUNT(*) FROM instances WHERE state = 'running' GROUP BY task_id"),
    )
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// Queued instances per task (held back or on their way to an agent).
pub async fn queued_by_task(db: &mut impl Db) -> anyhow::Result<HashMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        d.sql("SELECT task_id, COUNT(*) FROM instances WHERE state = 'queued' GROUP BY task_id"),
    )
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// A running try holding a pool, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHolder {
    pub pool: String,
    pub attempt_id: String,
    pub task_id: String,
    pub etl_day: String,
    pub agent_id: String,
    pub started_at: i64,
}

pub async fn pool_holders(db: &mut impl Db) -> anyhow::Result<Vec<PoolHolder>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT a.pool, a.id, i.task_id, i.etl_day, a.agent_id, a.started_at
         FROM attempts a JOIN instances i ON i.id = a.instance_id
         WHERE a.state = 'running' AND a.pool IS NOT NULL ORDER BY a.pool, a.started_at, a.id",
    ))
    .fetch_all(db.conn())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(PoolHolder {
                pool: r.try_get(0)?,
                attempt_id: r.try_get(1)?,
                task_id: r.try_get(2)?,
                etl_day: r.try_get(3)?,
                agent_id: r.try_get(4)?,
                started_at: r.try_get(5)?,
            })
        })
        .collect()
}

/// Holds a queued instance back (at this try) with why; false when it moved on. From now it
/// waits for slots (issue 19), until its claim.
pub async fn hold_instance(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    why: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = format!(
        "UPDATE instances SET {}, pool_wait = ? WHERE id = ? AND state = 'queued' AND try_number = ?",
        *super::timings::LEAVE_PHASE
    );
    let done = super::timings::bind_leave(
        sqlx::query(d.sql(&sql)),
        now,
        goflow_core::timings::Phase::WaitingSlots,
    )
    .bind(why)
    .bind(id)
    .bind(try_number)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Queued instances held back, in the order they get free slots: priority, then age.
pub async fn held_instances(db: &mut impl Db) -> anyhow::Result<Vec<InstanceRow>> {
    super::instances::select_where(
        db,
        // A paused or bounded backfill's are offered by the backfill itself (engine/backfills.rs).
        "WHERE state = 'queued' AND pool_wait IS NOT NULL AND (backfill_id IS NULL OR backfill_id NOT IN
           (SELECT id FROM backfills WHERE state = 'paused' OR parallelism IS NOT NULL))
         ORDER BY priority DESC, queued_at, id LIMIT 10000",
    )
    .await
}

/// The task of each of these instances (those that exist).
pub async fn tasks_of_instances(db: &mut impl Db, ids: &[i64]) -> anyhow::Result<HashMap<i64, String>> {
    let d = db.dialect();
    let mut tasks = HashMap::with_capacity(ids.len());
    for slice in ids.chunks(1000) {
        let marks = vec!["?"; slice.len()].join(", ");
        let sql = format!("SELECT id, task_id FROM instances WHERE id IN ({marks})");
        let mut query = sqlx::query_as::<_, (i64, String)>(d.sql(&sql));
        for id in slice {
            query = query.bind(*id);
        }
        tasks.extend(query.fetch_all(db.conn()).await?);
    }
    Ok(tasks)
}

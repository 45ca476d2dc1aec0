//! Backfills (issue 19): the `backfills` rows, and every statement that touches a backfill's
//! instances as a whole (`... WHERE backfill_id = ?`), so that an operation on a backfill of
//! any size is a bounded number of statements.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::instances::{placeholders, select_where};
use super::{Db, Dialect, InstanceRow};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackfillRow {
    pub id: i64,
    pub task_id: String,
    pub from_period: String,
    pub to_period: String,
    pub down: i64,
    pub parallelism: Option<i64>,
    pub state: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub instances: i64,
}

const COLUMNS: &str = "id, task_id, from_period, to_period, down, parallelism, state, created_by, created_at, updated_at, instances";

/// A backfill to record.
pub struct NewBackfill<'a> {
    pub task: &'a str,
    pub from: String,
    pub to: String,
    pub down: bool,
    pub parallelism: Option<i64>,
    pub created_by: &'a str,
}

/// Records a running backfill; returns its id. Ids are the next after the highest: the one
/// fenced writer inserts them (and the primary key refuses a second writer's same id).
pub async fn insert_backfill(db: &mut impl Db, new: &NewBackfill<'_>, now: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    let id: i64 = sqlx::query_scalar(d.sql("SELECT COALESCE(MAX(id), 0) + 1 FROM backfills"))
        .fetch_one(db.conn())
        .await?;
    sqlx::query(d.sql(
        "INSERT INTO backfills (id, task_id, from_period, to_period, down, parallelism, state, created_by,
                                created_at, updated_at, instances)
         VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, 0)",
    ))
    .bind(id)
    .bind(new.task)
    .bind(&new.from)
    .bind(&new.to)
    .bind(i64::from(new.down))
    .bind(new.parallelism)
    .bind(new.created_by)
    .bind(now)
    .bind(now)
    .execute(db.conn())
    .await?;
    Ok(id)
}

/// How many instances a backfill covered when it was accepted.
pub async fn set_backfill_size(db: &mut impl Db, id: i64, instances: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE backfills SET instances = ? WHERE id = ?"))
        .bind(instances)
        .bind(id)
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn backfill_by_id(db: &mut impl Db, id: i64) -> anyhow::Result<Option<BackfillRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {COLUMNS} FROM backfills WHERE id = ?");
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(id)
        .fetch_optional(db.conn())
        .await?)
}

/// The newest backfills first.
pub async fn list_backfills(db: &mut impl Db, limit: i64) -> anyhow::Result<Vec<BackfillRow>> {
    let d = db.dialect();
    let sql = format!("SELECT {COLUMNS} FROM backfills ORDER BY id DESC LIMIT ?");
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(limit)
        .fetch_all(db.conn())
        .await?)
}

/// Running or paused backfills that bound their instances (paused, or with a parallelism):
/// (id, paused, parallelism).
pub async fn bounded_backfills(db: &mut impl Db) -> anyhow::Result<Vec<(i64, bool, Option<i64>)>> {
    let d = db.dialect();
    let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(d.sql(
        "SELECT id, state, parallelism FROM backfills
         WHERE state = 'paused' OR (state = 'running' AND parallelism IS NOT NULL)",
    ))
    .fetch_all(db.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, p)| (id, state == "paused", p))
        .collect())
}

fn for_update(d: Dialect) -> &'static str {
    if d == Dialect::Sqlite { "" } else { " FOR UPDATE" }
}

/// A backfill's state and parallelism, its row locked until the transaction ends (PostgreSQL,
/// MySQL), so two claims of its instances are decided one after the other.
pub async fn lock_backfill(db: &mut impl Db, id: i64) -> anyhow::Result<Option<(String, Option<i64>)>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT state, parallelism FROM backfills WHERE id = ?{}",
        for_update(d)
    );
    Ok(sqlx::query_as(d.sql(&sql))
        .bind(id)
        .fetch_optional(db.conn())
        .await?)
}

/// Compare-and-set of a backfill's state.
pub async fn set_backfill_state(
    db: &mut impl Db,
    id: i64,
    from: &str,
    to: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done =
        sqlx::query(d.sql("UPDATE backfills SET state = ?, updated_at = ? WHERE id = ? AND state = ?"))
            .bind(to)
            .bind(now)
            .bind(id)
            .bind(from)
            .execute(db.conn())
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Holds back every queued instance of a backfill, with `why`; returns how many.
pub async fn hold_backfill(db: &mut impl Db, backfill: i64, why: &str) -> anyhow::Result<u64> {
    let d = db.dialect();
    // From now they wait for slots (issue 19's timings), as a pool's held instances do.
    let sql = format!(
        "UPDATE instances SET {}, pool_wait = ? WHERE backfill_id = ? AND state = 'queued'",
        *super::timings::LEAVE_PHASE
    );
    let done = super::timings::bind_leave(
        sqlx::query(d.sql(&sql)),
        super::now_ms(),
        goflow_core::timings::Phase::WaitingSlots,
    )
    .bind(why)
    .bind(backfill)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Releases every held queued instance of a backfill and returns them (to be pushed).
pub async fn release_backfill(db: &mut impl Db, backfill: i64) -> anyhow::Result<Vec<InstanceRow>> {
    let d = db.dialect();
    sqlx::query(d.sql(
        "UPDATE instances SET pool_wait = NULL WHERE backfill_id = ? AND state = 'queued' AND pool_wait IS NOT NULL",
    ))
    .bind(backfill)
    .execute(db.conn())
    .await?;
    select_where(
        db,
        &format!("WHERE backfill_id = {backfill} AND state = 'queued' ORDER BY priority DESC, id"),
    )
    .await
}

/// Releases one held instance (admitted to start) at this try; false if it moved on.
pub async fn release_instance(db: &mut impl Db, id: i64, try_number: i64) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(
        d.sql("UPDATE instances SET pool_wait = NULL WHERE id = ? AND state = 'queued' AND try_number = ?"),
    )
    .bind(id)
    .bind(try_number)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Up to `limit` held queued instances of a backfill, the first to offer first.
pub async fn held_of_backfill(
    db: &mut impl Db,
    backfill: i64,
    limit: i64,
) -> anyhow::Result<Vec<InstanceRow>> {
    select_where(
        db,
        &format!(
            "WHERE backfill_id = {backfill} AND state = 'queued' AND pool_wait IS NOT NULL
             ORDER BY priority DESC, queued_at, id LIMIT {limit}"
        ),
    )
    .await
}

/// The running instances of a backfill (at most as many as there are slots).
pub async fn running_of_backfill(db: &mut impl Db, backfill: i64) -> anyhow::Result<Vec<InstanceRow>> {
    select_where(
        db,
        &format!("WHERE backfill_id = {backfill} AND state = 'running'"),
    )
    .await
}

/// How many of a backfill's instances run.
pub async fn backfill_running(db: &mut impl Db, backfill: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(sqlx::query_scalar(
        d.sql("SELECT COUNT(*) FROM instances WHERE backfill_id = ? AND state = 'running'"),
    )
    .bind(backfill)
    .fetch_one(db.conn())
    .await?)
}

/// How many of a backfill's instances run or are on their way to an agent (queued, not held).
pub async fn backfill_in_use(db: &mut impl Db, backfill: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(sqlx::query_scalar(d.sql(
        "SELECT COUNT(*) FROM instances
         WHERE backfill_id = ? AND (state = 'running' OR (state = 'queued' AND pool_wait IS NULL))",
    ))
    .bind(backfill)
    .fetch_one(db.conn())
    .await?)
}

/// (backfill, held) of each of these instances that belongs to a backfill.
pub async fn backfills_of_instances(
    db: &mut impl Db,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, (i64, bool)>> {
    let mut found = HashMap::new();
    for slice in ids.chunks(1000) {
        let d = db.dialect();
        let sql = format!(
            "SELECT id, backfill_id, pool_wait FROM instances WHERE backfill_id IS NOT NULL AND id IN ({})",
            placeholders(slice.len())
        );
        let mut query = sqlx::query(d.sql(&sql));
        for id in slice {
            query = query.bind(*id);
        }
        for row in query.fetch_all(db.conn()).await? {
            let wait: Option<String> = row.try_get(2)?;
            found.insert(row.try_get(0)?, (row.try_get(1)?, wait.is_some()));
        }
    }
    Ok(found)
}

/// Counts of the instances of these backfills by state: one statement.
pub async fn backfill_counts(
    db: &mut impl Db,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, BTreeMap<String, i64>>> {
    let mut counts: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
    if ids.is_empty() {
        return Ok(counts);
    }
    let d = db.dialect();
    let sql = format!(
        "SELECT backfill_id, state, COUNT(*) FROM instances WHERE backfill_id IN ({})
         GROUP BY backfill_id, state",
        placeholders(ids.len())
    );
    let mut query = sqlx::query(d.sql(&sql));
    for id in ids {
        query = query.bind(*id);
    }
    for row in query.fetch_all(db.conn()).await? {
        let (id, state, n): (i64, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        counts.entry(id).or_default().insert(state, n);
    }
    Ok(counts)
}

/// How many of a backfill's instances ended (success, failed, killed) at or after `since`.
pub async fn backfill_finished_since(db: &mut impl Db, backfill: i64, since: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(sqlx::query_scalar(d.sql(
        "SELECT COUNT(*) FROM instances
         WHERE backfill_id = ? AND state IN ('success', 'failed', 'killed') AND finished_at >= ?",
    ))
    .bind(backfill)
    .bind(since)
    .fetch_one(db.conn())
    .await?)
}

/// Counts by state of a backfill's instances that have not started (waiting, queued, up for
/// retry): what a cancel ends.
pub async fn unstarted_of_backfill(db: &mut impl Db, backfill: i64) -> anyhow::Result<BTreeMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(d.sql(
        "SELECT state, COUNT(*) FROM instances
         WHERE backfill_id = ? AND state IN ('waiting', 'queued', 'up_for_retry') GROUP BY state",
    ))
    .bind(backfill)
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// Ends every not-started instance of a backfill as killed, with `message`; returns how many.
pub async fn kill_unstarted_of_backfill(
    db: &mut impl Db,
    backfill: i64,
    message: &str,
    now: i64,
) -> anyhow::Result<u64> {
    let d = db.dialect();
    // The phase each was in ends now (issue 19's timings), as a kill's does.
    let sql = format!(
        "UPDATE instances SET {}, state = 'killed', forced = 0, message = ?, next_try_at = NULL, finished_at = ?,
                pool_wait = NULL
         WHERE backfill_id = ? AND state IN ('waiting', 'queued', 'up_for_retry')",
        *super::timings::LEAVE_PHASE
    );
    let done = super::timings::bind_leave(sqlx::query(d.sql(&sql)), now, goflow_core::timings::Phase::Done)
        .bind(message)
        .bind(now)
        .bind(backfill)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected())
}

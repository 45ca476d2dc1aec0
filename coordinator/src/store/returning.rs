//! The transitions of a try's hot path written as few statements as each database allows
//! (issue 21): where `UPDATE ... RETURNING` exists (SQLite, PostgreSQL) the compare-and-set
//! and the read of what it changed are one statement; MySQL and MariaDB, which have none,
//! take the portable path, named at each function.

use std::collections::HashMap;

use goflow_core::timings::Phase;
use sqlx::Row;

use super::Db;
use super::attempts::CLOSE_RUNNING_ATTEMPT;
use goflow_core::InstanceKey;

use super::instances::{
    INSTANCE_COLUMNS, InstanceRow, bind_finish, claim_sql, finish_sql, placeholders, tasks_by_period,
};
use super::timings::{LEAVE_PHASE, bind_leave};

/// queued -> running for exactly this try and epoch, like [`super::claim_instance`], but
/// only for an instance outside every backfill (nothing to check before its claim when its
/// task has no pool or max_active either): the claimed row, or None when the instance is not
/// queued at this try and epoch, or belongs to a backfill (then read it and check as usual).
/// One statement where `UPDATE ... RETURNING` exists; on MySQL/MariaDB the UPDATE, then a
/// read of the row it claimed.
pub async fn claim_outside_backfills(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    now: i64,
) -> anyhow::Result<Option<InstanceRow>> {
    let d = db.dialect();
    let mut sql = claim_sql("AND backfill_id IS NULL");
    if d.update_returning() {
        sql.push_str(&format!(" RETURNING {INSTANCE_COLUMNS}"));
    }
    let bind = |q| {
        bind_leave(q, now, Phase::Running)
            .bind(agent)
            .bind(now)
            .bind(id)
            .bind(try_number)
            .bind(epoch)
    };
    if d.update_returning() {
        let row = bind(sqlx::query(d.sql(&sql))).fetch_optional(db.conn()).await?;
        return Ok(row.map(|r| sqlx::FromRow::from_row(&r)).transpose()?);
    }
    let done = bind(sqlx::query(d.sql(&sql))).execute(db.conn()).await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    super::instance_by_id(db, id).await
}

/// A waiting instance to queue: its id and the try number it was read at.
#[derive(Debug, Clone, Copy)]
pub struct WaitingAt {
    pub id: i64,
    pub try_number: i64,
}

/// Queues waiting instances as new tries (waiting -> queued, try number + 1, as
/// [`super::queue_instance`] does one): the new try number of each this writer queued, by id;
/// one no longer waiting is left out. A fan-out's downstreams cost one statement per 500 where
/// `UPDATE ... RETURNING` exists. MySQL/MariaDB: one UPDATE each, a compare-and-set on the try
/// number read, so the new try number is known without reading it back.
pub async fn queue_waiting(
    db: &mut impl Db,
    instances: &[WaitingAt],
    epoch: i64,
    now: i64,
) -> anyhow::Result<HashMap<i64, i64>> {
    let d = db.dialect();
    let set = queue_set();
    let mut queued = HashMap::with_capacity(instances.len());
    if d.update_returning() {
        for slice in instances.chunks(500) {
            let sql = format!(
                "{set} WHERE state = 'waiting' AND id IN ({}) RETURNING id, try_number",
                placeholders(slice.len())
            );
            let mut query = bind_leave(sqlx::query(d.sql(&sql)), now, Phase::Queued)
                .bind(epoch)
                .bind(now);
            for waiting in slice {
                query = query.bind(waiting.id);
            }
            for row in query.fetch_all(db.conn()).await? {
                queued.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        return Ok(queued);
    }
    let sql = format!("{set} WHERE id = ? AND state = 'waiting' AND try_number = ?");
    for waiting in instances {
        let done = bind_leave(sqlx::query(d.sql(&sql)), now, Phase::Queued)
            .bind(epoch)
            .bind(now)
            .bind(waiting.id)
            .bind(waiting.try_number)
            .execute(db.conn())
            .await?;
        if done.rows_affected() == 1 {
            queued.insert(waiting.id, waiting.try_number + 1);
        }
    }
    Ok(queued)
}

/// `UPDATE instances SET` waiting -> queued as a new try (as [`super::queue_instance`]);
/// bound by [`bind_leave`], then epoch, now.
fn queue_set() -> String {
    format!(
        "UPDATE instances SET {}, state = 'queued', try_number = try_number + 1, dispatch_epoch = ?, queued_at = ?,
                started_at = NULL, finished_at = NULL, exit_code = NULL, next_try_at = NULL, agent_id = NULL,
                message = '', pool_wait = NULL",
        *LEAVE_PHASE
    )
}

/// Queues the instances of `keys` that are waiting, without reading them first: for those
/// whose dependencies are known met (their only upstream just succeeded in this
/// transaction). Each queued one's row and new try number; a key with no instance, or one
/// not waiting, is left out. One statement per day (and 500 tasks) where `UPDATE ...
/// RETURNING` exists; MySQL/MariaDB read them, then queue each (see [`queue_waiting`]).
pub async fn queue_waiting_keys(
    db: &mut impl Db,
    keys: &[InstanceKey],
    epoch: i64,
    now: i64,
) -> anyhow::Result<Vec<(InstanceRow, i64)>> {
    let d = db.dialect();
    if !d.update_returning() {
        let rows = super::instances_by_keys(db, keys.iter()).await?;
        let waiting: Vec<&InstanceRow> = keys
            .iter()
            .filter_map(|key| rows.get(key))
            .filter(|row| row.state == goflow_core::InstanceState::Waiting)
            .collect();
        let at: Vec<WaitingAt> = waiting
            .iter()
            .map(|row| WaitingAt {
                id: row.id,
                try_number: row.try_number,
            })
            .collect();
        let queued = queue_waiting(db, &at, epoch, now).await?;
        return Ok(waiting
            .into_iter()
            .filter_map(|row| queued.get(&row.id).map(|t| (row.clone(), *t)))
            .collect());
    }
    let mut queued = vec![];
    for (period, tasks) in tasks_by_period(keys.iter()) {
        for slice in tasks.chunks(500) {
            let sql = format!(
                "{} WHERE etl_day = ? AND state = 'waiting' AND task_id IN ({}) RETURNING {INSTANCE_COLUMNS}",
                queue_set(),
                placeholders(slice.len())
            );
            let mut query = bind_leave(sqlx::query(d.sql(&sql)), now, Phase::Queued)
                .bind(epoch)
                .bind(now)
                .bind(period.key());
            for task in slice {
                query = query.bind(*task);
            }
            for row in query.fetch_all(db.conn()).await? {
                let row: InstanceRow = sqlx::FromRow::from_row(&row)?;
                let try_number = row.try_number;
                queued.push((row, try_number));
            }
        }
    }
    Ok(queued)
}

/// A try's end as one statement where `UPDATE ... RETURNING` exists: running -> `outcome` for
/// exactly this try of this epoch and agent, and its instance's id and try number. None: not
/// so (unknown, another epoch or agent, already closed) or MySQL/MariaDB; the caller then
/// reads the try and says why, as [`super::attempt`] and [`super::finish_attempt`] do.
#[allow(clippy::too_many_arguments)]
pub async fn finish_running_attempt(
    db: &mut impl Db,
    id: &str,
    epoch: i64,
    agent: &str,
    outcome: &str,
    exit_code: Option<i64>,
    message: &str,
    now: i64,
) -> anyhow::Result<Option<(i64, i64)>> {
    let d = db.dialect();
    if !d.update_returning() {
        return Ok(None);
    }
    let sql =
        format!("{CLOSE_RUNNING_ATTEMPT} AND epoch = ? AND agent_id = ? RETURNING instance_id, try_number");
    let row = sqlx::query(d.sql(&sql))
        .bind(outcome)
        .bind(exit_code)
        .bind(message)
        .bind(now)
        .bind(id)
        .bind(epoch)
        .bind(agent)
        .fetch_optional(db.conn())
        .await?;
    Ok(row
        .map(|row| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?)))
        .transpose()?)
}

/// running (this try) -> success, as [`super::finish_instance`], and the row as it is now, in
/// one statement where `UPDATE ... RETURNING` exists. None: not running at this try, or
/// MySQL/MariaDB; the caller then reads the instance and decides as before.
pub async fn succeed_running_instance(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    exit_code: Option<i64>,
    message: &str,
    now: i64,
) -> anyhow::Result<Option<InstanceRow>> {
    use goflow_core::InstanceState;
    let d = db.dialect();
    if !d.update_returning() {
        return Ok(None);
    }
    let sql = finish_sql(&format!("RETURNING {INSTANCE_COLUMNS}"));
    let row = bind_finish(
        sqlx::query(d.sql(&sql)),
        InstanceState::Success,
        exit_code,
        message,
        None,
        now,
    )
    .bind(id)
    .bind(try_number)
    .fetch_optional(db.conn())
    .await?;
    Ok(row.map(|r| sqlx::FromRow::from_row(&r)).transpose()?)
}

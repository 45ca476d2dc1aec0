//! Task instances: one row per (task, etl_day), and every transition of one as a
//! compare-and-set on the state (and try) it expects.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use goflow_core::timings::{Phase, RunTimings};
use goflow_core::{EtlDay, InstanceKey, InstanceState, Period, TaskSpec};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Db;
use super::timings::{LEAVE_PHASE, NEW_RUN, Query, bind_leave};

#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: i64,
    pub task_id: String,
    /// The instance's period (stored in the `etl_day` column: `yyyymmdd`, `yyyymmddHH` or
    /// `yyyymm`, told apart by length).
    pub period: Period,
    /// The data date the period falls in.
    pub etl_day: EtlDay,
    pub state: InstanceState,
    pub try_number: i64,
    pub max_tries: i64,
    pub lost_tries: i64,
    pub priority: i64,
    pub queue: String,
    pub dispatch_epoch: i64,
    pub agent_id: Option<String>,
    pub forced: bool,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub next_try_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub message: String,
    /// Who marked it success (forced instances only).
    pub marked_by: Option<String>,
    /// The task's version it was created with (None: created before versions were kept).
    pub definition_version: Option<i64>,
    /// The version its tries run, set by `run --as-then`; None: the current definition.
    pub run_version: Option<i64>,
    /// Why a queued instance is held back (its pool or max_active is full); None: not held.
    pub pool_wait: Option<String>,
    /// Where its current run's time went (issue 19); None: created before it was kept.
    pub timings: Option<RunTimings>,
    /// The backfill that last ran it (issue 19); None: none.
    pub backfill_id: Option<i64>,
}

impl InstanceRow {
    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(&self.task_id, self.period)
    }
}

/// A stored state goflow does not know (a newer version wrote it, or a hand edit) is an
/// error naming it, never silently read as some other state.
pub(super) fn decode_state(text: &str, what: &str) -> Result<InstanceState, sqlx::Error> {
    InstanceState::parse(text).ok_or_else(|| {
        sqlx::Error::Decode(format!("{what} has unknown state {text:?} (written by a newer goflow?)").into())
    })
}

impl<'r> sqlx::FromRow<'r, AnyRow> for InstanceRow {
    fn from_row(r: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let id: i64 = r.try_get("id")?;
        let day: String = r.try_get("etl_day")?;
        let period = Period::parse(&day)
            .map_err(|e| sqlx::Error::Decode(format!("instance {id}: etl_day {day:?}: {e}").into()))?;
        Ok(Self {
            id,
            task_id: r.try_get("task_id")?,
            period,
            etl_day: period.etl_day(),
            state: decode_state(&r.try_get::<String, _>("state")?, &format!("instance {id}"))?,
            try_number: r.try_get("try_number")?,
            max_tries: r.try_get("max_tries")?,
            lost_tries: r.try_get("lost_tries")?,
            priority: r.try_get("priority")?,
            queue: r.try_get("queue")?,
            dispatch_epoch: r.try_get("dispatch_epoch")?,
            agent_id: r.try_get("agent_id")?,
            forced: r.try_get::<i64, _>("forced")? != 0,
            created_at: r.try_get("created_at")?,
            queued_at: r.try_get("queued_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            next_try_at: r.try_get("next_try_at")?,
            exit_code: r.try_get("exit_code")?,
            message: r.try_get("message")?,
            marked_by: r.try_get("marked_by")?,
            definition_version: r.try_get("definition_version")?,
            run_version: r.try_get("run_version")?,
            pool_wait: r.try_get("pool_wait")?,
            timings: super::timings::decode(r, &format!("instance {id}"))?,
            backfill_id: r.try_get("backfill_id")?,
        })
    }
}

pub(super) const INSTANCE_COLUMNS: &str = "id, task_id, etl_day, state, try_number, max_tries, lost_tries, priority, queue,
    dispatch_epoch, agent_id, forced, created_at, queued_at, started_at, finished_at, next_try_at, exit_code, message,
    marked_by, definition_version, run_version, pool_wait, phase, phase_since, run_started_at, ms_waiting_upstreams,
    ms_waiting_slots, ms_queued, ms_claimed, ms_running, ms_retry_delays, backfill_id";

/// Rows of `SELECT {INSTANCE_COLUMNS} FROM instances {rest}` with `binds`.
macro_rules! select_instances {
    ($db:expr, $rest:expr $(, $bind:expr)* ) => {{
        let d = $db.dialect();
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances {}", $rest);
        sqlx::query_as::<_, InstanceRow>(d.sql(&sql))
            $(.bind($bind))*
    }};
}

/// Rows of `SELECT {INSTANCE_COLUMNS} FROM instances {rest}`, for the store's other files.
pub(super) async fn select_where(db: &mut impl Db, rest: &str) -> anyhow::Result<Vec<InstanceRow>> {
    Ok(select_instances!(db, rest).fetch_all(db.conn()).await?)
}

pub async fn instance_by_id(db: &mut impl Db, id: i64) -> anyhow::Result<Option<InstanceRow>> {
    Ok(select_instances!(db, "WHERE id = ?", id)
        .fetch_optional(db.conn())
        .await?)
}

pub async fn instance_by_key(db: &mut impl Db, key: &InstanceKey) -> anyhow::Result<Option<InstanceRow>> {
    Ok(select_instances!(
        db,
        "WHERE task_id = ? AND etl_day = ?",
        &key.task,
        key.period.key()
    )
    .fetch_optional(db.conn())
    .await?)
}

/// Groups keys by period, for one `task_id IN (...)` query per period (and per 1,000 tasks).
pub(super) fn tasks_by_period<'a>(
    keys: impl Iterator<Item = &'a InstanceKey>,
) -> BTreeMap<Period, Vec<&'a str>> {
    let mut by_period: BTreeMap<Period, Vec<&str>> = BTreeMap::new();
    for key in keys {
        by_period.entry(key.period).or_default().push(&key.task);
    }
    by_period
}

/// The stored keys from `from` to `to` (both included) as a half-open text range: a day's
/// range holds its hours too (`2026112013` sorts between `20261120` and `20261121`), a month's
/// its days and hours.
pub fn key_range(from: Period, to: Period) -> (String, String) {
    (from.key(), to.offset(1, chrono_tz::UTC).key())
}

pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Keys of `keys` (distinct) that have not succeeded: one query per day, so a join with a
/// thousand upstreams costs one indexed lookup, not a thousand.
pub async fn unmet_of(db: &mut impl Db, keys: &[InstanceKey]) -> anyhow::Result<Vec<InstanceKey>> {
    let mut unmet = vec![];
    for (period, tasks) in tasks_by_period(keys.iter()) {
        for slice in tasks.chunks(1000) {
            let d = db.dialect();
            let sql = format!(
                "SELECT task_id FROM instances WHERE etl_day = ? AND state = 'success' AND task_id IN ({})",
                placeholders(slice.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(d.sql(&sql)).bind(period.key());
            for task in slice {
                query = query.bind(*task);
            }
            let succeeded: std::collections::HashSet<String> =
                query.fetch_all(db.conn()).await?.into_iter().collect();
            unmet.extend(
                slice
                    .iter()
                    .filter(|t| !succeeded.contains(**t))
                    .map(|t| InstanceKey::new(t, period)),
            );
        }
    }
    Ok(unmet)
}

#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    /// Every instance whose period falls in this one (a day's hours with the day).
    pub period: Option<Period>,
    pub task: Option<String>,
    pub states: Vec<InstanceState>,
    pub ids: Vec<i64>,
    pub limit: i64,
}

impl InstanceFilter {
    fn where_clause(&self) -> String {
        let mut sql = String::from("WHERE 1 = 1");
        if self.period.is_some() {
            sql.push_str(" AND etl_day >= ? AND etl_day < ?");
        }
        if self.task.is_some() {
            sql.push_str(" AND task_id = ?");
        }
        if !self.states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", placeholders(self.states.len())));
        }
        if !self.ids.is_empty() {
            sql.push_str(&format!(" AND id IN ({})", placeholders(self.ids.len())));
        }
        sql
    }
}

/// Binds a filter's values in the order of [`InstanceFilter::where_clause`].
macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {{
        let mut query = $query;
        if let Some(period) = $filter.period {
            let (from, until) = key_range(period, period);
            query = query.bind(from).bind(until);
        }
        if let Some(task) = &$filter.task {
            query = query.bind(task.clone());
        }
        for state in &$filter.states {
            query = query.bind(state.as_str());
        }
        for id in &$filter.ids {
            query = query.bind(*id);
        }
        query
    }};
}

pub async fn list_instances(db: &mut impl Db, filter: &InstanceFilter) -> anyhow::Result<Vec<InstanceRow>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances {} ORDER BY etl_day DESC, id ASC LIMIT ?",
        filter.where_clause()
    );
    let query = bind_filter!(sqlx::query_as::<_, InstanceRow>(d.sql(&sql)), filter);
    Ok(query.bind(filter.limit).fetch_all(db.conn()).await?)
}

/// How many instances match (the limit aside): "1,000 of N".
pub async fn count_instances(db: &mut impl Db, filter: &InstanceFilter) -> anyhow::Result<i64> {
    let d = db.dialect();
    let sql = format!("SELECT COUNT(*) FROM instances {}", filter.where_clause());
    let query = bind_filter!(sqlx::query_scalar::<_, i64>(d.sql(&sql)), filter);
    Ok(query.fetch_one(db.conn()).await?)
}

/// The state of every instance of `periods`, by key.
pub async fn states_of_periods(
    db: &mut impl Db,
    periods: &BTreeSet<Period>,
) -> anyhow::Result<HashMap<InstanceKey, InstanceState>> {
    let mut states = HashMap::new();
    for period in periods {
        let d = db.dialect();
        let rows: Vec<(String, String)> =
            sqlx::query_as(d.sql("SELECT task_id, state FROM instances WHERE etl_day = ?"))
                .bind(period.key())
                .fetch_all(db.conn())
                .await?;
        for (task, state) in rows {
            let key = InstanceKey::new(&task, *period);
            let state = decode_state(&state, &key.to_string())?;
            states.insert(key, state);
        }
    }
    Ok(states)
}

/// (task, state) of the queued and running instances of a period.
pub async fn live_instances_of_period(
    db: &mut impl Db,
    period: Period,
) -> anyhow::Result<Vec<(String, InstanceState)>> {
    let d = db.dialect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        d.sql("SELECT task_id, state FROM instances WHERE etl_day = ? AND state IN ('queued', 'running')"),
    )
    .bind(period.key())
    .fetch_all(db.conn())
    .await?;
    rows.into_iter()
        .map(|(t, s)| {
            let state = decode_state(&s, &t)?;
            Ok((t, state))
        })
        .collect()
}

/// The instances of `keys` that exist, by key.
pub async fn instances_by_keys<'a>(
    db: &mut impl Db,
    keys: impl Iterator<Item = &'a InstanceKey>,
) -> anyhow::Result<HashMap<InstanceKey, InstanceRow>> {
    let mut found = HashMap::new();
    for (period, tasks) in tasks_by_period(keys) {
        for slice in tasks.chunks(1000) {
            let rest = format!("WHERE etl_day = ? AND task_id IN ({})", placeholders(slice.len()));
            let mut query = select_instances!(db, rest, period.key());
            for task in slice {
                query = query.bind(*task);
            }
            for row in query.fetch_all(db.conn()).await? {
                found.insert(row.key(), row);
            }
        }
    }
    Ok(found)
}

/// The try number of an instance, read after an UPDATE of it in the same transaction (where
/// `UPDATE ... RETURNING` is missing).
async fn try_number_of(db: &mut impl Db, id: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT try_number FROM instances WHERE id = ?"))
            .bind(id)
            .fetch_one(db.conn())
            .await?,
    )
}

/// Runs a compare-and-set UPDATE of one instance that bumps its try number; the new try
/// number if this writer won.
async fn update_returning_try(
    db: &mut impl Db,
    update: &str,
    id: i64,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    if d.update_returning() {
        let sql = format!("{update} RETURNING try_number");
        let row = bind(sqlx::query(d.sql(&sql))).fetch_optional(db.conn()).await?;
        return Ok(row.map(|r| r.try_get(0)).transpose()?);
    }
    let done = bind(sqlx::query(d.sql(update))).execute(db.conn()).await?;
    if done.rows_affected() == 1 {
        Ok(Some(try_number_of(db, id).await?))
    } else {
        Ok(None)
    }
}

/// Queues an instance as a new try: `from` -> queued, try_number + 1. Returns the new try
/// number, or None when the instance was not in `from` (someone else moved it).
pub async fn queue_instance(
    db: &mut impl Db,
    id: i64,
    from: InstanceState,
    epoch: i64,
    now: i64,
) -> anyhow::Result<Option<i64>> {
    let update = format!(
        "UPDATE instances SET {}, state = 'queued', try_number = try_number + 1, dispatch_epoch = ?, queued_at = ?,
                started_at = NULL, finished_at = NULL, exit_code = NULL, next_try_at = NULL, agent_id = NULL,
                message = '', pool_wait = NULL
         WHERE id = ? AND state = ?",
        *LEAVE_PHASE
    );
    update_returning_try(db, &update, id, |q| {
        bind_leave(q, now, Phase::Queued)
            .bind(epoch)
            .bind(now)
            .bind(id)
            .bind(from.as_str())
    })
    .await
}

/// Puts an instance back to waiting for a redo; the run gets `retries` more tries. A redo is
/// a new run: its timings start again from `now` (issue 19).
#[allow(clippy::too_many_arguments)]
pub async fn reset_for_redo(
    db: &mut impl Db,
    id: i64,
    from: InstanceState,
    retries: i64,
    spec: &TaskSpec,
    message: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = format!(
        "UPDATE instances SET state = 'waiting', max_tries = try_number + 1 + ?, lost_tries = 0, forced = 0,
                priority = ?, queue = ?, queued_at = NULL, started_at = NULL, finished_at = NULL,
                exit_code = NULL, next_try_at = NULL, agent_id = NULL, message = ?, marked_by = NULL,
                pool_wait = NULL, backfill_id = NULL, {}
         WHERE id = ? AND state = ?",
        *NEW_RUN
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(retries)
        .bind(spec.priority as i64)
        .bind(&spec.queue)
        .bind(message)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The claim's compare-and-set (queued -> running for exactly this try and epoch), with
/// `extra` conditions; bound by [`bind_leave`], then agent, now, id, try number, epoch.
pub(super) fn claim_sql(extra: &str) -> String {
    // The claim hands the agent its command, which it starts at once: claimed is running.
    format!(
        "UPDATE instances SET {}, state = 'running', agent_id = ?, started_at = ?, pool_wait = NULL
         WHERE id = ? AND state = 'queued' AND try_number = ? AND dispatch_epoch = ? {extra}",
        *LEAVE_PHASE
    )
}

/// queued -> running for exactly this try and epoch.
pub async fn claim_instance(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = claim_sql("");
    let done = bind_leave(sqlx::query(d.sql(&sql)), now, Phase::Running)
        .bind(agent)
        .bind(now)
        .bind(id)
        .bind(try_number)
        .bind(epoch)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// running (this try) -> `to`, with the try's outcome.
#[allow(clippy::too_many_arguments)]
pub async fn finish_instance(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    to: InstanceState,
    exit_code: Option<i64>,
    message: &str,
    next_try_at: Option<i64>,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = finish_sql("");
    let done = bind_finish(sqlx::query(d.sql(&sql)), to, exit_code, message, next_try_at, now)
        .bind(id)
        .bind(try_number)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// `UPDATE instances` running (this try) -> an outcome, as [`finish_instance`]; bound by
/// [`bind_finish`], then id, try number; `extra` follows the WHERE clause (a RETURNING).
pub(super) fn finish_sql(extra: &str) -> String {
    format!(
        "UPDATE instances SET {}, state = ?, exit_code = ?, message = ?, next_try_at = ?, finished_at = ?
         WHERE id = ? AND state = 'running' AND try_number = ? {extra}",
        *LEAVE_PHASE
    )
}

/// The SET clause's values of [`finish_sql`].
pub(super) fn bind_finish<'q>(
    query: Query<'q>,
    to: InstanceState,
    exit_code: Option<i64>,
    message: &'q str,
    next_try_at: Option<i64>,
    now: i64,
) -> Query<'q> {
    bind_leave(query, now, Phase::of(to, false))
        .bind(to.as_str())
        .bind(exit_code)
        .bind(message)
        .bind(next_try_at)
        .bind(now)
}

/// An operator's move (kill, mark success) from `from`; sets the message and finish time.
pub async fn operator_set_state(
    db: &mut impl Db,
    id: i64,
    from: InstanceState,
    to: InstanceState,
    marked_by: Option<&str>,
    message: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    // Marked success: the instance did not run to this end, so the last try's exit code and
    // start stay on that try (attempts) and leave the instance, which shows who marked it.
    // The phase it was in ends here (issue 19).
    let sql = if marked_by.is_some() {
        "UPDATE instances SET {leave}, state = ?, forced = 1, marked_by = ?, message = ?, next_try_at = NULL,
                finished_at = ?, started_at = NULL, exit_code = NULL
         WHERE id = ? AND state = ?"
    } else {
        "UPDATE instances SET {leave}, state = ?, forced = 0, marked_by = ?, message = ?, next_try_at = NULL,
                finished_at = ?
         WHERE id = ? AND state = ?"
    };
    let sql = sql.replace("{leave}", &LEAVE_PHASE);
    let done = bind_leave(sqlx::query(d.sql(&sql)), now, Phase::of(to, false))
        .bind(to.as_str())
        .bind(marked_by)
        .bind(message)
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Re-dispatch after a lost agent or a restart: running (this try) -> queued as a new try,
/// which does not count against the task's retries. `lost`: it counts against
/// RetryQueueTimes (a try granted but never started does not).
pub async fn requeue(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    lost: bool,
    epoch: i64,
    now: i64,
    message: &str,
) -> anyhow::Result<Option<i64>> {
    let update = format!(
        "UPDATE instances SET {}, state = 'queued', try_number = try_number + 1, max_tries = max_tries + 1,
                lost_tries = lost_tries + ?, dispatch_epoch = ?, queued_at = ?, started_at = NULL,
                finished_at = NULL, exit_code = NULL, agent_id = NULL, message = ?, pool_wait = NULL
         WHERE id = ? AND state = 'running' AND try_number = ?",
        *LEAVE_PHASE
    );
    update_returning_try(db, &update, id, |q| {
        bind_leave(q, now, Phase::Queued)
            .bind(i64::from(lost))
            .bind(epoch)
            .bind(now)
            .bind(message)
            .bind(id)
            .bind(try_number)
    })
    .await
}

/// Re-stamps queued instances with the current epoch (after a restart) and returns them.
pub async fn restamp_queued(db: &mut impl Db, epoch: i64) -> anyhow::Result<Vec<InstanceRow>> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE instances SET dispatch_epoch = ? WHERE state = 'queued'"))
        .bind(epoch)
        .execute(db.conn())
        .await?;
    Ok(select_instances!(db, "WHERE state = 'queued' ORDER BY id")
        .fetch_all(db.conn())
        .await?)
}

/// Stamps one queued instance (at `try_number`, queued under `from` epoch) with `epoch`;
/// false when it moved on meanwhile.
pub async fn restamp_queued_one(
    db: &mut impl Db,
    id: i64,
    try_number: i64,
    from: i64,
    epoch: i64,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql(
        "UPDATE instances SET dispatch_epoch = ?
         WHERE id = ? AND state = 'queued' AND try_number = ? AND dispatch_epoch = ?",
    ))
    .bind(epoch)
    .bind(id)
    .bind(try_number)
    .bind(from)
    .execute(db.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn instances_in_state(
    db: &mut impl Db,
    state: InstanceState,
    task: Option<&str>,
) -> anyhow::Result<Vec<InstanceRow>> {
    let query = match task {
        Some(task) => select_instances!(
            db,
            "WHERE state = ? AND task_id = ? ORDER BY etl_day, id",
            state.as_str(),
            task
        ),
        None => select_instances!(db, "WHERE state = ? ORDER BY etl_day, id", state.as_str()),
    };
    Ok(query.fetch_all(db.conn()).await?)
}

/// Instances queued before `before` (their dispatch may be lost).
pub async fn queued_before(db: &mut impl Db, before: i64) -> anyhow::Result<Vec<InstanceRow>> {
    Ok(select_instances!(
        db,
        "WHERE state = 'queued' AND queued_at < ? ORDER BY queued_at LIMIT 10000",
        before
    )
    .fetch_all(db.conn())
    .await?)
}

/// Retries whose delay is over, and the earliest one still pending.
pub async fn retries_due(db: &mut impl Db, now: i64) -> anyhow::Result<(Vec<InstanceRow>, Option<i64>)> {
    let due = select_instances!(
        db,
        "WHERE state = 'up_for_retry' AND next_try_at <= ? ORDER BY next_try_at",
        now
    )
    .fetch_all(db.conn())
    .await?;
    let d = db.dialect();
    let next: Option<i64> = sqlx::query_scalar(
        d.sql("SELECT MIN(next_try_at) FROM instances WHERE state = 'up_for_retry' AND next_try_at > ?"),
    )
    .bind(now)
    .fetch_one(db.conn())
    .await?;
    Ok((due, next))
}

pub async fn delete_instance(db: &mut impl Db, id: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    // Explicit, not only ON DELETE CASCADE, so the order is plain: logs, tries, instance.
    sqlx::query(
        d.sql("DELETE FROM log_chunks WHERE attempt_id IN (SELECT id FROM attempts WHERE instance_id = ?)"),
    )
    .bind(id)
    .execute(db.conn())
    .await?;
    sqlx::query(d.sql("DELETE FROM attempts WHERE instance_id = ?"))
        .bind(id)
        .execute(db.conn())
        .await?;
    sqlx::query(d.sql("DELETE FROM instances WHERE id = ?"))
        .bind(id)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// How many instances are in each state (metrics).
pub async fn count_instances_by_state(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64)>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql("SELECT state, COUNT(*) FROM instances GROUP BY state"))
        .fetch_all(db.conn())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
        .collect()
}

/// Queued instances per queue: (queue, how many, earliest queued_at) (metrics).
pub async fn queued_by_queue(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64, Option<i64>)>> {
    let d = db.dialect();
    let rows = sqlx::query(
        d.sql("SELECT queue, COUNT(*), MIN(queued_at) FROM instances WHERE state = 'queued' GROUP BY queue"),
    )
    .fetch_all(db.conn())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>(0)?,
                row.try_get::<i64, _>(1)?,
                row.try_get::<Option<i64>, _>(2)?,
            ))
        })
        .collect()
}

/// Running tries per agent (metrics).
pub async fn running_by_agent(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64)>> {
    let d = db.dialect();
    let rows = sqlx::query(
        d.sql("SELECT agent_id, COUNT(*) FROM attempts WHERE state = 'running' GROUP BY agent_id"),
    )
    .fetch_all(db.conn())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
        .collect()
}

/// Whether the database answers (readiness).
pub async fn ping(db: &mut impl Db) -> anyhow::Result<()> {
    sqlx::query("SELECT 1").execute(db.conn()).await?;
    Ok(())
}

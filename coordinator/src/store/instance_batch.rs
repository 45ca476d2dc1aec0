//! Many instances written at once (issue 21: a 182,500-instance backfill in a few seconds):
//! created with multi-row inserts that answer the new rows themselves (`RETURNING`), and put
//! back to waiting for a redo one statement per task and state, not one per instance.
//!
//! Chunks stay under every database's bind-parameter limit (SQLite 32,766, PostgreSQL and
//! MySQL 65,535) and, at under 200 bytes a row, far under MySQL's packet size.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Context;
use goflow_core::timings::{Phase, RunTimings, Timings};
use goflow_core::{InstanceKey, InstanceState, Period, TaskSpec};
use sqlx::Row;

use super::instances::{instances_by_keys, placeholders};
use super::timings::NEW_RUN;
use super::{Db, InstanceRow};

/// Rows per multi-row insert: 10 parameters a row, 20,000 a statement.
const INSERT_ROWS: usize = 2000;
/// Ids per `id IN (...)` of a redo's reset.
const RESET_IDS: usize = 5000;

/// An instance to create if it does not exist yet.
pub struct WantedInstance<'a> {
    pub key: &'a InstanceKey,
    pub spec: &'a TaskSpec,
    pub max_tries: i64,
}

/// Creates a waiting instance unless one exists; returns the row either way, and whether it
/// was created.
pub async fn ensure_instance(
    db: &mut impl Db,
    key: &InstanceKey,
    spec: &TaskSpec,
    max_tries: i64,
    now: i64,
) -> anyhow::Result<(InstanceRow, bool)> {
    let mut rows = ensure_instances(db, &[WantedInstance { key, spec, max_tries }], now).await?;
    Ok(rows.pop().expect("one row for one key"))
}

/// [`ensure_instance`] for many keys at once, in their order.
pub async fn ensure_instances(
    db: &mut impl Db,
    wanted: &[WantedInstance<'_>],
    now: i64,
) -> anyhow::Result<Vec<(InstanceRow, bool)>> {
    ensure_instances_of(db, wanted, None, now).await
}

/// [`ensure_instances`], the new rows made `backfill`'s as they are inserted: one lookup per
/// day, and one multi-row insert per [`INSERT_ROWS`] missing rows that answers them, so a
/// year-long backfill is a few hundred statements, not a few hundred thousand.
pub async fn ensure_instances_of(
    db: &mut impl Db,
    wanted: &[WantedInstance<'_>],
    backfill: Option<i64>,
    now: i64,
) -> anyhow::Result<Vec<(InstanceRow, bool)>> {
    let mut existing = instances_by_keys(db, wanted.iter().map(|w| w.key)).await?;
    let missing: Vec<&WantedInstance> = wanted.iter().filter(|w| !existing.contains_key(w.key)).collect();
    // The rows this writer inserted (another may insert the same key meanwhile: the unique
    // key keeps one row, and only its writer says "created").
    let mut created: HashMap<InstanceKey, InstanceRow> = HashMap::with_capacity(missing.len());
    let mut inserted_unread: HashSet<InstanceKey> = HashSet::new();
    // Read once, not per row: a subquery per row of a multi-row insert made SQLite open a
    // cursor per row, and every insert walked them all (quadratic).
    let versions = task_versions(db, missing.iter().map(|w| w.key.task.as_str())).await?;
    for slice in missing.chunks(INSERT_ROWS) {
        let d = db.dialect();
        let mut sql = d.insert_unless_exists(
            "instances (task_id, etl_day, state, try_number, max_tries, priority, queue, created_at, message,
                        definition_version, phase, phase_since, run_started_at, backfill_id)",
            &vec!["(?, ?, 'waiting', 0, ?, ?, ?, ?, '', ?, 'waiting_upstreams', ?, ?, ?)"; slice.len()]
                .join(", "),
            "task_id, etl_day",
        );
        // Only the ids come back: the rest of each row is what was just written.
        if d.insert_returning() {
            sql.push_str(" RETURNING id, task_id, etl_day");
        }
        let mut insert = sqlx::query(d.sql(&sql));
        for w in slice {
            insert = insert
                .bind(&w.key.task)
                .bind(w.key.period.key())
                .bind(w.max_tries)
                .bind(w.spec.priority as i64)
                .bind(&w.spec.queue)
                .bind(now)
                .bind(versions.get(w.key.task.as_str()).copied().flatten())
                .bind(now)
                .bind(now)
                .bind(backfill);
        }
        if d.insert_returning() {
            let mut of_slice: HashMap<&InstanceKey, &WantedInstance> =
                slice.iter().map(|w| (w.key, *w)).collect();
            for returned in insert.fetch_all(db.conn()).await? {
                let (id, task, period): (i64, String, String) =
                    (returned.try_get(0)?, returned.try_get(1)?, returned.try_get(2)?);
                let key = InstanceKey::new(&task, Period::parse(&period)?);
                let want = of_slice
                    .remove(&key)
                    .with_context(|| format!("{key} came back from an insert that did not write it"))?;
                let version = versions.get(key.task.as_str()).copied().flatten();
                created.insert(key, new_row(id, want, version, backfill, now));
            }
        } else {
            // MySQL 8 says how many, not which: when a concurrent writer took some of the keys,
            // every row of the slice counts as created here. Harmless: queueing one is a
            // compare-and-set, so two writers still start it once.
            insert.execute(db.conn()).await?;
            inserted_unread.extend(slice.iter().map(|w| w.key.clone()));
        }
    }
    // Rows another writer inserted meanwhile, and MySQL's (which answers no rows): read back.
    let unread: Vec<&InstanceKey> = missing
        .iter()
        .map(|w| w.key)
        .filter(|k| !created.contains_key(*k))
        .collect();
    let mut read_back = instances_by_keys(db, unread.into_iter()).await?;
    wanted
        .iter()
        .map(|w| {
            if let Some(row) = existing.remove(w.key) {
                return Ok((row, false));
            }
            if let Some(row) = created.remove(w.key) {
                return Ok((row, true));
            }
            read_back
                .remove(w.key)
                .map(|row| (row, inserted_unread.contains(w.key)))
                .with_context(|| format!("instance {} vanished after insert", w.key))
        })
        .collect()
}

/// The row just inserted for `want` (as the insert above writes it), read back from nowhere.
fn new_row(
    id: i64,
    want: &WantedInstance,
    version: Option<i64>,
    backfill: Option<i64>,
    now: i64,
) -> InstanceRow {
    InstanceRow {
        id,
        task_id: want.key.task.clone(),
        period: want.key.period,
        etl_day: want.key.period.etl_day(),
        state: InstanceState::Waiting,
        try_number: 0,
        max_tries: want.max_tries,
        lost_tries: 0,
        priority: want.spec.priority as i64,
        queue: want.spec.queue.clone(),
        dispatch_epoch: 0,
        agent_id: None,
        forced: false,
        created_at: now,
        queued_at: None,
        started_at: None,
        finished_at: None,
        next_try_at: None,
        exit_code: None,
        message: String::new(),
        marked_by: None,
        definition_version: version,
        run_version: None,
        pool_wait: None,
        timings: Some(RunTimings {
            phase: Phase::WaitingUpstreams,
            since: now,
            run_started_at: now,
            totals: Timings::default(),
        }),
        backfill_id: backfill,
    }
}

/// The stored version of each of `tasks` in this transaction; None: none recorded (0).
async fn task_versions<'a>(
    db: &mut impl Db,
    tasks: impl Iterator<Item = &'a str>,
) -> anyhow::Result<HashMap<String, Option<i64>>> {
    let tasks: Vec<&str> = tasks.collect::<BTreeSet<&str>>().into_iter().collect();
    let mut versions = HashMap::with_capacity(tasks.len());
    for slice in tasks.chunks(1000) {
        let d = db.dialect();
        let sql = format!(
            "SELECT id, version FROM tasks WHERE id IN ({})",
            placeholders(slice.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(d.sql(&sql));
        for task in slice {
            query = query.bind(*task);
        }
        for (task, version) in query.fetch_all(db.conn()).await? {
            versions.insert(task, (version != 0).then_some(version));
        }
    }
    Ok(versions)
}

/// An instance a redo puts back to waiting: its id and the state it was read in.
#[derive(Debug, Clone, Copy)]
pub struct Redo {
    pub id: i64,
    pub from: InstanceState,
}

/// Puts instances of one task back to waiting for a redo (see `reset_for_redo`), made
/// `backfill`'s: one compare-and-set statement per state they were read in (and per
/// [`RESET_IDS`]). Returns the ids reset; one that moved meanwhile is left out.
pub async fn reset_many_for_redo(
    db: &mut impl Db,
    redos: &[Redo],
    retries: i64,
    spec: &TaskSpec,
    backfill: Option<i64>,
    now: i64,
) -> anyhow::Result<HashSet<i64>> {
    let mut by_state: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
    for redo in redos {
        by_state.entry(redo.from.as_str()).or_default().push(redo.id);
    }
    let mut reset = HashSet::with_capacity(redos.len());
    // MySQL says how many rows changed, not which: one statement per instance there.
    let per_statement = if db.dialect().update_returning() {
        RESET_IDS
    } else {
        1
    };
    for (from, ids) in by_state {
        for slice in ids.chunks(per_statement) {
            let d = db.dialect();
            let mut sql = format!(
                "UPDATE instances SET state = 'waiting', max_tries = try_number + 1 + ?, lost_tries = 0, forced = 0,
                        priority = ?, queue = ?, queued_at = NULL, started_at = NULL, finished_at = NULL,
                        exit_code = NULL, next_try_at = NULL, agent_id = NULL, message = '', marked_by = NULL,
                        pool_wait = NULL, backfill_id = ?, {}
                 WHERE state = ? AND id IN ({})",
                *NEW_RUN,
                placeholders(slice.len())
            );
            if d.update_returning() {
                sql.push_str(" RETURNING id");
            }
            let mut query = sqlx::query(d.sql(&sql))
                .bind(retries)
                .bind(spec.priority as i64)
                .bind(&spec.queue)
                .bind(backfill)
                .bind(now)
                .bind(now)
                .bind(from);
            for id in slice {
                query = query.bind(*id);
            }
            if d.update_returning() {
                for row in query.fetch_all(db.conn()).await? {
                    reset.insert(row.try_get::<i64, _>(0)?);
                }
            } else if query.execute(db.conn()).await?.rows_affected() == 1 {
                reset.insert(slice[0]);
            }
        }
    }
    Ok(reset)
}

//! The store: the only home of SQL, and the one source of truth.
//!
//! SQLite here (a data folder, WAL). Writes go through one connection, so write transactions
//! never race to upgrade their locks; reads use a pool of their own and see committed data.
//! Every state change is a compare-and-set on the state (and try) it expects: the number of
//! rows it touched says whether this actor won. SQL stays portable (`?` placeholders, epoch
//! milliseconds, no SQLite-only types) so PostgreSQL and MySQL can slot in beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use goflow_core::{Dependency, EtlDay, InstanceKey, InstanceState, TaskSpec};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

pub type Conn = SqliteConnection;
pub type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir/goflow.db` and migrates it.
    pub async fn open_dir(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
        Self::open_file(&data_dir.join("goflow.db")).await
    }

    pub async fn open_file(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a commit survives a crash of the process (kill -9); only a
            // power loss can drop the last commits. FULL costs 6x per commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("wal_autocheckpoint", "100000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(120))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open database {}", path.display()))?;
        MIGRATOR
            .run(&write)
            .await
            .context("cannot migrate the database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open database {} for reading", path.display()))?;
        Ok(Self { write, read })
    }

    /// Applies migrations only (`goflow migrate`).
    pub async fn migrate_only(path: &Path) -> anyhow::Result<()> {
        Self::open_file(path).await.map(drop)
    }

    pub async fn begin(&self) -> anyhow::Result<Tx> {
        Ok(self.write.begin().await?)
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Increments and returns the coordinator epoch: every start gets a new one, and a
    /// dispatch of an older epoch is refused.
    pub async fn next_epoch(&self) -> anyhow::Result<i64> {
        let mut tx = self.begin().await?;
        let current: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'")
            .fetch_optional(&mut *tx)
            .await?;
        let next = current.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + 1;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(next.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct StoredTask {
    pub spec: TaskSpec,
    pub paused: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn load_tasks(conn: &mut Conn) -> anyhow::Result<Vec<StoredTask>> {
    let rows = sqlx::query(
        "SELECT id, command, schedule, timezone, day_offset, retries, retry_delay_ms, timeout_ms,
                priority, queue, start_day, description, paused, created_at, updated_at
         FROM tasks ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let deps = sqlx::query(
        "SELECT task_id, upstream_id, day_offset FROM dependencies ORDER BY task_id, upstream_id, day_offset",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_task: std::collections::HashMap<String, Vec<Dependency>> = Default::default();
    for d in deps {
        by_task.entry(d.get("task_id")).or_default().push(Dependency {
            task: d.get("upstream_id"),
            day_offset: d.get::<i64, _>("day_offset") as i32,
        });
    }
    rows.into_iter()
        .map(|r| {
            let id: String = r.get("id");
            let start_day: Option<String> = r.get("start_day");
            Ok(StoredTask {
                spec: TaskSpec {
                    depends_on: by_task.remove(&id).unwrap_or_default(),
                    command: r.get("command"),
                    schedule: r.get("schedule"),
                    timezone: r.get("timezone"),
                    day_offset: r.get::<i64, _>("day_offset") as i32,
                    retries: r.get::<Option<i64>, _>("retries").map(|v| v as u32),
                    retry_delay: r.get::<Option<i64>, _>("retry_delay_ms").map(ms_duration),
                    timeout: r.get::<Option<i64>, _>("timeout_ms").map(ms_duration),
                    priority: r.get::<i64, _>("priority") as i32,
                    queue: r.get("queue"),
                    start_day: start_day.map(|d| EtlDay::parse(&d)).transpose()?,
                    description: r.get("description"),
                    id,
                },
                paused: r.get::<i64, _>("paused") != 0,
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
            })
        })
        .collect()
}

fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

fn duration_ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Inserts or replaces one task definition with its dependencies and schedule row.
/// `schedule_changed`: (re)start the schedule's clock at `now`.
pub async fn upsert_task(
    conn: &mut Conn,
    spec: &TaskSpec,
    now: i64,
    schedule_changed: bool,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO tasks (id, command, schedule, timezone, day_offset, retries, retry_delay_ms, timeout_ms,
                            priority, queue, start_day, description, paused, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
         ON CONFLICT (id) DO UPDATE SET
            command = excluded.command, schedule = excluded.schedule, timezone = excluded.timezone,
            day_offset = excluded.day_offset, retries = excluded.retries,
            retry_delay_ms = excluded.retry_delay_ms, timeout_ms = excluded.timeout_ms,
            priority = excluded.priority, queue = excluded.queue, start_day = excluded.start_day,
            description = excluded.description, updated_at = excluded.updated_at",
    )
    .bind(&spec.id)
    .bind(&spec.command)
    .bind(&spec.schedule)
    .bind(&spec.timezone)
    .bind(spec.day_offset as i64)
    .bind(spec.retries.map(|r| r as i64))
    .bind(spec.retry_delay.map(duration_ms))
    .bind(spec.timeout.map(duration_ms))
    .bind(spec.priority as i64)
    .bind(&spec.queue)
    .bind(spec.start_day.map(|d| d.compact()))
    .bind(&spec.description)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    match &spec.schedule {
        None => {
            sqlx::query("DELETE FROM schedules WHERE task_id = ?")
                .bind(&spec.id)
                .execute(&mut *conn)
                .await?;
        }
        Some(expr) if schedule_changed => {
            sqlx::query(
                "INSERT INTO schedules (task_id, expression, last_fire_at) VALUES (?, ?, ?)
                 ON CONFLICT (task_id) DO UPDATE SET expression = excluded.expression, last_fire_at = excluded.last_fire_at",
            )
            .bind(&spec.id)
            .bind(expr)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Replaces a task's dependencies. Called after every task of an apply was upserted, so an
/// upstream defined later in the same document exists already.
pub async fn set_dependencies(conn: &mut Conn, spec: &TaskSpec) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM dependencies WHERE task_id = ?")
        .bind(&spec.id)
        .execute(&mut *conn)
        .await?;
    for dep in &spec.depends_on {
        sqlx::query("INSERT OR IGNORE INTO dependencies (task_id, upstream_id, day_offset) VALUES (?, ?, ?)")
            .bind(&spec.id)
            .bind(&dep.task)
            .bind(dep.day_offset as i64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub async fn set_paused(conn: &mut Conn, task: &str, paused: bool, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE tasks SET paused = ?, updated_at = ? WHERE id = ?")
        .bind(paused as i64)
        .bind(now)
        .bind(task)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Schedules and cron fires
// ---------------------------------------------------------------------------------------------

pub async fn schedule_last_fires(conn: &mut Conn) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT task_id, last_fire_at FROM schedules")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("task_id"), r.get("last_fire_at")))
        .collect())
}

/// Records a fire; false when this (schedule, fire time) was already recorded, by anyone.
pub async fn record_fire(
    conn: &mut Conn,
    task: &str,
    fire_at: i64,
    etl_day: EtlDay,
    skipped: u32,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO cron_fires (task_id, fire_at, etl_day, created_at, skipped) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (task_id, fire_at) DO NOTHING",
    )
    .bind(task)
    .bind(fire_at)
    .bind(etl_day.compact())
    .bind(now)
    .bind(skipped as i64)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE schedules SET last_fire_at = ? WHERE task_id = ? AND last_fire_at < ?")
        .bind(fire_at)
        .bind(task)
        .bind(fire_at)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: i64,
    pub task_id: String,
    pub etl_day: String,
    pub state: String,
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
}

impl InstanceRow {
    pub fn state(&self) -> InstanceState {
        InstanceState::parse(&self.state).unwrap_or(InstanceState::Failed)
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            task: self.task_id.clone(),
            etl_day: EtlDay::parse(&self.etl_day).expect("stored days are valid"),
        }
    }
}

const INSTANCE_COLUMNS: &str = "id, task_id, etl_day, state, try_number, max_tries, lost_tries, priority, queue,
    dispatch_epoch, agent_id, forced, created_at, queued_at, started_at, finished_at, next_try_at, exit_code, message";

pub async fn instance_by_id(conn: &mut Conn, id: i64) -> anyhow::Result<Option<InstanceRow>> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

pub async fn instance_by_key(conn: &mut Conn, key: &InstanceKey) -> anyhow::Result<Option<InstanceRow>> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE task_id = ? AND etl_day = ?");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&key.task)
        .bind(key.etl_day.compact())
        .fetch_optional(&mut *conn)
        .await?)
}

/// How many of `keys` (distinct) have succeeded: one query per day, so a join with a thousand
/// upstreams costs one indexed lookup, not a thousand.
pub async fn count_succeeded(conn: &mut Conn, keys: &[InstanceKey]) -> anyhow::Result<usize> {
    let mut by_day: std::collections::BTreeMap<EtlDay, Vec<&str>> = Default::default();
    for key in keys {
        by_day.entry(key.etl_day).or_default().push(&key.task);
    }
    let mut succeeded = 0;
    for (day, tasks) in by_day {
        // SQLite allows 32766 parameters; a wider join is counted in slices.
        for slice in tasks.chunks(10_000) {
            let sql = format!(
                "SELECT COUNT(*) FROM instances WHERE etl_day = ? AND state = 'success' AND task_id IN ({})",
                vec!["?"; slice.len()].join(", ")
            );
            let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(day.compact());
            for task in slice {
                query = query.bind(*task);
            }
            succeeded += query.fetch_one(&mut *conn).await? as usize;
        }
    }
    Ok(succeeded)
}

#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    pub etl_day: Option<EtlDay>,
    pub task: Option<String>,
    pub states: Vec<InstanceState>,
    pub ids: Vec<i64>,
    pub limit: i64,
}

pub async fn list_instances(conn: &mut Conn, filter: &InstanceFilter) -> anyhow::Result<Vec<InstanceRow>> {
    let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE 1 = 1");
    if filter.etl_day.is_some() {
        sql.push_str(" AND etl_day = ?");
    }
    if filter.task.is_some() {
        sql.push_str(" AND task_id = ?");
    }
    if !filter.states.is_empty() {
        sql.push_str(&format!(
            " AND state IN ({})",
            vec!["?"; filter.states.len()].join(", ")
        ));
    }
    if !filter.ids.is_empty() {
        sql.push_str(&format!(
            " AND id IN ({})",
            vec!["?"; filter.ids.len()].join(", ")
        ));
    }
    sql.push_str(" ORDER BY etl_day DESC, id ASC LIMIT ?");
    let mut query = sqlx::query_as::<_, InstanceRow>(sqlx::AssertSqlSafe(sql));
    if let Some(day) = filter.etl_day {
        query = query.bind(day.compact());
    }
    if let Some(task) = &filter.task {
        query = query.bind(task.clone());
    }
    for state in &filter.states {
        query = query.bind(state.as_str());
    }
    for id in &filter.ids {
        query = query.bind(*id);
    }
    Ok(query.bind(filter.limit).fetch_all(&mut *conn).await?)
}

/// The state of every instance of `days`, by key.
pub async fn states_of_days(
    conn: &mut Conn,
    days: &std::collections::BTreeSet<EtlDay>,
) -> anyhow::Result<HashMap<InstanceKey, InstanceState>> {
    let mut states = HashMap::new();
    for day in days {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT task_id, state FROM instances WHERE etl_day = ?")
                .bind(day.compact())
                .fetch_all(&mut *conn)
                .await?;
        for (task, state) in rows {
            if let Some(state) = InstanceState::parse(&state) {
                states.insert(InstanceKey::new(&task, *day), state);
            }
        }
    }
    Ok(states)
}

/// (task, state) of the queued and running instances of a day.
pub async fn live_instances_of_day(
    conn: &mut Conn,
    day: EtlDay,
) -> anyhow::Result<Vec<(String, InstanceState)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT task_id, state FROM instances WHERE etl_day = ? AND state IN ('queued', 'running')",
    )
    .bind(day.compact())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, s)| Some((t, InstanceState::parse(&s)?)))
        .collect())
}

/// An instance to create if it does not exist yet.
pub struct WantedInstance<'a> {
    pub key: &'a InstanceKey,
    pub spec: &'a TaskSpec,
    pub max_tries: i64,
}

/// Creates a waiting instance unless one exists; returns the row either way, and whether it
/// was created.
pub async fn ensure_instance(
    conn: &mut Conn,
    key: &InstanceKey,
    spec: &TaskSpec,
    max_tries: i64,
    now: i64,
) -> anyhow::Result<(InstanceRow, bool)> {
    let mut rows = ensure_instances(conn, &[WantedInstance { key, spec, max_tries }], now).await?;
    Ok(rows.pop().expect("one row for one key"))
}

/// [`ensure_instance`] for many keys at once, in their order: one lookup per day and one
/// multi-row insert per few hundred missing rows, so a year-long backfill is a few thousand
/// statements, not a few hundred thousand.
pub async fn ensure_instances(
    conn: &mut Conn,
    wanted: &[WantedInstance<'_>],
    now: i64,
) -> anyhow::Result<Vec<(InstanceRow, bool)>> {
    let mut existing = instances_by_keys(conn, wanted.iter().map(|w| w.key)).await?;
    let missing: Vec<&WantedInstance> = wanted.iter().filter(|w| !existing.contains_key(w.key)).collect();
    // Six parameters a row; SQLite allows 32766 in one statement.
    for slice in missing.chunks(1000) {
        let sql = format!(
            "INSERT INTO instances (task_id, etl_day, state, try_number, max_tries, priority, queue, created_at)
             VALUES {} ON CONFLICT (task_id, etl_day) DO NOTHING",
            vec!["(?, ?, 'waiting', 0, ?, ?, ?, ?)"; slice.len()].join(", ")
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for w in slice {
            insert = insert
                .bind(&w.key.task)
                .bind(w.key.etl_day.compact())
                .bind(w.max_tries)
                .bind(w.spec.priority as i64)
                .bind(&w.spec.queue)
                .bind(now);
        }
        insert.execute(&mut *conn).await?;
    }
    let mut created = instances_by_keys(conn, missing.iter().map(|w| w.key)).await?;
    wanted
        .iter()
        .map(|w| match existing.remove(w.key) {
            Some(row) => Ok((row, false)),
            None => created
                .remove(w.key)
                .map(|row| (row, true))
                .with_context(|| format!("instance {} vanished after insert", w.key)),
        })
        .collect()
}

/// The instances of `keys` that exist, by key.
pub async fn instances_by_keys<'a>(
    conn: &mut Conn,
    keys: impl Iterator<Item = &'a InstanceKey>,
) -> anyhow::Result<HashMap<InstanceKey, InstanceRow>> {
    let mut by_day: std::collections::BTreeMap<EtlDay, Vec<&str>> = Default::default();
    for key in keys {
        by_day.entry(key.etl_day).or_default().push(&key.task);
    }
    let mut found = HashMap::new();
    for (day, tasks) in by_day {
        for slice in tasks.chunks(10_000) {
            let sql = format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE etl_day = ? AND task_id IN ({})",
                vec!["?"; slice.len()].join(", ")
            );
            let mut query = sqlx::query_as::<_, InstanceRow>(sqlx::AssertSqlSafe(sql)).bind(day.compact());
            for task in slice {
                query = query.bind(*task);
            }
            for row in query.fetch_all(&mut *conn).await? {
                found.insert(row.key(), row);
            }
        }
    }
    Ok(found)
}

/// Queues an instance as a new try: `from` -> queued, try_number + 1. Returns the new try
/// number, or None when the instance was not in `from` (someone else moved it).
pub async fn queue_instance(
    conn: &mut Conn,
    id: i64,
    from: InstanceState,
    epoch: i64,
    now: i64,
) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE instances SET state = 'queued', try_number = try_number + 1, dispatch_epoch = ?, queued_at = ?,
                started_at = NULL, finished_at = NULL, exit_code = NULL, next_try_at = NULL, agent_id = NULL,
                message = ''
         WHERE id = ? AND state = ? RETURNING try_number",
    )
    .bind(epoch)
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Puts an instance back to waiting for a redo; the run gets `retries` more tries.
pub async fn reset_for_redo(
    conn: &mut Conn,
    id: i64,
    from: InstanceState,
    retries: i64,
    spec: &TaskSpec,
    message: &str,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE instances SET state = 'waiting', max_tries = try_number + 1 + ?, lost_tries = 0, forced = 0,
                priority = ?, queue = ?, queued_at = NULL, started_at = NULL, finished_at = NULL,
                exit_code = NULL, next_try_at = NULL, agent_id = NULL, message = ?
         WHERE id = ? AND state = ?",
    )
    .bind(retries)
    .bind(spec.priority as i64)
    .bind(&spec.queue)
    .bind(message)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// queued -> running for exactly this try and epoch.
pub async fn claim_instance(
    conn: &mut Conn,
    id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE instances SET state = 'running', agent_id = ?, started_at = ?
         WHERE id = ? AND state = 'queued' AND try_number = ? AND dispatch_epoch = ?",
    )
    .bind(agent)
    .bind(now)
    .bind(id)
    .bind(try_number)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// running (this try) -> `to`, with the try's outcome.
#[allow(clippy::too_many_arguments)]
pub async fn finish_instance(
    conn: &mut Conn,
    id: i64,
    try_number: i64,
    to: InstanceState,
    exit_code: Option<i64>,
    message: &str,
    next_try_at: Option<i64>,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE instances SET state = ?, exit_code = ?, message = ?, next_try_at = ?, finished_at = ?
         WHERE id = ? AND state = 'running' AND try_number = ?",
    )
    .bind(to.as_str())
    .bind(exit_code)
    .bind(message)
    .bind(next_try_at)
    .bind(now)
    .bind(id)
    .bind(try_number)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An operator's move (kill, mark success) from `from`; sets the message and finish time.
pub async fn operator_set_state(
    conn: &mut Conn,
    id: i64,
    from: InstanceState,
    to: InstanceState,
    forced: bool,
    message: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE instances SET state = ?, forced = ?, message = ?, next_try_at = NULL,
                finished_at = ?, started_at = COALESCE(started_at, CASE WHEN ? THEN NULL ELSE NULL END)
         WHERE id = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(forced)
    .bind(message)
    .bind(now)
    .bind(forced)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Re-dispatch after a lost agent or a restart: running (this try) -> queued as a new try,
/// which does not count against the task's retries.
pub async fn requeue_lost(
    conn: &mut Conn,
    id: i64,
    try_number: i64,
    epoch: i64,
    now: i64,
    message: &str,
) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE instances SET state = 'queued', try_number = try_number + 1, max_tries = max_tries + 1,
                lost_tries = lost_tries + 1, dispatch_epoch = ?, queued_at = ?, started_at = NULL,
                finished_at = NULL, exit_code = NULL, agent_id = NULL, message = ?
         WHERE id = ? AND state = 'running' AND try_number = ? RETURNING try_number",
    )
    .bind(epoch)
    .bind(now)
    .bind(message)
    .bind(id)
    .bind(try_number)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Re-stamps queued instances with the current epoch (after a restart) and returns them.
pub async fn restamp_queued(conn: &mut Conn, epoch: i64) -> anyhow::Result<Vec<InstanceRow>> {
    sqlx::query("UPDATE instances SET dispatch_epoch = ? WHERE state = 'queued'")
        .bind(epoch)
        .execute(&mut *conn)
        .await?;
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE state = 'queued' ORDER BY id");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?)
}

pub async fn instances_in_state(
    conn: &mut Conn,
    state: InstanceState,
    task: Option<&str>,
) -> anyhow::Result<Vec<InstanceRow>> {
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE state = ? AND (? IS NULL OR task_id = ?) ORDER BY etl_day, id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(state.as_str())
        .bind(task)
        .bind(task)
        .fetch_all(&mut *conn)
        .await?)
}

/// Instances queued before `before` (their dispatch may be lost).
pub async fn queued_before(conn: &mut Conn, before: i64) -> anyhow::Result<Vec<InstanceRow>> {
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE state = 'queued' AND queued_at < ? LIMIT 10000"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(before)
        .fetch_all(&mut *conn)
        .await?)
}

/// Retries whose delay is over, and the earliest one still pending.
pub async fn retries_due(conn: &mut Conn, now: i64) -> anyhow::Result<(Vec<InstanceRow>, Option<i64>)> {
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE state = 'up_for_retry' AND next_try_at <= ? ORDER BY next_try_at"
    );
    let due = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(next_try_at) FROM instances WHERE state = 'up_for_retry' AND next_try_at > ?",
    )
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok((due, next))
}

pub async fn delete_instance(conn: &mut Conn, id: i64) -> anyhow::Result<()> {
    // Explicit, not only ON DELETE CASCADE, so the order is plain: logs, tries, instance.
    sqlx::query("DELETE FROM log_chunks WHERE attempt_id IN (SELECT id FROM attempts WHERE instance_id = ?)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM attempts WHERE instance_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM instances WHERE id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Attempts and logs
// ---------------------------------------------------------------------------------------------

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
}

pub fn attempt_id(instance_id: i64, try_number: i64) -> String {
    format!("{instance_id}-{try_number}")
}

pub async fn insert_attempt(
    conn: &mut Conn,
    instance_id: i64,
    try_number: i64,
    epoch: i64,
    agent: &str,
    now: i64,
) -> anyhow::Result<String> {
    let id = attempt_id(instance_id, try_number);
    // A leftover row of the same try (an instance redone after a restore) is replaced.
    sqlx::query("DELETE FROM log_chunks WHERE attempt_id = ?")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM attempts WHERE id = ?")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO attempts (id, instance_id, try_number, epoch, agent_id, state, started_at)
         VALUES (?, ?, ?, ?, ?, 'running', ?)",
    )
    .bind(&id)
    .bind(instance_id)
    .bind(try_number)
    .bind(epoch)
    .bind(agent)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

const ATTEMPT_COLUMNS: &str = "id, instance_id, try_number, epoch, agent_id, state, started_at, finished_at, exit_code, log_bytes, message";

pub async fn attempt(conn: &mut Conn, id: &str) -> anyhow::Result<Option<AttemptRow>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

pub async fn attempts_of(conn: &mut Conn, instance_id: i64) -> anyhow::Result<Vec<AttemptRow>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE instance_id = ? ORDER BY try_number");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(instance_id)
        .fetch_all(&mut *conn)
        .await?)
}

pub async fn running_attempts_of_agent(conn: &mut Conn, agent: &str) -> anyhow::Result<Vec<AttemptRow>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE agent_id = ? AND state = 'running'");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(agent)
        .fetch_all(&mut *conn)
        .await?)
}

pub async fn running_attempts(conn: &mut Conn) -> anyhow::Result<Vec<AttemptRow>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state = 'running'");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?)
}

/// running -> the try's outcome. False if the try was already closed.
pub async fn finish_attempt(
    conn: &mut Conn,
    id: &str,
    state: &str,
    exit_code: Option<i64>,
    message: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE attempts SET state = ?, exit_code = ?, message = ?, finished_at = ? WHERE id = ? AND state = 'running'",
    )
    .bind(state)
    .bind(exit_code)
    .bind(message)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A killed try's agent reported its end: "killing" becomes "killed".
pub async fn settle_killing(conn: &mut Conn, id: &str, now: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE attempts SET state = 'killed', finished_at = ? WHERE id = ? AND state = 'killing'")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Instances with a try killed since `since` whose agent has not yet reported it gone.
pub async fn killing_instances(
    conn: &mut Conn,
    since: i64,
) -> anyhow::Result<std::collections::HashSet<InstanceKey>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.task_id, i.etl_day FROM attempts a JOIN instances i ON i.id = a.instance_id
         WHERE a.state = 'killing' AND a.finished_at >= ?",
    )
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(task, day)| Some(InstanceKey::new(&task, EtlDay::parse(&day).ok()?)))
        .collect())
}

/// Appends log bytes to a try, up to `cap` bytes in all; past it, one marker and nothing more.
/// Returns the bytes stored, or None when no such try exists.
pub async fn append_log(
    conn: &mut Conn,
    attempt_id: &str,
    data: &[u8],
    cap: i64,
) -> anyhow::Result<Option<i64>> {
    let Some(current) = sqlx::query_scalar::<_, i64>("SELECT log_bytes FROM attempts WHERE id = ?")
        .bind(attempt_id)
        .fetch_optional(&mut *conn)
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
    sqlx::query("INSERT INTO log_chunks (attempt_id, byte_offset, data) VALUES (?, ?, ?)")
        .bind(attempt_id)
        .bind(current)
        .bind(&chunk)
        .execute(&mut *conn)
        .await?;
    // Past the cap the marker pushes log_bytes over it, which closes the log.
    sqlx::query("UPDATE attempts SET log_bytes = log_bytes + ? WHERE id = ?")
        .bind(chunk.len() as i64)
        .bind(attempt_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(chunk.len() as i64))
}

/// Log bytes of a try from `offset`, at most about `max` bytes.
pub async fn read_log(conn: &mut Conn, attempt_id: &str, offset: i64, max: i64) -> anyhow::Result<Vec<u8>> {
    let rows = sqlx::query(
        "SELECT byte_offset, data FROM log_chunks
         WHERE attempt_id = ? AND byte_offset + length(data) > ? AND byte_offset < ?
         ORDER BY byte_offset",
    )
    .bind(attempt_id)
    .bind(offset)
    // Chunks start in order, so none starting past offset + max is needed: a 64 MiB log is
    // read a window at a time, never whole.
    .bind(offset + max)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let start: i64 = row.get("byte_offset");
        let data: Vec<u8> = row.get("data");
        let skip = (offset - start).max(0) as usize;
        out.extend_from_slice(&data[skip.min(data.len())..]);
        if out.len() as i64 >= max {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    pub host: String,
    pub slots: i64,
    pub queues: String,
    pub version: String,
    pub registered_at: i64,
    pub last_heartbeat_at: i64,
    pub state: String,
}

pub async fn upsert_agent(conn: &mut Conn, row: &AgentRow) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO agents (id, host, slots, queues, version, registered_at, last_heartbeat_at, state)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'alive')
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, slots = excluded.slots, queues = excluded.queues,
            version = excluded.version, registered_at = excluded.registered_at,
            last_heartbeat_at = excluded.last_heartbeat_at, state = 'alive'",
    )
    .bind(&row.id)
    .bind(&row.host)
    .bind(row.slots)
    .bind(&row.queues)
    .bind(&row.version)
    .bind(row.registered_at)
    .bind(row.last_heartbeat_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a heartbeat; false when the agent is unknown or was declared dead.
pub async fn heartbeat(conn: &mut Conn, agent: &str, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE agents SET last_heartbeat_at = ? WHERE id = ? AND state = 'alive'")
        .bind(now)
        .bind(agent)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list_agents(conn: &mut Conn) -> anyhow::Result<Vec<AgentRow>> {
    Ok(sqlx::query_as("SELECT id, host, slots, queues, version, registered_at, last_heartbeat_at, state FROM agents ORDER BY id")
        .fetch_all(&mut *conn)
        .await?)
}

/// Marks alive agents silent since `before` as dead and returns their ids.
pub async fn expire_agents(conn: &mut Conn, before: i64) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "UPDATE agents SET state = 'dead' WHERE state = 'alive' AND last_heartbeat_at < ? RETURNING id",
    )
    .bind(before)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn count_running_by_agent(
    conn: &mut Conn,
) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT agent_id, COUNT(*) FROM attempts WHERE state = 'running' GROUP BY agent_id")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Operations log
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub client: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

pub async fn record_operation(
    conn: &mut Conn,
    actor: &str,
    client: &str,
    action: &str,
    target: &str,
    detail: &str,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO operations (at, actor, client, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(now)
    .bind(actor)
    .bind(client)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn list_operations(
    conn: &mut Conn,
    task: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<OperationRow>> {
    let pattern = task.map(|t| format!("{t}@%"));
    Ok(sqlx::query_as(
        "SELECT id, at, actor, client, action, target, detail FROM operations
         WHERE (? IS NULL OR target = ? OR target LIKE ?) ORDER BY id DESC LIMIT ?",
    )
    .bind(task)
    .bind(task)
    .bind(pattern)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

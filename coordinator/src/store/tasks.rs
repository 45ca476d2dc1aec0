//! Task definitions, their dependencies, schedules and cron fires.

use std::collections::HashMap;
use std::time::Duration;

use goflow_core::calendar::{Calendar, RawCalendar};
use goflow_core::{CatchUp, Deadline, Dependency, EtlDay, Period, PeriodKind, TaskSpec};
use sqlx::Row;

use super::Db;

#[derive(Debug, Clone)]
pub struct StoredTask {
    pub spec: TaskSpec,
    pub paused: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// The DAG it belongs to (a file's `dag: NAME`); None: none.
    pub dag: Option<String>,
    /// Its current version (0: none recorded yet, only before the first start after upgrade).
    pub version: i64,
}

pub async fn load_tasks(db: &mut impl Db) -> anyhow::Result<Vec<StoredTask>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT id, command, schedule, timezone, day_offset, retries, retry_delay_ms, timeout_ms,
                priority, queue, start_day, description, paused, created_at, updated_at,
                expected_duration_ms, deadline, period, calendar, catchup, pool, max_active
         FROM tasks ORDER BY id",
    ))
    .fetch_all(db.conn())
    .await?;
    let deps = sqlx::query(d.sql(
        "SELECT task_id, upstream_id, day_offset, calendar FROM dependencies
         ORDER BY task_id, upstream_id, day_offset",
    ))
    .fetch_all(db.conn())
    .await?;
    let mut owners = super::task_dags_and_versions(db).await?;
    let mut by_task: HashMap<String, Vec<Dependency>> = HashMap::new();
    for dep in deps {
        by_task
            .entry(dep.try_get("task_id")?)
            .or_default()
            .push(Dependency {
                task: dep.try_get("upstream_id")?,
                day_offset: dep.try_get::<i64, _>("day_offset")? as i32,
                calendar: dep.try_get("calendar")?,
            });
    }
    rows.into_iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let start_day: Option<String> = r.try_get("start_day")?;
            let timezone: String = r.try_get("timezone")?;
            let catchup: String = r.try_get("catchup")?;
            let catchup = catchup
                .parse::<CatchUp>()
                .map_err(|e| anyhow::anyhow!("task {id}: stored {e}"))?;
            let (dag, version) = owners.remove(&id).unwrap_or_default();
            let deadline = r
                .try_get::<Option<String>, _>("deadline")?
                .map(|d| {
                    Deadline::parse(&d, &timezone)
                        .map_err(|e| anyhow::anyhow!("task {id}: stored deadline {d:?}: {e}"))
                })
                .transpose()?;
            Ok(StoredTask {
                spec: TaskSpec {
                    depends_on: by_task.remove(&id).unwrap_or_default(),
                    command: r.try_get("command")?,
                    schedule: r.try_get("schedule")?,
                    timezone,
                    day_offset: r.try_get::<i64, _>("day_offset")? as i32,
                    retries: r.try_get::<Option<i64>, _>("retries")?.map(|v| v as u32),
                    retry_delay: r.try_get::<Option<i64>, _>("retry_delay_ms")?.map(ms_duration),
                    timeout: r.try_get::<Option<i64>, _>("timeout_ms")?.map(ms_duration),
                    priority: r.try_get::<i64, _>("priority")? as i32,
                    queue: r.try_get("queue")?,
                    start_day: start_day.map(|d| EtlDay::parse(&d)).transpose()?,
                    description: r.try_get("description")?,
                    expected_duration: r
                        .try_get::<Option<i64>, _>("expected_duration_ms")?
                        .map(ms_duration),
                    deadline,
                    period: PeriodKind::parse(&r.try_get::<String, _>("period")?)
                        .map_err(|e| anyhow::anyhow!("task {id}: stored {e}"))?,
                    calendar: r.try_get("calendar")?,
                    catchup,
                    pool: r.try_get("pool")?,
                    max_active: r.try_get::<Option<i64>, _>("max_active")?.map(|v| v as u32),
                    id,
                },
                paused: r.try_get::<i64, _>("paused")? != 0,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                dag,
                version,
            })
        })
        .collect()
}

fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Inserts or replaces one task definition with its schedule row and dependencies, as an
/// apply writes it (applies write many at once: [`super::write_tasks`]); its DAG and version
/// are left unset. `schedule_changed`: (re)start the schedule's clock at `now`.
pub async fn upsert_task(
    db: &mut impl Db,
    spec: &TaskSpec,
    now: i64,
    schedule_changed: bool,
) -> anyhow::Result<()> {
    let write = super::TaskWrite {
        spec,
        dag: None,
        version: 0,
        schedule_changed,
    };
    super::write_tasks(db, &[write], now, now, "the task's schedule changed").await?;
    Ok(())
}

/// Replaces a task's dependencies. Called after every task of an apply was upserted, so an
/// upstream defined later in the same document exists already.
pub async fn set_dependencies(db: &mut impl Db, spec: &TaskSpec) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM dependencies WHERE task_id = ?"))
        .bind(&spec.id)
        .execute(db.conn())
        .await?;
    // One row per (upstream, offset): the key of the table.
    let mut edges: Vec<(&str, i64, Option<&str>)> = spec
        .depends_on
        .iter()
        .map(|dep| (dep.task.as_str(), dep.day_offset as i64, dep.calendar.as_deref()))
        .collect();
    edges.sort_unstable();
    edges.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
    for (upstream, offset, calendar) in edges {
        sqlx::query(d.sql(
            "INSERT INTO dependencies (task_id, upstream_id, day_offset, calendar) VALUES (?, ?, ?, ?)",
        ))
        .bind(&spec.id)
        .bind(upstream)
        .bind(offset)
        .bind(calendar)
        .execute(db.conn())
        .await?;
    }
    Ok(())
}

pub async fn set_paused(db: &mut impl Db, task: &str, paused: bool, now: i64) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("UPDATE tasks SET paused = ?, updated_at = ? WHERE id = ?"))
        .bind(paused as i64)
        .bind(now)
        .bind(task)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn schedule_last_fires(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64)>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql("SELECT task_id, last_fire_at FROM schedules"))
        .fetch_all(db.conn())
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("task_id")?, r.try_get("last_fire_at")?)))
        .collect()
}

/// Records a fire that runs; false when this (schedule, fire time) was already recorded, by
/// anyone. (A fire not run has its own row with its reason: `record_skipped_fire`.)
pub async fn record_fire(
    db: &mut impl Db,
    task: &str,
    fire_at: i64,
    period: Period,
    now: i64,
) -> anyhow::Result<bool> {
    super::fires::insert_fire(db, task, fire_at, &period.key(), super::fires::FIRED, "", now).await
}

/// Every stored calendar.
pub async fn load_calendars(db: &mut impl Db) -> anyhow::Result<Vec<Calendar>> {
    let d = db.dialect();
    let rows: Vec<(String, String)> =
        sqlx::query_as(d.sql("SELECT id, definition FROM calendars ORDER BY id"))
            .fetch_all(db.conn())
            .await?;
    rows.into_iter()
        .map(|(id, definition)| {
            let raw: RawCalendar = serde_json::from_str(&definition)
                .map_err(|e| anyhow::anyhow!("calendar {id}: stored definition: {e}"))?;
            Calendar::from_raw(raw).map_err(|e| anyhow::anyhow!("calendar {id}: stored definition: {e}"))
        })
        .collect()
}

/// Inserts or replaces a calendar.
pub async fn upsert_calendar(db: &mut impl Db, calendar: &Calendar, now: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = d.upsert(
        "calendars (id, definition, created_at, updated_at)",
        "(?, ?, ?, ?)",
        "id",
        &["definition", "updated_at"],
    );
    sqlx::query(d.sql(&sql))
        .bind(&calendar.id)
        .bind(serde_json::to_string(&calendar.to_raw())?)
        .bind(now)
        .bind(now)
        .execute(db.conn())
        .await?;
    Ok(())
}

//! An apply's writes in batches: tasks, schedules, dependencies and versions as multi-row
//! upserts and inserts, and the newest versions looked up in one query per chunk, so a
//! 20,000-task apply is a few hundred statements, not a few per task (issue 20: it took
//! 164 s on PostgreSQL when every task cost eight round trips).
//!
//! Chunks stay under every database's bind-parameter limit (SQLite 32,766, PostgreSQL and
//! MySQL 65,535) and under MySQL's default packet size.

use std::collections::HashMap;
use std::time::Duration;

use goflow_core::TaskSpec;
use goflow_core::versions::Kind;

use super::{Db, StoredVersion};

/// Bind parameters per statement, well below the smallest limit (SQLite's 32,766).
const MAX_PARAMS: usize = 30_000;
/// Text bound per statement (MySQL's `max_allowed_packet` is 16 MiB by default, 4 MiB on old
/// servers): a chunk closes when its rows' text passes this.
const MAX_CHUNK_BYTES: usize = 2 << 20;

/// One task an apply writes, with the DAG and version it gets.
pub struct TaskWrite<'a> {
    pub spec: &'a TaskSpec,
    pub dag: Option<&'a str>,
    pub version: i64,
    /// (Re)start the schedule's clock: a new task, or its schedule or timezone changed.
    pub schedule_changed: bool,
}

/// Splits `items` into runs of at most `params / per_row` rows whose `size` adds up to at most
/// [`MAX_CHUNK_BYTES`] (a single row bigger than that is a chunk of its own).
fn chunks<T>(items: &[T], per_row: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let max_rows = (MAX_PARAMS / per_row).max(1);
    let mut out = vec![];
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && (i - start == max_rows || bytes + s > MAX_CHUNK_BYTES) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

fn rows(n: usize, row: &str) -> String {
    vec![row; n].join(", ")
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn duration_ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

const TASK_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const TASK_PARAMS: usize = 23;

/// Writes the tasks of an apply with their DAG and version: inserted, or replaced keeping
/// `paused` and `created_at`; their schedules (removed when none, restarted at
/// `schedule_start` when changed) and their dependencies (replaced). Returns, for each task
/// whose schedule changed, the number of fires held while paused that are now skipped.
pub async fn write_tasks(
    db: &mut impl Db,
    tasks: &[TaskWrite<'_>],
    now: i64,
    schedule_start: i64,
    held_reason: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let d = db.dialect();
    let text = |t: &TaskWrite| t.spec.command.len() + t.spec.description.len() + 256;
    for chunk in chunks(tasks, TASK_PARAMS, text) {
        let sql = d.upsert(
            "tasks (id, command, schedule, timezone, day_offset, retries, retry_delay_ms, timeout_ms,
                    priority, queue, start_day, description, paused, created_at, updated_at,
                    expected_duration_ms, deadline, period, calendar, catchup, pool, max_active,
                    dag, version)",
            &rows(chunk.len(), TASK_ROW),
            "id",
            &[
                "command",
                "schedule",
                "timezone",
                "day_offset",
                "retries",
                "retry_delay_ms",
                "timeout_ms",
                "priority",
                "queue",
                "start_day",
                "description",
                "updated_at",
                "expected_duration_ms",
                "deadline",
                "period",
                "calendar",
                "catchup",
                "pool",
                "max_active",
                "dag",
                "version",
            ],
        );
        let mut query = sqlx::query(d.sql(&sql));
        for t in chunk {
            let spec = t.spec;
            query = query
                .bind(spec.id.clone())
                .bind(spec.command.clone())
                .bind(spec.schedule.clone())
                .bind(spec.timezone.clone())
                .bind(spec.day_offset as i64)
                .bind(spec.retries.map(|r| r as i64))
                .bind(spec.retry_delay.map(duration_ms))
                .bind(spec.timeout.map(duration_ms))
                .bind(spec.priority as i64)
                .bind(spec.queue.clone())
                .bind(spec.start_day.map(|d| d.compact()))
                .bind(spec.description.clone())
                .bind(now)
                .bind(now)
                .bind(spec.expected_duration.map(duration_ms))
                .bind(spec.deadline.as_ref().map(|d| d.to_string()))
                .bind(spec.period.as_str())
                .bind(spec.calendar.clone())
                .bind(spec.catchup.as_str())
                .bind(spec.pool.clone())
                .bind(spec.max_active.map(i64::from))
                .bind(t.dag.map(str::to_string))
                .bind(t.version);
        }
        query.execute(db.conn()).await?;
    }

    // Schedules: gone for tasks without one, (re)started for the changed ones.
    let unscheduled: Vec<&str> = tasks
        .iter()
        .filter(|t| t.spec.schedule.is_none())
        .map(|t| t.spec.id.as_str())
        .collect();
    for chunk in chunks(&unscheduled, 1, |id| id.len()) {
        let sql = format!(
            "DELETE FROM schedules WHERE task_id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(d.sql(&sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        query.execute(db.conn()).await?;
    }
    let restarted: Vec<(&str, &str)> = tasks
        .iter()
        .filter(|t| t.schedule_changed)
        .filter_map(|t| Some((t.spec.id.as_str(), t.spec.schedule.as_deref()?)))
        .collect();
    for chunk in chunks(&restarted, 3, |(id, expr)| id.len() + expr.len()) {
        let sql = d.upsert(
            "schedules (task_id, expression, last_fire_at)",
            &rows(chunk.len(), "(?, ?, ?)"),
            "task_id",
            &["expression", "last_fire_at"],
        );
        let mut query = sqlx::query(d.sql(&sql));
        for (id, expr) in chunk {
            query = query
                .bind(id.to_string())
                .bind(expr.to_string())
                .bind(schedule_start);
        }
        query.execute(db.conn()).await?;
    }

    // Fires held while paused belong to the old schedule: few tasks have any (an index on
    // the outcome finds them), so only those are updated.
    let held: Vec<(String, i64)> = sqlx::query_as(
        d.sql("SELECT task_id, COUNT(*) AS n FROM cron_fires WHERE outcome = 'held' GROUP BY task_id"),
    )
    .fetch_all(db.conn())
    .await?;
    let changed: HashMap<&str, ()> = tasks
        .iter()
        .filter(|t| t.schedule_changed)
        .map(|t| (t.spec.id.as_str(), ()))
        .collect();
    let mut dropped = vec![];
    for (task, _) in held
        .into_iter()
        .filter(|(task, _)| changed.contains_key(task.as_str()))
    {
        let n = super::drop_held_fires(db, &task, held_reason).await?;
        if n > 0 {
            dropped.push((task, n));
        }
    }

    // Dependencies: replaced, one row per (upstream, offset), the table's key.
    let ids: Vec<&str> = tasks.iter().map(|t| t.spec.id.as_str()).collect();
    for chunk in chunks(&ids, 1, |id| id.len()) {
        let sql = format!(
            "DELETE FROM dependencies WHERE task_id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(d.sql(&sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        query.execute(db.conn()).await?;
    }
    let mut edges: Vec<(&str, &str, i64, Option<&str>)> = vec![];
    for t in tasks {
        let mut own: Vec<(&str, &str, i64, Option<&str>)> = t
            .spec
            .depends_on
            .iter()
            .map(|dep| {
                (
                    t.spec.id.as_str(),
                    dep.task.as_str(),
                    dep.day_offset as i64,
                    dep.calendar.as_deref(),
                )
            })
            .collect();
        own.sort_unstable();
        own.dedup_by(|a, b| (a.1, a.2) == (b.1, b.2));
        edges.extend(own);
    }
    for chunk in chunks(&edges, 4, |e| e.0.len() + e.1.len() + 64) {
        let sql = format!(
            "INSERT INTO dependencies (task_id, upstream_id, day_offset, calendar) VALUES {}",
            rows(chunk.len(), "(?, ?, ?, ?)")
        );
        let mut query = sqlx::query(d.sql(&sql));
        for (task, upstream, offset, calendar) in chunk {
            query = query
                .bind(task.to_string())
                .bind(upstream.to_string())
                .bind(*offset)
                .bind(calendar.map(str::to_string));
        }
        query.execute(db.conn()).await?;
    }
    Ok(dropped)
}

const VERSION_FIELDS: [&str; 9] = [
    "kind",
    "id",
    "version",
    "definition",
    "created_at",
    "actor",
    "client",
    "source",
    "changes",
];

/// The newest version of each of `ids` that has one (a deleted task keeps its versions, so
/// one created again goes on counting), in one query per chunk.
pub async fn latest_versions(
    db: &mut impl Db,
    kind: Kind,
    ids: &[&str],
) -> anyhow::Result<HashMap<String, StoredVersion>> {
    let d = db.dialect();
    let columns: Vec<String> = VERSION_FIELDS.iter().map(|c| format!("v.{c}")).collect();
    let mut out = HashMap::new();
    for chunk in chunks(ids, 1, |id| id.len()) {
        let sql = format!(
            "SELECT {} FROM definition_versions v
             JOIN (SELECT id, MAX(version) AS newest FROM definition_versions
                   WHERE kind = ? AND id IN ({}) GROUP BY id) m
               ON v.id = m.id AND v.version = m.newest
             WHERE v.kind = ?",
            columns.join(", "),
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(d.sql(&sql)).bind(kind.as_str());
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for r in query.bind(kind.as_str()).fetch_all(db.conn()).await? {
            let v = super::versions::version_of_row(&r)?;
            out.insert(v.id.clone(), v);
        }
    }
    Ok(out)
}

/// Records versions, many rows a statement; the (kind, id, version) key is unique, so two
/// writers cannot both record the same number.
pub async fn insert_versions(db: &mut impl Db, versions: &[StoredVersion]) -> anyhow::Result<()> {
    let d = db.dialect();
    let size = |v: &StoredVersion| v.definition.len() + v.source.len() + v.changes.len() + v.id.len() + 128;
    for chunk in chunks(versions, VERSION_FIELDS.len(), size) {
        let sql = format!(
            "INSERT INTO definition_versions ({}) VALUES {}",
            VERSION_FIELDS.join(", "),
            rows(chunk.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?)")
        );
        let mut query = sqlx::query(d.sql(&sql));
        for v in chunk {
            query = query
                .bind(v.kind.clone())
                .bind(v.id.clone())
                .bind(v.version)
                .bind(v.definition.clone())
                .bind(v.created_at)
                .bind(v.actor.clone())
                .bind(v.client.clone())
                .bind(v.source.clone())
                .bind(v.changes.clone());
        }
        query.execute(db.conn()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let items: Vec<usize> = vec![1; 10];
        let c = chunks(&items, MAX_PARAMS / 4, |s| *s);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let big = vec![MAX_CHUNK_BYTES / 2 + 1; 3];
        assert_eq!(chunks(&big, 1, |s| *s).len(), 3);
        let huge = vec![MAX_CHUNK_BYTES * 2];
        assert_eq!(chunks(&huge, 1, |s| *s).len(), 1);
        assert!(chunks(&Vec::<usize>::new(), 1, |s| *s).is_empty());
    }
}

//! Deleting task definitions (their finished instances, tries and logs stay readable).

use super::Db;

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// One instance of `tasks` that is queued, running or waiting to retry, as `task@day (state)`:
/// deleting its task would strand it.
pub async fn first_active_instance(db: &mut impl Db, tasks: &[String]) -> anyhow::Result<Option<String>> {
    if tasks.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT task_id, etl_day, state FROM instances
         WHERE task_id IN ({}) AND state IN ('queued', 'running', 'up_for_retry')
         ORDER BY etl_day, task_id LIMIT 1",
        placeholders(tasks.len())
    );
    let d = db.dialect();
    let mut query = sqlx::query_as::<_, (String, String, String)>(d.sql(&sql));
    for task in tasks {
        query = query.bind(task);
    }
    Ok(query
        .fetch_optional(db.conn())
        .await?
        .map(|(task, day, state)| format!("{task}@{day} ({state})")))
}

/// Deletes the definitions of `tasks`: their dependencies, schedules and rows, and their
/// waiting instances (never run, so no history). Instances that ran stay, with tries and logs.
pub async fn delete_task_definitions(db: &mut impl Db, tasks: &[String]) -> anyhow::Result<u64> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let list = placeholders(tasks.len());
    let statements = [
        format!("DELETE FROM dependencies WHERE task_id IN ({list})"),
        format!("DELETE FROM schedules WHERE task_id IN ({list})"),
        format!("DELETE FROM instances WHERE task_id IN ({list}) AND state = 'waiting' AND try_number = 0"),
        format!("DELETE FROM tasks WHERE id IN ({list})"),
    ];
    let mut deleted_tasks = 0;
    for sql in statements {
        let is_tasks = sql.starts_with("DELETE FROM tasks");
        let d = db.dialect();
        let mut query = sqlx::query(d.sql(&sql));
        for task in tasks {
            query = query.bind(task);
        }
        let done = query.execute(db.conn()).await?;
        if is_tasks {
            deleted_tasks = done.rows_affected();
        }
    }
    Ok(deleted_tasks)
}

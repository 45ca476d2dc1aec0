//! What `eta` and the at-risk check read besides instances (issue 19): the running time of
//! each task's last successful tries, and the state of deadlines at risk.

use std::collections::HashMap;

use super::Db;
use super::instances::placeholders;

/// The running time (ms) of the last `per_task` successful tries of each of `tasks`, newest
/// first. One statement per 500 tasks.
pub async fn recent_durations(
    db: &mut impl Db,
    tasks: &[&str],
    per_task: i64,
) -> anyhow::Result<HashMap<String, Vec<i64>>> {
    let d = db.dialect();
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for slice in tasks.chunks(500) {
        let sql = format!(
            "SELECT task_id, ms FROM (
                 SELECT i.task_id AS task_id, a.finished_at - a.started_at AS ms,
                        ROW_NUMBER() OVER (PARTITION BY i.task_id ORDER BY a.finished_at DESC) AS rn
                 FROM attempts a JOIN instances i ON i.id = a.instance_id
                 WHERE a.state = 'success' AND a.finished_at IS NOT NULL AND i.task_id IN ({})
             ) recent WHERE rn <= {per_task} ORDER BY task_id, ms",
            placeholders(slice.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(d.sql(&sql));
        for task in slice {
            query = query.bind(*task);
        }
        for (task, ms) in query.fetch_all(db.conn()).await? {
            out.entry(task).or_default().push(ms.max(0));
        }
    }
    Ok(out)
}

/// A deadline at risk as last recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadlineRisk {
    pub task_id: String,
    pub etl_day: String,
    /// The predicted finish of the last `deadline_at_risk` alert (ms).
    pub predicted_at: i64,
    /// How many were raised for the instance (the try_number of the last one).
    pub raised: i64,
    /// 1 while at risk; 0 once the prediction came back inside the deadline.
    pub at_risk: i64,
    pub updated_at: i64,
}

/// The recorded risks of `keys` (task, etl_day), by key.
pub async fn deadline_risks(
    db: &mut impl Db,
    keys: &[(String, String)],
) -> anyhow::Result<HashMap<(String, String), DeadlineRisk>> {
    let d = db.dialect();
    let mut out = HashMap::new();
    for slice in keys.chunks(400) {
        let cond = vec!["(task_id = ? AND etl_day = ?)"; slice.len()].join(" OR ");
        let sql = format!(
            "SELECT task_id, etl_day, predicted_at, raised, at_risk, updated_at FROM deadline_risks WHERE {cond}"
        );
        let mut query = sqlx::query_as::<_, DeadlineRisk>(d.sql(&sql));
        for (task, day) in slice {
            query = query.bind(task).bind(day);
        }
        for row in query.fetch_all(db.conn()).await? {
            out.insert((row.task_id.clone(), row.etl_day.clone()), row);
        }
    }
    Ok(out)
}

pub async fn save_deadline_risk(db: &mut impl Db, risk: &DeadlineRisk) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = d.upsert(
        "deadline_risks (task_id, etl_day, predicted_at, raised, at_risk, updated_at)",
        "(?, ?, ?, ?, ?, ?)",
        "task_id, etl_day",
        &["predicted_at", "raised", "at_risk", "updated_at"],
    );
    sqlx::query(d.sql(&sql))
        .bind(&risk.task_id)
        .bind(&risk.etl_day)
        .bind(risk.predicted_at)
        .bind(risk.raised)
        .bind(risk.at_risk)
        .bind(risk.updated_at)
        .execute(db.conn())
        .await?;
    Ok(())
}

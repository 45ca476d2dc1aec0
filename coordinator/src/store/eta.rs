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

/// Forgets the risks of days before `before` (yyyymmdd): `clean` removes those days.
pub async fn delete_old_deadline_risks(db: &mut impl Db, before: &str) -> anyhow::Result<i64> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("DELETE FROM deadline_risks WHERE etl_day < ?"))
        .bind(before)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::on_every_database;
    use crate::store::{Store, now_ms};
    use crate::testing::TestDatabase;

    fn risk(task: &str, day: &str) -> DeadlineRisk {
        DeadlineRisk {
            task_id: task.into(),
            etl_day: day.into(),
            predicted_at: 1,
            raised: 1,
            at_risk: 1,
            updated_at: now_ms(),
        }
    }

    #[tokio::test]
    async fn old_deadline_risks_are_forgotten_and_the_rest_kept() {
        on_every_database(|dialect| async move {
            let db = TestDatabase::create(dialect).await;
            let store = Store::open(&db.database_url()).await.unwrap();
            let mut tx = store.begin().await.unwrap();
            for (task, day) in [("a", "20260101"), ("b", "20260101"), ("a", "20260102")] {
                save_deadline_risk(&mut tx, &risk(task, day)).await.unwrap();
            }
            assert_eq!(
                delete_old_deadline_risks(&mut tx, "20260102").await.unwrap(),
                2,
                "{dialect:?}"
            );
            let keys = [("a", "20260101"), ("b", "20260101"), ("a", "20260102")]
                .map(|(t, d)| (t.to_string(), d.to_string()));
            let left = deadline_risks(&mut tx, &keys).await.unwrap();
            assert_eq!(
                left.keys().collect::<Vec<_>>(),
                [&("a".to_string(), "20260102".to_string())]
            );
            tx.commit().await.unwrap();
        })
        .await;
    }
}

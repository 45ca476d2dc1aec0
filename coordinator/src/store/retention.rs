//! Retention (`goflowctl clean`, `--retention-days`): old instances with their tries and logs,
//! and old operations, deleted a batch at a time (what may go is `goflow_core::retention`'s).

use goflow_core::{EtlDay, InstanceKey, InstanceState};
use sqlx::Row;

use super::Db;

/// An instance before the cut, as the cleaner sees it.
#[derive(Debug, Clone)]
pub struct OldInstance {
    pub id: i64,
    pub key: InstanceKey,
    pub state: InstanceState,
}

/// What deleting a batch of instances removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub tries: i64,
    pub log_chunks: i64,
    pub log_bytes: i64,
}

/// Every instance not finished (waiting, queued, running, up for retry), whatever its day.
pub async fn unfinished_instances(db: &mut impl Db) -> anyhow::Result<Vec<InstanceKey>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT task_id, etl_day FROM instances WHERE state IN ('waiting', 'queued', 'running', 'up_for_retry')",
    ))
    .fetch_all(db.conn())
    .await?;
    rows.iter()
        .map(|row| {
            let day: String = row.try_get("etl_day")?;
            Ok(InstanceKey::new(
                &row.try_get::<String, _>("task_id")?,
                EtlDay::parse(&day)?,
            ))
        })
        .collect()
}

/// Up to `limit` instances of days before `before` with an id above `after`, by id.
pub async fn old_instances(
    db: &mut impl Db,
    before: EtlDay,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<OldInstance>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(
        "SELECT id, task_id, etl_day, state FROM instances WHERE etl_day < ? AND id > ? ORDER BY id LIMIT ?",
    ))
    .bind(before.compact())
    .bind(after)
    .bind(limit)
    .fetch_all(db.conn())
    .await?;
    rows.iter()
        .map(|row| {
            let day: String = row.try_get("etl_day")?;
            let state: String = row.try_get("state")?;
            Ok(OldInstance {
                id: row.try_get("id")?,
                key: InstanceKey::new(&row.try_get::<String, _>("task_id")?, EtlDay::parse(&day)?),
                state: InstanceState::parse(&state)
                    .ok_or_else(|| anyhow::anyhow!("instance has unknown state {state:?}"))?,
            })
        })
        .collect()
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// What the instances `ids` hold: tries, log chunks and their bytes, and the archived log
/// objects of their tries.
pub async fn instances_contents(db: &mut impl Db, ids: &[i64]) -> anyhow::Result<(Removed, Vec<String>)> {
    if ids.is_empty() {
        return Ok((Removed::default(), vec![]));
    }
    let d = db.dialect();
    let list = placeholders(ids.len());
    // Summed here, not with SUM(): MySQL and PostgreSQL answer a DECIMAL for it.
    let sql = format!("SELECT log_bytes, log_object FROM attempts WHERE instance_id IN ({list})");
    let mut query = sqlx::query(d.sql(&sql));
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(db.conn()).await?;
    let tries = rows.len() as i64;
    let mut log_bytes = 0;
    let mut objects = vec![];
    for row in &rows {
        log_bytes += row.try_get::<i64, _>("log_bytes")?;
        if let Some(object) = row.try_get::<Option<String>, _>("log_object")? {
            objects.push(object);
        }
    }
    let sql = format!(
        "SELECT COUNT(*) FROM log_chunks WHERE attempt_id IN (SELECT id FROM attempts WHERE instance_id IN ({list}))"
    );
    let mut query = sqlx::query_scalar::<_, i64>(d.sql(&sql));
    for id in ids {
        query = query.bind(*id);
    }
    let log_chunks = query.fetch_one(db.conn()).await?;
    Ok((
        Removed {
            tries,
            log_chunks,
            log_bytes,
        },
        objects,
    ))
}

/// Deletes the instances `ids` with their tries and log chunks.
pub async fn delete_instances(db: &mut impl Db, ids: &[i64]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let d = db.dialect();
    let list = placeholders(ids.len());
    // Explicit, not only ON DELETE CASCADE, so the order is plain: logs, tries, instances.
    for sql in [
        format!(
            "DELETE FROM log_chunks WHERE attempt_id IN (SELECT id FROM attempts WHERE instance_id IN ({list}))"
        ),
        format!("DELETE FROM attempts WHERE instance_id IN ({list})"),
        format!("DELETE FROM instances WHERE id IN ({list})"),
    ] {
        let mut query = sqlx::query(d.sql(&sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(db.conn()).await?;
    }
    Ok(())
}

/// The id of the `limit`-th oldest operation recorded before `before` (epoch ms), or of the
/// last one when there are fewer; None when there is none.
pub async fn old_operations_end(
    db: &mut impl Db,
    before: i64,
    limit: i64,
) -> anyhow::Result<Option<(i64, i64)>> {
    let d = db.dialect();
    let ids =
        sqlx::query_scalar::<_, i64>(d.sql("SELECT id FROM operations WHERE at < ? ORDER BY id LIMIT ?"))
            .bind(before)
            .bind(limit)
            .fetch_all(db.conn())
            .await?;
    Ok(ids.last().map(|last| (*last, ids.len() as i64)))
}

/// How many operations were recorded before `before` (epoch ms).
pub async fn count_old_operations(db: &mut impl Db, before: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar::<_, i64>(d.sql("SELECT COUNT(*) FROM operations WHERE at < ?"))
            .bind(before)
            .fetch_one(db.conn())
            .await?,
    )
}

/// Deletes the operations recorded before `before` with an id up to `last`.
pub async fn delete_old_operations(db: &mut impl Db, before: i64, last: i64) -> anyhow::Result<i64> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("DELETE FROM operations WHERE at < ? AND id <= ?"))
        .bind(before)
        .bind(last)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() as i64)
}

/// When the last `clean` by `actor` was recorded (epoch ms).
pub async fn last_clean_by(db: &mut impl Db, actor: &str) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    Ok(sqlx::query_scalar::<_, Option<i64>>(
        d.sql("SELECT MAX(at) FROM operations WHERE action = 'clean' AND actor = ?"),
    )
    .bind(actor)
    .fetch_one(db.conn())
    .await?)
}

//! PostgreSQL's planner statistics of the tables goflow updates by id while an index that leads
//! with `state` competes (`instances`, `attempts`).
//!
//! A prepared statement's generic plan is chosen once per connection. Chosen while a table was
//! nearly empty (a new install, a new database), the claim `UPDATE instances ... WHERE id = ?
//! AND state = 'queued'` ties between the primary key and `(state, queued_at)`, and can take the
//! latter: then every claim scans all queued rows (3-6 ms a claim behind 14,000 queued, against
//! a fraction of a millisecond). The plan stays until the table is analyzed. Autovacuum
//! analyzes a table after 10% of it changed, long before this; where it is off, this does.

use super::{Db, Dialect};

/// The tables whose lookups by id an index on `state` competes with, and how each is analyzed.
const TABLES: [(&str, &str); 2] = [
    ("instances", "ANALYZE instances"),
    ("attempts", "ANALYZE attempts"),
];
/// Changes before a table is worth analyzing at all: below this, a scan of its queued rows is
/// as cheap as a lookup.
const MIN_CHANGES: i64 = 1_000;

/// Analyzes each of [`TABLES`] that changed by as many rows since its last analysis as it has
/// (and at least [`MIN_CHANGES`]); returns them with their changes. PostgreSQL only: other
/// databases return nothing.
pub async fn analyze_grown_tables(db: &mut impl Db) -> anyhow::Result<Vec<(String, i64)>> {
    if db.dialect() != Dialect::Postgres {
        return Ok(vec![]);
    }
    let grown: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, n_mod_since_analyze FROM pg_stat_user_tables
         WHERE schemaname = current_schema() AND relname IN ($1, $2)
           AND n_mod_since_analyze >= $3 AND n_mod_since_analyze >= n_live_tup",
    )
    .bind(TABLES[0].0)
    .bind(TABLES[1].0)
    .bind(MIN_CHANGES)
    .fetch_all(db.conn())
    .await?;
    for (table, _) in &grown {
        if let Some((_, analyze)) = TABLES.iter().find(|(name, _)| name == table) {
            sqlx::query(*analyze).execute(db.conn()).await?;
        }
    }
    Ok(grown)
}

/// Whether PostgreSQL's autovacuum is off for this database (always false elsewhere).
pub async fn autovacuum_off(db: &mut impl Db) -> anyhow::Result<bool> {
    if db.dialect() != Dialect::Postgres {
        return Ok(false);
    }
    let setting: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(db.conn())
        .await?;
    Ok(setting == "off")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sqlx::Row;

    use super::*;
    use crate::store::{Reader, Store};
    use crate::testing::TestDatabase;

    async fn claim_plan(conn: &mut Reader) -> String {
        let rows = sqlx::raw_sql("EXPLAIN EXECUTE claim(1)")
            .fetch_all(conn.conn())
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A claim's generic plan made while `instances` was empty scans the queued rows by
    /// `state`; once the table changed by as many rows as it has, it is analyzed, and the same
    /// prepared claim reads its one row by the primary key again.
    #[tokio::test]
    async fn a_grown_instances_table_is_analyzed_and_claims_go_back_to_the_key() {
        let db = TestDatabase::create(Dialect::Postgres).await;
        let store = Store::open(&db.database_url()).await.unwrap();
        let mut conn = store.read().await.unwrap();
        sqlx::raw_sql(
            "PREPARE claim(bigint) AS UPDATE instances SET started_at = 1
             WHERE id = $1 AND state = 'queued' AND try_number = 1 AND dispatch_epoch = 1",
        )
        .execute(conn.conn())
        .await
        .unwrap();
        // Five custom plans, then the generic one is kept.
        for _ in 0..6 {
            sqlx::raw_sql("EXECUTE claim(1)")
                .execute(conn.conn())
                .await
                .unwrap();
        }
        let before = claim_plan(&mut conn).await;
        assert!(
            before.contains("instances_state_queued"),
            "the trap this guards against (PostgreSQL's choice on an empty table):\n{before}"
        );
        sqlx::raw_sql(
            "INSERT INTO instances (task_id, etl_day, state, priority, queue, created_at, queued_at)
             SELECT 't', lpad(g::text, 8, '0'), 'queued', 0, 'default', 0, g
             FROM generate_series(1, 3000) g",
        )
        .execute(conn.conn())
        .await
        .unwrap();
        assert!(
            !claim_plan(&mut conn).await.contains("instances_pkey"),
            "a plan kept: the inserts alone do not change it"
        );
        // The server's table statistics lag the commit by up to a second or so.
        let deadline = Instant::now() + Duration::from_secs(20);
        let analyzed = loop {
            let analyzed = analyze_grown_tables(&mut conn).await.unwrap();
            if !analyzed.is_empty() || Instant::now() > deadline {
                break analyzed;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(analyzed, [("instances".to_string(), 3000)]);
        let after = claim_plan(&mut conn).await;
        assert!(after.contains("instances_pkey"), "{after}");
        assert_eq!(
            analyze_grown_tables(&mut conn).await.unwrap(),
            [],
            "just analyzed: nothing to do"
        );
    }

    #[tokio::test]
    async fn other_databases_have_nothing_to_analyze() {
        let db = TestDatabase::create(Dialect::Sqlite).await;
        let store = Store::open(&db.database_url()).await.unwrap();
        let mut conn = store.read().await.unwrap();
        assert_eq!(analyze_grown_tables(&mut conn).await.unwrap(), []);
        assert!(!autovacuum_off(&mut conn).await.unwrap());
    }
}

//! Per-agent credentials: one token per agent id, kept as its SHA-256 only.

use sqlx::Row;

use super::Db;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTokenRow {
    pub agent_id: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

fn agent_token_row(r: &sqlx::any::AnyRow) -> anyhow::Result<AgentTokenRow> {
    Ok(AgentTokenRow {
        agent_id: r.try_get("agent_id")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

const COLUMNS: &str = "agent_id, created_by, created_at, last_used_at";

/// Stores the token of `row.agent_id`; false if that agent has one already.
pub async fn insert_agent_token(
    db: &mut impl Db,
    row: &AgentTokenRow,
    token_hash: &str,
) -> anyhow::Result<bool> {
    let d = db.dialect();
    let sql = d.insert_unless_exists(
        "agent_tokens (agent_id, token_hash, created_by, created_at)",
        "(?, ?, ?, ?)",
        "agent_id",
    );
    let done = sqlx::query(d.sql(&sql))
        .bind(&row.agent_id)
        .bind(token_hash)
        .bind(&row.created_by)
        .bind(row.created_at)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list_agent_tokens(db: &mut impl Db) -> anyhow::Result<Vec<AgentTokenRow>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql(&format!("SELECT {COLUMNS} FROM agent_tokens ORDER BY agent_id")))
        .fetch_all(db.conn())
        .await?;
    rows.iter().map(agent_token_row).collect()
}

/// Removes the token of `agent_id`; false if it had none.
pub async fn delete_agent_token(db: &mut impl Db, agent_id: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("DELETE FROM agent_tokens WHERE agent_id = ?"))
        .bind(agent_id)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The agent whose token has this hash.
pub async fn agent_of_token(db: &mut impl Db, token_hash: &str) -> anyhow::Result<Option<String>> {
    let d = db.dialect();
    Ok(
        sqlx::query_scalar(d.sql("SELECT agent_id FROM agent_tokens WHERE token_hash = ?"))
            .bind(token_hash)
            .fetch_optional(db.conn())
            .await?,
    )
}

pub async fn touch_agent_token(db: &mut impl Db, agent_id: &str, now: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE agent_tokens SET last_used_at = ? WHERE agent_id = ?"))
        .bind(now)
        .bind(agent_id)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// The secret of the cluster's embedded agents: the stored one, or `candidate`, stored now if
/// none is (the first coordinator to ask makes it; the others read it).
pub async fn embedded_agent_secret(db: &mut impl Db, candidate: &str) -> anyhow::Result<String> {
    let d = db.dialect();
    let sql = d.insert_unless_exists("embedded_agent_secret (id, secret)", "(1, ?)", "id");
    sqlx::query(d.sql(&sql))
        .bind(candidate)
        .execute(db.conn())
        .await?;
    Ok(
        sqlx::query_scalar(d.sql("SELECT secret FROM embedded_agent_secret WHERE id = 1"))
            .fetch_one(db.conn())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Dialect, Store, now_ms};
    use crate::testing::TestDatabase;

    /// On each database: one token per agent, found by its hash only, gone once revoked; the
    /// embedded agents' secret is made once and then kept.
    #[tokio::test]
    async fn agent_tokens_on_every_database() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let db = TestDatabase::create(dialect).await;
            let store = Store::open(&db.database_url()).await.expect("open");
            let row = AgentTokenRow {
                agent_id: "a1".into(),
                created_by: "local:test".into(),
                created_at: now_ms(),
                last_used_at: None,
            };
            let mut tx = store.begin_unfenced().await.unwrap();
            assert!(insert_agent_token(&mut tx, &row, "hash-1").await.unwrap());
            assert!(
                !insert_agent_token(&mut tx, &row, "hash-2").await.unwrap(),
                "{dialect:?}: one token per agent"
            );
            touch_agent_token(&mut tx, "a1", 42).await.unwrap();
            let first = embedded_agent_secret(&mut tx, "first").await.unwrap();
            let second = embedded_agent_secret(&mut tx, "second").await.unwrap();
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("first", "first"),
                "{dialect:?}"
            );
            tx.commit().await.unwrap();

            let mut conn = store.read().await.unwrap();
            assert_eq!(
                agent_of_token(&mut conn, "hash-1").await.unwrap().as_deref(),
                Some("a1")
            );
            assert_eq!(agent_of_token(&mut conn, "hash-2").await.unwrap(), None);
            let listed = list_agent_tokens(&mut conn).await.unwrap();
            assert_eq!(listed.len(), 1, "{dialect:?}");
            assert_eq!(listed[0].last_used_at, Some(42), "{dialect:?}");
            drop(conn);

            let mut tx = store.begin_unfenced().await.unwrap();
            assert!(delete_agent_token(&mut tx, "a1").await.unwrap());
            assert!(!delete_agent_token(&mut tx, "a1").await.unwrap());
            tx.commit().await.unwrap();
            let mut conn = store.read().await.unwrap();
            assert_eq!(
                agent_of_token(&mut conn, "hash-1").await.unwrap(),
                None,
                "{dialect:?}"
            );
            drop(conn);
            store.close().await;
        }
    }
}

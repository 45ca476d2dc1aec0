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

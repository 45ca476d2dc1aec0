//! The agent registry. Liveness itself lives in the engine's memory (monotonic time); the
//! table keeps who registered, and a last-heartbeat time written lazily for listings.

use super::Db;

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
    /// 1 while the agent drains (stops taking work, lets its tries finish); 0 on registration.
    pub draining: i64,
}

pub async fn upsert_agent(db: &mut impl Db, row: &AgentRow) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = d.upsert(
        "agents (id, host, slots, queues, version, registered_at, last_heartbeat_at, state, draining)",
        "(?, ?, ?, ?, ?, ?, ?, 'alive', 0)",
        "id",
        &[
            "host",
            "slots",
            "queues",
            "version",
            "registered_at",
            "last_heartbeat_at",
            "state",
            "draining",
        ],
    );
    sqlx::query(d.sql(&sql))
        .bind(&row.id)
        .bind(&row.host)
        .bind(row.slots)
        .bind(&row.queues)
        .bind(&row.version)
        .bind(row.registered_at)
        .bind(row.last_heartbeat_at)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Writes the last heartbeat times seen (wall clock, for listings) of alive agents.
pub async fn record_heartbeats(db: &mut impl Db, seen: &[(String, i64)]) -> anyhow::Result<()> {
    let d = db.dialect();
    for (agent, at) in seen {
        sqlx::query(d.sql(
            "UPDATE agents SET last_heartbeat_at = ? WHERE id = ? AND state = 'alive' AND last_heartbeat_at < ?",
        ))
        .bind(*at)
        .bind(agent)
        .bind(*at)
        .execute(db.conn())
        .await?;
    }
    Ok(())
}

pub async fn list_agents(db: &mut impl Db) -> anyhow::Result<Vec<AgentRow>> {
    let d = db.dialect();
    Ok(sqlx::query_as(d.sql(
        "SELECT id, host, slots, queues, version, registered_at, last_heartbeat_at, state, draining FROM agents ORDER BY id",
    ))
    .fetch_all(db.conn())
    .await?)
}

/// One agent's row.
pub async fn agent_row(db: &mut impl Db, id: &str) -> anyhow::Result<Option<AgentRow>> {
    let d = db.dialect();
    Ok(sqlx::query_as(d.sql(
        "SELECT id, host, slots, queues, version, registered_at, last_heartbeat_at, state, draining FROM agents WHERE id = ?",
    ))
    .bind(id)
    .fetch_optional(db.conn())
    .await?)
}

/// Records that an alive agent drains (or no longer does), for listings.
pub async fn set_agent_draining(db: &mut impl Db, agent: &str, draining: bool) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE agents SET draining = ? WHERE id = ? AND state = 'alive'"))
        .bind(i64::from(draining))
        .bind(agent)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// alive -> dead for one agent; false if it was not alive.
pub async fn declare_agent_dead(db: &mut impl Db, agent: &str) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("UPDATE agents SET state = 'dead' WHERE id = ? AND state = 'alive'"))
        .bind(agent)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every alive agent is declared dead (standalone's restart: its one agent died with it).
pub async fn declare_all_agents_dead(db: &mut impl Db) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE agents SET state = 'dead' WHERE state = 'alive'"))
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn count_running_by_agent(
    db: &mut impl Db,
) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        d.sql("SELECT agent_id, COUNT(*) FROM attempts WHERE state = 'running' GROUP BY agent_id"),
    )
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

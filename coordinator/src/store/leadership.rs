//! Who leads: the `leader` row (the fencing token, the lease, the coordinator epoch) and the
//! `coordinators` table (every coordinator process and its address).
//!
//! The fencing token only grows: every takeover raises it by one, in the same statement that
//! checks the takeover is allowed (the lease lapsed, or a newer etcd election). Every write
//! transaction of the leader first confirms the stored token is still its own
//! ([`check_fence`]); that UPDATE also row-locks the leader row, so a takeover waits for a
//! transaction in flight and the deposed leader's next one is refused.

use sqlx::Row;

use super::Db;

/// The `leader` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRow {
    pub token: i64,
    pub epoch: i64,
    pub holder: String,
    pub lease_until: i64,
    pub elected_revision: i64,
}

pub async fn leader(db: &mut impl Db) -> anyhow::Result<LeaderRow> {
    let d = db.dialect();
    let row = sqlx::query(
        d.sql("SELECT token, epoch, holder, lease_until, elected_revision FROM leader WHERE id = 1"),
    )
    .fetch_one(db.conn())
    .await?;
    Ok(LeaderRow {
        token: row.try_get("token")?,
        epoch: row.try_get("epoch")?,
        holder: row.try_get("holder")?,
        lease_until: row.try_get("lease_until")?,
        elected_revision: row.try_get("elected_revision")?,
    })
}

/// A new term: (fencing token, coordinator epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub token: i64,
    pub epoch: i64,
}

async fn term_after_takeover(db: &mut impl Db, taken: bool) -> anyhow::Result<Option<Term>> {
    if !taken {
        return Ok(None);
    }
    let row = leader(db).await?;
    Ok(Some(Term {
        token: row.token,
        epoch: row.epoch,
    }))
}

/// Takes the lease (no etcd) if nobody holds it: it lapsed, it was released, or its holder is
/// `dead_holder` (a process known to be gone; "" for none). Raises the token and the epoch.
/// None: another coordinator holds it.
pub async fn take_lease(
    db: &mut impl Db,
    me: &str,
    until: i64,
    now: i64,
    dead_holder: &str,
) -> anyhow::Result<Option<Term>> {
    let d = db.dialect();
    let done = sqlx::query(d.sql(
        "UPDATE leader SET holder = ?, token = token + 1, epoch = epoch + 1, lease_until = ?
         WHERE id = 1 AND (lease_until < ? OR (holder = ? AND holder <> ''))",
    ))
    .bind(me)
    .bind(until)
    .bind(now)
    .bind(dead_holder)
    .execute(db.conn())
    .await?;
    term_after_takeover(db, done.rows_affected() == 1).await
}

/// Takes over after winning an etcd election of `revision`: allowed when no newer election
/// took over already, whatever the lease says (etcd decides). Raises the token and the epoch.
pub async fn take_over_elected(
    db: &mut impl Db,
    me: &str,
    revision: i64,
    until: i64,
) -> anyhow::Result<Option<Term>> {
    let d = db.dialect();
    let done = sqlx::query(d.sql(
        "UPDATE leader SET holder = ?, token = token + 1, epoch = epoch + 1, lease_until = ?, elected_revision = ?
         WHERE id = 1 AND elected_revision < ?",
    ))
    .bind(me)
    .bind(until)
    .bind(revision)
    .bind(revision)
    .execute(db.conn())
    .await?;
    term_after_takeover(db, done.rows_affected() == 1).await
}

/// Extends the lease of `token`; false when another took over.
pub async fn renew_lease(db: &mut impl Db, token: i64, until: i64) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("UPDATE leader SET lease_until = ? WHERE id = 1 AND token = ?"))
        .bind(until)
        .bind(token)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the lease of `token` at once (a clean shutdown): a standby takes over without waiting.
pub async fn release_lease(db: &mut impl Db, token: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE leader SET lease_until = 0 WHERE id = 1 AND token = ?"))
        .bind(token)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Whether `token` is still the stored one; locks the leader row for the rest of the
/// transaction, so no takeover can commit in between.
pub async fn check_fence(db: &mut impl Db, token: i64) -> anyhow::Result<bool> {
    let d = db.dialect();
    let done = sqlx::query(d.sql("UPDATE leader SET token = token WHERE id = 1 AND token = ?"))
        .bind(token)
        .execute(db.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CoordinatorRow {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: i64,
    pub last_seen_at: i64,
}

/// Records a coordinator process (at its start) or its sign of life.
pub async fn upsert_coordinator(db: &mut impl Db, row: &CoordinatorRow) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql = d.upsert(
        "coordinators (id, address, version, started_at, last_seen_at)",
        "(?, ?, ?, ?, ?)",
        "id",
        &["address", "version", "last_seen_at"],
    );
    sqlx::query(d.sql(&sql))
        .bind(&row.id)
        .bind(&row.address)
        .bind(&row.version)
        .bind(row.started_at)
        .bind(row.last_seen_at)
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn list_coordinators(db: &mut impl Db) -> anyhow::Result<Vec<CoordinatorRow>> {
    let d = db.dialect();
    Ok(sqlx::query_as(d.sql(
        "SELECT id, address, version, started_at, last_seen_at FROM coordinators ORDER BY started_at, id",
    ))
    .fetch_all(db.conn())
    .await?)
}

/// Forgets coordinators not seen since `before` (stopped or killed long ago).
pub async fn forget_coordinators(db: &mut impl Db, before: i64) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM coordinators WHERE last_seen_at < ?"))
        .bind(before)
        .execute(db.conn())
        .await?;
    Ok(())
}

pub async fn remove_coordinator(db: &mut impl Db, id: &str) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("DELETE FROM coordinators WHERE id = ?"))
        .bind(id)
        .execute(db.conn())
        .await?;
    Ok(())
}

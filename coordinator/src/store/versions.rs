//! Versions of definitions (`definition_versions`), a task's DAG and current version, and the
//! version instances were created with and tries ran.

use std::collections::HashMap;

use goflow_core::versions::Kind;
use sqlx::Row;

use super::Db;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub kind: String,
    pub id: String,
    pub version: i64,
    /// Canonical YAML (see `goflow_core::versions`).
    pub definition: String,
    pub created_at: i64,
    pub actor: String,
    pub client: String,
    pub source: String,
    /// The fields that changed from the version before, comma-separated; "" for a first one.
    pub changes: String,
}

const VERSION_COLUMNS: &str = "kind, id, version, definition, created_at, actor, client, source, changes";

pub(super) fn version_of_row(r: &sqlx::any::AnyRow) -> anyhow::Result<StoredVersion> {
    Ok(StoredVersion {
        kind: r.try_get("kind")?,
        id: r.try_get("id")?,
        version: r.try_get("version")?,
        definition: r.try_get("definition")?,
        created_at: r.try_get("created_at")?,
        actor: r.try_get("actor")?,
        client: r.try_get("client")?,
        source: r.try_get("source")?,
        changes: r.try_get("changes")?,
    })
}

/// Every version of one definition, oldest first.
pub async fn versions_of(db: &mut impl Db, kind: Kind, id: &str) -> anyhow::Result<Vec<StoredVersion>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM definition_versions WHERE kind = ? AND id = ? ORDER BY version"
    );
    let rows = sqlx::query(d.sql(&sql))
        .bind(kind.as_str())
        .bind(id)
        .fetch_all(db.conn())
        .await?;
    rows.iter().map(version_of_row).collect()
}

pub async fn version_of(
    db: &mut impl Db,
    kind: Kind,
    id: &str,
    version: i64,
) -> anyhow::Result<Option<StoredVersion>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM definition_versions WHERE kind = ? AND id = ? AND version = ?"
    );
    let row = sqlx::query(d.sql(&sql))
        .bind(kind.as_str())
        .bind(id)
        .bind(version)
        .fetch_optional(db.conn())
        .await?;
    row.as_ref().map(version_of_row).transpose()
}

/// The newest version of one definition (a deleted task keeps its versions, so a task
/// created again goes on counting from there).
pub async fn latest_version(db: &mut impl Db, kind: Kind, id: &str) -> anyhow::Result<Option<StoredVersion>> {
    let d = db.dialect();
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM definition_versions WHERE kind = ? AND id = ?
         ORDER BY version DESC LIMIT 1"
    );
    let row = sqlx::query(d.sql(&sql))
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(db.conn())
        .await?;
    row.as_ref().map(version_of_row).transpose()
}

/// Records a version; the (kind, id, version) key is unique, so two writers cannot both
/// record the same number.
pub async fn insert_version(db: &mut impl Db, v: &StoredVersion) -> anyhow::Result<()> {
    let d = db.dialect();
    let sql =
        format!("INSERT INTO definition_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    sqlx::query(d.sql(&sql))
        .bind(&v.kind)
        .bind(&v.id)
        .bind(v.version)
        .bind(&v.definition)
        .bind(v.created_at)
        .bind(&v.actor)
        .bind(&v.client)
        .bind(&v.source)
        .bind(&v.changes)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// A task's DAG and current version (kept apart from `upsert_task`, which writes the spec).
pub async fn set_task_dag_and_version(
    db: &mut impl Db,
    task: &str,
    dag: Option<&str>,
    version: i64,
) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE tasks SET dag = ?, version = ? WHERE id = ?"))
        .bind(dag)
        .bind(version)
        .bind(task)
        .execute(db.conn())
        .await?;
    Ok(())
}

/// Each task's DAG (None: none) and current version (0: none recorded yet), by id.
pub async fn task_dags_and_versions(
    db: &mut impl Db,
) -> anyhow::Result<HashMap<String, (Option<String>, i64)>> {
    let d = db.dialect();
    let rows = sqlx::query(d.sql("SELECT id, dag, version FROM tasks"))
        .fetch_all(db.conn())
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("id")?, (r.try_get("dag")?, r.try_get("version")?))))
        .collect()
}

/// The version the first try of an instance ran, when it ran one and that try's version is
/// known (tries from before versions were kept have none).
pub async fn first_try_version(db: &mut impl Db, instance_id: i64) -> anyhow::Result<Option<i64>> {
    let d = db.dialect();
    let row = sqlx::query(
        d.sql("SELECT definition_version FROM attempts WHERE instance_id = ? ORDER BY try_number LIMIT 1"),
    )
    .bind(instance_id)
    .fetch_optional(db.conn())
    .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<i64>, _>("definition_version")?,
        None => None,
    })
}

/// Whether an instance has any try at all.
pub async fn has_tries(db: &mut impl Db, instance_id: i64) -> anyhow::Result<bool> {
    let d = db.dialect();
    let row = sqlx::query(d.sql("SELECT COUNT(*) AS n FROM attempts WHERE instance_id = ?"))
        .bind(instance_id)
        .fetch_one(db.conn())
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// The version the next tries of an instance run: `Some` (set by `run --as-then`) or the
/// current definition (`None`).
pub async fn set_run_version(db: &mut impl Db, instance_id: i64, version: Option<i64>) -> anyhow::Result<()> {
    let d = db.dialect();
    sqlx::query(d.sql("UPDATE instances SET run_version = ? WHERE id = ?"))
        .bind(version)
        .bind(instance_id)
        .execute(db.conn())
        .await?;
    Ok(())
}

//! Versions of task definitions: version 1 of tasks defined before versions were kept, the
//! definition a try runs (the current one, or the one `run --as-then` pinned), and reading
//! history and diffs.

use std::collections::HashMap;

use goflow_core::versions::{self, FieldDiff, Kind};
use goflow_core::{InstanceKey, TaskSpec, dagfile};

use super::{Catalog, Engine, EngineError, Result};
use crate::store::{self, Db, InstanceRow, StoredVersion, now_ms};

/// For `run --as-then`: each instance's version to run, with that version's definition.
pub(super) type Pins = HashMap<InstanceKey, (i64, TaskSpec)>;

/// A version's definition, parsed back from its canonical text.
fn spec_of(version: &StoredVersion) -> Result<TaskSpec> {
    let source = format!("task {} version {}", version.id, version.version);
    dagfile::parse_task(&version.definition, &source)
        .map(|(spec, _)| spec)
        .map_err(|e| EngineError::Internal(anyhow::anyhow!("stored {e}")))
}

impl Engine {
    /// Records version 1 of every task that has none (tasks defined before versions were
    /// kept): done once, when a coordinator first starts on the upgraded store.
    pub(super) async fn record_first_versions(&self) -> anyhow::Result<()> {
        let mut tx = self.store.begin().await?;
        let unversioned: Vec<_> = store::load_tasks(&mut tx)
            .await?
            .into_iter()
            .filter(|t| t.version == 0)
            .collect();
        if unversioned.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for task in &unversioned {
            let version = store::latest_version(&mut tx, Kind::Task, &task.spec.id)
                .await?
                .map_or(1, |v| v.version + 1);
            store::insert_version(
                &mut tx,
                &StoredVersion {
                    kind: Kind::Task.as_str().into(),
                    id: task.spec.id.clone(),
                    version,
                    definition: versions::task_yaml(&task.spec, task.dag.as_deref()),
                    created_at: now,
                    actor: "goflow".into(),
                    client: "upgrade".into(),
                    source: "the definition stored before versions were kept".into(),
                    changes: String::new(),
                },
            )
            .await?;
            store::set_task_dag_and_version(&mut tx, &task.spec.id, task.dag.as_deref(), version).await?;
        }
        tx.commit().await?;
        tracing::info!(
            "recorded version 1 of {} defined before versions were kept",
            goflow_core::plural(unversioned.len(), "task")
        );
        Ok(())
    }

    /// The definition a try of `row` runs, and its version: the one `run --as-then` pinned,
    /// or the task's current one.
    pub(super) async fn spec_to_run(
        &self,
        db: &mut impl Db,
        catalog: &Catalog,
        row: &InstanceRow,
    ) -> Result<(TaskSpec, i64)> {
        if let Some(pinned) = row.run_version {
            let version = store::version_of(db, Kind::Task, &row.task_id, pinned)
                .await?
                .ok_or_else(|| {
                    EngineError::NotFound(format!("task {:?} has no version {pinned}", row.task_id))
                })?;
            return Ok((spec_of(&version)?, pinned));
        }
        // From the claim's own snapshot of the definitions: no second lookup, one copy.
        let task = catalog.require(&row.task_id)?;
        Ok((task.spec.clone(), task.version))
    }

    /// For `run --as-then`: the version each of `keys` ran first. Refused, naming the
    /// instance, when one never ran (or ran before versions were kept).
    pub(super) async fn as_then_pins(&self, keys: &[InstanceKey]) -> Result<Pins> {
        let mut conn = self.store.read().await?;
        let rows = store::instances_by_keys(&mut conn, keys.iter()).await?;
        let mut specs: HashMap<(String, i64), TaskSpec> = HashMap::new();
        let mut pins = Pins::new();
        for key in keys {
            let never_ran = || {
                EngineError::Invalid(format!(
                    "{key} never ran, so it has no version to run again: run it without --as-then; nothing was changed"
                ))
            };
            let row = rows.get(key).ok_or_else(never_ran)?;
            let Some(version) = store::first_try_version(&mut conn, row.id).await? else {
                if store::has_tries(&mut conn, row.id).await? {
                    return Err(EngineError::Invalid(format!(
                        "{key} first ran before versions were kept, so its version is unknown: \
                         run it without --as-then; nothing was changed"
                    )));
                }
                return Err(never_ran());
            };
            let spec_key = (key.task.clone(), version);
            if !specs.contains_key(&spec_key) {
                let stored = store::version_of(&mut conn, Kind::Task, &key.task, version)
                    .await?
                    .ok_or_else(|| {
                        EngineError::NotFound(format!("task {:?} has no version {version}", key.task))
                    })?;
                specs.insert(spec_key.clone(), spec_of(&stored)?);
            }
            pins.insert(key.clone(), (version, specs[&spec_key].clone()));
        }
        Ok(pins)
    }

    /// Every version of a task, oldest first (a deleted task's too).
    pub async fn task_versions(&self, task: &str) -> Result<Vec<StoredVersion>> {
        let mut conn = self.store.read().await?;
        let versions = store::versions_of(&mut conn, Kind::Task, task).await?;
        if versions.is_empty() {
            return Err(EngineError::NotFound(format!(
                "unknown task {task:?} (it has no versions)"
            )));
        }
        Ok(versions)
    }

    /// One version of a task; `None`: the current (newest) one.
    pub async fn task_version(&self, task: &str, version: Option<i64>) -> Result<StoredVersion> {
        let versions = self.task_versions(task).await?;
        pick(&versions, task, version).cloned()
    }

    /// The fields that differ from version `from` to version `to` of a task, with the two
    /// versions compared. Default: the newest two (or the only one against itself).
    pub async fn diff_task_versions(
        &self,
        task: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<(StoredVersion, StoredVersion, Vec<FieldDiff>)> {
        let all = self.task_versions(task).await?;
        let newest = all.last().expect("not empty").version;
        let (from, to) = match (from, to) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            // One version named: from it to the current one.
            (Some(a), None) => (Some(a), Some(newest)),
            (None, _) => (Some((newest - 1).max(all[0].version)), Some(newest)),
        };
        let old = pick(&all, task, from)?.clone();
        let new = pick(&all, task, to)?.clone();
        let diff = versions::field_diff(&old.definition, &new.definition);
        Ok((old, new, diff))
    }
}

fn pick<'a>(versions: &'a [StoredVersion], task: &str, version: Option<i64>) -> Result<&'a StoredVersion> {
    match version {
        None => Ok(versions.last().expect("not empty")),
        Some(n) => versions.iter().find(|v| v.version == n).ok_or_else(|| {
            let newest = versions.last().map_or(0, |v| v.version);
            EngineError::NotFound(format!(
                "task {task:?} has no version {n} (its versions are 1..{newest})"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{RecordingQueue, harness};
    use super::*;
    use crate::engine::EngineSettings;

    #[tokio::test]
    async fn tasks_stored_before_versions_get_version_1_when_an_engine_starts() {
        let h = harness("dag: shop\ntasks:\n  - id: a\n    command: \"true\"\n").await;
        assert_eq!(h.engine.require_task("a").unwrap().version, 1);
        // As a store migrated from before versions were kept: no versions, version 0.
        let mut tx = h.engine.store().begin().await.unwrap();
        sqlx::query("DELETE FROM definition_versions")
            .execute(tx.conn())
            .await
            .unwrap();
        sqlx::query("UPDATE tasks SET version = 0")
            .execute(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let store = h.engine.store().clone();
        let epoch = store.next_epoch().await.unwrap();
        let engine = Engine::new(
            store,
            Arc::new(RecordingQueue::default()),
            EngineSettings::default(),
            "standalone",
            epoch,
            Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(engine.require_task("a").unwrap().version, 1);
        let versions = engine.task_versions("a").await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!((versions[0].version, versions[0].client.as_str()), (1, "upgrade"));
        assert!(
            versions[0].definition.contains("dag: shop"),
            "{}",
            versions[0].definition
        );
        // Unknown versions are named.
        let err = engine.task_version("a", Some(4)).await.unwrap_err().to_string();
        assert!(err.contains("no version 4"), "{err}");
    }
}

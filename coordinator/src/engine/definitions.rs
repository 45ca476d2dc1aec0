//! Task definitions: apply a DAG document, pause and unpause, and the in-memory catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use goflow_core::{Dag, TaskSpec, dagfile};

use super::{Caller, Catalog, Engine, EngineError, Result};
use crate::store::{self, StoredTask, now_ms};

/// What an apply did (or, with dry_run, would do), by task id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Engine {
    pub(super) async fn reload_catalog(&self) -> anyhow::Result<()> {
        let mut conn = self.store.read().await?;
        let tasks = store::load_tasks(&mut conn).await?;
        drop(conn);
        let dag = Dag::new(tasks.iter().map(|t| t.spec.clone()))
            .map_err(|e| anyhow::anyhow!("stored tasks do not form a valid DAG: {e}"))?;
        let tasks = tasks.into_iter().map(|t| (t.spec.id.clone(), t)).collect();
        *self.catalog.write().unwrap() = Arc::new(Catalog { dag, tasks });
        Ok(())
    }

    pub fn require_task(&self, task: &str) -> Result<StoredTask> {
        self.catalog()
            .tasks
            .get(task)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("unknown task {task:?}")))
    }

    /// Creates or updates the tasks of a DAG document in one transaction, or changes nothing.
    pub async fn apply(
        &self,
        document: &str,
        source_name: &str,
        dry_run: bool,
        caller: &Caller,
    ) -> Result<ApplyOutcome> {
        let source_name = if source_name.is_empty() {
            "document"
        } else {
            source_name
        };
        if document.len() > goflow_proto::MAX_DOCUMENT_BYTES {
            return Err(EngineError::Invalid(format!(
                "{source_name}: the DAG file is {}; the limit is {}",
                goflow_proto::megabytes(document.len()),
                goflow_proto::megabytes(goflow_proto::MAX_DOCUMENT_BYTES)
            )));
        }
        let specs = parse_off_workers(document, source_name)
            .await?
            .map_err(|e| EngineError::Invalid(e.to_string()))?
            .tasks;
        // Validate against the tasks as stored, inside the write transaction: two applies at
        // once are serialized, so they can never store a cycle between them.
        let mut tx = self.store.begin().await?;
        let stored: BTreeMap<String, StoredTask> = store::load_tasks(&mut tx)
            .await?
            .into_iter()
            .map(|t| (t.spec.id.clone(), t))
            .collect();
        let mut merged: BTreeMap<String, TaskSpec> = stored
            .iter()
            .map(|(id, t)| (id.clone(), t.spec.clone()))
            .collect();
        let mut outcome = ApplyOutcome::default();
        let mut changed = vec![];
        for spec in &specs {
            match stored.get(&spec.id) {
                None => outcome.created.push(spec.id.clone()),
                Some(old) if old.spec.same_definition(spec) => {
                    outcome.unchanged.push(spec.id.clone());
                    continue;
                }
                Some(_) => outcome.updated.push(spec.id.clone()),
            }
            merged.insert(spec.id.clone(), spec.clone());
            changed.push(spec.clone());
        }
        // Graph checks over tens of thousands of tasks are CPU work: off the async workers.
        let dag = tokio::task::spawn_blocking(move || Dag::new(merged.into_values()))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|e| EngineError::Invalid(format!("{source_name}: {e}")))?;
        if dry_run || changed.is_empty() {
            return Ok(outcome);
        }
        let now = now_ms();
        for spec in &changed {
            let schedule_changed = stored
                .get(&spec.id)
                .is_none_or(|old| old.spec.schedule != spec.schedule || old.spec.timezone != spec.timezone);
            store::upsert_task(&mut tx, spec, now, schedule_changed).await?;
        }
        for spec in &changed {
            store::set_dependencies(&mut tx, spec).await?;
        }
        // A changed definition (an upstream dropped, a later start_day) may leave waiting
        // instances, of the changed tasks or downstream of them, with nothing left to wait for:
        // one sweep over every waiting instance queues them, however many tasks changed.
        self.joins.clear();
        let paused = |task: &str| stored.get(task).is_some_and(|t| t.paused);
        let dispatches = self.queue_ready_waiting(&mut tx, &dag, None, paused, now).await?;
        let detail = format!(
            "created [{}] updated [{}]",
            outcome.created.join(", "),
            outcome.updated.join(", ")
        );
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "apply",
            source_name,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.reload_catalog().await?;
        self.push(dispatches).await;
        self.wake_cron.notify_one();
        self.changed();
        Ok(outcome)
    }

    /// Pausing keeps new instances of a task from being queued; unpausing queues those ready.
    pub async fn set_paused(&self, task: &str, paused: bool, caller: &Caller) -> Result<StoredTask> {
        let catalog = self.catalog();
        catalog.require(task)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        store::set_paused(&mut tx, task, paused, now).await?;
        let action = if paused { "pause" } else { "unpause" };
        store::record_operation(&mut tx, &caller.actor, &caller.client, action, task, "", now).await?;
        // In the same transaction, so a crash cannot leave an unpaused task's ready instances
        // waiting.
        self.joins.clear();
        let dispatches = if paused {
            vec![]
        } else {
            self.queue_ready_waiting(&mut tx, &catalog.dag, Some(task), |_| false, now)
                .await?
        };
        tx.commit().await?;
        self.reload_catalog().await?;
        self.push(dispatches).await;
        self.changed();
        self.require_task(task)
    }
}

/// Parses a DAG document on the blocking pool: a document of many thousand tasks takes a
/// while to parse, and on an async worker it would hold up heartbeats and every other call.
pub(super) async fn parse_off_workers(
    document: &str,
    source_name: &str,
) -> Result<std::result::Result<dagfile::DagFile, dagfile::DagFileError>> {
    let (document, source_name) = (document.to_string(), source_name.to_string());
    Ok(
        tokio::task::spawn_blocking(move || dagfile::parse(&document, &source_name))
            .await
            .map_err(anyhow::Error::from)?,
    )
}

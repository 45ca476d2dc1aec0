//! Task definitions: apply a DAG document, pause and unpause, and the in-memory catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use goflow_core::versions::{self, Kind};
use goflow_core::{Calendar, Dag, TaskSpec, dagfile};

use super::{Caller, Catalog, Engine, EngineError, Result};
use crate::store::{self, StoredTask, StoredVersion, now_ms};

/// What an apply did (or, with dry_run, would do), by task id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// Pools the document creates or whose slots it changes.
    pub pools: Vec<String>,
    /// Calendars created or changed.
    pub calendars: Vec<String>,
    /// Tasks of the file's DAG that it no longer lists, removed by `--prune`.
    pub deleted: Vec<String>,
    /// The version each created or updated task now has (or, dry run, would have).
    pub versions: BTreeMap<String, i64>,
    /// The file's `dag: NAME`.
    pub dag: Option<String>,
}

/// How an apply treats the stored tasks of the file's DAG that it does not list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    pub dry_run: bool,
    /// Delete them (the file must name its DAG).
    pub prune: bool,
}

impl Engine {
    pub(super) async fn reload_catalog(&self) -> anyhow::Result<()> {
        let mut conn = self.store.read().await?;
        let tasks = store::load_tasks(&mut conn).await?;
        let calendars = store::load_calendars(&mut conn).await?;
        drop(conn);
        // Tens of thousands of tasks are CPU work: off the async workers, so that other calls
        // keep answering while a large apply finishes.
        let (dag, tasks) = tokio::task::spawn_blocking(move || {
            let dag = Dag::with_calendars(tasks.iter().map(|t| t.spec.clone()), calendars)
                .map_err(|e| anyhow::anyhow!("stored tasks do not form a valid DAG: {e}"))?;
            let tasks: BTreeMap<String, StoredTask> =
                tasks.into_iter().map(|t| (t.spec.id.clone(), t)).collect();
            anyhow::Ok((dag, tasks))
        })
        .await??;
        *self.catalog.write().unwrap() = Arc::new(Catalog {
            dag,
            tasks,
            limited: Default::default(),
        });
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
        let options = ApplyOptions {
            dry_run,
            prune: false,
        };
        self.apply_with(document, source_name, options, caller).await
    }

    /// [`Engine::apply`], and with `prune` the removal of the tasks of the file's DAG that it
    /// no longer lists, in the same transaction. Every task created or changed (its
    /// definition, or the DAG it belongs to) gets a new version.
    pub async fn apply_with(
        &self,
        document: &str,
        source_name: &str,
        options: ApplyOptions,
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
        let file = parse_off_workers(document, source_name)
            .await?
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if options.prune && file.dag.is_none() {
            return Err(EngineError::Invalid(format!(
                "{source_name}: --prune needs the file to name its DAG (a top-level `dag: NAME`); nothing was changed"
            )));
        }
        let specs = file.tasks;
        let dag_name = file.dag;
        // Validate against the tasks as stored, inside the write transaction: two applies at
        // once are serialized, so they can never store a cycle between them.
        let mut tx = self.store.begin().await?;
        let stored: BTreeMap<String, StoredTask> = store::load_tasks(&mut tx)
            .await?
            .into_iter()
            .map(|t| (t.spec.id.clone(), t))
            .collect();
        check_owners(&stored, &specs, dag_name.as_deref(), source_name)?;
        let mut merged: BTreeMap<String, TaskSpec> = stored
            .iter()
            .map(|(id, t)| (id.clone(), t.spec.clone()))
            .collect();
        let mut calendars: BTreeMap<String, Calendar> = store::load_calendars(&mut tx)
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let mut outcome = ApplyOutcome {
            dag: dag_name.clone(),
            ..Default::default()
        };
        let mut changed_calendars = vec![];
        for calendar in file.calendars {
            if calendars.get(&calendar.id) != Some(&calendar) {
                outcome.calendars.push(calendar.id.clone());
                calendars.insert(calendar.id.clone(), calendar.clone());
                changed_calendars.push(calendar);
            }
        }
        let mut changed = vec![];
        for spec in &specs {
            match stored.get(&spec.id) {
                None => outcome.created.push(spec.id.clone()),
                Some(old) if old.spec.same_definition(spec) && old.dag == dag_name => {
                    outcome.unchanged.push(spec.id.clone());
                    continue;
                }
                Some(_) => outcome.updated.push(spec.id.clone()),
            }
            merged.insert(spec.id.clone(), spec.clone());
            changed.push(spec.clone());
        }
        let schedule_start = self.settings.schedule_clock.now()?.timestamp_millis();
        if options.prune {
            let listed: BTreeSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
            outcome.deleted = stored
                .values()
                .filter(|t| t.dag == dag_name && !listed.contains(t.spec.id.as_str()))
                .map(|t| t.spec.id.clone())
                .collect();
            check_prune(&merged, &outcome.deleted, dag_name.as_deref().unwrap_or_default())?;
            for id in &outcome.deleted {
                merged.remove(id);
            }
        }
        // Graph checks over tens of thousands of tasks are CPU work: off the async workers.
        let calendars: Vec<Calendar> = calendars.into_values().collect();
        let dag = tokio::task::spawn_blocking(move || Dag::with_calendars(merged.into_values(), calendars))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|e| EngineError::Invalid(format!("{source_name}: {e}")))?;
        if !outcome.deleted.is_empty()
            && let Some(active) = store::first_active_instance(&mut tx, &outcome.deleted).await?
        {
            return Err(EngineError::Conflict(format!(
                "{source_name}: cannot prune while {active} is not finished: kill it first; nothing was changed"
            )));
        }
        // The new versions: the next number after the newest kept (a deleted task's versions
        // stay, so one created again goes on counting).
        let now = now_ms();
        let changed_ids: Vec<&str> = changed.iter().map(|s| s.id.as_str()).collect();
        let mut previous = store::latest_versions(&mut tx, Kind::Task, &changed_ids).await?;
        // Canonical YAML and field diffs of thousands of tasks: CPU work, off the async workers.
        let new_versions = {
            let work: Vec<(TaskSpec, bool, Option<StoredVersion>)> = changed
                .iter()
                .map(|spec| {
                    // A task created again (its old versions kept) lists no changed fields.
                    (
                        spec.clone(),
                        stored.contains_key(&spec.id),
                        previous.remove(&spec.id),
                    )
                })
                .collect();
            let (dag_name, caller, source_name) = (dag_name.clone(), caller.clone(), source_name.to_string());
            tokio::task::spawn_blocking(move || {
                work.into_iter()
                    .map(|(spec, update, previous)| {
                        let definition = versions::task_yaml(&spec, dag_name.as_deref());
                        next_version(
                            (Kind::Task, &spec.id, definition),
                            previous.as_ref(),
                            update,
                            &caller,
                            &source_name,
                            now,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(anyhow::Error::from)?
        };
        for version in &new_versions {
            outcome.versions.insert(version.id.clone(), version.version);
        }
        // Pools are stored in this same transaction; a task's pool must be defined by the
        // document or already stored. A pool the document does not list stays as it is.
        let stored_pools = store::load_pools(&mut tx).await?;
        let pools = Self::pools_to_write(&file.pools, &stored_pools, &specs, source_name)?;
        outcome.pools = pools.iter().map(|p| p.id.clone()).collect();
        if options.dry_run
            || (changed.is_empty()
                && outcome.deleted.is_empty()
                && changed_calendars.is_empty()
                && pools.is_empty())
        {
            return Ok(outcome);
        }
        for calendar in &changed_calendars {
            store::upsert_calendar(&mut tx, calendar, now).await?;
        }
        for pool in &pools {
            store::upsert_pool(&mut tx, pool, now).await?;
        }
        // Every write of the tasks is batched: a 20,000-task apply is a few hundred statements.
        let writes: Vec<store::TaskWrite> = changed
            .iter()
            .zip(&new_versions)
            .map(|(spec, version)| store::TaskWrite {
                spec,
                dag: dag_name.as_deref(),
                version: version.version,
                schedule_changed: stored.get(&spec.id).is_none_or(|old| {
                    old.spec.schedule != spec.schedule || old.spec.timezone != spec.timezone
                }),
            })
            .collect();
        // Fires held while paused belong to the old schedule (or to a deleted task of the
        // same id): not run under the new one.
        let dropped = store::write_tasks(
            &mut tx,
            &writes,
            now,
            schedule_start,
            "the schedule changed while the task was paused",
        )
        .await?;
        for (task, n) in dropped {
            tracing::info!(
                "task {task}: {} held while paused are skipped: its schedule changed",
                goflow_core::plural(n as usize, "fire")
            );
        }
        store::insert_versions(&mut tx, &new_versions).await?;
        // Calendars and pools are versioned like tasks: a new version for each one this apply
        // creates or changes.
        let others = changed_calendars
            .iter()
            .map(|c| (Kind::Calendar, c.id.clone(), versions::calendar_yaml(c)))
            .chain(
                pools
                    .iter()
                    .map(|p| (Kind::Pool, p.id.clone(), versions::pool_yaml(p))),
            );
        for (kind, id, definition) in others {
            let previous = store::latest_version(&mut tx, kind, &id).await?;
            let version = next_version(
                (kind, &id, definition),
                previous.as_ref(),
                true,
                caller,
                source_name,
                now,
            );
            store::insert_version(&mut tx, &version).await?;
        }
        store::delete_task_definitions(&mut tx, &outcome.deleted).await?;
        // A changed definition (an upstream dropped, a later start_day) may leave waiting
        // instances, of the changed tasks or downstream of them, with nothing left to wait for:
        // one sweep over every waiting instance queues them, however many tasks changed.
        self.joins.clear();
        let paused = |task: &str| stored.get(task).is_some_and(|t| t.paused);
        let dispatches = self.queue_ready_waiting(&mut tx, &dag, None, paused, now).await?;
        let versions_text = outcome
            .versions
            .iter()
            .map(|(id, v)| format!("{id} v{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut detail = format!(
            "created [{}] updated [{}] versions [{versions_text}]",
            outcome.created.join(", "),
            outcome.updated.join(", ")
        );
        if !outcome.calendars.is_empty() {
            detail.push_str(&format!(" calendars [{}]", outcome.calendars.join(", ")));
        }
        if let Some(name) = &dag_name {
            detail.push_str(&format!(" dag {name}"));
        }
        if !outcome.deleted.is_empty() {
            detail.push_str(&format!(" pruned [{}]", outcome.deleted.join(", ")));
        }
        if !pools.is_empty() {
            let slots: Vec<String> = pools.iter().map(|p| format!("{}={}", p.id, p.slots)).collect();
            detail.push_str(&format!(" pools [{}]", slots.join(", ")));
        }
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
        if !pools.is_empty() {
            // More slots (or a pool defined at last): what its tasks held back may start.
            self.offer_held().await?;
        }
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
        // Fires held while it was paused are decided now, by its catchup policy.
        self.wake_cron.notify_one();
        self.changed();
        self.require_task(task)
    }
}

/// The version after `previous` (1 without one) of a definition, with the fields that changed
/// since `previous` when `update` (a first definition, or one created again, lists none).
fn next_version(
    (kind, id, definition): (Kind, &str, String),
    previous: Option<&StoredVersion>,
    update: bool,
    caller: &Caller,
    source_name: &str,
    now: i64,
) -> StoredVersion {
    let changes = match previous {
        Some(prev) if update => versions::summary(&versions::field_diff(&prev.definition, &definition)),
        _ => String::new(),
    };
    StoredVersion {
        kind: kind.as_str().into(),
        id: id.to_string(),
        version: previous.map_or(1, |v| v.version + 1),
        definition,
        created_at: now,
        actor: caller.actor.clone(),
        client: caller.client.clone(),
        source: source_name.to_string(),
        changes,
    }
}

/// A task belongs to the DAG whose file defined it: a file naming another DAG, or none, may
/// not take it over. Every clash is named, with both DAGs.
fn check_owners(
    stored: &BTreeMap<String, StoredTask>,
    specs: &[TaskSpec],
    dag: Option<&str>,
    source_name: &str,
) -> Result<()> {
    let clashes: Vec<String> = specs
        .iter()
        .filter_map(|spec| {
            let owner = stored.get(&spec.id)?.dag.as_deref()?;
            if Some(owner) == dag {
                return None;
            }
            Some(match dag {
                Some(dag) => format!("task {:?} belongs to DAG {owner:?}, not to DAG {dag:?}", spec.id),
                None => format!(
                    "task {:?} belongs to DAG {owner:?} and this file names no DAG",
                    spec.id
                ),
            })
        })
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    Err(EngineError::Conflict(format!(
        "{source_name}: {} (a task belongs to one DAG: change it in that DAG's file, or delete it \
         there first); nothing was changed",
        clashes.join("; ")
    )))
}

/// Pruning follows the rules of deleting: refused while a task that stays depends on one
/// that would go.
fn check_prune(merged: &BTreeMap<String, TaskSpec>, doomed: &[String], dag: &str) -> Result<()> {
    let doomed: BTreeSet<&str> = doomed.iter().map(String::as_str).collect();
    let mut blockers: Vec<String> = merged
        .values()
        .filter(|t| !doomed.contains(t.id.as_str()))
        .flat_map(|t| {
            t.depends_on
                .iter()
                .filter(|d| doomed.contains(d.task.as_str()))
                .map(|d| format!("{} depends on {}", t.id, d.task))
        })
        .collect();
    if blockers.is_empty() {
        return Ok(());
    }
    blockers.sort();
    blockers.dedup();
    Err(EngineError::Conflict(format!(
        "cannot prune DAG {dag:?}: {} (prune those tasks too, or change them first); nothing was changed",
        blockers.join(", ")
    )))
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

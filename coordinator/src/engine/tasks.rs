//! Task definitions beyond apply: deleting them, previewing a run without changing anything,
//! and the field-by-field changes an apply would make (for the web UI and goflowctl).

use std::collections::BTreeSet;

use goflow_core::{Dag, InstanceKey, InstanceState, TaskSpec, dagfile};

use super::{Caller, Engine, EngineError, Result, RunPlan};
use crate::store::{self, now_ms};

/// One field of a task that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub task: String,
    pub field: String,
    pub old_value: String,
    pub new_value: String,
}

/// What a run would cover, without running: each instance key, with the existing instance's
/// id and state when there is one.
pub struct RunPreview {
    pub instances: Vec<(InstanceKey, Option<(i64, InstanceState)>)>,
}

impl Engine {
    /// The instances `plan` would run, computed exactly as `run` computes them.
    pub async fn preview_run(&self, plan: &RunPlan) -> Result<RunPreview> {
        let catalog = self.catalog();
        let (keys, _) = super::runs::run_keys(&catalog, plan)?;
        if plan.as_then {
            // The same refusal as the run itself (an instance that never ran).
            self.as_then_pins(&keys).await?;
        }
        let mut conn = self.store().read().await?;
        let existing = store::instances_by_keys(&mut conn, keys.iter()).await?;
        Ok(RunPreview {
            instances: keys
                .into_iter()
                .map(|key| {
                    let found = existing.get(&key).map(|row| (row.id, row.state));
                    (key, found)
                })
                .collect(),
        })
    }

    /// Deletes task definitions in one transaction. Refused, naming the culprit, while a task
    /// that stays depends on one of them, or while one of them has an instance queued, running
    /// or waiting to retry. Their finished instances, tries and logs stay readable.
    pub async fn delete_tasks(&self, ids: &[String], dry_run: bool, caller: &Caller) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Err(EngineError::Invalid("name at least one task to delete".into()));
        }
        let catalog = self.catalog();
        let doomed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        for id in &doomed {
            catalog.require(id)?;
        }
        let mut blockers = vec![];
        for id in &doomed {
            for dependent in catalog.dag.downstreams(id) {
                if !doomed.contains(dependent.task.as_str()) {
                    blockers.push(format!("{} depends on {id}", dependent.task));
                }
            }
        }
        if !blockers.is_empty() {
            blockers.sort();
            blockers.dedup();
            return Err(EngineError::Conflict(format!(
                "cannot delete: {} (delete those tasks in the same request, or change them first)",
                blockers.join(", ")
            )));
        }
        let doomed: Vec<String> = doomed.into_iter().map(str::to_string).collect();
        let mut tx = self.store.begin().await?;
        if let Some(active) = store::first_active_instance(&mut tx, &doomed).await? {
            return Err(EngineError::Conflict(format!(
                "cannot delete while {active} is not finished: kill it first"
            )));
        }
        // The remaining definitions must still form a valid DAG (they do when no one depends
        // on the deleted tasks; checked so that a stale catalog can never store a broken one).
        let remaining = store::load_tasks(&mut tx)
            .await?
            .into_iter()
            .filter(|t| !doomed.contains(&t.spec.id))
            .map(|t| t.spec);
        let calendars = store::load_calendars(&mut tx).await?;
        Dag::with_calendars(remaining, calendars)
            .map_err(|e| EngineError::Conflict(format!("cannot delete: {e}")))?;
        if dry_run {
            return Ok(doomed);
        }
        store::delete_task_definitions(&mut tx, &doomed).await?;
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "delete_task",
            &doomed.join(","),
            "",
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.joins.clear();
        self.reload_catalog().await?;
        self.wake_cron.notify_one();
        self.changed();
        Ok(doomed)
    }

    /// For each task of `document` that exists and differs, every field that would change.
    /// A document that does not parse has no changes (apply reports its error).
    pub async fn definition_changes(&self, document: &str, source_name: &str) -> Vec<FieldChange> {
        let Ok(Ok(dagfile::DagFile { tasks: specs, .. })) =
            super::definitions::parse_off_workers(document, source_name).await
        else {
            return vec![];
        };
        let catalog = self.catalog();
        specs
            .iter()
            .filter_map(|new| Some((catalog.tasks.get(&new.id)?, new)))
            .flat_map(|(old, new)| {
                spec_changes(&old.spec, new)
                    .into_iter()
                    .map(|(field, old_value, new_value)| FieldChange {
                        task: new.id.clone(),
                        field: field.to_string(),
                        old_value,
                        new_value,
                    })
            })
            .collect()
    }
}

/// The fields of a task that differ, as the DAG document names and writes them.
pub fn spec_changes(old: &TaskSpec, new: &TaskSpec) -> Vec<(&'static str, String, String)> {
    fn duration(d: Option<std::time::Duration>) -> String {
        d.map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_default()
    }
    // A set: the order of `depends_on` means nothing.
    fn dependencies(spec: &TaskSpec) -> String {
        let mut spec = spec.clone();
        spec.normalize_dependencies();
        spec.depends_on
            .iter()
            .map(|d| match d.day_offset {
                0 => d.task.clone(),
                offset => format!("{} ({offset}d)", d.task),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
    let fields: Vec<(&'static str, String, String)> = vec![
        ("command", old.command.clone(), new.command.clone()),
        (
            "schedule",
            old.schedule.clone().unwrap_or_default(),
            new.schedule.clone().unwrap_or_default(),
        ),
        ("timezone", old.timezone.clone(), new.timezone.clone()),
        (
            "day_offset",
            old.day_offset.to_string(),
            new.day_offset.to_string(),
        ),
        (
            "retries",
            old.retries.map(|r| r.to_string()).unwrap_or_default(),
            new.retries.map(|r| r.to_string()).unwrap_or_default(),
        ),
        (
            "retry_delay",
            duration(old.retry_delay),
            duration(new.retry_delay),
        ),
        ("timeout", duration(old.timeout), duration(new.timeout)),
        ("priority", old.priority.to_string(), new.priority.to_string()),
        ("queue", old.queue.clone(), new.queue.clone()),
        (
            "start_day",
            old.start_day.map(|d| d.compact()).unwrap_or_default(),
            new.start_day.map(|d| d.compact()).unwrap_or_default(),
        ),
        ("description", old.description.clone(), new.description.clone()),
        ("depends_on", dependencies(old), dependencies(new)),
        (
            "expected_duration",
            duration(old.expected_duration),
            duration(new.expected_duration),
        ),
        (
            "deadline",
            old.deadline.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            new.deadline.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        ),
        ("catchup", old.catchup.to_string(), new.catchup.to_string()),
        (
            "pool",
            old.pool.clone().unwrap_or_default(),
            new.pool.clone().unwrap_or_default(),
        ),
        (
            "max_active",
            old.max_active.map(|n| n.to_string()).unwrap_or_default(),
            new.max_active.map(|n| n.to_string()).unwrap_or_default(),
        ),
    ];
    fields.into_iter().filter(|(_, a, b)| a != b).collect()
}

#[cfg(test)]
mod tests {
    use goflow_core::TaskSpec;

    use super::spec_changes;

    #[test]
    fn only_changed_fields_are_listed_as_the_document_writes_them() {
        let old = TaskSpec::new("load", "load.sh").after("extract", 0);
        let mut new = old.clone().after("load", -1);
        new.command = "load.sh --fast".into();
        new.timeout = Some(std::time::Duration::from_secs(600));
        new.catchup = goflow_core::CatchUp::None;
        let changes = spec_changes(&old, &new);
        assert_eq!(
            changes,
            vec![
                ("command", "load.sh".into(), "load.sh --fast".into()),
                ("timeout", String::new(), "10m".into()),
                ("depends_on", "extract".into(), "extract, load (-1d)".into()),
                ("catchup", "latest".into(), "none".into()),
            ]
        );
        assert!(spec_changes(&old, &old).is_empty());
    }

    #[test]
    fn the_order_of_depends_on_is_no_change() {
        let ab = TaskSpec::new("load", "x").after("a", 0).after("b", -1);
        let ba = TaskSpec::new("load", "x").after("b", -1).after("a", 0);
        assert!(spec_changes(&ab, &ba).is_empty());
        assert!(ab.same_definition(&ba));
        let ac = TaskSpec::new("load", "x").after("a", 0).after("c", -1);
        assert!(!ab.same_definition(&ac));
    }
}

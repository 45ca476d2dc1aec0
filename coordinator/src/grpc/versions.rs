//! Task versions on the wire: history, one version, diffs, and what `run --as-then` says.

use goflow_core::versions::FieldDiff;
use goflow_proto as pb;
use tonic::Status;

use super::Api;
use crate::store::{InstanceRow, StoredVersion};

impl Api {
    /// A stored version, marked current when it is the task's version now.
    pub(super) fn version_pb(&self, v: StoredVersion) -> pb::TaskVersion {
        let current = self
            .engine
            .catalog()
            .tasks
            .get(&v.id)
            .is_some_and(|t| t.version == v.version);
        pb::TaskVersion {
            task: v.id,
            version: v.version,
            created_at: v.created_at,
            actor: v.actor,
            client: v.client,
            source: v.source,
            changes: v.changes,
            definition: v.definition,
            current,
        }
    }
}

/// 0: not given; a negative number is refused, naming the field.
pub(super) fn version_field(field: &str, value: i64) -> Result<Option<i64>, Status> {
    match value {
        0 => Ok(None),
        n if n < 0 => Err(Status::invalid_argument(format!(
            "{field} {n}: versions are numbered from 1"
        ))),
        n => Ok(Some(n)),
    }
}

pub(super) fn diff_pb(
    task: &str,
    old: &StoredVersion,
    new: &StoredVersion,
    diff: Vec<FieldDiff>,
) -> pb::DiffTaskVersionsResponse {
    pb::DiffTaskVersionsResponse {
        task: task.to_string(),
        from_version: old.version,
        to_version: new.version,
        changes: diff
            .into_iter()
            .map(|d| pb::FieldChange {
                task: task.to_string(),
                field: d.field,
                old_value: d.old_value,
                new_value: d.new_value,
            })
            .collect(),
    }
}

/// `; as then: load@20260101 runs version 1, ...` (run --as-then says which version each
/// instance runs).
pub(super) fn as_then_note(rows: &[InstanceRow]) -> String {
    let each: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{} runs version {}", r.key(), r.run_version?)))
        .collect();
    if each.is_empty() {
        return String::new();
    }
    format!(", as then: {}", each.join(", "))
}

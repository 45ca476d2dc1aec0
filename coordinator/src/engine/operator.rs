//! What an operator does to instances beyond running them: kill, mark success (the seed's
//! "force pass"), delete.

use std::collections::HashSet;

use goflow_core::state::{Event, transition};
use goflow_core::{InstanceKey, InstanceState, Period};

use super::agents::AgentCommand;
use super::{CHUNK, Caller, Engine, EngineError, Result, RunPlan, check_range};
use crate::store::{self, InstanceRow, now_ms};

impl Engine {
    /// Sets instances to success without running them (recorded as forced); with `down`, the
    /// same-day downstream closure too. Releases their downstream.
    pub async fn mark_success(
        &self,
        key: &InstanceKey,
        down: bool,
        caller: &Caller,
    ) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        catalog.require(&key.task)?;
        let keys = if down {
            catalog.dag.downstream_closure(key, (key.period, key.period))
        } else {
            vec![key.clone()]
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut rows = vec![];
        let note = format!("marked success by {}", caller.actor);
        for k in &keys {
            let spec_k = &catalog.tasks[&k.task].spec;
            let (row, _) =
                store::ensure_instance(&mut tx, k, spec_k, self.retries_of(spec_k) + 1, now).await?;
            let from = row.state;
            transition(from, Event::MarkSuccess).map_err(|e| {
                EngineError::Conflict(format!("{k}: {e}; kill it first. Nothing was changed"))
            })?;
            if (from != InstanceState::Success || !row.forced)
                && !store::operator_set_state(
                    &mut tx,
                    row.id,
                    from,
                    InstanceState::Success,
                    Some(&caller.actor),
                    &note,
                    now,
                )
                .await?
            {
                return Err(EngineError::Conflict(format!(
                    "{k} changed meanwhile; nothing was changed, try again"
                )));
            }
            rows.push(row);
        }
        let mut dispatches = vec![];
        for k in &keys {
            dispatches.extend(self.release_downstream(&mut tx, &catalog, k, now).await?);
        }
        let detail = if down { "--down" } else { "" };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "mark-success",
            &key.to_string(),
            detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.push(dispatches).await;
        self.changed();
        Ok(rows)
    }

    /// Stops instances: running tries are killed on their agents (the whole process group),
    /// and the instances are recorded as killed, not retried. One instance (an error if it is
    /// finished), or with a range of days and/or `down`, every unfinished instance of it: the
    /// way to stop a backfill, written in chunks like a backfill's run.
    pub async fn kill(&self, plan: &RunPlan, caller: &Caller) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        let spec = &catalog.require(&plan.task)?.spec;
        catalog.check_period(&plan.task, plan.from)?;
        catalog.check_period(&plan.task, plan.to)?;
        check_range(plan.from, plan.to)?;
        let single = plan.from == plan.to && !plan.down;
        let mut keys = HashSet::new();
        for period in Period::range(plan.from, plan.to, spec.tz()) {
            let start = InstanceKey::new(&plan.task, period);
            if plan.down {
                keys.extend(catalog.dag.downstream_closure(&start, (plan.from, plan.to)));
            }
            keys.insert(start);
        }
        let keys = catalog.dag.in_run_order(keys);
        let note = format!("killed by {}", caller.actor);
        let mut killed = vec![];
        for chunk in keys.chunks(CHUNK) {
            let now = now_ms();
            let mut tx = self.store.begin().await?;
            let mut agent_kills = vec![];
            let existing = store::instances_by_keys(&mut tx, chunk.iter()).await?;
            for key in chunk {
                let Some(row) = existing.get(key).cloned() else {
                    if single {
                        return Err(EngineError::NotFound(format!("no instance {key}")));
                    }
                    continue;
                };
                let from = row.state;
                if transition(from, Event::Kill).is_err() {
                    if single {
                        return Err(EngineError::Conflict(format!(
                            "{key} is {from}: only a waiting, queued, running or up_for_retry instance can be killed"
                        )));
                    }
                    continue;
                }
                if !store::operator_set_state(&mut tx, row.id, from, InstanceState::Killed, None, &note, now)
                    .await?
                {
                    if single {
                        return Err(EngineError::Conflict(format!(
                            "{key} changed meanwhile; try again"
                        )));
                    }
                    // It moved on (finished, say) since it was read: nothing to kill any more.
                    continue;
                }
                if from == InstanceState::Running {
                    let attempt = store::attempt_id(row.id, row.try_number);
                    // Closing the try here makes any late report of it stale, and heartbeats
                    // tell its agent to stop it even if the push below is missed. "killing"
                    // until the agent reports the process group gone (or KILL_SETTLE has
                    // passed): a redo waits for it, so the old try and the new never overlap.
                    store::finish_attempt(&mut tx, &attempt, "killing", None, &note, now).await?;
                    if let Some(agent) = row.agent_id.clone() {
                        agent_kills.push((agent, attempt));
                    }
                }
                killed.push(row);
            }
            tx.commit().await?;
            for (agent, attempt) in agent_kills {
                self.send_agent_command(&agent, AgentCommand::Kill { attempt_id: attempt });
            }
            self.changed();
        }
        if killed.is_empty() {
            return Err(EngineError::NotFound(format!(
                "nothing to kill: no unfinished instance of {} (or downstream) in {}..{}",
                plan.task, plan.from, plan.to
            )));
        }
        let target = format!("{}@{}", plan.task, plan.from);
        let detail = if single {
            killed[0].state.to_string()
        } else {
            format!(
                "{}{} {}",
                if plan.from == plan.to {
                    String::new()
                } else {
                    format!("{}..{} ", plan.from, plan.to)
                },
                if plan.down { "--down" } else { "" },
                goflow_core::plural(killed.len(), "instance")
            )
        };
        let mut tx = self.store.begin().await?;
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "kill",
            &target,
            detail.trim(),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(killed)
    }

    /// Removes an instance with its tries and logs. Not while queued or running.
    pub async fn delete_instance(&self, key: &InstanceKey, caller: &Caller) -> Result<InstanceRow> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let row = store::instance_by_key(&mut tx, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no instance {key}")))?;
        if row.state.is_active() {
            return Err(EngineError::Conflict(format!(
                "{key} is {}: kill it first",
                row.state
            )));
        }
        store::delete_instance(&mut tx, row.id).await?;
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "delete",
            &key.to_string(),
            row.state.as_str(),
            now,
        )
        .await?;
        tx.commit().await?;
        // A deleted success no longer counts for its downstreams.
        self.joins.clear();
        self.changed();
        Ok(row)
    }
}

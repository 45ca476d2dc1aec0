//! Explain (issue 19): why an instance is where it is, followed through the instances it
//! waits for to the root causes. This gathers each instance's own cause from the store (a
//! failed try, a full pool and who holds it, a queue no live agent serves, a retry due, a
//! paused task, a missing instance and whether anything will create it); the walk and the
//! words are `goflow_core::explain`'s. The upstreams a waiting instance waits for are those
//! of `waits` (the one-level wait reason), read through its cache.

use std::collections::{HashMap, VecDeque};

use goflow_core::explain::{self, Cause, Creation, Explanation, Holder, Node};
use goflow_core::{EtlDay, InstanceKey, InstanceState};

use super::{Catalog, Engine, Result, WaitCache};
use crate::store::{self, Db, InstanceFilter, InstanceRow, now_ms};

/// Instances read at most in one walk; past that, instances are not followed further.
const MAX_NODES: usize = 400;

/// An instance explained.
#[derive(Debug, Clone)]
pub struct InstanceExplanation {
    /// `task@period`.
    pub instance: String,
    /// Its state; `none` when it has no instance.
    pub state: String,
    /// The one-level wait reason of a waiting or held instance (as `status` shows it).
    pub wait_reason: String,
    pub explanation: Explanation,
}

/// What every instance of one walk shares: states of whole periods, the live agents and the
/// running tries, each read once.
#[derive(Default)]
struct Gather {
    waits: WaitCache,
    agents: Option<Vec<store::AgentRow>>,
    pool_holders: Option<Vec<store::PoolHolder>>,
}

impl Engine {
    /// Why `key` is where it is (see the module's comment).
    pub async fn explain_instance(&self, key: &InstanceKey) -> Result<InstanceExplanation> {
        let catalog = self.catalog();
        catalog.require(&key.task)?;
        catalog.check_period(&key.task, key.period)?;
        let now = now_ms();
        let mut conn = self.store.read().await?;
        let mut gather = Gather::default();
        let mut nodes: HashMap<InstanceKey, Node> = HashMap::new();
        let mut start_row = None;
        let mut todo = VecDeque::from([key.clone()]);
        while let Some(k) = todo.pop_front() {
            if nodes.contains_key(&k) {
                continue;
            }
            if nodes.len() >= MAX_NODES {
                nodes.insert(
                    k.clone(),
                    Node {
                        state: "unknown".into(),
                        reason: Cause::NotFollowed.reason(chrono_tz::UTC, now),
                        root: true,
                        waits_for: vec![],
                    },
                );
                continue;
            }
            let row = store::instance_by_key(&mut conn, &k).await?;
            let (cause, waits_for) = self
                .cause_of(&mut conn, &catalog, &k, row.as_ref(), &mut gather)
                .await?;
            let state = row.as_ref().map_or("none", |r| r.state.as_str()).to_string();
            let tz = catalog.dag.task(&k.task).map_or(chrono_tz::UTC, |t| t.tz());
            // The instance itself says its cause in full; a waiting one on the way says "waiting".
            let reason = if k == *key {
                cause.reason(tz, now)
            } else {
                explain::hop_reason(&cause, &state, tz, now)
            };
            todo.extend(waits_for.iter().cloned());
            nodes.insert(
                k.clone(),
                Node {
                    state,
                    reason,
                    root: cause.is_root(),
                    waits_for,
                },
            );
            if k == *key {
                start_row = row;
            }
        }
        let wait_reason = match &start_row {
            Some(row) => self.wait_reason(&mut conn, row, &mut gather.waits).await?.0,
            None => String::new(),
        };
        let explanation = explain::explain(key, &nodes, explain::MAX_ROOT_CAUSES);
        Ok(InstanceExplanation {
            instance: key.to_string(),
            state: nodes[key].state.clone(),
            wait_reason,
            explanation,
        })
    }

    /// One instance's own cause, and the unmet instances it waits for.
    async fn cause_of(
        &self,
        conn: &mut impl Db,
        catalog: &Catalog,
        key: &InstanceKey,
        row: Option<&InstanceRow>,
        gather: &mut Gather,
    ) -> Result<(Cause, Vec<InstanceKey>)> {
        let Some(row) = row else {
            return Ok((self.missing_cause(catalog, key), vec![]));
        };
        let cause = match row.state {
            InstanceState::Success => Cause::Succeeded {
                at: row.finished_at,
                forced: row.forced,
            },
            InstanceState::Failed | InstanceState::Killed => Cause::Ended {
                state: row.state.as_str().into(),
                exit_code: row.exit_code,
                message: row.message.clone(),
                try_number: row.try_number,
                max_tries: row.max_tries,
                at: row.finished_at,
            },
            InstanceState::Running => Cause::Running {
                agent: row.agent_id.clone().unwrap_or_default(),
                since: row.started_at,
                try_number: row.try_number,
                max_tries: row.max_tries,
            },
            InstanceState::UpForRetry => Cause::RetryDue {
                at: row.next_try_at,
                try_number: row.try_number,
                max_tries: row.max_tries,
            },
            InstanceState::Queued => self.queued_cause(conn, catalog, row, gather).await?,
            InstanceState::Waiting => {
                let mut unmet = vec![];
                for up in catalog.dag.upstream_instances(key) {
                    if gather.waits.state(conn, &up).await? != Some(InstanceState::Success) {
                        unmet.push(up);
                    }
                }
                let cause = if catalog.is_paused(&key.task) {
                    Cause::Paused
                } else if unmet.is_empty() {
                    Cause::Ready
                } else {
                    Cause::WaitsFor { count: unmet.len() }
                };
                return Ok((cause, unmet));
            }
        };
        Ok((cause, vec![]))
    }

    /// A queued instance: held by its pool or max_active (and by whom), no live agent serving
    /// its queue, or waiting for an agent to claim it.
    async fn queued_cause(
        &self,
        conn: &mut impl Db,
        catalog: &Catalog,
        row: &InstanceRow,
        gather: &mut Gather,
    ) -> Result<Cause> {
        if let Some(wait) = &row.pool_wait {
            let holders = if wait.contains("max_active") {
                let running = store::list_instances(
                    conn,
                    &InstanceFilter {
                        task: Some(row.task_id.clone()),
                        states: vec![InstanceState::Running],
                        limit: 100,
                        ..Default::default()
                    },
                )
                .await?;
                running
                    .into_iter()
                    .map(|r| Holder {
                        attempt: store::attempt_id(r.id, r.try_number),
                        task: r.task_id,
                        period: r.period.key(),
                        agent: r.agent_id.unwrap_or_default(),
                    })
                    .collect()
            } else {
                let pool = catalog.tasks.get(&row.task_id).and_then(|t| t.spec.pool.clone());
                if gather.pool_holders.is_none() {
                    gather.pool_holders = Some(store::pool_holders(conn).await?);
                }
                gather
                    .pool_holders
                    .iter()
                    .flatten()
                    .filter(|h| Some(&h.pool) == pool.as_ref())
                    .map(|h| Holder {
                        attempt: h.attempt_id.clone(),
                        task: h.task_id.clone(),
                        period: h.etl_day.clone(),
                        agent: h.agent_id.clone(),
                    })
                    .collect()
            };
            return Ok(Cause::Limit {
                wait: wait.clone(),
                holders,
            });
        }
        if gather.agents.is_none() {
            gather.agents = Some(store::list_agents(conn).await?);
        }
        let live: Vec<&store::AgentRow> = gather
            .agents
            .iter()
            .flatten()
            .filter(|a| a.state == "alive" && a.draining == 0)
            .collect();
        let serves = |a: &&store::AgentRow| {
            a.queues
                .split(',')
                .map(str::trim)
                .any(|q| q == row.queue || q == "*")
        };
        if !live.iter().any(serves) {
            return Ok(Cause::NoAgent {
                queue: row.queue.clone(),
                live_agents: live.len(),
            });
        }
        Ok(Cause::Queued {
            since: row.queued_at.unwrap_or(row.created_at),
        })
    }

    /// An instance that does not exist: not a day of the task's, or not created yet (and
    /// whether a cron fire will).
    fn missing_cause(&self, catalog: &Catalog, key: &InstanceKey) -> Cause {
        if let Some(why) = catalog.dag.why_not_on(&key.task, key.period) {
            let before_start = catalog
                .dag
                .task(&key.task)
                .and_then(|t| t.start_day)
                .is_some_and(|start| EtlDay::from_date(key.period.last_day()) < start);
            return if before_start {
                Cause::BeforeStart { why }
            } else {
                Cause::OutsideCalendar { why }
            };
        }
        let creation = match self.settings.schedule_clock.now() {
            Ok(now) => explain::creation(&catalog.dag, key, now, |t| catalog.is_paused(t)),
            Err(e) => {
                tracing::warn!("explain: cannot read the schedule clock: {e:#}");
                Creation::ByHand {
                    command: format!("goflowctl run -j {} -d {}", key.task, key.period.key()),
                }
            }
        };
        Cause::Missing { creation }
    }
}

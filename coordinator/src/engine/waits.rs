//! Why a waiting instance waits: the upstreams it waits for, and whether it is stuck behind a
//! failed or killed one (directly or through waiting ones).

use std::collections::{BTreeSet, HashMap, HashSet};

use goflow_core::{InstanceKey, InstanceState, Period};

use super::{Catalog, Engine, Result};
use crate::store::{self, Db, InstanceRow};

/// States and blocked verdicts shared by the rows of one listing.
#[derive(Default)]
pub struct WaitCache {
    states: HashMap<InstanceKey, InstanceState>,
    periods_loaded: HashSet<Period>,
    blocked: HashMap<InstanceKey, bool>,
}

impl WaitCache {
    /// A cache that starts from the states of rows just read (a listing, a watch): upstreams
    /// among them cost no query, and a day of many other instances is read only when an
    /// upstream outside them is asked for.
    pub fn knowing(rows: &[InstanceRow]) -> Self {
        Self {
            states: rows.iter().map(|r| (r.key(), r.state)).collect(),
            ..Self::default()
        }
    }

    pub(super) async fn state(
        &mut self,
        conn: &mut impl Db,
        key: &InstanceKey,
    ) -> Result<Option<InstanceState>> {
        if let Some(known) = self.states.get(key) {
            return Ok(Some(*known));
        }
        if self.periods_loaded.insert(key.period) {
            let period = BTreeSet::from([key.period]);
            self.states.extend(store::states_of_periods(conn, &period).await?);
        }
        Ok(self.states.get(key).copied())
    }
}

impl Engine {
    /// For a waiting instance: what it waits for, and whether it is stuck behind a failed or
    /// killed upstream (directly or through waiting ones). `cache` carries states and verdicts
    /// from one row to the next of a listing, so a day of thousands of waiting instances costs
    /// a query per day, not one per ancestor of each.
    pub async fn wait_reason(
        &self,
        conn: &mut impl Db,
        row: &InstanceRow,
        cache: &mut WaitCache,
    ) -> Result<(String, bool)> {
        if row.state == InstanceState::Queued
            && let Some(why) = &row.pool_wait
        {
            return Ok((why.clone(), false));
        }
        if row.state != InstanceState::Waiting {
            return Ok((String::new(), false));
        }
        let catalog = self.catalog();
        let mut reasons = vec![];
        let key = row.key();
        let mut blocked = false;
        for up in catalog.dag.upstream_instances(&key) {
            match cache.state(conn, &up).await? {
                Some(InstanceState::Success) => {}
                Some(s @ (InstanceState::Failed | InstanceState::Killed)) => {
                    blocked = true;
                    reasons.push(format!("{up} ({s})"));
                }
                Some(InstanceState::Waiting) => {
                    if self.blocked_upstream(conn, &catalog, &up, cache).await? {
                        blocked = true;
                        reasons.push(format!("{up} (waiting behind a failed upstream)"));
                    } else {
                        reasons.push(format!("{up} (waiting)"));
                    }
                }
                Some(s) => reasons.push(format!("{up} ({s})")),
                // Another day's instance that nothing will create: the first day of a new
                // task (or DAG) waits for a day before any run. Say what gets it moving.
                None if up.period != key.period => reasons.push(format!(
                    "{up}, which has no instance (before {}'s first day? set its start_day)",
                    up.task
                )),
                None => reasons.push(format!("{up} (no instance)")),
            }
        }
        // A day waiting for its 24 hours (or a month for its days) names a few and counts
        // the rest.
        const NAMED: usize = 6;
        if reasons.len() > NAMED {
            let more = reasons.len() - (NAMED - 1);
            reasons.truncate(NAMED - 1);
            reasons.push(format!("{more} more"));
        }
        let mut text = match (reasons.is_empty(), blocked) {
            (true, _) => String::new(),
            (false, true) => format!("blocked: waits for {}", reasons.join(", ")),
            (false, false) => format!("waits for {}", reasons.join(", ")),
        };
        if catalog.is_paused(&row.task_id) {
            text = if text.is_empty() {
                "task is paused".into()
            } else {
                format!("task is paused; {text}")
            };
        }
        Ok((text, blocked))
    }

    /// Whether a waiting instance is behind a failed or killed one, through waiting ancestors.
    async fn blocked_upstream(
        &self,
        conn: &mut impl Db,
        catalog: &Catalog,
        key: &InstanceKey,
        cache: &mut WaitCache,
    ) -> Result<bool> {
        if let Some(known) = cache.blocked.get(key) {
            return Ok(*known);
        }
        // Walk the waiting ancestors once; every one reached shares the answer.
        let mut frontier = vec![key.clone()];
        let mut seen: HashSet<InstanceKey> = HashSet::from([key.clone()]);
        let mut verdict = false;
        'walk: while !frontier.is_empty() {
            let mut next = vec![];
            for k in frontier {
                for up in catalog.dag.upstream_instances(&k) {
                    if !seen.insert(up.clone()) {
                        continue;
                    }
                    if cache.blocked.get(&up) == Some(&true) {
                        verdict = true;
                        break 'walk;
                    }
                    match cache.state(conn, &up).await? {
                        Some(InstanceState::Failed | InstanceState::Killed) => {
                            verdict = true;
                            break 'walk;
                        }
                        Some(InstanceState::Waiting) if !cache.blocked.contains_key(&up) => next.push(up),
                        _ => {}
                    }
                }
            }
            frontier = next;
        }
        // Not blocked: nothing above any of them is. Blocked: only `key` is known to be.
        if verdict {
            cache.blocked.insert(key.clone(), true);
        } else {
            for k in seen {
                cache.blocked.insert(k, false);
            }
        }
        Ok(verdict)
    }
}

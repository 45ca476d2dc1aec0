//! Backfills as objects (issue 19): start (a run over a range, recorded with its instances in
//! one transaction), list and show with progress, pause, resume and cancel.
//!
//! A backfill bounds its instances the way pools do (see `pools`): while it is paused, or
//! while as many of its instances as its parallelism run or are on their way, the rest stay
//! queued and held back (`pool_wait` says why). The claim decides from the store (the
//! backfill's row locked); everything else only saves work. Held instances of a backfill are
//! offered by the backfill itself, after what pools hold back, and its dispatches travel at a
//! priority below every scheduled run's, so cron fires are never starved by a backfill.
//!
//! Every operation on a backfill is a bounded number of statements, whatever its size: its
//! instances are changed with `... WHERE backfill_id = ?`, never one by one (the running ones
//! aside, as many as there are slots).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goflow_core::backfill::{self, BackfillAction, BackfillState, Progress};
use goflow_core::{Dispatch, InstanceKey, InstanceState};

use super::agents::AgentCommand;
use super::{Caller, Engine, EngineError, Result, RunPlan};
use crate::store::{self, BackfillRow, InstanceRow, Store, Tx, now_ms};

/// How a new backfill runs (beyond its run plan).
#[derive(Debug, Clone, Copy, Default)]
pub struct BackfillStart {
    /// At most this many of its instances queued or running at once; None: free slots only.
    pub parallelism: Option<i64>,
}

/// What holds a backfill's instances back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    Paused,
    AtMost(i64),
}

impl Bound {
    /// Why an instance is held back, as `pool_wait` and the UI show it.
    pub(super) fn reason(self, id: i64) -> String {
        match self {
            Bound::Paused => format!("backfill {id} is paused"),
            Bound::AtMost(n) => format!("backfill {id} runs at most {n} at once"),
        }
    }
}

/// The running and paused backfills that bound their instances, as this leader last wrote
/// them (it is their only writer; a new leader loads them from the store).
#[derive(Default)]
pub(super) struct Bounds {
    by_id: Mutex<HashMap<i64, Bound>>,
    /// Dispatches of bounded backfills pushed lately, by (instance, try): never pushed twice
    /// while on their way (an agent that claims a try twice is granted it twice).
    pushed: Mutex<HashMap<(i64, i64), Instant>>,
}

/// How long a pushed dispatch counts as on its way (then the redispatch loop's re-push may go).
const ON_ITS_WAY: Duration = Duration::from_secs(15);

impl Bounds {
    pub(super) async fn load(store: &Store) -> anyhow::Result<Self> {
        let mut conn = store.read().await?;
        let by_id = store::bounded_backfills(&mut conn)
            .await?
            .into_iter()
            .filter_map(|(id, paused, parallelism)| {
                let bound = if paused {
                    Some(Bound::Paused)
                } else {
                    parallelism.map(Bound::AtMost)
                };
                bound.map(|b| (id, b))
            })
            .collect();
        Ok(Self {
            by_id: Mutex::new(by_id),
            pushed: Default::default(),
        })
    }

    /// Whether this dispatch may be pushed now (not pushed within [`ON_ITS_WAY`]); records it.
    fn first_push(&self, dispatch: &Dispatch) -> bool {
        let mut pushed = self.pushed.lock().unwrap();
        pushed.retain(|_, at| at.elapsed() < ON_ITS_WAY);
        pushed
            .insert((dispatch.instance_id, dispatch.try_number), Instant::now())
            .is_none()
    }

    pub(super) fn set(&self, id: i64, bound: Option<Bound>) {
        let mut by_id = self.by_id.lock().unwrap();
        match bound {
            Some(bound) => by_id.insert(id, bound),
            None => by_id.remove(&id),
        };
    }

    fn snapshot(&self) -> HashMap<i64, Bound> {
        self.by_id.lock().unwrap().clone()
    }
}

/// A backfill as listed and shown.
#[derive(Debug, Clone)]
pub struct BackfillStatus {
    pub row: BackfillRow,
    /// The stored state, or done once nothing of it is left to run.
    pub state: BackfillState,
    pub progress: Progress,
    /// Instances finished per minute lately (the last ten minutes); shown only.
    pub per_minute: Option<f64>,
    /// When the rest should be done at that pace (epoch ms); None: no estimate.
    pub eta_at: Option<i64>,
}

/// What a cancel ended.
#[derive(Debug, Clone)]
pub struct CancelOutcome {
    pub status: BackfillStatus,
    /// The running instances killed (their process groups are stopped).
    pub killed_running: Vec<InstanceKey>,
    /// Not started ones, now killed, by the state they were in.
    pub killed_unstarted: BTreeMap<String, i64>,
}

/// How far back throughput is measured.
const THROUGHPUT_WINDOW_MS: i64 = 10 * 60 * 1000;

fn derived_state(row: &BackfillRow, progress: &Progress) -> Result<BackfillState> {
    let stored = BackfillState::parse(&row.state).ok_or_else(|| {
        EngineError::Internal(anyhow::anyhow!(
            "backfill {} has unknown state {:?} (written by a newer goflow?)",
            row.id,
            row.state
        ))
    })?;
    Ok(match stored {
        BackfillState::Running if progress.unfinished() == 0 => BackfillState::Done,
        state => state,
    })
}

impl Engine {
    /// Starts a backfill: the run `plan` covers, recorded as a backfill with its operations-log
    /// entry in one transaction. Returns its id and the instances it runs.
    pub async fn start_backfill(
        &self,
        plan: &RunPlan,
        start: BackfillStart,
        caller: &Caller,
    ) -> Result<(i64, Vec<InstanceRow>)> {
        if let Some(n) = start.parallelism
            && n < 1
        {
            return Err(EngineError::Invalid(format!(
                "--parallelism {n}: give at least 1 (leave it out to be bounded only by free slots)"
            )));
        }
        let (rows, id) = self.run_untraced(plan, caller, Some(start)).await?;
        Ok((id.expect("a backfill run records its backfill"), rows))
    }

    /// The newest backfills (at most `limit`), with their progress: two statements.
    pub async fn list_backfills(&self, limit: i64) -> Result<Vec<BackfillStatus>> {
        let mut conn = self.store.read().await?;
        let rows = store::list_backfills(&mut conn, limit.clamp(1, 1000)).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut counts = store::backfill_counts(&mut conn, &ids).await?;
        rows.into_iter()
            .map(|row| {
                let progress = Progress {
                    by_state: counts.remove(&row.id).unwrap_or_default(),
                };
                Ok(BackfillStatus {
                    state: derived_state(&row, &progress)?,
                    row,
                    progress,
                    per_minute: None,
                    eta_at: None,
                })
            })
            .collect()
    }

    /// One backfill with its progress, throughput and ETA: three statements.
    pub async fn backfill(&self, id: i64) -> Result<BackfillStatus> {
        let mut conn = self.store.read().await?;
        let row = store::backfill_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no backfill {id}")))?;
        let progress = Progress {
            by_state: store::backfill_counts(&mut conn, &[id])
                .await?
                .remove(&id)
                .unwrap_or_default(),
        };
        let now = now_ms();
        let since = row.created_at.max(now - THROUGHPUT_WINDOW_MS);
        let finished = store::backfill_finished_since(&mut conn, id, since).await?;
        let per_minute = backfill::throughput_per_minute(finished, now - since);
        let state = derived_state(&row, &progress)?;
        let eta_at = match state {
            BackfillState::Running | BackfillState::Done => {
                backfill::eta_ms(progress.unfinished(), per_minute, now)
            }
            _ => None,
        };
        Ok(BackfillStatus {
            row,
            state,
            progress,
            per_minute,
            eta_at,
        })
    }

    /// Reads a backfill for an operator's action, in the action's transaction, and checks the
    /// action is allowed in its state.
    async fn backfill_for(
        &self,
        tx: &mut Tx,
        id: i64,
        action: BackfillAction,
    ) -> Result<(BackfillRow, BackfillState)> {
        let row = store::backfill_by_id(tx, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no backfill {id}")))?;
        let progress = Progress {
            by_state: store::backfill_counts(tx, &[id])
                .await?
                .remove(&id)
                .unwrap_or_default(),
        };
        let next = derived_state(&row, &progress)?.apply(action).map_err(|why| {
            EngineError::Conflict(format!("backfill {id} cannot be {}d: {why}", action.as_str()))
        })?;
        Ok((row, next))
    }

    /// Stops new starts of a backfill's instances; running tries run on.
    pub async fn pause_backfill(&self, id: i64, caller: &Caller) -> Result<BackfillStatus> {
        self.pause_or_resume(id, BackfillAction::Pause, caller).await
    }

    /// Lets a paused backfill's instances start again.
    pub async fn resume_backfill(&self, id: i64, caller: &Caller) -> Result<BackfillStatus> {
        self.pause_or_resume(id, BackfillAction::Resume, caller).await
    }

    async fn pause_or_resume(
        &self,
        id: i64,
        action: BackfillAction,
        caller: &Caller,
    ) -> Result<BackfillStatus> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (row, next) = self.backfill_for(&mut tx, id, action).await?;
        if !store::set_backfill_state(&mut tx, id, &row.state, next.as_str(), now).await? {
            return Err(EngineError::Conflict(format!(
                "backfill {id} changed meanwhile; try again"
            )));
        }
        let bound = match action {
            BackfillAction::Pause => Some(Bound::Paused),
            _ => row.parallelism.map(Bound::AtMost),
        };
        // Unbounded now: every held one is released and pushed below.
        let released = match bound {
            Some(bound) => {
                store::hold_backfill(&mut tx, id, &bound.reason(id)).await?;
                vec![]
            }
            None => store::release_backfill(&mut tx, id).await?,
        };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            &format!("backfill {}", action.as_str()),
            &format!("{}@{}", row.task_id, row.from_period),
            &format!("backfill {id}"),
            now,
        )
        .await?;
        tx.commit().await?;
        self.backfills.set(id, bound);
        let dispatches: Vec<Dispatch> = released
            .iter()
            .map(|r| self.dispatch_of(r, r.try_number))
            .collect();
        self.push(dispatches).await;
        if let Some(Bound::AtMost(_)) = bound {
            self.offer_backfill(id).await?;
        }
        self.changed();
        self.backfill(id).await
    }

    /// Kills what runs of a backfill and ends every instance of it not started yet as killed,
    /// so none is left queued or waiting; one transaction with its operations-log entry.
    pub async fn cancel_backfill(&self, id: i64, caller: &Caller) -> Result<CancelOutcome> {
        let now = now_ms();
        let note = format!("killed: backfill {id} cancelled by {}", caller.actor);
        let mut tx = self.store.begin().await?;
        let (row, next) = self.backfill_for(&mut tx, id, BackfillAction::Cancel).await?;
        if !store::set_backfill_state(&mut tx, id, &row.state, next.as_str(), now).await? {
            return Err(EngineError::Conflict(format!(
                "backfill {id} changed meanwhile; try again"
            )));
        }
        let mut killed_running = vec![];
        let mut agent_kills = vec![];
        for run in store::running_of_backfill(&mut tx, id).await? {
            if !store::operator_set_state(
                &mut tx,
                run.id,
                InstanceState::Running,
                InstanceState::Killed,
                None,
                &note,
                now,
            )
            .await?
            {
                continue;
            }
            let attempt = store::attempt_id(run.id, run.try_number);
            // As `kill` does: the try is closed here, and its agent told to stop it.
            store::finish_attempt(&mut tx, &attempt, "killing", None, &note, now).await?;
            if let Some(agent) = run.agent_id.clone() {
                agent_kills.push((agent, attempt));
            }
            killed_running.push(run.key());
        }
        let killed_unstarted = store::unstarted_of_backfill(&mut tx, id).await?;
        store::kill_unstarted_of_backfill(&mut tx, id, &note, now).await?;
        let unstarted: i64 = killed_unstarted.values().sum();
        let detail = format!(
            "backfill {id}: killed {} running, {} not started{}",
            killed_running.len(),
            unstarted,
            if killed_unstarted.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    killed_unstarted
                        .iter()
                        .map(|(s, n)| format!("{s} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "backfill cancel",
            &format!("{}@{}", row.task_id, row.from_period),
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.backfills.set(id, None);
        for (agent, attempt) in agent_kills {
            self.send_agent_command(&agent, AgentCommand::Kill { attempt_id: attempt });
        }
        // A killed instance is no upstream success: what the join hints knew stays true, but
        // the slots of the killed tries free up for what other pools and backfills hold.
        self.changed();
        if let Err(e) = self.offer_held().await {
            tracing::warn!("offering held-back instances after a cancel failed ({e:#})");
        }
        Ok(CancelOutcome {
            status: self.backfill(id).await?,
            killed_running,
            killed_unstarted,
        })
    }

    /// In the claim's transaction: None when the backfill (if any) lets this try start;
    /// otherwise why not, and the instance is held back with that reason.
    pub(super) async fn check_backfill_for_claim(
        &self,
        tx: &mut Tx,
        row: &InstanceRow,
        try_number: i64,
    ) -> Result<Option<String>> {
        let Some(id) = row.backfill_id else {
            return Ok(None);
        };
        let Some((state, parallelism)) = store::lock_backfill(tx, id).await? else {
            return Ok(None);
        };
        let bound = if state == BackfillState::Paused.as_str() {
            Bound::Paused
        } else {
            match parallelism {
                Some(n) if store::backfill_running(tx, id).await? >= n => Bound::AtMost(n),
                _ => return Ok(None),
            }
        };
        let why = bound.reason(id);
        store::hold_instance(tx, row.id, try_number, &why, store::now_ms()).await?;
        Ok(Some(why))
    }

    /// Splits dispatches into those that may go now and those a paused or bounded backfill
    /// holds back (written as held here). Free when no backfill bounds anything.
    pub(super) async fn admit_backfills(&self, dispatches: Vec<Dispatch>) -> Result<Vec<Dispatch>> {
        let bounds = self.backfills.snapshot();
        if bounds.is_empty() || dispatches.is_empty() {
            return Ok(dispatches);
        }
        let ids: Vec<i64> = dispatches.iter().map(|d| d.instance_id).collect();
        let mut conn = self.store.read().await?;
        let of = store::backfills_of_instances(&mut conn, &ids).await?;
        let mut pass = vec![];
        let mut bounded: BTreeMap<i64, Vec<(Dispatch, bool)>> = BTreeMap::new();
        for dispatch in dispatches {
            match of.get(&dispatch.instance_id) {
                Some((backfill, held)) if bounds.contains_key(backfill) => {
                    bounded.entry(*backfill).or_default().push((dispatch, *held));
                }
                _ => pass.push(dispatch),
            }
        }
        if bounded.is_empty() {
            return Ok(pass);
        }
        let mut in_use = HashMap::new();
        for id in bounded.keys() {
            in_use.insert(*id, store::backfill_in_use(&mut conn, *id).await?);
        }
        drop(conn);
        let mut tx = self.store.begin().await?;
        for (id, mut candidates) in bounded {
            let bound = bounds[&id];
            // The candidates not held count as in use already: room is what the others leave.
            let unheld = candidates.iter().filter(|(_, held)| !held).count() as i64;
            let room = match bound {
                Bound::Paused => 0,
                Bound::AtMost(n) => (n - (in_use[&id] - unheld)).max(0) as usize,
            };
            candidates.sort_by_key(|(d, _)| (-d.priority, d.instance_id));
            let why = bound.reason(id);
            for (i, (dispatch, held)) in candidates.into_iter().enumerate() {
                if i < room {
                    if (!held
                        || store::release_instance(&mut tx, dispatch.instance_id, dispatch.try_number)
                            .await?)
                        && self.backfills.first_push(&dispatch)
                    {
                        pass.push(dispatch);
                    }
                } else if !held {
                    store::hold_instance(
                        &mut tx,
                        dispatch.instance_id,
                        dispatch.try_number,
                        &why,
                        store::now_ms(),
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(pass)
    }

    /// Offers held instances of every running bounded backfill, as many as each has room for
    /// (after what pools hold back: `offer_held` calls this last).
    pub(super) async fn offer_backfills(&self) -> Result<usize> {
        let mut offered = 0;
        for (id, bound) in self.backfills.snapshot() {
            if let Bound::AtMost(_) = bound {
                offered += self.offer_backfill(id).await?;
            }
        }
        Ok(offered)
    }

    /// Offers held instances of one bounded backfill, as many as it has room for; once nothing
    /// of it is left to run, records it done.
    pub(super) async fn offer_backfill(&self, id: i64) -> Result<usize> {
        let Some(Bound::AtMost(n)) = self.backfills.snapshot().get(&id).copied() else {
            return Ok(0);
        };
        let (in_use, held) = {
            let mut conn = self.store.read().await?;
            let in_use = store::backfill_in_use(&mut conn, id).await?;
            let room = (n - in_use).max(0);
            let held = if room > 0 {
                store::held_of_backfill(&mut conn, id, room).await?
            } else {
                vec![]
            };
            (in_use, held)
        };
        if in_use == 0 && held.is_empty() {
            self.record_done_if_so(id).await?;
            return Ok(0);
        }
        // Another term's held ones are stamped with this epoch by the redispatch loop first.
        let held: Vec<InstanceRow> = held
            .into_iter()
            .filter(|r| r.dispatch_epoch == self.epoch)
            .collect();
        if held.is_empty() {
            return Ok(0);
        }
        let mut tx = self.store.begin().await?;
        let mut dispatches = vec![];
        for row in &held {
            // Released by this offer only (a compare-and-set); `push` admits it once more and
            // makes sure it is not pushed twice while on its way.
            if store::release_instance(&mut tx, row.id, row.try_number).await? {
                dispatches.push(self.dispatch_of(row, row.try_number));
            }
        }
        tx.commit().await?;
        let offered = dispatches.len();
        self.push(dispatches).await;
        Ok(offered)
    }

    /// Stores a running backfill with nothing left to run as done (and forgets its bound).
    async fn record_done_if_so(&self, id: i64) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let unfinished: i64 = store::unstarted_of_backfill(&mut tx, id)
            .await?
            .values()
            .sum::<i64>()
            + store::backfill_running(&mut tx, id).await?;
        if unfinished == 0 && store::set_backfill_state(&mut tx, id, "running", "done", now).await? {
            tx.commit().await?;
            self.backfills.set(id, None);
            self.changed();
        }
        Ok(())
    }
}

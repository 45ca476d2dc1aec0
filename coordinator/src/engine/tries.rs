//! Claims and finish reports, written with group commit.
//!
//! Every try costs two writes: its claim (queued -> running) and its finish report (running ->
//! an outcome, downstreams released). One at a time, each pays a BEGIN, the fence check and a
//! COMMIT (an fsync on PostgreSQL and MySQL), and the single writer does nothing else
//! meanwhile. So the claims and reports that arrive while the writer is busy wait, and the
//! next one to get the writer writes them all in one transaction: a burst of N tries costs
//! one commit instead of N, while a lone write (a chain) goes at once, as before.
//!
//! Nothing changes in what each write decides: each is the same compare-and-set as alone, and
//! nobody is answered before the commit that holds their write. If the shared transaction
//! fails, each write is tried again alone, so one bad write fails only itself. Effects outside
//! the store (metrics, pushes, wake-ups) happen in the caller's own task after the commit.
//!
//! Cancel-safe: a batch runs on a task of its own, so a caller that goes away (a cancelled
//! request) loses at most its own answer, never another job's write or answer.

use std::sync::Mutex;

use goflow_core::state::{Event, transition};
use goflow_core::{Dispatch, InstanceState, TryOutcome};
use tokio::sync::oneshot;

use super::agents::{ClaimOutcome, ClaimedTry, FinishOutcome, TryReport};
use super::handoff::Finished;
use super::{Engine, EngineError, Result};
use crate::store::{self, Tx, now_ms};

/// The writes that share transactions, waiting for the writer.
#[derive(Default)]
pub(super) struct GroupCommit {
    pub(super) pending: Mutex<Vec<Job>>,
    /// Held by whoever writes a batch; fair, so writes go in arrival order.
    pub(super) writer: tokio::sync::Mutex<()>,
}

pub(super) enum Job {
    Claim {
        dispatch: Dispatch,
        agent: String,
        reply: oneshot::Sender<Result<ClaimStep>>,
    },
    Finish {
        report: TryReport,
        /// The reporting agent keeps the try's slot for a downstream (see `handoff`).
        take_next: bool,
        reply: oneshot::Sender<Result<FinishStep>>,
    },
}

/// What a claim wrote.
pub(super) enum ClaimStep {
    Granted(Box<Granted>),
    /// Not queued at this try and epoch: perhaps a claim sent again (see `repeated_claim`).
    NotQueued(String),
    Refused(String),
}

pub(super) struct Granted {
    pub(super) claimed: ClaimedTry,
    pub(super) row: store::InstanceRow,
    pub(super) spec: goflow_core::TaskSpec,
}

/// What a finish report wrote, and what the caller does after the commit.
pub(super) struct FinishStep {
    outcome: FinishOutcome,
    /// The try's outcome, when this report closed it (for the metrics).
    closed: Option<&'static str>,
    up_for_retry: bool,
    /// The instance, when this report finished it (success, failed or killed).
    finished: Option<i64>,
    dispatches: Vec<Dispatch>,
    /// A released downstream claimed for the reporting agent in the same transaction.
    handed_off: Option<(Dispatch, Box<Granted>)>,
}

impl FinishStep {
    fn stale(closed: Option<&'static str>, reason: String) -> Self {
        Self {
            outcome: FinishOutcome::Stale(reason),
            closed,
            up_for_retry: false,
            finished: None,
            dispatches: vec![],
            handed_off: None,
        }
    }
}

impl Engine {
    pub(super) async fn claim_untraced(&self, dispatch: &Dispatch, agent_id: &str) -> Result<ClaimOutcome> {
        if dispatch.epoch != self.epoch {
            return self
                .refused_unless_repeated(
                    dispatch,
                    agent_id,
                    format!("stale epoch {} (now {})", dispatch.epoch, self.epoch),
                )
                .await;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Claim {
            dispatch: dispatch.clone(),
            agent: agent_id.to_string(),
            reply,
        };
        let step = self.commit_together(job, answer).await;
        // Granted or not, this dispatch reserves no pool slot any more.
        self.offers
            .answered(dispatch, matches!(step, Ok(ClaimStep::Granted(_))));
        match step? {
            ClaimStep::Granted(granted) => {
                self.observe_claim(&granted.row, dispatch.try_number, &granted.spec, now_ms());
                self.changed();
                Ok(ClaimOutcome::Granted(granted.claimed))
            }
            ClaimStep::NotQueued(why) => self.refused_unless_repeated(dispatch, agent_id, why).await,
            ClaimStep::Refused(why) => Ok(ClaimOutcome::Refused(why)),
        }
    }

    /// A try ended. Stale reports (a killed or superseded try, an older epoch) change nothing.
    pub async fn finish(&self, report: &TryReport) -> Result<FinishOutcome> {
        Ok(self.finish_taking_next(report, false).await?.outcome)
    }

    /// [`Engine::finish`]; with `take_next`, a downstream this finish releases may be claimed
    /// for the reporting agent in the same transaction and answered with it (see `handoff`).
    pub async fn finish_taking_next(&self, report: &TryReport, take_next: bool) -> Result<Finished> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Finish {
            report: report.clone(),
            take_next,
            reply,
        };
        let step = self.commit_together(job, answer).await?;
        // A handed-off try reported before any heartbeat listed it arrived all the same.
        self.hand_offs.forget(&report.attempt_id);
        if let Some(outcome) = step.closed {
            let label = crate::metrics::OutcomeLabel {
                outcome: outcome.into(),
            };
            self.metrics.tries_finished.get_or_create(&label).inc();
        }
        if step.up_for_retry {
            self.wake_retries.notify_one();
        }
        if let Some(id) = step.finished {
            // Before the change signal below, so that a watch it wakes sees it (no receiver: no
            // watch, nothing to do).
            let _ = self.finishes.send(id);
        }
        let next = step
            .handed_off
            .map(|(dispatch, granted)| self.handed_off(&report.agent_id, dispatch, granted));
        self.push(step.dispatches).await;
        if step.closed.is_some() {
            // A slot may have freed: what its pool or task held back gets it.
            if let Err(e) = self.offer_held().await {
                tracing::warn!(
                    "pools: offering held-back instances failed ({e:#}); the redispatch loop will"
                );
            }
        }
        self.changed();
        Ok(Finished {
            outcome: step.outcome,
            next,
        })
    }

    /// Queues `job` and waits for its answer. The batch that writes it runs on a task of its
    /// own, not in this caller's future: a caller dropped mid-batch (its request cancelled)
    /// cannot take the other jobs of its batch, or their answers, with it.
    async fn commit_together<T>(&self, job: Job, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.group.pending.lock().unwrap().push(job);
        let engine = self.me.upgrade().expect("an engine in use is alive");
        tokio::spawn(async move {
            let _writer = engine.group.writer.lock().await;
            // Empty when the batch before took our job: it answered it before letting go.
            let jobs = std::mem::take(&mut *engine.group.pending.lock().unwrap());
            if !jobs.is_empty() {
                engine.write_batch(jobs).await;
            }
        });
        // Every job taken is answered; only a batch task that panicked (or a runtime shutting
        // down) drops one, and then the caller is told to try again.
        answer.await.unwrap_or_else(|_| {
            Err(EngineError::Internal(anyhow::anyhow!(
                "the write was not answered (its batch stopped); try again"
            )))
        })
    }

    async fn write_batch(&self, jobs: Vec<Job>) {
        self.metrics.writes_per_commit.observe(jobs.len() as f64);
        let together = async {
            let mut tx = self.store.begin().await?;
            let mut steps = Vec::with_capacity(jobs.len());
            for job in &jobs {
                steps.push(self.write_job(&mut tx, job).await?);
            }
            tx.commit().await?;
            anyhow::Ok(steps)
        };
        match together.await {
            Ok(steps) => {
                for (job, step) in jobs.into_iter().zip(steps) {
                    job.answer(Ok(step));
                }
            }
            // One at a time, each in its own transaction: a write that fails fails alone.
            Err(_) => {
                for job in jobs {
                    let alone = async {
                        let mut tx = self.store.begin().await?;
                        let step = self.write_job(&mut tx, &job).await?;
                        tx.commit().await?;
                        Result::<Step>::Ok(step)
                    };
                    let result = alone.await;
                    job.answer(result);
                }
            }
        }
    }

    async fn write_job(&self, tx: &mut Tx, job: &Job) -> Result<Step> {
        Ok(match job {
            Job::Claim { dispatch, agent, .. } => Step::Claim(self.write_claim(tx, dispatch, agent).await?),
            Job::Finish {
                report, take_next, ..
            } => Step::Finish(self.write_finish(tx, report, *take_next).await?),
        })
    }

    /// queued -> running for exactly this try and epoch, and the try's row.
    pub(super) async fn write_claim(
        &self,
        tx: &mut Tx,
        dispatch: &Dispatch,
        agent_id: &str,
    ) -> Result<ClaimStep> {
        let now = now_ms();
        // One snapshot of the definitions for the whole claim: its limits and what it runs.
        let catalog = self.catalog();
        // With no pool or max_active anywhere, only a backfill's bound is checked before a
        // claim: an instance outside backfills is claimed and read in one statement.
        let claimed = if catalog.has_limits() {
            None
        } else {
            let (id, try_number, epoch) = (dispatch.instance_id, dispatch.try_number, dispatch.epoch);
            store::claim_outside_backfills(tx, id, try_number, epoch, agent_id, now).await?
        };
        let row = match claimed {
            Some(row) => row,
            // Read, checked, then claimed: a task with limits, a backfill's instance, or a
            // claim that loses (refused below as before, changing nothing).
            None => {
                let Some(row) = store::instance_by_id(tx, dispatch.instance_id).await? else {
                    return Ok(ClaimStep::Refused("instance no longer exists".into()));
                };
                // Only a claim that would win is checked against its pool and max_active: a
                // stale one is refused below as before, changing nothing.
                let current = row.state == InstanceState::Queued
                    && row.try_number == dispatch.try_number
                    && row.dispatch_epoch == dispatch.epoch;
                if current {
                    let spec = &catalog.require(&row.task_id)?.spec;
                    if let Some(why) = self
                        .check_limits_for_claim(tx, &row, dispatch.try_number, spec)
                        .await?
                    {
                        return Ok(ClaimStep::Refused(why));
                    }
                }
                if !store::claim_instance(tx, row.id, dispatch.try_number, dispatch.epoch, agent_id, now)
                    .await?
                {
                    return Ok(ClaimStep::NotQueued(format!(
                        "stale dispatch: instance is {} at try {}",
                        row.state, row.try_number
                    )));
                }
                row
            }
        };
        // The current definition, or the version `run --as-then` pinned.
        let (spec, version) = self.spec_to_run(tx, &catalog, &row).await?;
        // An error here (a command only a hand-edited database can have) rolls the claim back.
        let claimed = self.claimed_try(
            &row,
            &spec,
            dispatch.try_number,
            store::attempt_id(row.id, dispatch.try_number),
        )?;
        // The try's row keeps the command it runs (the definition may change later), the
        // version it runs and the pool it holds a slot of, in one INSERT.
        let attempt = store::NewAttempt {
            instance_id: row.id,
            try_number: dispatch.try_number,
            epoch: self.epoch,
            agent: agent_id,
            command: &claimed.command,
            version: (version > 0).then_some(version),
            pool: spec.pool.as_deref(),
            now,
        };
        store::record_attempt(tx, &attempt).await?;
        Ok(ClaimStep::Granted(Box::new(Granted { claimed, row, spec })))
    }

    /// running -> the try's outcome, with its alert, and the downstreams it releases; with
    /// `take_next`, one of them claimed for the reporting agent.
    async fn write_finish(&self, tx: &mut Tx, report: &TryReport, take_next: bool) -> Result<FinishStep> {
        let now = now_ms();
        let outcome = report.outcome.as_str();
        // The usual end (a running try of this epoch and agent) is one statement where the
        // database allows; anything else is read and told apart below.
        let closed_try = store::finish_running_attempt(
            tx,
            &report.attempt_id,
            report.epoch,
            &report.agent_id,
            outcome,
            report.exit_code,
            &report.message,
            now,
        )
        .await?;
        let (instance_id, try_number) = match closed_try {
            Some(closed) => closed,
            None => {
                let Some(attempt) = store::attempt(tx, &report.attempt_id).await? else {
                    return Ok(FinishStep::stale(
                        None,
                        format!("unknown try {:?}", report.attempt_id),
                    ));
                };
                if attempt.epoch != report.epoch || attempt.agent_id != report.agent_id {
                    return Ok(FinishStep::stale(
                        None,
                        "the try belongs to another epoch or agent".into(),
                    ));
                }
                if !store::finish_attempt(tx, &attempt.id, outcome, report.exit_code, &report.message, now)
                    .await?
                {
                    // A killed try's process group is gone now: "killing" is over.
                    store::settle_killing(tx, &attempt.id, now).await?;
                    return Ok(FinishStep::stale(
                        None,
                        format!("try {} was already closed as {}", attempt.id, attempt.state),
                    ));
                }
                (attempt.instance_id, attempt.try_number)
            }
        };
        let closed = Some(outcome);
        let catalog = self.catalog();
        // A success of the running try is likewise one statement (running -> success is the
        // state machine's only way for it); every other end reads the instance first.
        let succeeded = if report.outcome == TryOutcome::Success {
            store::succeed_running_instance(
                tx,
                instance_id,
                try_number,
                report.exit_code,
                &report.message,
                now,
            )
            .await?
        } else {
            None
        };
        let (row, to) = match succeeded {
            Some(row) => {
                // A task no longer defined cannot be decided (its report fails, as below).
                catalog.require(&row.task_id)?;
                (row, InstanceState::Success)
            }
            None => {
                let Some(row) = store::instance_by_id(tx, instance_id).await? else {
                    return Ok(FinishStep::stale(closed, "instance no longer exists".into()));
                };
                let spec = &catalog.require(&row.task_id)?.spec;
                let event = match report.outcome {
                    TryOutcome::Success => Event::Succeeded,
                    TryOutcome::Killed => Event::Kill,
                    TryOutcome::Failed | TryOutcome::TimedOut => Event::TryFailed {
                        retry: row.try_number < row.max_tries,
                    },
                };
                let to = match transition(row.state, event) {
                    Ok(to) if row.try_number == try_number => to,
                    _ => {
                        return Ok(FinishStep::stale(
                            closed,
                            format!("instance is {} at try {}", row.state, row.try_number),
                        ));
                    }
                };
                let next_try_at = (to == InstanceState::UpForRetry).then(|| {
                    now + spec
                        .retry_delay
                        .unwrap_or(self.settings.default_retry_delay)
                        .as_millis() as i64
                });
                store::finish_instance(
                    tx,
                    row.id,
                    row.try_number,
                    to,
                    report.exit_code,
                    &report.message,
                    next_try_at,
                    now,
                )
                .await?;
                (row, to)
            }
        };
        self.record_try_alert(tx, &row, report, to, now).await?;
        let mut dispatches = if to == InstanceState::Success {
            self.release_downstream(tx, &catalog, &row.key(), now).await?
        } else {
            vec![]
        };
        // The agent whose try this is (the store checked it above), never another.
        let handed_off = if take_next && !dispatches.is_empty() {
            self.hand_off(tx, &report.agent_id, &mut dispatches).await?
        } else {
            None
        };
        Ok(FinishStep {
            outcome: FinishOutcome::Accepted,
            closed,
            up_for_retry: to == InstanceState::UpForRetry,
            finished: to.is_finished().then_some(row.id),
            dispatches,
            handed_off,
        })
    }
}

/// A job's result, before it goes back to its caller's type.
enum Step {
    Claim(ClaimStep),
    Finish(FinishStep),
}

impl Job {
    fn answer(self, result: Result<Step>) {
        // A caller that went away (its request was cancelled) needs no answer.
        match (self, result) {
            (Job::Claim { reply, .. }, Ok(Step::Claim(step))) => {
                let _ = reply.send(Ok(step));
            }
            (Job::Finish { reply, .. }, Ok(Step::Finish(step))) => {
                let _ = reply.send(Ok(step));
            }
            (Job::Claim { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Job::Finish { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Job::Claim { .. } | Job::Finish { .. }, Ok(_)) => {
                unreachable!("write_job answers a job with a step of its own kind")
            }
        }
    }
}

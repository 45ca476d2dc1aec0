//! The hand-off (issue 21): when a finish releases downstreams and the reporting agent keeps
//! the finished try's slot for one of them (`take_next`), one released dispatch of a queue the
//! agent registered is claimed for it in the finish's own transaction, by the same
//! `write_claim` as a ReportStart (fence, epoch, try number, pools, max_active and backfill
//! bounds alike), and answered with the finish. One commit per task instead of two, and the
//! picked dispatch never goes through the queue (no Redis round trip on a cluster).
//!
//! Only to the agent the report came from (the one whose try just closed), never to an id
//! named elsewhere. A hand-off whose answer is lost is a grant whose answer is lost: the agent
//! never lists the try, and past the lost-try grace its heartbeat has it dispatched again,
//! free of charge while this coordinator remembers the hand-off (see [`HandOffs`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goflow_core::Dispatch;

use super::agents::{ClaimedTry, FinishOutcome};
use super::tries::{ClaimStep, Granted};
use super::{Engine, Result};
use crate::store::{self, Tx};

/// What a finish report answers: its outcome, and the try handed off to its agent, if any.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: FinishOutcome,
    pub next: Option<HandedOff>,
}

/// A downstream claimed for the reporting agent in the finish's transaction.
#[derive(Debug, Clone)]
pub struct HandedOff {
    pub dispatch: Dispatch,
    pub claimed: ClaimedTry,
}

/// Hand-offs forgotten after this long, whatever happened (their tries ended or were
/// recovered long before: the lost-try grace is seconds).
const REMEMBER: Duration = Duration::from_secs(3600);

/// Tries handed off whose agent has not listed them in a heartbeat yet. Such a try its agent
/// does not list past the grace was never started (its answer was lost, or came too late to
/// start), exactly like a claim still in the agent's `claiming` list: it is dispatched again
/// without counting as lost. In memory only: after a change of leader an unlisted hand-off
/// counts as a lost try (RetryQueueTimes), as any grant unlisted past the grace does.
#[derive(Default)]
pub(super) struct HandOffs {
    unlisted: Mutex<HashMap<String, Instant>>,
}

impl HandOffs {
    fn insert(&self, attempt_id: &str) {
        let mut unlisted = self.unlisted.lock().unwrap();
        unlisted.retain(|_, at| at.elapsed() < REMEMBER);
        unlisted.insert(attempt_id.to_string(), Instant::now());
    }

    /// The agent lists these tries as running: their hand-off arrived.
    pub(super) fn listed(&self, running_attempts: &[String]) {
        let mut unlisted = self.unlisted.lock().unwrap();
        if unlisted.is_empty() {
            return;
        }
        for id in running_attempts {
            unlisted.remove(id);
        }
    }

    /// The try's end was reported: its hand-off arrived.
    pub(super) fn forget(&self, attempt_id: &str) {
        self.take_unlisted(attempt_id);
    }

    /// Whether `attempt_id` was handed off and never listed by its agent; forgotten.
    pub(super) fn take_unlisted(&self, attempt_id: &str) -> bool {
        self.unlisted.lock().unwrap().remove(attempt_id).is_some()
    }
}

impl Engine {
    /// In the finish's transaction: claims for `agent_id` the first of `released` (higher
    /// priority first, then the oldest instance) of a queue it registered, unless it drains.
    /// The picked dispatch is taken out of `released` (it is not pushed); so are those its
    /// claim refused (held back by their pool, max_active or backfill, exactly as a refused
    /// claim leaves them, to be offered again when room frees).
    pub(super) async fn hand_off(
        &self,
        tx: &mut Tx,
        agent_id: &str,
        released: &mut Vec<Dispatch>,
    ) -> Result<Option<(Dispatch, Box<Granted>)>> {
        let Some(agent) = store::agent_row(tx, agent_id).await? else {
            return Ok(None);
        };
        if agent.state != "alive" || agent.draining != 0 {
            return Ok(None);
        }
        let serves = |queue: &str| {
            agent
                .queues
                .split(',')
                .any(|q| q == goflow_agent::queue::ANY_QUEUE || q == queue)
        };
        let mut candidates: Vec<Dispatch> = released.iter().filter(|d| serves(&d.queue)).cloned().collect();
        candidates.sort_by_key(|d| (-d.priority, d.instance_id));
        for dispatch in candidates {
            match self.write_claim(tx, &dispatch, agent_id).await? {
                ClaimStep::Granted(granted) => {
                    released.retain(|d| d != &dispatch);
                    return Ok(Some((dispatch, granted)));
                }
                ClaimStep::Refused(_) => released.retain(|d| d != &dispatch),
                // Just queued in this transaction, so not expected; pushed as usual.
                ClaimStep::NotQueued(_) => {}
            }
        }
        Ok(None)
    }

    /// After the commit that holds a hand-off: what a granted claim does then (metrics,
    /// a dispatch span continuing the finish's trace), and the answer for the agent.
    pub(super) fn handed_off(&self, agent_id: &str, dispatch: Dispatch, granted: Box<Granted>) -> HandedOff {
        let Granted {
            mut claimed,
            row,
            spec,
        } = *granted;
        self.observe_claim(&row, dispatch.try_number, &spec, store::now_ms());
        self.metrics.handoffs.inc();
        self.hand_offs.insert(&claimed.attempt_id);
        // Never pushed, so its dispatch span is made here, a child of the finish report, with
        // the claim (made in the finish's transaction) as its child, as for a claimed try.
        let spans = self.traces.start(std::slice::from_ref(&dispatch));
        claimed.traceparent = self.traces.take(dispatch.instance_id, dispatch.try_number);
        let claim_span = super::agents::claim_span(&dispatch, agent_id, &claimed.traceparent);
        claim_span.record("goflow.task", claimed.task.as_str());
        claim_span.record("goflow.etl_day", claimed.etl_day.to_string().as_str());
        claim_span.record("goflow.granted", true);
        claim_span.record("goflow.handoff", true);
        drop(claim_span);
        drop(spans);
        HandedOff { dispatch, claimed }
    }
}

//! The hand-off (issue 21): a finishing try's slot is kept for a downstream its finish releases.
//! The agent asks with `take_next` and the coordinator may claim one for it in the finish's own
//! transaction, answered with the finish: no separate claim, no trip through the queue.
//!
//! The slot asked for is the finishing try's own (its permit stays held while the finish is
//! reported, and every slot serves every queue of this agent); it goes to the handed-off try,
//! or back to the pool when none comes. A hand-off whose answer is lost, or comes too late to
//! start safely, ends like such a claim: never started, and dispatched again by the
//! coordinator (see the engine's `handoff`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use goflow_proto::{ReportFinishResponse, ReportStartResponse};
use tokio_util::sync::CancellationToken;

use super::Agent;

/// A try to run in a slot that is already held.
pub(super) struct NextTry {
    pub(super) claim: ReportStartResponse,
    pub(super) epoch: i64,
    pub(super) span: tracing::Span,
    pub(super) kill: CancellationToken,
}

impl Agent {
    /// Whether a finish report asks for a hand-off: not while draining or stopping (no new
    /// work then), and not while every other slot is busy. Then work is likely queued for this
    /// agent (a fan-out's leaves, a backfill's days): the slot is better given back at once,
    /// to claim it while the finish is written, than kept idle for a release that mostly
    /// does not come. A chain's next try still comes by hand-off: the chain holds one slot.
    /// An agent of one slot always asks (giving it back would not shorten its wait).
    pub(super) fn may_take_next(&self) -> bool {
        !self.draining.is_cancelled()
            && !self.killing.is_cancelled()
            && (self.config.slots == 1
                || self.slots.available_permits() > 0
                || self.waiting_for_work.load(Ordering::Relaxed))
    }

    /// The try a finish's answer handed off, ready to run; None when none was (the slot is
    /// given back), or when it came too late or as the agent stops (left unstarted, for the
    /// coordinator to dispatch again without counting it lost).
    pub(super) fn handed_off(&self, answer: ReportFinishResponse, asked: Instant) -> Option<NextTry> {
        let (Some(claim), Some(dispatch)) = (answer.next, answer.next_dispatch) else {
            return None;
        };
        if !claim.granted {
            return None;
        }
        if asked.elapsed() > self.late_claim() || self.killing.is_cancelled() {
            // As for a late claim (see `claim`): the coordinator may have dispatched it again.
            tracing::warn!(
                attempt_id = %claim.attempt_id,
                waited = ?asked.elapsed(),
                "a try was handed off too late to start it safely; left for the coordinator to dispatch again"
            );
            self.unstarted.lock().unwrap().push(claim.attempt_id);
            return None;
        }
        tracing::debug!(attempt_id = %claim.attempt_id, "try handed off with the finish");
        let span = self.run_span(&claim, dispatch.try_number as i64, &tracing::Span::current());
        let kill = self.start_running(&claim.attempt_id)?;
        Some(NextTry {
            claim,
            epoch: dispatch.epoch,
            span,
            kill,
        })
    }
}

//! Stopping an agent gracefully: take no new work, let the running tries finish (heartbeats,
//! logs and reports go on), and kill what still runs after `--drain-timeout` or on a second
//! signal. A rolling deploy then reruns nothing and spends no retry.

use std::time::Duration;

use goflow_core::Dispatch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, SHUTDOWN_PATIENCE};
use crate::queue::DispatchQueue;

/// How long running tries may finish once the agent is asked to stop, unless told otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How an agent is told to stop (see [`crate::run_agent_until`]).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Cancelled: take no new work, let the running tries finish (the first SIGTERM).
    pub drain: CancellationToken,
    /// Cancelled: kill the running tries now (a second SIGTERM or SIGINT).
    pub kill: CancellationToken,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Turns the caller's `stop` into the agent's own states: `draining` on either signal,
/// `killing` on `stop.kill` (set before `draining` when it comes first, so the agent never
/// announces a drain it will not do). Ends when the agent exits.
pub(crate) async fn follow(
    stop: Stop,
    draining: CancellationToken,
    killing: CancellationToken,
    exiting: CancellationToken,
) {
    tokio::select! {
        () = stop.drain.cancelled() => {}
        () = stop.kill.cancelled() => {}
        () = exiting.cancelled() => return,
    }
    if stop.kill.is_cancelled() {
        killing.cancel();
        draining.cancel();
        return;
    }
    draining.cancel();
    tokio::select! {
        () = stop.kill.cancelled() => killing.cancel(),
        () = exiting.cancelled() => {}
    }
}

impl Agent {
    /// Puts back a dispatch taken from the queue but not claimed, so another agent takes it
    /// now rather than after the coordinator's re-push sweep.
    pub(crate) async fn release(&self, queue: &dyn DispatchQueue, dispatch: Dispatch) {
        let (instance_id, try_number) = (dispatch.instance_id, dispatch.try_number);
        match queue.push(vec![dispatch]).await {
            Ok(()) => tracing::info!(
                instance_id,
                try_number,
                "draining: put a dispatch taken but not started back on the queue"
            ),
            // The coordinator re-pushes what stays queued, so this only delays it.
            Err(err) => tracing::warn!(
                instance_id,
                try_number,
                error = %err,
                "draining: could not put a dispatch back on the queue; the coordinator will push it again"
            ),
        }
    }

    /// Waits for the running tries for up to the drain timeout, or until `killing`; then kills
    /// those left and waits a little for their process groups to go.
    pub(crate) async fn drain(&self, mut tries: JoinSet<()>) {
        while tries.try_join_next().is_some() {}
        if !tries.is_empty() && !self.killing.is_cancelled() {
            let timeout = self.config.drain_timeout;
            tracing::warn!(
                tries = tries.len(),
                "draining {} running tries (up to {}); send SIGTERM again to kill them",
                tries.len(),
                humantime::format_duration(timeout)
            );
            let finished = async { while tries.join_next().await.is_some() {} };
            tokio::select! {
                () = finished => tracing::info!("drained: every running try finished"),
                () = self.killing.cancelled() => {}
                () = tokio::time::sleep(timeout) => tracing::warn!(
                    "the drain timeout ({}) is over",
                    humantime::format_duration(timeout)
                ),
            }
        }
        if tries.is_empty() {
            return;
        }
        tracing::warn!(
            tries = tries.len(),
            "killing {} running tries; the coordinator dispatches them again",
            tries.len()
        );
        self.killing.cancel();
        let killed = async { while tries.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_PATIENCE, killed).await.is_err() {
            tracing::warn!("tries did not stop in time on shutdown");
        }
    }
}

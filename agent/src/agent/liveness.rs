//! How an agent stays known alive: heartbeats, the command stream, and what it does when the
//! coordinators fall silent (stops its tries) or when it cannot act at all (the try
//! supervisor's lease, renewed at each answered heartbeat, runs out).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use goflow_proto::{HeartbeatRequest, WatchCommandsRequest};
use tonic::Status;

use super::{Agent, served_by};
use crate::plumbing::Backoff;
use crate::runner;

impl Agent {
    /// Tells the coordinator every interval what runs here and how many slots are free, and
    /// kills what it no longer wants. Failures are logged and retried next time, at the next
    /// coordinator. The silence that stops our tries is the time without an answer from any
    /// coordinator.
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut last_answer = Instant::now();
        loop {
            // Heartbeats go on while the agent drains: its tries still run.
            if !self.sleep(self.heartbeat_interval(), &self.exiting).await {
                return;
            }
            let unstarted = self.unstarted.lock().unwrap().clone();
            let request = HeartbeatRequest {
                agent_id: self.agent_id(),
                running_attempts: self.running.lock().unwrap().keys().cloned().collect(),
                free_slots: i32::try_from(self.slots.available_permits()).unwrap_or(i32::MAX),
                unstarted_attempts: unstarted.clone(),
                claiming: self
                    .claiming
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|&(instance_id, try_number)| goflow_proto::ClaimInFlight {
                        instance_id,
                        try_number: try_number as i32,
                    })
                    .collect(),
                draining: self.draining.is_cancelled(),
            };
            // A coordinator that stopped answering (paused, partitioned) must count as silent,
            // not leave this call hanging.
            let patience = self.heartbeat_interval().max(Duration::from_secs(1)) * 2;
            let asked = self.failover.current();
            let sent_at = Instant::now();
            let answer = match tokio::time::timeout(patience, self.client.clone().heartbeat(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    // Hung, not dead: the failover cannot tell, so move on ourselves.
                    self.failover.move_past(asked);
                    Err(Status::deadline_exceeded("no heartbeat answer"))
                }
            };
            if let Some(metrics) = self.metrics() {
                metrics.set_coordinator_answers(answer.is_ok());
            }
            let response = match answer {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::warn!(
                        coordinator = self.failover.url(asked),
                        error = %status,
                        "heartbeat failed; retrying next interval"
                    );
                    self.abandon_if_cut_off(last_answer.elapsed());
                    continue;
                }
            };
            last_answer = Instant::now();
            self.renew_lease(sent_at).await;
            self.unstarted
                .lock()
                .unwrap()
                .retain(|attempt_id| !unstarted.contains(attempt_id));
            for attempt_id in &response.kill_attempts {
                self.kill(attempt_id, "heartbeat");
            }
            if response.reregister {
                tracing::info!("the coordinator does not know this agent; registering again");
                if let Err(status) = self.register().await {
                    tracing::warn!(error = %status, "registering again failed; retrying next interval");
                }
            }
        }
    }

    /// Follows the coordinator's pushed commands, reconnecting with backoff when the stream
    /// ends or fails, and moving the stream when the other calls moved to another coordinator.
    pub(super) async fn watch_commands_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let request = WatchCommandsRequest {
                agent_id: self.agent_id(),
            };
            match self.client.clone().watch_commands(request).await {
                Ok(response) => {
                    backoff.reset();
                    let on = served_by(&response);
                    let mut stream = response.into_inner();
                    let mut check = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        let next = tokio::select! {
                            next = stream.message() => next,
                            _ = check.tick() => {
                                if on.is_some_and(|on| on != self.failover.current()) {
                                    tracing::info!(
                                        coordinator = self.failover.url(self.failover.current()),
                                        "the agent moved to another coordinator; moving the command stream"
                                    );
                                    backoff.reset();
                                    break;
                                }
                                continue;
                            }
                            () = self.exiting.cancelled() => return,
                        };
                        match next {
                            Ok(Some(command)) if !command.kill_attempt.is_empty() => {
                                self.kill(&command.kill_attempt, "command");
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                tracing::debug!("the command stream ended; reopening");
                                break;
                            }
                            Err(status) => {
                                tracing::warn!(error = %status, "the command stream failed; reopening");
                                if let Some(on) = on {
                                    self.failover.move_past(on);
                                }
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::warn!(error = %status, "could not open the command stream; retrying");
                }
            }
            if !self.sleep(backoff.next(), &self.exiting).await {
                return;
            }
        }
    }

    /// A coordinator heard from us at `sent_at` (or later), so it declares us dead no sooner
    /// than WorkerTimeOut after that: the try supervisor may let our tries run until 3/4 of it
    /// (as `abandon_if_cut_off`), and stops them then if no renewal came (we are frozen).
    pub(super) async fn renew_lease(&self, sent_at: Instant) {
        let timeout = self.worker_timeout_ms.load(Ordering::Relaxed);
        if let Some(shim) = &self.config.shim
            && timeout > 0
        {
            runner::renew_lease(shim, sent_at + Duration::from_millis(timeout * 3 / 4)).await;
        }
    }

    /// Cut off from the coordinator for most of its WorkerTimeOut: it is about to declare us
    /// dead and run our tries elsewhere, so stop them now rather than make two live runs.
    fn abandon_if_cut_off(&self, silent_for: Duration) {
        let timeout = self.worker_timeout_ms.load(Ordering::Relaxed);
        if timeout == 0 || silent_for < Duration::from_millis(timeout * 3 / 4) {
            return;
        }
        let running = self.running.lock().unwrap();
        // A try whose command has ended is not stopped: its end is reported when a coordinator
        // answers again (a success it had is not thrown away).
        let exited = self.exited.lock().unwrap();
        let stoppable: Vec<_> = running.iter().filter(|(id, _)| !exited.contains(*id)).collect();
        if stoppable.is_empty() {
            return;
        }
        tracing::error!(
            silent_for = ?silent_for,
            tries = stoppable.len(),
            "no answer from the coordinator for most of its worker timeout: stopping every running try (it dispatches them again)"
        );
        let mut abandoned = self.abandoned.lock().unwrap();
        for (attempt_id, token) in stoppable {
            abandoned.insert(attempt_id.clone());
            token.cancel();
        }
    }
}

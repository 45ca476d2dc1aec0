//! AgentService: register, heartbeat, claim, finish, logs and kill commands. Every call acts
//! as the agent its credential names (`agent_identity`): a per-agent token may act only as its
//! agent and only on that agent's tries; anything else is PERMISSION_DENIED, recorded, and
//! changes nothing.

use goflow_core::{Dispatch, TryOutcome};
use goflow_proto as pb;
use pb::agent_service_server::AgentService;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::agent_identity::AgentCaller;
use crate::engine::{
    AgentCommand, AgentRegistration, ClaimOutcome, ClaimedTry, FinishOutcome, HeartbeatExtras, TryReport,
};

#[tonic::async_trait]
impl AgentService for Api {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> RpcResult<pb::RegisterResponse> {
        let caller = self.agent_caller(&request).await?;
        let req = request.into_inner();
        let agent_id = self.acting_as(&caller, &req.agent_id, "Register").await?;
        let registered = self
            .engine
            .register_agent(AgentRegistration {
                agent_id,
                host: req.host,
                slots: req.slots as i64,
                queues: req.queues,
                version: req.version,
                running_attempts: req.running_attempts,
                incarnation: req.incarnation,
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            agent_id: registered.agent_id,
            heartbeat_interval_ms: registered.heartbeat_interval.as_millis() as i64,
            worker_timeout_ms: registered.worker_timeout.as_millis() as i64,
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatResponse> {
        let caller = self.agent_caller(&request).await?;
        let req = request.into_inner();
        let agent_id = self.acting_as(&caller, &req.agent_id, "Heartbeat").await?;
        let extras = HeartbeatExtras {
            unstarted_attempts: req.unstarted_attempts,
            claiming: req
                .claiming
                .iter()
                .map(|c| (c.instance_id, c.try_number as i64))
                .collect(),
            draining: req.draining,
        };
        let answer = self
            .engine
            .heartbeat_with(&agent_id, &req.running_attempts, &extras)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            kill_attempts: answer.kill_attempts,
            reregister: answer.reregister,
        }))
    }

    async fn report_start(
        &self,
        request: Request<pb::ReportStartRequest>,
    ) -> RpcResult<pb::ReportStartResponse> {
        let caller = self.agent_caller(&request).await?;
        let req = request.into_inner();
        let agent_id = self.acting_as(&caller, &req.agent_id, "ReportStart").await?;
        let wire = req
            .dispatch
            .ok_or_else(|| Status::invalid_argument("dispatch is missing"))?;
        let dispatch = Dispatch {
            instance_id: wire.instance_id,
            try_number: wire.try_number as i64,
            epoch: wire.epoch,
            queue: wire.queue,
            priority: wire.priority,
        };
        if let AgentCaller::Agent(agent) = &caller {
            self.check_claim(&caller, agent, &dispatch).await?;
        }
        Ok(Response::new(
            match self.engine.claim(&dispatch, &agent_id).await? {
                ClaimOutcome::Granted(claimed) => granted_answer(claimed),
                ClaimOutcome::Refused(reason) => pb::ReportStartResponse {
                    granted: false,
                    reason,
                    ..Default::default()
                },
            },
        ))
    }

    async fn report_finish(
        &self,
        request: Request<pb::ReportFinishRequest>,
    ) -> RpcResult<pb::ReportFinishResponse> {
        let caller = self.agent_caller(&request).await?;
        let req = request.into_inner();
        let agent_id = self.acting_as(&caller, &req.agent_id, "ReportFinish").await?;
        self.check_try(&caller, &agent_id, &req.attempt_id, "ReportFinish")
            .await?;
        let outcome = TryOutcome::parse(&req.outcome)
            .ok_or_else(|| Status::invalid_argument(format!("unknown outcome {:?}", req.outcome)))?;
        let report = TryReport {
            attempt_id: req.attempt_id,
            agent_id,
            epoch: req.epoch,
            outcome,
            exit_code: req.has_exit_code.then_some(req.exit_code as i64),
            message: req.message,
        };
        let finished = self.engine.finish_taking_next(&report, req.take_next).await?;
        let (accepted, reason) = match finished.outcome {
            FinishOutcome::Accepted => (true, String::new()),
            FinishOutcome::Stale(reason) => (false, reason),
        };
        let (next, next_dispatch) = match finished.next {
            Some(handed) => (
                Some(granted_answer(handed.claimed)),
                Some(wire_dispatch(&handed.dispatch)),
            ),
            None => (None, None),
        };
        Ok(Response::new(pb::ReportFinishResponse {
            accepted,
            reason,
            next,
            next_dispatch,
        }))
    }

    async fn stream_logs(
        &self,
        request: Request<Streaming<pb::LogAppend>>,
    ) -> RpcResult<pb::StreamLogsResponse> {
        let caller = self.agent_caller(&request).await?;
        let mut stream = request.into_inner();
        let mut stored = 0;
        // Tries already checked on this stream (a stream carries one try's output, mostly).
        let mut checked = std::collections::HashSet::new();
        while let Some(message) = stream.next().await {
            let message = message?;
            if let AgentCaller::Agent(agent) = &caller
                && !checked.contains(&message.attempt_id)
            {
                self.check_try(&caller, agent, &message.attempt_id, "StreamLogs")
                    .await?;
                checked.insert(message.attempt_id.clone());
            }
            stored += self.engine.append_log(&message.attempt_id, &message.data).await?;
        }
        Ok(Response::new(pb::StreamLogsResponse { bytes_stored: stored }))
    }

    type WatchCommandsStream = ServerStream<pb::AgentCommand>;

    async fn watch_commands(
        &self,
        request: Request<pb::WatchCommandsRequest>,
    ) -> RpcResult<Self::WatchCommandsStream> {
        let caller = self.agent_caller(&request).await?;
        let named = request.into_inner().agent_id;
        let agent_id = self.acting_as(&caller, &named, "WatchCommands").await?;
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is required"));
        }
        if self.engine.term_ended().is_cancelled() {
            return Err(super::term_over());
        }
        let rx = self.engine.watch_commands(&agent_id);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|command| {
                Ok(match command {
                    AgentCommand::Kill { attempt_id } => pb::AgentCommand {
                        kill_attempt: attempt_id,
                    },
                })
            }),
        )))
    }
}

/// A granted claim's answer (a ReportStart's, or a finish's hand-off).
fn granted_answer(claimed: ClaimedTry) -> pb::ReportStartResponse {
    pb::ReportStartResponse {
        granted: true,
        reason: String::new(),
        attempt_id: claimed.attempt_id,
        command: claimed.command,
        env: claimed.env.into_iter().collect(),
        timeout_ms: claimed.timeout.map_or(0, |t| t.as_millis() as i64),
        task: claimed.task,
        etl_day: claimed.etl_day.compact(),
        traceparent: claimed.traceparent,
    }
}

fn wire_dispatch(dispatch: &Dispatch) -> pb::Dispatch {
    pb::Dispatch {
        instance_id: dispatch.instance_id,
        try_number: dispatch.try_number as i32,
        epoch: dispatch.epoch,
        queue: dispatch.queue.clone(),
        priority: dispatch.priority,
    }
}

impl Api {
    /// Who an agent's call comes from (its credential, not its body).
    async fn agent_caller<T>(&self, request: &Request<T>) -> Result<AgentCaller, Status> {
        self.auth.agents().identify(request).await
    }

    /// The agent a call acts as; a request naming another agent than its credential's is
    /// refused and recorded.
    async fn acting_as(
        &self,
        caller: &AgentCaller,
        named: &str,
        call: &'static str,
    ) -> Result<String, Status> {
        match caller.acting_as(named) {
            Ok(id) => Ok(id),
            Err(named) => {
                let why = format!(
                    "this credential belongs to {}, not to agent {named:?}",
                    caller.actor(&named)
                );
                Err(self.auth.agents().refuse(caller, &named, call, &named, why).await)
            }
        }
    }

    /// A try's reports (finish, output) come from its agent only.
    async fn check_try(
        &self,
        caller: &AgentCaller,
        agent_id: &str,
        attempt_id: &str,
        call: &'static str,
    ) -> Result<(), Status> {
        let AgentCaller::Agent(_) = caller else {
            // The shared secret: the store's own check (the report's agent) decides.
            return Ok(());
        };
        let mut conn = self.read().await?;
        let attempt = store::attempt(&mut conn, attempt_id).await.map_err(internal)?;
        drop(conn);
        match attempt {
            Some(attempt) if !caller.owns(&attempt.agent_id, agent_id) => {
                let why = format!("try {attempt_id} does not run on agent {agent_id}");
                Err(self
                    .auth
                    .agents()
                    .refuse(caller, agent_id, call, attempt_id, why)
                    .await)
            }
            // An unknown try is the engine's to answer (stale, not found).
            _ => Ok(()),
        }
    }

    /// An agent with a token claims only dispatches of the queues it registered for.
    async fn check_claim(
        &self,
        caller: &AgentCaller,
        agent: &str,
        dispatch: &Dispatch,
    ) -> Result<(), Status> {
        let mut conn = self.read().await?;
        let instance = store::instance_by_id(&mut conn, dispatch.instance_id)
            .await
            .map_err(internal)?;
        let registered = store::agent_row(&mut conn, agent).await.map_err(internal)?;
        drop(conn);
        let Some(instance) = instance else {
            // Gone: the engine refuses the claim.
            return Ok(());
        };
        let target = format!("instance {}", dispatch.instance_id);
        let why = match registered {
            None => format!("agent {agent} claims a dispatch without having registered"),
            Some(row)
                if !row
                    .queues
                    .split(',')
                    .any(|q| q == goflow_agent::queue::ANY_QUEUE || q == instance.queue) =>
            {
                format!(
                    "agent {agent} serves queues {}, not {:?}",
                    row.queues, instance.queue
                )
            }
            Some(_) => return Ok(()),
        };
        Err(self
            .auth
            .agents()
            .refuse(caller, agent, "ReportStart", &target, why)
            .await)
    }
}

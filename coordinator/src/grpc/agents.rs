//! AgentService: register, heartbeat, claim, finish, logs and kill commands. Agents present
//! the cluster's shared secret (checked in `routing` before a call reaches here).

use goflow_core::{Dispatch, TryOutcome};
use goflow_proto as pb;
use pb::agent_service_server::AgentService;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::engine::{
    AgentCommand, AgentRegistration, ClaimOutcome, FinishOutcome, HeartbeatExtras, TryReport,
};

#[tonic::async_trait]
impl AgentService for Api {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> RpcResult<pb::RegisterResponse> {
        let req = request.into_inner();
        let registered = self
            .engine
            .register_agent(AgentRegistration {
                agent_id: req.agent_id,
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
        let req = request.into_inner();
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
            .heartbeat_with(&req.agent_id, &req.running_attempts, &extras)
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
        let req = request.into_inner();
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
        Ok(Response::new(
            match self.engine.claim(&dispatch, &req.agent_id).await? {
                ClaimOutcome::Granted(claimed) => pb::ReportStartResponse {
                    granted: true,
                    reason: String::new(),
                    attempt_id: claimed.attempt_id,
                    command: claimed.command,
                    env: claimed.env.into_iter().collect(),
                    timeout_ms: claimed.timeout.map_or(0, |t| t.as_millis() as i64),
                    task: claimed.task,
                    etl_day: claimed.etl_day.compact(),
                    traceparent: claimed.traceparent,
                },
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
        let req = request.into_inner();
        let outcome = TryOutcome::parse(&req.outcome)
            .ok_or_else(|| Status::invalid_argument(format!("unknown outcome {:?}", req.outcome)))?;
        let report = TryReport {
            attempt_id: req.attempt_id,
            agent_id: req.agent_id,
            epoch: req.epoch,
            outcome,
            exit_code: req.has_exit_code.then_some(req.exit_code as i64),
            message: req.message,
        };
        Ok(Response::new(match self.engine.finish(&report).await? {
            FinishOutcome::Accepted => pb::ReportFinishResponse {
                accepted: true,
                reason: String::new(),
            },
            FinishOutcome::Stale(reason) => pb::ReportFinishResponse {
                accepted: false,
                reason,
            },
        }))
    }

    async fn stream_logs(
        &self,
        request: Request<Streaming<pb::LogAppend>>,
    ) -> RpcResult<pb::StreamLogsResponse> {
        let mut stream = request.into_inner();
        let mut stored = 0;
        while let Some(message) = stream.next().await {
            let message = message?;
            stored += self.engine.append_log(&message.attempt_id, &message.data).await?;
        }
        Ok(Response::new(pb::StreamLogsResponse { bytes_stored: stored }))
    }

    type WatchCommandsStream = ServerStream<pb::AgentCommand>;

    async fn watch_commands(
        &self,
        request: Request<pb::WatchCommandsRequest>,
    ) -> RpcResult<Self::WatchCommandsStream> {
        let agent_id = request.into_inner().agent_id;
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is required"));
        }
        if self.engine.term_ended().is_cancelled() {
            return Err(super::control::term_over());
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

//! The embedded agent's per-try calls (ReportStart, ReportFinish), answered in this process:
//! the route, engine, span and metrics of a gRPC call, without HTTP/2, TCP or protobuf
//! encoding on every try. Its other calls (Register, Heartbeat, WatchCommands, StreamLogs) stay
//! on gRPC: they are not per try, or are streams.

use std::future::Future;
use std::time::Instant;

use goflow_agent::LocalCoordinator;
use goflow_proto as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::agent_service_server::AgentService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::grpc::Api;
use crate::metrics::{IN_PROCESS, grpc_code_name};
use crate::routing::{Route, Router};

/// Answers the embedded agent where the router sends calls now. The agent secret and client
/// certificate are not checked: the caller is this process (vouched for as the embedded agent).
#[derive(Clone)]
pub struct InProcessAgents {
    router: Router,
}

impl std::fmt::Debug for InProcessAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessAgents")
    }
}

/// Who answers a call.
enum Target {
    /// This coordinator leads.
    Engine(Api),
    /// Another coordinator leads: the call goes on to it over gRPC, as `routing` passes calls on.
    Leader(AgentServiceClient<Channel>),
}

impl InProcessAgents {
    pub fn new(router: Router) -> Self {
        Self { router }
    }

    /// Sends `request` with `send` to whoever answers it now, in the span a gRPC server would
    /// make for it (the finish report continues the try's trace), counted like a gRPC call.
    /// UNAVAILABLE while nobody leads, as over gRPC: the agent retries.
    async fn answer<T, U, Fut>(
        &self,
        method: &str,
        request: Request<T>,
        send: impl FnOnce(Target, Request<T>) -> Fut,
    ) -> Result<Response<U>, Status>
    where
        Fut: Future<Output = Result<Response<U>, Status>>,
    {
        let started = Instant::now();
        let path = format!("/goflow.v1.AgentService/{method}");
        let span = goflow_telemetry::call_span(&path, request.metadata().as_ref());
        let target = match self.router.current() {
            Route::Local { api, .. } => Ok(Target::Engine(api)),
            Route::Forward { channel, .. } => Ok(Target::Leader(AgentServiceClient::new(channel))),
            Route::NoLeader(why) => Err(Status::unavailable(format!(
                "no coordinator leads right now ({why}); try again"
            ))),
        };
        let mut request = request;
        // The caller is this process's embedded agent (not sent on when passed to a leader).
        request
            .extensions_mut()
            .insert(crate::agent_identity::Vouched::Embedded);
        let answer = match target {
            Ok(target) => send(target, request).instrument(span).await,
            Err(status) => Err(status),
        };
        if let Some(metrics) = self.router.metrics() {
            let code = answer.as_ref().err().map_or(tonic::Code::Ok, Status::code);
            let code = grpc_code_name(&(code as i32).to_string());
            metrics.grpc_call(method, code, IN_PROCESS, started.elapsed());
        }
        answer
    }
}

#[tonic::async_trait]
impl LocalCoordinator for InProcessAgents {
    async fn report_start(
        &self,
        request: Request<pb::ReportStartRequest>,
    ) -> Result<Response<pb::ReportStartResponse>, Status> {
        self.answer("ReportStart", request, |target, request| async move {
            match target {
                Target::Engine(api) => api.report_start(request).await,
                Target::Leader(mut leader) => leader.report_start(request).await,
            }
        })
        .await
    }

    async fn report_finish(
        &self,
        request: Request<pb::ReportFinishRequest>,
    ) -> Result<Response<pb::ReportFinishResponse>, Status> {
        self.answer("ReportFinish", request, |target, request| async move {
            match target {
                Target::Engine(api) => api.report_finish(request).await,
                Target::Leader(mut leader) => leader.report_finish(request).await,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use goflow_agent::{DispatchQueue, MemoryQueue};
    use goflow_core::EtlDay;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::auth::Auth;
    use crate::engine::{Caller, Engine, EngineSettings, RunPlan};
    use crate::metrics::Metrics;
    use crate::store::Store;

    /// A leading coordinator's API with one task queued (`echo hi` on 2026-01-05), and the
    /// queue holding its dispatch.
    async fn leader(dir: &std::path::Path) -> (Api, Arc<MemoryQueue>) {
        let store = Store::open_dir(dir).await.unwrap();
        let queue = Arc::new(MemoryQueue::new());
        let epoch = store.next_epoch().await.unwrap();
        let engine = Engine::new(
            store.clone(),
            queue.clone(),
            EngineSettings::default(),
            "standalone",
            epoch,
            Default::default(),
        )
        .await
        .unwrap();
        let dag = "tasks:\n  - id: a\n    command: \"echo hi\"\n";
        engine
            .apply(dag, "test.yaml", false, &Caller::system())
            .await
            .unwrap();
        let day = EtlDay::parse("20260105").unwrap();
        let plan = RunPlan {
            as_then: false,
            task: "a".into(),
            from: day.into(),
            to: day.into(),
            down: false,
            up: false,
            force: false,
        };
        engine.run(&plan, &Caller::system()).await.unwrap();
        (Api::new(engine, Arc::new(Auth::new(store, false))), queue)
    }

    async fn start_request(queue: &MemoryQueue) -> pb::ReportStartRequest {
        let dispatch = queue.pop(&[goflow_agent::queue::ANY_QUEUE.into()]).await.unwrap();
        pb::ReportStartRequest {
            agent_id: "standalone".into(),
            dispatch: Some(pb::Dispatch {
                instance_id: dispatch.instance_id,
                try_number: dispatch.try_number as i32,
                epoch: dispatch.epoch,
                queue: dispatch.queue,
                priority: dispatch.priority,
            }),
        }
    }

    fn finish_request(claim: &pb::ReportStartResponse, epoch: i64) -> pb::ReportFinishRequest {
        pb::ReportFinishRequest {
            agent_id: "standalone".into(),
            attempt_id: claim.attempt_id.clone(),
            epoch,
            outcome: "success".into(),
            has_exit_code: true,
            exit_code: 0,
            message: String::new(),
            take_next: false,
        }
    }

    /// Claims and finishes the queued try through `agents`; the finish's answer.
    async fn claim_and_finish(
        agents: &InProcessAgents,
        start: pb::ReportStartRequest,
        with: impl Fn(&mut tonic::metadata::MetadataMap),
    ) -> Result<(pb::ReportStartResponse, pb::ReportFinishResponse), Status> {
        let epoch = start.dispatch.as_ref().unwrap().epoch;
        let mut request = Request::new(start);
        with(request.metadata_mut());
        let claim = agents.report_start(request).await?.into_inner();
        assert!(claim.granted, "{claim:?}");
        assert_eq!(claim.task, "a");
        let mut request = Request::new(finish_request(&claim, epoch));
        with(request.metadata_mut());
        let finish = agents.report_finish(request).await?.into_inner();
        Ok((claim, finish))
    }

    fn count(metrics: &Metrics, series: &str) -> u64 {
        let text = metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn unavailable_without_a_leader_then_answered_by_the_leaders_engine() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let router = Router::new(None).with_metrics(metrics.clone());
        let agents = InProcessAgents::new(router.clone());
        let (api, queue) = leader(dir.path()).await;
        let start = start_request(&queue).await;

        // Starting up: nobody leads, the agent is told to retry.
        let refused = agents
            .report_start(Request::new(start.clone()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

        router.set(Route::local(api));
        let (_, finish) = claim_and_finish(&agents, start, |_| {}).await.unwrap();
        assert!(finish.accepted, "{finish:?}");

        // Counted like gRPC calls, as in-process ones.
        let series = |method: &str, code: &str| {
            format!(
                "goflow_grpc_requests_total{{method=\"{method}\",code=\"{code}\",transport=\"in_process\"}}"
            )
        };
        assert_eq!(count(&metrics, &series("ReportStart", "UNAVAILABLE")), 1);
        assert_eq!(count(&metrics, &series("ReportStart", "OK")), 1);
        assert_eq!(count(&metrics, &series("ReportFinish", "OK")), 1);
        assert!(
            !metrics.encode().contains("transport=\"grpc\""),
            "no gRPC call was made"
        );
    }

    #[tokio::test]
    async fn passes_calls_to_another_leader_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (api, queue) = leader(dir.path()).await;
        // The leader, over gRPC, asks its agents for a secret.
        let secret = "in-process-test-secret-0123456789";
        let leading = Router::new(Some(secret.into()));
        leading.set(Route::local(api));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let server = tokio::spawn(crate::server::serve_grpc(
            leading,
            listener,
            None,
            None,
            stop.clone(),
        ));
        // This coordinator follows it.
        let following = Router::new(None);
        let channel = tonic::transport::Endpoint::from_shared(address.clone())
            .unwrap()
            .connect_lazy();
        following.set(Route::Forward { address, channel });
        let agents = InProcessAgents::new(following);
        let start = start_request(&queue).await;

        let refused = claim_and_finish(&agents, start.clone(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        let bearer = format!("Bearer {secret}");
        let (_, finish) = claim_and_finish(&agents, start, |metadata| {
            metadata.insert("authorization", bearer.parse().unwrap());
        })
        .await
        .unwrap();
        assert!(finish.accepted, "{finish:?}");

        stop.cancel();
        server.await.unwrap().unwrap();
    }
}

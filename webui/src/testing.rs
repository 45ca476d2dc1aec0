//! Test support: a fake coordinator (an in-process `ControlService` with canned data, served by
//! tonic on 127.0.0.1:0) and a helper that sends one request through the router.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use goflow_proto::control_service_server::{ControlService, ControlServiceServer};
use goflow_proto::*;
use tokio_stream::Stream;
use tonic::{Response, Status};
use tower::ServiceExt;

use crate::AppState;

pub const DAY: &str = "20260110";
/// The instance whose tries have logs: `transform@DAY`, id 2.
pub const TRANSFORM_ID: i64 = 2;

/// What the fake coordinator knows. `tail_offsets` records the offset of every TailLogs call.
#[derive(Default, Clone)]
pub struct Fake {
    pub tasks: Vec<Task>,
    pub instances: Vec<Instance>,
    pub attempts: Vec<Attempt>,
    pub logs: HashMap<(i64, i32), Vec<u8>>,
    pub tail_offsets: Arc<Mutex<Vec<i64>>>,
}

fn instance(id: i64, task: &str, state: &str) -> Instance {
    Instance {
        id,
        task: task.into(),
        etl_day: DAY.into(),
        state: state.into(),
        try_number: 1,
        max_tries: 3,
        queue: "default".into(),
        created_at: 1_768_003_200_000,
        ..Default::default()
    }
}

/// One day with every state, a forced success, a hostile wait reason, and two tries with logs.
pub fn sample() -> Fake {
    let t0 = 1_768_003_200_000; // 2026-01-10 00:00:00 UTC
    let mut extract = instance(1, "extract", "success");
    extract.started_at = t0 + 1_000;
    extract.finished_at = t0 + 43_000;
    extract.has_exit_code = true;
    let mut transform = instance(TRANSFORM_ID, "transform", "running");
    transform.try_number = 2;
    transform.started_at = t0 + 60_000;
    transform.agent = "agent-1".into();
    let mut load = instance(3, "load", "waiting");
    load.try_number = 0;
    load.wait_reason = "<script>alert(1)</script> transform@20260110".into();
    let mut forced = instance(4, "backfill_marker", "success");
    forced.forced = true;
    let mut report = instance(5, "report", "failed");
    report.has_exit_code = true;
    report.exit_code = 2;
    report.message = "exit code 2".into();
    let retry = instance(6, "flaky", "up_for_retry");
    let killed = instance(7, "stuck", "killed");
    let queued = instance(8, "later", "queued");

    let first_log = b"try one\nboom\n".to_vec();
    let second_log = b"starting transform\nrow 1 <b>bold</b> & done\n".to_vec();
    Fake {
        tasks: vec![
            Task {
                id: "transform".into(),
                command: "transform.sh {{etl_day}}".into(),
                timezone: "UTC".into(),
                day_offset: -1,
                queue: "default".into(),
                priority: 5,
                depends_on: vec![TaskDependency {
                    task: "extract".into(),
                    day_offset: -1,
                }],
                ..Default::default()
            },
            Task {
                id: "extract".into(),
                schedule: "30 2 * * *".into(),
                timezone: "Europe/Berlin".into(),
                day_offset: -1,
                queue: "io".into(),
                paused: true,
                next_fire_at: t0 + 86_400_000 + 5_400_000,
                ..Default::default()
            },
        ],
        instances: vec![extract, transform, load, forced, report, retry, killed, queued],
        attempts: vec![
            Attempt {
                attempt_id: "2-1".into(),
                instance_id: TRANSFORM_ID,
                try_number: 1,
                state: "failed".into(),
                has_exit_code: true,
                exit_code: 1,
                log_bytes: first_log.len() as i64,
                ..Default::default()
            },
            Attempt {
                attempt_id: "2-2".into(),
                instance_id: TRANSFORM_ID,
                try_number: 2,
                state: "running".into(),
                started_at: t0 + 60_000,
                log_bytes: second_log.len() as i64,
                ..Default::default()
            },
        ],
        logs: HashMap::from([((TRANSFORM_ID, 1), first_log), ((TRANSFORM_ID, 2), second_log)]),
        tail_offsets: Arc::default(),
    }
}

impl Fake {
    /// Serves the fake on 127.0.0.1:0 and returns the router pointed at it.
    pub async fn start(self) -> Router {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlServiceServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        crate::router(AppState::new(&url).unwrap())
    }

    fn find(&self, id: i64, task: &str, day: &str) -> Result<&Instance, Status> {
        self.instances
            .iter()
            .find(|i| (id > 0 && i.id == id) || (i.task == task && i.etl_day == day))
            .ok_or_else(|| Status::not_found(format!("no instance {task}@{day}")))
    }
}

/// GETs `uri` through the router: the status and the body as text.
pub async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A router whose coordinator address refuses connections.
pub async fn unreachable() -> (Router, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    (crate::router(AppState::new(&url).unwrap()), url)
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ControlService for Fake {
    async fn list_tasks(&self, _: tonic::Request<ListTasksRequest>) -> Rpc<ListTasksResponse> {
        Ok(Response::new(ListTasksResponse {
            tasks: self.tasks.clone(),
        }))
    }

    async fn list_instances(
        &self,
        request: tonic::Request<ListInstancesRequest>,
    ) -> Rpc<ListInstancesResponse> {
        let day = request.into_inner().etl_day;
        let instances: Vec<Instance> = self
            .instances
            .iter()
            .filter(|i| i.etl_day == day)
            .cloned()
            .collect();
        Ok(Response::new(ListInstancesResponse {
            total: instances.len() as i64,
            instances,
        }))
    }

    async fn get_instance(&self, request: tonic::Request<GetInstanceRequest>) -> Rpc<Instance> {
        let r = request.into_inner();
        Ok(Response::new(self.find(r.id, &r.task, &r.etl_day)?.clone()))
    }

    async fn list_attempts(&self, request: tonic::Request<ListAttemptsRequest>) -> Rpc<ListAttemptsResponse> {
        let r = request.into_inner();
        let id = self.find(r.instance_id, &r.task, &r.etl_day)?.id;
        Ok(Response::new(ListAttemptsResponse {
            attempts: self
                .attempts
                .iter()
                .filter(|a| a.instance_id == id)
                .cloned()
                .collect(),
        }))
    }

    type TailLogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn tail_logs(&self, request: tonic::Request<TailLogsRequest>) -> Rpc<Self::TailLogsStream> {
        let r = request.into_inner();
        assert!(!r.follow, "the web UI never follows a log");
        self.tail_offsets.lock().unwrap().push(r.offset);
        let id = self.find(r.instance_id, &r.task, &r.etl_day)?.id;
        let log = self
            .logs
            .get(&(id, r.try_number))
            .ok_or_else(|| Status::not_found("no such try"))?;
        let mut chunks: Vec<Result<LogChunk, Status>> = log[(r.offset as usize).min(log.len())..]
            .chunks(64 * 1024)
            .enumerate()
            .map(|(n, data)| {
                Ok(LogChunk {
                    offset: r.offset + (n * 64 * 1024) as i64,
                    data: data.to_vec(),
                    try_number: r.try_number,
                    eof: false,
                })
            })
            .collect();
        chunks.push(Ok(LogChunk {
            offset: log.len() as i64,
            eof: true,
            try_number: r.try_number,
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn apply_tasks(&self, _: tonic::Request<ApplyTasksRequest>) -> Rpc<ApplyTasksResponse> {
        Err(Status::unimplemented("apply_tasks"))
    }
    async fn get_task(&self, _: tonic::Request<GetTaskRequest>) -> Rpc<Task> {
        Err(Status::unimplemented("get_task"))
    }
    async fn run(&self, _: tonic::Request<RunRequest>) -> Rpc<RunResponse> {
        Err(Status::unimplemented("run"))
    }
    async fn get_dependencies(
        &self,
        _: tonic::Request<GetDependenciesRequest>,
    ) -> Rpc<GetDependenciesResponse> {
        Err(Status::unimplemented("get_dependencies"))
    }
    async fn list_agents(&self, _: tonic::Request<ListAgentsRequest>) -> Rpc<ListAgentsResponse> {
        Err(Status::unimplemented("list_agents"))
    }
    async fn mark_success(&self, _: tonic::Request<MarkSuccessRequest>) -> Rpc<InstancesResponse> {
        Err(Status::unimplemented("mark_success"))
    }
    async fn kill(&self, _: tonic::Request<KillRequest>) -> Rpc<InstancesResponse> {
        Err(Status::unimplemented("kill"))
    }
    async fn delete_instance(&self, _: tonic::Request<DeleteInstanceRequest>) -> Rpc<InstancesResponse> {
        Err(Status::unimplemented("delete_instance"))
    }
    async fn set_paused(&self, _: tonic::Request<SetPausedRequest>) -> Rpc<Task> {
        Err(Status::unimplemented("set_paused"))
    }
    async fn do_all_job(&self, _: tonic::Request<DoAllJobRequest>) -> Rpc<RunResponse> {
        Err(Status::unimplemented("do_all_job"))
    }
    async fn list_operations(&self, _: tonic::Request<ListOperationsRequest>) -> Rpc<ListOperationsResponse> {
        Err(Status::unimplemented("list_operations"))
    }
    async fn get_version(&self, _: tonic::Request<GetVersionRequest>) -> Rpc<GetVersionResponse> {
        Err(Status::unimplemented("get_version"))
    }

    async fn list_coordinators(
        &self,
        _: tonic::Request<ListCoordinatorsRequest>,
    ) -> Rpc<ListCoordinatorsResponse> {
        Err(Status::unimplemented("list_coordinators"))
    }
}

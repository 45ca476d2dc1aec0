//! The commands against an in-process fake ControlService: real gRPC, real metadata.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use goflow_proto::{control_service_server::*, *};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{commands, connect};

type Reply<T> = Result<Response<T>, Status>;

/// Remembers the metadata it saw; its instances finish after a few polls.
#[derive(Default, Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    polls: Arc<Mutex<u32>>,
}

impl Fake {
    fn note<T>(&self, request: &Request<T>) {
        let get = |k| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        self.seen
            .lock()
            .unwrap()
            .push((get("x-goflow-client"), get("x-goflow-actor")));
    }
}

fn inst(id: i64, task: &str, state: &str, blocked: bool) -> Instance {
    Instance {
        id,
        task: task.into(),
        etl_day: "20260101".into(),
        state: state.into(),
        blocked,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ControlService for Fake {
    async fn apply_tasks(&self, _: Request<ApplyTasksRequest>) -> Reply<ApplyTasksResponse> {
        Err(Status::unimplemented(""))
    }
    async fn list_tasks(&self, _: Request<ListTasksRequest>) -> Reply<ListTasksResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_task(&self, _: Request<GetTaskRequest>) -> Reply<Task> {
        Err(Status::unimplemented(""))
    }
    async fn run(&self, request: Request<RunRequest>) -> Reply<RunResponse> {
        self.note(&request);
        let r = request.into_inner();
        if r.task != "extract" {
            return Err(Status::not_found(format!("unknown task {:?}", r.task)));
        }
        let refs = [(1, "extract"), (2, "load"), (3, "report")].map(|(id, task)| InstanceRef {
            id,
            task: task.into(),
            etl_day: r.etl_day.clone(),
        });
        Ok(Response::new(RunResponse {
            instances: refs.to_vec(),
            message: "queued".into(),
        }))
    }
    async fn list_instances(&self, request: Request<ListInstancesRequest>) -> Reply<ListInstancesResponse> {
        self.note(&request);
        let polls = {
            let mut p = self.polls.lock().unwrap();
            *p += 1;
            *p
        };
        let all = if polls < 3 {
            vec![
                inst(1, "extract", "running", false),
                inst(2, "load", "waiting", false),
                inst(3, "report", "waiting", false),
            ]
        } else {
            vec![
                inst(1, "extract", "failed", false),
                inst(2, "load", "waiting", true),
                inst(3, "report", "waiting", true),
            ]
        };
        let ids = request.into_inner().ids;
        let instances: Vec<Instance> = all.into_iter().filter(|i| ids.contains(&i.id)).collect();
        Ok(Response::new(ListInstancesResponse {
            total: instances.len() as i64,
            instances,
        }))
    }
    async fn get_instance(&self, _: Request<GetInstanceRequest>) -> Reply<Instance> {
        Err(Status::unimplemented(""))
    }
    async fn list_attempts(&self, _: Request<ListAttemptsRequest>) -> Reply<ListAttemptsResponse> {
        Err(Status::unimplemented(""))
    }
    type TailLogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
    async fn tail_logs(&self, request: Request<TailLogsRequest>) -> Reply<Self::TailLogsStream> {
        self.note(&request);
        let chunks = vec![
            Ok(LogChunk {
                offset: 0,
                data: b"hello ".to_vec(),
                try_number: 1,
                eof: false,
            }),
            Ok(LogChunk {
                offset: 6,
                data: b"\xffworld\n".to_vec(),
                try_number: 1,
                eof: true,
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn get_dependencies(&self, _: Request<GetDependenciesRequest>) -> Reply<GetDependenciesResponse> {
        Err(Status::unimplemented(""))
    }
    async fn list_agents(&self, _: Request<ListAgentsRequest>) -> Reply<ListAgentsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn mark_success(&self, _: Request<MarkSuccessRequest>) -> Reply<InstancesResponse> {
        Err(Status::unimplemented(""))
    }
    async fn kill(&self, _: Request<KillRequest>) -> Reply<InstancesResponse> {
        Err(Status::unimplemented(""))
    }
    async fn delete_instance(&self, _: Request<DeleteInstanceRequest>) -> Reply<InstancesResponse> {
        Err(Status::unimplemented(""))
    }
    async fn set_paused(&self, _: Request<SetPausedRequest>) -> Reply<Task> {
        Err(Status::unimplemented(""))
    }
    async fn do_all_job(&self, _: Request<DoAllJobRequest>) -> Reply<RunResponse> {
        Err(Status::unimplemented(""))
    }
    async fn list_operations(&self, _: Request<ListOperationsRequest>) -> Reply<ListOperationsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_version(&self, request: Request<GetVersionRequest>) -> Reply<GetVersionResponse> {
        self.note(&request);
        Ok(Response::new(GetVersionResponse {
            version: "9.9.9".into(),
            mode: "standalone".into(),
        }))
    }
    async fn list_coordinators(&self, _: Request<ListCoordinatorsRequest>) -> Reply<ListCoordinatorsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn delete_tasks(&self, _: Request<DeleteTasksRequest>) -> Reply<DeleteTasksResponse> {
        Err(Status::unimplemented(""))
    }
}

async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServiceServer::new(fake))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

fn run_args(args: &[&str]) -> commands::run::RunArgs {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    match crate::tests::parse(&all).unwrap().command {
        crate::Command::Run(args) => args,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn run_wait_reports_failed_and_blocked_and_sends_metadata() {
    let fake = Fake::default();
    let server = serve(fake.clone()).await;
    let mut client = connect(&server).await.unwrap();
    let mut out = Vec::new();
    let args = run_args(&["-j", "extract", "-d", "2026-01-01", "--down", "--wait"]);
    let err = commands::run::run(&mut client, &args, &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        crate::error_message(&err, &server),
        "3 of 3 instances did not succeed: extract 20260101 failed; load 20260101 blocked; \
         report 20260101 blocked"
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("queued\n3 instances:\nID   TASK      ETL_DAY\n1    extract   20260101\n"),
        "{text}"
    );
    assert!(
        text.contains("waiting for 3 instances to finish...\nTASK"),
        "{text}"
    );
    assert!(text.contains("extract   20260101   failed"), "{text}");
    assert_eq!(*fake.polls.lock().unwrap(), 3, "polls until nothing can change");
    let seen = fake.seen.lock().unwrap();
    let expected_actor = crate::actor_name(std::env::var("USER").ok());
    assert!(
        seen.iter()
            .all(|(c, a)| *c == format!("goflowctl/{}", crate::VERSION) && *a == expected_actor),
        "{seen:?}"
    );
}

#[tokio::test]
async fn server_errors_are_printed_in_words() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server).await.unwrap();
    let err = commands::run::run(
        &mut client,
        &run_args(&["-j", "x", "-d", "20260101"]),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        crate::error_message(&err, &server),
        r#"not found: unknown task "x""#
    );
}

#[tokio::test]
async fn logs_are_written_raw() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server).await.unwrap();
    let args = match crate::tests::parse(&["logs", "-j", "a", "-d", "20260101"])
        .unwrap()
        .command
    {
        crate::Command::Logs(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::logs::run(&mut client, &args, &mut out).await.unwrap();
    assert_eq!(out, b"hello \xffworld\n");
}

#[tokio::test]
async fn version_prints_both() {
    let server = serve(Fake::default()).await;
    let mut out = Vec::new();
    commands::version::run(connect(&server).await, &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "client: goflowctl {}\nserver: goflow 9.9.9 (standalone)\n",
            crate::VERSION
        )
    );
}

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
    /// Its id in ListCoordinators, to tell which fake answered.
    name: &'static str,
    /// Refuses every call with UNAVAILABLE (going away).
    unavailable: bool,
    /// Answers GetVersion but refuses ListCoordinators with UNAVAILABLE (no leader).
    no_leader: bool,
    refused: Arc<Mutex<u32>>,
}

impl Fake {
    fn named(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    fn refuse(&self, refuse: bool) -> Result<(), Status> {
        if refuse || self.unavailable {
            *self.refused.lock().unwrap() += 1;
            return Err(Status::unavailable("no leader"));
        }
        Ok(())
    }

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
        self.refuse(false)?;
        self.note(&request);
        Ok(Response::new(GetVersionResponse {
            version: "9.9.9".into(),
            mode: "standalone".into(),
        }))
    }
    async fn list_coordinators(&self, request: Request<ListCoordinatorsRequest>) -> Reply<ListCoordinatorsResponse> {
        self.refuse(self.no_leader)?;
        self.note(&request);
        let now = crate::output::now_ms();
        Ok(Response::new(ListCoordinatorsResponse {
            coordinators: vec![
                Coordinator {
                    id: self.name.into(),
                    address: "http://10.0.0.1:7070".into(),
                    leader: true,
                    token: 42,
                    last_seen_at: now - 2_000,
                    started_at: now - 60_000,
                    version: "9.9.9".into(),
                },
                Coordinator {
                    id: "other:2".into(),
                    address: "http://10.0.0.2:7070".into(),
                    leader: false,
                    token: 0,
                    last_seen_at: now - 1_000,
                    started_at: now - 30_000,
                    version: "9.9.9".into(),
                },
            ],
        }))
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

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn coordinators_args(args: &[&str]) -> commands::coordinators::CoordinatorsArgs {
    let mut all = vec!["coordinators"];
    all.extend_from_slice(args);
    match crate::tests::parse(&all).unwrap().command {
        crate::Command::Coordinators(args) => args,
        _ => unreachable!(),
    }
}

/// `goflowctl coordinators` through `--server A,B`: table and JSON.
async fn list_coordinators(servers: &str) -> (String, serde_json::Value) {
    let mut client = connect(servers).await.unwrap();
    let mut table = Vec::new();
    commands::coordinators::run(&mut client, &coordinators_args(&[]), &mut table)
        .await
        .unwrap();
    let mut json = Vec::new();
    commands::coordinators::run(&mut client, &coordinators_args(&["-o", "json"]), &mut json)
        .await
        .unwrap();
    (
        String::from_utf8(table).unwrap(),
        serde_json::from_slice(&json).unwrap(),
    )
}

#[tokio::test]
async fn coordinators_are_listed_past_a_dead_coordinator() {
    let dead = closed_port().await;
    let live = serve(Fake::named("live:1")).await;
    let (table, json) = list_coordinators(&format!("{dead},{live}")).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ADDRESS", "LEADER", "TOKEN", "LAST_SEEN", "ID", "VERSION"]
    );
    assert!(
        lines[1].starts_with("http://10.0.0.1:7070   yes      42      2s ago      live:1 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("http://10.0.0.2:7070                    1s ago      other:2 "),
        "{table}"
    );
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["address"], "http://10.0.0.1:7070");
    assert_eq!(all[0]["leader"], true);
    assert_eq!(all[0]["token"], 42);
    assert_eq!(all[0]["id"], "live:1");
    assert!(all[0]["last_seen_at"].as_str().unwrap().ends_with('Z'), "{json}");
    assert!(all[0]["started_at"].is_string(), "{json}");
    assert_eq!(all[1]["leader"], false);
}

#[tokio::test]
async fn a_coordinator_answering_unavailable_is_passed_over() {
    let refusing = Fake {
        unavailable: true,
        ..Fake::named("refusing:1")
    };
    let first = serve(refusing.clone()).await;
    let second = serve(Fake::named("live:2")).await;
    let (table, _) = list_coordinators(&format!("{first}, {second}")).await;
    assert!(table.contains(" live:2 "), "{table}");
    assert!(*refusing.refused.lock().unwrap() >= 1, "the first was not asked");
}

#[tokio::test]
async fn a_call_refused_with_unavailable_goes_to_the_next_coordinator() {
    // The first answers the probe, then has no leader when the command's call comes.
    let leaderless = Fake {
        no_leader: true,
        ..Fake::named("leaderless:1")
    };
    let first = serve(leaderless.clone()).await;
    let second = serve(Fake::named("live:2")).await;
    let (table, json) = list_coordinators(&format!("{first},{second}")).await;
    assert!(table.contains(" live:2 "), "{table}");
    assert_eq!(json[0]["id"], "live:2");
    // Once the second answered, later calls start there.
    assert_eq!(*leaderless.refused.lock().unwrap(), 1);
}

#[tokio::test]
async fn none_answering_names_them_all() {
    let (a, b) = (closed_port().await, closed_port().await);
    let err = connect(&format!("{a},{b}")).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot reach goflow at {a}, {b}: {a}: ")),
        "{err}"
    );
    assert!(err.contains(&format!("; {b}: ")), "{err}");
    assert!(err.ends_with("(is goflow running? set --server or GOFLOW_SERVER)"), "{err}");
}

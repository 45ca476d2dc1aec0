//! The commands against an in-process fake ControlService: real gRPC, real metadata.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use goflow_proto::{
    auth_service_server::*, control_service_client::ControlServiceClient, control_service_server::*, *,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{ClientMeta, commands, connect, credentials};

/// This process's metadata, without a token.
fn meta() -> ClientMeta {
    crate::client_meta(None).unwrap()
}

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
    /// Refuses calls without a known token with UNAUTHENTICATED, as a server with `--auth`.
    require_token: bool,
    /// Each call's method and `authorization` metadata (empty when none).
    auth_seen: Arc<Mutex<Vec<(&'static str, String)>>>,
    /// The last CreateToken request.
    created: Arc<Mutex<Option<CreateTokenRequest>>>,
    /// Every TailLogs request; the first follow is cut after its first chunk (a step-down).
    tails: Arc<Mutex<Vec<TailLogsRequest>>>,
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

    /// Records the call's metadata; refuses it without a known token when `require_token`.
    fn note<T>(&self, request: &Request<T>) -> Result<(), Status> {
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
        self.authorize(request, "").map(|_| ())
    }

    /// Records `authorization`; the principal and role of a known token, or the refusal a
    /// server with `--auth` answers.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
    ) -> Result<(&'static str, &'static str), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !method.is_empty() {
            self.auth_seen.lock().unwrap().push((method, header.clone()));
        }
        if !self.require_token {
            return Ok(("", ""));
        }
        match header.strip_prefix("Bearer ") {
            Some(SESSION) => Ok(("alice", "admin")),
            Some("gft_admin") => Ok(("token:admin", "admin")),
            Some("gft_viewer") => Ok(("token:viewer", "viewer")),
            Some(_) => Err(Status::unauthenticated("unknown or revoked token")),
            None => Err(Status::unauthenticated("no token")),
        }
    }

    fn need_admin<T>(&self, request: &Request<T>, method: &'static str) -> Result<(), Status> {
        match self.authorize(request, method)? {
            (_, "viewer") => Err(Status::permission_denied(format!(
                "{method} needs the admin role"
            ))),
            _ => Ok(()),
        }
    }

    /// The `authorization` values sent to `method`.
    fn sent_to(&self, method: &str) -> Vec<String> {
        self.auth_seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, h)| h.clone())
            .collect()
    }
}

/// The session token the fake's Login hands out.
const SESSION: &str = "gfs_session1";

#[tonic::async_trait]
impl AuthService for Fake {
    async fn login(&self, request: Request<LoginRequest>) -> Reply<LoginResponse> {
        // The one call that needs no token: only recorded.
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.auth_seen
            .lock()
            .unwrap()
            .push(("Login", header.unwrap_or("").to_string()));
        let r = request.into_inner();
        if r.user != "alice" || r.password != "secret" {
            return Err(Status::unauthenticated("wrong user or password"));
        }
        Ok(Response::new(LoginResponse {
            token: SESSION.into(),
            user: r.user,
            role: "admin".into(),
            expires_at: crate::output::now_ms() + 3_600_000,
        }))
    }
    async fn logout(&self, request: Request<LogoutRequest>) -> Reply<LogoutResponse> {
        self.authorize(&request, "Logout")?;
        Ok(Response::new(LogoutResponse {}))
    }
    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Reply<WhoAmIResponse> {
        let (principal, role) = self.authorize(&request, "WhoAmI")?;
        Ok(Response::new(WhoAmIResponse {
            principal: principal.into(),
            role: role.into(),
            auth_enabled: self.require_token,
        }))
    }
    async fn create_token(&self, request: Request<CreateTokenRequest>) -> Reply<CreateTokenResponse> {
        self.need_admin(&request, "CreateToken")?;
        let r = request.into_inner();
        *self.created.lock().unwrap() = Some(r.clone());
        Ok(Response::new(CreateTokenResponse {
            token: format!("gft_new_{}", r.name),
            info: Some(ApiToken {
                name: r.name,
                role: r.role,
                created_by: "alice".into(),
                created_at: crate::output::now_ms(),
                expires_at: 0,
                last_used_at: 0,
            }),
        }))
    }
    async fn list_tokens(&self, request: Request<ListTokensRequest>) -> Reply<ListTokensResponse> {
        self.need_admin(&request, "ListTokens")?;
        Ok(Response::new(ListTokensResponse {
            tokens: vec![ApiToken {
                name: "ci".into(),
                role: "operator".into(),
                created_by: "alice".into(),
                created_at: 1_767_225_600_000,
                expires_at: 0,
                last_used_at: 1_767_225_660_000,
            }],
        }))
    }
    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Reply<RevokeTokenResponse> {
        self.need_admin(&request, "RevokeToken")?;
        match request.into_inner().name.as_str() {
            "ci" => Ok(Response::new(RevokeTokenResponse {})),
            other => Err(Status::not_found(format!("no token named {other:?}"))),
        }
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
    async fn list_tasks(&self, request: Request<ListTasksRequest>) -> Reply<ListTasksResponse> {
        self.authorize(&request, "ListTasks")?;
        Ok(Response::new(ListTasksResponse::default()))
    }
    async fn get_task(&self, _: Request<GetTaskRequest>) -> Reply<Task> {
        Err(Status::unimplemented(""))
    }
    async fn run(&self, request: Request<RunRequest>) -> Reply<RunResponse> {
        self.note(&request)?;
        let r = request.into_inner();
        if r.task != "extract" {
            return Err(Status::not_found(format!("unknown task {:?}", r.task)));
        }
        let refs = [(1, "extract"), (2, "load"), (3, "report")].map(|(id, task)| InstanceRef {
            id,
            task: task.into(),
            etl_day: r.etl_day.clone(),
            ..Default::default()
        });
        Ok(Response::new(RunResponse {
            instances: refs.to_vec(),
            message: "queued".into(),
            backfill_id: 0,
        }))
    }
    async fn list_instances(&self, request: Request<ListInstancesRequest>) -> Reply<ListInstancesResponse> {
        self.note(&request)?;
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
    async fn list_instance_states(
        &self,
        _: Request<ListInstanceStatesRequest>,
    ) -> Reply<ListInstanceStatesResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_instance(&self, _: Request<GetInstanceRequest>) -> Reply<Instance> {
        Err(Status::unimplemented(""))
    }
    async fn list_attempts(&self, _: Request<ListAttemptsRequest>) -> Reply<ListAttemptsResponse> {
        Err(Status::unimplemented(""))
    }
    type TailLogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
    async fn tail_logs(&self, request: Request<TailLogsRequest>) -> Reply<Self::TailLogsStream> {
        self.note(&request)?;
        let req = request.into_inner();
        let first_follow = req.follow && !self.tails.lock().unwrap().iter().any(|r| r.follow);
        self.tails.lock().unwrap().push(req.clone());
        let mut chunks = vec![
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
        if first_follow {
            chunks[1] = Err(Status::unavailable(
                "the coordinator serving this stream stepped down",
            ));
        } else if req.offset == 6 {
            chunks.drain(..1);
        }
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
        self.authorize(&request, "GetVersion")?;
        self.note(&request)?;
        Ok(Response::new(GetVersionResponse {
            version: "9.9.9".into(),
            mode: "standalone".into(),
        }))
    }
    async fn list_coordinators(
        &self,
        request: Request<ListCoordinatorsRequest>,
    ) -> Reply<ListCoordinatorsResponse> {
        self.refuse(self.no_leader)?;
        self.note(&request)?;
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
    async fn list_calendars(
        &self,
        request: Request<goflow_proto::ListCalendarsRequest>,
    ) -> Reply<goflow_proto::ListCalendarsResponse> {
        self.note(&request)?;
        Ok(Response::new(Default::default()))
    }
    async fn get_calendar(
        &self,
        request: Request<goflow_proto::GetCalendarRequest>,
    ) -> Reply<goflow_proto::CalendarDetail> {
        self.note(&request)?;
        Err(Status::not_found("no calendars here"))
    }
    async fn clean_history(
        &self,
        _: Request<goflow_proto::CleanHistoryRequest>,
    ) -> Reply<goflow_proto::CleanHistoryResponse> {
        Err(Status::unimplemented(""))
    }
    async fn list_task_versions(
        &self,
        _: Request<goflow_proto::ListTaskVersionsRequest>,
    ) -> Reply<goflow_proto::ListTaskVersionsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_task_version(
        &self,
        _: Request<goflow_proto::GetTaskVersionRequest>,
    ) -> Reply<goflow_proto::TaskVersion> {
        Err(Status::unimplemented(""))
    }
    async fn diff_task_versions(
        &self,
        _: Request<goflow_proto::DiffTaskVersionsRequest>,
    ) -> Reply<goflow_proto::DiffTaskVersionsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn list_pools(&self, _: Request<ListPoolsRequest>) -> Reply<ListPoolsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn delete_pool(&self, _: Request<DeletePoolRequest>) -> Reply<DeletePoolResponse> {
        Err(Status::unimplemented(""))
    }
    async fn explain_instance(&self, _: Request<ExplainInstanceRequest>) -> Reply<ExplainInstanceResponse> {
        Err(Status::unimplemented(""))
    }
    async fn predict_day(
        &self,
        _: Request<goflow_proto::PredictDayRequest>,
    ) -> Reply<goflow_proto::PredictDayResponse> {
        Err(Status::unimplemented(""))
    }
    // Backfills (issue 19): not faked.
    async fn start_backfill(
        &self,
        _: Request<goflow_proto::StartBackfillRequest>,
    ) -> Reply<goflow_proto::Backfill> {
        Err(Status::unimplemented("start_backfill"))
    }
    async fn list_backfills(
        &self,
        _: Request<goflow_proto::ListBackfillsRequest>,
    ) -> Reply<goflow_proto::ListBackfillsResponse> {
        Err(Status::unimplemented("list_backfills"))
    }
    async fn get_backfill(
        &self,
        _: Request<goflow_proto::GetBackfillRequest>,
    ) -> Reply<goflow_proto::Backfill> {
        Err(Status::unimplemented("get_backfill"))
    }
    async fn pause_backfill(
        &self,
        _: Request<goflow_proto::PauseBackfillRequest>,
    ) -> Reply<goflow_proto::Backfill> {
        Err(Status::unimplemented("pause_backfill"))
    }
    async fn resume_backfill(
        &self,
        _: Request<goflow_proto::ResumeBackfillRequest>,
    ) -> Reply<goflow_proto::Backfill> {
        Err(Status::unimplemented("resume_backfill"))
    }
    async fn cancel_backfill(
        &self,
        _: Request<goflow_proto::CancelBackfillRequest>,
    ) -> Reply<goflow_proto::CancelBackfillResponse> {
        Err(Status::unimplemented("cancel_backfill"))
    }
    // Change stream (issue 21): a server from before it, so `run --wait` polls.
    type WatchInstancesStream =
        Pin<Box<dyn Stream<Item = Result<goflow_proto::InstancesChanged, Status>> + Send>>;
    async fn watch_instances(
        &self,
        _: Request<goflow_proto::WatchInstancesRequest>,
    ) -> Reply<Self::WatchInstancesStream> {
        Err(Status::unimplemented(""))
    }
    async fn list_alerts(&self, request: Request<ListAlertsRequest>) -> Reply<ListAlertsResponse> {
        self.note(&request)?;
        Ok(Response::new(ListAlertsResponse {
            alerts: vec![Alert {
                id: 1,
                task: request.get_ref().task.clone(),
                etl_day: "20260110".into(),
                kind: "failed".into(),
                try_number: 2,
                channel: "webhook".into(),
                delivery: "sent".into(),
                attempts: 1,
                ..Default::default()
            }],
        }))
    }
}

async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServiceServer::new(fake.clone()))
            .add_service(AuthServiceServer::new(fake))
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
    let mut client = connect(&server, meta()).await.unwrap();
    let mut out = Vec::new();
    let args = run_args(&["-j", "extract", "-d", "2026-01-01", "--down", "--wait"]);
    let err = commands::run::run(&mut client, &args, &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        crate::error_message(&err, &server),
        "3 of 3 instances did not succeed (1 failed, 2 blocked): extract 20260101 failed; \
         load 20260101 blocked; report 20260101 blocked (goflowctl status -d 20260101 shows them)"
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
    let mut client = connect(&server, meta()).await.unwrap();
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
    let mut client = connect(&server, meta()).await.unwrap();
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

/// A follow cut by a step-down reconnects and resumes at its byte offset: nothing twice.
#[tokio::test]
async fn a_cut_follow_resumes_where_it_was() {
    let fake = Fake::default();
    let server = serve(fake.clone()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let args = match crate::tests::parse(&["logs", "-j", "a", "-d", "20260101", "-f"])
        .unwrap()
        .command
    {
        crate::Command::Logs(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::logs::run(&mut client, &args, &mut out).await.unwrap();
    assert_eq!(out, b"hello \xffworld\n");
    let tails: Vec<_> = fake
        .tails
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.try_number, r.offset))
        .collect();
    // Cut, resumed at byte 6 of try 1, then one look for a later try.
    assert_eq!(tails, [(0, 0), (1, 6), (0, 0)]);
}

#[tokio::test]
async fn version_prints_both() {
    let server = serve(Fake::default()).await;
    let mut out = Vec::new();
    commands::version::run(connect(&server, meta()).await, &mut out)
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
    let mut client = connect(servers, meta()).await.unwrap();
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

/// A standby that answers UNAVAILABLE (it cannot reach the leader) says more than a dead
/// coordinator's connect error: after a round of both, the standby's answer is the error.
#[tokio::test]
async fn a_standby_answer_wins_over_a_dead_coordinator_connect_error() {
    let leaderless = Fake {
        no_leader: true,
        ..Fake::named("standby:1")
    };
    let standby = serve(leaderless.clone()).await;
    let dead = closed_port().await;
    let options = crate::failover::Options {
        streaming_requests: vec![],
        // One round, then the answer.
        unavailable_patience: std::time::Duration::ZERO,
    };
    for urls in [[standby.clone(), dead.clone()], [dead.clone(), standby.clone()]] {
        let failover = crate::failover::Failover::lazy(&urls, options.clone(), |e| e).unwrap();
        let mut client = ControlServiceClient::new(failover);
        let status = client
            .list_coordinators(ListCoordinatorsRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{urls:?}: {status:?}");
        assert_eq!(status.message(), "no leader", "{urls:?}: {status:?}");
    }
    assert_eq!(*leaderless.refused.lock().unwrap(), 2, "asked once per round");
}

#[tokio::test]
async fn none_answering_names_them_all() {
    let (a, b) = (closed_port().await, closed_port().await);
    let err = connect(&format!("{a},{b}"), meta())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot reach goflow at {a}, {b}: {a}: ")),
        "{err}"
    );
    assert!(err.contains(&format!("; {b}: ")), "{err}");
    assert!(
        err.ends_with("(is goflow running? set --server or GOFLOW_SERVER)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication: login, the stored session, tokens, and what a refused call says.
// ---------------------------------------------------------------------------------------------

/// A server with `--auth`.
fn auth_fake() -> Fake {
    Fake {
        require_token: true,
        ..Fake::named("auth:1")
    }
}

/// One goflowctl command, as `execute` runs it but with the credentials under `config` and the
/// password typed being `password`: (result, stdout, stderr).
async fn goflowctl(
    config: &std::path::Path,
    password: &str,
    args: &[&str],
) -> (anyhow::Result<()>, String, String) {
    let cli = crate::tests::parse(args).unwrap();
    let prompts = Mutex::new(Vec::new());
    let read_password = |prompt: &str| {
        prompts.lock().unwrap().push(prompt.to_string());
        Ok(password.to_string())
    };
    let ctx = crate::Context {
        credentials: Ok(credentials::Store::in_dir(config)),
        read_password: &read_password,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = crate::dispatch(cli, &ctx, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn error_text(result: anyhow::Result<()>, server: &str) -> String {
    crate::error_message(&result.unwrap_err(), server)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_keeps_a_session_that_later_calls_carry_until_logout() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().join("goflow");

    let (result, out, _) = goflowctl(&dir, "secret", &["--server", &server, "login", "-u", "alice"]).await;
    result.unwrap();
    assert_eq!(out, format!("logged in as alice (admin) at {server}\n"));
    assert_eq!(fake.sent_to("Login"), [""], "Login carries no token");
    assert_eq!(
        fake.sent_to("GetVersion"),
        [""],
        "nor does login's connection probe"
    );
    fake.auth_seen.lock().unwrap().clear();
    let file = dir.join("credentials");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let stored = credentials::Store::in_dir(&dir).load().unwrap();
    let session = &stored.servers[&server];
    assert_eq!(
        (session.token.as_str(), session.user.as_str()),
        (SESSION, "alice")
    );

    // Later calls, of both services, carry the session.
    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "tasks"]).await;
    result.unwrap();
    assert_eq!(out, "no tasks\n");
    let bearer = format!("Bearer {SESSION}");
    assert_eq!(fake.sent_to("ListTasks"), [bearer.as_str()]);
    assert_eq!(
        fake.sent_to("GetVersion"),
        [bearer.as_str()],
        "the connection probe too"
    );
    let (result, out, _) = goflowctl(&dir, "", &["whoami", "--server", &server]).await;
    result.unwrap();
    assert_eq!(out, format!("alice (admin) at {server}\n"));
    assert_eq!(fake.sent_to("WhoAmI"), [bearer.as_str()]);

    // Another server has no login there.
    let other = serve(auth_fake()).await;
    let (result, _, _) = goflowctl(&dir, "", &["--server", &other, "tasks"]).await;
    assert!(error_text(result, &other).starts_with(&format!("not logged in to {other}: ")));

    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "logout"]).await;
    result.unwrap();
    assert_eq!(out, format!("logged out of {server}\n"));
    assert_eq!(fake.sent_to("Logout"), [bearer]);
    assert!(
        credentials::Store::in_dir(&dir)
            .load()
            .unwrap()
            .servers
            .is_empty()
    );
    assert_eq!(mode(&file), 0o600);

    let (result, _, _) = goflowctl(&dir, "", &["--server", &server, "tasks"]).await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: run `goflowctl login -u NAME`, or pass a token with \
             --token / GOFLOW_TOKEN"
        )
    );
    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "logout"]).await;
    result.unwrap();
    assert_eq!(out, format!("not logged in to {server}\n"));
}

#[tokio::test]
async fn a_wrong_password_stores_nothing() {
    let server = serve(auth_fake()).await;
    let config = tempfile::tempdir().unwrap();
    let (result, out, _) = goflowctl(
        config.path(),
        "nope",
        &["--server", &server, "login", "-u", "alice"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!("login failed at {server}: wrong user or password")
    );
    assert_eq!(out, "");
    assert!(!config.path().join("credentials").exists());
}

#[tokio::test]
async fn a_login_through_a_list_is_kept_for_each_address() {
    let fake = auth_fake();
    let dead = closed_port().await;
    let live = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    // As the user typed them: no scheme on one, a trailing slash on the other.
    let typed = format!("{}, {}/", dead.trim_start_matches("http://"), live);
    let (result, out, _) = goflowctl(
        config.path(),
        "secret",
        &["--server", &typed, "login", "-u", "alice"],
    )
    .await;
    result.unwrap();
    assert_eq!(out, format!("logged in as alice (admin) at {dead}, {live}\n"));
    let stored = credentials::Store::in_dir(config.path()).load().unwrap();
    assert_eq!(stored.servers.keys().collect::<Vec<_>>(), {
        let mut keys = vec![&dead, &live];
        keys.sort();
        keys
    });
    // The live one alone finds its session.
    let (result, _, _) = goflowctl(config.path(), "", &["--server", &live, "tasks"]).await;
    result.unwrap();
    assert_eq!(fake.sent_to("ListTasks"), [format!("Bearer {SESSION}")]);
    // Logging out of one forgets the session under every address.
    let (result, _, _) = goflowctl(config.path(), "", &["--server", &live, "logout"]).await;
    result.unwrap();
    assert!(
        credentials::Store::in_dir(config.path())
            .load()
            .unwrap()
            .servers
            .is_empty()
    );
}

#[tokio::test]
async fn token_create_prints_only_the_token_and_the_given_token_wins() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    let (result, _, _) = goflowctl(
        config.path(),
        "secret",
        &["--server", &server, "login", "-u", "alice"],
    )
    .await;
    result.unwrap();

    let (result, out, err) = goflowctl(
        config.path(),
        "",
        &[
            "--server",
            &server,
            "--token",
            "gft_admin",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "operator",
            "--expires",
            "90d",
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(out, "gft_new_ci\n", "stdout holds the token alone");
    // The token given by flag works, with a warning that `ps` shows it.
    assert!(
        err.starts_with("goflowctl: warning: --token shows the token to every user of this machine (ps)"),
        "{err}"
    );
    assert!(err.contains("\ncreated token ci (operator, "), "{err}");
    assert!(err.contains("shown only this once"), "{err}");
    let created = fake.created.lock().unwrap().clone().unwrap();
    assert_eq!(
        (
            created.name.as_str(),
            created.role.as_str(),
            created.expires_in_ms
        ),
        ("ci", "operator", 90 * 86_400_000)
    );
    // --token won over the stored session.
    assert_eq!(fake.sent_to("CreateToken"), ["Bearer gft_admin"]);

    let (result, out, _) = goflowctl(config.path(), "", &["--server", &server, "token", "list"]).await;
    result.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ROLE", "CREATED_BY", "CREATED", "EXPIRES", "LAST_USED"]
    );
    assert!(lines[1].starts_with("ci     operator   alice        "), "{out}");
    assert_eq!(fake.sent_to("ListTokens"), [format!("Bearer {SESSION}")]);
    let (result, out, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "token", "list", "-o", "json"],
    )
    .await;
    result.unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "ci");
    assert_eq!(json[0]["expires_at"], serde_json::Value::Null);

    let (result, out, _) =
        goflowctl(config.path(), "", &["--server", &server, "token", "revoke", "ci"]).await;
    result.unwrap();
    assert_eq!(out, "revoked token ci\n");
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "token", "revoke", "nope"],
    )
    .await;
    assert_eq!(error_text(result, &server), r#"not found: no token named "nope""#);
}

#[tokio::test]
async fn refusals_say_what_to_do() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();

    // Too little role: the server's words.
    let (result, out, _) = goflowctl(
        config.path(),
        "",
        &[
            "--server",
            &server,
            "--token",
            "gft_viewer",
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "admin",
        ],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        "permission denied: CreateToken needs the admin role"
    );
    assert_eq!(out, "");

    // A token the server does not know.
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "--token", "gft_revoked", "tasks"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: it refused the token given with --token / GOFLOW_TOKEN \
             (unknown or revoked token); run `goflowctl login -u NAME`, or pass another token"
        )
    );

    // A stored session the server no longer knows: the hint names its user.
    credentials::Store::in_dir(config.path())
        .update(|c| {
            c.insert(
                std::slice::from_ref(&server),
                &credentials::Session {
                    token: "gfs_gone".into(),
                    user: "bob".into(),
                    role: "viewer".into(),
                    expires_at: 0,
                },
            )
        })
        .unwrap();
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "run", "-j", "extract", "-d", "20260101"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: it refused the session of bob (unknown or revoked token); \
             run `goflowctl login -u bob`, or pass a token with --token / GOFLOW_TOKEN"
        )
    );
}

/// `goflowctl alerts -j TASK -o json` asks ListAlerts for that task and prints its alerts.
#[tokio::test]
async fn alerts_are_listed_for_a_task() {
    let server = serve(Fake::default()).await;
    let mut client = connect(&server, meta()).await.unwrap();
    let args = match crate::tests::parse(&["alerts", "-j", "report", "-o", "json"])
        .unwrap()
        .command
    {
        crate::Command::Alerts(args) => args,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    commands::alerts::run(&mut client, &args, &mut out).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json[0]["task"], "report", "{json}");
    assert_eq!(json[0]["kind"], "failed", "{json}");
    assert_eq!(json[0]["delivery"], "sent", "{json}");
}

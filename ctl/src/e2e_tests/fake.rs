//! The fake coordinator: ControlService and AuthService with canned answers, served by tonic
//! on 127.0.0.1.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use goflow_proto::{auth_service_server::*, control_service_server::*, *};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::ClientMeta;

/// This process's metadata, without a token.
pub(super) fn meta() -> ClientMeta {
    crate::client_meta(None).unwrap()
}

pub(super) type Reply<T> = Result<Response<T>, Status>;

/// Remembers the metadata it saw; its instances finish after a few polls.
#[derive(Default, Clone)]
pub(super) struct Fake {
    pub(super) seen: Arc<Mutex<Vec<(String, String)>>>,
    pub(super) polls: Arc<Mutex<u32>>,
    /// Its id in ListCoordinators, to tell which fake answered.
    pub(super) name: &'static str,
    /// Refuses every call with UNAVAILABLE (going away).
    pub(super) unavailable: bool,
    /// Answers GetVersion but refuses ListCoordinators with UNAVAILABLE (no leader).
    pub(super) no_leader: bool,
    /// Refuses this many ListCoordinators calls with UNAVAILABLE, then answers (a takeover).
    pub(super) leaderless_calls: u32,
    pub(super) refused: Arc<Mutex<u32>>,
    /// Refuses calls without a known token with UNAUTHENTICATED, as a server with `--auth`.
    pub(super) require_token: bool,
    /// Each call's method and `authorization` metadata (empty when none).
    pub(super) auth_seen: Arc<Mutex<Vec<(&'static str, String)>>>,
    /// The last CreateToken request.
    pub(super) created: Arc<Mutex<Option<CreateTokenRequest>>>,
    /// Every TailLogs request; the first follow is cut after its first chunk (a step-down).
    pub(super) tails: Arc<Mutex<Vec<TailLogsRequest>>>,
}

impl Fake {
    pub(super) fn named(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    pub(super) fn refuse(&self, refuse: bool) -> Result<(), Status> {
        if refuse || self.unavailable {
            *self.refused.lock().unwrap() += 1;
            return Err(Status::unavailable("no leader"));
        }
        Ok(())
    }

    /// Records the call's metadata; refuses it without a known token when `require_token`.
    pub(super) fn note<T>(&self, request: &Request<T>) -> Result<(), Status> {
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
    pub(super) fn authorize<T>(
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

    pub(super) fn need_admin<T>(&self, request: &Request<T>, method: &'static str) -> Result<(), Status> {
        match self.authorize(request, method)? {
            (_, "viewer") => Err(Status::permission_denied(format!(
                "{method} needs the admin role"
            ))),
            _ => Ok(()),
        }
    }

    /// The `authorization` values sent to `method`.
    pub(super) fn sent_to(&self, method: &str) -> Vec<String> {
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
pub(super) const SESSION: &str = "gfs_session1";

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

pub(super) fn inst(id: i64, task: &str, state: &str, blocked: bool) -> Instance {
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
        let taking_over = *self.refused.lock().unwrap() < self.leaderless_calls;
        self.refuse(self.no_leader || taking_over)?;
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

pub(super) async fn serve(fake: Fake) -> String {
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

/// A port nothing listens on.
pub(super) async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

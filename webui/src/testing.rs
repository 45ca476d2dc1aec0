//! Test support: a fake coordinator (an in-process `ControlService` with canned data, and an
//! `AuthService` with a few users when authentication is on, served by tonic on 127.0.0.1:0)
//! and helpers that send one request through the router.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use goflow_proto::auth_service_server::{AuthService, AuthServiceServer};
use goflow_proto::control_service_server::{ControlService, ControlServiceServer};
use goflow_proto::*;
use tokio_stream::Stream;
use tonic::{Response, Status};
use tower::ServiceExt;

use crate::AppState;
use crate::auth::Role;

pub const DAY: &str = "20260110";
/// The instance whose tries have logs: `transform@DAY`, id 2.
pub const TRANSFORM_ID: i64 = 2;

/// What the fake coordinator knows. `tail_offsets` records the offset of every TailLogs call,
/// `calls` every changing call as `Rpc task@day flags`.
#[derive(Default, Clone)]
pub struct Fake {
    pub tasks: Vec<Task>,
    pub instances: Vec<Instance>,
    pub attempts: Vec<Attempt>,
    pub logs: HashMap<(i64, i32), Vec<u8>>,
    pub agents: Vec<Agent>,
    pub operations: Vec<Operation>,
    pub alerts: Vec<Alert>,
    pub pools: Vec<Pool>,
    pub tail_offsets: Arc<Mutex<Vec<i64>>>,
    pub calls: Arc<Mutex<Vec<String>>>,
    /// When set, every changing call is refused with this failed-precondition message.
    pub refuse: Option<String>,
    /// Answers ListInstanceStates with UNIMPLEMENTED, as a coordinator from before it.
    pub without_instance_states: bool,
    /// Authentication: `(user, password, role)`; the session token of `user` is `gfs_<user>`.
    /// Empty: authentication is off, as on a local standalone.
    pub users: Vec<(&'static str, &'static str, &'static str)>,
    /// The `authorization` metadata of every ControlService call, in order (`""` without).
    pub bearers: Arc<Mutex<Vec<String>>>,
    /// The `authorization` metadata of every Logout call.
    pub logouts: Arc<Mutex<Vec<String>>>,
    /// TailLogs streams end in UNAVAILABLE instead of their eof, as when the coordinator
    /// serving them steps down.
    pub cut_tails: bool,
    /// Every WatchInstances call: its request, and the sender of its stream (the initial
    /// message already sent), for a test to report changes and to see the stream closed.
    pub watches: Arc<Mutex<Vec<(WatchInstancesRequest, WatchSender)>>>,
}

/// The fake coordinator's end of one WatchInstances stream.
pub type WatchSender = tokio::sync::mpsc::Sender<Result<InstancesChanged, Status>>;

/// The users of [`Fake::with_auth`].
pub const USERS: [(&str, &str, &str); 4] = [
    ("vera", "vera-pw", "viewer"),
    ("otto", "otto-pw", "operator"),
    ("edda", "edda-pw", "editor"),
    ("ada", "ada-pw", "admin"),
];

/// A request's role, put in its extensions by the fake's authentication.
#[derive(Clone, Copy)]
struct CallerRole((Role, &'static str));

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
    extract.timings = Some(goflow_proto::InstanceTimings {
        waiting_upstreams: 1_000,
        running: 42_000,
        tries: vec![goflow_proto::TryTiming {
            try_number: 1,
            running: 42_000,
        }],
        ..Default::default()
    });
    let mut transform = instance(TRANSFORM_ID, "transform", "running");
    transform.try_number = 2;
    transform.started_at = t0 + 60_000;
    transform.agent = "agent-1".into();
    let mut load = instance(3, "load", "waiting");
    load.try_number = 0;
    load.wait_reason = "<script>alert(1)</script> transform@20260110".into();
    let mut forced = instance(4, "backfill_marker", "success");
    forced.forced = true;
    forced.marked_by = "alice".into();
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
                    ..Default::default()
                }],
                version: 2,
                dag: "shop".into(),
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
                catchup: "all".into(),
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
                definition_version: 1,
                ..Default::default()
            },
            Attempt {
                attempt_id: "2-2".into(),
                instance_id: TRANSFORM_ID,
                try_number: 2,
                state: "running".into(),
                started_at: t0 + 60_000,
                log_bytes: second_log.len() as i64,
                definition_version: 2,
                ..Default::default()
            },
        ],
        logs: HashMap::from([((TRANSFORM_ID, 1), first_log), ((TRANSFORM_ID, 2), second_log)]),
        agents: vec![
            Agent {
                id: "agent-1".into(),
                host: "worker-a".into(),
                slots: 4,
                queues: vec!["default".into(), "io".into()],
                running: 1,
                last_heartbeat_at: t0,
                state: "alive".into(),
                version: "0.1.0".into(),
                draining: true,
                ..Default::default()
            },
            Agent {
                id: "agent-2".into(),
                host: "worker-b".into(),
                slots: 2,
                queues: vec!["default".into()],
                last_heartbeat_at: t0 - 600_000,
                state: "dead".into(),
                ..Default::default()
            },
        ],
        operations: vec![
            Operation {
                id: 2,
                at: t0 + 5_000,
                actor: "alice".into(),
                client: "goflowctl/0.1.0 from 127.0.0.1:5000".into(),
                action: "run".into(),
                target: "transform@20260110".into(),
                detail: "--down".into(),
            },
            Operation {
                id: 1,
                at: t0,
                actor: "bob".into(),
                client: "webui/0.1.0".into(),
                action: "apply".into(),
                target: "dag.yaml".into(),
                detail: "created [extract, transform]".into(),
            },
        ],
        alerts: vec![
            Alert {
                id: 2,
                task: "transform".into(),
                etl_day: DAY.into(),
                kind: "deadline".into(),
                try_number: 0,
                channel: "oncall".into(),
                instance_state: "waiting".into(),
                message: "transform of 20260110 was due by 2026-01-11T08:00:00Z".into(),
                delivery: "failed".into(),
                attempts: 10,
                last_error: "hooks.example answered 500".into(),
                created_at: t0 + 9_000,
                ..Default::default()
            },
            Alert {
                id: 1,
                task: "extract".into(),
                etl_day: DAY.into(),
                kind: "failed".into(),
                try_number: 2,
                channel: "webhook".into(),
                instance_state: "failed".into(),
                message: "try 2 of 2 failed with exit code 3".into(),
                delivery: "sent".into(),
                attempts: 1,
                created_at: t0 + 1_000,
                sent_at: t0 + 1_200,
                ..Default::default()
            },
        ],
        pools: vec![],
        tail_offsets: Arc::default(),
        calls: Arc::default(),
        refuse: None,
        without_instance_states: false,
        users: vec![],
        bearers: Arc::default(),
        logouts: Arc::default(),
        cut_tails: false,
        watches: Arc::default(),
    }
}

impl Fake {
    /// Authentication on, with [`USERS`].
    pub fn with_auth(mut self) -> Self {
        self.users = USERS.to_vec();
        self
    }

    /// Serves the fake on 127.0.0.1:0 and returns the router pointed at it.
    pub async fn start(self) -> Router {
        self.start_as(false).await
    }

    /// [`Fake::start`] for a web UI that listens beyond loopback (`require_auth`).
    pub async fn start_as(self, require_auth: bool) -> Router {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let auth = self.clone();
        let gatekeeper = self.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlServiceServer::with_interceptor(self, move |request| {
                    gatekeeper.authenticate(request)
                }))
                .add_service(AuthServiceServer::new(auth))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        crate::router(AppState::new(&url).unwrap().with_required_auth(require_auth))
    }

    /// The user whose session token the call carries: name and role.
    fn caller(&self, metadata: &tonic::metadata::MetadataMap) -> Option<(&'static str, &'static str)> {
        let bearer = metadata.get("authorization")?.to_str().ok()?;
        let token = bearer.strip_prefix("Bearer gfs_")?;
        self.users
            .iter()
            .find(|(name, _, _)| *name == token)
            .map(|(name, _, role)| (*name, *role))
    }

    /// As the coordinator does with authentication on: no valid token, no call.
    fn authenticate(&self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.bearers.lock().unwrap().push(bearer);
        if self.users.is_empty() {
            return Ok(request);
        }
        let (name, role) = self
            .caller(request.metadata())
            .ok_or_else(|| Status::unauthenticated("log in first"))?;
        request
            .extensions_mut()
            .insert(CallerRole((crate::auth::parse_role(role), name)));
        Ok(request)
    }

    /// Refuses a call whose caller's role is below `needed` (authentication on).
    fn allow<T>(&self, request: &tonic::Request<T>, needed: &str) -> Result<(), Status> {
        if self.users.is_empty() {
            return Ok(());
        }
        let needed = crate::auth::parse_role(needed);
        match request.extensions().get::<CallerRole>().map(|r| r.0) {
            Some((role, _)) if role.allows(needed) => Ok(()),
            // As the coordinator words it.
            Some((role, name)) => Err(Status::permission_denied(format!(
                "{name} is {role}; this needs the {needed} role"
            ))),
            None => Err(Status::unauthenticated("log in first")),
        }
    }

    /// Records a changing call, or refuses it when the fake is set to.
    fn record(&self, call: String) -> Result<(), Status> {
        self.calls.lock().unwrap().push(call);
        match &self.refuse {
            Some(message) => Err(Status::failed_precondition(message.clone())),
            None => Ok(()),
        }
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
    get_with(app, uri, &[]).await
}

/// GETs `uri` with extra headers.
pub async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The CSRF token the tests' browser holds.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

/// What a POST answered: status, `Location`, `Set-Cookie` values, body.
pub struct Posted {
    pub status: StatusCode,
    pub location: String,
    pub cookies: Vec<String>,
    pub body: String,
}

impl Posted {
    /// The flash message the answer sets, decoded.
    pub fn flash(&self) -> String {
        let cookie = self
            .cookies
            .iter()
            .find_map(|c| c.strip_prefix("goflow_flash="))
            .unwrap_or_else(|| panic!("no flash in {:?}", self.cookies));
        let value = cookie.split(';').next().unwrap();
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }
}

/// POSTs a form as a browser of this site would: the CSRF cookie and the same token in the
/// form (`csrf` is added unless `with_token` is false).
pub async fn post(app: &Router, uri: &str, fields: &[(&str, &str)], with_token: bool) -> Posted {
    post_with(app, uri, fields, with_token, &[]).await
}

/// [`post`] with more headers (a session cookie is added to the CSRF one: `("cookie", ...)`).
pub async fn post_with(
    app: &Router,
    uri: &str,
    fields: &[(&str, &str)],
    with_token: bool,
    headers: &[(&str, &str)],
) -> Posted {
    let mut form = form_urlencoded::Serializer::new(String::new());
    if with_token {
        form.append_pair("csrf", TOKEN);
    }
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    let mut cookie = format!("goflow_csrf={TOKEN}");
    let mut request = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("cookie") {
            cookie = format!("{cookie}; {value}");
        } else {
            request = request.header(*name, *value);
        }
    }
    let request = request
        .header("cookie", cookie)
        .body(Body::from(form.finish()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let header = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let location = header("location").into_iter().next().unwrap_or_default();
    let cookies = header("set-cookie");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Posted {
        status,
        location,
        cookies,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
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
        // As the coordinator answers: newest day first, filtered, limited.
        let r = request.into_inner();
        let mut instances: Vec<Instance> = self
            .instances
            .iter()
            .filter(|i| r.etl_day.is_empty() || i.etl_day == r.etl_day)
            .filter(|i| r.task.is_empty() || i.task == r.task)
            .filter(|i| r.states.is_empty() || r.states.contains(&i.state))
            .cloned()
            .collect();
        instances.sort_by(|a, b| b.etl_day.cmp(&a.etl_day).then(a.id.cmp(&b.id)));
        let total = if r.skip_total { 0 } else { instances.len() as i64 };
        if r.limit > 0 {
            instances.truncate(r.limit as usize);
        }
        Ok(Response::new(ListInstancesResponse { instances, total }))
    }

    async fn list_instance_states(
        &self,
        request: tonic::Request<ListInstanceStatesRequest>,
    ) -> Rpc<ListInstanceStatesResponse> {
        if self.without_instance_states {
            return Err(Status::unimplemented("list_instance_states"));
        }
        let r = request.into_inner();
        let day = |text: &str| {
            goflow_core::EtlDay::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let (from, to) = (day(&r.from_day)?, day(&r.to_day)?);
        let mut groups: std::collections::BTreeMap<(String, String, bool), Vec<i32>> = Default::default();
        for i in &self.instances {
            let at = day(&i.etl_day)?;
            if (from..=to).contains(&at) {
                let key = (i.task.clone(), i.state.clone(), i.forced);
                groups.entry(key).or_default().push(from.days_until(at) as i32);
            }
        }
        let states = groups
            .into_iter()
            .map(|((task, state, forced), offsets)| InstanceStates {
                task,
                state,
                forced,
                offsets,
                periods: vec![],
            })
            .collect();
        Ok(Response::new(ListInstanceStatesResponse { states }))
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
        chunks.push(if self.cut_tails {
            Err(Status::unavailable(
                "the coordinator serving this stream stepped down",
            ))
        } else {
            Ok(LogChunk {
                offset: log.len() as i64,
                eof: true,
                try_number: r.try_number,
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn apply_tasks(&self, request: tonic::Request<ApplyTasksRequest>) -> Rpc<ApplyTasksResponse> {
        self.allow(&request, "editor")?;
        let r = request.into_inner();
        self.record(format!("ApplyTasks dry_run={} {}", r.dry_run, r.document))?;
        if r.document.contains("nope") {
            return Err(Status::invalid_argument(format!(
                "{}: task \"x\" depends on unknown task \"nope\"",
                r.source_name
            )));
        }
        Ok(Response::new(ApplyTasksResponse {
            updated: vec!["transform".into()],
            changes: vec![FieldChange {
                task: "transform".into(),
                field: "command".into(),
                old_value: "transform.sh {{etl_day}}".into(),
                new_value: "transform.sh --all".into(),
            }],
            ..Default::default()
        }))
    }
    async fn get_task(&self, request: tonic::Request<GetTaskRequest>) -> Rpc<Task> {
        let id = request.into_inner().id;
        self.tasks
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("unknown task {id:?}")))
    }
    async fn run(&self, request: tonic::Request<RunRequest>) -> Rpc<RunResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        let flags = [
            ("force", r.force),
            ("down", r.down),
            ("up", r.up),
            ("dry_run", r.dry_run),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" ");
        let days = if r.etl_day.is_empty() {
            format!("{}..{}", r.from_day, r.to_day)
        } else {
            r.etl_day.clone()
        };
        self.record(format!("Run {}@{days} {flags}", r.task).trim().to_string())?;
        // A range with its downstream: the task, transform and load on every day, the first
        // day's existing. Else two days per request in a range, one of them existing.
        let instances = if r.etl_day.is_empty() && r.from_day != r.to_day && r.down {
            let (from, to) = (
                goflow_core::EtlDay::parse(&r.from_day).unwrap(),
                goflow_core::EtlDay::parse(&r.to_day).unwrap(),
            );
            let mut all = vec![];
            let mut day = from;
            while day <= to {
                for (n, task) in [r.task.as_str(), "transform", "load"].into_iter().enumerate() {
                    all.push(InstanceRef {
                        id: if day == from { n as i64 + 100 } else { 0 },
                        task: task.to_string(),
                        etl_day: day.compact(),
                        ..Default::default()
                    });
                }
                day = day.offset(1);
            }
            all
        } else if r.etl_day.is_empty() && r.from_day != r.to_day {
            vec![
                InstanceRef {
                    id: 0,
                    task: r.task.clone(),
                    etl_day: r.from_day.clone(),
                    ..Default::default()
                },
                InstanceRef {
                    id: 9,
                    task: r.task.clone(),
                    etl_day: r.to_day.clone(),
                    ..Default::default()
                },
            ]
        } else {
            vec![InstanceRef {
                id: 2,
                task: r.task.clone(),
                etl_day: r.etl_day.clone(),
                ..Default::default()
            }]
        };
        Ok(Response::new(RunResponse {
            backfill_id: 0,
            message: format!("{} instances to run", instances.len()),
            instances,
        }))
    }
    async fn get_dependencies(
        &self,
        request: tonic::Request<GetDependenciesRequest>,
    ) -> Rpc<GetDependenciesResponse> {
        let task = request.into_inner().task;
        let edges = self
            .tasks
            .iter()
            .flat_map(|t| {
                t.depends_on.iter().map(|d| DependencyEdge {
                    upstream: d.task.clone(),
                    downstream: t.id.clone(),
                    day_offset: d.day_offset,
                })
            })
            .filter(|e| e.upstream == task || e.downstream == task)
            .collect();
        Ok(Response::new(GetDependenciesResponse {
            edges,
            ..Default::default()
        }))
    }
    async fn list_agents(&self, _: tonic::Request<ListAgentsRequest>) -> Rpc<ListAgentsResponse> {
        Ok(Response::new(ListAgentsResponse {
            agents: self.agents.clone(),
        }))
    }
    async fn mark_success(&self, request: tonic::Request<MarkSuccessRequest>) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("MarkSuccess {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: "1 instances marked success".into(),
            ..Default::default()
        }))
    }
    async fn kill(&self, request: tonic::Request<KillRequest>) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("Kill {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: format!("{}@{} killed (was running)", r.task, r.etl_day),
            ..Default::default()
        }))
    }
    async fn delete_instance(
        &self,
        request: tonic::Request<DeleteInstanceRequest>,
    ) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("DeleteInstance {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: format!("{}@{} deleted with its tries and logs", r.task, r.etl_day),
            ..Default::default()
        }))
    }
    async fn set_paused(&self, request: tonic::Request<SetPausedRequest>) -> Rpc<Task> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("SetPaused {} {}", r.task, r.paused))?;
        let mut task = self
            .get_task(tonic::Request::new(GetTaskRequest { id: r.task }))
            .await?
            .into_inner();
        task.paused = r.paused;
        Ok(Response::new(task))
    }
    async fn do_all_job(&self, _: tonic::Request<DoAllJobRequest>) -> Rpc<RunResponse> {
        Err(Status::unimplemented("do_all_job"))
    }
    async fn list_operations(&self, _: tonic::Request<ListOperationsRequest>) -> Rpc<ListOperationsResponse> {
        Ok(Response::new(ListOperationsResponse {
            operations: self.operations.clone(),
        }))
    }
    async fn list_calendars(
        &self,
        _: tonic::Request<goflow_proto::ListCalendarsRequest>,
    ) -> Rpc<goflow_proto::ListCalendarsResponse> {
        Ok(Response::new(Default::default()))
    }

    async fn get_calendar(
        &self,
        request: tonic::Request<goflow_proto::GetCalendarRequest>,
    ) -> Rpc<goflow_proto::CalendarDetail> {
        Err(Status::not_found(format!(
            "unknown calendar {:?}",
            request.get_ref().id
        )))
    }

    async fn list_alerts(&self, _: tonic::Request<ListAlertsRequest>) -> Rpc<ListAlertsResponse> {
        Ok(Response::new(ListAlertsResponse {
            alerts: self.alerts.clone(),
        }))
    }
    async fn list_pools(&self, _: tonic::Request<ListPoolsRequest>) -> Rpc<ListPoolsResponse> {
        Ok(Response::new(ListPoolsResponse {
            pools: self.pools.clone(),
        }))
    }
    async fn delete_pool(&self, _: tonic::Request<DeletePoolRequest>) -> Rpc<DeletePoolResponse> {
        Err(Status::unimplemented("delete_pool"))
    }
    /// A waiting instance waits for the running `transform`; any other is its own root cause.
    async fn explain_instance(
        &self,
        request: tonic::Request<ExplainInstanceRequest>,
    ) -> Rpc<ExplainInstanceResponse> {
        let r = request.into_inner();
        let found = self.find(0, &r.task, &r.etl_day)?;
        let hop = |i: &Instance, reason: &str| ExplainHop {
            task: i.task.clone(),
            period: i.etl_day.clone(),
            state: i.state.clone(),
            reason: reason.into(),
        };
        let (root, line) = if found.state == "waiting" {
            let transform = self.find(TRANSFORM_ID, "", "")?;
            let reason = "running on agent agent-1 since 00:01, try 2 of 3";
            let line = format!("waits for transform@{} ({reason})", transform.etl_day);
            (hop(transform, reason), line)
        } else {
            // As the coordinator words an instance that is its own root cause.
            let reason = match found.state.as_str() {
                "running" => "running on agent agent-1 since 00:01, try 2 of 3".to_string(),
                "failed" | "killed" => format!(
                    "{}: exit code {}, try {} of {}, at 00:02",
                    found.state, found.exit_code, found.try_number, found.max_tries
                ),
                "queued" => "queued, waiting for an agent to claim it for 5s".into(),
                "up_for_retry" => "up_for_retry: try 2 of 3 due at 00:05".into(),
                "success" => "succeeded at 00:01".into(),
                other => other.into(),
            };
            (hop(found, &reason), reason)
        };
        Ok(Response::new(ExplainInstanceResponse {
            instance: format!("{}@{}", found.task, found.etl_day),
            state: found.state.clone(),
            chain: vec![hop(found, "waits for 1 upstream"), root.clone()],
            root_causes: vec![root],
            lines: vec![line],
            ..Default::default()
        }))
    }

    async fn predict_day(
        &self,
        _: tonic::Request<goflow_proto::PredictDayRequest>,
    ) -> Rpc<goflow_proto::PredictDayResponse> {
        Err(Status::unimplemented("predict_day"))
    }

    // Backfills (issue 19): two of them, 7 running and 8 paused.
    async fn start_backfill(
        &self,
        request: tonic::Request<goflow_proto::StartBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        let down = if r.down { " down" } else { "" };
        self.record(format!(
            "StartBackfill {}@{}..{}{down}",
            r.task, r.from_day, r.to_day
        ))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id: 7,
            task: r.task,
            message: "backfill 7: 10 instances to run".into(),
            ..Default::default()
        }))
    }
    async fn list_backfills(
        &self,
        request: tonic::Request<goflow_proto::ListBackfillsRequest>,
    ) -> Rpc<goflow_proto::ListBackfillsResponse> {
        self.allow(&request, "viewer")?;
        let backfill = |id: i64, state: &str, parallelism: i64| goflow_proto::Backfill {
            id,
            task: "extract".into(),
            from_day: "20260101".into(),
            to_day: "20260110".into(),
            state: state.into(),
            parallelism,
            created_by: "alice".into(),
            counts: vec![
                goflow_proto::BackfillStateCount {
                    state: "success".into(),
                    count: 4,
                },
                goflow_proto::BackfillStateCount {
                    state: "waiting".into(),
                    count: 6,
                },
            ],
            finished: 4,
            total: 10,
            ..Default::default()
        };
        Ok(tonic::Response::new(goflow_proto::ListBackfillsResponse {
            backfills: vec![backfill(8, "paused", 0), backfill(7, "running", 2)],
        }))
    }
    async fn get_backfill(
        &self,
        _: tonic::Request<goflow_proto::GetBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        Err(Status::unimplemented("get_backfill"))
    }
    async fn pause_backfill(
        &self,
        request: tonic::Request<goflow_proto::PauseBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("PauseBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id,
            message: format!("backfill {id} paused"),
            ..Default::default()
        }))
    }
    async fn resume_backfill(
        &self,
        request: tonic::Request<goflow_proto::ResumeBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("ResumeBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id,
            message: format!("backfill {id} resumed"),
            ..Default::default()
        }))
    }
    async fn cancel_backfill(
        &self,
        request: tonic::Request<goflow_proto::CancelBackfillRequest>,
    ) -> Rpc<goflow_proto::CancelBackfillResponse> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("CancelBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::CancelBackfillResponse {
            message: format!(
                "backfill {id} cancelled: killed 1 running, 6 not started (6 waiting), now killed"
            ),
            ..Default::default()
        }))
    }

    // Change stream (issue 21)
    type WatchInstancesStream =
        Pin<Box<dyn Stream<Item = Result<goflow_proto::InstancesChanged, Status>> + Send>>;
    async fn watch_instances(
        &self,
        request: tonic::Request<goflow_proto::WatchInstancesRequest>,
    ) -> Rpc<Self::WatchInstancesStream> {
        self.allow(&request, "viewer")?;
        let r = request.into_inner();
        // As the coordinator answers: first the whole watched set, later what the test sends.
        let instances = self
            .instances
            .iter()
            .filter(|i| r.ids.is_empty() || r.ids.contains(&i.id))
            .filter(|i| r.etl_day.is_empty() || i.etl_day == r.etl_day)
            .filter(|i| r.task.is_empty() || i.task == r.task)
            .cloned()
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(InstancesChanged {
            instances,
            gone: vec![],
            initial: true,
        }))
        .expect("room for the first message");
        self.watches.lock().unwrap().push((r, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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

    async fn list_task_versions(
        &self,
        request: tonic::Request<goflow_proto::ListTaskVersionsRequest>,
    ) -> Rpc<goflow_proto::ListTaskVersionsResponse> {
        let task = request.into_inner().task;
        Ok(Response::new(goflow_proto::ListTaskVersionsResponse {
            versions: fake_versions(&task)?,
        }))
    }

    async fn get_task_version(
        &self,
        request: tonic::Request<goflow_proto::GetTaskVersionRequest>,
    ) -> Rpc<goflow_proto::TaskVersion> {
        let r = request.into_inner();
        let versions = fake_versions(&r.task)?;
        let wanted = if r.version == 0 {
            versions.len() as i64
        } else {
            r.version
        };
        versions
            .into_iter()
            .find(|v| v.version == wanted)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("task {:?} has no version {wanted}", r.task)))
    }

    async fn diff_task_versions(
        &self,
        request: tonic::Request<goflow_proto::DiffTaskVersionsRequest>,
    ) -> Rpc<goflow_proto::DiffTaskVersionsResponse> {
        let r = request.into_inner();
        fake_versions(&r.task)?;
        let (from, to) = match (r.from_version, r.to_version) {
            (0, _) => (1, 2),
            (a, 0) => (a, 2),
            (a, b) => (a, b),
        };
        if from > 2 || to > 2 {
            return Err(Status::not_found(format!(
                "task {:?} has no version {}",
                r.task,
                from.max(to)
            )));
        }
        let changes = if from == to {
            vec![]
        } else {
            vec![goflow_proto::FieldChange {
                task: r.task.clone(),
                field: "command".into(),
                old_value: "transform-old.sh {{etl_day}}".into(),
                new_value: "transform.sh {{etl_day}}".into(),
            }]
        };
        Ok(Response::new(goflow_proto::DiffTaskVersionsResponse {
            task: r.task,
            from_version: from,
            to_version: to,
            changes,
        }))
    }

    async fn delete_tasks(&self, request: tonic::Request<DeleteTasksRequest>) -> Rpc<DeleteTasksResponse> {
        self.allow(&request, "editor")?;
        let r = request.into_inner();
        self.record(format!("DeleteTasks {}", r.ids.join(",")))?;
        Ok(Response::new(DeleteTasksResponse {
            message: format!("deleted {}", r.ids.join(", ")),
            deleted: r.ids,
        }))
    }

    async fn clean_history(
        &self,
        _: tonic::Request<goflow_proto::CleanHistoryRequest>,
    ) -> Rpc<goflow_proto::CleanHistoryResponse> {
        Err(Status::unimplemented("clean_history"))
    }
}

#[tonic::async_trait]
impl AuthService for Fake {
    async fn login(&self, request: tonic::Request<LoginRequest>) -> Rpc<LoginResponse> {
        if self.users.is_empty() {
            return Err(Status::failed_precondition("authentication is off"));
        }
        let r = request.into_inner();
        let (user, _, role) = self
            .users
            .iter()
            .find(|(name, password, _)| *name == r.user && *password == r.password)
            .ok_or_else(|| Status::unauthenticated("wrong user or password"))?;
        Ok(Response::new(LoginResponse {
            token: format!("gfs_{user}"),
            user: user.to_string(),
            role: role.to_string(),
            expires_at: chrono::Utc::now().timestamp_millis() + 3_600_000,
        }))
    }

    async fn logout(&self, request: tonic::Request<LogoutRequest>) -> Rpc<LogoutResponse> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.logouts.lock().unwrap().push(bearer);
        Ok(Response::new(LogoutResponse {}))
    }

    async fn who_am_i(&self, request: tonic::Request<WhoAmIRequest>) -> Rpc<WhoAmIResponse> {
        if self.users.is_empty() {
            return Ok(Response::new(WhoAmIResponse::default()));
        }
        let (user, role) = self
            .caller(request.metadata())
            .ok_or_else(|| Status::unauthenticated("log in first"))?;
        Ok(Response::new(WhoAmIResponse {
            principal: user.into(),
            role: role.into(),
            auth_enabled: true,
        }))
    }

    async fn create_token(&self, _: tonic::Request<CreateTokenRequest>) -> Rpc<CreateTokenResponse> {
        Err(Status::unimplemented("create_token"))
    }

    async fn list_tokens(&self, _: tonic::Request<ListTokensRequest>) -> Rpc<ListTokensResponse> {
        Err(Status::unimplemented("list_tokens"))
    }

    async fn revoke_token(&self, _: tonic::Request<RevokeTokenRequest>) -> Rpc<RevokeTokenResponse> {
        Err(Status::unimplemented("revoke_token"))
    }
}

/// Two versions of `transform` (the second current); other tasks have none.
fn fake_versions(task: &str) -> Result<Vec<goflow_proto::TaskVersion>, Status> {
    if task != "transform" {
        return Err(Status::not_found(format!(
            "unknown task {task:?} (it has no versions)"
        )));
    }
    let version = |n: i64, command: &str, changes: &str| goflow_proto::TaskVersion {
        task: task.into(),
        version: n,
        created_at: 1_767_225_600_000 + n * 3_600_000,
        actor: "alice".into(),
        client: "goflowctl".into(),
        source: "dag.yaml".into(),
        changes: changes.into(),
        definition: format!("id: transform\ndag: shop\ncommand: {command} {{{{etl_day}}}}\n"),
        current: n == 2,
    };
    Ok(vec![
        version(1, "transform-old.sh", ""),
        version(2, "transform.sh", "command"),
    ])
}

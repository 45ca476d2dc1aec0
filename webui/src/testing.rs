//! Test support: a fake coordinator (an in-process `ControlService` with canned data, and an
//! `AuthService` with a few users when authentication is on, served by tonic on 127.0.0.1:0)
//! and helpers that send one request through the router.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use goflow_proto::auth_service_server::AuthServiceServer;
use goflow_proto::control_service_server::ControlServiceServer;
use goflow_proto::*;
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

mod fake_auth;
mod fake_control;

/// What every fake service method returns.
type Rpc<T> = Result<Response<T>, Status>;

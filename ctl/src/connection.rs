//! Reaching the coordinators: the metadata every call carries, connecting with failover to
//! the first that answers, and the words for what went wrong on the way.

use std::{error::Error as _, fmt, io, time::Duration};

use goflow_proto::{auth_service_client::AuthServiceClient, control_service_client::ControlServiceClient};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::Interceptor,
    transport::Endpoint,
};

use crate::credentials::{self, TokenSource};
use crate::failover::{self, Failover};
use crate::{AuthClient, Client, VERSION, tls};

/// How long a coordinator gets to answer before the next one in `--server` is tried.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call is retried while every coordinator answers UNAVAILABLE (no leader: a
/// takeover takes a few seconds).
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(15);

/// `host:port` becomes `http://host:port`; a URL with a scheme is kept. No trailing slash.
pub fn normalize_server(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// Adds `x-goflow-client` and `x-goflow-actor` to every call, for the operations log,
/// `authorization: Bearer <token>` when there is a token, and `traceparent` when traces are
/// exported.
#[derive(Clone, Debug)]
pub struct ClientMeta {
    client: AsciiMetadataValue,
    actor: AsciiMetadataValue,
    authorization: Option<AsciiMetadataValue>,
}

impl ClientMeta {
    pub fn new(actor: Option<String>) -> Self {
        let actor = actor_name(actor);
        Self {
            client: MetadataValue::try_from(format!("goflowctl/{VERSION}")).expect("the version is ASCII"),
            actor: MetadataValue::try_from(actor).unwrap_or(MetadataValue::from_static("unknown")),
            authorization: None,
        }
    }

    /// Every call also carries `authorization: Bearer <token>` (marked sensitive, so it is
    /// never logged). A token that cannot be metadata is refused.
    pub fn with_token(mut self, token: &str) -> anyhow::Result<Self> {
        credentials::check_token(token)?;
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }
}

impl Interceptor for ClientMeta {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("x-goflow-client", self.client.clone());
        metadata.insert("x-goflow-actor", self.actor.clone());
        if let Some(authorization) = &self.authorization {
            metadata.insert("authorization", authorization.clone());
        }
        // W3C trace context of the command's span, when traces are exported.
        goflow_telemetry::inject(metadata);
        Ok(request)
    }
}

/// The acting user as goflowctl claims it: `local:NAME`, NAME being the OS user (`$USER`, or
/// the account of this process's uid). The `local:` mark says that no one checked it: a
/// coordinator with authentication off records it as is, and one with authentication on
/// ignores it for the token's principal.
pub fn actor_name(user: Option<String>) -> String {
    let plain = |u: &String| !u.is_empty() && u.bytes().all(|b| b.is_ascii_graphic());
    match user.filter(plain).or_else(|| os_user().filter(plain)) {
        Some(u) => format!("local:{u}"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => format!("local:uid-{}", unsafe { libc::getuid() }),
    }
}

/// The name of this process's uid in the password database (for shells without `$USER`,
/// such as containers and cron).
pub(crate) fn os_user() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; getpwuid_r writes into `pwd` and `buf` (of the given
    // length) only, and `result` points at `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(libc::getuid(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

/// `--server`'s comma-separated list, each address normalized; empty entries are skipped.
pub fn server_list(servers: &str) -> Vec<String> {
    servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize_server)
        .collect()
}

/// The server could not be reached (or its address is not usable).
#[derive(Debug)]
pub struct ConnectError {
    pub server: String,
    pub cause: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = if self.cause.contains("certificate") {
            "the server's TLS certificate must be signed by the CA of --ca (GOFLOW_CA) and name the host"
        } else {
            "is goflow running? set --server or GOFLOW_SERVER"
        };
        write!(
            f,
            "cannot reach goflow at {}: {} ({hint})",
            self.server, self.cause
        )
    }
}

impl std::error::Error for ConnectError {}

/// An error and its sources joined by `: `, skipping tonic's uninformative "transport error".
pub(crate) fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        "transport error".to_string()
    } else {
        parts.join(": ")
    }
}

/// The coordinators of `--server`, reached through one [`Failover`], and the metadata every
/// call carries: clients of both services share the current coordinator.
#[derive(Clone, Debug)]
pub struct Connection {
    failover: Failover,
    meta: ClientMeta,
}

impl Connection {
    /// A ControlService client.
    pub fn control(&self) -> Client {
        ControlServiceClient::with_interceptor(self.failover.clone(), self.meta.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// An AuthService client.
    pub fn auth(&self) -> AuthClient {
        AuthServiceClient::with_interceptor(self.failover.clone(), self.meta.clone())
    }
}

/// [`open`], for ControlService calls only.
pub async fn connect(servers: &str, meta: ClientMeta) -> Result<Client, ConnectError> {
    Ok(open(servers, meta).await?.control())
}

/// The metadata of this process's calls: the acting user from the environment, and `token`.
pub fn client_meta(token: Option<&str>) -> anyhow::Result<ClientMeta> {
    let meta = ClientMeta::new(
        ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok()),
    );
    match token {
        Some(token) => meta.with_token(token),
        None => Ok(meta),
    }
}

/// Connects to the first coordinator of `servers` (a comma-separated list, see
/// [`server_list`]) that answers within [`ANSWER_TIMEOUT`], failing fast when none does; the
/// error names them all. Later calls move on to the next coordinator when theirs is gone or
/// answers UNAVAILABLE. Every call carries `meta`.
pub async fn open(servers: &str, meta: ClientMeta) -> Result<Connection, ConnectError> {
    let list = server_list(servers);
    let fail = |cause: String| ConnectError {
        server: list.join(", "),
        cause,
    };
    if list.is_empty() {
        return Err(fail("no address given".into()));
    }
    let mut channels = Vec::with_capacity(list.len());
    for server in &list {
        let endpoint = Endpoint::from_shared(server.clone()).map_err(|e| {
            let cause = format!("invalid address: {}", cause_chain(&e));
            fail(if list.len() == 1 {
                cause
            } else {
                format!("{server}: {cause}")
            })
        })?;
        let endpoint = tls::client_tls().apply(endpoint).map_err(&fail)?;
        channels.push(endpoint.connect_timeout(ANSWER_TIMEOUT).connect_lazy());
    }
    let failover = Failover::new(
        list.clone(),
        channels,
        failover::Options {
            streaming_requests: vec![],
            unavailable_patience: UNAVAILABLE_PATIENCE,
        },
    );
    failover.set_current(first_answering(&failover, &meta).await.map_err(|causes| {
        if let [(_, cause)] = &causes[..] {
            fail(cause.clone())
        } else {
            let all: Vec<String> = causes.iter().map(|(s, c)| format!("{s}: {c}")).collect();
            fail(all.join("; "))
        }
    })?);
    Ok(Connection { failover, meta })
}

/// The first coordinator, in order, that answers a `GetVersion` within [`ANSWER_TIMEOUT`].
/// One that answers UNAVAILABLE (no leader) is taken only when none answers better: calls
/// through it wait for a leader. Err: why each did not answer.
pub(crate) async fn first_answering(
    failover: &Failover,
    meta: &ClientMeta,
) -> Result<usize, Vec<(String, String)>> {
    let mut causes = Vec::new();
    let mut refusing = None;
    for (index, server) in failover.urls().iter().enumerate() {
        let mut probe = ControlServiceClient::with_interceptor(failover.channel(index), meta.clone());
        let answer = tokio::time::timeout(
            ANSWER_TIMEOUT,
            probe.get_version(goflow_proto::GetVersionRequest {}),
        )
        .await;
        let cause = match answer {
            Ok(Ok(_)) => return Ok(index),
            Ok(Err(status)) if failover::is_connect_error(&status) => transport_cause(&status),
            Ok(Err(status)) if status.code() == Code::Unavailable => {
                refusing.get_or_insert(index);
                status_message(&status)
            }
            Ok(Err(status)) if status.code() == Code::Unknown && status.source().is_some() => {
                // A transport failure, not an answer.
                transport_cause(&status)
            }
            // It answered (an older server without GetVersion, an auth error...): the
            // command's own call tells what is wrong.
            Ok(Err(_)) => return Ok(index),
            Err(_) => format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()),
        };
        causes.push((server.clone(), cause));
    }
    refusing.ok_or(causes)
}

/// What went wrong under a status made from a transport error.
pub(crate) fn transport_cause(status: &Status) -> String {
    match status.source() {
        Some(source) => cause_chain(source),
        None => status_message(status),
    }
}

/// A gRPC status for people: `not found: unknown task "x"`. The code's name is left out when
/// the message alone is clear (invalid arguments, unknown errors, or the name is already there).
pub fn status_message(status: &Status) -> String {
    let words = match status.code() {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "",
        Code::InvalidArgument => "",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this server",
        Code::Internal => "internal server error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    };
    let message = status.message().trim();
    if message.is_empty() {
        if words.is_empty() {
            format!("{:?}", status.code()).to_lowercase()
        } else {
            words.to_string()
        }
    } else if words.is_empty() || message.to_lowercase().starts_with(words) {
        message.to_string()
    } else {
        format!("{words}: {message}")
    }
}

/// What `error: ...` says for a failed command.
pub fn error_message(err: &anyhow::Error, server: &str) -> String {
    if let Some(status) = err.downcast_ref::<Status>() {
        if status.code() == Code::Unavailable {
            let cause = status_message(status);
            let cause = cause.strip_prefix("unavailable: ").unwrap_or(&cause).to_string();
            return ConnectError {
                server: server.to_string(),
                cause,
            }
            .to_string();
        }
        return status_message(status);
    }
    format!("{err:#}")
}

pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    // A call's broken pipe (a server that hung up, e.g. a TLS port spoken to in plain HTTP)
    // is the call's failure, not a closed stdout.
    if err.chain().any(|e| e.is::<Status>()) {
        return false;
    }
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The call was refused for want of a valid token: says how to get one.
#[derive(Debug)]
pub struct NotLoggedIn {
    /// The coordinators, as `--server` named them (normalized, joined by `, `).
    pub server: String,
    /// The token the call carried, if any.
    pub sent: Option<TokenSource>,
    /// Who last logged in to this server, for the hint; else `NAME`.
    pub user: Option<String>,
    /// The server's message.
    pub reason: String,
}

impl fmt::Display for NotLoggedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.user.as_deref().filter(|u| !u.is_empty()).unwrap_or("NAME");
        let login = format!("run `goflowctl login -u {user}`");
        let server = &self.server;
        let refused = match &self.sent {
            None => {
                return write!(
                    f,
                    "not logged in to {server}: {login}, or pass a token with --token / GOFLOW_TOKEN"
                );
            }
            Some(TokenSource::Given) => "the token given with --token / GOFLOW_TOKEN".to_string(),
            Some(TokenSource::Stored { user, .. }) => format!("the session of {user}"),
        };
        let other = match &self.sent {
            Some(TokenSource::Given) => "pass another token",
            _ => "pass a token with --token / GOFLOW_TOKEN",
        };
        match self.reason.trim() {
            "" => write!(
                f,
                "not logged in to {server}: it refused {refused}; {login}, or {other}"
            ),
            // The server's reason already says how to log in: not said twice.
            reason if reason.contains("goflowctl login") => {
                write!(f, "not logged in to {server}: it refused {refused}: {reason}")
            }
            reason => write!(
                f,
                "not logged in to {server}: it refused {refused} ({reason}); {login}, or {other}"
            ),
        }
    }
}

impl std::error::Error for NotLoggedIn {}

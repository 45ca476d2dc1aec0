//! goflow web UI: server-rendered pages (axum + askama), a gRPC client of the coordinator
//! (no database access).
//!
//! Layout: `routes.rs` is the one route table; each page is a `#[derive(Template)]` struct
//! beside its handler in `pages/`, and each action (a POST form) a handler in `actions/`;
//! `context.rs` gives every page its language, CSRF token and one-shot message; `auth.rs` the
//! login (a session cookie whose token every call carries) and the role; `i18n.rs` holds
//! every label in English and Chinese, `translate.rs` the coordinator's sentences; `graph/` lays out and draws task graphs as SVG;
//! `error.rs` turns every failure into an error page with its status; `view.rs` formats
//! values; the templates live in `templates/`, the CSS and the team's small script in `static/`.

use std::sync::Arc;
use std::time::Duration;

use goflow_proto::auth_service_client::AuthServiceClient;
use goflow_proto::control_service_client::ControlServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
mod actions;
mod auth;
mod context;
mod error;
// Shared with the agent and goflowctl: one channel per coordinator, moving past dead ones.
#[path = "../../agent/src/failover.rs"]
mod failover;
pub mod graph;
mod i18n;
#[cfg(test)]
mod lang_tests;
mod pages;
mod routes;
#[cfg(test)]
mod testing;
mod timings;
mod tls;
mod translate;
mod view;
mod yaml;

pub use failover::ClientTls;
pub use routes::router;
pub use tls::{WebTls, acceptor as tls_acceptor, serve_tls, serve_tls_with};

/// Pages showing work in progress refresh themselves this often.
const REFRESH_SECONDS: u32 = 3;
/// Appended to the stylesheet's URL so a new version is never served from a stale cache.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

type Client = ControlServiceClient<InterceptedService<failover::Failover, ClientMeta>>;
type AuthClient = AuthServiceClient<InterceptedService<failover::Failover, ClientMeta>>;

/// How long a page's call is retried while every coordinator answers UNAVAILABLE (no leader:
/// a takeover takes a few seconds).
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(8);

/// The metadata of every call: the web UI as the client (for the operations log) and, once
/// someone logged in, their session token as `authorization: Bearer ...`, so the call acts as
/// that user. Without a token (a coordinator without authentication) the actor is "web".
#[derive(Clone)]
pub struct ClientMeta {
    client: AsciiMetadataValue,
    bearer: Option<AsciiMetadataValue>,
    /// The browser's address and the web UIs' secret proving it (see `AppState::for_browser`).
    forwarded: Option<(AsciiMetadataValue, AsciiMetadataValue)>,
}

impl Interceptor for ClientMeta {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert("x-goflow-client", self.client.clone());
        if let Some((browser, proof)) = &self.forwarded {
            metadata.insert("x-goflow-forwarded-for", browser.clone());
            metadata.insert("x-goflow-forwarded-by", proof.clone());
        }
        match &self.bearer {
            Some(bearer) => {
                metadata.insert("authorization", bearer.clone());
            }
            None => {
                metadata.insert("x-goflow-actor", AsciiMetadataValue::from_static("web"));
            }
        }
        Ok(request)
    }
}

/// What every handler shares: lazily connected channels to the coordinators (clones share the
/// connections). A call goes to the coordinator that answered last, and moves on to the next
/// one when that one is gone or answers UNAVAILABLE (see `agent/src/failover.rs`).
///
/// Handlers take it as an extractor (`app: AppState`, not `State<AppState>`): that copy carries
/// the session token of the request's cookie, so every call it makes acts as the logged-in user
/// (see `auth.rs`). A copy taken through `State` has no token, and with authentication on the
/// coordinator refuses its calls.
#[derive(Clone)]
pub struct AppState {
    channel: failover::Failover,
    /// The same without a timeout, for log streams that stay open while a try runs.
    streaming: failover::Failover,
    /// The coordinators' URLs, for error pages.
    coordinator: Arc<str>,
    client_name: AsciiMetadataValue,
    /// `Bearer <session token>` of this request, when it has a session cookie.
    bearer: Option<AsciiMetadataValue>,
    /// Mark the session cookie `Secure` even when the request does not say it came over TLS.
    secure_cookies: bool,
    /// Serve no page while the coordinator has authentication off (a UI beyond loopback).
    require_auth: bool,
    /// The web UIs' secret (`--webui-secret-file`), which makes coordinators believe the
    /// browser's address the calls name.
    forwarding_secret: Option<AsciiMetadataValue>,
    /// The address of the browser this request came from (the TCP peer), when known.
    browser: Option<AsciiMetadataValue>,
}

impl AppState {
    /// `coordinators` is a comma-separated list of gRPC URLs, e.g. `http://127.0.0.1:7070`
    /// (see [`AppState::with_coordinators`]).
    pub fn new(coordinators: &str) -> anyhow::Result<Self> {
        let list: Vec<String> = coordinators
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        Self::with_coordinators(&list)
    }

    /// Any of `coordinators` (gRPC URLs) answers every call. Nothing connects yet: the
    /// channels connect (and reconnect) on use, so the UI starts before the coordinators do.
    /// Must be called inside a tokio runtime.
    pub fn with_coordinators(coordinators: &[String]) -> anyhow::Result<Self> {
        Self::with_coordinators_tls(coordinators, &failover::ClientTls::default())
    }

    /// [`AppState::with_coordinators`], `https://` coordinators verified as `tls` says.
    pub fn with_coordinators_tls(coordinators: &[String], tls: &failover::ClientTls) -> anyhow::Result<Self> {
        let channel = |timeout: Option<Duration>| -> anyhow::Result<failover::Failover> {
            let options = failover::Options {
                streaming_requests: vec![],
                unavailable_patience: UNAVAILABLE_PATIENCE,
            };
            failover::Failover::lazy_tls(coordinators, options, tls, |endpoint| {
                let endpoint = endpoint.connect_timeout(Duration::from_secs(3));
                match timeout {
                    Some(timeout) => endpoint.timeout(timeout),
                    None => endpoint,
                }
            })
            .map_err(|err| anyhow::anyhow!("{err}"))
        };
        Ok(Self {
            channel: channel(Some(Duration::from_secs(15)))?,
            streaming: channel(None)?,
            coordinator: coordinators.join(", ").into(),
            client_name: AsciiMetadataValue::try_from(format!("webui/{ASSET_VERSION}"))
                .expect("the version is ASCII"),
            bearer: None,
            secure_cookies: false,
            require_auth: false,
            forwarding_secret: None,
            browser: None,
        })
    }

    /// Marks the session cookie `Secure` on every login, for a web UI reached only over HTTPS
    /// through a proxy that does not send `X-Forwarded-Proto`. (It is marked so anyway when
    /// the request came over TLS or the proxy says `X-Forwarded-Proto: https`.)
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// Refuses every page while the coordinator has authentication off: for a web UI that
    /// listens beyond loopback (see [`AppState::coordinator_requires_auth`]).
    pub fn with_required_auth(mut self, required: bool) -> Self {
        self.require_auth = required;
        self
    }

    /// With `secret` (the web UIs' secret, which the coordinators hold too), every call made
    /// for a browser names its address (`x-goflow-forwarded-for`, proven by the secret in
    /// `x-goflow-forwarded-by`): the coordinators then slow down failed logins per browser,
    /// not for everyone using this web UI at once, and their operations log names the browser.
    /// Behind a reverse proxy the address is the proxy's.
    pub fn with_forwarding_secret(mut self, secret: Option<&str>) -> anyhow::Result<Self> {
        self.forwarding_secret = secret
            .map(|s| {
                AsciiMetadataValue::try_from(s)
                    .map_err(|_| anyhow::anyhow!("the web UI secret must be printable ASCII"))
            })
            .transpose()?;
        Ok(self)
    }

    /// This state calling for the browser at `address` (the request's TCP peer).
    fn for_browser(&self, address: Option<std::net::SocketAddr>) -> Self {
        Self {
            browser: address.and_then(|a| AsciiMetadataValue::try_from(a.to_string()).ok()),
            ..self.clone()
        }
    }

    /// Whether the coordinators ask for a login: `WhoAmI` without a token is refused
    /// (UNAUTHENTICATED) or says so. Fails when no coordinator answers.
    pub async fn coordinator_requires_auth(&self) -> Result<bool, tonic::Status> {
        match self.auth_client().who_am_i(goflow_proto::WhoAmIRequest {}).await {
            Ok(answer) => Ok(answer.into_inner().auth_enabled),
            Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(true),
            // A coordinator from before authentication has none.
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// This state acting as the holder of `token` (a session token): every call carries it.
    fn acting_as(&self, token: Option<&str>) -> Self {
        let bearer = token.and_then(|t| AsciiMetadataValue::try_from(format!("Bearer {t}")).ok());
        Self {
            bearer,
            ..self.clone()
        }
    }

    fn meta(&self) -> ClientMeta {
        ClientMeta {
            client: self.client_name.clone(),
            bearer: self.bearer.clone(),
            forwarded: self.browser.clone().zip(self.forwarding_secret.clone()),
        }
    }

    fn client(&self) -> Client {
        ControlServiceClient::with_interceptor(self.channel.clone(), self.meta())
            .max_decoding_message_size(64 << 20)
    }

    fn streaming_client(&self) -> Client {
        ControlServiceClient::with_interceptor(self.streaming.clone(), self.meta())
            .max_decoding_message_size(64 << 20)
    }

    fn auth_client(&self) -> AuthClient {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.meta())
    }

    /// Maps a failed call to the page that explains it.
    fn fail(&self, status: tonic::Status) -> error::WebError {
        error::WebError::from_status(status, &self.coordinator)
    }
}

/// Serves the web UI on `listener` until `shutdown`; `coordinators` are the gRPC URLs it reads
/// from (any one answers; a dead one, or one answering UNAVAILABLE, is passed over).
pub async fn serve(
    coordinators: Vec<String>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(AppState::with_coordinators(&coordinators)?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Several coordinators (issue 7): pages come from a live coordinator past a dead one and past
/// one that answers UNAVAILABLE.
#[cfg(test)]
mod failover_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use goflow_proto::control_service_server::ControlServiceServer;

    use crate::testing::{self, get};
    use crate::{AppState, router};

    /// Serves the sample fake coordinator; its URL.
    async fn live() -> String {
        let listener = TcpListenerForTest::bind().await;
        let url = listener.url();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlServiceServer::new(testing::sample()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener.0)),
        );
        url
    }

    struct TcpListenerForTest(tokio::net::TcpListener);

    impl TcpListenerForTest {
        async fn bind() -> Self {
            Self(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        }

        fn url(&self) -> String {
            format!("http://{}", self.0.local_addr().unwrap())
        }
    }

    /// A coordinator without a leader: every gRPC call is answered UNAVAILABLE (trailers
    /// only), counted in `hits`.
    async fn refusing(hits: Arc<AtomicUsize>) -> String {
        let listener = TcpListenerForTest::bind().await;
        let url = listener.url();
        let app = axum::Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    [
                        ("content-type", "application/grpc"),
                        ("grpc-status", "14"),
                        ("grpc-message", "no leader"),
                    ],
                    "",
                )
            }
        });
        tokio::spawn(async move { axum::serve(listener.0, app).await });
        url
    }

    #[tokio::test]
    async fn pages_come_from_the_next_coordinator_when_the_first_is_dead() {
        let dead = TcpListenerForTest::bind().await.url(); // dropped: nothing listens
        let app = router(AppState::with_coordinators(&[dead.clone(), live().await]).unwrap());
        let (status, body) = get(&app, "/tasks").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("transform"), "{body}");
    }

    #[tokio::test]
    async fn pages_come_from_the_next_coordinator_when_the_first_answers_unavailable() {
        let hits = Arc::new(AtomicUsize::new(0));
        let first = refusing(hits.clone()).await;
        let app = router(AppState::new(&format!("{first}, {}", live().await)).unwrap());
        let (status, body) = get(&app, "/tasks").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("transform"), "{body}");
        assert!(
            hits.load(Ordering::SeqCst) >= 1,
            "the first coordinator was not asked"
        );
    }

    #[tokio::test]
    async fn when_none_answers_the_error_page_names_them_all() {
        let (a, b) = (
            TcpListenerForTest::bind().await.url(),
            TcpListenerForTest::bind().await.url(),
        );
        let app = router(AppState::with_coordinators(&[a.clone(), b.clone()]).unwrap());
        let (status, body) = get(&app, "/tasks").await;
        assert_ne!(status, StatusCode::OK);
        assert!(body.contains(&format!("{a}, {b}")), "{body}");
    }
}

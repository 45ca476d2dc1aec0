//! Which coordinator answers a call. Every coordinator serves the whole gRPC API; only the
//! leader has an engine. The others pass each call of the goflow services, as it is (HTTP/2
//! frames, streams included), to the leader, so goflowctl, the web UI, agents and clients in
//! other languages never need to know which coordinator leads. While nobody leads (an election
//! in progress), calls are answered UNAVAILABLE, which clients retry. The embedded agent's
//! claims and finish reports take the same route without gRPC (see `in_process`).
//!
//! LogService is the exception: every coordinator given a store (`with_logs`) stores agents'
//! output itself, leader or not, so logs flow on through an election.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use goflow_proto as pb;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

use crate::agent_identity::{AGENT_TOKEN_PREFIX, CertifiedAgent, Vouched};
use crate::grpc::{Api, LogApi};

/// Where calls go now.
#[derive(Clone)]
pub enum Route {
    /// This coordinator leads: its own engine answers.
    Local {
        /// For calls made in this process (see `in_process`).
        api: Api,
        control: pb::control_service_server::ControlServiceServer<Api>,
        agents: pb::agent_service_server::AgentServiceServer<Api>,
        auth: pb::auth_service_server::AuthServiceServer<Api>,
        /// For routers without a log service of their own (`Router::with_logs`).
        logs: pb::log_service_server::LogServiceServer<LogApi>,
    },
    /// Another coordinator leads, at `address`.
    Forward { address: String, channel: Channel },
    /// Nobody leads at the moment; the text says why.
    NoLeader(String),
}

impl Route {
    pub fn local(api: Api) -> Self {
        Route::Local {
            // A DAG document may be tens of megabytes (pb::MAX_DOCUMENT_BYTES).
            control: pb::control_service_server::ControlServiceServer::new(api.clone())
                .max_decoding_message_size(pb::MAX_REQUEST_BYTES),
            agents: pb::agent_service_server::AgentServiceServer::new(api.clone()),
            auth: pb::auth_service_server::AuthServiceServer::new(api.clone()),
            logs: pb::log_service_server::LogServiceServer::new(LogApi::for_engine(
                api.engine().clone(),
                api.agent_identities().clone(),
            )),
            api,
        }
    }
}

/// The route every call takes, switched by the leadership loop.
#[derive(Clone)]
pub struct Router {
    route: Arc<RwLock<Route>>,
    /// The cluster's shared agent secret (a single trusted network), if it has one.
    agent_secret: Option<Arc<str>>,
    /// The random secret of this process's embedded agent, if it runs one.
    embedded_secret: Option<Arc<str>>,
    /// The web UIs' secret (`--webui-secret-file`), if set: it proves a browser's address
    /// (`FORWARDED_FOR`) and nothing else.
    webui_secret: Option<Arc<str>>,
    /// mTLS for agents (`--tls-client-ca`): AgentService calls need a verified client
    /// certificate (the TLS handshake verified any certificate presented).
    agent_certificates: bool,
    /// Counts every call by method and status code (issue 11).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Bumped on every change of route (readiness follows it at once).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// This coordinator's own log service, answering whoever leads (see `with_logs`).
    logs: Option<pb::log_service_server::LogServiceServer<LogApi>>,
}

impl Router {
    /// Agents' calls (AgentService, LogService) without a credential are refused here, before
    /// they reach an engine or another coordinator: they present `agent_secret` (the cluster's
    /// shared one, if it has one), the embedded agent's secret, or a per-agent token (checked
    /// against the store by the service that answers, see `agent_identity`).
    pub fn new(agent_secret: Option<String>) -> Self {
        Self {
            route: Arc::new(RwLock::new(Route::NoLeader("the coordinator is starting".into()))),
            agent_secret: agent_secret.map(Arc::from),
            embedded_secret: None,
            webui_secret: None,
            agent_certificates: false,
            metrics: None,
            changes: Arc::new(tokio::sync::watch::channel(0).0),
            logs: None,
        }
    }

    /// LogService calls are answered here, on `store`, whoever leads (each try's log capped
    /// at `cap` bytes), counted in the metrics given before (`with_metrics`). Without, they
    /// take the route of every other call.
    pub fn with_logs(mut self, store: crate::store::Store, cap: i64) -> Self {
        let api = LogApi::for_node(store, cap, self.metrics.clone(), self.route.clone());
        self.logs = Some(pb::log_service_server::LogServiceServer::new(api));
        self
    }

    /// Changes whenever the route does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every call of the goflow services is counted and timed in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This process runs an embedded agent, which presents `secret` (random, of this process).
    pub fn with_embedded_agent(mut self, secret: String) -> Self {
        self.embedded_secret = Some(Arc::from(secret));
        self
    }

    /// Web UIs presenting `secret` in `FORWARDED_BY` name their browser's address in
    /// `FORWARDED_FOR`, which is then believed (logins are slowed down per browser).
    pub fn with_webui_secret(mut self, secret: Option<String>) -> Self {
        self.webui_secret = secret.map(Arc::from);
        self
    }

    /// AgentService calls without a client certificate verified by the TLS handshake are
    /// refused (mTLS for agents).
    pub fn require_agent_certificates(mut self, required: bool) -> Self {
        self.agent_certificates = required;
        self
    }

    pub fn set(&self, route: Route) {
        *self.route.write().unwrap() = route;
        self.changes.send_modify(|n| *n += 1);
    }

    /// The address calls are forwarded to, when another coordinator leads.
    pub fn forwarding_to(&self) -> Option<String> {
        match &*self.route.read().unwrap() {
            Route::Forward { address, .. } => Some(address.clone()),
            _ => None,
        }
    }

    fn proofs(&self) -> Proofs<'_> {
        Proofs {
            cluster: self.agent_secret.as_deref(),
            webui: self.webui_secret.as_deref(),
        }
    }

    /// The route calls take now.
    pub fn current(&self) -> Route {
        self.route.read().unwrap().clone()
    }

    /// Where calls are counted, if anywhere.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
    }

    pub fn is_local(&self) -> bool {
        matches!(&*self.route.read().unwrap(), Route::Local { .. })
    }

    pub fn control(&self) -> Routed<Control> {
        Routed {
            router: self.clone(),
            service: PhantomData,
        }
    }

    pub fn agents(&self) -> Routed<Agents> {
        Routed {
            router: self.clone(),
            service: PhantomData,
        }
    }

    pub fn auth(&self) -> Routed<Logins> {
        Routed {
            router: self.clone(),
            service: PhantomData,
        }
    }

    pub fn logs(&self) -> Routed<Logs> {
        Routed {
            router: self.clone(),
            service: PhantomData,
        }
    }
}

/// One of the goflow services, routed.
pub trait GoflowService: Send + Sync + 'static {
    const NAME: &'static str;
    fn local(route: &Route, request: http::Request<Body>)
    -> Option<BoxFuture<'static, http::Response<Body>>>;
    /// Refuses a call, or lets it through (marking in its extensions what it vouched for).
    fn check(router: &Router, request: &mut http::Request<Body>) -> Result<(), tonic::Status>;
    /// Whether this coordinator answers the service's calls itself, whoever leads, and how.
    fn here(_router: &Router) -> Option<Here> {
        None
    }
}

/// Answers a call on this coordinator.
pub type Here = Box<dyn FnOnce(http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> + Send>;

pub struct Control;
pub struct Agents;
/// AuthService: logins and tokens.
pub struct Logins;
/// LogService: agents' output.
pub struct Logs;

impl GoflowService for Logs {
    const NAME: &'static str = <pb::log_service_server::LogServiceServer<LogApi> as NamedService>::NAME;

    fn local(
        route: &Route,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, http::Response<Body>>> {
        let Route::Local { logs, .. } = route else {
            return None;
        };
        Some(answer(logs.clone(), request))
    }

    /// Agents' calls: the same credentials as AgentService.
    fn check(router: &Router, request: &mut http::Request<Body>) -> Result<(), tonic::Status> {
        Agents::check(router, request)
    }

    fn here(router: &Router) -> Option<Here> {
        let logs = router.logs.clone()?;
        Some(Box::new(move |request| answer(logs, request)))
    }
}

impl GoflowService for Logins {
    const NAME: &'static str = <pb::auth_service_server::AuthServiceServer<Api> as NamedService>::NAME;

    fn local(
        route: &Route,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, http::Response<Body>>> {
        let Route::Local { auth, .. } = route else {
            return None;
        };
        Some(answer(auth.clone(), request))
    }

    fn check(_router: &Router, _request: &mut http::Request<Body>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl GoflowService for Control {
    const NAME: &'static str = <pb::control_service_server::ControlServiceServer<Api> as NamedService>::NAME;

    fn local(
        route: &Route,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, http::Response<Body>>> {
        let Route::Local { control, .. } = route else {
            return None;
        };
        Some(answer(control.clone(), request))
    }

    fn check(_router: &Router, _request: &mut http::Request<Body>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl GoflowService for Agents {
    const NAME: &'static str = <pb::agent_service_server::AgentServiceServer<Api> as NamedService>::NAME;

    fn local(
        route: &Route,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, http::Response<Body>>> {
        let Route::Local { agents, .. } = route else {
            return None;
        };
        Some(answer(agents.clone(), request))
    }

    /// Agents present a credential: the cluster's shared secret, the embedded agent's, or a
    /// per-agent token (`gfa_`, looked up in the store by the service that answers). Without
    /// one, refused here: on loopback too, whatever the coordinator's settings.
    fn check(router: &Router, request: &mut http::Request<Body>) -> Result<(), tonic::Status> {
        // Never taken from the caller: extensions do not travel over the wire, and an
        // AGENT_CERTIFICATE header is only kept when another coordinator proved it passed the
        // call on (`trust_forwarded_for`).
        request.extensions_mut().remove::<Vouched>();
        request.extensions_mut().remove::<CertifiedAgent>();
        let forwarded_certificate = request
            .headers()
            .get(AGENT_CERTIFICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        request.headers_mut().remove(AGENT_CERTIFICATE);
        let mut certified = None;
        if router.agent_certificates {
            let local = request
                .extensions()
                .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .filter(|certs| !certs.is_empty());
            if local.is_none() && forwarded_certificate.is_none() {
                crate::metrics::agent_refused("no_client_certificate");
                return Err(tonic::Status::unauthenticated(
                    "this coordinator requires agents to present a client certificate signed by its \
                     client CA (--tls-client-ca): start the agent with --tls-cert and --tls-key",
                ));
            }
            // A call passed on by another coordinator names the agent's certificate; the
            // connection's own certificate is then that coordinator's.
            certified = match forwarded_certificate {
                Some(agent) => Some(agent),
                None => local.and_then(|certs| crate::agent_identity::certificate_agent(&certs[0])),
            };
        }
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        // No token or secret: the verified certificate's CN is the agent (mTLS identity).
        if given.is_none()
            && let Some(agent) = certified
        {
            if let Ok(value) = agent.parse() {
                request.headers_mut().insert(AGENT_CERTIFICATE, value);
            }
            request.extensions_mut().insert(CertifiedAgent(agent));
            return Ok(());
        }
        let matches = |secret: &Option<Arc<str>>, given: &str| {
            secret
                .as_ref()
                .is_some_and(|s| same_secret(given.as_bytes(), s.as_bytes()))
        };
        let vouched = match given {
            Some(token) if token.starts_with(AGENT_TOKEN_PREFIX) => None,
            Some(given) if matches(&router.embedded_secret, given) => Some(Vouched::Embedded),
            Some(given) if matches(&router.agent_secret, given) => Some(Vouched::SharedSecret),
            _ => {
                crate::metrics::agent_refused("no_credential");
                return Err(tonic::Status::unauthenticated(if router.agent_secret.is_some() {
                    "agent credential missing or wrong: give the agent its per-agent token \
                     (GOFLOW_AGENT_TOKEN, --agent-token-file or Worker.AgentToken; made by \
                     `goflow agent-token create --id ID`) or the cluster's shared secret \
                     (GOFLOW_AGENT_SECRET or Common.AgentSecret)"
                } else {
                    "this coordinator accepts agents by their per-agent token only: create one with \
                     `goflow agent-token create --id ID` and give it to the agent (GOFLOW_AGENT_TOKEN, \
                     --agent-token-file or Worker.AgentToken)"
                }));
            }
        };
        if let Some(vouched) = vouched {
            request.extensions_mut().insert(vouched);
        }
        Ok(())
    }
}

/// The answer of a service that cannot fail (tonic's generated servers).
fn answer<S>(service: S, request: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    Box::pin(async move {
        match service.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    })
}

/// Compares in constant time, so the time taken says nothing about the secret.
/// `forwarding to the leader at X failed: transport error: tcp connect error: ...; try again`
fn forward_failed(address: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("forwarding to the leader at {address} failed: {error}");
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text.push_str("; try again (a new leader takes over)");
    text
}

fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Metadata naming the caller's address when a call is passed on (the operations log names
/// the client, not the coordinator that forwarded it).
pub const FORWARDED_FOR: &str = "x-goflow-forwarded-for";
/// Metadata proving that a call was passed on by another coordinator: the cluster's secret,
/// which every coordinator holds; or by a web UI: the web UIs' secret, which proves the
/// browser's address only. Without either, `FORWARDED_FOR` is a client's claim and dropped.
pub const FORWARDED_BY: &str = "x-goflow-forwarded-by";
/// Metadata naming the agent whose verified client certificate a call came with, when
/// another coordinator passes it on (trusted only with `FORWARDED_BY`'s proof).
pub const AGENT_CERTIFICATE: &str = "x-goflow-agent-certificate";

/// The proofs `FORWARDED_BY` may carry: the cluster's secret (another coordinator) and the
/// web UIs' secret (a web UI, which names its browser but can vouch for no agent).
#[derive(Clone, Copy, Default)]
struct Proofs<'a> {
    cluster: Option<&'a str>,
    webui: Option<&'a str>,
}

/// Keeps `FORWARDED_FOR` only on a call that another coordinator passed on, proven by the
/// cluster secret in `FORWARDED_BY`, or that a web UI made for a browser, proven by the web
/// UIs' secret; any client could write the header itself. `AGENT_CERTIFICATE` is kept with
/// the cluster's proof only. Neither proof travels further than this check.
fn trust_forwarded_for(proofs: Proofs<'_>, headers: &mut http::HeaderMap) {
    let given = headers.get(FORWARDED_BY);
    let proven_by = |secret: Option<&str>| match (secret, given) {
        (Some(secret), Some(given)) => same_secret(given.as_bytes(), secret.as_bytes()),
        _ => false,
    };
    let by_coordinator = proven_by(proofs.cluster);
    let by_webui = proven_by(proofs.webui);
    headers.remove(FORWARDED_BY);
    if !by_coordinator {
        headers.remove(AGENT_CERTIFICATE);
        if !by_webui {
            headers.remove(FORWARDED_FOR);
        }
    }
}

/// Before passing a call on: name its caller (unless a web UI named its browser, kept on
/// arrival), and prove this coordinator passed it on (a client's own `FORWARDED_FOR` was
/// dropped on arrival): with the cluster secret, else the web UIs' (which the leader holds
/// too, and which vouches for an address only). Without either there is no proof, and the
/// leader logs this coordinator's address as the client's.
fn mark_forwarded(proofs: Proofs<'_>, headers: &mut http::HeaderMap, peer: Option<std::net::SocketAddr>) {
    let (Some(secret), Some(peer)) = (proofs.cluster.or(proofs.webui), peer) else {
        return;
    };
    if !headers.contains_key(FORWARDED_FOR)
        && let Ok(value) = peer.to_string().parse()
    {
        headers.insert(FORWARDED_FOR, value);
    }
    if let Ok(value) = secret.parse() {
        headers.insert(FORWARDED_BY, value);
    }
}

pub struct Routed<S> {
    router: Router,
    service: PhantomData<fn() -> S>,
}

impl<S> Clone for Routed<S> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            service: PhantomData,
        }
    }
}

impl<S: GoflowService> NamedService for Routed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: GoflowService> Service<http::Request<Body>> for Routed<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(metrics) = self.router.metrics.clone() else {
            return self.route(request);
        };
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let started = std::time::Instant::now();
        let answer = self.route(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(crate::metrics_body::measured(response, metrics, method, started))
        })
    }
}

impl<S: GoflowService> Routed<S> {
    fn route(
        &mut self,
        mut request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, Infallible>> {
        trust_forwarded_for(self.router.proofs(), request.headers_mut());
        if let Err(status) = S::check(&self.router, &mut request) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if let Some(here) = S::here(&self.router) {
            let answer = here(request);
            return Box::pin(async move { Ok(answer.await) });
        }
        let route = self.router.current();
        match route {
            Route::Local { .. } => {
                let local = S::local(&route, request).expect("a local route answers locally");
                Box::pin(async move { Ok(local.await) })
            }
            Route::Forward { address, channel } => {
                let peer = request
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|info| info.remote_addr);
                // An agent known by its certificate only can be vouched for to the leader
                // with the cluster's secret alone; without one it must call the leader itself.
                if request.headers().contains_key(AGENT_CERTIFICATE) && self.router.agent_secret.is_none() {
                    return Box::pin(async move {
                        Ok(tonic::Status::unavailable(format!(
                            "this coordinator does not lead, and cannot vouch for a client certificate \
                             to the leader without the cluster's shared secret: call the leader \
                             ({address}) directly, or give the agent a token"
                        ))
                        .into_http())
                    });
                }
                mark_forwarded(self.router.proofs(), request.headers_mut(), peer);
                Box::pin(async move {
                    Ok(match channel.oneshot(request).await {
                        Ok(response) => response,
                        // Said as this coordinator's forwarding, so that a caller does not
                        // take the cause (`tcp connect error`) for this coordinator's own.
                        Err(e) => tonic::Status::unavailable(forward_failed(&address, &e)).into_http(),
                    })
                })
            }
            Route::NoLeader(why) => Box::pin(async move {
                Ok(
                    tonic::Status::unavailable(format!("no coordinator leads right now ({why}); try again"))
                        .into_http(),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use crate::agent_identity::Vouched;

    #[derive(Debug)]
    struct Transport(std::io::Error);

    impl fmt::Display for Transport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("transport error")
        }
    }

    impl std::error::Error for Transport {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn agent_call(bearer: Option<&str>) -> http::Request<tonic::body::Body> {
        let mut request = http::Request::new(tonic::body::Body::empty());
        if let Some(bearer) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        }
        request
    }

    /// What the router vouches for, for the services to read (never taken from the caller).
    fn vouched(router: &super::Router, bearer: Option<&str>) -> Result<Option<Vouched>, tonic::Code> {
        let mut request = agent_call(bearer);
        // A value planted before the check does not survive it.
        request.extensions_mut().insert(Vouched::SharedSecret);
        <super::Agents as super::GoflowService>::check(router, &mut request)
            .map(|()| request.extensions().get::<Vouched>().copied())
            .map_err(|status| status.code())
    }

    #[test]
    fn agents_present_a_secret_or_a_token_or_are_refused() {
        let shared = "shared-secret-0123456789";
        let router = super::Router::new(Some(shared.into())).with_embedded_agent("gfe_embedded".into());
        assert_eq!(vouched(&router, Some(shared)), Ok(Some(Vouched::SharedSecret)));
        assert_eq!(
            vouched(&router, Some("gfe_embedded")),
            Ok(Some(Vouched::Embedded))
        );
        // A token is looked up by the service that answers: nothing vouched here.
        assert_eq!(vouched(&router, Some("gfa_0123")), Ok(None));
        assert_eq!(vouched(&router, Some("wrong")), Err(tonic::Code::Unauthenticated));
        assert_eq!(vouched(&router, None), Err(tonic::Code::Unauthenticated));

        // No shared secret: tokens and the embedded agent only, on loopback too.
        let router = super::Router::new(None);
        assert_eq!(vouched(&router, Some("gfa_0123")), Ok(None));
        assert_eq!(vouched(&router, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(vouched(&router, Some("")), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn forwarded_for_is_trusted_only_with_the_cluster_secret() {
        use super::{FORWARDED_BY, FORWARDED_FOR, mark_forwarded, trust_forwarded_for};
        let cluster = |secret| super::Proofs {
            cluster: secret,
            webui: None,
        };
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        // A client's own claim, with no proof, a wrong one, or on a coordinator with no secret.
        for (secret, mut given) in [
            (Some("s3cret"), headers(&[(FORWARDED_FOR, "10.0.0.9:1")])),
            (
                Some("s3cret"),
                headers(&[(FORWARDED_FOR, "10.0.0.9:1"), (FORWARDED_BY, "guess")]),
            ),
            (
                None,
                headers(&[(FORWARDED_FOR, "10.0.0.9:1"), (FORWARDED_BY, "s3cret")]),
            ),
        ] {
            trust_forwarded_for(cluster(secret), &mut given);
            assert!(given.is_empty(), "{given:?}");
        }
        // Passed on by a coordinator: the client's address survives; the proof goes no further.
        let mut passed = http::HeaderMap::new();
        mark_forwarded(
            cluster(Some("s3cret")),
            &mut passed,
            Some("10.0.0.7:5000".parse().unwrap()),
        );
        trust_forwarded_for(cluster(Some("s3cret")), &mut passed);
        assert_eq!(passed.get(FORWARDED_FOR).unwrap(), "10.0.0.7:5000");
        assert!(passed.get(FORWARDED_BY).is_none());
        // A client's header, dropped on arrival, is not what the next coordinator reads.
        let mut forged = headers(&[(FORWARDED_FOR, "1.2.3.4:1")]);
        trust_forwarded_for(cluster(Some("s3cret")), &mut forged);
        mark_forwarded(
            cluster(Some("s3cret")),
            &mut forged,
            Some("10.0.0.7:5000".parse().unwrap()),
        );
        assert_eq!(forged.get(FORWARDED_FOR).unwrap(), "10.0.0.7:5000");
    }

    /// A client naming an agent's certificate itself is not believed: the header goes without
    /// a coordinator's proof, and a router that checks no certificates never reads it.
    #[test]
    fn an_agent_certificate_header_is_trusted_only_from_a_coordinator() {
        use super::{AGENT_CERTIFICATE, FORWARDED_BY, trust_forwarded_for};
        let cluster = super::Proofs {
            cluster: Some("s3cret"),
            webui: None,
        };
        let mut given = http::HeaderMap::new();
        given.insert(AGENT_CERTIFICATE, "a1".parse().unwrap());
        trust_forwarded_for(cluster, &mut given);
        assert!(given.get(AGENT_CERTIFICATE).is_none());
        let mut proven = http::HeaderMap::new();
        proven.insert(AGENT_CERTIFICATE, "a1".parse().unwrap());
        proven.insert(FORWARDED_BY, "s3cret".parse().unwrap());
        trust_forwarded_for(cluster, &mut proven);
        assert_eq!(proven.get(AGENT_CERTIFICATE).unwrap(), "a1");

        let router = super::Router::new(None);
        let mut request = agent_call(None);
        request
            .headers_mut()
            .insert(AGENT_CERTIFICATE, "a1".parse().unwrap());
        request
            .extensions_mut()
            .insert(super::CertifiedAgent("a1".into()));
        let refused = <super::Agents as super::GoflowService>::check(&router, &mut request);
        assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(request.extensions().get::<super::CertifiedAgent>().is_none());
    }

    /// A web UI's secret proves the browser's address it names, and nothing more: never an
    /// agent's certificate. A wrong secret proves nothing, nor does the web UI's secret on a
    /// coordinator that has none; a follower passes the browser's address on to the leader.
    #[test]
    fn the_web_ui_secret_proves_a_browser_address_but_no_agent() {
        use super::{
            AGENT_CERTIFICATE, FORWARDED_BY, FORWARDED_FOR, Proofs, mark_forwarded, trust_forwarded_for,
        };
        let proofs = Proofs {
            cluster: Some("cluster-secret-0123456789"),
            webui: Some("webui-secret-0123456789"),
        };
        let call = |by: Option<&str>| {
            let mut map = http::HeaderMap::new();
            map.insert(FORWARDED_FOR, "127.0.0.2:5000".parse().unwrap());
            map.insert(AGENT_CERTIFICATE, "a1".parse().unwrap());
            if let Some(by) = by {
                map.insert(FORWARDED_BY, by.parse().unwrap());
            }
            map
        };
        let mut from_webui = call(Some("webui-secret-0123456789"));
        trust_forwarded_for(proofs, &mut from_webui);
        assert_eq!(from_webui.get(FORWARDED_FOR).unwrap(), "127.0.0.2:5000");
        assert!(from_webui.get(AGENT_CERTIFICATE).is_none(), "{from_webui:?}");
        assert!(from_webui.get(FORWARDED_BY).is_none(), "{from_webui:?}");

        // Wrong, missing, or a web UI secret where none is configured: nothing believed.
        for (proofs, by) in [
            (proofs, Some("webui-secret-012345678X")),
            (proofs, Some("webui-secret-0123456789 ")),
            (proofs, None),
            (
                Proofs {
                    cluster: Some("cluster-secret-0123456789"),
                    webui: None,
                },
                Some("webui-secret-0123456789"),
            ),
        ] {
            let mut given = call(by);
            trust_forwarded_for(proofs, &mut given);
            assert!(given.is_empty(), "{by:?}: {given:?}");
        }

        // A follower passes the browser's address on, proven by the cluster's secret.
        mark_forwarded(proofs, &mut from_webui, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(from_webui.get(FORWARDED_FOR).unwrap(), "127.0.0.2:5000");
        assert_eq!(from_webui.get(FORWARDED_BY).unwrap(), "cluster-secret-0123456789");
        trust_forwarded_for(proofs, &mut from_webui);
        assert_eq!(from_webui.get(FORWARDED_FOR).unwrap(), "127.0.0.2:5000");
        // Without a cluster secret, with the web UIs' (which the leader checks alike).
        let webui_only = Proofs {
            cluster: None,
            webui: Some("webui-secret-0123456789"),
        };
        let mut passed = call(Some("webui-secret-0123456789"));
        trust_forwarded_for(webui_only, &mut passed);
        mark_forwarded(webui_only, &mut passed, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(passed.get(FORWARDED_BY).unwrap(), "webui-secret-0123456789");
        trust_forwarded_for(webui_only, &mut passed);
        assert_eq!(passed.get(FORWARDED_FOR).unwrap(), "127.0.0.2:5000");
        assert!(passed.get(AGENT_CERTIFICATE).is_none());
    }

    /// The cause of a failed forward is told as the forward's, with its whole chain.
    #[test]
    fn a_failed_forward_names_the_leader_and_the_cause() {
        let error = Transport(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error",
        ));
        assert_eq!(
            super::forward_failed("http://c1:7070", &error),
            "forwarding to the leader at http://c1:7070 failed: transport error: tcp connect error; \
             try again (a new leader takes over)"
        );
    }
}

//! A gRPC channel over several coordinators (issue 7): every coordinator answers every call,
//! so a client only needs one that is alive.
//!
//! [`Failover`] holds one lazily connected [`Channel`] per URL and sends each call to the
//! current one. A call that finds it dead (the connection cannot be made, so nothing was sent)
//! or answering `UNAVAILABLE` right away (no leader at the moment, or shutting down) is sent
//! again to the next one, each coordinator once; the first that answers becomes the current one.
//! While every coordinator that answers says `UNAVAILABLE` (a takeover in progress), the call is
//! retried with backoff for [`Options::unavailable_patience`]. Any other failure (a reset or
//! timeout once the request was sent, which might have been processed) is returned as it is,
//! and the next call starts at the next coordinator.
//!
//! Replaying needs the request's body: unary and server-streaming requests (one message) are
//! buffered; client-streaming methods, named in [`Options::streaming_requests`], are sent
//! unbuffered to the current coordinator and only move the next call on when they fail.
//!
//! This file is shared by the agent, goflowctl and the web UI (`#[path]`), so it uses only
//! what all three depend on: tonic, tokio, tokio-stream and tokio-util.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_util::bytes::BufMut;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{EncodeBody, EncodeBuf, Encoder};
use tonic::codegen::{Bytes, Service, StdError, http};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a [`Failover`] treats calls.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Paths (`/goflow.v1.AgentService/StreamLogs`) of client-streaming methods: their body is
    /// a stream that cannot be buffered, so they are not replayed on another coordinator.
    pub streaming_requests: Vec<String>,
    /// How long to keep retrying a call while every coordinator that answers says
    /// `UNAVAILABLE`. Zero: one round over the coordinators, then the answer is returned.
    pub unavailable_patience: Duration,
}

/// How clients reach `https://` coordinators (issue 9). `http://` URLs ignore it.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM of the CA certificate(s) the coordinators' certificates must chain to (`--ca`);
    /// None: the system's trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate (chain) and private key this client presents, for coordinators that ask
    /// agents for a client certificate (`--tls-client-ca`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must be valid for, when it is not the URL's host
    /// (a coordinator's own clients reach it on loopback).
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Reads `ca` (PEM) and, when given, the client certificate and key (PEM).
    pub fn from_files(
        ca: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, String> {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        let ca_pem = match ca {
            Some(path) => {
                let pem = read(path, "CA file")?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!("the CA file {} holds no PEM certificate", path.display()));
                }
                Some(pem)
            }
            None => None,
        };
        let identity = match identity {
            Some((cert, key)) => Some((read(cert, "certificate")?, read(key, "private key")?)),
            None => None,
        };
        Ok(Self {
            ca_pem,
            identity,
            server_name: None,
        })
    }

    /// tonic's configuration: only the CA when one is given, else the system's roots.
    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }

    /// `endpoint` with TLS when its URL is `https://`; as it is otherwise.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, String> {
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let url = endpoint.uri().to_string();
        endpoint
            .tls_config(self.config())
            .map_err(|e| format!("cannot set up TLS for {url}: {}", error_chain(&e)))
    }
}

/// An error and its causes, `: `-joined.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Put in the extensions of every response: the index (in the URL list) of the coordinator
/// that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedBy(pub usize);

/// A `tower::Service` for tonic clients: `SomeServiceClient::new(failover)`. Clones share the
/// channels and the current coordinator.
#[derive(Clone)]
pub struct Failover {
    shared: Arc<Shared>,
}

struct Shared {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    options: Options,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("urls", &self.shared.urls)
            .field("current", &self.current())
            .finish()
    }
}

impl Failover {
    /// One channel per URL, each connecting on first use (and again after it breaks), set up
    /// by `configure` (timeouts, keepalive). Fails on an empty list or an unusable URL.
    pub fn lazy(
        urls: &[String],
        options: Options,
        configure: impl Fn(Endpoint) -> Endpoint,
    ) -> Result<Self, String> {
        Self::lazy_tls(urls, options, &ClientTls::default(), configure)
    }

    /// [`Failover::lazy`], `https://` URLs verified as `tls` says.
    pub fn lazy_tls(
        urls: &[String],
        options: Options,
        tls: &ClientTls,
        configure: impl Fn(Endpoint) -> Endpoint,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no coordinator URL given".into());
        }
        let mut channels = Vec::with_capacity(urls.len());
        for url in urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|err| format!("bad coordinator URL {url:?}: {err}"))?;
            channels.push(configure(tls.apply(endpoint)?).connect_lazy());
        }
        Ok(Self::new(urls.to_vec(), channels, options))
    }

    /// Over channels made by the caller, `channels[i]` reaching `urls[i]`.
    pub fn new(urls: Vec<String>, channels: Vec<Channel>, options: Options) -> Self {
        assert!(!channels.is_empty() && urls.len() == channels.len());
        Self {
            shared: Arc::new(Shared {
                urls,
                channels,
                current: AtomicUsize::new(0),
                options,
            }),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.shared.urls
    }

    /// The URLs joined by `, `, for messages.
    pub fn describe(&self) -> String {
        self.shared.urls.join(", ")
    }

    /// Index of the coordinator the next call goes to first.
    pub fn current(&self) -> usize {
        self.shared.current.load(Ordering::Relaxed)
    }

    pub fn url(&self, index: usize) -> &str {
        &self.shared.urls[index % self.shared.urls.len()]
    }

    pub fn set_current(&self, index: usize) {
        self.shared
            .current
            .store(index % self.shared.urls.len(), Ordering::Relaxed);
    }

    /// The coordinator at `index` failed (did not answer in time, broke a stream): calls go
    /// to the next one. Only moves if `index` is still the current one, so that several calls
    /// failing on one coordinator move past it once, not past its successor too.
    pub fn move_past(&self, index: usize) {
        let n = self.shared.urls.len();
        let _ = self.shared.current.compare_exchange(
            index,
            (index + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The channel of one coordinator, bypassing failover (to probe each one).
    pub fn channel(&self, index: usize) -> Channel {
        self.shared.channels[index % self.shared.channels.len()].clone()
    }

    async fn send(self, request: http::Request<Body>) -> Result<http::Response<Body>, StdError> {
        let n = self.shared.channels.len();
        let path = request.uri().path();
        // One coordinator is worth a replay too when its takeover is waited out: standalone
        // and single-URL clients then ride through a step-down like listed ones do.
        let patient = !self.shared.options.unavailable_patience.is_zero();
        let replayable =
            (n > 1 || patient) && !self.shared.options.streaming_requests.iter().any(|p| p == path);
        if !replayable {
            let index = self.current();
            let result = call(self.channel(index), request).await;
            return match result {
                Ok(response) if !is_unavailable(&response) => Ok(served(response, index)),
                other => {
                    self.move_past(index);
                    other
                }
            };
        }

        let (parts, body) = request.into_parts();
        let messages = buffer(body).await?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let first = self.current();
            // What a coordinator that is up answered (a standby says why it cannot serve, e.g.
            // that the leader it forwards to is gone) says more than a dead one's connect
            // error, so it is the one returned, and the caller names the right coordinator.
            let mut unavailable = None;
            let mut unreachable = None;
            for k in 0..n {
                let index = (first + k) % n;
                let request = http::Request::from_parts(parts.clone(), replay_body(&messages));
                match call(self.channel(index), request).await {
                    Ok(response) if is_unavailable(&response) => unavailable = Some(response),
                    Ok(response) => {
                        self.set_current(index);
                        return Ok(served(response, index));
                    }
                    Err(err) if is_connect_error(&*err) => unreachable = Some(err),
                    Err(err) => {
                        // Sent, maybe processed: not ours to repeat.
                        self.move_past(index);
                        return Err(err);
                    }
                }
            }
            let Some(answer) = unavailable else {
                return Err(unreachable.expect("at least one coordinator"));
            };
            if started.elapsed() + backoff > self.shared.options.unavailable_patience {
                return Ok(answer);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call readies the channel it picks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}

async fn call(mut channel: Channel, request: http::Request<Body>) -> Result<http::Response<Body>, StdError> {
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    Ok(channel.call(request).await?)
}

fn served(mut response: http::Response<Body>, index: usize) -> http::Response<Body> {
    response.extensions_mut().insert(ServedBy(index));
    response
}

/// A trailers-only `UNAVAILABLE` answer (the call was refused before it did anything), or a
/// proxy's 502/503/504.
fn is_unavailable(response: &http::Response<Body>) -> bool {
    match response.headers().get("grpc-status") {
        Some(code) => code.as_bytes() == b"14",
        None => matches!(response.status().as_u16(), 502..=504),
    }
}

/// The connection could not be made: the request was never sent.
pub fn is_connect_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// The messages of a request body (gRPC length-prefixed frames), to send it again.
async fn buffer(mut body: Body) -> Result<Vec<Bytes>, StdError> {
    use tonic::codegen::Body as _;
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(chunk) = frame?.into_data() {
            data.extend_from_slice(&chunk);
        }
    }
    let mut messages = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        if rest.len() < 5 || rest[0] != 0 {
            return Err(Box::new(Status::internal(
                "a compressed or malformed request cannot be sent to another coordinator",
            )));
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = 5 + len;
        if rest.len() < end {
            return Err(Box::new(Status::internal("a truncated request body")));
        }
        messages.push(Bytes::copy_from_slice(&rest[5..end]));
        rest = &rest[end..];
    }
    Ok(messages)
}

fn replay_body(messages: &[Bytes]) -> Body {
    let messages: Vec<Result<Bytes, Status>> = messages.iter().cloned().map(Ok).collect();
    let source = tokio_stream::iter(messages);
    Body::new(EncodeBody::new_client(Raw, source, None, None))
}

/// Writes already encoded messages as they are (the frame header is added around them).
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

//! goflow web UI: server-rendered pages (axum + askama), a gRPC client of the coordinator
//! (no database access).
//!
//! Layout: `routes.rs` is the one route table; each page is a `#[derive(Template)]` struct
//! beside its handler in `pages/`, and each action (a POST form) a handler in `actions/`;
//! `context.rs` gives every page its language, CSRF token and one-shot message; `i18n.rs` holds
//! every label in English and Chinese; `graph/` lays out and draws task graphs as SVG;
//! `error.rs` turns every failure into an error page with its status; `view.rs` formats
//! values; the templates live in `templates/`, the CSS and the team's small script in `static/`.

use std::sync::Arc;
use std::time::Duration;

use goflow_proto::control_service_client::ControlServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

mod actions;
mod context;
mod error;
pub mod graph;
mod i18n;
mod pages;
mod routes;
#[cfg(test)]
mod testing;
mod view;
mod yaml;

pub use routes::router;

/// Pages showing work in progress refresh themselves this often.
const REFRESH_SECONDS: u32 = 3;
/// Appended to the stylesheet's URL so a new version is never served from a stale cache.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

type Client = ControlServiceClient<InterceptedService<Channel, ClientMeta>>;

/// Names the web UI as the client of every call, for the operations log. There is no login
/// yet, so the actor is "web" (the authentication issue brings the real principal).
#[derive(Clone)]
pub struct ClientMeta {
    client: AsciiMetadataValue,
}

impl Interceptor for ClientMeta {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert("x-goflow-client", self.client.clone());
        metadata.insert("x-goflow-actor", AsciiMetadataValue::from_static("web"));
        Ok(request)
    }
}

/// What every handler shares: one lazily connected channel to the coordinator, cloned per
/// request (clones share the connection).
#[derive(Clone)]
pub struct AppState {
    client: Client,
    /// The same channel without a timeout, for log streams that stay open while a try runs.
    streaming: Client,
    coordinator: Arc<str>,
}

impl AppState {
    /// `coordinator` is the gRPC URL, e.g. `http://127.0.0.1:7070`. Nothing connects yet: the
    /// channel connects (and reconnects) on use, so the UI starts before the coordinator does.
    /// Must be called inside a tokio runtime.
    pub fn new(coordinator: &str) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(coordinator.to_string())
            .map_err(|err| anyhow::anyhow!("bad coordinator URL {coordinator:?}: {err}"))?
            .connect_timeout(Duration::from_secs(5));
        let meta = ClientMeta {
            client: AsciiMetadataValue::try_from(format!("webui/{ASSET_VERSION}"))
                .expect("the version is ASCII"),
        };
        let client = |endpoint: Endpoint| {
            ControlServiceClient::with_interceptor(endpoint.connect_lazy(), meta.clone())
                .max_decoding_message_size(64 << 20)
        };
        Ok(Self {
            client: client(endpoint.clone().timeout(Duration::from_secs(15))),
            streaming: client(endpoint),
            coordinator: coordinator.into(),
        })
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    fn streaming_client(&self) -> Client {
        self.streaming.clone()
    }

    /// Maps a failed call to the page that explains it.
    fn fail(&self, status: tonic::Status) -> error::WebError {
        error::WebError::from_status(status, &self.coordinator)
    }
}

/// Serves the web UI on `listener` until `shutdown`; `coordinator` is the gRPC URL it reads from.
pub async fn serve(
    coordinator: String,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(AppState::new(&coordinator)?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

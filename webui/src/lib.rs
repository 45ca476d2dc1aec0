//! goflow web UI: server-rendered pages (axum + askama), a gRPC client of the coordinator
//! (no database access).
//!
//! Layout: `routes.rs` is the one route table; each page is a `#[derive(Template)]` struct
//! beside its handler in `pages/`; `error.rs` turns every failure into an error page with its
//! status; `view.rs` formats values; the templates live in `templates/`, the CSS in `static/`.

use std::sync::Arc;
use std::time::Duration;

use goflow_proto::control_service_client::ControlServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

mod error;
mod pages;
mod routes;
#[cfg(test)]
mod testing;
mod view;

pub use routes::router;

/// Pages showing work in progress refresh themselves this often.
const REFRESH_SECONDS: u32 = 3;
/// Appended to the stylesheet's URL so a new version is never served from a stale cache.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every handler shares: one lazily connected channel to the coordinator, cloned per
/// request (clones share the connection).
#[derive(Clone)]
pub struct AppState {
    client: ControlServiceClient<Channel>,
    coordinator: Arc<str>,
}

impl AppState {
    /// `coordinator` is the gRPC URL, e.g. `http://127.0.0.1:7070`. Nothing connects yet: the
    /// channel connects (and reconnects) on use, so the UI starts before the coordinator does.
    /// Must be called inside a tokio runtime.
    pub fn new(coordinator: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(coordinator.to_string())
            .map_err(|err| anyhow::anyhow!("bad coordinator URL {coordinator:?}: {err}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Ok(Self {
            client: ControlServiceClient::new(channel).max_decoding_message_size(64 << 20),
            coordinator: coordinator.into(),
        })
    }

    fn client(&self) -> ControlServiceClient<Channel> {
        self.client.clone()
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

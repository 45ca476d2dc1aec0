//! goflow web UI: server-rendered pages, a gRPC client of the coordinator (no database access).
//! Today: the health endpoint; the pages come with the web UI issue.

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the web UI on `listener` until `shutdown`; `coordinator` is the gRPC URL it reads from.
pub async fn serve(
    coordinator: String,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(coordinator);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

pub fn router(coordinator: String) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/",
        get(move || {
            let coordinator = coordinator.clone();
            async move {
                format!(
                    "goflow is running. Its gRPC API is at {coordinator}.\n\
                         Try: goflowctl tasks; goflowctl status -d <yyyymmdd>\n"
                )
            }
        }),
    )
}

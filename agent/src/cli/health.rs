//! `GET /metrics`, `/readyz` and `/healthz` on a process's HTTP listener (issue 11): the
//! routes, shared by the agent's `--http-listen` and the coordinator's and web UI's listeners.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;

/// The process's metrics as OpenMetrics text.
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;
/// Whether the process can do its work: Ok, or what is missing.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// `/metrics`, `/readyz` and (`healthz`) `/healthz`, outside any login: to merge into a
/// process's HTTP routes (the web UI has its own `/healthz`).
pub fn routes(metrics: MetricsText, ready: ReadyCheck, healthz: bool) -> axum::Router {
    let mut router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let check = ready();
                async move {
                    match check.await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        );
    if healthz {
        router = router.route("/healthz", get(|| async { "ok\n".into_response() }));
    }
    router
}

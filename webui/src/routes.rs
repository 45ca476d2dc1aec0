//! The one route table.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;
use crate::error::not_found;
use crate::pages::{instance, overview, tasks};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/tasks", get(tasks::page))
        .route("/instances/{task}/{day}", get(instance::page))
        .route("/static/goflow.css", get(stylesheet))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(state)
}

const STYLESHEET: &str = include_str!("../static/goflow.css");

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLESHEET,
    )
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, unreachable};

    #[tokio::test]
    async fn health_stylesheet_and_unknown_pages() {
        // None of these needs the coordinator.
        let (app, _) = unreachable().await;
        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        let (status, css) = get(&app, "/static/goflow.css").await;
        assert_eq!(status, StatusCode::OK);
        assert!(css.contains(".state-running"));
        let (status, body) = get(&app, "/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no page at /nowhere"));
    }
}

//! The one route table. GETs only read; every change is a POST form (CSRF-checked by
//! `context::guard`, which wraps every route). Every route but the login page, the assets and
//! the health check passes `auth::gate` (a login when the coordinator asks for one).

use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::AppState;
use crate::actions;
use crate::auth;
use crate::context;
use crate::error::not_found;
use crate::pages::{
    agents, alerts, edit, graph, grid, history, instance, login, logs, overview, task, tasks,
};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/graph", get(graph::page))
        .route("/grid", get(grid::page))
        .route("/tasks", get(tasks::page))
        .route("/tasks/new", get(edit::new_form).post(edit::create))
        .route("/tasks/{id}", get(task::page))
        .route("/tasks/{id}/edit", get(edit::edit_form).post(edit::update))
        .route("/tasks/{id}/yaml", get(edit::export_task))
        .route("/tasks/{id}/pause", post(actions::task::pause))
        .route("/tasks/{id}/run", post(actions::task::run))
        .route("/tasks/{id}/delete", post(actions::task::delete))
        .route("/import", get(edit::import_form).post(edit::import))
        .route("/export.yaml", get(edit::export_all))
        .route("/instances/{task}/{day}", get(instance::page))
        .route("/instances/{task}/{day}/action", post(actions::instance::post))
        .route("/instances/{task}/{day}/log", get(logs::download))
        .route("/instances/{task}/{day}/live", get(logs::live))
        .route("/agents", get(agents::page))
        .route("/history", get(history::page))
        .route("/alerts", get(alerts::page))
        .route("/lang", post(actions::switch_lang))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/static/goflow.css", get(stylesheet))
        .route("/static/goflow.js", get(script))
        .route("/healthz", get(|| async { "ok\n" }))
        // Inside the CSRF guard: a forged POST is refused before anyone is asked anything.
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::gate))
        .fallback(not_found)
        .layer(middleware::from_fn(context::guard))
        .with_state(state)
}

const STYLESHEET: &str = include_str!("../static/goflow.css");
/// The team's own script: pan and zoom, graph search, live log, confirmations, refresh.
const SCRIPT: &str = include_str!("../static/goflow.js");

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLESHEET,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        SCRIPT,
    )
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, unreachable};

    #[tokio::test]
    async fn health_static_files_and_unknown_pages() {
        // None of these needs the coordinator.
        let (app, _) = unreachable().await;
        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        let (status, css) = get(&app, "/static/goflow.css").await;
        assert_eq!(status, StatusCode::OK);
        assert!(css.contains(".state-running"));
        let (status, js) = get(&app, "/static/goflow.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(js.contains("EventSource"));
        let (status, body) = get(&app, "/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no page at /nowhere"));
    }
}

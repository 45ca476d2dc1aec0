//! The one route table. GETs only read; every change is a POST form (CSRF-checked by
//! `context::guard`, which wraps every route). Every route but the login page, the assets and
//! the health check passes `auth::gate` (a login when the coordinator asks for one). Every
//! response carries `Server-Timing: app;dur=MS` ([`server_timing`], outermost), and is gzipped
//! for a browser that accepts it.

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::AppState;
use crate::actions;
use crate::auth;
use crate::context;
use crate::error::not_found;
use crate::pages::{
    agents, alerts, backfills, edit, graph, grid, history, instance, login, logs, overview, task, tasks,
    versions, watch,
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
        .route("/tasks/{id}/diff", get(versions::diff_page))
        .route("/tasks/{id}/pause", post(actions::task::pause))
        .route("/tasks/{id}/run", post(actions::task::run))
        .route("/tasks/{id}/delete", post(actions::task::delete))
        .route("/import", get(edit::import_form).post(edit::import))
        .route("/export.yaml", get(edit::export_all))
        .route("/instances/{task}/{day}", get(instance::page))
        .route("/instances/{task}/{day}/action", post(actions::instance::post))
        .route("/instances/{task}/{day}/log", get(logs::download))
        .route("/instances/{task}/{day}/live", get(logs::live))
        .route("/watch", get(watch::events))
        .route("/agents", get(agents::page))
        .route("/history", get(history::page))
        .route("/alerts", get(alerts::page))
        .route("/backfills", get(backfills::page).post(backfills::action))
        .route("/lang", post(actions::switch_lang))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/static/goflow.css", get(stylesheet))
        .route("/static/goflow.js", get(script))
        .route("/healthz", get(|| async { "ok\n" }))
        // Inside the CSRF guard: a forged POST is refused before anyone is asked anything.
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::gate))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), context::guard))
        // Pages are repetitive markup: the fastest level already shrinks the grid of 1,000 tasks
        // x 30 days from 3.8 MB to about 240 KB. Server-sent events are left alone.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .layer(middleware::from_fn(server_timing))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// What every response tells the browser: no framing by another site (clickjacking), scripts
/// and everything else from this origin only (the pages have no inline script; inline styles
/// remain, in attributes and in the drawn graph), no MIME sniffing, no URL leaked to others.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `Server-Timing: app;dur=12.3`: the server's own time for the response, from the request's
/// arrival to its headers (the page rendered, the coordinator's answers included; a streamed
/// body, such as a live log, counts until its headers only), in milliseconds with one decimal.
/// Browsers' devtools show it beside the network time, and `scripts/bench` reads it.
async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        response.headers_mut().append(SERVER_TIMING, value);
    }
    response
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
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::testing::{DAY, get, sample, unreachable};

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

    /// The `Server-Timing` header of a GET: status and value.
    async fn timing(app: &axum::Router, uri: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let values: Vec<_> = response.headers().get_all("server-timing").iter().collect();
        assert_eq!(values.len(), 1, "{uri}: one Server-Timing header, got {values:?}");
        (response.status(), values[0].to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn pages_are_gzipped_for_browsers_that_accept_it() {
        let app = sample().start().await;
        let request = |gzip: bool| {
            let request = Request::get("/grid?days=30");
            let request = if gzip {
                request.header("accept-encoding", "gzip")
            } else {
                request
            };
            request.body(Body::empty()).unwrap()
        };
        let response = app.clone().oneshot(request(true)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-encoding"], "gzip");
        assert_eq!(response.headers().get_all("server-timing").iter().count(), 1);
        let zipped = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(zipped[..2], [0x1f, 0x8b], "gzip's magic number");
        let response = app.oneshot(request(false)).await.unwrap();
        assert!(response.headers().get("content-encoding").is_none());
        let plain = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            zipped.len() < plain.len() / 2,
            "{} of {} bytes",
            zipped.len(),
            plain.len()
        );
    }

    /// `app;dur=` and a non-negative number of milliseconds with exactly one decimal.
    fn well_formed(value: &str) -> bool {
        let Some(ms) = value.strip_prefix("app;dur=") else {
            return false;
        };
        let Some((whole, tenths)) = ms.split_once('.') else {
            return false;
        };
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && tenths.len() == 1
            && tenths.bytes().all(|b| b.is_ascii_digit())
            && ms.parse::<f64>().is_ok_and(|v| v >= 0.0)
    }

    #[tokio::test]
    async fn every_response_carries_the_server_timing() {
        let app = sample().start().await;
        for page in ["/", "/tasks", "/grid?days=30", &format!("/graph?day={DAY}")] {
            let (status, value) = timing(&app, page).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(well_formed(&value), "{page}: Server-Timing {value:?}");
        }
        // Pages outside the login, errors and unknown pages too.
        let (app, _) = unreachable().await;
        for (page, expected) in [
            ("/healthz", StatusCode::OK),
            ("/nowhere", StatusCode::NOT_FOUND),
            ("/tasks", StatusCode::BAD_GATEWAY),
        ] {
            let (status, value) = timing(&app, page).await;
            assert_eq!(status, expected, "{page}");
            assert!(well_formed(&value), "{page}: Server-Timing {value:?}");
        }
        assert!(!well_formed("app;dur=1.25") && !well_formed("app;dur=1") && !well_formed("app;dur=-1.0"));
    }
}

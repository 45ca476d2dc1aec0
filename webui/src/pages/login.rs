//! `/login` and `/logout`: the session cookie comes from the coordinator's `AuthService.Login`
//! and is given back with `Logout` (see `auth.rs` for how it is used).

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::Query;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use goflow_proto::{LoginRequest, LogoutRequest, WhoAmIRequest};
use serde::Deserialize;
use tonic::Code;

use crate::AppState;
use crate::actions::safe_back;
use crate::auth::{is_cookie_safe, over_tls, session_cookie, session_token};
use crate::context::Ctx;
use crate::error::WebError;
use crate::translate;

#[derive(Template, WebTemplate)]
#[template(path = "pages/login.html")]
pub struct LoginPage {
    ctx: Ctx,
    /// Where to go once logged in (a path on this site).
    next: String,
    /// The name typed, kept after a wrong password.
    user: String,
    error: String,
    detail: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    next: Option<String>,
}

/// `GET /login?next=/path`: the form; straight on to `next` when the coordinator asks for no
/// login.
pub async fn form(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Response {
    let next = safe_back(params.next.as_deref().unwrap_or("/"));
    if let Ok(answer) = app.auth_client().who_am_i(WhoAmIRequest {}).await
        && !answer.into_inner().auth_enabled
    {
        return (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    }
    LoginPage {
        ctx,
        next,
        user: String::new(),
        error: String::new(),
        detail: String::new(),
    }
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the coordinator checks the password; the session token it answers becomes
/// the cookie, and the browser goes on to `next`. A refusal shows the form again, with nothing
/// stored.
pub async fn submit(
    app: AppState,
    ctx: Ctx,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_back(&form.next);
    let user = form.user.trim().to_string();
    // Whatever session the browser had, the login is made without it.
    let result = app
        .acting_as(None)
        .auth_client()
        .login(LoginRequest {
            user: user.clone(),
            password: form.password,
        })
        .await;
    let refused = |ctx: Ctx, error: &str, detail: String| {
        let page = LoginPage {
            ctx,
            next: next.clone(),
            user: user.clone(),
            error: error.to_string(),
            detail,
        };
        (StatusCode::UNAUTHORIZED, page).into_response()
    };
    let answer = match result {
        Ok(answer) => answer.into_inner(),
        // Wrong name or password: the same words for both, as the coordinator answers.
        Err(status) if status.code() == Code::Unauthenticated => {
            return refused(ctx.clone(), ctx.t.login_failed, String::new());
        }
        // Too many failed tries for this account: wait (the coordinator says how long).
        Err(status) if status.code() == Code::ResourceExhausted => {
            let detail = translate::say(ctx.lang, status.message());
            return refused(ctx.clone(), ctx.t.login_failed, detail);
        }
        Err(status) => {
            let detail = match status.code() {
                Code::Unimplemented => "this coordinator has no login".to_string(),
                _ => status.message().to_string(),
            };
            let detail = translate::say(ctx.lang, &detail);
            return refused(ctx.clone(), ctx.t.login_unavailable, detail);
        }
    };
    if !is_cookie_safe(&answer.token) {
        return WebError::Coordinator {
            coordinator: app.coordinator.to_string(),
            detail: "the session token it answered cannot be a cookie".into(),
        }
        .into_response();
    }
    let max_age =
        (answer.expires_at > 0).then(|| (answer.expires_at - chrono::Utc::now().timestamp_millis()) / 1000);
    let secure = app.secure_cookies || over_tls(&uri, &headers);
    tracing::info!(user = %answer.user, role = %answer.role, "logged in to the web UI");
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, session_cookie(&answer.token, max_age, secure));
    response
}

/// `POST /logout`: ends the session on the coordinator and forgets the cookie.
pub async fn logout(app: AppState, uri: Uri, headers: HeaderMap) -> Response {
    if session_token(&headers).is_some()
        && let Err(status) = app.auth_client().logout(LogoutRequest {}).await
    {
        // Already ended (expired, or the coordinator restarted): the cookie goes all the same.
        tracing::debug!("logout: {}", status.message());
    }
    let secure = app.secure_cookies || over_tls(&uri, &headers);
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, session_cookie("", Some(0), secure));
    response
}

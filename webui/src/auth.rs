//! Who is using the UI (issue 9): the session cookie, the gate every page passes, and roles.
//!
//! The UI keeps no accounts of its own. Logging in (`pages/login.rs`) asks the coordinator's
//! `AuthService.Login` for a session token, which the browser keeps in an `HttpOnly`,
//! `SameSite=Lax` cookie (`Secure` over TLS). [`gate`] asks `WhoAmI` once per request with that
//! token: a coordinator without authentication says so and the UI works as before, with every
//! button; otherwise a visitor without a valid session goes to `/login`, and a logged-in user's
//! name and role are put in the request for the header and for which buttons to show. Every
//! call a handler makes then carries the token as `authorization: Bearer ...` (handlers take
//! [`AppState`] as an extractor), so the coordinator, not the UI, decides what is allowed: a
//! hidden button is a convenience, a forged POST is refused by the coordinator all the same.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use goflow_proto::WhoAmIRequest;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tonic::Code;

use crate::AppState;
use crate::context::cookie;
use crate::error::WebError;
use crate::i18n::Texts;

pub const SESSION_COOKIE: &str = "goflow_session";

pub use goflow_core::Role;

/// A role as the coordinator names it; an unknown name reads as the least role (a button too
/// few rather than one too many).
pub fn parse_role(name: &str) -> Role {
    Role::parse(name.trim()).unwrap_or(Role::Viewer)
}

/// A role's name in the page's language, for the header.
pub fn role_label(role: Role, t: &'static Texts) -> &'static str {
    match role {
        Role::Viewer => t.role_viewer,
        Role::Operator => t.role_operator,
        Role::Editor => t.role_editor,
        Role::Admin => t.role_admin,
    }
}

/// A logged-in user as the coordinator named them (`WhoAmI`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user, or `token:NAME` for an API token.
    pub name: String,
    pub role: Role,
}

impl User {
    pub fn role_label(&self, t: &'static Texts) -> &'static str {
        role_label(self.role, t)
    }
}

/// What [`gate`] learnt about the request, in its extensions.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The cookie's session token, sent with every call.
    pub token: Option<String>,
    /// `None`: the coordinator asks for no login (or is too old to know about it).
    pub user: Option<User>,
}

/// Pages anyone may open: the login form itself, the assets, the health check, the language
/// switch. Everything else passes the gate.
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/logout" | "/healthz" | "/lang") || path.starts_with("/static/")
}

/// Middleware on every route: asks the coordinator who the session cookie's token belongs to
/// (one `WhoAmI` per request), sends a visitor without a valid session to `/login`, and puts the
/// [`Session`] in the request for the handlers.
pub async fn gate(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let token = session_token(request.headers());
    let acting = app
        .for_browser(browser(request.extensions()))
        .acting_as(token.as_deref());
    let user = match acting.auth_client().who_am_i(WhoAmIRequest {}).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            answer.auth_enabled.then(|| User {
                name: answer.principal,
                role: parse_role(&answer.role),
            })
        }
        Err(status) if status.code() == Code::Unauthenticated => {
            return to_login(&request, token.is_some());
        }
        // A coordinator from before authentication: nothing to log in to.
        Err(status) if status.code() == Code::Unimplemented => None,
        Err(status) => return app.fail(status).into_response(),
    };
    // Checked on every request, not only at start: the coordinator may have been restarted
    // without authentication since.
    if user.is_none() && app.require_auth {
        return WebError::AuthRequired.into_response();
    }
    request.extensions_mut().insert(Session { token, user });
    next.run(request).await
}

/// The session token of the request's cookie, when it has a usable one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE).filter(|t| is_cookie_safe(t))
}

/// A token the coordinator handed out, fit to be a cookie value and a metadata value.
pub fn is_cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
}

/// 303 to the login form, which comes back to this page afterwards (a GET; after a refused POST,
/// to the page the form was on, unknown here: the overview). A stale cookie is cleared.
fn to_login(request: &Request, had_token: bool) -> Response {
    let back = match *request.method() {
        Method::GET | Method::HEAD => request.uri().path_and_query().map_or("/", |p| p.as_str()),
        _ => "/",
    };
    let location = if back == "/" {
        "/login".to_string()
    } else {
        format!("/login?next={}", utf8_percent_encode(back, NON_ALPHANUMERIC))
    };
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response();
    if had_token {
        response
            .headers_mut()
            .append(SET_COOKIE, session_cookie("", Some(0), false));
    }
    response
}

/// The `Set-Cookie` value of the session: `HttpOnly` (no script reads it), `SameSite=Lax` (sent
/// when following a link to the UI, never with a cross-site POST; the forms' CSRF token guards
/// those too), `Secure` over TLS. `max_age` `None` lasts as long as the browser; `Some(0)` deletes.
pub fn session_cookie(token: &str, max_age_secs: Option<i64>, secure: bool) -> HeaderValue {
    let mut value = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(max_age) = max_age_secs {
        value.push_str(&format!("; Max-Age={}", max_age.max(0)));
    }
    if secure {
        value.push_str("; Secure");
    }
    HeaderValue::from_str(&value).expect("session tokens are checked to be cookie-safe")
}

/// The request came over TLS: directly, or through a proxy that says so.
pub fn over_tls(parts_uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    parts_uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Handlers take the state this way: a copy that acts as the request's session (its calls carry
/// the cookie's token).
impl FromRequestParts<AppState> for AppState {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = match parts.extensions.get::<Session>() {
            Some(session) => session.token.clone(),
            None => session_token(&parts.headers),
        };
        Ok(state
            .for_browser(browser(&parts.extensions))
            .acting_as(token.as_deref()))
    }
}

/// The browser's address: the TCP peer, as the server recorded it (`ConnectInfo`).
fn browser(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the web UIs' secret, every call names the browser and carries the proof; without
    /// it, or without a known browser, neither header is sent.
    #[tokio::test]
    async fn calls_name_the_browser_only_with_the_webui_secret() {
        use tonic::service::Interceptor;
        let browser = Some("127.0.0.2:5000".parse().unwrap());
        let sent = |app: AppState| {
            let request = app.meta().call(tonic::Request::new(())).unwrap();
            let header = |name: &str| {
                request
                    .metadata()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            (header("x-goflow-forwarded-for"), header("x-goflow-forwarded-by"))
        };
        let plain = AppState::new("http://127.0.0.1:1").unwrap();
        let proven = plain
            .clone()
            .with_forwarding_secret(Some("webui-secret-0123456789"))
            .unwrap();
        assert_eq!(
            sent(proven.for_browser(browser).acting_as(Some("gfs_x"))),
            (
                Some("127.0.0.2:5000".into()),
                Some("webui-secret-0123456789".into())
            )
        );
        assert_eq!(sent(proven.for_browser(None)), (None, None));
        assert_eq!(sent(plain.for_browser(browser)), (None, None));
        assert!(plain.with_forwarding_secret(Some("bad\nsecret")).is_err());
    }

    #[test]
    fn an_unknown_role_reads_as_the_least() {
        assert_eq!(parse_role("operator"), Role::Operator);
        assert_eq!(parse_role("superuser"), Role::Viewer);
        assert_eq!(role_label(Role::Editor, &crate::i18n::ZH), "编辑者");
    }

    #[test]
    fn only_cookie_safe_tokens_are_used() {
        assert!(is_cookie_safe("gfs_AbC-12_x.y"));
        for bad in ["", "a;b", "a b", "a\"b", "a,b", "ä"] {
            assert!(!is_cookie_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_http_only_lax_and_secure_over_tls() {
        let plain = session_cookie("gfs_x", Some(60), false);
        assert_eq!(
            plain,
            "goflow_session=gfs_x; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        assert!(
            session_cookie("gfs_x", None, true)
                .to_str()
                .unwrap()
                .ends_with("SameSite=Lax; Secure")
        );
        let mut headers = HeaderMap::new();
        let uri: axum::http::Uri = "/login".parse().unwrap();
        assert!(!over_tls(&uri, &headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&uri, &headers));
    }
}

/// The login, the session cookie and the roles through the router, against the fake
/// coordinator with authentication on (`Fake::with_auth`).
#[cfg(test)]
mod router_tests {
    use axum::http::StatusCode;

    use crate::testing::{DAY, get, get_with, post, post_with, sample};

    const OPERATOR: (&str, &str) = ("cookie", "goflow_session=gfs_otto");
    const VIEWER: (&str, &str) = ("cookie", "goflow_session=gfs_vera");
    const EDITOR: (&str, &str) = ("cookie", "goflow_session=gfs_edda");

    /// GETs `uri` and returns the status, `Location` and `Set-Cookie` values.
    async fn head(
        app: &axum::Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, Vec<String>) {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        (response.status(), location, cookies)
    }

    fn session_cookie_of(cookies: &[String]) -> Option<&String> {
        cookies.iter().find(|c| c.starts_with("goflow_session="))
    }

    /// The probe: no X-Frame-Options or CSP, and a CSRF cookie without `Secure` under TLS.
    #[tokio::test]
    async fn every_response_forbids_framing_and_foreign_scripts_and_the_csrf_cookie_is_secure_over_tls() {
        use tower::ServiceExt;
        let app = sample().start().await;
        for uri in ["/", "/login", "/no/such/page", "/static/goflow.css"] {
            let response = app
                .clone()
                .oneshot(
                    axum::http::Request::get(uri)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let headers = response.headers();
            assert_eq!(headers["x-frame-options"], "DENY", "{uri}");
            assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
            let csp = headers["content-security-policy"].to_str().unwrap();
            for directive in [
                "frame-ancestors 'none'",
                "script-src 'self';",
                "object-src 'none'",
            ] {
                assert!(csp.contains(directive), "{uri}: {csp}");
            }
        }
        let csrf_of = |cookies: Vec<String>| {
            cookies
                .into_iter()
                .find(|c| c.starts_with("goflow_csrf="))
                .expect("a CSRF cookie is set")
        };
        let (_, _, plain) = head(&app, "/", &[]).await;
        assert!(!csrf_of(plain).contains("Secure"));
        let (_, _, tls) = head(&app, "/", &[("x-forwarded-proto", "https")]).await;
        assert!(csrf_of(tls).ends_with("; HttpOnly; Secure"));
    }

    #[tokio::test]
    async fn a_visitor_without_a_session_is_sent_to_the_login_form() {
        let fake = sample().with_auth();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let (status, location, _) = head(&app, "/tasks?x=1", &[]).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/login?next=%2Ftasks%3Fx%3D1")
        );
        let (_, location, _) = head(&app, "/", &[]).await;
        assert_eq!(location, "/login");
        // A token the coordinator does not know is cleared on the way.
        let (status, location, cookies) =
            head(&app, "/agents", &[("cookie", "goflow_session=gfs_nobody")]).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/login?next=%2Fagents")
        );
        let cleared = session_cookie_of(&cookies).expect("the stale cookie is cleared");
        assert!(
            cleared.starts_with("goflow_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        // The form, the assets and the health check need no login.
        let (status, body) = get(&app, "/login?next=%2Ftasks").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("id=\"login-form\"") && body.contains("type=\"password\""),
            "{body}"
        );
        assert!(body.contains("name=\"next\" value=\"/tasks\""), "{body}");
        assert!(
            !body.contains("href=\"/graph\""),
            "no navigation before logging in"
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/static/goflow.css").await.0, StatusCode::OK);
        // A POST without a session (but with a valid CSRF token) changes nothing.
        let answer = post(
            &app,
            &format!("/instances/report/{DAY}/action"),
            &[("action", "kill"), ("confirmed", "1")],
            true,
        )
        .await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/login")
        );
        assert!(calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn logging_in_sets_an_http_only_same_site_cookie_and_goes_on() {
        let app = sample().with_auth().start().await;
        let fields = [
            ("user", "otto"),
            ("password", "otto-pw"),
            ("next", "/tasks/extract"),
        ];
        let answer = post(&app, "/login", &fields, true).await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/tasks/extract"),
            "{}",
            answer.body
        );
        let cookie = session_cookie_of(&answer.cookies).expect("a session cookie");
        assert!(cookie.starts_with("goflow_session=gfs_otto;"), "{cookie}");
        for attribute in ["; HttpOnly", "; SameSite=Lax", "; Path=/", "; Max-Age="] {
            assert!(cookie.contains(attribute), "{attribute} in {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        // Over TLS (a proxy says so) the cookie is Secure; a redirect elsewhere goes home.
        let fields = [
            ("user", "otto"),
            ("password", "otto-pw"),
            ("next", "//evil.example/"),
        ];
        let answer = post_with(&app, "/login", &fields, true, &[("x-forwarded-proto", "https")]).await;
        assert_eq!(answer.location, "/");
        assert!(
            session_cookie_of(&answer.cookies).unwrap().ends_with("; Secure"),
            "{:?}",
            answer.cookies
        );
        // The login form is CSRF-checked like every other.
        let answer = post(
            &app,
            "/login",
            &[("user", "otto"), ("password", "otto-pw")],
            false,
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(session_cookie_of(&answer.cookies).is_none());
    }

    #[tokio::test]
    async fn a_wrong_password_shows_the_form_again_and_stores_nothing() {
        let app = sample().with_auth().start().await;
        let answer = post(
            &app,
            "/login",
            &[("user", "otto"), ("password", "guess"), ("next", "/grid")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(
            session_cookie_of(&answer.cookies).is_none(),
            "{:?}",
            answer.cookies
        );
        assert!(answer.body.contains("id=\"login-error\""), "{}", answer.body);
        assert!(answer.body.contains("Wrong user name or password."));
        assert!(
            answer.body.contains("name=\"user\" value=\"otto\""),
            "the name is kept"
        );
        assert!(answer.body.contains("name=\"next\" value=\"/grid\""));
        let answer = post_with(
            &app,
            "/login",
            &[("user", "nobody"), ("password", "x")],
            true,
            &[("accept-language", "zh-CN")],
        )
        .await;
        assert!(answer.body.contains("用户名或密码错误。"), "{}", answer.body);
        assert!(answer.body.contains(">登录</button>"));
    }

    #[tokio::test]
    async fn the_cookies_token_is_sent_as_bearer_metadata_with_every_call() {
        let fake = sample().with_auth();
        let (bearers, calls) = (fake.bearers.clone(), fake.calls.clone());
        let app = fake.start().await;
        for uri in [
            "/tasks",
            "/tasks/transform",
            &format!("/instances/transform/{DAY}"),
            "/agents",
            "/history",
        ] {
            let (status, body) = get_with(&app, uri, &[OPERATOR]).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        }
        let answer = post_with(
            &app,
            &format!("/instances/report/{DAY}/action"),
            &[("action", "redo"), ("confirmed", "1")],
            true,
            &[OPERATOR],
        )
        .await;
        assert!(answer.flash().starts_with("ok."), "{}", answer.flash());
        assert_eq!(*calls.lock().unwrap(), vec!["Run report@20260110"]);
        let bearers = bearers.lock().unwrap();
        assert!(bearers.len() > 10, "{bearers:?}");
        assert!(bearers.iter().all(|b| b == "Bearer gfs_otto"), "{bearers:?}");
    }

    #[tokio::test]
    async fn a_viewer_sees_no_repair_buttons_and_a_forged_one_is_refused() {
        let fake = sample().with_auth();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let instance = format!("/instances/report/{DAY}");
        let (status, body) = get_with(&app, &instance, &[VIEWER]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains("id=\"action-"), "{body}");
        assert!(!body.contains(&format!("action=\"{instance}/action\"")));
        let (_, task) = get_with(&app, "/tasks/extract", &[VIEWER]).await;
        for button in [
            "pause-toggle",
            "run-day",
            "backfill-preview",
            "delete-task",
            "edit-task",
        ] {
            assert!(!task.contains(&format!("id=\"{button}\"")), "{button}");
        }
        let (_, tasks) = get_with(&app, "/tasks", &[VIEWER]).await;
        assert!(!tasks.contains("id=\"new-task\"") && !tasks.contains("id=\"import-yaml\""));
        assert_eq!(
            get_with(&app, "/tasks/new", &[VIEWER]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get_with(&app, "/import", &[VIEWER]).await.0,
            StatusCode::FORBIDDEN
        );

        // The same button posted anyway: the coordinator refuses, and the page says why.
        let answer = post_with(
            &app,
            &format!("{instance}/action"),
            &[("action", "kill"), ("confirmed", "1")],
            true,
            &[VIEWER],
        )
        .await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, instance.as_str())
        );
        assert_eq!(answer.flash(), "no.vera is viewer; this needs the operator role");
        let answer = post_with(&app, "/tasks/extract/pause", &[("paused", "1")], true, &[VIEWER]).await;
        assert_eq!(answer.flash(), "no.vera is viewer; this needs the operator role");
        let answer = post_with(
            &app,
            "/import",
            &[("document", "tasks: []"), ("mode", "apply")],
            true,
            &[VIEWER],
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(
            answer.body.contains("this needs the editor role"),
            "{}",
            answer.body
        );
        assert!(calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_operator_repairs_but_does_not_edit_and_an_editor_does_both() {
        let app = sample().with_auth().start().await;
        let (_, body) = get_with(&app, &format!("/instances/report/{DAY}"), &[OPERATOR]).await;
        for action in [
            "force_run",
            "redo",
            "redo_down",
            "redo_up",
            "mark_success",
            "kill",
            "delete",
        ] {
            assert!(body.contains(&format!("id=\"action-{action}\"")), "{action}");
        }
        let (_, task) = get_with(&app, "/tasks/extract", &[OPERATOR]).await;
        assert!(task.contains("id=\"pause-toggle\"") && task.contains("id=\"run-day\""));
        assert!(!task.contains("id=\"delete-task\"") && !task.contains("id=\"edit-task\""));
        let (_, tasks) = get_with(&app, "/tasks", &[OPERATOR]).await;
        assert!(!tasks.contains("id=\"new-task\""));
        let (_, task) = get_with(&app, "/tasks/extract", &[EDITOR]).await;
        for button in ["pause-toggle", "run-day", "delete-task", "edit-task"] {
            assert!(task.contains(&format!("id=\"{button}\"")), "{button}");
        }
        assert_eq!(get_with(&app, "/tasks/new", &[EDITOR]).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_header_names_the_user_and_role_with_a_logout_button() {
        let app = sample().with_auth().start().await;
        let (_, body) = get_with(&app, "/agents", &[OPERATOR]).await;
        assert!(body.contains("<strong id=\"who-name\">otto</strong>"), "{body}");
        assert!(body.contains("<span class=\"role\" id=\"who-role\">operator</span>"));
        assert!(body.contains("<form method=\"post\" action=\"/logout\" class=\"logout\">"));
        assert!(body.contains(">Log out</button>"));
        let (_, body) = get_with(&app, "/agents", &[VIEWER, ("accept-language", "zh-CN")]).await;
        assert!(
            body.contains("id=\"who-role\">查看者</span>") && body.contains(">退出登录</button>"),
            "{body}"
        );
        // Without authentication nobody is named, and there is nothing to log in to.
        let open = sample().start().await;
        let (_, body) = get(&open, "/agents").await;
        assert!(!body.contains("id=\"who\""));
        let (status, location, _) = head(&open, "/login?next=%2Fgrid", &[]).await;
        assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/grid"));
    }

    #[tokio::test]
    async fn logging_out_ends_the_session_and_clears_the_cookie() {
        let fake = sample().with_auth();
        let logouts = fake.logouts.clone();
        let app = fake.start().await;
        let answer = post_with(&app, "/logout", &[], true, &[OPERATOR]).await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/login")
        );
        let cleared = session_cookie_of(&answer.cookies).expect("the cookie is cleared");
        assert!(
            cleared.starts_with("goflow_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        assert_eq!(*logouts.lock().unwrap(), vec!["Bearer gfs_otto"]);
        // Logging out is a form like the others: not from another site.
        let answer = post_with(&app, "/logout", &[], false, &[OPERATOR]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
}

/// A web UI beyond loopback (probe item): no page while the coordinator has authentication
/// off, pages as usual once it has it on.
#[cfg(test)]
mod exposed_tests {
    use axum::http::StatusCode;

    use crate::testing::{get, get_with, sample};

    #[tokio::test]
    async fn a_web_ui_beyond_loopback_serves_no_page_for_a_coordinator_without_auth() {
        let app = sample().start_as(true).await;
        for page in ["/", "/tasks", "/agents"] {
            let (status, body) = get(&app, page).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{page}: {body}");
            assert!(
                body.contains("authentication off") && body.contains("--auth"),
                "{body}"
            );
        }
        let (_, body) = get_with(&app, "/", &[("accept-language", "zh-CN")]).await;
        assert!(
            body.contains("需要身份验证") && body.contains("未开启身份验证"),
            "{body}"
        );
        // The health check stays public.
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

        let guarded = sample().with_auth().start_as(true).await;
        let (status, _) = get(&guarded, "/").await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "a coordinator with auth: to the login form"
        );
        let (status, _) = get_with(&guarded, "/", &[("cookie", "goflow_session=gfs_vera")]).await;
        assert_eq!(status, StatusCode::OK);
    }
}

//! What every page needs besides its data: the language, the CSRF token for its forms, and the
//! one-shot message left by the action that redirected here ("flash").
//!
//! CSRF: a random token lives in a `SameSite=Strict`, `HttpOnly` cookie and is repeated in a
//! hidden field of every form; `guard` refuses any request that is not GET/HEAD unless the two
//! match. A GET never changes anything, so a cross-site page can neither act nor read the token.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{ACCEPT_LANGUAGE, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::auth::{Role, Session, User};
use crate::error::WebError;
use crate::i18n::{Lang, Texts};

pub const CSRF_COOKIE: &str = "goflow_csrf";
pub const LANG_COOKIE: &str = "goflow_lang";
pub const FLASH_COOKIE: &str = "goflow_flash";
/// The largest form accepted (a pasted DAG document is the biggest).
const MAX_FORM_BYTES: usize = 4 << 20;

tokio::task_local! {
    /// The language of the request being answered, set by `guard` around everything else, for
    /// pages rendered without a request at hand (error pages).
    static REQUEST_LANG: Lang;
}

/// The language of the request being answered; English outside one.
pub fn request_lang() -> Lang {
    REQUEST_LANG.try_with(|lang| *lang).unwrap_or(Lang::En)
}

/// Per-request page context, extracted from the headers (and the token `guard` put there).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    pub t: &'static Texts,
    pub csrf: String,
    pub flash: Option<Flash>,
    /// The page's path and query, for the language switch to come back to.
    pub here: String,
    /// Who is logged in, for the header; `None` when the coordinator asks for no login.
    pub user: Option<User>,
    /// Which buttons to show: the user's role, or every one when no login is needed. Only a
    /// convenience: the coordinator checks every call's role itself.
    pub role: Role,
}

impl Ctx {
    /// For pages rendered without a request at hand (error pages): the request's language,
    /// no forms.
    pub fn plain() -> Self {
        let lang = request_lang();
        Self {
            lang,
            t: lang.texts(),
            csrf: String::new(),
            flash: None,
            here: "/".into(),
            user: None,
            role: Role::Viewer,
        }
    }

    /// Runs, reruns, kills, marks success, deletes instances, pauses.
    pub fn may_operate(&self) -> bool {
        self.role >= Role::Operator
    }

    /// Creates, changes and deletes task definitions.
    pub fn may_edit(&self) -> bool {
        self.role >= Role::Editor
    }
}

/// The outcome of an action, shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

/// The request's CSRF token, as `guard` validated or created it.
#[derive(Debug, Clone)]
struct CsrfToken(String);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let lang = choose_lang(&parts.headers);
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let flash = cookie(&parts.headers, FLASH_COOKIE).and_then(|v| Flash::decode(&v));
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let user = parts.extensions.get::<Session>().and_then(|s| s.user.clone());
        let role = user.as_ref().map_or(Role::Admin, |u| u.role);
        Ok(Self {
            lang,
            t: lang.texts(),
            csrf,
            flash,
            here,
            user,
            role,
        })
    }
}

/// The remembered choice (cookie) first, then the browser's Accept-Language, then English.
pub fn choose_lang(headers: &HeaderMap) -> Lang {
    if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
        return lang;
    }
    let accept = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Lang::from_accept_language(accept)
}

/// The value of one cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` value for a cookie only this site's pages send (Strict) and scripts cannot
/// read (HttpOnly). `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    set_cookie_over(name, value, max_age_secs, false)
}

/// As `set_cookie`, and `Secure` (sent over TLS only) when `secure`.
pub fn set_cookie_over(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; SameSite=Strict; HttpOnly{secure}"
    ))
    .expect("cookie values are ASCII")
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }

    fn encode(&self) -> String {
        let kind = if self.ok { "ok" } else { "no" };
        format!("{kind}.{}", utf8_percent_encode(&self.message, NON_ALPHANUMERIC))
    }

    fn decode(value: &str) -> Option<Self> {
        let (kind, message) = value.split_once('.')?;
        let message = percent_decode_str(message).decode_utf8().ok()?.into_owned();
        match kind {
            "ok" => Some(Self::ok(message)),
            "no" => Some(Self::refused(message)),
            _ => None,
        }
    }

    /// A redirect (303, so the browser GETs) to `to`, carrying this message for the next page.
    pub fn redirect(&self, to: &str) -> Response {
        let mut response = (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, to)]).into_response();
        // At most a few hundred bytes: messages are short, and a cookie must stay under 4 KiB.
        let mut encoded = self.encode();
        encoded.truncate(3000);
        response
            .headers_mut()
            .append(SET_COOKIE, set_cookie(FLASH_COOKIE, &encoded, 60));
        response
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_token(value: &str) -> bool {
    value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Middleware on every route: gives the request a CSRF token (a new one, set as a cookie, when
/// it has none), refuses state-changing requests whose form does not repeat the cookie's token,
/// and clears the flash message once a page has shown it.
pub async fn guard(State(app): State<crate::AppState>, request: Request, next: Next) -> Response {
    let lang = choose_lang(request.headers());
    // Over TLS the CSRF cookie is `Secure`, like the session's: a plain-HTTP page on the same
    // host must not be able to read or plant it.
    let secure = app.secure_cookies || crate::auth::over_tls(request.uri(), request.headers());
    REQUEST_LANG.scope(lang, guard_in(request, next, secure)).await
}

async fn guard_in(request: Request, next: Next, secure: bool) -> Response {
    let existing = cookie(request.headers(), CSRF_COOKIE).filter(|t| is_token(t));
    let had_flash = cookie(request.headers(), FLASH_COOKIE).is_some();
    let token = existing.clone().unwrap_or_else(new_token);
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);

    let (mut parts, body) = request.into_parts();
    let body = if is_read {
        body
    } else {
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => return WebError::Forbidden("the form is too large".into()).into_response(),
        };
        let is_form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let sent = form_urlencoded::parse(&bytes)
            .find(|(key, _)| key == "csrf")
            .map(|(_, value)| value.into_owned());
        let matches = is_form && existing.is_some() && sent.as_deref() == existing.as_deref();
        if !matches {
            return WebError::Forbidden(
                "this form expired or did not come from this site: reload the page and try again".into(),
            )
            .into_response();
        }
        Body::from(bytes)
    };
    parts.extensions.insert(CsrfToken(token.clone()));
    let is_page =
        is_read && !parts.uri.path().starts_with("/static/") && !parts.uri.path().ends_with("/live");
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if existing.is_none() {
        // A year: the token only has to outlive the open tab; it carries no authority alone.
        response.headers_mut().append(
            SET_COOKIE,
            set_cookie_over(CSRF_COOKIE, &token, 365 * 86_400, secure),
        );
    }
    let showed_flash = had_flash && is_page && response.status() == StatusCode::OK;
    if showed_flash {
        response
            .headers_mut()
            .append(SET_COOKIE, set_cookie(FLASH_COOKIE, "", 0));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_messages_survive_the_cookie_round_trip() {
        for flash in [
            Flash::ok("3 instances to run"),
            Flash::refused("不能; =\"x\" 100%"),
        ] {
            assert_eq!(Flash::decode(&flash.encode()), Some(flash.clone()));
        }
        assert_eq!(Flash::decode("maybe.x"), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a_goflow_lang=en; goflow_lang=zh"),
        );
        assert_eq!(cookie(&headers, LANG_COOKIE).as_deref(), Some("zh"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn a_remembered_language_beats_the_browsers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_LANGUAGE,
            HeaderValue::from_static("zh-CN,zh;q=0.9,en;q=0.8"),
        );
        assert_eq!(choose_lang(&headers), Lang::Zh);
        headers.insert(COOKIE, HeaderValue::from_static("goflow_lang=en"));
        assert_eq!(choose_lang(&headers), Lang::En);
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert!(is_token(&a) && is_token(&b) && a != b);
        assert!(!is_token("short") && !is_token(&"g".repeat(40)));
    }
}

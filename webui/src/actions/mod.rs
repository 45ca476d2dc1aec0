//! Actions: the POST forms. Each one confirms (a dialog with JavaScript, a confirmation page
//! without), calls one RPC, and redirects back with the result or the coordinator's reason for
//! refusing as a one-shot message. The CSRF check happens before any of them (`context::guard`).

pub mod instance;
pub mod task;

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::http::StatusCode;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tonic::{Code, Status};

pub use crate::context::Flash;
use crate::context::{Ctx, LANG_COOKIE, set_cookie};
use crate::i18n::Lang;
use crate::translate;

/// A form field echoed back by the confirmation page.
pub struct HiddenField {
    pub name: String,
    pub value: String,
}

/// Shown when an action is posted without `confirmed=1` (the browser ran no script).
#[derive(Template, WebTemplate)]
#[template(path = "pages/confirm.html")]
pub struct ConfirmPage {
    pub ctx: Ctx,
    pub title: String,
    pub question: String,
    pub post_to: String,
    pub fields: Vec<HiddenField>,
    pub cancel_to: String,
    pub danger: bool,
}

/// The result of an action for the flash message: what the coordinator said, or why it
/// refused (its message, which names the culprit), or why it could not be asked.
/// The refusal is said in `lang`; `ok_message` says the result itself.
pub fn outcome<T>(lang: Lang, result: Result<T, Status>, ok_message: impl FnOnce(T) -> String) -> Flash {
    match result {
        Ok(value) => Flash::ok(ok_message(value)),
        Err(status) => Flash::refused(translate::say(lang, &refusal(&status))),
    }
}

fn refusal(status: &Status) -> String {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => {
            format!("the coordinator could not be reached: {}", status.message())
        }
        _ => status.message().to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LangForm {
    lang: String,
    #[serde(default)]
    back: String,
}

/// `POST /lang`: remembers the language in a cookie and goes back to the page.
pub async fn switch_lang(Form(form): Form<LangForm>) -> Response {
    let lang = Lang::parse(&form.lang).unwrap_or(Lang::En);
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, safe_back(&form.back))]).into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(LANG_COOKIE, lang.key(), 365 * 86_400));
    response
}

/// Only a path on this site (never `//elsewhere` or `https://...`): no open redirect.
pub fn safe_back(back: &str) -> String {
    let local = back.starts_with('/') && !back.starts_with("//") && !back.contains('\\');
    if local && back.bytes().all(|b| b.is_ascii_graphic()) {
        back.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_back;

    #[test]
    fn going_back_stays_on_this_site() {
        assert_eq!(safe_back("/grid?days=7"), "/grid?days=7");
        assert_eq!(safe_back("//evil.example/x"), "/");
        assert_eq!(safe_back("https://evil.example/"), "/");
        assert_eq!(safe_back("/\\evil"), "/");
        assert_eq!(safe_back(""), "/");
    }
}

#[cfg(test)]
mod switch_tests {
    use axum::http::StatusCode;

    use crate::testing::{get_with, post, sample};

    #[tokio::test]
    async fn the_language_switch_is_remembered_in_a_cookie() {
        let app = sample().start().await;
        let answer = post(&app, "/lang", &[("lang", "zh"), ("back", "/agents")], true).await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/agents")
        );
        assert!(answer.cookies.iter().any(|c| c.starts_with("goflow_lang=zh;")));
        // The remembered choice wins over the browser's English.
        let (_, body) = get_with(
            &app,
            "/agents",
            &[("cookie", "goflow_lang=zh"), ("accept-language", "en")],
        )
        .await;
        assert!(body.contains("<h1>执行器"), "{body}");
        assert!(body.contains(">English</button>"));
    }

    #[tokio::test]
    async fn a_page_shows_the_flash_once_and_clears_it() {
        let app = sample().start().await;
        let response = {
            use tower::ServiceExt;
            let request = axum::http::Request::get("/agents")
                .header("cookie", "goflow_flash=ok.extract%20paused")
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(request).await.unwrap()
        };
        let cleared = response.headers().get_all("set-cookie").iter().any(|c| {
            c.to_str()
                .unwrap()
                .starts_with("goflow_flash=; Path=/; Max-Age=0")
        });
        assert!(cleared);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&body)
                .contains("<div class=\"flash ok\" id=\"flash\" role=\"status\">extract paused</div>")
        );
    }
}

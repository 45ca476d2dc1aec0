//! Everything a page can fail with, and the error page that says so with the right status.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic::{Code, Status};

use crate::context::Ctx;

#[derive(Debug)]
pub enum WebError {
    /// The coordinator did not answer (down, wrong address, timed out).
    Unreachable {
        coordinator: String,
        detail: String,
    },
    /// The coordinator answered with an error we cannot help with.
    Coordinator {
        coordinator: String,
        detail: String,
    },
    NotFound(String),
    /// A query or path parameter that does not parse; `name` is the parameter.
    BadParameter {
        name: &'static str,
        message: String,
    },
    /// The coordinator found the request invalid (what we checked was not enough).
    Rejected(String),
    /// A state-changing request without a valid CSRF token.
    Forbidden(String),
    /// The coordinator refused the call for the user's role (its message names the role
    /// needed).
    Denied(String),
    /// The session ended between the login check and the call: log in again.
    SignedOut,
}

impl WebError {
    /// Sorts a failed call: transport trouble is "unreachable", the rest follows the gRPC code.
    pub fn from_status(status: Status, coordinator: &str) -> Self {
        let detail = describe(&status);
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unreachable {
                coordinator: coordinator.to_string(),
                detail,
            },
            Code::NotFound => Self::NotFound(status.message().to_string()),
            Code::InvalidArgument => Self::Rejected(status.message().to_string()),
            Code::PermissionDenied => Self::Denied(status.message().to_string()),
            Code::Unauthenticated => Self::SignedOut,
            _ => Self::Coordinator {
                coordinator: coordinator.to_string(),
                detail,
            },
        }
    }

    pub fn bad_parameter(name: &'static str, message: impl Into<String>) -> Self {
        Self::BadParameter {
            name,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable { .. } | Self::Coordinator { .. } => StatusCode::BAD_GATEWAY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadParameter { .. } | Self::Rejected(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::SignedOut => StatusCode::SEE_OTHER,
        }
    }

    fn page(&self) -> ErrorPage {
        let status = self.status().as_u16();
        let ctx = Ctx::plain();
        match self {
            Self::Unreachable { coordinator, detail } => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Coordinator unreachable",
                message: format!("cannot reach the coordinator at {coordinator}"),
                detail: detail.clone(),
                hint: "The web UI reads everything from the coordinator's gRPC API. Is the \
                       coordinator running, and is this its address?"
                    .into(),
            },
            Self::Coordinator { coordinator, detail } => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Coordinator error",
                message: format!("the coordinator at {coordinator} answered with an error"),
                detail: detail.clone(),
                hint: String::new(),
            },
            Self::NotFound(what) => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Not found",
                message: what.clone(),
                detail: String::new(),
                hint: String::new(),
            },
            Self::BadParameter { name, message } => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Bad request",
                message: format!("bad parameter {name}: {message}"),
                detail: String::new(),
                hint: String::new(),
            },
            Self::Rejected(message) => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Bad request",
                message: format!("the coordinator rejected the request: {message}"),
                detail: String::new(),
                hint: String::new(),
            },
            Self::Forbidden(message) => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Forbidden",
                message: message.clone(),
                detail: String::new(),
                hint: String::new(),
            },
            Self::Denied(message) => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Not allowed",
                message: format!("the coordinator refused: {message}"),
                detail: String::new(),
                hint: "Your role does not allow this; an administrator can give you another.".into(),
            },
            Self::SignedOut => ErrorPage {
                ctx: ctx.clone(),
                status,
                title: "Logged out",
                message: "the session has ended: log in again".into(),
                detail: String::new(),
                hint: String::new(),
            },
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::warn!(error = ?self, "page failed");
        }
        if matches!(self, Self::SignedOut) {
            return (
                StatusCode::SEE_OTHER,
                [(axum::http::header::LOCATION, "/login")],
                self.page(),
            )
                .into_response();
        }
        (self.status(), self.page()).into_response()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    ctx: Ctx,
    status: u16,
    title: &'static str,
    message: String,
    detail: String,
    hint: String,
}

/// `unavailable: tcp connect error: Connection refused (os error 111)`: the code and the whole
/// chain of causes, which is where transport errors keep the useful part.
fn describe(status: &Status) -> String {
    let mut parts = vec![format!("{:?}", status.code()).to_lowercase()];
    if !status.message().is_empty() {
        parts.push(status.message().to_string());
    }
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Routes nobody serves.
pub async fn not_found(uri: axum::http::Uri) -> WebError {
    WebError::NotFound(format!("no page at {}", uri.path()))
}

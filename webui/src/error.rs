//! Everything a page can fail with, and the error page that says so with the right status.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic::{Code, Status};

use crate::context::Ctx;
use crate::i18n::Lang;
use crate::translate;

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
    /// This web UI listens beyond loopback and its coordinator has authentication off: it
    /// serves no page (anyone reaching it could run any command on the agents).
    AuthRequired,
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
            Self::Forbidden(_) | Self::Denied(_) | Self::AuthRequired => StatusCode::FORBIDDEN,
            Self::SignedOut => StatusCode::SEE_OTHER,
        }
    }

    /// The error page in the request's language (see `context::request_lang`). The
    /// coordinator's own words (what was not found, why it refused) are translated by shape.
    fn page(&self) -> ErrorPage {
        let ctx = Ctx::plain();
        let lang = ctx.lang;
        let zh = lang == Lang::Zh;
        let pick = |en: &'static str, chinese: &'static str| if zh { chinese } else { en };
        let said = |text: &str| translate::say(lang, text);
        let (title, message, detail, hint) = match self {
            Self::Unreachable { coordinator, detail } => (
                pick("Coordinator unreachable", "无法连接协调器"),
                if zh {
                    format!("无法连接位于 {coordinator} 的协调器")
                } else {
                    format!("cannot reach the coordinator at {coordinator}")
                },
                detail.clone(),
                pick(
                    "The web UI reads everything from the coordinator's gRPC API. Is the \
                     coordinator running, and is this its address?",
                    "网页界面的所有数据都来自协调器的 gRPC 接口。协调器是否在运行？地址是否正确？",
                )
                .to_string(),
            ),
            Self::Coordinator { coordinator, detail } => (
                pick("Coordinator error", "协调器出错"),
                if zh {
                    format!("位于 {coordinator} 的协调器返回了错误")
                } else {
                    format!("the coordinator at {coordinator} answered with an error")
                },
                detail.clone(),
                String::new(),
            ),
            Self::NotFound(what) => (
                pick("Not found", "未找到"),
                said(what),
                String::new(),
                String::new(),
            ),
            Self::BadParameter { name, message } => (
                pick("Bad request", "请求有误"),
                if zh {
                    format!("参数“{}”有误：{}", parameter_zh(name), said(message))
                } else {
                    format!("bad parameter {name}: {message}")
                },
                String::new(),
                String::new(),
            ),
            Self::Rejected(message) => (
                pick("Bad request", "请求有误"),
                if zh {
                    format!("协调器拒绝了请求：{}", said(message))
                } else {
                    format!("the coordinator rejected the request: {message}")
                },
                String::new(),
                String::new(),
            ),
            Self::Forbidden(message) => (
                pick("Forbidden", "禁止访问"),
                said(message),
                String::new(),
                String::new(),
            ),
            Self::Denied(message) => (
                pick("Not allowed", "无权操作"),
                if zh {
                    format!("协调器拒绝了：{}", said(message))
                } else {
                    format!("the coordinator refused: {message}")
                },
                String::new(),
                pick(
                    "Your role does not allow this; an administrator can give you another.",
                    "你的角色不允许此操作；管理员可以为你更换角色。",
                )
                .to_string(),
            ),
            Self::AuthRequired => (
                pick("Authentication required", "需要身份验证"),
                pick(
                    "this web UI can be reached from other machines and its coordinator has \
                     authentication off, so it shows no page: anyone reaching it could run any \
                     command on the agents",
                    "此网页界面可从其他机器访问，而其协调器未开启身份验证，因此不显示任何页面：\
                     任何能访问它的人都可以在执行器上运行任意命令",
                )
                .to_string(),
                String::new(),
                pick(
                    "Start the coordinator with --auth and add users with goflow user add, or \
                     serve the web UI on 127.0.0.1.",
                    "请用 --auth 启动协调器并用 goflow user add 添加用户，或让网页界面只监听 127.0.0.1。",
                )
                .to_string(),
            ),
            Self::SignedOut => (
                pick("Logged out", "已退出登录"),
                pick("the session has ended: log in again", "会话已结束：请重新登录").to_string(),
                String::new(),
                String::new(),
            ),
        };
        ErrorPage {
            status: self.status().as_u16(),
            ctx,
            title,
            message,
            detail,
            hint,
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

/// A page's parameter as a Chinese reader knows it (the English page names the parameter).
fn parameter_zh(name: &str) -> &str {
    match name {
        "day" | "etl_day" => "日期",
        "end" => "结束日期",
        "from" => "起始日期",
        "to" => "结束日期",
        "days" => "天数",
        "hops" => "层数",
        "state" => "状态",
        "task" => "任务",
        "try" => "运行次数",
        "action" => "操作",
        other => other,
    }
}

/// Routes nobody serves.
pub async fn not_found(uri: axum::http::Uri) -> WebError {
    WebError::NotFound(format!("no page at {}", uri.path()))
}

//! `/alerts`: alerts raised (final failures, retries, long runs, missed deadlines) and their
//! delivery to each channel, newest first; filterable by task.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_proto::{Alert, ListAlertsRequest};
use serde::Deserialize;

use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Lang;
use crate::translate;
use crate::view;

const LIMIT: i32 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    task: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/alerts.html")]
pub struct AlertsPage {
    ctx: Ctx,
    task: String,
    rows: Vec<Row>,
}

struct Row {
    at: String,
    task: String,
    etl_day: String,
    kind: String,
    kind_label: String,
    try_number: String,
    channel: String,
    delivery: String,
    delivery_label: String,
    attempts: i64,
    message: String,
    last_error: String,
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<AlertsPage, WebError> {
    let task = params.task.unwrap_or_default().trim().to_string();
    let alerts = app
        .client()
        .list_alerts(ListAlertsRequest {
            limit: LIMIT,
            task: task.clone(),
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .alerts;
    let rows = alerts
        .iter()
        .filter(|a| task.is_empty() || a.task == task)
        .map(|a| Row::new(a, ctx.lang))
        .collect();
    Ok(AlertsPage { ctx, task, rows })
}

/// An alert's kind or delivery state in the page's language.
fn word(lang: Lang, name: &str) -> &str {
    if lang == Lang::En {
        return name;
    }
    match name {
        "failed" => "失败",
        "retry" => "重试",
        "long_running" => "运行过久",
        "deadline" => "超过截止时间",
        "pending" => "待发送",
        "sent" => "已发送",
        other => other,
    }
}

impl Row {
    fn new(a: &Alert, lang: Lang) -> Self {
        Self {
            at: view::time(a.created_at),
            task: a.task.clone(),
            etl_day: a.etl_day.clone(),
            kind: a.kind.clone(),
            kind_label: word(lang, &a.kind).to_string(),
            try_number: if a.try_number == 0 {
                String::new()
            } else {
                a.try_number.to_string()
            },
            channel: a.channel.clone(),
            delivery: a.delivery.clone(),
            delivery_label: word(lang, &a.delivery).to_string(),
            attempts: a.attempts,
            message: translate::say(lang, &a.message),
            last_error: if a.delivery == "sent" {
                String::new()
            } else {
                a.last_error.clone()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{get, sample};

    #[tokio::test]
    async fn lists_alerts_with_links_and_delivery() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/alerts").await;
        assert_eq!(status, axum::http::StatusCode::OK, "{body}");
        assert!(
            body.contains(r#"<a href="/instances/extract/20260110">20260110</a>"#),
            "{body}"
        );
        assert!(
            body.contains(r#"<a href="/instances/transform/20260110">20260110</a>"#),
            "{body}"
        );
        assert!(body.contains("deadline") && body.contains("oncall"), "{body}");
        assert!(body.contains("hooks.example answered 500"), "{body}");
        assert!(body.contains("try 2 of 2 failed with exit code 3"), "{body}");
        let (_, body) = get(&app, "/alerts?task=extract").await;
        assert!(
            body.contains("/instances/extract/") && !body.contains("/instances/transform/"),
            "{body}"
        );
    }
}

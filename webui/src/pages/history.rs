//! `/history`: the operations log (who, when, what, from which client), filterable by task,
//! by action and by any text.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_proto::{ListOperationsRequest, Operation};
use serde::Deserialize;

use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::view;

/// Operations read per page view; the text filters apply to these.
const LIMIT: i32 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    task: Option<String>,
    action: Option<String>,
    q: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/history.html")]
pub struct HistoryPage {
    ctx: Ctx,
    task: String,
    action: String,
    q: String,
    actions: Vec<String>,
    rows: Vec<Row>,
}

struct Row {
    at: String,
    actor: String,
    client: String,
    action: String,
    target: String,
    target_href: String,
    detail: String,
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<HistoryPage, WebError> {
    let task = params.task.unwrap_or_default().trim().to_string();
    let action = params.action.unwrap_or_default().trim().to_string();
    let q = params.q.unwrap_or_default().trim().to_string();
    let operations = app
        .client()
        .list_operations(ListOperationsRequest {
            limit: LIMIT,
            task: task.clone(),
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .operations;
    let mut actions: Vec<String> = operations.iter().map(|o| o.action.clone()).collect();
    actions.sort();
    actions.dedup();
    let rows = operations
        .iter()
        .filter(|o| action.is_empty() || o.action == action)
        .filter(|o| matches_text(o, &q))
        .map(Row::from)
        .collect();
    Ok(HistoryPage {
        ctx,
        task,
        action,
        q,
        actions,
        rows,
    })
}

/// Case-insensitive, in any column.
fn matches_text(o: &Operation, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    [&o.actor, &o.client, &o.action, &o.target, &o.detail]
        .iter()
        .any(|field| field.to_lowercase().contains(&q))
}

impl From<&Operation> for Row {
    fn from(o: &Operation) -> Self {
        // Targets are `task@day` for instances, a task id, or a document name.
        let target_href = match o.target.split_once('@') {
            Some((task, day)) if day.len() == 8 => format!("/instances/{task}/{day}"),
            _ if goflow_core::dag::is_valid_task_id(&o.target) => format!("/tasks/{}", o.target),
            _ => String::new(),
        };
        Self {
            at: view::time(o.at),
            actor: o.actor.clone(),
            client: o.client.clone(),
            action: o.action.clone(),
            target: o.target.clone(),
            target_href,
            detail: o.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{get, sample};

    #[tokio::test]
    async fn lists_operations_and_filters_them() {
        let app = sample().start().await;
        let (_, body) = get(&app, "/history").await;
        assert!(body.contains("alice") && body.contains("bob"));
        assert!(body.contains(r#"<a href="/instances/transform/20260110">transform@20260110</a>"#));
        let (_, body) = get(&app, "/history?action=apply").await;
        assert!(!body.contains("alice") && body.contains("bob"));
        let (_, body) = get(&app, "/history?q=DOWN").await;
        assert!(body.contains("alice") && !body.contains("<td>bob</td>"));
    }
}

//! Versions of a task's definition: the list on the task page, and `/tasks/{id}/diff`, the
//! fields that differ between two versions with both definitions.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query};
use goflow_core::dag::is_valid_task_id;
use goflow_proto::{DiffTaskVersionsRequest, GetTaskVersionRequest, ListTaskVersionsRequest, TaskVersion};
use serde::Deserialize;
use tonic::Code;

use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Texts;
use crate::view;

/// One version in the task page's list.
pub struct VersionRow {
    pub version: i64,
    pub applied: String,
    pub actor: String,
    pub source: String,
    /// The fields that changed, or "created" for a first version.
    pub changes: String,
    pub current: bool,
    /// The version before it, for its diff link; 0 for the first.
    pub previous: i64,
}

impl VersionRow {
    fn new(v: &TaskVersion, previous: i64, t: &Texts) -> Self {
        Self {
            version: v.version,
            applied: view::time(v.created_at),
            actor: v.actor.clone(),
            source: v.source.clone(),
            changes: if v.changes.is_empty() {
                t.first_version.to_string()
            } else {
                v.changes.clone()
            },
            current: v.current,
            previous,
        }
    }
}

/// The versions of `task`, newest first; none when the coordinator has none for it.
pub async fn version_rows(app: &AppState, ctx: &Ctx, task: &str) -> Result<Vec<VersionRow>, WebError> {
    let found = app
        .client()
        .list_task_versions(ListTaskVersionsRequest { task: task.into() })
        .await;
    let versions = match found {
        Ok(answer) => answer.into_inner().versions,
        Err(status) if status.code() == Code::NotFound => vec![],
        Err(status) => return Err(app.fail(status)),
    };
    let mut rows: Vec<VersionRow> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let previous = if i == 0 { 0 } else { versions[i - 1].version };
            VersionRow::new(v, previous, ctx.t)
        })
        .collect();
    rows.reverse();
    Ok(rows)
}

#[derive(Debug, Default, Deserialize)]
pub struct DiffParams {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/diff.html")]
pub struct DiffPage {
    ctx: Ctx,
    task: String,
    from: i64,
    to: i64,
    changes: Vec<(String, String, String)>,
    old_definition: String,
    new_definition: String,
}

fn version_param(name: &'static str, value: Option<&str>) -> Result<i64, WebError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| WebError::bad_parameter(name, format!("{text:?} is not a version number"))),
    }
}

/// `/tasks/{id}/diff?from=V1&to=V2`: default the last two versions; `to` default the
/// current one.
pub async fn diff_page(
    app: AppState,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(params): Query<DiffParams>,
) -> Result<DiffPage, WebError> {
    if !is_valid_task_id(&id) {
        return Err(WebError::bad_parameter(
            "task",
            format!("{id:?} is not a task id"),
        ));
    }
    let from = version_param("from", params.from.as_deref())?;
    let to = version_param("to", params.to.as_deref())?;
    if from == 0 && to != 0 {
        return Err(WebError::bad_parameter(
            "from",
            "give the version to compare with".to_string(),
        ));
    }
    let mut client = app.client();
    let diff = client
        .diff_task_versions(DiffTaskVersionsRequest {
            task: id.clone(),
            from_version: from,
            to_version: to,
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let definition = |version: i64| {
        let mut client = app.client();
        let task = id.clone();
        async move {
            client
                .get_task_version(GetTaskVersionRequest { task, version })
                .await
                .map(|v| v.into_inner().definition)
        }
    };
    let old_definition = definition(diff.from_version).await.map_err(|s| app.fail(s))?;
    let new_definition = definition(diff.to_version).await.map_err(|s| app.fail(s))?;
    Ok(DiffPage {
        ctx,
        task: id,
        from: diff.from_version,
        to: diff.to_version,
        changes: diff
            .changes
            .into_iter()
            .map(|c| (c.field, c.old_value, c.new_value))
            .collect(),
        old_definition,
        new_definition,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, sample};

    #[tokio::test]
    async fn the_diff_page_lists_changed_fields_and_both_definitions() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks/transform/diff?from=1&to=2").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("v1 → v2"), "{body}");
        assert!(body.contains("<td><code>command</code></td>"), "{body}");
        assert!(body.contains("transform-old.sh"), "{body}");
        let (status, body) = get(&app, "/tasks/transform/diff?from=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = get(&app, "/tasks/transform/diff?from=1&to=9").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_task_page_lists_versions_with_diff_links() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks/transform").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("id=\"versions\""), "{body}");
        assert!(
            body.contains("href=\"/tasks/transform/diff?from=1&amp;to=2\""),
            "{body}"
        );
        // A task with no versions says so.
        let (_, body) = get(&app, "/tasks/extract").await;
        assert!(body.contains("No versions recorded."), "{body}");
    }

    #[tokio::test]
    async fn the_instance_page_shows_each_tries_version_and_links_old_ones_to_a_diff() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/transform/{}", crate::testing::DAY)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("id=\"try-version-1\""), "{body}");
        assert!(
            body.contains("href=\"/tasks/transform/diff?from=1&amp;to=2\""),
            "{body}"
        );
        assert!(body.contains("diff against current"), "{body}");
    }
}

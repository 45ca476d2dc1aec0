//! `/grid`: tasks x days, each cell an instance coloured by its state; a click opens it.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_core::EtlDay;
use goflow_proto::{ListInstancesRequest, ListTasksRequest};
use serde::Deserialize;

use super::day_or_latest;
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::state_meaning;
use crate::view::state_class;

const DEFAULT_DAYS: i32 = 14;
const MAX_DAYS: i32 = 62;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The last day shown; default: the latest day with any instance.
    end: Option<String>,
    days: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/grid.html")]
pub struct GridPage {
    ctx: Ctx,
    days: Vec<DayColumn>,
    rows: Vec<GridRow>,
    day_count: i32,
    end_dashed: String,
    earlier: String,
    later: String,
}

struct DayColumn {
    day: String,
    /// `01-10`: the column header.
    short: String,
}

struct GridRow {
    task: String,
    cells: Vec<GridCell>,
}

struct GridCell {
    href: String,
    class: &'static str,
    forced: bool,
    title: String,
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<GridPage, WebError> {
    let end = day_or_latest(&app, params.end.as_deref()).await?;
    let day_count = match params.days.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_DAYS,
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .ok_or_else(|| {
                WebError::bad_parameter("days", format!("{text:?} is not a number from 1 to {MAX_DAYS}"))
            })?,
    };
    let days: Vec<EtlDay> = (0..day_count).rev().map(|back| end.offset(-back)).collect();
    let tasks = app
        .client()
        .list_tasks(ListTasksRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .tasks;
    // One call per day, all at once: each is one indexed query on the coordinator.
    let calls = days.iter().map(|day| {
        let mut client = app.client();
        let request = ListInstancesRequest {
            etl_day: day.compact(),
            ..Default::default()
        };
        async move { client.list_instances(request).await }
    });
    let mut states: HashMap<(String, String), (String, bool)> = HashMap::new();
    for answer in futures::future::join_all(calls).await {
        for i in answer.map_err(|status| app.fail(status))?.into_inner().instances {
            states.insert((i.task, i.etl_day), (i.state, i.forced));
        }
    }
    let lang = ctx.lang;
    let rows = tasks
        .iter()
        .map(|task| GridRow {
            task: task.id.clone(),
            cells: days
                .iter()
                .map(|day| {
                    let found = states.get(&(task.id.clone(), day.compact()));
                    let state = found.map_or("none", |(s, _)| s.as_str());
                    let forced = found.is_some_and(|(_, f)| *f);
                    GridCell {
                        href: format!("/instances/{}/{}", task.id, day.compact()),
                        class: state_class(state),
                        forced,
                        title: format!(
                            "{} @ {}: {state} ({})",
                            task.id,
                            day.dashed(),
                            state_meaning(lang, if forced { "forced" } else { state })
                        ),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(GridPage {
        days: days
            .iter()
            .map(|d| DayColumn {
                day: d.compact(),
                short: d.dashed()[5..].to_string(),
            })
            .collect(),
        rows,
        day_count,
        end_dashed: end.dashed(),
        earlier: end.offset(-day_count).compact(),
        later: end.offset(day_count).compact(),
        ctx,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, sample};

    #[tokio::test]
    async fn one_cell_per_task_and_day_coloured_by_state() {
        let app = sample().start().await;
        // The latest day with instances ends the grid by default.
        let (status, body) = get(&app, "/grid?days=3").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body.matches("class=\"cell state-").count(), 2 * 3);
        assert!(body.contains(r#"<a href="/instances/transform/20260110" class="cell state-running""#));
        assert!(body.contains(r#"<a href="/instances/extract/20260109" class="cell state-none""#));
        let (status, _) = get(&app, "/grid?days=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

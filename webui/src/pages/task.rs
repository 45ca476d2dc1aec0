//! `/tasks/{id}`: a task's definition, its upstream and downstream neighbourhood as a graph,
//! its last 30 days as coloured cells, and its actions (pause, run, backfill with a preview,
//! edit, export, delete).

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query};
use goflow_core::EtlDay;
use goflow_core::dag::is_valid_task_id;
use goflow_proto::{
    GetDependenciesRequest, GetTaskRequest, Instance, InstanceRef, ListInstancesRequest, RunRequest, Task,
};
use serde::Deserialize;

use super::{day_or_latest, parse_day};
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::graph::{self, EdgeIn, GraphNode};
use crate::i18n::{INSTANCES, Lang, NEW, Texts, count, state_meaning};
use crate::view::{self, state_class};

/// A run over more days than this is marked as big on its confirmation.
pub const RANGE_CONFIRM_ABOVE: usize = 300;
/// How far up and down the neighbourhood graph reaches.
const NEIGHBOURHOOD_HOPS: i32 = 2;
const HISTORY_DAYS: i32 = 30;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The day whose states colour the graph and end the 30 days; default: the latest day
    /// with any instance.
    day: Option<String>,
    /// A backfill preview: `from`, `to`, `down=1`.
    from: Option<String>,
    to: Option<String>,
    down: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/task.html")]
pub struct TaskPage {
    ctx: Ctx,
    task: Task,
    day: String,
    day_dashed: String,
    schedule: String,
    retries: String,
    retry_delay: String,
    timeout: String,
    expected_duration: String,
    next_fire: String,
    graph_svg: String,
    cells: Vec<DayCell>,
    preview: Option<Preview>,
    from: String,
    to: String,
    down: bool,
    /// The versions of its definition, newest first.
    versions: Vec<super::versions::VersionRow>,
}

struct DayCell {
    day: String,
    dashed: String,
    class: &'static str,
    forced: bool,
    title: String,
}

struct Preview {
    from: String,
    to: String,
    total: usize,
    /// `This would run 87 instances (3 new)`.
    summary: String,
    /// The instances it would run, a row a day, at most [`PREVIEW_DAYS`] of them.
    days: Vec<PreviewDay>,
    /// `and 40 more days`; empty when every day is listed.
    more_days: String,
    big: bool,
}

/// The instances of one day a run would cover; `new` ones do not exist yet.
struct PreviewDay {
    day: String,
    count: String,
    tasks: Vec<(String, bool)>,
    /// `and 12 more`; empty when every task is listed.
    more: String,
}

/// The preview lists this many days, and this many tasks of each.
const PREVIEW_DAYS: usize = 20;
const PREVIEW_TASKS: usize = 12;

/// `This would run 87 instances (3 new)`; `将会运行 87 个实例（3 个新建）`.
pub fn preview_summary(lang: Lang, total: usize, new: usize) -> String {
    let t = lang.texts();
    match lang {
        Lang::En => format!(
            "{} {} ({new} new)",
            t.preview_result,
            count(lang, total, INSTANCES)
        ),
        Lang::Zh => format!(
            "{} {}（{}）",
            t.preview_result,
            count(lang, total, INSTANCES),
            count(lang, new, NEW)
        ),
    }
}

impl Preview {
    fn new(lang: Lang, from: EtlDay, to: EtlDay, planned: &[InstanceRef]) -> Self {
        let t = lang.texts();
        let mut by_day: std::collections::BTreeMap<&str, Vec<(String, bool)>> = Default::default();
        for i in planned {
            by_day
                .entry(i.etl_day.as_str())
                .or_default()
                .push((i.task.clone(), i.id == 0));
        }
        let day_count = by_day.len();
        let days = by_day
            .into_iter()
            .take(PREVIEW_DAYS)
            .map(|(day, mut tasks)| {
                let all = tasks.len();
                tasks.truncate(PREVIEW_TASKS);
                PreviewDay {
                    day: EtlDay::parse(day)
                        .map(|d| d.dashed())
                        .unwrap_or_else(|_| day.to_string()),
                    count: count(lang, all, INSTANCES),
                    more: and_more(t, all - tasks.len()),
                    tasks,
                }
            })
            .collect();
        let new = planned.iter().filter(|i| i.id == 0).count();
        Preview {
            from: from.dashed(),
            to: to.dashed(),
            total: planned.len(),
            summary: preview_summary(lang, planned.len(), new),
            days,
            more_days: match (day_count.saturating_sub(PREVIEW_DAYS), lang) {
                (0, _) => String::new(),
                (1, Lang::En) => "and 1 more day".to_string(),
                (n, Lang::En) => format!("and {n} more days"),
                (n, Lang::Zh) => format!("还有 {n} 天"),
            },
            big: planned.len() > RANGE_CONFIRM_ABOVE,
        }
    }
}

/// `and 3 more` / `还有 3 个`; empty for none.
fn and_more(t: &Texts, n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        t.and_more.replace("{}", &n.to_string())
    }
}

/// A day from a form field: `yyyymmdd` or `yyyy-mm-dd`, the field named when it is wrong.
pub fn form_day(name: &'static str, input: &str) -> Result<EtlDay, WebError> {
    parse_day(name, input.trim())
}

pub async fn page(
    app: AppState,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<TaskPage, WebError> {
    if !is_valid_task_id(&id) {
        return Err(WebError::bad_parameter(
            "task",
            format!("{id:?} is not a task id"),
        ));
    }
    let mut client = app.client();
    let task = client
        .get_task(GetTaskRequest { id: id.clone() })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let day = day_or_latest(&app, params.day.as_deref()).await?;
    let dependencies = client
        .get_dependencies(GetDependenciesRequest {
            task: id.clone(),
            depth: NEIGHBOURHOOD_HOPS,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let day_instances = client
        .list_instances(ListInstancesRequest {
            etl_day: day.compact(),
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;
    let history = client
        .list_instances(ListInstancesRequest {
            task: id.clone(),
            limit: HISTORY_DAYS * 4,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;

    let preview = match params.from.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(from_text) => {
            let from = form_day("from", from_text)?;
            let to = match params.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(text) => form_day("to", text)?,
                None => from,
            };
            let planned = client
                .run(RunRequest {
                    task: id.clone(),
                    from_day: from.compact(),
                    to_day: to.compact(),
                    down: params.down.as_deref() == Some("1"),
                    dry_run: true,
                    ..Default::default()
                })
                .await
                .map_err(|status| app.fail(status))?
                .into_inner()
                .instances;
            Some(Preview::new(ctx.lang, from, to, &planned))
        }
    };

    let versions = super::versions::version_rows(&app, &ctx, &id).await?;
    let graph_svg = neighbourhood_svg(&ctx, &task.id, day, &dependencies.edges, &day_instances);
    let cells = day_cells(&ctx, day, &history);
    Ok(TaskPage {
        versions,
        schedule: task.schedule.clone(),
        retries: if task.retries < 0 {
            ctx.t.default_.to_string()
        } else {
            task.retries.to_string()
        },
        retry_delay: millis(task.retry_delay_ms),
        timeout: millis(task.timeout_ms),
        expected_duration: millis(task.expected_duration_ms),
        next_fire: view::time(task.next_fire_at),
        from: preview.as_ref().map(|p| p.from.clone()).unwrap_or_default(),
        to: preview.as_ref().map(|p| p.to.clone()).unwrap_or_default(),
        down: params.down.as_deref() == Some("1"),
        day: day.compact(),
        day_dashed: day.dashed(),
        graph_svg,
        cells,
        preview,
        task,
        ctx,
    })
}

/// `90s` as the DAG document writes it; empty for 0 (default or none).
pub fn millis(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let secs = ms / 1000;
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The task with its upstreams and downstreams (two hops), coloured by their instances on `day`.
fn neighbourhood_svg(
    ctx: &Ctx,
    task: &str,
    day: EtlDay,
    edges: &[goflow_proto::DependencyEdge],
    instances: &[Instance],
) -> String {
    let mut names: Vec<&str> = vec![task];
    for e in edges {
        names.push(&e.upstream);
        names.push(&e.downstream);
    }
    names.sort_unstable();
    names.dedup();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let by_task: HashMap<&str, &Instance> = instances.iter().map(|i| (i.task.as_str(), i)).collect();
    let nodes: Vec<GraphNode> = names
        .iter()
        .map(|name| {
            let instance = by_task.get(name);
            let state = instance.map_or("none", |i| i.state.as_str());
            GraphNode {
                id: name.to_string(),
                state_class: state_class(state),
                forced: instance.is_some_and(|i| i.forced),
                href: format!("/tasks/{name}?day={}", day.compact()),
                title: format!(
                    "{name} @ {}: {state} ({})",
                    day.dashed(),
                    state_meaning(ctx.lang, state)
                ),
                highlighted: *name == task,
                hours: vec![],
            }
        })
        .collect();
    let edges: Vec<EdgeIn> = edges
        .iter()
        .map(|e| EdgeIn {
            upstream: index[e.upstream.as_str()],
            downstream: index[e.downstream.as_str()],
            day_offset: e.day_offset,
        })
        .collect();
    graph::draw(&nodes, &edges)
}

/// One cell per day of the 30 days ending at `last`, oldest first.
fn day_cells(ctx: &Ctx, last: EtlDay, history: &[Instance]) -> Vec<DayCell> {
    let by_day: HashMap<&str, &Instance> = history.iter().map(|i| (i.etl_day.as_str(), i)).collect();
    (0..HISTORY_DAYS)
        .rev()
        .map(|back| {
            let day = last.offset(-back);
            let instance = by_day.get(day.compact().as_str());
            let state = instance.map_or("none", |i| i.state.as_str());
            DayCell {
                day: day.compact(),
                dashed: day.dashed(),
                class: state_class(state),
                forced: instance.is_some_and(|i| i.forced),
                title: format!("{}: {state} — {}", day.dashed(), state_meaning(ctx.lang, state)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, get_with, sample};

    #[tokio::test]
    async fn definition_neighbourhood_days_and_actions() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks/transform").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("<code>transform.sh {{etl_day}}</code>"));
        assert_eq!(body.matches("class=\"cell state-").count(), 30);
        assert!(body.contains(r#"href="/instances/transform/20260110" class="cell state-running""#));
        assert!(body.contains(r#"class="node state-running focus" data-task="transform""#));
        assert!(body.contains(r#"data-task="extract""#), "its upstream is drawn");
        for form in [
            "/tasks/transform/pause",
            "/tasks/transform/run",
            "/tasks/transform/delete",
        ] {
            assert!(
                body.contains(&format!("method=\"post\" action=\"{form}\"")),
                "{form}"
            );
        }
    }

    #[tokio::test]
    async fn a_scheduled_task_shows_its_catchup_policy() {
        let app = sample().start().await;
        let (_, body) = get(&app, "/tasks/extract").await;
        assert!(
            body.contains(r#"<dd id="catchup"><code>all</code> <span class="muted">all: every missed fire, oldest first</span></dd>"#),
            "{body}"
        );
        // A task without a schedule has nothing to catch up.
        let (_, body) = get(&app, "/tasks/transform").await;
        assert!(!body.contains(r#"id="catchup""#), "{body}");
    }

    #[tokio::test]
    async fn a_backfill_preview_counts_what_it_would_run() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks/extract?from=2026-01-01&to=2026-01-10").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("This would run 2 instances (1 new) · 2026-01-01 … 2026-01-10"),
            "{body}"
        );
        // Each day with its tasks, those not created yet marked.
        assert!(body.contains(
            r#"<tr><td class="time">2026-01-01</td><td class="num">1 instance</td><td><span class="new">extract</span></td></tr>"#
        ), "{body}");
        assert!(body.contains(r#"<span class="existing">extract</span>"#));
        let (status, body) = get(&app, "/tasks/extract?from=2026-02-30").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("bad parameter from"));
    }

    #[tokio::test]
    async fn a_long_backfill_preview_lists_its_first_days_and_says_how_many_more() {
        let app = sample().start().await;
        let uri = "/tasks/extract?from=2026-01-01&to=2026-01-30&down=1";
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("This would run 90 instances (87 new)"), "{body}");
        let table = &body[body.find("id=\"preview-instances\"").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        assert_eq!(table.matches("<tr>").count(), 20, "{table}");
        assert!(table.contains("2026-01-20") && !table.contains("2026-01-21"));
        assert!(table.contains(
            r#"<span class="new">extract</span>, <span class="new">transform</span>, <span class="new">load</span>"#
        ));
        assert!(
            body.contains(r#"<p class="note" id="preview-more">and 10 more days</p>"#),
            "{body}"
        );
        let (_, body) = get_with(&app, uri, &[("accept-language", "zh-CN")]).await;
        assert!(body.contains("将会运行 90 个实例（87 个新建）"), "{body}");
        assert!(body.contains(r#"<td class="num">3 个实例</td>"#));
        assert!(body.contains(">还有 10 天</p>"));
    }
}

//! `/graph`: the DAG of one data date. Every task is a node (tasks without an instance that
//! day included), coloured by its instance's state and linking to it; edges carry their day
//! offsets. `focus` and `hops` narrow it to a task's neighbourhood, which is how a
//! 1,000-task DAG stays legible; pan, zoom and search come from `goflow.js`.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_core::EtlDay;
use goflow_proto::{Instance, ListInstancesRequest, ListTasksRequest, Task};
use serde::Deserialize;

use super::day_or_latest;
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::graph::{self, EdgeIn, GraphNode, HourCell, neighbourhood};
use crate::i18n::{Lang, TASKS, count, state_label, state_meaning};
use crate::view::{Badge, state_class};

const DEFAULT_HOPS: usize = 2;
/// The states the legend explains, in the order of a run.
const LEGEND: [&str; 7] = [
    "waiting",
    "queued",
    "running",
    "up_for_retry",
    "success",
    "failed",
    "killed",
];
const MAX_HOPS: usize = 20;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    day: Option<String>,
    /// Show only this task's neighbourhood.
    focus: Option<String>,
    hops: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/graph.html")]
pub struct GraphPage {
    ctx: Ctx,
    day: String,
    day_dashed: String,
    prev_day: String,
    next_day: String,
    focus: String,
    hops: usize,
    /// `5 / 12 tasks shown`.
    shown: String,
    svg: String,
    legend: Vec<Badge>,
    task_ids: Vec<String>,
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<GraphPage, WebError> {
    let day = day_or_latest(&app, params.day.as_deref()).await?;
    let hops = match params.hops.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_HOPS,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|h| (1..=MAX_HOPS).contains(h))
            .ok_or_else(|| {
                WebError::bad_parameter("hops", format!("{text:?} is not a number from 1 to {MAX_HOPS}"))
            })?,
    };
    let focus = params.focus.as_deref().map(str::trim).unwrap_or("").to_string();
    let mut client = app.client();
    let tasks = client
        .list_tasks(ListTasksRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .tasks;
    let instances = client
        .list_instances(ListInstancesRequest {
            etl_day: day.compact(),
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;
    let focus_index = if focus.is_empty() {
        None
    } else {
        Some(
            tasks
                .iter()
                .position(|t| t.id == focus)
                .ok_or_else(|| WebError::NotFound(format!("unknown task {focus:?}")))?,
        )
    };
    let mut drawing = day_graph(&tasks, &instances, day, focus_index.map(|f| (f, hops)), ctx.lang);
    if let Some(eta) = super::eta::fetch(&app, day).await {
        drawing.svg = super::eta::mark_critical(drawing.svg, &eta.critical_path);
    }
    let mut task_ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    task_ids.sort();
    Ok(GraphPage {
        day: day.compact(),
        day_dashed: day.dashed(),
        prev_day: day.offset(-1).compact(),
        next_day: day.offset(1).compact(),
        focus,
        hops,
        shown: match ctx.lang {
            Lang::En => format!(
                "{} / {} shown",
                drawing.shown,
                count(ctx.lang, tasks.len(), TASKS)
            ),
            Lang::Zh => format!("显示 {} / {}", drawing.shown, count(ctx.lang, tasks.len(), TASKS)),
        },
        legend: LEGEND.iter().map(|s| Badge::new(s, false, ctx.lang)).collect(),
        svg: drawing.svg,
        task_ids,
        ctx,
    })
}

pub struct DayGraph {
    pub svg: String,
    pub shown: usize,
}

/// The SVG of every task (or of one task's neighbourhood) on `day`.
pub fn day_graph(
    tasks: &[Task],
    instances: &[Instance],
    day: EtlDay,
    focus: Option<(usize, usize)>,
    lang: Lang,
) -> DayGraph {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let edges: Vec<EdgeIn> = tasks
        .iter()
        .enumerate()
        .flat_map(|(downstream, task)| {
            let index = &index;
            task.depends_on.iter().filter_map(move |d| {
                Some(EdgeIn {
                    upstream: *index.get(d.task.as_str())?,
                    downstream,
                    day_offset: d.day_offset,
                })
            })
        })
        .collect();
    let keep: Vec<usize> = match focus {
        Some((task, hops)) => neighbourhood(tasks.len(), &edges, task, hops),
        None => (0..tasks.len()).collect(),
    };
    // Renumber the kept tasks 0..n for the layout.
    let mut new_index = vec![usize::MAX; tasks.len()];
    for (new, old) in keep.iter().enumerate() {
        new_index[*old] = new;
    }
    let kept_edges: Vec<EdgeIn> = edges
        .iter()
        .filter(|e| new_index[e.upstream] != usize::MAX && new_index[e.downstream] != usize::MAX)
        .map(|e| EdgeIn {
            upstream: new_index[e.upstream],
            downstream: new_index[e.downstream],
            day_offset: e.day_offset,
        })
        .collect();
    // A daily task's instance of the day; an hourly task's hours (their keys are 10 long).
    let is_hour = |i: &Instance| i.period.len() == 10;
    let by_task: HashMap<&str, &Instance> = instances
        .iter()
        .filter(|i| !is_hour(i))
        .map(|i| (i.task.as_str(), i))
        .collect();
    let mut hours_of: HashMap<&str, Vec<&Instance>> = HashMap::new();
    for i in instances.iter().filter(|i| is_hour(i)) {
        hours_of.entry(i.task.as_str()).or_default().push(i);
    }
    let nodes: Vec<GraphNode> = keep
        .iter()
        .map(|old| {
            let task = &tasks[*old];
            let instance = by_task.get(task.id.as_str());
            let hourly = task.period == "hour";
            let mut hours: Vec<&Instance> = hours_of.get(task.id.as_str()).cloned().unwrap_or_default();
            hours.sort_by(|a, b| a.period.cmp(&b.period));
            let state = if hourly {
                hours_state(&hours)
            } else {
                instance.map_or("none", |i| i.state.as_str())
            };
            let forced = instance.is_some_and(|i| i.forced);
            let shown = if forced { "forced" } else { state };
            let meaning = match lang {
                Lang::En => state_meaning(lang, shown),
                Lang::Zh => state_label(lang, shown),
            };
            GraphNode {
                id: task.id.clone(),
                state_class: state_class(state),
                forced,
                href: format!("/instances/{}/{}", task.id, day.compact()),
                title: format!("{} · {state} · {meaning}", task.id),
                highlighted: focus.is_some_and(|(f, _)| f == *old),
                hours: if hourly {
                    hour_cells(task, &hours, day, lang)
                } else {
                    vec![]
                },
            }
        })
        .collect();
    DayGraph {
        svg: graph::draw(&nodes, &kept_edges),
        shown: nodes.len(),
    }
}

/// An hourly task's node as a whole: its most pressing hour (a failure, then what runs, then
/// what waits); success only when every hour of the day succeeded.
fn hours_state(hours: &[&Instance]) -> &'static str {
    const PRESSING: [&str; 6] = ["failed", "killed", "running", "up_for_retry", "queued", "waiting"];
    if hours.is_empty() {
        return "none";
    }
    PRESSING
        .into_iter()
        .find(|s| hours.iter().any(|h| h.state == *s))
        .unwrap_or(if hours.iter().all(|h| h.state == "success") {
            "success"
        } else {
            "none"
        })
}

/// Every hour of the task's day on its timezone's clock (23 or 24 on daylight-saving days),
/// with the state of its instance, if it has one.
fn hour_cells(task: &Task, hours: &[&Instance], day: EtlDay, lang: Lang) -> Vec<HourCell> {
    let tz = task.timezone.parse().unwrap_or(chrono_tz::UTC);
    goflow_core::Period::day(day)
        .parts(goflow_core::PeriodKind::Hour, tz)
        .into_iter()
        .map(|hour| {
            let key = hour.key();
            let state = hours
                .iter()
                .find(|h| h.period == key)
                .map_or("none", |h| h.state.as_str());
            let meaning = match lang {
                Lang::En => state_meaning(lang, state),
                Lang::Zh => state_label(lang, state),
            };
            HourCell {
                state_class: state_class(state),
                href: format!("/instances/{}/{key}", task.id),
                title: format!("{}@{key} · {state} · {meaning}", task.id),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use goflow_proto::{Instance, Task, TaskDependency};

    use super::*;

    fn task(id: &str, ups: &[(&str, i32)]) -> Task {
        Task {
            id: id.into(),
            depends_on: ups
                .iter()
                .map(|(t, o)| TaskDependency {
                    task: t.to_string(),
                    day_offset: *o,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_hourly_task_is_drawn_with_a_cell_per_hour_of_its_day() {
        let mut hourly = task("h", &[]);
        hourly.period = "hour".into();
        hourly.timezone = "America/New_York".into();
        let hour = |key: &str, state: &str| Instance {
            task: "h".into(),
            etl_day: key[..8].into(),
            period: key.into(),
            state: state.into(),
            ..Default::default()
        };
        let instances = [hour("2026030800", "success"), hour("2026030803", "failed")];
        // New York's spring-forward day has 23 hours.
        let day = EtlDay::parse("20260308").unwrap();
        let drawing = day_graph(&[hourly], &instances, day, None, Lang::En);
        assert_eq!(
            drawing.svg.matches(r#"class="hour state-"#).count(),
            23,
            "{}",
            drawing.svg
        );
        assert!(
            drawing
                .svg
                .contains(r#"<a href="/instances/h/2026030803" class="hour state-failed">"#)
        );
        assert!(!drawing.svg.contains("/instances/h/2026030802"));
        // The node says the most pressing hour's state.
        assert!(drawing.svg.contains(r#"class="node state-failed" data-task="h""#));
    }

    #[test]
    fn every_task_is_drawn_even_without_an_instance() {
        let tasks = [task("a", &[]), task("b", &[("a", 0)]), task("c", &[("b", -1)])];
        let instances = [Instance {
            task: "a".into(),
            state: "success".into(),
            ..Default::default()
        }];
        let day = EtlDay::parse("20260110").unwrap();
        let drawing = day_graph(&tasks, &instances, day, None, Lang::En);
        assert_eq!(drawing.shown, 3);
        assert!(
            drawing
                .svg
                .contains(r#"class="node state-success" data-task="a""#)
        );
        assert!(drawing.svg.contains(r#"class="node state-none" data-task="b""#));
        assert!(drawing.svg.contains(">-1d</text>"));
        assert!(drawing.svg.contains(r#"href="/instances/c/20260110""#));
    }

    #[test]
    fn a_focus_keeps_the_neighbourhood_only() {
        let tasks = [
            task("a", &[]),
            task("b", &[("a", 0)]),
            task("c", &[("b", 0)]),
            task("d", &[("c", 0)]),
            task("other", &[]),
        ];
        let day = EtlDay::parse("20260110").unwrap();
        let drawing = day_graph(&tasks, &[], day, Some((1, 1)), Lang::En);
        assert_eq!(drawing.shown, 3);
        assert!(
            drawing
                .svg
                .contains(r#"class="node state-none focus" data-task="b""#)
        );
        assert!(!drawing.svg.contains(r#"data-task="d""#) && !drawing.svg.contains(r#"data-task="other""#));
    }
}

#[cfg(test)]
mod page_tests {
    use axum::http::StatusCode;

    use crate::testing::{DAY, get, sample};

    #[tokio::test]
    async fn the_page_draws_the_days_graph_with_tools() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/graph?day={DAY}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#"class="node state-running" data-task="transform""#));
        assert!(body.contains(r#"class="node state-success" data-task="extract""#));
        assert!(
            body.contains(">-1d</text>"),
            "transform waits for yesterday's extract"
        );
        assert!(body.contains(r#"id="graph-search""#) && body.contains("data-pan-zoom"));
        let (status, body) = get(&app, &format!("/graph?day={DAY}&focus=nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = get(&app, &format!("/graph?day={DAY}&focus=extract&hops=99")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

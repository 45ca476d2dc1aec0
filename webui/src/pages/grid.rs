//! `/grid`: tasks x days, each cell an instance coloured by its state; a click opens it. An
//! hourly task's cell is a strip of its hours, a monthly task's month colours each of its
//! days, and a day outside a task's calendar is drawn as such.
//!
//! A 1,000-task grid of 30 days is 30,000 cells, so the page asks for states alone, in one
//! `ListInstanceStates` call that groups the days of each task by state, and each cell is an
//! index into the few distinct looks, written straight into the page without a string of its
//! own.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_core::calendar::RawCalendar;
use goflow_core::{Calendar, EtlDay, Period, PeriodKind};
use goflow_proto::{
    InstanceStates, ListCalendarsRequest, ListInstanceStatesRequest, ListInstancesRequest, ListTasksRequest,
    Task,
};
use serde::Deserialize;
use tonic::Code;

use super::day_or_latest;
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::{DAYS, Lang, TASKS, count, state_label, state_meaning};
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
    /// Every distinct look of a cell; [`NO_INSTANCE`] first.
    looks: Vec<CellLook>,
    day_count: i32,
    /// `10 tasks × 14 days`.
    heading: String,
    end_dashed: String,
    earlier: String,
    /// The end of the next window; empty when it would lie wholly in the future.
    later: String,
}

struct DayColumn {
    /// `20260110`: the links.
    day: String,
    /// `2026-01-10`: the cells' titles.
    dashed: String,
    /// `01-10`: the column header.
    short: String,
}

struct GridRow {
    task: String,
    /// The first row of a DAG (a group of connected tasks): drawn with a line above it.
    group_start: bool,
    /// One a day, in the order of the columns.
    cells: Vec<GridCell>,
}

#[derive(Clone, Default)]
struct GridCell {
    /// An index into `looks` (a daily or monthly task).
    look: usize,
    /// Not a day of the task's calendar.
    off_calendar: bool,
    /// An hourly task: each hour of the day, with its key.
    hours: Vec<(usize, String)>,
}

/// A state as a cell draws it: class, hatching and the words of its title.
struct CellLook {
    state: String,
    forced: bool,
    class: &'static str,
    /// The hover text's words about the state.
    words: String,
}

/// The look of a day without an instance.
const NO_INSTANCE: usize = 0;

impl CellLook {
    fn new(state: &str, forced: bool, lang: Lang) -> Self {
        Self {
            state: state.to_string(),
            forced,
            class: state_class(state),
            words: {
                let shown = if forced { "forced" } else { state };
                match lang {
                    Lang::En => format!("{state} ({})", state_meaning(lang, shown)),
                    Lang::Zh => format!("{} ({state})", state_label(lang, shown)),
                }
            },
        }
    }
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
    // The rows (tasks) and the cells (states) at once: neither needs the other.
    let mut tasks_client = app.client();
    let tasks = tasks_client.list_tasks(ListTasksRequest {});
    let mut calendars_client = app.client();
    let calendars = calendars_client.list_calendars(ListCalendarsRequest {});
    let (tasks, states, calendars) = tokio::join!(tasks, states_of_days(&app, &days), calendars);
    let tasks = tasks.map_err(|status| app.fail(status))?.into_inner().tasks;
    let states = states.map_err(|status| app.fail(status))?;
    // A coordinator that predates calendars has none.
    let calendars: HashMap<String, Calendar> = calendars
        .map(|c| c.into_inner().calendars)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| calendar_of(c).map(|cal| (cal.id.clone(), cal)))
        .collect();

    let mut rows: Vec<GridRow> = dag_order(&tasks)
        .into_iter()
        .map(|(index, group_start)| {
            let task = &tasks[index];
            let calendar = calendars.get(&task.calendar);
            let hourly = task.period == PeriodKind::Hour.as_str();
            let tz = task.timezone.parse().unwrap_or(chrono_tz::UTC);
            GridRow {
                task: task.id.clone(),
                group_start,
                cells: days
                    .iter()
                    .map(|day| GridCell {
                        look: NO_INSTANCE,
                        off_calendar: calendar.is_some_and(|c| !c.contains(*day)),
                        hours: if hourly {
                            Period::day(*day)
                                .parts(PeriodKind::Hour, tz)
                                .into_iter()
                                .map(|h| (NO_INSTANCE, h.key()))
                                .collect()
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
            }
        })
        .collect();
    let row_of: HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.task.clone(), i))
        .collect();
    let mut looks = vec![CellLook::new("none", false, ctx.lang)];
    for group in &states {
        let Some(row) = row_of.get(&group.task) else {
            continue;
        };
        let look = match looks
            .iter()
            .position(|l| l.state == group.state && l.forced == group.forced)
        {
            Some(look) => look,
            None => {
                looks.push(CellLook::new(&group.state, group.forced, ctx.lang));
                looks.len() - 1
            }
        };
        let cells = &mut rows[*row].cells;
        for offset in &group.offsets {
            if let Some(cell) = usize::try_from(*offset).ok().and_then(|col| cells.get_mut(col)) {
                cell.look = look;
            }
        }
        for key in &group.periods {
            let Ok(period) = Period::parse(key) else { continue };
            for (cell, day) in cells.iter_mut().zip(&days) {
                match period.kind() {
                    PeriodKind::Hour if period.etl_day() == *day => {
                        if let Some(hour) = cell.hours.iter_mut().find(|(_, k)| k == key) {
                            hour.0 = look;
                        }
                    }
                    PeriodKind::Month if period.overlaps(Period::day(*day)) => cell.look = look,
                    _ => {}
                }
            }
        }
    }
    Ok(GridPage {
        days: days
            .iter()
            .map(|d| {
                let dashed = d.dashed();
                DayColumn {
                    day: d.compact(),
                    short: dashed[5..].to_string(),
                    dashed,
                }
            })
            .collect(),
        heading: format!(
            "{} × {}",
            count(ctx.lang, rows.len(), TASKS),
            count(ctx.lang, day_count as usize, DAYS)
        ),
        rows,
        looks,
        day_count,
        end_dashed: end.dashed(),
        earlier: end.offset(-day_count).compact(),
        later: later_end(end, day_count, today()),
        ctx,
    })
}

/// A calendar as the API sends it; one that does not validate is left out.
fn calendar_of(c: goflow_proto::Calendar) -> Option<Calendar> {
    let days = |list: Vec<String>| list.iter().filter_map(|d| EtlDay::parse(d).ok()).collect();
    Calendar::from_raw(RawCalendar {
        id: c.id,
        weekdays: c.weekdays,
        exclude: days(c.exclude),
        include: days(c.include),
        description: c.description,
    })
    .ok()
}

fn today() -> EtlDay {
    EtlDay::from_date(chrono::Utc::now().date_naive())
}

/// The end of the window after the one ending on `end`, no later than `today`; empty when
/// that window would show only days after today.
fn later_end(end: EtlDay, day_count: i32, today: EtlDay) -> String {
    let later = end.offset(day_count).min(today);
    if later > end {
        later.compact()
    } else {
        String::new()
    }
}

/// The rows' order: the tasks of one DAG (connected by any dependency) together, each DAG in
/// the order its tasks run (upstream first, by same-day dependencies; ties by id), the DAGs by
/// their first task's id. Each index comes with whether it starts a DAG.
fn dag_order(tasks: &[Task]) -> Vec<(usize, bool)> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // Connected components, by union-find over every dependency.
    let mut parent: Vec<usize> = (0..tasks.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut downstream: Vec<Vec<usize>> = vec![vec![]; tasks.len()];
    let mut waiting_on: Vec<usize> = vec![0; tasks.len()];
    for (down, task) in tasks.iter().enumerate() {
        for dep in &task.depends_on {
            let Some(&up) = index.get(dep.task.as_str()) else {
                continue;
            };
            let (a, b) = (root(&mut parent, up), root(&mut parent, down));
            parent[a] = b;
            if dep.day_offset == 0 && up != down {
                downstream[up].push(down);
                waiting_on[down] += 1;
            }
        }
    }
    // Kahn's algorithm, the ready tasks taken by id; what a cycle would leave out comes last.
    let mut ready: BTreeSet<(&str, usize)> = (0..tasks.len())
        .filter(|i| waiting_on[*i] == 0)
        .map(|i| (tasks[i].id.as_str(), i))
        .collect();
    let mut sorted = Vec::with_capacity(tasks.len());
    while let Some(next) = ready.pop_first() {
        sorted.push(next.1);
        for &down in &downstream[next.1] {
            waiting_on[down] -= 1;
            if waiting_on[down] == 0 {
                ready.insert((tasks[down].id.as_str(), down));
            }
        }
    }
    let placed: std::collections::HashSet<usize> = sorted.iter().copied().collect();
    sorted.extend((0..tasks.len()).filter(|i| !placed.contains(i)));
    // Group by component, keeping the order within each.
    let mut groups: Vec<(usize, Vec<usize>)> = vec![];
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for i in sorted {
        let component = root(&mut parent, i);
        let group = *group_of.entry(component).or_insert_with(|| {
            groups.push((component, vec![]));
            groups.len() - 1
        });
        groups[group].1.push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_iter().map(|(_, members)| members).collect();
    groups.sort_by(|a, b| tasks[a[0]].id.cmp(&tasks[b[0]].id));
    groups
        .into_iter()
        .flat_map(|members| members.into_iter().enumerate().map(|(n, i)| (i, n == 0)))
        .collect()
}

/// The state of every instance of `days` (consecutive): one call, or one whole listing a day
/// from a coordinator that predates `ListInstanceStates`.
async fn states_of_days(app: &AppState, days: &[EtlDay]) -> Result<Vec<InstanceStates>, tonic::Status> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(vec![]);
    };
    let request = ListInstanceStatesRequest {
        from_day: first.compact(),
        to_day: last.compact(),
    };
    match app.client().list_instance_states(request).await {
        Ok(answer) => return Ok(answer.into_inner().states),
        Err(status) if status.code() == Code::Unimplemented => {}
        Err(status) => return Err(status),
    }
    let calls = days.iter().map(|day| {
        let mut client = app.client();
        let request = ListInstancesRequest {
            etl_day: day.compact(),
            ..Default::default()
        };
        async move { client.list_instances(request).await }
    });
    let mut states = vec![];
    for (offset, answer) in futures::future::join_all(calls).await.into_iter().enumerate() {
        states.extend(
            answer?
                .into_inner()
                .instances
                .into_iter()
                .map(|i| InstanceStates {
                    task: i.task,
                    state: i.state,
                    forced: i.forced,
                    offsets: vec![offset as i32],
                    periods: vec![],
                }),
        );
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{Fake, get, sample};

    #[tokio::test]
    async fn one_cell_per_task_and_day_coloured_by_state() {
        let app = sample().start().await;
        // The latest day with instances ends the grid by default.
        let (status, body) = get(&app, "/grid?days=3").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body.matches("class=\"cell state-").count(), 2 * 3);
        assert!(body.contains(
            r#"<a href="/instances/transform/20260110" class="cell state-running" title="transform @ 2026-01-10: running (running)"></a>"#
        ));
        assert!(body.contains(
            r#"<a href="/instances/extract/20260109" class="cell state-none" title="extract @ 2026-01-09: none (no instance that day)"></a>"#
        ));
        let (status, _) = get(&app, "/grid?days=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    fn task(id: &str, ups: &[&str]) -> goflow_proto::Task {
        goflow_proto::Task {
            id: id.into(),
            depends_on: ups
                .iter()
                .map(|u| goflow_proto::TaskDependency {
                    task: u.to_string(),
                    day_offset: 0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The task ids of the grid's rows, in order, `|` before the first of each DAG but the first.
    fn row_order(body: &str) -> String {
        let table = &body[body.find("<tbody>").unwrap()..];
        table
            .split("<tr")
            .skip(1)
            .map(|row| {
                let id = &row[row.find("/tasks/").unwrap() + 7..];
                let id = &id[..id.find('"').unwrap()];
                if row.starts_with(" class=\"group-start\"") {
                    format!("| {id}")
                } else {
                    id.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[tokio::test]
    async fn rows_come_by_dag_in_the_order_they_run() {
        let mut fake = sample();
        // Two DAGs, listed interleaved and downstream first (as ids sort).
        fake.tasks = vec![
            task("a_report", &["z_load"]),
            task("b_other_report", &["b_other_extract"]),
            task("b_other_extract", &[]),
            task("m_transform", &["z_extract"]),
            task("z_extract", &[]),
            task("z_load", &["m_transform"]),
        ];
        let (status, body) = get(&fake.start().await, "/grid?days=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            row_order(&body),
            "b_other_extract b_other_report | z_extract m_transform z_load a_report"
        );
    }

    #[tokio::test]
    async fn the_next_window_never_lies_wholly_in_the_future() {
        let app = sample().start().await;
        let today = super::today();
        // A window in the past: the next one, ending no later than today.
        let (_, body) = get(&app, "/grid?end=20260110&days=14").await;
        assert!(body.contains("href=\"/grid?end=20260124&amp;days=14\""), "{body}");
        let end = today.offset(-3).compact();
        let (_, body) = get(&app, &format!("/grid?end={end}&days=14")).await;
        assert!(
            body.contains(&format!(
                "href=\"/grid?end={}&amp;days=14\" title=\"later days\" id=\"grid-later\"",
                today.compact()
            )),
            "{body}"
        );
        // Ending today: nothing after it to show.
        let (_, body) = get(&app, &format!("/grid?end={}&days=14", today.compact())).await;
        assert!(!body.contains("id=\"grid-later\""), "{body}");
        assert!(body.contains("id=\"grid-earlier\""));
    }

    #[tokio::test]
    async fn forced_successes_are_hatched_and_an_older_coordinator_gives_the_same_page() {
        let mut fake = sample();
        fake.tasks[0].id = "backfill_marker".into();
        let (status, body) = get(&fake.clone().start().await, "/grid?days=2").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let table =
            |page: &str| page[page.find("<table").unwrap()..page.find("</table>").unwrap()].to_string();
        assert!(body.contains(
            r#"<a href="/instances/backfill_marker/20260110" class="cell state-success forced" title="backfill_marker @ 2026-01-10: success (success (force-passed, not run))"></a>"#
        ));
        // Without ListInstanceStates the grid reads each day's instances, as it used to.
        let old = Fake {
            without_instance_states: true,
            ..fake
        };
        let (status, old_body) = get(&old.start().await, "/grid?days=2").await;
        assert_eq!(status, StatusCode::OK, "{old_body}");
        assert_eq!(table(&old_body), table(&body));
    }
}

//! `/`: one data date at a glance (by default the latest day with any instance): counts per
//! state, what failed, what runs and for how long, what waits on what, the agents' health, and
//! every instance of the day.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_core::state::ALL_STATES;
use goflow_core::{EtlDay, InstanceState};
use goflow_proto::{Agent, Instance, ListAgentsRequest, ListInstancesRequest, ListPoolsRequest};
use serde::Deserialize;

use super::{day_or_latest, now_ms};
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Lang;
use crate::translate;
use crate::view::{self, Badge};

/// More than this many instances in one day are cut off (and the page says so).
const MAX_INSTANCES: i32 = 5000;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// `yyyymmdd` or `yyyy-mm-dd` (what `<input type="date">` sends); default: the latest day
    /// with any instance.
    day: Option<String>,
    /// Show only the instances in this state.
    state: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/overview.html")]
pub struct OverviewPage {
    ctx: Ctx,
    day: String,
    day_dashed: String,
    prev_day: String,
    next_day: String,
    /// The selected state, or empty for all.
    state_filter: String,
    total: usize,
    counts: Vec<StateCount>,
    /// Failed, killed, and blocked instances: what needs a human.
    failed: Vec<Row>,
    running: Vec<Row>,
    waiting: Vec<Row>,
    rows: Vec<Row>,
    agents: AgentSummary,
    /// Each pool's slots in use, beside the agents' health.
    pools: Vec<PoolLine>,
    /// The expected finish and critical path (issue 19); None when nothing is left to run.
    eta: Option<super::eta::EtaView>,
    truncated: bool,
    refresh: bool,
    /// The change stream of this day's instances (see `watch.rs`), for the script to refresh on.
    watch: String,
    now: String,
    day_timings: Option<crate::timings::TimingsBar>,
}

struct StateCount {
    badge: Badge,
    count: usize,
}

struct Row {
    task: String,
    href: String,
    badge: Badge,
    tries: String,
    started: String,
    finished: String,
    duration: String,
    exit_code: String,
    blocked: bool,
    info: String,
}

struct PoolLine {
    id: String,
    slots: i64,
    used: i64,
    waiting: i64,
}

impl PoolLine {
    /// `warehouse 2/3, 4 waiting`; `warehouse 已用 2/3，4 个等待`.
    fn text(&self, lang: &Lang) -> String {
        let waiting = match (*lang, self.waiting) {
            (_, 0) => String::new(),
            (Lang::En, n) => format!(", {n} waiting"),
            (Lang::Zh, n) => format!("，{n} 个等待"),
        };
        match *lang {
            Lang::En => format!("{} {}/{}{waiting}", self.id, self.used, self.slots),
            Lang::Zh => format!("{} 已用 {}/{}{waiting}", self.id, self.used, self.slots),
        }
    }

    fn full(&self) -> bool {
        self.used >= self.slots
    }
}

#[derive(Default)]
struct AgentSummary {
    alive: usize,
    dead: usize,
    slots: i32,
    running: i32,
}

impl AgentSummary {
    /// `1 alive, 1 dead · 1/4` (running tries / slots); `1 个在线，1 个失联 · 1/4`.
    fn text(&self, lang: &Lang) -> String {
        let lang = *lang;
        let (alive, dead) = match lang {
            Lang::En => (format!("{} alive", self.alive), format!(", {} dead", self.dead)),
            Lang::Zh => (
                format!("{} 个在线", self.alive),
                format!("，{} 个失联", self.dead),
            ),
        };
        let dead = if self.dead > 0 { dead } else { String::new() };
        format!("{alive}{dead} · {}/{}", self.running, self.slots)
    }
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<OverviewPage, WebError> {
    let day = day_or_latest(&app, params.day.as_deref()).await?;
    let state_filter = match params.state.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => Some(
            InstanceState::parse(name)
                .ok_or_else(|| WebError::bad_parameter("state", format!("unknown state {name:?}")))?,
        ),
    };
    let mut client = app.client();
    let instances = client
        .list_instances(ListInstancesRequest {
            etl_day: day.compact(),
            limit: MAX_INSTANCES,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;
    let agents = client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .agents;
    // A coordinator from before pools answers UNIMPLEMENTED: the page just shows none.
    let pools = client
        .list_pools(ListPoolsRequest {})
        .await
        .map(|r| r.into_inner().pools)
        .unwrap_or_default();
    let eta = super::eta::fetch(&app, day)
        .await
        .and_then(|e| super::eta::EtaView::new(&e, ctx.lang));
    let mut page = OverviewPage::new(ctx, day, state_filter, &instances, &agents, now_ms());
    page.eta = eta;
    page.pools = pools
        .into_iter()
        .map(|p| PoolLine {
            id: p.id,
            slots: p.slots,
            used: p.used,
            waiting: p.waiting,
        })
        .collect();
    Ok(page)
}

impl OverviewPage {
    fn new(
        ctx: Ctx,
        day: EtlDay,
        state_filter: Option<InstanceState>,
        instances: &[Instance],
        agents: &[Agent],
        now: i64,
    ) -> Self {
        let lang = ctx.lang;
        let counts = ALL_STATES
            .into_iter()
            .map(|state| StateCount {
                badge: Badge::of(state, lang),
                count: instances.iter().filter(|i| i.state == state.as_str()).count(),
            })
            .collect();
        let rows_where = |keep: &dyn Fn(&Instance) -> bool| -> Vec<Row> {
            instances
                .iter()
                .filter(|i| keep(i))
                .map(|i| Row::new(i, now, lang))
                .collect()
        };
        let failed = rows_where(&|i| matches!(i.state.as_str(), "failed" | "killed"));
        let running = rows_where(&|i| i.state == "running");
        let waiting = rows_where(&|i| i.state == "waiting" && !i.wait_reason.is_empty());
        let rows = rows_where(&|i| state_filter.is_none_or(|s| i.state == s.as_str()));
        let mut summary = AgentSummary::default();
        for agent in agents {
            if agent.state == "alive" {
                summary.alive += 1;
                summary.slots += agent.slots;
                summary.running += agent.running;
            } else {
                summary.dead += 1;
            }
        }
        Self {
            ctx,
            day: day.compact(),
            day_dashed: day.dashed(),
            prev_day: day.offset(-1).compact(),
            next_day: day.offset(1).compact(),
            state_filter: state_filter.map(|s| s.as_str().to_string()).unwrap_or_default(),
            total: instances.len(),
            counts,
            failed,
            running,
            waiting,
            rows,
            agents: summary,
            pools: vec![],
            eta: None,
            truncated: instances.len() >= MAX_INSTANCES as usize,
            refresh: instances.iter().any(|i| view::in_progress(&i.state, i.blocked)),
            watch: super::watch::watch_url(&day, None, instances),
            now: view::time(now),
            day_timings: crate::timings::day_bar(instances, lang),
        }
    }
}

impl Row {
    fn new(i: &Instance, now: i64, lang: Lang) -> Self {
        Self {
            task: i.task.clone(),
            href: format!("/instances/{}/{}", i.task, i.etl_day),
            badge: Badge::new(&i.state, i.forced, lang),
            tries: format!("{}/{}", i.try_number, i.max_tries),
            started: view::time(i.started_at),
            finished: view::time(i.finished_at),
            duration: view::duration(i.started_at, i.finished_at, now, lang),
            exit_code: view::exit_code(i.has_exit_code, i.exit_code),
            blocked: i.blocked,
            info: info(i, lang),
        }
    }
}

/// What the row has to say beyond its state: what it waits for, when it retries, why it ended.
/// A blocked row has its flag beside this, so the reason does not say "blocked" again.
fn info(i: &Instance, lang: Lang) -> String {
    let mut parts = Vec::new();
    if !i.wait_reason.is_empty() {
        parts.push(translate::wait_reason(lang, &i.wait_reason, i.blocked));
    }
    if i.state == "up_for_retry" && i.next_try_at > 0 {
        let at = view::time(i.next_try_at);
        parts.push(match lang {
            Lang::En => format!("next try at {at}"),
            Lang::Zh => format!("下次重试于 {at}"),
        });
    }
    if !i.message.is_empty() {
        parts.push(translate::say(lang, &i.message));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{self, DAY, get, sample};

    /// The number shown next to a state's badge in the counts bar.
    fn count_of(body: &str, state: &str) -> usize {
        let link = format!("state={state}\"");
        let at = body.find(&link).unwrap_or_else(|| panic!("no count for {state}"));
        let rest = &body[at..];
        let n = &rest[rest.find("class=\"n\">").unwrap() + 10..];
        n[..n.find('<').unwrap()].parse().unwrap()
    }

    #[tokio::test]
    async fn renders_every_instance_with_its_state_and_the_counts() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/?day={DAY}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (task, class) in [
            ("extract", "state state-success\""),
            ("transform", "state state-running\""),
            ("load", "state state-waiting\""),
            ("backfill_marker", "state state-success forced\""),
            ("report", "state state-failed\""),
            ("flaky", "state state-up_for_retry\""),
            ("stuck", "state state-killed\""),
            ("later", "state state-queued\""),
        ] {
            let link = format!("<a href=\"/instances/{task}/{DAY}\">{task}</a>");
            let row = &body[body.find(&link).unwrap_or_else(|| panic!("no row for {task}"))..];
            let row = &row[..row.find("</tr>").unwrap()];
            assert!(row.contains(class), "{task} should have {class}: {row}");
        }
        assert_eq!(count_of(&body, "success"), 2);
        assert_eq!(count_of(&body, "running"), 1);
        assert_eq!(count_of(&body, "waiting"), 1);
        assert_eq!(count_of(&body, "failed"), 1);
        assert!(body.contains("<span>all</span><span class=\"n\">8</span>"));
        assert!(body.contains("2026-01-10 00:00:01"), "started, in UTC");
        assert!(body.contains(">42s<"), "extract's duration");
        assert!(body.contains(">1/3<") && body.contains(">2/3<"), "tries");
        assert!(body.contains("exit code 2"));
        assert!(body.contains("value=\"2026-01-10\""), "the date input");
        assert!(body.contains("/?day=20260109") && body.contains("/?day=20260111"));
        assert!(body.contains("id=\"autorefresh\""), "a running day refreshes");
        assert!(
            body.contains("data-watch=\"/watch?day=20260110&#38;since=")
                || body.contains("data-watch=\"/watch?day=20260110&amp;since="),
            "on the day's change stream"
        );
    }

    #[tokio::test]
    async fn escapes_what_the_coordinator_says() {
        let app = sample().start().await;
        let (_, body) = get(&app, &format!("/?day={DAY}")).await;
        assert!(!body.contains("<script>alert"), "{body}");
        assert!(body.contains("&#60;script&#62;alert(1)") || body.contains("&lt;script&gt;alert(1)"));
    }

    #[tokio::test]
    async fn a_finished_day_does_not_refresh() {
        let mut fake = sample();
        fake.instances
            .retain(|i| i.state == "success" || i.state == "failed");
        let app = fake.start().await;
        let (status, body) = get(&app, &format!("/?day={DAY}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains("id=\"autorefresh\""));
        assert!(!body.contains("http-equiv=\"refresh\""));
    }

    #[tokio::test]
    async fn filters_by_state_and_reads_the_date_input_form() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/?day=2026-01-10&state=failed").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("/instances/report/20260110"));
        assert!(!body.contains("/instances/extract/20260110"));
        assert_eq!(count_of(&body, "success"), 2, "counts stay for the whole day");
    }

    #[tokio::test]
    async fn an_empty_day_and_the_default_day() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/?day=20250101").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("No instances for this day."));
        // The default is the latest day with any instance, not "yesterday".
        let (status, body) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("Data date 2026-01-10"), "{body}");
    }

    #[tokio::test]
    async fn a_bad_day_or_state_is_a_400_naming_the_parameter() {
        let app = sample().start().await;
        for (uri, name) in [
            ("/?day=2026-13-01", "bad parameter day"),
            ("/?day=yesterday", "bad parameter day"),
            ("/?day=20260110&state=done", "bad parameter state"),
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(name), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_a_502_that_names_it() {
        let (app, url) = testing::unreachable().await;
        let (status, body) = get(&app, &format!("/?day={DAY}")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            body.contains(&format!("cannot reach the coordinator at {url}")),
            "{body}"
        );
    }
}

//! `/instances/{task}/{day}`: one instance, its tries, the log of one try (live while it runs),
//! and the repair buttons.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query};
use goflow_core::dag::is_valid_task_id;
use goflow_core::{EtlDay, InstanceState};
use goflow_proto::{Attempt, GetInstanceRequest, GetTaskRequest, Instance, ListAttemptsRequest};
use serde::Deserialize;
use tonic::Code;

use super::logs::{LogView, read_log_window};
use super::{now_ms, parse_day};
use crate::AppState;
use crate::actions::instance::InstanceAction;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Lang;
use crate::translate;
use crate::view::{self, Badge};

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The try whose log to show; default: the latest.
    #[serde(rename = "try")]
    try_number: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/instance.html")]
pub struct InstancePage {
    ctx: Ctx,
    task: String,
    day: String,
    day_dashed: String,
    /// False for a task that has no instance on this day yet (only "run" applies).
    exists: bool,
    badge: Badge,
    tries: String,
    agent: String,
    queue: String,
    priority: i32,
    created: String,
    queued: String,
    started: String,
    finished: String,
    duration: String,
    exit_code: String,
    next_try: String,
    wait_reason: String,
    blocked: bool,
    /// Who marked it success (force pass); empty otherwise.
    marked_by: String,
    message: String,
    /// The task's current version (0: unknown), for the tries' diff links.
    current_version: i64,
    /// The version its tries run when `run --as-then` pinned one; 0: the current one.
    run_version: i64,
    attempts: Vec<AttemptRow>,
    log: Option<LogView>,
    actions: Vec<ActionButton>,
    /// Where the action forms post.
    action_url: String,
    refresh: bool,
    /// The change stream of this instance (see `watch.rs`), for the script to refresh on.
    watch: String,
    /// Why it is where it is (issue 19); None when the coordinator cannot say.
    explain: Option<super::explain::ExplainView>,
    timings: Option<crate::timings::TimingsBar>,
}

struct AttemptRow {
    try_number: i32,
    selected: bool,
    badge: Badge,
    agent: String,
    started: String,
    finished: String,
    duration: String,
    exit_code: String,
    log_size: String,
    message: String,
    /// The command line it ran, after templating; empty when the coordinator did not keep it.
    command: String,
    /// The task's version it ran; 0: unknown (a try from before versions were kept).
    version: i64,
}

/// One repair button: a POST form that confirms first.
pub struct ActionButton {
    pub action: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    /// Red: it throws work or history away.
    pub danger: bool,
    pub enabled: bool,
}

/// `task` and `day` from the path, checked.
pub fn instance_path(task: &str, day: &str) -> Result<EtlDay, WebError> {
    if !is_valid_task_id(task) {
        return Err(WebError::bad_parameter(
            "task",
            format!("{task:?} is not a task id"),
        ));
    }
    parse_day("day", day)
}

pub async fn page(
    app: AppState,
    ctx: Ctx,
    Path((task, day)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<InstancePage, WebError> {
    let day = instance_path(&task, &day)?;
    let wanted_try = match params.try_number.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| WebError::bad_parameter("try", format!("{text:?} is not a try number")))?,
        ),
    };
    let mut client = app.client();
    let found = client
        .get_instance(GetInstanceRequest {
            task: task.clone(),
            etl_day: day.compact(),
            ..Default::default()
        })
        .await;
    let instance = match found {
        Ok(response) => response.into_inner(),
        // A task without an instance that day (a grey node of the graph): say so, offer a run.
        Err(status) if status.code() == Code::NotFound => {
            let defined = client.get_task(GetTaskRequest { id: task.clone() }).await.is_ok();
            if !defined {
                return Err(app.fail(status));
            }
            let explain = super::explain::fetch(&app, &task, &day.compact(), ctx.lang).await;
            return Ok(InstancePage {
                explain,
                ..InstancePage::without_instance(ctx, task, day)
            });
        }
        Err(status) => return Err(app.fail(status)),
    };
    let attempts = client
        .list_attempts(ListAttemptsRequest {
            instance_id: instance.id,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .attempts;

    let selected = match wanted_try {
        Some(n) => Some(
            attempts
                .iter()
                .find(|a| a.try_number == n)
                .ok_or_else(|| WebError::NotFound(format!("{task}@{} has no try {n}", day.compact())))?,
        ),
        None => attempts.iter().max_by_key(|a| a.try_number),
    };
    let log = match selected {
        Some(attempt) => Some(read_log_window(&app, &instance, attempt).await?),
        None => None,
    };
    let selected_try = selected.map(|a| a.try_number);
    let now = now_ms();
    let lang = ctx.lang;
    let state = InstanceState::parse(&instance.state);
    // A deleted task has no current version: its tries' versions show without a diff link.
    let current_version = client
        .get_task(GetTaskRequest { id: task.clone() })
        .await
        .map_or(0, |t| t.into_inner().version);
    let explain = super::explain::fetch(&app, &task, &day.compact(), lang).await;
    let watch = super::watch::watch_url(&day, Some(&task), std::slice::from_ref(&instance));
    Ok(InstancePage {
        explain,
        current_version,
        run_version: instance.run_version,
        actions: buttons(&ctx, state),
        action_url: format!("/instances/{task}/{}/action", day.compact()),
        ctx,
        task,
        day: day.compact(),
        day_dashed: day.dashed(),
        exists: true,
        badge: Badge::new(&instance.state, instance.forced, lang),
        tries: tries_text(lang, instance.try_number, instance.max_tries),
        agent: instance.agent.clone(),
        queue: instance.queue.clone(),
        priority: instance.priority,
        created: view::time(instance.created_at),
        queued: view::time(instance.queued_at),
        started: view::time(instance.started_at),
        finished: view::time(instance.finished_at),
        duration: view::duration(instance.started_at, instance.finished_at, now, lang),
        exit_code: view::exit_code(instance.has_exit_code, instance.exit_code),
        next_try: if instance.state == "up_for_retry" {
            view::time(instance.next_try_at)
        } else {
            String::new()
        },
        wait_reason: translate::wait_reason(lang, &instance.wait_reason, instance.blocked),
        blocked: instance.blocked,
        message: translate::say(lang, &instance.message),
        marked_by: instance.marked_by.clone(),
        attempts: attempts
            .iter()
            .map(|a| AttemptRow::new(a, Some(a.try_number) == selected_try, now, lang))
            .collect(),
        log,
        refresh: in_progress(&instance),
        watch,
        timings: crate::timings::instance_bar(instance.timings.as_ref(), lang),
    })
}

/// `2 / 3` in English; `第 2 次（最多 3 次）` in Chinese, `尚未运行（最多 3 次）` before the first.
fn tries_text(lang: Lang, try_number: i32, max_tries: i32) -> String {
    match lang {
        Lang::En => format!("{try_number} / {max_tries}"),
        Lang::Zh if try_number == 0 => format!("尚未运行（最多 {max_tries} 次）"),
        Lang::Zh => format!("第 {try_number} 次（最多 {max_tries} 次）"),
    }
}

fn in_progress(instance: &Instance) -> bool {
    view::in_progress(&instance.state, instance.blocked)
}

impl InstancePage {
    fn without_instance(ctx: Ctx, task: String, day: EtlDay) -> Self {
        let run_only = if ctx.may_operate() {
            vec![
                action_button(&ctx, InstanceAction::ForceRun, true),
                action_button(&ctx, InstanceAction::Redo, true),
            ]
        } else {
            vec![]
        };
        Self {
            badge: Badge::new("none", false, ctx.lang),
            actions: run_only,
            action_url: format!("/instances/{task}/{}/action", day.compact()),
            ctx,
            task,
            day: day.compact(),
            day_dashed: day.dashed(),
            exists: false,
            tries: String::new(),
            agent: String::new(),
            queue: String::new(),
            priority: 0,
            created: String::new(),
            queued: String::new(),
            started: String::new(),
            finished: String::new(),
            duration: String::new(),
            exit_code: String::new(),
            next_try: String::new(),
            wait_reason: String::new(),
            marked_by: String::new(),
            blocked: false,
            message: String::new(),
            current_version: 0,
            run_version: 0,
            attempts: vec![],
            log: None,
            refresh: false,
            watch: String::new(),
            explain: None,
            timings: None,
        }
    }
}

fn action_button(ctx: &Ctx, action: InstanceAction, enabled: bool) -> ActionButton {
    ActionButton {
        action: action.name(),
        label: action.label(ctx.t),
        help: action.help(ctx.t),
        danger: action.is_destructive(),
        enabled,
    }
}

/// Every repair button; kill only applies to an unfinished instance, and redoing a queued or
/// running one is refused by the coordinator anyway (two live runs), so those are disabled.
/// None for a viewer (every one needs the operator role).
fn buttons(ctx: &Ctx, state: Option<InstanceState>) -> Vec<ActionButton> {
    if !ctx.may_operate() {
        return vec![];
    }
    let finished = state.is_some_and(InstanceState::is_finished);
    let live = matches!(state, Some(InstanceState::Queued | InstanceState::Running));
    InstanceAction::ALL
        .into_iter()
        .map(|action| {
            let enabled = match action {
                InstanceAction::Kill => !finished,
                InstanceAction::Delete | InstanceAction::MarkSuccess => true,
                _ => !live,
            };
            action_button(ctx, action, enabled)
        })
        .collect()
}

impl AttemptRow {
    fn new(a: &Attempt, selected: bool, now: i64, lang: Lang) -> Self {
        Self {
            try_number: a.try_number,
            selected,
            badge: Badge::new(&a.state, false, lang),
            agent: a.agent.clone(),
            started: view::time(a.started_at),
            finished: view::time(a.finished_at),
            duration: view::duration(a.started_at, a.finished_at, now, lang),
            exit_code: view::exit_code(a.has_exit_code, a.exit_code),
            log_size: view::bytes(a.log_bytes),
            message: translate::say(lang, &a.message),
            command: a.command.clone(),
            version: a.definition_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::pages::logs::LOG_WINDOW;
    use crate::testing::{self, DAY, TRANSFORM_ID, get, get_with, sample};

    #[tokio::test]
    async fn shows_the_fields_the_tries_and_the_latest_log_escaped() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("state state-running"));
        assert!(body.contains("2 / 3") && body.contains("agent-1"));
        assert!(body.contains("Log of try 2"));
        assert!(
            body.contains("starting transform\nrow 1 &#60;b&#62;bold&#60;/b&#62; &#38; done")
                || body.contains("starting transform\nrow 1 &lt;b&gt;bold&lt;/b&gt; &amp; done"),
            "{body}"
        );
        assert!(!body.contains("<b>bold</b>"));
        assert!(
            body.contains("<tr class=\"selected\">"),
            "the shown try is marked"
        );
        assert!(body.contains("href=\"?try=1\""));
        assert!(
            body.contains("id=\"autorefresh\""),
            "a running instance refreshes"
        );
        assert!(
            body.contains("data-watch=\"/watch?day=20260110&#38;task=transform&#38;since=")
                || body.contains("data-watch=\"/watch?day=20260110&amp;task=transform&amp;since="),
            "on the instance's change stream"
        );
        // The running try's log continues live from where the page stopped.
        let end = "starting transform\nrow 1 <b>bold</b> & done\n".len();
        assert!(
            body.contains(&format!(
                "data-live-url=\"/instances/transform/{DAY}/live?try=2&amp;offset={end}\""
            )),
            "{body}"
        );
        assert!(body.contains(&format!("href=\"/instances/transform/{DAY}/log?try=2\" download")));
    }

    #[tokio::test]
    async fn a_force_passed_instance_says_who_marked_it_in_both_languages() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/backfill_marker/{DAY}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("<dt>marked success by</dt><dd>alice</dd>"),
            "{body}"
        );
        let (_, body) = get_with(
            &app,
            &format!("/instances/backfill_marker/{DAY}"),
            &[("accept-language", "zh-CN")],
        )
        .await;
        assert!(body.contains("<dt>强制通过操作人</dt><dd>alice</dd>"), "{body}");
        let (_, body) = get(&app, &format!("/instances/report/{DAY}")).await;
        assert!(!body.contains("marked success by"), "not marked: {body}");
    }

    #[tokio::test]
    async fn has_every_repair_button_as_a_confirming_post_form() {
        let app = sample().start().await;
        let (_, body) = get(&app, &format!("/instances/report/{DAY}")).await;
        for (action, label) in [
            ("force_run", "force run"),
            ("redo", "redo current"),
            ("redo_down", "redo current and downstream"),
            ("redo_up", "redo with upstream"),
            ("mark_success", "mark success"),
            ("kill", "kill"),
            ("delete", "delete"),
        ] {
            let button = format!("id=\"action-{action}\"");
            let at = body.find(&button).unwrap_or_else(|| panic!("no {action} button"));
            let form_start = body[..at].rfind("<form").unwrap();
            let form = &body[form_start..at + 300];
            assert!(
                form.contains(&format!(
                    "method=\"post\" action=\"/instances/report/{DAY}/action\""
                )),
                "{form}"
            );
            assert!(form.contains("data-confirm="), "{form}");
            assert!(form.contains("name=\"csrf\" value=\""), "{form}");
            assert!(form.contains(&format!(">{label}</button>")), "{form}");
        }
        // A failed instance cannot be killed; a running one cannot be redone.
        let kill = &body[body.find("id=\"action-kill\"").unwrap()..];
        assert!(kill[..kill.find('>').unwrap()].contains("disabled"));
        let (_, running) = get(&app, &format!("/instances/transform/{DAY}")).await;
        let redo = &running[running.find("id=\"action-redo\"").unwrap()..];
        assert!(redo[..redo.find('>').unwrap()].contains("disabled"));
        let kill = &running[running.find("id=\"action-kill\"").unwrap()..];
        assert!(!kill[..kill.find('>').unwrap()].contains("disabled"));
    }

    #[tokio::test]
    async fn reads_in_chinese_with_the_seeds_label_for_mark_success() {
        let app = sample().start().await;
        let (status, body) = get_with(
            &app,
            &format!("/instances/report/{DAY}"),
            &[("accept-language", "zh-CN,zh;q=0.9")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<html lang=\"zh-CN\">"));
        assert!(body.contains(">强制通过</button>"));
        assert!(body.contains(">重做当前及下游</button>"));
        assert!(
            body.contains("title=\"failed\" data-state=\"failed\">失败</span>"),
            "the state in Chinese, its API name in the hover text: {body}"
        );
    }

    #[tokio::test]
    async fn shows_an_older_try_when_asked() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}?try=1")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("Log of try 1") && body.contains("try one\nboom"));
        assert!(!body.contains("starting transform"));
        assert!(!body.contains("data-live-url"), "a finished try is not followed");
    }

    #[tokio::test]
    async fn shows_only_the_end_of_a_long_log() {
        let mut fake = sample();
        let mut log = b"FIRST LINE\n".to_vec();
        log.resize(300 * 1024 - 9, b'x');
        log.extend_from_slice(b"\nLAST LINE");
        let total = log.len() as i64;
        fake.attempts[1].log_bytes = total;
        fake.logs.insert((TRANSFORM_ID, 2), log);
        let offsets = fake.tail_offsets.clone();
        let app = fake.start().await;
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(*offsets.lock().unwrap(), vec![total - LOG_WINDOW]);
        assert!(
            body.contains("The log is longer; showing its end: 300 KiB"),
            "{body}"
        );
        assert!(body.contains("LAST LINE") && !body.contains("FIRST LINE"));
    }

    #[tokio::test]
    async fn a_waiting_instance_has_no_tries_yet() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/load/{DAY}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("No tries yet."));
        assert!(!body.contains("<script>alert"));
        assert!(!body.contains("<pre"));
    }

    #[tokio::test]
    async fn a_task_without_an_instance_that_day_offers_a_run() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/instances/extract/20260101").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("This task has no instance on this day yet."));
        assert!(body.contains("id=\"action-force_run\"") && !body.contains("id=\"action-kill\""));
    }

    #[tokio::test]
    async fn unknown_instances_and_tries_are_404s() {
        let app = sample().start().await;
        let (status, body) = get(&app, &format!("/instances/nope/{DAY}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no instance nope@20260110"), "{body}");
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}?try=9")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("transform@20260110 has no try 9"));
    }

    #[tokio::test]
    async fn bad_parameters_are_400s_naming_them() {
        let app = sample().start().await;
        for (uri, name) in [
            ("/instances/transform/2026011".to_string(), "bad parameter day"),
            (
                format!("/instances/transform/{DAY}?try=first"),
                "bad parameter try",
            ),
            (format!("/instances/transform/{DAY}?try=0"), "bad parameter try"),
            (format!("/instances/a%20b/{DAY}"), "bad parameter task"),
        ] {
            let (status, body) = get(&app, &uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(name), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_a_502() {
        let (app, url) = testing::unreachable().await;
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.contains(&format!("cannot reach the coordinator at {url}")));
    }
}

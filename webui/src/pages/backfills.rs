//! `/backfills` (issue 19): every backfill with its progress bar, counts by state, and the
//! Pause, Resume and Cancel buttons; `POST /backfills` with `id` and `action` presses one.
//! The words of this page are here, in both languages, beside the handler.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::response::{IntoResponse, Response};
use goflow_proto::{
    Backfill, CancelBackfillRequest, ListBackfillsRequest, PauseBackfillRequest, ResumeBackfillRequest,
};
use serde::Deserialize;

use crate::AppState;
use crate::actions::{ConfirmPage, HiddenField, outcome};
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Lang;
use crate::translate;
use crate::view;

const LIMIT: i32 = 200;

impl Ctx {
    /// The navigation's link to this page.
    pub fn backfills_label(&self) -> &'static str {
        words(self.lang).title
    }
}

/// This page's words.
pub struct Words {
    pub title: &'static str,
    pub none: &'static str,
    pub id: &'static str,
    pub task: &'static str,
    pub range: &'static str,
    pub state: &'static str,
    pub progress: &'static str,
    pub counts: &'static str,
    pub parallelism: &'static str,
    pub by: &'static str,
    pub created: &'static str,
    pub pause: &'static str,
    pub resume: &'static str,
    pub cancel: &'static str,
    pub cancel_help: &'static str,
    pub free_slots: &'static str,
    pub help: &'static str,
}

const EN: Words = Words {
    title: "Backfills",
    none: "No backfills yet. Start one from a task's page, or with goflowctl backfill start.",
    id: "ID",
    task: "Task",
    range: "Range",
    state: "State",
    progress: "Progress",
    counts: "Instances",
    parallelism: "Parallelism",
    by: "Started by",
    created: "Started",
    pause: "Pause",
    resume: "Resume",
    cancel: "Cancel",
    cancel_help: "Kill its running tries and end every instance not started yet as killed",
    free_slots: "free slots",
    help: "Pause stops new starts (running tries run on); a backfill's instances start after scheduled runs.",
};

const ZH: Words = Words {
    title: "补数任务",
    none: "还没有补数任务。可在任务页面或用 goflowctl backfill start 发起。",
    id: "编号",
    task: "任务",
    range: "范围",
    state: "状态",
    progress: "进度",
    counts: "实例",
    parallelism: "并发上限",
    by: "发起人",
    created: "发起时间",
    pause: "暂停",
    resume: "继续",
    cancel: "取消",
    cancel_help: "终止正在运行的尝试，并把尚未开始的实例全部记为已终止",
    free_slots: "空闲槽位",
    help: "暂停后不再启动新实例（运行中的继续运行）；补数实例排在定时运行之后。",
};

pub fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::En => &EN,
        Lang::Zh => &ZH,
    }
}

/// A backfill's state in the page's language.
fn state_word(lang: Lang, state: &str) -> String {
    match (lang, state) {
        (Lang::En, s) => s.to_string(),
        (Lang::Zh, "running") => "运行中".into(),
        (Lang::Zh, "paused") => "已暂停".into(),
        (Lang::Zh, "cancelled") => "已取消".into(),
        (Lang::Zh, "done") => "已完成".into(),
        (Lang::Zh, s) => s.to_string(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/backfills.html")]
pub struct BackfillsPage {
    ctx: Ctx,
    w: &'static Words,
    rows: Vec<Row>,
}

struct Row {
    id: i64,
    task: String,
    range: String,
    state: String,
    state_label: String,
    finished: i64,
    total: i64,
    percent: i64,
    counts: String,
    parallelism: String,
    by: String,
    created: String,
}

impl Row {
    fn new(b: &Backfill, lang: Lang, w: &Words) -> Self {
        let percent = if b.total > 0 {
            b.finished * 100 / b.total
        } else {
            100
        };
        Self {
            id: b.id,
            task: b.task.clone(),
            range: format!(
                "{} … {}{}",
                b.from_day,
                b.to_day,
                if b.down { " --down" } else { "" }
            ),
            state: b.state.clone(),
            state_label: state_word(lang, &b.state),
            finished: b.finished,
            total: b.total,
            percent,
            counts: b
                .counts
                .iter()
                .map(|c| format!("{} {}", view::Badge::new(&c.state, false, lang).label, c.count))
                .collect::<Vec<_>>()
                .join(", "),
            parallelism: if b.parallelism > 0 {
                b.parallelism.to_string()
            } else {
                w.free_slots.to_string()
            },
            by: b.created_by.clone(),
            created: view::time(b.created_at),
        }
    }
}

pub async fn page(app: AppState, ctx: Ctx) -> Result<BackfillsPage, WebError> {
    let backfills = app
        .client()
        .list_backfills(ListBackfillsRequest { limit: LIMIT })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .backfills;
    let w = words(ctx.lang);
    let rows = backfills.iter().map(|b| Row::new(b, ctx.lang, w)).collect();
    Ok(BackfillsPage { ctx, w, rows })
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    id: i64,
    action: String,
    #[serde(default)]
    confirmed: String,
}

/// `POST /backfills`: pause and resume at once (harmless, undoable); cancel confirms first.
pub async fn action(app: AppState, ctx: Ctx, Form(form): Form<ActionForm>) -> Result<Response, WebError> {
    let id = form.id;
    let back = format!("/backfills#backfill-{id}");
    let lang = ctx.lang;
    let mut client = app.client();
    let flash = match form.action.as_str() {
        "pause" => outcome(
            lang,
            client.pause_backfill(PauseBackfillRequest { id }).await,
            |r| translate::say(lang, &r.into_inner().message),
        ),
        "resume" => outcome(
            lang,
            client.resume_backfill(ResumeBackfillRequest { id }).await,
            |r| translate::say(lang, &r.into_inner().message),
        ),
        "cancel" if form.confirmed != "1" => {
            let w = words(lang);
            return Ok(ConfirmPage {
                title: format!("{} {id}", w.cancel),
                question: w.cancel_help.to_string(),
                post_to: "/backfills".into(),
                fields: vec![
                    HiddenField {
                        name: "id".into(),
                        value: id.to_string(),
                    },
                    HiddenField {
                        name: "action".into(),
                        value: "cancel".into(),
                    },
                ],
                cancel_to: back,
                danger: true,
                ctx,
            }
            .into_response());
        }
        "cancel" => outcome(
            lang,
            client.cancel_backfill(CancelBackfillRequest { id }).await,
            |r| translate::say(lang, &r.into_inner().message),
        ),
        other => {
            return Err(WebError::bad_parameter(
                "action",
                format!("{other:?}: use pause, resume or cancel"),
            ));
        }
    };
    Ok(flash.redirect(&back))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, get_with, post, sample};

    #[tokio::test]
    async fn lists_backfills_with_progress_bars_and_the_buttons_their_state_allows() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/backfills").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains(r#"<a href="/backfills" class="active">Backfills</a>"#),
            "{body}"
        );
        assert!(
            body.contains(r#"<progress max="10" value="4">40%</progress>"#),
            "{body}"
        );
        assert!(body.contains("success 4, waiting 6"), "{body}");
        // 7 runs: Pause and Cancel; 8 is paused: Resume and Cancel.
        for id in ["pause-7", "cancel-7", "resume-8", "cancel-8"] {
            assert!(body.contains(&format!("id=\"{id}\"")), "{id}: {body}");
        }
        assert!(
            !body.contains("id=\"resume-7\"") && !body.contains("id=\"pause-8\""),
            "{body}"
        );
        assert!(
            body.contains(r#"name="csrf""#),
            "every form carries the CSRF token"
        );
        let (_, zh) = get_with(&app, "/backfills", &[("cookie", "goflow_lang=zh")]).await;
        assert!(
            zh.contains("<h1>补数任务") && zh.contains(">暂停</button>"),
            "{zh}"
        );
        // Linked from every page.
        let (_, other) = get(&app, "/agents").await;
        assert!(
            other.contains(r#"<a href="/backfills" class="">Backfills</a>"#),
            "{other}"
        );
    }

    #[tokio::test]
    async fn the_buttons_call_the_coordinator_and_cancel_confirms_first() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(&app, "/backfills", &[("id", "7"), ("action", "pause")], true).await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/backfills#backfill-7")
        );
        assert_eq!(answer.flash(), "ok.backfill 7 paused");
        post(&app, "/backfills", &[("id", "8"), ("action", "resume")], true).await;
        let asked = post(&app, "/backfills", &[("id", "7"), ("action", "cancel")], true).await;
        assert_eq!(asked.status, StatusCode::OK, "a confirmation page first");
        assert!(asked.body.contains("Kill its running tries"), "{}", asked.body);
        let answer = post(
            &app,
            "/backfills",
            &[("id", "7"), ("action", "cancel"), ("confirmed", "1")],
            true,
        )
        .await;
        assert!(
            answer.flash().contains("backfill 7 cancelled"),
            "{}",
            answer.flash()
        );
        assert_eq!(
            *calls.lock().unwrap(),
            vec!["PauseBackfill 7", "ResumeBackfill 8", "CancelBackfill 7"]
        );
        let refused = post(&app, "/backfills", &[("id", "7"), ("action", "pause")], false).await;
        assert_ne!(refused.status, StatusCode::SEE_OTHER, "no CSRF token, no action");
        let bad = post(&app, "/backfills", &[("id", "7"), ("action", "explode")], true).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(calls.lock().unwrap().len(), 3);
    }
}

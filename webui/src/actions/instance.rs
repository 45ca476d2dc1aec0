//! `POST /instances/{task}/{day}/action`: the repair buttons of the instance page.

use axum::Form;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use goflow_proto::{DeleteInstanceRequest, KillRequest, MarkSuccessRequest, RunRequest};
use serde::Deserialize;

use super::{ConfirmPage, HiddenField, outcome};
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Texts;
use crate::pages::instance::instance_path;
use crate::translate;

/// The seed's instance verbs, in the order the buttons appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    ForceRun,
    Redo,
    RedoDown,
    RedoUp,
    MarkSuccess,
    Kill,
    Delete,
}

impl InstanceAction {
    pub const ALL: [Self; 7] = [
        Self::ForceRun,
        Self::Redo,
        Self::RedoDown,
        Self::RedoUp,
        Self::MarkSuccess,
        Self::Kill,
        Self::Delete,
    ];

    /// The form value.
    pub fn name(self) -> &'static str {
        match self {
            Self::ForceRun => "force_run",
            Self::Redo => "redo",
            Self::RedoDown => "redo_down",
            Self::RedoUp => "redo_up",
            Self::MarkSuccess => "mark_success",
            Self::Kill => "kill",
            Self::Delete => "delete",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn label(self, t: &'static Texts) -> &'static str {
        match self {
            Self::ForceRun => t.force_run,
            Self::Redo => t.redo,
            Self::RedoDown => t.redo_down,
            Self::RedoUp => t.redo_up,
            Self::MarkSuccess => t.mark_success,
            Self::Kill => t.kill,
            Self::Delete => t.delete,
        }
    }

    pub fn help(self, t: &'static Texts) -> &'static str {
        match self {
            Self::ForceRun => t.force_run_help,
            Self::Redo => t.redo_help,
            Self::RedoDown => t.redo_down_help,
            Self::RedoUp => t.redo_up_help,
            Self::MarkSuccess => t.mark_success_help,
            Self::Kill => t.kill_help,
            Self::Delete => t.delete_help,
        }
    }

    /// Throws a running try or the history away.
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Kill | Self::Delete)
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    action: String,
    #[serde(default)]
    confirmed: String,
}

pub async fn post(
    app: AppState,
    ctx: Ctx,
    Path((task, day)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    let day = instance_path(&task, &day)?;
    let action = InstanceAction::parse(&form.action)
        .ok_or_else(|| WebError::bad_parameter("action", format!("unknown action {:?}", form.action)))?;
    let page = format!("/instances/{task}/{}", day.compact());
    let target = format!("{task}@{}", day.compact());
    if form.confirmed != "1" {
        return Ok(ConfirmPage {
            title: format!("{}{}{target}", action.label(ctx.t), ctx.t.colon),
            question: action.help(ctx.t).to_string(),
            post_to: format!("{page}/action"),
            fields: vec![HiddenField {
                name: "action".into(),
                value: action.name().into(),
            }],
            cancel_to: page,
            danger: action.is_destructive(),
            ctx,
        }
        .into_response());
    }

    let mut client = app.client();
    let etl_day = day.compact();
    let run = |force: bool, down: bool, up: bool| RunRequest {
        task: task.clone(),
        etl_day: etl_day.clone(),
        force,
        down,
        up,
        ..Default::default()
    };
    let label = action.label(ctx.t);
    let lang = ctx.lang;
    let said = |message: String| {
        format!(
            "{label} {target}{}{}",
            ctx.t.colon,
            translate::say(lang, &message)
        )
    };
    let flash = match action {
        InstanceAction::ForceRun => outcome(lang, client.run(run(true, false, false)).await, |r| {
            said(r.into_inner().message)
        }),
        InstanceAction::Redo => outcome(lang, client.run(run(false, false, false)).await, |r| {
            said(r.into_inner().message)
        }),
        InstanceAction::RedoDown => outcome(lang, client.run(run(false, true, false)).await, |r| {
            said(r.into_inner().message)
        }),
        InstanceAction::RedoUp => outcome(lang, client.run(run(false, false, true)).await, |r| {
            said(r.into_inner().message)
        }),
        InstanceAction::MarkSuccess => outcome(
            lang,
            client
                .mark_success(MarkSuccessRequest {
                    task: task.clone(),
                    etl_day: etl_day.clone(),
                    down: false,
                })
                .await,
            |r| said(r.into_inner().message),
        ),
        InstanceAction::Kill => outcome(
            lang,
            client
                .kill(KillRequest {
                    task: task.clone(),
                    etl_day: etl_day.clone(),
                    ..Default::default()
                })
                .await,
            |r| said(r.into_inner().message),
        ),
        InstanceAction::Delete => {
            let result = client
                .delete_instance(DeleteInstanceRequest {
                    task: task.clone(),
                    etl_day: etl_day.clone(),
                })
                .await;
            let deleted = result.is_ok();
            let flash = outcome(lang, result, |r| said(r.into_inner().message));
            // The instance is gone: back to its day rather than to a page that no longer exists.
            let back = if deleted { format!("/?day={etl_day}") } else { page };
            return Ok(flash.redirect(&back));
        }
    };
    Ok(flash.redirect(&page))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{DAY, post, sample};

    #[tokio::test]
    async fn each_button_calls_its_rpc_and_redirects_with_the_answer() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let url = format!("/instances/report/{DAY}/action");
        for (action, call, said) in [
            (
                "force_run",
                "Run report@20260110 force",
                "force run report@20260110: 1 instance to run",
            ),
            (
                "redo",
                "Run report@20260110",
                "redo current report@20260110: 1 instance to run",
            ),
            (
                "redo_down",
                "Run report@20260110 down",
                "redo current and downstream report@20260110",
            ),
            (
                "redo_up",
                "Run report@20260110 up",
                "redo with upstream report@20260110",
            ),
            (
                "mark_success",
                "MarkSuccess report@20260110",
                "1 instance marked success",
            ),
            ("kill", "Kill report@20260110", "report@20260110 killed"),
        ] {
            let answer = post(&app, &url, &[("action", action), ("confirmed", "1")], true).await;
            assert_eq!(answer.status, StatusCode::SEE_OTHER, "{action}: {}", answer.body);
            assert_eq!(answer.location, format!("/instances/report/{DAY}"));
            assert!(answer.flash().starts_with("ok."), "{action}");
            assert!(answer.flash().contains(said), "{action}: {}", answer.flash());
            assert_eq!(calls.lock().unwrap().last().unwrap(), call);
        }
        let answer = post(&app, &url, &[("action", "delete"), ("confirmed", "1")], true).await;
        assert_eq!(answer.location, format!("/?day={DAY}"), "the instance is gone");
        assert_eq!(
            calls.lock().unwrap().last().unwrap(),
            "DeleteInstance report@20260110"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_shown_with_the_coordinators_reason() {
        let mut fake = sample();
        fake.refuse = Some("transform@20260110 is running: kill it first".into());
        let app = fake.start().await;
        let answer = post(
            &app,
            &format!("/instances/transform/{DAY}/action"),
            &[("action", "redo"), ("confirmed", "1")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER);
        assert_eq!(answer.flash(), "no.transform@20260110 is running: kill it first");
    }

    #[tokio::test]
    async fn without_confirmation_it_asks_and_changes_nothing() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(
            &app,
            &format!("/instances/report/{DAY}/action"),
            &[("action", "kill")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("kill: report@20260110"));
        assert!(answer.body.contains("name=\"confirmed\" value=\"1\""));
        assert!(answer.body.contains("name=\"action\" value=\"kill\""));
        assert!(calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_post_without_the_csrf_token_is_refused() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(
            &app,
            &format!("/instances/report/{DAY}/action"),
            &[("action", "delete"), ("confirmed", "1")],
            false,
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(answer.body.contains("did not come from this site"));
        assert!(calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_action_is_a_400() {
        let app = sample().start().await;
        let answer = post(
            &app,
            &format!("/instances/report/{DAY}/action"),
            &[("action", "explode")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains("bad parameter action"));
    }
}

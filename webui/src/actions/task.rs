//! The task page's actions: pause or unpause, run one day or a range (a backfill), delete.

use axum::Form;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use goflow_core::dag::is_valid_task_id;
use goflow_proto::{DeleteTasksRequest, RunRequest, SetPausedRequest, StartBackfillRequest};
use serde::Deserialize;

use super::{ConfirmPage, HiddenField, outcome};
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::Lang;
use crate::pages::task::{RANGE_CONFIRM_ABOVE, preview_summary};
use crate::translate;

fn task_path(task: &str) -> Result<(), WebError> {
    if is_valid_task_id(task) {
        Ok(())
    } else {
        Err(WebError::bad_parameter(
            "task",
            format!("{task:?} is not a task id"),
        ))
    }
}

#[derive(Debug, Deserialize)]
pub struct PauseForm {
    paused: String,
}

/// `POST /tasks/{id}/pause` with `paused=1` or `paused=0`. Harmless and undoable: no confirmation.
pub async fn pause(
    app: AppState,
    ctx: Ctx,
    Path(task): Path<String>,
    Form(form): Form<PauseForm>,
) -> Result<Response, WebError> {
    task_path(&task)?;
    let paused = form.paused == "1";
    let result = app
        .client()
        .set_paused(SetPausedRequest {
            task: task.clone(),
            paused,
        })
        .await;
    let flash = outcome(ctx.lang, result, |_| match (ctx.lang, paused) {
        (Lang::En, true) => format!("{task} paused"),
        (Lang::En, false) => format!("{task} unpaused"),
        (Lang::Zh, true) => format!("{task} 已暂停"),
        (Lang::Zh, false) => format!("{task} 已恢复"),
    });
    Ok(flash.redirect(&format!("/tasks/{task}")))
}

#[derive(Debug, Deserialize)]
pub struct RunForm {
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    down: String,
    #[serde(default)]
    confirmed: String,
}

/// `POST /tasks/{id}/run`: one day (`from` only) or a range, optionally with everything
/// downstream. A range confirms, naming how many instances it would run (a dry run first).
pub async fn run(
    app: AppState,
    ctx: Ctx,
    Path(task): Path<String>,
    Form(form): Form<RunForm>,
) -> Result<Response, WebError> {
    task_path(&task)?;
    let from = crate::pages::task::form_day("from", &form.from)?;
    let to = if form.to.trim().is_empty() {
        from
    } else {
        crate::pages::task::form_day("to", &form.to)?
    };
    let down = form.down == "1";
    let request = RunRequest {
        task: task.clone(),
        from_day: from.compact(),
        to_day: to.compact(),
        down,
        ..Default::default()
    };
    let mut client = app.client();
    let page = format!("/tasks/{task}");
    if form.confirmed != "1" && from != to {
        let preview = client
            .run(RunRequest {
                dry_run: true,
                ..request.clone()
            })
            .await;
        let (count, new) = match preview {
            Ok(r) => {
                let instances = r.into_inner().instances;
                (instances.len(), instances.iter().filter(|i| i.id == 0).count())
            }
            Err(status) => return Ok(outcome::<()>(ctx.lang, Err(status), |_| String::new()).redirect(&page)),
        };
        let fields = [
            ("from", from.compact()),
            ("to", to.compact()),
            ("down", form.down.clone()),
        ]
        .into_iter()
        .map(|(name, value)| HiddenField {
            name: name.into(),
            value,
        })
        .collect();
        return Ok(ConfirmPage {
            title: format!(
                "{}{}{task} {}..{}",
                ctx.t.backfill,
                ctx.t.colon,
                from.dashed(),
                to.dashed()
            ),
            question: format!(
                "{} · {} … {}",
                preview_summary(ctx.lang, count, new),
                from.dashed(),
                to.dashed()
            ),
            post_to: format!("{page}/run"),
            fields,
            cancel_to: page,
            danger: count > RANGE_CONFIRM_ABOVE,
            ctx,
        }
        .into_response());
    }
    let lang = ctx.lang;
    if from != to {
        // A range is a backfill (issue 19): watched, paused and cancelled on its page.
        let started = client
            .start_backfill(StartBackfillRequest {
                task: task.clone(),
                from_day: from.compact(),
                to_day: to.compact(),
                down,
                ..Default::default()
            })
            .await;
        return Ok(match started {
            Ok(b) => {
                let b = b.into_inner();
                let message = format!("{task}{}{}", ctx.t.colon, translate::say(lang, &b.message));
                super::Flash::ok(message).redirect(&format!("/backfills#backfill-{}", b.id))
            }
            Err(status) => outcome::<()>(lang, Err(status), |_| String::new()).redirect(&page),
        });
    }
    let result = client.run(request).await;
    Ok(outcome(lang, result, |r| {
        format!(
            "{task}{}{}",
            ctx.t.colon,
            translate::say(lang, &r.into_inner().message)
        )
    })
    .redirect(&page))
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirmed: String,
}

/// `POST /tasks/{id}/delete`: removes the definition (its instances stay readable). The
/// coordinator refuses while other tasks depend on it, naming them.
pub async fn delete(
    app: AppState,
    ctx: Ctx,
    Path(task): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, WebError> {
    task_path(&task)?;
    let page = format!("/tasks/{task}");
    if form.confirmed != "1" {
        return Ok(ConfirmPage {
            title: format!("{}{}{task}", ctx.t.delete_task, ctx.t.colon),
            question: ctx.t.delete_task_help.to_string(),
            post_to: format!("{page}/delete"),
            fields: vec![],
            cancel_to: page,
            danger: true,
            ctx,
        }
        .into_response());
    }
    let result = app
        .client()
        .delete_tasks(DeleteTasksRequest {
            ids: vec![task.clone()],
            dry_run: false,
        })
        .await;
    match result {
        Ok(response) => {
            let message = translate::say(ctx.lang, &response.into_inner().message);
            Ok(super::Flash::ok(message).redirect("/tasks"))
        }
        Err(status) => Ok(outcome::<()>(ctx.lang, Err(status), |_| String::new()).redirect(&page)),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{post, sample};

    #[tokio::test]
    async fn pause_run_and_delete_call_the_coordinator() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(&app, "/tasks/extract/pause", &[("paused", "1")], true).await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/tasks/extract")
        );
        assert_eq!(answer.flash(), "ok.extract paused");
        let answer = post(
            &app,
            "/tasks/extract/run",
            &[("from", "2026-01-10"), ("down", "1")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER);
        let answer = post(&app, "/tasks/extract/delete", &[("confirmed", "1")], true).await;
        assert_eq!(answer.location, "/tasks");
        assert_eq!(answer.flash(), "ok.deleted extract");
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                "SetPaused extract true",
                "Run extract@20260110..20260110 down",
                "DeleteTasks extract"
            ]
        );
    }

    #[tokio::test]
    async fn a_range_asks_first_with_the_count_of_a_dry_run() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(
            &app,
            "/tasks/extract/run",
            &[("from", "20260101"), ("to", "20260110")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("This would run 2"), "{}", answer.body);
        assert_eq!(
            *calls.lock().unwrap(),
            vec!["Run extract@20260101..20260110 dry_run"]
        );
        let answer = post(
            &app,
            "/tasks/extract/run",
            &[("from", "20260101"), ("to", "20260110"), ("confirmed", "1")],
            true,
        )
        .await;
        // A range is a backfill, and its page shows it (issue 19).
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/backfills#backfill-7")
        );
        assert_eq!(
            calls.lock().unwrap().last().unwrap(),
            "StartBackfill extract@20260101..20260110"
        );
    }

    #[tokio::test]
    async fn a_refused_delete_says_why_on_the_task_page() {
        let mut fake = sample();
        fake.refuse = Some("cannot delete: transform depends on extract".into());
        let app = fake.start().await;
        let answer = post(&app, "/tasks/extract/delete", &[("confirmed", "1")], true).await;
        assert_eq!(answer.location, "/tasks/extract");
        assert_eq!(answer.flash(), "no.cannot delete: transform depends on extract");
    }
}

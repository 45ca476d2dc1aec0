//! Creating and changing tasks from the browser: the edit form (errors shown next to their
//! field, with the same messages as `goflowctl apply`, since the form becomes a DAG document
//! that goes through the same parser and the same ApplyTasks call), YAML import with a preview
//! of every changed field, and YAML export.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use goflow_core::dag::is_valid_task_id;
use goflow_core::dagfile;
use goflow_proto::{
    ApplyTasksRequest, Calendar, FieldChange, GetTaskRequest, ListCalendarsRequest, ListPoolsRequest,
    ListTasksRequest, Pool,
};
use serde::Deserialize;
use tonic::Code;

use crate::AppState;
use crate::context::{Ctx, Flash};
use crate::error::WebError;
use crate::i18n::Lang;
use crate::translate;
use crate::yaml::{TaskForm, export, field_of};

#[derive(Template, WebTemplate)]
#[template(path = "pages/edit.html")]
pub struct EditPage {
    ctx: Ctx,
    /// Empty for a new task.
    editing: String,
    form: TaskForm,
    errors: Vec<(&'static str, String)>,
    /// Errors that name no field.
    general: Vec<String>,
}

impl EditPage {
    /// The message for one field, for the template; empty when the field is fine.
    fn error(&self, field: &str) -> &str {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map_or("", |(_, m)| m.as_str())
    }
}

fn check_id(id: &str) -> Result<(), WebError> {
    if is_valid_task_id(id) {
        Ok(())
    } else {
        Err(WebError::bad_parameter(
            "task",
            format!("{id:?} is not a task id"),
        ))
    }
}

/// The edit and import forms are for editors: a viewer or an operator who types their address
/// is told so at once rather than after filling them in (the coordinator refuses the save
/// anyway).
fn editors_only(ctx: &Ctx) -> Result<(), WebError> {
    if ctx.may_edit() {
        Ok(())
    } else {
        Err(WebError::Denied(
            "changing task definitions needs the editor role".into(),
        ))
    }
}

/// `GET /tasks/new`.
pub async fn new_form(ctx: Ctx) -> Result<EditPage, WebError> {
    editors_only(&ctx)?;
    Ok(EditPage {
        ctx,
        editing: String::new(),
        form: TaskForm::blank(),
        errors: vec![],
        general: vec![],
    })
}

/// `GET /tasks/{id}/edit`.
pub async fn edit_form(app: AppState, ctx: Ctx, Path(id): Path<String>) -> Result<EditPage, WebError> {
    check_id(&id)?;
    editors_only(&ctx)?;
    let task = app
        .client()
        .get_task(GetTaskRequest { id: id.clone() })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    Ok(EditPage {
        ctx,
        editing: id,
        form: TaskForm::from_task(&task),
        errors: vec![],
        general: vec![],
    })
}

/// `POST /tasks/new`.
pub async fn create(app: AppState, ctx: Ctx, Form(form): Form<TaskForm>) -> Result<Response, WebError> {
    save(app, ctx, String::new(), form).await
}

/// `POST /tasks/{id}/edit`: the id is the one being edited (renaming is creating).
pub async fn update(
    app: AppState,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(mut form): Form<TaskForm>,
) -> Result<Response, WebError> {
    check_id(&id)?;
    form.id = id.clone();
    save(app, ctx, id, form).await
}

async fn save(app: AppState, ctx: Ctx, editing: String, form: TaskForm) -> Result<Response, WebError> {
    let refuse = |ctx: Ctx, form: TaskForm, field: &'static str, message: String| {
        let message = translate::say(ctx.lang, &message);
        let (errors, general) = if field.is_empty() {
            (vec![], vec![message])
        } else {
            (vec![(field, message)], vec![])
        };
        EditPage {
            ctx,
            editing: editing.clone(),
            form,
            errors,
            general,
        }
        .into_response()
    };
    let document = match form.to_document() {
        Ok(document) => document,
        Err((field, message)) => return Ok(refuse(ctx, form, field, message)),
    };
    // A task of a DAG stays in it: the form's document names that DAG (the coordinator
    // refuses a document that would take the task out of its DAG). DAG names are plain ids.
    let document = match editing.is_empty() {
        true => document,
        false => match app
            .client()
            .get_task(GetTaskRequest { id: editing.clone() })
            .await
        {
            Ok(task) if !task.get_ref().dag.is_empty() => {
                format!("dag: {}\n{document}", task.into_inner().dag)
            }
            _ => document,
        },
    };
    // The same parser as the coordinator's apply: the same messages, before a round trip.
    if let Err(error) = dagfile::parse(&document, "edit form") {
        let message = error.to_string();
        return Ok(refuse(ctx, form, field_of(&message), message));
    }
    let result = app
        .client()
        .apply_tasks(ApplyTasksRequest {
            document,
            source_name: "edit form".into(),
            dry_run: false,
            prune: false,
        })
        .await;
    match result {
        Ok(answer) => {
            let answer = answer.into_inner();
            let created = !answer.created.is_empty();
            let id = form.id.trim();
            let said = match (ctx.lang, created) {
                (Lang::En, true) => format!("{id} created"),
                (Lang::En, false) => format!("{id} updated"),
                (Lang::Zh, true) => format!("已创建 {id}"),
                (Lang::Zh, false) => format!("已更新 {id}"),
            };
            Ok(Flash::ok(said).redirect(&format!("/tasks/{id}")))
        }
        // Graph checks (unknown upstream, a cycle) only the coordinator can make.
        Err(status) if status.code() == Code::InvalidArgument => {
            let message = status.message().to_string();
            Ok(refuse(ctx, form, field_of(&message), message))
        }
        Err(status) => Err(app.fail(status)),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/import.html")]
pub struct ImportPage {
    ctx: Ctx,
    document: String,
    error: String,
    preview: Option<ImportPreview>,
}

struct ImportPreview {
    created: Vec<String>,
    updated: Vec<String>,
    unchanged: usize,
    changes: Vec<FieldChange>,
}

/// `GET /import`.
pub async fn import_form(ctx: Ctx) -> Result<ImportPage, WebError> {
    editors_only(&ctx)?;
    Ok(ImportPage {
        ctx,
        document: String::new(),
        error: String::new(),
        preview: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct ImportForm {
    document: String,
    /// `preview` (a dry run showing every changed field) or `apply`.
    #[serde(default)]
    mode: String,
}

/// `POST /import`.
pub async fn import(app: AppState, ctx: Ctx, Form(form): Form<ImportForm>) -> Result<Response, WebError> {
    let dry_run = form.mode != "apply";
    let result = app
        .client()
        .apply_tasks(ApplyTasksRequest {
            document: form.document.clone(),
            source_name: "imported document".into(),
            dry_run,
            prune: false,
        })
        .await;
    match result {
        Ok(answer) if dry_run => {
            let answer = answer.into_inner();
            Ok(ImportPage {
                ctx,
                document: form.document,
                error: String::new(),
                preview: Some(ImportPreview {
                    created: answer.created,
                    updated: answer.updated,
                    unchanged: answer.unchanged.len(),
                    changes: answer.changes,
                }),
            }
            .into_response())
        }
        Ok(answer) => {
            let answer = answer.into_inner();
            let (created, updated, unchanged) =
                (answer.created.len(), answer.updated.len(), answer.unchanged.len());
            let said = match ctx.lang {
                Lang::En => format!("created {created}, updated {updated}, unchanged {unchanged}"),
                Lang::Zh => format!("新建 {created} 个，更新 {updated} 个，未变 {unchanged} 个"),
            };
            Ok(Flash::ok(said).redirect("/tasks"))
        }
        Err(status) if status.code() == Code::InvalidArgument => Ok(ImportPage {
            error: translate::say(ctx.lang, status.message()),
            ctx,
            document: form.document,
            preview: None,
        }
        .into_response()),
        Err(status) => Err(app.fail(status)),
    }
}

fn yaml_download(name: &str, document: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/yaml; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        document,
    )
        .into_response()
}

/// `GET /tasks/{id}/yaml`: one task as a DAG document.
pub async fn export_task(app: AppState, Path(id): Path<String>) -> Result<Response, WebError> {
    check_id(&id)?;
    let task = app
        .client()
        .get_task(GetTaskRequest { id: id.clone() })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let (calendars, pools) = calendars_and_pools(&app).await?;
    Ok(yaml_download(
        &format!("{id}.yaml"),
        export(&[task], &calendars, &pools),
    ))
}

/// `GET /export.yaml`: every task, in dependency order, as one DAG document.
pub async fn export_all(app: AppState) -> Result<Response, WebError> {
    let tasks = app
        .client()
        .list_tasks(ListTasksRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .tasks;
    let (calendars, pools) = calendars_and_pools(&app).await?;
    Ok(yaml_download(
        "goflow-tasks.yaml",
        export(&tasks, &calendars, &pools),
    ))
}

/// The stored calendars and pools, for an export to carry the ones its tasks name.
async fn calendars_and_pools(app: &AppState) -> Result<(Vec<Calendar>, Vec<Pool>), WebError> {
    let (mut calendars, mut pools) = (app.client(), app.client());
    let (calendars, pools) = tokio::try_join!(
        calendars.list_calendars(ListCalendarsRequest {}),
        pools.list_pools(ListPoolsRequest {}),
    )
    .map_err(|status| app.fail(status))?;
    Ok((calendars.into_inner().calendars, pools.into_inner().pools))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, post, sample};

    #[tokio::test]
    async fn the_edit_form_is_filled_with_the_definition() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks/transform/edit").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("transform.sh {{etl_day}}</textarea>"));
        assert!(body.contains(">extract -1</textarea>"));
        // Its limits are fields too, so that saving keeps them.
        assert!(body.contains(r#"id="f-pool" name="pool" value="""#), "{body}");
        assert!(
            body.contains(r#"id="f-max_active" name="max_active" value="""#),
            "{body}"
        );
        // The catchup policy is a choice of three, the stored one selected.
        let (_, body) = get(&app, "/tasks/extract/edit").await;
        assert!(
            body.contains(r#"<option value="all" selected>all: every missed fire, oldest first</option>"#),
            "{body}"
        );
        assert!(body.contains(r#"<option value="latest">"#), "{body}");
    }

    #[tokio::test]
    async fn errors_are_shown_next_to_their_field_and_nothing_is_applied() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(
            &app,
            "/tasks/new",
            &[("id", "x"), ("command", "run.sh"), ("schedule", "every day")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer
                .body
                .contains(r#"<span class="field-error" id="error-schedule">"#),
            "{}",
            answer.body
        );
        assert!(answer.body.contains("every day"), "the input is kept");
        assert!(calls.lock().unwrap().is_empty(), "refused before any call");
        // The coordinator's graph checks come back next to depends_on.
        let answer = post(
            &app,
            "/tasks/new",
            &[("id", "x"), ("command", "run.sh"), ("depends_on", "nope")],
            true,
        )
        .await;
        assert!(answer.body.contains(r#"id="error-depends_on">edit form: task &#34;x&#34; depends on unknown task &#34;nope&#34;"#)
            || answer.body.contains(r#"id="error-depends_on">edit form: task &quot;x&quot; depends on unknown task &quot;nope&quot;"#), "{}", answer.body);
    }

    #[tokio::test]
    async fn a_valid_form_is_applied_as_a_document_and_redirects() {
        let fake = sample();
        let calls = fake.calls.clone();
        let app = fake.start().await;
        let answer = post(
            &app,
            "/tasks/transform/edit",
            &[
                ("command", "transform.sh --all"),
                ("depends_on", "extract -1"),
                ("timezone", "UTC"),
            ],
            true,
        )
        .await;
        assert_eq!(
            (answer.status, answer.location.as_str()),
            (StatusCode::SEE_OTHER, "/tasks/transform")
        );
        let call = calls.lock().unwrap()[0].clone();
        assert!(
            // transform belongs to DAG shop: the document keeps it there.
            call.starts_with("ApplyTasks dry_run=false dag: shop\ntasks:\n- id: transform\n"),
            "{call}"
        );
        assert!(
            call.contains("command: transform.sh --all") && call.contains("day_offset: -1"),
            "{call}"
        );
    }

    #[tokio::test]
    async fn import_previews_the_changed_fields() {
        let app = sample().start().await;
        let answer = post(
            &app,
            "/import",
            &[("document", "tasks: []"), ("mode", "preview")],
            true,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.body.contains("<td>transform</td><td>command</td>"),
            "{}",
            answer.body
        );
        let (status, yaml) = get(&app, "/export.yaml").await;
        assert_eq!(status, StatusCode::OK);
        assert!(yaml.contains("- id: transform") && yaml.contains("- id: extract"));
    }
}

//! `/tasks`: every task with its schedule, dependencies and next fire.

use askama::Template;
use askama_web::WebTemplate;
use goflow_proto::{ListTasksRequest, Task, TaskDependency};

use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::view;

#[derive(Template, WebTemplate)]
#[template(path = "pages/tasks.html")]
pub struct TasksPage {
    ctx: Ctx,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    description: String,
    schedule: String,
    timezone: String,
    day_offset: i32,
    depends_on: Vec<TaskDependency>,
    queue: String,
    priority: i32,
    paused: bool,
    next_fire: String,
}

pub async fn page(app: AppState, ctx: Ctx) -> Result<TasksPage, WebError> {
    let mut tasks = app
        .client()
        .list_tasks(ListTasksRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .tasks;
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(TasksPage {
        ctx,
        rows: tasks.into_iter().map(Row::from).collect(),
    })
}

impl From<Task> for Row {
    fn from(t: Task) -> Self {
        Self {
            next_fire: view::time(t.next_fire_at),
            id: t.id,
            description: t.description,
            schedule: t.schedule,
            timezone: t.timezone,
            day_offset: t.day_offset,
            depends_on: t.depends_on,
            queue: t.queue,
            priority: t.priority,
            paused: t.paused,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::testing::{get, sample};

    #[tokio::test]
    async fn lists_tasks_sorted_with_schedule_dependencies_and_next_fire() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/tasks").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let extract = body.find("id=\"task-extract\"").unwrap();
        let transform = body.find("id=\"task-transform\"").unwrap();
        assert!(extract < transform, "sorted by id");
        assert!(body.contains("30 2 * * *") && body.contains("Europe/Berlin"));
        assert!(body.contains("2026-01-11 01:30:00"), "next fire in UTC");
        assert!(body.contains("<a href=\"/tasks/extract\">extract</a> <span class=\"muted\">(-1d)</span>"));
        assert!(body.contains("<span class=\"flag warn\">paused</span>"));
        assert!(body.contains("class=\"active\">Tasks</a>"));
    }

    #[tokio::test]
    async fn no_tasks_says_how_to_add_some() {
        let mut fake = sample();
        fake.tasks.clear();
        let (status, body) = get(&fake.start().await, "/tasks").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("No tasks yet"));
    }
}

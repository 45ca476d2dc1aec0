//! `goflowctl tasks [-o json]`

use std::io::Write;

use clap::Args;
use goflow_proto::{ListTasksRequest, Task, TaskDependency};
use serde_json::{Value, json};

use crate::{
    Client,
    output::{self, Format},
};

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &mut Client, args: &TasksArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let tasks = client.list_tasks(ListTasksRequest {}).await?.into_inner().tasks;
    match args.output {
        Format::Json => output::write_json_array(out, tasks.iter().map(to_json).collect())?,
        Format::Table if tasks.is_empty() => writeln!(out, "no tasks")?,
        Format::Table => out.write_all(render_table(&tasks).as_bytes())?,
    }
    Ok(())
}

/// `a, b(-1)`: upstream tasks, with their day offset when not the same day.
pub fn depends_on(deps: &[TaskDependency]) -> String {
    deps.iter()
        .map(|d| match d.day_offset {
            0 => d.task.clone(),
            n => format!("{}({n:+})", d.task),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render_table(tasks: &[Task]) -> String {
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.schedule.clone(),
                t.timezone.clone(),
                t.day_offset.to_string(),
                depends_on(&t.depends_on),
                t.queue.clone(),
                t.priority.to_string(),
                // The number in force, the coordinator's default included.
                t.retries_in_force.to_string(),
                output::yes(t.paused),
                output::local_time_zoned(t.next_fire_at),
            ]
        })
        .collect();
    output::table(
        [
            "ID",
            "SCHEDULE",
            "TZ",
            "OFFSET",
            "DEPENDS_ON",
            "QUEUE",
            "PRIORITY",
            "RETRIES",
            "PAUSED",
            "NEXT_FIRE",
        ],
        rows,
    )
}

pub fn to_json(t: &Task) -> Value {
    let opt = |s: &str| {
        if s.is_empty() { Value::Null } else { Value::from(s) }
    };
    json!({
        "id": t.id,
        "command": t.command,
        "schedule": opt(&t.schedule),
        "timezone": t.timezone,
        "day_offset": t.day_offset,
        "depends_on": t.depends_on.iter()
            .map(|d| json!({"task": d.task, "day_offset": d.day_offset, "calendar": opt(&d.calendar)}))
            .collect::<Vec<_>>(),
        "retries": t.retries,
        "retries_in_force": t.retries_in_force,
        "retry_delay_ms": t.retry_delay_ms,
        "timeout_ms": if t.timeout_ms == 0 { Value::Null } else { Value::from(t.timeout_ms) },
        "priority": t.priority,
        "queue": t.queue,
        "start_day": opt(&t.start_day),
        "description": t.description,
        "paused": t.paused,
        "created_at": output::json_time(t.created_at),
        "updated_at": output::json_time(t.updated_at),
        "next_fire_at": output::json_time(t.next_fire_at),
        "expected_duration_ms": if t.expected_duration_ms == 0 { Value::Null } else { Value::from(t.expected_duration_ms) },
        "deadline": opt(&t.deadline),
        "period": if t.period.is_empty() { "day" } else { t.period.as_str() },
        "calendar": opt(&t.calendar),
        "catchup": t.catchup,
        "dag": opt(&t.dag),
        "version": t.version,
        "pool": opt(&t.pool),
        "max_active": if t.max_active == 0 { Value::Null } else { Value::from(t.max_active) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: "load".into(),
            command: "load.sh {{etl_day}}".into(),
            schedule: "0 2 * * *".into(),
            timezone: "UTC".into(),
            day_offset: -1,
            retries: 2,
            priority: 5,
            queue: "default".into(),
            depends_on: vec![
                TaskDependency {
                    task: "a".into(),
                    day_offset: 0,
                    ..Default::default()
                },
                TaskDependency {
                    task: "b".into(),
                    day_offset: -1,
                    ..Default::default()
                },
            ],
            paused: true,
            retries_in_force: 2,
            next_fire_at: 1_767_225_600_000,
            ..Default::default()
        }
    }

    #[test]
    fn depends_on_shows_offsets() {
        assert_eq!(depends_on(&task().depends_on), "a, b(-1)");
        assert_eq!(depends_on(&[]), "");
    }

    #[test]
    fn table_columns() {
        let text = render_table(&[task()]);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "ID",
                "SCHEDULE",
                "TZ",
                "OFFSET",
                "DEPENDS_ON",
                "QUEUE",
                "PRIORITY",
                "RETRIES",
                "PAUSED",
                "NEXT_FIRE"
            ]
        );
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("load   0 2 * * *   UTC   -1       a, b(-1)"),
            "{row}"
        );
        // The retries in force (the task names none: the coordinator's default), and the next
        // fire with its zone's offset.
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[7], "2", "{row}");
        assert_eq!(cells[8], "yes", "{row}");
        let offset = regex_like_offset(cells[9]);
        assert!(offset, "NEXT_FIRE has a zone offset: {row}");
    }

    /// `... +08:00` or `... -05:30`.
    fn regex_like_offset(cell: &str) -> bool {
        let Some(zone) = cell.rsplit(' ').next() else {
            return false;
        };
        let b = zone.as_bytes();
        b.len() == 6 && (b[0] == b'+' || b[0] == b'-') && b[3] == b':'
    }

    #[test]
    fn json_fields() {
        let v = to_json(&task());
        assert_eq!(v["id"], "load");
        assert_eq!(
            v["depends_on"][1],
            json!({"task": "b", "day_offset": -1, "calendar": null})
        );
        assert_eq!(
            (v["period"].as_str(), v["calendar"].is_null()),
            (Some("day"), true)
        );
        assert_eq!(v["next_fire_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["retries"], 2);
        assert_eq!(v["retries_in_force"], 2);
        assert_eq!(v["timeout_ms"], Value::Null);
        assert_eq!(v["paused"], true);
    }
}

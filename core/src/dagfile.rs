//! The DAG file: YAML (JSON is accepted, being YAML too), parsed into validated `TaskSpec`s.
//! Errors name the task, the field and, where the parser knows it, the line.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::dag::{Dependency, TaskSpec, is_valid_task_id};
use crate::deadline::Deadline;
use crate::schedule::{Schedule, parse_timezone};
use crate::{EtlDay, template};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct DagFileError {
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: String,
    command: String,
    schedule: Option<String>,
    timezone: Option<String>,
    day_offset: Option<i32>,
    retries: Option<u32>,
    retry_delay: Option<RawDuration>,
    timeout: Option<RawDuration>,
    priority: Option<i32>,
    queue: Option<String>,
    start_day: Option<EtlDay>,
    description: Option<String>,
    #[serde(default)]
    depends_on: Vec<RawDependency>,
    expected_duration: Option<RawDuration>,
    deadline: Option<RawDeadline>,
}

/// `{time: "08:00", timezone: Asia/Shanghai, day_offset: 1}` or `"08:00 Asia/Shanghai +1"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDeadline {
    Text(String),
    Fields(RawDeadlineFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadlineFields {
    time: String,
    timezone: Option<String>,
    day_offset: Option<i32>,
}

/// `30s`, `10m`, `1h 30m`, or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDependency {
    Same(String),
    WithOffset(RawOffsetDependency),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffsetDependency {
    task: String,
    #[serde(default)]
    day_offset: i32,
}

/// Everything one DAG document declares. Top-level sections besides `tasks:` (calendars, pools,
/// the DAG's own name) are fields here, so an apply stores them in the same transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DagFile {
    pub tasks: Vec<TaskSpec>,
}

/// Parses and validates a DAG document. Graph checks (unknown upstreams, cycles) need the
/// tasks already stored too, so they happen in `Dag::new` on the merged set.
pub fn parse(document: &str, source_name: &str) -> Result<DagFile, DagFileError> {
    let fail = |message: String| DagFileError {
        source_name: source_name.to_string(),
        message,
    };
    if document.trim().is_empty() {
        return Err(fail("the document is empty (expected a `tasks:` list)".into()));
    }
    let doc: Document = serde_norway::from_str(document).map_err(|e| fail(e.to_string()))?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut specs = Vec::with_capacity(doc.tasks.len());
    // Where a task is declared is looked up only for the one error reported: a scan of the
    // document per task made an apply's cost grow with the square of its tasks.
    for (index, raw) in doc.tasks.into_iter().enumerate() {
        if let Some(first) = seen.insert(raw.id.clone(), index) {
            return Err(fail(format!(
                "duplicate task id {:?}: tasks[{first}] and tasks[{index}]{}",
                raw.id,
                line_suffix(document, &raw.id, 2)
            )));
        }
        let id = raw.id.clone();
        let spec = validate(raw)
            .map_err(|message| fail(format!("{}: {message}", describe(document, index, &id))))?;
        specs.push(spec);
    }
    Ok(DagFile { tasks: specs })
}

fn validate(raw: RawTask) -> Result<TaskSpec, String> {
    if !is_valid_task_id(&raw.id) {
        return Err(format!(
            "id {:?} must match [A-Za-z0-9_.-]+ (at most 128 bytes, and not `.` or `..`)",
            raw.id
        ));
    }
    if raw.command.trim().is_empty() {
        return Err("command is empty".into());
    }
    template::check(&raw.command).map_err(|e| format!("command: {e}"))?;
    let timezone = raw.timezone.unwrap_or_else(|| "UTC".into());
    parse_timezone(&timezone).map_err(|e| format!("timezone: {e}"))?;
    let day_offset = raw.day_offset.unwrap_or(-1);
    if !(-3660..=3660).contains(&day_offset) {
        return Err(format!("day_offset {day_offset} is out of range (-3660..=3660)"));
    }
    let schedule = match raw
        .schedule
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        Some(expr) => {
            Schedule::parse(&expr, &timezone, day_offset).map_err(|e| format!("schedule: {e}"))?;
            Some(expr)
        }
        None => None,
    };
    let queue = raw.queue.unwrap_or_else(|| "default".into());
    if !is_valid_task_id(&queue) {
        return Err(format!("queue {queue:?} must match [A-Za-z0-9_.-]+"));
    }
    let depends_on = raw
        .depends_on
        .into_iter()
        .map(|d| match d {
            RawDependency::Same(task) => Dependency { task, day_offset: 0 },
            RawDependency::WithOffset(d) => Dependency {
                task: d.task,
                day_offset: d.day_offset,
            },
        })
        .collect::<Vec<_>>();
    for dep in &depends_on {
        if !is_valid_task_id(&dep.task) {
            return Err(format!("depends_on: {:?} is not a valid task id", dep.task));
        }
    }
    let deadline = match raw.deadline {
        None => None,
        Some(RawDeadline::Text(text)) => Some(Deadline::parse(&text, &timezone)),
        Some(RawDeadline::Fields(f)) => Some(Deadline::new(
            &f.time,
            f.timezone.as_deref().unwrap_or(&timezone),
            f.day_offset.unwrap_or(1),
        )),
    }
    .transpose()
    .map_err(|e| format!("deadline: {e}"))?;
    let expected_duration = raw
        .expected_duration
        .map(|d| duration("expected_duration", d))
        .transpose()?
        .filter(|d| !d.is_zero());
    Ok(TaskSpec {
        id: raw.id,
        command: raw.command,
        schedule,
        timezone,
        day_offset,
        retries: raw.retries,
        retry_delay: raw.retry_delay.map(|d| duration("retry_delay", d)).transpose()?,
        timeout: raw
            .timeout
            .map(|d| duration("timeout", d))
            .transpose()?
            .filter(|d| !d.is_zero()),
        priority: raw.priority.unwrap_or(0),
        queue,
        start_day: raw.start_day,
        description: raw.description.unwrap_or_default(),
        depends_on,
        expected_duration,
        deadline,
    })
}

fn duration(field: &str, raw: RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(s) => Ok(Duration::from_secs(s)),
        RawDuration::Text(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("{field} {text:?}: {e} (write e.g. 30s, 10m, 1h)")),
    }
}

/// `task "x" (tasks[3], line 12)`.
fn describe(document: &str, index: usize, id: &str) -> String {
    match line_of(document, id, 1) {
        Some(line) => format!("task {id:?} (tasks[{index}], line {line})"),
        None => format!("task {id:?} (tasks[{index}])"),
    }
}

fn line_suffix(document: &str, id: &str, nth: usize) -> String {
    line_of(document, id, nth)
        .map(|n| format!(" (line {n})"))
        .unwrap_or_default()
}

/// The line number of the `nth` line that declares `id: <id>`, if one is found.
fn line_of(document: &str, id: &str, nth: usize) -> Option<usize> {
    let declares = |line: &str| {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(value) = line.strip_prefix("id:").or_else(|| line.strip_prefix("\"id\":")) else {
            return false;
        };
        value
            .trim()
            .trim_end_matches(',')
            .trim_matches(|c| c == '"' || c == '\'')
            == id
    };
    document
        .lines()
        .enumerate()
        .filter(|(_, line)| declares(line))
        .nth(nth - 1)
        .map(|(n, _)| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(doc: &str) -> Vec<TaskSpec> {
        parse(doc, "dag.yaml").unwrap_or_else(|e| panic!("{e}")).tasks
    }

    fn parse_err(doc: &str) -> String {
        parse(doc, "dag.yaml").unwrap_err().to_string()
    }

    #[test]
    fn reads_every_field_with_defaults() {
        let specs = parse_ok(
            r#"
tasks:
  - id: extract_orders
    command: "python3 extract.py --day {{etl_day}}"
    schedule: "30 2 * * *"
    timezone: "Asia/Shanghai"
    day_offset: -1
    retries: 3
    retry_delay: 30s
    timeout: 10m
    priority: 5
    queue: etl
    start_day: 20260101
    description: "orders from the shop"
  - id: load_orders
    command: "sh load.sh {{etl_day}}"
    depends_on: [extract_orders, {task: extract_orders, day_offset: -1}]
"#,
        );
        let (a, b) = (&specs[0], &specs[1]);
        assert_eq!(a.schedule.as_deref(), Some("30 2 * * *"));
        assert_eq!(a.timezone, "Asia/Shanghai");
        assert_eq!(a.retries, Some(3));
        assert_eq!(a.retry_delay, Some(Duration::from_secs(30)));
        assert_eq!(a.timeout, Some(Duration::from_secs(600)));
        assert_eq!((a.priority, a.queue.as_str()), (5, "etl"));
        assert_eq!(a.start_day.unwrap().compact(), "20260101");
        assert_eq!(b.schedule, None);
        assert_eq!(
            (b.timezone.as_str(), b.day_offset, b.queue.as_str()),
            ("UTC", -1, "default")
        );
        assert_eq!(b.retries, None);
        assert_eq!(
            b.depends_on,
            [
                Dependency {
                    task: "extract_orders".into(),
                    day_offset: 0
                },
                Dependency {
                    task: "extract_orders".into(),
                    day_offset: -1
                }
            ]
        );
    }

    #[test]
    fn json_is_accepted() {
        let specs = parse_ok(r#"{"tasks": [{"id": "a", "command": "true", "timeout": 5}]}"#);
        assert_eq!(specs[0].timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let err = parse_err("tasks:\n  - id: a\n    command: \"true\"\n    schedual: \"* * * * *\"\n");
        assert!(err.contains("schedual"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(parse_err("tasks: []\nextra: 1\n").contains("extra"));
    }

    #[test]
    fn bad_values_name_task_field_and_line() {
        let err = parse_err(
            "tasks:\n  - id: a\n    command: x\n  - id: b\n    command: x\n    schedule: \"99 * * * *\"\n",
        );
        assert!(
            err.starts_with("dag.yaml: task \"b\" (tasks[1], line 4): schedule: bad cron expression"),
            "{err}"
        );
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    timezone: Nowhere/Town\n");
        assert!(err.contains("timezone") && err.contains("Nowhere/Town"), "{err}");
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    retry_delay: soon\n");
        assert!(err.contains("retry_delay \"soon\""), "{err}");
        let err = parse_err("tasks:\n  - id: \"a b\"\n    command: x\n");
        assert!(err.contains("must match"), "{err}");
        let err = parse_err("tasks:\n  - id: a\n    command: \"echo {{etl_dya}}\"\n");
        assert!(err.contains("etl_dya"), "{err}");
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    start_day: 2026-02-30\n");
        assert!(err.contains("2026-02-30"), "{err}");
    }

    #[test]
    fn deadline_and_expected_duration() {
        let specs = parse_ok(
            "tasks:\n  - id: a\n    command: x\n    timezone: Asia/Shanghai\n    expected_duration: 30m\n    deadline: {time: \"08:00\", day_offset: 1}\n  - id: b\n    command: x\n    deadline: \"07:30 Europe/Berlin +0\"\n",
        );
        assert_eq!(specs[0].expected_duration, Some(Duration::from_secs(1800)));
        assert_eq!(
            specs[0].deadline.as_ref().unwrap().to_string(),
            "08:00 Asia/Shanghai +1"
        );
        assert_eq!(
            specs[1].deadline.as_ref().unwrap().to_string(),
            "07:30 Europe/Berlin +0"
        );
        assert_eq!(specs[1].expected_duration, None);
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    deadline: {time: \"8 o'clock\"}\n");
        assert!(
            err.contains("task \"a\" (tasks[0], line 2): deadline: time"),
            "{err}"
        );
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    deadline: \"08:00 Nowhere/Town\"\n");
        assert!(
            err.contains("deadline: timezone") && err.contains("Nowhere/Town"),
            "{err}"
        );
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    expected_duration: forever\n");
        assert!(err.contains("expected_duration \"forever\""), "{err}");
    }

    #[test]
    fn dot_ids_are_refused() {
        for id in [".", ".."] {
            let err = parse_err(&format!("tasks:\n  - id: \"{id}\"\n    command: x\n"));
            assert!(err.contains("not `.` or `..`"), "{err}");
            let err = parse_err(&format!(
                "tasks:\n  - id: a\n    command: x\n    depends_on: [\"{id}\"]\n"
            ));
            assert!(err.contains("not a valid task id"), "{err}");
        }
    }

    /// The probe's 20,000-task apply took 45 s in `parse` alone (a rescan per task); the line
    /// is now looked up only for the error reported, and must still be right.
    #[test]
    fn a_large_document_parses_and_errors_still_name_their_line() {
        let doc = big_document(3000);
        assert_eq!(parse_ok(&doc).len(), 3000);
        let bad = format!("{doc}  - id: late\n    command: x\n    timezone: Nowhere/Town\n");
        let err = parse_err(&bad);
        assert!(err.contains("task \"late\" (tasks[3000], line 9002)"), "{err}");
    }

    fn big_document(n: usize) -> String {
        let mut doc = String::from("tasks:\n");
        for i in 0..n {
            doc.push_str(&format!(
                "  - id: t{i}\n    command: \"echo {i}\"\n    depends_on: [{}]\n",
                if i == 0 {
                    String::new()
                } else {
                    format!("t{}", i - 1)
                }
            ));
        }
        doc
    }

    #[test]
    fn duplicates_and_malformed_documents_are_refused() {
        let err = parse_err("tasks:\n  - id: a\n    command: x\n  - id: a\n    command: y\n");
        assert!(
            err.contains("duplicate task id \"a\": tasks[0] and tasks[1] (line 4)"),
            "{err}"
        );
        assert!(parse_err("").contains("empty"));
        assert!(parse_err("tasks: [").starts_with("dag.yaml: "));
        assert!(parse_err("tasks:\n  - id: a\n").contains("command"));
    }
}

//! The DAG file: YAML (JSON is accepted, being YAML too), parsed into validated `TaskSpec`s.
//! Errors name the task, the field and, where the parser knows it, the line.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::calendar::{Calendar, RawCalendar};
use crate::dag::{Dependency, TaskSpec, is_valid_task_id};
use crate::deadline::Deadline;
use crate::period::PeriodKind;
use crate::pools::PoolSpec;
use crate::schedule::{Schedule, parse_timezone};
use crate::{CatchUp, EtlDay, template};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct DagFileError {
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    calendars: Vec<RawCalendar>,
    /// The DAG this file defines: its tasks belong to it (and `apply --prune` may remove the
    /// DAG's tasks the file no longer lists).
    dag: Option<String>,
    tasks: Vec<RawTask>,
    #[serde(default)]
    pools: Vec<RawPool>,
}

/// `{id: warehouse, slots: 3}`; signed, so that `-1` is refused by name, not as a type error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    id: String,
    slots: i64,
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
    period: Option<String>,
    /// A fire's period offset in the task's periods; `day_offset` is its name for daily tasks.
    offset: Option<i32>,
    calendar: Option<String>,
    catchup: Option<String>,
    pool: Option<String>,
    max_active: Option<i64>,
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
    /// `offset` reads better between hourly or monthly tasks; both count the coarser period.
    #[serde(default, alias = "offset")]
    day_offset: i32,
    /// Count `day_offset` in this calendar's days.
    calendar: Option<String>,
}

/// Everything one DAG document declares. Top-level sections besides `tasks:` (calendars, pools,
/// the DAG's own name) are fields here, so an apply stores them in the same transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DagFile {
    /// `dag: NAME`: the DAG that owns the file's tasks; None for a file of loose tasks.
    pub dag: Option<String>,
    pub tasks: Vec<TaskSpec>,
    pub calendars: Vec<Calendar>,
    /// `pools:`; a task may also name a pool already stored (checked at apply).
    pub pools: Vec<PoolSpec>,
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
    let mut calendars: Vec<Calendar> = Vec::with_capacity(doc.calendars.len());
    for (index, raw) in doc.calendars.into_iter().enumerate() {
        if calendars.iter().any(|c| c.id == raw.id) {
            return Err(fail(format!(
                "calendars[{index}]: duplicate calendar id {:?}",
                raw.id
            )));
        }
        calendars.push(Calendar::from_raw(raw).map_err(|e| fail(format!("calendars[{index}]: {e}")))?);
    }
    let dag = doc
        .dag
        .map(|name| {
            let name = name.trim().to_string();
            if is_valid_task_id(&name) {
                Ok(name)
            } else {
                Err(fail(format!(
                    "dag: {name:?} must match [A-Za-z0-9_.-]+ (at most 128 bytes)"
                )))
            }
        })
        .transpose()?;
    let pools = validate_pools(document, doc.pools).map_err(fail)?;
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
    Ok(DagFile {
        dag,
        tasks: specs,
        calendars,
        pools,
    })
}

/// One task as a mapping (the canonical text a stored version keeps, see `versions`), with
/// the `dag` it belonged to. Validated as a task of a DAG file is.
pub fn parse_task(text: &str, source_name: &str) -> Result<(TaskSpec, Option<String>), DagFileError> {
    let fail = |message: String| DagFileError {
        source_name: source_name.to_string(),
        message,
    };
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| fail(e.to_string()))?;
    let dag = match value.as_mapping_mut().and_then(|m| m.remove("dag")) {
        None | Some(serde_norway::Value::Null) => None,
        Some(serde_norway::Value::String(name)) => Some(name),
        Some(other) => return Err(fail(format!("dag: expected a name, found {other:?}"))),
    };
    let raw: RawTask = serde_norway::from_value(value).map_err(|e| fail(e.to_string()))?;
    let spec = validate(raw).map_err(fail)?;
    Ok((spec, dag))
}

fn validate_pools(document: &str, raw: Vec<RawPool>) -> Result<Vec<PoolSpec>, String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut pools = Vec::with_capacity(raw.len());
    for (index, pool) in raw.into_iter().enumerate() {
        let where_ = match line_of(document, &pool.id, 1) {
            Some(line) => format!("pool {:?} (pools[{index}], line {line})", pool.id),
            None => format!("pool {:?} (pools[{index}])", pool.id),
        };
        if !is_valid_task_id(&pool.id) {
            return Err(format!(
                "{where_}: id must match [A-Za-z0-9_.-]+ (at most 128 bytes)"
            ));
        }
        if let Some(first) = seen.insert(pool.id.clone(), index) {
            return Err(format!(
                "duplicate pool id {:?}: pools[{first}] and pools[{index}]",
                pool.id
            ));
        }
        let slots = u32::try_from(pool.slots)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| format!("{where_}: slots must be at least 1, not {}", pool.slots))?;
        pools.push(PoolSpec { id: pool.id, slots });
    }
    Ok(pools)
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
    let period = match &raw.period {
        Some(text) => PeriodKind::parse(text.trim())?,
        None => PeriodKind::Day,
    };
    let day_offset = match (raw.day_offset, raw.offset) {
        (Some(_), Some(_)) => return Err("give offset or day_offset, not both".into()),
        (Some(_), None) if period != PeriodKind::Day => {
            return Err(format!(
                "day_offset counts days; a {} task's fire offset is `offset`, in {}s",
                period.adjective(),
                period.as_str()
            ));
        }
        (Some(offset), None) | (None, Some(offset)) => offset,
        (None, None) => -1,
    };
    let limit = match period {
        PeriodKind::Hour => 24 * 366,
        PeriodKind::Day => 3660,
        PeriodKind::Month => 120,
    };
    if !(-limit..=limit).contains(&day_offset) {
        let name = if raw.offset.is_some() {
            "offset"
        } else {
            "day_offset"
        };
        return Err(format!(
            "{name} {day_offset} is out of range for a {} task (-{limit}..={limit} {}s)",
            period.adjective(),
            period.as_str()
        ));
    }
    if let Some(calendar) = &raw.calendar
        && !is_valid_task_id(calendar)
    {
        return Err(format!("calendar {calendar:?} must match [A-Za-z0-9_.-]+"));
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
            RawDependency::Same(task) => Dependency::new(&task, 0),
            RawDependency::WithOffset(d) => Dependency {
                task: d.task,
                day_offset: d.day_offset,
                calendar: d.calendar,
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
    if let Some(pool) = &raw.pool
        && !is_valid_task_id(pool)
    {
        return Err(format!("pool {pool:?} must match [A-Za-z0-9_.-]+"));
    }
    let max_active =
        raw.max_active
            .map(|n| {
                u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("max_active must be at least 1, not {n} (leave it out for no limit)")
                })
            })
            .transpose()?;
    let expected_duration = raw
        .expected_duration
        .map(|d| duration("expected_duration", d))
        .transpose()?
        .filter(|d| !d.is_zero());
    let catchup = match raw.catchup {
        None => CatchUp::default(),
        Some(text) => text.parse::<CatchUp>().map_err(|e| e.to_string())?,
    };
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
        period,
        calendar: raw.calendar,
        catchup,
        pool: raw.pool,
        max_active,
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
                Dependency::new("extract_orders", 0),
                Dependency::new("extract_orders", -1)
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
    fn catchup_defaults_to_latest_and_refuses_other_words() {
        let specs = parse_ok(
            "tasks:\n  - id: a\n    command: x\n    schedule: \"0 * * * *\"\n    catchup: all\n  - id: b\n    command: x\n    catchup: none\n  - id: c\n    command: x\n",
        );
        let policies: Vec<CatchUp> = specs.iter().map(|s| s.catchup).collect();
        assert_eq!(policies, [CatchUp::All, CatchUp::None, CatchUp::Latest]);
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    catchup: sometimes\n");
        assert_eq!(
            err,
            "dag.yaml: task \"a\" (tasks[0], line 2): catchup \"sometimes\" is not one of latest, all, none"
        );
    }

    #[test]
    fn pools_and_max_active() {
        let file = parse(
            "pools:\n  - {id: warehouse, slots: 3}\ntasks:\n  - id: a\n    command: x\n    pool: warehouse\n    max_active: 2\n  - id: b\n    command: x\n",
            "dag.yaml",
        )
        .unwrap();
        assert_eq!(
            file.pools,
            [PoolSpec {
                id: "warehouse".into(),
                slots: 3
            }]
        );
        assert_eq!(file.tasks[0].pool.as_deref(), Some("warehouse"));
        assert_eq!(file.tasks[0].max_active, Some(2));
        assert_eq!(
            (file.tasks[1].pool.as_ref(), file.tasks[1].max_active),
            (None, None)
        );
        for slots in ["0", "-1"] {
            let err = parse_err(&format!(
                "pools:\n  - id: warehouse\n    slots: {slots}\ntasks: []\n"
            ));
            assert!(
                err.contains("pool \"warehouse\" (pools[0], line 2): slots must be at least 1, not"),
                "{err}"
            );
        }
        let err = parse_err("pools:\n  - {id: w, slots: 1}\n  - {id: w, slots: 2}\ntasks: []\n");
        assert!(err.contains("duplicate pool id \"w\""), "{err}");
        let err = parse_err("pools:\n  - {id: \"a b\", slots: 1}\ntasks: []\n");
        assert!(err.contains("must match"), "{err}");
        let err = parse_err("pools:\n  - {id: w, size: 1}\ntasks: []\n");
        assert!(err.contains("size"), "{err}");
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    max_active: 0\n");
        assert!(
            err.contains("task \"a\" (tasks[0], line 2): max_active must be at least 1, not 0"),
            "{err}"
        );
        let err = parse_err("tasks:\n  - id: a\n    command: x\n    pool: \"no pool\"\n");
        assert!(err.contains("pool \"no pool\" must match"), "{err}");
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

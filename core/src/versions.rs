//! Definitions with history: the canonical text a stored version keeps, and the field-by-field
//! difference between two versions.
//!
//! A version is kept as canonical YAML (one mapping, written as a DAG file writes the thing),
//! so any kind of definition (tasks today; calendars and pools can follow) is versioned and
//! compared the same way: by its top-level fields.

use std::time::Duration;

use serde::Serialize;

use crate::TaskSpec;

/// The kinds of definition that have versions. A new kind is one more variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Task,
    Calendar,
    Pool,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Calendar => "calendar",
            Kind::Pool => "pool",
        }
    }
}

/// The canonical text of a calendar, as a DAG file writes it.
pub fn calendar_yaml(calendar: &crate::Calendar) -> String {
    serde_norway::to_string(&calendar.to_raw()).expect("a calendar serializes")
}

/// The canonical text of a pool.
pub fn pool_yaml(pool: &crate::pools::PoolSpec) -> String {
    format!("id: {}\nslots: {}\n", pool.id, pool.slots)
}

/// Field order and names as in a DAG file; optional fields left out when unset, so the text
/// reads like the file that defined it. `depends_on` is sorted: its order means nothing.
#[derive(Serialize)]
struct TaskOut<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dag: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a str>,
    timezone: &'a str,
    /// `hour` or `month`; left out for a daily task.
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<&'a str>,
    /// A daily task's fire offset; hourly and monthly tasks write `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    day_offset: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calendar: Option<&'a str>,
    /// Left out at its default, `latest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    catchup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    priority: i32,
    queue: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_day: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<DependencyOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DependencyOut<'a> {
    Same(&'a str),
    WithOffset {
        task: &'a str,
        day_offset: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        calendar: Option<&'a str>,
    },
}

fn duration(d: Option<Duration>) -> Option<String> {
    d.map(|d| humantime::format_duration(d).to_string())
}

/// The canonical text of a task's definition, with the DAG that owns it. It parses back with
/// `dagfile::parse_task` to the same definition.
pub fn task_yaml(spec: &TaskSpec, dag: Option<&str>) -> String {
    let mut spec = spec.clone();
    spec.normalize_dependencies();
    let out = TaskOut {
        id: &spec.id,
        dag,
        description: &spec.description,
        command: &spec.command,
        schedule: spec.schedule.as_deref(),
        timezone: &spec.timezone,
        period: (spec.period != crate::PeriodKind::Day).then(|| spec.period.as_str()),
        day_offset: (spec.period == crate::PeriodKind::Day).then_some(spec.day_offset),
        offset: (spec.period != crate::PeriodKind::Day).then_some(spec.day_offset),
        calendar: spec.calendar.as_deref(),
        catchup: (spec.catchup != crate::CatchUp::Latest).then(|| spec.catchup.as_str()),
        pool: spec.pool.as_deref(),
        max_active: spec.max_active,
        retries: spec.retries,
        retry_delay: duration(spec.retry_delay),
        timeout: duration(spec.timeout),
        priority: spec.priority,
        queue: &spec.queue,
        start_day: spec.start_day.map(|d| d.compact()),
        depends_on: spec
            .depends_on
            .iter()
            .map(|d| match (d.day_offset, &d.calendar) {
                (0, None) => DependencyOut::Same(&d.task),
                (day_offset, calendar) => DependencyOut::WithOffset {
                    task: &d.task,
                    day_offset,
                    calendar: calendar.as_deref(),
                },
            })
            .collect(),
        expected_duration: duration(spec.expected_duration),
        deadline: spec.deadline.as_ref().map(|d| d.to_string()),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_norway::to_string(&out).expect("a task serializes")
}

/// One top-level field that differs between two versions: its name, the old and the new
/// value as one line of text ("" when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub old_value: String,
    pub new_value: String,
}

/// The fields that differ between two canonical texts, in the order the new text (then the
/// old) writes them. Text that is not a YAML mapping compares as one field, `definition`.
pub fn field_diff(old: &str, new: &str) -> Vec<FieldDiff> {
    let (Some(old_fields), Some(new_fields)) = (fields(old), fields(new)) else {
        return if old == new {
            vec![]
        } else {
            vec![FieldDiff {
                field: "definition".into(),
                old_value: old.into(),
                new_value: new.into(),
            }]
        };
    };
    let mut names: Vec<&str> = new_fields.iter().map(|(k, _)| k.as_str()).collect();
    for (name, _) in &old_fields {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let value_of = |list: &[(String, String)], name: &str| {
        list.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (value_of(&old_fields, name), value_of(&new_fields, name));
            (a != b).then(|| FieldDiff {
                field: name.to_string(),
                old_value: a,
                new_value: b,
            })
        })
        .collect()
}

/// The names of the fields that differ, comma-separated: a version's summary.
pub fn summary(diff: &[FieldDiff]) -> String {
    diff.iter()
        .map(|d| d.field.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A mapping's top-level fields with each value written on one line.
fn fields(text: &str) -> Option<Vec<(String, String)>> {
    let value: serde_norway::Value = serde_norway::from_str(text).ok()?;
    let mapping = value.as_mapping()?;
    Some(mapping.iter().map(|(k, v)| (one_line(k), one_line(v))).collect())
}

/// Scalars as they read; lists and mappings in flow style (`[a, {task: b, day_offset: -1}]`).
fn one_line(value: &serde_norway::Value) -> String {
    use serde_norway::Value;
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => format!("[{}]", items.iter().map(one_line).collect::<Vec<_>>().join(", ")),
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", one_line(k), one_line(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => one_line(&t.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dagfile;

    fn full() -> TaskSpec {
        dagfile::parse(
            "tasks:\n  - id: load\n    command: \"sh load.sh {{etl_day}}\"\n    schedule: \"30 2 * * *\"\n    timezone: Asia/Shanghai\n    retries: 2\n    retry_delay: 90s\n    timeout: 1h 30m\n    priority: 3\n    queue: etl\n    start_day: 20260101\n    description: the load\n    depends_on: [b, {task: a, day_offset: -1}, a]\n    expected_duration: 20m\n    deadline: \"08:00 Asia/Shanghai +1\"\n",
            "dag.yaml",
        )
        .unwrap()
        .tasks
        .remove(0)
    }

    #[test]
    fn the_canonical_text_parses_back_to_the_same_definition() {
        let spec = full();
        let text = task_yaml(&spec, Some("shop"));
        let (back, dag) = dagfile::parse_task(&text, "v1").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(back.same_definition(&spec), "{text}");
        assert_eq!(dag.as_deref(), Some("shop"));
        let plain = TaskSpec::new("a", "true");
        let text = task_yaml(&plain, None);
        assert!(!text.contains("dag:"), "{text}");
        let (back, dag) = dagfile::parse_task(&text, "v1").unwrap();
        assert_eq!((back, dag), (plain, None));
    }

    #[test]
    fn the_order_of_depends_on_does_not_change_the_text() {
        let ab = TaskSpec::new("x", "x").after("a", 0).after("b", -1);
        let ba = TaskSpec::new("x", "x").after("b", -1).after("a", 0);
        assert_eq!(task_yaml(&ab, None), task_yaml(&ba, None));
    }

    #[test]
    fn the_diff_lists_only_changed_fields_as_one_line_each() {
        let old = TaskSpec::new("load", "load.sh").after("extract", 0);
        let mut new = old.clone().after("load", -1);
        new.command = "load.sh --fast".into();
        new.timeout = Some(Duration::from_secs(600));
        let diff = field_diff(&task_yaml(&old, None), &task_yaml(&new, Some("shop")));
        let got: Vec<(&str, &str, &str)> = diff
            .iter()
            .map(|d| (d.field.as_str(), d.old_value.as_str(), d.new_value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("dag", "", "shop"),
                ("command", "load.sh", "load.sh --fast"),
                ("timeout", "", "10m"),
                (
                    "depends_on",
                    "[extract]",
                    "[extract, {task: load, day_offset: -1}]"
                ),
            ]
        );
        assert_eq!(summary(&diff), "dag, command, timeout, depends_on");
        assert!(field_diff(&task_yaml(&old, None), &task_yaml(&old, None)).is_empty());
        // A field the new version dropped is listed too.
        let back = field_diff(&task_yaml(&new, None), &task_yaml(&old, None));
        assert!(
            back.iter()
                .any(|d| d.field == "timeout" && d.new_value.is_empty())
        );
    }

    #[test]
    fn text_that_is_not_a_mapping_compares_whole() {
        assert_eq!(field_diff("a", "b")[0].field, "definition");
        assert!(field_diff("a", "a").is_empty());
    }
}

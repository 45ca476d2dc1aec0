//! Tasks as a DAG document (the format of `goflowctl apply`): written for export and for the
//! edit form, whose document then goes through the same parser and validation as an apply.

use goflow_proto::{Calendar, Pool, Task};
use serde::Serialize;

#[derive(Serialize)]
struct Document {
    /// The calendars and pools the tasks name, so that the document applies on its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    calendars: Vec<CalendarOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pools: Vec<PoolOut>,
    tasks: Vec<TaskOut>,
}

#[derive(Serialize)]
struct CalendarOut {
    id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    weekdays: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<u32>,
}

#[derive(Serialize)]
struct PoolOut {
    id: String,
    slots: i64,
}

/// Field order and names as in `deploy/demo/dag.yaml`; defaults left out.
#[derive(Serialize)]
struct TaskOut {
    id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    timezone: String,
    /// `hour` or `month`; a daily task leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<String>,
    /// A daily task's fire offset; an hourly or monthly task writes `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    day_offset: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calendar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    priority: i32,
    queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_day: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<DependencyOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_duration: Option<String>,
    /// `HH:MM TZ +N`, as the parser reads it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    /// latest | all | none; left out when latest (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    catchup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<String>,
    /// Left out when there is no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active: Option<i64>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(untagged)]
enum DependencyOut {
    Same(String),
    WithOffset {
        task: String,
        day_offset: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        calendar: Option<String>,
    },
}

impl DependencyOut {
    fn new(task: String, day_offset: i32, calendar: Option<String>) -> Self {
        match (day_offset, calendar) {
            (0, None) => DependencyOut::Same(task),
            (day_offset, calendar) => DependencyOut::WithOffset {
                task,
                day_offset,
                calendar,
            },
        }
    }
}

/// `offset` for an hourly or monthly task, `day_offset` for a daily one (the parser takes
/// `day_offset` for days only).
fn offsets(period: &str, offset: i32) -> (Option<String>, Option<i32>, Option<i32>) {
    match period {
        "" | "day" => (None, Some(offset), None),
        other => (Some(other.to_string()), None, Some(offset)),
    }
}

/// What the edit form holds, as text, before validation.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct TaskForm {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub schedule: String,
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub day_offset: String,
    /// hour, day or month.
    #[serde(default)]
    pub period: String,
    #[serde(default)]
    pub calendar: String,
    #[serde(default)]
    pub retries: String,
    #[serde(default)]
    pub retry_delay: String,
    #[serde(default)]
    pub timeout: String,
    #[serde(default)]
    pub priority: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub start_day: String,
    /// One dependency per line: `task`, `task -1`, or `task -1 CALENDAR` (offset in its days).
    #[serde(default)]
    pub depends_on: String,
    #[serde(default)]
    pub expected_duration: String,
    /// `HH:MM[ TZ][ +N]`.
    #[serde(default)]
    pub deadline: String,
    /// latest | all | none (empty: latest).
    #[serde(default)]
    pub catchup: String,
    /// A pool's id (empty: none).
    #[serde(default)]
    pub pool: String,
    /// At most this many tries of the task at once (empty: no limit).
    #[serde(default)]
    pub max_active: String,
}

impl TaskForm {
    /// The form filled with a stored task.
    pub fn from_task(t: &Task) -> Self {
        Self {
            id: t.id.clone(),
            description: t.description.clone(),
            command: t.command.clone(),
            schedule: t.schedule.clone(),
            timezone: t.timezone.clone(),
            day_offset: t.day_offset.to_string(),
            period: t.period.clone(),
            calendar: t.calendar.clone(),
            retries: if t.retries < 0 {
                String::new()
            } else {
                t.retries.to_string()
            },
            retry_delay: crate::pages::task::millis(t.retry_delay_ms),
            timeout: crate::pages::task::millis(t.timeout_ms),
            priority: t.priority.to_string(),
            queue: t.queue.clone(),
            start_day: t.start_day.clone(),
            depends_on: t
                .depends_on
                .iter()
                .map(|d| match (d.day_offset, d.calendar.as_str()) {
                    (0, "") => d.task.clone(),
                    (offset, "") => format!("{} {offset}", d.task),
                    (offset, calendar) => format!("{} {offset} {calendar}", d.task),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            expected_duration: crate::pages::task::millis(t.expected_duration_ms),
            deadline: t.deadline.clone(),
            catchup: t.catchup.clone(),
            pool: t.pool.clone(),
            max_active: if t.max_active > 0 {
                t.max_active.to_string()
            } else {
                String::new()
            },
        }
    }

    /// A blank form with the document's defaults shown.
    pub fn blank() -> Self {
        Self {
            timezone: "UTC".into(),
            day_offset: "-1".into(),
            period: "day".into(),
            priority: "0".into(),
            queue: "default".into(),
            catchup: "latest".into(),
            ..Default::default()
        }
    }

    /// The one-task DAG document, or the field that is not even of the right kind.
    pub fn to_document(&self) -> Result<String, (&'static str, String)> {
        let int = |field: &'static str, text: &str, default: i32| -> Result<i32, (&'static str, String)> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(default);
            }
            text.parse()
                .map_err(|_| (field, format!("{field} {text:?} is not a whole number")))
        };
        let retries = match self.retries.trim() {
            "" => None,
            text => Some(
                text.parse::<u32>()
                    .map_err(|_| ("retries", format!("retries {text:?} is not a whole number >= 0")))?,
            ),
        };
        let mut depends_on = vec![];
        for line in self.depends_on.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut words = line.split_whitespace();
            let task = words.next().unwrap_or_default().trim_end_matches(',').to_string();
            match words.next() {
                None => depends_on.push(DependencyOut::Same(task)),
                Some(offset) => {
                    let day_offset = offset.parse::<i32>().map_err(|_| {
                        (
                            "depends_on",
                            format!(
                                "depends_on: {line:?}: write a task, or a task and a day offset such as -1 (and a calendar)"
                            ),
                        )
                    })?;
                    let calendar = words.next().map(str::to_string);
                    depends_on.push(DependencyOut::new(task, day_offset, calendar));
                }
            }
        }
        let max_active = match self.max_active.trim() {
            "" => None,
            // Signed, so that 0 or -1 gets the parser's own words.
            text => Some(text.parse::<i64>().map_err(|_| {
                (
                    "max_active",
                    format!("max_active {text:?} is not a whole number >= 1"),
                )
            })?),
        };
        let optional = |text: &str| Some(text.trim().to_string()).filter(|t| !t.is_empty());
        let (period, day_offset, offset) =
            offsets(self.period.trim(), int("day_offset", &self.day_offset, -1)?);
        let task = TaskOut {
            id: self.id.trim().to_string(),
            description: self.description.trim().to_string(),
            command: self.command.replace("\r\n", "\n").trim().to_string(),
            schedule: optional(&self.schedule),
            timezone: optional(&self.timezone).unwrap_or_else(|| "UTC".into()),
            period,
            day_offset,
            offset,
            calendar: optional(&self.calendar),
            retries,
            retry_delay: optional(&self.retry_delay),
            timeout: optional(&self.timeout),
            priority: int("priority", &self.priority, 0)?,
            queue: optional(&self.queue).unwrap_or_else(|| "default".into()),
            start_day: optional(&self.start_day),
            depends_on,
            expected_duration: optional(&self.expected_duration),
            deadline: optional(&self.deadline),
            catchup: not_latest(&self.catchup),
            pool: optional(&self.pool),
            max_active,
        };
        let document = Document {
            calendars: vec![],
            pools: vec![],
            tasks: vec![task],
        };
        serde_norway::to_string(&document).map_err(|e| ("", e.to_string()))
    }
}

/// A catchup policy as the document writes it: left out when it is the default (or empty, from
/// a coordinator that does not know the field).
fn not_latest(policy: &str) -> Option<String> {
    Some(policy.trim().to_string()).filter(|p| !p.is_empty() && p != "latest")
}

/// Tasks as one DAG document, with the calendars and pools among `calendars` and `pools` that
/// they name (a calendar of a dependency too).
pub fn export(tasks: &[Task], calendars: &[Calendar], pools: &[Pool]) -> String {
    let named_calendar = |id: &str| {
        tasks
            .iter()
            .any(|t| t.calendar == id || t.depends_on.iter().any(|d| d.calendar == id))
    };
    let calendars = calendars
        .iter()
        .filter(|c| named_calendar(&c.id))
        .map(|c| CalendarOut {
            id: c.id.clone(),
            description: c.description.clone(),
            weekdays: c.weekdays.clone(),
            // As numbers, the way a hand-written document lists them (yyyymmdd).
            exclude: c.exclude.iter().filter_map(|d| d.parse().ok()).collect(),
            include: c.include.iter().filter_map(|d| d.parse().ok()).collect(),
        })
        .collect();
    let pools = pools
        .iter()
        .filter(|p| tasks.iter().any(|t| t.pool == p.id))
        .map(|p| PoolOut {
            id: p.id.clone(),
            slots: p.slots,
        })
        .collect();
    let tasks = tasks
        .iter()
        .map(|t| {
            let form = TaskForm::from_task(t);
            let (period, day_offset, offset) = offsets(&t.period, t.day_offset);
            TaskOut {
                id: t.id.clone(),
                description: t.description.clone(),
                command: t.command.clone(),
                schedule: Some(t.schedule.clone()).filter(|s| !s.is_empty()),
                timezone: t.timezone.clone(),
                period,
                day_offset,
                offset,
                calendar: Some(t.calendar.clone()).filter(|c| !c.is_empty()),
                retries: u32::try_from(t.retries).ok(),
                retry_delay: Some(form.retry_delay).filter(|s| !s.is_empty()),
                timeout: Some(form.timeout).filter(|s| !s.is_empty()),
                priority: t.priority,
                queue: t.queue.clone(),
                start_day: Some(t.start_day.clone()).filter(|s| !s.is_empty()),
                expected_duration: Some(form.expected_duration.clone()).filter(|s| !s.is_empty()),
                deadline: Some(t.deadline.clone()).filter(|s| !s.is_empty()),
                catchup: not_latest(&t.catchup),
                pool: Some(t.pool.clone()).filter(|p| !p.is_empty()),
                max_active: Some(i64::from(t.max_active)).filter(|&n| n > 0),
                depends_on: t
                    .depends_on
                    .iter()
                    .map(|d| {
                        DependencyOut::new(
                            d.task.clone(),
                            d.day_offset,
                            Some(d.calendar.clone()).filter(|c| !c.is_empty()),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let document = Document {
        calendars,
        pools,
        tasks,
    };
    serde_norway::to_string(&document).unwrap_or_default()
}

/// The form field an apply error is about, from the parser's message
/// (`edit form: task "x" (tasks[0], line 3): schedule: ...`); "" when it names none.
pub fn field_of(message: &str) -> &'static str {
    const FIELDS: [&str; 20] = [
        "id",
        "command",
        "schedule",
        "timezone",
        "day_offset",
        "offset",
        "period",
        "calendar",
        "retries",
        "retry_delay",
        "timeout",
        "priority",
        "queue",
        "start_day",
        "depends_on",
        "expected_duration",
        "deadline",
        "catchup",
        "pool",
        "max_active",
    ];
    // The part after the task's description names the field first.
    let detail = message.rsplit_once("): ").map_or(message, |(_, d)| d);
    let first_word = detail
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    if let Some(field) = FIELDS.iter().find(|f| **f == first_word) {
        return field;
    }
    // Graph errors (unknown upstream, cycle) and serde's `tasks[0].retries: ...`.
    if detail.contains("depends on") || detail.contains("cycle") || detail.contains("upstream") {
        return "depends_on";
    }
    FIELDS
        .iter()
        .find(|f| detail.contains(&format!(".{f}")) || detail.contains(&format!("`{f}`")))
        .copied()
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use goflow_core::dagfile;
    use goflow_proto::TaskDependency;

    use super::*;

    fn stored() -> Task {
        Task {
            id: "load".into(),
            command: "load.sh {{etl_day}}".into(),
            schedule: "30 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            day_offset: -1,
            retries: 2,
            retry_delay_ms: 90_000,
            timeout_ms: 3_600_000,
            priority: 3,
            queue: "io".into(),
            start_day: "20260101".into(),
            description: "loads: the \"warehouse\"".into(),
            expected_duration_ms: 1_800_000,
            deadline: "08:00 Asia/Shanghai +1".into(),
            catchup: "all".into(),
            depends_on: vec![
                TaskDependency {
                    task: "extract".into(),
                    day_offset: 0,
                    ..Default::default()
                },
                TaskDependency {
                    task: "load".into(),
                    day_offset: -1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn an_exported_task_parses_back_to_the_same_definition() {
        let document = export(&[stored()], &[], &[]);
        let specs = dagfile::parse(&document, "export").unwrap().tasks;
        let spec = &specs[0];
        assert_eq!(spec.command, "load.sh {{etl_day}}");
        assert_eq!(spec.schedule.as_deref(), Some("30 2 * * *"));
        assert_eq!(
            (spec.retries, spec.priority, spec.queue.as_str()),
            (Some(2), 3, "io")
        );
        assert_eq!(spec.retry_delay, Some(std::time::Duration::from_secs(90)));
        assert_eq!(spec.timeout, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(spec.start_day.map(|d| d.compact()).as_deref(), Some("20260101"));
        assert_eq!(spec.depends_on.len(), 2);
        assert_eq!(spec.depends_on[1].day_offset, -1);
        assert_eq!(spec.description, "loads: the \"warehouse\"");
        assert_eq!(spec.expected_duration, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(
            spec.deadline.as_ref().map(|d| d.to_string()).as_deref(),
            Some("08:00 Asia/Shanghai +1")
        );
        assert_eq!(spec.catchup, goflow_core::CatchUp::All);
        // The default is left out of the document.
        let latest = export(
            &[Task {
                catchup: "latest".into(),
                ..stored()
            }],
            &[],
            &[],
        );
        assert!(!latest.contains("catchup"), "{latest}");
    }

    /// A task's pool, max_active and calendars survive the edit form and the export, and the
    /// export carries the calendars and pools it names (only those), so it applies on its own.
    #[test]
    fn pools_limits_and_calendars_survive_the_form_and_the_export() {
        let task = Task {
            pool: "warehouse".into(),
            max_active: 2,
            calendar: "cn_workday".into(),
            depends_on: vec![TaskDependency {
                task: "ledger".into(),
                day_offset: -1,
                calendar: "trading".into(),
            }],
            ..stored()
        };
        let ledger = Task {
            id: "ledger".into(),
            command: "ledger.sh".into(),
            timezone: "UTC".into(),
            queue: "default".into(),
            ..Task::default()
        };
        let calendar = |id: &str| Calendar {
            id: id.into(),
            weekdays: vec!["mon".into(), "tue".into()],
            exclude: vec!["20261001".into()],
            include: vec!["20260927".into()],
            description: format!("{id} days"),
            tasks: vec![],
        };
        let pool = |id: &str, slots| Pool {
            id: id.into(),
            slots,
            ..Pool::default()
        };
        let document = export(
            &[ledger, task.clone()],
            &[calendar("cn_workday"), calendar("trading"), calendar("unused")],
            &[pool("warehouse", 3), pool("other", 9)],
        );
        let parsed = dagfile::parse(&document, "export").unwrap();
        let ids = |c: &[goflow_core::calendar::Calendar]| c.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&parsed.calendars), ["cn_workday", "trading"], "{document}");
        let cn = &parsed.calendars[0];
        assert!(
            cn.contains(goflow_core::EtlDay::parse("20260927").unwrap()),
            "a make-up workday: {document}"
        );
        assert!(
            !cn.contains(goflow_core::EtlDay::parse("20261001").unwrap()),
            "a holiday: {document}"
        );
        assert_eq!(parsed.pools.len(), 1, "{document}");
        assert_eq!(
            (parsed.pools[0].id.as_str(), parsed.pools[0].slots),
            ("warehouse", 3)
        );
        let load = &parsed.tasks[1];
        assert_eq!(load.pool.as_deref(), Some("warehouse"));
        assert_eq!(load.max_active, Some(2));

        let form = TaskForm::from_task(&task);
        assert_eq!((form.pool.as_str(), form.max_active.as_str()), ("warehouse", "2"));
        let from_form = dagfile::parse(&form.to_document().unwrap(), "form")
            .unwrap()
            .tasks;
        assert_eq!(from_form[0].pool.as_deref(), Some("warehouse"));
        assert_eq!(from_form[0].max_active, Some(2));
        // No limit is an empty field, and stays none.
        let unlimited = TaskForm::from_task(&stored());
        assert_eq!((unlimited.pool.as_str(), unlimited.max_active.as_str()), ("", ""));
        let from_form = dagfile::parse(&unlimited.to_document().unwrap(), "form")
            .unwrap()
            .tasks;
        assert_eq!(
            (from_form[0].pool.as_deref(), from_form[0].max_active),
            (None, None)
        );
        let mut bad = TaskForm::from_task(&task);
        bad.max_active = "two".into();
        assert_eq!(bad.to_document().unwrap_err().0, "max_active");
        bad.max_active = "0".into();
        let error = dagfile::parse(&bad.to_document().unwrap(), "edit form").unwrap_err();
        assert_eq!(field_of(&error.to_string()), "max_active", "{error}");
    }

    #[test]
    fn a_bad_catchup_from_the_form_is_the_catchup_field_s_error() {
        let form = TaskForm {
            catchup: "sometimes".into(),
            ..TaskForm::from_task(&stored())
        };
        let err = dagfile::parse(&form.to_document().unwrap(), "edit form").unwrap_err();
        assert_eq!(field_of(&err.to_string()), "catchup");
    }

    #[test]
    fn the_form_round_trips_a_task() {
        let form = TaskForm::from_task(&stored());
        assert_eq!(form.depends_on, "extract\nload -1");
        let specs = dagfile::parse(&form.to_document().unwrap(), "form")
            .unwrap()
            .tasks;
        assert_eq!(specs[0].id, "load");
        assert_eq!(specs[0].depends_on[1].task, "load");
    }

    #[test]
    fn form_fields_of_the_wrong_kind_are_named() {
        let mut form = TaskForm::blank();
        form.priority = "high".into();
        assert_eq!(form.to_document().unwrap_err().0, "priority");
        form.priority = "1".into();
        form.depends_on = "extract yesterday".into();
        assert_eq!(form.to_document().unwrap_err().0, "depends_on");
    }

    #[test]
    fn parser_messages_are_attached_to_their_field() {
        let mut form = TaskForm::blank();
        form.id = "x".into();
        form.command = "run.sh".into();
        form.schedule = "every day".into();
        let error = dagfile::parse(&form.to_document().unwrap(), "edit form").unwrap_err();
        assert_eq!(field_of(&error.to_string()), "schedule", "{error}");
        form.schedule.clear();
        form.command = "  ".into();
        let error = dagfile::parse(&form.to_document().unwrap(), "edit form").unwrap_err();
        assert_eq!(field_of(&error.to_string()), "command", "{error}");
        assert_eq!(
            field_of("edit form: task \"b\" depends on unknown task \"nope\""),
            "depends_on"
        );
    }
}

//! The task graph: validation (unknown upstreams, cycles), topological order, and the closures
//! of instances up- and downstream of one instance, following day offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::EtlDay;

/// How far back a dependency may reach; a guard against typos such as `-3650`.
pub const MAX_DEPENDENCY_OFFSET_DAYS: i32 = 366;

/// `[A-Za-z0-9_.-]+`, at most 128 bytes, and not `.` or `..`: ids become URL path segments
/// (`/tasks/<id>`), where those two resolve to another page.
pub fn is_valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An edge as its downstream declares it: "I need `task`'s instance of my day + `day_offset`".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    pub task: String,
    /// 0 = same day, -1 = the upstream's instance of the day before.
    pub day_offset: i32,
}

/// One validated task definition.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub id: String,
    pub command: String,
    pub schedule: Option<String>,
    pub timezone: String,
    /// etl_day = fire date + day_offset.
    pub day_offset: i32,
    /// None: the configured default.
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub timeout: Option<Duration>,
    pub priority: i32,
    pub queue: String,
    pub start_day: Option<EtlDay>,
    pub description: String,
    pub depends_on: Vec<Dependency>,
    /// A try running longer than this raises a `long_running` alert (once per try).
    pub expected_duration: Option<Duration>,
    /// When the instance of each data date must have succeeded (a `deadline` alert).
    pub deadline: Option<crate::Deadline>,
}

impl TaskSpec {
    /// The same definition, `depends_on` taken as a set: its order means nothing, so a file
    /// applied again with its upstreams reordered changes nothing.
    pub fn same_definition(&self, other: &TaskSpec) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.normalize_dependencies();
        b.normalize_dependencies();
        a == b
    }

    /// `depends_on` sorted and without repeats (its order means nothing).
    pub fn normalize_dependencies(&mut self) {
        self.depends_on.sort();
        self.depends_on.dedup();
    }

    /// A task with every optional field at its default; for tests and the demo.
    pub fn new(id: &str, command: &str) -> Self {
        Self {
            id: id.into(),
            command: command.into(),
            schedule: None,
            timezone: "UTC".into(),
            day_offset: -1,
            retries: None,
            retry_delay: None,
            timeout: None,
            priority: 0,
            queue: "default".into(),
            start_day: None,
            description: String::new(),
            depends_on: vec![],
            expected_duration: None,
            deadline: None,
        }
    }

    pub fn after(mut self, upstream: &str, day_offset: i32) -> Self {
        self.depends_on.push(Dependency {
            task: upstream.into(),
            day_offset,
        });
        self
    }
}

/// One instance: a task on a data date.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub task: String,
    pub etl_day: EtlDay,
}

impl InstanceKey {
    pub fn new(task: &str, etl_day: EtlDay) -> Self {
        Self {
            task: task.to_string(),
            etl_day,
        }
    }
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.task, self.etl_day)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("task {task:?} depends on unknown task {upstream:?}")]
    UnknownUpstream { task: String, upstream: String },
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error(
        "task {task:?} depends on {upstream:?} with day_offset {offset}: offsets must be between -{MAX_DEPENDENCY_OFFSET_DAYS} and 0 (an instance can wait for earlier days, not later ones)"
    )]
    BadOffset {
        task: String,
        upstream: String,
        offset: i32,
    },
    #[error("unknown task {0:?}")]
    UnknownTask(String),
}

/// A validated graph: every upstream exists and no same-day cycle exists.
///
/// Edges with a negative day offset may close a loop in the task graph (a task that waits for
/// its own previous day is common); only a loop whose edges are all same-day is a real cycle,
/// because offsets are never positive.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    tasks: BTreeMap<String, TaskSpec>,
    /// task -> (downstream task, offset as the downstream declared it)
    downstream: HashMap<String, Vec<Dependency>>,
    /// Position of each task in a same-day topological order.
    topo_index: HashMap<String, usize>,
}

impl Dag {
    pub fn new(tasks: impl IntoIterator<Item = TaskSpec>) -> Result<Self, DagError> {
        let tasks: BTreeMap<String, TaskSpec> = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mut downstream: HashMap<String, Vec<Dependency>> = HashMap::new();
        for task in tasks.values() {
            for dep in &task.depends_on {
                if !tasks.contains_key(&dep.task) {
                    return Err(DagError::UnknownUpstream {
                        task: task.id.clone(),
                        upstream: dep.task.clone(),
                    });
                }
                if !(-MAX_DEPENDENCY_OFFSET_DAYS..=0).contains(&dep.day_offset) {
                    return Err(DagError::BadOffset {
                        task: task.id.clone(),
                        upstream: dep.task.clone(),
                        offset: dep.day_offset,
                    });
                }
                downstream.entry(dep.task.clone()).or_default().push(Dependency {
                    task: task.id.clone(),
                    day_offset: dep.day_offset,
                });
            }
        }
        for edges in downstream.values_mut() {
            edges.sort();
            edges.dedup();
        }
        let order = same_day_topological_order(&tasks)?;
        let topo_index = order.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Ok(Self {
            tasks,
            downstream,
            topo_index,
        })
    }

    pub fn task(&self, id: &str) -> Option<&TaskSpec> {
        self.tasks.get(id)
    }

    pub fn require(&self, id: &str) -> Result<&TaskSpec, DagError> {
        self.task(id).ok_or_else(|| DagError::UnknownTask(id.to_string()))
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskSpec> {
        self.tasks.values()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// What `task` waits for, as it declared it.
    pub fn upstreams(&self, task: &str) -> &[Dependency] {
        self.tasks
            .get(task)
            .map(|t| t.depends_on.as_slice())
            .unwrap_or(&[])
    }

    /// Who waits for `task`, with the offset each declared.
    pub fn downstreams(&self, task: &str) -> &[Dependency] {
        self.downstream.get(task).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every task in an order where same-day upstreams come first.
    pub fn topological_order(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        ids.sort_by_key(|id| self.topo_index[*id]);
        ids
    }

    /// The instances `key` waits for. Those before their task's `start_day` are left out:
    /// they count as met.
    pub fn upstream_instances(&self, key: &InstanceKey) -> Vec<InstanceKey> {
        let mut ups: Vec<InstanceKey> = self
            .upstreams(&key.task)
            .iter()
            .map(|dep| InstanceKey::new(&dep.task, key.etl_day.offset(dep.day_offset)))
            .filter(|up| self.exists_on(&up.task, up.etl_day))
            .collect();
        // A dependency listed twice is one instance to wait for.
        ups.sort();
        ups.dedup();
        ups
    }

    /// The instances that wait for `key`.
    pub fn downstream_instances(&self, key: &InstanceKey) -> Vec<InstanceKey> {
        self.downstreams(&key.task)
            .iter()
            .map(|dep| InstanceKey::new(&dep.task, key.etl_day.offset(-dep.day_offset)))
            .filter(|down| self.exists_on(&down.task, down.etl_day))
            .collect()
    }

    /// Whether a task has an instance on `day` at all (not before its `start_day`).
    pub fn exists_on(&self, task: &str, day: EtlDay) -> bool {
        match self.tasks.get(task) {
            Some(spec) => spec.start_day.is_none_or(|start| day >= start),
            None => false,
        }
    }

    /// `start` and every instance downstream of it whose day lies in `days` (inclusive),
    /// in run order: by day, then same-day topological order.
    pub fn downstream_closure(&self, start: &InstanceKey, days: (EtlDay, EtlDay)) -> Vec<InstanceKey> {
        self.closure(start, days, |key| self.downstream_instances(key))
    }

    /// `start` and every instance upstream of it whose day lies in `days`, in run order
    /// (upstreams first).
    pub fn upstream_closure(&self, start: &InstanceKey, days: (EtlDay, EtlDay)) -> Vec<InstanceKey> {
        self.closure(start, days, |key| self.upstream_instances(key))
    }

    /// The run of `day` started by `root` (a cron fire, `do-all-job`): `root` and every task
    /// downstream of it through any dependency, each at `day`, in run order. A task whose
    /// upstreams all carry a day offset (`b` after `a` of the day before) is part of the day's
    /// run like any other: `b@day` waits for `a@day-1`, it is not left out because the
    /// closure over instances never reaches it.
    pub fn day_run(&self, root: &str, day: EtlDay) -> Vec<InstanceKey> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo = VecDeque::new();
        if let Some((id, _)) = self.tasks.get_key_value(root) {
            seen.insert(id.as_str());
            todo.push_back(id.as_str());
        }
        while let Some(task) = todo.pop_front() {
            for dep in self.downstreams(task) {
                if seen.insert(dep.task.as_str()) {
                    todo.push_back(dep.task.as_str());
                }
            }
        }
        self.in_run_order(
            seen.into_iter()
                .filter(|task| self.exists_on(task, day))
                .map(|task| InstanceKey::new(task, day)),
        )
    }

    fn closure(
        &self,
        start: &InstanceKey,
        (from, to): (EtlDay, EtlDay),
        next: impl Fn(&InstanceKey) -> Vec<InstanceKey>,
    ) -> Vec<InstanceKey> {
        let mut seen: BTreeSet<InstanceKey> = BTreeSet::new();
        let mut todo = VecDeque::from([start.clone()]);
        seen.insert(start.clone());
        while let Some(key) = todo.pop_front() {
            for neighbour in next(&key) {
                if neighbour.etl_day < from || neighbour.etl_day > to {
                    continue;
                }
                if seen.insert(neighbour.clone()) {
                    todo.push_back(neighbour);
                }
            }
        }
        self.in_run_order(seen)
    }

    /// Sorts instances so every upstream comes before its downstreams.
    pub fn in_run_order(&self, keys: impl IntoIterator<Item = InstanceKey>) -> Vec<InstanceKey> {
        let mut keys: Vec<InstanceKey> = keys.into_iter().collect();
        keys.sort_by_key(|k| (k.etl_day, self.topo_index.get(&k.task).copied(), k.task.clone()));
        keys
    }
}

/// Kahn's algorithm over same-day edges; on failure, names one cycle.
fn same_day_topological_order(tasks: &BTreeMap<String, TaskSpec>) -> Result<Vec<String>, DagError> {
    let same_day_ups = |t: &TaskSpec| -> BTreeSet<String> {
        t.depends_on
            .iter()
            .filter(|d| d.day_offset == 0)
            .map(|d| d.task.clone())
            .collect()
    };
    let mut pending: HashMap<&str, usize> = tasks
        .values()
        .map(|t| (t.id.as_str(), same_day_ups(t).len()))
        .collect();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in tasks.values() {
        for up in same_day_ups(t) {
            children
                .entry(tasks.get_key_value(&up).unwrap().0.as_str())
                .or_default()
                .push(&t.id);
        }
    }
    let mut ready: VecDeque<&str> = tasks
        .keys()
        .map(String::as_str)
        .filter(|id| pending[id] == 0)
        .collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(id) = ready.pop_front() {
        order.push(id.to_string());
        for child in children.get(id).into_iter().flatten() {
            let left = pending.get_mut(child).unwrap();
            *left -= 1;
            if *left == 0 {
                ready.push_back(child);
            }
        }
    }
    if order.len() == tasks.len() {
        return Ok(order);
    }
    // Every task left has a same-day upstream that is also left: walk upstream until a
    // task repeats, which closes the cycle.
    let left: BTreeSet<&str> = pending
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(id, _)| *id)
        .collect();
    let mut path: Vec<&str> = vec![left.iter().next().unwrap()];
    loop {
        let current = tasks.get(*path.last().unwrap()).unwrap();
        let up = current
            .depends_on
            .iter()
            .find(|d| d.day_offset == 0 && left.contains(d.task.as_str()))
            .expect("a task left by Kahn's algorithm has a left upstream");
        if let Some(at) = path.iter().position(|p| *p == up.task) {
            // path runs downstream -> upstream; print the cycle in dependency direction.
            let mut cycle: Vec<String> = path[at..].iter().rev().map(|s| s.to_string()).collect();
            cycle.push(cycle[0].clone());
            return Err(DagError::Cycle { path: cycle });
        }
        path.push(tasks.get_key_value(&up.task).unwrap().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> EtlDay {
        EtlDay::parse(s).unwrap()
    }

    fn key(task: &str, d: &str) -> InstanceKey {
        InstanceKey::new(task, day(d))
    }

    fn diamond() -> Dag {
        Dag::new([
            TaskSpec::new("a", "true"),
            TaskSpec::new("b", "true").after("a", 0),
            TaskSpec::new("c", "true").after("a", 0),
            TaskSpec::new("d", "true").after("b", 0).after("c", 0),
        ])
        .unwrap()
    }

    #[test]
    fn task_ids_follow_their_pattern() {
        for ok in ["a", "load_orders", "v1.2-x", "A_9", "...", ".a", "a..b"] {
            assert!(is_valid_task_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a;rm", "ü", "a/b", "$x", &"x".repeat(129)] {
            assert!(!is_valid_task_id(bad), "{bad}");
        }
    }

    #[test]
    fn topological_order_puts_upstreams_first() {
        let dag = diamond();
        let order = dag.topological_order();
        let pos = |id: &str| order.iter().position(|t| *t == id).unwrap();
        assert!(pos("a") < pos("b") && pos("a") < pos("c"));
        assert!(pos("b") < pos("d") && pos("c") < pos("d"));
    }

    #[test]
    fn refuses_unknown_upstreams() {
        let err = Dag::new([TaskSpec::new("b", "true").after("ghost", 0)]).unwrap_err();
        assert_eq!(
            err,
            DagError::UnknownUpstream {
                task: "b".into(),
                upstream: "ghost".into()
            }
        );
        assert_eq!(err.to_string(), "task \"b\" depends on unknown task \"ghost\"");
    }

    #[test]
    fn names_the_cycle_path() {
        let err = Dag::new([
            TaskSpec::new("root", "true"),
            TaskSpec::new("x", "true").after("root", 0).after("z", 0),
            TaskSpec::new("y", "true").after("x", 0),
            TaskSpec::new("z", "true").after("y", 0),
        ])
        .unwrap_err();
        let DagError::Cycle { path } = &err else {
            panic!("{err}")
        };
        assert_eq!(path.first(), path.last());
        assert_eq!(path.len(), 4, "{path:?}");
        // Consecutive names are real edges, upstream -> downstream.
        let dag_edges = [("x", "y"), ("y", "z"), ("z", "x")];
        for pair in path.windows(2) {
            assert!(
                dag_edges.contains(&(pair[0].as_str(), pair[1].as_str())),
                "{path:?}"
            );
        }
        assert!(err.to_string().starts_with("dependency cycle: "));
    }

    #[test]
    fn self_dependency_is_a_cycle_only_on_the_same_day() {
        assert!(matches!(
            Dag::new([TaskSpec::new("a", "true").after("a", 0)]),
            Err(DagError::Cycle { .. })
        ));
        let dag = Dag::new([TaskSpec::new("a", "true").after("a", -1)]).unwrap();
        assert_eq!(
            dag.upstream_instances(&key("a", "20260102")),
            [key("a", "20260101")]
        );
    }

    #[test]
    fn refuses_positive_and_huge_offsets() {
        for offset in [1, -367] {
            let err = Dag::new([
                TaskSpec::new("a", "true"),
                TaskSpec::new("b", "true").after("a", offset),
            ])
            .unwrap_err();
            assert!(matches!(err, DagError::BadOffset { .. }), "{err}");
        }
    }

    #[test]
    fn downstream_closure_of_the_diamond_root_is_everything_in_order() {
        let dag = diamond();
        let closure = dag.downstream_closure(&key("a", "20260101"), (day("20260101"), day("20260101")));
        let tasks: Vec<&str> = closure.iter().map(|k| k.task.as_str()).collect();
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks[0], "a");
        assert_eq!(tasks[3], "d");
        let from_b = dag.downstream_closure(&key("b", "20260101"), (day("20260101"), day("20260101")));
        assert_eq!(from_b, [key("b", "20260101"), key("d", "20260101")]);
    }

    #[test]
    fn closures_follow_day_offsets_within_the_range() {
        // daily_report(d) needs load(d) and load(d-1); load(d) needs extract(d).
        let dag = Dag::new([
            TaskSpec::new("extract", "true"),
            TaskSpec::new("load", "true").after("extract", 0),
            TaskSpec::new("daily_report", "true")
                .after("load", 0)
                .after("load", -1),
        ])
        .unwrap();
        let start = key("extract", "20260101");
        let one_day = dag.downstream_closure(&start, (day("20260101"), day("20260101")));
        assert_eq!(
            one_day,
            [
                start.clone(),
                key("load", "20260101"),
                key("daily_report", "20260101")
            ]
        );
        let two_days = dag.downstream_closure(&start, (day("20260101"), day("20260102")));
        assert_eq!(
            two_days,
            [
                start.clone(),
                key("load", "20260101"),
                key("daily_report", "20260101"),
                key("daily_report", "20260102"),
            ]
        );
        let up = dag.upstream_closure(
            &key("daily_report", "20260102"),
            (day("20260101"), day("20260102")),
        );
        assert_eq!(
            up,
            [
                key("extract", "20260101"),
                key("load", "20260101"),
                key("extract", "20260102"),
                key("load", "20260102"),
                key("daily_report", "20260102"),
            ]
        );
    }

    #[test]
    fn start_day_hides_earlier_instances_and_their_dependencies() {
        let mut a = TaskSpec::new("a", "true");
        a.start_day = Some(day("20260105"));
        let dag = Dag::new([a, TaskSpec::new("b", "true").after("a", -1)]).unwrap();
        assert!(
            dag.upstream_instances(&key("b", "20260105")).is_empty(),
            "a@20260104 counts as met"
        );
        assert_eq!(
            dag.upstream_instances(&key("b", "20260106")),
            [key("a", "20260105")]
        );
        assert!(!dag.exists_on("a", day("20260104")));
        assert!(dag.exists_on("a", day("20260105")));
    }

    #[test]
    fn self_dependency_closure_is_bounded_by_the_range() {
        let dag = Dag::new([TaskSpec::new("a", "true").after("a", -1)]).unwrap();
        let closure = dag.downstream_closure(&key("a", "20260101"), (day("20260101"), day("20260103")));
        assert_eq!(
            closure,
            [key("a", "20260101"), key("a", "20260102"), key("a", "20260103")]
        );
    }
}

//! Explain (issue 19): why an instance is where it is. The coordinator gathers what it knows
//! about the instance and the instances it waits for into a graph of [`Node`]s; this module
//! walks that graph to the root causes (each named once, however wide the fan-in) and words
//! each hop. Pure: times are passed in.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::{Dag, InstanceKey, Period, Schedule};

/// Root causes named one by one; the rest are counted ("and N more").
pub const MAX_ROOT_CAUSES: usize = 10;

/// A running try holding a pool slot or a max_active place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub attempt: String,
    pub task: String,
    pub period: String,
    pub agent: String,
}

/// How a missing instance gets created, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// A cron fire of `task` (the instance's own task or one upstream of it) at `at` (ms).
    Cron { task: String, at: i64 },
    /// Nothing will create it: this command would.
    ByHand { command: String },
}

/// Why one instance is where it is, on its own (not counting what it waits for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Succeeded {
        at: Option<i64>,
        forced: bool,
    },
    /// failed or killed (or another final state): `state` says which.
    Ended {
        state: String,
        exit_code: Option<i64>,
        message: String,
        try_number: i64,
        max_tries: i64,
        at: Option<i64>,
    },
    Running {
        agent: String,
        since: Option<i64>,
        try_number: i64,
        max_tries: i64,
    },
    /// Queued, an agent serves its queue: waiting to be claimed since `since`.
    Queued {
        since: i64,
    },
    /// Queued, and no live agent serves its queue.
    NoAgent {
        queue: String,
        live_agents: usize,
    },
    /// Queued, held back by a full pool or max_active (`wait` is the held reason).
    Limit {
        wait: String,
        holders: Vec<Holder>,
    },
    RetryDue {
        at: Option<i64>,
        try_number: i64,
        max_tries: i64,
    },
    /// The task is paused (the instance waits or is queued behind that).
    Paused,
    /// Waiting for upstreams that are not done (the hops after it say which).
    WaitsFor {
        count: usize,
    },
    /// Waiting, every upstream met: about to be queued.
    Ready,
    /// No instance: the day is not one the task runs on (`why` names the calendar).
    OutsideCalendar {
        why: String,
    },
    /// No instance: before the task's start_day (as an upstream, this counts as met).
    BeforeStart {
        why: String,
    },
    /// No instance yet.
    Missing {
        creation: Creation,
    },
    /// The walk stopped here (too many instances to follow).
    NotFollowed,
}

impl Cause {
    /// Whether this node is a reason by itself (a root cause), not only through its upstreams.
    pub fn is_root(&self) -> bool {
        !matches!(self, Cause::WaitsFor { .. })
    }

    /// The words of a hop: `failed: exit code 3, try 2 of 2, at 05:12`. Times are shown in
    /// `tz`, with their date when it is not `now`'s.
    pub fn reason(&self, tz: Tz, now: i64) -> String {
        let at = |ms: Option<i64>| ms.filter(|m| *m > 0).map(|m| clock(m, tz, now));
        match self {
            Cause::Succeeded { at: when, forced } => {
                let what = if *forced { "marked success" } else { "succeeded" };
                match at(*when) {
                    Some(t) => format!("{what} at {t}"),
                    None => what.to_string(),
                }
            }
            Cause::Ended {
                state,
                exit_code,
                message,
                try_number,
                max_tries,
                at: when,
            } => {
                let mut parts = vec![];
                match exit_code {
                    Some(code) => parts.push(format!("exit code {code}")),
                    None if !message.is_empty() => parts.push(message.clone()),
                    None => {}
                }
                if *try_number > 0 {
                    parts.push(format!("try {try_number} of {max_tries}"));
                }
                if let Some(t) = at(*when) {
                    parts.push(format!("at {t}"));
                }
                if parts.is_empty() {
                    state.clone()
                } else {
                    format!("{state}: {}", parts.join(", "))
                }
            }
            Cause::Running {
                agent,
                since,
                try_number,
                max_tries,
            } => {
                let mut text = format!("running on agent {agent}");
                if let Some(t) = at(*since) {
                    text.push_str(&format!(" since {t}"));
                }
                text.push_str(&format!(", try {try_number} of {max_tries}"));
                text
            }
            Cause::Queued { since } => {
                let waited = (now - since).max(0) / 1000;
                format!("queued, waiting for an agent to claim it for {}", seconds(waited))
            }
            Cause::NoAgent { queue, live_agents } => match live_agents {
                0 => format!("queued, and no live agent serves queue {queue} (no agent is alive)"),
                n => format!(
                    "queued, and no live agent serves queue {queue} ({} alive, none serving it)",
                    crate::plural(*n, "agent")
                ),
            },
            Cause::Limit { wait, holders } => {
                let mut text = format!("queued, {wait}");
                if !holders.is_empty() {
                    let named: Vec<String> = holders
                        .iter()
                        .take(3)
                        .map(|h| format!("{} ({}@{} on agent {})", h.attempt, h.task, h.period, h.agent))
                        .collect();
                    text.push_str(&format!("; held by {}", named.join(", ")));
                    if holders.len() > 3 {
                        text.push_str(&format!(" and {} more", holders.len() - 3));
                    }
                }
                text
            }
            Cause::RetryDue {
                at: when,
                try_number,
                max_tries,
            } => match at(*when) {
                Some(t) => format!("up_for_retry: try {} of {max_tries} due at {t}", try_number + 1),
                None => format!("up_for_retry: try {} of {max_tries} due now", try_number + 1),
            },
            Cause::Paused => "task is paused".into(),
            Cause::WaitsFor { count } => format!("waits for {}", crate::plural(*count, "upstream")),
            Cause::Ready => "every upstream is met: about to be queued".into(),
            Cause::OutsideCalendar { why } => format!("no instance: {why}"),
            Cause::BeforeStart { why } => format!("no instance: {why} (as an upstream, counts as met)"),
            Cause::Missing { creation } => match creation {
                Creation::Cron { task, at: when } => format!(
                    "no instance yet: the cron schedule of {task} creates it at {}",
                    at(Some(*when)).unwrap_or_default()
                ),
                Creation::ByHand { command } => {
                    format!("no instance, and no schedule will create it: `{command}` would")
                }
            },
            Cause::NotFollowed => "not followed further (too many instances)".into(),
        }
    }
}

/// `05:12` on `now`'s date (in `tz`), `2026-12-05 05:12` on another.
fn clock(ms: i64, tz: Tz, now: i64) -> String {
    let local = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz));
    match (local(ms), local(now)) {
        (Some(t), Some(n)) if t.date_naive() == n.date_naive() => t.format("%H:%M").to_string(),
        (Some(t), _) => t.format("%Y-%m-%d %H:%M").to_string(),
        (None, _) => ms.to_string(),
    }
}

fn seconds(s: i64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// One instance as gathered: its state (`none` when it has no instance), why it is there,
/// and the unmet instances it waits for.
#[derive(Debug, Clone)]
pub struct Node {
    pub state: String,
    pub reason: String,
    pub root: bool,
    pub waits_for: Vec<InstanceKey>,
}

/// A hop: `{task, period, state, reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub task: String,
    pub period: String,
    pub state: String,
    pub reason: String,
}

/// The walk's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The instance first, then every instance on a path from it to a listed root cause, in
    /// the order the walk reached them.
    pub chain: Vec<Hop>,
    /// Each root cause once (at most [`MAX_ROOT_CAUSES`]).
    pub root_causes: Vec<Hop>,
    /// Root causes found and not listed.
    pub more: usize,
    /// One line per listed root cause: the path to it, `waits for a@d (waiting) <- waits for
    /// b@d (failed: ...)`; the instance's own reason when it is its own root cause.
    pub lines: Vec<String>,
}

fn hop(key: &InstanceKey, node: &Node) -> Hop {
    Hop {
        task: key.task.clone(),
        period: key.period.key(),
        state: node.state.clone(),
        reason: node.reason.clone(),
    }
}

/// Walks `nodes` from `start` through `waits_for` (each instance once) and names the root
/// causes: nodes that are a reason by themselves. A node missing from `nodes` is skipped (the
/// gatherer bounds how far it reads).
pub fn explain(start: &InstanceKey, nodes: &HashMap<InstanceKey, Node>, max_roots: usize) -> Explanation {
    let Some(first) = nodes.get(start) else {
        return Explanation {
            chain: vec![],
            root_causes: vec![],
            more: 0,
            lines: vec![],
        };
    };
    let mut parent: HashMap<&InstanceKey, &InstanceKey> = HashMap::new();
    let mut order: Vec<&InstanceKey> = vec![start];
    let mut seen: HashSet<&InstanceKey> = HashSet::from([start]);
    let mut roots: Vec<&InstanceKey> = vec![];
    let mut todo = VecDeque::from([start]);
    while let Some(key) = todo.pop_front() {
        let node = &nodes[key];
        if node.root {
            roots.push(key);
        }
        for up in &node.waits_for {
            if !nodes.contains_key(up) || !seen.insert(up) {
                continue;
            }
            parent.insert(up, key);
            order.push(up);
            todo.push_back(up);
        }
    }
    let more = roots.len().saturating_sub(max_roots);
    roots.truncate(max_roots);
    // Paths from the instance to each listed root.
    let mut on_path: BTreeSet<usize> = BTreeSet::from([0]);
    let index: HashMap<&InstanceKey, usize> = order.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut lines = vec![];
    for root in &roots {
        let mut path = vec![*root];
        while let Some(p) = parent.get(path.last().unwrap()) {
            path.push(p);
        }
        path.reverse();
        for k in &path {
            on_path.insert(index[k]);
        }
        let line = if path.len() == 1 {
            first.reason.clone()
        } else {
            path[1..]
                .iter()
                .map(|k| format!("waits for {k} ({})", nodes[*k].reason))
                .collect::<Vec<_>>()
                .join(" <- ")
        };
        lines.push(line);
    }
    if more > 0 {
        lines.push(format!("and {more} more"));
    }
    Explanation {
        chain: on_path
            .into_iter()
            .map(|i| hop(order[i], &nodes[order[i]]))
            .collect(),
        root_causes: roots.iter().map(|k| hop(k, &nodes[*k])).collect(),
        more,
        lines,
    }
}

/// A waiting node's reason in a chain is its state ("waiting"); a root's is its cause.
pub fn hop_reason(cause: &Cause, state: &str, tz: Tz, now: i64) -> String {
    match cause {
        Cause::WaitsFor { .. } => state.to_string(),
        other => other.reason(tz, now),
    }
}

/// How `key`, which has no instance, gets one: the first cron fire after `now` (of its task or
/// of a task upstream of it, whose day run reaches it) that creates it; otherwise the run
/// that would. Paused tasks' schedules do not count. Looks at most `max_fires` fires ahead per
/// schedule.
pub fn creation(dag: &Dag, key: &InstanceKey, now: DateTime<Utc>, paused: impl Fn(&str) -> bool) -> Creation {
    const MAX_FIRES: usize = 800;
    let (key_start, key_end) = key.period.span();
    let mut best: Option<(DateTime<Utc>, String)> = None;
    for task in ancestors_and_self(dag, &key.task) {
        let Some(spec) = dag.task(&task) else { continue };
        let Some(expr) = &spec.schedule else { continue };
        if paused(&task) {
            continue;
        }
        let Ok(schedule) = Schedule::parse(expr, &spec.timezone, spec.day_offset) else {
            continue;
        };
        let mut after = now;
        for _ in 0..MAX_FIRES {
            let Some(fire) = schedule.next_fire_after(after) else {
                break;
            };
            if best.as_ref().is_some_and(|(b, _)| fire >= *b) {
                break;
            }
            let period: Period = schedule.period_of(fire, spec.period);
            let (start, end) = period.span();
            if start >= key_end {
                break;
            }
            if end > key_start && dag.day_run(&task, period).contains(key) {
                best = Some((fire, task.clone()));
                break;
            }
            after = fire;
        }
    }
    match best {
        Some((at, task)) => Creation::Cron {
            task,
            at: at.timestamp_millis(),
        },
        None => Creation::ByHand {
            command: format!("goflowctl run -j {} -d {}", key.task, key.period.key()),
        },
    }
}

/// `task` and every task upstream of it, each once.
fn ancestors_and_self(dag: &Dag, task: &str) -> Vec<String> {
    let mut seen = BTreeSet::from([task.to_string()]);
    let mut todo = vec![task.to_string()];
    while let Some(t) = todo.pop() {
        for dep in dag.upstreams(&t) {
            if seen.insert(dep.task.clone()) {
                todo.push(dep.task.clone());
            }
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EtlDay, TaskSpec};

    fn key(task: &str, day: &str) -> InstanceKey {
        InstanceKey::new(task, EtlDay::parse(day).unwrap())
    }

    fn node(state: &str, reason: &str, root: bool, ups: &[InstanceKey]) -> Node {
        Node {
            state: state.into(),
            reason: reason.into(),
            root,
            waits_for: ups.to_vec(),
        }
    }

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn a_failed_root_two_hops_up_is_named_with_its_path() {
        let (a, b, c) = (
            key("transform", "20261205"),
            key("load", "20261205"),
            key("report", "20261205"),
        );
        let nodes = HashMap::from([
            (
                c.clone(),
                node("waiting", "waiting", false, std::slice::from_ref(&b)),
            ),
            (
                b.clone(),
                node("waiting", "waiting", false, std::slice::from_ref(&a)),
            ),
            (
                a.clone(),
                node("failed", "failed: exit code 3, try 2 of 2, at 05:12", true, &[]),
            ),
        ]);
        let e = explain(&c, &nodes, MAX_ROOT_CAUSES);
        assert_eq!(
            e.lines,
            [
                "waits for load@20261205 (waiting) <- waits for transform@20261205 (failed: exit code 3, try 2 of 2, at 05:12)"
            ]
        );
        assert_eq!(e.root_causes.len(), 1);
        assert_eq!(e.root_causes[0].task, "transform");
        assert_eq!(e.root_causes[0].state, "failed");
        let chain: Vec<&str> = e.chain.iter().map(|h| h.task.as_str()).collect();
        assert_eq!(chain, ["report", "load", "transform"]);
        assert_eq!(e.more, 0);
    }

    #[test]
    fn a_wide_fan_in_names_each_root_once_and_counts_the_rest() {
        let start = key("sink", "20261205");
        let shared = key("root", "20261205");
        let mids: Vec<InstanceKey> = (0..30).map(|i| key(&format!("mid{i}"), "20261205")).collect();
        let mut nodes = HashMap::from([
            (start.clone(), node("waiting", "waiting", false, &mids)),
            (shared.clone(), node("failed", "failed", true, &[])),
        ]);
        for m in &mids {
            nodes.insert(
                m.clone(),
                node("waiting", "waiting", false, std::slice::from_ref(&shared)),
            );
        }
        let e = explain(&start, &nodes, MAX_ROOT_CAUSES);
        assert_eq!(e.root_causes.len(), 1, "one shared root, named once");
        assert_eq!(
            e.chain.len(),
            3,
            "sink, the first mid reaching it, root: {:?}",
            e.chain
        );

        // Thirty distinct roots: ten named, twenty counted.
        let roots: Vec<InstanceKey> = (0..30).map(|i| key(&format!("r{i}"), "20261205")).collect();
        let mut nodes = HashMap::from([(start.clone(), node("waiting", "waiting", false, &roots))]);
        for r in &roots {
            nodes.insert(r.clone(), node("killed", "killed", true, &[]));
        }
        let e = explain(&start, &nodes, MAX_ROOT_CAUSES);
        assert_eq!(e.root_causes.len(), MAX_ROOT_CAUSES);
        assert_eq!(e.more, 20);
        assert_eq!(e.lines.last().unwrap(), "and 20 more");
    }

    #[test]
    fn a_cycle_of_waits_ends_and_the_instance_can_be_its_own_root() {
        let (a, b) = (key("a", "20261205"), key("b", "20261205"));
        let nodes = HashMap::from([
            (
                a.clone(),
                node("waiting", "task is paused", true, std::slice::from_ref(&b)),
            ),
            (
                b.clone(),
                node("waiting", "waiting", false, std::slice::from_ref(&a)),
            ),
        ]);
        let e = explain(&a, &nodes, MAX_ROOT_CAUSES);
        assert_eq!(e.lines, ["task is paused"]);
        assert_eq!(e.chain.len(), 1);
    }

    #[test]
    fn hops_are_worded() {
        let tz: Tz = "UTC".parse().unwrap();
        let now = ms("2026-12-05T07:00:00Z");
        let failed = Cause::Ended {
            state: "failed".into(),
            exit_code: Some(3),
            message: String::new(),
            try_number: 2,
            max_tries: 2,
            at: Some(ms("2026-12-05T05:12:30Z")),
        };
        assert_eq!(
            failed.reason(tz, now),
            "failed: exit code 3, try 2 of 2, at 05:12"
        );
        let yesterday = Cause::Succeeded {
            at: Some(ms("2026-12-04T23:00:00Z")),
            forced: false,
        };
        assert_eq!(yesterday.reason(tz, now), "succeeded at 2026-12-04 23:00");
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(
            failed.reason(shanghai, now),
            "failed: exit code 3, try 2 of 2, at 13:12"
        );
        let pool = Cause::Limit {
            wait: "waiting for pool warehouse (1 of 1 slots in use)".into(),
            holders: vec![Holder {
                attempt: "41-1".into(),
                task: "load".into(),
                period: "20261205".into(),
                agent: "a1".into(),
            }],
        };
        assert_eq!(
            pool.reason(tz, now),
            "queued, waiting for pool warehouse (1 of 1 slots in use); held by 41-1 (load@20261205 on agent a1)"
        );
        assert_eq!(
            Cause::NoAgent {
                queue: "gpu".into(),
                live_agents: 2
            }
            .reason(tz, now),
            "queued, and no live agent serves queue gpu (2 agents alive, none serving it)"
        );
        assert_eq!(
            Cause::Queued { since: now - 125_000 }.reason(tz, now),
            "queued, waiting for an agent to claim it for 2m5s"
        );
        assert_eq!(
            Cause::RetryDue {
                at: Some(ms("2026-12-05T07:05:00Z")),
                try_number: 1,
                max_tries: 3
            }
            .reason(tz, now),
            "up_for_retry: try 2 of 3 due at 07:05"
        );
        assert!(!Cause::WaitsFor { count: 2 }.is_root());
        assert!(Cause::Paused.is_root());
        assert_eq!(
            hop_reason(&Cause::WaitsFor { count: 1 }, "waiting", tz, now),
            "waiting"
        );
    }

    #[test]
    fn a_missing_instance_is_created_by_cron_or_only_by_hand() {
        let mut extract = TaskSpec::new("extract", "true");
        extract.schedule = Some("0 2 * * *".into());
        let load = TaskSpec::new("load", "true").after("extract", 0);
        let dag = Dag::new([extract, load]).unwrap();
        let now: DateTime<Utc> = "2026-12-05T01:00:00Z".parse().unwrap();
        // Tonight's 02:00 fire creates the run of the 4th (day_offset -1), load included.
        assert_eq!(
            creation(&dag, &key("load", "20261204"), now, |_| false),
            Creation::Cron {
                task: "extract".into(),
                at: ms("2026-12-05T02:00:00Z")
            }
        );
        // A past day: only by hand.
        assert_eq!(
            creation(&dag, &key("load", "20261101"), now, |_| false),
            Creation::ByHand {
                command: "goflowctl run -j load -d 20261101".into()
            }
        );
        // A paused schedule creates nothing.
        assert!(matches!(
            creation(&dag, &key("load", "20261204"), now, |t| t == "extract"),
            Creation::ByHand { .. }
        ));
        let tz: Tz = "UTC".parse().unwrap();
        assert_eq!(
            Cause::Missing {
                creation: Creation::Cron {
                    task: "extract".into(),
                    at: ms("2026-12-05T02:00:00Z")
                }
            }
            .reason(tz, now.timestamp_millis()),
            "no instance yet: the cron schedule of extract creates it at 02:00"
        );
    }
}

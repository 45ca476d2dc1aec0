//! When will a day be done (issue 19): an event simulation of the unfinished instances of a
//! day, list scheduling in the dispatcher's order (higher priority first, then the order the
//! caller gives, which is run order), bounded by slots per queue, pool slots and max_active.
//! Pure: durations, slots and what already runs are read by the caller and passed in; time is
//! epoch milliseconds.
//!
//! The critical path is found by walking back from the instance that finishes last through
//! the predecessor that bound each start: the upstream that finished last, or the job whose
//! end freed the slot it took.

use std::collections::HashMap;

/// One instance to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub task: String,
    /// Predicted running time of one try, in ms.
    pub duration_ms: i64,
    /// A try runs now, started at this time.
    pub running_since: Option<i64>,
    /// Cannot start before this (now, a retry's `next_try_at`, a cron fire still ahead).
    pub not_before: i64,
    /// Indices (into the problem's jobs) of the unfinished upstreams it waits for.
    pub upstreams: Vec<usize>,
    pub queue: String,
    pub pool: Option<String>,
    pub priority: i32,
    /// Set when it cannot run at all (an upstream that failed, a paused task): why.
    pub blocked: Option<String>,
}

impl Job {
    pub fn new(task: &str, duration_ms: i64) -> Self {
        Self {
            task: task.to_string(),
            duration_ms,
            running_since: None,
            not_before: 0,
            upstreams: vec![],
            queue: "default".into(),
            pool: None,
            priority: 0,
            blocked: None,
        }
    }

    pub fn after(mut self, upstream: usize) -> Self {
        self.upstreams.push(upstream);
        self
    }
}

/// A try outside the problem (another day's) that holds a slot until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub task: String,
    pub queue: String,
    pub pool: Option<String>,
    pub until: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problem {
    pub now: i64,
    pub jobs: Vec<Job>,
    /// Slots of live agents serving each queue; a queue not listed has none.
    pub queue_slots: HashMap<String, u32>,
    /// Slots of each pool; a pool not listed does not bound.
    pub pool_slots: HashMap<String, u32>,
    /// max_active of the tasks that have one.
    pub max_active: HashMap<String, u32>,
    pub busy: Vec<Busy>,
    /// A running try predicted to be done already still needs at least this long.
    pub floor_ms: i64,
}

/// What decided when a job starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// It runs already, or could start at once.
    Now,
    /// Its own time: a cron fire or a retry's delay.
    Own,
    /// This upstream (a job index) finished last.
    Upstream(usize),
    /// A slot (of its queue, pool or max_active) freed by this job's end.
    Slot(usize),
    /// A slot freed by a try of another day.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicted {
    /// None: it cannot be predicted (blocked, or no slot will ever serve it).
    pub start_at: Option<i64>,
    pub finish_at: Option<i64>,
    pub bound: Bound,
    /// Why there is no prediction.
    pub unpredictable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub jobs: Vec<Predicted>,
    /// The last predicted finish; None if any job has no prediction (or there are no jobs).
    pub finish_at: Option<i64>,
    /// Job indices from the first of the chain to the one that finishes last.
    pub critical_path: Vec<usize>,
}

/// A slot held until a time: (end, the job or None for another day's try, queue, pool, task).
type Hold = (i64, Option<usize>, String, Option<String>, String);

/// Free slots by name, where a name not listed means "unbounded" (pools) or "none" (queues).
struct Slots {
    free: HashMap<String, i64>,
    bounded_only: bool,
}

impl Slots {
    fn new(slots: &HashMap<String, u32>, bounded_only: bool) -> Self {
        Self {
            free: slots.iter().map(|(k, v)| (k.clone(), *v as i64)).collect(),
            bounded_only,
        }
    }

    fn has(&self, name: Option<&str>) -> bool {
        match name {
            None => true,
            Some(name) => match self.free.get(name) {
                Some(n) => *n > 0,
                None => self.bounded_only,
            },
        }
    }

    fn take(&mut self, name: Option<&str>, n: i64) {
        if let Some(free) = name.and_then(|name| self.free.get_mut(name)) {
            *free -= n;
        }
    }

    /// Whether it could ever serve one (a queue no live agent serves never will).
    fn exists(&self, name: &str) -> bool {
        self.bounded_only || self.free.contains_key(name)
    }
}

/// The three kinds of slot a try holds at once: its queue's, its pool's, its task's
/// max_active.
struct Capacity {
    queues: Slots,
    pools: Slots,
    actives: Slots,
}

impl Capacity {
    fn fits(&self, queue: &str, pool: Option<&str>, task: &str) -> bool {
        self.queues.has(Some(queue)) && self.pools.has(pool) && self.actives.has(Some(task))
    }

    /// Takes (`n` = 1) or gives back (`n` = -1) one slot of each kind.
    fn take(&mut self, queue: &str, pool: Option<&str>, task: &str, n: i64) {
        self.queues.take(Some(queue), n);
        self.pools.take(pool, n);
        self.actives.take(Some(task), n);
    }

    /// A try (of `job`, or None for another day's) holds its slots until `end`.
    fn occupy(
        &mut self,
        ends: &mut Vec<Hold>,
        end: i64,
        job: Option<usize>,
        queue: &str,
        pool: &Option<String>,
        task: &str,
    ) {
        self.take(queue, pool.as_deref(), task, 1);
        ends.push((end, job, queue.to_string(), pool.clone(), task.to_string()));
    }
}

/// Runs the simulation. Jobs are started in (priority desc, index) order whenever their
/// upstreams are done, their time has come and a slot of each kind they need is free.
pub fn predict(problem: &Problem) -> Prediction {
    let n = problem.jobs.len();
    let now = problem.now;
    let mut capacity = Capacity {
        queues: Slots::new(&problem.queue_slots, false),
        pools: Slots::new(&problem.pool_slots, true),
        actives: Slots::new(&problem.max_active, true),
    };
    let mut out: Vec<Predicted> = (0..n)
        .map(|_| Predicted {
            start_at: None,
            finish_at: None,
            bound: Bound::Now,
            unpredictable: None,
        })
        .collect();
    // Ends still to come: (time, Some(job) or None for another day's try, queue, pool, task).
    let mut ends: Vec<Hold> = vec![];
    for busy in &problem.busy {
        capacity.occupy(
            &mut ends,
            busy.until.max(now),
            None,
            &busy.queue,
            &busy.pool,
            &busy.task,
        );
    }
    let mut pending: Vec<usize> = vec![];
    for (i, job) in problem.jobs.iter().enumerate() {
        if let Some(since) = job.running_since {
            let end = (since + job.duration_ms).max(now + problem.floor_ms);
            out[i].start_at = Some(since);
            out[i].finish_at = Some(end);
            capacity.occupy(&mut ends, end, Some(i), &job.queue, &job.pool, &job.task);
        } else if let Some(why) = &job.blocked {
            out[i].unpredictable = Some(why.clone());
        } else if !capacity.queues.exists(&job.queue) {
            out[i].unpredictable = Some(format!("no live agent serves queue {}", job.queue));
        } else {
            pending.push(i);
        }
    }
    // Jobs waiting for one that will never be predicted are not predicted either.
    loop {
        let before = pending.len();
        pending.retain(|&i| {
            let stuck = problem.jobs[i]
                .upstreams
                .iter()
                .find(|&&u| out[u].unpredictable.is_some() && out[u].finish_at.is_none());
            match stuck {
                Some(&u) => {
                    out[i].unpredictable = Some(format!(
                        "waits for {}, which cannot be predicted",
                        problem.jobs[u].task
                    ));
                    false
                }
                None => true,
            }
        });
        if pending.len() == before {
            break;
        }
    }
    // Dispatcher order: higher priority first, then the caller's (run) order.
    pending.sort_by_key(|&i| (-problem.jobs[i].priority, i));
    let mut t = now;
    // Who freed a slot at `t` (job, queue, pool, task), for the critical path.
    let mut freed_by: Vec<(Option<usize>, String, Option<String>, String)> = vec![];
    loop {
        freed_by.clear();
        ends.retain(|(end, job, queue, pool, task)| {
            if *end > t {
                return true;
            }
            capacity.take(queue, pool.as_deref(), task, -1);
            freed_by.push((*job, queue.clone(), pool.clone(), task.clone()));
            false
        });
        let mut k = 0;
        while k < pending.len() {
            let i = pending[k];
            let job = &problem.jobs[i];
            let ups_done = job
                .upstreams
                .iter()
                .all(|&u| out[u].finish_at.is_some_and(|f| f <= t));
            let ready = ups_done && job.not_before <= t;
            if ready && capacity.fits(&job.queue, job.pool.as_deref(), &job.task) {
                let end = t + job.duration_ms.max(0);
                out[i].start_at = Some(t);
                out[i].finish_at = Some(end);
                out[i].bound = bound_of(problem, &out, i, t, &freed_by);
                capacity.occupy(&mut ends, end, Some(i), &job.queue, &job.pool, &job.task);
                pending.remove(k);
            } else {
                k += 1;
            }
        }
        if pending.is_empty() {
            break;
        }
        // A job of no duration ended at `t`: release it and look again at the same time.
        if ends.iter().any(|e| e.0 <= t) {
            continue;
        }
        // The next moment anything can change: an end, or a job's own time.
        let next_end = ends.iter().map(|e| e.0).min();
        let next_own = pending
            .iter()
            .map(|&i| problem.jobs[i].not_before)
            .filter(|&nb| nb > t)
            .min();
        t = match (next_end, next_own) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
    }
    for &i in &pending {
        out[i].unpredictable = Some(format!(
            "no slot will free up for it (queue {}{})",
            problem.jobs[i].queue,
            problem.jobs[i]
                .pool
                .as_ref()
                .map(|p| format!(", pool {p}"))
                .unwrap_or_default()
        ));
    }
    let all_predicted = out.iter().all(|p| p.finish_at.is_some());
    let last = (0..n)
        .filter(|&i| out[i].finish_at.is_some())
        .max_by_key(|&i| (out[i].finish_at, std::cmp::Reverse(i)));
    let critical_path = path_to(&out, last);
    Prediction {
        finish_at: if all_predicted {
            last.and_then(|i| out[i].finish_at)
        } else {
            None
        },
        jobs: out,
        critical_path,
    }
}

/// The chain that decided when job `last` finishes: each job's binding predecessor, walked
/// back, first job first.
pub fn path_to(jobs: &[Predicted], last: Option<usize>) -> Vec<usize> {
    let mut path = vec![];
    let mut at = last;
    while let Some(i) = at {
        if path.contains(&i) {
            break;
        }
        path.push(i);
        at = match jobs[i].bound {
            Bound::Upstream(u) | Bound::Slot(u) => Some(u),
            _ => None,
        };
    }
    path.reverse();
    path
}

fn bound_of(
    problem: &Problem,
    out: &[Predicted],
    i: usize,
    t: i64,
    freed_by: &[(Option<usize>, String, Option<String>, String)],
) -> Bound {
    let job = &problem.jobs[i];
    let last_up = job
        .upstreams
        .iter()
        .copied()
        .max_by_key(|&u| (out[u].finish_at, std::cmp::Reverse(u)));
    let ups_end = last_up.and_then(|u| out[u].finish_at).unwrap_or(i64::MIN);
    if t <= problem.now && job.not_before <= problem.now && ups_end <= problem.now {
        return Bound::Now;
    }
    if let Some(u) = last_up.filter(|_| ups_end == t) {
        return Bound::Upstream(u);
    }
    if job.not_before == t {
        return Bound::Own;
    }
    // Waited past its readiness: a slot held it back; the job whose end freed one.
    let freed = freed_by.iter().find(|(_, queue, pool, task)| {
        *queue == job.queue || (pool.is_some() && *pool == job.pool) || *task == job.task
    });
    match freed {
        Some((Some(j), ..)) => Bound::Slot(*j),
        Some((None, ..)) => Bound::Other,
        None => match last_up {
            Some(u) => Bound::Upstream(u),
            None => Bound::Own,
        },
    }
}

/// The median of `values` (the mean of the middle two when even); None when empty.
pub fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn problem(jobs: Vec<Job>, slots: u32) -> Problem {
        Problem {
            now: 0,
            jobs,
            queue_slots: HashMap::from([("default".to_string(), slots)]),
            floor_ms: S,
            ..Default::default()
        }
    }

    fn tasks(p: &Problem, path: &[usize]) -> Vec<String> {
        path.iter().map(|&i| p.jobs[i].task.clone()).collect()
    }

    #[test]
    fn the_critical_path_is_the_longest_chain() {
        // a(10) -> b(30) -> d(5); a -> c(50) -> d: the chain through c decides.
        let p = problem(
            vec![
                Job::new("a", 10 * S),
                Job::new("b", 30 * S).after(0),
                Job::new("c", 50 * S).after(0),
                Job::new("d", 5 * S).after(1).after(2),
            ],
            10,
        );
        let got = predict(&p);
        assert_eq!(got.finish_at, Some(65 * S));
        assert_eq!(tasks(&p, &got.critical_path), ["a", "c", "d"]);
        assert_eq!(got.jobs[1].start_at, Some(10 * S));
        assert_eq!(got.jobs[2].start_at, Some(10 * S));
        assert_eq!(got.jobs[3].start_at, Some(60 * S));
        assert_eq!(got.jobs[3].bound, Bound::Upstream(2));
    }

    #[test]
    fn slots_bound_parallelism() {
        // Four independent 10 s jobs on 2 slots: two rounds.
        let jobs = (0..4).map(|i| Job::new(&format!("t{i}"), 10 * S)).collect();
        let p = problem(jobs, 2);
        let got = predict(&p);
        assert_eq!(got.finish_at, Some(20 * S));
        let starts: Vec<_> = got.jobs.iter().map(|j| j.start_at.unwrap()).collect();
        assert_eq!(starts, [0, 0, 10 * S, 10 * S]);
        // The last one waited for a slot: the path goes through the job that freed it.
        assert_eq!(got.critical_path.len(), 2);
        assert!(matches!(got.jobs[3].bound, Bound::Slot(0 | 1)));
    }

    #[test]
    fn pools_bound_parallelism() {
        let jobs = (0..3)
            .map(|i| {
                let mut job = Job::new(&format!("t{i}"), 10 * S);
                job.pool = Some("warehouse".into());
                job
            })
            .collect();
        let mut p = problem(jobs, 10);
        p.pool_slots.insert("warehouse".into(), 1);
        let got = predict(&p);
        assert_eq!(got.finish_at, Some(30 * S));
        assert_eq!(tasks(&p, &got.critical_path), ["t0", "t1", "t2"]);
    }

    #[test]
    fn max_active_and_other_days_tries_hold_slots() {
        let mut p = problem(vec![Job::new("a", 10 * S), Job::new("b", 10 * S)], 1);
        p.busy.push(Busy {
            task: "old".into(),
            queue: "default".into(),
            pool: None,
            until: 5 * S,
        });
        let got = predict(&p);
        assert_eq!(got.jobs[0].start_at, Some(5 * S));
        assert_eq!(got.jobs[0].bound, Bound::Other);
        assert_eq!(got.finish_at, Some(25 * S));

        let mut p = problem(vec![Job::new("a", 10 * S), Job::new("a", 10 * S)], 5);
        p.max_active.insert("a".into(), 1);
        assert_eq!(predict(&p).finish_at, Some(20 * S));
    }

    #[test]
    fn higher_priority_goes_first() {
        let mut urgent = Job::new("urgent", 10 * S);
        urgent.priority = 5;
        let p = problem(vec![Job::new("low", 10 * S), urgent], 1);
        let got = predict(&p);
        assert_eq!(got.jobs[1].start_at, Some(0));
        assert_eq!(got.jobs[0].start_at, Some(10 * S));
    }

    #[test]
    fn running_retrying_and_future_jobs() {
        let mut running = Job::new("running", 10 * S);
        running.running_since = Some(-4 * S);
        let mut overdue = Job::new("overdue", 10 * S);
        overdue.running_since = Some(-60 * S);
        let mut retry = Job::new("retry", 10 * S);
        retry.not_before = 20 * S;
        let mut cron = Job::new("cron", 3 * S);
        cron.not_before = 100 * S;
        let p = problem(vec![running, overdue, retry, cron.after(0)], 10);
        let got = predict(&p);
        assert_eq!(got.jobs[0].finish_at, Some(6 * S), "remaining = median - elapsed");
        assert_eq!(got.jobs[1].finish_at, Some(S), "at least the floor");
        assert_eq!(got.jobs[2].start_at, Some(20 * S));
        assert_eq!(got.jobs[3].start_at, Some(100 * S));
        assert_eq!(got.jobs[3].bound, Bound::Own);
        assert_eq!(got.finish_at, Some(103 * S));
        assert_eq!(tasks(&p, &got.critical_path), ["cron"]);
    }

    #[test]
    fn blocked_jobs_and_queues_without_agents_are_not_predicted() {
        let mut failed = Job::new("failed", 10 * S);
        failed.blocked = Some("failed".into());
        let mut elsewhere = Job::new("gpu", 10 * S);
        elsewhere.queue = "gpu".into();
        let p = problem(
            vec![failed, Job::new("down", S).after(0), elsewhere, Job::new("ok", S)],
            2,
        );
        let got = predict(&p);
        assert_eq!(got.finish_at, None);
        assert!(got.jobs[1].unpredictable.as_deref().unwrap().contains("failed"));
        assert!(
            got.jobs[2]
                .unpredictable
                .as_deref()
                .unwrap()
                .contains("queue gpu")
        );
        assert_eq!(got.jobs[3].finish_at, Some(S));
    }

    #[test]
    fn median_of_tries() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 3, 5, 100]), Some(4));
    }
}

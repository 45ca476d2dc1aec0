//! When will a day be done (issue 19): gathers what `goflow_core::eta` simulates, with a
//! bounded number of statements (the day's instances, the upstreams on other days, recent
//! durations, agents, running tries, pools), never one per instance.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use goflow_core::eta::{self, Busy, Job, Problem};
use goflow_core::{EtlDay, InstanceKey, InstanceState, Period, Schedule};

use super::{Catalog, Engine, Result};
use crate::store::{self, InstanceFilter, InstanceRow, now_ms};

/// Successful tries whose median predicts a task's running time.
pub const HISTORY_TRIES: i64 = 10;
/// The running time of a task with neither history nor `expected_duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5 * 60);
/// A running try past its predicted end still needs at least this long.
const FLOOR: Duration = Duration::from_secs(1);
/// The most instances of one day predicted.
const MAX_INSTANCES: i64 = 100_000;

/// One unfinished instance of the day, predicted.
#[derive(Debug, Clone)]
pub struct EtaInstance {
    pub key: InstanceKey,
    /// waiting | queued | running | up_for_retry, or `not_created` (a cron fire still ahead,
    /// or downstream of one).
    pub state: String,
    pub start_at: Option<i64>,
    pub finish_at: Option<i64>,
    /// The running time used, and where it comes from.
    pub duration_ms: i64,
    pub basis: String,
    /// Why it has no prediction, when it has none.
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DayEta {
    pub day: EtlDay,
    pub now: i64,
    /// When the last instance is predicted to finish; None when some cannot be predicted,
    /// or (with no instance left) when nothing remains.
    pub finish_at: Option<i64>,
    /// The chain that decides the finish, first instance first.
    pub critical_path: Vec<InstanceKey>,
    pub instances: Vec<EtaInstance>,
    /// Instances of the day already finished (success, failed, killed).
    pub finished: usize,
    /// The chain to each instance (for the at-risk check), by job index.
    prediction: eta::Prediction,
}

impl DayEta {
    /// The chain that decides when `key` finishes.
    pub fn path_to(&self, key: &InstanceKey) -> Vec<InstanceKey> {
        let index = self.instances.iter().position(|i| &i.key == key);
        eta::path_to(&self.prediction.jobs, index)
            .into_iter()
            .map(|i| self.instances[i].key.clone())
            .collect()
    }

    pub fn instance(&self, key: &InstanceKey) -> Option<&EtaInstance> {
        self.instances.iter().find(|i| &i.key == key)
    }
}

impl Engine {
    /// Predicts each unfinished instance of `day` (its hours included) and the day's finish.
    pub async fn predict_day(&self, day: EtlDay) -> Result<DayEta> {
        let catalog = self.catalog();
        let now = now_ms();
        let mut conn = self.store.read().await?;
        let rows = store::list_instances(
            &mut conn,
            &InstanceFilter {
                period: Some(Period::day(day)),
                limit: MAX_INSTANCES,
                ..Default::default()
            },
        )
        .await?;
        let by_key: HashMap<InstanceKey, &InstanceRow> = rows.iter().map(|r| (r.key(), r)).collect();
        let finished = rows.iter().filter(|r| is_final(r.state)).count();

        // The jobs: unfinished instances, then those the day's cron fires still to come create.
        let mut jobs: BTreeMap<InstanceKey, (String, i64)> = BTreeMap::new();
        for row in rows.iter().filter(|r| !is_final(r.state)) {
            let not_before = match row.state {
                InstanceState::UpForRetry => row.next_try_at.unwrap_or(now).max(now),
                _ => now,
            };
            jobs.insert(row.key(), (row.state.as_str().to_string(), not_before));
        }
        for (key, at) in self.future_instances(&catalog, day, now)? {
            if !by_key.contains_key(&key) {
                let entry = jobs.entry(key).or_insert(("not_created".into(), at));
                entry.1 = entry.1.max(at);
            }
        }
        let order = catalog.dag.in_run_order(jobs.keys().cloned());
        let index: HashMap<&InstanceKey, usize> = order.iter().enumerate().map(|(i, k)| (k, i)).collect();

        // Upstreams outside the jobs: the day's finished ones are known; others are read.
        let ups_of: Vec<Vec<InstanceKey>> = order.iter().map(|k| catalog.dag.upstream_instances(k)).collect();
        let outside: Vec<InstanceKey> = ups_of
            .iter()
            .flatten()
            .filter(|u| !index.contains_key(u) && !by_key.contains_key(*u))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let other_days = store::instances_by_keys(&mut conn, outside.iter()).await?;

        let running = store::running_attempts(&mut conn).await?;
        let job_ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let others: Vec<i64> = running
            .iter()
            .filter(|a| !job_ids.contains(&a.instance_id))
            .map(|a| a.instance_id)
            .collect();
        let other_tasks = store::tasks_of_instances(&mut conn, &others).await?;
        let mut tasks: Vec<&str> = order.iter().map(|k| k.task.as_str()).collect();
        tasks.extend(other_tasks.values().map(String::as_str));
        tasks.sort_unstable();
        tasks.dedup();
        let history = store::recent_durations(&mut conn, &tasks, HISTORY_TRIES).await?;
        let agents = store::list_agents(&mut conn).await?;
        let pools = store::load_pools(&mut conn).await?;
        drop(conn);

        let duration_of = |task: &str| -> (i64, String) {
            if let Some(median) = history.get(task).and_then(|d| eta::median(d)) {
                let n = history[task].len();
                let tries = if n == 1 { "try" } else { "tries" };
                return (median, format!("median of {n} {tries}"));
            }
            match catalog.tasks.get(task).and_then(|t| t.spec.expected_duration) {
                Some(expected) => (expected.as_millis() as i64, "expected_duration".into()),
                None => (
                    DEFAULT_DURATION.as_millis() as i64,
                    format!(
                        "no history (default {})",
                        humantime::format_duration(DEFAULT_DURATION)
                    ),
                ),
            }
        };

        let mut problem = Problem {
            now,
            floor_ms: FLOOR.as_millis() as i64,
            ..Default::default()
        };
        problem.pool_slots = pools
            .iter()
            .map(|p| (p.id.clone(), p.slots.max(0) as u32))
            .collect();
        problem.max_active = catalog
            .tasks
            .values()
            .filter_map(|t| Some((t.spec.id.clone(), t.spec.max_active?)))
            .collect();
        for attempt in running.iter().filter(|a| !job_ids.contains(&a.instance_id)) {
            let Some(task) = other_tasks.get(&attempt.instance_id) else {
                continue;
            };
            let spec = catalog.tasks.get(task).map(|t| &t.spec);
            problem.busy.push(Busy {
                task: task.clone(),
                queue: spec.map(|s| s.queue.clone()).unwrap_or_default(),
                pool: spec.and_then(|s| s.pool.clone()),
                until: attempt.started_at + duration_of(task).0,
            });
        }

        let mut instances = vec![];
        for (i, key) in order.iter().enumerate() {
            let (state, not_before) = jobs[key].clone();
            let (duration_ms, basis) = duration_of(&key.task);
            let stored = catalog.tasks.get(&key.task);
            let mut job = Job::new(&key.task, duration_ms);
            job.not_before = not_before;
            if let Some(t) = stored {
                job.queue = t.spec.queue.clone();
                job.pool = t.spec.pool.clone();
                job.priority = t.spec.priority;
            }
            let row = by_key.get(key);
            if let Some(row) = row.filter(|r| r.state == InstanceState::Running) {
                job.running_since = Some(row.started_at.unwrap_or(now));
                job.queue = row.queue.clone();
            } else if stored.is_none_or(|t| t.paused) {
                job.blocked = Some(format!("task {} is paused", key.task));
            }
            for up in &ups_of[i] {
                if let Some(&u) = index.get(up) {
                    job.upstreams.push(u);
                    continue;
                }
                let found = by_key.get(up).copied().or_else(|| other_days.get(up));
                match found {
                    Some(r) if r.state == InstanceState::Success => {}
                    Some(r) if job.running_since.is_none() => {
                        job.blocked
                            .get_or_insert(format!("waits for {up} ({})", r.state.as_str()));
                    }
                    None if job.running_since.is_none() => {
                        job.blocked
                            .get_or_insert(format!("waits for {up}, which has no instance"));
                    }
                    _ => {}
                }
            }
            problem.jobs.push(job);
            instances.push(EtaInstance {
                key: key.clone(),
                state,
                start_at: None,
                finish_at: None,
                duration_ms,
                basis,
                note: None,
            });
        }
        // Slots per queue: live agents serving it (by name or `*`). An agent serving several
        // queues counts in each: an upper bound where queues share agents.
        let live: Vec<_> = agents
            .iter()
            .filter(|a| a.state == "alive" && a.draining == 0)
            .collect();
        let queues: std::collections::BTreeSet<String> = problem
            .jobs
            .iter()
            .map(|j| j.queue.clone())
            .chain(problem.busy.iter().map(|b| b.queue.clone()))
            .collect();
        for queue in queues {
            let slots: i64 = live
                .iter()
                .filter(|a| {
                    a.queues
                        .split(',')
                        .any(|q| q == queue || q == goflow_agent::queue::ANY_QUEUE)
                })
                .map(|a| a.slots.max(0))
                .sum();
            if slots > 0 {
                problem.queue_slots.insert(queue, slots as u32);
            }
        }
        let prediction = eta::predict(&problem);
        for (instance, predicted) in instances.iter_mut().zip(&prediction.jobs) {
            instance.start_at = predicted.start_at;
            instance.finish_at = predicted.finish_at;
            instance.note = predicted.unpredictable.clone();
        }
        let critical_path = prediction
            .critical_path
            .iter()
            .map(|&i| instances[i].key.clone())
            .collect();
        Ok(DayEta {
            day,
            now,
            finish_at: prediction.finish_at,
            critical_path,
            instances,
            finished,
            prediction,
        })
    }

    /// Instances of `day` that cron fires still ahead will create (the fire's own instance,
    /// and the run downstream of it), each with the fire's time (real clock, ms).
    fn future_instances(&self, catalog: &Catalog, day: EtlDay, now: i64) -> Result<Vec<(InstanceKey, i64)>> {
        let clock_now = self.settings.schedule_clock.now()?;
        // The schedule clock may be a test's: fire times are moved onto the real clock.
        let shift = now - clock_now.timestamp_millis();
        let mut out = vec![];
        for task in catalog.dag.tasks() {
            let Some(expr) = &task.schedule else { continue };
            // Monthly instances are not a day's (as in `status -d`).
            if catalog.is_paused(&task.id) || task.period == goflow_core::PeriodKind::Month {
                continue;
            }
            let Ok(schedule) = Schedule::parse(expr, &task.timezone, task.day_offset) else {
                continue;
            };
            let mut cursor = clock_now;
            // Bounded: a day has at most 24 hourly fires; a minutely cron stops at the cap.
            for _ in 0..1500 {
                let Some(fire) = schedule.next_fire_after(cursor) else {
                    break;
                };
                cursor = fire;
                let period = schedule.period_of(fire, task.period);
                if period.etl_day() > day {
                    break;
                }
                if period.etl_day() != day {
                    continue;
                }
                let at = fire.timestamp_millis() + shift;
                for key in catalog.dag.day_run(&task.id, period) {
                    if key.etl_day() == day {
                        out.push((key, at));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn is_final(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Success | InstanceState::Failed | InstanceState::Killed
    )
}

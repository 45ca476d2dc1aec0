//! What only the leading coordinator runs: recovery after a start, and the timed loops
//! (retries due, cron fires, dead agents, re-pushing lost dispatches).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use goflow_core::catchup::{Decision, DueFire, Missed};
use goflow_core::state::{Event, transition};
use goflow_core::{CatchUp, InstanceState, Period, TaskSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Catalog, Engine, Result};
use crate::store::{self, now_ms};

/// Fires looked at per schedule and pass: a long downtime of a frequent schedule is worked
/// through in batches, each its own transactions.
const FIRES_PER_PASS: usize = 500;

/// Says what a catch-up did, in goflow's log (history has the skipped fires).
fn log_catch_up(
    task: &TaskSpec,
    runs: &[chrono::DateTime<chrono::Utc>],
    missed_runs: usize,
    skipped: usize,
    first_pass: bool,
    now: chrono::DateTime<chrono::Utc>,
) {
    let policy = task.catchup;
    match (policy, runs.last()) {
        (CatchUp::Latest, Some(fire)) => {
            let missed = if skipped > 0 {
                format!(" ({skipped} earlier missed fires are not run)")
            } else {
                String::new()
            };
            if first_pass && (skipped > 0 || now - *fire > goflow_core::catchup::ON_TIME_GRACE) {
                tracing::warn!(
                    "schedule of {} missed its fire at {fire} while goflow was down: catching it up once now{missed}",
                    task.id
                );
            } else {
                tracing::warn!(
                    "schedule of {} is running behind: firing {fire} now{missed}",
                    task.id
                );
            }
        }
        _ => tracing::warn!(
            "schedule of {} missed {}: {} run, {} skipped (catchup: {policy})",
            task.id,
            goflow_core::plural(missed_runs + skipped, "fire"),
            missed_runs,
            skipped
        ),
    }
}

/// Sleeps until `next` (epoch ms; None: an hour), an early `wake`, or shutdown (false).
async fn sleep_until(next: Option<i64>, wake: &Notify, shutdown: &CancellationToken) -> bool {
    let sleep = next.map_or(Duration::from_secs(3600), |at| {
        Duration::from_millis((at - now_ms()).max(0) as u64)
    });
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(sleep) => true,
    }
}

impl Engine {
    /// After a start: tries that were running on an agent of this process are re-dispatched as
    /// new tries (`local_agents_only`: standalone, whose agent died with it), queued instances
    /// are pushed again under the new epoch, finished ones stay as they are.
    pub async fn recover(&self, local_agents_only: bool) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut dispatches = vec![];
        if local_agents_only {
            store::declare_all_agents_dead(&mut tx).await?;
            for attempt in store::running_attempts(&mut tx).await? {
                if let Some(d) = self
                    .recover_lost_try(&mut tx, &attempt, "goflow restarted while it ran", now)
                    .await?
                {
                    dispatches.push(d);
                }
            }
        }
        let queued = store::restamp_queued(&mut tx, self.epoch).await?;
        let requeued = queued.len();
        dispatches.extend(queued.iter().map(|row| self.dispatch_of(row, row.try_number)));
        // Waiting instances whose dependencies are met (their release was lost, or a
        // definition changed while goflow was down) are queued.
        let catalog = self.catalog();
        dispatches.extend(
            self.queue_ready_waiting(&mut tx, &catalog.dag, None, |t| catalog.is_paused(t), now)
                .await?,
        );
        // A lost try requeued above is also among the queued ones: one dispatch each.
        dispatches.sort_by_key(|d| (d.instance_id, d.try_number));
        dispatches.dedup_by_key(|d| (d.instance_id, d.try_number));
        tx.commit().await?;
        if local_agents_only {
            self.liveness.forget_all();
        }
        if !dispatches.is_empty() {
            tracing::info!(
                "recovery: {} dispatched again ({} were queued)",
                goflow_core::plural(dispatches.len(), "instance"),
                requeued
            );
        }
        self.push(dispatches).await;
        self.wake_retries.notify_one();
        self.changed();
        Ok(())
    }

    /// Queues retries when their delay is over; sleeps until the next one or a new one.
    pub async fn retry_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.queue_due_retries().await.unwrap_or_else(|e| {
                tracing::error!("retry loop: {e:#}");
                Some(now_ms() + 1000)
            });
            if !sleep_until(next, &self.wake_retries, &shutdown).await {
                return;
            }
        }
    }

    pub(super) async fn queue_due_retries(&self) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (due, next) = store::retries_due(&mut tx, now).await?;
        let catalog = self.catalog();
        let mut dispatches = vec![];
        let mut paused_next = None;
        for row in due {
            if catalog.is_paused(&row.task_id) {
                // Check again in a while; an unpause queues what is ready.
                paused_next = Some(now + 5_000);
                continue;
            }
            let to = transition(InstanceState::UpForRetry, Event::RetryDue).expect("retry is legal");
            debug_assert_eq!(to, InstanceState::Queued);
            if let Some(t) =
                store::queue_instance(&mut tx, row.id, InstanceState::UpForRetry, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(&row, t));
            }
        }
        tx.commit().await?;
        if !dispatches.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        Ok(match (next, paused_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Fires cron schedules on time. Fires missed (goflow was down, or the task paused) are
    /// decided by each task's catchup policy: run the latest, all, or none; the others are
    /// recorded as skipped with their reason.
    pub async fn cron_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let sleep = self.fire_due_schedules().await.unwrap_or_else(|e| {
                tracing::error!("cron loop: {e:#}");
                Some(Duration::from_secs(1))
            });
            let sleep = match (sleep, self.settings.schedule_clock.poll()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake_cron.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One pass over the schedules; returns how long to sleep (None: nothing scheduled).
    pub(super) async fn fire_due_schedules(&self) -> Result<Option<Duration>> {
        // The first pass after a start is the one that catches up downtime.
        let first_pass = !self.cron_started.swap(true, std::sync::atomic::Ordering::Relaxed);
        let catalog = self.catalog();
        let now = self.settings.schedule_clock.now()?;
        let mut conn = self.store.read().await?;
        let last_fires: HashMap<String, i64> =
            store::schedule_last_fires(&mut conn).await?.into_iter().collect();
        let mut held: HashMap<String, Vec<i64>> = HashMap::new();
        for (task, at) in store::held_fires(&mut conn).await? {
            held.entry(task).or_default().push(at);
        }
        drop(conn);
        let mut earliest: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut more_pending = false;
        for task in catalog.dag.tasks() {
            let Some(expr) = &task.schedule else { continue };
            let schedule = match goflow_core::Schedule::parse(expr, &task.timezone, task.day_offset) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("task {}: {e}", task.id);
                    continue;
                }
            };
            // Without a last fire (not stored yet) nothing is due: a schedule starts at its
            // next time.
            let last = last_fires
                .get(&task.id)
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms));
            let (due, more) = match last {
                Some(last) => schedule.due_fires(last, now, FIRES_PER_PASS),
                None => (vec![], false),
            };
            more_pending |= more;
            if catalog.is_paused(&task.id) {
                self.hold_fires(task, &schedule, &due).await?;
            } else {
                let mut fires = goflow_core::catchup::classify_due(&due, now, more);
                let held = held.remove(&task.id).unwrap_or_default();
                fires.extend(held.iter().filter_map(|ms| {
                    Some(DueFire {
                        at: chrono::DateTime::from_timestamp_millis(*ms)?,
                        missed: Some(Missed::Paused),
                    })
                }));
                if !fires.is_empty() {
                    self.catch_up(&catalog, task, &schedule, &fires, &held, more, first_pass, now)
                        .await?;
                }
            }
            if let Some(next) = schedule.next_fire_after(now) {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        if more_pending {
            return Ok(Some(Duration::ZERO));
        }
        Ok(earliest.map(|next| (next - now).to_std().unwrap_or_default()))
    }

    /// Records fires due while their task is paused as held: the catchup policy decides them
    /// when it is unpaused.
    async fn hold_fires(
        &self,
        task: &TaskSpec,
        schedule: &goflow_core::Schedule,
        due: &[chrono::DateTime<chrono::Utc>],
    ) -> Result<()> {
        if due.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut held = 0;
        for fire in due {
            let day = schedule.period_of(*fire, task.period);
            if store::insert_fire(
                &mut tx,
                &task.id,
                fire.timestamp_millis(),
                &day.key(),
                store::HELD,
                "the task is paused",
                now,
            )
            .await?
            {
                held += 1;
            }
        }
        tx.commit().await?;
        if held > 0 {
            tracing::info!(
                "schedule of {} is paused: {} held until it is unpaused (catchup: {})",
                task.id,
                goflow_core::plural(held, "fire"),
                task.catchup
            );
        }
        Ok(())
    }

    /// Runs and skips the due fires of one unpaused task as its catchup policy decides: the
    /// skipped ones first (recorded with their reason, counted, and one history entry per
    /// reason), then the runs, oldest first.
    #[allow(clippy::too_many_arguments)]
    async fn catch_up(
        &self,
        catalog: &Catalog,
        task: &TaskSpec,
        schedule: &goflow_core::Schedule,
        fires: &[DueFire],
        held: &[i64],
        more: bool,
        first_pass: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let decisions = goflow_core::catchup::decide(task.catchup, fires, more);
        let mut skipped: Vec<(i64, String)> = vec![];
        let mut runs = vec![];
        for (at, decision) in decisions {
            match decision {
                Decision::Run => runs.push(at),
                Decision::Skip(reason) => skipped.push((at.timestamp_millis(), reason)),
            }
        }
        let is_held = |ms: i64| held.contains(&ms);
        if !skipped.is_empty() {
            self.record_skipped(task, schedule, &skipped, &is_held).await?;
        }
        let missed_runs = runs
            .iter()
            .filter(|at| fires.iter().any(|f| f.at == **at && f.missed.is_some()))
            .count();
        if missed_runs > 0 || !skipped.is_empty() {
            log_catch_up(task, &runs, missed_runs, skipped.len(), first_pass, now);
        }
        for fire in runs {
            let held = is_held(fire.timestamp_millis());
            self.fire(catalog, task, fire, schedule.period_of(fire, task.period), held)
                .await?;
        }
        Ok(())
    }

    async fn record_skipped(
        &self,
        task: &TaskSpec,
        schedule: &goflow_core::Schedule,
        skipped: &[(i64, String)],
        is_held: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        // By reason, in order: one history entry each.
        let mut recorded: Vec<(&str, Vec<(i64, String)>)> = vec![];
        for (at, reason) in skipped {
            let day = schedule.period_of(
                chrono::DateTime::from_timestamp_millis(*at).unwrap_or_default(),
                task.period,
            );
            let new = if is_held(*at) {
                store::settle_held_fire(&mut tx, &task.id, *at, store::SKIPPED, reason).await?
            } else {
                store::insert_fire(&mut tx, &task.id, *at, &day.key(), store::SKIPPED, reason, now).await?
            };
            if !new {
                continue;
            }
            match recorded.iter_mut().find(|(r, _)| *r == reason.as_str()) {
                Some((_, list)) => list.push((*at, day.key())),
                None => recorded.push((reason, vec![(*at, day.key())])),
            }
        }
        for (reason, fires) in &recorded {
            let (target, detail) = match fires.as_slice() {
                [(at, day)] => (
                    format!("{}@{day}", task.id),
                    format!("fire at {} not run: {reason}", store::fire_time(*at)),
                ),
                _ => (
                    task.id.clone(),
                    format!(
                        "{} fires not run, {} .. {}: {reason}",
                        fires.len(),
                        store::fire_time(fires[0].0),
                        store::fire_time(fires[fires.len() - 1].0)
                    ),
                ),
            };
            store::record_operation(&mut tx, "goflow", "scheduler", "skip-fire", &target, &detail, now)
                .await?;
        }
        tx.commit().await?;
        let count: usize = recorded.iter().map(|(_, f)| f.len()).sum();
        if count > 0 {
            self.metrics
                .cron_skipped_fires
                .get_or_create(&crate::metrics::TaskLabel {
                    task: task.id.clone(),
                })
                .inc_by(count as u64);
            self.changed();
        }
        Ok(())
    }

    /// One cron fire: recorded once per (schedule, fire time), whoever tries; creates the
    /// period's run of the task: its instance for the fire's period and every task downstream
    /// of it (those that wait for another period's upstream included; a coarser downstream at
    /// the period the fire's falls in, a finer one at each of its parts).
    async fn fire(
        &self,
        catalog: &Catalog,
        task: &TaskSpec,
        fire: chrono::DateTime<chrono::Utc>,
        day: Period,
        held: bool,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        // A period outside the task's calendar (or before its start_day): the fire is recorded
        // as skipped, with the reason, and creates nothing.
        if let Some(why) = catalog.dag.why_not_on(&task.id, day) {
            let reason = format!("{why}: nothing to run");
            let new = if held {
                store::settle_held_fire(
                    &mut tx,
                    &task.id,
                    fire.timestamp_millis(),
                    store::SKIPPED,
                    &reason,
                )
                .await?
            } else {
                store::record_skipped_fire(
                    &mut tx,
                    &task.id,
                    fire.timestamp_millis(),
                    &day.key(),
                    &reason,
                    now,
                )
                .await?
            };
            tx.commit().await?;
            if new {
                tracing::info!("schedule of {} fired at {fire} for {day}, but {reason}", task.id);
                self.metrics
                    .cron_skipped_fires
                    .get_or_create(&crate::metrics::TaskLabel {
                        task: task.id.clone(),
                    })
                    .inc();
                self.changed();
            }
            return Ok(());
        }
        let first = if held {
            store::settle_held_fire(&mut tx, &task.id, fire.timestamp_millis(), store::FIRED, "").await?
        } else {
            store::record_fire(&mut tx, &task.id, fire.timestamp_millis(), day, now).await?
        };
        if !first {
            tx.commit().await?;
            return Ok(());
        }
        let label = crate::metrics::TaskLabel {
            task: task.id.clone(),
        };
        self.metrics.cron_fires.get_or_create(&label).inc();
        let keys = catalog.dag.day_run(&task.id, day);
        let (created, dispatches) = self.create_day_run(&mut tx, catalog, &keys, now).await?;
        tx.commit().await?;
        tracing::info!(
            "schedule of {} fired at {fire} for {day}: {} created",
            task.id,
            goflow_core::plural(created, "instance")
        );
        self.push(dispatches).await;
        self.changed();
        Ok(())
    }

    /// Pushes again the dispatches of instances queued for longer than `after`: one taken from
    /// Redis by an agent that died before claiming it is otherwise lost. The push is idempotent
    /// and the claim a compare-and-set, so a dispatch that was only waiting costs nothing.
    /// An instance queued under another epoch (by a term that ended while writing it) is
    /// stamped with this one first: no agent could claim its old dispatch.
    pub async fn redispatch_loop(self: Arc<Self>, after: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(after / 3) => {}
            }
            match self.redispatch_stale(after).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("{n} queued instances dispatched again"),
                Err(e) => tracing::error!("redispatch: {e:#}"),
            }
        }
    }

    pub(super) async fn redispatch_stale(&self, after: Duration) -> Result<usize> {
        let rows = {
            let mut conn = self.store.read().await?;
            store::queued_before(&mut conn, now_ms() - after.as_millis() as i64).await?
        };
        let (mut current, foreign): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.dispatch_epoch == self.epoch);
        if !foreign.is_empty() {
            let mut tx = self.store.begin().await?;
            for row in foreign {
                if store::restamp_queued_one(&mut tx, row.id, row.try_number, row.dispatch_epoch, self.epoch)
                    .await?
                {
                    tracing::warn!(
                        "{} was queued under epoch {} (now {}): dispatched again",
                        row.key(),
                        row.dispatch_epoch,
                        self.epoch
                    );
                    current.push(row);
                }
            }
            tx.commit().await?;
        }
        // Held back by their pool or max_active: not lost, offered below as slots free.
        let dispatches: Vec<_> = current
            .iter()
            .filter(|r| r.pool_wait.is_none())
            .map(|r| self.dispatch_of(r, r.try_number))
            .collect();
        let pushed = dispatches.len();
        self.push(dispatches).await;
        Ok(pushed + self.offer_held().await?)
    }

    /// PostgreSQL only: says once when autovacuum is off, then analyzes `instances` and
    /// `attempts` whenever they changed by as many rows as they hold (see `store::statistics`), so
    /// that a claim by id never scans the queued rows.
    pub async fn statistics_loop(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        if self.store.dialect() != store::Dialect::Postgres {
            return;
        }
        let mut conn = match self.store.read().await {
            Ok(conn) => conn,
            Err(e) => return tracing::warn!("planner statistics: {e:#}"),
        };
        if let Ok(true) = store::autovacuum_off(&mut conn).await {
            tracing::warn!(
                "PostgreSQL's autovacuum is off: goflow analyzes its busiest tables itself, but their \
                 dead rows pile up until someone runs VACUUM (instances, attempts, log_chunks)"
            );
        }
        drop(conn);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let analyzed = async {
                let mut conn = self.store.read().await?;
                store::analyze_grown_tables(&mut conn).await
            };
            match analyzed.await {
                Ok(tables) => {
                    for (table, changes) in tables {
                        tracing::info!("analyzed {table}: {changes} rows changed since its last analysis");
                    }
                }
                Err(e) => tracing::warn!("planner statistics: {e:#}"),
            }
        }
    }

    /// Refreshes the metrics read from the store (instances by state, queues) and the agents'
    /// gauges (slots, running tries, heartbeat age), every `period`, while leading.
    pub async fn metrics_loop(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.refresh_metrics().await {
                tracing::warn!("metrics: {e:#}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    pub async fn refresh_metrics(&self) -> anyhow::Result<()> {
        self.metrics.refresh_from_store(&self.store).await?;
        let mut conn = self.store.read().await?;
        let running: HashMap<String, i64> = store::running_by_agent(&mut conn).await?.into_iter().collect();
        let slots: HashMap<String, i64> = store::list_agents(&mut conn)
            .await?
            .into_iter()
            .map(|a| (a.id, a.slots))
            .collect();
        drop(conn);
        let agents: Vec<(String, i64, i64, i64)> = self
            .liveness
            .wall_times()
            .into_iter()
            .map(|(id, seen)| {
                let used = running.get(&id).copied().unwrap_or(0);
                let slots = slots.get(&id).copied().unwrap_or(0);
                (id, slots, used, seen)
            })
            .collect();
        self.metrics.set_agents(&agents);
        Ok(())
    }

    /// Declares agents dead after `worker_timeout` of silence and re-dispatches their tries.
    pub async fn reaper_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.settings.worker_timeout / 4).max(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(e) = self.reap_dead_agents(period).await {
                tracing::error!("reaper: {e:#}");
            }
        }
    }
}

//! What only the leading coordinator runs: recovery after a start, and the timed loops
//! (retries due, cron fires, dead agents, re-pushing lost dispatches).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use goflow_core::state::{Event, transition};
use goflow_core::{EtlDay, InstanceState, TaskSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Catalog, Engine, Result};
use crate::store::{self, now_ms};

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

    /// Fires cron schedules on time; after downtime, the latest missed fire of each schedule
    /// runs once (and the log says so).
    pub async fn cron_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.fire_due_schedules().await.unwrap_or_else(|e| {
                tracing::error!("cron loop: {e:#}");
                Some(now_ms() + 1000)
            });
            if !sleep_until(next, &self.wake_cron, &shutdown).await {
                return;
            }
        }
    }

    async fn fire_due_schedules(&self) -> Result<Option<i64>> {
        // The first pass after a start is the one that catches up downtime.
        let first_pass = !self.cron_started.swap(true, std::sync::atomic::Ordering::Relaxed);
        let catalog = self.catalog();
        let mut conn = self.store.read().await?;
        let last_fires: HashMap<String, i64> =
            store::schedule_last_fires(&mut conn).await?.into_iter().collect();
        drop(conn);
        let now = chrono::Utc::now();
        let mut earliest: Option<i64> = None;
        for task in catalog.dag.tasks() {
            let Some(expr) = &task.schedule else { continue };
            let schedule = match goflow_core::Schedule::parse(expr, &task.timezone, task.day_offset) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("task {}: {e}", task.id);
                    continue;
                }
            };
            let last = last_fires
                .get(&task.id)
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms));
            let plan = schedule.plan(last, now);
            if let Some(fire) = plan.due {
                let late = now - fire;
                let missed = if plan.skipped > 0 {
                    format!(" ({} earlier missed fires are not run)", plan.skipped)
                } else {
                    String::new()
                };
                if first_pass && (plan.skipped > 0 || late > chrono::Duration::seconds(30)) {
                    tracing::warn!(
                        "schedule of {} missed its fire at {fire} while goflow was down: catching it up once now{missed}",
                        task.id
                    );
                } else if plan.skipped > 0 {
                    tracing::warn!(
                        "schedule of {} is running behind: firing {fire} now{missed}",
                        task.id
                    );
                }
                self.fire(&catalog, task, fire, schedule.etl_day_of(fire), plan.skipped)
                    .await?;
            }
            if let Some(next) = plan.next {
                let next = next.timestamp_millis();
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        Ok(earliest)
    }

    /// One cron fire: recorded once per (schedule, fire time), whoever tries; creates the day's
    /// run of the task: its instance for the fire's etl_day and every task downstream of it at
    /// that day (those that wait for another day's upstream included).
    async fn fire(
        &self,
        catalog: &Catalog,
        task: &TaskSpec,
        fire: chrono::DateTime<chrono::Utc>,
        day: EtlDay,
        skipped: u32,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if !store::record_fire(&mut tx, &task.id, fire.timestamp_millis(), day, skipped, now).await? {
            tx.commit().await?;
            return Ok(());
        }
        let label = crate::metrics::TaskLabel {
            task: task.id.clone(),
        };
        self.metrics.cron_fires.get_or_create(&label).inc();
        if skipped > 0 {
            self.metrics
                .cron_skipped_fires
                .get_or_create(&label)
                .inc_by(skipped.into());
        }
        if !catalog.dag.exists_on(&task.id, day) {
            tracing::info!(
                "schedule of {} fired for {day}, before its start_day: nothing to run",
                task.id
            );
            tx.commit().await?;
            return Ok(());
        }
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

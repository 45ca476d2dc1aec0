//! Alerts (issue 11): recorded in the transaction of the event that raises them (a final
//! failure, a retry), or by the leader's check loop (deadlines, long runs); delivered by the
//! leader's delivery loop with exponential backoff. The `alerts` table's unique key (instance,
//! kind, try, channel) makes every event alert once, however often it is seen.

use std::sync::Arc;
use std::time::Duration;

use goflow_core::EtlDay;
use tokio_util::sync::CancellationToken;

use super::{Engine, Result};
use crate::alerts::{AlertKind, AlertMessage, Sender};
use crate::store::{self, AlertRow, Db, NewAlert, now_ms};

/// How often the delivery loop looks for due alerts when nothing woke it.
const DELIVERY_POLL: Duration = Duration::from_millis(500);

impl Engine {
    /// Records `alert` for every channel its task and kind are routed to. True if any row was
    /// new (the event had not alerted before).
    pub(super) async fn record_alert(
        &self,
        db: &mut impl Db,
        kind: AlertKind,
        alert: &NewAlert<'_>,
        now: i64,
    ) -> anyhow::Result<bool> {
        let mut new = false;
        for channel in self.settings.alerts.route(alert.task_id, kind) {
            new |= store::insert_alert(db, alert, channel, now).await?;
        }
        Ok(new)
    }

    /// Sends due alerts until shutdown; a failed delivery is tried again after a delay that
    /// doubles each time (`AlertSettings::backoff` up to `max_backoff`), `max_attempts` times.
    pub async fn alert_delivery_loop(self: Arc<Self>, shutdown: CancellationToken) {
        if self.settings.alerts.channels.is_empty() {
            return;
        }
        let sender = match Sender::new() {
            Ok(sender) => sender,
            Err(e) => {
                tracing::error!("alerts will not be sent: {e:#}");
                return;
            }
        };
        loop {
            if let Err(e) = self.deliver_due_alerts(&sender).await {
                tracing::warn!("alert delivery: {e:#}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DELIVERY_POLL) => {}
            }
        }
    }

    async fn deliver_due_alerts(&self, sender: &Sender) -> Result<()> {
        let settings = &self.settings.alerts;
        let due = {
            let mut conn = self.store.read().await?;
            store::due_alerts(&mut conn, now_ms(), 100).await?
        };
        for row in due {
            let result = match settings.channel(&row.channel) {
                Some(channel) => sender.send(channel, &self.alert_message(&row)).await,
                None => Err(anyhow::anyhow!(
                    "channel {:?} is no longer configured",
                    row.channel
                )),
            };
            let now = now_ms();
            let mut tx = self.store.begin().await?;
            match result {
                Ok(()) => {
                    store::record_delivery(&mut tx, row.id, None, None, now).await?;
                    tracing::info!(
                        "alert {} ({} {} {}) sent to {}",
                        row.id,
                        row.kind,
                        row.task_id,
                        row.etl_day,
                        row.channel
                    );
                }
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let next = (attempts < settings.max_attempts as i64).then(|| {
                        let delay = settings
                            .backoff
                            .saturating_mul(1u32 << (attempts - 1).min(20) as u32)
                            .min(settings.max_backoff);
                        now + delay.as_millis() as i64
                    });
                    let error = format!("{e:#}");
                    store::record_delivery(&mut tx, row.id, Some(&error), next, now).await?;
                    match next {
                        Some(_) => tracing::warn!(
                            "alert {} to {} failed (attempt {attempts}), will retry: {error}",
                            row.id,
                            row.channel
                        ),
                        None => tracing::error!(
                            "alert {} to {} failed {attempts} times, giving up: {error}",
                            row.id,
                            row.channel
                        ),
                    }
                }
            }
            tx.commit().await?;
            self.changed();
        }
        Ok(())
    }

    fn alert_message(&self, row: &AlertRow) -> AlertMessage {
        AlertMessage {
            id: row.id,
            kind: row.kind.clone(),
            task: row.task_id.clone(),
            etl_day: row.etl_day.clone(),
            state: row.instance_state.clone(),
            try_number: row.try_number,
            message: row.message.clone(),
            link: self.settings.alerts.link(&row.task_id, &row.etl_day),
            created_at: row.created_at,
        }
    }

    /// Checks deadlines and long runs every `check_interval` until shutdown.
    pub async fn alert_check_loop(self: Arc<Self>, shutdown: CancellationToken) {
        if self.settings.alerts.channels.is_empty() {
            return;
        }
        loop {
            if let Err(e) = self.check_deadlines_and_long_runs().await {
                tracing::warn!("alert checks: {e:#}");
            }
            if let Err(e) = self.check_deadlines_at_risk().await {
                tracing::warn!("deadlines at risk: {e:#}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.alerts.check_interval) => {}
            }
        }
    }

    /// One pass: a deadline alert for each task's latest data dates whose deadline has passed
    /// without a successful instance (missing instances included), and a long-running alert
    /// for each try running past its task's expected duration.
    pub async fn check_deadlines_and_long_runs(&self) -> Result<()> {
        let now = now_ms();
        let catalog = self.catalog();
        let mut conn = self.store.read().await?;
        let mut raise = vec![];
        for task in catalog.tasks.values() {
            let Some(deadline) = &task.spec.deadline else {
                continue;
            };
            let latest = deadline.latest_due_day(now);
            // The latest due date and the one before (caught up after a pause of the leader),
            // only those whose deadline passed while the task existed.
            for day in [latest.offset(-1), latest] {
                let due = deadline.due_at(day);
                if due <= task.created_at || task.spec.start_day.is_some_and(|start| day < start) {
                    continue;
                }
                let state = store::instance_state(&mut conn, &task.spec.id, &day.compact()).await?;
                if state.as_deref() == Some("success") {
                    continue;
                }
                let state = state.unwrap_or_else(|| "missing".into());
                let message = format!(
                    "{} of {} was due by {} ({}); it is {state}",
                    task.spec.id,
                    day,
                    chrono::DateTime::from_timestamp_millis(due)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    deadline,
                );
                raise.push((AlertKind::Deadline, task.spec.id.clone(), day, 0, state, message));
            }
        }
        for running in store::running_tries(&mut conn).await? {
            let Some(expected) = catalog
                .tasks
                .get(&running.task_id)
                .and_then(|t| t.spec.expected_duration)
            else {
                continue;
            };
            let ran = Duration::from_millis((now - running.started_at).max(0) as u64);
            if ran <= expected {
                continue;
            }
            let Ok(day) = EtlDay::parse(&running.etl_day) else {
                continue;
            };
            let message = format!(
                "try {} has run for {} (expected: {})",
                running.try_number,
                humantime::format_duration(Duration::from_secs(ran.as_secs())),
                humantime::format_duration(expected)
            );
            raise.push((
                AlertKind::LongRunning,
                running.task_id,
                day,
                running.try_number,
                "running".into(),
                message,
            ));
        }
        drop(conn);
        if raise.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let mut new = 0;
        for (kind, task, day, try_number, state, message) in &raise {
            let alert = NewAlert {
                task_id: task,
                etl_day: &day.compact(),
                kind: kind.as_str(),
                try_number: *try_number,
                instance_state: state,
                message,
            };
            if self.record_alert(&mut tx, *kind, &alert, now).await? {
                new += 1;
                tracing::warn!("{} alert: {message}", kind.as_str());
            }
        }
        tx.commit().await?;
        if new > 0 {
            self.changed();
        }
        Ok(())
    }

    /// The latest alerts, newest first (`task` filters when not empty).
    pub async fn list_alerts(&self, task: &str, limit: i64) -> Result<Vec<AlertRow>> {
        let mut conn = self.store.read().await?;
        Ok(store::list_alerts(&mut conn, task, limit.clamp(1, 10_000)).await?)
    }
}

impl Engine {
    /// In `finish`'s transaction: a final failure (failed or timed out, not killed) raises a
    /// `failed` alert, a failed try with another to come a `retry` alert.
    pub(super) async fn record_try_alert(
        &self,
        db: &mut impl Db,
        row: &store::InstanceRow,
        report: &super::TryReport,
        to: goflow_core::InstanceState,
        now: i64,
    ) -> anyhow::Result<()> {
        use goflow_core::{InstanceState, TryOutcome};
        let kind = match (report.outcome, to) {
            (TryOutcome::Failed | TryOutcome::TimedOut, InstanceState::Failed) => AlertKind::Failed,
            (TryOutcome::Failed | TryOutcome::TimedOut, InstanceState::UpForRetry) => AlertKind::Retry,
            _ => return Ok(()),
        };
        let verb = match report.outcome {
            TryOutcome::TimedOut => "timed out",
            _ => "failed",
        };
        // The agent's message says how (`exit code 3`, `timed out after 10m`, ...).
        let detail = match (&report.message, report.exit_code) {
            (m, _) if !m.is_empty() => m.clone(),
            (_, Some(code)) => format!("exit code {code}"),
            _ => String::new(),
        };
        let mut message = format!("try {} of {} {verb}", row.try_number, row.max_tries);
        if !detail.is_empty() {
            message.push_str(&format!(": {detail}"));
        }
        let alert = NewAlert {
            task_id: &row.task_id,
            etl_day: &row.etl_day.compact(),
            kind: kind.as_str(),
            try_number: row.try_number,
            instance_state: to.as_str(),
            message: &message,
        };
        self.record_alert(db, kind, &alert, now).await?;
        Ok(())
    }
}

impl Engine {
    /// A try lost once too often (its agents died) fails the instance for good: a `failed`
    /// alert, as for a try that failed itself.
    pub(super) async fn record_lost_alert(
        &self,
        db: &mut impl Db,
        row: &store::InstanceRow,
        to: goflow_core::InstanceState,
        message: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        if to != goflow_core::InstanceState::Failed {
            return Ok(());
        }
        let message = format!("try {} of {}: {message}", row.try_number, row.max_tries);
        let alert = NewAlert {
            task_id: &row.task_id,
            etl_day: &row.etl_day.compact(),
            kind: AlertKind::Failed.as_str(),
            try_number: row.try_number,
            instance_state: to.as_str(),
            message: &message,
        };
        self.record_alert(db, AlertKind::Failed, &alert, now).await?;
        Ok(())
    }
}

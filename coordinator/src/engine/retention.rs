//! Retention (issue 18): `clean --before DAY` and the leader's nightly clean for
//! `--retention-days N`. Deletes instances of days before the cut with their tries and logs
//! (archived objects too), and operations recorded before it, a batch per transaction, so the
//! scheduling writer takes turns with it; records what it removed as a `clean` operation.
//! What stays is `goflow_core::retention`'s rule: unfinished instances and what they wait for.

use std::sync::Arc;
use std::time::Duration;

use goflow_core::{EtlDay, retention};
use tokio_util::sync::CancellationToken;

use super::{Caller, Engine, EngineError, Result};
use crate::store::{self, now_ms};

/// Instances deleted per transaction: small enough that a scheduling transaction never waits
/// long behind one (each takes their tries and log chunks with it).
const INSTANCE_BATCH: i64 = 200;
/// Operations deleted per transaction.
const OPERATION_BATCH: i64 = 2_000;
/// Instances kept that the answer names (all of them are counted).
const KEPT_EXAMPLES: usize = 10;
/// Who the nightly clean is recorded as.
pub const RETENTION_ACTOR: &str = "retention";

/// What a clean removed (or, dry, would remove) and what it kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    pub before: Option<EtlDay>,
    pub dry_run: bool,
    pub instances: i64,
    pub tries: i64,
    pub log_chunks: i64,
    pub log_bytes: i64,
    pub log_objects: i64,
    pub operations: i64,
    pub kept: i64,
    pub kept_examples: Vec<String>,
}

impl CleanReport {
    /// One line for people and for the operations log.
    pub fn summary(&self) -> String {
        let day = self.before.map(|d| d.compact()).unwrap_or_default();
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let mut text = format!(
            "{verb} {} before {day} with {} and {} of log ({} archived), and {}",
            goflow_core::plural(self.instances as usize, "instance"),
            match self.tries {
                1 => "1 try".to_string(),
                n => format!("{n} tries"),
            },
            goflow_core::plural(self.log_bytes as usize, "byte"),
            goflow_core::plural(self.log_objects as usize, "object"),
            goflow_core::plural(self.operations as usize, "operation"),
        );
        if self.kept > 0 {
            text.push_str(&format!(
                "; kept {} that unfinished work still needs",
                goflow_core::plural(self.kept as usize, "instance")
            ));
        }
        text
    }
}

/// Midnight UTC at the start of `day`, in epoch ms: operations before it are older than it.
fn start_of(day: EtlDay) -> i64 {
    day.date()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

impl Engine {
    /// Deletes what is older than `before` (see the module). With `dry_run`, counts and
    /// deletes nothing. The cut must lie in the past: today's and future days are refused.
    pub async fn clean(&self, before: EtlDay, dry_run: bool, caller: &Caller) -> Result<CleanReport> {
        let today = EtlDay::from_date(chrono::Utc::now().date_naive());
        if before > today {
            return Err(EngineError::Invalid(format!(
                "--before {before} is in the future: clean deletes history, name a past day"
            )));
        }
        let mut report = CleanReport {
            before: Some(before),
            dry_run,
            ..CleanReport::default()
        };
        let mut after = 0;
        let mut objects = vec![];
        loop {
            let catalog = self.catalog();
            // Each batch decides what stays inside its own transaction: an instance created or
            // queued since the last batch (a backfill, a redo) is seen before anything goes.
            let mut tx = self.store.begin().await?;
            let batch = store::old_instances(&mut tx, before, after, INSTANCE_BATCH).await?;
            let Some(last) = batch.last() else {
                tx.rollback().await.ok();
                break;
            };
            after = last.id;
            let unfinished = store::unfinished_instances(&mut tx).await?;
            let needed = retention::depended_on(&catalog.dag, &unfinished, before);
            let mut doomed = vec![];
            for old in &batch {
                match retention::keep_reason(old.state, &old.key, &needed) {
                    Some(why) => {
                        report.kept += 1;
                        if report.kept_examples.len() < KEPT_EXAMPLES {
                            report
                                .kept_examples
                                .push(format!("{} ({}): {why}", old.key, old.state));
                        }
                    }
                    None => doomed.push(old.id),
                }
            }
            let (removed, batch_objects) = store::instances_contents(&mut tx, &doomed).await?;
            report.instances += doomed.len() as i64;
            report.tries += removed.tries;
            report.log_chunks += removed.log_chunks;
            report.log_bytes += removed.log_bytes;
            report.log_objects += batch_objects.len() as i64;
            if dry_run {
                tx.rollback().await.ok();
                continue;
            }
            store::delete_instances(&mut tx, &doomed).await?;
            tx.commit().await?;
            objects.extend(batch_objects);
            if !doomed.is_empty() {
                // A deleted success no longer counts for its downstreams.
                self.joins.clear();
            }
            // Let waiting scheduling work have the writer between batches.
            tokio::task::yield_now().await;
        }
        let cut = start_of(before);
        if dry_run {
            let mut conn = self.store.read().await?;
            report.operations = store::count_old_operations(&mut conn, cut).await?;
            return Ok(report);
        }
        // A day's deadline risks go with its instances (one statement: a row per task and day).
        let mut tx = self.store.begin().await?;
        store::delete_old_deadline_risks(&mut tx, &before.compact()).await?;
        tx.commit().await?;
        loop {
            let mut tx = self.store.begin().await?;
            let Some((last, _)) = store::old_operations_end(&mut tx, cut, OPERATION_BATCH).await? else {
                tx.rollback().await.ok();
                break;
            };
            report.operations += store::delete_old_operations(&mut tx, cut, last).await?;
            tx.commit().await?;
            tokio::task::yield_now().await;
        }
        // The rows are gone: the objects are nobody's now. One that cannot be deleted is
        // only storage (the store's own lifecycle rules can expire it); say so and go on.
        if let Some(archive) = &self.settings.log_archive {
            for object in &objects {
                if let Err(e) = archive.delete(object).await {
                    tracing::warn!("clean: {e:#}; the object stays in the store");
                }
            }
        } else if !objects.is_empty() {
            tracing::warn!(
                "clean: {} archived log objects stay in the store: this coordinator has no --log-archive",
                objects.len()
            );
        }
        let mut tx = self.store.begin().await?;
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "clean",
            &format!("before {}", before.compact()),
            &report.summary(),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.changed();
        Ok(report)
    }

    /// With `--retention-days N`: every night (03:00 on this coordinator's clock) deletes
    /// what is older than N days; also soon after a term starts when the last nightly clean is
    /// more than a day old, so a coordinator restarted every evening still cleans.
    pub async fn retention_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(days) = self.settings.retention_days else {
            return;
        };
        let overdue = async {
            let mut conn = self.store.read().await?;
            let last = store::last_clean_by(&mut conn, RETENTION_ACTOR).await?;
            anyhow::Ok(last.is_none_or(|at| now_ms() - at > 24 * 3600 * 1000))
        };
        let mut wait = match overdue.await {
            Ok(true) => Duration::from_secs(5),
            Ok(false) => until_next_night(),
            Err(e) => {
                tracing::warn!("retention: cannot tell when it last ran: {e:#}");
                Duration::from_secs(60)
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let today = EtlDay::from_date(chrono::Local::now().date_naive());
            let before = retention::cutoff(today, days);
            let caller = Caller {
                actor: RETENTION_ACTOR.into(),
                client: format!("--retention-days {days}"),
            };
            wait = match self.clean(before, false, &caller).await {
                Ok(report) => {
                    tracing::info!("retention: {}", report.summary());
                    until_next_night()
                }
                Err(e) => {
                    tracing::error!(
                        "retention: clean before {before} failed: {e}; trying again in 10 minutes"
                    );
                    Duration::from_secs(600)
                }
            };
        }
    }
}

/// Until 03:00 local time next (today's if still ahead).
fn until_next_night() -> Duration {
    let now = chrono::Local::now();
    let mut at = now.date_naive().and_hms_opt(3, 0, 0).expect("03:00 exists");
    if at <= now.naive_local() {
        at += chrono::Duration::days(1);
    }
    // A day whose 03:00 does not exist locally (a DST jump) falls back to 24 h from now.
    match at.and_local_timezone(chrono::Local).earliest() {
        Some(at) => (at - now).to_std().unwrap_or(Duration::from_secs(3600)),
        None => Duration::from_secs(24 * 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_counts_and_what_stayed() {
        let report = CleanReport {
            before: Some(EtlDay::parse("20260101").unwrap()),
            dry_run: false,
            instances: 3,
            tries: 4,
            log_chunks: 9,
            log_bytes: 1200,
            log_objects: 1,
            operations: 1,
            kept: 1,
            kept_examples: vec![],
        };
        assert_eq!(
            report.summary(),
            "deleted 3 instances before 20260101 with 4 tries and 1200 bytes of log (1 object archived), \
             and 1 operation; kept 1 instance that unfinished work still needs"
        );
    }

    #[test]
    fn operations_older_than_a_day_are_before_its_midnight_utc() {
        assert_eq!(start_of(EtlDay::parse("19700102").unwrap()), 86_400_000);
    }

    #[test]
    fn the_next_night_is_within_a_day() {
        let wait = until_next_night();
        assert!(wait <= Duration::from_secs(25 * 3600), "{wait:?}");
    }
}

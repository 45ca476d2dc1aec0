//! Logs to object storage (issue 18): the leader's loop that uploads ended tries' logs, and
//! the read of archived bytes for `TailLogs`.
//!
//! A try's log is uploaded whole, to one object, a little after the try ended (agents may send
//! the tail of the output just after their finish report). Only once the store confirmed the
//! upload are its chunks deleted, in one transaction that also records the object, and only
//! if no other upload recorded first (a compare-and-set on the archived length), so a deposed
//! leader's late upload changes nothing. Output that still arrives later is stored in chunks
//! as usual and makes the try due again: the next upload writes the whole log again. A failed
//! upload leaves everything in the database and is tried again with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, Result};
use crate::archive::LogArchive;
use crate::store::{self, ArchiveDue, AttemptRow, now_ms};

/// How long after a try ended its log is uploaded.
const ARCHIVE_AFTER: Duration = Duration::from_secs(5);
/// How often the loop looks for logs to upload when the last look found none.
const ARCHIVE_POLL: Duration = Duration::from_secs(2);
/// Tries looked at per pass.
const ARCHIVE_BATCH: i64 = 100;
/// Waits after failed uploads of one try: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Failed uploads of each try, and when to try again.
#[derive(Default)]
struct Failures(HashMap<String, (u32, Instant)>);

impl Failures {
    fn waiting(&self, attempt_id: &str, now: Instant) -> bool {
        self.0.get(attempt_id).is_some_and(|(_, at)| *at > now)
    }

    /// Records a failure; true for the first one (worth a warning, later ones are quieter).
    fn failed(&mut self, attempt_id: &str, now: Instant) -> bool {
        let entry = self.0.entry(attempt_id.to_string()).or_insert((0, now));
        entry.0 += 1;
        let wait = FIRST_RETRY
            .saturating_mul(1 << (entry.0 - 1).min(16))
            .min(MAX_RETRY);
        entry.1 = now + wait;
        entry.0 == 1
    }

    fn succeeded(&mut self, attempt_id: &str) -> Option<u32> {
        self.0.remove(attempt_id).map(|(n, _)| n)
    }
}

impl Engine {
    /// Uploads ended tries' logs until shutdown (see the module). Nothing without an archive.
    pub async fn log_archive_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(archive) = self.settings.log_archive.clone() else {
            return;
        };
        let mut failures = Failures::default();
        loop {
            let busy = match self.archive_due_logs(&archive, &mut failures).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!("log archive: {e:#}");
                    false
                }
            };
            let pause = if busy { Duration::ZERO } else { ARCHIVE_POLL };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.term_ended.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: uploads what is due and not waiting after a failure. True when it uploaded
    /// something and more may be due at once.
    async fn archive_due_logs(&self, archive: &LogArchive, failures: &mut Failures) -> Result<bool> {
        let finished_before = now_ms() - ARCHIVE_AFTER.as_millis() as i64;
        let due = {
            let mut conn = self.store.read().await?;
            store::logs_due_for_archive(&mut conn, finished_before, ARCHIVE_BATCH).await?
        };
        let mut uploaded = 0;
        for try_log in &due {
            let now = Instant::now();
            if failures.waiting(&try_log.attempt_id, now) {
                continue;
            }
            match self.archive_log(archive, try_log).await {
                Ok(()) => {
                    uploaded += 1;
                    if let Some(failed) = failures.succeeded(&try_log.attempt_id) {
                        tracing::info!(
                            attempt_id = %try_log.attempt_id,
                            "log archived after {failed} failed uploads"
                        );
                    }
                }
                Err(e) => {
                    if failures.failed(&try_log.attempt_id, now) {
                        tracing::warn!(
                            attempt_id = %try_log.attempt_id,
                            "log archive: {e:#}; the log stays in the database and the upload is retried"
                        );
                    } else {
                        tracing::debug!(attempt_id = %try_log.attempt_id, "log archive: {e:#}");
                    }
                }
            }
            if self.term_ended.is_cancelled() {
                break;
            }
        }
        Ok(uploaded > 0 && due.len() as i64 == ARCHIVE_BATCH)
    }

    /// Uploads one try's whole log and, once confirmed, drops its chunks.
    async fn archive_log(&self, archive: &LogArchive, due: &ArchiveDue) -> anyhow::Result<()> {
        let was = due.log_archived_bytes;
        let end = due.log_bytes;
        let object = archive.object_for(&due.task_id, &due.etl_day, &due.attempt_id);
        let mut log = match (&due.log_object, was) {
            (Some(old), was) if was > 0 => archive.read(old, 0..was as u64).await?,
            _ => vec![],
        };
        if end > was {
            let mut conn = self.store.read().await?;
            let mut rest = store::read_log(&mut conn, &due.attempt_id, was, end - was).await?;
            drop(conn);
            // Output stored since the look is past `end`: the next upload takes it.
            rest.truncate((end - was) as usize);
            anyhow::ensure!(
                rest.len() as i64 == end - was,
                "the log of try {} has a missing chunk in the database at {}; not archived",
                due.attempt_id,
                was + rest.len() as i64
            );
            log.extend_from_slice(&rest);
        }
        if end > 0 {
            archive.put(&object, log).await?;
        }
        let mut tx = self.store.begin_logs().await?;
        let recorded =
            store::record_log_archived(&mut tx, &due.attempt_id, was, end, &object, now_ms()).await?;
        tx.commit().await?;
        if recorded {
            tracing::debug!(attempt_id = %due.attempt_id, bytes = end, %object, "log archived");
            if let Some(old) = &due.log_object
                && *old != object
                && let Err(e) = archive.delete(old).await
            {
                tracing::warn!("log archive: {e:#}; the old object stays in the store");
            }
        }
        Ok(())
    }

    /// Bytes of `attempt`'s log from `offset` (at most `max`) that are in its archived object.
    pub(crate) async fn read_archived_log(
        &self,
        attempt: &AttemptRow,
        offset: i64,
        max: i64,
    ) -> Result<Vec<u8>> {
        let Some(object) = &attempt.log_object else {
            return Ok(vec![]);
        };
        let Some(archive) = &self.settings.log_archive else {
            return Err(EngineError::Conflict(format!(
                "the log of try {} is archived as {object}, and this coordinator has no --log-archive: \
                 start every coordinator with the same --log-archive URL",
                attempt.id
            )));
        };
        let end = attempt.log_archived_bytes.min(offset + max);
        Ok(archive
            .read(object, offset.max(0) as u64..end.max(offset) as u64)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_uploads_back_off_doubling_up_to_the_maximum() {
        let mut failures = Failures::default();
        let now = Instant::now();
        assert!(
            failures.failed("1-1", now),
            "the first failure is worth a warning"
        );
        assert!(failures.waiting("1-1", now));
        assert!(!failures.waiting("1-1", now + FIRST_RETRY));
        assert!(!failures.failed("1-1", now));
        assert!(failures.waiting("1-1", now + FIRST_RETRY));
        for _ in 0..20 {
            failures.failed("1-1", now);
        }
        assert!(!failures.waiting("1-1", now + MAX_RETRY));
        assert!(!failures.waiting("2-1", now));
        assert_eq!(failures.succeeded("1-1"), Some(22));
        assert!(!failures.waiting("1-1", now));
    }
}

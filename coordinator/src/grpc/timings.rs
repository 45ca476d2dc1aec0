//! Where an instance's time went (issue 19), as the API shows it.

use goflow_core::timings::try_running;
use goflow_proto as pb;
use tonic::Status;

use super::internal;
use crate::store::{self, InstanceRow, TryTimes};

/// Fills the timings of `instances` (made from `rows`, in the same order), with one read of
/// their tries for them all. An instance created before timings were kept has none.
pub(super) async fn attach(
    conn: &mut store::Reader,
    rows: &[InstanceRow],
    instances: &mut [pb::Instance],
) -> Result<(), Status> {
    let ids: Vec<i64> = rows
        .iter()
        .filter(|r| r.timings.is_some())
        .map(|r| r.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let tries = store::try_times_of(conn, &ids).await.map_err(internal)?;
    let now = store::now_ms();
    for (row, instance) in rows.iter().zip(instances) {
        instance.timings = timings_pb(row, tries.get(&row.id).map_or(&[], Vec::as_slice), now);
    }
    Ok(())
}

/// The timings of `row` as of `now`, with the tries of its current run (those claimed since
/// it began: a redo's tries continue the numbering).
fn timings_pb(row: &InstanceRow, tries: &[TryTimes], now: i64) -> Option<pb::InstanceTimings> {
    let run = row.timings?;
    let totals = run.as_of(now);
    Some(pb::InstanceTimings {
        waiting_upstreams: totals.waiting_upstreams,
        waiting_slots: totals.waiting_slots,
        queued: totals.queued,
        claimed_to_started: totals.claimed_to_started,
        running: totals.running,
        retry_delays: totals.retry_delays,
        tries: tries
            .iter()
            .filter(|(_, started, _)| *started >= run.run_started_at)
            .map(|&(try_number, started, finished)| pb::TryTiming {
                try_number: try_number as i32,
                running: try_running(started, finished, now),
            })
            .collect(),
        phase: run.phase.as_str().to_string(),
        run_started_at: run.run_started_at,
    })
}

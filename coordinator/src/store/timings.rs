//! Where an instance's time went (issue 19): core's rule ([`Timings::leave`]) as SQL, set
//! inside the UPDATE that already changes the state, so no transition costs an extra statement.
//!
//! Each transition's UPDATE starts with [`LEAVE_PHASE`]: the current phase's time since
//! `phase_since` is added to its column, then `phase` and `phase_since` name the next one. The
//! additions come first in the SET list: MySQL evaluates assignments left to right, so they
//! must read `phase` and `phase_since` before those are overwritten (PostgreSQL and SQLite
//! read the old row either way).

use std::collections::HashMap;
use std::sync::LazyLock;

use goflow_core::timings::{Phase, RECORDED, RunTimings, Timings};
use sqlx::Row;
use sqlx::any::AnyRow;

pub(super) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// `ms_x = ms_x + CASE WHEN phase = 'x' AND phase_since < ? THEN ? - phase_since ELSE 0 END,
/// ..., phase = ?, phase_since = ?`; bound by [`bind_leave`].
pub(super) static LEAVE_PHASE: LazyLock<String> = LazyLock::new(|| {
    let mut sets: Vec<String> = RECORDED
        .iter()
        .map(|phase| {
            let column = phase.column().expect("a recorded phase has a column");
            format!(
                "{column} = {column} + CASE WHEN phase = '{}' AND phase_since < ? THEN ? - phase_since ELSE 0 END",
                phase.as_str()
            )
        })
        .collect();
    sets.push("phase = ?, phase_since = ?".into());
    sets.join(", ")
});

/// Binds [`LEAVE_PHASE`]: the current phase ends `now`, and `to` begins.
pub(super) fn bind_leave(mut query: Query<'_>, now: i64, to: Phase) -> Query<'_> {
    for _ in RECORDED {
        query = query.bind(now).bind(now);
    }
    query.bind(to.as_str()).bind(now)
}

/// A new run (a redo): every total back to 0, waiting for upstreams since `?`, the run begun
/// at `?` (both bound to now).
pub(super) static NEW_RUN: LazyLock<String> = LazyLock::new(|| {
    let zeros: Vec<String> = RECORDED
        .iter()
        .map(|phase| format!("{} = 0", phase.column().expect("a recorded phase has a column")))
        .collect();
    format!(
        "{}, phase = '{}', phase_since = ?, run_started_at = ?",
        zeros.join(", "),
        Phase::WaitingUpstreams.as_str()
    )
});

/// An instance's recorded timings; None for one created before they were kept (migration
/// 0019), whose phases are unknown.
pub(super) fn decode(r: &AnyRow, what: &str) -> Result<Option<RunTimings>, sqlx::Error> {
    let phase: Option<String> = r.try_get("phase")?;
    let since: Option<i64> = r.try_get("phase_since")?;
    let run_started_at: Option<i64> = r.try_get("run_started_at")?;
    let (Some(phase), Some(since), Some(run_started_at)) = (phase, since, run_started_at) else {
        return Ok(None);
    };
    let phase = Phase::parse(&phase).ok_or_else(|| {
        sqlx::Error::Decode(format!("{what} has unknown phase {phase:?} (written by a newer goflow?)").into())
    })?;
    Ok(Some(RunTimings {
        phase,
        since,
        run_started_at,
        totals: Timings {
            waiting_upstreams: r.try_get("ms_waiting_upstreams")?,
            waiting_slots: r.try_get("ms_waiting_slots")?,
            queued: r.try_get("ms_queued")?,
            claimed_to_started: r.try_get("ms_claimed")?,
            running: r.try_get("ms_running")?,
            retry_delays: r.try_get("ms_retry_delays")?,
        },
    }))
}

/// One try's times: (try number, started_at, finished_at).
pub type TryTimes = (i64, i64, Option<i64>);

/// The tries of each of these instances, by instance and in try order: one query per 1,000
/// instances, so a day's listing pays one read, not one per instance.
pub async fn try_times_of(
    db: &mut impl super::Db,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, Vec<TryTimes>>> {
    let mut tries: HashMap<i64, Vec<TryTimes>> = HashMap::new();
    for slice in ids.chunks(1000) {
        let d = db.dialect();
        let sql = format!(
            "SELECT instance_id, try_number, started_at, finished_at FROM attempts
             WHERE instance_id IN ({}) ORDER BY instance_id, try_number",
            super::instances::placeholders(slice.len())
        );
        let mut query = sqlx::query_as::<_, (i64, i64, i64, Option<i64>)>(d.sql(&sql));
        for id in slice {
            query = query.bind(*id);
        }
        for (instance, try_number, started, finished) in query.fetch_all(db.conn()).await? {
            tries
                .entry(instance)
                .or_default()
                .push((try_number, started, finished));
        }
    }
    Ok(tries)
}

#[cfg(test)]
mod tests {
    use goflow_core::{EtlDay, InstanceKey, InstanceState, TaskSpec};

    use super::*;
    use crate::store::*;
    use crate::testing::TestDatabase;

    /// A life walked through every transition at known times, on each database: the totals
    /// the UPDATEs accumulate are core's, and add up to the run's elapsed time; a redo starts
    /// a new run; a kill ends the phase it was in.
    #[tokio::test]
    async fn transitions_accumulate_each_phase_on_every_database() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let db = TestDatabase::create(dialect).await;
            let store = Store::open(&db.database_url()).await.expect("open");
            let spec = TaskSpec::new("a", "true");
            let key = InstanceKey::new("a", EtlDay::parse("20260105").unwrap());
            let mut tx = store.begin().await.unwrap();
            upsert_task(&mut tx, &spec, 1, true).await.unwrap();
            let (row, _) = ensure_instance(&mut tx, &key, &spec, 2, 1_000).await.unwrap();
            let id = row.id;
            let t = queue_instance(&mut tx, id, InstanceState::Waiting, 1, 1_300)
                .await
                .unwrap()
                .unwrap();
            assert!(
                hold_instance(&mut tx, id, t, "waiting for pool p", 1_310)
                    .await
                    .unwrap()
            );
            assert!(claim_instance(&mut tx, id, t, 1, "agent", 1_800).await.unwrap());
            let retry = InstanceState::UpForRetry;
            assert!(
                finish_instance(&mut tx, id, t, retry, Some(3), "", Some(3_800), 2_800)
                    .await
                    .unwrap()
            );
            let t = queue_instance(&mut tx, id, retry, 1, 3_800)
                .await
                .unwrap()
                .unwrap();
            assert!(claim_instance(&mut tx, id, t, 1, "agent", 3_850).await.unwrap());
            let success = InstanceState::Success;
            assert!(
                finish_instance(&mut tx, id, t, success, Some(0), "", None, 4_850)
                    .await
                    .unwrap()
            );
            let row = instance_by_id(&mut tx, id).await.unwrap().unwrap();
            let run = row.timings.expect("recorded");
            let expected = Timings {
                waiting_upstreams: 300,
                waiting_slots: 490,
                queued: 10 + 50,
                claimed_to_started: 0,
                running: 1_000 + 1_000,
                retry_delays: 1_000,
            };
            assert_eq!(
                (run.phase, run.run_started_at, run.totals),
                (Phase::Done, 1_000, expected),
                "{dialect:?}"
            );
            assert_eq!(
                run.as_of(99_999).total(),
                row.finished_at.unwrap() - run.run_started_at
            );

            assert!(
                reset_for_redo(&mut tx, id, success, 0, &spec, "", 6_000)
                    .await
                    .unwrap()
            );
            let killed = InstanceState::Killed;
            assert!(
                operator_set_state(&mut tx, id, InstanceState::Waiting, killed, None, "", 6_500)
                    .await
                    .unwrap()
            );
            let run = instance_by_id(&mut tx, id)
                .await
                .unwrap()
                .unwrap()
                .timings
                .unwrap();
            let expected = Timings {
                waiting_upstreams: 500,
                ..Timings::default()
            };
            assert_eq!(
                (run.phase, run.run_started_at, run.totals),
                (Phase::Done, 6_000, expected),
                "{dialect:?}"
            );
            tx.commit().await.unwrap();
        }
    }
}

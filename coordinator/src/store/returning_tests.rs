//! The hot path's fewer statements (`returning.rs`, issue 21) on each real database: the same
//! compare-and-sets as before, raced by two writers, and the rows they hand back.

use goflow_core::timings::Phase;
use goflow_core::{EtlDay, InstanceKey, InstanceState, TaskSpec};

use super::tests::{on_every_database, race, two_writers, waiting_instance};
use super::*;

/// `a` queued at its first try, in a committed transaction: (instance id, try number).
async fn queued_instance(store: &Store) -> (InstanceRow, i64) {
    let row = waiting_instance(store).await;
    let mut tx = store.begin().await.unwrap();
    let t = queue_instance(&mut tx, row.id, InstanceState::Waiting, 1, now_ms())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    (row, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_outside_backfills_is_won_once_and_returns_the_claimed_row() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let (row, t) = queued_instance(&one).await;
        let id = row.id;
        let results = race(&one, &two, move |mut tx| async move {
            let claimed = claim_outside_backfills(&mut tx, id, t, 1, "agent", 5_000).await?;
            if let Some(claimed) = &claimed {
                assert_eq!(
                    (
                        claimed.id,
                        claimed.state,
                        claimed.try_number,
                        claimed.agent_id.as_deref()
                    ),
                    (id, InstanceState::Running, t, Some("agent"))
                );
                assert_eq!(claimed.started_at, Some(5_000));
                assert_eq!(
                    claimed.timings.as_ref().map(|run| run.phase),
                    Some(Phase::Running)
                );
            }
            Ok((tx, claimed.is_some()))
        })
        .await;
        assert_eq!(
            results.iter().filter(|won| **won).count(),
            1,
            "{}: exactly one writer claims, got {results:?}",
            dialect.name()
        );
        // A claim sent again, of an older try or epoch, claims nothing.
        let mut tx = one.begin().await.unwrap();
        for (try_number, epoch) in [(t, 1), (t + 1, 1), (t, 2)] {
            assert!(
                claim_outside_backfills(&mut tx, id, try_number, epoch, "agent", 6_000)
                    .await
                    .unwrap()
                    .is_none(),
                "{}: try {try_number} epoch {epoch}",
                dialect.name()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfills_instance_is_left_queued_for_the_checked_claim() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let (row, t) = queued_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
        let new = NewBackfill {
            task: "a",
            from: "20260105".into(),
            to: "20260105".into(),
            down: false,
            parallelism: Some(1),
            created_by: "test",
        };
        let backfill = insert_backfill(&mut tx, &new, now_ms()).await.unwrap();
        // As a backfill's run writes it (with the instance's insert, here after it).
        let d = tx.dialect();
        sqlx::query(d.sql("UPDATE instances SET backfill_id = ? WHERE id = ?"))
            .bind(backfill)
            .bind(row.id)
            .execute(tx.conn())
            .await
            .unwrap();
        let claimed = claim_outside_backfills(&mut tx, row.id, t, 1, "agent", now_ms())
            .await
            .unwrap();
        assert!(
            claimed.is_none(),
            "{}: a backfill's bound is checked first",
            dialect.name()
        );
        let after = instance_by_id(&mut tx, row.id).await.unwrap().unwrap();
        assert_eq!((after.state, after.agent_id), (InstanceState::Queued, None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_instances_are_queued_together_each_once() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let spec = TaskSpec::new("a", "true");
        let keys: Vec<InstanceKey> = ["20260105", "20260106", "20260107"]
            .iter()
            .map(|day| InstanceKey::new("a", EtlDay::parse(day).unwrap()))
            .collect();
        let wanted: Vec<WantedInstance> = keys
            .iter()
            .map(|key| WantedInstance {
                key,
                spec: &spec,
                max_tries: 1,
            })
            .collect();
        let mut tx = one.begin().await.unwrap();
        let rows: Vec<InstanceRow> = ensure_instances(&mut tx, &wanted, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(row, _)| row)
            .collect();
        // The last one is queued already: it is left out, its try unchanged.
        queue_instance(&mut tx, rows[2].id, InstanceState::Waiting, 1, 1_000)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let waiting: Vec<WaitingAt> = rows
            .iter()
            .map(|row| WaitingAt {
                id: row.id,
                try_number: row.try_number,
            })
            .collect();
        let queued = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let seen = queued.clone();
        race(&one, &two, move |mut tx| {
            let (waiting, seen) = (waiting.clone(), seen.clone());
            async move {
                let won = queue_waiting(&mut tx, &waiting, 1, 1_500).await?;
                let any = !won.is_empty();
                seen.lock().unwrap().push(won);
                Ok((tx, any))
            }
        })
        .await;
        // Between the two writers, each waiting instance was queued once, at try 1.
        let mut won: Vec<(i64, i64)> = queued
            .lock()
            .unwrap()
            .iter()
            .flat_map(|w| w.iter().map(|(id, t)| (*id, *t)))
            .collect();
        won.sort();
        assert_eq!(
            won,
            vec![(rows[0].id, 1), (rows[1].id, 1)],
            "{}: each instance queued once",
            dialect.name()
        );
        let mut conn = one.read().await.unwrap();
        for row in &rows {
            let after = instance_by_id(&mut conn, row.id).await.unwrap().unwrap();
            let run = after.timings.expect("recorded");
            assert_eq!((after.state, after.try_number), (InstanceState::Queued, 1));
            assert_eq!(run.phase, Phase::Queued, "{}", dialect.name());
        }
        // Queued at 1,500 after waiting since 1,000: the phase it left is counted.
        let first = instance_by_id(&mut conn, rows[0].id).await.unwrap().unwrap();
        let run = first.timings.unwrap();
        assert_eq!((run.since, run.totals.waiting_upstreams), (1_500, 500));
        assert_eq!(first.queued_at, Some(1_500));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_try_records_its_version_and_pool_in_its_insert() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let (row, t) = queued_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
        assert!(
            claim_instance(&mut tx, row.id, t, 1, "agent", now_ms())
                .await
                .unwrap()
        );
        let new = NewAttempt {
            instance_id: row.id,
            try_number: t,
            epoch: 1,
            agent: "agent",
            command: "true",
            version: Some(3),
            pool: Some("db"),
            now: now_ms(),
        };
        let id = record_attempt(&mut tx, &new).await.unwrap();
        let attempt = attempt(&mut tx, &id).await.unwrap().unwrap();
        assert_eq!(
            (attempt.definition_version, attempt.command.as_deref()),
            (Some(3), Some("true"))
        );
        assert_eq!(
            pool_running(&mut tx, "db").await.unwrap(),
            1,
            "{}",
            dialect.name()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_instances_are_queued_by_key_unread() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let mut spec = TaskSpec::new("a", "true");
        spec.queue = "etl".into();
        let day = |d: &str| InstanceKey::new("a", EtlDay::parse(d).unwrap());
        let (waiting, queued, missing) = (day("20260105"), day("20260106"), day("20260107"));
        let mut tx = one.begin().await.unwrap();
        let (row, _) = ensure_instance(&mut tx, &waiting, &spec, 1, 1_000).await.unwrap();
        let (other, _) = ensure_instance(&mut tx, &queued, &spec, 1, 1_000).await.unwrap();
        queue_instance(&mut tx, other.id, InstanceState::Waiting, 1, 1_000)
            .await
            .unwrap()
            .unwrap();
        let keys = [waiting.clone(), queued.clone(), missing];
        let done = queue_waiting_keys(&mut tx, &keys, 1, 1_500).await.unwrap();
        let got: Vec<(i64, i64, &str)> = done
            .iter()
            .map(|(row, t)| (row.id, *t, row.queue.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(row.id, 1, "etl")],
            "{}: only the waiting one",
            dialect.name()
        );
        let after = instance_by_id(&mut tx, row.id).await.unwrap().unwrap();
        assert_eq!(
            (after.state, after.try_number, after.queued_at),
            (InstanceState::Queued, 1, Some(1_500))
        );
        assert_eq!(after.timings.unwrap().totals.waiting_upstreams, 500);
        let unchanged = instance_by_id(&mut tx, other.id).await.unwrap().unwrap();
        assert_eq!((unchanged.try_number, unchanged.queued_at), (1, Some(1_000)));
        // Sent again, nothing is waiting any more: nothing is queued twice.
        assert!(
            queue_waiting_keys(&mut tx, &keys, 1, 2_000)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

/// A measurement, not a check (it asserts nothing): what one statement costs on SQLite
/// beyond SQLite's own work, i.e. the most a driver running SQLite on the caller's thread
/// could save a statement (sqlx runs each connection on a thread of its own: every statement
/// is a round trip to it). N primary-key reads one statement each, against the same N reads
/// done by SQLite inside one statement. Run (a release build gives the figures that matter):
/// `cargo test -p goflow-coordinator --lib sqlite_statement_overhead -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints figures, asserts nothing"]
async fn sqlite_statement_overhead() {
    use std::time::Instant;
    const N: i64 = 20_000;
    let (_db, store, _two) = two_writers(Dialect::Sqlite).await;
    let row = waiting_instance(&store).await;
    let mut tx = store.begin().await.unwrap();
    let read = "SELECT try_number FROM instances WHERE id = ?";
    for _ in 0..1_000 {
        let _: i64 = sqlx::query_scalar(read)
            .bind(row.id)
            .fetch_one(tx.conn())
            .await
            .unwrap();
    }
    let started = Instant::now();
    for _ in 0..N {
        let _: i64 = sqlx::query_scalar(read)
            .bind(row.id)
            .fetch_one(tx.conn())
            .await
            .unwrap();
    }
    let each = started.elapsed();
    // Correlated with `i`, so SQLite reads the row once per step, not once in all.
    let started = Instant::now();
    let sum: i64 = sqlx::query_scalar(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         SELECT SUM((SELECT try_number + i - i FROM instances WHERE id = ?)) FROM n",
    )
    .bind(N)
    .bind(row.id)
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let together = started.elapsed();
    assert_eq!(sum, 0, "every read saw try 0");
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / N as f64;
    println!(
        "SQLite, {N} primary-key reads: {:.1} us a statement one at a time, {:.1} us a read inside one \
         statement: {:.1} us a statement is the driver's (the thread hop, sqlx and the Any driver)",
        per(each),
        per(together),
        per(each) - per(together)
    );
}

//! Many instances at once (issue 21) on each real database: created with their backfill in
//! multi-row inserts, and put back to waiting a task at a time by compare-and-set.

use goflow_core::{EtlDay, InstanceKey, InstanceState, TaskSpec};

use super::tests::{on_every_database, two_writers};
use super::*;

fn days(n: i32) -> Vec<InstanceKey> {
    let first = EtlDay::parse("20250101").unwrap();
    EtlDay::range(first, first.offset(n - 1))
        .map(|d| InstanceKey::new("a", d))
        .collect()
}

fn wanted<'a>(keys: &'a [InstanceKey], spec: &'a TaskSpec) -> Vec<WantedInstance<'a>> {
    keys.iter()
        .map(|key| WantedInstance {
            key,
            spec,
            max_tries: 2,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_ensure_creates_every_row_in_order_with_its_backfill_and_finds_them_again() {
    on_every_database(|dialect| async move {
        let (_db, store, _two) = two_writers(dialect).await;
        let spec = TaskSpec::new("a", "true");
        // More than one multi-row insert's worth.
        let keys = days(4500);
        let mut tx = store.begin().await.unwrap();
        let rows = ensure_instances_of(&mut tx, &wanted(&keys, &spec), Some(7), 1_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows.len(), keys.len(), "{}", dialect.name());
        for ((row, created), key) in rows.iter().zip(&keys) {
            assert!(*created, "{}: {key} created", dialect.name());
            assert_eq!(row.key(), *key, "{}: in the order asked", dialect.name());
            assert_eq!(
                (row.state, row.try_number, row.max_tries, row.backfill_id),
                (InstanceState::Waiting, 0, 2, Some(7)),
                "{}: {key}",
                dialect.name()
            );
            assert_eq!(row.timings.as_ref().map(|t| t.run_started_at), Some(1_000));
        }
        // What came back is what is stored, field for field.
        let mut conn = store.read().await.unwrap();
        for (row, _) in [&rows[0], &rows[rows.len() - 1]] {
            let stored = instance_by_id(&mut conn, row.id).await.unwrap().unwrap();
            assert_eq!(format!("{stored:?}"), format!("{row:?}"), "{}", dialect.name());
        }
        drop(conn);
        // Asked again (with one new key): the existing ones are found, not created.
        let mut more = keys[..3].to_vec();
        more.push(InstanceKey::new("a", EtlDay::parse("20400101").unwrap()));
        let mut tx = store.begin().await.unwrap();
        let again = ensure_instances(&mut tx, &wanted(&more, &spec), 2_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let created: Vec<bool> = again.iter().map(|(_, created)| *created).collect();
        assert_eq!(created, [false, false, false, true], "{}", dialect.name());
        assert_eq!(again[0].0.id, rows[0].0.id);
        assert_eq!(again[3].0.backfill_id, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redo_resets_only_the_rows_still_in_the_state_read() {
    on_every_database(|dialect| async move {
        let (_db, store, _two) = two_writers(dialect).await;
        let spec = TaskSpec::new("a", "true");
        let keys = days(5);
        let mut tx = store.begin().await.unwrap();
        let rows = ensure_instances(&mut tx, &wanted(&keys, &spec), 1_000)
            .await
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|(row, _)| row.id).collect();
        for id in &ids {
            let set = operator_set_state(
                &mut tx,
                *id,
                InstanceState::Waiting,
                InstanceState::Success,
                None,
                "",
                1_000,
            );
            assert!(set.await.unwrap());
        }
        // The last one moved on after it was read (success -> killed).
        let set = operator_set_state(
            &mut tx,
            ids[4],
            InstanceState::Success,
            InstanceState::Killed,
            None,
            "",
            1_000,
        );
        assert!(set.await.unwrap());
        let redos: Vec<Redo> = ids
            .iter()
            .map(|id| Redo {
                id: *id,
                from: InstanceState::Success,
            })
            .collect();
        let reset = reset_many_for_redo(&mut tx, &redos, 3, &spec, Some(9), 5_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut got: Vec<i64> = reset.into_iter().collect();
        got.sort();
        assert_eq!(got, ids[..4], "{}: the moved one is left out", dialect.name());
        let mut conn = store.read().await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            let row = instance_by_id(&mut conn, *id).await.unwrap().unwrap();
            if i < 4 {
                assert_eq!(
                    (row.state, row.max_tries, row.backfill_id),
                    (InstanceState::Waiting, 4, Some(9)),
                    "{}: reset with 3 retries, the backfill's",
                    dialect.name()
                );
                assert_eq!(row.timings.map(|t| t.run_started_at), Some(5_000));
            } else {
                assert_eq!((row.state, row.backfill_id), (InstanceState::Killed, None));
            }
        }
    })
    .await;
}

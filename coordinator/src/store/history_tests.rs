//! Archived logs and retention on each real database: an upload recorded once (a late second
//! one changes nothing), output after it kept and due again, and deleting old instances with
//! their tries and chunks.

use goflow_core::{EtlDay, InstanceState};

use super::tests::{on_every_database, two_writers, waiting_instance};
use super::*;

/// A try of instance `a@20260105` that printed `log` and ended.
async fn ended_try(store: &Store, log: &[u8]) -> (i64, String) {
    let row = waiting_instance(store).await;
    let mut tx = store.begin().await.unwrap();
    let t = queue_instance(&mut tx, row.id, InstanceState::Waiting, 1, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert!(
        claim_instance(&mut tx, row.id, t, 1, "agent", now_ms())
            .await
            .unwrap()
    );
    let attempt = insert_attempt(&mut tx, row.id, t, 1, "agent", "true", now_ms())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    append(store, &attempt, 0, log).await;
    let mut tx = store.begin().await.unwrap();
    assert!(
        finish_attempt(&mut tx, &attempt, "success", Some(0), "", now_ms() - 60_000)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    (row.id, attempt)
}

async fn append(store: &Store, attempt: &str, offset: i64, data: &[u8]) {
    let mut tx = store.begin_logs().await.unwrap();
    let done = append_log_at(&mut tx, attempt, Some("agent"), offset, data, 1 << 20)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(done, Appended::Acked(offset + data.len() as i64));
}

async fn due(store: &Store) -> Vec<ArchiveDue> {
    let mut conn = store.read().await.unwrap();
    logs_due_for_archive(&mut conn, now_ms(), 10).await.unwrap()
}

async fn record(store: &Store, attempt: &str, was: i64, archived: i64) -> bool {
    let mut tx = store.begin_logs().await.unwrap();
    let done = record_log_archived(&mut tx, attempt, was, archived, "a/20260105/x.log", now_ms())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_log_leaves_the_database_once_and_late_output_is_due_again() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let (_, attempt) = ended_try(&one, b"line 1\nline 2\n").await;
        let found = due(&one).await;
        assert_eq!(found.len(), 1, "{dialect:?}");
        assert_eq!(
            (
                found[0].log_bytes,
                found[0].log_archived_bytes,
                found[0].task_id.as_str()
            ),
            (14, 0, "a")
        );

        assert!(record(&one, &attempt, 0, 14).await, "{dialect:?}");
        // A second upload that started from the same state (a deposed leader's) is refused.
        assert!(!record(&one, &attempt, 0, 14).await, "{dialect:?}");
        let mut conn = one.read().await.unwrap();
        assert_eq!(count_log_chunks(&mut conn, &attempt).await.unwrap(), 0);
        assert_eq!(
            log_location(&mut conn, &attempt).await.unwrap(),
            Some((14, Some("a/20260105/x.log".to_string())))
        );
        drop(conn);
        assert!(due(&one).await.is_empty(), "nothing more to upload");

        // Output that arrives after the upload is stored past it and makes the try due again.
        append(&one, &attempt, 14, b"late\n").await;
        let mut conn = one.read().await.unwrap();
        assert_eq!(read_log(&mut conn, &attempt, 14, 100).await.unwrap(), b"late\n");
        drop(conn);
        let found = due(&one).await;
        assert_eq!((found[0].log_bytes, found[0].log_archived_bytes), (19, 14));
        assert!(record(&one, &attempt, 14, 19).await);
        let mut conn = one.read().await.unwrap();
        assert_eq!(count_log_chunks(&mut conn, &attempt).await.unwrap(), 0);
        drop(conn);
        assert!(due(&one).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_instances_go_with_their_tries_and_chunks() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let (id, attempt) = ended_try(&one, b"x\n").await;
        let after = EtlDay::parse("20260106").unwrap();
        let before = EtlDay::parse("20260105").unwrap();
        let mut tx = one.begin().await.unwrap();
        assert!(
            old_instances(&mut tx, before, 0, 10).await.unwrap().is_empty(),
            "not before its own day"
        );
        let old = old_instances(&mut tx, after, 0, 10).await.unwrap();
        assert_eq!(old.len(), 1, "{dialect:?}");
        assert_eq!(old[0].id, id);
        assert!(
            !old[0].state.is_finished(),
            "the instance itself was not finished"
        );
        assert_eq!(unfinished_instances(&mut tx).await.unwrap().len(), 1);
        let (removed, objects) = instances_contents(&mut tx, &[id]).await.unwrap();
        assert_eq!(
            removed,
            Removed {
                tries: 1,
                log_chunks: 1,
                log_bytes: 2
            }
        );
        assert!(objects.is_empty());
        delete_instances(&mut tx, &[id]).await.unwrap();
        tx.commit().await.unwrap();
        let mut conn = one.read().await.unwrap();
        assert!(attempt_of(&mut conn, &attempt).await.is_none());
        assert_eq!(count_log_chunks(&mut conn, &attempt).await.unwrap(), 0);
        assert!(old_instances(&mut conn, after, 0, 10).await.unwrap().is_empty());
    })
    .await;
}

async fn attempt_of(conn: &mut Reader, id: &str) -> Option<AttemptRow> {
    attempt(conn, id).await.unwrap()
}

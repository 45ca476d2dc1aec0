//! The store on each real database: migrations, connection errors, and every
//! compare-and-set raced by two writers (two `Store`s on one database, as two coordinators in
//! a split brain would be), of which exactly one may win.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use goflow_core::{EtlDay, InstanceKey, InstanceState, TaskSpec};

use super::*;
use crate::testing::TestDatabase;

const ALL: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql];

fn day() -> EtlDay {
    EtlDay::parse("20260105").unwrap()
}

/// A fresh database with task `a`, and two stores on it.
pub(super) async fn two_writers(dialect: Dialect) -> (TestDatabase, Store, Store) {
    let db = TestDatabase::create(dialect).await;
    let one = Store::open(&db.database_url()).await.expect("open");
    let two = Store::open(&db.database_url()).await.expect("open again");
    let mut tx = one.begin().await.unwrap();
    upsert_task(&mut tx, &TaskSpec::new("a", "true"), now_ms(), true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (db, one, two)
}

async fn instance(store: &Store, key: &InstanceKey) -> InstanceRow {
    let mut conn = store.read().await.unwrap();
    instance_by_key(&mut conn, key)
        .await
        .unwrap()
        .expect("instance exists")
}

pub(super) async fn waiting_instance(store: &Store) -> InstanceRow {
    let key = InstanceKey::new("a", day());
    let mut tx = store.begin().await.unwrap();
    let (row, created) = ensure_instance(&mut tx, &key, &TaskSpec::new("a", "true"), 1, now_ms())
        .await
        .unwrap();
    assert!(created);
    tx.commit().await.unwrap();
    row
}

/// Runs `step` in a transaction of each store at once, each holding its transaction a moment
/// after its write so the other has to wait for it (or fail); returns what each returned,
/// counting an error as a loss (a unique key refusing the second writer).
pub(super) async fn race<F, Fut>(one: &Store, two: &Store, step: F) -> Vec<bool>
where
    F: Fn(Tx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Tx, bool)>> + Send,
{
    let step = Arc::new(step);
    let mut handles = vec![];
    for store in [one.clone(), two.clone()] {
        let step = step.clone();
        handles.push(tokio::spawn(async move {
            let tx = store.begin().await?;
            let (tx, won) = step(tx).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.commit().await?;
            anyhow::Ok(won)
        }));
    }
    let mut results = vec![];
    for handle in handles {
        results.push(handle.await.unwrap().unwrap_or(false));
    }
    results
}

fn exactly_one(results: &[bool], what: &str, dialect: Dialect) {
    assert_eq!(
        results.iter().filter(|w| **w).count(),
        1,
        "{what} on {}: exactly one writer must win, got {results:?}",
        dialect.name()
    );
}

/// Runs a test body on SQLite, PostgreSQL and MySQL in turn.
pub(super) async fn on_every_database<F, Fut>(body: F)
where
    F: Fn(Dialect) -> Fut,
    Fut: Future<Output = ()>,
{
    for dialect in ALL {
        body(dialect).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queueing_a_waiting_instance_is_won_once() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let id = row.id;
        let results = race(&one, &two, move |mut tx| async move {
            let won = queue_instance(&mut tx, id, InstanceState::Waiting, 1, now_ms()).await?;
            Ok((tx, won.is_some()))
        })
        .await;
        exactly_one(&results, "queue_instance", dialect);
        let after = instance(&one, &row.key()).await;
        assert_eq!(
            (after.state, after.try_number),
            (InstanceState::Queued, 1),
            "one new try, not two"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claiming_a_try_is_won_once_and_its_try_row_is_unique() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
        let try_number = queue_instance(&mut tx, row.id, InstanceState::Waiting, 1, now_ms())
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let id = row.id;
        let results = race(&one, &two, move |mut tx| async move {
            let won = claim_instance(&mut tx, id, try_number, 1, "agent", now_ms()).await?;
            if won {
                insert_attempt(&mut tx, id, try_number, 1, "agent", "", now_ms()).await?;
            }
            Ok((tx, won))
        })
        .await;
        exactly_one(&results, "claim_instance", dialect);
        // A second row for the same try is refused by the unique key, never replaces the first.
        let mut tx = two.begin().await.unwrap();
        assert!(
            insert_attempt(&mut tx, id, try_number, 1, "other", "", now_ms())
                .await
                .is_err(),
            "{}: a second attempt row of one try must fail",
            dialect.name()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finishing_a_try_is_won_once() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
        let t = queue_instance(&mut tx, row.id, InstanceState::Waiting, 1, now_ms())
            .await
            .unwrap()
            .unwrap();
        assert!(
            claim_instance(&mut tx, row.id, t, 1, "agent", now_ms())
                .await
                .unwrap()
        );
        let attempt = insert_attempt(&mut tx, row.id, t, 1, "agent", "load.sh 20260110", now_ms())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // The agent's success report against a kill: one of them closes the try.
        let (id, a) = (row.id, attempt.clone());
        let results = race(&one, &two, move |mut tx| {
            let a = a.clone();
            async move {
                let closed = finish_attempt(&mut tx, &a, "success", Some(0), "", now_ms()).await?;
                let won = closed
                    && finish_instance(
                        &mut tx,
                        id,
                        t,
                        InstanceState::Success,
                        Some(0),
                        "",
                        None,
                        now_ms(),
                    )
                    .await?;
                Ok((tx, won))
            }
        })
        .await;
        exactly_one(&results, "finish_attempt + finish_instance", dialect);
        assert_eq!(instance(&one, &row.key()).await.state, InstanceState::Success);
        // The try keeps the command it ran (issue 17: shown per try on the instance page).
        let mut conn = one.read().await.unwrap();
        let tries = attempts_of(&mut conn, row.id).await.unwrap();
        assert_eq!(
            tries[0].command.as_deref(),
            Some("load.sh 20260110"),
            "{dialect:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_moves_redo_and_lost_tries_are_won_once() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let id = row.id;
        // kill vs kill
        let results = race(&one, &two, move |mut tx| async move {
            let won = operator_set_state(
                &mut tx,
                id,
                InstanceState::Waiting,
                InstanceState::Killed,
                None,
                "",
                now_ms(),
            )
            .await?;
            Ok((tx, won))
        })
        .await;
        exactly_one(&results, "operator_set_state", dialect);
        // redo vs redo
        let results = race(&one, &two, move |mut tx| async move {
            let won = reset_for_redo(
                &mut tx,
                id,
                InstanceState::Killed,
                0,
                &TaskSpec::new("a", "true"),
                "",
                now_ms(),
            )
            .await?;
            Ok((tx, won))
        })
        .await;
        exactly_one(&results, "reset_for_redo", dialect);
        // a lost try requeued by two reapers
        let mut tx = one.begin().await.unwrap();
        let t = queue_instance(&mut tx, id, InstanceState::Waiting, 1, now_ms())
            .await
            .unwrap()
            .unwrap();
        assert!(
            claim_instance(&mut tx, id, t, 1, "agent", now_ms())
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let results = race(&one, &two, move |mut tx| async move {
            let won = requeue(&mut tx, id, t, true, 2, now_ms(), "lost").await?;
            Ok((tx, won.is_some()))
        })
        .await;
        exactly_one(&results, "requeue", dialect);
        let after = instance(&one, &row.key()).await;
        assert_eq!((after.state, after.try_number), (InstanceState::Queued, t + 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_keys_make_one_fire_one_instance_and_one_log_chunk() {
    on_every_database(|dialect| async move {
        let (_db, one, two) = two_writers(dialect).await;
        let results = race(&one, &two, |mut tx| async move {
            let won = record_fire(&mut tx, "a", 1_700_000_000_000, day().into(), now_ms()).await?;
            Ok((tx, won))
        })
        .await;
        exactly_one(&results, "record_fire", dialect);
        let results = race(&one, &two, |mut tx| async move {
            let key = InstanceKey::new("a", day());
            let (_, created) =
                ensure_instance(&mut tx, &key, &TaskSpec::new("a", "true"), 1, now_ms()).await?;
            Ok((tx, created))
        })
        .await;
        exactly_one(&results, "ensure_instance", dialect);
        let row = instance(&one, &InstanceKey::new("a", day())).await;
        let mut tx = one.begin().await.unwrap();
        let t = queue_instance(&mut tx, row.id, InstanceState::Waiting, 1, now_ms())
            .await
            .unwrap()
            .unwrap();
        assert!(
            claim_instance(&mut tx, row.id, t, 1, "agent", now_ms())
                .await
                .unwrap()
        );
        let attempt = insert_attempt(&mut tx, row.id, t, 1, "agent", "", now_ms())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Two coordinators store the same chunk at once (an agent resent it to another after
        // the first did not answer in time): both acknowledge it, it is stored once.
        let a = attempt.clone();
        let results = race_logs(&one, &two, move |mut tx| {
            let a = a.clone();
            async move {
                let appended = append_log_at(&mut tx, &a, Some("agent"), 0, b"hello\n", 1 << 20).await?;
                Ok((tx, appended == Appended::Acked(6)))
            }
        })
        .await;
        assert_eq!(results, [true, true], "both acknowledge the chunk on {dialect:?}");
        let mut conn = one.read().await.unwrap();
        assert_eq!(
            read_log(&mut conn, &attempt, 0, 1 << 20).await.unwrap(),
            b"hello\n"
        );
    })
    .await;
}

/// `race` on the stores' log connections, beside the scheduling writer.
async fn race_logs<F, Fut>(one: &Store, two: &Store, step: F) -> Vec<bool>
where
    F: Fn(Tx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(Tx, bool)>> + Send,
{
    let step = Arc::new(step);
    let mut handles = vec![];
    for store in [one.clone(), two.clone()] {
        let step = step.clone();
        handles.push(tokio::spawn(async move {
            let tx = store.begin_logs().await?;
            let (tx, won) = step(tx).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.commit().await?;
            anyhow::Ok(won)
        }));
    }
    let mut results = vec![];
    for handle in handles {
        results.push(handle.await.unwrap().unwrap_or(false));
    }
    results
}

/// The agent resends from its last acknowledged offset after any failure: bytes stored already
/// are skipped, an overlapping resend stores only what is new, a chunk past the end (a gap) is
/// refused with the offset to resend from, the cap still holds, and another agent's output is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_appends_are_idempotent_by_offset() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
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

        let cap = 40;
        let append = |offset: i64, data: &'static [u8], agent: &'static str| {
            let one = one.clone();
            let attempt = attempt.clone();
            async move {
                let mut tx = one.begin_logs().await.unwrap();
                let appended = append_log_at(&mut tx, &attempt, Some(agent), offset, data, cap)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                appended
            }
        };
        assert_eq!(append(0, b"line 1\n", "agent").await, Appended::Acked(7));
        // The same chunk again (its answer was lost).
        assert_eq!(append(0, b"line 1\n", "agent").await, Appended::Acked(7));
        // Overlapping: only the new part is stored.
        assert_eq!(append(0, b"line 1\nline 2\n", "agent").await, Appended::Acked(14));
        // A gap: refused, and the answer says where to resend from.
        assert_eq!(append(20, b"line 4\n", "agent").await, Appended::Acked(14));
        // Another agent's output.
        assert_eq!(append(14, b"intruder\n", "other").await, Appended::NotYours);
        assert_eq!(append(14, b"line 3\n", "agent").await, Appended::Acked(21));
        let mut conn = one.read().await.unwrap();
        assert_eq!(
            read_log(&mut conn, &attempt, 0, 1 << 20).await.unwrap(),
            b"line 1\nline 2\nline 3\n"
        );
        // Read from an offset inside a chunk.
        assert_eq!(
            read_log(&mut conn, &attempt, 10, 1 << 20).await.unwrap(),
            b"e 2\nline 3\n"
        );
        drop(conn);

        // Past the cap (40 bytes): cut with a marker; later output is acknowledged, not kept.
        assert_eq!(
            append(21, b"line 4 is long enough to pass the cap\n", "agent").await,
            Appended::Acked(21 + 38)
        );
        assert_eq!(append(59, b"line 5\n", "agent").await, Appended::Acked(66));
        let mut conn = one.read().await.unwrap();
        let log = read_log(&mut conn, &attempt, 0, 1 << 20).await.unwrap();
        let text = String::from_utf8(log).unwrap();
        assert!(
            text.starts_with("line 1\nline 2\nline 3\nline 4 is long en"),
            "{text}"
        );
        assert!(
            text.ends_with("[goflow: log cut at 40 bytes; the rest was dropped]\n"),
            "{text}"
        );
        assert!(!text.contains("line 5"), "{text}");
        let stored = attempt_row_log_bytes(&mut conn, &attempt).await;
        assert_eq!(stored, text.len() as i64);

        // Unknown try.
        let mut tx = one.begin_logs().await.unwrap();
        assert_eq!(
            append_log_at(&mut tx, "nope", None, 0, b"x", cap).await.unwrap(),
            Appended::NoSuchTry
        );
    })
    .await;
}

async fn attempt_row_log_bytes(conn: &mut Reader, attempt_id: &str) -> i64 {
    attempt(conn, attempt_id)
        .await
        .unwrap()
        .expect("the try")
        .log_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_listings_work_alike() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let mut tx = one.begin().await.unwrap();
        let b = TaskSpec::new("b_x", "echo {{etl_day}}").after("a", -1);
        upsert_task(&mut tx, &b, now_ms(), true).await.unwrap();
        set_dependencies(&mut tx, &b).await.unwrap();
        let spec = TaskSpec::new("a", "true");
        let keys: Vec<InstanceKey> = EtlDay::range(day(), day().offset(9))
            .map(|d| InstanceKey::new("a", d))
            .collect();
        let wanted: Vec<WantedInstance> = keys
            .iter()
            .map(|key| WantedInstance {
                key,
                spec: &spec,
                max_tries: 1,
            })
            .collect();
        let rows = ensure_instances(&mut tx, &wanted, now_ms()).await.unwrap();
        assert!(rows.iter().all(|(_, created)| *created));
        record_operation(&mut tx, "me", "test", "run", "b_x@20260105", "", now_ms())
            .await
            .unwrap();
        record_operation(&mut tx, "me", "test", "run", "bxx@20260105", "", now_ms())
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut conn = one.read().await.unwrap();
        let tasks = load_tasks(&mut conn).await.unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].spec, b, "{}: a task round-trips", dialect.name());
        let filter = InstanceFilter {
            task: Some("a".into()),
            limit: 3,
            ..Default::default()
        };
        assert_eq!(list_instances(&mut conn, &filter).await.unwrap().len(), 3);
        assert_eq!(count_instances(&mut conn, &filter).await.unwrap(), 10);
        let unmet = unmet_of(&mut conn, &keys[..2]).await.unwrap();
        assert_eq!(unmet.len(), 2);
        // `_` in a task id is not a LIKE wildcard: bxx's operation is not b_x's.
        let ops = list_operations(&mut conn, Some("b_x"), 10).await.unwrap();
        assert_eq!(ops.len(), 1, "{}: {ops:?}", dialect.name());
    })
    .await;
}

/// The grid's listing: plain successes, counted rather than listed, come out on their days
/// whether their task has an instance every day of the span, a run of days within it, or gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_states_list_every_instance_of_the_span() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let (from, to) = (day(), day().offset(4));
        use InstanceState::{Failed, Success, Waiting};
        // (task, day as an offset from `from`, state, forced). a: the day before the span and
        // every day of it; b: two days with a gap; c: a run inside the span, and a day after it.
        let instances = [
            ("a", -1, Success, false),
            ("a", 0, Success, false),
            ("a", 1, Waiting, false),
            ("a", 2, Success, true),
            ("a", 3, Failed, false),
            ("a", 4, Success, false),
            ("b", 0, Success, false),
            ("b", 4, Waiting, false),
            ("c", 2, Success, false),
            ("c", 3, Success, true),
            ("c", 5, Success, false),
        ];
        let keys: Vec<InstanceKey> = instances
            .iter()
            .map(|(task, offset, ..)| InstanceKey::new(task, from.offset(*offset)))
            .collect();
        let spec = TaskSpec::new("a", "true");
        let wanted: Vec<WantedInstance> = keys
            .iter()
            .map(|key| WantedInstance {
                key,
                spec: &spec,
                max_tries: 1,
            })
            .collect();
        let mut tx = one.begin().await.unwrap();
        let rows = ensure_instances(&mut tx, &wanted, now_ms()).await.unwrap();
        for ((row, _), (_, _, state, forced)) in rows.iter().zip(instances) {
            if state != Waiting {
                let by = forced.then_some("local:alice");
                let set = operator_set_state(&mut tx, row.id, Waiting, state, by, "", now_ms());
                assert!(set.await.unwrap());
            }
        }
        tx.commit().await.unwrap();

        let mut conn = one.read().await.unwrap();
        let mut got: Vec<(String, &str, bool, Vec<EtlDay>)> = instance_states(&mut conn, from, to)
            .await
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.task_id,
                    s.state.as_str(),
                    s.forced,
                    s.periods.iter().map(|p| p.etl_day()).collect(),
                )
            })
            .collect();
        got.sort();
        let group = |task: &str, state: &'static str, forced: bool, offsets: &[i32]| {
            let days = offsets.iter().map(|o| from.offset(*o)).collect();
            (task.to_string(), state, forced, days)
        };
        let expected = vec![
            group("a", "failed", false, &[3]),
            group("a", "success", false, &[0, 4]),
            group("a", "success", true, &[2]),
            group("a", "waiting", false, &[1]),
            group("b", "success", false, &[0]),
            group("b", "waiting", false, &[4]),
            group("c", "success", false, &[2]),
            group("c", "success", true, &[3]),
        ];
        assert_eq!(got, expected, "{}", dialect.name());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    on_every_database(|dialect| async move {
        let db = TestDatabase::create(dialect).await;
        let url = db.database_url();
        assert_eq!(migrate_only(&url).await.unwrap(), schema_version(dialect));
        assert_eq!(
            migrate_only(&url).await.unwrap(),
            schema_version(dialect),
            "twice is fine"
        );
        let store = Store::open(&url).await.unwrap();
        assert_eq!(
            store.next_epoch().await.unwrap() + 1,
            store.next_epoch().await.unwrap()
        );
        // A newer goflow migrated this database further.
        let mut tx = store.begin().await.unwrap();
        let d = tx.dialect();
        sqlx::query(d.sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', TRUE, ?, 0)",
        ))
        .bind(vec![0u8; 48])
        .execute(tx.conn())
        .await
        .unwrap();
        tx.commit().await.unwrap();
        store.close().await;
        let err = format!(
            "{:#}",
            Store::open(&url).await.err().expect("a newer schema is refused")
        );
        assert!(
            err.contains("schema version 9999") && err.contains("newer"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn connection_failures_name_the_database_and_the_cause() {
    let unreachable = DatabaseUrl::parse("postgres://goflow:s3cret@127.0.0.1:1/goflow", "test").unwrap();
    let err = format!("{:#}", Store::open(&unreachable).await.err().unwrap());
    assert!(err.contains("postgres://goflow:***@127.0.0.1:1/goflow"), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(!err.contains("s3cret"), "no password in messages: {err}");

    let missing = crate::testing::DEFAULT_POSTGRES_URL.replace("/postgres", "/goflow_no_such_db");
    let missing = std::env::var("GOFLOW_TEST_POSTGRES_URL")
        .map(|u| format!("{}/goflow_no_such_db", u.rsplit_once('/').unwrap().0))
        .unwrap_or(missing);
    let err = format!(
        "{:#}",
        Store::open(&DatabaseUrl::parse(&missing, "test").unwrap())
            .await
            .err()
            .unwrap()
    );
    assert!(err.contains("does not exist"), "{err}");

    let mysql = std::env::var("GOFLOW_TEST_MYSQL_URL").unwrap_or(crate::testing::DEFAULT_MYSQL_URL.into());
    let (base, _) = mysql.rsplit_once('@').unwrap().1.rsplit_once('/').unwrap();
    let denied = format!("mysql://goflow_nobody:wrong@{base}/test");
    let err = format!(
        "{:#}",
        Store::open(&DatabaseUrl::parse(&denied, "test").unwrap())
            .await
            .err()
            .unwrap()
    );
    assert!(
        err.contains("refused the credentials") && err.contains("goflow_nobody:***"),
        "{err}"
    );
}

/// An operations entry as long as a 10,000-task apply's list of names is kept, shortened, on
/// every database (MySQL's TEXT holds 64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_operations_entry_is_kept_shortened() {
    on_every_database(|dialect| async move {
        let (_db, store, _) = two_writers(dialect).await;
        let names: Vec<String> = (0..10_001).map(|i| format!("task_{i:05}_é")).collect();
        let detail = format!("created [{}] updated []", names.join(", "));
        assert!(detail.len() > 100_000);
        let mut tx = store.begin().await.unwrap();
        record_operation(
            &mut tx,
            "ann",
            "goflowctl",
            "apply",
            "big.yaml",
            &detail,
            now_ms(),
        )
        .await
        .unwrap_or_else(|e| panic!("{dialect:?}: {e:#}"));
        tx.commit().await.unwrap();
        let mut conn = store.read().await.unwrap();
        let rows = list_operations(&mut conn, None, 10).await.unwrap();
        let stored = &rows[0].detail;
        assert!(
            stored.len() <= MAX_OPERATION_TEXT,
            "{dialect:?}: {} bytes",
            stored.len()
        );
        assert!(
            stored.starts_with("created [task_00000_é, task_00001_é"),
            "{dialect:?}"
        );
        assert!(
            stored.ends_with("more bytes not kept)"),
            "{dialect:?}: {}",
            &stored[stored.len() - 80..]
        );
    })
    .await;
}

/// Lease renewal, presence and log chunks have connections of their own: a scheduling write
/// transaction that is still open (a long batch) does not hold them up. (With one connection
/// for all, each would wait until that transaction ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookkeeping_and_logs_do_not_wait_for_the_scheduling_writer() {
    on_every_database(|dialect| async move {
        let (_db, one, _two) = two_writers(dialect).await;
        let row = waiting_instance(&one).await;
        let mut tx = one.begin().await.unwrap();
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

        // The scheduling writer's one connection, busy in a transaction. On SQLite (one writer
        // at a time, whatever the connection) it has not written yet; elsewhere it has, on
        // another table.
        let mut held = one.begin().await.unwrap();
        if dialect != Dialect::Sqlite {
            upsert_task(&mut held, &TaskSpec::new("b", "true"), now_ms(), true)
                .await
                .unwrap();
        }
        let beside = async {
            let mut tx = one.begin_unfenced().await?;
            let term = take_lease(&mut tx, "c1", now_ms() + 3_000, now_ms(), "").await?;
            let term = term.expect("a free lease is taken");
            assert!(renew_lease(&mut tx, term.token, now_ms() + 3_000).await?);
            tx.commit().await?;
            let mut tx = one.begin_logs().await?;
            let appended = append_log_at(&mut tx, &attempt, Some("agent"), 0, b"out\n", 1 << 20).await?;
            tx.commit().await?;
            anyhow::Ok(appended)
        };
        let appended = tokio::time::timeout(Duration::from_secs(60), beside)
            .await
            .unwrap_or_else(|_| panic!("waited for the scheduling writer on {dialect:?}"))
            .unwrap();
        assert_eq!(appended, Appended::Acked(4));
        held.rollback().await.unwrap();
    })
    .await;
}

/// The probe: SQLite files were created 0644, readable by every local user.
#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("goflow.db");
    let store = Store::open(&DatabaseUrl::sqlite(&path)).await.unwrap();
    let mut tx = store.begin_unfenced().await.unwrap();
    upsert_task(&mut tx, &TaskSpec::new("a", "true"), now_ms(), true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for file in ["goflow.db", "goflow.db-wal", "goflow.db-shm"] {
        let path = dir.path().join("data").join(file);
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        } else {
            assert_ne!(file, "goflow.db", "the database file exists");
        }
    }
    store.close().await;
}

/// The probe: `user remove` ended sessions only; the tokens the user made kept working.
#[tokio::test]
async fn removing_a_user_can_revoke_the_tokens_they_made() {
    let db = TestDatabase::create(crate::testing::suite_dialect()).await;
    let store = Store::open(&db.database_url()).await.unwrap();
    let mut tx = store.begin_unfenced().await.unwrap();
    for (name, by) in [("ci", "ann"), ("deploy", "ann"), ("other", "bob")] {
        let row = TokenRow {
            name: name.into(),
            role: "operator".into(),
            created_by: by.into(),
            created_at: 1,
            expires_at: None,
            last_used_at: None,
        };
        assert!(
            insert_token(&mut tx, &row, &format!("hash-{name}"))
                .await
                .unwrap()
        );
    }
    assert_eq!(
        revoke_tokens_created_by(&mut tx, "ann").await.unwrap(),
        ["ci", "deploy"]
    );
    tx.commit().await.unwrap();
    let mut conn = store.read().await.unwrap();
    assert!(token_by_hash(&mut conn, "hash-ci", 2).await.unwrap().is_none());
    assert!(token_by_hash(&mut conn, "hash-other", 2).await.unwrap().is_some());
}

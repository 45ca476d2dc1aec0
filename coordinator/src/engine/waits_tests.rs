//! Wait reasons (`waits.rs`) as listings and watches compute them.

use goflow_core::{InstanceKey, TryOutcome};

use super::tests::{day, harness, plan};
use super::*;
use crate::store;

/// A listing's own rows answer its wait reasons (no read of their day); the reasons are those
/// of a cache that reads the day, whichever rows the listing holds.
#[tokio::test]
async fn wait_reasons_from_the_listed_rows_match_those_read_from_the_day() {
    let dag = "tasks:
  - id: a
    command: \"true\"
    retries: 0
  - id: b
    command: \"true\"
    depends_on: [a]
  - id: c
    command: \"true\"
    depends_on: [b]
  - id: d
    command: \"true\"
";
    let h = harness(dag).await;
    h.register().await;
    h.engine
        .run(&plan("a", "20260105", true), &Caller::system())
        .await
        .unwrap();
    let [a] = &h.queue.take()[..] else {
        panic!("only a is dispatched")
    };
    h.run_to(a, TryOutcome::Failed).await;
    // A queued instance of the day outside the chain.
    h.engine
        .run(&plan("d", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let mut conn = h.engine.store().read().await.unwrap();
    let mut rows = vec![];
    for task in ["a", "b", "c", "d"] {
        let key = InstanceKey::new(task, day("20260105"));
        rows.push(store::instance_by_key(&mut conn, &key).await.unwrap().unwrap());
    }
    for listed in [&rows[2..3], &rows[1..3], &rows[..]] {
        let known = wait_reasons(&h.engine, &mut conn, WaitCache::knowing(listed), listed).await;
        let read = wait_reasons(&h.engine, &mut conn, WaitCache::default(), listed).await;
        assert_eq!(known, read, "{listed:#?}");
    }
    let all = wait_reasons(&h.engine, &mut conn, WaitCache::knowing(&rows), &rows).await;
    assert_eq!(
        all[1],
        ("blocked: waits for a@20260105 (failed)".to_string(), true)
    );
    assert_eq!(
        all[2],
        (
            "blocked: waits for b@20260105 (waiting behind a failed upstream)".to_string(),
            true
        )
    );
}

async fn wait_reasons(
    engine: &Engine,
    conn: &mut store::Reader,
    mut cache: WaitCache,
    rows: &[store::InstanceRow],
) -> Vec<(String, bool)> {
    let mut out = vec![];
    for row in rows {
        out.push(engine.wait_reason(conn, row, &mut cache).await.unwrap());
    }
    out
}

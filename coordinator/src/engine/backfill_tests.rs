//! Backfills in the engine (issue 19), on a real SQLite store with a recording queue: what a
//! bounded backfill pushes and holds, what a claim answers while it is full or paused, what
//! resume offers and cancel ends; and (ignored, run by hand) how long a 182,500-instance
//! backfill takes to accept compared with a plain run of the same instances.

use std::time::Instant;

use goflow_core::{InstanceKey, InstanceState, TryOutcome};

use super::tests::{Harness, day, harness};
use super::*;
use crate::store;

const DAG: &str = "tasks:\n  - id: a\n    command: \"true\"\n    priority: 3\n";

fn range(task: &str, from: &str, to: &str, down: bool) -> RunPlan {
    RunPlan {
        task: task.into(),
        from: day(from).into(),
        to: day(to).into(),
        down,
        up: false,
        force: false,
        as_then: false,
    }
}

async fn row(h: &Harness, task: &str, d: &str) -> store::InstanceRow {
    let mut conn = h.engine.store().read().await.unwrap();
    store::instance_by_key(&mut conn, &InstanceKey::new(task, day(d)))
        .await
        .unwrap()
        .expect("instance")
}

async fn finish(h: &Harness, claimed: &ClaimedTry, epoch: i64) {
    h.engine
        .finish(&TryReport {
            attempt_id: claimed.attempt_id.clone(),
            agent_id: "agent-1".into(),
            epoch,
            outcome: TryOutcome::Success,
            exit_code: Some(0),
            message: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bounded_backfill_pushes_its_parallelism_holds_the_rest_and_pause_resume_cancel_work() {
    let h = harness(DAG).await;
    h.register().await;
    let start = BackfillStart { parallelism: Some(1) };
    let (id, rows) = h
        .engine
        .start_backfill(
            &range("a", "20260301", "20260304", false),
            start,
            &Caller::system(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.backfill_id == Some(id)));
    let pushed = h.queue.take();
    assert_eq!(pushed.len(), 1, "parallelism 1: one pushed, {pushed:?}");
    assert_eq!(
        pushed[0].priority,
        goflow_core::backfill::backfill_priority(3),
        "behind every scheduled run"
    );
    let held = row(&h, "a", "20260304").await;
    assert_eq!(
        held.pool_wait.as_deref(),
        Some(format!("backfill {id} runs at most 1 at once").as_str())
    );

    let ClaimOutcome::Granted(first) = h.engine.claim(&pushed[0], "agent-1").await.unwrap() else {
        panic!("the first claim is granted")
    };
    // A held one claimed anyway (pushed before): refused by the claim's own check.
    let other = if pushed[0].instance_id == held.id {
        row(&h, "a", "20260301").await
    } else {
        held.clone()
    };
    let dispatch = h.engine.dispatch_of(&other, other.try_number);
    assert!(matches!(
        h.engine.claim(&dispatch, "agent-1").await.unwrap(),
        ClaimOutcome::Refused(_)
    ));

    // Paused: the running try finishes, nothing more is offered, a claim is refused.
    let paused = h.engine.pause_backfill(id, &Caller::system()).await.unwrap();
    assert_eq!(paused.state, goflow_core::backfill::BackfillState::Paused);
    finish(&h, &first, pushed[0].epoch).await;
    assert!(h.queue.take().is_empty(), "nothing starts while paused");
    match h.engine.claim(&dispatch, "agent-1").await.unwrap() {
        ClaimOutcome::Refused(why) => assert_eq!(why, format!("backfill {id} is paused")),
        ClaimOutcome::Granted(_) => panic!("a paused backfill granted a claim"),
    }

    // Resumed: one offered again.
    h.engine.resume_backfill(id, &Caller::system()).await.unwrap();
    let offered = h.queue.take();
    assert_eq!(offered.len(), 1, "{offered:?}");
    let ClaimOutcome::Granted(second) = h.engine.claim(&offered[0], "agent-1").await.unwrap() else {
        panic!("granted after resume")
    };

    // Cancelled: the running one killed, the two not started killed too; none left queued.
    let outcome = h.engine.cancel_backfill(id, &Caller::system()).await.unwrap();
    assert_eq!(outcome.killed_running.len(), 1);
    assert_eq!(
        outcome.killed_unstarted.get("queued"),
        Some(&2),
        "{:?}",
        outcome.killed_unstarted
    );
    let status = h.engine.backfill(id).await.unwrap();
    assert_eq!(status.progress.count(InstanceState::Killed), 3);
    assert_eq!(status.progress.count(InstanceState::Success), 1);
    assert_eq!(status.progress.unfinished(), 0);
    assert_eq!(status.state, goflow_core::backfill::BackfillState::Cancelled);
    // Its try's late report changes nothing.
    finish(&h, &second, offered[0].epoch).await;
    let mut conn = h.engine.store().read().await.unwrap();
    let late = store::instance_by_id(&mut conn, offered[0].instance_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    assert_eq!(
        late.state,
        InstanceState::Killed,
        "a killed try's late success changes nothing"
    );
    let err = h.engine.pause_backfill(id, &Caller::system()).await.unwrap_err();
    assert!(err.to_string().contains("it is cancelled"), "{err}");
    // Started, paused, resumed and cancelled: each in history.
    let mut conn = h.engine.store().read().await.unwrap();
    let ops = store::list_operations(&mut conn, Some("a"), 50).await.unwrap();
    let actions: Vec<&str> = ops.iter().map(|o| o.action.as_str()).collect();
    for action in [
        "backfill start",
        "backfill pause",
        "backfill resume",
        "backfill cancel",
    ] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }
}

#[tokio::test]
async fn a_later_backfill_takes_over_an_instance() {
    let h = harness(DAG).await;
    let (first, _) = h
        .engine
        .start_backfill(
            &range("a", "20260301", "20260302", false),
            BackfillStart::default(),
            &Caller::system(),
        )
        .await
        .unwrap();
    // Unbounded: both pushed at once.
    assert_eq!(h.queue.take().len(), 2);
    let instance = row(&h, "a", "20260302").await;
    let mut tx = h.engine.store().begin().await.unwrap();
    store::operator_set_state(
        &mut tx,
        instance.id,
        InstanceState::Queued,
        InstanceState::Failed,
        None,
        "",
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (second, _) = h
        .engine
        .start_backfill(
            &range("a", "20260302", "20260302", false),
            BackfillStart::default(),
            &Caller::system(),
        )
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(row(&h, "a", "20260302").await.backfill_id, Some(second));
    assert_eq!(row(&h, "a", "20260301").await.backfill_id, Some(first));
    let listed = h.engine.list_backfills(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.row.id).collect::<Vec<_>>(),
        vec![second, first]
    );
    assert_eq!(
        listed[1].progress.total(),
        1,
        "the instance belongs to the later one"
    );
}

/// `cargo test -p goflow-coordinator --lib backfill_tests::acceptance_time -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn acceptance_time_of_182500_instances_as_a_backfill_and_as_a_plain_run() {
    let mut yaml = String::from("tasks:\n  - id: root\n    command: \"true\"\n");
    for i in 1..100 {
        yaml.push_str(&format!(
            "  - id: t{i}\n    command: \"true\"\n    depends_on: [root]\n"
        ));
    }
    let plan = range("root", "20210101", "20251230", true);
    for as_backfill in [false, true] {
        let h = harness(&yaml).await;
        let started = Instant::now();
        let rows = if as_backfill {
            h.engine
                .start_backfill(&plan, BackfillStart::default(), &Caller::system())
                .await
                .unwrap()
                .1
        } else {
            h.engine.run(&plan, &Caller::system()).await.unwrap()
        };
        let took = started.elapsed();
        assert_eq!(rows.len(), 182_500);
        println!(
            "{}: {} instances accepted in {took:.2?}",
            if as_backfill { "backfill" } else { "plain run" },
            rows.len()
        );
    }
}

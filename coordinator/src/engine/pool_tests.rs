//! Pools and max_active in the engine: what is pushed, what is held back, what a claim of a
//! full pool answers, and what a finished try frees (on a real SQLite store).

use goflow_core::{Dispatch, InstanceKey, InstanceState, TryOutcome};

use super::tests::{Harness, day, harness};
use super::*;
use crate::store;

const DAG: &str = "pools:\n  - {id: p1, slots: 1}\ntasks:\n  - id: a\n    command: \"true\"\n    pool: p1\n    day_offset: 0\n";

fn backfill(task: &str, from: &str, to: &str) -> RunPlan {
    RunPlan {
        task: task.into(),
        from: day(from).into(),
        to: day(to).into(),
        down: false,
        up: false,
        force: false,
        as_then: false,
    }
}

impl Harness {
    async fn row(&self, task: &str, d: &str) -> store::InstanceRow {
        let mut conn = self.engine.store().read().await.unwrap();
        store::instance_by_key(&mut conn, &InstanceKey::new(task, day(d)))
            .await
            .unwrap()
            .expect("instance")
    }

    async fn claim_as(&self, dispatch: &Dispatch, agent: &str) -> ClaimOutcome {
        self.engine.claim(dispatch, agent).await.unwrap()
    }
}

#[tokio::test]
async fn a_full_pool_holds_back_refuses_without_spending_a_try_and_offers_when_a_slot_frees() {
    let h = harness(DAG).await;
    h.register().await;
    h.engine
        .run(&backfill("a", "20260301", "20260302"), &Caller::system())
        .await
        .unwrap();
    // One slot: one dispatch pushed, the other held back with why.
    let pushed = h.queue.take();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let first = pushed[0].clone();
    let held_day = if first.instance_id == h.row("a", "20260301").await.id {
        "20260302"
    } else {
        "20260301"
    };
    let held = h.row("a", held_day).await;
    assert_eq!(held.state, InstanceState::Queued);
    assert_eq!(
        held.pool_wait.as_deref(),
        Some("waiting for pool p1 (1 of 1 slots in use)")
    );
    let ClaimOutcome::Granted(claimed) = h.claim_as(&first, "agent-1").await else {
        panic!("the first claim is granted")
    };

    // A claim of the held one anyway (a dispatch pushed before, or by another coordinator):
    // the claim's own check refuses it, and nothing is spent.
    let held_dispatch = h.engine.dispatch_of(&held, held.try_number);
    match h.claim_as(&held_dispatch, "agent-2").await {
        ClaimOutcome::Refused(why) => assert_eq!(why, "waiting for pool p1 (1 of 1 slots in use)"),
        ClaimOutcome::Granted(_) => panic!("a full pool granted a claim"),
    }
    let after = h.row("a", held_day).await;
    assert_eq!((after.state, after.try_number), (InstanceState::Queued, 1));
    assert!(
        h.queue.take().is_empty(),
        "nothing offered while the pool is full"
    );

    // The running try ends: the held instance is offered, at the same try, and may start.
    h.engine
        .finish(&TryReport {
            attempt_id: claimed.attempt_id,
            agent_id: "agent-1".into(),
            epoch: first.epoch,
            outcome: TryOutcome::Success,
            exit_code: Some(0),
            message: String::new(),
        })
        .await
        .unwrap();
    let offered = h.queue.take();
    assert_eq!(offered, vec![held_dispatch.clone()]);
    assert!(matches!(
        h.claim_as(&held_dispatch, "agent-2").await,
        ClaimOutcome::Granted(_)
    ));
    let pools = h.engine.list_pools().await.unwrap();
    assert_eq!((pools[0].used, pools[0].slots), (1, 1));
    assert_eq!(pools[0].holders[0].agent_id, "agent-2");
}

#[tokio::test]
async fn more_slots_applied_offer_the_held_ones_at_once() {
    let h = harness(DAG).await;
    h.engine
        .run(&backfill("a", "20260301", "20260303"), &Caller::system())
        .await
        .unwrap();
    assert_eq!(h.queue.take().len(), 1);
    h.engine
        .apply(
            "pools:\n  - {id: p1, slots: 3}\ntasks: []\n",
            "more.yaml",
            false,
            &Caller::system(),
        )
        .await
        .unwrap();
    // The first is still on its way (unclaimed): two more have room.
    assert_eq!(h.queue.take().len(), 2);
}

#[tokio::test]
async fn max_active_holds_a_tasks_other_days_back() {
    let h = harness("tasks:\n  - id: m\n    command: \"true\"\n    max_active: 2\n    day_offset: 0\n").await;
    h.engine
        .run(&backfill("m", "20260301", "20260305"), &Caller::system())
        .await
        .unwrap();
    assert_eq!(h.queue.take().len(), 2);
    let rows = {
        let mut conn = h.engine.store().read().await.unwrap();
        store::held_instances(&mut conn).await.unwrap()
    };
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0].pool_wait.as_deref(),
        Some("waiting for max_active of task m (2 of 2 tries running)")
    );
}

#[tokio::test]
async fn an_unknown_pool_refuses_the_apply_and_a_used_pool_cannot_be_deleted() {
    let h = harness(DAG).await;
    let err = h
        .engine
        .apply(
            "tasks:\n  - id: b\n    command: \"true\"\n    pool: nowhere\n",
            "bad.yaml",
            false,
            &Caller::system(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad.yaml: task \"b\": unknown pool \"nowhere\" (define it under `pools:` with its slots)"
    );
    assert!(!h.engine.catalog().tasks.contains_key("b"));
    let err = h.engine.delete_pool("p1", &Caller::system()).await.unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    assert_eq!(h.engine.list_pools().await.unwrap().len(), 1);
}

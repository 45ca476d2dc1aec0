//! The hand-off (issue 21): a finish that releases a downstream claims it for the reporting
//! agent in the same commit, as a claim would; nothing else changes for reports without it.

use goflow_core::{Dispatch, InstanceKey, InstanceState, TryOutcome};

use super::tests::{Harness, age_claims, day, harness, harness_with, plan};
use super::*;
use crate::store;

const CHAIN: &str = r#"
tasks:
  - id: a
    command: "true"
  - id: b
    command: "echo {{task_id}}"
    retries: 0
    depends_on: [a]
"#;

/// `a` and `b` of 2026-01-05 created (b waiting for a), `a`'s try claimed by agent-1.
async fn chain_with_a_running(h: &Harness) -> (Dispatch, ClaimedTry) {
    running(h, "a", true).await
}

/// `task` of 2026-01-05 run (with its downstreams when `down`), its try claimed by agent-1.
async fn running(h: &Harness, task: &str, down: bool) -> (Dispatch, ClaimedTry) {
    h.engine
        .run(&plan(task, "20260105", down), &Caller::system())
        .await
        .unwrap();
    let dispatch = h.queue.take().remove(0);
    let ClaimOutcome::Granted(claimed) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("refused")
    };
    (dispatch, claimed)
}

fn success(attempt_id: &str, agent: &str, epoch: i64) -> TryReport {
    TryReport {
        attempt_id: attempt_id.into(),
        agent_id: agent.into(),
        epoch,
        outcome: TryOutcome::Success,
        exit_code: Some(0),
        message: String::new(),
    }
}

fn metric(h: &Harness, line_start: &str) -> String {
    let text = h.engine.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_string()
}

async fn b_row(h: &Harness) -> store::InstanceRow {
    let mut conn = h.engine.store().read().await.unwrap();
    store::instance_by_key(&mut conn, &InstanceKey::new("b", day("20260105")))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_finish_that_releases_a_downstream_hands_it_to_its_agent_in_the_same_commit() {
    let h = harness(CHAIN).await;
    h.register().await;
    let (a, claimed) = chain_with_a_running(&h).await;
    let commits_before = metric(&h, "goflow_writes_per_commit_count");

    let finished = h
        .engine
        .finish_taking_next(&success(&claimed.attempt_id, "agent-1", a.epoch), true)
        .await
        .unwrap();

    assert_eq!(finished.outcome, FinishOutcome::Accepted);
    let next = finished.next.expect("b handed off");
    let b = b_row(&h).await;
    assert_eq!(next.dispatch.instance_id, b.id);
    assert_eq!((next.dispatch.try_number, next.dispatch.epoch), (1, a.epoch));
    assert_eq!(next.claimed.attempt_id, store::attempt_id(b.id, 1));
    assert_eq!(next.claimed.command, "echo b", "rendered as a claim renders it");
    assert_eq!(b.state, InstanceState::Running);
    assert_eq!((b.try_number, b.agent_id.as_deref()), (1, Some("agent-1")));
    let mut conn = h.engine.store().read().await.unwrap();
    let attempt = store::attempt(&mut conn, &next.claimed.attempt_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    assert_eq!(
        (attempt.state.as_str(), attempt.agent_id.as_str(), attempt.epoch),
        ("running", "agent-1", a.epoch)
    );
    assert!(h.queue.take().is_empty(), "the handed-off try is not pushed");
    // One more commit for the finish and the claim together (the counter is cumulative).
    let count = |line: &str| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    let commits_after = metric(&h, "goflow_writes_per_commit_count");
    assert_eq!(count(&commits_after), count(&commits_before) + 1);
    assert_eq!(metric(&h, "goflow_handoffs_total"), "goflow_handoffs_total 1");

    // Its finish is reported like any claimed try's.
    let done = h
        .engine
        .finish(&success(&next.claimed.attempt_id, "agent-1", next.dispatch.epoch))
        .await
        .unwrap();
    assert_eq!(done, FinishOutcome::Accepted);
    assert_eq!(h.state("b", "20260105").await, Some(InstanceState::Success));
}

#[tokio::test]
async fn without_take_next_the_downstream_is_pushed_as_before() {
    let h = harness(CHAIN).await;
    h.register().await;
    let (a, claimed) = chain_with_a_running(&h).await;
    let finished = h
        .engine
        .finish_taking_next(&success(&claimed.attempt_id, "agent-1", a.epoch), false)
        .await
        .unwrap();
    assert!(finished.next.is_none());
    assert_eq!(h.queue.take().len(), 1, "b is pushed");
    assert_eq!(h.state("b", "20260105").await, Some(InstanceState::Queued));
    assert_eq!(metric(&h, "goflow_handoffs_total"), "goflow_handoffs_total 0");
}

#[tokio::test]
async fn nothing_is_handed_off_to_an_agent_that_does_not_serve_the_queue_or_drains() {
    // Serves another queue.
    let h = harness(CHAIN).await;
    h.engine
        .register_agent(AgentRegistration {
            agent_id: "agent-1".into(),
            host: "h".into(),
            slots: 1,
            queues: vec!["default".into(), "other".into()],
            version: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (a, claimed) = chain_with_a_running(&h).await;
    h.engine
        .register_agent(AgentRegistration {
            agent_id: "agent-1".into(),
            host: "h".into(),
            slots: 1,
            queues: vec!["other".into()],
            version: "test".into(),
            running_attempts: vec![claimed.attempt_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let finished = h
        .engine
        .finish_taking_next(&success(&claimed.attempt_id, "agent-1", a.epoch), true)
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Accepted);
    assert!(finished.next.is_none());
    assert_eq!(h.queue.take().len(), 1, "b is pushed for an agent of its queue");

    // Draining (its heartbeat said so).
    let h = harness(CHAIN).await;
    h.register().await;
    let (a, claimed) = chain_with_a_running(&h).await;
    let draining = HeartbeatExtras {
        draining: true,
        ..Default::default()
    };
    h.engine
        .heartbeat_with("agent-1", std::slice::from_ref(&claimed.attempt_id), &draining)
        .await
        .unwrap();
    let finished = h
        .engine
        .finish_taking_next(&success(&claimed.attempt_id, "agent-1", a.epoch), true)
        .await
        .unwrap();
    assert!(finished.next.is_none());
    assert_eq!(h.queue.take().len(), 1);
}

/// The finish's answer never reaches the agent: it never lists the try. Past the grace the try
/// is dispatched again, like a claim whose answer the agent still waits for: the command never
/// ran, so it spends neither a retry nor RetryQueueTimes (here 0: a lost try would fail it).
#[tokio::test]
async fn a_hand_off_whose_answer_was_lost_is_dispatched_again_without_counting_it_lost() {
    let settings = EngineSettings {
        retry_queue_times: 0,
        ..EngineSettings::default()
    };
    let h = harness_with(CHAIN, settings).await;
    h.register().await;
    let (a, claimed) = chain_with_a_running(&h).await;
    let next = h
        .engine
        .finish_taking_next(&success(&claimed.attempt_id, "agent-1", a.epoch), true)
        .await
        .unwrap()
        .next
        .expect("handed off");
    // Within the grace the try is left to the agent.
    h.engine.heartbeat("agent-1", &[]).await.unwrap();
    assert_eq!(b_row(&h).await.state, InstanceState::Running);

    age_claims(&h.engine).await;
    h.engine.heartbeat("agent-1", &[]).await.unwrap();
    let b = b_row(&h).await;
    assert_eq!(
        (b.state, b.try_number, b.lost_tries),
        (InstanceState::Queued, 2, 0)
    );
    let again = h.queue.take();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].instance_id, again[0].try_number), (b.id, 2));
    let mut conn = h.engine.store().read().await.unwrap();
    let attempt = store::attempt(&mut conn, &next.claimed.attempt_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    assert_eq!(attempt.state, "lost");
    assert!(attempt.message.starts_with("not started:"), "{}", attempt.message);
    // Its late finish report (had it run after all) changes nothing.
    let late = h
        .engine
        .finish(&success(&next.claimed.attempt_id, "agent-1", a.epoch))
        .await
        .unwrap();
    assert!(matches!(late, FinishOutcome::Stale(_)), "{late:?}");
}

/// The hand-off's claim is a claim: a downstream whose pool is full is not handed off but held
/// back at the same try, as a refused claim leaves it (not pushed), and offered when the pool's
/// slot frees.
#[tokio::test]
async fn a_downstream_of_a_full_pool_is_held_back_not_handed_off() {
    let dag = r#"
pools:
  - {id: p1, slots: 1}
tasks:
  - id: x
    command: "true"
    pool: p1
  - id: a
    command: "true"
  - id: b
    command: "true"
    pool: p1
    depends_on: [a]
"#;
    let h = harness(dag).await;
    h.register().await;
    let (x, x_try) = running(&h, "x", false).await;
    let (a, a_try) = chain_with_a_running(&h).await;

    let finished = h
        .engine
        .finish_taking_next(&success(&a_try.attempt_id, "agent-1", a.epoch), true)
        .await
        .unwrap();
    assert_eq!(finished.outcome, FinishOutcome::Accepted);
    assert!(finished.next.is_none(), "p1 is full");
    assert!(h.queue.take().is_empty(), "held back, not pushed");
    let b = b_row(&h).await;
    assert_eq!((b.state, b.try_number), (InstanceState::Queued, 1));
    assert_eq!(
        b.pool_wait.as_deref(),
        Some("waiting for pool p1 (1 of 1 slots in use)")
    );
    assert_eq!(metric(&h, "goflow_handoffs_total"), "goflow_handoffs_total 0");

    // x ends: its slot goes to b.
    h.engine
        .finish(&success(&x_try.attempt_id, "agent-1", x.epoch))
        .await
        .unwrap();
    let offered = h.queue.take();
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!((offered[0].instance_id, offered[0].try_number), (b.id, 1));
}

//! The engine's decisions, on a real SQLite store with a queue that records what it is given:
//! which instances a fire or a run creates, when a join is released, which reports are stale.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use goflow_agent::DispatchQueue;
use goflow_core::{Dispatch, EtlDay, InstanceKey, InstanceState, TryOutcome};

use super::*;
use crate::store::{self, Store};

/// Records every push; nothing is ever popped.
#[derive(Default)]
pub(super) struct RecordingQueue {
    pushed: Mutex<Vec<Dispatch>>,
}

#[async_trait]
impl DispatchQueue for RecordingQueue {
    async fn push(&self, dispatches: Vec<Dispatch>) -> anyhow::Result<()> {
        self.pushed.lock().unwrap().extend(dispatches);
        Ok(())
    }
    async fn pop(&self, _queues: &[String]) -> anyhow::Result<Dispatch> {
        std::future::pending().await
    }
}

impl RecordingQueue {
    pub(super) fn take(&self) -> Vec<Dispatch> {
        std::mem::take(&mut *self.pushed.lock().unwrap())
    }
}

pub(super) struct Harness {
    pub(super) engine: Arc<Engine>,
    pub(super) queue: Arc<RecordingQueue>,
    pub(super) _dir: tempfile::TempDir,
}

pub(super) async fn harness(dag: &str) -> Harness {
    harness_with(dag, EngineSettings::default()).await
}

/// [`harness`] with these settings.
pub(super) async fn harness_with(dag: &str, settings: EngineSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let queue = Arc::new(RecordingQueue::default());
    let epoch = store.next_epoch().await.unwrap();
    let engine = Engine::new(
        store,
        queue.clone(),
        settings,
        "standalone",
        epoch,
        Default::default(),
    )
    .await
    .unwrap();
    engine
        .apply(dag, "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    Harness {
        engine,
        queue,
        _dir: dir,
    }
}

pub(super) fn day(text: &str) -> EtlDay {
    EtlDay::parse(text).unwrap()
}

/// Run `task` for one day; `down`: with its downstream.
pub(super) fn plan(task: &str, on: &str, down: bool) -> RunPlan {
    RunPlan {
        as_then: false,
        task: task.into(),
        from: day(on).into(),
        to: day(on).into(),
        down,
        up: false,
        force: false,
    }
}

impl Harness {
    pub(super) async fn state(&self, task: &str, d: &str) -> Option<InstanceState> {
        let mut conn = self.engine.store().read().await.unwrap();
        store::instance_by_key(&mut conn, &InstanceKey::new(task, day(d)))
            .await
            .unwrap()
            .map(|r| r.state)
    }

    /// Claims and finishes one dispatch as an agent would.
    pub(super) async fn run_to(&self, dispatch: &Dispatch, outcome: TryOutcome) -> FinishOutcome {
        let ClaimOutcome::Granted(claimed) = self.engine.claim(dispatch, "agent-1").await.unwrap() else {
            panic!("claim of {dispatch:?} refused")
        };
        self.engine
            .finish(&TryReport {
                attempt_id: claimed.attempt_id,
                agent_id: "agent-1".into(),
                epoch: dispatch.epoch,
                outcome,
                exit_code: Some(0),
                message: String::new(),
            })
            .await
            .unwrap()
    }

    pub(super) async fn register(&self) {
        self.register_as("agent-1").await;
    }

    async fn register_as(&self, agent: &str) {
        self.register_process(agent, "").await;
    }

    /// Registers `agent` as the process `incarnation` ("": unknown), listing no running try.
    pub(super) async fn register_process(&self, agent: &str, incarnation: &str) {
        self.engine
            .register_agent(AgentRegistration {
                agent_id: agent.into(),
                host: "h".into(),
                slots: 4,
                queues: vec![],
                version: "test".into(),
                running_attempts: vec![],
                incarnation: incarnation.into(),
            })
            .await
            .unwrap();
    }
}

const OFFSET_DAG: &str = r#"
tasks:
  - id: a
    command: "true"
    schedule: "0 3 * * *"
  - id: b
    command: "true"
    depends_on: [{task: a, day_offset: -1}]
"#;

#[tokio::test]
async fn a_days_run_includes_a_downstream_that_only_waits_for_yesterday() {
    let h = harness(OFFSET_DAG).await;
    h.register().await;
    let rows = h
        .engine
        .do_all_job(day("20260105"), &Caller::system())
        .await
        .unwrap();
    let keys: Vec<String> = rows.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(keys, ["a@20260105", "b@20260105"], "b@D is part of D's run");
    // b@D waits for a@D-1, which does not exist: it waits, it is not queued.
    assert_eq!(h.state("b", "20260105").await, Some(InstanceState::Waiting));
    let dispatched: Vec<i64> = h.queue.take().iter().map(|d| d.instance_id).collect();
    assert_eq!(dispatched, [rows[0].id], "only a@D is ready");
    // a@D-1 succeeds: b@D is released.
    h.engine
        .mark_success(&InstanceKey::new("a", day("20260104")), false, &Caller::system())
        .await
        .unwrap();
    assert_eq!(h.state("b", "20260105").await, Some(InstanceState::Queued));
}

#[tokio::test]
async fn run_down_stays_within_the_days_asked_for() {
    let h = harness(OFFSET_DAG).await;
    let plan = plan("a", "20260105", true);
    let rows = h.engine.run(&plan, &Caller::system()).await.unwrap();
    assert_eq!(rows.len(), 1, "b@20260106 is outside the days asked for");
    assert_eq!(h.state("b", "20260106").await, None);
}

pub(super) fn fan_in(width: usize) -> String {
    let mut dag = String::from("tasks:\n");
    for i in 0..width {
        dag.push_str(&format!("  - id: up{i}\n    command: \"true\"\n"));
    }
    let ups: Vec<String> = (0..width).map(|i| format!("up{i}")).collect();
    dag.push_str(&format!(
        "  - id: join\n    command: \"true\"\n    depends_on: [{}]\n",
        ups.join(", ")
    ));
    dag
}

#[tokio::test]
async fn a_join_is_released_once_by_its_last_upstream_whatever_the_order() {
    let h = harness(&fan_in(60)).await;
    h.register().await;
    let mut roots = vec![];
    for i in 0..60 {
        h.engine
            .run(&plan(&format!("up{i}"), "20260105", false), &Caller::system())
            .await
            .unwrap();
        roots.extend(h.queue.take());
    }
    // The join exists and waits (created by a run of it with its upstreams pending).
    let join_plan = plan("join", "20260105", false);
    h.engine.run(&join_plan, &Caller::system()).await.unwrap();
    assert!(h.queue.take().is_empty());
    // Finish the upstreams in a scrambled order; the join must wait for the very last.
    roots.reverse();
    roots.swap(3, 40);
    let last = roots.pop().unwrap();
    for (n, dispatch) in roots.iter().enumerate() {
        assert_eq!(
            h.run_to(dispatch, TryOutcome::Success).await,
            FinishOutcome::Accepted
        );
        assert!(
            h.queue.take().is_empty(),
            "join released after {} of 60 upstreams",
            n + 1
        );
        assert_eq!(h.state("join", "20260105").await, Some(InstanceState::Waiting));
    }
    h.run_to(&last, TryOutcome::Success).await;
    let released = h.queue.take();
    assert_eq!(released.len(), 1, "the join is dispatched once");
    assert_eq!(h.state("join", "20260105").await, Some(InstanceState::Queued));
}

#[tokio::test]
async fn a_redone_upstream_is_not_counted_as_met_by_a_stale_hint() {
    let h = harness(&fan_in(2)).await;
    h.register().await;
    let run = |task: &str| plan(task, "20260105", false);
    h.engine.run(&run("up0"), &Caller::system()).await.unwrap();
    h.engine.run(&run("up1"), &Caller::system()).await.unwrap();
    h.engine.run(&run("join"), &Caller::system()).await.unwrap();
    let dispatches = h.queue.take();
    h.run_to(&dispatches[0], TryOutcome::Success).await;
    // up0 succeeded and the join's hint knows it; now up0 is rerun (back to waiting/queued).
    h.engine.run(&run("up0"), &Caller::system()).await.unwrap();
    let rerun = h.queue.take();
    h.run_to(&dispatches[1], TryOutcome::Success).await;
    assert_eq!(
        h.state("join", "20260105").await,
        Some(InstanceState::Waiting),
        "up0 is running again: the join must wait for it"
    );
    h.run_to(&rerun[0], TryOutcome::Success).await;
    assert_eq!(h.state("join", "20260105").await, Some(InstanceState::Queued));
}

#[tokio::test]
async fn a_late_report_of_a_killed_try_changes_nothing() {
    let h = harness(&fan_in(1)).await;
    h.register().await;
    let plan = plan("up0", "20260105", true);
    h.engine.run(&plan, &Caller::system()).await.unwrap();
    let dispatch = h.queue.take().remove(0);
    let ClaimOutcome::Granted(claimed) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("refused")
    };
    // A second claim of the same dispatch by another agent is refused: the try runs already.
    assert!(matches!(
        h.engine.claim(&dispatch, "agent-2").await.unwrap(),
        ClaimOutcome::Refused(_)
    ));
    // The same agent claiming again (its answer was lost) gets the same try back, not a new one.
    let ClaimOutcome::Granted(again) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("a repeated claim by the same agent must be granted")
    };
    assert_eq!(again.attempt_id, claimed.attempt_id);
    h.engine.kill(&plan, &Caller::system()).await.unwrap();
    let late = h
        .engine
        .finish(&TryReport {
            attempt_id: claimed.attempt_id,
            agent_id: "agent-1".into(),
            epoch: dispatch.epoch,
            outcome: TryOutcome::Success,
            exit_code: Some(0),
            message: String::new(),
        })
        .await
        .unwrap();
    assert!(matches!(late, FinishOutcome::Stale(_)), "{late:?}");
    assert_eq!(h.state("up0", "20260105").await, Some(InstanceState::Killed));
    assert_eq!(
        h.state("join", "20260105").await,
        Some(InstanceState::Killed),
        "--down killed the join too"
    );
    assert!(
        h.queue.take().is_empty(),
        "nothing was released by the late success"
    );
}

#[tokio::test]
async fn a_failed_try_is_retried_then_the_instance_fails() {
    let h =
        harness("tasks:\n  - id: flaky\n    command: \"false\"\n    retries: 1\n    retry_delay: 0s\n").await;
    h.register().await;
    let plan = plan("flaky", "20260105", false);
    h.engine.run(&plan, &Caller::system()).await.unwrap();
    let first = h.queue.take().remove(0);
    h.run_to(&first, TryOutcome::Failed).await;
    assert_eq!(
        h.state("flaky", "20260105").await,
        Some(InstanceState::UpForRetry)
    );
    h.engine.queue_due_retries().await.unwrap();
    let second = h.queue.take().remove(0);
    assert_eq!(second.try_number, 2);
    // The first try's dispatch is stale now: refused.
    assert!(matches!(
        h.engine.claim(&first, "agent-1").await.unwrap(),
        ClaimOutcome::Refused(_)
    ));
    h.run_to(&second, TryOutcome::TimedOut).await;
    assert_eq!(h.state("flaky", "20260105").await, Some(InstanceState::Failed));
}

#[tokio::test]
async fn apply_releases_instances_whose_upstream_was_dropped_in_one_sweep() {
    let h = harness(&fan_in(3)).await;
    let plan = RunPlan {
        as_then: false,
        task: "join".into(),
        from: day("20260101").into(),
        to: day("20260110").into(),
        down: false,
        up: false,
        force: false,
    };
    h.engine.run(&plan, &Caller::system()).await.unwrap();
    assert!(h.queue.take().is_empty(), "ten joins wait for their upstreams");
    let changed = h
        .engine
        .apply(
            "tasks:\n  - id: join\n    command: \"true\"\n",
            "v2.yaml",
            false,
            &Caller::system(),
        )
        .await
        .unwrap();
    assert_eq!(changed.updated, ["join"]);
    assert_eq!(
        h.queue.take().len(),
        10,
        "every join is queued once its upstreams are gone"
    );
}

/// Metrics (issue 11): tries counted by outcome as reported, instances by state and the
/// agents' slots read by the leader's refresh.
#[tokio::test]
async fn tries_are_counted_by_outcome_and_instances_by_state() {
    let h =
        harness("tasks:\n  - id: flaky\n    command: \"false\"\n    retries: 1\n    retry_delay: 0s\n").await;
    h.register().await;
    h.engine
        .run(&plan("flaky", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let first = h.queue.take().remove(0);
    h.run_to(&first, TryOutcome::Failed).await;
    h.engine.queue_due_retries().await.unwrap();
    let second = h.queue.take().remove(0);
    h.run_to(&second, TryOutcome::TimedOut).await;
    h.engine.refresh_metrics().await.unwrap();
    let text = h.engine.metrics().encode();
    for line in [
        "goflow_tries_started_total{queue=\"default\"} 2",
        "goflow_tries_finished_total{outcome=\"failed\"} 1",
        "goflow_tries_finished_total{outcome=\"timed_out\"} 1",
        "goflow_instances{state=\"failed\"} 1",
        "goflow_instances{state=\"success\"} 0",
        "goflow_agent_slots{agent=\"agent-1\"} 4",
        "goflow_agent_slots_used{agent=\"agent-1\"} 0",
        "goflow_dispatch_latency_seconds_count{queue=\"default\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("20260105"), "no data date in a label:\n{text}");
}

#[tokio::test]
async fn a_new_leader_grants_again_a_claim_whose_answer_was_lost_with_the_old_one() {
    let h = harness(&fan_in(1)).await;
    h.register().await;
    h.engine
        .run(&plan("up0", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let dispatch = h.queue.take().remove(0);
    let ClaimOutcome::Granted(first) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("refused")
    };
    // The leader dies before the agent hears the answer; the next one has a new epoch.
    let epoch = h.engine.store().next_epoch().await.unwrap();
    let settings = EngineSettings::default();
    let next = Engine::new(
        h.engine.store().clone(),
        h.queue.clone(),
        settings,
        "coordinator",
        epoch,
        Default::default(),
    )
    .await
    .unwrap();
    let ClaimOutcome::Granted(again) = next.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("the try already runs for agent-1: its repeated claim must be granted")
    };
    assert_eq!(again.attempt_id, first.attempt_id);
    // Another agent presenting the old dispatch is refused (stale epoch).
    assert!(matches!(
        next.claim(&dispatch, "agent-2").await.unwrap(),
        ClaimOutcome::Refused(_)
    ));
}

/// Runs `calls` while the test holds the writer, so that they all wait and then go in one
/// batch when it lets go; their results in order.
async fn in_one_batch<F>(engine: &Engine, calls: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let writer = engine.group.writer.lock().await;
    let jobs = calls.len();
    let calls: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let queued = engine.group.pending.lock().unwrap().len();
        if queued >= jobs {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {queued} of {jobs} writes queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(writer);
    let mut results = vec![];
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

/// Claims of one dispatch by two agents, and finish reports, all in one transaction: each is
/// still its own compare-and-set (one grant per instance), and the join is released once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_share_a_commit_are_each_decided_as_alone() {
    let h = harness(&fan_in(20)).await;
    h.register().await;
    h.register_as("agent-2").await;
    let mut roots = vec![];
    for i in 0..20 {
        let run = plan(&format!("up{i}"), "20260105", false);
        h.engine.run(&run, &Caller::system()).await.unwrap();
        roots.extend(h.queue.take());
    }
    h.engine
        .run(&plan("join", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let mut calls = vec![];
    for dispatch in &roots {
        for agent in ["agent-1", "agent-2"] {
            let (engine, dispatch) = (h.engine.clone(), dispatch.clone());
            calls.push(async move { (agent, engine.claim(&dispatch, agent).await.unwrap()) });
        }
    }
    let claims = in_one_batch(&h.engine, calls).await;
    let granted: Vec<(&str, ClaimedTry)> = claims
        .into_iter()
        .filter_map(|(agent, outcome)| match outcome {
            ClaimOutcome::Granted(claimed) => Some((agent, claimed)),
            ClaimOutcome::Refused(_) => None,
        })
        .collect();
    assert_eq!(granted.len(), 20, "one grant per instance");
    let tasks: std::collections::HashSet<&str> = granted.iter().map(|(_, c)| c.task.as_str()).collect();
    assert_eq!(tasks.len(), 20);

    let mut calls = vec![];
    for (agent, claimed) in granted {
        let engine = h.engine.clone();
        let report = TryReport {
            attempt_id: claimed.attempt_id,
            agent_id: agent.into(),
            epoch: engine.epoch(),
            outcome: TryOutcome::Success,
            exit_code: Some(0),
            message: String::new(),
        };
        calls.push(async move { engine.finish(&report).await.unwrap() });
    }
    let finished = in_one_batch(&h.engine, calls).await;
    assert!(
        finished.iter().all(|f| *f == FinishOutcome::Accepted),
        "{finished:?}"
    );
    assert_eq!(h.queue.take().len(), 1, "the join is dispatched once");
    assert_eq!(h.state("join", "20260105").await, Some(InstanceState::Queued));
    let text = h.engine.metrics().encode();
    assert!(
        text.lines().any(|l| l == "goflow_writes_per_commit_sum 60.0"),
        "40 claims and 20 reports:\n{text}"
    );
    assert!(
        text.lines().any(|l| l == "goflow_writes_per_commit_count 2"),
        "in two transactions:\n{text}"
    );
}

/// A write that fails in a shared transaction fails alone: the others of its batch are
/// written one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone() {
    let h = harness(&fan_in(3)).await;
    h.register().await;
    let mut claimed = vec![];
    for i in 0..3 {
        let run = plan(&format!("up{i}"), "20260105", false);
        h.engine.run(&run, &Caller::system()).await.unwrap();
        let dispatch = h.queue.take().remove(0);
        let ClaimOutcome::Granted(try_) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
            panic!("refused")
        };
        claimed.push(try_);
    }
    // up1 is gone from the catalog (as if deleted meanwhile): its report cannot be decided.
    {
        let old = h.engine.catalog();
        let mut tasks = old.tasks.clone();
        tasks.remove("up1");
        *h.engine.catalog.write().unwrap() = Arc::new(Catalog {
            dag: old.dag.clone(),
            tasks,
            limited: Default::default(),
        });
    }
    let mut calls = vec![];
    for try_ in &claimed {
        let engine = h.engine.clone();
        let report = TryReport {
            attempt_id: try_.attempt_id.clone(),
            agent_id: "agent-1".into(),
            epoch: engine.epoch(),
            outcome: TryOutcome::Success,
            exit_code: Some(0),
            message: String::new(),
        };
        calls.push(async move { engine.finish(&report).await });
    }
    let results = in_one_batch(&h.engine, calls).await;
    assert!(
        matches!(results[0], Ok(FinishOutcome::Accepted)),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Err(EngineError::NotFound(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Ok(FinishOutcome::Accepted)),
        "{:?}",
        results[2]
    );
    assert_eq!(h.state("up0", "20260105").await, Some(InstanceState::Success));
    assert_eq!(
        h.state("up1", "20260105").await,
        Some(InstanceState::Running),
        "nothing of it written"
    );
    assert_eq!(h.state("up2", "20260105").await, Some(InstanceState::Success));
}

/// An engine on `h`'s store whose RetryQueueTimes is 0: a try counted lost fails its instance.
async fn without_queue_retries(h: &Harness) -> Arc<Engine> {
    let epoch = h.engine.store().next_epoch().await.unwrap();
    let settings = EngineSettings {
        retry_queue_times: 0,
        ..EngineSettings::default()
    };
    Engine::new(
        h.engine.store().clone(),
        h.queue.clone(),
        settings,
        "standalone",
        epoch,
        Default::default(),
    )
    .await
    .unwrap()
}

/// Makes every try look claimed a minute ago, past the grace a heartbeat gives new claims.
pub(super) async fn age_claims(engine: &Engine) {
    let mut tx = engine.store().begin().await.unwrap();
    sqlx::query("UPDATE attempts SET started_at = started_at - 60000")
        .execute(store::Db::conn(&mut tx))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A grant whose answer reached its agent too late (so it never started the try) is dispatched
/// again without spending RetryQueueTimes, whether the agent says so after the answer or is
/// still waiting for it; a try the agent simply no longer lists is still counted lost.
#[tokio::test]
async fn a_grant_answered_too_late_is_dispatched_again_without_counting_it_lost() {
    let h = harness("tasks:\n  - id: slow\n    command: \"true\"\n    retries: 0\n").await;
    h.register().await;
    let engine = without_queue_retries(&h).await;
    engine
        .run(&plan("slow", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let row = |engine: Arc<Engine>| async move {
        let mut conn = engine.store().read().await.unwrap();
        store::instance_by_key(&mut conn, &InstanceKey::new("slow", day("20260105")))
            .await
            .unwrap()
            .unwrap()
    };

    // The agent heard of the grant too late and says so.
    let first = h.queue.take().remove(0);
    let ClaimOutcome::Granted(claimed) = engine.claim(&first, "agent-1").await.unwrap() else {
        panic!("refused")
    };
    let said = HeartbeatExtras {
        unstarted_attempts: vec![claimed.attempt_id.clone()],
        ..Default::default()
    };
    engine.heartbeat_with("agent-1", &[], &said).await.unwrap();
    let r = row(engine.clone()).await;
    assert_eq!(
        (r.state, r.try_number, r.lost_tries),
        (InstanceState::Queued, 2, 0)
    );
    let second = h.queue.take().remove(0);
    assert_eq!(second.try_number, 2);
    let mut conn = engine.store().read().await.unwrap();
    let attempt = store::attempt(&mut conn, &claimed.attempt_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    assert_eq!(attempt.state, "lost");
    assert!(attempt.message.contains("too late"), "{}", attempt.message);

    // The agent still waits for the answer past the grace: it will not start the try.
    engine.claim(&second, "agent-1").await.unwrap();
    age_claims(&engine).await;
    let waiting = HeartbeatExtras {
        claiming: vec![(second.instance_id, second.try_number)],
        ..Default::default()
    };
    engine.heartbeat_with("agent-1", &[], &waiting).await.unwrap();
    let r = row(engine.clone()).await;
    assert_eq!(
        (r.state, r.try_number, r.lost_tries),
        (InstanceState::Queued, 3, 0)
    );

    // A try the agent neither runs nor waits for is lost, and counted: with no queue retries
    // left, the instance fails.
    let third = h.queue.take().remove(0);
    engine.claim(&third, "agent-1").await.unwrap();
    age_claims(&engine).await;
    engine.heartbeat("agent-1", &[]).await.unwrap();
    let r = row(engine.clone()).await;
    assert_eq!(r.state, InstanceState::Failed, "{r:?}");
    assert!(h.queue.take().is_empty());
}

/// An agent that registers again (woken from a pause, or declared dead) while the answer to a
/// claim is on its way does not list that try yet: the try is left to it, not closed as lost
/// and dispatched again, which would make two live runs once the agent starts it. A try it
/// has not listed for longer than the grace, or any try of a restarted agent, is closed at
/// once.
#[tokio::test]
async fn registering_again_leaves_a_try_granted_moments_ago_to_its_agent() {
    let h = harness("tasks:\n  - id: t\n    command: \"true\"\n    retries: 0\n").await;
    h.register().await;
    h.engine
        .run(&plan("t", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let dispatch = h.queue.take().remove(0);
    let ClaimOutcome::Granted(claimed) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("refused")
    };
    h.register_process("agent-1", "process-1").await;
    h.register_process("agent-1", "process-1").await;
    assert_eq!(h.state("t", "20260105").await, Some(InstanceState::Running));
    assert!(h.queue.take().is_empty(), "nothing dispatched again");
    let mut conn = h.engine.store().read().await.unwrap();
    let attempt = store::attempt(&mut conn, &claimed.attempt_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    assert_eq!(attempt.state, "running");

    // Still not listed a minute later: the agent lost it; dispatched again.
    age_claims(&h.engine).await;
    h.register_process("agent-1", "process-1").await;
    assert_eq!(h.state("t", "20260105").await, Some(InstanceState::Queued));
    let again = h.queue.take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].try_number, 2);

    // Another process of the agent (it restarted) has no claim in flight: what it does not
    // list is dispatched again at once, however recent.
    let ClaimOutcome::Granted(_) = h.engine.claim(&again[0], "agent-1").await.unwrap() else {
        panic!("refused")
    };
    h.register_process("agent-1", "process-2").await;
    assert_eq!(h.state("t", "20260105").await, Some(InstanceState::Queued));
    assert_eq!(h.queue.take()[0].try_number, 3);
}

/// Grants that come too late are dispatched again for free only so often: a coordinator that
/// is always too slow must not re-dispatch a task forever. Past the bound (10) the try counts
/// as lost, and with RetryQueueTimes 0 the instance fails.
#[tokio::test]
async fn late_grants_are_free_only_so_often() {
    let h = harness("tasks:\n  - id: slow\n    command: \"true\"\n    retries: 0\n").await;
    h.register().await;
    let engine = without_queue_retries(&h).await;
    engine
        .run(&plan("slow", "20260105", false), &Caller::system())
        .await
        .unwrap();
    for round in 1..=11 {
        let dispatch = h.queue.take().remove(0);
        assert_eq!(dispatch.try_number, round);
        let ClaimOutcome::Granted(claimed) = engine.claim(&dispatch, "agent-1").await.unwrap() else {
            panic!("refused in round {round}")
        };
        let said = HeartbeatExtras {
            unstarted_attempts: vec![claimed.attempt_id.clone()],
            ..Default::default()
        };
        engine.heartbeat_with("agent-1", &[], &said).await.unwrap();
        let state = h.state("slow", "20260105").await;
        if round <= 10 {
            assert_eq!(state, Some(InstanceState::Queued), "round {round}");
        } else {
            assert_eq!(state, Some(InstanceState::Failed), "round {round}");
            assert!(h.queue.take().is_empty());
        }
    }
}

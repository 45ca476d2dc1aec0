//! Terms of leadership in one process, and group commit under cancellation: an engine writes
//! only for its own term, a step-down ends what the old engine serves, and a caller dropped
//! mid-batch takes nothing of the others with it.

use std::sync::Arc;
use std::time::Duration;

use goflow_core::{Dispatch, InstanceState};

use super::tests::{RecordingQueue, fan_in, harness, plan};
use super::*;
use crate::store::{self, Fence, Store, Term, now_ms};

/// Takes the database lease for `me` (it lapses at once, so the next call takes over).
async fn take_term(store: &Store, me: &str) -> Term {
    // Lease times are milliseconds: make sure the previous lease lies in the past.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = now_ms();
    let mut tx = store.begin_unfenced().await.unwrap();
    let term = store::take_lease(&mut tx, me, now, now, "")
        .await
        .unwrap()
        .expect("the lease lapsed");
    tx.commit().await.unwrap();
    term
}

async fn engine_of(store: Store, queue: &Arc<RecordingQueue>, epoch: i64) -> Arc<Engine> {
    Engine::new(
        store,
        queue.clone(),
        EngineSettings::default(),
        "coordinator",
        epoch,
        Default::default(),
    )
    .await
    .unwrap()
}

async fn state_of(store: &Store, task: &str) -> Option<(InstanceState, i64)> {
    let mut conn = store.read().await.unwrap();
    let key = goflow_core::InstanceKey::new(task, super::tests::day("20260105"));
    store::instance_by_key(&mut conn, &key)
        .await
        .unwrap()
        .map(|r| (r.state, r.dispatch_epoch))
}

fn is_fenced(e: &EngineError) -> bool {
    matches!(e, EngineError::Internal(e) if e.downcast_ref::<store::Fenced>().is_some())
}

/// A coordinator that steps down and wins again in the same process: the old term's engine
/// is refused (its token is the old one, whatever the process holds now), and what it had
/// queued is dispatched under the new term.
#[tokio::test]
async fn an_engine_writes_only_for_its_own_term() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let queue = Arc::new(RecordingQueue::default());
    let first = take_term(&store, "me").await;
    let old = engine_of(store.fenced(Fence::new(first.token)), &queue, first.epoch).await;
    old.apply(&fan_in(2), "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    old.run(&plan("up0", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let stale = queue.take();
    assert_eq!(stale.len(), 1);

    let second = take_term(&store, "me").await;
    assert!(second.token > first.token && second.epoch > first.epoch);
    let new = engine_of(store.fenced(Fence::new(second.token)), &queue, second.epoch).await;

    // The old term's handlers in flight: a run and a claim, both refused, nothing written.
    let err = old
        .run(&plan("up1", "20260105", false), &Caller::system())
        .await
        .unwrap_err();
    assert!(is_fenced(&err), "{err:?}");
    assert!(old.term_ended().is_cancelled(), "a refused write ends the term");
    assert_eq!(state_of(&store, "up1").await, None);
    let err = old.claim(&stale[0], "agent-1").await.unwrap_err();
    assert!(is_fenced(&err), "{err:?}");
    assert_eq!(
        state_of(&store, "up0").await,
        Some((InstanceState::Queued, first.epoch))
    );
    assert!(queue.take().is_empty());

    // The new term dispatches again what the old one had queued, under its own epoch.
    new.recover(false).await.unwrap();
    let again = queue.take();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].instance_id, again[0].epoch),
        (stale[0].instance_id, second.epoch)
    );
    new.register_agent(AgentRegistration {
        agent_id: "agent-1".into(),
        host: "h".into(),
        slots: 4,
        queues: vec![],
        version: "test".into(),
        running_attempts: vec![],
        incarnation: String::new(),
    })
    .await
    .unwrap();
    assert!(matches!(
        new.claim(&again[0], "agent-1").await.unwrap(),
        ClaimOutcome::Granted(_)
    ));
    assert!(matches!(
        new.claim(&stale[0], "agent-2").await.unwrap(),
        ClaimOutcome::Refused(_)
    ));
}

/// An instance queued under an older epoch after the term started (a write of a term that
/// was ending) is stamped with the current epoch and pushed by the redispatch sweep, not left
/// queued until the next failover.
#[tokio::test]
async fn the_sweep_dispatches_what_an_older_epoch_queued() {
    let h = harness(&fan_in(2)).await;
    let store = h.engine.store().clone();
    // A writer of an older epoch, as an old term's handler whose write passed.
    let older = engine_of(store.clone(), &h.queue, h.engine.epoch() - 1).await;
    older
        .run(&plan("up0", "20260105", false), &Caller::system())
        .await
        .unwrap();
    let lost = h.queue.take();
    assert_eq!(lost[0].epoch, h.engine.epoch() - 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(h.engine.redispatch_stale(Duration::ZERO).await.unwrap(), 1);
    let pushed = h.queue.take();
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        (pushed[0].instance_id, pushed[0].epoch),
        (lost[0].instance_id, h.engine.epoch())
    );
    assert_eq!(
        state_of(&store, "up0").await,
        Some((InstanceState::Queued, h.engine.epoch()))
    );
    h.register().await;
    assert!(matches!(
        h.engine.claim(&pushed[0], "agent-1").await.unwrap(),
        ClaimOutcome::Granted(_)
    ));
}

/// Ending a term ends the agents' command streams it serves (they reconnect to whoever leads)
/// and refuses its writes, without asking the database.
#[tokio::test]
async fn an_ended_term_closes_its_command_streams_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let queue = Arc::new(RecordingQueue::default());
    let term = take_term(&store, "me").await;
    let engine = engine_of(store.fenced(Fence::new(term.token)), &queue, term.epoch).await;
    engine
        .apply(&fan_in(1), "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    let mut commands = engine.watch_commands("agent-1");
    engine.end_term();
    let ended = tokio::time::timeout(Duration::from_secs(30), commands.recv()).await;
    assert!(matches!(ended, Ok(None)), "the stream ends");
    assert!(
        engine.watch_commands("agent-1").recv().await.is_none(),
        "a stream opened after the end ends at once"
    );
    let err = engine
        .run(&plan("up0", "20260105", false), &Caller::system())
        .await
        .unwrap_err();
    assert!(is_fenced(&err), "{err:?}");
    // The token is still the stored one: the refusal is the term's own end.
    let mut conn = store.read().await.unwrap();
    assert_eq!(store::leader(&mut conn).await.unwrap().token, term.token);
}

/// Waits until `n` writes are pending (or, with 0, taken by a batch).
async fn until_pending(engine: &Engine, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while engine.group.pending.lock().unwrap().len() != n {
        assert!(std::time::Instant::now() < deadline, "never {n} pending writes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The caller whose write opened a batch goes away while the batch waits for the database:
/// the others of the batch still get their answers, and every write (its own too) commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_batch_loses_no_other_write() {
    let h = harness(&fan_in(3)).await;
    h.register().await;
    let mut dispatches: Vec<Dispatch> = vec![];
    for i in 0..3 {
        let run = plan(&format!("up{i}"), "20260105", false);
        h.engine.run(&run, &Caller::system()).await.unwrap();
        dispatches.extend(h.queue.take());
    }
    // The test holds the store's one scheduling writer connection: the batch stops at its BEGIN.
    let blocker = h.engine.store().begin().await.unwrap();

    let claim = |d: &Dispatch| {
        let (engine, dispatch) = (h.engine.clone(), d.clone());
        tokio::spawn(async move { engine.claim(&dispatch, "agent-1").await })
    };
    // All three wait behind the held writer, the first one first, so that they share a batch
    // (and, were the batch written in a caller's future, the first caller would write it).
    let writer = h.engine.group.writer.lock().await;
    let first = claim(&dispatches[0]);
    until_pending(&h.engine, 1).await;
    let others = [claim(&dispatches[1]), claim(&dispatches[2])];
    until_pending(&h.engine, 3).await;
    drop(writer);
    until_pending(&h.engine, 0).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    blocker.rollback().await.unwrap();

    for other in others {
        let answer = tokio::time::timeout(Duration::from_secs(120), other)
            .await
            .expect("answered")
            .expect("no panic");
        assert!(
            matches!(answer, Ok(ClaimOutcome::Granted(_))),
            "{:?}",
            answer.map(|_| ())
        );
    }
    // The dropped caller's own write committed too: its agent's repeated claim is granted.
    for i in 0..3 {
        assert_eq!(
            h.state(&format!("up{i}"), "20260105").await,
            Some(InstanceState::Running)
        );
    }
    assert!(matches!(
        h.engine.claim(&dispatches[0], "agent-1").await.unwrap(),
        ClaimOutcome::Granted(_)
    ));
}

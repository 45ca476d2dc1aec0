//! The hand-off (issue 21) against the fake coordinator: the agent asks for a downstream with
//! its finish, runs what it is handed in the same slot without claiming it, reports it under
//! its own dispatch's epoch, and gives the slot back when nothing comes.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::grpc_tests::{Fake, config, dispatch, free_addr, serve, stop};
use crate::{DispatchQueue, MemoryQueue, run_agent};

#[tokio::test]
async fn a_handed_off_try_runs_in_the_finished_ones_slot_and_the_slot_comes_back() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (true, "echo one".into()));
        s.claims.insert(2, (true, "echo two".into()));
        s.claims.insert(3, (true, "echo three".into()));
        s.hand_offs.insert("a1".into(), 2);
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    // One slot: the handed-off try can only run in the finished one's.
    let agent = tokio::spawn(run_agent(config(addr, 1), queue.clone(), shutdown.clone()));

    let (first, _) = fake.finish_of("a1").await;
    assert!(
        first.take_next,
        "a free, not draining agent asks for the next try"
    );
    let (second, log) = fake.finish_of("a2").await;
    assert_eq!(second.outcome, "success");
    assert_eq!(second.epoch, 9, "reported under the handed-off dispatch's epoch");
    assert!(log.ends_with(" out| two\n"), "{log}");
    fake.with(|s| assert_eq!(s.starts, 1, "the handed-off try was not claimed again"));

    // Nothing was handed off with a2's finish: the slot is free for the queue again.
    queue.push(vec![dispatch(3)]).await.unwrap();
    let (third, log) = fake.finish_of("a3").await;
    assert_eq!((third.outcome.as_str(), third.epoch), ("success", 7));
    assert!(log.ends_with(" out| three\n"), "{log}");
    fake.with(|s| {
        assert_eq!(s.starts, 2);
        let names: Vec<&str> = s.finishes.iter().map(|(f, _)| f.attempt_id.as_str()).collect();
        assert_eq!(names, ["a1", "a2", "a3"], "each try reported once");
    });
    stop(agent, shutdown, server, stop_server).await;
}

#[tokio::test]
async fn with_every_other_slot_busy_the_finish_gives_its_slot_back_instead() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (true, "sleep 1".into()));
        s.claims.insert(2, (true, "echo quick".into()));
    });
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1), dispatch(2)]).await.unwrap();
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(addr, 2), queue.clone(), shutdown.clone()));

    // a2 ends while a1 holds the other slot: work may be queued, so no slot is held for it.
    let (quick, _) = fake.finish_of("a2").await;
    assert!(
        !quick.take_next,
        "both slots busy: the slot goes back to the queue"
    );
    // a1 ends with the other slot free: a chain's next try may come with its finish.
    let (slow, _) = fake.finish_of("a1").await;
    assert!(
        slow.take_next,
        "a free slot elsewhere: the finish asks for the next try"
    );
    stop(agent, shutdown, server, stop_server).await;
}

//! Draining against the fake coordinator: the deadline kills what still runs, and a dispatch
//! taken as the drain began goes back to the queue unclaimed.

use super::*;
use crate::{Stop, run_agent_until};

/// Past `--drain-timeout`, the tries still running are killed and not reported; the agent
/// returns. A heartbeat during the drain says it drains.
#[tokio::test]
async fn the_drain_deadline_kills_what_still_runs() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (true, "echo $$; sleep 60".into()));
    });
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let queue = Arc::new(MemoryQueue::new());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let stop = Stop::new();
    let config = AgentConfig {
        drain_timeout: Duration::from_secs(1),
        ..config(addr, 1)
    };
    let agent = tokio::spawn(run_agent_until(config, queue.clone(), stop.clone()));
    let pid = fake
        .wait_for("the output of a1", |s| {
            let log = String::from_utf8_lossy(s.logs.get("a1")?).into_owned();
            log.split("out| ").nth(1)?.trim().parse::<i32>().ok()
        })
        .await;
    stop.drain.cancel();
    fake.wait_for("a heartbeat that says it drains", |s| {
        s.heartbeats
            .iter()
            .any(|h| h.draining && h.running_attempts == ["a1"])
            .then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the agent returns after the deadline")
        .unwrap()
        .unwrap();
    fake.with(|s| assert!(s.finishes.is_empty(), "a killed try was reported"));
    assert_eq!(
        live_processes_in_group(pid),
        Vec::<i32>::new(),
        "the try's processes survived the deadline"
    );
    stop_server.cancel();
    server.await.unwrap();
}

/// A queue whose pop answers only once the agent has begun to drain: the dispatch a broker
/// round hands over just as the drain begins.
#[derive(Default)]
struct LateQueue {
    inner: MemoryQueue,
}

#[async_trait::async_trait]
impl DispatchQueue for LateQueue {
    async fn push(&self, dispatches: Vec<Dispatch>) -> anyhow::Result<()> {
        self.inner.push(dispatches).await
    }

    async fn pop(&self, queues: &[String]) -> anyhow::Result<Dispatch> {
        self.inner.pop(queues).await
    }

    async fn pop_until(
        &self,
        queues: &[String],
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Dispatch>> {
        stop.cancelled().await;
        Ok(Some(self.inner.pop(queues).await?))
    }
}

#[tokio::test]
async fn a_dispatch_taken_as_the_drain_begins_goes_back_unclaimed() {
    let fake = Fake::default();
    fake.with(|s| {
        s.claims.insert(1, (true, "echo ran".into()));
    });
    let addr = free_addr();
    let stop_server = CancellationToken::new();
    let server = serve(fake.clone(), addr, stop_server.clone());
    let queue = Arc::new(LateQueue::default());
    queue.push(vec![dispatch(1)]).await.unwrap();
    let stop = Stop::new();
    let agent = tokio::spawn(run_agent_until(config(addr, 1), queue.clone(), stop.clone()));
    fake.wait_for("a heartbeat", |s| (!s.heartbeats.is_empty()).then_some(()))
        .await;
    stop.drain.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("an idle agent returns at once")
        .unwrap()
        .unwrap();
    fake.with(|s| assert_eq!(s.starts, 0, "the dispatch was claimed"));
    assert_eq!(queue.inner.len(), 1, "the dispatch is back on the queue");
    stop_server.cancel();
    server.await.unwrap();
}

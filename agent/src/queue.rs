//! The dispatch path between coordinator and agents, behind one small interface.
//!
//! A dispatch names only (instance, try, epoch): never a command. The agent claims it over
//! gRPC (`ReportStart`) and gets the command in the answer, so whoever can write to the queue
//! can delay work but never run anything. The queue only delivers; the store is the truth, so
//! a lost or duplicated dispatch costs a re-push or a refused claim, never a wrong run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use goflow_core::Dispatch;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait DispatchQueue: Send + Sync + 'static {
    /// Delivers dispatches; the coordinator calls it after the commit that queued them.
    async fn push(&self, dispatches: Vec<Dispatch>) -> anyhow::Result<()>;
    /// Waits for the next dispatch from any of `queues` (`*`: every queue): highest priority
    /// first, then oldest.
    async fn pop(&self, queues: &[String]) -> anyhow::Result<Dispatch>;
    /// Like `pop`, but None once `stop` is cancelled. A draining agent stops waiting this way
    /// without losing a dispatch taken from the broker at the moment it gave up.
    async fn pop_until(
        &self,
        queues: &[String],
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Dispatch>> {
        // Right for a queue whose `pop` takes nothing until it returns (the in-process one).
        tokio::select! {
            popped = self.pop(queues) => popped.map(Some),
            () = stop.cancelled() => Ok(None),
        }
    }
    /// Whether the queue's broker answers (readiness); an in-process queue always does.
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Subscribing to this name takes work from every queue (the standalone's one agent does).
pub const ANY_QUEUE: &str = "*";

/// Ordering key inside one queue: higher priority first, then first pushed.
type Slot = (std::cmp::Reverse<i32>, u64);

/// The in-process queue of `goflow standalone`: no broker, nothing persisted (the store
/// re-pushes every queued instance on start).
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<MemoryState>,
    pushed: Notify,
}

#[derive(Default)]
struct MemoryState {
    next_seq: u64,
    queues: HashMap<String, BTreeMap<Slot, Dispatch>>,
    /// (instance, try, epoch) of what waits, so pushing a dispatch again is a no-op (as
    /// `ZADD NX` is for Redis).
    waiting: std::collections::HashSet<(i64, i64, i64)>,
}

fn identity(d: &Dispatch) -> (i64, i64, i64) {
    (d.instance_id, d.try_number, d.epoch)
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Dispatches waiting, over all queues.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .queues
            .values()
            .map(BTreeMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn try_pop(&self, queues: &[String]) -> Option<Dispatch> {
        let mut state = self.state.lock().unwrap();
        // Across the agent's queues, take the best head: highest priority, then oldest.
        let every_queue = queues.iter().any(|q| q == ANY_QUEUE);
        let best = state
            .queues
            .iter()
            .filter(|(name, _)| every_queue || queues.contains(name))
            .filter_map(|(name, waiting)| Some((*waiting.first_key_value()?.0, name.clone())))
            .min()?;
        let dispatch = state.queues.get_mut(&best.1)?.remove(&best.0)?;
        state.waiting.remove(&identity(&dispatch));
        Some(dispatch)
    }
}

#[async_trait]
impl DispatchQueue for MemoryQueue {
    async fn push(&self, dispatches: Vec<Dispatch>) -> anyhow::Result<()> {
        if dispatches.is_empty() {
            return Ok(());
        }
        {
            let mut state = self.state.lock().unwrap();
            for dispatch in dispatches {
                if !state.waiting.insert(identity(&dispatch)) {
                    continue;
                }
                state.next_seq += 1;
                let slot = (std::cmp::Reverse(dispatch.priority), state.next_seq);
                state
                    .queues
                    .entry(dispatch.queue.clone())
                    .or_default()
                    .insert(slot, dispatch);
            }
        }
        self.pushed.notify_waiters();
        Ok(())
    }

    async fn pop(&self, queues: &[String]) -> anyhow::Result<Dispatch> {
        loop {
            // Register interest before looking, so a push between the look and the wait
            // is not missed.
            let notified = self.pushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(dispatch) = self.try_pop(queues) {
                return Ok(dispatch);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(id: i64, queue: &str, priority: i32) -> Dispatch {
        Dispatch {
            instance_id: id,
            try_number: 1,
            epoch: 1,
            queue: queue.into(),
            priority,
        }
    }

    #[tokio::test]
    async fn pops_by_priority_then_age_across_subscribed_queues() {
        let q = MemoryQueue::new();
        q.push(vec![
            dispatch(1, "default", 0),
            dispatch(2, "default", 5),
            dispatch(3, "gpu", 9),
            dispatch(4, "default", 5),
            dispatch(5, "other", 100),
        ])
        .await
        .unwrap();
        let mine = vec!["default".to_string(), "gpu".to_string()];
        let mut order = vec![];
        for _ in 0..4 {
            order.push(q.pop(&mine).await.unwrap().instance_id);
        }
        assert_eq!(order, [3, 2, 4, 1]);
        assert_eq!(q.len(), 1, "the dispatch of a queue nobody asked for stays");
        assert_eq!(q.pop(&[ANY_QUEUE.to_string()]).await.unwrap().instance_id, 5);
    }

    #[tokio::test]
    async fn pushing_a_waiting_dispatch_again_is_a_no_op() {
        let q = MemoryQueue::new();
        q.push(vec![dispatch(1, "default", 0), dispatch(1, "default", 0)])
            .await
            .unwrap();
        q.push(vec![dispatch(1, "default", 0)]).await.unwrap();
        assert_eq!(q.len(), 1);
        q.pop(&["default".to_string()]).await.unwrap();
        q.push(vec![dispatch(1, "default", 0)]).await.unwrap();
        assert_eq!(q.len(), 1, "once taken, the same dispatch may be pushed again");
    }

    #[tokio::test]
    async fn pop_waits_for_a_later_push() {
        let q = std::sync::Arc::new(MemoryQueue::new());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.pop(&["default".to_string()]).await.unwrap() })
        };
        tokio::task::yield_now().await;
        q.push(vec![dispatch(7, "default", 0)]).await.unwrap();
        assert_eq!(waiter.await.unwrap().instance_id, 7);
    }
}

//! WatchInstances (issue 21): a change stream of instances, so that `goflowctl run --wait` and
//! other watchers learn of a finish when it is committed instead of at their next poll.
//!
//! The stream reads the watched instances again whenever the engine signals a change (its
//! change counter, bumped after every commit that moves an instance), and sends those that
//! differ from what it sent before. Only the leader's engine changes instances, and only the
//! leader answers (the others pass the call on), so the signal misses nothing; a slow
//! [`WATCH_POLL`] is kept as a safety net all the same.
//!
//! Between two reads a watch pauses in proportion to what a read costs, so that a busy chain
//! does not have it read after every change; but when a try's report finishes the last of its
//! unfinished instances (the engine names the instances its reports finish), it reads at once:
//! that is the read `goflowctl run --wait` is waiting for.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use goflow_core::Role;
use goflow_proto as pb;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tonic::{Request, Response, Status};

use super::term_over;
use super::*;
use crate::store::InstanceFilter;

/// How often a watch reads again without a change signal.
const WATCH_POLL: Duration = Duration::from_secs(1);
/// A big watch waits between two reads this long per instance watched (10,000: 100 ms), so
/// that watching a backfill does not keep the store busy reading it over and over.
const PAUSE_PER_INSTANCE: Duration = Duration::from_micros(10);
/// And at least this many times as long as its last read took: while instances change
/// every millisecond (a chain of `true`), a watch reads again a few milliseconds later, with
/// every change of meanwhile, rather than once per change, which would take the CPU the
/// changes themselves need.
const PAUSE_PER_READ: u32 = 4;

pub(super) type WatchStream = ServerStream<pb::InstancesChanged>;

pub(super) async fn watch_instances(
    api: &Api,
    request: Request<pb::WatchInstancesRequest>,
) -> RpcResult<WatchStream> {
    api.authorize(&request, Role::Viewer).await?;
    let req = request.into_inner();
    let filter = filter_of(req)?;
    let watched: Vec<i64> = filter.ids.clone();
    // The first read answers the call: a refusal comes as its status, not in the stream.
    let mut conn = api.read().await?;
    let rows = store::list_instances(&mut conn, &filter)
        .await
        .map_err(internal)?;
    drop(conn);
    if watched.is_empty() && rows.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "that task and etl_day match more than {MAX_IDS} instances: watch them by ids, \
             at most {MAX_IDS} a call"
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let api = api.clone();
    tokio::spawn(async move {
        if let Err(status) = stream_changes(api, filter, watched, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// The request as a filter: ids, or a task and/or a data date.
fn filter_of(req: pb::WatchInstancesRequest) -> Result<InstanceFilter, Status> {
    let by_filter = !req.task.is_empty() || !req.etl_day.is_empty();
    match (req.ids.is_empty(), by_filter) {
        (true, false) => {
            return Err(Status::invalid_argument(
                "give the ids of the instances to watch, or a task and/or an etl_day",
            ));
        }
        (false, true) => {
            return Err(Status::invalid_argument(
                "give either ids, or a task and/or an etl_day, not both",
            ));
        }
        _ => {}
    }
    if req.ids.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "ids: at most {MAX_IDS} ids in one watch, not {}",
            req.ids.len()
        )));
    }
    if let Some(bad) = req.ids.iter().find(|&&id| id <= 0) {
        return Err(Status::invalid_argument(format!(
            "ids: {bad} is not an instance id"
        )));
    }
    if !req.task.is_empty() {
        require_task_field(&req.task)?;
    }
    let mut ids = req.ids;
    ids.sort_unstable();
    ids.dedup();
    Ok(InstanceFilter {
        period: if req.etl_day.is_empty() {
            None
        } else {
            Some(parse_period("etl_day", &req.etl_day)?)
        },
        task: (!req.task.is_empty()).then_some(req.task),
        // One more than allowed: a filter that outgrows the limit is told apart from one at it.
        limit: if ids.is_empty() {
            MAX_IDS as i64 + 1
        } else {
            ids.len() as i64
        },
        ids,
        ..Default::default()
    })
}

/// Sends the instances as they are, then each one that changes, until the client hangs up or
/// this engine's term ends (UNAVAILABLE: the client watches again, on whoever leads).
async fn stream_changes(
    api: Api,
    filter: InstanceFilter,
    watched: Vec<i64>,
    tx: &tokio::sync::mpsc::Sender<Result<pb::InstancesChanged, Status>>,
) -> Result<(), Status> {
    let engine = api.engine.clone();
    let mut changes = engine.subscribe_changes();
    let mut finishes = engine.subscribe_finishes();
    let term_ended = engine.term_ended();
    let mut sent: BTreeMap<i64, pb::Instance> = BTreeMap::new();
    let mut gone_told: HashSet<i64> = HashSet::new();
    let mut initial = true;
    loop {
        changes.borrow_and_update();
        // Finishes up to here are in the read below: only those after it are news.
        finishes = finishes.resubscribe();
        let read_at = Instant::now();
        let mut conn = api.read().await?;
        let rows = store::list_instances(&mut conn, &filter)
            .await
            .map_err(internal)?;
        let mut now = BTreeMap::new();
        let mut cache = WaitCache::knowing(&rows);
        for row in &rows {
            now.insert(row.id, api.instance_to_pb(&mut conn, row, &mut cache).await?);
        }
        drop(conn);
        let changed: Vec<pb::Instance> = now
            .values()
            .filter(|i| sent.get(&i.id) != Some(*i))
            .cloned()
            .collect();
        // Watched by ids: those not found; by a filter: those sent before and not found now.
        let missing: Vec<i64> = if watched.is_empty() {
            sent.keys().filter(|id| !now.contains_key(id)).copied().collect()
        } else {
            watched
                .iter()
                .filter(|id| !now.contains_key(id))
                .copied()
                .collect()
        };
        let gone: Vec<i64> = missing.into_iter().filter(|id| gone_told.insert(*id)).collect();
        if initial || !changed.is_empty() || !gone.is_empty() {
            let message = pb::InstancesChanged {
                instances: changed,
                gone,
                initial,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(()); // the client went away
            }
        }
        initial = false;
        let mut last = LastOnes::new(
            rows.iter()
                .filter(|r| !r.state.is_finished())
                .map(|r| r.id)
                .collect(),
        );
        sent = now;
        let pause = (PAUSE_PER_INSTANCE * rows.len() as u32).max(read_at.elapsed() * PAUSE_PER_READ);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Err(term_over()) },
            _ = tokio::time::sleep(WATCH_POLL) => {}
            _ = tx.closed() => return Ok(()),
            _ = term_ended.cancelled() => return Err(term_over()),
        }
        // The last unfinished ones finished: the watch is likely over, and its waiter hears
        // it now rather than after the pause (which such a finish also cuts short).
        if last.drain(&mut finishes) {
            continue;
        }
        if let Some(rest) = pause.checked_sub(read_at.elapsed()) {
            let sleep = tokio::time::sleep(rest);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    heard = finishes.recv() => match heard {
                        Ok(id) => if last.hear(Some(id)) { break },
                        Err(RecvError::Lagged(_)) => { last.hear(None); }
                        // No engine sends any more: the pause runs out.
                        Err(RecvError::Closed) => { (&mut sleep).await; break }
                    },
                    _ = tx.closed() => return Ok(()),
                    _ = term_ended.cancelled() => return Err(term_over()),
                }
            }
        }
    }
}

/// The watched instances not finished at the last read, and the finishes heard of since.
struct LastOnes {
    unfinished: HashSet<i64>,
    heard: HashSet<i64>,
    /// Finishes were missed: whether the last ones finished cannot be told.
    lagged: bool,
}

impl LastOnes {
    fn new(unfinished: HashSet<i64>) -> Self {
        Self {
            unfinished,
            heard: HashSet::new(),
            lagged: false,
        }
    }

    /// Takes a finish (None: some were missed); whether every unfinished one has finished
    /// now (never when none was unfinished, or some were missed).
    fn hear(&mut self, finished: Option<i64>) -> bool {
        match finished {
            Some(id) => {
                self.heard.insert(id);
            }
            None => self.lagged = true,
        }
        !self.lagged && !self.unfinished.is_empty() && self.unfinished.is_subset(&self.heard)
    }

    /// [`hear`](Self::hear)s the finishes already sent, without waiting.
    fn drain(&mut self, finishes: &mut broadcast::Receiver<i64>) -> bool {
        let mut done = false;
        loop {
            match finishes.try_recv() {
                Ok(id) => done = self.hear(Some(id)),
                Err(TryRecvError::Lagged(_)) => done = self.hear(None),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return done,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_unfinished_ones_finishing_ends_the_wait() {
        let (sender, mut finishes) = broadcast::channel(4);
        let mut last = LastOnes::new(HashSet::from([1, 2]));
        sender.send(1).unwrap();
        assert!(!last.drain(&mut finishes), "2 still runs");
        sender.send(7).unwrap();
        assert!(!last.drain(&mut finishes), "7 is not watched");
        assert!(last.hear(Some(2)), "1 and 2 both finished since the read");
        // A new read starts afresh.
        let mut last = LastOnes::new(HashSet::from([1, 2]));
        sender.send(2).unwrap();
        assert!(!last.drain(&mut finishes), "1 was heard of before this read");
        assert!(
            !LastOnes::new(HashSet::new()).hear(Some(1)),
            "nothing unfinished: no finish to wait for"
        );
        let mut last = LastOnes::new(HashSet::from([1]));
        for id in 0..10 {
            sender.send(id).unwrap();
        }
        assert!(
            !last.drain(&mut finishes),
            "lagged: it cannot tell, so it keeps the pause"
        );
        assert!(!last.hear(Some(1)), "nor after the lag");
    }

    fn req(ids: Vec<i64>, task: &str, etl_day: &str) -> pb::WatchInstancesRequest {
        pb::WatchInstancesRequest {
            ids,
            task: task.into(),
            etl_day: etl_day.into(),
        }
    }

    #[test]
    fn a_watch_names_what_it_watches() {
        let err = |r| filter_of(r).unwrap_err().message().to_string();
        assert_eq!(
            err(req(vec![], "", "")),
            "give the ids of the instances to watch, or a task and/or an etl_day"
        );
        assert_eq!(
            err(req(vec![1], "a", "")),
            "give either ids, or a task and/or an etl_day, not both"
        );
        assert_eq!(err(req(vec![3, 0], "", "")), "ids: 0 is not an instance id");
        assert_eq!(
            err(req((1..=10_001).collect(), "", "")),
            "ids: at most 10000 ids in one watch, not 10001"
        );
        assert!(err(req(vec![], "a", "2026-13-01")).starts_with("etl_day: "));

        let f = filter_of(req(vec![5, 2, 5], "", "")).unwrap();
        assert_eq!((f.ids.as_slice(), f.limit), (&[2, 5][..], 2));
        let f = filter_of(req(vec![], "load", "20260102")).unwrap();
        assert_eq!(f.task.as_deref(), Some("load"));
        assert_eq!(f.period.unwrap().key(), "20260102");
        assert_eq!(f.limit, 10_001);
    }
}

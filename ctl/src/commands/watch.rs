//! Following instances until nothing about them can change any more, on the server's change
//! stream (`WatchInstances`, issue 21): a finish is known as soon as it is committed, where a
//! poll would learn of it up to a period later.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::{Duration, Instant};

use goflow_proto::{Instance, InstancesChanged, WatchInstancesRequest};
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Code, Status};

use super::run::{Verdict, verdict};
use crate::Client;

/// Ids of one watch at most (the server's limit); more are watched on several streams.
const IDS_PER_WATCH: usize = 10_000;
/// How long a cut watch keeps trying to resume without hearing anything (a takeover takes a
/// few seconds).
const RESUME_PATIENCE: Duration = Duration::from_secs(60);
/// Between a cut and the watch again.
const RESUME_PAUSE: Duration = Duration::from_millis(200);

/// One stream's messages, then `None` when it ends.
type Watch = Pin<Box<dyn Stream<Item = Option<Result<InstancesChanged, Status>>> + Send>>;

/// Follows `ids` until [`verdict`] says they are done, and answers them as they are then
/// (in the order `status` lists them). `None`: the server has no change stream (older than
/// it); the caller polls instead.
pub async fn until_done(client: &mut Client, ids: &[i64]) -> anyhow::Result<Option<Vec<Instance>>> {
    let chunks: Vec<Vec<i64>> = ids.chunks(IDS_PER_WATCH).map(<[i64]>::to_vec).collect();
    let mut streams: StreamMap<usize, Watch> = StreamMap::new();
    for (n, chunk) in chunks.iter().enumerate() {
        match watch(client, chunk).await {
            Ok(stream) => streams.insert(n, stream),
            Err(status) if status.code() == Code::Unimplemented => return Ok(None),
            Err(status) => return Err(status.into()),
        };
    }
    let mut known: HashMap<i64, Instance> = HashMap::with_capacity(ids.len());
    let mut gone: HashSet<i64> = HashSet::new();
    // Which streams sent their whole set since they were (re)opened.
    let mut whole = vec![false; chunks.len()];
    // Since when a cut watch has been resuming without a message.
    let mut cut_since: Option<Instant> = None;
    while let Some((n, item)) = streams.next().await {
        match item {
            Some(Ok(message)) => {
                cut_since = None;
                whole[n] |= message.initial;
                gone.extend(message.gone);
                for i in message.instances {
                    gone.remove(&i.id);
                    known.insert(i.id, i);
                }
                if whole.iter().all(|&w| w) {
                    let now: Vec<Instance> = known
                        .values()
                        .filter(|i| !gone.contains(&i.id))
                        .cloned()
                        .collect();
                    if let Verdict::Done { .. } = verdict(ids, &now) {
                        return Ok(Some(in_listing_order(now)));
                    }
                }
            }
            // Cut: the coordinator serving it stepped down or stopped (or it just ended).
            cut => {
                if let Some(Err(status)) = &cut {
                    if status.code() != Code::Unavailable {
                        return Err(broke_off(status));
                    }
                    tracing::debug!("the change stream was cut ({}); watching again", status.message());
                }
                let since = *cut_since.get_or_insert_with(Instant::now);
                anyhow::ensure!(
                    since.elapsed() < RESUME_PATIENCE,
                    "the change stream of the instances keeps breaking off; giving up"
                );
                tokio::time::sleep(RESUME_PAUSE).await;
                whole[n] = false;
                match watch(client, &chunks[n]).await {
                    Ok(stream) => {
                        streams.insert(n, stream);
                    }
                    Err(status) if status.code() == Code::Unimplemented => return Ok(None),
                    Err(status) => return Err(broke_off(&status)),
                }
            }
        }
    }
    unreachable!("a cut stream is watched again or the wait fails")
}

/// Said in words of its own: a bare UNAVAILABLE would read as "cannot reach the server",
/// which was reached a moment before.
fn broke_off(status: &Status) -> anyhow::Error {
    let why = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    };
    anyhow::anyhow!(
        "the change stream of the instances broke off ({why}); the instances may still be running (see goflowctl status)"
    )
}

async fn watch(client: &mut Client, ids: &[i64]) -> Result<Watch, Status> {
    let request = WatchInstancesRequest {
        ids: ids.to_vec(),
        ..Default::default()
    };
    let stream = client.watch_instances(request).await?.into_inner();
    Ok(Box::pin(stream.map(Some).chain(tokio_stream::once(None))))
}

/// As `ListInstances` orders them: the newest data date first, then by id.
fn in_listing_order(mut instances: Vec<Instance>) -> Vec<Instance> {
    instances.sort_by(|a, b| b.etl_day.cmp(&a.etl_day).then(a.id.cmp(&b.id)));
    instances
}

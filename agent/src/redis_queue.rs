//! Dispatch through Redis, for a coordinator and agents in separate processes.
//!
//! One sorted set per routing key (`goflow:queue:<name>`): the score orders by priority, then
//! by push time, and `BZPOPMIN` takes the best. A member names only (instance, try, epoch,
//! priority): never a command. `ZADD NX` makes pushing the same dispatch again harmless, which
//! is what lets the coordinator re-push queued instances whose dispatch was lost (taken by an
//! agent that died before claiming it): delivery is at least once, and the claim, a
//! compare-and-set in the store, keeps it to one live try.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use goflow_core::Dispatch;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::queue::{ANY_QUEUE, DispatchQueue};

/// Where queue names are kept, so an agent subscribed to `*` knows which sets to watch.
const QUEUE_NAMES: &str = "goflow:queues";
/// Push times count from here, so priority * 1e12 + time stays exact in an f64.
const EPOCH_BASE_MS: i64 = 1_700_000_000_000;
/// How long one BZPOPMIN waits before the agent looks again (for new queue names, shutdown).
const POP_WAIT_SECS: f64 = 2.0;

pub struct RedisQueue {
    client: redis::Client,
    /// Pushes and look-ups: reconnects by itself.
    commands: ConnectionManager,
    /// The blocking pop holds its connection while it waits, so it gets one of its own.
    popper: Mutex<Option<MultiplexedConnection>>,
}

fn queue_key(queue: &str) -> String {
    format!("goflow:queue:{queue}")
}

/// Lower scores pop first: higher priority, then earlier push.
fn score(priority: i32, pushed_at_ms: i64) -> f64 {
    let priority = priority.clamp(-900, 900) as f64;
    -priority * 1e12 + (pushed_at_ms - EPOCH_BASE_MS).max(0) as f64
}

fn member(d: &Dispatch) -> String {
    format!("{}:{}:{}:{}", d.instance_id, d.try_number, d.epoch, d.priority)
}

fn parse_member(queue: &str, member: &str) -> Option<Dispatch> {
    let mut parts = member.split(':');
    let dispatch = Dispatch {
        instance_id: parts.next()?.parse().ok()?,
        try_number: parts.next()?.parse().ok()?,
        epoch: parts.next()?.parse().ok()?,
        priority: parts.next()?.parse().ok()?,
        queue: queue.to_string(),
    };
    parts.next().is_none().then_some(dispatch)
}

/// `host:port` (the seed's `Common.Broker`) or a `redis://` URL.
pub fn redis_url(broker: &str) -> String {
    if broker.contains("://") {
        broker.to_string()
    } else {
        format!("redis://{broker}")
    }
}

impl RedisQueue {
    /// Connects, or fails within a few seconds naming the address; `source` names the setting
    /// it came from (`Common.Broker`, `GOFLOW_BROKER`).
    pub async fn connect(broker: &str, source: &str) -> anyhow::Result<Self> {
        Self::connect_with_ca(broker, source, None).await
    }

    /// [`connect`](Self::connect); a `rediss://` URL's server certificate is checked against
    /// `ca_pem` (the CA's PEM, `--redis-ca`), or the system's trusted roots without.
    /// Messages show the URL without its password.
    pub async fn connect_with_ca(
        broker: &str,
        source: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let url = redis_url(broker);
        let shown = goflow_core::redact_url(&url);
        // redis's messages may quote what they were given.
        let scrub = |text: String| goflow_core::redact::scrub(&text, &url);
        let unreachable =
            |why: String| anyhow::anyhow!("cannot reach Redis at {shown} ({source}): {}", scrub(why));
        let tls = url.starts_with("rediss://");
        anyhow::ensure!(
            tls || ca_pem.is_none(),
            "a CA for Redis (--redis-ca, GOFLOW_REDIS_CA, Common.RedisCa) is set, but {shown} ({source}) \
             is not a rediss:// URL: Redis over TLS needs rediss://HOST:PORT"
        );
        let client = match ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            ),
            None => redis::Client::open(url.as_str()),
        }
        .map_err(|e| anyhow::anyhow!("bad Redis address {shown} ({source}): {}", scrub(e.to_string())))?;
        // One plain connection first: it fails at once when nothing listens, where the
        // connection manager would keep retrying.
        let mut probe =
            tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
                .await
                .map_err(|_| unreachable("no answer within 5s".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let commands = client
            .get_connection_manager()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            client,
            commands,
            popper: Mutex::new(None),
        })
    }

    async fn pop_connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let mut slot = self.popper.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // No response timeout: BZPOPMIN answers when its own timeout is over.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn watched_keys(&self, queues: &[String]) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> = if queues.iter().any(|q| q == ANY_QUEUE) {
            redis::cmd("SMEMBERS")
                .arg(QUEUE_NAMES)
                .query_async(&mut self.commands.clone())
                .await?
        } else {
            queues.to_vec()
        };
        Ok(names.iter().map(|q| queue_key(q)).collect())
    }
}

#[async_trait]
impl DispatchQueue for RedisQueue {
    async fn ping(&self) -> anyhow::Result<()> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn push(&self, dispatches: Vec<Dispatch>) -> anyhow::Result<()> {
        if dispatches.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for d in &dispatches {
            pipe.cmd("ZADD")
                .arg(queue_key(&d.queue))
                .arg("NX")
                .arg(score(d.priority, now))
                .arg(member(d))
                .ignore();
            pipe.cmd("SADD").arg(QUEUE_NAMES).arg(&d.queue).ignore();
        }
        pipe.query_async::<()>(&mut self.commands.clone())
            .await
            .context("Redis push failed")?;
        Ok(())
    }

    async fn pop(&self, queues: &[String]) -> anyhow::Result<Dispatch> {
        loop {
            if let Some(dispatch) = self.pop_once(queues).await? {
                return Ok(dispatch);
            }
        }
    }

    /// Never drops a BZPOPMIN in flight: one dropped while it waits would still take the next
    /// dispatch on the server, for nobody. `stop` is looked at between rounds (2 s at most).
    async fn pop_until(
        &self,
        queues: &[String],
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Dispatch>> {
        while !stop.is_cancelled() {
            if let Some(dispatch) = self.pop_once(queues).await? {
                return Ok(Some(dispatch));
            }
        }
        Ok(None)
    }
}

impl RedisQueue {
    /// One BZPOPMIN round: a dispatch, or None after `POP_WAIT_SECS` without one.
    async fn pop_once(&self, queues: &[String]) -> anyhow::Result<Option<Dispatch>> {
        let keys = self.watched_keys(queues).await?;
        if keys.is_empty() {
            tokio::time::sleep(Duration::from_secs_f64(POP_WAIT_SECS)).await;
            return Ok(None);
        }
        let mut conn = self.pop_connection().await?;
        let popped: Option<(String, String, f64)> = match redis::cmd("BZPOPMIN")
            .arg(&keys)
            .arg(POP_WAIT_SECS)
            .query_async(&mut conn)
            .await
        {
            Ok(popped) => popped,
            Err(e) => {
                // Reconnect on the next pop.
                *self.popper.lock().await = None;
                return Err(anyhow::Error::new(e).context("Redis pop failed"));
            }
        };
        let Some((key, member, _)) = popped else {
            return Ok(None);
        };
        let queue = key.strip_prefix("goflow:queue:").unwrap_or(&key);
        match parse_member(queue, &member) {
            Some(dispatch) => Ok(Some(dispatch)),
            None => {
                // Anyone who can write to Redis chooses these bytes: escaped and cut, so a
                // newline cannot forge a log line and a megabyte cannot make a megabyte line.
                tracing::warn!(
                    key = %goflow_core::text::loggable(&key, 200),
                    member = %goflow_core::text::loggable(&member, 200),
                    "dropped a malformed dispatch from Redis"
                );
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_order_by_priority_then_age() {
        let t = 1_800_000_000_000;
        assert!(
            score(5, t + 10_000) < score(0, t),
            "higher priority first, however late"
        );
        assert!(score(0, t) < score(0, t + 1), "then first pushed");
        assert!(score(-3, t) > score(0, t + 86_400_000));
        // Exact in an f64: one millisecond apart stays apart at the extremes.
        assert!(score(900, t) < score(900, t + 1));
        assert!(score(-900, t) < score(-900, t + 1));
    }

    #[test]
    fn members_round_trip_and_reject_garbage() {
        let d = Dispatch {
            instance_id: 42,
            try_number: 3,
            epoch: 7,
            queue: "etl".into(),
            priority: -2,
        };
        assert_eq!(parse_member("etl", &member(&d)), Some(d));
        for bad in ["", "1:2:3", "1:2:3:4:5", "a:2:3:4", "rm -rf /"] {
            assert_eq!(parse_member("q", bad), None, "{bad}");
        }
    }

    #[test]
    fn broker_addresses_become_urls() {
        assert_eq!(redis_url("localhost:6379"), "redis://localhost:6379");
        assert_eq!(redis_url("redis://h:1/2"), "redis://h:1/2");
    }
}

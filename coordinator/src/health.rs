//! Health (issue 11): `GET /healthz` (the process is alive), `GET /readyz` (it can do its
//! work: 200, or 503 with a short text naming what is missing) and `GET /metrics` (Prometheus
//! text) on a process's HTTP listener; and, for a coordinator, the gRPC health service
//! reporting the same readiness for the goflow services.
//!
//! A coordinator is ready when its database answers, Redis answers where it dispatches
//! through Redis, and a leader is known: itself, or the one it passes calls to (a standby
//! follower is ready). The gRPC health service's overall status (service "") stays SERVING
//! while the process runs, for liveness probes; the goflow services' names (e.g.
//! `goflow.v1.ControlService`) are SERVING only while ready, but `goflow.v1.LogService`,
//! which every coordinator answers itself, leader or not (see `server.rs`).

use std::sync::Arc;
use std::time::Duration;

use goflow_agent::DispatchQueue;
use tokio_util::sync::CancellationToken;

use crate::routing::Router;
use crate::store::{self, Store};

/// How long one dependency may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the gRPC health service's status is brought up to date.
const GRPC_HEALTH_PERIOD: Duration = Duration::from_secs(2);

// The HTTP routes are the agent crate's: `goflow-agent` serves them without the coordinator.
pub use goflow_agent::cli::health::{MetricsText, ReadyCheck, routes};

/// A dispatch queue that remembers whether its last push failed: a broker that answers
/// pings but refuses every push (a key of the wrong type: WRONGTYPE) must not pass for ready.
/// A push that works again clears it.
pub struct WatchedQueue {
    inner: Arc<dyn DispatchQueue>,
    /// The error of the last push, when it failed.
    failing: std::sync::Mutex<Option<String>>,
}

impl WatchedQueue {
    pub fn new(inner: Arc<dyn DispatchQueue>) -> Self {
        Self {
            inner,
            failing: std::sync::Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl DispatchQueue for WatchedQueue {
    async fn push(&self, dispatches: Vec<goflow_core::Dispatch>) -> anyhow::Result<()> {
        let pushed = self.inner.push(dispatches).await;
        *self.failing.lock().unwrap() = pushed
            .as_ref()
            .err()
            .map(|e| goflow_core::text::loggable(&format!("{e:#}"), 300));
        pushed
    }

    async fn pop(&self, queues: &[String]) -> anyhow::Result<goflow_core::Dispatch> {
        self.inner.pop(queues).await
    }

    async fn pop_until(
        &self,
        queues: &[String],
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<goflow_core::Dispatch>> {
        self.inner.pop_until(queues, stop).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.inner.ping().await?;
        match self.failing.lock().unwrap().clone() {
            Some(error) => anyhow::bail!("it answers, but the last dispatch push failed: {error}"),
            None => Ok(()),
        }
    }
}

/// What a coordinator needs to be ready.
#[derive(Clone)]
pub struct Readiness {
    store: Store,
    /// The Redis queue, when dispatching through Redis.
    redis: Option<Arc<dyn DispatchQueue>>,
    router: Router,
}

impl Readiness {
    pub fn new(store: Store, redis: Option<Arc<dyn DispatchQueue>>, router: Router) -> Self {
        Self { store, redis, router }
    }

    /// Ok, or everything missing, e.g. "not ready: database unreachable (...); no leader".
    pub async fn check(&self) -> Result<(), String> {
        let mut missing = vec![];
        let database = async {
            let mut conn = self.store.read().await?;
            store::ping(&mut conn).await
        };
        match tokio::time::timeout(CHECK_TIMEOUT, database).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => missing.push(format!("database unreachable ({e:#})")),
            Err(_) => missing.push(format!(
                "database unreachable (no answer within {CHECK_TIMEOUT:?})"
            )),
        }
        if let Some(redis) = &self.redis {
            match tokio::time::timeout(CHECK_TIMEOUT, redis.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => missing.push(format!("Redis unusable ({e:#})")),
                Err(_) => missing.push(format!("Redis unreachable (no answer within {CHECK_TIMEOUT:?})")),
            }
        }
        if !self.router.is_local() && self.router.forwarding_to().is_none() {
            missing.push("no leader known (an election is under way)".into());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not ready: {}", missing.join("; ")))
        }
    }

    pub fn as_check(&self) -> ReadyCheck {
        let me = self.clone();
        Arc::new(move || {
            let me = me.clone();
            Box::pin(async move { me.check().await })
        })
    }
}

/// Ready when one of `coordinators` (gRPC URLs) says its goflow services are SERVING (it
/// reaches its database and a leader): for `goflow webui`.
pub fn coordinators_check(
    coordinators: &[String],
    tls: &goflow_agent::ClientTls,
) -> anyhow::Result<ReadyCheck> {
    let mut channels = vec![];
    for url in coordinators {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("bad coordinator address {url:?}: {e}"))?;
        let endpoint = tls.apply(endpoint).map_err(anyhow::Error::msg)?;
        channels.push((
            url.clone(),
            endpoint
                .connect_timeout(CHECK_TIMEOUT)
                .timeout(CHECK_TIMEOUT)
                .connect_lazy(),
        ));
    }
    let channels = Arc::new(channels);
    Ok(Arc::new(move || {
        let channels = channels.clone();
        Box::pin(async move {
            use tonic_health::pb::HealthCheckRequest;
            use tonic_health::pb::health_check_response::ServingStatus;
            use tonic_health::pb::health_client::HealthClient;
            let service =
                <crate::routing::Routed<crate::routing::Control> as tonic::server::NamedService>::NAME;
            let mut seen = vec![];
            for (url, channel) in channels.iter() {
                let request = HealthCheckRequest {
                    service: service.into(),
                };
                match HealthClient::new(channel.clone()).check(request).await {
                    Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    Ok(_) => seen.push(format!("{url} is not ready")),
                    Err(status) => seen.push(format!("{url} unreachable ({})", status.message())),
                }
            }
            Err(format!("not ready: no coordinator ready: {}", seen.join("; ")))
        })
    }))
}

/// Keeps the goflow services' gRPC health status at the readiness, until `shutdown`: every
/// few seconds, and at once when the route changes (`routes`: a leader found or lost).
pub async fn grpc_health_loop(
    reporter: tonic_health::server::HealthReporter,
    ready: ReadyCheck,
    mut routes: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    use crate::routing::{Agents, Control, Logins, Routed};
    let mut last: Option<bool> = None;
    loop {
        let result = ready().await;
        let now = result.is_ok();
        if last != Some(now) {
            if now {
                reporter.set_serving::<Routed<Control>>().await;
                reporter.set_serving::<Routed<Agents>>().await;
                reporter.set_serving::<Routed<Logins>>().await;
                if last.is_some() {
                    tracing::info!("ready again: the gRPC health service says SERVING");
                }
            } else {
                reporter.set_not_serving::<Routed<Control>>().await;
                reporter.set_not_serving::<Routed<Agents>>().await;
                reporter.set_not_serving::<Routed<Logins>>().await;
                if let Err(why) = &result
                    && last.is_some()
                {
                    tracing::warn!("{why}: the gRPC health service says NOT_SERVING");
                }
            }
            last = Some(now);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GRPC_HEALTH_PERIOD) => {}
            changed = routes.changed() => {
                if changed.is_err() {
                    // The router is gone: nothing to follow but the clock.
                    tokio::time::sleep(GRPC_HEALTH_PERIOD).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// The probe: `/readyz` said ready while every dispatch push failed (WRONGTYPE).
    #[tokio::test]
    async fn a_queue_whose_pushes_fail_is_not_ready() {
        struct Refusing(std::sync::atomic::AtomicBool);
        #[async_trait::async_trait]
        impl DispatchQueue for Refusing {
            async fn push(&self, _: Vec<goflow_core::Dispatch>) -> anyhow::Result<()> {
                if self.0.load(std::sync::atomic::Ordering::Relaxed) {
                    anyhow::bail!("WRONGTYPE Operation against a key holding the wrong kind of value\nforged")
                }
                Ok(())
            }
            async fn pop(&self, _: &[String]) -> anyhow::Result<goflow_core::Dispatch> {
                std::future::pending().await
            }
        }
        let inner = Arc::new(Refusing(std::sync::atomic::AtomicBool::new(true)));
        let queue = WatchedQueue::new(inner.clone());
        queue.ping().await.unwrap();
        assert!(queue.push(vec![]).await.is_err());
        let error = format!("{:#}", queue.ping().await.unwrap_err());
        assert!(error.contains("last dispatch push failed: WRONGTYPE"), "{error}");
        assert!(!error.contains('\n'), "escaped: {error}");
        inner.0.store(false, std::sync::atomic::Ordering::Relaxed);
        queue.push(vec![]).await.unwrap();
        queue.ping().await.unwrap();
    }
    use crate::routing::Route;

    #[tokio::test]
    async fn ready_with_a_leader_and_the_database_and_not_without() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        let router = Router::new(None);
        let readiness = Readiness::new(store.clone(), None, router.clone());
        let app = routes(Arc::new(String::new), readiness.as_check(), true);

        let why = readiness.check().await.unwrap_err();
        assert!(why.contains("no leader"), "{why}");
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

        // A follower passing calls to a leader is ready.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        router.set(Route::Forward {
            address: "http://127.0.0.1:1".into(),
            channel,
        });
        readiness.check().await.unwrap();
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

        // The database gone: 503, saying so.
        store.close().await;
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("database unreachable"), "{body}");
        assert!(!body.contains("leader"), "{body}");
        assert_eq!(
            get(&app, "/healthz").await.0,
            StatusCode::OK,
            "alive all the same"
        );
    }

    async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

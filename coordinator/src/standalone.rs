//! `goflow standalone` (and, until Redis dispatch arrives, `goflow coordinator`): coordinator,
//! one agent and the web UI in one process, with the in-process queue and no etcd.

use std::sync::Arc;

use anyhow::Context;
use goflow_agent::queue::ANY_QUEUE;
use goflow_agent::{AgentConfig, DispatchQueue, MemoryQueue, RedisQueue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Caller, Engine, RunPlan};
use crate::store::Store;

/// How long a dispatch may sit in Redis unclaimed before it is pushed again (harmless when it
/// was merely waiting for a free slot: the push is idempotent).
const REDISPATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// The demo DAG a newcomer sees first.
pub const DEMO_DAG: &str = include_str!("../../deploy/demo/dag.yaml");

pub struct Standalone {
    pub engine: Arc<Engine>,
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl Standalone {
    /// Opens the store, recovers, binds both listeners and starts every loop.
    pub async fn start(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let database = settings.database_url()?;
        // A coordinator with a broker serves remote agents through Redis; otherwise one
        // embedded agent takes work from an in-process queue.
        let remote_agents = settings.mode == "coordinator" && settings.broker.is_some();
        let (queue, local_queue): (Arc<dyn DispatchQueue>, Option<Arc<MemoryQueue>>) = match &settings.broker
        {
            Some(broker) if remote_agents => {
                anyhow::ensure!(
                    settings.agent_secret.is_some(),
                    "a coordinator that serves remote agents (Common.Broker is set) needs an agent secret: \
                     set Common.AgentSecret or GOFLOW_AGENT_SECRET (16+ characters) here and on every agent"
                );
                (
                    Arc::new(RedisQueue::connect(broker, &settings.broker_source).await?),
                    None,
                )
            }
            _ => {
                let memory = Arc::new(MemoryQueue::new());
                (memory.clone(), Some(memory))
            }
        };
        let store = Store::open(&database).await?;
        let engine = Engine::new(store, queue, settings.engine.clone(), settings.mode).await?;
        engine.recover(!remote_agents).await?;

        let grpc = TcpListener::bind(&settings.grpc_listen).await.with_context(|| {
            format!(
                "cannot listen for gRPC on {} (--grpc-listen)",
                settings.grpc_listen
            )
        })?;
        let http = TcpListener::bind(&settings.http_listen).await.with_context(|| {
            format!(
                "cannot listen for the web UI on {} (--http-listen)",
                settings.http_listen
            )
        })?;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let grpc_url = format!("http://{grpc_addr}");

        let mut tasks = tokio::task::JoinSet::new();
        let remote_secret = if remote_agents {
            settings.agent_secret.clone()
        } else {
            None
        };
        let stop = shutdown.clone();
        let serving = engine.clone();
        tasks.spawn(async move {
            let secret = remote_secret;
            if let Err(e) = crate::server::serve_grpc(serving, secret, grpc, stop.clone()).await {
                tracing::error!("gRPC server stopped: {e:#}");
                stop.cancel();
            }
        });
        tasks.spawn(engine.clone().retry_loop(shutdown.clone()));
        tasks.spawn(engine.clone().cron_loop(shutdown.clone()));
        tasks.spawn(engine.clone().reaper_loop(shutdown.clone()));
        let stop = shutdown.clone();
        let web_target = grpc_url.clone();
        tasks.spawn(async move {
            if let Err(e) = goflow_webui::serve(web_target, http, stop).await {
                tracing::error!("web UI stopped: {e:#}");
            }
        });
        if let Some(queue) = local_queue {
            let agent = AgentConfig {
                coordinator: grpc_url,
                agent_id: if settings.agent_id.is_empty() {
                    "standalone".into()
                } else {
                    settings.agent_id.clone()
                },
                slots: settings.agent_slots,
                queues: if settings.agent_queues.is_empty() {
                    vec![ANY_QUEUE.into()]
                } else {
                    settings.agent_queues.clone()
                },
                heartbeat_interval: settings.engine.heartbeat_interval,
                ..AgentConfig::default()
            };
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = goflow_agent::run_agent(agent, queue, stop.clone()).await {
                    tracing::error!("embedded agent stopped: {e:#}");
                    stop.cancel();
                }
            });
        }
        // Dispatches lost on the way (an agent that died before claiming, a claim that failed
        // in transit) are pushed again; for one merely waiting for a slot it is a no-op.
        tasks.spawn(engine.clone().redispatch_loop(REDISPATCH_AFTER, shutdown.clone()));
        tracing::info!(
            "goflow {}: gRPC on {grpc_addr}, web UI on http://{http_addr}, {} database {}",
            settings.mode,
            engine.store().dialect().name(),
            database.redacted()
        );
        Ok(Self {
            engine,
            grpc_addr,
            http_addr,
            tasks,
        })
    }

    /// Loads the demo DAG and runs it for yesterday, once (a restart does not rerun it).
    pub async fn load_demo(&self) -> anyhow::Result<()> {
        let caller = Caller {
            actor: "goflow".into(),
            client: "standalone --demo".into(),
        };
        self.engine
            .apply(DEMO_DAG, "demo dag.yaml", false, &caller)
            .await?;
        let yesterday = goflow_core::EtlDay::from_date(chrono::Utc::now().date_naive()).offset(-1);
        let catalog = self.engine.catalog();
        let mut conn = self.engine.store().read().await?;
        for root in ["demo_extract_orders", "demo_extract_users"] {
            let key = goflow_core::InstanceKey::new(root, yesterday);
            if crate::store::instance_by_key(&mut conn, &key).await?.is_some()
                || catalog.dag.task(root).is_none()
            {
                continue;
            }
            let plan = RunPlan {
                task: root.into(),
                from: yesterday,
                to: yesterday,
                down: true,
                up: false,
                force: false,
            };
            self.engine.run(&plan, &caller).await?;
        }
        tracing::info!("demo DAG loaded and running for {yesterday}: goflowctl status -d {yesterday}");
        Ok(())
    }

    /// Waits until every loop has stopped (after `shutdown`), at most `patience`.
    pub async fn join(mut self, patience: std::time::Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(patience, all).await.is_err() {
            tracing::warn!("some loops did not stop within {patience:?}; exiting anyway");
        }
    }
}

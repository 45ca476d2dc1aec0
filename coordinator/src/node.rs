//! One coordinator process: `goflow standalone` and `goflow coordinator`. It serves the gRPC
//! API and the web UI at once, and leads when elected: only then does it have an engine and
//! run the scheduling loops. Until then (and after it steps down) it passes every call to the
//! coordinator that leads. With no broker, an embedded agent runs its tasks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use goflow_agent::queue::ANY_QUEUE;
use goflow_agent::{AgentConfig, DispatchQueue, MemoryQueue, RedisQueue};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Settings;
use crate::engine::{Caller, Engine, RunPlan};
use crate::grpc::Api;
use crate::in_process::InProcessAgents;
use crate::leadership::{self, ElectionSettings, EtcdSettings};
use crate::routing::{Route, Router};
use crate::store::{self, Store, now_ms};

/// How long a dispatch may sit in Redis unclaimed before it is pushed again (harmless when it
/// was merely waiting for a free slot: the push is idempotent).
const REDISPATCH_AFTER: Duration = Duration::from_secs(15);
/// How often a coordinator records that it is alive and looks who leads.
const PRESENCE_PERIOD: Duration = Duration::from_secs(1);

/// The demo DAG a newcomer sees first.
pub const DEMO_DAG: &str = include_str!("../../deploy/demo/dag.yaml");

pub struct Node {
    pub id: String,
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    /// Whether gRPC and the web UI are served over TLS.
    pub tls: bool,
    pub store: Store,
    /// The engine while this coordinator leads.
    leading: watch::Receiver<Option<Arc<Engine>>>,
    tasks: tokio::task::JoinSet<()>,
}

/// What a term of leadership needs to build and run an engine.
struct TermContext {
    store: Store,
    auth: Arc<Auth>,
    queue: Arc<dyn DispatchQueue>,
    settings: Settings,
    local_agent: bool,
    router: Router,
    leading: watch::Sender<Option<Arc<Engine>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Node {
    /// Whether these settings run an embedded agent: a coordinator with a broker serves remote
    /// agents through Redis; otherwise one embedded agent takes work from an in-process queue.
    pub fn runs_embedded_agent(settings: &Settings) -> bool {
        !(settings.mode == "coordinator" && settings.broker.is_some())
    }

    /// Opens the store, binds both listeners, starts serving, and starts campaigning.
    /// `agent_stop` drains (then kills) the embedded agent's tries; once it has stopped, it
    /// cancels `shutdown`, so the coordinator records every finish before it stops.
    pub async fn start(
        settings: &Settings,
        shutdown: CancellationToken,
        agent_stop: goflow_agent::Stop,
    ) -> anyhow::Result<Self> {
        let database = settings.database_url()?;
        let remote_agents = !Self::runs_embedded_agent(settings);
        let (queue, local_queue): (Arc<dyn DispatchQueue>, Option<Arc<MemoryQueue>>) = match &settings.broker
        {
            Some(broker) if remote_agents => {
                if settings.agent_secret.is_none() {
                    tracing::info!(
                        "no shared agent secret: agents are accepted by their per-agent tokens only \
                         (goflow agent-token create --id ID)"
                    );
                } else {
                    tracing::info!(
                        "agents are accepted by their per-agent tokens, and by the shared agent secret \
                         (Common.AgentSecret: for a single trusted network; any holder may act as any agent)"
                    );
                }
                let redis: Arc<dyn DispatchQueue> = Arc::new(
                    RedisQueue::connect_with_ca(broker, &settings.broker_source, settings.redis_ca_pem()?)
                        .await?,
                );
                // Readiness asks it whether pushes work, not only whether Redis answers.
                (Arc::new(crate::health::WatchedQueue::new(redis)), None)
            }
            _ => {
                let memory = Arc::new(MemoryQueue::new());
                (memory.clone(), Some(memory))
            }
        };
        let election = election_settings(settings)?;
        if let Some(etcd) = &election.etcd {
            leadership::check_etcd(etcd).await?;
        }
        let tls = crate::tls::NodeTls::load(settings)?;
        // The log archive is proved to work before anything starts, so a wrong bucket or
        // endpoint stops the start with its name instead of piling up failed uploads.
        let mut settings = settings.clone();
        if let Some(url) = &settings.log_archive {
            let env: std::collections::HashMap<String, String> = std::env::vars().collect();
            let archive = crate::archive::LogArchive::open(url, &env)?;
            archive.check().await?;
            tracing::info!("ended tries' logs are archived to {}", archive.url());
            settings.engine.log_archive = Some(Arc::new(archive));
        }
        let settings = &settings;
        let store = Store::open(&database).await?;

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
        let id = leadership::coordinator_id();
        let address = settings
            .advertise_address
            .clone()
            .unwrap_or_else(|| advertised(grpc_addr));
        // This coordinator's own clients (embedded agent and web UI) reach it on its gRPC
        // address; under TLS on loopback for an unspecified one, checking the certificate for
        // the advertised name.
        let (grpc_url, own_tls) = match &tls {
            None => (format!("http://{grpc_addr}"), None),
            Some(tls) => {
                let mut local = grpc_addr;
                if local.ip().is_unspecified() {
                    local.set_ip(match local.ip() {
                        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (format!("https://{local}"), Some(tls.client(host_of(&address))))
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };

        let auth = Arc::new(Auth::new(store.clone(), settings.auth));
        if settings.auth {
            let mut conn = store.read().await?;
            if store::count_users(&mut conn).await? == 0 {
                tracing::warn!(
                    "authentication is on and there is no user yet: create the first on this host with \
                     `goflow user add NAME --role admin` (same database settings); it takes effect at once"
                );
            }
        }
        // Agents' credentials: per-agent tokens always; the cluster's shared secret when it has
        // one; for an embedded agent, the random secret the database keeps for the cluster's
        // embedded agents (so nobody else can act as one over the port, on loopback too, and
        // a standby's embedded agent is recognised by the leader it passes calls to).
        let shared_secret = settings.agent_secret.clone().filter(|_| remote_agents);
        let embedded_secret = match &local_queue {
            Some(_) => {
                let mut tx = store.begin_unfenced().await?;
                let secret = store::embedded_agent_secret(&mut tx, &crate::auth::new_token("gfe_").0).await?;
                tx.commit().await?;
                Some(secret)
            }
            None => None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut router = Router::new(shared_secret);
        if let Some(secret) = &embedded_secret {
            router = router.with_embedded_agent(secret.clone());
        }
        let router = router
            .with_webui_secret(settings.webui_secret.clone())
            .require_agent_certificates(tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()))
            .with_metrics(metrics.clone())
            .with_logs(store.clone(), settings.engine.max_log_bytes);
        // Ready: the database answers, Redis too when dispatching through it, a leader is known.
        let readiness = crate::health::Readiness::new(
            store.clone(),
            remote_agents.then(|| queue.clone()),
            router.clone(),
        );
        let stop = shutdown.clone();
        let serving = router.clone();
        let ready = readiness.as_check();
        let server_tls = tls.as_ref().map(|t| t.server_config());
        tasks.spawn(async move {
            if let Err(e) =
                crate::server::serve_grpc(serving, grpc, server_tls, Some(ready), stop.clone()).await
            {
                tracing::error!("gRPC server stopped: {e:#}");
                stop.cancel();
            }
        });
        let stop = shutdown.clone();
        let web_target = grpc_url.clone();
        let web_tls = goflow_webui::WebTls {
            serve: tls.as_ref().map(|t| t.serve_pair()),
            coordinators: own_tls
                .as_ref()
                .map(|t| goflow_webui::ClientTls {
                    ca_pem: t.ca_pem.clone(),
                    identity: None,
                    server_name: t.server_name.clone(),
                })
                .unwrap_or_default(),
            // Its coordinator is this one, which has authentication on beyond loopback.
            require_auth: !crate::config::is_loopback(&settings.http_listen),
            webui_secret: settings.webui_secret.clone(),
        };
        let shared = metrics.clone();
        let observability =
            crate::health::routes(Arc::new(move || shared.encode()), readiness.as_check(), false);
        tasks.spawn(async move {
            if let Err(e) =
                goflow_webui::serve_tls_with(vec![web_target], web_tls, http, observability, stop).await
            {
                tracing::error!("web UI stopped: {e:#}");
            }
        });
        tasks.spawn(presence_loop(
            store.clone(),
            id.clone(),
            if address.contains("://") {
                address.clone()
            } else {
                format!("{scheme}://{address}")
            },
            tls.as_ref().map(|t| t.client(None)).unwrap_or_default(),
            router.clone(),
            shutdown.clone(),
        ));
        let (leading_tx, leading) = watch::channel(None);
        let context = TermContext {
            store: store.clone(),
            auth,
            queue,
            settings: settings.clone(),
            local_agent: local_queue.is_some(),
            router: router.clone(),
            leading: leading_tx,
            metrics,
        };
        tasks.spawn(leadership_loop(context, id.clone(), election, shutdown.clone()));
        if let Some(queue) = local_queue {
            let mut agent = AgentConfig {
                coordinators: vec![grpc_url],
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
                secret: embedded_secret,
                tls: own_tls.clone().unwrap_or_default(),
                // Claims and finish reports skip gRPC; the rest still goes over `grpc_url`.
                local: Some(Arc::new(InProcessAgents::new(router.clone()))),
                drain_timeout: settings.drain_timeout,
                spool_bytes: settings.spool_bytes,
                ..AgentConfig::default()
            };
            if let Some(dir) = &settings.spool_dir {
                agent.spool_dir = dir.clone();
            }
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = goflow_agent::run_agent_until(agent, queue, agent_stop).await {
                    tracing::error!("embedded agent stopped: {e:#}");
                }
                // Drained (or failed): the coordinator's turn to stop.
                stop.cancel();
            });
        }
        tracing::info!(
            "goflow {} {id}: gRPC{} on {grpc_addr} (advertised as {address}), web UI on {scheme}://{http_addr}, {} database {}",
            settings.mode,
            if tls.is_some() { " over TLS" } else { "" },
            store.dialect().name(),
            database.redacted()
        );
        Ok(Self {
            id,
            grpc_addr,
            http_addr,
            tls: tls.is_some(),
            store,
            leading,
            tasks,
        })
    }

    /// The engine once this coordinator leads; None if it does not within `patience`.
    pub async fn wait_leading(&self, patience: Duration) -> Option<Arc<Engine>> {
        let mut leading = self.leading.clone();
        let wait = leading.wait_for(|engine| engine.is_some());
        match tokio::time::timeout(patience, wait).await {
            Ok(Ok(engine)) => engine.clone(),
            _ => None,
        }
    }

    /// Loads the demo DAG and runs it for yesterday, once (a restart does not rerun it).
    pub async fn load_demo(&self) -> anyhow::Result<()> {
        let engine = self
            .wait_leading(Duration::from_secs(60))
            .await
            .context("--demo: this coordinator did not become the leader within a minute")?;
        let caller = Caller {
            actor: "goflow".into(),
            client: "standalone --demo".into(),
        };
        engine.apply(DEMO_DAG, "demo dag.yaml", false, &caller).await?;
        let yesterday = goflow_core::EtlDay::from_date(chrono::Utc::now().date_naive()).offset(-1);
        let catalog = engine.catalog();
        let mut conn = engine.store().read().await?;
        for root in ["demo_extract_orders", "demo_extract_users"] {
            let key = goflow_core::InstanceKey::new(root, yesterday);
            if store::instance_by_key(&mut conn, &key).await?.is_some() || catalog.dag.task(root).is_none() {
                continue;
            }
            let plan = RunPlan {
                as_then: false,
                task: root.into(),
                from: yesterday.into(),
                to: yesterday.into(),
                down: true,
                up: false,
                force: false,
            };
            engine.run(&plan, &caller).await?;
        }
        tracing::info!("demo DAG loaded and running for {yesterday}: goflowctl status -d {yesterday}");
        Ok(())
    }

    /// Waits until everything has stopped (after `shutdown`), at most `patience`; forgets this
    /// coordinator in the database.
    pub async fn join(mut self, patience: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(patience, all).await.is_err() {
            tracing::warn!("some loops did not stop within {patience:?}; exiting anyway");
        }
        if let Ok(mut tx) = self.store.begin_unfenced().await
            && store::remove_coordinator(&mut tx, &self.id).await.is_ok()
        {
            tx.commit().await.ok();
        }
    }
}

fn election_settings(settings: &Settings) -> anyhow::Result<ElectionSettings> {
    let etcd = if settings.etcd_endpoints.is_empty() {
        None
    } else {
        Some(EtcdSettings {
            endpoints: settings.etcd_endpoints.clone(),
            key: settings.etcd_key.clone(),
            ca_pem: settings.etcd_ca_pem()?,
            credentials: settings.etcd_credentials()?,
        })
    };
    let default_ttl = if etcd.is_some() {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(5)
    };
    Ok(ElectionSettings {
        lease_ttl: settings.lease_ttl.unwrap_or(default_ttl),
        etcd,
    })
}

/// `host:port` others reach this listener at: an unspecified IP becomes the host's name.
fn advertised(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{}:{}", leadership::host_name(), addr.port())
    } else {
        addr.to_string()
    }
}

/// The host of `host:port` or a URL, without an IPv6 address's brackets.
fn host_of(address: &str) -> Option<String> {
    let uri: http::Uri = crate::config::with_scheme(address).parse().ok()?;
    let host = uri.host()?;
    Some(host.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// Campaigns; while leading, runs an engine; steps down when the term ends; until shutdown.
async fn leadership_loop(
    context: TermContext,
    me: String,
    election: ElectionSettings,
    shutdown: CancellationToken,
) {
    let mut first_term = true;
    loop {
        let Some(term) = leadership::acquire(&context.store, &me, &election, &shutdown).await else {
            return;
        };
        // The term's own fence: its engine's writes carry this token, and only this one.
        let fence = store::Fence::new(term.token);
        context.metrics.set_leading(true);
        // Only the first term of a process follows a restart: the embedded agent's tries seen
        // by a later term are still running in this very process.
        let leading = match lead(&context, &fence, term.epoch, first_term).await {
            Ok(leading) => {
                first_term = false;
                let refused = fence.ended();
                tokio::select! {
                    _ = term.lost.cancelled() => {}
                    _ = refused.cancelled() => tracing::warn!("a write was refused for fencing token {}: stepping down", term.token),
                    _ = shutdown.cancelled() => {}
                }
                Some(leading)
            }
            Err(e) => {
                tracing::error!("cannot start leading: {e:#}; stepping down");
                None
            }
        };
        // No new call reaches the old engine; then its term ends (its writes are refused, its
        // streams end) and its loops stop, all before the lease is handed back.
        context.router.set(Route::NoLeader(
            "the leader stepped down; another takes over".into(),
        ));
        context.leading.send_replace(None);
        fence.end();
        if let Some(leading) = leading {
            leading.stop().await;
        }
        context.metrics.set_leading(false);
        context.metrics.clear_leader_gauges();
        term.release(&context.store).await;
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("no longer leading: standing by");
    }
}

/// How often PostgreSQL's statistics of the busiest tables are checked (a cheap read of
/// `pg_stat_user_tables`; an ANALYZE only when a table changed by as many rows as it has).
const STATISTICS_EVERY: Duration = Duration::from_secs(5);

/// How long a step-down waits for the old engine's loops to finish what they were doing.
const STEP_DOWN_PATIENCE: Duration = Duration::from_secs(10);

/// The engine of a term and its loops.
struct Leading {
    engine: Arc<Engine>,
    stop: CancellationToken,
    loops: tokio::task::JoinSet<()>,
}

impl Leading {
    /// Ends the engine's term and waits (bounded) for its loops; those still busy are aborted.
    /// A write of theirs still in flight holds the one writer connection, so the lease is
    /// released after it, and any later one is refused by the ended fence.
    async fn stop(mut self) {
        self.engine.end_term();
        self.stop.cancel();
        let joined = async { while self.loops.join_next().await.is_some() {} };
        if tokio::time::timeout(STEP_DOWN_PATIENCE, joined).await.is_err() {
            tracing::warn!("the old term's loops did not stop within {STEP_DOWN_PATIENCE:?}; aborting them");
            self.loops.shutdown().await;
        }
    }
}

/// The start of a term: the engine rebuilt from the database (catalog, agents, queued work),
/// recovery, the leader's loops, and calls answered here.
async fn lead(
    context: &TermContext,
    fence: &store::Fence,
    epoch: i64,
    restarted: bool,
) -> anyhow::Result<Leading> {
    let settings = &context.settings;
    let engine = Engine::new(
        context.store.fenced(fence.clone()),
        context.queue.clone(),
        settings.engine.clone(),
        settings.mode,
        epoch,
        context.metrics.clone(),
    )
    .await?;
    // Queued instances are pushed again under this epoch, whichever term queued them.
    engine.recover(context.local_agent && restarted).await?;
    let stop = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(engine.clone().retry_loop(stop.clone()));
    loops.spawn(engine.clone().cron_loop(stop.clone()));
    loops.spawn(engine.clone().reaper_loop(stop.clone()));
    // Alerts (issue 11): deadlines and long runs checked, pending alerts delivered.
    loops.spawn(engine.clone().alert_check_loop(stop.clone()));
    loops.spawn(engine.clone().alert_delivery_loop(stop.clone()));
    // Dispatches lost on the way (an agent that died before claiming, a claim that failed in
    // transit, Redis restarted empty) are pushed again; for one merely waiting it is a no-op.
    loops.spawn(engine.clone().redispatch_loop(REDISPATCH_AFTER, stop.clone()));
    loops.spawn(
        engine
            .clone()
            .metrics_loop(crate::metrics::REFRESH_PERIOD, stop.clone()),
    );
    loops.spawn(engine.clone().statistics_loop(STATISTICS_EVERY, stop.clone()));
    // Issue 18: ended tries' logs to object storage, and the nightly clean.
    loops.spawn(engine.clone().log_archive_loop(stop.clone()));
    loops.spawn(engine.clone().retention_loop(stop.clone()));
    context
        .router
        .set(Route::local(Api::new(engine.clone(), context.auth.clone())));
    context.leading.send_replace(Some(engine.clone()));
    Ok(Leading { engine, stop, loops })
}

/// Records that this coordinator is alive (and where it listens), and, while another one
/// leads, points the router at it.
async fn presence_loop(
    store: Store,
    me: String,
    address: String,
    peer_tls: goflow_agent::ClientTls,
    router: Router,
    shutdown: CancellationToken,
) {
    let started_at = now_ms();
    let mut rounds: u64 = 0;
    loop {
        rounds += 1;
        let seen = async {
            let now = now_ms();
            let mut tx = store.begin_unfenced().await?;
            store::upsert_coordinator(
                &mut tx,
                &store::CoordinatorRow {
                    id: me.clone(),
                    address: address.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    started_at,
                    last_seen_at: now,
                },
            )
            .await?;
            // Coordinators gone for a day are forgotten (looked for once a minute).
            if rounds % 60 == 1 {
                store::forget_coordinators(&mut tx, now - 86_400_000).await?;
            }
            tx.commit().await?;
            let mut conn = store.read().await?;
            let leader = store::leader(&mut conn).await?;
            let coordinators = store::list_coordinators(&mut conn).await?;
            anyhow::Ok((leader, coordinators, now))
        };
        match seen.await {
            Ok((leader, coordinators, now)) if !router.is_local() => {
                let leads = leader.lease_until >= now && !leader.holder.is_empty() && leader.holder != me;
                let target = coordinators
                    .iter()
                    .find(|c| leads && c.id == leader.holder)
                    .map(|c| c.address.clone());
                match target {
                    Some(target) if router.forwarding_to().as_deref() != Some(target.as_str()) => {
                        let endpoint = tonic::transport::Endpoint::from_shared(target.clone())
                            .map_err(|e| e.to_string())
                            .and_then(|endpoint| peer_tls.apply(endpoint));
                        match endpoint {
                            Ok(endpoint) => {
                                tracing::info!(
                                    "coordinator {} leads at {target}: passing calls to it",
                                    leader.holder
                                );
                                let channel = endpoint
                                    .connect_timeout(Duration::from_secs(3))
                                    .tcp_nodelay(true)
                                    .connect_lazy();
                                router.set(Route::Forward {
                                    address: target,
                                    channel,
                                });
                            }
                            Err(e) => {
                                tracing::error!("leader {} has a bad address {target:?}: {e}", leader.holder)
                            }
                        }
                    }
                    Some(_) => {}
                    None if router.forwarding_to().is_some() => router.set(Route::NoLeader(
                        "the leader's lease lapsed; an election is under way".into(),
                    )),
                    None => {}
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("presence: {e:#}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRESENCE_PERIOD) => {}
        }
    }
}

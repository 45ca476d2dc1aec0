//! The agent daemon: registers with the coordinator, heartbeats, listens for kill commands,
//! takes dispatches when a slot is free, claims them and runs them with [`crate::runner`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goflow_core::Dispatch;
use goflow_proto::agent_service_client::AgentServiceClient;
use goflow_proto::{
    RegisterRequest, ReportFinishRequest, ReportFinishResponse, ReportStartRequest, ReportStartResponse,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Status};
use tracing::Instrument;

use crate::drain::Stop;
use crate::failover::{ClientTls, Failover, Options, ServedBy};
use crate::logs::LogClient;
use crate::plumbing::{Backoff, host_name};
use crate::queue::DispatchQueue;
use crate::runner::{self, RunSpec};

mod handoff;
mod liveness;

use handoff::NextTry;

/// How long to keep trying the first Register: the coordinator may be starting in the same
/// process.
const REGISTER_PATIENCE: Duration = Duration::from_secs(30);
/// How long killed tries get to stop (and their logs to flush) on shutdown.
pub(crate) const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// gRPC URLs of the coordinators, e.g. `http://127.0.0.1:7070`: any of them answers every
    /// call, and the agent moves to the next one when the one it talks to dies or answers
    /// UNAVAILABLE. At least one.
    pub coordinators: Vec<String>,
    /// Empty: let the coordinator choose (from the host name).
    pub agent_id: String,
    /// How many tries run at once (the seed's `Worker.Parallelism`).
    pub slots: usize,
    /// Routing keys to take work from.
    pub queues: Vec<String>,
    /// The coordinator's `RegisterResponse` may override it.
    pub heartbeat_interval: Duration,
    /// Bytes; longer output lines are cut with a marker.
    pub max_log_line: usize,
    /// Where each try's output waits (one folder per try) until a coordinator stored it.
    pub spool_dir: std::path::PathBuf,
    /// Most bytes of a try's output waiting there; past it, lines are dropped and the log
    /// says how many bytes.
    pub spool_bytes: u64,
    /// How long a finished try's report waits for its output to be stored, so a reader who
    /// sees the try ended sees its whole log. Past it the report goes out anyway and the
    /// output follows (for `logs::LATE_PATIENCE`); coordinators take it after the report too.
    pub log_drain_patience: Duration,
    /// The secret a cluster's coordinator asks of its agents (sent as a bearer token).
    pub secret: Option<String>,
    /// `goflow-shim`, the supervisor that takes the tries' processes down with the agent
    /// (see `bin/shim.rs`).
    pub shim: Option<std::path::PathBuf>,
    /// How `https://` coordinators are verified (`--ca`), and the client certificate this
    /// agent presents to coordinators that ask for one (`--tls-cert`, `--tls-key`).
    pub tls: ClientTls,
    /// Counts tries and records whether coordinators answer (`goflow agent --http-listen`).
    pub metrics: Option<Arc<crate::metrics::AgentMetrics>>,
    /// The coordinator of this process, for an embedded agent: the per-try calls (ReportStart,
    /// ReportFinish) go to it directly instead of over gRPC. None for remote agents.
    pub local: Option<Arc<dyn LocalCoordinator>>,
    /// How long running tries may go on once the agent is asked to stop (`--drain-timeout`);
    /// those still running then are killed.
    pub drain_timeout: Duration,
}

/// A coordinator in the agent's own process, answering the per-try calls without HTTP/2 or
/// protobuf encoding. It answers as the gRPC server would: UNAVAILABLE while nobody leads (the
/// agent retries), a status for every refusal. The requests carry the metadata of a gRPC call
/// (the agent secret, the try's trace context).
#[tonic::async_trait]
pub trait LocalCoordinator: Send + Sync + std::fmt::Debug {
    async fn report_start(
        &self,
        request: tonic::Request<ReportStartRequest>,
    ) -> Result<tonic::Response<ReportStartResponse>, Status>;

    async fn report_finish(
        &self,
        request: tonic::Request<ReportFinishRequest>,
    ) -> Result<tonic::Response<ReportFinishResponse>, Status>;
}

/// The agent's gRPC client: every call carries the agent secret, when there is one.
pub type CoordinatorClient = AgentServiceClient<InterceptedService<Failover, SecretHeader>>;

/// Adds `authorization: Bearer <secret>` to every call, and the current span's `traceparent`
/// when traces are exported (the try's finish report continues the try's trace).
#[derive(Clone)]
pub struct SecretHeader(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl SecretHeader {
    fn add_to(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(value) = &self.0 {
            metadata.insert("authorization", value.clone());
        }
        goflow_telemetry::inject(metadata);
    }
}

impl tonic::service::Interceptor for SecretHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.add_to(request.metadata_mut());
        Ok(request)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            coordinators: vec![format!("http://{}", goflow_proto::DEFAULT_GRPC_ADDR)],
            agent_id: String::new(),
            slots: std::thread::available_parallelism().map_or(4, |n| n.get()),
            queues: vec!["default".into()],
            heartbeat_interval: Duration::from_secs(2),
            max_log_line: runner::DEFAULT_MAX_LOG_LINE,
            spool_dir: std::env::temp_dir().join(format!("goflow-spool-{}", std::process::id())),
            spool_bytes: 64 * 1024 * 1024,
            log_drain_patience: Duration::from_secs(60),
            secret: None,
            shim: runner::shim_beside_current_exe(),
            tls: ClientTls::default(),
            metrics: None,
            local: None,
            drain_timeout: crate::drain::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// What the loops of one agent share.
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    client: CoordinatorClient,
    /// LogService, over the same coordinators.
    logs: LogClient,
    /// What `client` adds to every call, added to the calls made in-process too.
    secret: SecretHeader,
    /// The coordinators behind `client`, and which one it talks to.
    failover: Failover,
    /// The id the coordinator gave us (it may change on re-registration).
    agent_id: Mutex<String>,
    heartbeat_interval_ms: AtomicU64,
    /// The coordinator's WorkerTimeOut (0: unknown): cut off that long, it re-dispatches our
    /// tries, so we stop them first.
    worker_timeout_ms: AtomicU64,
    /// Tries stopped because the coordinator could not be reached: not reported, since the
    /// coordinator gives them to another agent.
    abandoned: Mutex<std::collections::HashSet<String>>,
    /// Tries whose command has ended, their report not yet answered: nothing left to stop, so
    /// being cut off does not abandon them (their end, a success maybe, is still reported).
    /// Changed under the `running` lock, as `abandoned` is.
    exited: Mutex<std::collections::HashSet<String>>,
    /// This process among the agent's runs (told at registration): a coordinator closes what
    /// a new one does not list at once, and gives the same one time for claims in flight.
    incarnation: String,
    /// (instance, try) of the claims sent and not answered yet, listed in heartbeats: a grant
    /// the coordinator made to one of them is not lost while we wait for its answer.
    claiming: Mutex<std::collections::HashSet<(i64, i64)>>,
    /// Grants left unstarted because their answer came too late, until a heartbeat has told
    /// the coordinator (which dispatches them again without counting them lost).
    unstarted: Mutex<Vec<String>>,
    slots: Arc<Semaphore>,
    /// The dispatch loop holds a free slot and waits for work: nothing is queued for us now.
    pub(super) waiting_for_work: AtomicBool,
    /// Running tries by attempt id, with the token that kills each.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled: take no new work (the running tries go on).
    pub(crate) draining: CancellationToken,
    /// Cancelled: kill the running tries, and report nothing more (a second signal, or the
    /// drain's deadline). Every try's kill token is its child.
    pub(crate) killing: CancellationToken,
    /// Cancelled once every try has ended: the heartbeats and the command stream stop.
    exiting: CancellationToken,
}

/// Runs the agent until `shutdown` is cancelled, then kills its running tries at once (see
/// [`run_agent_until`] for a graceful drain). Fails only if the coordinator cannot be reached
/// at start (after retrying for about 30s) or the configuration is unusable.
pub async fn run_agent(
    config: AgentConfig,
    queue: Arc<dyn DispatchQueue>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = Stop {
        drain: shutdown.clone(),
        kill: shutdown,
    };
    run_agent_until(config, queue, stop).await
}

/// Runs the agent until `stop.drain` is cancelled; then it takes no new work and lets the
/// running tries finish (reporting them, with heartbeats and logs going on) for up to
/// `config.drain_timeout`, and returns once none runs. `stop.kill`, or the deadline, kills
/// those still running: their process groups are stopped and they are not reported, so the
/// coordinator dispatches them again once this agent is gone.
pub async fn run_agent_until(
    config: AgentConfig,
    queue: Arc<dyn DispatchQueue>,
    stop: Stop,
) -> anyhow::Result<()> {
    anyhow::ensure!(config.slots > 0, "the agent needs at least one slot");
    let mut config = config;
    if config.queues.is_empty() {
        config.queues = vec!["default".into()];
    }
    // Lazy: the channels connect (and reconnect) on use, so a coordinator that is still
    // starting, or restarts later, is picked up without rebuilding anything. The keepalive
    // breaks the command stream of a coordinator that stopped answering (paused, cut off).
    let failover = Failover::lazy_tls(
        &config.coordinators,
        Options {
            // Logs go by unary AppendLog, which is replayed like every other call.
            streaming_requests: vec![],
            // The agent's own loops retry, and count the silence (see `heartbeat_loop`).
            unavailable_patience: Duration::ZERO,
        },
        &config.tls,
        |endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(3))
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
        },
    )
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let secret = match &config.secret {
        Some(secret) => Some(
            format!("Bearer {secret}")
                .parse()
                .map_err(|_| anyhow::anyhow!("the agent secret must be printable ASCII"))?,
        ),
        None => None,
    };
    let secret = SecretHeader(secret);
    let agent = Arc::new(Agent {
        client: AgentServiceClient::with_interceptor(failover.clone(), secret.clone()),
        logs: goflow_proto::log_service_client::LogServiceClient::with_interceptor(
            failover.clone(),
            secret.clone(),
        ),
        secret,
        failover,
        agent_id: Mutex::new(config.agent_id.clone()),
        heartbeat_interval_ms: AtomicU64::new(config.heartbeat_interval.as_millis() as u64),
        worker_timeout_ms: AtomicU64::new(0),
        abandoned: Mutex::new(Default::default()),
        exited: Mutex::new(Default::default()),
        incarnation: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ),
        claiming: Mutex::new(Default::default()),
        unstarted: Mutex::new(vec![]),
        slots: Arc::new(Semaphore::new(config.slots)),
        waiting_for_work: Default::default(),
        running: Mutex::new(HashMap::new()),
        draining: CancellationToken::new(),
        killing: CancellationToken::new(),
        exiting: CancellationToken::new(),
        config,
    });
    let killer = tokio::spawn(crate::drain::follow(
        stop,
        agent.draining.clone(),
        agent.killing.clone(),
        agent.exiting.clone(),
    ));

    if agent.config.shim.is_none() {
        tracing::warn!(
            "goflow-shim is not beside this executable: if this agent is killed, the commands it runs keep running"
        );
    }
    if let Some(metrics) = &agent.config.metrics {
        metrics.slots.set(agent.config.slots as i64);
    }
    let registered = agent.register_at_start().await;
    if !matches!(registered, Ok(true)) {
        agent.exiting.cancel();
        killer.await.ok();
        return registered.map(|_| ()); // failed, or shut down while waiting
    }

    let heartbeats = tokio::spawn(agent.clone().heartbeat_loop());
    let commands = tokio::spawn(agent.clone().watch_commands_loop());
    agent.clone().dispatch_loop(queue).await;

    agent.exiting.cancel();
    heartbeats.abort();
    commands.abort();
    killer.await.ok();
    // Only this process's folder, once its tries' folders are gone (those still sending keep it).
    let _ = std::fs::remove_dir(&agent.config.spool_dir);
    Ok(())
}

impl Agent {
    fn agent_id(&self) -> String {
        self.agent_id.lock().unwrap().clone()
    }

    fn metrics(&self) -> Option<&crate::metrics::AgentMetrics> {
        self.config.metrics.as_deref()
    }

    /// A grant that took longer than this to arrive is not started: half the time after which
    /// a coordinator counts a claimed try the agent's heartbeats do not list as lost (three
    /// heartbeat intervals, at least 10 s; see the engine's `heartbeat`).
    fn late_claim(&self) -> Duration {
        (self.heartbeat_interval() * 3).max(Duration::from_secs(10)) / 2
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.load(Ordering::Relaxed).max(100))
    }

    /// Sleeps, or returns false early if `until` is cancelled.
    async fn sleep(&self, duration: Duration, until: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = until.cancelled() => false,
        }
    }

    async fn register(&self) -> Result<(), Status> {
        let request = RegisterRequest {
            // Re-registering keeps the id the coordinator gave us the first time.
            agent_id: self.agent_id(),
            host: host_name(),
            slots: i32::try_from(self.config.slots).unwrap_or(i32::MAX),
            queues: self.config.queues.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            // What runs here now: anything else the coordinator thinks we run is gone.
            running_attempts: self.running.lock().unwrap().keys().cloned().collect(),
            incarnation: self.incarnation.clone(),
        };
        let sent_at = Instant::now();
        let response = self.client.clone().register(request).await;
        if let Some(metrics) = self.metrics() {
            metrics.set_coordinator_answers(response.is_ok());
        }
        let response = response?;
        let coordinator = served_by(&response).map(|i| self.failover.url(i).to_string());
        let response = response.into_inner();
        if !response.agent_id.is_empty() {
            *self.agent_id.lock().unwrap() = response.agent_id.clone();
        }
        self.worker_timeout_ms
            .store(response.worker_timeout_ms.max(0) as u64, Ordering::Relaxed);
        if response.heartbeat_interval_ms > 0 {
            self.heartbeat_interval_ms
                .store(response.heartbeat_interval_ms as u64, Ordering::Relaxed);
        }
        self.renew_lease(sent_at).await;
        tracing::info!(
            agent_id = %response.agent_id,
            coordinator = coordinator.as_deref().unwrap_or(""),
            heartbeat = ?self.heartbeat_interval(),
            slots = self.config.slots,
            queues = ?self.config.queues,
            "registered with the coordinator"
        );
        Ok(())
    }

    /// Registers, retrying for [`REGISTER_PATIENCE`]. Ok(false): shut down meanwhile.
    async fn register_at_start(&self) -> anyhow::Result<bool> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            match self.register().await {
                Ok(()) => return Ok(true),
                Err(status) if started.elapsed() < REGISTER_PATIENCE && is_transient(&status) => {
                    tracing::info!(
                        coordinators = %self.failover.describe(),
                        error = %status.message(),
                        "waiting for the coordinator to register"
                    );
                }
                Err(status) => {
                    anyhow::bail!(
                        "could not register with a coordinator at {}: {status}",
                        self.failover.describe()
                    );
                }
            }
            if !self.sleep(backoff.next(), &self.draining).await {
                return Ok(false);
            }
        }
    }

    fn kill(&self, attempt_id: &str, source: &str) {
        match self.running.lock().unwrap().get(attempt_id) {
            Some(token) => {
                tracing::info!(attempt_id, source, "killing try on request");
                token.cancel();
            }
            None => tracing::debug!(attempt_id, source, "kill for a try that is not running here"),
        }
    }

    /// Takes a slot, then a dispatch, claims it and starts it; until the agent drains, then
    /// waits for the running tries (see [`Agent::drain`]).
    async fn dispatch_loop(self: Arc<Self>, queue: Arc<dyn DispatchQueue>) {
        let mut tries = JoinSet::new();
        loop {
            while tries.try_join_next().is_some() {}
            // A slot first: a dispatch popped without one would wait here, unclaimed, while
            // another agent could have run it.
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = self.draining.cancelled() => break,
            };
            self.waiting_for_work.store(true, Ordering::Relaxed);
            let popped = queue.pop_until(&self.config.queues, &self.draining).await;
            self.waiting_for_work.store(false, Ordering::Relaxed);
            let dispatch = match popped {
                Ok(Some(dispatch)) => dispatch,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "taking from the queue failed; retrying");
                    drop(permit);
                    if !self.sleep(Duration::from_secs(1), &self.draining).await {
                        break;
                    }
                    continue;
                }
            };
            if self.draining.is_cancelled() {
                // Taken as the drain began: back to the queue for another agent, at once.
                self.release(&*queue, dispatch).await;
                break;
            }
            let Some((claim, trace)) = self.claim(&dispatch).await else {
                continue; // the permit drops: the slot is free again
            };
            let Some(kill) = self.start_running(&claim.attempt_id) else {
                continue; // the permit drops: the slot is free again
            };
            let agent = self.clone();
            tries.spawn(async move {
                // The slot's permit goes from each try to the one its finish hands off (the
                // hand-off, issue 21), and is given back when none comes.
                let mut next = Some(NextTry {
                    claim,
                    epoch: dispatch.epoch,
                    span: trace,
                    kill,
                });
                while let Some(run) = next.take() {
                    next = agent
                        .run_try(run.claim, run.epoch, run.kill)
                        .instrument(run.span)
                        .await;
                }
                drop(permit);
            });
        }
        self.drain(tries).await;
    }

    /// `ReportStart`: asks the coordinator for the try. None: not ours to run. With the answer,
    /// the span to run the try in: when traces are exported, a child of the dispatch's trace
    /// (the answer's `traceparent`), like the claim's own span.
    async fn claim(&self, dispatch: &Dispatch) -> Option<(ReportStartResponse, tracing::Span)> {
        // Not entered during the call: its parent is only known from the answer.
        let claim_span = goflow_telemetry::span(|| {
            tracing::info_span!(
                "agent.claim",
                otel.kind = "consumer",
                goflow.instance_id = dispatch.instance_id,
                goflow.try_number = dispatch.try_number,
                goflow.agent = self.agent_id().as_str(),
                goflow.granted = tracing::field::Empty,
            )
        });
        let request = ReportStartRequest {
            agent_id: self.agent_id(),
            dispatch: Some(goflow_proto::Dispatch {
                instance_id: dispatch.instance_id,
                try_number: dispatch.try_number as i32,
                epoch: dispatch.epoch,
                queue: dispatch.queue.clone(),
                priority: dispatch.priority,
            }),
        };
        let asked = Instant::now();
        let in_flight = (dispatch.instance_id, dispatch.try_number);
        self.claiming.lock().unwrap().insert(in_flight);
        let response = self
            .retry("ReportStart", || self.report_start(request.clone()))
            .await;
        if let Ok(claim) = &response {
            goflow_telemetry::set_parent(&claim_span, &claim.traceparent);
            claim_span.record("goflow.granted", claim.granted);
        }
        let outcome = match response {
            Ok(claim) if claim.granted && asked.elapsed() > self.late_claim() => {
                // A coordinator paused after it granted (SIGSTOP, a frozen VM) can deliver the
                // grant after a new leader declared the try lost, since this agent's heartbeats
                // did not list it, and dispatched it again: starting it now would make two live
                // runs. Left unstarted, and said so in the next heartbeat: the coordinator
                // dispatches it again without counting it lost.
                tracing::warn!(
                    attempt_id = %claim.attempt_id,
                    waited = ?asked.elapsed(),
                    "the claim was answered too late to start the try safely; left for the coordinator to dispatch again"
                );
                self.unstarted.lock().unwrap().push(claim.attempt_id);
                None
            }
            Ok(claim) if claim.granted => {
                let run_span = self.run_span(&claim, dispatch.try_number, &claim_span);
                Some((claim, run_span))
            }
            Ok(claim) => {
                tracing::debug!(
                    instance_id = dispatch.instance_id,
                    try_number = dispatch.try_number,
                    reason = %claim.reason,
                    "dispatch not granted; dropped"
                );
                None
            }
            Err(status) => {
                // The coordinator re-queues what stays queued, so dropping it loses nothing.
                tracing::warn!(
                    instance_id = dispatch.instance_id,
                    try_number = dispatch.try_number,
                    error = %status,
                    "could not claim the dispatch; dropped"
                );
                None
            }
        };
        // Only now: a late grant is in `unstarted` before it leaves the claims in flight, so
        // no heartbeat misses it.
        self.claiming.lock().unwrap().remove(&in_flight);
        outcome
    }

    /// Lists a granted try as running here, with the token that kills it; None if it runs
    /// here already.
    fn start_running(&self, attempt_id: &str) -> Option<CancellationToken> {
        let kill = self.killing.child_token();
        {
            let mut running = self.running.lock().unwrap();
            if running.contains_key(attempt_id) {
                // The same try pushed twice reached this agent twice: the coordinator grants
                // a repeated claim (its first answer may have been lost), so the grant alone
                // does not say the try is not already running here. One process a try.
                tracing::warn!(%attempt_id, "claimed a try that already runs here; not starting it twice");
                return None;
            }
            running.insert(attempt_id.to_string(), kill.clone());
        }
        if let Some(metrics) = self.metrics() {
            metrics.tries_started.inc();
            metrics.tries_running.inc();
        }
        Some(kill)
    }

    /// The span a granted try runs in: when traces are exported, a child of the dispatch's
    /// trace (the answer's `traceparent`), else of `parent`.
    fn run_span(
        &self,
        claim: &ReportStartResponse,
        try_number: i64,
        parent: &tracing::Span,
    ) -> tracing::Span {
        let run_span = goflow_telemetry::span(|| {
            tracing::info_span!(
                "agent.run",
                otel.kind = "consumer",
                goflow.task = claim.task.as_str(),
                goflow.etl_day = claim.etl_day.as_str(),
                goflow.try_number = try_number,
                goflow.attempt_id = claim.attempt_id.as_str(),
                goflow.agent = self.agent_id().as_str(),
                goflow.outcome = tracing::field::Empty,
                goflow.exit_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        });
        // Untraced dispatch (pushed before a restart): the run still joins its parent.
        if !goflow_telemetry::set_parent(&run_span, &claim.traceparent) {
            goflow_telemetry::set_parent(&run_span, &goflow_telemetry::traceparent(parent));
        }
        run_span
    }

    /// Runs one granted try: output to `AppendLog` (through the spool), then `ReportFinish`.
    /// Its slot is kept for a downstream the finish may hand off: the try to run next, if so.
    async fn run_try(
        &self,
        claim: ReportStartResponse,
        epoch: i64,
        kill: CancellationToken,
    ) -> Option<NextTry> {
        let attempt_id = claim.attempt_id.clone();
        tracing::info!(%attempt_id, task = %claim.task, etl_day = %claim.etl_day, "try started");
        let spec = RunSpec {
            command: claim.command,
            env: claim.env,
            timeout: (claim.timeout_ms > 0).then(|| Duration::from_millis(claim.timeout_ms as u64)),
            max_log_line: self.config.max_log_line,
            shim: self.config.shim.clone(),
            ..RunSpec::new("")
        };
        let (lines, lines_rx) = tokio::sync::mpsc::channel(1024);
        let sender = crate::logs::Sender {
            client: self.logs.clone(),
            failover: self.failover.clone(),
            agent_id: self.agent_id(),
            attempt_id: attempt_id.clone(),
        };
        let dir = crate::spool::try_dir(&self.config.spool_dir, &attempt_id);
        let shipping = crate::logs::spool_and_ship(sender, dir, self.config.spool_bytes, lines_rx);
        let started = Instant::now();
        let outcome = runner::run_command(spec, lines, kill).await;
        {
            let _running = self.running.lock().unwrap();
            self.exited.lock().unwrap().insert(attempt_id.clone());
        }
        if outcome.kind == runner::OutcomeKind::Failed
            && outcome.exit_code.is_none()
            && let Some(shim) = &self.config.shim
            && runner::lease_lapsed_since(shim, started)
        {
            // Ended by a signal while the supervisor's lease had run out (we were frozen): it
            // stopped the try, and the coordinator runs it again. Not a failure of the command.
            tracing::warn!(%attempt_id, "the try supervisor stopped this try: the agent's lease ran out");
            self.abandoned.lock().unwrap().insert(attempt_id.clone());
        }
        let span = tracing::Span::current();
        span.record("goflow.outcome", outcome.kind.as_str());
        if let Some(code) = outcome.exit_code {
            span.record("goflow.exit_code", code);
        }
        if outcome.kind != runner::OutcomeKind::Success {
            span.record("otel.status_code", "error");
        }
        if let Some(metrics) = self.metrics() {
            metrics.tries_running.dec();
            let label = crate::metrics::OutcomeLabel {
                outcome: outcome.kind.as_str().into(),
            };
            metrics.tries_finished.get_or_create(&label).inc();
        }
        // Every byte stored before the finish is reported: a reader who sees the try ended
        // sees its whole log.
        // A try stopped because the coordinators are out of reach is not reported: nothing
        // to wait for (its output goes on being sent in the background).
        let patience = if self.abandoned.lock().unwrap().contains(&attempt_id) {
            Duration::ZERO
        } else {
            self.config.log_drain_patience
        };
        crate::logs::drain(&attempt_id, shipping, patience, &self.killing).await;

        if self.killing.is_cancelled() || self.abandoned.lock().unwrap().remove(&attempt_id) {
            tracing::info!(%attempt_id, "try stopped unreported; left for the coordinator to re-dispatch");
            self.forget(&attempt_id);
            return None;
        }
        let request = ReportFinishRequest {
            agent_id: self.agent_id(),
            attempt_id: attempt_id.clone(),
            epoch,
            outcome: outcome.kind.as_str().into(),
            has_exit_code: outcome.exit_code.is_some(),
            exit_code: outcome.exit_code.unwrap_or(0),
            message: outcome.message.clone(),
            take_next: self.may_take_next(),
        };
        let asked = Instant::now();
        let response = self
            .retry("ReportFinish", || self.report_finish(request.clone()))
            .await;
        // Heartbeats list it as running until its end is reported.
        self.forget(&attempt_id);
        match &response {
            Ok(answer) if answer.accepted => {
                tracing::info!(%attempt_id, outcome = outcome.kind.as_str(), message = %outcome.message, "try finished");
            }
            Ok(answer) => {
                tracing::info!(%attempt_id, reason = %answer.reason, "finish report refused (stale try)");
            }
            Err(status) => {
                tracing::error!(%attempt_id, error = %status, "could not report the finish");
            }
        }
        self.handed_off(response.ok()?, asked)
    }

    /// The try is over here: no longer listed in heartbeats.
    fn forget(&self, attempt_id: &str) {
        let mut running = self.running.lock().unwrap();
        running.remove(attempt_id);
        self.exited.lock().unwrap().remove(attempt_id);
    }

    /// Claims a try: in-process when the coordinator runs in this process, else over gRPC.
    async fn report_start(
        &self,
        request: ReportStartRequest,
    ) -> Result<tonic::Response<ReportStartResponse>, Status> {
        match &self.config.local {
            Some(local) => local.report_start(self.in_process(request)).await,
            None => self.client.clone().report_start(request).await,
        }
    }

    /// Reports a try's end: in-process when the coordinator runs in this process, else over gRPC.
    async fn report_finish(
        &self,
        request: ReportFinishRequest,
    ) -> Result<tonic::Response<ReportFinishResponse>, Status> {
        match &self.config.local {
            Some(local) => local.report_finish(self.in_process(request)).await,
            None => self.client.clone().report_finish(request).await,
        }
    }

    /// A request with the metadata the gRPC client's interceptor adds, taken now, in the
    /// caller's span: the finish report continues the try's trace either way.
    fn in_process<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.secret.add_to(request.metadata_mut());
        request
    }

    /// Calls `call` until it answers or fails for a reason retrying cannot fix (about 30s of
    /// transient errors at most), so a coordinator blip loses no report.
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match call().await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_transient(&status) && started.elapsed() < Duration::from_secs(30) => {
                    tracing::warn!(what, error = %status, "coordinator call failed; retrying");
                    // Killing on shutdown, nothing is reported any more (see `run_try`); a
                    // draining agent still reports.
                    if !self.sleep(backoff.next(), &self.killing).await {
                        return Err(status);
                    }
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// Which coordinator answered a call.
fn served_by<T>(response: &tonic::Response<T>) -> Option<usize> {
    response.extensions().get::<ServedBy>().map(|s| s.0)
}

/// Errors of the transport or of a coordinator that is starting or failing over.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
    )
}

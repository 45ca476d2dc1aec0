//! The scheduling engine: turns requests and reports into state transitions, one transaction
//! each, and pushes dispatches after the commit. Domain rules come from `goflow_core`; SQL
//! lives in `store`; the engine decides what happens. It takes and returns domain values:
//! protobuf stops at the gRPC adapters.
//!
//! Split along its seams:
//! - `definitions`: apply, pause, the catalog;
//! - `runs`: run, redo, do-all-job, cron fires' runs, releasing downstreams (with `joins`);
//! - `operator`: kill, mark success, delete;
//! - `tasks`: deleting task definitions, run previews, definition diffs;
//! - `agents`: register, heartbeat and liveness, logs;
//! - `tries`: claims and finish reports, written with group commit;
//! - `loops`: what only the leader runs on a timer (recovery, retries, cron, reaper, re-push);
//! - `waits`: why a waiting instance waits;
//! - `retention`: `clean` and the nightly clean; `log_archive`: logs uploaded to object storage.
//! - `versions`: versions of definitions, the definition a try runs, history and diffs.

mod agents;
mod alerts;
mod backfills;
mod deadline_risk;
mod definitions;
mod eta;
mod explain;
mod handoff;
mod joins;
mod log_archive;
mod loops;
mod operator;
mod pools;
mod retention;
mod runs;
mod tasks;
mod traces;
mod tries;
mod versions;
mod waits;

#[cfg(test)]
mod backfill_tests;
#[cfg(test)]
mod catchup_tests;
#[cfg(test)]
mod eta_tests;
#[cfg(test)]
mod handoff_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod term_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod waits_tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use goflow_agent::DispatchQueue;
use goflow_core::{Dag, Dispatch, Period, PeriodKind, TaskSpec};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{InstanceRow, Store, StoredTask};

pub use agents::{
    AgentCommand, AgentRegistration, ClaimOutcome, ClaimedTry, FinishOutcome, HeartbeatAnswer,
    HeartbeatExtras, Registered, TryReport,
};
pub use backfills::{BackfillStart, BackfillStatus, CancelOutcome};
pub use definitions::{ApplyOptions, ApplyOutcome};
pub use eta::{DayEta, EtaInstance};
pub use explain::InstanceExplanation;
pub use handoff::{Finished, HandedOff};
pub use pools::PoolStatus;
pub use retention::{CleanReport, RETENTION_ACTOR};
pub use tasks::{FieldChange, RunPreview, spec_changes};
pub use waits::WaitCache;

/// Settings the engine needs; the defaults make `goflow standalone` need no file.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Retries of a task that does not say (the seed's `Worker.Retry`).
    pub default_retries: u32,
    pub default_retry_delay: Duration,
    /// Task timeout of a task that does not say; None = no timeout (`Worker.TaskTimeOut`).
    pub default_timeout: Option<Duration>,
    /// How often agents heartbeat (`Worker.HearteatInterval`).
    pub heartbeat_interval: Duration,
    /// Silence after which an agent is declared dead (`Scheduler.WorkerTimeOut`).
    pub worker_timeout: Duration,
    /// How often a try is re-dispatched after its agent died (`Scheduler.RetryQueueimes`).
    pub retry_queue_times: u32,
    /// Log bytes kept per try.
    pub max_log_bytes: i64,
    /// Alert channels and routing (issue 11).
    pub alerts: Arc<crate::alerts::AlertSettings>,
    /// What cron fires go by: the system clock, or a test's clock file (`--test-clock`).
    pub schedule_clock: crate::clock::ScheduleClock,
    /// Where ended tries' logs go (`--log-archive`, issue 18); None keeps them in the database.
    pub log_archive: Option<Arc<crate::archive::LogArchive>>,
    /// `--retention-days`: the leader cleans what is older every night.
    pub retention_days: Option<u32>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            default_retries: 0,
            default_retry_delay: Duration::from_secs(30),
            default_timeout: None,
            heartbeat_interval: Duration::from_secs(2),
            worker_timeout: Duration::from_secs(20),
            retry_queue_times: 4,
            max_log_bytes: 64 * 1024 * 1024,
            alerts: Default::default(),
            schedule_clock: Default::default(),
            log_archive: None,
            retention_days: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Who asked, for the operations log (and, later, for permissions).
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: String,
    pub client: String,
}

impl Caller {
    pub fn system() -> Self {
        Self {
            actor: "goflow".into(),
            client: "scheduler".into(),
        }
    }
}

/// The task definitions as loaded: the validated graph plus what is not part of a spec.
#[derive(Debug, Default)]
pub struct Catalog {
    pub dag: Dag,
    pub tasks: BTreeMap<String, StoredTask>,
    /// Whether any task has a pool or a max_active, worked out once (every claim asks).
    pub(super) limited: std::sync::OnceLock<bool>,
}

impl Catalog {
    /// The task, or NotFound naming it. Check against the same snapshot you go on to use.
    pub fn require(&self, task: &str) -> Result<&StoredTask> {
        self.tasks
            .get(task)
            .ok_or_else(|| EngineError::NotFound(format!("unknown task {task:?}")))
    }

    /// Refuses a period of the wrong length for the task (an hour for a daily task).
    pub fn check_period(&self, task: &str, period: Period) -> Result<()> {
        let kind = self.require(task)?.spec.period;
        goflow_core::Period::parse_for(&period.key(), kind, task)
            .map(drop)
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    fn is_paused(&self, task: &str) -> bool {
        self.tasks.get(task).is_some_and(|t| t.paused)
    }
}

/// What a run (or kill) request asks for, validated.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub task: String,
    /// Periods of the task's kind (days for a daily task, hours for an hourly one).
    pub from: Period,
    pub to: Period,
    pub down: bool,
    pub up: bool,
    pub force: bool,
    /// Run each instance with the version its first try ran (`run --as-then`), not the
    /// current definition.
    pub as_then: bool,
}

/// A range a run or kill may span: of one kind, in order, at most ten years.
fn check_range(from: Period, to: Period) -> Result<()> {
    if from.kind() != to.kind() {
        return Err(EngineError::Invalid(format!(
            "--from {from} is {} {} and --to {to} {} {}: give both of the same length",
            article(from.kind()),
            from.kind(),
            article(to.kind()),
            to.kind()
        )));
    }
    if from > to {
        return Err(EngineError::Invalid(format!("--from {from} is after --to {to}")));
    }
    let days = from.etl_day().days_until(to.etl_day()) + 1;
    if days > 3660 {
        return Err(EngineError::Invalid(format!(
            "a range of {days} days is more than 10 years"
        )));
    }
    Ok(())
}

fn article(kind: PeriodKind) -> &'static str {
    if kind == PeriodKind::Hour { "an" } else { "a" }
}

/// Instances written per statement batch by a run (all in one transaction) or per
/// transaction by a kill (between chunks, agents' reports get the store).
const CHUNK: usize = 2000;
/// Finished instance ids a slow watch may be behind before it is told it lagged.
const FINISHES_KEPT: usize = 1024;

pub struct Engine {
    store: Store,
    catalog: RwLock<Arc<Catalog>>,
    queue: Arc<dyn DispatchQueue>,
    pub settings: EngineSettings,
    /// "standalone" or "coordinator", for GetVersion.
    mode: &'static str,
    epoch: i64,
    /// Bumped after every commit that changes instances, tries or logs: waiters and log
    /// tailers wake on it instead of polling.
    changes: watch::Sender<u64>,
    /// Instances a try's report finished (success, failed, killed), sent before the change
    /// signal that goes with them: a watch waiting for its last instance reads at once.
    finishes: broadcast::Sender<i64>,
    wake_retries: Notify,
    wake_cron: Notify,
    cron_started: std::sync::atomic::AtomicBool,
    joins: joins::Joins,
    liveness: agents::Liveness,
    agent_channels: Mutex<HashMap<String, mpsc::Sender<AgentCommand>>>,
    /// Trace context of pushed dispatches, for their claims (issue 11).
    traces: traces::DispatchTraces,
    /// The process's metrics (issue 11).
    metrics: Arc<crate::metrics::Metrics>,
    /// Claims and finish reports waiting to share the next transaction.
    group: tries::GroupCommit,
    /// Dispatches of pooled or max_active tasks on their way to an agent.
    offers: pools::Offers,
    /// Tries handed off with a finish that their agent has not listed yet (issue 21).
    hand_offs: handoff::HandOffs,
    /// Backfills that bound their instances (paused, or with a parallelism), issue 19.
    backfills: backfills::Bounds,
    /// This engine, for the tasks it spawns (group commit writes a batch on its own task).
    me: Weak<Engine>,
    /// Cancelled when this engine's term is over (its store's fence ended); never for an
    /// engine on an unfenced store (tests).
    term_ended: CancellationToken,
}

impl Engine {
    pub async fn new(
        store: Store,
        queue: Arc<dyn DispatchQueue>,
        settings: EngineSettings,
        mode: &'static str,
        epoch: i64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let liveness = agents::Liveness::load(&store).await?;
        let term_ended = store.fence().map(|f| f.ended()).unwrap_or_default();
        let backfills = backfills::Bounds::load(&store).await?;
        let engine = Arc::new_cyclic(|me| Self {
            store,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            queue,
            settings,
            mode,
            epoch,
            changes: watch::channel(0).0,
            finishes: broadcast::channel(FINISHES_KEPT).0,
            wake_retries: Notify::new(),
            wake_cron: Notify::new(),
            cron_started: std::sync::atomic::AtomicBool::new(false),
            joins: joins::Joins::default(),
            liveness,
            agent_channels: Mutex::new(HashMap::new()),
            traces: Default::default(),
            metrics,
            group: Default::default(),
            offers: Default::default(),
            hand_offs: Default::default(),
            backfills,
            me: me.clone(),
            term_ended,
        });
        engine.record_first_versions().await?;
        engine.reload_catalog().await?;
        Ok(engine)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Cancelled when this engine's term is over: streams it serves end then, so that their
    /// clients reconnect to whoever leads now.
    pub fn term_ended(&self) -> CancellationToken {
        self.term_ended.clone()
    }

    /// Ends this engine's term (stepping down): its writes are refused from now on, and the
    /// command streams and log follows it serves end.
    pub fn end_term(&self) {
        if let Some(fence) = self.store.fence() {
            fence.end();
        }
        self.term_ended.cancel();
        // Under the lock `watch_commands` takes, so none opens after this.
        self.agent_channels.lock().unwrap().clear();
        self.changed();
    }

    pub fn mode(&self) -> &'static str {
        self.mode
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap().clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The ids of instances finished by a try's report from now on (a receiver that falls
    /// more than [`FINISHES_KEPT`] behind is told it lagged).
    pub fn subscribe_finishes(&self) -> broadcast::Receiver<i64> {
        self.finishes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Output was stored for a try (by this coordinator's log service): followers of its log
    /// read on at once.
    pub fn log_appended(&self) {
        self.changed();
    }

    /// The most bytes of log stored per try.
    pub fn max_log_bytes(&self) -> i64 {
        self.settings.max_log_bytes
    }

    /// The retries in force for a task: its own, or the configured default.
    pub fn retries_of(&self, spec: &TaskSpec) -> i64 {
        spec.retries.unwrap_or(self.settings.default_retries) as i64
    }

    /// Pushes dispatches after their commit; those of a full pool or max_active are held back
    /// instead (see `pools`).
    async fn push(&self, dispatches: Vec<Dispatch>) {
        if dispatches.is_empty() {
            return;
        }
        let dispatches = self.push_admitted(dispatches).await;
        self.push_unchecked(dispatches).await;
    }

    async fn push_unchecked(&self, dispatches: Vec<Dispatch>) {
        if dispatches.is_empty() {
            return;
        }
        // A span per dispatch when traces are exported, kept for the claim (see `traces`).
        let spans = self.traces.start(&dispatches);
        // The store already says "queued"; if this push fails, the restart (or, in a cluster,
        // the sweeper) pushes again. A claim is a compare-and-set, so a double push is harmless.
        if let Err(e) = self.queue.push(dispatches).await {
            tracing::error!("dispatch push failed, instances stay queued until re-pushed: {e:#}");
        }
        drop(spans);
    }

    fn dispatch_of(&self, row: &InstanceRow, try_number: i64) -> Dispatch {
        Dispatch {
            instance_id: row.id,
            try_number,
            epoch: self.epoch,
            queue: row.queue.clone(),
            // A backfill's instances go behind every scheduled run (issue 19).
            priority: match row.backfill_id {
                Some(_) => goflow_core::backfill::backfill_priority(row.priority as i32),
                None => row.priority as i32,
            },
        }
    }
}

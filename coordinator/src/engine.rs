//! The scheduling engine: turns requests and reports into state transitions, one transaction
//! each, and pushes dispatches after the commit. Domain rules come from `goflow_core`; SQL
//! lives in `store`; this file decides what happens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use goflow_agent::DispatchQueue;
use goflow_core::state::{Event, transition};
use goflow_core::template::{self, TryContext};
use goflow_core::{Dag, EtlDay, InstanceKey, InstanceState, TaskSpec, dagfile};
use goflow_proto as pb;
use tokio::sync::{Notify, mpsc, watch};

use crate::store::{self, Conn, InstanceRow, Store, StoredTask, now_ms};

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
}

impl Catalog {
    /// The task, or NotFound naming it. Check against the same snapshot you go on to use.
    pub fn require(&self, task: &str) -> Result<&StoredTask> {
        self.tasks
            .get(task)
            .ok_or_else(|| EngineError::NotFound(format!("unknown task {task:?}")))
    }

    fn is_paused(&self, task: &str) -> bool {
        self.tasks.get(task).is_some_and(|t| t.paused)
    }
}

/// What a run request asks for, validated.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub task: String,
    pub from: EtlDay,
    pub to: EtlDay,
    pub down: bool,
    pub up: bool,
    pub force: bool,
}

/// How long a killed try may take to report its processes gone before a redo goes ahead anyway
/// (its agent may be dead, and then its processes died with it).
const KILL_SETTLE: Duration = Duration::from_secs(30);

/// States and blocked verdicts shared by the rows of one listing.
#[derive(Default)]
pub struct WaitCache {
    states: HashMap<InstanceKey, InstanceState>,
    days_loaded: HashSet<EtlDay>,
    blocked: HashMap<InstanceKey, bool>,
}

impl WaitCache {
    async fn state(&mut self, conn: &mut Conn, key: &InstanceKey) -> Result<Option<InstanceState>> {
        if self.days_loaded.insert(key.etl_day) {
            let day = std::collections::BTreeSet::from([key.etl_day]);
            self.states.extend(store::states_of_days(conn, &day).await?);
        }
        Ok(self.states.get(key).copied())
    }
}

/// A range of days a run or kill may span: in order, at most ten years.
fn check_range(from: EtlDay, to: EtlDay) -> Result<()> {
    if from > to {
        return Err(EngineError::Invalid(format!("--from {from} is after --to {to}")));
    }
    let days = from.days_until(to) + 1;
    if days > 3660 {
        return Err(EngineError::Invalid(format!(
            "a range of {days} days is more than 10 years"
        )));
    }
    Ok(())
}

/// Sleeps until `next` (epoch ms; None: an hour), an early `wake`, or shutdown (false).
async fn sleep_until(
    next: Option<i64>,
    wake: &Notify,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let sleep = next.map_or(Duration::from_secs(3600), |at| {
        Duration::from_millis((at - now_ms()).max(0) as u64)
    });
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(sleep) => true,
    }
}

/// Instances written per transaction by a run; between chunks, agents' reports get the store.
const REDO_CHUNK: usize = 2000;

pub struct Engine {
    store: Store,
    catalog: RwLock<Arc<Catalog>>,
    queue: Arc<dyn DispatchQueue>,
    pub settings: EngineSettings,
    epoch: i64,
    /// Bumped after every commit that changes instances, tries or logs: waiters and log
    /// tailers wake on it instead of polling.
    changes: watch::Sender<u64>,
    wake_retries: Notify,
    wake_cron: Notify,
    cron_started: std::sync::atomic::AtomicBool,
    agent_channels: Mutex<HashMap<String, mpsc::Sender<pb::AgentCommand>>>,
}

impl Engine {
    pub async fn new(
        store: Store,
        queue: Arc<dyn DispatchQueue>,
        settings: EngineSettings,
    ) -> anyhow::Result<Arc<Self>> {
        let epoch = store.next_epoch().await?;
        let engine = Arc::new(Self {
            store,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            queue,
            settings,
            epoch,
            changes: watch::channel(0).0,
            wake_retries: Notify::new(),
            wake_cron: Notify::new(),
            cron_started: std::sync::atomic::AtomicBool::new(false),
            agent_channels: Mutex::new(HashMap::new()),
        });
        engine.reload_catalog().await?;
        Ok(engine)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap().clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    async fn reload_catalog(&self) -> anyhow::Result<()> {
        let mut conn = self.store.begin().await?;
        let tasks = store::load_tasks(&mut conn).await?;
        conn.commit().await?;
        let dag = Dag::new(tasks.iter().map(|t| t.spec.clone()))
            .map_err(|e| anyhow::anyhow!("stored tasks do not form a valid DAG: {e}"))?;
        let tasks = tasks.into_iter().map(|t| (t.spec.id.clone(), t)).collect();
        *self.catalog.write().unwrap() = Arc::new(Catalog { dag, tasks });
        Ok(())
    }

    fn retries_of(&self, spec: &TaskSpec) -> i64 {
        spec.retries.unwrap_or(self.settings.default_retries) as i64
    }

    async fn push(&self, dispatches: Vec<pb::Dispatch>) {
        if dispatches.is_empty() {
            return;
        }
        // The store already says "queued"; if this push fails, the restart (or, in a cluster,
        // the sweeper) pushes again. A claim is a compare-and-set, so a double push is harmless.
        if let Err(e) = self.queue.push(dispatches).await {
            tracing::error!("dispatch push failed, instances stay queued until re-pushed: {e:#}");
        }
    }

    fn dispatch_of(&self, row: &InstanceRow, try_number: i64) -> pb::Dispatch {
        pb::Dispatch {
            instance_id: row.id,
            try_number: try_number as i32,
            epoch: self.epoch,
            queue: row.queue.clone(),
            priority: row.priority as i32,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Startup recovery
    // -----------------------------------------------------------------------------------------

    /// After a start: tries that were running on an agent of this process are re-dispatched as
    /// new tries (`local_agents_only`: standalone, whose agent died with it), queued instances
    /// are pushed again under the new epoch, finished ones stay as they are.
    pub async fn recover(&self, local_agents_only: bool) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut dispatches = vec![];
        if local_agents_only {
            sqlx::query("UPDATE agents SET state = 'dead' WHERE state = 'alive'")
                .execute(&mut *tx)
                .await?;
            for attempt in store::running_attempts(&mut tx).await? {
                if let Some(d) = self
                    .recover_lost_try(&mut tx, &attempt, "goflow restarted while it ran", now)
                    .await?
                {
                    dispatches.push(d);
                }
            }
        }
        let queued = store::restamp_queued(&mut tx, self.epoch).await?;
        let requeued = queued.len();
        dispatches.extend(queued.iter().map(|row| self.dispatch_of(row, row.try_number)));
        // Waiting instances whose dependencies are met (their release was lost, or a
        // definition changed while goflow was down) are queued.
        let catalog = self.catalog();
        dispatches.extend(
            self.queue_ready_waiting(&mut tx, &catalog.dag, None, |t| catalog.is_paused(t), now)
                .await?,
        );
        // A lost try requeued above is also among the queued ones: one dispatch each.
        dispatches.sort_by_key(|d| (d.instance_id, d.try_number));
        dispatches.dedup_by_key(|d| (d.instance_id, d.try_number));
        tx.commit().await?;
        if !dispatches.is_empty() {
            tracing::info!(
                "recovery: {} instances dispatched again ({} were queued)",
                dispatches.len(),
                requeued
            );
        }
        self.push(dispatches).await;
        self.wake_retries.notify_one();
        self.changed();
        Ok(())
    }

    /// Closes a try whose agent is gone and queues a new one, unless the instance has been
    /// re-dispatched `retry_queue_times` already.
    async fn recover_lost_try(
        &self,
        conn: &mut Conn,
        attempt: &store::AttemptRow,
        why: &str,
        now: i64,
    ) -> Result<Option<pb::Dispatch>> {
        store::finish_attempt(conn, &attempt.id, "lost", None, why, now).await?;
        let Some(row) = store::instance_by_id(conn, attempt.instance_id).await? else {
            return Ok(None);
        };
        if row.state() != InstanceState::Running || row.try_number != attempt.try_number {
            return Ok(None);
        }
        let requeue = row.lost_tries < self.settings.retry_queue_times as i64;
        let to =
            transition(InstanceState::Running, Event::AgentLost { requeue }).expect("running may be lost");
        if to == InstanceState::Queued {
            let message = format!("try {} lost ({why}); dispatched again", attempt.try_number);
            let try_number =
                store::requeue_lost(conn, row.id, row.try_number, self.epoch, now, &message).await?;
            tracing::warn!(
                "{}: try {} lost ({why}); dispatched again",
                row.key(),
                attempt.try_number
            );
            Ok(try_number.map(|t| self.dispatch_of(&row, t)))
        } else {
            let message = format!("lost {} times (agent died): {why}", row.lost_tries + 1);
            store::finish_instance(conn, row.id, row.try_number, to, None, &message, None, now).await?;
            Ok(None)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Task definitions
    // -----------------------------------------------------------------------------------------

    /// Creates or updates the tasks of a DAG document in one transaction, or changes nothing.
    pub async fn apply(
        &self,
        document: &str,
        source_name: &str,
        dry_run: bool,
        caller: &Caller,
    ) -> Result<pb::ApplyTasksResponse> {
        let source_name = if source_name.is_empty() {
            "document"
        } else {
            source_name
        };
        let specs = dagfile::parse(document, source_name).map_err(|e| EngineError::Invalid(e.to_string()))?;
        // Validate against the tasks as stored, inside the write transaction: two applies at
        // once are serialized, so they can never store a cycle between them.
        let mut tx = self.store.begin().await?;
        let stored: BTreeMap<String, StoredTask> = store::load_tasks(&mut tx)
            .await?
            .into_iter()
            .map(|t| (t.spec.id.clone(), t))
            .collect();
        let mut merged: BTreeMap<String, TaskSpec> = stored
            .iter()
            .map(|(id, t)| (id.clone(), t.spec.clone()))
            .collect();
        let mut response = pb::ApplyTasksResponse::default();
        let mut changed = vec![];
        for spec in &specs {
            match stored.get(&spec.id) {
                None => response.created.push(spec.id.clone()),
                Some(old) if old.spec == *spec => {
                    response.unchanged.push(spec.id.clone());
                    continue;
                }
                Some(_) => response.updated.push(spec.id.clone()),
            }
            merged.insert(spec.id.clone(), spec.clone());
            changed.push(spec.clone());
        }
        let dag = Dag::new(merged.into_values())
            .map_err(|e| EngineError::Invalid(format!("{source_name}: {e}")))?;
        if dry_run || changed.is_empty() {
            return Ok(response);
        }
        let now = now_ms();
        for spec in &changed {
            let schedule_changed = stored
                .get(&spec.id)
                .is_none_or(|old| old.spec.schedule != spec.schedule || old.spec.timezone != spec.timezone);
            store::upsert_task(&mut tx, spec, now, schedule_changed).await?;
        }
        for spec in &changed {
            store::set_dependencies(&mut tx, spec).await?;
        }
        // A changed definition (an upstream dropped, a later start_day) may leave waiting
        // instances with nothing left to wait for: queue them now.
        let mut dispatches = vec![];
        let paused = |task: &str| stored.get(task).is_some_and(|t| t.paused);
        for spec in &changed {
            dispatches.extend(
                self.queue_ready_waiting(&mut tx, &dag, Some(&spec.id), paused, now)
                    .await?,
            );
        }
        let detail = format!(
            "created [{}] updated [{}]",
            response.created.join(", "),
            response.updated.join(", ")
        );
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "apply",
            source_name,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.reload_catalog().await?;
        self.push(dispatches).await;
        self.wake_cron.notify_one();
        self.changed();
        Ok(response)
    }

    /// Queues the waiting instances of `task` (None: of every unpaused task) whose dependencies
    /// are all met. States are read a day at a time, so a paused year-long backfill costs a
    /// few hundred queries, not one per instance.
    async fn queue_ready_waiting(
        &self,
        conn: &mut Conn,
        dag: &Dag,
        task: Option<&str>,
        is_paused: impl Fn(&str) -> bool,
        now: i64,
    ) -> Result<Vec<pb::Dispatch>> {
        let mut waiting = store::instances_in_state(conn, InstanceState::Waiting, task).await?;
        waiting.retain(|row| dag.task(&row.task_id).is_some() && !is_paused(&row.task_id));
        let upstreams: Vec<Vec<InstanceKey>> = waiting
            .iter()
            .map(|row| dag.upstream_instances(&row.key()))
            .collect();
        let days: std::collections::BTreeSet<EtlDay> =
            upstreams.iter().flatten().map(|k| k.etl_day).collect();
        let states = store::states_of_days(conn, &days).await?;
        let mut dispatches = vec![];
        for (row, ups) in waiting.iter().zip(&upstreams) {
            let met = ups
                .iter()
                .all(|up| states.get(up) == Some(&InstanceState::Success));
            if met
                && let Some(t) =
                    store::queue_instance(conn, row.id, InstanceState::Waiting, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(row, t));
            }
        }
        Ok(dispatches)
    }

    pub fn require_task(&self, task: &str) -> Result<StoredTask> {
        self.catalog()
            .tasks
            .get(task)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("unknown task {task:?}")))
    }

    // -----------------------------------------------------------------------------------------
    // Runs
    // -----------------------------------------------------------------------------------------

    /// Runs or reruns the instances a plan names. Refused as a whole if any of them is queued
    /// or running (redoing a live try would make two runs).
    pub async fn run(&self, plan: &RunPlan, caller: &Caller) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        let spec = &catalog.require(&plan.task)?.spec;
        check_range(plan.from, plan.to)?;
        let mut keys = vec![];
        let mut forced = HashSet::new();
        for day in EtlDay::range(plan.from, plan.to) {
            if !catalog.dag.exists_on(&plan.task, day) {
                continue;
            }
            let start = InstanceKey::new(&plan.task, day);
            if plan.force {
                forced.insert(start.clone());
            }
            if plan.down {
                keys.extend(catalog.dag.downstream_closure(&start, (plan.from, plan.to)));
            }
            if plan.up {
                keys.extend(catalog.dag.upstream_closure(&start, (plan.from, plan.to)));
            }
            keys.push(start);
        }
        if keys.is_empty() {
            let start = spec.start_day.map(|d| d.to_string()).unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "task {:?} has no instance in {}..{}: it starts on {start}",
                plan.task, plan.from, plan.to
            )));
        }
        let keys = catalog.dag.in_run_order(keys.into_iter().collect::<HashSet<_>>());
        let what = format!(
            "{}{}{}{}",
            if plan.down { " --down" } else { "" },
            if plan.up { " --up" } else { "" },
            if plan.force { " --force" } else { "" },
            if plan.from == plan.to {
                String::new()
            } else {
                format!(" {}..{}", plan.from, plan.to)
            },
        );
        let target = format!("{}@{}", plan.task, plan.from);
        self.redo(&catalog, &keys, &forced, caller, "run", &target, what.trim())
            .await
    }

    /// Puts `keys` (in run order) back to waiting and queues those whose dependencies are met
    /// (or that are forced). Refused as a whole, before anything changes, if one of them is
    /// queued or running. Written in chunks of `REDO_CHUNK` instances, one transaction each,
    /// so a year-long backfill does not hold the store while agents report.
    #[allow(clippy::too_many_arguments)]
    async fn redo(
        &self,
        catalog: &Catalog,
        keys: &[InstanceKey],
        forced: &HashSet<InstanceKey>,
        caller: &Caller,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<Vec<InstanceRow>> {
        self.refuse_live(keys).await?;
        let mut rows = Vec::with_capacity(keys.len());
        let mut queued = 0;
        let mut skipped = vec![];
        for chunk in keys.chunks(REDO_CHUNK) {
            let now = now_ms();
            let mut tx = self.store.begin().await?;
            let mut dispatches = vec![];
            let wanted: Vec<store::WantedInstance> = chunk
                .iter()
                .map(|key| {
                    let spec = &catalog.tasks[&key.task].spec;
                    store::WantedInstance {
                        key,
                        spec,
                        max_tries: self.retries_of(spec) + 1,
                    }
                })
                .collect();
            let ensured = store::ensure_instances(&mut tx, &wanted, now).await?;
            let in_chunk: HashSet<&InstanceKey> = chunk.iter().collect();
            for (want, (row, created)) in wanted.iter().zip(ensured) {
                let (key, spec, retries) = (want.key, want.spec, want.max_tries - 1);
                // A live instance (it went live since the check above) is left alone rather than
                // run twice; the reset is a compare-and-set on the state just read.
                // Who redid it is in the operations log; the message is for what happens next.
                let redoable = transition(row.state(), Event::Redo { ready: false }).is_ok();
                if !redoable
                    || (!created
                        && !store::reset_for_redo(&mut tx, row.id, row.state(), retries, spec, "").await?)
                {
                    skipped.push(key.to_string());
                    continue;
                }
                // An upstream reset in this very transaction cannot have succeeded, so only
                // instances without one can be ready now; the rest are queued as their upstreams
                // succeed. (An upstream of an earlier chunk may have succeeded meanwhile: it is
                // checked in the store like any other.)
                let ready = forced.contains(key)
                    || (!catalog.is_paused(&key.task)
                        && !catalog
                            .dag
                            .upstream_instances(key)
                            .iter()
                            .any(|up| in_chunk.contains(up))
                        && self.dependencies_met(&mut tx, &catalog.dag, key).await?);
                if ready
                    && let Some(try_number) =
                        store::queue_instance(&mut tx, row.id, InstanceState::Waiting, self.epoch, now)
                            .await?
                {
                    dispatches.push(self.dispatch_of(&row, try_number));
                }
                rows.push(row);
            }
            tx.commit().await?;
            queued += dispatches.len();
            self.push(dispatches).await;
            self.changed();
        }
        let mut tx = self.store.begin().await?;
        let detail = if skipped.is_empty() {
            detail.to_string()
        } else {
            format!("{detail} (left alone, live meanwhile: {})", skipped.join(", "))
        };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            action,
            target,
            detail.trim(),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            "{action} {target} {detail}: {} instances, {queued} queued now",
            rows.len()
        );
        Ok(rows)
    }

    /// Fails, naming the instance, if any of `keys` is queued or running.
    async fn refuse_live(&self, keys: &[InstanceKey]) -> Result<()> {
        let mut conn = self.store.reader().acquire().await?;
        let days: std::collections::BTreeSet<EtlDay> = keys.iter().map(|k| k.etl_day).collect();
        let mut live = HashMap::new();
        for day in days {
            for (task, state) in store::live_instances_of_day(&mut conn, day).await? {
                live.insert(InstanceKey::new(&task, day), state);
            }
        }
        if let Some((key, state)) = keys.iter().find_map(|k| live.get(k).map(|s| (k, s))) {
            return Err(EngineError::Conflict(format!(
                "{key} is {state}: kill it first (goflowctl kill -j {} -d {}); nothing was changed",
                key.task, key.etl_day
            )));
        }
        let since = now_ms() - KILL_SETTLE.as_millis() as i64;
        let killing = store::killing_instances(&mut conn, since).await?;
        if let Some(key) = keys.iter().find(|k| killing.contains(*k)) {
            return Err(EngineError::Conflict(format!(
                "{key} was killed and its processes are still stopping; try again in a few seconds"
            )));
        }
        Ok(())
    }

    async fn dependencies_met(&self, conn: &mut Conn, dag: &Dag, key: &InstanceKey) -> Result<bool> {
        let upstreams = dag.upstream_instances(key);
        if upstreams.is_empty() {
            return Ok(true);
        }
        Ok(store::count_succeeded(conn, &upstreams).await? == upstreams.len())
    }

    /// Queues every waiting downstream of `key` whose dependencies are now all met: the event
    /// that replaces a polling scan.
    async fn release_downstream(
        &self,
        conn: &mut Conn,
        key: &InstanceKey,
        now: i64,
    ) -> Result<Vec<pb::Dispatch>> {
        let catalog = self.catalog();
        let mut dispatches = vec![];
        for down in catalog.dag.downstream_instances(key) {
            if catalog.is_paused(&down.task) {
                continue;
            }
            let Some(row) = store::instance_by_key(conn, &down).await? else {
                continue;
            };
            if row.state() != InstanceState::Waiting
                || !self.dependencies_met(conn, &catalog.dag, &down).await?
            {
                continue;
            }
            if let Some(try_number) =
                store::queue_instance(conn, row.id, InstanceState::Waiting, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(&row, try_number));
            }
        }
        Ok(dispatches)
    }

    /// Runs every scheduled root task (a schedule, no upstream) and its downstream for a day.
    pub async fn do_all_job(&self, day: EtlDay, caller: &Caller) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        let roots: Vec<&TaskSpec> = catalog
            .dag
            .tasks()
            .filter(|t| t.schedule.is_some() && t.depends_on.is_empty() && catalog.dag.exists_on(&t.id, day))
            .collect();
        if roots.is_empty() {
            return Err(EngineError::Invalid(format!(
                "no scheduled root task has an instance on {day}"
            )));
        }
        let mut keys = HashSet::new();
        for root in roots {
            keys.extend(
                catalog
                    .dag
                    .downstream_closure(&InstanceKey::new(&root.id, day), (day, day)),
            );
        }
        let keys = catalog.dag.in_run_order(keys);
        self.redo(
            &catalog,
            &keys,
            &HashSet::new(),
            caller,
            "do-all-job",
            &day.to_string(),
            "",
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Operator verbs
    // -----------------------------------------------------------------------------------------

    async fn existing(&self, conn: &mut Conn, key: &InstanceKey) -> Result<InstanceRow> {
        store::instance_by_key(conn, key)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no instance {key}")))
    }

    /// Sets instances to success without running them (recorded as forced); with `down`, the
    /// same-day downstream closure too. Releases their downstream.
    pub async fn mark_success(
        &self,
        key: &InstanceKey,
        down: bool,
        caller: &Caller,
    ) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        catalog.require(&key.task)?;
        let keys = if down {
            catalog.dag.downstream_closure(key, (key.etl_day, key.etl_day))
        } else {
            vec![key.clone()]
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut rows = vec![];
        let note = format!("marked success by {}", caller.actor);
        for k in &keys {
            let spec_k = &catalog.tasks[&k.task].spec;
            let (row, _) =
                store::ensure_instance(&mut tx, k, spec_k, self.retries_of(spec_k) + 1, now).await?;
            let from = row.state();
            transition(from, Event::MarkSuccess).map_err(|e| {
                EngineError::Conflict(format!("{k}: {e}; kill it first. Nothing was changed"))
            })?;
            if from != InstanceState::Success || !row.forced {
                store::operator_set_state(&mut tx, row.id, from, InstanceState::Success, true, &note, now)
                    .await?;
            }
            rows.push(row);
        }
        let mut dispatches = vec![];
        for k in &keys {
            dispatches.extend(self.release_downstream(&mut tx, k, now).await?);
        }
        let detail = if down { "--down" } else { "" };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "mark-success",
            &key.to_string(),
            detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.push(dispatches).await;
        self.changed();
        Ok(rows)
    }

    /// Stops instances: running tries are killed on their agents (the whole process group),
    /// and the instances are recorded as killed, not retried. One instance (an error if it is
    /// finished), or with a range of days and/or `down`, every unfinished instance of it: the
    /// way to stop a backfill.
    pub async fn kill(&self, plan: &RunPlan, caller: &Caller) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        catalog.require(&plan.task)?;
        check_range(plan.from, plan.to)?;
        let single = plan.from == plan.to && !plan.down;
        let mut keys = HashSet::new();
        for day in EtlDay::range(plan.from, plan.to) {
            let start = InstanceKey::new(&plan.task, day);
            if plan.down {
                keys.extend(catalog.dag.downstream_closure(&start, (plan.from, plan.to)));
            }
            keys.insert(start);
        }
        let keys = catalog.dag.in_run_order(keys);
        let now = now_ms();
        let note = format!("killed by {}", caller.actor);
        let mut tx = self.store.begin().await?;
        let mut killed = vec![];
        let mut agent_kills = vec![];
        let existing = store::instances_by_keys(&mut tx, keys.iter()).await?;
        for key in &keys {
            let Some(row) = existing.get(key).cloned() else {
                if single {
                    return Err(EngineError::NotFound(format!("no instance {key}")));
                }
                continue;
            };
            let from = row.state();
            if transition(from, Event::Kill).is_err() {
                if single {
                    return Err(EngineError::Conflict(format!(
                        "{key} is {from}: only a waiting, queued, running or up_for_retry instance can be killed"
                    )));
                }
                continue;
            }
            if !store::operator_set_state(&mut tx, row.id, from, InstanceState::Killed, false, &note, now)
                .await?
            {
                return Err(EngineError::Conflict(format!(
                    "{key} changed meanwhile; try again"
                )));
            }
            if from == InstanceState::Running {
                let attempt = store::attempt_id(row.id, row.try_number);
                // Closing the try here makes any late report of it stale, and heartbeats tell
                // its agent to stop it even if the push below is missed.
                // "killing" until the agent reports the process group gone (or KILL_SETTLE has
                // passed): a redo waits for it, so the old try and the new never overlap.
                store::finish_attempt(&mut tx, &attempt, "killing", None, &note, now).await?;
                if let Some(agent) = row.agent_id.clone() {
                    agent_kills.push((agent, attempt));
                }
            }
            killed.push(row);
        }
        if killed.is_empty() {
            return Err(EngineError::NotFound(format!(
                "nothing to kill: no unfinished instance of {} (or downstream) in {}..{}",
                plan.task, plan.from, plan.to
            )));
        }
        let target = format!("{}@{}", plan.task, plan.from);
        let detail = if single {
            killed[0].state.clone()
        } else {
            format!(
                "{}{} {} instances",
                if plan.from == plan.to {
                    String::new()
                } else {
                    format!("{}..{} ", plan.from, plan.to)
                },
                if plan.down { "--down" } else { "" },
                killed.len()
            )
        };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "kill",
            &target,
            detail.trim(),
            now,
        )
        .await?;
        tx.commit().await?;
        for (agent, attempt) in agent_kills {
            self.send_agent_command(
                &agent,
                pb::AgentCommand {
                    kill_attempt: attempt,
                },
            );
        }
        self.changed();
        Ok(killed)
    }

    /// Removes an instance with its tries and logs. Not while queued or running.
    pub async fn delete_instance(&self, key: &InstanceKey, caller: &Caller) -> Result<InstanceRow> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let row = self.existing(&mut tx, key).await?;
        if row.state().is_active() {
            return Err(EngineError::Conflict(format!(
                "{key} is {}: kill it first",
                row.state()
            )));
        }
        store::delete_instance(&mut tx, row.id).await?;
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "delete",
            &key.to_string(),
            row.state.as_str(),
            now,
        )
        .await?;
        tx.commit().await?;
        self.changed();
        Ok(row)
    }

    /// Pausing keeps new instances of a task from being queued; unpausing queues those ready.
    pub async fn set_paused(&self, task: &str, paused: bool, caller: &Caller) -> Result<StoredTask> {
        let catalog = self.catalog();
        self.require_task(task)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        store::set_paused(&mut tx, task, paused, now).await?;
        let action = if paused { "pause" } else { "unpause" };
        store::record_operation(&mut tx, &caller.actor, &caller.client, action, task, "", now).await?;
        // In the same transaction, so a crash cannot leave an unpaused task's ready instances
        // waiting.
        let dispatches = if paused {
            vec![]
        } else {
            self.queue_ready_waiting(&mut tx, &catalog.dag, Some(task), |_| false, now)
                .await?
        };
        tx.commit().await?;
        self.reload_catalog().await?;
        self.push(dispatches).await;
        self.changed();
        self.require_task(task)
    }

    // -----------------------------------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------------------------------

    pub async fn register_agent(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        if req.slots < 1 {
            return Err(EngineError::Invalid(format!(
                "slots must be at least 1, not {}",
                req.slots
            )));
        }
        let host = if req.host.is_empty() {
            "unknown".to_string()
        } else {
            req.host.clone()
        };
        let id = if req.agent_id.is_empty() {
            format!("{host}-{:x}", now_ms())
        } else {
            req.agent_id.clone()
        };
        let queues = if req.queues.is_empty() {
            vec!["default".to_string()]
        } else {
            req.queues.clone()
        };
        for q in &queues {
            if q != goflow_agent::queue::ANY_QUEUE && !goflow_core::dag::is_valid_task_id(q) {
                return Err(EngineError::Invalid(format!(
                    "queue {q:?} must match [A-Za-z0-9_.-]+ (or be * for every queue)"
                )));
            }
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        store::upsert_agent(
            &mut tx,
            &store::AgentRow {
                id: id.clone(),
                host,
                slots: req.slots as i64,
                queues: queues.join(","),
                version: req.version,
                registered_at: now,
                last_heartbeat_at: now,
                state: "alive".into(),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            "agent {id} registered ({} slots, queues {})",
            req.slots,
            queues.join(",")
        );
        Ok(pb::RegisterResponse {
            agent_id: id,
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as i64,
            worker_timeout_ms: self.settings.worker_timeout.as_millis() as i64,
        })
    }

    /// Records a heartbeat and answers which of the agent's tries must stop.
    /// Records a heartbeat and answers which of the agent's tries must stop. Tries the store
    /// has running on this agent that the agent no longer lists (their finish report was lost)
    /// are closed as lost and dispatched again, so no instance stays `running` forever.
    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let known = store::heartbeat(&mut tx, &req.agent_id, now).await?;
        let mut kill_attempts = vec![];
        for attempt_id in &req.running_attempts {
            let live = store::attempt(&mut tx, attempt_id).await?;
            if live.is_none_or(|a| a.state != "running" || a.agent_id != req.agent_id) {
                kill_attempts.push(attempt_id.clone());
            }
        }
        let mut dispatches = vec![];
        if known {
            // A try claimed moments ago may not be in the agent's list yet: give it time.
            let grace = (self.settings.heartbeat_interval * 3)
                .max(Duration::from_secs(10))
                .as_millis() as i64;
            let listed: HashSet<&String> = req.running_attempts.iter().collect();
            for attempt in store::running_attempts_of_agent(&mut tx, &req.agent_id).await? {
                if !listed.contains(&attempt.id) && attempt.started_at < now - grace {
                    let why = format!("agent {} no longer runs it; its report was lost", req.agent_id);
                    dispatches.extend(self.recover_lost_try(&mut tx, &attempt, &why, now).await?);
                }
            }
        }
        tx.commit().await?;
        if !dispatches.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        Ok(pb::HeartbeatResponse {
            kill_attempts,
            reregister: !known,
        })
    }

    pub fn watch_commands(&self, agent_id: &str) -> mpsc::Receiver<pb::AgentCommand> {
        let (tx, rx) = mpsc::channel(64);
        self.agent_channels
            .lock()
            .unwrap()
            .insert(agent_id.to_string(), tx);
        rx
    }

    fn send_agent_command(&self, agent: &str, command: pb::AgentCommand) {
        let sender = self.agent_channels.lock().unwrap().get(agent).cloned();
        match sender {
            Some(sender) => {
                if sender.try_send(command).is_err() {
                    tracing::warn!("agent {agent} is not listening; its next heartbeat carries the kill");
                }
            }
            None => tracing::info!(
                "agent {agent} has no command stream here; its next heartbeat carries the kill"
            ),
        }
    }

    /// Claims a dispatch for an agent (the "start" report): queued -> running for exactly this
    /// try and epoch, and the command in the answer.
    pub async fn claim(&self, req: pb::ReportStartRequest) -> Result<pb::ReportStartResponse> {
        let dispatch = req
            .dispatch
            .ok_or_else(|| EngineError::Invalid("dispatch is missing".into()))?;
        let refuse = |reason: String| pb::ReportStartResponse {
            granted: false,
            reason,
            ..Default::default()
        };
        if dispatch.epoch != self.epoch {
            return Ok(refuse(format!(
                "stale epoch {} (now {})",
                dispatch.epoch, self.epoch
            )));
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let Some(row) = store::instance_by_id(&mut tx, dispatch.instance_id).await? else {
            return Ok(refuse("instance no longer exists".into()));
        };
        let try_number = dispatch.try_number as i64;
        if !store::claim_instance(&mut tx, row.id, try_number, dispatch.epoch, &req.agent_id, now).await? {
            return Ok(refuse(format!(
                "stale dispatch: instance is {} at try {}",
                row.state, row.try_number
            )));
        }
        let attempt_id =
            store::insert_attempt(&mut tx, row.id, try_number, self.epoch, &req.agent_id, now).await?;
        let key = row.key();
        let spec = self.require_task(&key.task)?.spec;
        let ctx = TryContext {
            task_id: &key.task,
            etl_day: key.etl_day,
            try_number: try_number as u32,
            attempt_id: &attempt_id,
        };
        let command = match template::render(&spec.command, &ctx) {
            Ok(command) => command,
            Err(e) => {
                // Checked at apply time, so only a hand-edited database gets here.
                tx.rollback().await?;
                return Err(EngineError::Invalid(format!("task {}: command: {e}", key.task)));
            }
        };
        tx.commit().await?;
        self.changed();
        let timeout = spec.timeout.or(self.settings.default_timeout);
        let env = ctx.env().into_iter().collect();
        Ok(pb::ReportStartResponse {
            granted: true,
            reason: String::new(),
            attempt_id: attempt_id.clone(),
            command,
            env,
            timeout_ms: timeout.map_or(0, |t| t.as_millis() as i64),
            task: key.task.clone(),
            etl_day: key.etl_day.compact(),
        })
    }

    /// A try ended. Stale reports (a killed or superseded try, an older epoch) change nothing.
    pub async fn finish(&self, req: pb::ReportFinishRequest) -> Result<pb::ReportFinishResponse> {
        let stale = |reason: String| pb::ReportFinishResponse {
            accepted: false,
            reason,
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let Some(attempt) = store::attempt(&mut tx, &req.attempt_id).await? else {
            return Ok(stale(format!("unknown try {:?}", req.attempt_id)));
        };
        if attempt.epoch != req.epoch || attempt.agent_id != req.agent_id {
            return Ok(stale("the try belongs to another epoch or agent".into()));
        }
        let exit_code = req.has_exit_code.then_some(req.exit_code as i64);
        let outcome = match req.outcome.as_str() {
            "success" | "failed" | "timed_out" | "killed" => req.outcome.as_str(),
            other => return Err(EngineError::Invalid(format!("unknown outcome {other:?}"))),
        };
        if !store::finish_attempt(&mut tx, &attempt.id, outcome, exit_code, &req.message, now).await? {
            // A killed try's process group is gone now: "killing" is over.
            store::settle_killing(&mut tx, &attempt.id, now).await?;
            tx.commit().await?;
            return Ok(stale(format!(
                "try {} was already closed as {}",
                attempt.id, attempt.state
            )));
        }
        let Some(row) = store::instance_by_id(&mut tx, attempt.instance_id).await? else {
            tx.commit().await?;
            return Ok(stale("instance no longer exists".into()));
        };
        let spec = self.require_task(&row.task_id)?.spec;
        let event = match outcome {
            "success" => Event::Succeeded,
            "killed" => Event::Kill,
            _ => Event::TryFailed {
                retry: row.try_number < row.max_tries,
            },
        };
        let to = match transition(row.state(), event) {
            Ok(to) if row.try_number == attempt.try_number => to,
            _ => {
                tx.commit().await?;
                return Ok(stale(format!(
                    "instance is {} at try {}",
                    row.state, row.try_number
                )));
            }
        };
        let next_try_at = (to == InstanceState::UpForRetry).then(|| {
            now + spec
                .retry_delay
                .unwrap_or(self.settings.default_retry_delay)
                .as_millis() as i64
        });
        store::finish_instance(
            &mut tx,
            row.id,
            row.try_number,
            to,
            exit_code,
            &req.message,
            next_try_at,
            now,
        )
        .await?;
        let dispatches = if to == InstanceState::Success {
            self.release_downstream(&mut tx, &row.key(), now).await?
        } else {
            vec![]
        };
        tx.commit().await?;
        if to == InstanceState::UpForRetry {
            self.wake_retries.notify_one();
        }
        self.push(dispatches).await;
        self.changed();
        Ok(pb::ReportFinishResponse {
            accepted: true,
            reason: String::new(),
        })
    }

    pub async fn append_log(&self, attempt_id: &str, data: &[u8]) -> Result<i64> {
        let mut tx = self.store.begin().await?;
        let stored = store::append_log(&mut tx, attempt_id, data, self.settings.max_log_bytes)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("unknown try {attempt_id:?}")))?;
        tx.commit().await?;
        self.changed();
        Ok(stored)
    }

    // -----------------------------------------------------------------------------------------
    // Leader loops: retries due, cron fires, dead agents
    // -----------------------------------------------------------------------------------------

    /// Queues retries when their delay is over; sleeps until the next one or a new one.
    pub async fn retry_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.queue_due_retries().await.unwrap_or_else(|e| {
                tracing::error!("retry loop: {e:#}");
                Some(now_ms() + 1000)
            });
            if !sleep_until(next, &self.wake_retries, &shutdown).await {
                return;
            }
        }
    }

    async fn queue_due_retries(&self) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (due, next) = store::retries_due(&mut tx, now).await?;
        let catalog = self.catalog();
        let mut dispatches = vec![];
        let mut paused_next = None;
        for row in due {
            if catalog.is_paused(&row.task_id) {
                // Check again in a while; an unpause queues what is ready.
                paused_next = Some(now + 5_000);
                continue;
            }
            let to = transition(InstanceState::UpForRetry, Event::RetryDue).expect("retry is legal");
            debug_assert_eq!(to, InstanceState::Queued);
            if let Some(t) =
                store::queue_instance(&mut tx, row.id, InstanceState::UpForRetry, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(&row, t));
            }
        }
        tx.commit().await?;
        if !dispatches.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        Ok(match (next, paused_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Fires cron schedules on time; after downtime, the latest missed fire of each schedule
    /// runs once (and the log says so).
    pub async fn cron_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.fire_due_schedules().await.unwrap_or_else(|e| {
                tracing::error!("cron loop: {e:#}");
                Some(now_ms() + 1000)
            });
            if !sleep_until(next, &self.wake_cron, &shutdown).await {
                return;
            }
        }
    }

    async fn fire_due_schedules(&self) -> Result<Option<i64>> {
        // The first pass after a start is the one that catches up downtime.
        let first_pass = !self.cron_started.swap(true, std::sync::atomic::Ordering::Relaxed);
        let catalog = self.catalog();
        let mut conn = self.store.reader().acquire().await?;
        let last_fires: HashMap<String, i64> =
            store::schedule_last_fires(&mut conn).await?.into_iter().collect();
        drop(conn);
        let now = chrono::Utc::now();
        let mut earliest: Option<i64> = None;
        for task in catalog.dag.tasks() {
            let Some(expr) = &task.schedule else { continue };
            let schedule = match goflow_core::Schedule::parse(expr, &task.timezone, task.day_offset) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("task {}: {e}", task.id);
                    continue;
                }
            };
            let last = last_fires
                .get(&task.id)
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms));
            let plan = schedule.plan(last, now);
            if let Some(fire) = plan.due {
                let late = now - fire;
                let missed = if plan.skipped > 0 {
                    format!(" ({} earlier missed fires are not run)", plan.skipped)
                } else {
                    String::new()
                };
                if first_pass && (plan.skipped > 0 || late > chrono::Duration::seconds(30)) {
                    tracing::warn!(
                        "schedule of {} missed its fire at {fire} while goflow was down: catching it up once now{missed}",
                        task.id
                    );
                } else if plan.skipped > 0 {
                    tracing::warn!(
                        "schedule of {} is running behind: firing {fire} now{missed}",
                        task.id
                    );
                }
                self.fire(&catalog, task, fire, schedule.etl_day_of(fire), plan.skipped)
                    .await?;
            }
            if let Some(next) = plan.next {
                let next = next.timestamp_millis();
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        Ok(earliest)
    }

    /// One cron fire: recorded once per (schedule, fire time), whoever tries; creates the
    /// task's instance for the fire's etl_day and the same-day instances downstream of it.
    async fn fire(
        &self,
        catalog: &Catalog,
        task: &TaskSpec,
        fire: chrono::DateTime<chrono::Utc>,
        day: EtlDay,
        skipped: u32,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if !store::record_fire(&mut tx, &task.id, fire.timestamp_millis(), day, skipped, now).await? {
            tx.commit().await?;
            return Ok(());
        }
        if !catalog.dag.exists_on(&task.id, day) {
            tracing::info!(
                "schedule of {} fired for {day}, before its start_day: nothing to run",
                task.id
            );
            tx.commit().await?;
            return Ok(());
        }
        let keys = catalog
            .dag
            .downstream_closure(&InstanceKey::new(&task.id, day), (day, day));
        let mut dispatches = vec![];
        let mut created = 0;
        for key in &keys {
            let spec = &catalog.tasks[&key.task].spec;
            let (row, new) =
                store::ensure_instance(&mut tx, key, spec, self.retries_of(spec) + 1, now).await?;
            if !new {
                continue;
            }
            created += 1;
            if !catalog.is_paused(&key.task)
                && self.dependencies_met(&mut tx, &catalog.dag, key).await?
                && let Some(t) =
                    store::queue_instance(&mut tx, row.id, InstanceState::Waiting, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(&row, t));
            }
        }
        tx.commit().await?;
        tracing::info!(
            "schedule of {} fired at {fire} for {day}: {created} instances created",
            task.id
        );
        self.push(dispatches).await;
        self.changed();
        Ok(())
    }

    /// Pushes again the dispatches of instances queued for longer than `after`: one taken from
    /// Redis by an agent that died before claiming it is otherwise lost. The push is idempotent
    /// and the claim a compare-and-set, so a dispatch that was only waiting costs nothing.
    pub async fn redispatch_loop(
        self: Arc<Self>,
        after: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(after / 3) => {}
            }
            let stale = async {
                let mut conn = self.store.reader().acquire().await?;
                store::queued_before(&mut conn, now_ms() - after.as_millis() as i64).await
            };
            match stale.await {
                Ok(rows) if !rows.is_empty() => {
                    tracing::debug!("{} queued instances dispatched again", rows.len());
                    let dispatches = rows
                        .iter()
                        .filter(|r| r.dispatch_epoch == self.epoch)
                        .map(|r| self.dispatch_of(r, r.try_number))
                        .collect();
                    self.push(dispatches).await;
                }
                Ok(_) => {}
                Err(e) => tracing::error!("redispatch: {e:#}"),
            }
        }
    }

    /// Declares agents dead after `worker_timeout` of silence and re-dispatches their tries.
    pub async fn reaper_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let period = (self.settings.worker_timeout / 4).max(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(e) = self.reap_dead_agents().await {
                tracing::error!("reaper: {e:#}");
            }
        }
    }

    async fn reap_dead_agents(&self) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let dead =
            store::expire_agents(&mut tx, now - self.settings.worker_timeout.as_millis() as i64).await?;
        let mut dispatches = vec![];
        for agent in &dead {
            tracing::warn!(
                "agent {agent} missed its heartbeats for {:?}: declared dead",
                self.settings.worker_timeout
            );
            for attempt in store::running_attempts_of_agent(&mut tx, agent).await? {
                let why = format!("agent {agent} stopped heartbeating");
                if let Some(d) = self.recover_lost_try(&mut tx, &attempt, &why, now).await? {
                    dispatches.push(d);
                }
            }
        }
        tx.commit().await?;
        if !dead.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------------------------

    /// For a waiting instance: what it waits for, and whether it is stuck behind a failed or
    /// killed upstream (directly or through waiting ones). `cache` carries states and verdicts
    /// from one row to the next of a listing, so a day of thousands of waiting instances costs
    /// a query per day, not one per ancestor of each.
    pub async fn wait_reason(
        &self,
        conn: &mut Conn,
        row: &InstanceRow,
        cache: &mut WaitCache,
    ) -> Result<(String, bool)> {
        if row.state() != InstanceState::Waiting {
            return Ok((String::new(), false));
        }
        let catalog = self.catalog();
        let mut reasons = vec![];
        let key = row.key();
        let mut blocked = false;
        for up in catalog.dag.upstream_instances(&key) {
            match cache.state(conn, &up).await? {
                Some(InstanceState::Success) => {}
                Some(s @ (InstanceState::Failed | InstanceState::Killed)) => {
                    blocked = true;
                    reasons.push(format!("{up} ({s})"));
                }
                Some(InstanceState::Waiting) => {
                    if self.blocked_upstream(conn, &catalog, &up, cache).await? {
                        blocked = true;
                        reasons.push(format!("{up} (waiting behind a failed upstream)"));
                    } else {
                        reasons.push(format!("{up} (waiting)"));
                    }
                }
                Some(s) => reasons.push(format!("{up} ({s})")),
                None => reasons.push(format!("{up} (no instance)")),
            }
        }
        let mut text = match (reasons.is_empty(), blocked) {
            (true, _) => String::new(),
            (false, true) => format!("blocked: waits for {}", reasons.join(", ")),
            (false, false) => format!("waits for {}", reasons.join(", ")),
        };
        if catalog.is_paused(&row.task_id) {
            text = if text.is_empty() {
                "task is paused".into()
            } else {
                format!("task is paused; {text}")
            };
        }
        Ok((text, blocked))
    }

    /// Whether a waiting instance is behind a failed or killed one, through waiting ancestors.
    async fn blocked_upstream(
        &self,
        conn: &mut Conn,
        catalog: &Catalog,
        key: &InstanceKey,
        cache: &mut WaitCache,
    ) -> Result<bool> {
        if let Some(known) = cache.blocked.get(key) {
            return Ok(*known);
        }
        // Walk the waiting ancestors once; every one reached shares the answer.
        let mut frontier = vec![key.clone()];
        let mut seen: HashSet<InstanceKey> = HashSet::from([key.clone()]);
        let mut verdict = false;
        'walk: while !frontier.is_empty() {
            let mut next = vec![];
            for k in frontier {
                for up in catalog.dag.upstream_instances(&k) {
                    if !seen.insert(up.clone()) {
                        continue;
                    }
                    if cache.blocked.get(&up) == Some(&true) {
                        verdict = true;
                        break 'walk;
                    }
                    match cache.state(conn, &up).await? {
                        Some(InstanceState::Failed | InstanceState::Killed) => {
                            verdict = true;
                            break 'walk;
                        }
                        Some(InstanceState::Waiting) if !cache.blocked.contains_key(&up) => next.push(up),
                        _ => {}
                    }
                }
            }
            frontier = next;
        }
        // Not blocked: nothing above any of them is. Blocked: only `key` is known to be.
        if verdict {
            cache.blocked.insert(key.clone(), true);
        } else {
            for k in seen {
                cache.blocked.insert(k, false);
            }
        }
        Ok(verdict)
    }
}

// Deleting tasks, run previews and definition diffs (for the web UI and goflowctl), kept in
// their own file.
#[path = "engine_tasks.rs"]
pub mod tasks;

//! Agents: registration, heartbeats and liveness, claiming a dispatch, finishing a try,
//! and log chunks.
//!
//! Liveness lives in memory on the monotonic clock: a heartbeat touches no database, so a long
//! write (a year-long backfill chunk) cannot delay it, and an NTP step cannot make every agent
//! look silent. The reaper measures its own pauses: time the coordinator itself was stalled
//! (a stopped process, a starved runtime) is not counted against any agent. The agents table
//! gets the wall-clock time of the last heartbeat lazily, for listings.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goflow_core::state::{Event, transition};
use goflow_core::template::{self, TryContext};
use goflow_core::{Dispatch, InstanceState, TryOutcome};
use tokio::sync::mpsc;

use super::{Engine, EngineError, Result};
use crate::store::{self, Db, Store, now_ms};

/// A command the coordinator sends down an agent's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    Kill { attempt_id: String },
}

/// Grants that reached their agent too late to start, dispatched again per instance without
/// spending a retry or RetryQueueTimes; more count as lost tries.
const MAX_FREE_UNSTARTED: usize = 10;

/// An agent introducing itself.
#[derive(Debug, Clone, Default)]
pub struct AgentRegistration {
    /// Empty: the coordinator picks one.
    pub agent_id: String,
    pub host: String,
    pub slots: i64,
    pub queues: Vec<String>,
    pub version: String,
    /// The tries the agent runs now; the store's other running tries of this agent are lost
    /// (a restarted agent with the same id does not resurrect them).
    pub running_attempts: Vec<String>,
    /// The agent process (new at every start); empty: unknown.
    pub incarnation: String,
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub agent_id: String,
    pub heartbeat_interval: Duration,
    pub worker_timeout: Duration,
}

/// What an agent's heartbeat says beyond the tries it runs.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatExtras {
    /// Grants the agent left unstarted (their answer came too late to start them safely).
    pub unstarted_attempts: Vec<String>,
    /// (instance, try) of the claims the agent has sent and not had answered yet.
    pub claiming: Vec<(i64, i64)>,
    /// The agent takes no new work and lets its running tries finish.
    pub draining: bool,
}

#[derive(Debug, Clone, Default)]
pub struct HeartbeatAnswer {
    /// Tries the agent must stop: killed, superseded, or not its own.
    pub kill_attempts: Vec<String>,
    /// The coordinator does not know the agent (declared dead, or a new leader): register again.
    pub reregister: bool,
}

/// A granted claim: what to run.
#[derive(Debug, Clone)]
pub struct ClaimedTry {
    pub attempt_id: String,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub task: String,
    pub etl_day: goflow_core::EtlDay,
    /// The dispatch's trace context, for the agent's spans ("" when not traced).
    pub traceparent: String,
}

#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    Granted(ClaimedTry),
    Refused(String),
}

/// How a try ended, as its agent reports it.
#[derive(Debug, Clone)]
pub struct TryReport {
    pub attempt_id: String,
    pub agent_id: String,
    pub epoch: i64,
    pub outcome: TryOutcome,
    pub exit_code: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    Accepted,
    /// The report changed nothing: a killed or superseded try, another epoch or agent.
    Stale(String),
}

struct Seen {
    at: Instant,
    wall_ms: i64,
    /// What its last heartbeat said (recorded in the store when it changes).
    draining: bool,
}

/// Which agents are alive, on the monotonic clock.
pub(super) struct Liveness {
    agents: Mutex<HashMap<String, Seen>>,
    last_sweep: Mutex<Instant>,
    /// Each agent's process as of its last registration here (kept when it is declared dead).
    incarnations: Mutex<HashMap<String, String>>,
}

impl Liveness {
    /// Agents the store lists as alive get a full WorkerTimeOut from now: their heartbeats
    /// before this start were not observed here, so they are not trusted.
    pub(super) async fn load(store: &Store) -> anyhow::Result<Self> {
        let mut conn = store.read().await?;
        let now = Instant::now();
        let agents = store::list_agents(&mut conn)
            .await?
            .into_iter()
            .filter(|a| a.state == "alive")
            .map(|a| {
                (
                    a.id,
                    Seen {
                        at: now,
                        wall_ms: a.last_heartbeat_at,
                        draining: a.draining != 0,
                    },
                )
            })
            .collect();
        Ok(Self {
            agents: Mutex::new(agents),
            last_sweep: Mutex::new(now),
            incarnations: Mutex::default(),
        })
    }

    /// Records the agent's process; true when it is known to be another one than at its last
    /// registration here (it restarted).
    fn restarted(&self, agent: &str, incarnation: &str) -> bool {
        if incarnation.is_empty() {
            return false;
        }
        let mut known = self.incarnations.lock().unwrap();
        match known.insert(agent.to_string(), incarnation.to_string()) {
            Some(before) => before != incarnation,
            None => false,
        }
    }

    fn touch(&self, agent: &str) -> bool {
        match self.agents.lock().unwrap().get_mut(agent) {
            Some(seen) => {
                seen.at = Instant::now();
                seen.wall_ms = now_ms();
                true
            }
            None => false,
        }
    }

    fn insert(&self, agent: &str) {
        self.agents.lock().unwrap().insert(
            agent.to_string(),
            Seen {
                at: Instant::now(),
                wall_ms: now_ms(),
                draining: false,
            },
        );
    }

    /// Notes whether a known agent drains; true if that changed.
    fn set_draining(&self, agent: &str, draining: bool) -> bool {
        match self.agents.lock().unwrap().get_mut(agent) {
            Some(seen) if seen.draining != draining => {
                seen.draining = draining;
                true
            }
            _ => false,
        }
    }

    /// Agents silent for longer than `timeout`, removed from the living. `period` is how often
    /// the reaper means to look: a sweep that comes much later than that means the coordinator
    /// itself was stalled, and that stall is forgiven to every agent.
    fn expire(&self, timeout: Duration, period: Duration) -> Vec<String> {
        let now = Instant::now();
        let stalled = {
            let mut last = self.last_sweep.lock().unwrap();
            let gap = now.duration_since(*last);
            *last = now;
            gap.saturating_sub(period)
        };
        let mut agents = self.agents.lock().unwrap();
        if stalled > period.max(Duration::from_secs(1)) {
            tracing::warn!(
                "the coordinator was stalled for {stalled:?}: that time is not counted against agents"
            );
            for seen in agents.values_mut() {
                seen.at += stalled.min(now.duration_since(seen.at));
            }
        }
        let dead: Vec<String> = agents
            .iter()
            .filter(|(_, seen)| now.duration_since(seen.at) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            agents.remove(id);
        }
        dead
    }

    pub(super) fn wall_times(&self) -> Vec<(String, i64)> {
        self.agents
            .lock()
            .unwrap()
            .iter()
            .map(|(id, seen)| (id.clone(), seen.wall_ms))
            .collect()
    }
}

impl Engine {
    /// How long a granted try may go unlisted by its agent before it counts as lost, in ms.
    /// The agent leaves unstarted a grant that took over half of it to arrive.
    fn lost_try_grace(&self) -> i64 {
        (self.settings.heartbeat_interval * 3)
            .max(Duration::from_secs(10))
            .as_millis() as i64
    }

    pub async fn register_agent(&self, req: AgentRegistration) -> Result<Registered> {
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
        if id.len() > 200 || id.chars().any(|c| c.is_control()) {
            return Err(EngineError::Invalid(format!(
                "agent id {id:?} must be at most 200 printable characters"
            )));
        }
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
        let listed: HashSet<&String> = req.running_attempts.iter().collect();
        let mut dispatches = vec![];
        // A try granted moments ago may be on its way to the agent (its claim's answer, or
        // between the answer and the agent's list of running tries): closing it now would let
        // it start after its next try was dispatched. Left to the heartbeats, which close it
        // past the same grace if the agent never lists it; past it, a grant that arrives is
        // not started (the agent's late-claim limit is half the grace).
        // Unless the agent restarted: a new process has no claim in flight.
        let recent = if self.liveness.restarted(&id, &req.incarnation) {
            i64::MAX
        } else {
            now - self.lost_try_grace()
        };
        for attempt in store::running_attempts_of_agent(&mut tx, &id).await? {
            if !listed.contains(&attempt.id) && attempt.started_at < recent {
                let why = format!("agent {id} registered again without it (restarted)");
                dispatches.extend(self.recover_lost_try(&mut tx, &attempt, &why, now).await?);
            }
        }
        store::upsert_agent(
            &mut tx,
            &store::AgentRow {
                id: id.clone(),
                host,
                slots: req.slots,
                queues: queues.join(","),
                version: req.version,
                registered_at: now,
                last_heartbeat_at: now,
                state: "alive".into(),
                draining: 0,
            },
        )
        .await?;
        tx.commit().await?;
        self.liveness.insert(&id);
        if !dispatches.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        tracing::info!(
            "agent {id} registered ({} slots, queues {})",
            req.slots,
            queues.join(",")
        );
        Ok(Registered {
            agent_id: id,
            heartbeat_interval: self.settings.heartbeat_interval,
            worker_timeout: self.settings.worker_timeout,
        })
    }

    /// Records a heartbeat (in memory) and answers which of the agent's tries must stop. Tries
    /// the store has running on this agent that the agent no longer lists (their finish report
    /// was lost) are closed as lost and dispatched again, so no instance stays `running`
    /// forever; only then is there a write.
    pub async fn heartbeat(&self, agent_id: &str, running_attempts: &[String]) -> Result<HeartbeatAnswer> {
        self.heartbeat_with(agent_id, running_attempts, &HeartbeatExtras::default())
            .await
    }

    /// [`Engine::heartbeat`], and tries granted to the agent that it never started (the
    /// claim's answer came too late, or has not come) are dispatched again without counting
    /// as lost: the try did not run, so it spends neither a retry nor RetryQueueTimes.
    pub async fn heartbeat_with(
        &self,
        agent_id: &str,
        running_attempts: &[String],
        extras: &HeartbeatExtras,
    ) -> Result<HeartbeatAnswer> {
        let known = self.liveness.touch(agent_id);
        let now = now_ms();
        // One query, whatever the number of tries: what the store has running on this agent.
        let mut conn = self.store.read().await?;
        let stored = store::running_attempts_of_agent(&mut conn, agent_id).await?;
        drop(conn);
        let running_here: HashSet<&str> = stored.iter().map(|a| a.id.as_str()).collect();
        // Tries the agent runs that are not running for it in the store (killed, superseded,
        // or another's) must stop.
        let kill_attempts: Vec<String> = running_attempts
            .iter()
            .filter(|id| !running_here.contains(id.as_str()))
            .cloned()
            .collect();
        if !known {
            return Ok(HeartbeatAnswer {
                kill_attempts,
                reregister: true,
            });
        }
        // Rare (an agent stopping): the one heartbeat that says so writes it, for listings.
        if self.liveness.set_draining(agent_id, extras.draining) {
            if extras.draining {
                tracing::info!(
                    "agent {agent_id} is draining: it takes no new work and lets its {} running tries finish",
                    running_attempts.len()
                );
            }
            let mut tx = self.store.begin().await?;
            store::set_agent_draining(&mut tx, agent_id, extras.draining).await?;
            tx.commit().await?;
        }
        self.hand_offs.listed(running_attempts);
        // A try claimed moments ago may not be in the agent's list yet: give it time.
        let grace = self.lost_try_grace();
        let listed: HashSet<&String> = running_attempts.iter().collect();
        let declined: HashSet<&String> = extras.unstarted_attempts.iter().collect();
        let claiming: HashSet<(i64, i64)> = extras.claiming.iter().copied().collect();
        let mut unstarted = vec![];
        let mut lost = vec![];
        for attempt in stored.iter().filter(|a| !listed.contains(&a.id)) {
            let past_grace = attempt.started_at < now - grace;
            if declined.contains(&attempt.id) {
                unstarted.push(attempt);
            } else if past_grace
                && (claiming.contains(&(attempt.instance_id, attempt.try_number))
                    || self.hand_offs.take_unlisted(&attempt.id))
            {
                // The agent still waits for the answer (of its claim, or of the finish that
                // handed this try off), and past the grace it will not start the try when the
                // answer comes (its late-claim limit is half the grace).
                unstarted.push(attempt);
            } else if past_grace {
                lost.push(attempt);
            }
        }
        if !lost.is_empty() || !unstarted.is_empty() {
            let mut tx = self.store.begin().await?;
            let mut dispatches = vec![];
            for attempt in &lost {
                let why = format!("agent {agent_id} no longer runs it; its report was lost");
                dispatches.extend(self.recover_lost_try(&mut tx, attempt, &why, now).await?);
            }
            for attempt in &unstarted {
                dispatches.extend(
                    self.recover_unstarted_try(&mut tx, attempt, agent_id, now)
                        .await?,
                );
            }
            tx.commit().await?;
            self.push(dispatches).await;
            self.changed();
        }
        Ok(HeartbeatAnswer {
            kill_attempts,
            reregister: false,
        })
    }

    /// Declares agents dead after `worker_timeout` of silence (not counting the coordinator's
    /// own stalls) and re-dispatches their tries; writes heartbeat times for listings.
    pub(super) async fn reap_dead_agents(&self, period: Duration) -> Result<()> {
        let dead = self.liveness.expire(self.settings.worker_timeout, period);
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        store::record_heartbeats(&mut tx, &self.liveness.wall_times()).await?;
        let mut dispatches = vec![];
        for agent in &dead {
            if !store::declare_agent_dead(&mut tx, agent).await? {
                continue;
            }
            tracing::warn!(
                "agent {agent} missed its heartbeats for {:?}: declared dead",
                self.settings.worker_timeout
            );
            for attempt in store::running_attempts_of_agent(&mut tx, agent).await? {
                let why = format!("agent {agent} stopped heartbeating");
                dispatches.extend(self.recover_lost_try(&mut tx, &attempt, &why, now).await?);
            }
        }
        tx.commit().await?;
        if !dead.is_empty() {
            self.push(dispatches).await;
            self.changed();
        }
        Ok(())
    }

    /// Closes a try whose agent is gone and queues a new one, unless the instance has been
    /// re-dispatched `retry_queue_times` already.
    pub(super) async fn recover_lost_try(
        &self,
        db: &mut impl Db,
        attempt: &store::AttemptRow,
        why: &str,
        now: i64,
    ) -> Result<Option<Dispatch>> {
        self.close_and_requeue(db, attempt, why, true, now).await
    }

    /// Closes a granted try its agent never started (the claim's answer came too late) and
    /// queues a new one, whatever the instance's lost tries: the command did not run, so this
    /// spends neither a retry nor RetryQueueTimes.
    async fn recover_unstarted_try(
        &self,
        db: &mut impl Db,
        attempt: &store::AttemptRow,
        agent_id: &str,
        now: i64,
    ) -> Result<Option<Dispatch>> {
        let why = format!("not started: the claim's answer reached agent {agent_id} too late");
        // Free of charge only so often: a coordinator always too slow to answer in time must
        // not re-dispatch a task forever; past the bound it counts as a lost try.
        let unstarted_before = store::attempts_of(db, attempt.instance_id)
            .await?
            .iter()
            .filter(|a| a.id != attempt.id && a.state == "lost" && a.message.starts_with("not started:"))
            .count();
        if unstarted_before >= MAX_FREE_UNSTARTED {
            let why = format!("{why}, {MAX_FREE_UNSTARTED} times before");
            return self.recover_lost_try(db, attempt, &why, now).await;
        }
        self.close_and_requeue(db, attempt, &why, false, now).await
    }

    /// Closes `attempt` as lost and, while its instance still runs that try, queues a new one;
    /// `lost`: the try counts against RetryQueueTimes, and past it the instance fails.
    async fn close_and_requeue(
        &self,
        db: &mut impl Db,
        attempt: &store::AttemptRow,
        why: &str,
        lost: bool,
        now: i64,
    ) -> Result<Option<Dispatch>> {
        if store::finish_attempt(db, &attempt.id, "lost", None, why, now).await? {
            let label = crate::metrics::OutcomeLabel {
                outcome: "lost".into(),
            };
            self.metrics.tries_finished.get_or_create(&label).inc();
        }
        let Some(row) = store::instance_by_id(db, attempt.instance_id).await? else {
            return Ok(None);
        };
        if row.state != InstanceState::Running || row.try_number != attempt.try_number {
            return Ok(None);
        }
        let requeue = !lost || row.lost_tries < self.settings.retry_queue_times as i64;
        let to =
            transition(InstanceState::Running, Event::AgentLost { requeue }).expect("running may be lost");
        if to == InstanceState::Queued {
            let message = if lost {
                format!("try {} lost ({why}); dispatched again", attempt.try_number)
            } else {
                format!("try {} {why}; dispatched again", attempt.try_number)
            };
            let try_number =
                store::requeue(db, row.id, row.try_number, lost, self.epoch, now, &message).await?;
            tracing::warn!("{}: {message}", row.key());
            Ok(try_number.map(|t| self.dispatch_of(&row, t)))
        } else {
            let message = format!("lost {} times (agent died): {why}", row.lost_tries + 1);
            store::finish_instance(db, row.id, row.try_number, to, None, &message, None, now).await?;
            self.record_lost_alert(db, &row, to, &message, now).await?;
            Ok(None)
        }
    }

    /// The agent's command stream; it ends when this engine's term does (at once if it has).
    pub fn watch_commands(&self, agent_id: &str) -> mpsc::Receiver<AgentCommand> {
        let (tx, rx) = mpsc::channel(64);
        let mut channels = self.agent_channels.lock().unwrap();
        if !self.term_ended.is_cancelled() {
            channels.insert(agent_id.to_string(), tx);
        }
        rx
    }

    pub(super) fn send_agent_command(&self, agent: &str, command: AgentCommand) {
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
    /// try and epoch, and the command in the answer, with the dispatch's trace context. When
    /// traces are exported, the claim is a span of the dispatch's trace.
    pub async fn claim(&self, dispatch: &Dispatch, agent_id: &str) -> Result<ClaimOutcome> {
        use tracing::Instrument;
        let traceparent = self.traces.take(dispatch.instance_id, dispatch.try_number);
        let span = claim_span(dispatch, agent_id, &traceparent);
        let outcome = self
            .claim_untraced(dispatch, agent_id)
            .instrument(span.clone())
            .await;
        match outcome {
            Ok(ClaimOutcome::Granted(mut claimed)) => {
                span.record("goflow.task", claimed.task.as_str());
                span.record("goflow.etl_day", claimed.etl_day.to_string().as_str());
                span.record("goflow.granted", true);
                claimed.traceparent = traceparent;
                Ok(ClaimOutcome::Granted(claimed))
            }
            Ok(refused) => {
                span.record("goflow.granted", false);
                Ok(refused)
            }
            Err(e) => {
                self.traces
                    .put_back(dispatch.instance_id, dispatch.try_number, traceparent);
                Err(e)
            }
        }
    }

    /// A claim that cannot be granted as a new one: granted again if it is a claim sent again
    /// because its answer was lost (perhaps with the coordinator that granted it), refused
    /// with `why` otherwise. Only on this path, so a normal claim costs no extra query.
    pub(super) async fn refused_unless_repeated(
        &self,
        dispatch: &Dispatch,
        agent_id: &str,
        why: String,
    ) -> Result<ClaimOutcome> {
        Ok(match self.repeated_claim(dispatch, agent_id).await? {
            Some(granted) => ClaimOutcome::Granted(granted),
            None => ClaimOutcome::Refused(why),
        })
    }

    /// The answer to a claim of a try that already runs on this agent (same try, same epoch
    /// as its attempt): nothing changes, the command is sent again.
    async fn repeated_claim(&self, dispatch: &Dispatch, agent_id: &str) -> Result<Option<ClaimedTry>> {
        let mut conn = self.store.read().await?;
        let Some(row) = store::instance_by_id(&mut conn, dispatch.instance_id).await? else {
            return Ok(None);
        };
        if row.state != InstanceState::Running
            || row.try_number != dispatch.try_number
            || row.agent_id.as_deref() != Some(agent_id)
        {
            return Ok(None);
        }
        let attempt_id = store::attempt_id(row.id, row.try_number);
        let Some(attempt) = store::attempt(&mut conn, &attempt_id).await? else {
            return Ok(None);
        };
        if attempt.state != "running" || attempt.agent_id != agent_id || attempt.epoch != dispatch.epoch {
            return Ok(None);
        }
        tracing::info!(
            "{}: try {} claimed again by {agent_id} (its answer was lost)",
            row.key(),
            row.try_number
        );
        let (spec, _) = self.spec_to_run(&mut conn, &self.catalog(), &row).await?;
        self.claimed_try(&row, &spec, row.try_number, attempt_id)
            .map(Some)
    }

    /// What a granted claim answers: the command rendered for this try, its environment.
    pub(super) fn claimed_try(
        &self,
        row: &store::InstanceRow,
        spec: &goflow_core::TaskSpec,
        try_number: i64,
        attempt_id: String,
    ) -> Result<ClaimedTry> {
        let key = row.key();
        let ctx = TryContext {
            task_id: &key.task,
            period: key.period,
            try_number: try_number as u32,
            attempt_id: &attempt_id,
        };
        // Checked at apply time, so only a hand-edited database fails here.
        let command = template::render(&spec.command, &ctx)
            .map_err(|e| EngineError::Invalid(format!("task {}: command: {e}", key.task)))?;
        let env = ctx.env().into_iter().collect();
        Ok(ClaimedTry {
            attempt_id,
            command,
            env,
            timeout: spec.timeout.or(self.settings.default_timeout),
            etl_day: key.etl_day(),
            task: key.task,
            traceparent: String::new(),
        })
    }

    /// Appends at the end of the stored log (StreamLogs: agents that send no offsets), on the
    /// log connection, not the scheduling writer's.
    pub async fn append_log(&self, attempt_id: &str, data: &[u8]) -> Result<i64> {
        let mut tx = self.store.begin_logs().await?;
        let stored = store::append_log(&mut tx, attempt_id, data, self.settings.max_log_bytes)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("unknown try {attempt_id:?}")))?;
        tx.commit().await?;
        self.metrics.log_bytes.inc_by(data.len() as u64);
        self.log_appended();
        Ok(stored)
    }

    /// A try started: counted, and its dispatch latency (queued -> claimed) observed; for a
    /// first try of a task with upstreams, also as release -> start (the release queued it).
    pub(super) fn observe_claim(
        &self,
        row: &store::InstanceRow,
        try_number: i64,
        spec: &goflow_core::TaskSpec,
        now: i64,
    ) {
        use crate::metrics::QueueLabel;
        let label = QueueLabel {
            queue: row.queue.clone(),
        };
        self.metrics.tries_started.get_or_create(&label).inc();
        let Some(queued_at) = row.queued_at else { return };
        let seconds = (now - queued_at).max(0) as f64 / 1000.0;
        self.metrics
            .dispatch_latency
            .get_or_create(&label)
            .observe(seconds);
        if try_number == 1 && !spec.depends_on.is_empty() {
            self.metrics
                .release_to_start
                .get_or_create(&label)
                .observe(seconds);
        }
    }
}

impl Liveness {
    /// Every agent is gone (standalone's restart: its one agent died with the process).
    pub(super) fn forget_all(&self) {
        self.agents.lock().unwrap().clear();
    }
}

/// The span of a claim, a child of its dispatch's trace; what the claim decides is recorded on
/// it (task, etl_day, granted, and handoff for a try handed off with a finish).
pub(super) fn claim_span(dispatch: &Dispatch, agent_id: &str, traceparent: &str) -> tracing::Span {
    let span = goflow_telemetry::span(|| {
        tracing::info_span!(
            "claim",
            otel.kind = "consumer",
            goflow.instance_id = dispatch.instance_id,
            goflow.try_number = dispatch.try_number,
            goflow.agent = agent_id,
            goflow.task = tracing::field::Empty,
            goflow.etl_day = tracing::field::Empty,
            goflow.granted = tracing::field::Empty,
            goflow.handoff = tracing::field::Empty,
        )
    });
    goflow_telemetry::set_parent(&span, traceparent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness_seen_ago(ago: Duration, last_sweep_ago: Duration) -> Liveness {
        let now = Instant::now();
        Liveness {
            agents: Mutex::new(HashMap::from([(
                "a1".to_string(),
                Seen {
                    at: now - ago,
                    wall_ms: 0,
                    draining: false,
                },
            )])),
            last_sweep: Mutex::new(now - last_sweep_ago),
            incarnations: Mutex::default(),
        }
    }

    #[test]
    fn an_agent_silent_past_the_timeout_is_expired_once() {
        let period = Duration::from_secs(1);
        let liveness = liveness_seen_ago(Duration::from_secs(30), period);
        assert_eq!(liveness.expire(Duration::from_secs(20), period), ["a1"]);
        assert!(liveness.expire(Duration::from_secs(20), period).is_empty());
        assert!(!liveness.touch("a1"), "an expired agent must register again");
    }

    #[test]
    fn a_heard_agent_stays_alive() {
        let period = Duration::from_secs(1);
        let liveness = liveness_seen_ago(Duration::from_secs(30), period);
        assert!(liveness.touch("a1"));
        assert!(liveness.expire(Duration::from_secs(20), period).is_empty());
    }

    #[test]
    fn the_coordinators_own_stall_is_not_counted_against_agents() {
        // The reaper last looked 60 s ago (the coordinator was stopped); the agent's last
        // heartbeat was just before that. Its silence is the coordinator's, not its own.
        let period = Duration::from_secs(1);
        let liveness = liveness_seen_ago(Duration::from_secs(61), Duration::from_secs(60));
        assert!(liveness.expire(Duration::from_secs(20), period).is_empty());
        // Silent on its own account afterwards, it is expired.
        let liveness = liveness_seen_ago(Duration::from_secs(61), period);
        assert_eq!(liveness.expire(Duration::from_secs(20), period), ["a1"]);
    }
}

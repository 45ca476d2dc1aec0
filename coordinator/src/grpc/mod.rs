//! The gRPC edge: thin adapters from goflow.v1 to the engine. Requests are validated here
//! (dates, ids) into domain values, so no raw wire value travels further; engine errors map
//! onto status codes in one table. Every ControlService and AuthService call is authorized
//! first (`Api::authorize`, the role each needs written at the call).
//!
//! - `control`: ControlService (goflowctl, the web UI, other languages);
//! - `agents`: AgentService (agents, each acting as its credential's agent: `agent_identity`);
//! - `auth`: AuthService (login, tokens);
//! - `logs`: LogService (agents' output, stored by any coordinator).

mod agents;
mod auth;
mod backfills;
mod calendars;
mod control;
mod coordinators;
mod dependency_tree;
mod eta;
mod explain;
mod logs;
mod tail_logs;
mod timings;
mod versions;
mod watch;

pub use logs::LogApi;

use std::pin::Pin;
use std::sync::Arc;

use goflow_core::{EtlDay, InstanceKey, Period, Role};
use goflow_proto as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Auth;
use crate::engine::{Caller, Engine, EngineError, WaitCache};
use crate::store::{self, InstanceRow};

type RpcResult<T> = Result<Response<T>, Status>;
type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Default and maximum rows of one `ListInstances` answer.
const DEFAULT_LIST_LIMIT: i64 = 1000;
const MAX_LIST_LIMIT: i64 = 100_000;
/// Most ids one `ListInstances` may name.
const MAX_IDS: usize = 10_000;
/// Most days one `ListInstanceStates` may span: a year.
const MAX_STATE_DAYS: i64 = 366;
/// Bytes of log per streamed chunk.
const LOG_CHUNK_BYTES: i64 = 256 * 1024;

/// The longest message a refusal carries back (`grpc-message`): errors quote what the client
/// sent, and a megabyte id must not come back whole.
const MAX_STATUS_MESSAGE: usize = 2000;

/// `message`, cut to `MAX_STATUS_MESSAGE` characters, saying how long it was.
fn cut(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let end = (0..=MAX_STATUS_MESSAGE)
        .rev()
        .find(|&i| message.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… (cut; {} bytes in all)", &message[..end], message.len())
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => Status::invalid_argument(cut(m)),
            EngineError::NotFound(m) => Status::not_found(cut(m)),
            EngineError::Conflict(m) => Status::failed_precondition(cut(m)),
            // This coordinator was deposed mid-call: the client tries another.
            EngineError::Internal(e) if e.downcast_ref::<crate::store::Fenced>().is_some() => {
                tracing::warn!("{e:#}");
                Status::unavailable("this coordinator no longer leads; try again (another one takes over)")
            }
            EngineError::Internal(e) => {
                // Never leak SQL or paths to clients; the log has the detail.
                tracing::error!("internal error: {e:#}");
                Status::internal("internal error (see the coordinator's log)")
            }
        }
    }
}

fn internal(e: anyhow::Error) -> Status {
    EngineError::Internal(e).into()
}

/// The one place every RPC passes: who is calling. Users, roles and tokens will be checked
/// here (ROADMAP: users and permissions); today every caller on the listening address may act.
/// The caller as the client describes itself (the operations log's "client"), and, with
/// authentication off, the actor it claims.
fn claimed_caller<T>(request: &Request<T>) -> Caller {
    let header = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let direct = request.remote_addr().map(|a| a.to_string());
    // Passed on by another coordinator: the address it was called from.
    let peer = match header(crate::routing::FORWARDED_FOR) {
        Some(original) => format!(
            "{original} via {}",
            direct.unwrap_or_else(|| "a coordinator".into())
        ),
        None => direct.unwrap_or_else(|| "local".into()),
    };
    Caller {
        actor: header("x-goflow-actor").unwrap_or_else(|| "unknown".into()),
        client: format!(
            "{} from {peer}",
            header("x-goflow-client").unwrap_or_else(|| "grpc".into())
        ),
    }
}

/// The client's address: as another coordinator passed it on (`routing` keeps that header
/// only when proven), else the connection's peer.
fn client_address<T>(request: &Request<T>) -> crate::auth::Source {
    request
        .metadata()
        .get(crate::routing::FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
        .or_else(|| request.remote_addr())
        .map(|address| address.ip())
}

/// `1 instance`, `2 instances`.
fn instances(n: usize) -> String {
    goflow_core::plural(n, "instance")
}

/// A period key of any length (`yyyymmdd`, `yyyymmddHH`, `yyyymm`); the engine checks it
/// against the task's period.
fn parse_period(field: &str, value: &str) -> Result<Period, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is required (yyyymmdd, yyyymmddHH for an hourly task, yyyymm for a monthly one)"
        )));
    }
    Period::parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn parse_day(field: &str, value: &str) -> Result<EtlDay, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is required (yyyymmdd or yyyy-mm-dd)"
        )));
    }
    EtlDay::parse(value).map_err(|e| Status::invalid_argument(cut(format!("{field}: {e}"))))
}

/// One period, or a range: exactly one of `etl_day` and (`from_day`, `to_day`).
fn periods_of(etl_day: &str, from_day: &str, to_day: &str) -> Result<(Period, Period), Status> {
    match (etl_day.is_empty(), from_day.is_empty(), to_day.is_empty()) {
        (false, true, true) => {
            let period = parse_period("etl_day", etl_day)?;
            Ok((period, period))
        }
        (true, false, false) => Ok((
            parse_period("from_day", from_day)?,
            parse_period("to_day", to_day)?,
        )),
        _ => Err(Status::invalid_argument(
            "give either etl_day, or both from_day and to_day",
        )),
    }
}

fn require_task_field(task: &str) -> Result<(), Status> {
    if task.is_empty() {
        return Err(Status::invalid_argument("task is required"));
    }
    // No id is longer: refused without echoing it.
    if task.len() > 128 {
        return Err(Status::invalid_argument(format!(
            "task id of {} bytes: ids are at most 128",
            task.len()
        )));
    }
    Ok(())
}

fn instance_key(task: &str, etl_day: &str) -> Result<InstanceKey, Status> {
    require_task_field(task)?;
    Ok(InstanceKey::new(task, parse_period("etl_day", etl_day)?))
}

fn instance_ref(row: &InstanceRow) -> pb::InstanceRef {
    pb::InstanceRef {
        id: row.id,
        task: row.task_id.clone(),
        etl_day: row.etl_day.compact(),
        period: row.period.key(),
        run_version: row.run_version.unwrap_or(0),
    }
}

/// `retries_in_force`: the task's retries, or the coordinator's default when it names none.
fn task_to_pb(task: &store::StoredTask, next_fire_at: i64, retries_in_force: i32) -> pb::Task {
    let s = &task.spec;
    pb::Task {
        id: s.id.clone(),
        command: s.command.clone(),
        schedule: s.schedule.clone().unwrap_or_default(),
        timezone: s.timezone.clone(),
        day_offset: s.day_offset,
        retries: s.retries.map_or(-1, |r| r as i32),
        retry_delay_ms: s.retry_delay.map_or(0, |d| d.as_millis() as i64),
        timeout_ms: s.timeout.map_or(0, |d| d.as_millis() as i64),
        priority: s.priority,
        queue: s.queue.clone(),
        start_day: s.start_day.map(|d| d.compact()).unwrap_or_default(),
        description: s.description.clone(),
        expected_duration_ms: s.expected_duration.map_or(0, |d| d.as_millis() as i64),
        deadline: s.deadline.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        retries_in_force,
        catchup: s.catchup.to_string(),
        pool: s.pool.clone().unwrap_or_default(),
        max_active: s.max_active.map_or(0, |n| n.min(i32::MAX as u32) as i32),
        depends_on: s
            .depends_on
            .iter()
            .map(|d| pb::TaskDependency {
                task: d.task.clone(),
                day_offset: d.day_offset,
                calendar: d.calendar.clone().unwrap_or_default(),
            })
            .collect(),
        paused: task.paused,
        created_at: task.created_at,
        updated_at: task.updated_at,
        next_fire_at,
        period: s.period.as_str().to_string(),
        calendar: s.calendar.clone().unwrap_or_default(),
        dag: task.dag.clone().unwrap_or_default(),
        version: task.version,
    }
}

/// `now`: the schedule clock's time (a test may move it).
fn next_fire_of(task: &store::StoredTask, now: chrono::DateTime<chrono::Utc>) -> i64 {
    let Some(expr) = &task.spec.schedule else {
        return 0;
    };
    goflow_core::Schedule::parse(expr, &task.spec.timezone, task.spec.day_offset)
        .ok()
        .and_then(|s| s.next_fire_after(now))
        .map_or(0, |t| t.timestamp_millis())
}

/// The bearer token of `authorization: Bearer ...`, if any.
fn bearer<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

#[derive(Clone)]
pub struct Api {
    engine: Arc<Engine>,
    auth: Arc<Auth>,
}

impl Api {
    pub fn new(engine: Arc<Engine>, auth: Arc<Auth>) -> Self {
        Self { engine, auth }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Who agents' calls come from.
    pub fn agent_identities(&self) -> &crate::agent_identity::AgentIdentities {
        self.auth.agents()
    }

    /// Who calls, if they may do what needs `role`: with authentication on, the principal of
    /// their token (never a name the client sends); with it off, whoever they say they are.
    async fn authorize<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, Status> {
        let claimed = claimed_caller(request);
        Ok(
            match self.auth.authorize(bearer(request).as_deref(), role).await? {
                Some(principal) => Caller {
                    actor: principal.name,
                    client: claimed.client,
                },
                None => claimed,
            },
        )
    }

    async fn instance_to_pb(
        &self,
        conn: &mut store::Reader,
        row: &InstanceRow,
        cache: &mut WaitCache,
    ) -> Result<pb::Instance, Status> {
        let (wait_reason, blocked) = self.engine.wait_reason(conn, row, cache).await?;
        Ok(pb::Instance {
            id: row.id,
            task: row.task_id.clone(),
            etl_day: row.etl_day.compact(),
            period: row.period.key(),
            state: row.state.as_str().to_string(),
            try_number: row.try_number as i32,
            max_tries: row.max_tries as i32,
            agent: row.agent_id.clone().unwrap_or_default(),
            created_at: row.created_at,
            queued_at: row.queued_at.unwrap_or(0),
            started_at: row.started_at.unwrap_or(0),
            finished_at: row.finished_at.unwrap_or(0),
            has_exit_code: row.exit_code.is_some(),
            exit_code: row.exit_code.unwrap_or(0) as i32,
            forced: row.forced,
            wait_reason,
            blocked,
            queue: row.queue.clone(),
            priority: row.priority as i32,
            next_try_at: row.next_try_at.unwrap_or(0),
            message: row.message.clone(),
            marked_by: if row.forced {
                row.marked_by.clone().unwrap_or_default()
            } else {
                String::new()
            },
            definition_version: row.definition_version.unwrap_or(0),
            run_version: row.run_version.unwrap_or(0),
            timings: None, // timings::attach, with one read of the tries for a whole list
            backfill_id: row.backfill_id.unwrap_or(0),
        })
    }

    /// A task as the API shows it: with its next fire and the retries in force.
    fn task_pb(&self, task: &store::StoredTask) -> pb::Task {
        let retries = self.engine.retries_of(&task.spec).min(i32::MAX as i64) as i32;
        let now = (self.engine.settings.schedule_clock.now()).unwrap_or_else(|_| chrono::Utc::now());
        task_to_pb(task, next_fire_of(task, now), retries)
    }

    async fn read(&self) -> Result<store::Reader, Status> {
        self.engine.store().read().await.map_err(internal)
    }

    async fn find_instance(
        &self,
        conn: &mut store::Reader,
        id: i64,
        task: &str,
        etl_day: &str,
    ) -> Result<InstanceRow, Status> {
        let row = if id > 0 {
            store::instance_by_id(conn, id).await.map_err(internal)?
        } else {
            let key = instance_key(task, etl_day)?;
            store::instance_by_key(conn, &key).await.map_err(internal)?
        };
        row.ok_or_else(|| {
            if id > 0 {
                Status::not_found(format!("no instance with id {id}"))
            } else {
                Status::not_found(format!("no instance {task}@{}", etl_day.replace('-', "")))
            }
        })
    }
}

/// A stream served by an engine whose term ended: the client reconnects (and resumes where
/// it was).
pub(super) fn term_over() -> Status {
    Status::unavailable("the coordinator serving this stream stepped down; reconnect to resume")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe: a huge id came back whole in `grpc-message`.
    #[test]
    fn refusals_cut_what_they_echo() {
        let huge = "x".repeat(1 << 20);
        let status: Status = EngineError::NotFound(format!("unknown task {huge:?}")).into();
        assert!(
            status.message().len() < MAX_STATUS_MESSAGE + 100,
            "{}",
            status.message().len()
        );
        assert!(
            status.message().ends_with("… (cut; 1048591 bytes in all)"),
            "{}",
            &status.message()[1990..]
        );
        let short: Status = EngineError::Invalid("day_offset 9 is out of range".into()).into();
        assert_eq!(short.message(), "day_offset 9 is out of range");
        // Cut on a character boundary.
        assert!(cut("é".repeat(MAX_STATUS_MESSAGE)).starts_with(&"é".repeat(MAX_STATUS_MESSAGE / 2)));
        let long_id = require_task_field(&huge).unwrap_err();
        assert_eq!(long_id.message(), "task id of 1048576 bytes: ids are at most 128");
    }
}

//! LogService: agents' output, stored by whichever coordinator they reach, leader or not
//! (DESIGN.md: append-only rows that no transition reads may be written by any coordinator,
//! under unique keys). It writes on the store's log connection, never through the scheduling
//! writer, and needs no engine: a failover does not interrupt it. Each call acts as the agent
//! its credential names (`agent_identity`), and only on that agent's tries.

use std::sync::{Arc, RwLock};

use goflow_proto as pb;
use pb::log_service_server::LogService;
use tonic::{Request, Response, Status};

use super::RpcResult;
use crate::agent_identity::{AgentCaller, AgentIdentities};
use crate::engine::Engine;
use crate::routing::Route;
use crate::store::{self, Appended, Store};

/// Most bytes one `AppendLog` may carry (agents send at most 256 KiB).
const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// Who to tell that output was stored, so `TailLogs --follow` on the leader reads on at once.
#[derive(Clone)]
enum Leader {
    /// The engine serving this log service (a leader's own route).
    Engine(Arc<Engine>),
    /// This coordinator's route: its engine while it leads.
    Route(Arc<RwLock<Route>>),
}

#[derive(Clone)]
pub struct LogApi {
    store: Store,
    /// Counts the bytes stored (`goflow_log_bytes_ingested_total`), on every coordinator.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Bytes of log kept per try (`Scheduler.MaxLogBytes`).
    cap: i64,
    leader: Leader,
    agents: AgentIdentities,
}

impl LogApi {
    /// Served by `engine`'s coordinator while it leads.
    pub fn for_engine(engine: Arc<Engine>, agents: AgentIdentities) -> Self {
        Self {
            agents,
            store: engine.store().clone(),
            metrics: Some(engine.metrics().clone()),
            cap: engine.max_log_bytes(),
            leader: Leader::Engine(engine),
        }
    }

    /// Served by a coordinator whether it leads or not; `route` is its router's.
    pub fn for_node(
        store: Store,
        cap: i64,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        route: Arc<RwLock<Route>>,
    ) -> Self {
        Self {
            agents: AgentIdentities::new(store.clone()),
            store,
            metrics,
            cap,
            leader: Leader::Route(route),
        }
    }

    fn notify(&self, bytes: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.log_bytes.inc_by(bytes);
        }
        match &self.leader {
            Leader::Engine(engine) => engine.log_appended(),
            Leader::Route(route) => {
                if let Route::Local { api, .. } = &*route.read().unwrap() {
                    api.engine.log_appended();
                }
            }
        }
    }
}

#[tonic::async_trait]
impl LogService for LogApi {
    async fn append_log(&self, request: Request<pb::AppendLogRequest>) -> RpcResult<pb::AppendLogResponse> {
        let caller = self.agents.identify(&request).await?;
        let req = request.into_inner();
        let agent_id = match caller.acting_as(&req.agent_id) {
            Ok(id) => id,
            Err(named) => {
                let why = format!(
                    "this credential belongs to {}, not to agent {named:?}",
                    caller.actor(&named)
                );
                return Err(self
                    .agents
                    .refuse(&caller, &named, "AppendLog", &named, why)
                    .await);
            }
        };
        if req.attempt_id.is_empty() || agent_id.is_empty() {
            return Err(Status::invalid_argument("attempt_id and agent_id are required"));
        }
        if req.offset < 0 {
            return Err(Status::invalid_argument("offset must not be negative"));
        }
        if req.data.len() > MAX_APPEND_BYTES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_APPEND_BYTES} bytes per AppendLog"
            )));
        }
        let appended = async {
            let mut tx = self.store.begin_logs().await?;
            let appended = store::append_log_at(
                &mut tx,
                &req.attempt_id,
                Some(&agent_id),
                req.offset,
                &req.data,
                self.cap,
            )
            .await?;
            tx.commit().await?;
            anyhow::Ok(appended)
        };
        // A failure (two coordinators appending at once, a database blip) is the agent's to
        // retry: it resends from its acknowledged offset.
        let appended = appended.await.map_err(|e| {
            tracing::warn!(attempt_id = %req.attempt_id, "cannot store log chunk: {e:#}");
            Status::unavailable("cannot store the log chunk now; send it again")
        })?;
        match appended {
            Appended::Acked(acked) => {
                let new = (acked - req.offset).clamp(0, req.data.len() as i64);
                if new > 0 {
                    self.notify(new as u64);
                }
                Ok(Response::new(pb::AppendLogResponse { acked_offset: acked }))
            }
            Appended::NoSuchTry => Err(Status::not_found(format!("unknown try {:?}", req.attempt_id))),
            Appended::NotYours => {
                let why = format!("try {} does not run on agent {agent_id}", req.attempt_id);
                Err(match &caller {
                    AgentCaller::Agent(_) => {
                        self.agents
                            .refuse(&caller, &agent_id, "AppendLog", &req.attempt_id, why)
                            .await
                    }
                    // The shared secret: a late chunk of a try given to another agent since.
                    AgentCaller::Trusted => Status::permission_denied(why),
                })
            }
        }
    }
}

//! ControlService: reads need the viewer role, runs and repairs the operator role, task
//! definitions the editor role.

use goflow_core::{InstanceState, PeriodKind, Role};
use goflow_proto as pb;
use pb::control_service_server::ControlService;
use tonic::{Request, Response, Status};

use super::coordinators::superseded_hidden;
use super::dependency_tree::dependency_tree;
use super::tail_logs::stream_log;
use super::*;
use crate::engine::{ApplyOptions, Engine, RunPlan, WaitCache};
use crate::store::{self, InstanceFilter};

#[tonic::async_trait]
impl ControlService for Api {
    async fn apply_tasks(
        &self,
        request: Request<pb::ApplyTasksRequest>,
    ) -> RpcResult<pb::ApplyTasksResponse> {
        let caller = self.authorize(&request, Role::Editor).await?;
        let req = request.into_inner();
        // Read before applying: afterwards the stored definitions are the new ones.
        let changes = self
            .engine
            .definition_changes(&req.document, &req.source_name)
            .await;
        let options = ApplyOptions {
            dry_run: req.dry_run,
            prune: req.prune,
        };
        let outcome = self
            .engine
            .apply_with(&req.document, &req.source_name, options, &caller)
            .await?;
        Ok(Response::new(pb::ApplyTasksResponse {
            created: outcome.created,
            updated: outcome.updated,
            unchanged: outcome.unchanged,
            calendars: outcome.calendars,
            deleted: outcome.deleted,
            versions: outcome.versions.into_iter().collect(),
            dag: outcome.dag.unwrap_or_default(),
            pools: outcome.pools,
            changes: changes
                .into_iter()
                .map(|c| pb::FieldChange {
                    task: c.task,
                    field: c.field,
                    old_value: c.old_value,
                    new_value: c.new_value,
                })
                .collect(),
        }))
    }

    async fn list_tasks(&self, request: Request<pb::ListTasksRequest>) -> RpcResult<pb::ListTasksResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let catalog = self.engine.catalog();
        let tasks = catalog
            .dag
            .topological_order()
            .into_iter()
            .map(|id| {
                let t = &catalog.tasks[id];
                self.task_pb(t)
            })
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> RpcResult<pb::Task> {
        self.authorize(&request, Role::Viewer).await?;
        let task = self.engine.require_task(&request.get_ref().id)?;
        Ok(Response::new(self.task_pb(&task)))
    }

    async fn run(&self, request: Request<pb::RunRequest>) -> RpcResult<pb::RunResponse> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let req = request.into_inner();
        require_task_field(&req.task)?;
        let (from, to) = periods_of(&req.etl_day, &req.from_day, &req.to_day)?;
        let plan = RunPlan {
            as_then: req.as_then,
            task: req.task,
            from,
            to,
            down: req.down,
            up: req.up,
            force: req.force,
        };
        if req.dry_run {
            return Ok(Response::new(run_preview(&self.engine, &plan).await?));
        }
        // A range is a backfill (issue 19), one to watch, pause and cancel.
        let (rows, backfill_id) = if req.from_day.is_empty() {
            (self.engine.run(&plan, &caller).await?, 0)
        } else {
            let start = crate::engine::BackfillStart::default();
            let (id, rows) = self.engine.start_backfill(&plan, start, &caller).await?;
            (rows, id)
        };
        let queued = rows.len();
        let mut message = format!("{} to run", instances(queued));
        if backfill_id > 0 {
            message.push_str(&format!(" (backfill {backfill_id})"));
        }
        if plan.as_then {
            message.push_str(&super::versions::as_then_note(&rows));
        }
        Ok(Response::new(pb::RunResponse {
            instances: rows.iter().map(instance_ref).collect(),
            message,
            backfill_id,
        }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> RpcResult<pb::ListInstancesResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        if req.ids.len() > MAX_IDS {
            return Err(Status::invalid_argument(format!(
                "ids: at most {MAX_IDS} ids in one request, not {}",
                req.ids.len()
            )));
        }
        let whole = !req.etl_day.is_empty() || !req.ids.is_empty();
        let mut filter = InstanceFilter {
            period: if req.etl_day.is_empty() {
                None
            } else {
                Some(parse_period("etl_day", &req.etl_day)?)
            },
            task: (!req.task.is_empty()).then_some(req.task),
            ids: req.ids,
            // One day (or a list of ids) is shown whole; recent instances of every day are capped.
            limit: match (req.limit > 0, whole) {
                (true, _) => (req.limit as i64).min(MAX_LIST_LIMIT),
                (false, false) => DEFAULT_LIST_LIMIT,
                (false, true) => MAX_LIST_LIMIT,
            },
            ..Default::default()
        };
        for state in &req.states {
            filter.states.push(
                InstanceState::parse(state).ok_or_else(|| {
                    Status::invalid_argument(cut(format!("states: unknown state {state:?}")))
                })?,
            );
        }
        let mut conn = self.read().await?;
        let rows = store::list_instances(&mut conn, &filter)
            .await
            .map_err(internal)?;
        let total = if req.skip_total {
            0
        } else if (rows.len() as i64) < filter.limit {
            rows.len() as i64
        } else {
            store::count_instances(&mut conn, &filter)
                .await
                .map_err(internal)?
        };
        let mut instances = Vec::with_capacity(rows.len());
        let mut cache = WaitCache::knowing(&rows);
        for row in &rows {
            instances.push(self.instance_to_pb(&mut conn, row, &mut cache).await?);
        }
        super::timings::attach(&mut conn, &rows, &mut instances).await?;
        Ok(Response::new(pb::ListInstancesResponse { instances, total }))
    }

    async fn list_instance_states(
        &self,
        request: Request<pb::ListInstanceStatesRequest>,
    ) -> RpcResult<pb::ListInstanceStatesResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let from = parse_day("from_day", &req.from_day)?;
        let to = parse_day("to_day", &req.to_day)?;
        let span = from.days_until(to);
        if !(0..MAX_STATE_DAYS).contains(&span) {
            return Err(Status::invalid_argument(format!(
                "to_day must be from from_day to {} days after it, not {span}",
                MAX_STATE_DAYS - 1
            )));
        }
        let mut conn = self.read().await?;
        let states = store::instance_states(&mut conn, from, to)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListInstanceStatesResponse {
            states: states
                .into_iter()
                .map(|s| pb::InstanceStates {
                    task: s.task_id,
                    state: s.state.as_str().to_string(),
                    forced: s.forced,
                    offsets: s
                        .periods
                        .iter()
                        .filter(|p| p.kind() == PeriodKind::Day)
                        .map(|d| from.days_until(d.etl_day()) as i32)
                        .collect(),
                    periods: s
                        .periods
                        .iter()
                        .filter(|p| p.kind() != PeriodKind::Day)
                        .map(|p| p.key())
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn get_instance(&self, request: Request<pb::GetInstanceRequest>) -> RpcResult<pb::Instance> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let mut conn = self.read().await?;
        let row = self
            .find_instance(&mut conn, req.id, &req.task, &req.etl_day)
            .await?;
        let mut instance = self
            .instance_to_pb(&mut conn, &row, &mut WaitCache::default())
            .await?;
        super::timings::attach(
            &mut conn,
            std::slice::from_ref(&row),
            std::slice::from_mut(&mut instance),
        )
        .await?;
        Ok(Response::new(instance))
    }

    async fn list_attempts(
        &self,
        request: Request<pb::ListAttemptsRequest>,
    ) -> RpcResult<pb::ListAttemptsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let mut conn = self.read().await?;
        let row = self
            .find_instance(&mut conn, req.instance_id, &req.task, &req.etl_day)
            .await?;
        let attempts = store::attempts_of(&mut conn, row.id).await.map_err(internal)?;
        Ok(Response::new(pb::ListAttemptsResponse {
            attempts: attempts
                .into_iter()
                .map(|a| pb::Attempt {
                    attempt_id: a.id,
                    instance_id: a.instance_id,
                    try_number: a.try_number as i32,
                    state: a.state,
                    agent: a.agent_id,
                    started_at: a.started_at,
                    finished_at: a.finished_at.unwrap_or(0),
                    has_exit_code: a.exit_code.is_some(),
                    exit_code: a.exit_code.unwrap_or(0) as i32,
                    log_bytes: a.log_bytes,
                    message: a.message,
                    command: a.command.unwrap_or_default(),
                    log_object: a.log_object.unwrap_or_default(),
                    log_archived_bytes: a.log_archived_bytes,
                    definition_version: a.definition_version.unwrap_or(0),
                })
                .collect(),
        }))
    }

    type TailLogsStream = ServerStream<pb::LogChunk>;

    async fn tail_logs(&self, request: Request<pb::TailLogsRequest>) -> RpcResult<Self::TailLogsStream> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        if req.try_number < 0 || req.offset < 0 {
            return Err(Status::invalid_argument(
                "try_number and offset must not be negative",
            ));
        }
        let instance = {
            let mut conn = self.read().await?;
            self.find_instance(&mut conn, req.instance_id, &req.task, &req.etl_day)
                .await?
        };
        if req.try_number > instance.try_number as i32 {
            return Err(Status::not_found(format!(
                "{}@{} has no try {} (it has {})",
                instance.task_id, instance.etl_day, req.try_number, instance.try_number
            )));
        }
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(status) = stream_log(engine, instance, req, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_dependencies(
        &self,
        request: Request<pb::GetDependenciesRequest>,
    ) -> RpcResult<pb::GetDependenciesResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let catalog = self.engine.catalog();
        self.engine.require_task(&req.task)?;
        let depth = if req.depth > 0 {
            req.depth as usize
        } else {
            usize::MAX
        };
        let both = req.up == req.down;
        let mut edges = std::collections::BTreeSet::new();
        let upstream =
            (both || req.up).then(|| dependency_tree(&catalog.dag, &req.task, depth, true, &mut edges));
        let downstream =
            (both || req.down).then(|| dependency_tree(&catalog.dag, &req.task, depth, false, &mut edges));
        Ok(Response::new(pb::GetDependenciesResponse {
            upstream,
            downstream,
            edges: edges
                .into_iter()
                .map(|(upstream, downstream, day_offset)| pb::DependencyEdge {
                    upstream,
                    downstream,
                    day_offset,
                })
                .collect(),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> RpcResult<pb::ListAgentsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let mut conn = self.read().await?;
        let agents = store::list_agents(&mut conn).await.map_err(internal)?;
        let running = store::count_running_by_agent(&mut conn).await.map_err(internal)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents
                .into_iter()
                .map(|a| pb::Agent {
                    running: running.get(&a.id).copied().unwrap_or(0) as i32,
                    queues: a.queues.split(',').map(str::to_string).collect(),
                    id: a.id,
                    host: a.host,
                    slots: a.slots as i32,
                    registered_at: a.registered_at,
                    last_heartbeat_at: a.last_heartbeat_at,
                    draining: a.draining != 0 && a.state == "alive",
                    state: a.state,
                    version: a.version,
                })
                .collect(),
        }))
    }

    async fn mark_success(
        &self,
        request: Request<pb::MarkSuccessRequest>,
    ) -> RpcResult<pb::InstancesResponse> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let req = request.into_inner();
        let key = instance_key(&req.task, &req.etl_day)?;
        let rows = self.engine.mark_success(&key, req.down, &caller).await?;
        Ok(Response::new(pb::InstancesResponse {
            message: format!("{} marked success", instances(rows.len())),
            instances: rows.iter().map(instance_ref).collect(),
        }))
    }

    async fn kill(&self, request: Request<pb::KillRequest>) -> RpcResult<pb::InstancesResponse> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let req = request.into_inner();
        require_task_field(&req.task)?;
        let (from, to) = periods_of(&req.etl_day, &req.from_day, &req.to_day)?;
        let plan = RunPlan {
            as_then: false,
            task: req.task,
            from,
            to,
            down: req.down,
            up: false,
            force: false,
        };
        let rows = self.engine.kill(&plan, &caller).await?;
        let message = match rows.as_slice() {
            [one] => format!("{}@{} killed (was {})", one.task_id, one.etl_day, one.state),
            many => format!("{} killed", instances(many.len())),
        };
        Ok(Response::new(pb::InstancesResponse {
            message,
            instances: rows.iter().map(instance_ref).collect(),
        }))
    }

    async fn delete_instance(
        &self,
        request: Request<pb::DeleteInstanceRequest>,
    ) -> RpcResult<pb::InstancesResponse> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let req = request.into_inner();
        let key = instance_key(&req.task, &req.etl_day)?;
        let row = self.engine.delete_instance(&key, &caller).await?;
        Ok(Response::new(pb::InstancesResponse {
            message: format!("{key} deleted with its tries and logs"),
            instances: vec![instance_ref(&row)],
        }))
    }

    async fn set_paused(&self, request: Request<pb::SetPausedRequest>) -> RpcResult<pb::Task> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let req = request.into_inner();
        require_task_field(&req.task)?;
        let task = self.engine.set_paused(&req.task, req.paused, &caller).await?;
        Ok(Response::new(self.task_pb(&task)))
    }

    async fn do_all_job(&self, request: Request<pb::DoAllJobRequest>) -> RpcResult<pb::RunResponse> {
        let caller = self.authorize(&request, Role::Operator).await?;
        let day = parse_day("etl_day", &request.get_ref().etl_day)?;
        let rows = self.engine.do_all_job(day, &caller).await?;
        Ok(Response::new(pb::RunResponse {
            message: format!("{} to run for {day}", instances(rows.len())),
            instances: rows.iter().map(instance_ref).collect(),
            backfill_id: 0,
        }))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> RpcResult<pb::ListOperationsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let limit = if req.limit > 0 { req.limit as i64 } else { 100 };
        let mut conn = self.read().await?;
        let task = (!req.task.is_empty()).then_some(req.task.as_str());
        let rows = store::list_operations(&mut conn, task, limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListOperationsResponse {
            operations: rows
                .into_iter()
                .map(|o| pb::Operation {
                    id: o.id,
                    at: o.at,
                    actor: o.actor,
                    client: o.client,
                    action: o.action,
                    target: o.target,
                    detail: o.detail,
                })
                .collect(),
        }))
    }

    async fn list_coordinators(
        &self,
        request: Request<pb::ListCoordinatorsRequest>,
    ) -> RpcResult<pb::ListCoordinatorsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let mut conn = self.read().await?;
        let leader = store::leader(&mut conn).await.map_err(internal)?;
        let rows = superseded_hidden(
            store::list_coordinators(&mut conn).await.map_err(internal)?,
            store::now_ms(),
        );
        let leads = |id: &str| id == leader.holder && leader.lease_until >= store::now_ms();
        Ok(Response::new(pb::ListCoordinatorsResponse {
            coordinators: rows
                .into_iter()
                .map(|c| pb::Coordinator {
                    leader: leads(&c.id),
                    token: if leads(&c.id) { leader.token } else { 0 },
                    id: c.id,
                    address: c.address,
                    last_seen_at: c.last_seen_at,
                    started_at: c.started_at,
                    version: c.version,
                })
                .collect(),
        }))
    }

    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> RpcResult<pb::GetVersionResponse> {
        self.authorize(&request, Role::Viewer).await?;
        Ok(Response::new(pb::GetVersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.engine.mode().into(),
        }))
    }

    async fn list_calendars(
        &self,
        request: Request<pb::ListCalendarsRequest>,
    ) -> RpcResult<pb::ListCalendarsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        Ok(Response::new(super::calendars::list(&self.engine.catalog())))
    }

    async fn get_calendar(&self, request: Request<pb::GetCalendarRequest>) -> RpcResult<pb::CalendarDetail> {
        self.authorize(&request, Role::Viewer).await?;
        Ok(Response::new(super::calendars::get(
            &self.engine.catalog(),
            request.get_ref(),
        )?))
    }

    async fn list_pools(&self, request: Request<pb::ListPoolsRequest>) -> RpcResult<pb::ListPoolsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let pools = self.engine.list_pools().await?;
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools
                .into_iter()
                .map(|p| pb::Pool {
                    id: p.id,
                    slots: p.slots,
                    used: p.used,
                    waiting: p.waiting,
                    tasks: p.tasks,
                    holders: p
                        .holders
                        .into_iter()
                        .map(|h| pb::PoolHolder {
                            attempt_id: h.attempt_id,
                            task: h.task_id,
                            etl_day: h.etl_day,
                            agent: h.agent_id,
                            started_at: h.started_at,
                        })
                        .collect(),
                    updated_at: p.updated_at,
                })
                .collect(),
        }))
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> RpcResult<pb::DeletePoolResponse> {
        let caller = self.authorize(&request, Role::Editor).await?;
        let id = request.into_inner().id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("a pool id is required"));
        }
        self.engine.delete_pool(&id, &caller).await?;
        Ok(Response::new(pb::DeletePoolResponse {}))
    }

    async fn explain_instance(
        &self,
        request: Request<pb::ExplainInstanceRequest>,
    ) -> RpcResult<pb::ExplainInstanceResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let key = instance_key(&req.task, &req.etl_day)?;
        let answer = self.engine.explain_instance(&key).await?;
        Ok(Response::new(super::explain::response(answer)))
    }

    async fn predict_day(
        &self,
        request: Request<pb::PredictDayRequest>,
    ) -> RpcResult<pb::PredictDayResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let day = parse_day("etl_day", &request.into_inner().etl_day)?;
        Ok(Response::new(super::eta::day_eta_pb(
            self.engine.predict_day(day).await?,
        )))
    }

    // Change stream (issue 21)
    type WatchInstancesStream = super::watch::WatchStream;

    async fn watch_instances(
        &self,
        request: Request<pb::WatchInstancesRequest>,
    ) -> RpcResult<Self::WatchInstancesStream> {
        super::watch::watch_instances(self, request).await
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> RpcResult<pb::ListAlertsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        let limit = if req.limit > 0 {
            (req.limit as i64).min(10_000)
        } else {
            100
        };
        let mut conn = self.read().await?;
        let rows = store::list_alerts(&mut conn, &req.task, limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: rows
                .into_iter()
                .map(|a| pb::Alert {
                    id: a.id,
                    task: a.task_id,
                    etl_day: a.etl_day,
                    kind: a.kind,
                    try_number: a.try_number,
                    channel: a.channel,
                    instance_state: a.instance_state,
                    message: a.message,
                    delivery: a.state,
                    attempts: a.attempts,
                    last_error: a.last_error,
                    created_at: a.created_at,
                    sent_at: a.sent_at.unwrap_or(0),
                    next_attempt_at: a.next_attempt_at,
                })
                .collect(),
        }))
    }

    async fn list_task_versions(
        &self,
        request: Request<pb::ListTaskVersionsRequest>,
    ) -> RpcResult<pb::ListTaskVersionsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let task = request.into_inner().task;
        require_task_field(&task)?;
        let versions = self.engine.task_versions(&task).await?;
        Ok(Response::new(pb::ListTaskVersionsResponse {
            versions: versions.into_iter().map(|v| self.version_pb(v)).collect(),
        }))
    }

    async fn get_task_version(
        &self,
        request: Request<pb::GetTaskVersionRequest>,
    ) -> RpcResult<pb::TaskVersion> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        require_task_field(&req.task)?;
        let version = super::versions::version_field("version", req.version)?;
        let found = self.engine.task_version(&req.task, version).await?;
        Ok(Response::new(self.version_pb(found)))
    }

    async fn diff_task_versions(
        &self,
        request: Request<pb::DiffTaskVersionsRequest>,
    ) -> RpcResult<pb::DiffTaskVersionsResponse> {
        self.authorize(&request, Role::Viewer).await?;
        let req = request.into_inner();
        require_task_field(&req.task)?;
        let from = super::versions::version_field("from_version", req.from_version)?;
        let to = super::versions::version_field("to_version", req.to_version)?;
        if from.is_none() && to.is_some() {
            return Err(Status::invalid_argument("to_version needs a from_version"));
        }
        let (old, new, diff) = self.engine.diff_task_versions(&req.task, from, to).await?;
        Ok(Response::new(super::versions::diff_pb(
            &req.task, &old, &new, diff,
        )))
    }

    async fn delete_tasks(
        &self,
        request: Request<pb::DeleteTasksRequest>,
    ) -> RpcResult<pb::DeleteTasksResponse> {
        let caller = self.authorize(&request, Role::Editor).await?;
        let req = request.into_inner();
        let deleted = self.engine.delete_tasks(&req.ids, req.dry_run, &caller).await?;
        let message = if req.dry_run {
            format!("would delete {}", deleted.join(", "))
        } else {
            format!("deleted {} (their instances stay readable)", deleted.join(", "))
        };
        Ok(Response::new(pb::DeleteTasksResponse { deleted, message }))
    }

    async fn clean_history(
        &self,
        request: Request<pb::CleanHistoryRequest>,
    ) -> RpcResult<pb::CleanHistoryResponse> {
        let caller = self.authorize(&request, Role::Admin).await?;
        let req = request.into_inner();
        let before = parse_day("before", &req.before)?;
        let report = self.engine.clean(before, req.dry_run, &caller).await?;
        Ok(Response::new(pb::CleanHistoryResponse {
            before: before.compact(),
            dry_run: report.dry_run,
            instances: report.instances,
            tries: report.tries,
            log_chunks: report.log_chunks,
            log_bytes: report.log_bytes,
            log_objects: report.log_objects,
            operations: report.operations,
            kept: report.kept,
            message: report.summary(),
            kept_examples: report.kept_examples,
        }))
    }

    // Backfills (issue 19): see `backfills`.
    async fn start_backfill(&self, r: Request<pb::StartBackfillRequest>) -> RpcResult<pb::Backfill> {
        super::backfills::start(self, r).await
    }
    async fn list_backfills(
        &self,
        r: Request<pb::ListBackfillsRequest>,
    ) -> RpcResult<pb::ListBackfillsResponse> {
        super::backfills::list(self, r).await
    }
    async fn get_backfill(&self, r: Request<pb::GetBackfillRequest>) -> RpcResult<pb::Backfill> {
        super::backfills::get(self, r).await
    }
    async fn pause_backfill(&self, r: Request<pb::PauseBackfillRequest>) -> RpcResult<pb::Backfill> {
        super::backfills::pause(self, r).await
    }
    async fn resume_backfill(&self, r: Request<pb::ResumeBackfillRequest>) -> RpcResult<pb::Backfill> {
        super::backfills::resume(self, r).await
    }
    async fn cancel_backfill(
        &self,
        r: Request<pb::CancelBackfillRequest>,
    ) -> RpcResult<pb::CancelBackfillResponse> {
        super::backfills::cancel(self, r).await
    }
}

/// A dry run: the instances a run would cover, id 0 for those not created yet.
async fn run_preview(engine: &Engine, plan: &RunPlan) -> Result<pb::RunResponse, Status> {
    let preview = engine.preview_run(plan).await?;
    let new = preview
        .instances
        .iter()
        .filter(|(_, found)| found.is_none())
        .count();
    let total = preview.instances.len();
    Ok(pb::RunResponse {
        message: format!(
            "would run {} ({new} new, {} existing)",
            instances(total),
            total - new
        ),
        instances: preview
            .instances
            .into_iter()
            .map(|(key, found)| pb::InstanceRef {
                id: found.map_or(0, |(id, _)| id),
                task: key.task.clone(),
                etl_day: key.etl_day().compact(),
                period: key.period.key(),
                run_version: 0,
            })
            .collect(),
        backfill_id: 0,
    })
}

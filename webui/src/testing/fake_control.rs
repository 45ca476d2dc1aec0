//! The fake coordinator's ControlService: canned answers from `Fake`.

use std::pin::Pin;

use goflow_proto::control_service_server::ControlService;
use goflow_proto::*;
use tokio_stream::Stream;
use tonic::{Response, Status};

use super::*;

#[tonic::async_trait]
impl ControlService for Fake {
    async fn list_tasks(&self, _: tonic::Request<ListTasksRequest>) -> Rpc<ListTasksResponse> {
        Ok(Response::new(ListTasksResponse {
            tasks: self.tasks.clone(),
        }))
    }

    async fn list_instances(
        &self,
        request: tonic::Request<ListInstancesRequest>,
    ) -> Rpc<ListInstancesResponse> {
        // As the coordinator answers: newest day first, filtered, limited.
        let r = request.into_inner();
        let mut instances: Vec<Instance> = self
            .instances
            .iter()
            .filter(|i| r.etl_day.is_empty() || i.etl_day == r.etl_day)
            .filter(|i| r.task.is_empty() || i.task == r.task)
            .filter(|i| r.states.is_empty() || r.states.contains(&i.state))
            .cloned()
            .collect();
        instances.sort_by(|a, b| b.etl_day.cmp(&a.etl_day).then(a.id.cmp(&b.id)));
        let total = if r.skip_total { 0 } else { instances.len() as i64 };
        if r.limit > 0 {
            instances.truncate(r.limit as usize);
        }
        Ok(Response::new(ListInstancesResponse { instances, total }))
    }

    async fn list_instance_states(
        &self,
        request: tonic::Request<ListInstanceStatesRequest>,
    ) -> Rpc<ListInstanceStatesResponse> {
        if self.without_instance_states {
            return Err(Status::unimplemented("list_instance_states"));
        }
        let r = request.into_inner();
        let day = |text: &str| {
            goflow_core::EtlDay::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let (from, to) = (day(&r.from_day)?, day(&r.to_day)?);
        let mut groups: std::collections::BTreeMap<(String, String, bool), Vec<i32>> = Default::default();
        for i in &self.instances {
            let at = day(&i.etl_day)?;
            if (from..=to).contains(&at) {
                let key = (i.task.clone(), i.state.clone(), i.forced);
                groups.entry(key).or_default().push(from.days_until(at) as i32);
            }
        }
        let states = groups
            .into_iter()
            .map(|((task, state, forced), offsets)| InstanceStates {
                task,
                state,
                forced,
                offsets,
                periods: vec![],
            })
            .collect();
        Ok(Response::new(ListInstanceStatesResponse { states }))
    }

    async fn get_instance(&self, request: tonic::Request<GetInstanceRequest>) -> Rpc<Instance> {
        let r = request.into_inner();
        Ok(Response::new(self.find(r.id, &r.task, &r.etl_day)?.clone()))
    }

    async fn list_attempts(&self, request: tonic::Request<ListAttemptsRequest>) -> Rpc<ListAttemptsResponse> {
        let r = request.into_inner();
        let id = self.find(r.instance_id, &r.task, &r.etl_day)?.id;
        Ok(Response::new(ListAttemptsResponse {
            attempts: self
                .attempts
                .iter()
                .filter(|a| a.instance_id == id)
                .cloned()
                .collect(),
        }))
    }

    type TailLogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

    async fn tail_logs(&self, request: tonic::Request<TailLogsRequest>) -> Rpc<Self::TailLogsStream> {
        let r = request.into_inner();
        self.tail_offsets.lock().unwrap().push(r.offset);
        let id = self.find(r.instance_id, &r.task, &r.etl_day)?.id;
        let log = self
            .logs
            .get(&(id, r.try_number))
            .ok_or_else(|| Status::not_found("no such try"))?;
        let mut chunks: Vec<Result<LogChunk, Status>> = log[(r.offset as usize).min(log.len())..]
            .chunks(64 * 1024)
            .enumerate()
            .map(|(n, data)| {
                Ok(LogChunk {
                    offset: r.offset + (n * 64 * 1024) as i64,
                    data: data.to_vec(),
                    try_number: r.try_number,
                    eof: false,
                })
            })
            .collect();
        chunks.push(if self.cut_tails {
            Err(Status::unavailable(
                "the coordinator serving this stream stepped down",
            ))
        } else {
            Ok(LogChunk {
                offset: log.len() as i64,
                eof: true,
                try_number: r.try_number,
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn apply_tasks(&self, request: tonic::Request<ApplyTasksRequest>) -> Rpc<ApplyTasksResponse> {
        self.allow(&request, "editor")?;
        let r = request.into_inner();
        self.record(format!("ApplyTasks dry_run={} {}", r.dry_run, r.document))?;
        if r.document.contains("nope") {
            return Err(Status::invalid_argument(format!(
                "{}: task \"x\" depends on unknown task \"nope\"",
                r.source_name
            )));
        }
        Ok(Response::new(ApplyTasksResponse {
            updated: vec!["transform".into()],
            changes: vec![FieldChange {
                task: "transform".into(),
                field: "command".into(),
                old_value: "transform.sh {{etl_day}}".into(),
                new_value: "transform.sh --all".into(),
            }],
            ..Default::default()
        }))
    }
    async fn get_task(&self, request: tonic::Request<GetTaskRequest>) -> Rpc<Task> {
        let id = request.into_inner().id;
        self.tasks
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("unknown task {id:?}")))
    }
    async fn run(&self, request: tonic::Request<RunRequest>) -> Rpc<RunResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        let flags = [
            ("force", r.force),
            ("down", r.down),
            ("up", r.up),
            ("dry_run", r.dry_run),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" ");
        let days = if r.etl_day.is_empty() {
            format!("{}..{}", r.from_day, r.to_day)
        } else {
            r.etl_day.clone()
        };
        self.record(format!("Run {}@{days} {flags}", r.task).trim().to_string())?;
        // A range with its downstream: the task, transform and load on every day, the first
        // day's existing. Else two days per request in a range, one of them existing.
        let instances = if r.etl_day.is_empty() && r.from_day != r.to_day && r.down {
            let (from, to) = (
                goflow_core::EtlDay::parse(&r.from_day).unwrap(),
                goflow_core::EtlDay::parse(&r.to_day).unwrap(),
            );
            let mut all = vec![];
            let mut day = from;
            while day <= to {
                for (n, task) in [r.task.as_str(), "transform", "load"].into_iter().enumerate() {
                    all.push(InstanceRef {
                        id: if day == from { n as i64 + 100 } else { 0 },
                        task: task.to_string(),
                        etl_day: day.compact(),
                        ..Default::default()
                    });
                }
                day = day.offset(1);
            }
            all
        } else if r.etl_day.is_empty() && r.from_day != r.to_day {
            vec![
                InstanceRef {
                    id: 0,
                    task: r.task.clone(),
                    etl_day: r.from_day.clone(),
                    ..Default::default()
                },
                InstanceRef {
                    id: 9,
                    task: r.task.clone(),
                    etl_day: r.to_day.clone(),
                    ..Default::default()
                },
            ]
        } else {
            vec![InstanceRef {
                id: 2,
                task: r.task.clone(),
                etl_day: r.etl_day.clone(),
                ..Default::default()
            }]
        };
        Ok(Response::new(RunResponse {
            backfill_id: 0,
            message: format!("{} instances to run", instances.len()),
            instances,
        }))
    }
    async fn get_dependencies(
        &self,
        request: tonic::Request<GetDependenciesRequest>,
    ) -> Rpc<GetDependenciesResponse> {
        let task = request.into_inner().task;
        let edges = self
            .tasks
            .iter()
            .flat_map(|t| {
                t.depends_on.iter().map(|d| DependencyEdge {
                    upstream: d.task.clone(),
                    downstream: t.id.clone(),
                    day_offset: d.day_offset,
                })
            })
            .filter(|e| e.upstream == task || e.downstream == task)
            .collect();
        Ok(Response::new(GetDependenciesResponse {
            edges,
            ..Default::default()
        }))
    }
    async fn list_agents(&self, _: tonic::Request<ListAgentsRequest>) -> Rpc<ListAgentsResponse> {
        Ok(Response::new(ListAgentsResponse {
            agents: self.agents.clone(),
        }))
    }
    async fn mark_success(&self, request: tonic::Request<MarkSuccessRequest>) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("MarkSuccess {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: "1 instances marked success".into(),
            ..Default::default()
        }))
    }
    async fn kill(&self, request: tonic::Request<KillRequest>) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("Kill {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: format!("{}@{} killed (was running)", r.task, r.etl_day),
            ..Default::default()
        }))
    }
    async fn delete_instance(
        &self,
        request: tonic::Request<DeleteInstanceRequest>,
    ) -> Rpc<InstancesResponse> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("DeleteInstance {}@{}", r.task, r.etl_day))?;
        Ok(Response::new(InstancesResponse {
            message: format!("{}@{} deleted with its tries and logs", r.task, r.etl_day),
            ..Default::default()
        }))
    }
    async fn set_paused(&self, request: tonic::Request<SetPausedRequest>) -> Rpc<Task> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        self.record(format!("SetPaused {} {}", r.task, r.paused))?;
        let mut task = self
            .get_task(tonic::Request::new(GetTaskRequest { id: r.task }))
            .await?
            .into_inner();
        task.paused = r.paused;
        Ok(Response::new(task))
    }
    async fn do_all_job(&self, _: tonic::Request<DoAllJobRequest>) -> Rpc<RunResponse> {
        Err(Status::unimplemented("do_all_job"))
    }
    async fn list_operations(&self, _: tonic::Request<ListOperationsRequest>) -> Rpc<ListOperationsResponse> {
        Ok(Response::new(ListOperationsResponse {
            operations: self.operations.clone(),
        }))
    }
    async fn list_calendars(
        &self,
        _: tonic::Request<goflow_proto::ListCalendarsRequest>,
    ) -> Rpc<goflow_proto::ListCalendarsResponse> {
        Ok(Response::new(Default::default()))
    }

    async fn get_calendar(
        &self,
        request: tonic::Request<goflow_proto::GetCalendarRequest>,
    ) -> Rpc<goflow_proto::CalendarDetail> {
        Err(Status::not_found(format!(
            "unknown calendar {:?}",
            request.get_ref().id
        )))
    }

    async fn list_alerts(&self, _: tonic::Request<ListAlertsRequest>) -> Rpc<ListAlertsResponse> {
        Ok(Response::new(ListAlertsResponse {
            alerts: self.alerts.clone(),
        }))
    }
    async fn list_pools(&self, _: tonic::Request<ListPoolsRequest>) -> Rpc<ListPoolsResponse> {
        Ok(Response::new(ListPoolsResponse {
            pools: self.pools.clone(),
        }))
    }
    async fn delete_pool(&self, _: tonic::Request<DeletePoolRequest>) -> Rpc<DeletePoolResponse> {
        Err(Status::unimplemented("delete_pool"))
    }
    /// A waiting instance waits for the running `transform`; any other is its own root cause.
    async fn explain_instance(
        &self,
        request: tonic::Request<ExplainInstanceRequest>,
    ) -> Rpc<ExplainInstanceResponse> {
        let r = request.into_inner();
        let found = self.find(0, &r.task, &r.etl_day)?;
        let hop = |i: &Instance, reason: &str| ExplainHop {
            task: i.task.clone(),
            period: i.etl_day.clone(),
            state: i.state.clone(),
            reason: reason.into(),
        };
        let (root, line) = if found.state == "waiting" {
            let transform = self.find(TRANSFORM_ID, "", "")?;
            let reason = "running on agent agent-1 since 00:01, try 2 of 3";
            let line = format!("waits for transform@{} ({reason})", transform.etl_day);
            (hop(transform, reason), line)
        } else {
            // As the coordinator words an instance that is its own root cause.
            let reason = match found.state.as_str() {
                "running" => "running on agent agent-1 since 00:01, try 2 of 3".to_string(),
                "failed" | "killed" => format!(
                    "{}: exit code {}, try {} of {}, at 00:02",
                    found.state, found.exit_code, found.try_number, found.max_tries
                ),
                "queued" => "queued, waiting for an agent to claim it for 5s".into(),
                "up_for_retry" => "up_for_retry: try 2 of 3 due at 00:05".into(),
                "success" => "succeeded at 00:01".into(),
                other => other.into(),
            };
            (hop(found, &reason), reason)
        };
        Ok(Response::new(ExplainInstanceResponse {
            instance: format!("{}@{}", found.task, found.etl_day),
            state: found.state.clone(),
            chain: vec![hop(found, "waits for 1 upstream"), root.clone()],
            root_causes: vec![root],
            lines: vec![line],
            ..Default::default()
        }))
    }

    async fn predict_day(
        &self,
        _: tonic::Request<goflow_proto::PredictDayRequest>,
    ) -> Rpc<goflow_proto::PredictDayResponse> {
        Err(Status::unimplemented("predict_day"))
    }

    // Backfills (issue 19): two of them, 7 running and 8 paused.
    async fn start_backfill(
        &self,
        request: tonic::Request<goflow_proto::StartBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let r = request.into_inner();
        let down = if r.down { " down" } else { "" };
        self.record(format!(
            "StartBackfill {}@{}..{}{down}",
            r.task, r.from_day, r.to_day
        ))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id: 7,
            task: r.task,
            message: "backfill 7: 10 instances to run".into(),
            ..Default::default()
        }))
    }
    async fn list_backfills(
        &self,
        request: tonic::Request<goflow_proto::ListBackfillsRequest>,
    ) -> Rpc<goflow_proto::ListBackfillsResponse> {
        self.allow(&request, "viewer")?;
        let backfill = |id: i64, state: &str, parallelism: i64| goflow_proto::Backfill {
            id,
            task: "extract".into(),
            from_day: "20260101".into(),
            to_day: "20260110".into(),
            state: state.into(),
            parallelism,
            created_by: "alice".into(),
            counts: vec![
                goflow_proto::BackfillStateCount {
                    state: "success".into(),
                    count: 4,
                },
                goflow_proto::BackfillStateCount {
                    state: "waiting".into(),
                    count: 6,
                },
            ],
            finished: 4,
            total: 10,
            ..Default::default()
        };
        Ok(tonic::Response::new(goflow_proto::ListBackfillsResponse {
            backfills: vec![backfill(8, "paused", 0), backfill(7, "running", 2)],
        }))
    }
    async fn get_backfill(
        &self,
        _: tonic::Request<goflow_proto::GetBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        Err(Status::unimplemented("get_backfill"))
    }
    async fn pause_backfill(
        &self,
        request: tonic::Request<goflow_proto::PauseBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("PauseBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id,
            message: format!("backfill {id} paused"),
            ..Default::default()
        }))
    }
    async fn resume_backfill(
        &self,
        request: tonic::Request<goflow_proto::ResumeBackfillRequest>,
    ) -> Rpc<goflow_proto::Backfill> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("ResumeBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::Backfill {
            id,
            message: format!("backfill {id} resumed"),
            ..Default::default()
        }))
    }
    async fn cancel_backfill(
        &self,
        request: tonic::Request<goflow_proto::CancelBackfillRequest>,
    ) -> Rpc<goflow_proto::CancelBackfillResponse> {
        self.allow(&request, "operator")?;
        let id = request.into_inner().id;
        self.record(format!("CancelBackfill {id}"))?;
        Ok(tonic::Response::new(goflow_proto::CancelBackfillResponse {
            message: format!(
                "backfill {id} cancelled: killed 1 running, 6 not started (6 waiting), now killed"
            ),
            ..Default::default()
        }))
    }

    // Change stream (issue 21)
    type WatchInstancesStream =
        Pin<Box<dyn Stream<Item = Result<goflow_proto::InstancesChanged, Status>> + Send>>;
    async fn watch_instances(
        &self,
        request: tonic::Request<goflow_proto::WatchInstancesRequest>,
    ) -> Rpc<Self::WatchInstancesStream> {
        self.allow(&request, "viewer")?;
        let r = request.into_inner();
        // As the coordinator answers: first the whole watched set, later what the test sends.
        let instances = self
            .instances
            .iter()
            .filter(|i| r.ids.is_empty() || r.ids.contains(&i.id))
            .filter(|i| r.etl_day.is_empty() || i.etl_day == r.etl_day)
            .filter(|i| r.task.is_empty() || i.task == r.task)
            .cloned()
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(InstancesChanged {
            instances,
            gone: vec![],
            initial: true,
        }))
        .expect("room for the first message");
        self.watches.lock().unwrap().push((r, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    async fn get_version(&self, _: tonic::Request<GetVersionRequest>) -> Rpc<GetVersionResponse> {
        Err(Status::unimplemented("get_version"))
    }

    async fn list_coordinators(
        &self,
        _: tonic::Request<ListCoordinatorsRequest>,
    ) -> Rpc<ListCoordinatorsResponse> {
        Err(Status::unimplemented("list_coordinators"))
    }

    async fn list_task_versions(
        &self,
        request: tonic::Request<goflow_proto::ListTaskVersionsRequest>,
    ) -> Rpc<goflow_proto::ListTaskVersionsResponse> {
        let task = request.into_inner().task;
        Ok(Response::new(goflow_proto::ListTaskVersionsResponse {
            versions: fake_versions(&task)?,
        }))
    }

    async fn get_task_version(
        &self,
        request: tonic::Request<goflow_proto::GetTaskVersionRequest>,
    ) -> Rpc<goflow_proto::TaskVersion> {
        let r = request.into_inner();
        let versions = fake_versions(&r.task)?;
        let wanted = if r.version == 0 {
            versions.len() as i64
        } else {
            r.version
        };
        versions
            .into_iter()
            .find(|v| v.version == wanted)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("task {:?} has no version {wanted}", r.task)))
    }

    async fn diff_task_versions(
        &self,
        request: tonic::Request<goflow_proto::DiffTaskVersionsRequest>,
    ) -> Rpc<goflow_proto::DiffTaskVersionsResponse> {
        let r = request.into_inner();
        fake_versions(&r.task)?;
        let (from, to) = match (r.from_version, r.to_version) {
            (0, _) => (1, 2),
            (a, 0) => (a, 2),
            (a, b) => (a, b),
        };
        if from > 2 || to > 2 {
            return Err(Status::not_found(format!(
                "task {:?} has no version {}",
                r.task,
                from.max(to)
            )));
        }
        let changes = if from == to {
            vec![]
        } else {
            vec![goflow_proto::FieldChange {
                task: r.task.clone(),
                field: "command".into(),
                old_value: "transform-old.sh {{etl_day}}".into(),
                new_value: "transform.sh {{etl_day}}".into(),
            }]
        };
        Ok(Response::new(goflow_proto::DiffTaskVersionsResponse {
            task: r.task,
            from_version: from,
            to_version: to,
            changes,
        }))
    }

    async fn delete_tasks(&self, request: tonic::Request<DeleteTasksRequest>) -> Rpc<DeleteTasksResponse> {
        self.allow(&request, "editor")?;
        let r = request.into_inner();
        self.record(format!("DeleteTasks {}", r.ids.join(",")))?;
        Ok(Response::new(DeleteTasksResponse {
            message: format!("deleted {}", r.ids.join(", ")),
            deleted: r.ids,
        }))
    }

    async fn clean_history(
        &self,
        _: tonic::Request<goflow_proto::CleanHistoryRequest>,
    ) -> Rpc<goflow_proto::CleanHistoryResponse> {
        Err(Status::unimplemented("clean_history"))
    }
}

/// Two versions of `transform` (the second current); other tasks have none.
fn fake_versions(task: &str) -> Result<Vec<goflow_proto::TaskVersion>, Status> {
    if task != "transform" {
        return Err(Status::not_found(format!(
            "unknown task {task:?} (it has no versions)"
        )));
    }
    let version = |n: i64, command: &str, changes: &str| goflow_proto::TaskVersion {
        task: task.into(),
        version: n,
        created_at: 1_767_225_600_000 + n * 3_600_000,
        actor: "alice".into(),
        client: "goflowctl".into(),
        source: "dag.yaml".into(),
        changes: changes.into(),
        definition: format!("id: transform\ndag: shop\ncommand: {command} {{{{etl_day}}}}\n"),
        current: n == 2,
    };
    Ok(vec![
        version(1, "transform-old.sh", ""),
        version(2, "transform.sh", "command"),
    ])
}

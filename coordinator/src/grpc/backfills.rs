//! ControlService's backfill calls (issue 19): start, pause, resume and cancel need the
//! operator role (as Run does), list and get the viewer role. The trait's methods in
//! `control` call these.

use goflow_core::Role;
use goflow_proto as pb;
use tonic::{Request, Response, Status};

use super::*;
use crate::engine::{BackfillStatus, RunPlan};

/// `backfill start`: a run over a range, recorded as a backfill; answers its id.
pub(super) async fn start(api: &Api, request: Request<pb::StartBackfillRequest>) -> RpcResult<pb::Backfill> {
    let caller = api.authorize(&request, Role::Operator).await?;
    let req = request.into_inner();
    require_task_field(&req.task)?;
    let (from, to) = periods_of("", &req.from_day, &req.to_day)?;
    if req.parallelism < 0 {
        return Err(Status::invalid_argument(format!(
            "parallelism {}: give at least 1 (0 or none: bounded only by free slots)",
            req.parallelism
        )));
    }
    let plan = RunPlan {
        task: req.task,
        from,
        to,
        down: req.down,
        up: false,
        force: false,
        as_then: false,
    };
    if req.dry_run {
        let preview = api.engine().preview_run(&plan).await?;
        return Ok(Response::new(pb::Backfill {
            task: plan.task,
            from_day: from.key(),
            to_day: to.key(),
            down: plan.down,
            parallelism: req.parallelism,
            instances: preview.instances.len() as i64,
            message: format!("would run {}", instances(preview.instances.len())),
            ..Default::default()
        }));
    }
    let start = crate::engine::BackfillStart {
        parallelism: (req.parallelism > 0).then_some(req.parallelism),
    };
    let (id, rows) = api.engine().start_backfill(&plan, start, &caller).await?;
    let status = api.engine().backfill(id).await?;
    let mut answer = backfill_pb(&status);
    answer.message = format!("backfill {id}: {} to run", instances(rows.len()));
    Ok(Response::new(answer))
}

pub(super) async fn list(
    api: &Api,
    request: Request<pb::ListBackfillsRequest>,
) -> RpcResult<pb::ListBackfillsResponse> {
    api.authorize(&request, Role::Viewer).await?;
    let limit = match request.get_ref().limit {
        n if n <= 0 => 100,
        n => i64::from(n),
    };
    let backfills = api.engine().list_backfills(limit).await?;
    Ok(Response::new(pb::ListBackfillsResponse {
        backfills: backfills.iter().map(backfill_pb).collect(),
    }))
}

pub(super) async fn get(api: &Api, request: Request<pb::GetBackfillRequest>) -> RpcResult<pb::Backfill> {
    api.authorize(&request, Role::Viewer).await?;
    let status = api.engine().backfill(require_id(request.get_ref().id)?).await?;
    Ok(Response::new(backfill_pb(&status)))
}

pub(super) async fn pause(api: &Api, request: Request<pb::PauseBackfillRequest>) -> RpcResult<pb::Backfill> {
    let caller = api.authorize(&request, Role::Operator).await?;
    let id = require_id(request.get_ref().id)?;
    let status = api.engine().pause_backfill(id, &caller).await?;
    let mut answer = backfill_pb(&status);
    answer.message = format!("backfill {id} paused: its running tries run on, nothing more starts");
    Ok(Response::new(answer))
}

pub(super) async fn resume(
    api: &Api,
    request: Request<pb::ResumeBackfillRequest>,
) -> RpcResult<pb::Backfill> {
    let caller = api.authorize(&request, Role::Operator).await?;
    let id = require_id(request.get_ref().id)?;
    let status = api.engine().resume_backfill(id, &caller).await?;
    let mut answer = backfill_pb(&status);
    answer.message = format!("backfill {id} resumed");
    Ok(Response::new(answer))
}

pub(super) async fn cancel(
    api: &Api,
    request: Request<pb::CancelBackfillRequest>,
) -> RpcResult<pb::CancelBackfillResponse> {
    let caller = api.authorize(&request, Role::Operator).await?;
    let id = require_id(request.get_ref().id)?;
    let outcome = api.engine().cancel_backfill(id, &caller).await?;
    let unstarted: i64 = outcome.killed_unstarted.values().sum();
    let mut message = format!(
        "backfill {id} cancelled: killed {} running, {unstarted} not started",
        outcome.killed_running.len()
    );
    if !outcome.killed_unstarted.is_empty() {
        let parts: Vec<String> = outcome
            .killed_unstarted
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        message.push_str(&format!(" ({}), now killed", parts.join(", ")));
    }
    Ok(Response::new(pb::CancelBackfillResponse {
        backfill: Some(backfill_pb(&outcome.status)),
        killed_running: outcome
            .killed_running
            .iter()
            .map(|key| pb::InstanceRef {
                task: key.task.clone(),
                etl_day: key.etl_day().compact(),
                period: key.period.key(),
                ..Default::default()
            })
            .collect(),
        killed_unstarted: counts_pb(&outcome.killed_unstarted),
        message,
    }))
}

fn require_id(id: i64) -> Result<i64, Status> {
    if id <= 0 {
        return Err(Status::invalid_argument(
            "a backfill id is required (see goflowctl backfill list)",
        ));
    }
    Ok(id)
}

fn counts_pb(counts: &std::collections::BTreeMap<String, i64>) -> Vec<pb::BackfillStateCount> {
    counts
        .iter()
        .map(|(state, count)| pb::BackfillStateCount {
            state: state.clone(),
            count: *count,
        })
        .collect()
}

fn backfill_pb(status: &BackfillStatus) -> pb::Backfill {
    let row = &status.row;
    pb::Backfill {
        id: row.id,
        task: row.task_id.clone(),
        from_day: row.from_period.clone(),
        to_day: row.to_period.clone(),
        down: row.down != 0,
        parallelism: row.parallelism.unwrap_or(0),
        state: status.state.as_str().into(),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        instances: row.instances,
        counts: counts_pb(&status.progress.by_state),
        finished: status.progress.finished(),
        total: status.progress.total(),
        has_per_minute: status.per_minute.is_some(),
        per_minute: status.per_minute.unwrap_or(0.0),
        eta_at: status.eta_at.unwrap_or(0),
        message: String::new(),
    }
}

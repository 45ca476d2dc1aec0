//! TailLogs: one try's output from an offset, followed while the try runs.

use std::sync::Arc;

use goflow_core::InstanceState;
use goflow_proto as pb;
use tonic::Status;

use super::{LOG_CHUNK_BYTES, internal, term_over};
use crate::engine::{Engine, EngineError};
use crate::store::{self, InstanceRow};

/// Streams one try's log from an offset; with `follow`, until the try has ended and every
/// byte was sent. Wakes on the engine's change signal, and at least every [`LOG_POLL`]: other
/// coordinators store output too (see `logs.rs`), and they do not signal this engine.
/// How often a followed log is read again without a signal.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) async fn stream_log(
    engine: Arc<Engine>,
    instance: InstanceRow,
    req: pb::TailLogsRequest,
    tx: &tokio::sync::mpsc::Sender<Result<pb::LogChunk, Status>>,
) -> Result<(), Status> {
    let mut changes = engine.subscribe_changes();
    let term_ended = engine.term_ended();
    let mut offset = req.offset;
    let mut try_number = if req.try_number > 0 {
        req.try_number as i64
    } else {
        instance.try_number
    };
    loop {
        changes.borrow_and_update();
        let mut conn = engine.store().read().await.map_err(internal)?;
        // The latest try may change while following (a retry): follow it when asked for "latest".
        if req.try_number == 0
            && req.follow
            && let Some(row) = store::instance_by_id(&mut conn, instance.id)
                .await
                .map_err(internal)?
            && row.try_number > try_number
        {
            try_number = row.try_number;
            offset = 0;
        }
        let attempt_id = store::attempt_id(instance.id, try_number);
        let attempt = store::attempt(&mut conn, &attempt_id).await.map_err(internal)?;
        // Bytes archived to object storage (issue 18) are read from there, after the
        // database connection is given back; later ones from the database.
        let archived = attempt.as_ref().filter(|a| offset < a.log_archived_bytes);
        let data = match &attempt {
            Some(_) if archived.is_some() => vec![],
            Some(_) => store::read_log(&mut conn, &attempt_id, offset, LOG_CHUNK_BYTES)
                .await
                .map_err(internal)?,
            None => vec![],
        };
        // The chunks may have left for the archive between reading the row and them: read
        // again from the object then, rather than take the missing bytes for the end.
        if let Some(a) = &attempt
            && archived.is_none()
            && data.is_empty()
            && offset < a.log_bytes
            && store::log_location(&mut conn, &attempt_id)
                .await
                .map_err(internal)?
                .is_some_and(|(now_archived, _)| now_archived > offset)
        {
            continue;
        }
        // With "latest try", a queued, running or retrying instance still has output to come.
        let more_tries_coming = req.try_number == 0
            && store::instance_by_id(&mut conn, instance.id)
                .await
                .map_err(internal)?
                .is_some_and(|row| {
                    matches!(
                        row.state,
                        InstanceState::Queued | InstanceState::Running | InstanceState::UpForRetry
                    )
                });
        drop(conn);
        let data = match archived {
            Some(attempt) => engine
                .read_archived_log(attempt, offset, LOG_CHUNK_BYTES)
                .await
                .map_err(|e| match e {
                    EngineError::Internal(e) => {
                        tracing::warn!(attempt_id = %attempt.id, "cannot read an archived log: {e:#}");
                        Status::unavailable(format!("cannot read the archived log now: {e:#}"))
                    }
                    other => other.into(),
                })?,
            None => data,
        };
        if !data.is_empty() {
            let len = data.len() as i64;
            let chunk = pb::LogChunk {
                offset,
                data,
                try_number: try_number as i32,
                eof: false,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(()); // the client went away
            }
            offset += len;
            continue;
        }
        let attempt_live = attempt.as_ref().is_some_and(|a| a.state == "running");
        if !req.follow || (!attempt_live && !more_tries_coming) {
            let _ = tx
                .send(Ok(pb::LogChunk {
                    offset,
                    data: vec![],
                    try_number: try_number as i32,
                    eof: true,
                }))
                .await;
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = tx.closed() => return Ok(()),
            // Nobody wakes this engine's followers any more: the client resumes elsewhere.
            _ = term_ended.cancelled() => return Err(term_over()),
        }
    }
}

//! Ships a try's output to the coordinators while the command runs, so the log survives the
//! agent, a coordinator's death and a failover.
//!
//! The runner's lines go into the try's [`Spool`] (on disk, bounded) and never wait for the
//! network. A sender sends what is spooled with `AppendLog` (try, offset, bytes) to whichever
//! coordinator answers (any of them stores logs, see the coordinator's `grpc/logs.rs`), and
//! after any failure resends from the offset last acknowledged, with backoff, until the output
//! has ended and everything is acknowledged. The coordinator skips bytes it has already, so
//! a resend never duplicates a line, and refuses a gap, so none goes missing.

use std::path::PathBuf;
use std::time::Duration;

use goflow_proto::AppendLogRequest;
use goflow_proto::log_service_client::LogServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

use crate::agent::SecretHeader;
use crate::failover::Failover;
use crate::plumbing::Backoff;
use crate::spool::{Next, Spool};

/// Upper bound of one `AppendLog`, far below gRPC's 4 MiB message limit.
const MAX_BATCH: usize = 256 * 1024;
/// An `AppendLog` unanswered this long is sent again (to the next coordinator).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between failed sends: doubling up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After a try went on without its output stored (see [`drain`]), how long it is still sent.
pub const LATE_PATIENCE: Duration = Duration::from_secs(600);

pub type LogClient = LogServiceClient<InterceptedService<Failover, SecretHeader>>;

/// Spools a try's output lines from `lines` in `dir` (at most `bound` bytes unacknowledged)
/// and ships them with `sender`; the handle ends once the output has ended and is stored.
pub fn spool_and_ship(
    sender: Sender,
    dir: PathBuf,
    bound: u64,
    lines: mpsc::Receiver<Vec<u8>>,
) -> JoinHandle<()> {
    let spool = match Spool::create(dir.clone(), bound) {
        Ok(spool) => spool,
        Err(e) => {
            let attempt_id = sender.attempt_id;
            tracing::error!(%attempt_id, dir = %dir.display(), "cannot create the log spool: {e}; output is dropped");
            // Still read, so the command never blocks on its output.
            return tokio::spawn(async move {
                let mut lines = lines;
                while lines.recv().await.is_some() {}
            });
        }
    };
    tokio::spawn(spool_lines(lines, spool.clone()));
    tokio::spawn(sender.ship(spool).in_current_span())
}

/// How long the output of tries killed on shutdown may still take to be stored.
const FLUSH_WHEN_KILLED: Duration = Duration::from_secs(3);

/// Waits until `shipping` (from [`spool_and_ship`]) has stored the try's output, for
/// `patience` at most, or [`FLUSH_WHEN_KILLED`] past `shutdown`; past it the output goes on
/// being sent in the background for [`LATE_PATIENCE`] (coordinators take it after the try's
/// report too).
pub async fn drain(
    attempt_id: &str,
    mut shipping: JoinHandle<()>,
    patience: Duration,
    shutdown: &CancellationToken,
) {
    // Killed on shutdown (a second SIGTERM, the drain's deadline): the agent is about to
    // exit, but the output is still worth a few seconds, the kill's own note included.
    let killed = async {
        shutdown.cancelled().await;
        tokio::time::sleep(FLUSH_WHEN_KILLED).await
    };
    tokio::select! {
        _ = &mut shipping => return,
        _ = tokio::time::sleep(patience) => {}
        _ = killed => {}
    }
    if !patience.is_zero() {
        tracing::warn!(%attempt_id, "the try's output is not all stored after {patience:?}: going on; the output follows");
    }
    let attempt_id = attempt_id.to_string();
    tokio::spawn(async move {
        if tokio::time::timeout(LATE_PATIENCE, &mut shipping).await.is_err() {
            shipping.abort();
            tracing::error!(%attempt_id, "gave up sending the try's output after {LATE_PATIENCE:?}: the stored log is incomplete");
        }
    });
}

/// Moves the runner's lines into the spool as fast as they come, until the runner is done
/// (it drops its sender); then closes the spool.
pub async fn spool_lines(mut lines: mpsc::Receiver<Vec<u8>>, spool: Spool) {
    while let Some(line) = lines.recv().await {
        spool.write(&line);
    }
    spool.close();
}

/// Who ships one try's output, and where.
pub struct Sender {
    pub client: LogClient,
    pub failover: Failover,
    pub agent_id: String,
    pub attempt_id: String,
}

impl Sender {
    /// Sends the spool's output until it has ended and every byte is acknowledged. Returns
    /// early only when a coordinator refuses the try's output for good (unknown try, another
    /// agent's), or the spool lost what must be resent.
    pub async fn ship(self, spool: Spool) {
        let attempt_id = &self.attempt_id;
        let mut acked = spool.acked();
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let (offset, data) = match spool.next(acked, MAX_BATCH) {
                Ok(Next::Send { offset, data }) => (offset, data),
                Ok(Next::Done) => return,
                Ok(Next::Wait) => {
                    // A write since the look left a permit: this returns at once then.
                    spool.changed().await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(%attempt_id, "cannot read the log spool: {e}; the rest of the output is lost");
                    return;
                }
            };
            let len = data.len() as u64;
            let request = AppendLogRequest {
                agent_id: self.agent_id.clone(),
                attempt_id: attempt_id.clone(),
                offset: offset as i64,
                data,
            };
            let mut client = self.client.clone();
            let answer = match tokio::time::timeout(CALL_TIMEOUT, client.append_log(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    // The coordinator stalls: the next try goes to another one.
                    self.failover.move_past(self.failover.current());
                    Err(tonic::Status::deadline_exceeded(
                        "AppendLog was not answered in time",
                    ))
                }
            };
            match answer {
                Ok(response) => {
                    // Never past what we wrote: that would skip output still to come.
                    let stored = (response.into_inner().acked_offset.max(0) as u64).min(spool.written());
                    if stored < offset {
                        // The coordinator has less than we thought acknowledged (it answered
                        // a gap): resend from its offset, if the spool still has it.
                        tracing::warn!(%attempt_id, stored, offset, "coordinator asks to resend log output");
                    } else if stored < offset + len {
                        tracing::debug!(%attempt_id, stored, "part of a log chunk was stored");
                    }
                    acked = stored;
                    spool.ack(stored);
                    backoff.reset();
                }
                Err(status) if is_final(status.code()) => {
                    let lost = spool.written() - acked;
                    tracing::error!(%attempt_id, error = %status, bytes = lost, "log output refused; the rest is dropped");
                    return;
                }
                Err(status) => {
                    tracing::warn!(%attempt_id, offset, error = %status, "could not send log output; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }
}

/// Refusals that sending again cannot change.
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound | Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented
    )
}

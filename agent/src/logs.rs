//! Forwards a try's output to the coordinator over the client-streaming `StreamLogs` RPC,
//! while the command runs, so the log survives the agent.

use goflow_proto::LogAppend;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::CoordinatorClient;

/// Upper bound of one `LogAppend`, far below gRPC's 4 MiB message limit.
const MAX_BATCH: usize = 256 * 1024;
/// Messages buffered toward the RPC; while it is full, lines pile up and batches grow.
const STREAM_BUFFER: usize = 8;

/// One open `StreamLogs` call.
struct LogStream {
    sender: mpsc::Sender<LogAppend>,
    call: JoinHandle<Result<tonic::Response<goflow_proto::StreamLogsResponse>, tonic::Status>>,
}

impl LogStream {
    fn open(client: &CoordinatorClient) -> Self {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let mut client = client.clone();
        // The call's future drives the sending, so it runs on its own task until we close.
        let call = tokio::spawn(async move { client.stream_logs(ReceiverStream::new(receiver)).await });
        Self { sender, call }
    }

    /// Ends the request stream and waits for the coordinator's answer, which comes after it
    /// stored everything.
    async fn close(self) -> Result<i64, String> {
        drop(self.sender);
        match self.call.await {
            Ok(Ok(response)) => Ok(response.into_inner().bytes_stored),
            Ok(Err(status)) => Err(status.to_string()),
            Err(join) => Err(join.to_string()),
        }
    }
}

/// Sends every line from `lines` for `attempt_id`, batching what is ready at once, until
/// `lines` closes; then closes the stream and waits until the coordinator stored it all.
///
/// The stream is opened on the first output. If it breaks, it is reopened once; after a second
/// break the rest is dropped (logged) but still read, so the command never blocks on its output.
pub async fn forward_logs(client: CoordinatorClient, attempt_id: String, mut lines: mpsc::Receiver<Vec<u8>>) {
    let mut stream: Option<LogStream> = None;
    let mut reopened = false;
    let mut dropped: usize = 0;
    while let Some(first) = lines.recv().await {
        // Take whatever else is ready now: no waiting, so output shows up promptly.
        let mut data = first;
        while data.len() < MAX_BATCH {
            match lines.try_recv() {
                Ok(more) => data.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if dropped > 0 {
            dropped += data.len();
            continue;
        }
        let mut message = LogAppend {
            attempt_id: attempt_id.clone(),
            data,
        };
        loop {
            let open = stream.get_or_insert_with(|| LogStream::open(&client));
            match open.sender.send(message).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(unsent)) => {
                    // The call ended early: find out why, then reopen once.
                    let broken = stream.take().expect("just opened");
                    let why = broken
                        .close()
                        .await
                        .err()
                        .unwrap_or_else(|| "closed by the coordinator".into());
                    if reopened {
                        tracing::warn!(%attempt_id, error = %why, "log stream broke again; dropping the rest of the output");
                        dropped += unsent.data.len();
                        break;
                    }
                    tracing::warn!(%attempt_id, error = %why, "log stream broke; reopening");
                    reopened = true;
                    message = unsent;
                }
            }
        }
    }
    if dropped > 0 {
        tracing::warn!(%attempt_id, bytes = dropped, "output not stored: the log stream was down");
    }
    if let Some(open) = stream {
        match open.close().await {
            Ok(stored) => tracing::debug!(%attempt_id, bytes_stored = stored, "log stream closed"),
            Err(err) => tracing::warn!(%attempt_id, error = %err, "log stream failed at close"),
        }
    }
}

//! Logs: the window of a try's log rendered into the instance page, the whole log as a
//! download, and the live tail as server-sent events fed by the gRPC log stream.
//!
//! The page renders the log up to some byte offset; the script then opens `.../live` from that
//! offset and appends what follows, so nothing is shown twice or skipped.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use goflow_proto::{Attempt, Instance, TailLogsRequest};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;

use super::instance::instance_path;
use crate::AppState;
use crate::error::WebError;
use crate::view;

/// The page shows at most this much of a log: its end, where the interesting part usually is.
pub const LOG_WINDOW: i64 = 256 * 1024;

pub struct LogView {
    pub try_number: i32,
    /// The whole log's size, e.g. `1.2 MiB`.
    pub total: String,
    pub truncated: bool,
    pub text: String,
    /// The byte offset right after the text shown: where the live tail continues.
    pub end_offset: i64,
    /// The try still runs: the page follows its log live.
    pub live: bool,
}

/// The last `LOG_WINDOW` bytes of one try's log, read once (no follow).
pub async fn read_log_window(
    app: &AppState,
    instance: &Instance,
    attempt: &Attempt,
) -> Result<LogView, WebError> {
    let total = attempt.log_bytes.max(0);
    let offset = (total - LOG_WINDOW).max(0);
    let mut stream = app
        .client()
        .tail_logs(TailLogsRequest {
            instance_id: instance.id,
            task: instance.task.clone(),
            etl_day: instance.etl_day.clone(),
            try_number: attempt.try_number,
            offset,
            follow: false,
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|status| app.fail(status))? {
        data.extend_from_slice(&chunk.data);
        if chunk.eof {
            break;
        }
    }
    let end_offset = offset + data.len() as i64;
    // The log may have grown since its size was read: keep showing only the window's end.
    let cut = data.len().saturating_sub(LOG_WINDOW as usize);
    let (text, _) = decode_utf8(&data[cut..], offset > 0 || cut > 0);
    Ok(LogView {
        try_number: attempt.try_number,
        total: view::bytes(end_offset),
        truncated: offset > 0 || cut > 0,
        text,
        end_offset,
        live: attempt.state == "running" || attempt.state == "killing",
    })
}

/// Log bytes as text. A window that starts mid-file may start mid-character: those stray
/// continuation bytes are dropped. An incomplete character at the end is returned apart, to be
/// completed by the next chunk of a live tail.
pub fn decode_utf8(data: &[u8], starts_mid_file: bool) -> (String, Vec<u8>) {
    let data = if starts_mid_file {
        let skip = data
            .iter()
            .take(3)
            .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
            .count();
        &data[skip..]
    } else {
        data
    };
    let mut text = String::with_capacity(data.len());
    let mut rest = data;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return (text, vec![]);
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                text.push_str(std::str::from_utf8(valid).expect("checked"));
                match err.error_len() {
                    // Cut mid-character at the end: keep the bytes for later.
                    None => return (text, after.to_vec()),
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    #[serde(rename = "try")]
    try_number: Option<i32>,
    offset: Option<i64>,
}

/// `GET /instances/{task}/{day}/log?try=N`: the whole log of one try, as a text download.
pub async fn download(
    app: AppState,
    Path((task, day)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Response, WebError> {
    let day = instance_path(&task, &day)?;
    let try_number = params.try_number.unwrap_or(0).max(0);
    let mut stream = app
        .streaming_client()
        .tail_logs(TailLogsRequest {
            task: task.clone(),
            etl_day: day.compact(),
            try_number,
            offset: 0,
            follow: false,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    // Streamed through, so a huge log never sits whole in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    let eof = chunk.eof;
                    if !chunk.data.is_empty() && tx.send(Ok(chunk.data)).await.is_err() {
                        return;
                    }
                    if eof {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(status.message().to_string())))
                        .await;
                    return;
                }
            }
        }
    });
    let name = format!("{task}-{}-try{try_number}.log", day.compact());
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// One server-sent event of the live tail.
#[derive(Debug, Serialize)]
struct LiveChunk {
    /// The offset after this text: where a reconnect would continue.
    offset: i64,
    text: String,
}

/// `GET /instances/{task}/{day}/live?try=N&offset=X`: the log from `offset` as it grows, one
/// `chunk` event per piece and an `eof` event when the try has ended.
pub async fn live(
    app: AppState,
    Path((task, day)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Result<Response, WebError> {
    let day = instance_path(&task, &day)?;
    let try_number = params
        .try_number
        .filter(|n| *n > 0)
        .ok_or_else(|| WebError::bad_parameter("try", "the live log needs a try number"))?;
    let start = params.offset.unwrap_or(0).max(0);
    let mut stream = app
        .streaming_client()
        .tail_logs(TailLogsRequest {
            task,
            etl_day: day.compact(),
            try_number,
            offset: start,
            follow: true,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(8);
    tokio::spawn(async move {
        let mut carry: Vec<u8> = vec![];
        let mut offset = start;
        loop {
            let mut last = false;
            let event = match stream.message().await {
                Ok(Some(chunk)) if chunk.eof => {
                    last = true;
                    Event::default().event("eof").data(offset.to_string())
                }
                Ok(Some(chunk)) => {
                    offset = chunk.offset + chunk.data.len() as i64;
                    carry.extend_from_slice(&chunk.data);
                    let (text, rest) = decode_utf8(&carry, false);
                    carry = rest;
                    if text.is_empty() {
                        continue;
                    }
                    // JSON keeps carriage returns and any other byte SSE cannot carry raw.
                    match Event::default()
                        .event("chunk")
                        .json_data(LiveChunk { offset, text })
                    {
                        Ok(event) => event,
                        Err(_) => return,
                    }
                }
                Ok(None) => return,
                // The coordinator serving the stream stepped down: ending the response makes
                // the browser reconnect from the offset it reached (goflow.js).
                Err(status) if status.code() == tonic::Code::Unavailable => return,
                Err(status) => {
                    last = true;
                    Event::default()
                        .event("failure")
                        .data(status.message().replace(['\r', '\n'], " "))
                }
            };
            if tx.send(Ok(event)).await.is_err() || last {
                return; // the browser went away: dropping the stream ends the gRPC call
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::decode_utf8;
    use crate::testing::{DAY, Fake, get, sample};

    /// A live log whose stream is cut by a step-down ends without a failure event: the
    /// browser's EventSource then reconnects from the offset it reached.
    #[tokio::test]
    async fn a_live_log_cut_by_a_step_down_ends_for_the_browser_to_resume() {
        let app = Fake {
            cut_tails: true,
            ..sample()
        }
        .start()
        .await;
        let (status, body) = get(&app, &format!("/instances/transform/{DAY}/live?try=2&offset=0")).await;
        assert_eq!(status, axum::http::StatusCode::OK);
        assert!(body.contains("event: chunk"), "{body}");
        assert!(
            !body.contains("event: failure") && !body.contains("event: eof"),
            "{body}"
        );
    }

    #[test]
    fn a_window_that_starts_mid_character_drops_the_stray_bytes() {
        let text = "é-ok".as_bytes();
        assert_eq!(decode_utf8(&text[1..], true).0, "-ok");
        assert_eq!(decode_utf8(text, false).0, "é-ok");
    }

    #[test]
    fn a_character_cut_at_the_end_waits_for_the_next_chunk() {
        let bytes = "日志".as_bytes();
        let (text, carry) = decode_utf8(&bytes[..4], false);
        assert_eq!((text.as_str(), carry.len()), ("日", 1));
        let mut next = carry;
        next.extend_from_slice(&bytes[4..]);
        assert_eq!(decode_utf8(&next, false), ("志".to_string(), vec![]));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        assert_eq!(decode_utf8(b"a\xffb", false).0, "a\u{fffd}b");
    }
}

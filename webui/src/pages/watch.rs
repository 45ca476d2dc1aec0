//! `/watch?day=D[&task=T]&since=F`: what a live page shows, as server-sent events fed by the
//! coordinator's change stream (`WatchInstances`, issue 21), so the page re-fetches itself when
//! an instance changes instead of on a timer.
//!
//! A page in progress names this URL in its `#autorefresh` marker ([`watch_url`]), with `since`,
//! the [`fingerprint`] of the instances it was rendered from. The first message of the stream
//! is the whole watched set: when it differs from `since` (something changed between the page
//! and the watch), the first event is already a `change`; otherwise a `ready`. Every later
//! message is a `change`. A comment every [`HEARTBEAT`] keeps proxies from closing a quiet
//! stream. When the browser goes away the response body is dropped, which ends the forwarding
//! task and with it the coordinator's stream. When the coordinator ends the stream (a step-down,
//! an error) the response ends too, and the page falls back to its timer (goflow.js).

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use axum::extract::Query;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use goflow_core::EtlDay;
use goflow_core::dag::is_valid_task_id;
use goflow_proto::{Instance, InstancesChanged, WatchInstancesRequest};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::parse_day;
use crate::AppState;
use crate::error::WebError;

/// A comment this often keeps a quiet stream open through proxies that close idle responses.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Encoded in a query value: all but what task ids are made of, so they read as they are.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

/// The watch URL of a page showing `instances` of `day` (all of them, or only `task`'s).
pub fn watch_url(day: &EtlDay, task: Option<&str>, instances: &[Instance]) -> String {
    let mut url = format!("/watch?day={}", day.compact());
    if let Some(task) = task {
        url.push_str("&task=");
        url.extend(utf8_percent_encode(task, QUERY_VALUE));
    }
    url.push_str("&since=");
    url.push_str(&fingerprint(instances));
    url
}

/// What a live page shows of its instances, in 16 hex digits: each one's id, state, try and
/// whether it is blocked, in any order. The same set gives the same fingerprint in this
/// process (the page and the watch are served by the same web UI).
pub fn fingerprint(instances: &[Instance]) -> String {
    let mut seen: Vec<(i64, &str, i32, bool)> = instances
        .iter()
        .map(|i| (i.id, i.state.as_str(), i.try_number, i.blocked))
        .collect();
    seen.sort_unstable();
    let mut hasher = DefaultHasher::new();
    seen.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    day: Option<String>,
    task: Option<String>,
    /// The fingerprint of what the page shows; absent: the first event is a `change`.
    since: Option<String>,
}

/// `GET /watch`: `ready` or `change` first, then a `change` (its data: how many instances
/// changed or went) whenever the watched instances change.
pub async fn events(app: AppState, Query(params): Query<Params>) -> Result<Response, WebError> {
    let day = parse_day("day", params.day.as_deref().unwrap_or("").trim())?;
    let task = match params.task.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(task) if is_valid_task_id(task) => task.to_string(),
        Some(task) => {
            return Err(WebError::bad_parameter(
                "task",
                format!("{task:?} is not a task id"),
            ));
        }
    };
    let stream = app
        .streaming_client()
        .watch_instances(WatchInstancesRequest {
            ids: vec![],
            task,
            etl_day: day.compact(),
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(4);
    tokio::spawn(forward(stream, params.since.unwrap_or_default(), tx));
    let mut response = Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    // nginx would otherwise hold the events back in its buffer.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Turns the coordinator's messages into events until either side goes away. Returning drops
/// `stream`, which cancels the gRPC call: no coordinator stream outlives its browser.
async fn forward(
    mut stream: Streaming<InstancesChanged>,
    since: String,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            // The browser went away while nothing changed.
            _ = tx.closed() => return,
        };
        let changed = match message {
            Ok(Some(changed)) => changed,
            Ok(None) => return,
            Err(status) => {
                // Ending the response sends the page back to its timer, which reconnects later.
                tracing::debug!("a page's change stream ended: {}", status.message());
                return;
            }
        };
        if tx.send(Ok(event_of(&changed, &since))).await.is_err() {
            return;
        }
    }
}

/// The event for one message of the stream.
fn event_of(changed: &InstancesChanged, since: &str) -> Event {
    if changed.initial && fingerprint(&changed.instances) == since {
        return Event::default().event("ready").data("0");
    }
    // An event without data is never delivered: the data is the count, at least 1 for the
    // first message of a set that changed since the page (a set that emptied has no instance).
    let count = (changed.instances.len() + changed.gone.len()).max(1);
    Event::default().event("change").data(count.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use futures::StreamExt;
    use goflow_proto::{Instance, InstancesChanged};
    use tower::ServiceExt;

    use super::{fingerprint, watch_url};
    use crate::testing::{DAY, TRANSFORM_ID, get, sample};

    fn instance(id: i64, state: &str, try_number: i32) -> Instance {
        Instance {
            id,
            state: state.into(),
            try_number,
            ..Default::default()
        }
    }

    #[test]
    fn the_fingerprint_follows_states_and_tries_not_order() {
        let a = [instance(1, "running", 1), instance(2, "waiting", 0)];
        let b = [instance(2, "waiting", 0), instance(1, "running", 1)];
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 16);
        let finished = [instance(1, "success", 1), instance(2, "waiting", 0)];
        assert_ne!(fingerprint(&a), fingerprint(&finished));
        let retried = [instance(1, "running", 2), instance(2, "waiting", 0)];
        assert_ne!(fingerprint(&a), fingerprint(&retried));
        assert_ne!(fingerprint(&a), fingerprint(&a[..1]));
    }

    #[test]
    fn the_watch_url_names_the_day_the_task_and_the_fingerprint() {
        let day = goflow_core::EtlDay::parse(DAY).unwrap();
        let shown = [instance(1, "running", 1)];
        assert_eq!(
            watch_url(&day, Some("load_eu-1.v2"), &shown),
            format!("/watch?day={DAY}&task=load_eu-1.v2&since={}", fingerprint(&shown))
        );
        assert!(watch_url(&day, None, &[]).starts_with(&format!("/watch?day={DAY}&since=")));
    }

    /// Reads the response body until `text` arrives (or the fake coordinator's stream ends);
    /// everything read.
    async fn read_until(body: &mut axum::body::BodyDataStream, text: &str) -> String {
        let mut read = String::new();
        while !read.contains(text) {
            let next = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .unwrap_or_else(|_| panic!("no {text:?} in {read:?}"));
            match next {
                Some(chunk) => read.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => break,
            }
        }
        read
    }

    async fn open(app: &axum::Router, uri: &str, headers: &[(&str, &str)]) -> axum::http::Response<Body> {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_change_the_coordinator_reports_reaches_the_page_and_a_gone_browser_ends_the_watch() {
        let fake = sample();
        let watches = fake.watches.clone();
        let shown: Vec<Instance> = fake
            .instances
            .iter()
            .filter(|i| i.task == "transform")
            .cloned()
            .collect();
        let app = fake.start().await;
        let day = goflow_core::EtlDay::parse(DAY).unwrap();
        let response = open(&app, &watch_url(&day, Some("transform"), &shown), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let mut body = response.into_body().into_data_stream();
        // Nothing changed since the page: the stream is ready, and no change is reported.
        let first = read_until(&mut body, "event: ready").await;
        assert!(!first.contains("event: change"), "{first}");
        let (request, coordinator) = watches.lock().unwrap().pop().expect("one watch");
        assert_eq!(
            (request.task.as_str(), request.etl_day.as_str()),
            ("transform", DAY)
        );
        assert!(request.ids.is_empty());

        let mut finished = shown[0].clone();
        finished.state = "success".into();
        coordinator
            .send(Ok(InstancesChanged {
                instances: vec![finished],
                ..Default::default()
            }))
            .await
            .unwrap();
        let next = read_until(&mut body, "event: change").await;
        assert!(next.contains("data: 1"), "{next}");

        // The browser goes away: the coordinator's stream is cancelled with it.
        drop(body);
        tokio::time::timeout(Duration::from_secs(10), coordinator.closed())
            .await
            .expect("the coordinator's stream outlived the browser");
    }

    /// A coordinator stepping down ends its stream: the response ends too, and the page's
    /// script goes back to its timer until it watches again.
    #[tokio::test]
    async fn the_response_ends_with_the_coordinators_stream() {
        let fake = sample();
        let watches = fake.watches.clone();
        let app = fake.start().await;
        let response = open(&app, &format!("/watch?day={DAY}&since=0"), &[]).await;
        let mut body = response.into_body().into_data_stream();
        read_until(&mut body, "event: change").await;
        let (_, coordinator) = watches.lock().unwrap().pop().expect("one watch");
        coordinator
            .send(Err(tonic::Status::unavailable("stepped down")))
            .await
            .unwrap();
        let rest = read_until(&mut body, "never sent").await;
        assert!(!rest.contains("event:"), "{rest}");
    }

    #[tokio::test]
    async fn a_page_older_than_the_watch_gets_a_change_at_once() {
        let fake = sample();
        let app = fake.start().await;
        let stale = [instance(TRANSFORM_ID, "queued", 1)];
        let day = goflow_core::EtlDay::parse(DAY).unwrap();
        let response = open(&app, &watch_url(&day, None, &stale), &[]).await;
        let mut body = response.into_body().into_data_stream();
        let first = read_until(&mut body, "\n\n").await;
        assert!(first.starts_with("event: change\n"), "{first}");
    }

    #[tokio::test]
    async fn the_watch_needs_a_session_and_acts_as_it() {
        let fake = sample().with_auth();
        let bearers = fake.bearers.clone();
        let watches = fake.watches.clone();
        let app = fake.start().await;
        let uri = format!("/watch?day={DAY}&since=0");
        let (status, _) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "to the login");
        assert!(watches.lock().unwrap().is_empty(), "no watch without a session");

        let response = open(&app, &uri, &[("cookie", "goflow_session=gfs_vera")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        read_until(&mut body, "event: change").await;
        assert_eq!(watches.lock().unwrap().len(), 1);
        assert_eq!(
            bearers.lock().unwrap().last().map(String::as_str),
            Some("Bearer gfs_vera"),
            "the watch carries the session's token"
        );
    }

    #[tokio::test]
    async fn a_watch_needs_a_day_and_a_task_id() {
        let app = sample().start().await;
        let (status, body) = get(&app, "/watch?task=transform").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = get(&app, &format!("/watch?day={DAY}&task=no%20such")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}

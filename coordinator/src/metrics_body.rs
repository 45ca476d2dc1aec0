//! Counting a gRPC call when its response ends: the status code is in the response headers
//! (a trailers-only answer, e.g. an error before any message) or in the trailers after the
//! body. A response dropped before either (the client went away) counts as CANCELLED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;

use crate::metrics::{Metrics, OVER_GRPC, grpc_code_name};

/// `response` whose end is counted in `metrics` under `method`.
pub fn measured(
    response: http::Response<Body>,
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
) -> http::Response<Body> {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(grpc_code_name);
    let mut call = Call {
        metrics,
        method,
        started,
        done: false,
    };
    if let Some(code) = code {
        // Trailers-only: the status is known now, whatever the (empty) body holds.
        call.record(code);
    }
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, Body::new(Measured { inner: body, call }))
}

struct Call {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn record(&mut self, code: &str) {
        if !self.done {
            self.done = true;
            self.metrics
                .grpc_call(&self.method, code, OVER_GRPC, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

struct Measured {
    inner: Body,
    call: Call,
}

impl HttpBody for Measured {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map_or("UNKNOWN", grpc_code_name);
                    this.call.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.record("UNKNOWN"),
            Poll::Ready(None) => this.call.record("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tonic::codegen::Bytes;

    use super::*;

    /// A body of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    async fn drain(response: http::Response<Body>) {
        let mut body = response.into_body();
        while futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .is_some()
        {}
    }

    #[tokio::test]
    async fn the_code_comes_from_the_headers_or_the_trailers_and_a_dropped_call_is_cancelled() {
        let metrics = Arc::new(Metrics::new());
        // Trailers-only: an error answered at once.
        let refused = tonic::Status::unavailable("no leader").into_http::<Body>();
        drain(measured(
            refused,
            metrics.clone(),
            "Heartbeat".into(),
            Instant::now(),
        ))
        .await;
        // A message, then the status in the trailers.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
            Frame::trailers(trailers),
        ]));
        let answered = http::Response::new(Body::new(frames));
        drain(measured(
            answered,
            metrics.clone(),
            "GetInstance".into(),
            Instant::now(),
        ))
        .await;
        // The client went away before the end.
        let open = http::Response::new(Body::new(Frames(VecDeque::from([Frame::data(Bytes::new())]))));
        drop(measured(open, metrics.clone(), "TailLog".into(), Instant::now()));

        let text = metrics.encode();
        for line in [
            "goflow_grpc_requests_total{method=\"Heartbeat\",code=\"UNAVAILABLE\",transport=\"grpc\"} 1",
            "goflow_grpc_requests_total{method=\"GetInstance\",code=\"NOT_FOUND\",transport=\"grpc\"} 1",
            "goflow_grpc_requests_total{method=\"TailLog\",code=\"CANCELLED\",transport=\"grpc\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(
            text.matches("goflow_grpc_requests_total{").count(),
            3,
            "each call once:\n{text}"
        );
    }
}

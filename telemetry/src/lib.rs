//! Traces (issue 11): goflow's `tracing` spans exported with OpenTelemetry (OTLP) when the
//! standard `OTEL_*` variables say where, and the W3C trace context carried in gRPC metadata,
//! so that one `goflowctl run` is one trace across goflowctl, the coordinator, the dispatch and
//! the agent's run of the command.
//!
//! Silent unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set:
//! no exporter, no thread, no span is even made ([`span`] gives [`Span::none`]), so logs read as
//! before. The exporter itself reads the rest: `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or
//! `http/protobuf`, the default), headers, timeouts; `OTEL_SERVICE_NAME` (or `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`) wins over the name a process gives itself.
//!
//! Every process: [`layer`] inside the Tokio runtime (the gRPC exporter's channel lives there),
//! added to its subscriber, and [`shutdown`] before it exits, which sends what is left.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The header (gRPC metadata key) of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether the environment asks for an export: an OTLP endpoint is set, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off.
pub fn export_wanted(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !disabled
        && !no_exporter
}

/// Whether spans are exported from this process ([`layer`] made an exporter).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OpenTelemetry layer for this process's subscriber, when the environment asks for an
/// export (see [`export_wanted`]); None otherwise, and when the exporter cannot be made (said
/// once on stderr: a bad `OTEL_*` value must not stop a scheduler). `service` is the
/// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
///
/// Call it inside the Tokio runtime, once per process. The layer takes goflow's own spans and
/// events at INFO and above, whatever the log filter (`GOFLOW_LOG`) lets through to the log:
/// give the log's filter to the log's layer, not to the whole subscriber.
pub fn layer<S>(service: &str) -> Option<impl Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !export_wanted(|name| std::env::var(name).ok()) || PROVIDER.get().is_some() {
        return None;
    }
    // The HTTP exporter's reqwest uses rustls without a provider of its own: the process's,
    // ring as everywhere in goflow (a process that installed it already keeps it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: traces are not exported: the OTLP exporter cannot be made from OTEL_*: {e}");
            return None;
        }
    };
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(service.to_string());
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("goflow");
    if PROVIDER.set(provider).is_err() {
        return None;
    }
    ENABLED.store(true, Ordering::Relaxed);
    // The hint keeps DEBUG and TRACE callsites (h2's, hyper's) off without asking the filter.
    let goflow_only = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("goflow") && *meta.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(tracing_subscriber::filter::LevelFilter::INFO);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(goflow_only),
    )
}

/// For a process that logs nothing itself (goflowctl): installs a subscriber with only the
/// OpenTelemetry layer when the environment asks for an export; does nothing otherwise.
pub fn init_exporting_only(service: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    if let Some(layer) = layer(service) {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    }
}

/// Sends the spans not sent yet and stops the exporter; a no-op when nothing is exported.
/// Runs on a blocking thread: the gRPC exporter needs this runtime free to send.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        ENABLED.store(false, Ordering::Relaxed);
        let _ = tokio_blocking(move || {
            let _ = provider.shutdown();
        })
        .await;
    }
}

async fn tokio_blocking(f: impl FnOnce() + Send + 'static) -> Result<(), tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// `make()` when spans are exported, else [`Span::none`]: spans made only for traces cost
/// nothing and show in no log line when nothing is exported.
pub fn span(make: impl FnOnce() -> Span) -> Span {
    if enabled() { make() } else { Span::none() }
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), or "" when it is not
/// exported. The span starts (for OpenTelemetry) when asked: set its parent before.
pub fn traceparent(span: &Span) -> String {
    if !enabled() || span.is_none() {
        return String::new();
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return String::new();
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    fields.remove(TRACEPARENT).unwrap_or_default()
}

/// The context a `traceparent` names; None when empty or invalid.
pub fn context_of(traceparent: &str) -> Option<Context> {
    if traceparent.is_empty() {
        return None;
    }
    let fields = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&fields);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the span `traceparent` names (one in another process, or stored).
/// Only before the span was entered; false when it could not be done (or there is no parent).
pub fn set_parent(span: &Span, traceparent: &str) -> bool {
    match context_of(traceparent) {
        Some(context) if enabled() && !span.is_none() => span.set_parent(context).is_ok(),
        _ => false,
    }
}

/// Adds the current span's context (`traceparent`, `tracestate`) to a call's metadata, for a
/// client interceptor. Nothing when no span is exported.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if !enabled() {
        return;
    }
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }
}

/// The context a call's headers carry (empty when none).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The server span of a gRPC call (`Server::builder().trace_fn(server_span)`): a child of the
/// caller's span when the call carries a `traceparent`. None for the health and reflection
/// services, and for agents' calls that carry no trace (heartbeats, log streams, command
/// watches: a trace each would be noise).
pub fn server_span(request: &http::Request<()>) -> Span {
    call_span(request.uri().path(), request.headers())
}

/// The span of a call to `path` (`/package.Service/Method`) with the caller's `headers`, made
/// as [`server_span`] makes it: for calls answered in-process, without a server.
pub fn call_span(path: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let parent = extract(headers);
    let has_parent = parent.span().span_context().is_valid();
    if service.starts_with("grpc.") || (!has_parent && service.ends_with(".AgentService")) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    if has_parent {
        let _ = span.set_parent(parent);
    }
    span
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_only_when_an_endpoint_is_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert!(!export_wanted(env(&[])));
        assert!(!export_wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(!export_wanted(env(&[
            ("OTEL_SERVICE_NAME", "x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        ])));
        assert!(export_wanted(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(export_wanted(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])));
        assert!(!export_wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
        assert!(!export_wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }

    #[test]
    fn without_an_export_nothing_is_made_or_sent() {
        // No layer was made in this test binary: spans are none, nothing is injected.
        assert!(!enabled());
        assert!(span(|| tracing::info_span!("x")).is_none());
        assert_eq!(traceparent(&tracing::info_span!("x")), "");
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
        let request = http::Request::builder()
            .uri("/goflow.v1.ControlService/Run")
            .header(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        assert!(server_span(&request).is_none());
    }

    #[test]
    fn traceparent_round_trip_through_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_of(tp).expect("valid");
        let span = context.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context_of("").is_none());
        assert!(context_of("00-nonsense").is_none());
        // What an interceptor writes, a server reads back.
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(&mut metadata));
        assert_eq!(metadata.get(TRACEPARENT).unwrap(), tp);
        let headers = metadata.into_headers();
        let back = extract(&headers);
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
    }
}

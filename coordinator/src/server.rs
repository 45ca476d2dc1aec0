//! Serving: the gRPC API (with the standard health service and server reflection, so grpcurl
//! and other languages' clients work) on a listener the caller bound, over TLS when given.

use goflow_proto as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::routing::{Agents, Control, Logins, Logs, Routed, Router};

/// Serves until `shutdown` is cancelled. Tests pass a listener bound to port 0. Calls of the
/// goflow services take the `router`'s route: this coordinator's engine when it leads, the
/// leader otherwise. Health and reflection are answered here: with `ready`, the goflow
/// services' health follows it (a standby passing calls to a leader is ready; see
/// `health.rs`), the overall status ("") stays SERVING while the process runs; without, all
/// are SERVING.
pub async fn serve_grpc(
    router: Router,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    ready: Option<crate::health::ReadyCheck>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Any coordinator stores logs, leader or not.
    health_reporter.set_serving::<Routed<Logs>>().await;
    match ready {
        Some(ready) => {
            tokio::spawn(crate::health::grpc_health_loop(
                health_reporter,
                ready,
                router.subscribe(),
                shutdown.clone(),
            ));
        }
        None => {
            health_reporter.set_serving::<Routed<Control>>().await;
            health_reporter.set_serving::<Routed<Agents>>().await;
            health_reporter.set_serving::<Routed<Logins>>().await;
        }
    }
    // v1 for grpcurl and current clients, v1alpha for those that only know it (Python's
    // grpcio-reflection, older grpcurl).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Each call's span (when traces are exported) continues the caller's trace (issue 11).
    let mut builder = tonic::transport::Server::builder().trace_fn(goflow_telemetry::server_span);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(router.control())
        .add_service(router.agents())
        .add_service(router.auth())
        .add_service(router.logs())
        .serve_with_incoming_shutdown(incoming_nodelay(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Accepted connections with TCP_NODELAY: a listener passed in skips the builder's setting, and
/// without it Nagle and delayed ACKs stall every other small report on the hot path by 40 ms.
fn incoming_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::warn!("cannot set TCP_NODELAY on a gRPC connection: {e}");
        }
        accepted
    })
}

//! Serving: the gRPC API (with the standard health service and server reflection, so grpcurl
//! and other languages' clients work) on a listener the caller bound.

use std::sync::Arc;

use goflow_proto as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::grpc::Api;

/// Serves until `shutdown` is cancelled. Tests pass a listener bound to port 0. With an
/// `agent_secret`, AgentService calls without it are refused.
pub async fn serve_grpc(
    engine: Arc<Engine>,
    agent_secret: Option<String>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = Api::new(engine);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::control_service_server::ControlServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<pb::agent_service_server::AgentServiceServer<Api>>()
        .await;
    // v1 for grpcurl and current clients, v1alpha for those that only know it (Python's
    // grpcio-reflection, older grpcurl).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::control_service_server::ControlServiceServer::new(api.clone()))
        .add_service(pb::agent_service_server::AgentServiceServer::with_interceptor(
            api,
            AgentAuth(agent_secret.map(Arc::from)),
        ))
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

/// Agents of a cluster must present the agent secret; standalone's embedded agent has none to
/// present, and its coordinator listens on loopback only by default.
#[derive(Clone)]
struct AgentAuth(Option<Arc<str>>);

impl tonic::service::Interceptor for AgentAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(secret) = &self.0 else { return Ok(request) };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if same_secret(given.as_bytes(), secret.as_bytes()) => Ok(request),
            _ => Err(tonic::Status::unauthenticated(
                "agent secret missing or wrong (the agent's GOFLOW_AGENT_SECRET or Common.AgentSecret)",
            )),
        }
    }
}

/// Compares without returning early, so the time taken says nothing about the secret.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

//! The web UI over TLS (issue 9): `axum::serve` speaks plain HTTP only, so a TLS listener is
//! an accept loop of tokio-rustls handshakes, each connection served by hyper (HTTP/1.1 or
//! HTTP/2, as the browser picks through ALPN). Under TLS the session cookie is `Secure`.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::failover::ClientTls;
use crate::{AppState, router};

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the web UI serves and reaches its coordinators.
#[derive(Clone, Debug, Default)]
pub struct WebTls {
    /// PEM certificate (chain) and private key to serve HTTPS with; None: plain HTTP.
    pub serve: Option<(Vec<u8>, Vec<u8>)>,
    /// How `https://` coordinators are verified (`--ca`).
    pub coordinators: ClientTls,
    /// The UI listens beyond loopback: it serves pages only while its coordinator has
    /// authentication on (anyone reaching it could otherwise run any command on the agents).
    pub require_auth: bool,
    /// The web UIs' secret (`--webui-secret-file`): with it, every call names the browser's
    /// address (`x-goflow-forwarded-for`), proven by the secret, so that the coordinators slow
    /// down failed logins per browser rather than per web UI.
    pub webui_secret: Option<String>,
}

/// A TLS acceptor for a PEM certificate chain and key, offering HTTP/2 and HTTP/1.1.
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate is not PEM")?;
    anyhow::ensure!(!certs.is_empty(), "the TLS certificate file holds no certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)
        .context("the TLS key file holds no PEM private key")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// [`crate::serve`] with TLS: over HTTPS when `tls.serve` is set (the session cookie then
/// `Secure`), to `https://` coordinators verified as `tls.coordinators` says.
pub async fn serve_tls(
    coordinators: Vec<String>,
    tls: WebTls,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_tls_with(coordinators, tls, listener, axum::Router::new(), shutdown).await
}

/// [`serve_tls`] with `extra` routes beside the web UI's (e.g. `/metrics`, `/readyz`): they
/// pass no login and no CSRF guard, and must not repeat the UI's paths (`/healthz` is one).
pub async fn serve_tls_with(
    coordinators: Vec<String>,
    tls: WebTls,
    listener: TcpListener,
    extra: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::with_coordinators_tls(&coordinators, &tls.coordinators)?
        .with_secure_cookies(tls.serve.is_some())
        .with_required_auth(tls.require_auth)
        .with_forwarding_secret(tls.webui_secret.as_deref())?;
    let app = router(state).merge(extra);
    let Some((cert, key)) = &tls.serve else {
        // The browser's address, for `AppState`'s calls (see `AppState::for_browser`).
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        return Ok(());
    };
    let acceptor = acceptor(cert, key)?;
    let service = app;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!("web UI: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        // What `into_make_service_with_connect_info` gives a plain-HTTP request.
        let service = tower::Layer::layer(&axum::Extension(ConnectInfo(peer)), service.clone());
        let service = hyper_util::service::TowerToHyperService::new(service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!("web UI: TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!("web UI: connection from {peer}: {e}");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

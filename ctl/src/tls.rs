//! `--ca` (issue 9): how goflowctl verifies `https://` coordinators. goflowctl runs one command
//! per process, so the choice is made once, at the start of [`crate::dispatch`], and every
//! connection [`crate::open`] makes follows it.

use std::path::Path;
use std::sync::RwLock;

use crate::failover::ClientTls;

static CLIENT_TLS: RwLock<Option<ClientTls>> = RwLock::new(None);

/// Verifies `https://` coordinators against the CA in `ca` (PEM); None: the system's roots.
pub fn use_ca(ca: Option<&Path>) -> anyhow::Result<()> {
    let tls = ClientTls::from_files(ca, None).map_err(|e| anyhow::anyhow!("--ca: {e}"))?;
    *CLIENT_TLS.write().unwrap() = Some(tls);
    Ok(())
}

/// What [`use_ca`] chose (the system's roots before it is called).
pub fn client_tls() -> ClientTls {
    CLIENT_TLS.read().unwrap().clone().unwrap_or_default()
}

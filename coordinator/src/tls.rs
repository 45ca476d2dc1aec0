//! TLS for a coordinator (issue 9), opt-in: with a certificate and key it serves the gRPC API
//! and the web UI over TLS, and its own clients (the embedded agent, the embedded web UI and
//! the channel that passes calls to the leader) verify coordinators against the CA.
//!
//! mTLS for agents (`--tls-client-ca`): the gRPC server asks every client for a certificate
//! and verifies any it gets against the client CA (or the coordinators' CA, so coordinators
//! and their embedded agents pass with their own certificate); AgentService calls without a
//! verified certificate are refused (see `routing.rs`). Other clients (goflowctl, the web UI)
//! need none. The agent secret is still required on top: a certificate says who may connect,
//! the secret stays the one thing every agent of a cluster must know.

use std::path::Path;

use anyhow::{Context, bail};
use goflow_agent::ClientTls;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::Settings;

/// A coordinator's TLS material, read once at start.
#[derive(Clone)]
pub struct NodeTls {
    /// This coordinator's certificate (chain) and key, PEM.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA (PEM) its own clients verify coordinators against: `--ca`, or the certificate
    /// itself when it is self-signed.
    pub ca_pem: Vec<u8>,
    /// Agents must present a certificate signed by this CA (PEM).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl NodeTls {
    /// None when TLS is off (no certificate and no key). Fails, saying which setting to fix,
    /// on half a configuration, unreadable files, or a CA that cannot be found.
    pub fn load(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
            (None, None) => {
                if settings.tls_client_ca.is_some() {
                    bail!(
                        "--tls-client-ca asks agents for certificates over TLS: also set --tls-cert and --tls-key"
                    );
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                bail!("--tls-cert is set but not --tls-key (GOFLOW_TLS_KEY, Common.TlsKey): TLS needs both")
            }
            (None, Some(_)) => {
                bail!("--tls-key is set but not --tls-cert (GOFLOW_TLS_CERT, Common.TlsCert): TLS needs both")
            }
        };
        let cert_pem = read(cert, "TLS certificate (--tls-cert)")?;
        let key_pem = read(key, "TLS key (--tls-key)")?;
        let certs = pem_certificates(&cert_pem)
            .with_context(|| format!("the TLS certificate {} (--tls-cert)", cert.display()))?;
        let ca_pem = match &settings.ca {
            Some(ca) => {
                let pem = read(ca, "CA (--ca)")?;
                pem_certificates(&pem).with_context(|| format!("the CA file {} (--ca)", ca.display()))?;
                pem
            }
            None if certs.len() == 1 && is_self_signed(&certs[0]) => cert_pem.clone(),
            None => bail!(
                "the TLS certificate {} is not self-signed, so this coordinator's own clients (its \
                 embedded agent and web UI, and calls passed to the leader) need the CA that signed \
                 it: set --ca FILE (GOFLOW_CA, Common.Ca)",
                cert.display()
            ),
        };
        let client_ca_pem = match &settings.tls_client_ca {
            Some(path) => {
                let pem = read(path, "client CA (--tls-client-ca)")?;
                pem_certificates(&pem)
                    .with_context(|| format!("the client CA file {} (--tls-client-ca)", path.display()))?;
                Some(pem)
            }
            None => None,
        };
        let tls = Self {
            cert_pem,
            key_pem,
            ca_pem,
            client_ca_pem,
        };
        // A certificate and key that do not go together fail here, not on the first client.
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| anyhow::anyhow!("{}", goflow_agent::failover::error_chain(&e)))
            .with_context(|| format!("cannot serve TLS with {} and {}", cert.display(), key.display()))?;
        Ok(Some(tls))
    }

    /// The gRPC server's configuration.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(client_ca) => {
                // Both CAs in one bundle: agents' certificates, and coordinators' own.
                let mut roots = client_ca.clone();
                roots.push(b'\n');
                roots.extend_from_slice(&self.ca_pem);
                config
                    .client_ca_root(Certificate::from_pem(roots))
                    .client_auth_optional(true)
            }
            None => config,
        }
    }

    /// How this coordinator's own clients reach coordinators: the CA, and this coordinator's
    /// certificate as client identity when agents need one. `server_name`: the name to check
    /// the certificate for instead of the URL's host.
    pub fn client(&self, server_name: Option<String>) -> ClientTls {
        ClientTls {
            ca_pem: Some(self.ca_pem.clone()),
            identity: self
                .client_ca_pem
                .as_ref()
                .map(|_| (self.cert_pem.clone(), self.key_pem.clone())),
            server_name,
        }
    }

    /// The certificate and key, for the web UI's HTTPS.
    pub fn serve_pair(&self) -> (Vec<u8>, Vec<u8>) {
        (self.cert_pem.clone(), self.key_pem.clone())
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// The DER certificates of a PEM file; at least one.
fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    Ok(certs)
}

/// Whether a DER certificate names itself as its issuer.
pub fn is_self_signed(der: &[u8]) -> bool {
    issuer_and_subject(der).is_some_and(|(issuer, subject)| issuer == subject)
}

/// The encoded issuer and subject names of a DER certificate:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity, subject, ... }, ... }`.
fn issuer_and_subject(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, certificate, _) = tlv(der)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // version
    }
    rest = tlv(rest)?.2; // serial number
    rest = tlv(rest)?.2; // signature algorithm
    let issuer_len = rest.len() - tlv(rest)?.2.len();
    let issuer = &rest[..issuer_len];
    rest = &rest[issuer_len..];
    rest = tlv(rest)?.2; // validity
    let subject_len = rest.len() - tlv(rest)?.2.len();
    Some((issuer, &rest[..subject_len]))
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |len, &b| (len << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Installs ring as rustls's crypto provider, once per process (every binary's `main`).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate made by `openssl req -x509` (self-signed, CN=localhost) and one signed by
    /// a CA (issuer CN=goflow test CA), from `scripts/make-test-ca`.
    const SELF_SIGNED: &str = include_str!("../tests/e2e/data/self-signed.pem");
    const CA_SIGNED: &str = include_str!("../tests/e2e/data/ca-signed.pem");

    fn der(pem: &str) -> Vec<u8> {
        pem_certificates(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn tells_self_signed_certificates_from_ca_signed_ones() {
        assert!(is_self_signed(&der(SELF_SIGNED)));
        assert!(!is_self_signed(&der(CA_SIGNED)));
        assert!(!is_self_signed(b"not a certificate"));
        assert!(!is_self_signed(&[0x30, 0x82, 0xff]));
    }

    #[test]
    fn half_a_tls_configuration_is_refused() {
        let settings = Settings {
            tls_cert: Some("cert.pem".into()),
            ..Settings::default()
        };
        let err = NodeTls::load(&settings).err().unwrap().to_string();
        assert!(err.contains("--tls-key"), "{err}");
        assert!(NodeTls::load(&Settings::default()).unwrap().is_none());
    }

    #[test]
    fn a_ca_signed_certificate_without_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, CA_SIGNED).unwrap();
        std::fs::write(&key, "").unwrap();
        let settings = Settings {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..Settings::default()
        };
        let err = NodeTls::load(&settings).err().unwrap().to_string();
        assert!(err.contains("--ca") && err.contains("not self-signed"), "{err}");
    }
}

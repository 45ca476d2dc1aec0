//! `goflowctl version`

use std::io::Write;

use goflow_proto::GetVersionRequest;

use crate::{Client, ConnectError, VERSION};

/// Prints the client version, then the server's; an unreachable server is an error (exit 1)
/// after the client version has been printed.
pub async fn run(client: Result<Client, ConnectError>, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "client: goflowctl {VERSION}")?;
    out.flush()?;
    let mut client = client?;
    let server = client.get_version(GetVersionRequest {}).await?.into_inner();
    writeln!(out, "{}", server_line(&server.version, &server.mode))?;
    Ok(())
}

pub fn server_line(version: &str, mode: &str) -> String {
    if mode.is_empty() {
        format!("server: goflow {version}")
    } else {
        format!("server: goflow {version} ({mode})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            server_line("0.1.0", "standalone"),
            "server: goflow 0.1.0 (standalone)"
        );
        assert_eq!(server_line("0.1.0", ""), "server: goflow 0.1.0");
    }

    #[tokio::test]
    async fn unreachable_server_still_prints_the_client_version() {
        let mut out = Vec::new();
        let err = ConnectError {
            server: "http://h:1".into(),
            cause: "refused".into(),
        };
        let result = run(Err(err), &mut out).await;
        assert!(result.is_err());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("client: goflowctl {VERSION}\n")
        );
    }
}

//! `goflow-agent`: an agent alone, the same flags, environment and config file as `goflow
//! agent`, without the coordinator, the database drivers and the web UI linked in (issue 21:
//! an agent that idles small).

use clap::Parser;
use goflow_agent::cli::{AgentArgs, AgentSettings, LogFormat};

#[derive(Parser)]
#[command(
    name = "goflow-agent",
    version,
    about = "goflow agent: takes dispatches from Redis, runs their commands, reports to the coordinators"
)]
struct Cli {
    /// goflow's own log lines: pretty (text) or json (one object a line); the level comes from
    /// RUST_LOG (or GOFLOW_LOG), e.g. RUST_LOG=debug.
    #[arg(long, value_enum, env = "GOFLOW_LOG_FORMAT", default_value = "pretty")]
    log_format: LogFormat,
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() {
    // rustls (gRPC over TLS, rediss://) with ring, as in every goflow process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = goflow_agent::cli::agent_runtime().block_on(async {
        let env = std::env::vars().collect();
        let result = match AgentSettings::load(cli.agent.config.config.as_deref(), &env) {
            Ok(settings) => goflow_agent::cli::run(cli.agent, settings, cli.log_format).await,
            Err(e) => Err(e),
        };
        // Sends the spans not sent yet (nothing to do when traces are not exported).
        goflow_telemetry::shutdown().await;
        result
    });
    if let Err(e) = result {
        eprintln!("goflow-agent: error: {e:#}");
        std::process::exit(1);
    }
}

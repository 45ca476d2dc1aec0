//! `goflowctl`: the command line of goflow, a client of the coordinator's gRPC API.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = goflowctl::Cli::parse();
    // Traces only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.
    goflow_telemetry::init_exporting_only("goflowctl");
    let status = goflowctl::execute(cli).await;
    goflow_telemetry::shutdown().await;
    ExitCode::from(status)
}

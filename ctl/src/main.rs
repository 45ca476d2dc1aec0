//! `goflowctl`: the command line of goflow, a client of the coordinator's gRPC API.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    ExitCode::from(goflowctl::execute(goflowctl::Cli::parse()).await)
}

//! goflow's own logs, for every goflow process.

use std::path::Path;

use anyhow::Context;

/// goflow's own log lines: pretty (text) or json (one object a line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// goflow's own logs: to `log_file` or stderr, as text (`--log-format pretty`, colour only
/// on a terminal, never in a file) or JSON lines; the level from RUST_LOG, else GOFLOW_LOG.
/// Also exports spans when OTEL_EXPORTER_OTLP_ENDPOINT says where (issue 11), as `service`
/// (`service.name`) unless OTEL_SERVICE_NAME names another. Then logs `warnings`.
pub fn init_logging(
    log_file: Option<&Path>,
    warnings: &[String],
    format: LogFormat,
    service: &str,
) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("GOFLOW_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let (writer, ansi) = match log_file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create log folder {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {} (LogDir/LogFile)", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
        // Colour only for a terminal: redirected to a file, escape codes are noise.
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    let format: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> = match format
    {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
    };
    // The filter is the log's own: traces take goflow's spans whatever the log level.
    tracing_subscriber::registry()
        .with(format.with_filter(filter))
        .with(goflow_telemetry::layer(service))
        .init();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(())
}

//! An agent as a process: its command line, its settings, its logs and its HTTP listener. One
//! definition for `goflow agent` and for the agent-only `goflow-agent` binary (issue 21: an
//! agent that links only what an agent needs, to idle small).

pub mod config_file;
pub mod health;
mod logging;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

pub use config_file::{parse_duration, with_scheme};
pub use logging::{LogFormat, init_logging};
pub use settings::{
    AGENT_ENV_KEYS, AGENT_FILE_KEYS, AgentKey, AgentSettings, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_SPOOL_BYTES, MIN_SPOOL_BYTES, OTHER_FILE_KEYS, default_slots,
};

use crate::{AgentConfig, AgentMetrics, ClientTls, DispatchQueue, RedisQueue, Stop};

/// The config file alone (processes without a database: agents, the web UI).
#[derive(Args)]
pub struct FileArgs {
    /// Config file, JSON or TOML (the seed's goflow_conf.json loads as it is).
    #[arg(short = 'c', long = "config", env = "GOFLOW_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Redis, for a coordinator with separate agents and for an agent.
#[derive(Args, Default)]
pub struct RedisArgs {
    /// Redis: redis://HOST:PORT, rediss://HOST:PORT (TLS) or HOST:PORT (also GOFLOW_REDIS_URL,
    /// GOFLOW_BROKER, Common.Broker). A URL with a password is refused here (any user can read
    /// it in `ps`): give it in GOFLOW_REDIS_URL, Common.Broker or --redis-url-file.
    #[arg(long, alias = "broker", conflicts_with = "redis_url_file")]
    pub redis_url: Option<String>,
    /// A file whose first line is the Redis URL (password included).
    #[arg(long, value_name = "FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// The CA (PEM) that a rediss:// server's certificate must be signed by (also
    /// GOFLOW_REDIS_CA, Common.RedisCa; default: the system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,
}

/// Redis as the flags give it, over the settings' values.
pub struct RedisFlags {
    /// The URL and where it came from (`--redis-url`, `--redis-url-file FILE`).
    pub broker: Option<(String, String)>,
    pub redis_ca: Option<PathBuf>,
}

impl RedisArgs {
    /// Reads the flags: a password in `--redis-url` is refused, `--redis-url-file` is read.
    pub fn read(self) -> anyhow::Result<RedisFlags> {
        use config_file::{read_secret_file, refuse_secret_in_flag};
        let mut broker = None;
        if let Some(url) = self.redis_url {
            refuse_secret_in_flag("--redis-url", &url, "GOFLOW_REDIS_URL", "--redis-url-file")?;
            broker = Some((url, "--redis-url".to_string()));
        }
        if let Some(path) = self.redis_url_file {
            let url = read_secret_file(&path, "--redis-url-file")?;
            broker = Some((url, format!("--redis-url-file {}", path.display())));
        }
        Ok(RedisFlags {
            broker,
            redis_ca: self.redis_ca,
        })
    }
}

/// Graceful stop of an agent (an embedded one too).
#[derive(Args)]
pub struct DrainArgs {
    /// On SIGTERM or Ctrl-C, how long the running tries may finish (no new ones are taken)
    /// before they are killed, e.g. 10m, 90s, 0s (also GOFLOW_DRAIN_TIMEOUT,
    /// Worker.DrainTimeout; default 10m). A second signal kills them at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
}

/// An agent's TLS: the coordinators' CA, and its own client certificate.
#[derive(Args)]
pub struct AgentTlsArgs {
    /// The CA (PEM) that https:// coordinators' certificates must be signed by (also
    /// GOFLOW_CA, Common.Ca; default: the system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This agent's client certificate (PEM), for coordinators that require one
    /// (--tls-client-ca); also GOFLOW_TLS_CERT, Common.TlsCert. Needs --tls-key. Its subject's
    /// common name (CN) is the agent's id: with it, the agent needs no token.
    #[arg(long, visible_alias = "tls-client-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM; also GOFLOW_TLS_KEY, Common.TlsKey).
    #[arg(long, visible_alias = "tls-client-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// `goflow agent` and `goflow-agent`.
#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub config: FileArgs,
    /// The coordinators' gRPC addresses, comma-separated: the agent moves to another when one
    /// dies (also GOFLOW_COORDINATOR, GOFLOW_SERVER).
    #[arg(long, alias = "server")]
    pub coordinator: Option<String>,
    /// Redis to take work from.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Tries run at once (the seed's Worker.Parallelism).
    #[arg(long)]
    pub slots: Option<usize>,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Queues (routing keys) to take work from, comma-separated; `*` for all (default: default).
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// The agent's stable name (also GOFLOW_ID); default: its token's agent, else one the
    /// coordinator makes from the host.
    #[arg(long)]
    pub id: Option<String>,
    /// A file holding this agent's token (`goflow agent-token create --id ID` prints it); also
    /// GOFLOW_AGENT_TOKEN (the token itself), GOFLOW_AGENT_TOKEN_FILE, Worker.AgentToken or
    /// Worker.AgentTokenFile. Never the token on the command line, where `ps` shows it.
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// Seconds between heartbeats (the seed's Worker.HearteatInterval).
    #[arg(long, value_name = "SECS")]
    pub heartbeat_interval: Option<u64>,
    /// Serves /metrics, /healthz and /readyz over HTTP on this address (also
    /// GOFLOW_HTTP_LISTEN); without, the agent listens on nothing.
    #[arg(long, env = "GOFLOW_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    #[command(flatten)]
    pub tls: AgentTlsArgs,
}

impl AgentArgs {
    /// The flags over the settings' values (file and environment); `--http-listen` stays here.
    pub fn apply(&mut self, settings: &mut AgentSettings) -> anyhow::Result<()> {
        if let Some(server) = self.coordinator.take() {
            settings.server = server;
        }
        let redis = std::mem::take(&mut self.redis).read()?;
        if let Some((url, source)) = redis.broker {
            settings.broker = Some(url);
            settings.broker_source = source;
        }
        if redis.redis_ca.is_some() {
            settings.redis_ca = redis.redis_ca;
        }
        if let Some(id) = self.id.take() {
            settings.agent_id = id;
        }
        if let Some(file) = self.agent_token_file.take() {
            settings.agent_token_file = Some(file);
            settings.agent_token = None;
        }
        if let Some(secs) = self.heartbeat_interval {
            anyhow::ensure!(secs >= 1, "--heartbeat-interval must be at least 1 second");
            settings.heartbeat_interval = Duration::from_secs(secs);
        }
        if let Some(slots) = self.slots {
            anyhow::ensure!(slots > 0, "--slots must be at least 1");
            settings.slots = slots;
        }
        if !self.queues.is_empty() {
            settings.queues = std::mem::take(&mut self.queues);
        }
        if let Some(timeout) = self.drain.drain_timeout {
            settings.drain_timeout = timeout;
        }
        for (flag, value) in [
            (&mut settings.ca, self.tls.ca.take()),
            (&mut settings.tls_cert, self.tls.tls_cert.take()),
            (&mut settings.tls_key, self.tls.tls_key.take()),
        ] {
            if value.is_some() {
                *flag = value;
            }
        }
        Ok(())
    }
}

/// The CA and the certificate + key pair of `ca`, `cert` and `key`, read.
pub fn client_tls(
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<ClientTls> {
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together: set both or neither"),
    };
    ClientTls::from_files(ca, identity).map_err(anyhow::Error::msg)
}

/// `a:7070,http://b:7070` -> `["http://a:7070", "http://b:7070"]`.
pub fn coordinator_list(text: &str) -> Vec<String> {
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(with_scheme)
        .collect();
    if list.is_empty() {
        vec![with_scheme(goflow_proto::DEFAULT_GRPC_ADDR)]
    } else {
        list
    }
}

/// Whether an address (`host:port`) can only be reached from this machine.
pub fn is_loopback(address: &str) -> bool {
    if let Ok(addr) = address.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host == "localhost"
}

/// Warns about each `http://` coordinator beyond loopback: `what` crosses the network in clear.
pub fn warn_plaintext_coordinators(coordinators: &[String], what: &str) {
    for url in coordinators {
        let host = url.strip_prefix("http://").unwrap_or("");
        if !host.is_empty() && !is_loopback(host.trim_end_matches('/')) {
            tracing::warn!(
                "{what} to {url} in clear: serve the coordinators with --tls-cert and use https:// \
                 (with --ca) to encrypt them"
            );
        }
    }
}

/// Ctrl-C or SIGTERM: the first drains (`stop.drain`); with tries to drain (`drains`), the
/// second kills them (`stop.kill`) and a third exits at once; without, the second exits.
pub fn stop_on_signals(stop: Stop, drains: bool) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        for round in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            match (round, drains) {
                (0, true) => {
                    tracing::info!(
                        "shutting down: taking no new tries (a second signal kills the running ones)"
                    );
                    stop.drain.cancel();
                }
                (0, false) => {
                    tracing::info!("shutting down (a second signal exits at once)");
                    stop.drain.cancel();
                }
                (1, true) => {
                    tracing::warn!("second signal: killing the running tries (a third exits at once)");
                    stop.kill.cancel();
                }
                _ => std::process::exit(130),
            }
        }
    });
}

/// The agent's runtime: it waits on its coordinator and on its tries' pipes, so one thread
/// serves it, and an idle agent stays small (issue 21: under 15 MB).
pub fn agent_runtime() -> tokio::runtime::Runtime {
    // glibc gives each thread that allocates an arena of its own (up to 8 a core), each
    // keeping freed memory: the agent's few threads share one.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only sets a parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// Runs an agent with `settings` (file and environment, loaded) and the flags of `args`, until
/// it is stopped by a signal (drained, then killed).
pub async fn run(mut args: AgentArgs, mut settings: AgentSettings, format: LogFormat) -> anyhow::Result<()> {
    args.apply(&mut settings)?;
    init_logging(
        settings.log_file.as_deref(),
        &settings.warnings,
        format,
        "goflow-agent",
    )?;
    // Its own token if it has one; else the cluster's shared secret (a trusted network).
    let credential = match (settings.read_agent_token()?, &settings.agent_secret) {
        (Some(token), _) => {
            tracing::info!("presenting this agent's own token");
            Some(token)
        }
        (None, Some(secret)) => {
            tracing::info!("presenting the cluster's shared agent secret");
            Some(secret.clone())
        }
        (None, None) if settings.tls_cert.is_some() => {
            tracing::info!("presenting this agent's client certificate only (its CN names the agent)");
            None
        }
        (None, None) => {
            tracing::warn!(
                "no agent credential: coordinators refuse this agent. Give it its token \
                 (goflow agent-token create --id ID on a coordinator's host; then GOFLOW_AGENT_TOKEN, \
                 --agent-token-file or Worker.AgentToken)"
            );
            None
        }
    };
    let broker = settings.broker.clone().context(
        "an agent takes its work from Redis: set Common.Broker or GOFLOW_BROKER (host:port or redis://...)",
    )?;
    let queue = Arc::new(
        RedisQueue::connect_with_ca(&broker, &settings.broker_source, settings.redis_ca_pem()?).await?,
    );
    let broker = goflow_core::redact_url(&broker);
    let metrics = Arc::new(AgentMetrics::new());
    let shutdown = CancellationToken::new();
    if let Some(address) = &args.http_listen {
        serve_health(address, metrics.clone(), queue.clone(), shutdown.clone()).await?;
    }
    let mut config = AgentConfig {
        coordinators: coordinator_list(&settings.server),
        agent_id: settings.agent_id.clone(),
        slots: settings.slots,
        queues: if settings.queues.is_empty() {
            vec!["default".into()]
        } else {
            settings.queues.clone()
        },
        heartbeat_interval: settings.heartbeat_interval,
        secret: credential,
        tls: client_tls(
            settings.ca.as_deref(),
            settings.tls_cert.as_deref(),
            settings.tls_key.as_deref(),
        )?,
        metrics: Some(metrics),
        drain_timeout: settings.drain_timeout,
        spool_bytes: settings.spool_bytes,
        ..AgentConfig::default()
    };
    if let Some(dir) = &settings.spool_dir {
        config.spool_dir = dir.clone();
    }
    warn_plaintext_coordinators(
        &config.coordinators,
        "the agent sends its secret (GOFLOW_AGENT_SECRET)",
    );
    tracing::info!(
        "goflow agent: coordinators {}, Redis {broker}, {} slots, queues {}",
        config.coordinators.join(","),
        config.slots,
        config.queues.join(",")
    );
    let stop = Stop::new();
    stop_on_signals(stop.clone(), true);
    let result = crate::run_agent_until(config, queue, stop).await;
    // The metrics listener stops with the agent.
    shutdown.cancel();
    result
}

/// `--http-listen`: /metrics, /healthz, and /readyz (a coordinator answers and Redis too).
async fn serve_health(
    address: &str,
    metrics: Arc<AgentMetrics>,
    redis: Arc<RedisQueue>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics and health on {address} (--http-listen)"))?;
    tracing::info!("metrics and health on http://{}", listener.local_addr()?);
    let text = metrics.clone();
    let ready: health::ReadyCheck = Arc::new(move || {
        let (answers, redis) = (metrics.clone(), redis.clone());
        Box::pin(async move {
            let mut missing = vec![];
            if !answers.coordinator_answers() {
                missing.push("no coordinator answers".to_string());
            }
            match tokio::time::timeout(Duration::from_secs(3), redis.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => missing.push(format!("Redis unreachable ({e:#})")),
                Err(_) => missing.push("Redis unreachable (no answer within 3s)".into()),
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not ready: {}", missing.join("; ")))
            }
        })
    });
    let app = health::routes(Arc::new(move || text.encode()), ready, true);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!("metrics and health listener stopped: {e}");
        }
    });
    Ok(())
}

//! `goflow`: the server binary (standalone, coordinator, agent, migrate), and the seed's
//! operator verbs (run, dep, kill, do_all_job), which are goflowctl's.

use goflow_coordinator::seed_verbs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use goflow_coordinator::config::{Role, Settings, with_scheme};
use goflow_coordinator::standalone::Standalone;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "goflow",
    version,
    about = "goflow: a distributed task scheduler for data pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs coordinator, one agent and the web UI in one process on SQLite: nothing to install.
    Standalone(ServeArgs),
    /// Runs the coordinator (the seed's `scheduler`). With Common.Broker (Redis) it dispatches
    /// to `goflow agent` processes; without, it runs tasks on an embedded agent.
    #[command(alias = "scheduler")]
    Coordinator(ServeArgs),
    /// Runs an agent (the seed's `executer`): takes work from Redis, reports to the coordinator.
    #[command(alias = "executer")]
    Agent(AgentArgs),
    /// Creates or upgrades the database (the seed's `init_db`).
    #[command(alias = "init_db", alias = "init-db")]
    Migrate(ConfigArgs),
    #[command(flatten)]
    Seed(seed_verbs::SeedVerb),
    /// Prints the version.
    Version,
}

#[derive(Args)]
struct ConfigArgs {
    /// Config file, JSON or TOML (the seed's goflow_conf.json loads as it is).
    #[arg(short = 'c', long = "config", env = "GOFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Folder of the SQLite database (default ./goflow-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The database: sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DB or
    /// mysql://USER:PASSWORD@HOST:PORT/DB (also GOFLOW_DATABASE_URL, Common.MysqlConn).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// gRPC address (default 127.0.0.1:7070).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Web UI address (default 127.0.0.1:8080).
    #[arg(long)]
    http_listen: Option<String>,
    /// Tries the embedded agent runs at once (the seed's Worker.Parallelism).
    #[arg(long)]
    slots: Option<usize>,
    /// Loads the demo DAG and runs it for yesterday.
    #[arg(long)]
    demo: bool,
    /// Accepted for the seed's `scheduler --ha`; high availability comes with cluster mode (etcd).
    #[arg(long, hide = true)]
    ha: bool,
}

#[derive(Args)]
struct AgentArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The coordinator's gRPC address.
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    slots: Option<usize>,
    /// Queues (routing keys) to take work from, comma-separated; `*` for all (default: default).
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
}

fn load(args: &ConfigArgs, role: Role) -> anyhow::Result<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = Settings::load(args.config.as_deref(), &env, role)?;
    if let Some(dir) = &args.data_dir {
        settings.data_dir = dir.clone();
    }
    if let Some(url) = &args.database_url {
        settings.database_url = Some(url.clone());
        settings.database_url_source = "--database-url".into();
    }
    Ok(settings)
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &settings.log_file {
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
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        // Colour only for a terminal: redirected to a file, escape codes are noise.
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Cancels on the first Ctrl-C or SIGTERM; a second one exits at once.
fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutting down (a second signal exits at once)");
                shutdown.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}

async fn serve(args: ServeArgs, standalone: bool) -> anyhow::Result<()> {
    let mut settings = load(&args.config, Role::Coordinator)?;
    settings.mode = if standalone { "standalone" } else { "coordinator" };
    if let Some(addr) = args.grpc_listen {
        settings.grpc_listen = addr;
    }
    if let Some(addr) = args.http_listen {
        settings.http_listen = addr;
    }
    if let Some(slots) = args.slots {
        anyhow::ensure!(slots > 0, "--slots must be at least 1");
        settings.agent_slots = slots;
    }
    init_logging(&settings)?;
    match (&settings.broker, standalone) {
        (Some(broker), true) => tracing::warn!(
            "Common.Broker ({broker}) is not used by standalone, which dispatches in-process; \
             `goflow coordinator` uses it to serve separate agents"
        ),
        (Some(broker), false) => tracing::info!("dispatching through Redis at {broker} to separate agents"),
        (None, false) => tracing::info!("no Common.Broker: tasks run on this coordinator's embedded agent"),
        (None, true) => {}
    }
    if args.ha {
        tracing::warn!(
            "--ha: high availability (etcd leader election) comes with cluster mode; running as the only coordinator"
        );
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let node = Standalone::start(&settings, shutdown.clone()).await?;
    if args.demo {
        node.load_demo().await?;
    }
    if standalone {
        eprintln!(
            "goflow standalone is up: web UI http://{}  gRPC {}\n  try: goflowctl --server http://{} status",
            node.http_addr, node.grpc_addr, node.grpc_addr
        );
    }
    shutdown.cancelled().await;
    node.join(Duration::from_secs(15)).await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Standalone(args) => serve(args, true).await,
        Command::Coordinator(args) => serve(args, false).await,
        Command::Agent(args) => agent(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Seed(verb) => std::process::exit(verb.run().await.into()),
        Command::Version => {
            println!("goflow {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("goflow: error: {e:#}");
        std::process::exit(1);
    }
}

async fn migrate(args: ConfigArgs) -> anyhow::Result<()> {
    let settings = load(&args, Role::Coordinator)?;
    let url = settings.database_url()?;
    let version = goflow_coordinator::store::migrate_only(&url).await?;
    println!(
        "{} database {} is up to date (schema version {version})",
        url.dialect.name(),
        url.redacted()
    );
    Ok(())
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut settings = load(&args.config, Role::Agent)?;
    if let Some(server) = args.server {
        settings.server = with_scheme(&server);
    }
    if let Some(slots) = args.slots {
        anyhow::ensure!(slots > 0, "--slots must be at least 1");
        settings.agent_slots = slots;
    }
    if !args.queues.is_empty() {
        settings.agent_queues = args.queues;
    }
    init_logging(&settings)?;
    let broker = settings.broker.clone().context(
        "an agent takes its work from Redis: set Common.Broker or GOFLOW_BROKER (host:port or redis://...)",
    )?;
    let queue =
        std::sync::Arc::new(goflow_agent::RedisQueue::connect(&broker, &settings.broker_source).await?);
    let config = goflow_agent::AgentConfig {
        coordinator: settings.server.clone(),
        agent_id: settings.agent_id.clone(),
        slots: settings.agent_slots,
        queues: if settings.agent_queues.is_empty() {
            vec!["default".into()]
        } else {
            settings.agent_queues.clone()
        },
        heartbeat_interval: settings.engine.heartbeat_interval,
        secret: settings.agent_secret.clone(),
        ..goflow_agent::AgentConfig::default()
    };
    tracing::info!(
        "goflow agent: coordinator {}, Redis {broker}, {} slots, queues {}",
        config.coordinator,
        config.slots,
        config.queues.join(",")
    );
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    goflow_agent::run_agent(config, queue, shutdown).await
}

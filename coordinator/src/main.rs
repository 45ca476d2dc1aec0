//! `goflow`: the server binary (standalone, coordinator, agent, migrate), and the seed's
//! operator verbs (run, dep, kill, do_all_job), which are goflowctl's.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use goflow_coordinator::config::{Role, Settings, with_scheme};
use goflow_coordinator::node::Node;
use tokio_util::sync::CancellationToken;

mod args;
use args::*;

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The CA and the certificate + key pair of `settings`, read.
fn client_tls(settings: &Settings) -> anyhow::Result<goflow_agent::ClientTls> {
    goflow_agent::cli::client_tls(
        settings.ca.as_deref(),
        settings.tls_cert.as_deref(),
        settings.tls_key.as_deref(),
    )
}

/// The settings of a process without a database (agent, web UI): defaults, file, environment.
fn load_file(args: &FileArgs, role: Role) -> anyhow::Result<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    Settings::load(args.config.as_deref(), &env, role)
}

fn load(args: &ConfigArgs, role: Role) -> anyhow::Result<Settings> {
    let mut settings = load_file(&args.file, role)?;
    if let Some(dir) = &args.data_dir {
        settings.data_dir = dir.clone();
    }
    if let Some(url) = &args.database_url {
        goflow_coordinator::config::refuse_secret_in_flag(
            "--database-url",
            url,
            "GOFLOW_DATABASE_URL",
            "--database-url-file",
        )?;
        settings.database_url = Some(url.clone());
        settings.database_url_source = "--database-url".into();
    }
    if let Some(path) = &args.database_url_file {
        settings.database_url = Some(goflow_coordinator::config::read_secret_file(
            path,
            "--database-url-file",
        )?);
        settings.database_url_source = format!("--database-url-file {}", path.display());
    }
    Ok(settings)
}

/// goflow's own logs (see `goflow_agent::cli::init_logging`), in `--log-format`.
fn init_logging(settings: &Settings, service: &str) -> anyhow::Result<()> {
    let format = LOG_FORMAT.get().copied().unwrap_or_default();
    goflow_agent::cli::init_logging(settings.log_file.as_deref(), &settings.warnings, format, service)
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
    apply_redis(args.redis, &mut settings)?;
    if !args.etcd_endpoints.is_empty() {
        settings.etcd_endpoints = args
            .etcd_endpoints
            .iter()
            .map(|e| with_scheme(e.trim()))
            .collect();
        goflow_coordinator::config::check_etcd_endpoints(&settings.etcd_endpoints)?;
    }
    if args.etcd_ca.is_some() {
        settings.etcd_ca = args.etcd_ca;
    }
    if args.etcd_user.is_some() {
        settings.etcd_user = args.etcd_user;
    }
    if let Some(path) = &args.etcd_password_file {
        settings.etcd_password = Some(goflow_coordinator::config::read_secret_file(
            path,
            "--etcd-password-file",
        )?);
    }
    if args.insecure_plaintext {
        settings.insecure_plaintext = true;
    }
    if let Some(key) = args.etcd_key {
        settings.etcd_key = key;
    }
    if let Some(secs) = args.lease_ttl {
        anyhow::ensure!(secs >= 2, "--lease-ttl must be at least 2 seconds");
        settings.lease_ttl = Some(Duration::from_secs(secs));
    }
    if let Some(secs) = args.worker_timeout {
        anyhow::ensure!(secs >= 1, "--worker-timeout must be at least 1 second");
        settings.engine.worker_timeout = Duration::from_secs(secs);
    }
    if let Some(address) = args.advertise_address {
        settings.advertise_address = Some(address);
    }
    if args.auth {
        settings.auth = true;
    }
    apply_drain(args.drain, &mut settings);
    if let Some(path) = args.test_clock {
        settings.engine.schedule_clock = goflow_coordinator::clock::ScheduleClock::File(path);
    }
    args.history.apply(&mut settings)?;
    args.webui_secret.apply(&mut settings)?;
    goflow_coordinator::config::check_secrets_differ(&settings)?;
    let tls = args.tls;
    for (flag, setting) in [
        (tls.tls_cert, &mut settings.tls_cert),
        (tls.tls_key, &mut settings.tls_key),
        (tls.ca, &mut settings.ca),
        (args.tls_client_ca, &mut settings.tls_client_ca),
    ] {
        if flag.is_some() {
            *setting = flag;
        }
    }
    goflow_coordinator::config::require_auth_beyond_loopback(&settings)?;
    goflow_coordinator::config::require_tls_beyond_loopback(&mut settings)?;
    anyhow::ensure!(
        !args.ha || !settings.etcd_endpoints.is_empty(),
        "--ha elects the leader through etcd, and no etcd is configured: set --etcd-endpoints, \
         GOFLOW_ETCD_ENDPOINTS or Common.EtcdEndpoints in the config file (without --ha, \
         coordinators elect a leader through the database's lease)"
    );
    init_logging(
        &settings,
        if standalone {
            "goflow-standalone"
        } else {
            "goflow-coordinator"
        },
    )?;
    if let goflow_coordinator::clock::ScheduleClock::File(path) = &settings.engine.schedule_clock {
        tracing::warn!(
            "schedules go by the test clock in {}, not the system clock (--test-clock is for tests only)",
            path.display()
        );
    }
    let broker = settings
        .broker
        .as_deref()
        .map(goflow_coordinator::config::shown_redis_url);
    match (&broker, standalone) {
        (Some(broker), true) => tracing::warn!(
            "Common.Broker ({broker}) is not used by standalone, which dispatches in-process; \
             `goflow coordinator` uses it to serve separate agents"
        ),
        (Some(broker), false) => tracing::info!("dispatching through Redis at {broker} to separate agents"),
        (None, false) => tracing::info!("no Common.Broker: tasks run on this coordinator's embedded agent"),
        (None, true) => {}
    }
    let shutdown = CancellationToken::new();
    let agent_stop = goflow_agent::Stop::new();
    let embedded_agent = Node::runs_embedded_agent(&settings);
    goflow_agent::cli::stop_on_signals(agent_stop.clone(), embedded_agent);
    if !embedded_agent {
        // No tries here to drain: the first signal stops the coordinator.
        let (drain, shutdown) = (agent_stop.drain.clone(), shutdown.clone());
        tokio::spawn(async move {
            drain.cancelled().await;
            shutdown.cancel()
        });
    }
    // With an embedded agent, `shutdown` comes once it has drained: the coordinator serves
    // (and records the tries' finishes) until then.
    let node = Node::start(&settings, shutdown.clone(), agent_stop).await?;
    if args.demo {
        node.load_demo().await?;
    }
    if standalone {
        let scheme = if node.tls { "https" } else { "http" };
        let ca = match (&settings.ca, node.tls) {
            (Some(ca), _) => format!(" --ca {}", ca.display()),
            (None, true) => format!(
                " --ca {}",
                settings.tls_cert.clone().unwrap_or_default().display()
            ),
            (None, false) => String::new(),
        };
        eprintln!(
            "goflow standalone is up: web UI {scheme}://{}  gRPC {}\n  try: goflowctl --server {scheme}://{}{ca} status",
            node.http_addr, node.grpc_addr, node.grpc_addr
        );
    }
    shutdown.cancelled().await;
    node.join(Duration::from_secs(15)).await;
    Ok(())
}

fn main() {
    goflow_coordinator::tls::install_crypto_provider();
    let cli = Cli::parse();
    runtime_for(&cli.command).block_on(run(cli));
}

/// An agent waits on its coordinator and on its tries' pipes: one thread serves that, and an
/// idle agent stays small (issue 21: under 15 MB). Every other command gets a worker a core.
fn runtime_for(command: &Command) -> tokio::runtime::Runtime {
    let mut builder = match command {
        Command::Agent(_) => return goflow_agent::cli::agent_runtime(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

async fn run(cli: Cli) {
    LOG_FORMAT.set(cli.log_format).ok();
    let result = match cli.command {
        Command::Standalone(args) => serve(args.into(), true).await,
        Command::Coordinator(args) => serve(args, false).await,
        Command::Agent(args) => agent(args).await,
        Command::Webui(args) => webui(args).await,
        Command::User(command) => user(command).await,
        Command::AgentToken(command) => agent_token(command).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Seed(verb) => std::process::exit(verb.run().await.into()),
        Command::Version => {
            println!("goflow {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    // Sends the spans not sent yet (nothing to do when traces are not exported).
    goflow_telemetry::shutdown().await;
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

/// `goflow agent`: the agent crate's, with the settings loaded as every `goflow` process loads
/// them (the agent-only `goflow-agent` loads the agent's keys alone).
async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let settings = load_file(&args.config, Role::Agent)?;
    let format = LOG_FORMAT.get().copied().unwrap_or_default();
    goflow_agent::cli::run(args, settings.agent_settings(), format).await
}

async fn webui(args: WebuiArgs) -> anyhow::Result<()> {
    let mut settings = load_file(&args.config, Role::Agent)?;
    if let Some(coordinator) = args.coordinator {
        settings.server = coordinator;
    }
    if let Some(addr) = args.http_listen {
        settings.http_listen = addr;
    }
    args.tls.apply(&mut settings);
    if args.insecure_plaintext {
        settings.insecure_plaintext = true;
    }
    args.webui_secret.apply(&mut settings)?;
    goflow_coordinator::config::check_secrets_differ(&settings)?;
    // Beyond loopback the UI takes passwords (its login form): they need TLS, as a
    // coordinator's listeners do.
    let exposed = !goflow_coordinator::config::is_loopback(&settings.http_listen);
    if exposed {
        let mut as_server = settings.clone();
        as_server.auth = true;
        as_server.grpc_listen = "127.0.0.1:0".into();
        goflow_coordinator::config::require_tls_beyond_loopback(&mut as_server)?;
        settings.warnings = as_server.warnings;
    }
    init_logging(&settings, "goflow-webui")?;
    let client = client_tls(&settings)?;
    let tls = goflow_webui::WebTls {
        serve: client.identity,
        coordinators: goflow_webui::ClientTls {
            ca_pem: client.ca_pem,
            identity: None,
            server_name: None,
        },
        require_auth: exposed,
        webui_secret: settings.webui_secret.clone(),
    };
    if let Some((cert, key)) = &tls.serve {
        goflow_webui::tls_acceptor(cert, key).context("--tls-cert / --tls-key")?;
    }
    let coordinators = goflow_agent::cli::coordinator_list(&settings.server);
    goflow_agent::cli::warn_plaintext_coordinators(
        &coordinators,
        "the web UI passes logins and session tokens",
    );
    if exposed {
        require_coordinator_auth(&coordinators, &tls.coordinators, &settings.http_listen).await?;
    }
    let listener = tokio::net::TcpListener::bind(&settings.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the web UI on {} (--http-listen)",
                settings.http_listen
            )
        })?;
    tracing::info!(
        "goflow web UI on {}://{}, coordinators {}",
        if tls.serve.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        coordinators.join(",")
    );
    if settings.webui_secret.is_some() {
        tracing::info!("naming each browser's address to the coordinators (the web UI secret is set)");
    }
    let check_tls = goflow_agent::ClientTls {
        ca_pem: tls.coordinators.ca_pem.clone(),
        identity: None,
        server_name: None,
    };
    let ready = goflow_coordinator::health::coordinators_check(&coordinators, &check_tls)?;
    let observability = goflow_coordinator::health::routes(
        std::sync::Arc::new(goflow_coordinator::metrics::webui_metrics()),
        ready,
        false,
    );
    let stop = goflow_agent::Stop::new();
    goflow_agent::cli::stop_on_signals(stop.clone(), false);
    goflow_webui::serve_tls_with(coordinators, tls, listener, observability, stop.drain).await
}

/// A web UI beyond loopback serves only coordinators with authentication on: without it,
/// anyone reaching the UI could define a task and run any command on the agents. Asks them
/// (`WhoAmI` without a token), waiting up to a minute for one to answer.
async fn require_coordinator_auth(
    coordinators: &[String],
    tls: &goflow_webui::ClientTls,
    http_listen: &str,
) -> anyhow::Result<()> {
    let app = goflow_webui::AppState::with_coordinators_tls(coordinators, tls)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let refused = |why: &str| {
        anyhow::anyhow!(
            "--http-listen {http_listen} can be reached from other machines, and {why}: anyone reaching \
             the web UI could run any command on every agent. Start the coordinators with --auth \
             (GOFLOW_AUTH=true) and add users with `goflow user add NAME --role admin`, or serve the \
             web UI on 127.0.0.1",
        )
    };
    loop {
        match app.coordinator_requires_auth().await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                return Err(refused(&format!(
                    "the coordinator at {} has authentication off",
                    coordinators.join(",")
                )));
            }
            Err(status) if tokio::time::Instant::now() >= deadline => {
                return Err(refused(&format!(
                    "no coordinator at {} answered whether it has authentication on ({})",
                    coordinators.join(","),
                    status.message()
                )));
            }
            Err(status) => {
                tracing::info!(
                    "waiting for a coordinator at {} to say whether it has authentication on: {}",
                    coordinators.join(","),
                    status.message()
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Warns when secrets would reach a coordinator beyond loopback without TLS.
async fn user(command: UserCommand) -> anyhow::Result<()> {
    use goflow_coordinator::auth::{check_name, check_password, hash_password};
    use goflow_coordinator::store::{self, Store, now_ms};
    let config = match &command {
        UserCommand::Add { config, .. }
        | UserCommand::List { config }
        | UserCommand::Passwd { config, .. }
        | UserCommand::Remove { config, .. } => config,
    };
    let settings = load(config, Role::Coordinator)?;
    // Opening migrates (and creates a SQLite file): an admin can exist before the first start.
    let store = Store::open(&settings.database_url()?).await?;
    let result = async {
        match &command {
            UserCommand::Add {
                name,
                role,
                password_stdin,
                ..
            } => {
                check_name("user name", name)?;
                let role = goflow_core::Role::parse(role).with_context(|| {
                    format!("role {role:?} is unknown (viewer, operator, editor or admin)")
                })?;
                let password = read_password(*password_stdin, &format!("password for {name}: "))?;
                check_password(&password)?;
                let hash = hash_password(&password)?;
                let mut tx = store.begin_unfenced().await?;
                anyhow::ensure!(
                    store::insert_user(&mut tx, name, role.as_str(), &hash, now_ms()).await?,
                    "user {name:?} exists (goflow user passwd {name} changes the password)"
                );
                record_local(&mut tx, "user add", "user-add", name, role.as_str()).await?;
                tx.commit().await?;
                println!("user {name} added ({role})");
            }
            UserCommand::List { .. } => {
                let mut conn = store.read().await?;
                let users = store::list_users(&mut conn).await?;
                if users.is_empty() {
                    println!("no users (goflow user add NAME --role admin)");
                }
                for (name, role, _) in users {
                    println!("{name}\t{role}");
                }
            }
            UserCommand::Passwd {
                name, password_stdin, ..
            } => {
                let password = read_password(*password_stdin, &format!("new password for {name}: "))?;
                check_password(&password)?;
                let hash = hash_password(&password)?;
                let mut tx = store.begin_unfenced().await?;
                anyhow::ensure!(
                    store::set_password(&mut tx, name, &hash, now_ms()).await?,
                    "no user {name:?}"
                );
                record_local(&mut tx, "user passwd", "user-passwd", name, "").await?;
                tx.commit().await?;
                println!("password of {name} changed; their sessions ended");
            }
            UserCommand::Remove { name, .. } => {
                let mut tx = store.begin_unfenced().await?;
                anyhow::ensure!(store::remove_user(&mut tx, name).await?, "no user {name:?}");
                // Tokens act for whoever made them: they must not outlive their maker.
                let revoked = store::revoke_tokens_created_by(&mut tx, name).await?;
                record_local(&mut tx, "user remove", "user-remove", name, &revoked.join(", ")).await?;
                tx.commit().await?;
                if revoked.is_empty() {
                    println!("user {name} removed; their sessions ended");
                } else {
                    println!(
                        "user {name} removed; their sessions ended and the API tokens they made were revoked: {}",
                        revoked.join(", ")
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

/// Records a change made on the coordinator's host (`goflow user`, `goflow agent-token`) in the
/// operations log, as the operating-system user who ran it.
async fn record_local(
    tx: &mut goflow_coordinator::store::Tx,
    verb: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> anyhow::Result<()> {
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    goflow_coordinator::store::record_operation(
        tx,
        &format!("local:{os_user}"),
        &format!("goflow {verb} (on the coordinator's host)"),
        action,
        target,
        detail,
        goflow_coordinator::store::now_ms(),
    )
    .await
}

/// `goflow agent-token create/list/revoke`: agents' own credentials, in the coordinator's
/// database (which is created or upgraded first, so this works before the first start).
async fn agent_token(command: AgentTokenCommand) -> anyhow::Result<()> {
    use goflow_coordinator::agent_identity::new_agent_token;
    use goflow_coordinator::store::{self, Store, now_ms};
    let config = match &command {
        AgentTokenCommand::Create { config, .. }
        | AgentTokenCommand::List { config }
        | AgentTokenCommand::Revoke { config, .. } => config,
    };
    let settings = load(config, Role::Coordinator)?;
    let store = Store::open(&settings.database_url()?).await?;
    let result = async {
        match &command {
            AgentTokenCommand::Create { id, replace, .. } => {
                goflow_coordinator::auth::check_name("agent id", id)?;
                let (token, hash) = new_agent_token();
                let row = store::AgentTokenRow {
                    agent_id: id.clone(),
                    created_by: format!(
                        "local:{}",
                        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                    ),
                    created_at: now_ms(),
                    last_used_at: None,
                };
                let mut tx = store.begin_unfenced().await?;
                let replaced = *replace && store::delete_agent_token(&mut tx, id).await?;
                anyhow::ensure!(
                    store::insert_agent_token(&mut tx, &row, &hash).await?,
                    "agent {id:?} has a token already: `goflow agent-token revoke {id}` first, or \
                     --replace to make a new one (the old one stops working)"
                );
                let detail = if replaced { "replaced" } else { "" };
                record_local(&mut tx, "agent-token create", "agent-token-create", id, detail).await?;
                tx.commit().await?;
                // The token alone on stdout, for `> file`; the rest to stderr.
                println!("{token}");
                eprintln!(
                    "token of agent {id} {}: give it to the agent (GOFLOW_AGENT_TOKEN, --agent-token-file \
                     or Worker.AgentToken); it is not shown again",
                    if replaced { "replaced" } else { "created" }
                );
            }
            AgentTokenCommand::List { .. } => {
                let mut conn = store.read().await?;
                let rows = store::list_agent_tokens(&mut conn).await?;
                if rows.is_empty() {
                    println!("no agent tokens (goflow agent-token create --id ID)");
                } else {
                    println!("AGENT\tCREATED\tCREATED BY\tLAST USED");
                }
                for row in rows {
                    println!(
                        "{}\t{}\t{}\t{}",
                        row.agent_id,
                        time_text(row.created_at),
                        row.created_by,
                        row.last_used_at.map_or_else(|| "never".to_string(), time_text)
                    );
                }
            }
            AgentTokenCommand::Revoke { id, .. } => {
                let mut tx = store.begin_unfenced().await?;
                anyhow::ensure!(
                    store::delete_agent_token(&mut tx, id).await?,
                    "agent {id:?} has no token (goflow agent-token list shows those that have one)"
                );
                record_local(&mut tx, "agent-token revoke", "agent-token-revoke", id, "").await?;
                tx.commit().await?;
                println!("token of agent {id} revoked: coordinators refuse it within seconds");
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

/// Milliseconds since the epoch, as UTC text.
fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A password from the terminal (not echoed), or the first line of stdin when asked or when
/// stdin is not a terminal.
fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password(prompt).context("cannot read the password from the terminal")?;
    let again =
        rpassword::prompt_password("again: ").context("cannot read the password from the terminal")?;
    anyhow::ensure!(first == again, "the two passwords differ; nothing was changed");
    Ok(first)
}

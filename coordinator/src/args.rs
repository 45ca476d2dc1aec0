//! The `goflow` binary's command line: each subcommand takes only the flags it uses, and its
//! `--help` says what they do there (a web UI has no database; an agent serves no web UI).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
// An agent's flags are the agent crate's: `goflow-agent` takes the same ones.
pub use goflow_agent::cli::{AgentArgs, DrainArgs, FileArgs, LogFormat, RedisArgs};
use goflow_coordinator::config::Settings;
use goflow_coordinator::seed_verbs;

#[derive(Parser)]
#[command(
    name = "goflow",
    version,
    about = "goflow: a distributed task scheduler for data pipelines"
)]
pub struct Cli {
    /// goflow's own log lines: pretty (text) or json (one object a line); the level comes from
    /// RUST_LOG (or GOFLOW_LOG), e.g. RUST_LOG=debug.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "GOFLOW_LOG_FORMAT",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start and matched once: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Runs coordinator, one agent and the web UI in one process on SQLite: nothing to install.
    Standalone(StandaloneArgs),
    /// Runs a coordinator (the seed's `scheduler`). With a Redis URL it dispatches to
    /// `goflow agent` processes; without, it runs tasks on an embedded agent. Any number may
    /// run on one database: one leads (elected through etcd, or the database's lease), the
    /// others pass calls to it and take over when it goes.
    #[command(alias = "scheduler")]
    Coordinator(ServeArgs),
    /// Runs an agent (the seed's `executer`): takes work from Redis, reports to a coordinator.
    #[command(alias = "executer")]
    Agent(AgentArgs),
    /// Serves the web UI alone, as a client of the coordinators.
    Webui(WebuiArgs),
    /// Creates or upgrades the database (the seed's `init_db`).
    #[command(alias = "init_db", alias = "init-db")]
    Migrate(ConfigArgs),
    /// Manages users (on the coordinator's host, with its database settings; works before the
    /// first start, and a running coordinator sees a change at once).
    #[command(subcommand)]
    User(UserCommand),
    /// Manages agents' own credentials (on the coordinator's host, with its database settings,
    /// like `goflow user`): each agent presents its token, and acts only as itself.
    #[command(subcommand, name = "agent-token")]
    AgentToken(AgentTokenCommand),
    #[command(flatten)]
    Seed(seed_verbs::SeedVerb),
    /// Prints the version.
    Version,
}

/// The config file and the database.
#[derive(Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Folder of the SQLite database (default ./goflow-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The database: sqlite://PATH, postgres://USER@HOST:PORT/DB or mysql://USER@HOST:PORT/DB.
    /// A URL with a password is refused here (any user can read it in `ps`): give it in
    /// GOFLOW_DATABASE_URL, Common.MysqlConn or --database-url-file. TLS: add
    /// ?sslmode=verify-full&sslrootcert=CA.pem (PostgreSQL) or ?ssl-mode=VERIFY_IDENTITY&ssl-ca=CA.pem
    /// (MySQL).
    #[arg(long, conflicts_with = "database_url_file")]
    pub database_url: Option<String>,
    /// A file whose first line is the database URL (password included); keep it readable by
    /// goflow's user only.
    #[arg(long, value_name = "FILE")]
    pub database_url_file: Option<PathBuf>,
}

/// `goflow standalone`: one process, its own agent, no Redis and no etcd.
#[derive(Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// gRPC address (default 127.0.0.1:7070).
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Web UI address (default 127.0.0.1:8080).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Tries the embedded agent runs at once (the seed's Worker.Parallelism).
    #[arg(long)]
    pub slots: Option<usize>,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Loads the demo DAG and runs it for yesterday.
    #[arg(long)]
    pub demo: bool,
    /// Every call needs a login or a token (also GOFLOW_AUTH=true, Common.Auth). Always
    /// needed when listening beyond loopback.
    #[arg(long)]
    pub auth: bool,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    /// With --auth, serve beyond loopback without TLS: passwords and tokens then cross the
    /// network in clear (a warning at every start). Also GOFLOW_INSECURE_PLAINTEXT=true,
    /// Common.InsecurePlaintext.
    #[arg(long)]
    pub insecure_plaintext: bool,
    #[command(flatten)]
    pub webui_secret: WebuiSecretArgs,
    /// For tests only: schedules go by the time written in this file (RFC 3339), read at
    /// every look, instead of the system clock.
    #[arg(long, value_name = "FILE", hide = true)]
    pub test_clock: Option<PathBuf>,
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// `goflow coordinator`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// gRPC address (default 127.0.0.1:7070).
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Web UI address (default 127.0.0.1:8080).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Tries the embedded agent runs at once, without Redis (the seed's Worker.Parallelism).
    #[arg(long)]
    pub slots: Option<usize>,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Loads the demo DAG and runs it for yesterday.
    #[arg(long)]
    pub demo: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// etcd endpoints for leader election, comma-separated; https://HOST:PORT for TLS (also
    /// GOFLOW_ETCD_ENDPOINTS, Common.EtcdEndpoints). Without: the database's lease elects the
    /// leader.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The CA (PEM) that an https:// etcd's certificate must be signed by (also GOFLOW_ETCD_CA,
    /// Common.EtcdCa; default: the system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// etcd's user, when etcd has authentication enabled (also GOFLOW_ETCD_USER,
    /// Common.EtcdUser); the password comes from GOFLOW_ETCD_PASSWORD, Common.EtcdPassword or
    /// --etcd-password-file.
    #[arg(long)]
    pub etcd_user: Option<String>,
    /// A file whose first line is etcd's password.
    #[arg(long, value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// The election key in etcd, one per goflow cluster (default goflow/leader).
    #[arg(long)]
    pub etcd_key: Option<String>,
    /// Seconds a leader that stops renewing keeps leading (default 3 with etcd, 5 without).
    #[arg(long, value_name = "SECS")]
    pub lease_ttl: Option<u64>,
    /// Seconds of agent silence before it is declared dead (the seed's Scheduler.WorkerTimeOut).
    #[arg(long, value_name = "SECS")]
    pub worker_timeout: Option<u64>,
    /// host:port other coordinators and clients reach this one at (default: the gRPC address,
    /// with this host's name for 0.0.0.0).
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// The seed's `scheduler --ha`: high availability through etcd, which must be configured.
    #[arg(long)]
    pub ha: bool,
    /// Every call needs a login or a token (also GOFLOW_AUTH=true, Common.Auth). Always
    /// needed when listening beyond loopback.
    #[arg(long)]
    pub auth: bool,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    /// mTLS for agents: the CA (PEM) their client certificates must be signed by; agents
    /// without one are refused (also GOFLOW_TLS_CLIENT_CA, Common.TlsClientCa).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --auth, serve beyond loopback without TLS: passwords and tokens then cross the
    /// network in clear (a warning at every start). Also GOFLOW_INSECURE_PLAINTEXT=true,
    /// Common.InsecurePlaintext.
    #[arg(long)]
    pub insecure_plaintext: bool,
    #[command(flatten)]
    pub webui_secret: WebuiSecretArgs,
    /// For tests only: schedules go by the time written in this file (RFC 3339), read at
    /// every look, instead of the system clock.
    #[arg(long, value_name = "FILE", hide = true)]
    pub test_clock: Option<PathBuf>,
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// Redis flags over the settings' values; a password in `--redis-url` is refused.
pub fn apply_redis(args: RedisArgs, settings: &mut Settings) -> anyhow::Result<()> {
    let flags = args.read()?;
    if let Some((url, source)) = flags.broker {
        settings.broker = Some(url);
        settings.broker_source = source;
    }
    if flags.redis_ca.is_some() {
        settings.redis_ca = flags.redis_ca;
    }
    Ok(())
}

/// What becomes of old runs and of logs (issue 18).
#[derive(Args)]
pub struct HistoryArgs {
    /// Every night, delete instances, tries, logs and operations older than N days, as
    /// `goflowctl clean` does (also GOFLOW_RETENTION_DAYS, Scheduler.RetentionDays).
    #[arg(long, value_name = "N")]
    pub retention_days: Option<i64>,
    /// Archive each ended try's log to object storage and drop it from the database:
    /// s3://BUCKET/PREFIX (credentials, region and endpoint from the AWS_* environment,
    /// AWS_ENDPOINT_URL for MinIO and other S3-compatible stores) or file:///DIR (a shared
    /// disk). Every coordinator needs the same one (also GOFLOW_LOG_ARCHIVE,
    /// Scheduler.LogArchive).
    #[arg(long, value_name = "URL")]
    pub log_archive: Option<String>,
}

impl HistoryArgs {
    pub fn apply(self, settings: &mut Settings) -> anyhow::Result<()> {
        if let Some(days) = self.retention_days {
            settings.engine.retention_days = Some(goflow_coordinator::config::retention_days(
                days,
                "--retention-days",
            )?);
        }
        if let Some(url) = self.log_archive {
            settings.log_archive = Some(url.trim().to_string()).filter(|u| !u.is_empty());
        }
        Ok(())
    }
}

impl From<StandaloneArgs> for ServeArgs {
    /// Standalone is a coordinator with its own agent and none of a cluster's settings.
    fn from(a: StandaloneArgs) -> Self {
        Self {
            config: a.config,
            grpc_listen: a.grpc_listen,
            http_listen: a.http_listen,
            slots: a.slots,
            drain: a.drain,
            demo: a.demo,
            redis: RedisArgs::default(),
            etcd_endpoints: vec![],
            etcd_ca: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_key: None,
            lease_ttl: None,
            worker_timeout: None,
            advertise_address: None,
            ha: false,
            auth: a.auth,
            tls: a.tls,
            tls_client_ca: None,
            insecure_plaintext: a.insecure_plaintext,
            webui_secret: a.webui_secret,
            test_clock: a.test_clock,
            history: a.history,
        }
    }
}

/// `--drain-timeout` over the settings' value.
pub fn apply_drain(args: DrainArgs, settings: &mut Settings) {
    if let Some(timeout) = args.drain_timeout {
        settings.drain_timeout = timeout;
    }
}

/// TLS for a server (issue 9): off unless a certificate and key are given.
#[derive(Args)]
pub struct ServeTlsArgs {
    /// Certificate (PEM, the chain) to serve gRPC and the web UI over TLS with (also
    /// GOFLOW_TLS_CERT, Common.TlsCert); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM; also GOFLOW_TLS_KEY, Common.TlsKey).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs the coordinators' certificates, which this process's own clients
    /// check them against (also GOFLOW_CA, Common.Ca). Not needed for a self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// The web UI's TLS: the coordinators' CA, and the certificate it serves HTTPS with.
#[derive(Args)]
pub struct WebuiTlsArgs {
    /// The CA (PEM) that https:// coordinators' certificates must be signed by (also
    /// GOFLOW_CA, Common.Ca; default: the system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Certificate (PEM, the chain) to serve the web UI over HTTPS with (also
    /// GOFLOW_TLS_CERT, Common.TlsCert); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM; also GOFLOW_TLS_KEY, Common.TlsKey).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// Flags over the settings' values.
fn apply_client_tls(
    settings: &mut Settings,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) {
    if ca.is_some() {
        settings.ca = ca;
    }
    if cert.is_some() {
        settings.tls_cert = cert;
    }
    if key.is_some() {
        settings.tls_key = key;
    }
}

impl WebuiTlsArgs {
    pub fn apply(self, settings: &mut Settings) {
        apply_client_tls(settings, self.ca, self.tls_cert, self.tls_key);
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a user; the password is asked on the terminal (or read from stdin).
    Add {
        /// The user's name (what `goflowctl login -u NAME` and the web UI's login take).
        name: String,
        /// viewer, operator, editor or admin.
        #[arg(long)]
        role: String,
        /// Reads the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Lists the users and their roles.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Sets a user's password (and ends their sessions).
    Passwd {
        /// The user's name.
        name: String,
        /// Reads the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Removes a user (and ends their sessions).
    Remove {
        /// The user's name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum AgentTokenCommand {
    /// Creates the token of agent ID and prints it alone on stdout (shown once: the database
    /// keeps only its hash).
    Create {
        /// The agent's id (what it registers as; `goflow agent --id`).
        #[arg(long)]
        id: String,
        /// Replaces the agent's token if it has one (the old one stops working).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Lists the agents that have a token, with when it was made and last used.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revokes the token of agent ID: coordinators refuse it within seconds.
    Revoke {
        /// The agent's id.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Args)]
pub struct WebuiArgs {
    #[command(flatten)]
    pub config: FileArgs,
    /// The coordinators' gRPC addresses, comma-separated (also GOFLOW_COORDINATOR,
    /// GOFLOW_SERVER).
    #[arg(long, alias = "server")]
    pub coordinator: Option<String>,
    /// Address to serve the web UI on (default 127.0.0.1:8080). Beyond loopback, the web UI
    /// serves only coordinators with authentication on, and needs --tls-cert (logins carry
    /// passwords) unless --insecure-plaintext.
    #[arg(long)]
    pub http_listen: Option<String>,
    #[command(flatten)]
    pub tls: WebuiTlsArgs,
    /// Serve beyond loopback without TLS: passwords and session cookies then cross the network
    /// in clear (a warning at every start). Also GOFLOW_INSECURE_PLAINTEXT=true.
    #[arg(long)]
    pub insecure_plaintext: bool,
    #[command(flatten)]
    pub webui_secret: WebuiSecretArgs,
}

/// The secret a web UI proves itself to its coordinators with (`goflow webui` and the
/// coordinators it calls hold the same one).
#[derive(Args)]
pub struct WebuiSecretArgs {
    /// A file whose first line is the web UI's secret (16 printable characters or more; also
    /// GOFLOW_WEBUI_SECRET, Common.WebuiSecret). With it, the web UI names each browser's
    /// address to the coordinators, which slow down failed logins per browser instead of per
    /// web UI. Give it a value of its own, used for nothing else.
    #[arg(long, value_name = "FILE")]
    pub webui_secret_file: Option<PathBuf>,
}

impl WebuiSecretArgs {
    pub fn apply(self, settings: &mut Settings) -> anyhow::Result<()> {
        use goflow_coordinator::config::{check_webui_secret, read_secret_file};
        if let Some(path) = self.webui_secret_file {
            let flag = format!("--webui-secret-file {}", path.display());
            let secret = read_secret_file(&path, "--webui-secret-file")?;
            settings.webui_secret = Some(check_webui_secret(&secret, &flag)?);
        }
        Ok(())
    }
}

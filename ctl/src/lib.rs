//! `goflowctl`: the command line of goflow, a client of the coordinator's gRPC API.
//!
//! The `goflowctl` binary parses a [`Cli`] and hands it to [`execute`]. The `goflow` binary
//! does the same for the seed's verbs (`goflow run -j TASK -d DAY -down`), after
//! [`seed_args`] has rewritten the seed's spellings.

mod commands;
mod connection;
pub mod credentials;
mod day;
// Shared with the agent and the web UI: one channel per coordinator, moving past dead ones.
#[path = "../../agent/src/failover.rs"]
mod failover;
mod output;
mod seed;
mod tls;

#[cfg(test)]
mod e2e_tests;

use std::io::{self, Write};

use clap::{Parser, Subcommand};
use goflow_proto::{auth_service_client::AuthServiceClient, control_service_client::ControlServiceClient};
use tonic::{Code, Status, service::interceptor::InterceptedService};

use crate::commands::{
    agents, alerts, apply, auth, backfill, calendars, clean, coordinators, dep, eta, logs, ops, pools, run,
    status, task, tasks, version,
};
use crate::credentials::Bearer;
use crate::failover::Failover;

pub use crate::connection::*;
pub use crate::seed::seed_args;

/// The client version, sent with every call and printed by `goflowctl version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A connected client of the goflow ControlService; every call carries [`ClientMeta`].
pub type Client = ControlServiceClient<InterceptedService<Failover, ClientMeta>>;
/// A client of the AuthService over the same coordinators and metadata as [`Client`].
pub type AuthClient = AuthServiceClient<InterceptedService<Failover, ClientMeta>>;

/// goflowctl: run, inspect and operate goflow tasks.
///
/// Data dates (DAY) are written yyyymmdd or yyyy-mm-dd.
#[derive(Debug, Parser)]
#[command(name = "goflowctl", version, propagate_version = true)]
pub struct Cli {
    /// The goflow coordinators' gRPC addresses, comma-separated (http:// is optional): the
    /// first that answers is used.
    #[arg(
        long,
        global = true,
        env = "GOFLOW_SERVER",
        value_name = "URL[,URL...]",
        default_value_t = default_server()
    )]
    pub server: String,

    /// The token every call carries (an API token, or a session from `goflowctl login`);
    /// wins over the login stored for the server. Prefer the environment variable
    /// GOFLOW_TOKEN or --token-file: a flag's value is seen by every user of the machine in
    /// `ps` (goflowctl warns when it is used).
    #[arg(long, global = true, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// A file holding the token every call carries (read at each call, surrounding white
    /// space ignored); wins over GOFLOW_TOKEN and the stored login.
    #[arg(long, global = true, env = "GOFLOW_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// The CA certificate (PEM) that `https://` servers' certificates must be signed by
    /// (default: the system's trusted roots).
    #[arg(long, global = true, env = "GOFLOW_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the tasks of a DAG document (YAML or JSON).
    Apply(apply::ApplyArgs),
    /// List the tasks.
    Tasks(tasks::TasksArgs),
    /// Task definitions and their versions: `task delete ID...`, `task history ID`,
    /// `task diff ID [V1] [V2]`, `task show ID [--version N]`.
    Task(task::TaskArgs),
    /// Run or rerun a task for a day, or backfill a range of days.
    Run(run::RunArgs),
    /// Show task instances: for one day, one task, or the most recent ones.
    Status(status::StatusArgs),
    /// Print the log of an instance's try.
    Logs(logs::LogsArgs),
    /// Show a task's upstream and downstream dependencies.
    Dep(dep::DepArgs),
    /// List the agents.
    Agents(agents::AgentsArgs),
    /// List the coordinators: which one leads, its fencing token, when each was last seen.
    Coordinators(coordinators::CoordinatorsArgs),
    /// Set instances to success without running them (force pass).
    MarkSuccess(ops::MarkSuccessArgs),
    /// Stop instances and record them as killed: one, or a backfill (--from/--to, --down).
    Kill(ops::KillArgs),
    /// Remove an instance with its tries and logs (not the task).
    Delete(ops::InstanceArgs),
    /// Pause a task: no new instances are scheduled; its cron fires are held and, on unpause,
    /// run or skipped as its `catchup` policy says.
    Pause(ops::TaskArgs),
    /// Unpause a task.
    Unpause(ops::TaskArgs),
    /// Run every scheduled root task for a day.
    DoAllJob(ops::DayArgs),
    /// Show the operations log: who did what, when.
    History(ops::HistoryArgs),
    /// Delete instances, tries, logs and operations older than a day (admin), keeping
    /// unfinished instances and what they still depend on.
    Clean(clean::CleanArgs),
    /// List alerts (final failures, retries, long runs, missed deadlines) and their delivery.
    Alerts(alerts::AlertsArgs),
    /// List business calendars; `calendars show ID --year YYYY` prints a year's days.
    Calendars(calendars::CalendarsArgs),
    /// List pools (slots, slots in use and the tries holding them, instances waiting), or
    /// delete one: `pools delete ID`.
    Pools(pools::PoolsArgs),
    /// Why an instance is where it is: the chain of waits to its root causes.
    Explain(commands::explain::ExplainArgs),
    /// Predict when each unfinished instance of a data date starts and finishes, the day's
    /// finish and the critical path.
    Eta(eta::EtaArgs),
    /// Backfills: `backfill start -j TASK --from P --to P` (prints its id), `list`, `show ID`,
    /// `pause ID`, `resume ID`, `cancel ID`.
    Backfill(backfill::BackfillArgs),
    /// Print the client's and the server's versions.
    Version,
    /// Log in to the server (password from the terminal, or standard input) and keep the
    /// session token for later commands.
    Login(auth::LoginArgs),
    /// End the session and forget the token kept for the server.
    Logout,
    /// Show who the server takes this client for, and with which role.
    Whoami,
    /// API tokens for scripts and other clients (admin): create, list, revoke.
    Token(auth::TokenArgs),
}

fn default_server() -> String {
    format!("http://{}", goflow_proto::DEFAULT_GRPC_ADDR)
}

/// What the commands need besides the command line: where logins are kept, how a password is
/// read, and where notes for people go.
pub struct Context<'a> {
    /// The credentials file, or why there is none (no `HOME`).
    pub credentials: Result<credentials::Store, String>,
    /// Reads a password, showing the prompt.
    pub read_password: &'a dyn Fn(&str) -> io::Result<String>,
}

impl Context<'_> {
    pub fn store(&self) -> anyhow::Result<&credentials::Store> {
        self.credentials.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The stored logins; none (with a warning) when the file cannot be read, so that a broken
    /// file does not stop commands that need no token.
    fn stored_logins(&self, err: &mut impl Write) -> credentials::Credentials {
        let Ok(store) = &self.credentials else {
            return Default::default();
        };
        match store.load() {
            Ok(creds) => {
                if let Ok(Some(mode)) = credentials::too_open(&store.path()) {
                    let path = store.path();
                    let _ = writeln!(
                        err,
                        "warning: {} can be read by others (mode {mode:o}): chmod 600 {}",
                        path.display(),
                        path.display()
                    );
                }
                creds
            }
            Err(e) => {
                let _ = writeln!(err, "warning: ignoring stored logins: {e:#}");
                Default::default()
            }
        }
    }
}

/// The token given for every call: `--token` (with a warning: other users see it in `ps`),
/// else `--token-file`, else `GOFLOW_TOKEN`; none when none is set (or it is empty).
fn given_token(
    cli: &Cli,
    env: impl Fn(&str) -> Option<String>,
    err: &mut impl Write,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = &cli.token {
        writeln!(
            err,
            "goflowctl: warning: --token shows the token to every user of this machine (ps); \
             use GOFLOW_TOKEN, --token-file FILE or goflowctl login instead"
        )?;
        return Ok(Some(token.clone()));
    }
    if let Some(path) = &cli.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!(
                "--token-file {}: the file is empty; it should hold a token",
                path.display()
            );
        }
        return Ok(Some(token.to_string()));
    }
    Ok(env("GOFLOW_TOKEN").filter(|t| !t.trim().is_empty()))
}

/// Runs one command: results to `out`, notes for people to `err`.
pub async fn dispatch(
    cli: Cli,
    ctx: &Context<'_>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    tls::use_ca(cli.ca.as_deref())?;
    let servers = server_list(&cli.server);
    let server = servers.join(", ");
    let given = given_token(&cli, |name| std::env::var(name).ok(), err)?;
    let given = given.as_deref();
    match &cli.command {
        Command::Login(args) => return auth::login(&cli.server, args, ctx, out).await,
        Command::Logout => return auth::logout(&cli.server, given, ctx, out, err).await,
        _ => {}
    }
    let stored = if given.is_some_and(|t| !t.trim().is_empty()) {
        Default::default()
    } else {
        ctx.stored_logins(err)
    };
    let bearer: Option<Bearer> = credentials::choose_token(given, &stored, &servers, output::now_ms());
    let meta = client_meta(bearer.as_ref().map(|b| b.token.as_str()))?;
    let not_logged_in = |e: anyhow::Error| -> anyhow::Error {
        match e.downcast_ref::<Status>() {
            Some(status) if status.code() == Code::Unauthenticated => NotLoggedIn {
                server: server.clone(),
                sent: bearer.as_ref().map(|b| b.source.clone()),
                user: stored.any(&servers).map(|s| s.user.clone()),
                reason: status.message().trim().to_string(),
            }
            .into(),
            _ => e,
        }
    };
    if let Command::Version = cli.command {
        return version::run(connect(&cli.server, meta).await, out)
            .await
            .map_err(not_logged_in);
    }
    let connection = open(&cli.server, meta).await?;
    let mut client = connection.control();
    let c = &mut client;
    let result = match cli.command {
        Command::Apply(args) => apply::run(c, &args, out).await,
        Command::Tasks(args) => tasks::run(c, &args, out).await,
        Command::Task(args) => task::run(c, &args, out).await,
        Command::Run(args) => run::run(c, &args, out).await,
        Command::Status(args) => status::run(c, &args, out).await,
        Command::Logs(args) => logs::run(c, &args, out).await,
        Command::Dep(args) => dep::run(c, &args, out).await,
        Command::Agents(args) => agents::run(c, &args, out).await,
        Command::Coordinators(args) => coordinators::run(c, &args, out).await,
        Command::MarkSuccess(args) => ops::mark_success(c, &args, out).await,
        Command::Kill(args) => ops::kill(c, &args, out).await,
        Command::Delete(args) => ops::delete(c, &args, out).await,
        Command::Pause(args) => ops::set_paused(c, &args, true, out).await,
        Command::Unpause(args) => ops::set_paused(c, &args, false, out).await,
        Command::DoAllJob(args) => ops::do_all_job(c, &args, out).await,
        Command::History(args) => ops::history(c, &args, out).await,
        Command::Clean(args) => clean::run(c, &args, out).await,
        Command::Alerts(args) => alerts::run(c, &args, out).await,
        Command::Calendars(args) => calendars::run(c, &args, out).await,
        Command::Pools(args) => pools::run(c, &args, out).await,
        Command::Explain(args) => commands::explain::run(c, &args, out).await,
        Command::Eta(args) => eta::run(c, &args, out).await,
        Command::Backfill(args) => backfill::run(c, &args, out, err).await,
        Command::Whoami => auth::whoami(&mut connection.auth(), &server, out).await,
        Command::Token(args) => auth::token(&mut connection.auth(), &args, out, err).await,
        Command::Version | Command::Login(_) | Command::Logout => unreachable!("handled above"),
    };
    result.map_err(not_logged_in)
}

/// The subcommand as typed (`run`, `mark-success`), for the command's span.
fn command_name(command: &Command) -> String {
    use clap::CommandFactory;
    let debug = format!("{command:?}");
    let variant = debug.split(['(', ' ', '{']).next().unwrap_or_default();
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .find(|name| name.replace('-', "").eq_ignore_ascii_case(variant))
        .unwrap_or_else(|| variant.to_lowercase())
}

/// Runs a parsed command against its server: the result goes to stdout, a failure to stderr as
/// `error: ...`. Returns the process's exit status: 0 on success (a closed stdout included),
/// 1 on failure (a `run --wait` whose instances did not all succeed included).
pub async fn execute(cli: Cli) -> u8 {
    let server = server_list(&cli.server).join(", ");
    let ctx = Context {
        credentials: credentials::Store::from_env(),
        read_password: &auth::read_password,
    };
    // The command's span (only when traces are exported): every call below carries its
    // context, so the coordinator's work, the dispatch and the agent's run join its trace.
    let span = goflow_telemetry::span(|| {
        let name = format!("goflowctl {}", command_name(&cli.command));
        tracing::info_span!(
            "goflowctl",
            otel.name = name.as_str(),
            otel.kind = "client",
            server = server.as_str(),
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    });
    let result = tracing::Instrument::instrument(
        dispatch(cli, &ctx, &mut io::stdout(), &mut io::stderr()),
        span.clone(),
    )
    .await;
    if let Err(err) = &result {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", error_message(err, &server).as_str());
    }
    drop(span);
    // Best effort: a closed stdout is not the command's failure.
    let _ = io::stdout().flush();
    match result {
        Ok(()) => 0,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            eprintln!("error: {}", error_message(&err, &server));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::TokenSource;
    use clap::error::ErrorKind;
    use tonic::{Request, service::Interceptor};

    pub fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("goflowctl").chain(args.iter().copied()))
    }

    #[test]
    fn server_default_and_normalization() {
        // The env var would override the default; only check when it is not set.
        if std::env::var_os("GOFLOW_SERVER").is_none() {
            let cli = parse(&["tasks"]).unwrap();
            assert_eq!(normalize_server(&cli.server), "http://127.0.0.1:7070");
        }
        let cli = parse(&["--server", "goflow.example:7070", "tasks"]).unwrap();
        assert_eq!(normalize_server(&cli.server), "http://goflow.example:7070");
        // Global: also accepted after the subcommand.
        let cli = parse(&["tasks", "--server", "http://h:1/"]).unwrap();
        assert_eq!(normalize_server(&cli.server), "http://h:1");
        assert_eq!(normalize_server("https://h:1"), "https://h:1");
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["nope"]).unwrap_err().kind(), ErrorKind::InvalidSubcommand);
        let err = parse(&["run", "-j", "a", "-d", "2026-13-01"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(
            err.to_string()
                .contains(r#"invalid period "2026-13-01": expected a day (yyyymmdd or yyyy-mm-dd)"#),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn every_subcommand_parses() {
        for args in [
            &["apply", "-f", "dag.yaml", "--dry-run"][..],
            &["tasks", "-o", "json"],
            &[
                "run", "-j", "a", "-d", "20260101", "--force", "--down", "--up", "--wait",
            ],
            &[
                "run",
                "--task",
                "a",
                "--from",
                "2026-01-01",
                "--to",
                "20260105",
                "--down",
                "--wait",
            ],
            &["status", "-d", "20260101", "-j", "a", "-o", "json"],
            &["status"],
            &["logs", "-j", "a", "-d", "20260101", "--try", "2", "-f"],
            &["dep", "-j", "a", "--up", "--depth", "2", "-o", "dot"],
            &["agents", "-o", "json"],
            &["coordinators", "-o", "json"],
            &["coordinators"],
            &["mark-success", "-j", "a", "-d", "20260101", "--down"],
            &["kill", "-j", "a", "-d", "20260101"],
            &["delete", "--task", "a", "--day", "20260101"],
            &["pause", "-j", "a"],
            &["unpause", "-j", "a"],
            &["do-all-job", "-d", "20260101"],
            &["history", "-j", "a", "--limit", "5", "-o", "json"],
            &["version"],
            &["login", "-u", "alice"],
            &["logout"],
            &["whoami"],
            &[
                "token",
                "create",
                "--name",
                "ci",
                "--role",
                "operator",
                "--expires",
                "90d",
            ],
            &["token", "create", "--name", "ci", "--role", "admin"],
            &["token", "list", "-o", "json"],
            &["token", "revoke", "ci"],
            &["--token", "gft_x", "tasks"],
            &["tasks", "--token", "gft_x"],
        ] {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn command_names_are_as_typed() {
        let name = |args: &[&str]| command_name(&parse(args).unwrap().command);
        assert_eq!(name(&["run", "-j", "a", "-d", "20260101"]), "run");
        assert_eq!(
            name(&["mark-success", "-j", "a", "-d", "20260101"]),
            "mark-success"
        );
        assert_eq!(name(&["do-all-job", "-d", "20260101"]), "do-all-job");
        assert_eq!(name(&["logout"]), "logout");
        assert_eq!(name(&["token", "list"]), "token");
    }

    #[test]
    fn actor() {
        assert_eq!(actor_name(Some("alice".into())), "local:alice");
        // Without a usable $USER: the account of this uid, never "unknown".
        let os = actor_name(None);
        assert!(os.starts_with("local:") && os.len() > "local:".len(), "{os}");
        assert_eq!(actor_name(Some(String::new())), os);
        assert_eq!(actor_name(Some("ren\u{e9}".into())), os);
    }

    #[test]
    fn metadata_is_attached() {
        let mut meta = ClientMeta::new(Some("alice".into()));
        let req = meta.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("x-goflow-client").unwrap(),
            &format!("goflowctl/{VERSION}")
        );
        assert_eq!(req.metadata().get("x-goflow-actor").unwrap(), "local:alice");
    }

    #[test]
    fn the_token_travels_as_a_bearer() {
        let mut meta = ClientMeta::new(Some("alice".into()))
            .with_token("gfs_abc")
            .unwrap();
        let req = meta.call(Request::new(())).unwrap();
        let value = req.metadata().get("authorization").unwrap();
        assert_eq!(value, "Bearer gfs_abc");
        assert!(value.is_sensitive(), "kept out of logs");
        assert_eq!(req.metadata().get("x-goflow-actor").unwrap(), "local:alice");
        // No token, no header.
        let req = ClientMeta::new(None).call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(ClientMeta::new(None).with_token("two words").is_err());
    }

    #[test]
    fn token_flag_and_usage_errors() {
        assert_eq!(parse(&["tasks"]).unwrap().token, None);
        assert_eq!(
            parse(&["--token", "gft_x", "tasks"]).unwrap().token.as_deref(),
            Some("gft_x")
        );
        assert!(parse(&["--token", "gft_x", "--token-file", "f", "tasks"]).is_err());
        // --token wins, with a warning; then --token-file; then GOFLOW_TOKEN.
        let env = |name: &str| (name == "GOFLOW_TOKEN").then(|| "gft_env".to_string());
        let mut err = vec![];
        let cli = parse(&["--token", "gft_x", "tasks"]).unwrap();
        assert_eq!(
            given_token(&cli, env, &mut err).unwrap().as_deref(),
            Some("gft_x")
        );
        assert!(
            String::from_utf8(err)
                .unwrap()
                .contains("warning: --token shows the token")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "gft_file\n").unwrap();
        let cli = parse(&["--token-file", file.to_str().unwrap(), "tasks"]).unwrap();
        let mut err = vec![];
        assert_eq!(
            given_token(&cli, env, &mut err).unwrap().as_deref(),
            Some("gft_file")
        );
        assert!(err.is_empty());
        std::fs::write(&file, " \n").unwrap();
        let e = given_token(&cli, env, &mut err).unwrap_err().to_string();
        assert!(e.contains("the file is empty"), "{e}");
        let cli = parse(&["tasks"]).unwrap();
        assert_eq!(
            given_token(&cli, env, &mut err).unwrap().as_deref(),
            Some("gft_env")
        );
        assert_eq!(given_token(&cli, |_| None, &mut err).unwrap(), None);
        // The token's value never shows in --help, even from the environment.
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("GOFLOW_TOKEN"), "{help}");
        let err = parse(&["token", "create", "--name", "x", "--role", "root"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let err = parse(&[
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "viewer",
            "--expires",
            "soon",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert_eq!(
            parse(&["login"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn not_logged_in_says_how_to_log_in() {
        let text = NotLoggedIn {
            server: "http://h:1".into(),
            sent: None,
            user: None,
            reason: "no token".into(),
        }
        .to_string();
        assert_eq!(
            text,
            "not logged in to http://h:1: run `goflowctl login -u NAME`, or pass a token with \
             --token / GOFLOW_TOKEN"
        );
        let refused = |reason: &str| {
            NotLoggedIn {
                server: "http://h:1".into(),
                sent: Some(TokenSource::Given),
                user: None,
                reason: reason.into(),
            }
            .to_string()
        };
        assert_eq!(
            refused(""),
            "not logged in to http://h:1: it refused the token given with --token / GOFLOW_TOKEN; \
             run `goflowctl login -u NAME`, or pass another token"
        );
        // A server that already says how to log in is not repeated.
        assert_eq!(
            refused("expired: log in again (goflowctl login -u NAME)"),
            "not logged in to http://h:1: it refused the token given with --token / GOFLOW_TOKEN: \
             expired: log in again (goflowctl login -u NAME)"
        );
    }

    #[test]
    fn status_messages() {
        let s = Status::not_found(r#"unknown task "x""#);
        assert_eq!(status_message(&s), r#"not found: unknown task "x""#);
        let s = Status::invalid_argument(r#"invalid date "1": expected yyyymmdd or yyyy-mm-dd"#);
        assert_eq!(
            status_message(&s),
            r#"invalid date "1": expected yyyymmdd or yyyy-mm-dd"#
        );
        assert_eq!(status_message(&Status::not_found("not found: x")), "not found: x");
        assert_eq!(
            status_message(&Status::permission_denied("")),
            "permission denied"
        );
        let err = anyhow::Error::new(Status::unavailable("tcp connect error"));
        assert_eq!(
            error_message(&err, "http://h:1"),
            "cannot reach goflow at http://h:1: tcp connect error \
             (is goflow running? set --server or GOFLOW_SERVER)"
        );
        let err = anyhow::Error::new(Status::already_exists("x"));
        assert_eq!(error_message(&err, "http://h:1"), "already exists: x");
    }

    #[tokio::test]
    async fn unreachable_server_is_named() {
        // Port 1 on localhost: nothing listens there.
        let err = connect("http://127.0.0.1:1", ClientMeta::new(None))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reach goflow at http://127.0.0.1:1: "),
            "{text}"
        );
        assert!(
            text.ends_with("(is goflow running? set --server or GOFLOW_SERVER)"),
            "{text}"
        );
        let err = connect("http://bad host", ClientMeta::new(None))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid address"), "{err}");
    }
}

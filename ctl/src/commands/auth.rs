//! `goflowctl login -u NAME`, `logout`, `whoami`, `token create|list|revoke`.

use std::{
    io::{self, BufRead, IsTerminal, Write},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use goflow_proto::{
    ApiToken, CreateTokenRequest, ListTokensRequest, LoginRequest, LogoutRequest, RevokeTokenRequest,
    WhoAmIRequest,
};
use serde_json::{Value, json};
use tonic::Status;

use crate::{
    AuthClient, Context, client_meta,
    credentials::Session,
    open,
    output::{self, Format},
    server_list, status_message,
};

/// The roles, each including the ones before it.
pub const ROLES: [&str; 4] = ["viewer", "operator", "editor", "admin"];

/// How long `logout` waits for the server to end the session.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user (created on the coordinator's host with `goflow user add`).
    #[arg(short = 'u', long = "user", value_name = "NAME")]
    pub user: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; only the token is printed on standard output, and only this once.
    Create(CreateArgs),
    /// List the API tokens (never the tokens themselves).
    List(ListArgs),
    /// Revoke an API token: calls carrying it are refused from now on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The token's name, as the operations log shows it: letters, digits, `_`, `.`, `-`.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What the token may do.
    #[arg(long, value_name = "ROLE", value_parser = ROLES)]
    pub role: String,
    /// How long the token lasts (`90d`, `12h`, `1y`, ...), or `never` (the default).
    #[arg(long, value_name = "DURATION", value_parser = parse_expires)]
    pub expires: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `--expires`: milliseconds, 0 for `never`.
pub fn parse_expires(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(0);
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}): write e.g. 90d, 12h or never"))?;
    match i64::try_from(duration.as_millis()) {
        Ok(0) => Err("a token that expires at once is of no use: write e.g. 90d, or never".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("duration {text:?} is too long")),
    }
}

/// Reads a password: from the terminal without echo, after `prompt` on standard error; or one
/// line of standard input when it is not a terminal (`echo "$PW" | goflowctl login -u ci`).
pub fn read_password(prompt: &str) -> io::Result<String> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let mut err = io::stderr();
        write!(err, "{prompt}")?;
        err.flush()?;
        let _quiet = NoEcho::on(&stdin)?;
        first_line(stdin.lock())
    } else {
        first_line(stdin.lock())
    }
}

/// The first line, without its line ending (spaces are part of a password).
fn first_line(mut input: impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns the terminal's echo off (keeping the newline's) until dropped.
struct NoEcho {
    fd: i32,
    saved: libc::termios,
}

impl NoEcho {
    fn on(terminal: &impl std::os::fd::AsRawFd) -> io::Result<Self> {
        let fd = terminal.as_raw_fd();
        // SAFETY: a zeroed termios is a valid value for tcgetattr to fill; fd is open.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: fd is open and quiet a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: the settings read from this fd in `on`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// `goflowctl login -u NAME`: asks the password, logs in, keeps the session token under each
/// address of `--server`.
pub async fn login(
    servers: &str,
    args: &LoginArgs,
    ctx: &Context<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let list = server_list(servers);
    let label = list.join(", ");
    let store = ctx.store()?;
    // Login needs no token; an old one is not sent along.
    let connection = open(servers, client_meta(None)?).await?;
    let password = (ctx.read_password)(&format!("password for {} at {label}: ", args.user))
        .context("cannot read the password")?;
    if password.is_empty() {
        anyhow::bail!("no password given");
    }
    let answer = connection
        .auth()
        .login(LoginRequest {
            user: args.user.clone(),
            password,
        })
        .await
        .map_err(|status| login_failed(&status, &label))?
        .into_inner();
    if answer.token.is_empty() {
        anyhow::bail!("login failed at {label}: the server sent no token");
    }
    let user = if answer.user.is_empty() {
        args.user.clone()
    } else {
        answer.user
    };
    let session = Session {
        token: answer.token,
        user: user.clone(),
        role: answer.role.clone(),
        expires_at: answer.expires_at,
    };
    store.update(|creds| creds.insert(&list, &session))?;
    writeln!(out, "logged in as {user} ({}) at {label}", answer.role)?;
    Ok(())
}

fn login_failed(status: &Status, server: &str) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            let reason = status.message().trim();
            let reason = if reason.is_empty() {
                "wrong user or password"
            } else {
                reason
            };
            anyhow::anyhow!("login failed at {server}: {reason}")
        }
        _ => anyhow::Error::new(status.clone()).context(format!("login failed at {server}")),
    }
}

/// `goflowctl logout`: ends the session at the server (best effort) and forgets its token.
pub async fn logout(
    servers: &str,
    given: Option<&str>,
    ctx: &Context<'_>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let list = server_list(servers);
    let label = list.join(", ");
    let store = ctx.store()?;
    let creds = store.load()?;
    // The stored session, expired or not; else a session token given by hand. An API token is
    // never sent to Logout: it is revoked with `token revoke`.
    let token = list
        .iter()
        .find_map(|s| creds.servers.get(s).map(|s| s.token.clone()))
        .or_else(|| {
            given
                .map(str::trim)
                .filter(|t| t.starts_with("gfs_"))
                .map(String::from)
        });
    if let Some(token) = &token {
        let ended = async {
            let connection = open(servers, client_meta(Some(token))?).await?;
            connection.auth().logout(LogoutRequest {}).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(LOGOUT_TIMEOUT, ended).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let why = match e.downcast_ref::<Status>() {
                    Some(status) => status_message(status),
                    None => format!("{e:#}"),
                };
                writeln!(err, "warning: the server did not end the session: {why}")?;
            }
            Err(_) => writeln!(err, "warning: the server did not end the session: no answer")?,
        }
    }
    let removed = store.update(|creds| {
        let mut removed = creds.remove(&list);
        // The same session kept for other addresses of the cluster is over too.
        if let Some(token) = &token {
            let before = creds.servers.len();
            creds.servers.retain(|_, s| &s.token != token);
            removed |= creds.servers.len() != before;
        }
        removed
    });
    match removed {
        Ok(true) => writeln!(out, "logged out of {label}")?,
        Ok(false) => writeln!(out, "not logged in to {label}")?,
        Err(e) => return Err(e),
    }
    Ok(())
}

/// `goflowctl whoami`
pub async fn whoami(client: &mut AuthClient, server: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let me = client.who_am_i(WhoAmIRequest {}).await?.into_inner();
    if !me.auth_enabled {
        writeln!(out, "{server} asks for no login (authentication is off)")?;
    } else if me.role.is_empty() {
        writeln!(out, "{} at {server}", me.principal)?;
    } else {
        writeln!(out, "{} ({}) at {server}", me.principal, me.role)?;
    }
    Ok(())
}

/// `goflowctl token create|list|revoke`
pub async fn token(
    client: &mut AuthClient,
    args: &TokenArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    match &args.command {
        TokenCommand::Create(args) => {
            let answer = client
                .create_token(CreateTokenRequest {
                    name: args.name.clone(),
                    role: args.role.clone(),
                    expires_in_ms: args.expires.unwrap_or(0),
                })
                .await?
                .into_inner();
            if answer.token.is_empty() {
                anyhow::bail!("the server sent no token");
            }
            // Only the token on stdout: `TOKEN=$(goflowctl token create ...)`.
            writeln!(out, "{}", answer.token)?;
            out.flush()?;
            let info = answer.info.unwrap_or_default();
            let name = if info.name.is_empty() {
                &args.name
            } else {
                &info.name
            };
            let role = if info.role.is_empty() {
                &args.role
            } else {
                &info.role
            };
            let expires = match info.expires_at {
                0 if args.expires.unwrap_or(0) == 0 => "never expires".to_string(),
                0 => "expires in ".to_string() + &output::duration(args.expires.unwrap_or(0)),
                at => format!("expires {}", output::local_time(at)),
            };
            writeln!(
                err,
                "created token {name} ({role}, {expires}); it is shown only this once: keep it \
                 secret, and pass it in GOFLOW_TOKEN or a --token-file FILE"
            )?;
        }
        TokenCommand::List(args) => {
            let tokens = client
                .list_tokens(ListTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            match args.output {
                Format::Json => output::write_json_array(out, tokens.iter().map(to_json).collect())?,
                Format::Table if tokens.is_empty() => writeln!(out, "no tokens")?,
                Format::Table => out.write_all(render_table(&tokens, output::now_ms()).as_bytes())?,
            }
        }
        TokenCommand::Revoke(args) => {
            client
                .revoke_token(RevokeTokenRequest {
                    name: args.name.clone(),
                })
                .await?;
            writeln!(out, "revoked token {}", args.name)?;
        }
    }
    Ok(())
}

fn time_or_never(ms: i64) -> String {
    if ms == 0 {
        "never".into()
    } else {
        output::local_time(ms)
    }
}

pub fn render_table(tokens: &[ApiToken], now_ms: i64) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            let mut expires = time_or_never(t.expires_at);
            if t.expires_at != 0 && t.expires_at <= now_ms {
                expires.push_str(" (expired)");
            }
            vec![
                t.name.clone(),
                t.role.clone(),
                t.created_by.clone(),
                output::local_time(t.created_at),
                expires,
                time_or_never(t.last_used_at),
            ]
        })
        .collect();
    output::table(
        ["NAME", "ROLE", "CREATED_BY", "CREATED", "EXPIRES", "LAST_USED"],
        rows,
    )
}

pub fn to_json(t: &ApiToken) -> Value {
    json!({
        "name": t.name,
        "role": t.role,
        "created_by": t.created_by,
        "created_at": output::json_time(t.created_at),
        "expires_at": output::json_time(t.expires_at),
        "last_used_at": output::json_time(t.last_used_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_the_first_line() {
        assert_eq!(first_line(&b" p w \r\nnext\n"[..]).unwrap(), " p w ");
        assert_eq!(first_line(&b"last"[..]).unwrap(), "last");
        assert_eq!(first_line(&b""[..]).unwrap(), "");
    }

    #[test]
    fn expires_durations() {
        assert_eq!(parse_expires("90d"), Ok(90 * 86_400_000));
        assert_eq!(parse_expires("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_expires("never"), Ok(0));
        assert!(parse_expires("0s").is_err());
        assert!(parse_expires("soon").unwrap_err().contains("90d"));
    }

    #[test]
    fn table_and_json() {
        let token = ApiToken {
            name: "ci".into(),
            role: "operator".into(),
            created_by: "alice".into(),
            created_at: 1_767_225_600_000,
            expires_at: 1_767_225_601_000,
            last_used_at: 0,
        };
        let text = render_table(std::slice::from_ref(&token), 1_767_225_602_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "ROLE", "CREATED_BY", "CREATED", "EXPIRES", "LAST_USED"]
        );
        assert!(lines[1].starts_with("ci     operator   alice        "), "{text}");
        assert!(lines[1].ends_with(" (expired)   never"), "{text}");
        let v = to_json(&token);
        assert_eq!(v["created_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["last_used_at"], Value::Null);
        assert_eq!(v["name"], "ci");
    }
}

//! Runs one try's command: its own process group, timeout and kill for the whole group, and
//! output captured line by line with timestamps. It knows nothing about gRPC: log bytes go to a
//! channel and the result is a [`RunOutcome`], so it can be tested alone.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default cap of one captured output line, in bytes.
pub const DEFAULT_MAX_LOG_LINE: usize = 64 * 1024;

/// How long a group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long to keep reading output after the group was killed. Only a process that left the
/// group (setsid) can still hold the pipes open by then; we must not wait for it forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The shell that interprets `command` (`sh` in production).
    pub shell: String,
    /// The command line, given to `shell -c`.
    pub command: String,
    /// Added to the agent's own environment.
    pub env: HashMap<String, String>,
    /// `None`: no timeout.
    pub timeout: Option<Duration>,
    /// Longer lines are cut to this many bytes, with a marker.
    pub max_log_line: usize,
    /// `goflow-shim`, the supervisor that kills the try's process group if the agent dies
    /// (one per agent process, started on first use); None: no supervisor (then a killed
    /// agent leaves its commands running).
    pub shim: Option<std::path::PathBuf>,
}

impl RunSpec {
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            // An absolute path skips the PATH search (a dozen failed execs on a long PATH).
            shell: "/bin/sh".into(),
            command: command.into(),
            env: HashMap::new(),
            timeout: None,
            max_log_line: DEFAULT_MAX_LOG_LINE,
            shim: None,
        }
    }
}

/// `goflow-shim` beside the running executable, if it is there.
pub fn shim_beside_current_exe() -> Option<std::path::PathBuf> {
    let shim = std::env::current_exe().ok()?.with_file_name("goflow-shim");
    shim.is_file().then_some(shim)
}

/// Renews the lease of the supervisor of `shim` (see `bin/shim.rs`): past `until` with no new
/// lease, it stops every try's group, as the agent could not (frozen).
pub async fn renew_lease(shim: &std::path::Path, until: std::time::Instant) {
    supervisor::supervisor(shim).renew_lease(until).await;
}

/// Whether the lease of the supervisor of `shim` ran out at some moment since `since`.
pub fn lease_lapsed_since(shim: &std::path::Path, since: std::time::Instant) -> bool {
    supervisor::supervisor(shim).lapsed_since(since)
}

/// How a try ended, in the API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Success,
    Failed,
    TimedOut,
    Killed,
}

impl OutcomeKind {
    /// The `outcome` string of `ReportFinishRequest`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::Failed => "failed",
            OutcomeKind::TimedOut => "timed_out",
            OutcomeKind::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub kind: OutcomeKind,
    /// `None` when the process ended by a signal or never started.
    pub exit_code: Option<i32>,
    /// Why it ended, for people: "exit code 3", "timed out after 10s", ...
    pub message: String,
}

/// Why the runner stopped the process before it ended by itself.
enum Stop {
    Timeout(Duration),
    Killed,
}

/// Runs `spec` to its end and returns how it ended. Output lines (`<time> out| ...` and
/// `<time> err| ...`) are sent to `logs` in the order they were read; `logs` is dropped when
/// everything was sent. Cancelling `kill` stops the whole process group (outcome `killed`).
///
/// On return no process of the group is left.
pub async fn run_command(spec: RunSpec, logs: mpsc::Sender<Vec<u8>>, kill: CancellationToken) -> RunOutcome {
    // Under supervision the try runs in a group the supervisor made and watches already.
    let supervisor = spec.shim.as_deref().map(supervisor::supervisor);
    let group = match &supervisor {
        Some(supervisor) => match supervisor.new_group().await {
            Ok(group) => Some(group),
            Err(err) => {
                tracing::error!(%err, "no try supervisor: this try would outlive a killed agent");
                None
            }
        },
        None => None,
    };
    let done = async || {
        if let (Some(supervisor), Some(group)) = (&supervisor, group) {
            supervisor.done(group).await;
        }
    };
    let mut child = match command_for(&spec, group.unwrap_or(0)).spawn() {
        Ok(child) => child,
        Err(err) => {
            if let Some(group) = group {
                kill_group(group, libc::SIGKILL);
                done().await;
            }
            let message = format!("could not start `{} -c`: {err}", spec.shell);
            let _ = logs.send(log_line("err", message.as_bytes(), 0)).await;
            return RunOutcome {
                kind: OutcomeKind::Failed,
                exit_code: None,
                message,
            };
        }
    };
    // Without a supervisor, process_group(0) makes the group id the child's pid. The child is
    // not reaped until `wait` returns, so the id cannot be reused while we signal it before
    // that; under a supervisor its placeholder holds the id until `done`.
    let pgid = group.unwrap_or_else(|| child.id().expect("a just-spawned child has a pid") as libc::pid_t);

    let readers: Vec<JoinHandle<()>> = [
        child
            .stdout
            .take()
            .map(|out| spawn_reader(out, "out", spec.max_log_line, logs.clone())),
        child
            .stderr
            .take()
            .map(|err| spawn_reader(err, "err", spec.max_log_line, logs.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();

    let timeout = spec.timeout.filter(|t| !t.is_zero());
    let expiry = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };

    let (status, stop) = tokio::select! {
        status = child.wait() => (status, None),
        () = expiry => {
            (terminate_group(pgid, &mut child).await, Some(Stop::Timeout(timeout.unwrap_or_default())))
        }
        () = kill.cancelled() => (terminate_group(pgid, &mut child).await, Some(Stop::Killed)),
    };

    // The direct child is gone; background processes it left (`sleep 100 &`) would keep the
    // pipes open and outlive the try. Kill whatever remains of the group.
    kill_group(pgid, libc::SIGKILL);
    done().await;

    for mut reader in readers {
        if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reader).await.is_err() {
            reader.abort();
            let note = b"[goflow: output still held open by a process outside the group; stopped reading]";
            let _ = logs.send(log_line("err", note, 0)).await;
        }
    }

    let outcome = outcome_of(status, stop);
    if outcome.kind != OutcomeKind::Success {
        let _ = logs
            .send(log_line(
                "err",
                format!("[goflow: {}]", outcome.message).as_bytes(),
                0,
            ))
            .await;
    }
    outcome
}

/// The variables of goflow's own environment that hold secrets (database, Redis and etcd
/// credentials, the agent and web UI secrets, webhook tokens): a task never inherits them, so a command
/// that prints its environment cannot put them in its log.
pub const SECRET_ENV: &[&str] = &[
    "GOFLOW_DATABASE_URL",
    "GOFLOW_REDIS_URL",
    "GOFLOW_BROKER",
    "GOFLOW_AGENT_SECRET",
    "GOFLOW_AGENT_TOKEN",
    "GOFLOW_WEBUI_SECRET",
    "GOFLOW_ETCD_PASSWORD",
    "GOFLOW_ALERT_WEBHOOK",
];

/// `shell -c command` in process group `group`, or in a new one of its own for 0.
fn command_for(spec: &RunSpec, group: libc::pid_t) -> Command {
    let mut command = Command::new(&spec.shell);
    for name in SECRET_ENV {
        command.env_remove(name);
    }
    command
        .arg("-c")
        .arg(&spec.command)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so timeout and kill reach every process it starts.
        .process_group(group)
        // We kill the group ourselves; killing only the direct child would orphan the rest.
        .kill_on_drop(false);
    command
}

/// SIGTERM to the group, up to [`TERM_GRACE`] for the child to exit, then SIGKILL.
async fn terminate_group(pgid: libc::pid_t, child: &mut Child) -> std::io::Result<ExitStatus> {
    kill_group(pgid, libc::SIGTERM);
    if let Ok(status) = tokio::time::timeout(TERM_GRACE, child.wait()).await {
        return status;
    }
    kill_group(pgid, libc::SIGKILL);
    child.wait().await
}

/// Sends `signal` to every process of group `pgid`; an empty group is not an error.
pub fn kill_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: killpg only sends a signal; it touches no memory of ours.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, %err, "could not signal the process group");
        }
    }
}

fn outcome_of(status: std::io::Result<ExitStatus>, stop: Option<Stop>) -> RunOutcome {
    let status = match status {
        Ok(status) => status,
        Err(err) => {
            return RunOutcome {
                kind: OutcomeKind::Failed,
                exit_code: None,
                message: format!("could not wait for the process: {err}"),
            };
        }
    };
    let exit_code = status.code();
    match stop {
        Some(Stop::Timeout(after)) => RunOutcome {
            kind: OutcomeKind::TimedOut,
            exit_code,
            message: format!("timed out after {}", humanize(after)),
        },
        Some(Stop::Killed) => RunOutcome {
            kind: OutcomeKind::Killed,
            exit_code,
            message: "killed on request".into(),
        },
        None => match (exit_code, status.signal()) {
            (Some(0), _) => RunOutcome {
                kind: OutcomeKind::Success,
                exit_code,
                message: String::new(),
            },
            (Some(code), _) => RunOutcome {
                kind: OutcomeKind::Failed,
                exit_code,
                message: format!("exit code {code}"),
            },
            (None, Some(signal)) => RunOutcome {
                kind: OutcomeKind::Failed,
                exit_code: None,
                message: format!("killed by signal {signal} ({})", signal_name(signal)),
            },
            (None, None) => RunOutcome {
                kind: OutcomeKind::Failed,
                exit_code: None,
                message: format!("ended without an exit code ({status})"),
            },
        },
    }
}

/// "10s", "1m 30s", "1s 500ms": what people read in "timed out after ...".
fn humanize(duration: Duration) -> String {
    // Below a millisecond is noise here.
    let millis = Duration::from_millis(duration.as_millis() as u64);
    humantime::format_duration(millis).to_string()
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

fn spawn_reader<R>(
    reader: R,
    stream: &'static str,
    max_line: usize,
    logs: mpsc::Sender<Vec<u8>>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(read_lines(reader, stream, max_line, logs))
}

/// Reads `reader` line by line as bytes (no UTF-8 needed) and sends each line, stamped, to
/// `logs`. A line longer than `max_line` keeps its first `max_line` bytes and the rest is
/// skipped without being held in memory, so a one-line gigabyte costs `max_line` bytes.
async fn read_lines<R>(reader: R, stream: &'static str, max_line: usize, logs: mpsc::Sender<Vec<u8>>)
where
    R: AsyncRead + Unpin,
{
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut cut: usize = 0; // bytes of the current line past `max_line`
    // Once nobody listens, keep reading (and dropping) so the command never blocks on a full
    // pipe.
    let mut listening = true;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(err) => {
                tracing::warn!(stream, %err, "reading the command's output failed");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..newline.unwrap_or(buf.len())];
        let room = max_line.saturating_sub(line.len());
        let kept = room.min(part.len());
        line.extend_from_slice(&part[..kept]);
        cut += part.len() - kept;
        let used = part.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            if listening {
                listening = logs.send(log_line(stream, &line, cut)).await.is_ok();
            }
            line.clear();
            cut = 0;
        }
    }
    // The last line had no newline.
    if listening && (!line.is_empty() || cut > 0) {
        let _ = logs.send(log_line(stream, &line, cut)).await;
    }
}

/// `2026-11-24T22:30:01.123Z out| text\n`, with a marker when `cut` bytes were dropped.
fn log_line(stream: &str, text: &[u8], cut: usize) -> Vec<u8> {
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut out = Vec::with_capacity(text.len() + 64);
    out.extend_from_slice(format!("{stamp} {stream}| ").as_bytes());
    out.extend_from_slice(text);
    if cut > 0 {
        let marker = format!("… [line cut at {} bytes, {cut} more dropped]", text.len());
        out.extend_from_slice(marker.as_bytes());
    }
    out.push(b'\n');
    out
}

mod supervisor;

#[cfg(test)]
mod tests;

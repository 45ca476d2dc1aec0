//! The agent's side of `goflow-shim --supervise` (see `bin/shim.rs`): one supervisor process
//! per agent process, which hands out a new process group for each try and kills every group
//! it handed out if the agent dies, or if the agent stops renewing its lease (frozen).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The supervisor of this process for `shim`, started on first use.
pub fn supervisor(shim: &Path) -> Arc<Supervisor> {
    static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<Supervisor>>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap();
    all.entry(shim.to_path_buf())
        .or_insert_with(|| {
            Arc::new(Supervisor {
                shim: shim.to_path_buf(),
                link: tokio::sync::Mutex::new(None),
                groups: Mutex::new(HashSet::new()),
                lease: Mutex::new(Lease::default()),
            })
        })
        .clone()
}

pub struct Supervisor {
    shim: PathBuf,
    /// The running supervisor process; None before the first try, or after it died.
    link: tokio::sync::Mutex<Option<Link>>,
    /// Groups handed out and not yet done: told to a new supervisor if the old one dies.
    groups: Mutex<HashSet<libc::pid_t>>,
    /// The agent's lease, told to every supervisor process, a new one included.
    lease: Mutex<Lease>,
}

#[derive(Default)]
struct Lease {
    /// Until when the tries may run; None: no lease yet (no deadline).
    until: Option<Instant>,
    /// When the last lapse ended (the lease ran out before it was renewed).
    last_lapse_end: Option<Instant>,
}

struct Link {
    child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Supervisor {
    /// A new process group, watched from now on, for a try to start in. If the supervisor
    /// died, a new one is started and told about every group still in use.
    pub async fn new_group(&self) -> std::io::Result<libc::pid_t> {
        let mut link = self.link.lock().await;
        let mut last_error = None;
        for _ in 0..2 {
            if link.is_none() {
                *link = Some(self.start().await?);
            }
            match Self::ask_new(link.as_mut().expect("just started")).await {
                Ok(group) => {
                    self.groups.lock().unwrap().insert(group);
                    return Ok(group);
                }
                Err(err) => {
                    let mut dead = link.take().expect("in use");
                    let status = dead.child.try_wait().ok().flatten();
                    tracing::error!(%err, ?status, "the try supervisor (goflow-shim) is gone; starting another");
                    let _ = dead.child.start_kill();
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.expect("two attempts failed"))
    }

    /// The try in `group` is over and the group killed: the supervisor forgets it.
    pub async fn done(&self, group: libc::pid_t) {
        self.groups.lock().unwrap().remove(&group);
        let mut link = self.link.lock().await;
        if let Some(open) = link.as_mut()
            && let Err(err) = open
                .requests
                .write_all(format!("done {group}\n").as_bytes())
                .await
        {
            tracing::warn!(%err, "could not tell the try supervisor a try ended");
        }
    }

    /// The agent is known alive until `until`: past it with no new lease, the supervisor stops
    /// every group. Sent to the running supervisor now, and to any started later.
    pub async fn renew_lease(&self, until: Instant) {
        {
            let mut lease = self.lease.lock().unwrap();
            let now = Instant::now();
            if lease.until.is_some_and(|old| old <= now) {
                lease.last_lapse_end = Some(now);
            }
            lease.until = Some(until);
        }
        // Under the link's lock, like `new`: a group is handed out either before this lease
        // (and covered by it once sent) or after it.
        let mut link = self.link.lock().await;
        if let Some(open) = link.as_mut()
            && let Err(err) = Self::send_lease(open, Some(until)).await
        {
            // A dead supervisor is replaced at the next try, and told the lease then.
            tracing::warn!(%err, "could not renew the try supervisor's lease");
        }
    }

    /// Whether the lease ran out at some moment since `since` (it may have been renewed since):
    /// a try that ended by a signal then was stopped by the supervisor.
    pub fn lapsed_since(&self, since: Instant) -> bool {
        let lease = self.lease.lock().unwrap();
        lease.until.is_some_and(|until| until <= Instant::now())
            || lease.last_lapse_end.is_some_and(|end| end >= since)
    }

    async fn send_lease(link: &mut Link, until: Option<Instant>) -> std::io::Result<()> {
        let Some(until) = until else {
            return Ok(()); // no lease yet: no deadline
        };
        // Already past: 0, and the supervisor stops the groups at once.
        let millis = until.saturating_duration_since(Instant::now()).as_millis();
        link.requests
            .write_all(format!("lease {millis}\n").as_bytes())
            .await
    }

    async fn start(&self) -> std::io::Result<Link> {
        // Its stdin is a pipe whose write end only this process holds (tokio makes it
        // close-on-exec): end-of-file there is this process gone.
        let mut command = Command::new(&self.shim);
        // It needs none of goflow's secrets, and the tries it adopts inherit nothing from it.
        for name in super::SECRET_ENV {
            command.env_remove(name);
        }
        let mut child = command
            .arg("--supervise")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|err| {
                std::io::Error::new(err.kind(), format!("cannot start {}: {err}", self.shim.display()))
            })?;
        let mut link = Link {
            requests: child.stdin.take().expect("piped"),
            answers: BufReader::new(child.stdout.take().expect("piped")),
            child,
        };
        let adopted: Vec<libc::pid_t> = self.groups.lock().unwrap().iter().copied().collect();
        for group in adopted {
            link.requests
                .write_all(format!("track {group}\n").as_bytes())
                .await?;
        }
        // Before any `new`: a group it hands out is covered by the lease from the start.
        let until = self.lease.lock().unwrap().until;
        Self::send_lease(&mut link, until).await?;
        Ok(link)
    }

    async fn ask_new(link: &mut Link) -> std::io::Result<libc::pid_t> {
        link.requests.write_all(b"new\n").await?;
        let mut answer = String::new();
        if link.answers.read_line(&mut answer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the supervisor closed its output",
            ));
        }
        answer
            .trim()
            .parse::<libc::pid_t>()
            .ok()
            .filter(|group| *group > 1)
            .ok_or_else(|| std::io::Error::other(format!("the supervisor answered {answer:?}")))
    }
}

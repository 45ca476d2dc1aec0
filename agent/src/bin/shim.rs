//! `goflow-shim --supervise`: the agent's try supervisor. The agent starts one per process and
//! talks to it over its stdin and stdout; it takes every try's process group down if the agent
//! dies, even by SIGKILL.
//!
//! Without it, a killed agent's commands (and whatever they started in the background) keep
//! running while the coordinator dispatches the try again elsewhere: two live runs of one
//! instance. The agent holds the only write end of the supervisor's stdin, so end-of-file there
//! means exactly "the agent process is gone", however it ended. (PR_SET_PDEATHSIG fires when
//! the agent *thread* that spawned a process exits, and only for that one process.)
//!
//! Each try's group is made here *before* the try starts: the supervisor makes a placeholder
//! (`shim/placeholder.rs`: cloned, not forked) that leads a new group and only waits, and the agent
//! starts the shell inside that group. So there is no moment when a try runs in a group the
//! supervisor does not know. One spare placeholder is always ready, so the agent never waits
//! for one, and no second program is started per try (an exec per try costed about 1 ms).
//!
//! Protocol, one line each way:
//! - `new` -> `<pgid>`: a new group, tracked until `done`.
//! - `track <pgid>`: a group handed out by a previous supervisor (which died), tracked too.
//! - `done <pgid>`: the try is over and its group killed; forget it and reap its placeholder.
//! - `lease <ms>`: the agent is known alive for `<ms>` more. If no new lease comes by then,
//!   SIGTERM to every tracked group (and to any handed out until a new lease comes), SIGKILL
//!   after the grace; the supervisor serves on. Before the first lease there is no deadline.
//! - end of input: SIGTERM to every tracked group, SIGKILL after the grace, exit.
//!
//! The lease is for an agent that cannot act: frozen (SIGSTOP, a stopped VM) past the
//! coordinator's worker timeout, it is declared dead and its tries run again elsewhere. The
//! agent renews the lease at each heartbeat the coordinator answers, so the tries of an agent
//! that went silent stop before the coordinator gives them to another agent.

// Beside, not in src/bin/, where cargo would take it for a binary of its own.
#[path = "shim/placeholder.rs"]
mod placeholder;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::exit;
use std::time::{Duration, Instant};

use placeholder::{Maker, Placeholder};

/// How long the groups get between SIGTERM and SIGKILL once the agent is gone (the agent's own
/// grace for timeouts and kills).
const TERM_GRACE: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["--supervise"] {
        eprintln!("usage: goflow-shim --supervise (started by the goflow agent, which talks to it on stdin)");
        exit(2);
    }
    // SAFETY: fstat writes into `stat`; signal changes dispositions of this single-threaded
    // process before anything else runs.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut stat) != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
            eprintln!("goflow-shim: stdin is not the agent's pipe (the goflow agent starts the shim)");
            exit(2);
        }
        // A Ctrl-C or a SIGTERM meant for the agent's process group is the agent's to act on:
        // the supervisor lives exactly as long as the agent, and ends when its pipe closes.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let mut placeholders = Maker::new();
    let mut supervisor = Supervisor {
        mine: HashMap::new(),
        adopted: HashSet::new(),
        spare: placeholders.make(),
        placeholders,
        lease: None,
        lapsed: false,
        stopped: HashSet::new(),
        killing: Vec::new(),
    };
    let mut input = Vec::new();
    let mut stdout = std::io::stdout().lock();
    // Until the end of input: the agent is gone.
    'serve: while read_input(&mut input, supervisor.next_wake()) {
        while let Some(end) = input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if !supervisor.serve(&line, &mut stdout) {
                break 'serve; // the agent is gone
            }
        }
        supervisor.on_time(Instant::now());
    }
    // The agent is gone: its tries must not outlive it.
    let Supervisor {
        mut mine,
        adopted,
        spare,
        ..
    } = supervisor;
    mine.insert(spare.pid, spare);
    // The placeholders are not reaped: their stacks stay allocated until this process ends.
    let tracked: Vec<libc::pid_t> = mine.into_keys().chain(adopted).collect();
    // SAFETY: killpg only sends signals, to groups handed out for tries.
    unsafe {
        for &group in &tracked {
            libc::killpg(group, libc::SIGTERM);
        }
    }
    std::thread::sleep(TERM_GRACE);
    // SAFETY: as above.
    unsafe {
        for &group in &tracked {
            libc::killpg(group, libc::SIGKILL);
        }
    }
}

struct Supervisor {
    /// Groups led by placeholders of ours, by group id (the placeholder's pid).
    mine: HashMap<libc::pid_t, Placeholder>,
    /// Groups an earlier supervisor handed out.
    adopted: HashSet<libc::pid_t>,
    /// The next group to hand out.
    spare: Placeholder,
    placeholders: Maker,
    /// When the agent's lease runs out; None: no lease yet, no deadline.
    lease: Option<Instant>,
    /// The lease ran out and no new one came: every tracked group is being stopped, and so is
    /// any group handed out until a new lease comes.
    lapsed: bool,
    /// Groups sent SIGTERM in this lapse (once each).
    stopped: HashSet<libc::pid_t>,
    /// Groups sent SIGTERM for a lapsed lease, with when they get SIGKILL.
    killing: Vec<(libc::pid_t, Instant)>,
}

impl Supervisor {
    /// Serves one request; false when the agent is gone.
    fn serve(&mut self, line: &str, stdout: &mut impl Write) -> bool {
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        let group = arg.and_then(|g| g.parse::<libc::pid_t>().ok()).filter(|g| *g > 1);
        match (verb, group) {
            ("new", None) if arg.is_none() => {
                let answer = writeln!(stdout, "{}", self.spare.pid).and_then(|()| stdout.flush());
                // The next one is made after the answer, off the agent's path.
                let handed_out = std::mem::replace(&mut self.spare, self.placeholders.make());
                self.mine.insert(handed_out.pid, handed_out);
                if answer.is_err() {
                    return false;
                }
            }
            ("track", Some(group)) => {
                self.adopted.insert(group);
            }
            ("done", Some(group)) => {
                self.adopted.remove(&group);
                self.stopped.remove(&group);
                // Reaped below, its id may be reused: no SIGKILL may follow.
                self.killing.retain(|&(g, _)| g != group);
                if let Some(placeholder) = self.mine.remove(&group) {
                    // SAFETY: killpg and waitpid only signal and reap. Until it is reaped, our
                    // placeholder keeps the group's id from being reused, so this reaches no
                    // one else's group. (An adopted group has no such guard: it is only
                    // forgotten.) Once reaped, nothing runs on its stack; unreaped, it is never freed.
                    unsafe {
                        libc::killpg(group, libc::SIGKILL);
                        if libc::waitpid(group, std::ptr::null_mut(), 0) == group {
                            placeholder.release();
                        }
                    }
                }
            }
            ("lease", _) => match arg.and_then(|millis| millis.parse::<u64>().ok()) {
                Some(millis) => {
                    self.lease = Some(Instant::now() + Duration::from_millis(millis));
                    self.lapsed = false;
                    self.stopped.clear();
                }
                None => eprintln!("goflow-shim: ignoring a lease it cannot read: {line:?}"),
            },
            _ => eprintln!("goflow-shim: ignoring a request it does not know: {line:?}"),
        }
        true
    }

    /// When `on_time` has something to do next; None: nothing until a request comes.
    fn next_wake(&self) -> Option<Instant> {
        let lease = self.lease.filter(|_| !self.lapsed);
        let kill = self.killing.iter().map(|&(_, at)| at).min();
        lease.into_iter().chain(kill).min()
    }

    /// Stops the groups when the lease has run out: SIGTERM to each (a group handed out
    /// later too), SIGKILL after the grace.
    fn on_time(&mut self, now: Instant) {
        if self.lease.is_some_and(|lease| now >= lease) && !self.lapsed {
            self.lapsed = true;
            eprintln!(
                "goflow-shim: the agent's lease ran out (frozen or cut off): stopping its {} tries",
                self.mine.len() + self.adopted.len()
            );
        }
        if self.lapsed {
            let tracked: Vec<libc::pid_t> = self.mine.keys().chain(&self.adopted).copied().collect();
            for group in tracked {
                if self.stopped.insert(group) {
                    // SAFETY: killpg only sends a signal, to a group handed out for a try.
                    unsafe { libc::killpg(group, libc::SIGTERM) };
                    self.killing.push((group, now + TERM_GRACE));
                }
            }
        }
        self.killing.retain(|&(group, at)| {
            if now < at {
                return true;
            }
            // SAFETY: as above; `done` takes a group out of `killing` before reaping it.
            unsafe { libc::killpg(group, libc::SIGKILL) };
            false
        });
    }
}

/// Waits for input until `until` (None: for ever) and appends what came to `input`; false at
/// the end of input.
fn read_input(input: &mut Vec<u8>, until: Option<Instant>) -> bool {
    let timeout = match until {
        // Rounded up, so the deadline has passed when poll returns.
        Some(until) => until
            .saturating_duration_since(Instant::now())
            .as_nanos()
            .div_ceil(1_000_000)
            .min(i32::MAX as u128) as i32,
        None => -1,
    };
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd of ours.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout) };
    if ready < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return true;
        }
        eprintln!("goflow-shim: poll failed: {err}");
        return false;
    }
    if ready == 0 {
        return true;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: read writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => false,
        n if n < 0 => {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return true;
            }
            eprintln!("goflow-shim: reading the agent's requests failed: {err}");
            false
        }
        n => {
            input.extend_from_slice(&buf[..n as usize]);
            true
        }
    }
}

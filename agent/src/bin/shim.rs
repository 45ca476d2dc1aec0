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
//! Each try's group is made here *before* the try starts: the supervisor forks a placeholder
//! that leads a new group and only waits, and the agent starts the shell inside that group.
//! So there is no moment when a try runs in a group the supervisor does not know. One spare
//! placeholder is always ready, so the agent never waits for a fork, and no second program is
//! started per try (an exec per try costed about 1 ms).
//!
//! Protocol, one line each way:
//! - `new` -> `<pgid>`: a new group, tracked until `done`.
//! - `track <pgid>`: a group handed out by a previous supervisor (which died), tracked too.
//! - `done <pgid>`: the try is over and its group killed; forget it and reap its placeholder.
//! - end of input: SIGTERM to every tracked group, SIGKILL after the grace, exit.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::exit;
use std::time::Duration;

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
    // Groups led by placeholders of ours, and groups an earlier supervisor handed out.
    let mut mine: HashSet<libc::pid_t> = HashSet::new();
    let mut adopted: HashSet<libc::pid_t> = HashSet::new();
    let mut spare = placeholder();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        let (verb, group) = match line.split_once(' ') {
            Some((verb, group)) => (verb, group.parse::<libc::pid_t>().ok().filter(|g| *g > 1)),
            None => (line.as_str(), None),
        };
        match (verb, group) {
            ("new", None) => {
                mine.insert(spare);
                if writeln!(stdout, "{spare}").and_then(|()| stdout.flush()).is_err() {
                    break; // the agent is gone
                }
                spare = placeholder();
            }
            ("track", Some(group)) => {
                adopted.insert(group);
            }
            ("done", Some(group)) => {
                adopted.remove(&group);
                if mine.remove(&group) {
                    // SAFETY: killpg and waitpid only signal and reap. Until it is reaped, our
                    // placeholder keeps the group's id from being reused, so this reaches no
                    // one else's group. (An adopted group has no such guard: it is only
                    // forgotten.)
                    unsafe {
                        libc::killpg(group, libc::SIGKILL);
                        libc::waitpid(group, std::ptr::null_mut(), 0);
                    }
                }
            }
            _ => eprintln!("goflow-shim: ignoring a request it does not know: {line:?}"),
        }
    }
    // The agent is gone: its tries must not outlive it.
    mine.insert(spare);
    let tracked: Vec<libc::pid_t> = mine.into_iter().chain(adopted).collect();
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

/// Forks a process that leads a new group and waits there to be killed: the group a try will
/// run in. It dies with the supervisor, so an unused one never lingers.
fn placeholder() -> libc::pid_t {
    // SAFETY: the supervisor is single-threaded, so the child may run anything; it only makes
    // async-signal-safe calls anyway. `parent` is read before the fork.
    unsafe {
        let parent = libc::getpid();
        let pid = libc::fork();
        if pid < 0 {
            eprintln!("goflow-shim: fork failed: {}", std::io::Error::last_os_error());
            exit(1);
        }
        if pid == 0 {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            // Signals to the group reach it as they reach the try's own processes.
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                libc::signal(signal, libc::SIG_DFL);
            }
            // It holds no end of the agent's pipes.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            loop {
                libc::pause();
            }
        }
        // Also here, so the group exists before its id is handed out, whichever runs first.
        libc::setpgid(pid, pid);
        pid
    }
}

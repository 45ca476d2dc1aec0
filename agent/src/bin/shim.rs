//! `goflow-shim --agent-fd=FD SHELL COMMAND`: runs `SHELL -c COMMAND` inside the process group
//! the agent made for one try, and kills that whole group if the agent dies, even by SIGKILL.
//!
//! Without it, a killed agent's commands (and whatever they started in the background) keep
//! running while the coordinator dispatches the try again elsewhere: two live runs of one
//! instance. FD is the read end of a pipe whose write end only the agent process holds: the
//! shim reads end-of-file exactly when the agent process is gone, however it ended, which a
//! command's own processes cannot be asked to watch. (PR_SET_PDEATHSIG, used before, fires
//! when the agent *thread* that spawned the shim exits, killing live tries.) A tiny binary of
//! its own, so the extra exec per try costs little.
//!
//! Everything else is the command's: stdio and environment are inherited, SIGTERM from the
//! agent (timeout, kill) reaches the group directly, and the shim exits as the shell did.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, exit};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the group gets between SIGTERM and SIGKILL once the agent is gone (the agent's own
/// grace for timeouts and kills).
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Set before the group is signalled because the agent is gone.
static AGENT_GONE: AtomicBool = AtomicBool::new(false);

/// SIGTERM from the agent is for the command (it reaches the whole group); the shim waits for
/// the command to act on it. A handler rather than SIG_IGN: a caught signal is reset to its
/// default by exec, so the shell starts with normal signals without a pre-exec hook, which
/// keeps the spawn on the fast posix_spawn path.
extern "C" fn on_term(_: libc::c_int) {}

/// Blocks until the agent process is gone, then takes the group down: SIGTERM, and SIGKILL
/// after the grace (which ends the shim too).
fn watch_agent(agent_fd: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into `byte`, which outlives the call.
        let n = unsafe { libc::read(agent_fd, (&raw mut byte).cast(), 1) };
        let interrupted = n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        // Nobody writes to the pipe; end-of-file is the agent gone. Any other error leaves us
        // unable to tell, and a try nobody watches is the failure this shim exists to prevent.
        if n == 0 || (n < 0 && !interrupted) {
            break;
        }
    }
    AGENT_GONE.store(true, Ordering::SeqCst);
    // SAFETY: killpg only sends signals; group 0 is the shim's own (the try's) group.
    unsafe {
        libc::killpg(0, libc::SIGTERM);
    }
    std::thread::sleep(TERM_GRACE);
    // SAFETY: as above.
    unsafe {
        libc::killpg(0, libc::SIGKILL);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, agent_fd, shell, command] = args.as_slice() else {
        usage();
    };
    let Some(Ok(agent_fd)) = agent_fd
        .strip_prefix("--agent-fd=")
        .map(str::parse::<libc::c_int>)
    else {
        usage();
    };
    // Killing "the group" must only ever mean the try's own group, which the agent creates
    // with the shim as its leader; never a shell's or a terminal's.
    // SAFETY: getpgrp and getpid only read process ids.
    if unsafe { libc::getpgrp() != libc::getpid() } {
        eprintln!("goflow-shim: must lead its own process group (the goflow agent starts it so)");
        exit(2);
    }
    // SAFETY: fstat writes into `stat`; fcntl changes a flag of a descriptor we were given.
    // Nothing else runs yet (the process has one thread).
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(agent_fd, &mut stat) != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
            eprintln!(
                "goflow-shim: fd {agent_fd} is not the agent's pipe (the goflow agent starts the shim)"
            );
            exit(2);
        }
        // Only the shim watches; the command's processes have no use for it.
        libc::fcntl(agent_fd, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    // If the agent is already gone, the watcher sees it at once.
    std::thread::spawn(move || watch_agent(agent_fd));

    let mut shell_command = Command::new(shell);
    shell_command.arg("-c").arg(command);
    let status = shell_command.status();
    if AGENT_GONE.load(Ordering::SeqCst) {
        // The shell may have ended on the SIGTERM while others in the group ignore it: stay
        // until the watcher's SIGKILL takes the whole group, the shim with it.
        loop {
            std::thread::park();
        }
    }
    match status {
        Ok(status) => {
            if let Some(code) = status.code() {
                exit(code);
            }
            // Die the way the shell died, so the agent reports the same signal.
            let signal = status.signal().unwrap_or(libc::SIGKILL);
            // SAFETY: restoring a default disposition and raising a signal on ourselves.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
            exit(128 + signal);
        }
        Err(e) => {
            eprintln!("goflow-shim: cannot start `{shell} -c`: {e}");
            exit(127);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: goflow-shim --agent-fd=FD SHELL COMMAND (started by the goflow agent)");
    exit(2);
}

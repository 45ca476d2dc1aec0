//! `goflow-shim PARENT_PID SHELL COMMAND`: runs `SHELL -c COMMAND` inside the process group the
//! agent made for one try, and kills that whole group if the agent dies, even by SIGKILL.
//!
//! Without it, a killed agent's commands (and whatever they started in the background) keep
//! running while the coordinator dispatches the try again elsewhere: two live runs of one
//! instance. The kernel tells the shim of its parent's death (PR_SET_PDEATHSIG), which a
//! command's own processes cannot be asked to watch. A tiny binary of its own, so the extra
//! exec per try costs little.
//!
//! Everything else is the command's: stdio and environment are inherited, SIGTERM from the
//! agent (timeout, kill) reaches the group directly, and the shim exits as the shell did.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, exit};

/// The signal the kernel sends the shim when the agent dies.
const PARENT_DIED: libc::c_int = libc::SIGUSR2;

/// SIGTERM from the agent is for the command (it reaches the whole group); the shim waits for
/// the command to act on it. A handler rather than SIG_IGN: a caught signal is reset to its
/// default by exec, so the shell starts with normal signals without a pre-exec hook, which
/// keeps the spawn on the fast posix_spawn path.
extern "C" fn on_term(_: libc::c_int) {}

extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: killpg is async-signal-safe; group 0 is the shim's own (the try's) group.
    unsafe {
        libc::killpg(0, libc::SIGKILL);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, parent, shell, command] = args.as_slice() else {
        eprintln!("usage: goflow-shim PARENT_PID SHELL COMMAND (started by the goflow agent)");
        exit(2);
    };
    let Ok(parent) = parent.parse::<libc::pid_t>() else {
        eprintln!("goflow-shim: bad parent pid {parent:?}");
        exit(2);
    };
    // Killing "the group" must only ever mean the try's own group, which the agent creates
    // with the shim as its leader; never a shell's or a terminal's.
    // SAFETY: getpgrp and getpid only read process ids.
    if unsafe { libc::getpgrp() != libc::getpid() } {
        eprintln!("goflow-shim: must lead its own process group (the goflow agent starts it so)");
        exit(2);
    }
    // SAFETY: plain libc calls on this single-threaded process before anything else runs.
    unsafe {
        libc::signal(PARENT_DIED, on_parent_death as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED as libc::c_ulong, 0, 0, 0);
        // The agent may have died before the line above: then nobody is left to wait for us.
        if libc::getppid() != parent {
            libc::killpg(0, libc::SIGKILL);
        }
    }
    let mut shell_command = Command::new(shell);
    shell_command.arg("-c").arg(command);
    match shell_command.status() {
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

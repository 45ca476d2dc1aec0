//! The supervisor's placeholders (`bin/shim/placeholder.rs`), cloned by default and forked when
//! asked: both lead their group, with the signals a try's processes have, and end with it.

use super::*;
use std::io::{BufRead, Write};

/// The supervisor of `shim` with `GOFLOW_SHIM_PLACEHOLDER` set to `method` (None: unset).
fn start_supervisor(shim: &std::path::Path, method: Option<&str>) -> std::process::Child {
    let mut command = std::process::Command::new(shim);
    command.env_remove("GOFLOW_SHIM_PLACEHOLDER");
    if let Some(method) = method {
        command.env("GOFLOW_SHIM_PLACEHOLDER", method);
    }
    command
        .arg("--supervise")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A field of /proc/<pid>/status read as a hexadecimal signal set.
fn signal_set(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// Whether `a` and `b` share one address space (kcmp); None when the kernel cannot tell.
fn share_memory(a: i32, b: i32) -> Option<bool> {
    // SAFETY: kcmp only compares two processes' resources; it touches no memory of ours.
    let same = unsafe {
        libc::syscall(libc::SYS_kcmp, a, b, 1 /* KCMP_VM */, 0, 0)
    };
    (same >= 0).then_some(same == 0)
}

#[test]
fn placeholders_lead_their_group_with_default_signals_cloned_or_forked() {
    let shim = built_shim();
    for method in [None, Some("fork")] {
        let mut supervisor = start_supervisor(&shim, method);
        let mut requests = supervisor.stdin.take().unwrap();
        let mut answers = std::io::BufReader::new(supervisor.stdout.take().unwrap());
        let mut new_group = || ask_new_group(&mut requests, &mut answers);
        let groups = [new_group(), new_group(), new_group()];
        let supervisor_pid = supervisor.id() as i32;
        for group in groups {
            assert_eq!(group_of(group), group, "{method:?}: {group} leads its own group");
            assert_eq!(parent_of(group), supervisor_pid, "{method:?}");
            // A placeholder may be handed out before it has set itself up: wait for the last
            // step of each kind (a forked one moves its stdout last, a cloned one unblocks
            // the signals last).
            let deadline = Instant::now() + Duration::from_secs(10);
            let null = std::path::Path::new("/dev/null");
            while signal_set(group, "SigBlk") != 0
                || std::fs::read_link(format!("/proc/{group}/fd/1")).unwrap() != null
            {
                assert!(Instant::now() < deadline, "{method:?}: {group} is never set up");
                std::thread::sleep(Duration::from_millis(10));
            }
            let ignored = signal_set(group, "SigIgn");
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                assert_eq!(
                    ignored & (1 << (signal - 1)),
                    0,
                    "{method:?}: {group} ignores {signal}"
                );
            }
            assert_eq!(signal_set(group, "SigCgt"), 0, "{method:?}: {group} has handlers");
            for fd in [0, 1] {
                let target = std::fs::read_link(format!("/proc/{group}/fd/{fd}")).unwrap();
                assert_eq!(target, null, "{method:?}: fd {fd}");
            }
            if let Some(shared) = share_memory(group, supervisor_pid) {
                assert_eq!(
                    shared,
                    method.is_none(),
                    "{method:?}: cloned by default, forked if asked"
                );
            }
        }
        // SIGTERM to a group ends its placeholder (the default action), as it ends a try's shell.
        kill_group(groups[0], libc::SIGTERM);
        assert!(group_ends(groups[0]), "{method:?}: SIGTERM ends the placeholder");
        writeln!(requests, "done {}", groups[0]).unwrap();
        writeln!(requests, "done {}", groups[1]).unwrap();
        assert!(
            group_ends(groups[1]),
            "{method:?}: a done group is killed and reaped"
        );
        assert!(group_exists(groups[2]));
        drop(requests); // the agent is gone
        assert!(
            group_ends(groups[2]),
            "{method:?}: the agent's end ends every group"
        );
        assert!(supervisor.wait().unwrap().success());
    }
}

/// The cost of a placeholder, cloned and forked: `count` made, handed out, killed and reaped
/// one after another, as the agent's `new` and `done` ask for them. A measurement, not a
/// test: `cargo test -p goflow-agent --lib placeholder_cost -- --ignored --nocapture`, with
/// `GOFLOW_BENCH_SHIM=PATH` to measure another build of goflow-shim (a release one) and
/// `GOFLOW_BENCH_PLACEHOLDERS=N` (default 2000).
#[test]
#[ignore = "a measurement, run by hand"]
fn placeholder_cost() {
    let shim = std::env::var_os("GOFLOW_BENCH_SHIM").map_or_else(built_shim, Into::into);
    let count: u32 = std::env::var("GOFLOW_BENCH_PLACEHOLDERS").map_or(2000, |n| n.parse().unwrap());
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for method in ["clone", "fork"] {
        let mut supervisor = start_supervisor(&shim, Some(method));
        let mut requests = supervisor.stdin.take().unwrap();
        let mut answers = std::io::BufReader::new(supervisor.stdout.take().unwrap());
        let started = Instant::now();
        for _ in 0..count {
            writeln!(requests, "new").unwrap();
            let mut line = String::new();
            answers.read_line(&mut line).unwrap();
            writeln!(requests, "done {}", line.trim()).unwrap();
        }
        // The last `done` is served before a `new` is answered.
        writeln!(requests, "new").unwrap();
        answers.read_line(&mut String::new()).unwrap();
        let wall = started.elapsed();
        // utime stime cutime cstime: the supervisor's CPU and that of the placeholders it reaped.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", supervisor.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let cpu_ticks: u64 = fields[11..15].iter().map(|f| f.parse::<u64>().unwrap()).sum();
        drop(requests);
        supervisor.wait().unwrap();
        println!(
            "{method}: {count} placeholders in {:.3} s: {:.0} us each (wall, with the pipes), CPU {:.0} us each",
            wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / f64::from(count),
            cpu_ticks as f64 / ticks * 1e6 / f64::from(count),
        );
    }
}

//! The runner on real processes: groups, timeouts, kills, logs, and the goflow-shim supervisor.

use super::*;
use std::time::Instant;

mod placeholders;

/// Runs `spec` and collects everything it logged.
async fn run(spec: RunSpec, kill: CancellationToken) -> (RunOutcome, String) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(bytes) = rx.recv().await {
            all.extend_from_slice(&bytes);
        }
        all
    });
    let outcome = run_command(spec, tx, kill).await;
    let logs = collector.await.unwrap();
    (outcome, String::from_utf8_lossy(&logs).into_owned())
}

fn process_exists(pid: i32) -> bool {
    // A zombie still answers kill(pid, 0); look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::killpg(pgid, 0) } == 0;
    alive && processes_in_group(pgid).iter().any(|&pid| process_exists(pid))
}

/// Whether group `pgid` is gone within seconds. The runner returns once the killed processes
/// closed their pipes, which the kernel does a moment before they become zombies.
fn group_ends(pgid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_exists(pgid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp ...
        let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if rest.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// The pid printed first by a command that starts with `echo $$`.
fn first_pid(logs: &str) -> i32 {
    let line = logs.lines().next().expect("a first line");
    line.split("out| ").nth(1).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn captures_exit_codes() {
    let (ok, _) = run(RunSpec::new("true"), CancellationToken::new()).await;
    assert_eq!(
        ok,
        RunOutcome {
            kind: OutcomeKind::Success,
            exit_code: Some(0),
            message: "".into()
        }
    );

    let (failed, logs) = run(RunSpec::new("exit 3"), CancellationToken::new()).await;
    assert_eq!(failed.kind, OutcomeKind::Failed);
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "exit code 3");
    assert!(logs.contains("[goflow: exit code 3]"), "{logs}");
}

#[tokio::test]
async fn a_signal_death_says_which_signal() {
    let (outcome, _) = run(RunSpec::new("kill -TERM $$"), CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.message, "killed by signal 15 (SIGTERM)");
}

#[tokio::test]
async fn captures_stdout_and_stderr_with_timestamps_and_env() {
    let mut spec = RunSpec::new("echo hello $WHO; echo oops >&2; printf 'no newline'");
    spec.env.insert("WHO".into(), "world".into());
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::Success);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    for line in &lines {
        // 2026-11-24T22:30:01.123Z out| ...
        let (stamp, _) = line.split_once(' ').unwrap();
        assert_eq!(stamp.len(), 24, "{line}");
        assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{line}");
    }
    assert!(lines.iter().any(|l| l.ends_with(" out| hello world")), "{logs}");
    assert!(lines.iter().any(|l| l.ends_with(" err| oops")), "{logs}");
    assert!(lines.iter().any(|l| l.ends_with(" out| no newline")), "{logs}");
}

#[tokio::test]
async fn output_need_not_be_utf8() {
    let (outcome, logs) = run(RunSpec::new(r"printf 'a\377b\n'"), CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::Success);
    assert!(logs.contains("out| a\u{FFFD}b"), "{logs}");
}

#[tokio::test]
async fn a_long_single_line_is_cut() {
    let mut spec = RunSpec::new("head -c 1000000 /dev/zero | tr '\\0' x; echo; echo after");
    spec.max_log_line = 1000;
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::Success);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{}", &logs[..logs.len().min(3000)]);
    let kept = format!(
        "out| {}… [line cut at 1000 bytes, 999000 more dropped]",
        "x".repeat(1000)
    );
    assert!(lines[0].ends_with(&kept), "{}", lines[0]);
    assert!(lines[1].ends_with("out| after"));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let mut spec = RunSpec::new("echo $$; sleep 30 & sleep 30 & wait");
    spec.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.kind, OutcomeKind::TimedOut);
    assert_eq!(outcome.message, "timed out after 500ms");
    let pgid = first_pid(&logs);
    assert!(
        group_ends(pgid),
        "group {pgid} survived: {:?}",
        processes_in_group(pgid)
    );
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let mut spec = RunSpec::new("trap '' TERM; echo $$; sleep 30 & wait; sleep 30");
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.kind, OutcomeKind::TimedOut);
    assert!(group_ends(first_pid(&logs)));
}

#[tokio::test]
async fn kill_stops_the_group() {
    let kill = CancellationToken::new();
    let killer = {
        let kill = kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill.cancel();
        })
    };
    let started = Instant::now();
    let (outcome, logs) = run(RunSpec::new("echo $$; sleep 30 & sleep 30"), kill).await;
    killer.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outcome.kind, OutcomeKind::Killed);
    assert_eq!(outcome.message, "killed on request");
    assert!(group_ends(first_pid(&logs)));
}

#[tokio::test]
async fn background_children_do_not_outlive_the_try() {
    let started = Instant::now();
    let (outcome, logs) = run(
        RunSpec::new("echo $$; sleep 100 & echo hi"),
        CancellationToken::new(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.kind, OutcomeKind::Success);
    assert!(logs.contains("out| hi"), "{logs}");
    let pgid = first_pid(&logs);
    assert!(
        group_ends(pgid),
        "group {pgid} survived: {:?}",
        processes_in_group(pgid)
    );
}

#[tokio::test]
async fn a_missing_shell_fails_with_the_error_in_the_log() {
    let mut spec = RunSpec::new("true");
    spec.shell = "/nonexistent/sh".into();
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert_eq!(outcome.exit_code, None);
    assert!(outcome.message.contains("could not start"), "{}", outcome.message);
    assert!(
        logs.contains("err| could not start `/nonexistent/sh -c`"),
        "{logs}"
    );
}

/// goflow-shim as `cargo build -p goflow-agent --bins` left it: cargo builds no binary for a
/// library's own tests, so a stale one would test old code without a word.
/// Asks a supervisor started by a test for a new group (`new`), as the agent does.
fn ask_new_group(requests: &mut impl std::io::Write, answers: &mut impl std::io::BufRead) -> i32 {
    writeln!(requests, "new").unwrap();
    let mut line = String::new();
    answers.read_line(&mut line).unwrap();
    line.trim().parse::<i32>().unwrap()
}

fn built_shim() -> std::path::PathBuf {
    // This test binary is target/<profile>/deps/goflow_agent-<hash>.
    let exe = std::env::current_exe().unwrap();
    let shim = exe.parent().unwrap().with_file_name("goflow-shim");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/shim.rs");
    let modified = |path: &std::path::Path| path.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(&shim) else {
        panic!(
            "{} is missing: run `cargo build -p goflow-agent --bins` first",
            shim.display()
        );
    };
    assert!(
        modified(&source).is_some_and(|source| built >= source),
        "{} is older than its source: run `cargo build -p goflow-agent --bins` first",
        shim.display()
    );
    shim
}

/// A path of this test process's own in the temp directory; nothing is there yet.
fn scratch_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("goflow-runner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The process group of `pid`.
fn group_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state ppid pgrp ...
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    rest[2].parse().unwrap()
}

/// What the supervisor watches is the agent process, not the thread that spawned it: a try started
/// from a short-lived thread (spawn_blocking, block_in_place) runs on after that thread ends.
// Multi-threaded: the runtime's workers drive the pipes to the supervisor while the test's
// own thread waits for the short-lived one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_outlives_the_thread_that_started_it() {
    let (running, go) = (scratch_path("running"), scratch_path("go"));
    let mut spec = RunSpec::new(format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo finished",
        running.display(),
        go.display()
    ));
    spec.shim = Some(built_shim());
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::spawn(move || {
        let _context = runtime.enter();
        let mut try_ = Box::pin(run(spec, CancellationToken::new()));
        // Polled here until the shell runs: the supervisor and the shell are started from
        // this thread; the rest runs on the runtime.
        let waker = std::task::Waker::noop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !running.exists() {
            let poll = try_.as_mut().poll(&mut std::task::Context::from_waker(waker));
            assert!(poll.is_pending(), "the try ended at once: {poll:?}");
            assert!(Instant::now() < deadline, "the try never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&running);
        runtime.spawn(try_)
    });
    let try_ = thread.join().unwrap();
    // The thread has ended; whatever was tied to it has had time to act.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&go, "").unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), try_).await;
    let _ = std::fs::remove_file(&go);
    let (outcome, logs) = ended.expect("the try ends once told to").unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?}\n{logs}");
    assert!(logs.contains("out| finished"), "{logs}");
}

/// The parent of `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    rest[1].parse().unwrap()
}

/// Under the supervisor exit codes and signal deaths come through as they are, a timeout
/// still takes the whole group, the group is led by the supervisor's placeholder, and the
/// command's processes hold no end of the supervisor's pipes.
#[tokio::test]
async fn supervised_tries_keep_the_runner_guarantees() {
    let supervised = |command: &str| RunSpec {
        shim: Some(built_shim()),
        ..RunSpec::new(command)
    };
    let (failed, _) = run(supervised("exit 3"), CancellationToken::new()).await;
    assert_eq!(
        (failed.kind, failed.exit_code),
        (OutcomeKind::Failed, Some(3)),
        "{failed:?}"
    );
    let (signalled, _) = run(supervised("kill -TERM $$"), CancellationToken::new()).await;
    assert_eq!(signalled.message, "killed by signal 15 (SIGTERM)");

    // The shell's pid and group id (fields 1 and 5 of stat), then its descriptors, and the
    // supervisor's pipes as the supervisor (the placeholder's parent) has them.
    let mut spec = supervised(
        "cut -d' ' -f1,5 /proc/$$/stat; g=$(cut -d' ' -f5 /proc/$$/stat); \
         s=$(cut -d' ' -f4 /proc/$g/stat); echo supervisor $s $(readlink /proc/$s/fd/0) $(readlink /proc/$s/fd/1); \
         ls -l /proc/$$/fd; sleep 30 & sleep 30",
    );
    spec.timeout = Some(Duration::from_millis(500));
    let (outcome, logs) = run(spec, CancellationToken::new()).await;
    assert_eq!(outcome.kind, OutcomeKind::TimedOut, "{logs}");
    let first = logs.lines().next().unwrap().split("out| ").nth(1).unwrap();
    let [shell, pgid]: [i32; 2] = first
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert_ne!(shell, pgid, "the placeholder leads the group, not the shell");
    assert!(
        group_ends(pgid),
        "group {pgid} survived: {:?}",
        processes_in_group(pgid)
    );
    let supervisor_line = logs.lines().find(|l| l.contains("out| supervisor ")).unwrap();
    let pipes: Vec<&str> = supervisor_line
        .split_whitespace()
        .filter(|w| w.starts_with("pipe:["))
        .collect();
    assert_eq!(pipes.len(), 2, "the supervisor talks over two pipes: {logs}");
    for pipe in pipes {
        let held = logs.lines().filter(|l| l.contains(pipe)).count();
        assert_eq!(held, 1, "the shell holds the supervisor's {pipe}: {logs}");
    }
}

/// The supervisor on its own: a group per `new`, led by a placeholder; `done` ends it; the
/// end of its input (the agent gone) ends every group; anything but the agent's pipe as
/// input, or other arguments, runs nothing.
#[test]
fn the_supervisor_hands_out_groups_and_ends_them() {
    use std::io::Write;
    let shim = built_shim();
    let status = |args: &[&str], stdin: Stdio| {
        std::process::Command::new(&shim)
            .args(args)
            .stdin(stdin)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(status(&[], Stdio::piped()), Some(2), "no arguments");
    assert_eq!(
        status(&["--agent-fd=3", "/bin/sh", "true"], Stdio::piped()),
        Some(2),
        "the old form"
    );
    assert_eq!(
        status(&["--supervise"], Stdio::null()),
        Some(2),
        "stdin is not a pipe"
    );

    let mut supervisor = std::process::Command::new(&shim)
        .arg("--supervise")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut requests = supervisor.stdin.take().unwrap();
    let mut answers = std::io::BufReader::new(supervisor.stdout.take().unwrap());
    let mut new_group = || ask_new_group(&mut requests, &mut answers);
    let (first, second) = (new_group(), new_group());
    assert_ne!(first, second);
    for group in [first, second] {
        assert_eq!(group_of(group), group, "{group} leads its own group");
        assert_eq!(parent_of(group), supervisor.id() as i32);
    }
    // A process of the try's own in the second group.
    let mut try_process = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut try_process, second);
    let mut try_process = try_process.arg("300").spawn().unwrap();
    writeln!(requests, "done {first}").unwrap();
    assert!(group_ends(first), "a done group is killed and reaped");
    assert!(group_exists(second));
    drop(requests); // the agent is gone
    let status = try_process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(group_ends(second));
    assert!(supervisor.wait().unwrap().success());
}

/// A supervisor killed under a running try is replaced at the next try, and the new one is
/// told about the group still in use.
#[tokio::test]
async fn a_dead_supervisor_is_replaced() {
    // A copy of its own, so no other test's tries run under the supervisor killed here.
    let shim = scratch_path("shim");
    std::fs::copy(built_shim(), &shim).unwrap();
    let supervised = |command: String| RunSpec {
        shim: Some(shim.clone()),
        ..RunSpec::new(command)
    };
    let marker = scratch_path("supervisor-a");
    let kill = CancellationToken::new();
    let long = tokio::spawn(run(
        supervised(format!(
            "cut -d' ' -f5 /proc/$$/stat > {}; sleep 30",
            marker.display()
        )),
        kill.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let group: i32 = loop {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && let Ok(group) = text.trim().parse()
        {
            break group;
        }
        assert!(Instant::now() < deadline, "the first try never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = std::fs::remove_file(&marker);
    let old = parent_of(group);
    // SAFETY: kills the supervisor this test's try runs under.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let (outcome, logs) = run(
        supervised("s=$(cut -d' ' -f4 /proc/$(cut -d' ' -f5 /proc/$$/stat)/stat); echo $s".into()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?} {logs}");
    let new = first_pid(&logs);
    assert_ne!(new, old, "a new supervisor");
    assert!(group_exists(group), "the first try runs on");
    kill.cancel();
    let (outcome, _) = long.await.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Killed);
    assert!(group_ends(group));
    let _ = std::fs::remove_file(&shim);
}

/// Where the stand-in agent writes the pids of its tries' shells.
const STAND_IN_PIDS: &str = "GOFLOW_TEST_STAND_IN_PIDS";

/// The agent of `a_killed_agent_takes_every_try_down`, run as a process of its own (this test
/// binary again): two tries under the supervisor, then it waits to be killed.
#[tokio::test]
#[ignore = "the stand-in agent of a_killed_agent_takes_every_try_down, which runs it"]
async fn agent_stand_in() {
    let Ok(pids) = std::env::var(STAND_IN_PIDS) else {
        return;
    };
    let start = |command: String| {
        let mut spec = RunSpec::new(command);
        spec.shim = Some(built_shim());
        run(spec, CancellationToken::new())
    };
    // In the second try only a background process ignores SIGTERM: the shell ends on it,
    // the background sleep needs the SIGKILL.
    tokio::join!(
        start(format!("echo $$ >> {pids}; sleep 300 & sleep 300")),
        start(format!(
            "echo $$ >> {pids}; (trap '' TERM; sleep 300) & sleep 300"
        )),
    );
}

/// kill -9 of the agent takes every try's whole process group down.
#[test]
fn a_killed_agent_takes_every_try_down() {
    let pids = scratch_path("pids");
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "runner::tests::agent_stand_in", "--ignored"])
        .env(STAND_IN_PIDS, &pids)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let shells: Vec<i32> = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let shells: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if shells.len() == 2 {
            break shells;
        }
        if let Some(status) = agent.try_wait().unwrap() {
            panic!("the stand-in agent ended before its tries started: {status}");
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the tries never started (pids: {text:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&pids);
    let groups: Vec<i32> = shells.iter().map(|&shell| group_of(shell)).collect();
    for (shell, group) in shells.iter().zip(&groups) {
        assert_ne!(shell, group, "a placeholder leads the try's group, not the shell");
        assert!(group_exists(*group), "group {group} runs before the kill");
    }

    let supervisor = parent_of(groups[0]);
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while groups.iter().any(|&group| group_exists(group)) {
        if Instant::now() > deadline {
            let left: Vec<Vec<i32>> = groups.iter().map(|&g| processes_in_group(g)).collect();
            for &group in &groups {
                kill_group(group, libc::SIGKILL);
            }
            panic!("tries outlived their killed agent by 30s: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The supervisor follows its agent, with its spare placeholder.
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_exists(supervisor) {
        assert!(
            Instant::now() < deadline,
            "the supervisor {supervisor} outlived its agent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of the shim of a test's own: its supervisor (one per shim path and process) holds
/// a lease no other test's tries run under.
fn own_shim(name: &str) -> std::path::PathBuf {
    let shim = scratch_path(name);
    std::fs::copy(built_shim(), &shim).unwrap();
    shim
}

/// Waits for `path` to hold a line per process, `echo`ed by a try; the pids.
async fn pids_in(path: &std::path::Path, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the try never wrote its pids: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lease not renewed (a frozen agent) stops the try's whole group within lease + grace: the
/// shell by SIGTERM, a background child ignoring SIGTERM by SIGKILL after the grace.
#[tokio::test]
async fn an_unrenewed_lease_stops_the_whole_group() {
    let shim = own_shim("shim-lapse");
    let pids = scratch_path("pids-lapse");
    // Given before the supervisor starts: the first one started is told it before any group.
    let lease = Duration::from_millis(1500);
    let started = Instant::now();
    renew_lease(&shim, started + lease).await;
    let spec = RunSpec {
        shim: Some(shim.clone()),
        ..RunSpec::new(format!(
            "(trap '' TERM; sleep 300) & echo $! >> {p}; echo $$ >> {p}; sleep 300",
            p = pids.display()
        ))
    };
    let try_ = tokio::spawn(run(spec, CancellationToken::new()));
    let background = pids_in(&pids, 2).await[0];
    let (outcome, logs) = tokio::time::timeout(Duration::from_secs(30), try_)
        .await
        .expect("the lapse ends the try")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.message, "killed by signal 15 (SIGTERM)", "{logs}");
    assert!(took >= lease, "not before the lease ran out: {took:?}");
    assert!(!process_exists(background), "the background child is gone too");
    assert!(
        took < lease + TERM_GRACE + Duration::from_secs(3),
        "within lease + grace: {took:?}"
    );
    assert!(lease_lapsed_since(&shim, started));
    let _ = std::fs::remove_file(&pids);
    let _ = std::fs::remove_file(&shim);
}

/// A lease renewed in time keeps the try running well past it; with no lease at all there is
/// no deadline.
#[tokio::test]
async fn a_renewed_lease_or_none_lets_the_try_run() {
    for renewed in [true, false] {
        let shim = own_shim(&format!("shim-renewed-{renewed}"));
        let go = scratch_path(&format!("go-{renewed}"));
        let lease = Duration::from_millis(600);
        let started = Instant::now();
        if renewed {
            renew_lease(&shim, started + lease).await;
        }
        let spec = RunSpec {
            shim: Some(shim.clone()),
            ..RunSpec::new(format!(
                "while [ ! -e {} ]; do sleep 0.05; done; echo finished",
                go.display()
            ))
        };
        let try_ = tokio::spawn(run(spec, CancellationToken::new()));
        // Five leases long, renewed (over the running supervisor) every 200 ms.
        while started.elapsed() < lease * 5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if renewed {
                renew_lease(&shim, Instant::now() + lease).await;
            }
            assert!(!try_.is_finished(), "renewed: {renewed}: the try ended early");
        }
        std::fs::write(&go, "").unwrap();
        let (outcome, logs) = try_.await.unwrap();
        assert_eq!(outcome.kind, OutcomeKind::Success, "renewed: {renewed}: {logs}");
        assert!(!lease_lapsed_since(&shim, started));
        let _ = std::fs::remove_file(&go);
        let _ = std::fs::remove_file(&shim);
    }
}

/// The supervisor on its own: no lease, no deadline; a lapsed lease stops the groups it
/// tracks and those it hands out until a new lease comes, and it serves on.
#[test]
fn the_supervisor_stops_the_groups_of_a_lapsed_lease() {
    use std::io::{BufRead, Write};
    let mut supervisor = std::process::Command::new(built_shim())
        .arg("--supervise")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut requests = supervisor.stdin.take().unwrap();
    let mut answers = std::io::BufReader::new(supervisor.stdout.take().unwrap());
    let mut new_try = |requests: &mut std::process::ChildStdin| {
        writeln!(requests, "new").unwrap();
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        let group: i32 = line.trim().parse().unwrap();
        let mut try_process = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut try_process, group);
        (group, try_process.arg("300").spawn().unwrap())
    };
    let (first, mut first_process) = new_try(&mut requests);
    // A second process of the try that ignores SIGTERM (as a background child may).
    let mut stubborn = std::process::Command::new("/bin/sh");
    std::os::unix::process::CommandExt::process_group(&mut stubborn, first);
    let mut stubborn = stubborn
        .args(["-c", "trap '' TERM; exec sleep 300"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(group_exists(first), "no lease, no deadline");

    let lapse = Instant::now();
    writeln!(requests, "lease 300").unwrap();
    let status = first_process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let took = lapse.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let status = stubborn.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let took = lapse.elapsed();
    assert!(
        took >= Duration::from_millis(300) + TERM_GRACE,
        "after the grace: {took:?}"
    );
    assert!(
        took < Duration::from_millis(300) + TERM_GRACE + Duration::from_secs(3),
        "{took:?}"
    );
    writeln!(requests, "done {first}").unwrap();

    // Handed out while lapsed: stopped too.
    let (second, mut second_process) = new_try(&mut requests);
    let status = second_process.wait().unwrap();
    assert!(status.signal().is_some(), "{status:?}");
    writeln!(requests, "done {second}").unwrap();

    // A new lease: the groups run again.
    writeln!(requests, "lease 60000").unwrap();
    let (third, mut third_process) = new_try(&mut requests);
    std::thread::sleep(Duration::from_millis(500));
    assert!(group_exists(third), "covered by the new lease");
    drop(requests); // the agent is gone
    let status = third_process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(supervisor.wait().unwrap().success());
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(humanize(Duration::from_secs(10)), "10s");
    assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
}

/// A try's command never sees goflow's own secrets from the agent's environment: with the
/// agent's token a task could act as its agent (claim, finish, log for its tries).
#[test]
fn a_try_does_not_inherit_goflows_secrets() {
    let spec = RunSpec::new("true".to_string());
    let command = super::command_for(&spec, 0);
    let removed: Vec<String> = command
        .as_std()
        .get_envs()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for secret in [
        "GOFLOW_AGENT_TOKEN",
        "GOFLOW_AGENT_SECRET",
        "GOFLOW_DATABASE_URL",
        "GOFLOW_REDIS_URL",
    ] {
        assert!(
            removed.iter().any(|name| name == secret),
            "{secret} is passed to tries: {removed:?}"
        );
    }
}

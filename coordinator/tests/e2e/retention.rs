//! Retention and logs in object storage (issue 18), on the suite's database:
//! - `goflowctl clean` removes old days and keeps the rest and what is still depended on;
//!   `--retention-days` (here from the config file) does it on its own;
//! - a log of 10,000 lines is archived to a moto S3 bucket, read back byte for byte through
//!   goflowctl and the web UI, and its rows leave the database;
//! - with the store stopped, the log stays in the database, and is uploaded once it is back;
//! - a bucket that does not exist stops the start with a message that names it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use goflow_coordinator::store::{self, DatabaseUrl, Store};

use crate::sandbox::{Launch, Sandbox, free_port, parse_array, state_of, wait_for};

/// How long a small DAG may take to run, and an archive to happen (it retries with backoff).
const SETTLE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// The database, looked at directly
// ---------------------------------------------------------------------------------------------

/// Where one try's log is: (bytes stored, bytes archived, object, chunks in the database).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogPlace {
    log_bytes: i64,
    archived: i64,
    object: Option<String>,
    chunks: i64,
}

/// Runs `f` on a store opened on `url`, on a runtime of its own (the tests are synchronous).
fn with_store<T: Send + 'static>(
    url: DatabaseUrl,
    f: impl AsyncFnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let store = Store::open(&url).await.expect("open the test's database");
                let out = f(&store).await.expect("a query on the test's database");
                store.close().await;
                out
            })
    })
    .join()
    .expect("the database thread")
}

/// The first try of `task@day`'s log place.
fn log_place(sandbox: &Sandbox, task: &str, day: &str) -> LogPlace {
    let (task, day) = (task.to_string(), day.to_string());
    with_store(sandbox.database_url(), async move |store: &Store| {
        let mut conn = store.read().await?;
        let key = goflow_core::InstanceKey::new(&task, goflow_core::EtlDay::parse(&day)?);
        let row = store::instance_by_key(&mut conn, &key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no instance {key}"))?;
        let attempt = store::attempt(&mut conn, &store::attempt_id(row.id, 1))
            .await?
            .ok_or_else(|| anyhow::anyhow!("{key} has no first try"))?;
        Ok(LogPlace {
            log_bytes: attempt.log_bytes,
            archived: attempt.log_archived_bytes,
            object: attempt.log_object.clone(),
            chunks: store::count_log_chunks(&mut conn, &attempt.id).await?,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// moto, a real S3 API on loopback
// ---------------------------------------------------------------------------------------------

/// The repository's root (the e2e tests run in `coordinator/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// moto's server, installed by `scripts/ensure-tools --moto` (into `.tools/` of the repo).
fn moto_server_bin() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/ensure-tools"))
        .arg("--moto")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/ensure-tools --moto");
    assert!(
        out.status.success(),
        "scripts/ensure-tools --moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A `moto_server` on a port of 127.0.0.1, killed when dropped. It keeps everything in
/// memory: a restart starts empty.
struct Moto {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Self {
        let mut moto = Self {
            bin: moto_server_bin(),
            port: free_port(),
            child: None,
            log: dir.join("moto.log"),
        };
        moto.spawn();
        moto
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        wait_for(
            Duration::from_secs(60),
            "moto_server to answer",
            || self.log(),
            || self.curl(&["-X", "GET", &self.url()]).map(|_| ()),
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `curl -sf ARGS...`: the body, or None on any failure.
    fn curl(&self, args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "20"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        out.status.success().then_some(out.stdout)
    }

    /// Creates a bucket (moto needs no signature for it).
    fn create_bucket(&self, bucket: &str) {
        self.curl(&["-X", "PUT", &format!("{}/{bucket}", self.url())])
            .unwrap_or_else(|| panic!("cannot create bucket {bucket} on moto\n{}", self.log()));
    }

    /// An object's bytes, fetched without goflow (signed as goflow's requests are: moto
    /// refuses an anonymous read of a private object).
    fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.curl(&[
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "goflow-test:goflow-test-secret",
            &format!("{}/{bucket}/{key}", self.url()),
        ])
        .unwrap_or_else(|| panic!("cannot read {bucket}/{key} from moto\n{}", self.log()))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The `AWS_*` settings goflow reads to reach it.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "goflow-test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "goflow-test-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.url()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `goflow standalone --log-archive URL` with moto's settings.
fn archived_sandbox(moto: &Moto, url: &str) -> Sandbox {
    let env = moto.env();
    let url = url.to_string();
    Sandbox::start_with(move |root| Launch {
        args: vec![
            "standalone".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--log-archive".into(),
            url.into(),
        ],
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        ..Launch::default()
    })
}

/// The task of the archive tests: 10,000 numbered lines.
const LINES: usize = 10_000;
fn printer_dag() -> String {
    format!(
        "tasks:\n  - id: printer\n    command: \"for i in $(seq 1 {LINES}); do echo \\\"line $i of the printer\\\"; done\"\n    retries: 0\n"
    )
}

/// Runs `task@day` and waits for its success.
fn run_to_success(sandbox: &Sandbox, task: &str, day: &str) {
    sandbox.ctl_ok(&["run", "-j", task, "-d", day]);
    sandbox.wait_status(day, SETTLE, &format!("{task}@{day} to succeed"), |rows| {
        state_of(rows, task) == Some("success")
    });
}

/// The log as goflowctl prints it.
fn ctl_log(sandbox: &Sandbox, task: &str, day: &str) -> Vec<u8> {
    let out = sandbox.ctl(&["logs", "-j", task, "-d", day]);
    assert!(out.status.success(), "{}", sandbox.describe(&out));
    out.stdout
}

/// Every one of the printer's lines, once and in order (goflow prefixes each with its own
/// time and stream).
fn assert_printer_lines(log: &[u8]) {
    let text = String::from_utf8_lossy(log);
    let numbers: Vec<usize> = text
        .lines()
        .map(|line| {
            line.rsplit_once("line ")
                .and_then(|(_, rest)| rest.strip_suffix(" of the printer"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a printer line: {line:?}"))
        })
        .collect();
    assert_eq!(
        numbers,
        (1..=LINES).collect::<Vec<_>>(),
        "every line once, in order"
    );
}

/// `curl` the web UI: (the log download, the log page).
fn ui_log(sandbox: &Sandbox, task: &str, day: &str) -> (Vec<u8>, String) {
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "60", &format!("{}{path}", sandbox.ui_url())])
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "GET {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let download = get(&format!("/instances/{task}/{day}/log?try=1"));
    let page = String::from_utf8_lossy(&get(&format!("/instances/{task}/{day}"))).into_owned();
    (download, page)
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Old days go; an old success a waiting instance depends on (through a -1 day offset), the
/// failed upstream it waits behind, and the waiting instance itself stay; newer days stay.
#[test]
fn clean_removes_old_days_and_keeps_the_rest_and_what_is_depended_on() {
    let sandbox = Sandbox::start();
    sandbox.apply(
        "tasks:\n  - id: a\n    command: echo a-output\n    retries: 0\n\
         \x20 - id: gate\n    command: exit 3\n    retries: 0\n\
         \x20 - id: w\n    command: echo w\n    retries: 0\n    depends_on:\n\
         \x20     - task: a\n        day_offset: -1\n      - gate\n",
    );
    for day in ["20200101", "20200102", "20200103"] {
        run_to_success(&sandbox, "a", day);
    }
    sandbox.ctl_ok(&["run", "-j", "gate", "-d", "20200102"]);
    sandbox.wait_status("20200102", SETTLE, "gate to fail", |rows| {
        state_of(rows, "gate") == Some("failed")
    });
    sandbox.ctl_ok(&["run", "-j", "w", "-d", "20200102"]);
    let rows = sandbox.status_json("20200102");
    assert_eq!(state_of(&rows, "w"), Some("waiting"), "{rows:#?}");
    assert!(!ctl_log(&sandbox, "a", "20200102").is_empty());

    // Bad input changes nothing.
    let err = sandbox.ctl_err(&["clean", "--before", "2020-02-30", "--yes"]);
    assert!(err.contains("2020-02-30") || err.contains("invalid"), "{err}");
    let err = sandbox.ctl_err(&["clean", "--before", "29990101", "--yes"]);
    assert!(err.contains("in the future"), "{err}");
    // Without a terminal and without --yes: it says what would go and deletes nothing.
    let out = sandbox.ctl(&["clean", "--before", "20200103"]);
    assert!(!out.status.success(), "{}", sandbox.describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would delete 1 instance"),
        "{}",
        sandbox.describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        sandbox.describe(&out)
    );

    let dry = sandbox.ctl_ok(&["clean", "--before", "20200103", "--dry-run", "-o", "json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        (
            dry["instances"].as_i64(),
            dry["tries"].as_i64(),
            dry["kept"].as_i64()
        ),
        (Some(1), Some(1), Some(3)),
        "{dry:#}"
    );
    assert_eq!(
        state_of(&sandbox.status_json("20200102"), "a"),
        Some("success"),
        "a dry run deletes nothing"
    );

    let done = sandbox.ctl_ok(&["clean", "--before", "2020-01-03", "--yes"]);
    assert!(done.contains("deleted 1 instance before 20200103"), "{done}");
    assert!(
        done.contains("kept a@20200101 (success): an unfinished instance depends on it"),
        "{done}"
    );
    assert!(
        done.contains("kept gate@20200102 (failed): an unfinished instance depends on it"),
        "{done}"
    );
    assert!(done.contains("kept w@20200102 (waiting): not finished"), "{done}");

    let day1 = sandbox.status_json("20200101");
    assert_eq!(
        state_of(&day1, "a"),
        Some("success"),
        "depended on: kept\n{day1:#?}"
    );
    let day2 = sandbox.status_json("20200102");
    assert_eq!(state_of(&day2, "a"), None, "cleaned\n{day2:#?}");
    assert_eq!(state_of(&day2, "gate"), Some("failed"));
    assert_eq!(state_of(&day2, "w"), Some("waiting"));
    assert_eq!(
        state_of(&sandbox.status_json("20200103"), "a"),
        Some("success"),
        "not before the day: kept"
    );
    let gone = sandbox.ctl(&["logs", "-j", "a", "-d", "20200102"]);
    assert!(
        !gone.status.success(),
        "the cleaned instance's log is gone: {}",
        sandbox.describe(&gone)
    );
    assert!(
        !ctl_log(&sandbox, "a", "20200101").is_empty(),
        "a kept instance keeps its log"
    );

    // The clean is in the history, with what it removed.
    let history = parse_array(&sandbox.ctl_ok(&["history", "-o", "json"]));
    let clean = history
        .iter()
        .find(|op| op["action"] == "clean")
        .unwrap_or_else(|| panic!("no clean in the history: {history:#?}"));
    assert_eq!(clean["target"], "before 20200103", "{clean:#}");
    assert!(
        clean["detail"].as_str().unwrap().contains("deleted 1 instance"),
        "{clean:#}"
    );

    // Cleaning again finds nothing more to delete.
    let again = sandbox.ctl_ok(&["clean", "--before", "20200103", "--yes"]);
    assert!(again.contains("deleted 0 instances"), "{again}");
}

/// `Scheduler.RetentionDays` in the config file (`-c`): the leader cleans on its own, soon
/// after it starts when it never cleaned before.
#[test]
fn retention_days_from_the_config_file_cleans_old_days() {
    let config = std::sync::Arc::new(std::sync::Mutex::new(PathBuf::new()));
    let written = config.clone();
    let mut sandbox = Sandbox::start_with(move |root| {
        let path = root.join("goflow.json");
        std::fs::write(&path, "{\"Scheduler\": {}}").unwrap();
        *written.lock().unwrap() = path.clone();
        Launch {
            args: vec![
                "standalone".into(),
                "--data-dir".into(),
                root.join("data").into(),
                "-c".into(),
                path.into(),
            ],
            ..Launch::default()
        }
    });
    sandbox.apply("tasks:\n  - id: old\n    command: echo old\n    retries: 0\n");
    run_to_success(&sandbox, "old", "20200101");
    let today = chrono::Utc::now().date_naive().format("%Y%m%d").to_string();
    run_to_success(&sandbox, "old", &today);

    std::fs::write(
        &*config.lock().unwrap(),
        "{\"Scheduler\": {\"RetentionDays\": 30}}",
    )
    .unwrap();
    sandbox.restart();
    wait_for(
        SETTLE,
        "the nightly clean to remove 20200101",
        || sandbox.log_tail(40),
        || {
            state_of(&sandbox.status_json("20200101"), "old")
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(
        state_of(&sandbox.status_json(&today), "old"),
        Some("success"),
        "today stays"
    );
    let history = parse_array(&sandbox.ctl_ok(&["history", "-o", "json"]));
    assert!(
        history.iter().any(|op| op["action"] == "clean"
            && op["actor"] == "retention"
            && op["client"] == "--retention-days 30"),
        "{history:#?}"
    );

    // A retention of 0 days is refused at start, naming the key.
    std::fs::write(
        &*config.lock().unwrap(),
        "{\"Scheduler\": {\"RetentionDays\": 0}}",
    )
    .unwrap();
    let out = crate::sandbox::run_goflow(
        &[
            "standalone",
            "--data-dir",
            "unused",
            "-c",
            config.lock().unwrap().to_str().unwrap(),
        ],
        &[],
        &sandbox.work(),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Scheduler.RetentionDays") && stderr.contains("1 or more"),
        "{stderr}"
    );
}

/// A 10,000-line log goes to one object in moto's bucket, its chunks leave the database, and
/// goflowctl and the web UI read it back byte for byte as before.
#[test]
fn a_long_log_is_archived_to_s3_and_read_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    moto.create_bucket("goflow-logs");
    let sandbox = archived_sandbox(&moto, "s3://goflow-logs/cluster-a");
    sandbox.apply(&printer_dag());
    let day = "20260301";
    run_to_success(&sandbox, "printer", day);

    let place = wait_for(
        SETTLE,
        "the log to be archived",
        || sandbox.log_tail(40),
        || {
            let place = log_place(&sandbox, "printer", day);
            (place.archived > 0 && place.archived == place.log_bytes).then_some(place)
        },
    );
    assert_eq!(place.chunks, 0, "the chunks left the database: {place:?}");
    let object = place.object.clone().expect("the object is recorded");
    assert!(object.starts_with("cluster-a/printer/20260301/"), "{object}");

    let stored = moto.object("goflow-logs", &object);
    assert_eq!(stored.len() as i64, place.log_bytes);
    assert_printer_lines(&stored);
    let via_ctl = ctl_log(&sandbox, "printer", day);
    assert!(
        via_ctl == stored,
        "goflowctl logs reads the archived log byte for byte"
    );
    // `logs -f` on a finished try reads it too, and returns.
    let followed = sandbox.ctl(&["logs", "-j", "printer", "-d", day, "-f"]);
    assert!(
        followed.status.success() && followed.stdout == stored,
        "{}",
        sandbox.describe(&followed)
    );
    let (download, page) = ui_log(&sandbox, "printer", day);
    assert!(
        download == stored,
        "the web UI's download is the archived log byte for byte"
    );
    // The instance page shows the log's last window (its end, for a log this long).
    assert!(
        page.contains(&format!("line {LINES} of the printer\n")),
        "the web UI's log view shows the archived log"
    );
}

/// With the store down, the log stays in the database (and readable); once the store is
/// back, it is uploaded and leaves the database.
#[test]
fn logs_stay_in_the_database_while_the_store_is_down_and_go_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut moto = Moto::start(dir.path());
    moto.create_bucket("goflow-logs");
    let sandbox = archived_sandbox(&moto, "s3://goflow-logs");
    sandbox.apply(&printer_dag());
    moto.stop();

    let day = "20260302";
    run_to_success(&sandbox, "printer", day);
    wait_for(
        SETTLE,
        "a failed upload to be reported",
        || sandbox.log_tail(40),
        || {
            sandbox
                .log()
                .contains("the log stays in the database and the upload is retried")
                .then_some(())
        },
    );
    let place = log_place(&sandbox, "printer", day);
    assert_eq!((place.archived, place.object.as_deref()), (0, None), "{place:?}");
    assert!(place.chunks > 0 && place.log_bytes > 0, "{place:?}");
    let before = ctl_log(&sandbox, "printer", day);
    assert_printer_lines(&before);

    // moto starts empty: the bucket comes back with it.
    moto.restart();
    moto.create_bucket("goflow-logs");
    let place = wait_for(
        SETTLE,
        "the log to be archived once the store is back",
        || sandbox.log_tail(40),
        || {
            let place = log_place(&sandbox, "printer", day);
            (place.archived == place.log_bytes && place.chunks == 0).then_some(place)
        },
    );
    let object = place.object.expect("the object is recorded");
    assert!(
        moto.object("goflow-logs", &object) == before,
        "the uploaded log is what was stored"
    );
    assert!(ctl_log(&sandbox, "printer", day) == before, "and reads the same");
}

/// A bucket that does not exist: the start fails and names the archive.
#[test]
fn a_missing_bucket_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path());
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = dir.path().join("data");
    let out = crate::sandbox::run_goflow(
        &[
            "standalone",
            "--data-dir",
            data.to_str().unwrap(),
            "--grpc-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--http-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--log-archive",
            "s3://no-such-bucket/logs",
        ],
        &env,
        dir.path(),
        Duration::from_secs(120),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log-archive s3://no-such-bucket/logs: the store does not work"),
        "{stderr}"
    );

    let out = crate::sandbox::run_goflow(
        &[
            "standalone",
            "--data-dir",
            data.to_str().unwrap(),
            "--log-archive",
            "ftp://host/logs",
        ],
        &[],
        dir.path(),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp:// is not supported"));
}

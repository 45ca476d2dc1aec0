//! Logins through `goflow webui` are slowed down per browser, not per web UI (issue 20): the
//! web UI names each browser's address to the coordinator, proven by the web UIs' secret
//! (`--webui-secret-file`, `GOFLOW_WEBUI_SECRET`), so a flood of bad logins from one browser
//! does not lock out everybody else using the same web UI. A web UI with another secret is
//! not believed: the coordinator sees the web UI's own address.
//!
//! Browsers are told apart by their source address on loopback (127.0.0.2 and 127.0.0.1,
//! which Linux routes without any setup).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sandbox::{Agent, Launch, Sandbox, clean_env, free_port, goflow_bin, wait_for};

/// What the standalone and the trusted web UI share.
const SECRET: &str = "e2e-webui-secret-0123456789";
/// Any well-formed CSRF token: the form repeats the cookie's.
const CSRF: &str = "0123456789abcdef0123456789abcdef01234567";
/// Guesses sent at once from one browser: under the per-client burst (20) and, two rounds
/// together, the coordinator's (40), so only the slow-down of failures refuses them.
const GUESSES: usize = 12;

fn password(user: &str) -> String {
    format!("{user}-secret-pw")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A `goflow standalone --auth` with GOFLOW_WEBUI_SECRET, and its users.
fn start(users: &[&str]) -> Sandbox {
    let sb = Sandbox::start_with(|root| Launch {
        args: vec![
            "standalone".into(),
            "--auth".into(),
            "--data-dir".into(),
            root.join("data").into(),
        ],
        env: vec![("GOFLOW_WEBUI_SECRET".into(), SECRET.into())],
        ..Launch::default()
    });
    for user in users {
        let mut child = clean_env(&mut Command::new(goflow_bin()))
            .args(["user", "add", user, "--role", "viewer", "--password-stdin"])
            .args(sb.database_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start goflow user add");
        writeln!(child.stdin.take().unwrap(), "{}", password(user)).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "goflow user add {user}: {}",
            sb.describe(&out)
        );
    }
    sb
}

/// A `goflow webui` in front of `sb`, proving itself with `secret` (from a file); its URL.
fn webui(sb: &Sandbox, name: &str, secret: &str) -> (Agent, String) {
    let file = sb.root().join(format!("{name}.secret"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log: PathBuf = sb.root().join(format!("{name}.log"));
    let ui = Agent::start_args(
        name,
        &[
            "webui",
            "--coordinator",
            &sb.server_url(),
            "--http-listen",
            &listen,
            "--webui-secret-file",
            file.to_str().unwrap(),
        ],
        &[],
        &sb.work(),
        &log,
    );
    let url = format!("http://{listen}");
    wait_for(
        Duration::from_secs(60),
        "the web UI to answer /healthz",
        || ui.log_tail(30),
        || {
            let mut conn = std::net::TcpStream::connect(&listen).ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(conn, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
            let mut answer = String::new();
            std::io::Read::read_to_string(&mut conn, &mut answer).ok()?;
            answer.starts_with("HTTP/1.0 200").then_some(())
        },
    );
    (ui, url)
}

/// A browser at `from`, logging in through the web UI at `url`: the status, whether a session
/// cookie was set, and the page.
async fn login(url: &str, from: IpAddr, user: &str, pass: &str) -> (u16, bool, String) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let body = format!("user={user}&password={pass}&next=%2F&csrf={CSRF}");
    let answer = client
        .post(format!("{url}/login"))
        .header("cookie", format!("goflow_csrf={CSRF}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}/login from {from}: {e}"));
    let status = answer.status().as_u16();
    let session = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap_or_default().starts_with("goflow_session=gfs_"));
    (status, session, answer.text().await.unwrap_or_default())
}

/// `GUESSES` wrong passwords for `user` at once from the browser at `from`: the pages.
async fn guesses(url: &str, from: IpAddr, user: &str) -> Vec<(u16, bool, String)> {
    let mut all = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        let (url, user) = (url.to_string(), user.to_string());
        all.spawn(async move { login(&url, from, &user, &format!("guess-{i}")).await });
    }
    all.join_all().await
}

/// Bad logins from one browser slow down that browser, named by its address; another browser
/// on the same web UI logs in at once. Through a web UI with a wrong secret, the coordinator
/// sees (and slows down) the web UI's own address instead.
#[test]
fn webui_logins_are_slowed_down_per_browser() {
    goflow_coordinator::tls::install_crypto_provider();
    let sb = start(&["dan", "eve"]);
    let (trusted_ui, trusted) = webui(&sb, "webui-trusted", SECRET);
    let (forged_ui, forged) = webui(&sb, "webui-forged", "not-the-webui-secret-0123");
    let logs = || {
        format!(
            "{}\n{}\n{}",
            sb.log_tail(30),
            trusted_ui.log_tail(20),
            forged_ui.log_tail(20)
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = |pages: &[(u16, bool, String)], from: &str| {
        pages
            .iter()
            .filter(|(_, _, page)| page.contains("too many failed logins") && page.contains(from))
            .count()
    };

    // Not proven: the coordinator slows down the web UI's own address (127.0.0.1).
    let pages = rt.block_on(guesses(&forged, ip("127.0.0.2"), "eve"));
    assert!(
        pages
            .iter()
            .all(|(status, session, _)| *status == 401 && !session),
        "{pages:?}"
    );
    assert!(refused(&pages, "eve from 127.0.0.1") > 0, "{pages:?}\n{}", logs());
    assert_eq!(refused(&pages, "127.0.0.2"), 0, "{pages:?}");

    // Proven: the browser at 127.0.0.2 is slowed down, by its own address...
    let pages = rt.block_on(guesses(&trusted, ip("127.0.0.2"), "dan"));
    assert!(
        pages
            .iter()
            .all(|(status, session, _)| *status == 401 && !session),
        "{pages:?}"
    );
    assert!(
        refused(&pages, "dan from 127.0.0.2") >= GUESSES - 3,
        "at most 3 guesses are checked: {pages:?}\n{}",
        logs()
    );
    // ...while the same account logs in at once from another browser on the same web UI.
    let (status, session, page) = rt.block_on(login(&trusted, ip("127.0.0.1"), "dan", &password("dan")));
    assert!(status == 303 && session, "{status} {page}\n{}", logs());
}

/// Through a follower, the leader still learns the browser's address: the follower keeps the
/// web UI's proven `x-goflow-forwarded-for` and passes it on with the cluster's proof, so the
/// operations log names the browser (127.0.0.2), not the web UI or the follower.
#[test]
fn webui_browser_address_reaches_the_leader_through_a_follower() {
    use crate::ha::{Ha, Options, WEBUI_SECRET};
    goflow_coordinator::tls::install_crypto_provider();
    let ha = Ha::start(Options {
        coordinators: 2,
        agents: 0,
        slots: 1,
        worker_timeout: 10,
        etcd: false,
    });
    let leader = ha.wait_for(Duration::from_secs(60), "one leader", || {
        ha.leader_indexes().filter(|l| l.len() == 1).map(|l| l[0])
    });
    let follower = &ha.coordinators[1 - leader];
    follower.apply("tasks:\n  - id: fw_t\n    command: \"true\"\n");
    let (ui, url) = webui(follower, "webui-follower", WEBUI_SECRET);
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::builder()
            .local_address(ip("127.0.0.2"))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        client
            .post(format!("{url}/tasks/fw_t/pause"))
            .header("cookie", format!("goflow_csrf={CSRF}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("paused=1&csrf={CSRF}"))
            .send()
            .await
            .map(|a| a.status().as_u16())
    });
    assert_eq!(status.ok(), Some(303), "{}", ui.log_tail(20));
    let ops = ha.wait_for(Duration::from_secs(60), "the pause in the operations log", || {
        let ops = ha.ctl_json(&["history", "-o", "json"])?;
        ops.iter().any(|o| o["action"] == "pause").then_some(ops)
    });
    let pause = ops.iter().find(|o| o["action"] == "pause").unwrap();
    let client = pause["client"].as_str().unwrap_or_default();
    assert!(
        client.starts_with("webui/") && client.contains("from 127.0.0.2:"),
        "the leader should name the browser: {pause:#}"
    );
}

//! Alerts (issue 11) end to end: a standalone with GOFLOW_ALERT_WEBHOOK pointing at a tiny HTTP
//! receiver this test runs. A final failure alerts once (not its retry, not a success), a
//! deadline alerts for an instance held back past it and not for one done in time, and a
//! receiver that answers 500 gets the alert again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sandbox::{Launch, Sandbox, parse_array};

/// A webhook receiver: records every POST body (JSON) and answers 500 to the first `fail_first`
/// requests, 200 after.
pub(crate) struct Receiver {
    pub(crate) url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub(crate) fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(vec![]));
        let seen = bodies.clone();
        thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                served += 1;
                let value = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
                seen.lock()
                    .unwrap()
                    .push(serde_json::json!({"request": request_line.trim(), "body": value}));
                let status = if served <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = stream.flush();
            }
        });
        Self { url, bodies }
    }

    /// Every request so far: `{request, body}`.
    fn requests(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Bodies of requests about `task`.
    fn about(&self, task: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .map(|r| r["body"].clone())
            .filter(|b| b["task"] == task)
            .collect()
    }

    /// Waits until `done` holds for the requests (at most a minute).
    fn wait(&self, what: &str, sb: &Sandbox, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if Instant::now() > limit {
                panic!(
                    "waited a minute for {what}; the receiver got:\n{requests:#?}\nalerts:\n{}\nlog:\n{}",
                    sb.ctl(&["alerts"]).stdout.escape_ascii(),
                    sb.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn standalone(receiver: &Receiver) -> Sandbox {
    let url = receiver.url.clone();
    Sandbox::start_with(move |root| Launch {
        args: vec!["standalone".into(), "--data-dir".into(), root.join("data").into()],
        env: vec![
            ("GOFLOW_ALERT_WEBHOOK".into(), url.into()),
            ("GOFLOW_UI_URL".into(), "http://goflow-ui.example:8080/".into()),
            ("GOFLOW_ALERT_CHECK_INTERVAL".into(), "1".into()),
        ],
        ..Launch::default()
    })
}

fn alerts_json(sb: &Sandbox) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["alerts", "-o", "json"]))
}

/// A task failing both its tries alerts once, with the documented fields; its retry and a task
/// that succeeds do not alert.
#[test]
fn a_final_failure_alerts_once_and_a_success_not_at_all() {
    let receiver = Receiver::start(0);
    let sb = standalone(&receiver);
    sb.apply(
        r#"
tasks:
  - id: al_fail
    command: "echo boom >&2; exit 3"
    retries: 1
    retry_delay: 1s
  - id: al_ok
    command: "echo fine"
"#,
    );
    let day = "20260301";
    sb.ctl_ok(&["run", "-j", "al_ok", "-d", day, "--wait"]);
    // --wait fails when the run fails: the status is what counts.
    sb.ctl(&["run", "-j", "al_fail", "-d", day, "--wait"]);
    sb.wait_status(day, Duration::from_secs(60), "al_fail failed", |rows| {
        crate::sandbox::state_of(rows, "al_fail") == Some("failed")
    });
    receiver.wait("the failure's alert", &sb, |r| {
        r.iter().any(|r| r["body"]["task"] == "al_fail")
    });

    // The alert is recorded as sent before anything else could add to it.
    let limit = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts = alerts_json(&sb);
        if alerts.iter().all(|a| a["delivery"] == "sent") || Instant::now() > limit {
            break alerts;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(alerts.len(), 1, "one alert in all: {alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a["task"], "al_fail", "{a:#}");
    assert_eq!(a["kind"], "failed", "{a:#}");
    assert_eq!(a["try_number"], 2, "{a:#}");
    assert_eq!(a["channel"], "webhook", "{a:#}");
    assert_eq!(a["delivery"], "sent", "{a:#}");
    assert_eq!(a["attempts"], 1, "{a:#}");

    let bodies = receiver.about("al_fail");
    assert_eq!(bodies.len(), 1, "exactly one request for al_fail: {bodies:#?}");
    let b = &bodies[0];
    assert_eq!(b["kind"], "failed", "{b:#}");
    assert_eq!(b["etl_day"], day, "{b:#}");
    assert_eq!(b["state"], "failed", "{b:#}");
    assert_eq!(b["try_number"], 2, "{b:#}");
    assert_eq!(b["message"], "try 2 of 2 failed: exit code 3", "{b:#}");
    assert_eq!(
        b["link"], "http://goflow-ui.example:8080/instances/al_fail/20260301",
        "{b:#}"
    );
    assert!(b["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{b:#}");
    assert!(receiver.about("al_ok").is_empty(), "{:#?}", receiver.requests());
    let request = receiver.requests()[0]["request"].as_str().unwrap().to_string();
    assert!(request.starts_with("POST /hook "), "{request}");

    // Reports are idempotent: the failed instance, re-checked, raises nothing new.
    let again = alerts_json(&sb);
    assert_eq!(again.len(), 1, "{again:#?}");
}

/// A receiver that answers 500 first gets the alert again, and the alert ends up sent after
/// two attempts with the first error recorded.
#[test]
fn a_failing_receiver_gets_the_alert_again() {
    let receiver = Receiver::start(1);
    let sb = standalone(&receiver);
    sb.apply("tasks:\n  - id: al_flaky_hook\n    command: \"exit 1\"\n    retries: 0\n");
    let day = "20260302";
    sb.ctl(&["run", "-j", "al_flaky_hook", "-d", day, "--wait"]);
    let requests = receiver.wait("the alert twice", &sb, |r| r.len() >= 2);
    assert_eq!(
        requests[0]["body"], requests[1]["body"],
        "the same alert again: {requests:#?}"
    );
    assert_eq!(requests[0]["body"]["task"], "al_flaky_hook");
    let limit = Instant::now() + Duration::from_secs(30);
    let a = loop {
        let alerts = alerts_json(&sb);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        if alerts[0]["delivery"] == "sent" || Instant::now() > limit {
            break alerts[0].clone();
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(a["delivery"], "sent", "{a:#}");
    assert_eq!(a["attempts"], 2, "{a:#}");
    assert!(
        a["last_error"].as_str().unwrap_or_default().contains("500"),
        "{a:#}"
    );
}

/// A deadline a few seconds from now: the instance held back (its task paused) alerts once it
/// passes, the one that succeeded in time does not.
#[test]
fn a_deadline_alerts_for_an_instance_held_back_and_not_for_one_done_in_time() {
    let receiver = Receiver::start(0);
    let sb = standalone(&receiver);
    let due = chrono::Utc::now() + chrono::Duration::seconds(8);
    let day = due.format("%Y%m%d").to_string();
    let time = due.format("%H:%M:%S").to_string();
    sb.apply(&format!(
        r#"
tasks:
  - id: dl_late
    command: "echo late"
    deadline: {{time: "{time}", timezone: UTC, day_offset: 0}}
  - id: dl_ok
    command: "echo ok"
    deadline: "{time} UTC +0"
"#
    ));
    sb.ctl_ok(&["pause", "-j", "dl_late"]);
    sb.ctl_ok(&["run", "-j", "dl_late", "-d", &day]);
    sb.ctl_ok(&["run", "-j", "dl_ok", "-d", &day, "--wait"]);
    assert!(
        chrono::Utc::now() < due,
        "the test was too slow: dl_ok must succeed before its deadline"
    );
    let rows = sb.status_json(&day);
    assert_eq!(
        crate::sandbox::state_of(&rows, "dl_late"),
        Some("waiting"),
        "{rows:#?}"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing is due yet: {:#?}",
        receiver.requests()
    );

    receiver.wait("dl_late's deadline alert", &sb, |r| {
        r.iter().any(|r| r["body"]["task"] == "dl_late")
    });
    // Both deadlines were checked in the same pass that found dl_late late.
    let alerts = alerts_json(&sb);
    let late: Vec<&Value> = alerts.iter().filter(|a| a["task"] == "dl_late").collect();
    assert_eq!(late.len(), 1, "{alerts:#?}");
    assert_eq!(late[0]["kind"], "deadline", "{alerts:#?}");
    assert_eq!(late[0]["etl_day"], day, "{alerts:#?}");
    assert!(
        alerts.iter().all(|a| a["task"] != "dl_ok"),
        "dl_ok was in time: {alerts:#?}"
    );
    let body = &receiver.about("dl_late")[0];
    assert_eq!(body["kind"], "deadline", "{body:#}");
    assert_eq!(body["state"], "waiting", "{body:#}");
    assert_eq!(body["try_number"], 0, "{body:#}");
    assert!(receiver.about("dl_ok").is_empty(), "{:#?}", receiver.requests());
}

/// A try running past its task's expected duration alerts once, while it runs.
#[test]
fn a_run_longer_than_expected_alerts_once() {
    let receiver = Receiver::start(0);
    let sb = standalone(&receiver);
    sb.apply(
        "tasks:\n  - id: al_slow\n    command: \"sleep 6\"\n    expected_duration: 1s\n  - id: al_quick\n    command: \"echo quick\"\n    expected_duration: 1h\n",
    );
    let day = "20260303";
    sb.ctl_ok(&["run", "-j", "al_quick", "-d", day, "--wait"]);
    sb.ctl_ok(&["run", "-j", "al_slow", "-d", day]);
    receiver.wait("al_slow's long-run alert", &sb, |r| {
        r.iter().any(|r| r["body"]["task"] == "al_slow")
    });
    let body = &receiver.about("al_slow")[0];
    assert_eq!(body["kind"], "long_running", "{body:#}");
    assert_eq!(body["state"], "running", "{body:#}");
    assert_eq!(body["try_number"], 1, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expected: 1s"),
        "{body:#}"
    );
    sb.wait_status(day, Duration::from_secs(60), "al_slow done", |rows| {
        crate::sandbox::state_of(rows, "al_slow") == Some("success")
    });
    let alerts = alerts_json(&sb);
    assert_eq!(
        alerts.len(),
        1,
        "one alert for the one long try, none for al_quick: {alerts:#?}"
    );
}

//! ETA and deadlines (issue 19) end to end: the eta of a 3-level DAG whose durations were
//! learned from earlier days is within 20% of the real finish and names the longest chain;
//! a deadline that cannot be met raises `deadline_at_risk` before it passes.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::Receiver;
use crate::sandbox::{Launch, Sandbox, parse_array, wait_for};

fn standalone(extra_env: Vec<(String, String)>) -> Sandbox {
    Sandbox::start_with(move |root| Launch {
        args: vec![
            "standalone".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--slots".into(),
            "4".into(),
        ],
        env: extra_env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        ..Launch::default()
    })
}

fn ms(value: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
        .unwrap()
        .timestamp_millis()
}

const DAG: &str = r#"
tasks:
  - id: eta_a
    command: "sleep 2"
  - id: eta_long
    command: "sleep 4"
    depends_on: [eta_a]
  - id: eta_short
    command: "sleep 1"
    depends_on: [eta_a]
  - id: eta_end
    command: "sleep 2"
    depends_on: [eta_long, eta_short]
"#;

/// Learned durations (two earlier days) predict the day: within 20% of the real finish, and
/// the critical path is the longest chain a -> long -> end.
#[test]
fn the_eta_of_a_three_level_dag_is_close_and_names_the_longest_chain() {
    let sb = standalone(vec![]);
    sb.apply(DAG);
    for day in ["20260101", "20260102"] {
        sb.ctl_ok(&["run", "-j", "eta_a", "-d", day, "--down", "--wait"]);
    }
    // Before any instance of the day: nothing to predict.
    let day = "20260103";
    let empty: Value = serde_json::from_str(&sb.ctl_ok(&["eta", "-d", day, "-o", "json"])).unwrap();
    assert_eq!(empty["instances"], serde_json::json!([]), "{empty:#}");

    sb.ctl_ok(&["run", "-j", "eta_a", "-d", day, "--down"]);
    let eta: Value = serde_json::from_str(&sb.ctl_ok(&["eta", "-d", day, "-o", "json"])).unwrap();
    assert_eq!(eta["day"], day, "{eta:#}");
    assert_eq!(
        eta["critical_path"],
        serde_json::json!(["eta_a", "eta_long", "eta_end"]),
        "{eta:#}"
    );
    let instances = eta["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4, "{eta:#}");
    for i in instances {
        assert!(i["start_at"].is_string() && i["finish_at"].is_string(), "{eta:#}");
        assert!(
            i["basis"].as_str().unwrap().starts_with("median of 2 tries"),
            "{eta:#}"
        );
    }
    let predicted_at = ms(&eta["predicted_at"]);
    let predicted = ms(&eta["finish_at"]);

    let rows = sb.wait_status(day, Duration::from_secs(120), "the day done", |rows| {
        rows.len() == 4 && rows.iter().all(|r| r["state"] == "success")
    });
    let real = rows.iter().map(|r| ms(&r["finished_at"])).max().unwrap();
    let error = (predicted - real).abs() as f64 / (real - predicted_at) as f64;
    assert!(
        error <= 0.20,
        "predicted finish {} vs real {} ({:.0}% of the {} ms it took): {eta:#}",
        eta["finish_at"],
        real,
        error * 100.0,
        real - predicted_at
    );
    // Done: nothing left, no finish to predict.
    let after: Value = serde_json::from_str(&sb.ctl_ok(&["eta", "-d", day, "-o", "json"])).unwrap();
    assert_eq!(after["instances"], serde_json::json!([]), "{after:#}");
    // The table names the path too.
    sb.ctl_ok(&["run", "-j", "eta_a", "-d", "20260104", "--down"]);
    let table = sb.ctl_ok(&["eta", "-d", "2026-01-04"]);
    assert!(
        table.contains("critical path: eta_a@20260104 -> eta_long@20260104 -> eta_end@20260104"),
        "{table}"
    );
    let bad = sb.ctl_err(&["eta", "-d", "2026-13-01"]);
    assert!(bad.contains("2026-13-01"), "{bad}");
}

/// A deadline three minutes ahead behind an upstream expected to take an hour: one
/// `deadline_at_risk` alert, before the deadline, naming it, the prediction and the path.
#[test]
fn a_deadline_that_cannot_be_met_raises_deadline_at_risk_before_it_passes() {
    // Alerts are recorded per channel, so the at-risk check needs one that answers 200.
    let url = Receiver::start(0).url;
    let sb = standalone(vec![
        ("GOFLOW_ALERT_WEBHOOK".into(), url),
        ("GOFLOW_ALERT_CHECK_INTERVAL".into(), "1".into()),
    ]);
    let due = chrono::Utc::now() + chrono::Duration::minutes(3);
    let day = due.format("%Y%m%d").to_string();
    let time = due.format("%H:%M:%S").to_string();
    sb.apply(&format!(
        r#"
tasks:
  - id: risk_up
    command: "sleep 120"
    expected_duration: 1h
  - id: risk_report
    command: "echo report"
    depends_on: [risk_up]
    deadline: "{time} UTC +0"
"#
    ));
    sb.ctl_ok(&["run", "-j", "risk_up", "-d", &day, "--down"]);
    let alert = wait_for(
        Duration::from_secs(90),
        "a deadline_at_risk alert",
        || {
            format!(
                "alerts:\n{}\nlog:\n{}",
                String::from_utf8_lossy(&sb.ctl(&["alerts"]).stdout),
                sb.log_tail(40)
            )
        },
        || {
            parse_array(&sb.ctl_ok(&["alerts", "-o", "json"]))
                .into_iter()
                .find(|a| a["kind"] == "deadline_at_risk")
        },
    );
    assert!(
        chrono::Utc::now() < due,
        "raised only after the deadline: {alert:#}"
    );
    assert_eq!(alert["task"], "risk_report", "{alert:#}");
    assert_eq!(alert["etl_day"], day, "{alert:#}");
    assert_eq!(alert["try_number"], 1, "{alert:#}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{time} UTC +0")),
        "names the deadline: {message}"
    );
    assert!(message.contains("predicted to finish at"), "{message}");
    assert!(
        message.contains(&format!("critical path: risk_up@{day} -> risk_report@{day}")),
        "{message}"
    );
    // Checked every second, raised once: the prediction does not get later by 15 minutes.
    thread::sleep(Duration::from_secs(3));
    let raised: Vec<Value> = parse_array(&sb.ctl_ok(&["alerts", "-o", "json"]))
        .into_iter()
        .filter(|a| a["kind"] == "deadline_at_risk")
        .collect();
    assert_eq!(raised.len(), 1, "{raised:#?}");
}

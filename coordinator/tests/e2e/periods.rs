//! Issue 16: business calendars (holidays, make-up workdays, previous business day) and
//! periods other than a day (hourly and monthly tasks, their roll-ups, daylight saving days),
//! through the real binaries on every suite database.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Sandbox, parse_array, time_of};

const CALENDARS: &str = r#"
calendars:
  - id: cn_workday
    weekdays: [mon, tue, wed, thu, fri]
    exclude: [20261001, 20261002, 20261005, 20261006, 20261007]
    include: [20260927, 20261010]
"#;

fn states(rows: &[Value], task: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r["task"] == task)
        .map(|r| {
            (
                r["period"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

fn all_instances(sb: &Sandbox, task: &str) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["status", "-j", task, "--limit", "1000", "-o", "json"]))
}

#[test]
fn a_calendar_with_holidays_and_make_up_days_decides_instances_and_business_day_dependencies() {
    let sb = Sandbox::start();
    let out = sb.apply(&format!(
        r#"{CALENDARS}
tasks:
  - id: load
    command: "true"
    schedule: "0 2 * * *"
  - id: report
    command: "true"
    calendar: cn_workday
    depends_on: [load]
  - id: reconcile
    command: "true"
    calendar: cn_workday
    depends_on: [{{task: report, day_offset: -1, calendar: cn_workday}}]
  - id: holiday_view
    command: "true"
    depends_on: [report]
"#
    ));
    assert!(out.contains("calendar cn_workday applied"), "{out}");

    // goflowctl calendars, and a year of one.
    let listed = parse_array(&sb.ctl_ok(&["calendars", "-o", "json"]));
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], "cn_workday");
    assert_eq!(listed[0]["tasks"], serde_json::json!(["reconcile", "report"]));
    let year: Value = serde_json::from_str(&sb.ctl_ok(&[
        "calendars",
        "show",
        "cn_workday",
        "--year",
        "2026",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(year["days_in"], 261 - 5 + 2, "{:#}", year["days_in"]);
    let table = sb.ctl_ok(&["calendars", "show", "cn_workday", "--year", "2026"]);
    assert!(
        table.contains("2026-10  [01]! [02]! [03] [04] [05]! [06]! [07]! 08  09  10+"),
        "{table}"
    );

    // One holiday is refused, naming the calendar; --force runs it anyway.
    let err = sb.ctl_err(&["run", "-j", "report", "-d", "20261001"]);
    assert!(err.contains("cn_workday") && err.contains("--force"), "{err}");
    assert!(
        all_instances(&sb, "report").is_empty(),
        "a refused run creates nothing"
    );
    sb.ctl_ok(&["run", "-j", "report", "-d", "20261001", "--force"]);

    // A backfill over the holiday week creates report and reconcile on business days only:
    // Sept 30, the make-up Saturday Oct 10, and the weekdays after the holiday.
    sb.ctl_ok(&[
        "run", "-j", "load", "--from", "20260930", "--to", "20261010", "--down", "--yes",
    ]);
    let business: Vec<&str> = vec!["20260930", "20261008", "20261009", "20261010"];
    for day in ["20260930", "20261003", "20261008", "20261010"] {
        sb.wait_status(day, Duration::from_secs(60), "the day's run to finish", |rows| {
            rows.iter().all(|r| r["state"] == "success") && !rows.is_empty()
        });
    }
    let report_days: BTreeSet<String> = all_instances(&sb, "report")
        .iter()
        .map(|r| r["period"].as_str().unwrap().to_string())
        .collect();
    let mut expected: BTreeSet<String> = business.iter().map(|d| d.to_string()).collect();
    expected.insert("20261001".into()); // forced above
    assert_eq!(
        report_days,
        expected,
        "{}",
        sb.ctl_ok(&["status", "-j", "report"])
    );
    let reconcile_days: BTreeSet<String> = all_instances(&sb, "reconcile")
        .iter()
        .map(|r| r["period"].as_str().unwrap().to_string())
        .collect();
    // reconcile@20260930 waits for report of the business day before (Sept 29), outside the
    // run's range, so the closure from load does not reach it.
    assert_eq!(
        reconcile_days,
        business[1..].iter().map(|d| d.to_string()).collect()
    );

    // The previous business day of Oct 8 is Sept 30: reconcile@20261008 started only after
    // report@20260930 succeeded. holiday_view (no calendar) on Saturday Oct 3 read the last
    // business day's report.
    let sept30 = sb.status_json("20260930");
    let oct8 = sb.status_json("20261008");
    let report_done = time_of(sb.instance(&sept30, "report"), "finished_at");
    let reconcile_started = time_of(sb.instance(&oct8, "reconcile"), "started_at");
    assert!(
        reconcile_started >= report_done,
        "{reconcile_started} before {report_done}"
    );
    let oct3 = sb.status_json("20261003");
    assert_eq!(
        states(&oct3, "report"),
        vec![],
        "no report on a Saturday holiday week"
    );
    assert_eq!(sb.instance(&oct3, "holiday_view")["state"], "success");

    // do-all-job on the Saturday of the holiday week runs load but no report.
    sb.ctl_ok(&["do-all-job", "-d", "20261004"]);
    let oct4 = sb.wait_status("20261004", Duration::from_secs(60), "load@20261004", |rows| {
        rows.iter()
            .any(|r| r["task"] == "load" && r["state"] == "success")
    });
    assert!(states(&oct4, "report").is_empty(), "{oct4:#?}");

    // Bad calendars change nothing.
    for (bad, needle) in [
        (
            "calendars: [{id: c2, weekdays: [mon], exclude: [20261001], include: [20261001]}]\ntasks: []\n",
            "in both exclude and include",
        ),
        ("calendars: [{id: c3}]\ntasks: []\n", "is empty"),
        (
            "tasks: [{id: x, command: \"true\", calendar: nowhere}]\n",
            "unknown calendar \"nowhere\"",
        ),
        (
            "tasks: [{id: x, command: \"true\", depends_on: [{task: load, day_offset: -1, calendar: nowhere}]}]\n",
            "unknown calendar \"nowhere\"",
        ),
    ] {
        let path = sb.write("bad.yaml", bad);
        let err = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
        assert!(err.contains(needle), "{bad}: {err}");
    }
    assert_eq!(parse_array(&sb.ctl_ok(&["calendars", "-o", "json"])).len(), 1);
    assert!(sb.tasks_json().iter().all(|t| t["id"] != "x"));
}

#[test]
fn hourly_periods_roll_up_into_their_day_and_days_into_their_month() {
    let sb = Sandbox::start();
    let marks = sb.work().join("marks.txt");
    sb.apply(&format!(
        r#"
tasks:
  - id: hourly_load
    command: "echo {{{{etl_hour}}}} {{{{etl_day}}}} {{{{etl_month}}}} $GOFLOW_ETL_HOUR >> {marks}"
    period: hour
  - id: daily_rollup
    command: "true"
    depends_on: [hourly_load]
  - id: day_load
    command: "true"
  - id: month_rollup
    command: "echo $GOFLOW_ETL_MONTH $GOFLOW_ETL_DAY"
    period: month
    depends_on: [day_load]
"#,
        marks = marks.display()
    ));
    let tasks = sb.tasks_json();
    let hourly = tasks.iter().find(|t| t["id"] == "hourly_load").unwrap();
    assert_eq!(hourly["period"], "hour", "{hourly:#}");

    // A day key for an hourly task is refused, naming the right form.
    let err = sb.ctl_err(&["run", "-j", "hourly_load", "-d", "20261120"]);
    assert!(
        err.contains("is a day, but task \"hourly_load\" is hourly") && err.contains("yyyymmddHH"),
        "{err}"
    );
    let err = sb.ctl_err(&["run", "-j", "month_rollup", "-d", "2026112013"]);
    assert!(err.contains("is monthly"), "{err}");

    // 24 hours, and with --down the day they roll up into.
    sb.ctl_ok(&[
        "run",
        "-j",
        "hourly_load",
        "--from",
        "2026112000",
        "--to",
        "2026112023",
        "--down",
        "--yes",
    ]);
    let rows = sb.wait_status(
        "20261120",
        Duration::from_secs(120),
        "24 hours and their day",
        |rows| rows.len() == 25 && rows.iter().all(|r| r["state"] == "success"),
    );
    let hours: Vec<&Value> = rows.iter().filter(|r| r["task"] == "hourly_load").collect();
    assert_eq!(hours.len(), 24);
    assert!(
        hours
            .iter()
            .all(|r| r["etl_day"] == "20261120" && r["period"].as_str().unwrap().len() == 10)
    );
    let last_hour = hours.iter().map(|r| time_of(r, "finished_at")).max().unwrap();
    let day = sb.instance(&rows, "daily_rollup");
    assert_eq!(day["period"], "20261120");
    assert!(
        time_of(day, "started_at") >= last_hour,
        "the day started before its last hour finished"
    );
    let text = std::fs::read_to_string(&marks).unwrap();
    assert!(
        text.lines().any(|l| l == "2026112013 20261120 202611 2026112013"),
        "{text}"
    );
    // One hour's key on the command line, and in status.
    let one = parse_array(&sb.ctl_ok(&["status", "-d", "2026112013", "-o", "json"]));
    assert_eq!(one.len(), 1, "{one:#?}");
    assert_eq!(one[0]["period"], "2026112013");

    // 30 days into their month: the month starts only after the last day.
    sb.ctl_ok(&[
        "run", "-j", "day_load", "--from", "20261101", "--to", "20261130", "--down", "--yes",
    ]);
    let month = sb.wait_status(
        "202611",
        Duration::from_secs(120),
        "the month's roll-up",
        |rows| {
            rows.iter()
                .any(|r| r["task"] == "month_rollup" && r["state"] == "success")
        },
    );
    let days: Vec<&Value> = month.iter().filter(|r| r["task"] == "day_load").collect();
    assert_eq!(days.len(), 30, "status -d 202611 shows the month's days too");
    let last_day = days.iter().map(|r| time_of(r, "finished_at")).max().unwrap();
    let rollup = sb.instance(&month, "month_rollup");
    assert_eq!(
        (rollup["period"].as_str(), rollup["etl_day"].as_str()),
        (Some("202611"), Some("20261101"))
    );
    assert!(time_of(rollup, "started_at") >= last_day);
    let log = sb.ctl_ok(&["logs", "-j", "month_rollup", "-d", "202611"]);
    assert!(log.contains("202611 20261101"), "{log}");
}

#[test]
fn daylight_saving_days_have_23_and_24_hourly_instances_in_new_york() {
    let sb = Sandbox::start();
    sb.apply(
        r#"
tasks:
  - id: ny_hourly
    command: "true"
    period: hour
    timezone: America/New_York
  - id: ny_daily
    command: "true"
    timezone: America/New_York
    depends_on: [ny_hourly]
"#,
    );
    // Spring forward: 02:00 never happens on 2026-03-08.
    let err = sb.ctl_err(&["run", "-j", "ny_hourly", "-d", "2026030802"]);
    assert!(err.contains("does not happen in America/New_York"), "{err}");
    sb.ctl_ok(&[
        "run",
        "-j",
        "ny_hourly",
        "--from",
        "2026030800",
        "--to",
        "2026030823",
        "--down",
        "--yes",
    ]);
    let spring = sb.wait_status(
        "20260308",
        Duration::from_secs(120),
        "the spring-forward day",
        |rows| {
            rows.iter()
                .any(|r| r["task"] == "ny_daily" && r["state"] == "success")
        },
    );
    let hours: BTreeSet<&str> = spring
        .iter()
        .filter(|r| r["task"] == "ny_hourly")
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    assert_eq!(hours.len(), 23, "{hours:?}");
    assert!(!hours.contains("2026030802"));

    // Fall back: 01:00 happens twice on 2026-11-01 and is one instance.
    sb.ctl_ok(&[
        "run",
        "-j",
        "ny_hourly",
        "--from",
        "2026110100",
        "--to",
        "2026110123",
        "--down",
        "--yes",
    ]);
    let fall = sb.wait_status(
        "20261101",
        Duration::from_secs(120),
        "the fall-back day",
        |rows| {
            rows.iter()
                .any(|r| r["task"] == "ny_daily" && r["state"] == "success")
        },
    );
    let hours: Vec<&str> = fall
        .iter()
        .filter(|r| r["task"] == "ny_hourly")
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    assert_eq!(hours.len(), 24, "{hours:?}");
    assert_eq!(hours.iter().filter(|h| **h == "2026110101").count(), 1);
}

#[test]
fn bad_period_definitions_are_refused_and_change_nothing() {
    let sb = Sandbox::start();
    sb.apply("tasks:\n  - id: keep\n    command: \"true\"\n");
    for (bad, needle) in [
        (
            "tasks: [{id: w, command: \"true\", period: week}]\n",
            "period \"week\" is not one of hour, day, month",
        ),
        (
            "tasks: [{id: w, command: \"true\", period: hour, offset: -9000}]\n",
            "offset -9000 is out of range for a hourly task",
        ),
        (
            "tasks: [{id: w, command: \"true\", period: hour, day_offset: -1}]\n",
            "day_offset counts days",
        ),
        // A month of hours, each hour after the hour before, which waits for the month.
        (
            "tasks: [{id: m, command: \"true\", period: month, depends_on: [h]}, {id: h, command: \"true\", period: hour, depends_on: [{task: h2, offset: -1}]}, {id: h2, command: \"true\", period: hour, depends_on: [m]}]\n",
            "dependency cycle across periods",
        ),
    ] {
        let path = sb.write("bad.yaml", bad);
        let err = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
        assert!(err.contains(needle), "{bad}: {err}");
    }
    let ids: Vec<String> = sb
        .tasks_json()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["keep"]);
}

/// Cron fires follow the calendar: on the test's clock, a daily schedule over the National Day
/// week (catchup: all, so every missed fire is decided) creates the business days' instances
/// only; each holiday's fire is recorded as skipped with the calendar's reason.
#[test]
fn cron_fires_skip_the_days_outside_the_calendar() {
    let (sb, clock) = crate::catchup::start_at("2026-09-30T12:00:00Z");
    sb.apply(&format!(
        r#"{CALENDARS}
tasks:
  - id: report
    command: "true"
    schedule: "0 2 * * *"
    day_offset: 0
    calendar: cn_workday
    catchup: all
"#
    ));
    std::fs::write(&clock, "2026-10-09T12:00:00Z").unwrap();
    crate::sandbox::wait_for(
        Duration::from_secs(60),
        "the fires up to Oct 9",
        || sb.log_tail(30),
        || {
            let days = all_instances(&sb, "report");
            (days.len() == 2 && days.iter().all(|r| r["state"] == "success")).then_some(())
        },
    );
    let days: BTreeSet<String> = all_instances(&sb, "report")
        .iter()
        .map(|r| r["period"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        days,
        BTreeSet::from(["20261008".to_string(), "20261009".to_string()])
    );
    let skips: Vec<Value> = parse_array(&sb.ctl_ok(&["history", "-j", "report", "-o", "json"]))
        .into_iter()
        .filter(|op| op["action"] == "skip-fire")
        .collect();
    let holiday = skips
        .iter()
        .find(|op| op["target"] == "report@20261001")
        .unwrap_or_else(|| panic!("no skipped fire for the holiday: {skips:#?}"));
    assert!(
        holiday["detail"]
            .as_str()
            .unwrap()
            .contains("calendar \"cn_workday\""),
        "{holiday:#}"
    );
    // Oct 1 .. 7: seven days off (five holidays and a weekend), each fire recorded once.
    let skipped_days: BTreeSet<&str> = skips.iter().filter_map(|op| op["target"].as_str()).collect();
    assert_eq!(skipped_days.len(), 7, "{skips:#?}");
}

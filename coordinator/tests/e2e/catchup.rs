//! Catch-up policies (issue 16): `catchup: latest | all | none` decides which fires missed
//! while the coordinator was stopped, or the task paused, run; every other fire is recorded as
//! skipped with its reason, in history and in `goflow_cron_skipped_fires_total`. Time is the
//! test's: goflow runs with the hidden `--test-clock FILE`, and the test moves the clock by
//! days instead of sleeping.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::observability::{scrape, sum, web_url};
use crate::sandbox::{Launch, Sandbox, parse_array, wait_for};

const LIMIT: Duration = Duration::from_secs(60);
/// The clock when the task is applied: noon, so the next fire is tomorrow at 02:00.
const START: &str = "2026-03-10T12:00:00Z";
/// Five days later: the fires of 03-11 .. 03-15 at 02:00 were missed.
const FIVE_DAYS_LATER: &str = "2026-03-15T12:00:00Z";
const MISSED_DAYS: [&str; 5] = ["20260311", "20260312", "20260313", "20260314", "20260315"];

pub(crate) fn start_at(time: &str) -> (Sandbox, PathBuf) {
    let mut clock = None;
    let sb = Sandbox::start_with(|root| {
        let path = root.join("clock");
        std::fs::write(&path, time).unwrap();
        clock = Some(path.clone());
        Launch {
            args: vec![
                "standalone".into(),
                "--data-dir".into(),
                root.join("data").into(),
                "--test-clock".into(),
                path.into(),
            ],
            ..Launch::default()
        }
    });
    (sb, clock.unwrap())
}

fn task_yaml(policy: &str) -> String {
    format!(
        r#"
tasks:
  - id: nightly
    command: "true"
    schedule: "0 2 * * *"
    day_offset: 0
    catchup: {policy}
"#
    )
}

/// The ids of the task's instances on each of `days` (None: no instance that day).
fn instance_ids(sb: &Sandbox, days: &[&str]) -> Vec<Option<i64>> {
    days.iter()
        .map(|day| {
            sb.status_json(day)
                .iter()
                .find(|r| r["task"] == "nightly")
                .map(|r| r["id"].as_i64().unwrap())
        })
        .collect()
}

fn skip_entries(sb: &Sandbox) -> Vec<Value> {
    parse_array(&sb.ctl_ok(&["history", "-j", "nightly", "-o", "json"]))
        .into_iter()
        .filter(|op| op["action"] == "skip-fire")
        .collect()
}

fn skipped_metric(sb: &Sandbox) -> f64 {
    sum(
        &scrape(&web_url(sb)),
        "goflow_cron_skipped_fires_total",
        &[("task", "nightly")],
    )
}

/// Applies the task at START, stops goflow, moves the clock five days on, and starts it again.
fn five_days_down(policy: &str) -> (Sandbox, PathBuf) {
    let (mut sb, clock) = start_at(START);
    sb.apply(&task_yaml(policy));
    let task = sb
        .tasks_json()
        .into_iter()
        .find(|t| t["id"] == "nightly")
        .unwrap();
    assert_eq!(task["catchup"], policy);
    assert!(instance_ids(&sb, &MISSED_DAYS).iter().all(Option::is_none));
    sb.kill9();
    std::fs::write(&clock, FIVE_DAYS_LATER).unwrap();
    sb.restart();
    (sb, clock)
}

#[test]
fn catchup_latest_runs_the_newest_missed_fire_and_records_the_others_skipped() {
    let (sb, _clock) = five_days_down("latest");
    let logs = || sb.log_tail(40);
    let ids = wait_for(LIMIT, "the 03-15 instance", logs, || {
        let ids = instance_ids(&sb, &MISSED_DAYS);
        ids[4].is_some().then_some(ids)
    });
    assert_eq!(&ids[..4], &[None; 4], "only the newest missed fire runs");
    let skips = wait_for(LIMIT, "the skipped fires in history", logs, || {
        Some(skip_entries(&sb)).filter(|s| !s.is_empty())
    });
    assert_eq!(skips.len(), 1, "one entry for the four fires: {skips:#?}");
    let detail = skips[0]["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        "4 fires not run, 2026-03-11 02:00 UTC .. 2026-03-14 02:00 UTC: \
         the coordinator was down; catchup: latest runs only the newest missed fire"
    );
    assert_eq!(skipped_metric(&sb), 4.0);
    assert!(
        sb.log().contains("schedule of nightly missed its fire at 2026-03-15 02:00:00 UTC while goflow was down: catching it up once now (4 earlier missed fires are not run)"),
        "{}",
        logs()
    );
}

#[test]
fn catchup_all_runs_every_missed_fire_oldest_first() {
    let (sb, _clock) = five_days_down("all");
    let ids = wait_for(
        LIMIT,
        "five instances",
        || sb.log_tail(40),
        || {
            let ids = instance_ids(&sb, &MISSED_DAYS);
            ids.iter().all(Option::is_some).then_some(ids)
        },
    );
    let ids: Vec<i64> = ids.into_iter().map(Option::unwrap).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "created oldest first: {ids:?}"
    );
    assert!(skip_entries(&sb).is_empty());
    assert_eq!(skipped_metric(&sb), 0.0);
}

#[test]
fn catchup_none_runs_no_missed_fire_but_the_next_one_on_time() {
    let (sb, clock) = five_days_down("none");
    let logs = || sb.log_tail(40);
    let skips = wait_for(LIMIT, "the skipped fires in history", logs, || {
        Some(skip_entries(&sb)).filter(|s| !s.is_empty())
    });
    assert_eq!(
        skips[0]["detail"],
        "5 fires not run, 2026-03-11 02:00 UTC .. 2026-03-15 02:00 UTC: \
         the coordinator was down; catchup: none"
    );
    assert_eq!(skipped_metric(&sb), 5.0);
    assert_eq!(instance_ids(&sb, &MISSED_DAYS), [None; 5]);
    // The next fire, on time, runs.
    std::fs::write(&clock, "2026-03-16T02:00:05Z").unwrap();
    wait_for(LIMIT, "the on-time fire of 03-16", logs, || {
        instance_ids(&sb, &["20260316"])[0]
    });
    assert_eq!(skipped_metric(&sb), 5.0);
}

/// Fires due while the task is paused are held, not run; unpausing hands them to the policy,
/// and the skipped ones say the task was paused.
#[test]
fn fires_missed_while_paused_follow_the_policy_on_unpause() {
    let (sb, clock) = start_at(START);
    sb.apply(&task_yaml("latest"));
    sb.ctl_ok(&["pause", "-j", "nightly"]);
    std::fs::write(&clock, "2026-03-13T12:00:00Z").unwrap();
    let logs = || sb.log_tail(40);
    wait_for(LIMIT, "three fires held", logs, || {
        sb.log()
            .contains("schedule of nightly is paused: 3 fires held until it is unpaused (catchup: latest)")
            .then_some(())
    });
    assert_eq!(instance_ids(&sb, &MISSED_DAYS[..3]), [None; 3]);
    sb.ctl_ok(&["unpause", "-j", "nightly"]);
    wait_for(LIMIT, "the 03-13 instance", logs, || {
        instance_ids(&sb, &["20260313"])[0]
    });
    assert_eq!(instance_ids(&sb, &MISSED_DAYS[..2]), [None; 2]);
    let skips = wait_for(LIMIT, "the skipped fires in history", logs, || {
        Some(skip_entries(&sb)).filter(|s| !s.is_empty())
    });
    assert_eq!(
        skips[0]["detail"],
        "2 fires not run, 2026-03-11 02:00 UTC .. 2026-03-12 02:00 UTC: \
         the task was paused; catchup: latest runs only the newest missed fire"
    );
    assert_eq!(skipped_metric(&sb), 2.0);
}

/// A policy that is not one of the three is refused with the field named, and changes nothing.
#[test]
fn a_bad_catchup_is_refused_and_changes_nothing() {
    let (sb, _clock) = start_at(START);
    sb.apply(&task_yaml("all"));
    let path = sb.write("bad.yaml", &task_yaml("sometimes"));
    let err = sb.ctl_err(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        err.contains(
            r#"task "nightly" (tasks[0], line 3): catchup "sometimes" is not one of latest, all, none"#
        ),
        "{err}"
    );
    let task = sb
        .tasks_json()
        .into_iter()
        .find(|t| t["id"] == "nightly")
        .unwrap();
    assert_eq!(task["catchup"], "all");
}

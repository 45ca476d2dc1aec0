//! Where the time went (issue 19): `status -o json` has each instance's `timings`, which add up
//! to `finished_at - created_at` (within 5%; they should be exact), with each phase non-zero
//! where the scenario makes it so and `running` close to the commands' sleeps.
//!
//! The scenario: a pool of 1 slot held by `tm_hog` (sleeps 3 s) when `tm_a` is queued, so `tm_a`
//! waits for slots; `tm_a`'s first try fails after 0.5 s and its retry waits a 1 s delay, then
//! sleeps 1.5 s; `tm_b` runs after `tm_a` (waiting for its upstream all along) and sleeps 1 s.

use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Launch, Sandbox, time_of, wait_for};

const SETTLE: Duration = Duration::from_secs(120);
const DAY: &str = "20260301";
/// What a try costs beyond its command's sleep on a busy 2-core machine: the shell's start,
/// the report's trip, the log's drain.
const OVERHEAD_MS: i64 = 4_000;

fn standalone() -> Sandbox {
    Sandbox::start_with(|root| Launch {
        args: vec![
            "standalone".into(),
            "--data-dir".into(),
            root.join("data").into(),
            "--slots".into(),
            "4".into(),
        ],
        ..Launch::default()
    })
}

fn ms(timings: &Value, phase: &str) -> i64 {
    timings[phase]
        .as_i64()
        .unwrap_or_else(|| panic!("timings.{phase} is not a number: {timings:#}"))
}

/// The phases added up, and the instance's elapsed time from creation to finish.
fn sum_and_elapsed(row: &Value) -> (i64, i64) {
    let t = &row["timings"];
    let sum: i64 = [
        "waiting_upstreams",
        "waiting_slots",
        "queued",
        "claimed_to_started",
        "running",
        "retry_delays",
    ]
    .iter()
    .map(|p| ms(t, p))
    .sum();
    let elapsed = (time_of(row, "finished_at") - time_of(row, "run_started_at")).num_milliseconds();
    (sum, elapsed)
}

fn assert_adds_up(row: &Value) {
    let (sum, elapsed) = sum_and_elapsed(row);
    assert!(
        (sum - elapsed).abs() * 20 <= elapsed,
        "timings add up to {sum} ms, not the {elapsed} ms it took: {row:#}"
    );
}

fn assert_about(what: &str, got: i64, slept_ms: i64, row: &Value) {
    assert!(
        (slept_ms..slept_ms + OVERHEAD_MS).contains(&got),
        "{what}: {got} ms for a sleep of {slept_ms} ms: {row:#}"
    );
}

#[test]
fn timings_add_up_and_say_where_the_time_went() {
    let sb = standalone();
    let work = sb.work();
    let marker = work.join("a.tried");
    let marker = marker.display();
    sb.apply(&format!(
        "pools:
  - id: tm_pool
    slots: 1
tasks:
  - id: tm_hog
    command: \"sleep 3\"
    pool: tm_pool
  - id: tm_a
    command: \"if [ ! -f {marker} ]; then touch {marker}; sleep 0.5; exit 3; fi; sleep 1.5\"
    pool: tm_pool
    retries: 1
    retry_delay: 1s
  - id: tm_b
    command: \"sleep 1\"
    depends_on: [tm_a]
"
    ));
    sb.ctl_ok(&["run", "-j", "tm_hog", "-d", DAY]);
    sb.wait_status(DAY, SETTLE, "tm_hog to run", |rows| {
        rows.iter()
            .any(|r| r["task"] == "tm_hog" && r["state"] == "running")
    });
    sb.ctl_ok(&["run", "-j", "tm_a", "-d", DAY, "--down"]);

    // While tm_a is held back, its current phase counts up to now.
    wait_for(
        SETTLE,
        "tm_a held back by its pool, its waiting_slots counting",
        || sb.log_tail(40),
        || {
            let rows = sb.status_json(DAY);
            let a = rows.iter().find(|r| r["task"] == "tm_a")?;
            let held =
                a["state"] == "queued" && a["wait_reason"].as_str().is_some_and(|w| w.contains("pool"));
            (held && a["timings"]["waiting_slots"].as_i64()? > 0).then_some(())
        },
    );

    let rows = sb.wait_status(DAY, SETTLE, "every instance to succeed", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r["state"] == "success")
    });
    let a = sb.instance(&rows, "tm_a");
    let b = sb.instance(&rows, "tm_b");
    let hog = sb.instance(&rows, "tm_hog");
    for row in [a, b, hog] {
        assert_adds_up(row);
        assert_eq!(
            row["run_started_at"], row["created_at"],
            "a first run began at creation: {row:#}"
        );
    }

    let ta = &a["timings"];
    assert!(
        ms(ta, "waiting_slots") > 0,
        "tm_a waited for the pool's slot: {a:#}"
    );
    assert!(
        ms(ta, "retry_delays") >= 1_000,
        "tm_a's retry waited its delay: {a:#}"
    );
    assert!(ms(ta, "queued") > 0, "tm_a was queued before its claims: {a:#}");
    let tries = ta["tries"].as_array().expect("tries");
    assert_eq!(tries.len(), 2, "{a:#}");
    assert_eq!(
        (tries[0]["try"].as_i64(), tries[1]["try"].as_i64()),
        (Some(1), Some(2))
    );
    assert_about("tm_a try 1", tries[0]["running"].as_i64().unwrap(), 500, a);
    assert_about("tm_a try 2", tries[1]["running"].as_i64().unwrap(), 1_500, a);
    let per_try: i64 = tries.iter().map(|t| t["running"].as_i64().unwrap()).sum();
    assert_eq!(per_try, ms(ta, "running"), "the tries add up to running: {a:#}");

    let tb = &b["timings"];
    assert!(
        ms(tb, "waiting_upstreams") >= 3_000,
        "tm_b waited for tm_a's two tries and retry delay: {b:#}"
    );
    assert_eq!(ms(tb, "waiting_slots"), 0, "tm_b has no pool: {b:#}");
    assert_eq!(ms(tb, "retry_delays"), 0, "{b:#}");
    assert_about("tm_b", ms(tb, "running"), 1_000, b);
    assert_about("tm_hog", ms(&hog["timings"], "running"), 3_000, hog);

    // A rerun is a new run: its timings start again, and add up to its own elapsed time.
    sb.ctl_ok(&["run", "-j", "tm_b", "-d", DAY]);
    let rows = sb.wait_status(DAY, SETTLE, "tm_b's rerun to succeed", |rows| {
        rows.iter()
            .any(|r| r["task"] == "tm_b" && r["state"] == "success" && r["run_started_at"] != r["created_at"])
    });
    let b = sb.instance(&rows, "tm_b");
    assert_adds_up(b);
    let tb = &b["timings"];
    assert!(
        ms(tb, "waiting_upstreams") < 3_000,
        "the rerun's upstream had succeeded already: {b:#}"
    );
    assert_eq!(
        tb["tries"].as_array().map(Vec::len),
        Some(1),
        "only the rerun's try: {b:#}"
    );
    assert_about("tm_b's rerun", ms(tb, "running"), 1_000, b);
}

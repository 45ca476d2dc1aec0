//! The cron loop's catch-up on a clock the test moves: a long downtime of a frequent schedule is
//! worked through in batches, and every missed fire ends up run or skipped exactly once.

use std::sync::Arc;
use std::time::Duration;

use super::tests::RecordingQueue;
use super::*;
use crate::clock::ScheduleClock;
use crate::store::{self, Store};

async fn engine_on_clock(dir: &std::path::Path, clock: &std::path::Path, dag: &str) -> Arc<Engine> {
    let store = Store::open_dir(dir).await.unwrap();
    let epoch = store.next_epoch().await.unwrap();
    let settings = EngineSettings {
        schedule_clock: ScheduleClock::File(clock.to_path_buf()),
        ..EngineSettings::default()
    };
    let engine = Engine::new(
        store,
        Arc::new(RecordingQueue::default()),
        settings,
        "standalone",
        epoch,
        Default::default(),
    )
    .await
    .unwrap();
    engine
        .apply(dag, "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    engine
}

/// Runs passes until nothing more is pending; returns how many passes that took.
async fn passes_until_caught_up(engine: &Engine) -> usize {
    for pass in 1..=20 {
        let sleep = engine.fire_due_schedules().await.unwrap();
        if sleep != Some(Duration::ZERO) {
            return pass;
        }
    }
    panic!("still catching up after 20 passes");
}

async fn outcomes(engine: &Engine) -> Vec<(i64, String, String)> {
    let mut conn = engine.store().read().await.unwrap();
    let mut fires = store::list_fires(&mut conn, "tick", 100_000).await.unwrap();
    fires.reverse();
    fires
        .into_iter()
        .map(|f| (f.fire_at, f.outcome, f.reason))
        .collect()
}

const START: &str = "2026-03-10T00:00:00Z";
/// 1,200 minutes later, and 30 seconds.
const LATER: &str = "2026-03-10T20:00:30Z";

#[tokio::test]
async fn a_long_downtime_is_caught_up_in_batches_each_fire_once() {
    // A per-minute schedule's newest fire is at most a minute old, so it is on time and runs
    // whatever the policy; the 1,199 before it are missed and skipped.
    for policy in ["latest", "none"] {
        let runs = 1;
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock");
        std::fs::write(&clock, START).unwrap();
        let dag = format!(
            "tasks:\n  - id: tick\n    command: \"true\"\n    schedule: \"* * * * *\"\n    day_offset: 0\n    catchup: {policy}\n"
        );
        let engine = engine_on_clock(dir.path(), &clock, &dag).await;
        assert_eq!(
            engine.fire_due_schedules().await.unwrap(),
            Some(Duration::from_secs(60))
        );
        std::fs::write(&clock, LATER).unwrap();
        let passes = passes_until_caught_up(&engine).await;
        assert!(
            passes >= 3,
            "{policy}: 1,200 fires take several batches, took {passes}"
        );
        let fires = outcomes(&engine).await;
        assert_eq!(fires.len(), 1200, "{policy}: every missed minute recorded once");
        assert!(fires.windows(2).all(|w| w[1].0 - w[0].0 == 60_000));
        let fired: Vec<_> = fires.iter().filter(|f| f.1 == store::FIRED).collect();
        assert_eq!(fired.len(), runs, "{policy}");
        assert_eq!(fired[0].0, fires.last().unwrap().0, "the newest runs");
        let reason = format!("the coordinator was down; catchup: {policy}");
        assert!(
            fires
                .iter()
                .filter(|f| f.1 == store::SKIPPED)
                .all(|f| f.2.starts_with(&reason)),
            "{policy}: {:?}",
            &fires[..2]
        );
        let skipped = engine
            .metrics()
            .cron_skipped_fires
            .get_or_create(&crate::metrics::TaskLabel { task: "tick".into() })
            .get();
        assert_eq!(skipped as usize, 1200 - runs, "{policy}");
        // Nothing is left to do: another pass records nothing.
        engine.fire_due_schedules().await.unwrap();
        assert_eq!(outcomes(&engine).await.len(), 1200);
    }
}

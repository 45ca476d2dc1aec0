//! ETA and deadlines at risk in the engine (issue 19), on a real SQLite store: a running try
//! expected to take hours puts a deadline at risk (one alert, naming the path), a worse
//! prediction alerts again only past the margin, and a prediction back inside the deadline
//! records `deadline_at_risk_cleared`.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{Harness, day, plan};
use super::*;
use crate::alerts::AlertSettings;
use crate::store;

fn dag(due: chrono::DateTime<chrono::Utc>, expected: &str) -> String {
    format!(
        "tasks:\n  - id: up\n    command: \"sleep 1\"\n    expected_duration: {expected}\n  - id: report\n    command: \"true\"\n    depends_on: [up]\n    expected_duration: 1m\n    deadline: \"{} UTC +0\"\n",
        due.format("%H:%M:%S")
    )
}

async fn harness_with_webhook(yaml: &str) -> Harness {
    let mut alerts = AlertSettings::default();
    alerts.set_webhook("http://127.0.0.1:9/hook");
    alerts.at_risk_margin = Duration::from_secs(15 * 60);
    let settings = EngineSettings {
        alerts: Arc::new(alerts),
        ..EngineSettings::default()
    };
    super::tests::harness_with(yaml, settings).await
}

async fn risk_alerts(h: &Harness) -> Vec<store::AlertRow> {
    let mut alerts = h.engine.list_alerts("report", 100).await.unwrap();
    alerts.reverse();
    alerts
}

#[tokio::test]
async fn a_deadline_at_risk_alerts_once_again_past_the_margin_and_is_cleared() {
    let due = chrono::Utc::now() + chrono::Duration::hours(2);
    let d = due.format("%Y%m%d").to_string();
    let h = harness_with_webhook(&dag(due, "3h")).await;
    h.register().await;
    h.engine
        .run(&plan("up", &d, true), &Caller::system())
        .await
        .unwrap();
    let dispatch = h.queue.take().remove(0);
    let ClaimOutcome::Granted(_) = h.engine.claim(&dispatch, "agent-1").await.unwrap() else {
        panic!("claim refused")
    };

    let eta = h.engine.predict_day(day(&d)).await.unwrap();
    assert_eq!(eta.instances.len(), 2, "{eta:?}");
    let path: Vec<String> = eta.critical_path.iter().map(|k| k.task.clone()).collect();
    assert_eq!(path, ["up", "report"]);
    assert_eq!(eta.instances[0].basis, "expected_duration");

    h.engine.check_deadlines_at_risk().await.unwrap();
    h.engine.check_deadlines_at_risk().await.unwrap();
    let alerts = risk_alerts(&h).await;
    assert_eq!(alerts.len(), 1, "raised once: {alerts:?}");
    assert_eq!(alerts[0].kind, "deadline_at_risk");
    assert_eq!(alerts[0].try_number, 1);
    assert!(
        alerts[0]
            .message
            .contains(&format!("critical path: up@{d} -> report@{d}")),
        "{}",
        alerts[0].message
    );

    // Ten minutes later is within the margin; an hour later is not.
    h.engine
        .apply(&dag(due, "3h10m"), "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    h.engine.check_deadlines_at_risk().await.unwrap();
    assert_eq!(risk_alerts(&h).await.len(), 1);
    h.engine
        .apply(&dag(due, "4h"), "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    h.engine.check_deadlines_at_risk().await.unwrap();
    let alerts = risk_alerts(&h).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(
        (alerts[1].kind.as_str(), alerts[1].try_number),
        ("deadline_at_risk", 2)
    );

    // Back inside the deadline: recorded once.
    h.engine
        .apply(&dag(due, "1m"), "test.yaml", false, &Caller::system())
        .await
        .unwrap();
    h.engine.check_deadlines_at_risk().await.unwrap();
    h.engine.check_deadlines_at_risk().await.unwrap();
    let alerts = risk_alerts(&h).await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[2].kind, "deadline_at_risk_cleared");
    assert_eq!(alerts[2].try_number, 2);
    assert!(
        alerts[2].message.contains("inside its deadline"),
        "{}",
        alerts[2].message
    );
}

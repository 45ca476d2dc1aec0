//! Deadlines at risk (issue 19): in the leader's alert check loop, each task with a deadline
//! whose next due instance is unfinished is predicted (`predict_day`, once per day involved).
//! A predicted finish after the deadline, while the deadline is still ahead, raises one
//! `deadline_at_risk` alert (routed like `deadline`), and another each time the prediction
//! gets later by `Alerts.AtRiskMargin`. When the prediction comes back inside the deadline,
//! a `deadline_at_risk_cleared` alert records it. What was raised, at which prediction, is
//! kept in `deadline_risks`; the alerts' try_number counts the raises (1, 2, ...), so the
//! alerts table's unique key lets each raise through once.

use std::collections::{BTreeMap, HashMap};

use goflow_core::{EtlDay, InstanceKey, Period};

use super::{Engine, Result};
use crate::alerts::AlertKind;
use crate::store::{self, DeadlineRisk, NewAlert, now_ms};

pub const AT_RISK: &str = "deadline_at_risk";
pub const AT_RISK_CLEARED: &str = "deadline_at_risk_cleared";

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Engine {
    /// One pass of the at-risk check. Cost: one instance-state read per task with a deadline,
    /// one prediction per data date involved (usually one), one read of the recorded risks.
    pub async fn check_deadlines_at_risk(&self) -> Result<()> {
        let now = now_ms();
        let catalog = self.catalog();
        // (task, the day whose deadline comes next, when it is due).
        let mut candidates: Vec<(String, EtlDay, i64, String)> = vec![];
        {
            let mut conn = self.store.read().await?;
            for task in catalog.tasks.values() {
                let Some(deadline) = &task.spec.deadline else {
                    continue;
                };
                if task.spec.period != goflow_core::PeriodKind::Day {
                    continue;
                }
                let day = deadline.latest_due_day(now).offset(1);
                let due = deadline.due_at(day);
                if due <= now || task.spec.start_day.is_some_and(|start| day < start) {
                    continue;
                }
                let state = store::instance_state(&mut conn, &task.spec.id, &day.compact()).await?;
                if state.as_deref() == Some("success") {
                    continue;
                }
                candidates.push((task.spec.id.clone(), day, due, deadline.to_string()));
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let mut etas = BTreeMap::new();
        for (_, day, ..) in &candidates {
            if !etas.contains_key(day) {
                etas.insert(*day, self.predict_day(*day).await?);
            }
        }
        let keys: Vec<(String, String)> = candidates
            .iter()
            .map(|(t, d, ..)| (t.clone(), d.compact()))
            .collect();
        let risks: HashMap<(String, String), DeadlineRisk> = {
            let mut conn = self.store.read().await?;
            store::deadline_risks(&mut conn, &keys).await?
        };
        let margin = self.settings.alerts.at_risk_margin.as_millis() as i64;
        let mut tx = self.store.begin().await?;
        let mut new = 0;
        for (task, day, due, deadline) in &candidates {
            let eta = &etas[day];
            let key = InstanceKey::new(task, Period::day(*day));
            let Some(predicted) = eta.instance(&key).and_then(|i| i.finish_at) else {
                continue;
            };
            let recorded = risks.get(&(task.clone(), day.compact()));
            let at_risk = recorded.is_some_and(|r| r.at_risk != 0);
            let raised = recorded.map_or(0, |r| r.raised);
            let path: Vec<String> = eta.path_to(&key).iter().map(ToString::to_string).collect();
            let (kind, try_number, message) = if predicted > *due {
                let worse = recorded.is_some_and(|r| predicted >= r.predicted_at + margin);
                if at_risk && !worse {
                    continue;
                }
                let late = humantime::format_duration(std::time::Duration::from_secs(
                    ((predicted - due) / 1000) as u64,
                ));
                (
                    AT_RISK,
                    raised + 1,
                    format!(
                        "{task} of {day} is predicted to finish at {} ({late} after its deadline {} ({deadline})); critical path: {}",
                        rfc3339(predicted),
                        rfc3339(*due),
                        path.join(" -> ")
                    ),
                )
            } else if at_risk {
                (
                    AT_RISK_CLEARED,
                    raised,
                    format!(
                        "{task} of {day} is predicted to finish at {}, inside its deadline {} ({deadline}) again",
                        rfc3339(predicted),
                        rfc3339(*due)
                    ),
                )
            } else {
                continue;
            };
            let state = eta
                .instance(&key)
                .map_or("missing".to_string(), |i| i.state.clone());
            let alert = NewAlert {
                task_id: task,
                etl_day: &day.compact(),
                kind,
                try_number,
                instance_state: &state,
                message: &message,
            };
            if self
                .record_alert(&mut tx, AlertKind::Deadline, &alert, now)
                .await?
            {
                new += 1;
                tracing::warn!("{kind} alert: {message}");
            }
            store::save_deadline_risk(
                &mut tx,
                &DeadlineRisk {
                    task_id: task.clone(),
                    etl_day: day.compact(),
                    predicted_at: if kind == AT_RISK {
                        predicted
                    } else {
                        recorded.map_or(predicted, |r| r.predicted_at)
                    },
                    raised: try_number,
                    at_risk: i64::from(kind == AT_RISK),
                    updated_at: now,
                },
            )
            .await?;
        }
        tx.commit().await?;
        if new > 0 {
            self.changed();
        }
        Ok(())
    }
}

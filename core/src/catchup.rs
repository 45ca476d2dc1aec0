//! Catch-up: which of a schedule's missed fires run and which are skipped, and why.
//!
//! A fire is missed when it did not run at its time: the coordinator was down (or too busy to
//! fire, or no leader was elected), or the task was paused. The task's `catchup` policy decides:
//! `latest` (the default) runs the newest missed fire, `all` runs every one oldest first, `none`
//! runs none. A fire that is on time always runs. Every fire not run gets a reason, so history
//! can say why it was skipped.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A task's `catchup:` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CatchUp {
    /// Run the most recent missed fire, skip the earlier ones.
    #[default]
    Latest,
    /// Run every missed fire, oldest first.
    All,
    /// Run no missed fire.
    None,
}

impl CatchUp {
    pub const NAMES: [&'static str; 3] = ["latest", "all", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
            CatchUp::None => "none",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catchup {0:?} is not one of latest, all, none")]
pub struct BadCatchUp(pub String);

impl FromStr for CatchUp {
    type Err = BadCatchUp;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "latest" => Ok(CatchUp::Latest),
            "all" => Ok(CatchUp::All),
            "none" => Ok(CatchUp::None),
            other => Err(BadCatchUp(other.to_string())),
        }
    }
}

/// Why a fire did not run at its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missed {
    /// The coordinator was down (or no leader fired it in time).
    Down,
    /// The task was paused.
    Paused,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Down => "the coordinator was down",
            Missed::Paused => "the task was paused",
        }
    }
}

/// A fire to decide about: its time, and why it is late (None: on time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueFire {
    pub at: DateTime<Utc>,
    pub missed: Option<Missed>,
}

/// What happens to one fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it now.
    Run,
    /// Record it as skipped, with the reason shown in history.
    Skip(String),
}

/// How late the newest due fire may be and still count as on time: the cron loop wakes at the
/// fire time, but a busy machine or a leader change can make it a little late.
pub const ON_TIME_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Decides every fire in `fires` (any order, no repeats): the result is sorted oldest first,
/// one entry per fire. `newer_pending`: more missed fires follow that are not in `fires` (the
/// caller works through a long downtime in batches), so none of these is the newest.
pub fn decide(policy: CatchUp, fires: &[DueFire], newer_pending: bool) -> Vec<(DateTime<Utc>, Decision)> {
    let mut fires = fires.to_vec();
    fires.sort_by_key(|f| f.at);
    let any_on_time = fires.iter().any(|f| f.missed.is_none());
    // Under `latest`, the newest missed fire runs unless a newer fire exists (on time, or
    // still to be decided in a later batch): that one is then the latest period.
    let newest_missed = fires.iter().rev().find(|f| f.missed.is_some()).map(|f| f.at);
    let latest_runs = if any_on_time || newer_pending {
        None
    } else {
        newest_missed
    };
    fires
        .iter()
        .map(|fire| {
            let decision = match (fire.missed, policy) {
                (None, _) | (Some(_), CatchUp::All) => Decision::Run,
                (Some(_), CatchUp::Latest) if Some(fire.at) == latest_runs => Decision::Run,
                (Some(why), CatchUp::Latest) => Decision::Skip(format!(
                    "{}; catchup: latest runs only the newest missed fire",
                    why.as_str()
                )),
                (Some(why), CatchUp::None) => Decision::Skip(format!("{}; catchup: none", why.as_str())),
            };
            (fire.at, decision)
        })
        .collect()
}

/// Classifies fires due now, found after the last recorded fire: the newest is on time when it
/// is at most [`ON_TIME_GRACE`] old and no newer fire is pending; every other one was missed
/// because the coordinator did not fire it.
pub fn classify_due(due: &[DateTime<Utc>], now: DateTime<Utc>, newer_pending: bool) -> Vec<DueFire> {
    let newest = due.iter().max().copied();
    due.iter()
        .map(|&at| {
            let on_time = !newer_pending && Some(at) == newest && now - at <= ON_TIME_GRACE;
            DueFire {
                at,
                missed: (!on_time).then_some(Missed::Down),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hour(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap()
    }

    fn missed(hours: &[u32], why: Missed) -> Vec<DueFire> {
        hours
            .iter()
            .map(|&h| DueFire {
                at: hour(h),
                missed: Some(why),
            })
            .collect()
    }

    fn runs(decisions: &[(DateTime<Utc>, Decision)]) -> Vec<DateTime<Utc>> {
        decisions
            .iter()
            .filter(|(_, d)| *d == Decision::Run)
            .map(|(at, _)| *at)
            .collect()
    }

    #[test]
    fn parses_the_three_policies_and_names_a_bad_one() {
        assert_eq!("latest".parse(), Ok(CatchUp::Latest));
        assert_eq!(" all ".parse(), Ok(CatchUp::All));
        assert_eq!("none".parse(), Ok(CatchUp::None));
        assert_eq!(CatchUp::default(), CatchUp::Latest);
        let err = "sometimes".parse::<CatchUp>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"catchup "sometimes" is not one of latest, all, none"#
        );
        for name in CatchUp::NAMES {
            assert_eq!(name.parse::<CatchUp>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn latest_runs_the_newest_missed_fire_and_says_why_the_others_are_skipped() {
        let d = decide(
            CatchUp::Latest,
            &missed(&[14, 11, 13, 12, 15], Missed::Down),
            false,
        );
        assert_eq!(runs(&d), [hour(15)]);
        assert_eq!(d.len(), 5);
        assert_eq!(d[0].0, hour(11), "oldest first");
        assert_eq!(
            d[0].1,
            Decision::Skip(
                "the coordinator was down; catchup: latest runs only the newest missed fire".into()
            )
        );
    }

    #[test]
    fn all_runs_every_missed_fire_oldest_first() {
        let d = decide(CatchUp::All, &missed(&[13, 11, 12], Missed::Paused), false);
        assert_eq!(runs(&d), [hour(11), hour(12), hour(13)]);
    }

    #[test]
    fn none_skips_every_missed_fire_but_runs_one_on_time() {
        let mut fires = missed(&[11, 12], Missed::Paused);
        fires.push(DueFire {
            at: hour(13),
            missed: None,
        });
        let d = decide(CatchUp::None, &fires, false);
        assert_eq!(runs(&d), [hour(13)]);
        assert_eq!(
            d[0].1,
            Decision::Skip("the task was paused; catchup: none".into())
        );
    }

    #[test]
    fn latest_leaves_the_run_to_a_newer_fire() {
        let mut fires = missed(&[11, 12], Missed::Down);
        fires.push(DueFire {
            at: hour(13),
            missed: None,
        });
        assert_eq!(runs(&decide(CatchUp::Latest, &fires, false)), [hour(13)]);
        // A batch of an even longer downtime: the newest comes in a later batch.
        assert!(runs(&decide(CatchUp::Latest, &missed(&[11, 12], Missed::Down), true)).is_empty());
    }

    #[test]
    fn only_the_newest_fire_within_the_grace_is_on_time() {
        let now = hour(15) + chrono::TimeDelta::seconds(20);
        let fires = classify_due(&[hour(14), hour(15)], now, false);
        assert_eq!(fires[0].missed, Some(Missed::Down));
        assert_eq!(fires[1].missed, None);
        let late = classify_due(&[hour(15)], hour(15) + chrono::TimeDelta::minutes(30), false);
        assert_eq!(late[0].missed, Some(Missed::Down));
        let batch = classify_due(&[hour(15)], now, true);
        assert_eq!(batch[0].missed, Some(Missed::Down));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_policy() -> impl Strategy<Value = CatchUp> {
            prop_oneof![Just(CatchUp::Latest), Just(CatchUp::All), Just(CatchUp::None)]
        }

        /// Distinct hours, each missed (down or paused) or on time.
        fn any_fires() -> impl Strategy<Value = Vec<DueFire>> {
            proptest::collection::btree_map(0u32..2000, 0u8..3, 0..40).prop_map(|hours| {
                hours
                    .into_iter()
                    .map(|(h, kind)| DueFire {
                        at: hour(0) + chrono::TimeDelta::hours(h.into()),
                        missed: [None, Some(Missed::Down), Some(Missed::Paused)][kind as usize],
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn every_fire_is_run_or_skipped_exactly_once(policy in any_policy(), fires in any_fires(), pending in any::<bool>()) {
                let d = decide(policy, &fires, pending);
                prop_assert_eq!(d.len(), fires.len());
                prop_assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "oldest first, no repeats");
                for fire in &fires {
                    let (_, decision) = d.iter().find(|(at, _)| *at == fire.at).unwrap();
                    match (fire.missed, decision) {
                        (None, Decision::Run) => {}
                        (None, Decision::Skip(_)) => prop_assert!(false, "an on-time fire is skipped"),
                        (Some(why), Decision::Skip(reason)) => {
                            prop_assert!(reason.starts_with(why.as_str()), "{}", reason);
                            prop_assert!(reason.contains(policy.as_str()), "{}", reason);
                        }
                        (Some(_), Decision::Run) => prop_assert!(policy != CatchUp::None),
                    }
                }
            }

            #[test]
            fn each_policy_runs_what_it_promises(policy in any_policy(), fires in any_fires(), pending in any::<bool>()) {
                let d = decide(policy, &fires, pending);
                let mut missed: Vec<_> = fires.iter().filter(|f| f.missed.is_some()).map(|f| f.at).collect();
                missed.sort();
                let ran_missed: Vec<_> = runs(&d).into_iter().filter(|at| missed.contains(at)).collect();
                let any_on_time = fires.iter().any(|f| f.missed.is_none());
                match policy {
                    CatchUp::All => prop_assert_eq!(ran_missed, missed),
                    CatchUp::None => prop_assert!(ran_missed.is_empty()),
                    CatchUp::Latest if any_on_time || pending => prop_assert!(ran_missed.is_empty()),
                    CatchUp::Latest => prop_assert_eq!(ran_missed, missed.last().copied().into_iter().collect::<Vec<_>>()),
                }
            }
        }
    }
}

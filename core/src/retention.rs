//! Retention: which instances `clean --before DAY` may delete, and which day a retention of
//! N days cleans before.
//!
//! An instance is kept when it is not finished (waiting, queued, running or up for retry:
//! accepted work is never dropped), or when an unfinished instance still depends on it (with
//! the edge's day offset). Keeping every unfinished instance's upstreams is enough: an old
//! upstream that is itself unfinished is kept by the first rule, and its own upstreams by the
//! second. What finished instances depended on does not matter: nothing reads it again.

use std::collections::BTreeSet;

use crate::{Dag, EtlDay, InstanceKey, InstanceState};

/// The instances before `before` that unfinished ones still depend on.
pub fn depended_on(dag: &Dag, unfinished: &[InstanceKey], before: EtlDay) -> BTreeSet<InstanceKey> {
    unfinished
        .iter()
        .flat_map(|key| dag.upstream_instances(key))
        .filter(|up| up.etl_day() < before)
        .collect()
}

/// Why an old instance stays, or None when `clean` may delete it.
pub fn keep_reason(
    state: InstanceState,
    key: &InstanceKey,
    depended_on: &BTreeSet<InstanceKey>,
) -> Option<&'static str> {
    if !state.is_finished() {
        Some("not finished")
    } else if depended_on.contains(key) {
        Some("an unfinished instance depends on it")
    } else {
        None
    }
}

/// The first day a retention of `days` keeps on `today`: with 30 days on 20260131, instances
/// of 20260101 and later stay and earlier ones go.
pub fn cutoff(today: EtlDay, days: u32) -> EtlDay {
    today.offset(-(days.min(i32::MAX as u32) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dependency, TaskSpec};

    fn day(s: &str) -> EtlDay {
        EtlDay::parse(s).unwrap()
    }

    fn dag() -> Dag {
        // load (same day) <- report (yesterday's load and today's) <- mail
        let load = TaskSpec::new("load", "true");
        let mut report = TaskSpec::new("report", "true");
        report.depends_on = vec![
            Dependency {
                task: "load".into(),
                day_offset: -1,
                calendar: None,
            },
            Dependency {
                task: "load".into(),
                day_offset: 0,
                calendar: None,
            },
        ];
        let mut mail = TaskSpec::new("mail", "true");
        mail.depends_on = vec![Dependency {
            task: "report".into(),
            day_offset: 0,
            calendar: None,
        }];
        Dag::new([load, report, mail]).unwrap()
    }

    #[test]
    fn an_unfinished_instance_keeps_its_old_upstreams_with_day_offsets() {
        let waiting = [InstanceKey::new("report", day("20260110"))];
        let kept = depended_on(&dag(), &waiting, day("20260110"));
        // Yesterday's load is before the cut and depended on; today's is not before it.
        assert_eq!(kept, BTreeSet::from([InstanceKey::new("load", day("20260109"))]));
    }

    #[test]
    fn upstreams_on_or_after_the_cut_are_not_listed() {
        let waiting = [InstanceKey::new("report", day("20260120"))];
        assert!(depended_on(&dag(), &waiting, day("20260110")).is_empty());
    }

    #[test]
    fn a_chain_of_old_unfinished_instances_keeps_every_link() {
        // mail@5 waits for report@5 (waiting, kept as unfinished), which waits for load@4, load@5.
        let unfinished = [
            InstanceKey::new("mail", day("20260105")),
            InstanceKey::new("report", day("20260105")),
        ];
        let kept = depended_on(&dag(), &unfinished, day("20260110"));
        assert_eq!(
            kept,
            BTreeSet::from([
                InstanceKey::new("load", day("20260104")),
                InstanceKey::new("load", day("20260105")),
                InstanceKey::new("report", day("20260105")),
            ])
        );
        let report = InstanceKey::new("report", day("20260105"));
        assert_eq!(
            keep_reason(InstanceState::Waiting, &report, &kept),
            Some("not finished")
        );
    }

    #[test]
    fn finished_instances_nothing_waits_for_may_go() {
        let kept = BTreeSet::from([InstanceKey::new("load", day("20260109"))]);
        let other = InstanceKey::new("load", day("20260108"));
        for state in [
            InstanceState::Success,
            InstanceState::Failed,
            InstanceState::Killed,
        ] {
            assert_eq!(keep_reason(state, &other, &kept), None);
        }
        assert!(
            keep_reason(
                InstanceState::Success,
                &InstanceKey::new("load", day("20260109")),
                &kept
            )
            .is_some()
        );
        for state in [
            InstanceState::Waiting,
            InstanceState::Queued,
            InstanceState::Running,
            InstanceState::UpForRetry,
        ] {
            assert!(keep_reason(state, &other, &kept).is_some(), "{state}");
        }
    }

    #[test]
    fn cutoff_counts_back_whole_days() {
        assert_eq!(cutoff(day("20260131"), 30), day("20260101"));
        assert_eq!(cutoff(day("20260301"), 1), day("20260228"));
        assert_eq!(cutoff(day("20260301"), 0), day("20260301"));
    }
}

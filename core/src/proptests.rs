//! Properties of the DAG and date code over generated inputs: what unit examples cannot cover.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use crate::calendar::{Calendar, RawCalendar};
use crate::{Dag, Dependency, EtlDay, InstanceKey, Period, PeriodKind, TaskSpec};

/// Days between 1990 and 2089.
fn any_day() -> impl Strategy<Value = EtlDay> {
    (0i32..36_500).prop_map(|n| EtlDay::parse("19900101").unwrap().offset(n))
}

/// A random DAG of up to 12 tasks: edges only from lower to higher index on the same day
/// (so no same-day cycle), and any direction with a negative offset (yesterday's instance).
fn any_dag() -> impl Strategy<Value = Dag> {
    (2usize..12)
        .prop_flat_map(|n| {
            let edges = proptest::collection::vec((0..n, 0..n, -2i32..=0), 0..(n * 2));
            (Just(n), edges)
        })
        .prop_map(|(n, edges)| {
            let mut specs: Vec<TaskSpec> = (0..n).map(|i| TaskSpec::new(&format!("t{i}"), "true")).collect();
            for (from, to, offset) in edges {
                let same_day_backwards = offset == 0 && from >= to;
                if from == to && offset == 0 || same_day_backwards {
                    continue;
                }
                let up = format!("t{from}");
                specs[to] = specs[to].clone().after(&up, offset);
            }
            Dag::new(specs).expect("generated DAGs have no same-day cycle")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn days_round_trip_through_both_spellings(day in any_day()) {
        prop_assert_eq!(EtlDay::parse(&day.compact()).unwrap(), day);
        prop_assert_eq!(EtlDay::parse(&day.dashed()).unwrap(), day);
    }

    #[test]
    fn offsets_and_ranges_agree(day in any_day(), n in -400i32..400) {
        let other = day.offset(n);
        prop_assert_eq!(day.days_until(other), n as i64);
        prop_assert_eq!(other.offset(-n), day);
        let (from, to) = if n >= 0 { (day, other) } else { (other, day) };
        let range: Vec<EtlDay> = EtlDay::range(from, to).collect();
        prop_assert_eq!(range.len() as i64, from.days_until(to) + 1);
        prop_assert!(range.windows(2).all(|w| w[0].offset(1) == w[1]));
    }

    #[test]
    fn a_days_run_holds_every_downstream_task_at_that_day(dag in any_dag(), root in 0usize..12, day in any_day()) {
        let root = format!("t{}", root % dag.len());
        let run = dag.day_run(&root, day.into());
        prop_assert!(run.iter().all(|k| k.etl_day() == day));
        let tasks: HashSet<&str> = run.iter().map(|k| k.task.as_str()).collect();
        prop_assert!(tasks.contains(root.as_str()));
        // Closed under "is downstream of", whatever the offset.
        for key in &run {
            for down in dag.downstreams(&key.task) {
                prop_assert!(tasks.contains(down.task.as_str()), "{} misses {}", root, down.task);
            }
        }
        // And holds at least what the closure over instances bounded to the day reaches.
        let bounded: BTreeSet<InstanceKey> = dag.downstream_closure(&InstanceKey::new(&root, day), (day.into(), day.into())).into_iter().collect();
        prop_assert!(bounded.iter().all(|k| run.contains(k)));
    }

    #[test]
    fn run_order_puts_same_day_upstreams_first(dag in any_dag(), day in any_day(), span in 0i32..3) {
        let keys: Vec<InstanceKey> = dag
            .tasks()
            .flat_map(|t| EtlDay::range(day, day.offset(span)).map(|d| InstanceKey::new(&t.id, d)).collect::<Vec<_>>())
            .collect();
        let ordered = dag.in_run_order(keys.clone());
        prop_assert_eq!(ordered.len(), keys.len());
        let position = |k: &InstanceKey| ordered.iter().position(|o| o == k).unwrap();
        for key in &ordered {
            for up in dag.upstream_instances(key) {
                if ordered.contains(&up) {
                    prop_assert!(position(&up) < position(key), "{} before {}", up, key);
                }
            }
        }
    }

    #[test]
    fn closures_stay_in_their_days_and_contain_their_start(dag in any_dag(), root in 0usize..12, day in any_day(), span in 0i32..3) {
        let start = InstanceKey::new(&format!("t{}", root % dag.len()), day);
        let days = (day.offset(-span), day.offset(span));
        let range = (Period::from(days.0), Period::from(days.1));
        for closure in [dag.downstream_closure(&start, range), dag.upstream_closure(&start, range)] {
            prop_assert!(closure.contains(&start));
            prop_assert!(closure.iter().all(|k| k.etl_day() >= days.0 && k.etl_day() <= days.1));
            let distinct: HashSet<&InstanceKey> = closure.iter().collect();
            prop_assert_eq!(distinct.len(), closure.len());
        }
    }

    /// The release path finds every instance that waits for a finished one: whatever the
    /// periods, timezones and calendars, `downstream_instances` inverts `upstream_instances`.
    #[test]
    fn downstream_instances_invert_upstream_instances(dag in any_mixed_dag(), day in any_day(), hour in 0u8..24) {
        for task in dag.tasks() {
            let period = match task.period {
                PeriodKind::Hour => Period::Hour(day.date(), hour),
                PeriodKind::Day => Period::day(day),
                PeriodKind::Month => Period::day(day).containing(PeriodKind::Month),
            };
            if !dag.exists_on(&task.id, period) || !crate::period::hour_exists(day.date(), hour, task.tz()) {
                continue;
            }
            let key = InstanceKey::new(&task.id, period);
            for up in dag.upstream_instances(&key) {
                prop_assert!(
                    dag.downstream_instances(&up).contains(&key),
                    "{} waits for {}, which does not list it downstream", key, up
                );
            }
            for down in dag.downstream_instances(&key) {
                prop_assert!(dag.upstream_instances(&down).contains(&key), "{} is not upstream of {}", key, down);
            }
        }
    }

    #[test]
    fn mixed_run_order_puts_upstreams_first(dag in any_mixed_dag(), day in any_day()) {
        let keys: Vec<InstanceKey> = dag
            .tasks()
            .flat_map(|t| dag.day_run(&t.id, Period::day(day).containing(t.period).parts(t.period, t.tz())[0]))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let ordered = dag.in_run_order(keys.clone());
        prop_assert_eq!(ordered.len(), keys.len());
        let position = |k: &InstanceKey| ordered.iter().position(|o| o == k).unwrap();
        for key in &ordered {
            for up in dag.upstream_instances(key) {
                if ordered.contains(&up) {
                    prop_assert!(position(&up) < position(key), "{} before {}", up, key);
                }
            }
        }
    }
}

/// A calendar of weekdays with a few holidays and make-up days around `base`.
fn any_calendar() -> impl Strategy<Value = Calendar> {
    (
        proptest::collection::btree_set(0usize..7, 1..6),
        proptest::collection::btree_set(0i32..40, 0..8),
        proptest::collection::btree_set(0i32..40, 0..4),
    )
        .prop_map(|(weekdays, exclude, include)| {
            let base = EtlDay::parse("20261001").unwrap();
            let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            Calendar::from_raw(RawCalendar {
                id: "cal".into(),
                weekdays: weekdays.iter().map(|i| names[*i].to_string()).collect(),
                exclude: exclude.difference(&include).map(|n| base.offset(*n)).collect(),
                include: include.iter().map(|n| base.offset(*n)).collect(),
                description: String::new(),
            })
            .unwrap()
        })
}

/// Up to 8 tasks of any period, in UTC or New York, some on a calendar; edges from lower to
/// higher index on the same period, any direction with a negative offset, some counted in the
/// calendar's days.
fn any_mixed_dag() -> impl Strategy<Value = Dag> {
    (2usize..8)
        .prop_flat_map(|n| {
            let tasks = proptest::collection::vec((0usize..3, any::<bool>(), 0usize..4), n);
            let edges = proptest::collection::vec((0..n, 0..n, -2i32..=0, any::<bool>()), 0..(n * 2));
            (tasks, edges, any_calendar())
        })
        .prop_filter_map("a cycle across periods", |(tasks, edges, calendar)| {
            let kinds = [PeriodKind::Hour, PeriodKind::Day, PeriodKind::Month];
            let mut specs: Vec<TaskSpec> = tasks
                .iter()
                .enumerate()
                .map(|(i, (kind, new_york, calendar_pick))| {
                    let mut spec = TaskSpec::new(&format!("t{i}"), "true");
                    spec.period = kinds[*kind];
                    if *new_york {
                        spec.timezone = "America/New_York".into();
                    }
                    if *calendar_pick == 0 && spec.period != PeriodKind::Month {
                        spec.calendar = Some("cal".into());
                    }
                    spec
                })
                .collect();
            for (from, to, offset, in_calendar) in edges {
                if offset == 0 && from >= to {
                    continue;
                }
                let calendar_ok =
                    specs[from].period == PeriodKind::Day && specs[to].period != PeriodKind::Month;
                specs[to].depends_on.push(Dependency {
                    task: format!("t{from}"),
                    day_offset: offset,
                    calendar: (in_calendar && calendar_ok).then(|| "cal".to_string()),
                });
            }
            // Loops through a coarser task with offsets in finer periods are refused on apply.
            match Dag::with_calendars(specs, [calendar]) {
                Ok(dag) => Some(dag),
                Err(crate::DagError::PeriodCycle { .. }) => None,
                Err(e) => panic!("generated DAGs are otherwise valid: {e}"),
            }
        })
}

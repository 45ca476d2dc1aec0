//! The grid's query: the state of every instance of a span of days, by task and state.
//!
//! Every row of a result costs sqlx a few microseconds, and a grid of 1,000 tasks x 30 days
//! is 30,000 instances, most of them plain successes (success, not forced): listing them all
//! was most of the grid's time. So plain successes are inferred rather than listed, from a
//! count of each task's instances and a list of every other instance. A task with an instance
//! every day of the span has its plain successes on the days not listed; for a task with
//! fewer, its first and last day are read, and when it has as many instances as days between
//! them the same holds for that run of days. Only a task with a gap has its days listed. Those
//! two reads use the (task, day) index alone, never the table.
//!
//! Hourly and monthly instances (keys of 10 and 6 characters) are few beside the daily ones
//! and are listed whole; the inference above reads daily keys only.
//!
//! The queries are not one snapshot: a change between them shows at the next read, as a change
//! just after a read would.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use goflow_core::{EtlDay, InstanceState, Period, PeriodKind};

use super::Db;
use super::instances::{decode_state, placeholders};

/// The instances of one task that are in one state (forced or not): which days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStates {
    pub task_id: String,
    pub state: InstanceState,
    pub forced: bool,
    /// Days for a daily task, hours for an hourly one, months for a monthly one.
    pub periods: Vec<Period>,
}

/// The state of every instance from `from` to `to` (inclusive): one entry per task, state and
/// forced, in no particular order.
pub async fn instance_states(
    db: &mut impl Db,
    from: EtlDay,
    to: EtlDay,
) -> anyhow::Result<Vec<InstanceStates>> {
    let span = from.days_until(to) + 1;
    let counts = count_by_task(db, from, to).await?;
    let mut others: BTreeMap<(String, InstanceState, bool), Vec<EtlDay>> = BTreeMap::new();
    for (task_id, day, state, forced) in not_plain(db, from, to).await? {
        others.entry((task_id, state, forced)).or_default().push(day);
    }
    let mut listed: HashMap<&str, BTreeSet<EtlDay>> = HashMap::new();
    for ((task_id, ..), days) in &others {
        listed.entry(task_id).or_default().extend(days);
    }

    // From which day to which each task's instances run: the whole span, or as read.
    let short: Vec<&str> = counts
        .iter()
        .filter(|(_, count)| **count < span)
        .map(|(task_id, _)| task_id.as_str())
        .collect();
    let mut runs = first_and_last(db, from, to, &short).await?;
    for (task_id, _) in counts.iter().filter(|(_, count)| **count >= span) {
        runs.insert(task_id.clone(), (from, to));
    }
    let with_a_gap: Vec<&str> = runs
        .iter()
        .filter(|(task_id, (first, last))| counts[*task_id] < first.days_until(*last) + 1)
        .map(|(task_id, _)| task_id.as_str())
        .collect();
    let mut days_of = days_of_tasks(db, from, to, &with_a_gap).await?;

    let mut states = vec![];
    for (task_id, (first, last)) in &runs {
        let days: Vec<EtlDay> = match days_of.remove(task_id) {
            Some(days) => days,
            None => EtlDay::range(*first, *last).collect(),
        };
        let listed = listed.get(task_id.as_str());
        let plain: Vec<EtlDay> = days
            .into_iter()
            .filter(|day| !listed.is_some_and(|l| l.contains(day)))
            .collect();
        if !plain.is_empty() {
            states.push(InstanceStates {
                task_id: task_id.clone(),
                state: InstanceState::Success,
                forced: false,
                periods: plain.into_iter().map(Period::day).collect(),
            });
        }
    }
    states.extend(
        others
            .into_iter()
            .map(|((task_id, state, forced), days)| InstanceStates {
                task_id,
                state,
                forced,
                periods: days.into_iter().map(Period::day).collect(),
            }),
    );
    let mut hours_and_months: BTreeMap<(String, InstanceState, bool), Vec<Period>> = BTreeMap::new();
    for (task_id, period, state, forced) in not_daily(db, from, to).await? {
        hours_and_months
            .entry((task_id, state, forced))
            .or_default()
            .push(period);
    }
    states.extend(
        hours_and_months
            .into_iter()
            .map(|((task_id, state, forced), periods)| InstanceStates {
                task_id,
                state,
                forced,
                periods,
            }),
    );
    Ok(states)
}

fn parse_day(text: &str) -> anyhow::Result<EtlDay> {
    EtlDay::parse(text).with_context(|| format!("instance day {text:?}"))
}

/// How many instances each task has from `from` to `to`.
async fn count_by_task(db: &mut impl Db, from: EtlDay, to: EtlDay) -> anyhow::Result<BTreeMap<String, i64>> {
    let d = db.dialect();
    let rows: Vec<(String, i64)> = sqlx::query_as(d.sql(
        "SELECT task_id, COUNT(*) FROM instances WHERE etl_day BETWEEN ? AND ? AND LENGTH(etl_day) = 8
             GROUP BY task_id",
    ))
    .bind(from.compact())
    .bind(to.compact())
    .fetch_all(db.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// Every instance from `from` to `to` but the plain successes: (task, day, state, forced).
async fn not_plain(
    db: &mut impl Db,
    from: EtlDay,
    to: EtlDay,
) -> anyhow::Result<Vec<(String, EtlDay, InstanceState, bool)>> {
    let d = db.dialect();
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(d.sql(
        "SELECT task_id, etl_day, state, forced FROM instances
         WHERE etl_day BETWEEN ? AND ? AND LENGTH(etl_day) = 8 AND (state <> 'success' OR forced <> 0)",
    ))
    .bind(from.compact())
    .bind(to.compact())
    .fetch_all(db.conn())
    .await?;
    rows.into_iter()
        .map(|(task_id, day, state, forced)| {
            let state = decode_state(&state, &format!("{task_id}@{day}"))?;
            Ok((task_id, parse_day(&day)?, state, forced != 0))
        })
        .collect()
}

/// `SELECT {columns} FROM instances` of `from` to `to` and the tasks of `slice`, then `rest`.
fn of_tasks(columns: &str, slice: &[&str], rest: &str) -> String {
    format!(
        "SELECT {columns} FROM instances WHERE etl_day BETWEEN ? AND ? AND LENGTH(etl_day) = 8
         AND task_id IN ({}) {rest}",
        placeholders(slice.len())
    )
}

/// The first and last day of each of `tasks` from `from` to `to` (1,000 tasks a query).
async fn first_and_last(
    db: &mut impl Db,
    from: EtlDay,
    to: EtlDay,
    tasks: &[&str],
) -> anyhow::Result<HashMap<String, (EtlDay, EtlDay)>> {
    let mut runs = HashMap::new();
    for slice in tasks.chunks(1000) {
        let d = db.dialect();
        let sql = of_tasks("task_id, MIN(etl_day), MAX(etl_day)", slice, "GROUP BY task_id");
        let mut query = sqlx::query_as::<_, (String, String, String)>(d.sql(&sql))
            .bind(from.compact())
            .bind(to.compact());
        for task_id in slice {
            query = query.bind(*task_id);
        }
        for (task_id, first, last) in query.fetch_all(db.conn()).await? {
            runs.insert(task_id, (parse_day(&first)?, parse_day(&last)?));
        }
    }
    Ok(runs)
}

/// The days of each of `tasks` that have an instance from `from` to `to` (1,000 tasks a query).
async fn days_of_tasks(
    db: &mut impl Db,
    from: EtlDay,
    to: EtlDay,
    tasks: &[&str],
) -> anyhow::Result<HashMap<String, Vec<EtlDay>>> {
    let mut days_of: HashMap<String, Vec<EtlDay>> = HashMap::new();
    for slice in tasks.chunks(1000) {
        let d = db.dialect();
        let sql = of_tasks("task_id, etl_day", slice, "");
        let mut query = sqlx::query_as::<_, (String, String)>(d.sql(&sql))
            .bind(from.compact())
            .bind(to.compact());
        for task_id in slice {
            query = query.bind(*task_id);
        }
        for (task_id, day) in query.fetch_all(db.conn()).await? {
            days_of.entry(task_id).or_default().push(parse_day(&day)?);
        }
    }
    Ok(days_of)
}

/// Every hourly instance of the days from `from` to `to`, and every monthly one of the months
/// they touch: (task, period, state, forced).
async fn not_daily(
    db: &mut impl Db,
    from: EtlDay,
    to: EtlDay,
) -> anyhow::Result<Vec<(String, Period, InstanceState, bool)>> {
    let (first, until) = super::instances::key_range(Period::day(from), Period::day(to));
    let months: Vec<String> = Period::range(
        Period::day(from).containing(PeriodKind::Month),
        Period::day(to).containing(PeriodKind::Month),
        chrono_tz::UTC,
    )
    .iter()
    .map(|m| m.key())
    .collect();
    let d = db.dialect();
    let sql = format!(
        "SELECT task_id, etl_day, state, forced FROM instances
         WHERE (etl_day >= ? AND etl_day < ? AND LENGTH(etl_day) = 10) OR etl_day IN ({})",
        placeholders(months.len())
    );
    let mut query = sqlx::query_as::<_, (String, String, String, i64)>(d.sql(&sql))
        .bind(first)
        .bind(until);
    for month in &months {
        query = query.bind(month.clone());
    }
    query
        .fetch_all(db.conn())
        .await?
        .into_iter()
        .map(|(task_id, key, state, forced)| {
            let state = decode_state(&state, &format!("{task_id}@{key}"))?;
            let period = Period::parse(&key).with_context(|| format!("instance period {key:?}"))?;
            Ok((task_id, period, state, forced != 0))
        })
        .collect()
}

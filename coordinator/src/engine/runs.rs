//! Runs: run and rerun (with --up, --down, backfills), do-all-job, and releasing downstream
//! instances when an upstream succeeds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use goflow_core::state::{Event, transition};
use goflow_core::{Dag, Dispatch, EtlDay, InstanceKey, InstanceState, Period, PeriodKind, TaskSpec};

use super::backfills::BackfillStart;
use super::joins::Hint;
use super::versions::Pins;
use super::{Caller, Catalog, Engine, EngineError, Result, RunPlan, check_range};
use crate::store::{self, Db, InstanceRow, Tx, now_ms};

/// How long a killed try may take to report its processes gone before a redo goes ahead anyway
/// (its agent may be dead, and then its processes died with it).
pub(super) const KILL_SETTLE: Duration = Duration::from_secs(30);

impl Engine {
    /// Runs or reruns the instances a plan names. Refused as a whole if any of them is queued
    /// or running (redoing a live try would make two runs).
    pub async fn run(&self, plan: &RunPlan, caller: &Caller) -> Result<Vec<InstanceRow>> {
        use tracing::Instrument;
        // The engine's part of the caller's trace, when traces are exported (issue 11).
        let span = goflow_telemetry::span(|| {
            tracing::info_span!(
                "engine.run",
                goflow.task = plan.task.as_str(),
                goflow.etl_day = plan.from.to_string().as_str(),
                goflow.to = plan.to.to_string().as_str(),
                goflow.down = plan.down,
                goflow.up = plan.up,
                goflow.force = plan.force,
            )
        });
        self.run_untraced(plan, caller, None)
            .instrument(span)
            .await
            .map(|(rows, _)| rows)
    }

    /// `run`, recorded as a backfill when `backfill` says how (issue 19): returns the rows and
    /// the backfill's id.
    pub(super) async fn run_untraced(
        &self,
        plan: &RunPlan,
        caller: &Caller,
        backfill: Option<BackfillStart>,
    ) -> Result<(Vec<InstanceRow>, Option<i64>)> {
        let catalog = self.catalog();
        let started = std::time::Instant::now();
        // A year-long backfill's keys are CPU work (about 0.5 s): off the async workers, so
        // that other calls keep answering meanwhile (issue 21).
        let (keys, forced) = {
            let (catalog, plan) = (catalog.clone(), plan.clone());
            tokio::task::spawn_blocking(move || run_keys(&catalog, &plan))
                .await
                .map_err(|e| EngineError::Internal(anyhow::anyhow!("computing the run's instances: {e}")))??
        };
        tracing::debug!(
            "{} {}..{}: {} keys in {} ms",
            plan.task,
            plan.from,
            plan.to,
            keys.len(),
            started.elapsed().as_millis()
        );
        // Checked before anything changes: an instance that never ran refuses the whole run.
        let pins = if plan.as_then {
            self.as_then_pins(&keys).await?
        } else {
            Pins::new()
        };
        let what = format!(
            "{}{}{}{}{}",
            if plan.down { " --down" } else { "" },
            if plan.up { " --up" } else { "" },
            if plan.force { " --force" } else { "" },
            if plan.as_then { " --as-then" } else { "" },
            if plan.from == plan.to {
                String::new()
            } else {
                format!(" {}..{}", plan.from, plan.to)
            },
        );
        let target = format!("{}@{}", plan.task, plan.from);
        let (action, what) = match &backfill {
            Some(b) => (
                "backfill start",
                format!(
                    "{}{}",
                    what.trim(),
                    b.parallelism
                        .map(|p| format!(" --parallelism {p}"))
                        .unwrap_or_default()
                ),
            ),
            None => ("run", what),
        };
        let backfill = backfill.map(|b| store::NewBackfill {
            task: &plan.task,
            from: plan.from.key(),
            to: plan.to.key(),
            down: plan.down,
            parallelism: b.parallelism,
            created_by: &caller.actor,
        });
        self.redo_with(
            &catalog,
            &keys,
            &forced,
            &pins,
            caller,
            (action, &target, what.trim()),
            backfill.as_ref(),
        )
        .await
    }

    /// Runs every scheduled root task (a schedule, no upstream) for a day, with every task
    /// downstream of it at that day: the day's whole run, as its cron fires would create it.
    pub async fn do_all_job(&self, day: EtlDay, caller: &Caller) -> Result<Vec<InstanceRow>> {
        use tracing::Instrument;
        let span = goflow_telemetry::span(|| {
            tracing::info_span!("engine.do_all_job", goflow.etl_day = day.to_string().as_str())
        });
        self.do_all_job_untraced(day, caller).instrument(span).await
    }

    async fn do_all_job_untraced(&self, day: EtlDay, caller: &Caller) -> Result<Vec<InstanceRow>> {
        let catalog = self.catalog();
        let roots: Vec<&TaskSpec> = catalog
            .dag
            .tasks()
            .filter(|t| t.schedule.is_some() && t.depends_on.is_empty() && catalog.dag.exists_on(&t.id, day))
            .collect();
        if roots.is_empty() {
            return Err(EngineError::Invalid(format!(
                "no scheduled root task has an instance on {day}"
            )));
        }
        // An hourly root runs every hour of the day, a monthly one the month it falls in.
        let mut keys = HashSet::new();
        for root in roots {
            let periods = if root.period < PeriodKind::Day {
                Period::day(day).parts(root.period, root.tz())
            } else {
                vec![Period::day(day).containing(root.period)]
            };
            for period in periods {
                keys.extend(catalog.dag.day_run(&root.id, period));
            }
        }
        let keys = catalog.dag.in_run_order(keys);
        self.redo(
            &catalog,
            &keys,
            &HashSet::new(),
            &Pins::new(),
            caller,
            "do-all-job",
            &day.to_string(),
            "",
        )
        .await
    }

    /// Puts `keys` (in run order) back to waiting and queues those whose dependencies are met
    /// (or that are forced). Refused as a whole, before anything changes, if one of them is
    /// queued or running. One transaction, with its operations-log entry: a backfill killed
    /// mid-way (kill -9, a lost leadership) leaves nothing behind, never some instances that
    /// later run with no record of who asked. Instances are written in multi-row statements
    /// within it (issue 21), a bounded number whatever the size. Each instance runs the version `pins` names
    /// for it, or (not named) the current definition.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn redo(
        &self,
        catalog: &Catalog,
        keys: &[InstanceKey],
        forced: &HashSet<InstanceKey>,
        pins: &Pins,
        caller: &Caller,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<Vec<InstanceRow>> {
        let entry = (action, target, detail);
        let (rows, _) = self
            .redo_with(catalog, keys, forced, pins, caller, entry, None)
            .await?;
        Ok(rows)
    }

    /// `redo`, and with `backfill`, recorded as that backfill in the same transaction (its
    /// instances are its own, and held back at once when it bounds them): returns its id.
    #[allow(clippy::too_many_arguments)]
    async fn redo_with(
        &self,
        catalog: &Catalog,
        keys: &[InstanceKey],
        forced: &HashSet<InstanceKey>,
        pins: &Pins,
        caller: &Caller,
        (action, target, detail): (&str, &str, &str),
        backfill: Option<&store::NewBackfill<'_>>,
    ) -> Result<(Vec<InstanceRow>, Option<i64>)> {
        // Where a big run's time goes, logged at debug level (issue 21).
        let mut phases = Phases::start();
        self.refuse_live(keys).await?;
        phases.end("check");
        // Instances go back to waiting: what the join hints knew of them is void.
        self.joins.clear();
        let mut rows = Vec::with_capacity(keys.len());
        let mut skipped = vec![];
        let mut dispatches = vec![];
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let backfill_id = match backfill {
            Some(new) => Some(store::insert_backfill(&mut tx, new, now).await?),
            None => None,
        };
        // Created, and made the backfill's, in multi-row inserts; existing ones reset a task
        // at a time (below): a bounded number of statements whatever the size.
        let wanted = self.wanted(catalog, keys, pins);
        let ensured = store::ensure_instances_of(&mut tx, &wanted, backfill_id, now).await?;
        phases.end("create");
        let reset = self
            .reset_existing(&mut tx, &wanted, pins, &ensured, backfill_id, now)
            .await?;
        phases.end("reset");
        let in_run: HashSet<&InstanceKey> = keys.iter().collect();
        for (i, (want, (mut row, created))) in wanted.iter().zip(ensured).enumerate() {
            // Most rows need no statement here: give the async worker back now and then, so
            // that calls meanwhile are not stuck behind a 182,500-row loop (issue 21).
            if i % 2000 == 1999 {
                tokio::task::yield_now().await;
            }
            let key = want.key;
            // A live instance (it went live since the check above) is left alone rather than
            // run twice; the reset is a compare-and-set on the state just read.
            // Who redid it is in the operations log; the message is for what happens next.
            if !created && !reset.contains(&row.id) {
                skipped.push(key.to_string());
                continue;
            }
            // A plain rerun runs the current definition again, whatever ran before.
            let run_version = pins.get(key).map(|(version, _)| *version);
            if run_version.is_some() || row.run_version.is_some() {
                store::set_run_version(&mut tx, row.id, run_version).await?;
            }
            row.run_version = run_version;
            row.backfill_id = backfill_id;
            // An upstream reset in this very transaction cannot have succeeded, so only
            // instances without one in the run can be ready now; the rest are queued as
            // their upstreams succeed.
            let ready = forced.contains(key)
                || (!catalog.is_paused(&key.task)
                    && !catalog
                        .dag
                        .upstream_instances(key)
                        .iter()
                        .any(|up| in_run.contains(up))
                    && dependencies_met(&mut tx, &catalog.dag, key).await?);
            if ready
                && let Some(try_number) =
                    store::queue_instance(&mut tx, row.id, InstanceState::Waiting, self.epoch, now).await?
            {
                dispatches.push(self.dispatch_of(&row, try_number));
            }
            rows.push(row);
        }
        phases.end("queue");
        let bound = match (backfill_id, backfill) {
            (Some(id), Some(new)) => {
                store::set_backfill_size(&mut tx, id, rows.len() as i64).await?;
                let bound = new.parallelism.map(super::backfills::Bound::AtMost);
                if let Some(bound) = bound {
                    // Held at once, in one statement; the backfill offers them as it has room.
                    store::hold_backfill(&mut tx, id, &bound.reason(id)).await?;
                }
                bound
            }
            _ => None,
        };
        let detail = match backfill_id {
            Some(id) => format!(
                "backfill {id}: {detail}, {}",
                goflow_core::plural(rows.len(), "instance")
            ),
            None => detail.to_string(),
        };
        let detail = if skipped.is_empty() {
            detail
        } else {
            format!("{detail} (left alone, live meanwhile: {})", skipped.join(", "))
        };
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            action,
            target,
            detail.trim(),
            now,
        )
        .await?;
        tx.commit().await?;
        phases.end("commit");
        let queued = dispatches.len();
        match (backfill_id, bound) {
            (Some(id), Some(bound)) => {
                self.backfills.set(id, Some(bound));
                if let Err(e) = self.offer_backfill(id).await {
                    tracing::warn!(
                        "backfill {id}: first offer failed ({e:#}); the redispatch loop offers again"
                    );
                }
            }
            _ => self.push(dispatches).await,
        }
        self.changed();
        tracing::info!(
            "{action} {target} {detail}: {}, {queued} queued now",
            goflow_core::plural(rows.len(), "instance")
        );
        phases.end("push");
        tracing::debug!("{action} {target}: {} instances, {phases}", rows.len());
        Ok((rows, backfill_id))
    }

    /// Puts the existing (not just created) instances of a redo back to waiting, made
    /// `backfill`'s: one statement per task and state (per pinned version), not one per
    /// instance. Returns the ids reset; a live one, or one that moved meanwhile, is not.
    async fn reset_existing(
        &self,
        tx: &mut Tx,
        wanted: &[store::WantedInstance<'_>],
        pins: &Pins,
        ensured: &[(InstanceRow, bool)],
        backfill: Option<i64>,
        now: i64,
    ) -> Result<HashSet<i64>> {
        // Grouped by the spec they run (a task's, or a pinned version of it).
        type Group<'a> = (&'a TaskSpec, i64, Vec<store::Redo>);
        let mut groups: HashMap<(&str, Option<i64>), Group> = HashMap::new();
        for (want, (row, created)) in wanted.iter().zip(ensured) {
            if *created || transition(row.state, Event::Redo { ready: false }).is_err() {
                continue;
            }
            let group = groups
                .entry((
                    want.key.task.as_str(),
                    pins.get(want.key).map(|(version, _)| *version),
                ))
                .or_insert_with(|| (want.spec, want.max_tries - 1, vec![]));
            group.2.push(store::Redo {
                id: row.id,
                from: row.state,
            });
        }
        let mut reset = HashSet::new();
        for (spec, retries, redos) in groups.into_values() {
            reset.extend(store::reset_many_for_redo(tx, &redos, retries, spec, backfill, now).await?);
        }
        Ok(reset)
    }

    /// The instances of `keys` to create when missing, with their tasks' tries (of the
    /// pinned version, where `pins` names one).
    fn wanted<'a>(
        &self,
        catalog: &'a Catalog,
        keys: &'a [InstanceKey],
        pins: &'a Pins,
    ) -> Vec<store::WantedInstance<'a>> {
        keys.iter()
            .map(|key| {
                let spec = match pins.get(key) {
                    Some((_, spec)) => spec,
                    None => &catalog.tasks[&key.task].spec,
                };
                store::WantedInstance {
                    key,
                    spec,
                    max_tries: self.retries_of(spec) + 1,
                }
            })
            .collect()
    }

    /// Fails, naming the instance, if any of `keys` is queued or running.
    async fn refuse_live(&self, keys: &[InstanceKey]) -> Result<()> {
        let mut conn = self.store.read().await?;
        let periods: BTreeSet<Period> = keys.iter().map(|k| k.period).collect();
        let mut live = HashMap::new();
        for period in periods {
            for (task, state) in store::live_instances_of_period(&mut conn, period).await? {
                live.insert(InstanceKey::new(&task, period), state);
            }
        }
        if let Some((key, state)) = keys.iter().find_map(|k| live.get(k).map(|s| (k, s))) {
            return Err(EngineError::Conflict(format!(
                "{key} is {state}: kill it first (goflowctl kill -j {} -d {}); nothing was changed",
                key.task, key.period
            )));
        }
        let since = now_ms() - KILL_SETTLE.as_millis() as i64;
        let killing = store::killing_instances(&mut conn, since).await?;
        if let Some(key) = keys.iter().find(|k| killing.contains(*k)) {
            return Err(EngineError::Conflict(format!(
                "{key} was killed and its processes are still stopping; try again in a few seconds"
            )));
        }
        Ok(())
    }

    /// Creates the instances of a day's run that do not exist yet (a cron fire): the new ones
    /// whose dependencies are met are queued. Returns how many were created.
    pub(super) async fn create_day_run(
        &self,
        tx: &mut Tx,
        catalog: &Catalog,
        keys: &[InstanceKey],
        now: i64,
    ) -> Result<(usize, Vec<Dispatch>)> {
        let no_pins = Pins::new();
        let wanted = self.wanted(catalog, keys, &no_pins);
        let mut created = 0;
        let mut ready = vec![];
        for (want, (row, new)) in wanted
            .iter()
            .zip(store::ensure_instances(tx, &wanted, now).await?)
        {
            if !new {
                continue;
            }
            created += 1;
            if !catalog.is_paused(&want.key.task) && dependencies_met(tx, &catalog.dag, want.key).await? {
                ready.push(row);
            }
        }
        let ready: Vec<&InstanceRow> = ready.iter().collect();
        Ok((created, self.queue_waiting_rows(tx, &ready, now).await?))
    }

    /// Queues every waiting downstream of `key` (which just succeeded, in this transaction)
    /// whose dependencies are now all met: the event that replaces a polling scan. Linear over
    /// a wide join: see `joins`. A few statements whatever the fan-out: those that wait for
    /// `key` alone (a chain's next, a fan-out's leaves) are queued in one, unread; the others
    /// cost one read of their rows, one of their other upstreams, one to queue the ready ones.
    pub(super) async fn release_downstream(
        &self,
        tx: &mut Tx,
        catalog: &Catalog,
        key: &InstanceKey,
        now: i64,
    ) -> Result<Vec<Dispatch>> {
        // Each unpaused downstream with its upstreams other than `key`.
        let (sole, joined): (Vec<_>, Vec<_>) = catalog
            .dag
            .downstream_instances(key)
            .into_iter()
            .filter(|down| !catalog.is_paused(&down.task))
            .map(|down| {
                let mut others = catalog.dag.upstream_instances(&down);
                others.retain(|up| up != key);
                (down, others)
            })
            .partition(|(_, others)| others.is_empty());
        let mut dispatches = vec![];
        if !sole.is_empty() {
            let sole: Vec<InstanceKey> = sole.into_iter().map(|(down, _)| down).collect();
            for (row, try_number) in store::queue_waiting_keys(tx, &sole, self.epoch, now).await? {
                dispatches.push(self.dispatch_of(&row, try_number));
            }
            for down in &sole {
                self.joins.forget(down);
            }
        }
        // A join the hint says still waits for others is not even read (a fan-in's every
        // upstream but the last); the store decides on the rest.
        let joined: Vec<(InstanceKey, Vec<InstanceKey>)> = joined
            .into_iter()
            .filter(|(down, _)| self.joins.upstream_succeeded(down, key) != Hint::Waiting)
            .collect();
        if joined.is_empty() {
            return Ok(dispatches);
        }
        let rows = store::instances_by_keys(tx, joined.iter().map(|(down, _)| down)).await?;
        let mut candidates: Vec<(&InstanceRow, Vec<InstanceKey>)> = vec![];
        for (down, others) in joined {
            let Some(row) = rows.get(&down) else { continue };
            if row.state != InstanceState::Waiting {
                self.joins.forget(&down);
                continue;
            }
            candidates.push((row, others));
        }
        let asked: HashSet<InstanceKey> = candidates
            .iter()
            .flat_map(|(_, others)| others.iter().cloned())
            .collect();
        let unmet: HashSet<InstanceKey> = if asked.is_empty() {
            HashSet::new()
        } else {
            let asked: Vec<InstanceKey> = asked.into_iter().collect();
            store::unmet_of(tx, &asked).await?.into_iter().collect()
        };
        let mut ready = vec![];
        for (row, others) in candidates {
            let down = row.key();
            let still: Vec<InstanceKey> = others.into_iter().filter(|up| unmet.contains(up)).collect();
            if still.is_empty() {
                self.joins.forget(&down);
                ready.push(row);
            } else {
                self.joins.remember(&down, still);
            }
        }
        dispatches.extend(self.queue_waiting_rows(tx, &ready, now).await?);
        Ok(dispatches)
    }

    /// Queues these waiting instances (read in this transaction), in one statement where the
    /// database allows: the dispatches of those this writer queued, in their order.
    async fn queue_waiting_rows(
        &self,
        tx: &mut Tx,
        rows: &[&InstanceRow],
        now: i64,
    ) -> Result<Vec<Dispatch>> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let waiting: Vec<store::WaitingAt> = rows
            .iter()
            .map(|row| store::WaitingAt {
                id: row.id,
                try_number: row.try_number,
            })
            .collect();
        let queued = store::queue_waiting(tx, &waiting, self.epoch, now).await?;
        Ok(rows
            .iter()
            .filter_map(|row| queued.get(&row.id).map(|t| self.dispatch_of(row, *t)))
            .collect())
    }

    /// Queues the waiting instances (of every unpaused task, or of `only`) whose dependencies
    /// are all met: after a definition change, an unpause or a restart. One sweep: states are
    /// read a day at a time, so a paused year-long backfill costs a few hundred queries.
    pub(super) async fn queue_ready_waiting(
        &self,
        tx: &mut Tx,
        dag: &Dag,
        only: Option<&str>,
        is_paused: impl Fn(&str) -> bool,
        now: i64,
    ) -> Result<Vec<Dispatch>> {
        let mut waiting = store::instances_in_state(tx, InstanceState::Waiting, only).await?;
        waiting.retain(|row| dag.task(&row.task_id).is_some() && !is_paused(&row.task_id));
        let upstreams: Vec<Vec<InstanceKey>> = waiting
            .iter()
            .map(|row| dag.upstream_instances(&row.key()))
            .collect();
        let periods: BTreeSet<Period> = upstreams.iter().flatten().map(|k| k.period).collect();
        let states = store::states_of_periods(tx, &periods).await?;
        let ready: Vec<&InstanceRow> = waiting
            .iter()
            .zip(&upstreams)
            .filter(|(_, ups)| {
                ups.iter()
                    .all(|up| states.get(up) == Some(&InstanceState::Success))
            })
            .map(|(row, _)| row)
            .collect();
        self.queue_waiting_rows(tx, &ready, now).await
    }
}

/// The instances a run plan covers, in run order, and those of them it forces. `--down` and
/// `--up` stay within the days asked for.
pub(super) fn run_keys(
    catalog: &Catalog,
    plan: &RunPlan,
) -> Result<(Vec<InstanceKey>, HashSet<InstanceKey>)> {
    let spec = &catalog.require(&plan.task)?.spec;
    catalog.check_period(&plan.task, plan.from)?;
    catalog.check_period(&plan.task, plan.to)?;
    check_range(plan.from, plan.to)?;
    for end in [plan.from, plan.to] {
        if let Period::Hour(day, hour) = end
            && !goflow_core::period::hour_exists(day, hour, spec.tz())
        {
            return Err(EngineError::Invalid(format!(
                "{end} does not happen in {} (the clocks skip that hour on {}), so {:?} has no instance for it",
                spec.timezone,
                end.etl_day(),
                plan.task
            )));
        }
    }
    // One period outside the task's calendar is refused, naming it, unless forced; in a range
    // such periods are left out (a backfill of a workday task runs its workdays).
    if plan.from == plan.to
        && !plan.force
        && let Some(why) = catalog.dag.why_not_on(&plan.task, plan.from)
        && catalog.dag.calendar_of(&plan.task).is_some()
        && spec
            .start_day
            .is_none_or(|start| plan.from.last_day() >= start.date())
    {
        return Err(EngineError::Invalid(format!(
            "{}@{}: {why}; nothing was run (--force runs it anyway)",
            plan.task, plan.from
        )));
    }
    let mut keys = vec![];
    let mut forced = HashSet::new();
    for period in Period::range(plan.from, plan.to, spec.tz()) {
        let outside_calendar_but_forced = plan.force
            && catalog
                .dag
                .calendar_of(&plan.task)
                .is_some_and(|c| !c.contains(period.etl_day()))
            && spec
                .start_day
                .is_none_or(|start| period.last_day() >= start.date());
        if !catalog.dag.exists_on(&plan.task, period) && !outside_calendar_but_forced {
            continue;
        }
        let start = InstanceKey::new(&plan.task, period);
        if plan.force {
            forced.insert(start.clone());
        }
        if plan.down {
            keys.extend(catalog.dag.downstream_closure(&start, (plan.from, plan.to)));
        }
        if plan.up {
            keys.extend(catalog.dag.upstream_closure(&start, (plan.from, plan.to)));
        }
        keys.push(start);
    }
    if keys.is_empty() {
        let why = catalog
            .dag
            .why_not_on(&plan.task, plan.from)
            .unwrap_or_else(|| format!("{:?} has no instance there", plan.task));
        return Err(EngineError::Invalid(format!(
            "task {:?} has no instance in {}..{}: {why}",
            plan.task, plan.from, plan.to
        )));
    }
    Ok((
        catalog.dag.in_run_order(keys.into_iter().collect::<HashSet<_>>()),
        forced,
    ))
}

/// Whether every instance `key` waits for has succeeded (checked in the store).
pub(super) async fn dependencies_met(db: &mut impl Db, dag: &Dag, key: &InstanceKey) -> Result<bool> {
    let upstreams = dag.upstream_instances(key);
    Ok(upstreams.is_empty() || store::unmet_of(db, &upstreams).await?.is_empty())
}

/// How long each phase of a run took: logged, never asserted (timings go to scripts/bench).
struct Phases {
    since: std::time::Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        Self {
            since: std::time::Instant::now(),
            took: vec![],
        }
    }

    /// Ends the phase `name` now; the next begins.
    fn end(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.took.push((name, now - self.since));
        self.since = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .took
            .iter()
            .map(|(name, took)| format!("{name} {} ms", took.as_millis()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

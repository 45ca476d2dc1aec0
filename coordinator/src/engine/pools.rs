//! Pools and max_active: the claim's check, holding back what cannot start, and offering it
//! again when a slot frees.
//!
//! The claim decides, inside its own transaction, from the running tries the store counts
//! (the pool's row locked on PostgreSQL and MySQL; SQLite has one writer): that holds across
//! coordinators and a failover, whatever any one of them has in memory. Everything else here
//! only saves work: dispatches that cannot start are not pushed at all but held back in the
//! store (queued, with the reason), and the held ones are offered again, as many as have
//! room, when a try ends (and every few seconds, in case an offer went astray). A dispatch on
//! its way to an agent reserves its room here until it is claimed, refused or overdue, so
//! that two offers in a row do not both hand out the same free slot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goflow_core::pools::Limits;
use goflow_core::{Dispatch, PoolSpec, PoolUsage, TaskSpec};

use super::{Caller, Catalog, Engine, EngineError, Result};
use crate::store::{self, Db, InstanceRow, Tx, now_ms};

/// How long an offered dispatch keeps its room without a claim (its agent may have died with
/// it); then it is offered again.
const OFFER_PATIENCE: Duration = Duration::from_secs(15);

/// Dispatches of limited tasks pushed and not yet answered by a claim, by (instance, try).
#[derive(Default)]
pub(super) struct Offers {
    in_flight: Mutex<HashMap<(i64, i64), Offer>>,
}

struct Offer {
    task: String,
    pool: Option<String>,
    at: Instant,
    /// Claimed already: reserves nothing, but is not offered again.
    granted: bool,
}

impl Offers {
    /// The claim of this dispatch was answered: it reserves nothing now (a granted try is
    /// counted as running by the store). A granted one is still remembered until it is overdue,
    /// so that an offer that read the instance as held just before the claim's commit does not
    /// push the same try again (its agent would be granted it a second time).
    pub(super) fn answered(&self, dispatch: &Dispatch, granted: bool) {
        let mut in_flight = self.in_flight.lock().unwrap();
        let key = (dispatch.instance_id, dispatch.try_number);
        if granted {
            if let Some(offer) = in_flight.get_mut(&key) {
                offer.granted = true;
            }
        } else {
            in_flight.remove(&key);
        }
    }

    /// Adds what the dispatches on their way reserve to `usage`; forgets the overdue ones.
    fn reserve(&self, usage: &mut PoolUsage) {
        let mut in_flight = self.in_flight.lock().unwrap();
        in_flight.retain(|_, offer| offer.at.elapsed() < OFFER_PATIENCE);
        for offer in in_flight.values().filter(|o| !o.granted) {
            *usage.task_running.entry(offer.task.clone()).or_default() += 1;
            if let Some(pool) = &offer.pool {
                *usage.pool_used.entry(pool.clone()).or_default() += 1;
            }
        }
    }

    fn is_on_its_way(&self, dispatch: &Dispatch) -> bool {
        self.in_flight
            .lock()
            .unwrap()
            .get(&(dispatch.instance_id, dispatch.try_number))
            .is_some_and(|offer| offer.at.elapsed() < OFFER_PATIENCE)
    }

    fn insert(&self, dispatch: &Dispatch, spec: &TaskSpec) {
        self.in_flight.lock().unwrap().insert(
            (dispatch.instance_id, dispatch.try_number),
            Offer {
                task: spec.id.clone(),
                pool: spec.pool.clone(),
                at: Instant::now(),
                granted: false,
            },
        );
    }
}

/// A pool as listed: its slots, the running tries holding it, the queued instances of its
/// tasks, and the tasks naming it.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub id: String,
    pub slots: i64,
    pub used: i64,
    pub waiting: i64,
    pub tasks: Vec<String>,
    pub holders: Vec<store::PoolHolder>,
    pub updated_at: i64,
}

impl Catalog {
    /// Whether any task has a pool or a max_active (if none, nothing here costs a query).
    pub(super) fn has_limits(&self) -> bool {
        *self
            .limited
            .get_or_init(|| self.tasks.values().any(|t| Limits::of(&t.spec).any()))
    }
}

impl Engine {
    /// In the claim's transaction, before the claim is written: None when the try may start;
    /// otherwise why not, and the instance is held back with that reason at the same try
    /// (nothing spent). The authoritative check: it counts only what the store says runs.
    pub(super) async fn check_limits_for_claim(
        &self,
        tx: &mut Tx,
        row: &InstanceRow,
        try_number: i64,
        spec: &TaskSpec,
    ) -> Result<Option<String>> {
        if let Some(why) = self.check_backfill_for_claim(tx, row, try_number).await? {
            return Ok(Some(why));
        }
        let limits = Limits::of(spec);
        if !limits.any() {
            return Ok(None);
        }
        let mut usage = PoolUsage::default();
        if spec.max_active.is_some() {
            store::lock_task(tx, &spec.id).await?;
            usage
                .task_running
                .insert(spec.id.clone(), store::task_running(tx, &spec.id).await?);
        }
        if let Some(pool) = &spec.pool
            && let Some(slots) = store::lock_pool(tx, pool).await?
        {
            usage.pool_slots.insert(pool.clone(), slots);
            usage
                .pool_used
                .insert(pool.clone(), store::pool_running(tx, pool).await?);
        }
        match usage.check(&limits) {
            Ok(()) => Ok(None),
            Err(wait) => {
                let why = wait.to_string();
                store::hold_instance(tx, row.id, try_number, &why, now_ms()).await?;
                Ok(Some(why))
            }
        }
    }

    /// Splits dispatches into those to push now and those held back (with why): a limited
    /// task's dispatch goes while its pool and max_active have room, counting the running
    /// tries and the dispatches on their way; one already on its way is neither pushed again
    /// nor held.
    async fn admit(&self, dispatches: Vec<Dispatch>) -> Result<(Vec<Dispatch>, Vec<(Dispatch, String)>)> {
        let catalog = self.catalog();
        if dispatches.is_empty() || !catalog.has_limits() {
            return Ok((dispatches, vec![]));
        }
        let mut conn = self.store.read().await?;
        let ids: Vec<i64> = dispatches.iter().map(|d| d.instance_id).collect();
        let tasks = store::tasks_of_instances(&mut conn, &ids).await?;
        let limited_spec = |d: &Dispatch| {
            tasks
                .get(&d.instance_id)
                .and_then(|task| catalog.tasks.get(task))
                .map(|t| &t.spec)
                .filter(|spec| Limits::of(spec).any())
        };
        let (mut limited, mut pass): (Vec<Dispatch>, Vec<Dispatch>) =
            dispatches.into_iter().partition(|d| limited_spec(d).is_some());
        if limited.is_empty() {
            return Ok((pass, vec![]));
        }
        let mut usage = self.usage(&mut conn).await?;
        drop(conn);
        self.offers.reserve(&mut usage);
        // Higher priority first, then the oldest instance.
        limited.sort_by_key(|d| (-d.priority, d.instance_id));
        let mut held = vec![];
        for dispatch in limited {
            if self.offers.is_on_its_way(&dispatch) {
                continue;
            }
            let spec = limited_spec(&dispatch).expect("partitioned as limited");
            match usage.admit(&Limits::of(spec)) {
                Ok(()) => {
                    self.offers.insert(&dispatch, spec);
                    pass.push(dispatch);
                }
                Err(wait) => held.push((dispatch, wait.to_string())),
            }
        }
        Ok((pass, held))
    }

    /// Slots and running tries of every pool and task, as stored now.
    async fn usage(&self, conn: &mut impl Db) -> Result<PoolUsage> {
        Ok(PoolUsage {
            pool_slots: store::load_pools(conn)
                .await?
                .into_iter()
                .map(|p| (p.id, p.slots))
                .collect(),
            pool_used: store::running_by_pool(conn).await?,
            task_running: store::running_by_task(conn).await?,
        })
    }

    /// Pushes what may start and holds back the rest (see the module's comment).
    pub(super) async fn push_admitted(&self, dispatches: Vec<Dispatch>) -> Vec<Dispatch> {
        // What a paused or bounded backfill holds back first (issue 19); the claim decides anyway.
        let dispatches = match self.admit_backfills(dispatches.clone()).await {
            Ok(pass) => pass,
            Err(e) => {
                tracing::warn!("backfills: cannot tell what they hold back ({e:#}); pushing unchecked");
                dispatches
            }
        };
        match self.admit(dispatches.clone()).await {
            Ok((pass, held)) => {
                if let Err(e) = self.hold(&held, &HashMap::new()).await {
                    // Still queued: the redispatch loop offers them again.
                    tracing::warn!("could not hold back {} dispatches: {e:#}", held.len());
                }
                pass
            }
            Err(e) => {
                // The claim decides anyway: push them all, the full ones are refused and held.
                tracing::warn!("pools: cannot read the slots in use ({e:#}); pushing unchecked");
                dispatches
            }
        }
    }

    /// Records why each dispatch is held back, unless that is already the stored reason.
    async fn hold(&self, held: &[(Dispatch, String)], stored: &HashMap<i64, Option<String>>) -> Result<()> {
        let changed: Vec<_> = held
            .iter()
            .filter(|(d, why)| stored.get(&d.instance_id).and_then(|s| s.as_deref()) != Some(why.as_str()))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let now = now_ms();
        for (dispatch, why) in &changed {
            store::hold_instance(&mut tx, dispatch.instance_id, dispatch.try_number, why, now).await?;
        }
        tx.commit().await?;
        self.changed();
        Ok(())
    }

    /// Offers held-back instances again, as many as their pools and tasks have room for.
    /// Called when a try ends and by the redispatch loop; cheap when nothing is held.
    pub(super) async fn offer_held(&self) -> Result<usize> {
        // Then what backfills hold: scheduled runs held by their pools go first.
        Ok(self.offer_pool_held().await? + self.offer_backfills().await?)
    }

    async fn offer_pool_held(&self) -> Result<usize> {
        if !self.catalog().has_limits() {
            return Ok(0);
        }
        let rows = {
            let mut conn = self.store.read().await?;
            store::held_instances(&mut conn).await?
        };
        // Another term's ones are stamped with this epoch by the redispatch loop first.
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| r.dispatch_epoch == self.epoch)
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let stored: HashMap<i64, Option<String>> = rows.iter().map(|r| (r.id, r.pool_wait.clone())).collect();
        let dispatches = rows.iter().map(|r| self.dispatch_of(r, r.try_number)).collect();
        let (pass, held) = self.admit(dispatches).await?;
        self.hold(&held, &stored).await?;
        let offered = pass.len();
        self.push_unchecked(pass).await;
        Ok(offered)
    }

    /// Every pool with its slots in use, its running tries and its waiting instances.
    pub async fn list_pools(&self) -> Result<Vec<PoolStatus>> {
        let catalog = self.catalog();
        let mut conn = self.store.read().await?;
        let pools = store::load_pools(&mut conn).await?;
        let mut holders = store::pool_holders(&mut conn).await?;
        let queued = store::queued_by_task(&mut conn).await?;
        drop(conn);
        Ok(pools
            .into_iter()
            .map(|p| {
                let tasks: Vec<String> = catalog
                    .tasks
                    .values()
                    .filter(|t| t.spec.pool.as_deref() == Some(p.id.as_str()))
                    .map(|t| t.spec.id.clone())
                    .collect();
                let waiting = tasks.iter().map(|t| queued.get(t).copied().unwrap_or(0)).sum();
                let (mine, rest) = std::mem::take(&mut holders)
                    .into_iter()
                    .partition(|h| h.pool == p.id);
                holders = rest;
                let mine: Vec<store::PoolHolder> = mine;
                PoolStatus {
                    used: mine.len() as i64,
                    id: p.id,
                    slots: p.slots,
                    waiting,
                    tasks,
                    holders: mine,
                    updated_at: p.updated_at,
                }
            })
            .collect())
    }

    /// Deletes a pool no task names; its running tries (if any) run on.
    pub async fn delete_pool(&self, id: &str, caller: &Caller) -> Result<()> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let users = store::tasks_in_pool(&mut tx, id).await?;
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "pool {id:?} is used by {} ({}): change their pool first",
                goflow_core::plural(users.len(), "task"),
                users.join(", ")
            )));
        }
        if !store::delete_pool(&mut tx, id).await? {
            return Err(EngineError::NotFound(format!("unknown pool {id:?}")));
        }
        store::record_operation(&mut tx, &caller.actor, &caller.client, "delete pool", id, "", now).await?;
        tx.commit().await?;
        self.changed();
        Ok(())
    }

    /// The pools an apply writes: the document's that are new or changed; fails naming a task
    /// whose pool is neither in the document nor stored.
    pub(super) fn pools_to_write(
        document_pools: &[PoolSpec],
        stored: &[store::StoredPool],
        tasks: &[TaskSpec],
        source_name: &str,
    ) -> Result<Vec<PoolSpec>> {
        let stored: HashMap<&str, i64> = stored.iter().map(|p| (p.id.as_str(), p.slots)).collect();
        for task in tasks {
            if let Some(pool) = &task.pool
                && !stored.contains_key(pool.as_str())
                && !document_pools.iter().any(|p| &p.id == pool)
            {
                return Err(EngineError::Invalid(format!(
                    "{source_name}: task {:?}: unknown pool {pool:?} (define it under `pools:` with its slots)",
                    task.id
                )));
            }
        }
        Ok(document_pools
            .iter()
            .filter(|p| stored.get(p.id.as_str()) != Some(&i64::from(p.slots)))
            .cloned()
            .collect())
    }
}

//! Pools and per-task limits: how many tries may run at once. A pool's slots are shared by
//! every task that names it, across every agent; a task's `max_active` bounds its own tries
//! across every data date. Pure: the counts of running tries are read by the caller (inside
//! the claim's transaction, where the decision is authoritative) and passed in.

use std::collections::HashMap;
use std::fmt;

/// A pool as a DAG document declares it: `{id: warehouse, slots: 3}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolSpec {
    pub id: String,
    /// At least 1.
    pub slots: u32,
}

/// What a try of a task needs to start: a slot of its pool, and room under its max_active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits<'a> {
    pub task: &'a str,
    pub pool: Option<&'a str>,
    pub max_active: Option<u32>,
}

impl<'a> Limits<'a> {
    pub fn of(spec: &'a crate::TaskSpec) -> Self {
        Self {
            task: &spec.id,
            pool: spec.pool.as_deref(),
            max_active: spec.max_active,
        }
    }

    /// Whether the task is limited at all (most tasks are not, and cost nothing).
    pub fn any(&self) -> bool {
        self.pool.is_some() || self.max_active.is_some()
    }
}

/// Why a try cannot start now. Its text is the instance's wait reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    Pool {
        pool: String,
        used: i64,
        slots: i64,
    },
    MaxActive {
        task: String,
        running: i64,
        max_active: u32,
    },
    /// The pool was deleted (or never stored) while the task still names it.
    UnknownPool(String),
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Pool { pool, used, slots } => {
                write!(f, "waiting for pool {pool} ({used} of {slots} slots in use)")
            }
            Wait::MaxActive {
                task,
                running,
                max_active,
            } => write!(
                f,
                "waiting for max_active of task {task} ({running} of {max_active} tries running)"
            ),
            Wait::UnknownPool(pool) => write!(f, "waiting for pool {pool}, which is not defined"),
        }
    }
}

/// Slots and running tries as read at one moment. `admit` takes a slot for a try about to
/// start, so one reading can decide a whole batch of candidates in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Slots of each pool (pools not listed are unknown).
    pub pool_slots: HashMap<String, i64>,
    /// Running tries holding each pool.
    pub pool_used: HashMap<String, i64>,
    /// Running tries of each task.
    pub task_running: HashMap<String, i64>,
}

impl PoolUsage {
    /// Whether a try with these limits may start now; if not, what it waits for. Slots lowered
    /// below what runs (used > slots) just mean no start until enough tries end.
    pub fn check(&self, limits: &Limits) -> Result<(), Wait> {
        if let Some(max_active) = limits.max_active {
            let running = self.task_running.get(limits.task).copied().unwrap_or(0);
            if running >= i64::from(max_active) {
                return Err(Wait::MaxActive {
                    task: limits.task.to_string(),
                    running,
                    max_active,
                });
            }
        }
        if let Some(pool) = limits.pool {
            let Some(&slots) = self.pool_slots.get(pool) else {
                return Err(Wait::UnknownPool(pool.to_string()));
            };
            let used = self.pool_used.get(pool).copied().unwrap_or(0);
            if used >= slots {
                return Err(Wait::Pool {
                    pool: pool.to_string(),
                    used,
                    slots,
                });
            }
        }
        Ok(())
    }

    /// `check`, and on success counts the try as running.
    pub fn admit(&mut self, limits: &Limits) -> Result<(), Wait> {
        self.check(limits)?;
        if limits.max_active.is_some() {
            *self.task_running.entry(limits.task.to_string()).or_default() += 1;
        }
        if let Some(pool) = limits.pool {
            *self.pool_used.entry(pool.to_string()).or_default() += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(slots: i64, used: i64) -> PoolUsage {
        PoolUsage {
            pool_slots: HashMap::from([("warehouse".to_string(), slots)]),
            pool_used: HashMap::from([("warehouse".to_string(), used)]),
            task_running: HashMap::new(),
        }
    }

    fn pooled(task: &str) -> Limits<'_> {
        Limits {
            task,
            pool: Some("warehouse"),
            max_active: None,
        }
    }

    #[test]
    fn a_pool_admits_up_to_its_slots_across_tasks() {
        let mut u = usage(2, 0);
        assert_eq!(u.admit(&pooled("a")), Ok(()));
        assert_eq!(u.admit(&pooled("b")), Ok(()));
        let err = u.admit(&pooled("c")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "waiting for pool warehouse (2 of 2 slots in use)"
        );
        // A refusal takes nothing.
        assert_eq!(u.pool_used["warehouse"], 2);
    }

    #[test]
    fn lowered_slots_admit_nothing_until_under_the_limit() {
        let u = usage(1, 3);
        assert_eq!(
            u.check(&pooled("a")).unwrap_err(),
            Wait::Pool {
                pool: "warehouse".into(),
                used: 3,
                slots: 1
            }
        );
        assert_eq!(usage(3, 2).check(&pooled("a")), Ok(()));
    }

    #[test]
    fn max_active_counts_the_tasks_own_tries_only() {
        let mut u = PoolUsage::default();
        let limited = Limits {
            task: "load",
            pool: None,
            max_active: Some(1),
        };
        assert_eq!(u.admit(&limited), Ok(()));
        assert_eq!(
            u.admit(&limited).unwrap_err().to_string(),
            "waiting for max_active of task load (1 of 1 tries running)"
        );
        let other = Limits {
            task: "other",
            pool: None,
            max_active: Some(1),
        };
        assert_eq!(u.admit(&other), Ok(()));
    }

    #[test]
    fn both_limits_must_have_room_and_a_refusal_takes_neither() {
        let mut u = usage(5, 0);
        let both = Limits {
            task: "load",
            pool: Some("warehouse"),
            max_active: Some(1),
        };
        assert_eq!(u.admit(&both), Ok(()));
        assert!(matches!(u.admit(&both), Err(Wait::MaxActive { .. })));
        assert_eq!(u.pool_used["warehouse"], 1);
        let mut full = usage(1, 1);
        assert!(matches!(full.admit(&both), Err(Wait::Pool { .. })));
        assert_eq!(full.task_running.get("load"), None);
    }

    #[test]
    fn an_unknown_pool_admits_nothing() {
        let u = PoolUsage::default();
        assert_eq!(
            u.check(&pooled("a")).unwrap_err().to_string(),
            "waiting for pool warehouse, which is not defined"
        );
    }

    #[test]
    fn unlimited_tasks_always_start() {
        let mut u = PoolUsage::default();
        let free = Limits {
            task: "a",
            pool: None,
            max_active: None,
        };
        assert!(!free.any());
        for _ in 0..100 {
            assert_eq!(u.admit(&free), Ok(()));
        }
    }
}

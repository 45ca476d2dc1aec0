//! Releasing joins in linear time. Counting all of a join's upstreams on each upstream's
//! success costs O(n) per success, O(n^2) over a 1,000-way fan-in. Instead the engine keeps,
//! per waiting instance, the upstreams it still waits for: computed from the store once, then
//! shrunk by one on each upstream success. The set is only a hint: before an instance is
//! queued its upstreams are checked in the store once more, so a stale set (a redo, a changed
//! definition, a rolled-back transaction) can delay nothing and release nothing early.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use goflow_core::InstanceKey;

#[derive(Default)]
pub struct Joins {
    unmet: Mutex<HashMap<InstanceKey, HashSet<InstanceKey>>>,
}

/// What the hint says about a waiting instance after an upstream succeeded.
#[derive(Debug, PartialEq, Eq)]
pub enum Hint {
    /// Never seen: ask the store.
    Unknown,
    /// Still waits for others.
    Waiting,
    /// Nothing left to wait for, as far as the hint knows.
    Ready,
}

impl Joins {
    /// `upstream` of `down` succeeded.
    pub fn upstream_succeeded(&self, down: &InstanceKey, upstream: &InstanceKey) -> Hint {
        let mut unmet = self.unmet.lock().unwrap();
        match unmet.get_mut(down) {
            None => Hint::Unknown,
            Some(set) => {
                set.remove(upstream);
                if set.is_empty() {
                    Hint::Ready
                } else {
                    Hint::Waiting
                }
            }
        }
    }

    /// What the store says `down` still waits for.
    pub fn remember(&self, down: &InstanceKey, unmet: Vec<InstanceKey>) {
        self.unmet
            .lock()
            .unwrap()
            .insert(down.clone(), unmet.into_iter().collect());
    }

    /// `down` was queued or left waiting: no hint is kept for it.
    pub fn forget(&self, down: &InstanceKey) {
        self.unmet.lock().unwrap().remove(down);
    }

    /// Definitions or instances changed in ways the hints cannot follow (apply, redo, delete,
    /// pause, recovery): start over from the store.
    pub fn clear(&self) {
        self.unmet.lock().unwrap().clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.unmet.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_core::EtlDay;

    fn key(task: &str) -> InstanceKey {
        InstanceKey::new(task, EtlDay::parse("20260105").unwrap())
    }

    #[test]
    fn a_join_is_ready_when_its_last_upstream_succeeds() {
        let joins = Joins::default();
        let (a, b, c, join) = (key("a"), key("b"), key("c"), key("join"));
        assert_eq!(joins.upstream_succeeded(&join, &a), Hint::Unknown);
        joins.remember(&join, vec![b.clone(), c.clone()]);
        assert_eq!(joins.upstream_succeeded(&join, &c), Hint::Waiting);
        // A repeated report changes nothing.
        assert_eq!(joins.upstream_succeeded(&join, &c), Hint::Waiting);
        assert_eq!(joins.upstream_succeeded(&join, &b), Hint::Ready);
        joins.forget(&join);
        assert_eq!(joins.upstream_succeeded(&join, &b), Hint::Unknown);
    }

    #[test]
    fn clear_forgets_every_hint() {
        let joins = Joins::default();
        joins.remember(&key("x"), vec![key("a")]);
        joins.remember(&key("y"), vec![key("a")]);
        joins.clear();
        assert_eq!(joins.len(), 0);
    }
}

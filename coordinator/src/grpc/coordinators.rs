//! ListCoordinators: which coordinator processes to show.

use crate::store;

/// A coordinator silent this long is not alive (they record themselves every second).
const COORDINATOR_SILENT_MS: i64 = 10_000;

/// The coordinators to list: a silent one whose address another one has served since (the
/// same coordinator restarted) is left out; it is forgotten a day later. A silent one that
/// nothing replaced stays, so that a dead coordinator shows.
pub(super) fn superseded_hidden(
    mut rows: Vec<store::CoordinatorRow>,
    now: i64,
) -> Vec<store::CoordinatorRow> {
    let mut newest: std::collections::HashMap<String, i64> = Default::default();
    for r in &rows {
        let seen = newest.entry(r.address.clone()).or_default();
        *seen = (*seen).max(r.last_seen_at);
    }
    rows.retain(|r| now - r.last_seen_at < COORDINATOR_SILENT_MS || r.last_seen_at >= newest[&r.address]);
    rows
}

#[cfg(test)]
mod tests {
    use super::{store::CoordinatorRow, superseded_hidden};

    fn row(id: &str, address: &str, last_seen_at: i64) -> CoordinatorRow {
        CoordinatorRow {
            id: id.into(),
            address: address.into(),
            version: "0".into(),
            started_at: 0,
            last_seen_at,
        }
    }

    /// c1 restarted twice at the same address: only the live process shows; c2 died and
    /// nothing replaced it: it shows, silent.
    #[test]
    fn a_restarted_coordinator_shows_once() {
        let now = 1_000_000;
        let rows = vec![
            row("h1:100", "c1:7070", now - 600_000),
            row("h1:200", "c1:7070", now - 300_000),
            row("h1:300", "c1:7070", now - 500),
            row("h2:100", "c2:7070", now - 600_000),
        ];
        let ids: Vec<String> = superseded_hidden(rows, now).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["h1:300", "h2:100"]);
        // Two live processes at one address (behind one name) both show.
        let rows = vec![row("a", "lb:7070", now - 1000), row("b", "lb:7070", now - 200)];
        assert_eq!(superseded_hidden(rows, now).len(), 2);
    }
}

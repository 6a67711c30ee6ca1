//! [`ByConfirmations`]: the checks grouped by how many workers they need, so that a change in
//! the live worker count finds the checks that lose or regain their quorum without a scan.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::CheckId;

/// Every known check under its effective confirmations. A check is filed under one count at a
/// time; an empty group is dropped, so the map holds only counts some check needs.
#[derive(Debug, Default)]
pub(super) struct ByConfirmations {
    groups: BTreeMap<u32, BTreeSet<CheckId>>,
}

impl ByConfirmations {
    /// Files a check new to the index under `confirmations`.
    pub(super) fn insert(&mut self, id: CheckId, confirmations: u32) {
        self.groups.entry(confirmations).or_default().insert(id);
    }

    /// Takes a check out of the group it was filed under.
    pub(super) fn remove(&mut self, id: CheckId, confirmations: u32) {
        if let Some(group) = self.groups.get_mut(&confirmations) {
            group.remove(&id);
            if group.is_empty() {
                self.groups.remove(&confirmations);
            }
        }
    }

    /// Refiles a check whose confirmations changed from `old` to `new`.
    pub(super) fn refile(&mut self, id: CheckId, old: u32, new: u32) {
        self.remove(id, old);
        self.insert(id, new);
    }

    /// The checks that need exactly `confirmations` workers, in id order.
    pub(super) fn needing_exactly(&self, confirmations: u32) -> Vec<CheckId> {
        self.groups
            .get(&confirmations)
            .map(|group| group.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The checks that need more than `live` workers, in id order.
    pub(super) fn short_of(&self, live: u32) -> Vec<CheckId> {
        let mut ids: Vec<CheckId> = self
            .groups
            .range(live.saturating_add(1)..)
            .flat_map(|(_, group)| group.iter().copied())
            .collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::ByConfirmations;
    use crate::model::CheckId;

    fn ids(raw: &[i64]) -> Vec<CheckId> {
        raw.iter().map(|&n| CheckId(n)).collect()
    }

    #[test]
    fn groups_by_exact_count_and_lists_the_short_ones_sorted() {
        let mut index = ByConfirmations::default();
        index.insert(CheckId(7), 3);
        index.insert(CheckId(2), 1);
        index.insert(CheckId(5), 3);
        index.insert(CheckId(1), 2);
        assert_eq!(index.needing_exactly(3), ids(&[5, 7]));
        assert_eq!(index.needing_exactly(4), ids(&[]));
        assert_eq!(index.short_of(0), ids(&[1, 2, 5, 7]));
        assert_eq!(index.short_of(1), ids(&[1, 5, 7]));
        assert_eq!(index.short_of(2), ids(&[5, 7]));
        assert_eq!(index.short_of(3), ids(&[]));
        assert_eq!(index.short_of(u32::MAX), ids(&[]));
    }

    #[test]
    fn refile_and_remove_leave_no_trace_in_the_old_group() {
        let mut index = ByConfirmations::default();
        index.insert(CheckId(1), 2);
        index.insert(CheckId(2), 2);
        index.refile(CheckId(1), 2, 4);
        assert_eq!(index.needing_exactly(2), ids(&[2]));
        assert_eq!(index.needing_exactly(4), ids(&[1]));
        index.remove(CheckId(2), 2);
        assert_eq!(index.needing_exactly(2), ids(&[]));
        assert!(!index.groups.contains_key(&2), "an empty group is dropped");
        // Removing under the wrong count or twice changes nothing.
        index.remove(CheckId(1), 3);
        index.remove(CheckId(2), 2);
        assert_eq!(index.short_of(0), ids(&[1]));
    }
}

//! One copy of each distinct label set the index holds.
//!
//! The pods of a ReplicaSet, a DaemonSet or a Job carry identical labels, so a large cluster
//! has far fewer label sets than pods. Sharing them keeps each pod's labels to a pointer.

use std::collections::HashSet;

use crate::selector::Labels;

/// Sets no pod holds any more are dropped in sweeps, each after as many releases as there are
/// sets (and at least this many), so a sweep costs O(1) per release.
const MIN_RELEASES_PER_SWEEP: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct LabelSets {
    sets: HashSet<Labels>,
    releases: usize,
}

impl LabelSets {
    /// The shared copy of `labels`, which becomes it when it is the first of its kind.
    pub fn share(&mut self, labels: Labels) -> Labels {
        if let Some(shared) = self.sets.get(&labels) {
            return shared.clone();
        }
        self.sets.insert(labels.clone());
        labels
    }

    /// Records that a holder of shared labels let them go.
    pub fn release(&mut self) {
        self.releases += 1;
        if self.releases >= self.sets.len().max(MIN_RELEASES_PER_SWEEP) {
            self.sets.retain(|labels| !labels.is_unshared());
            self.releases = 0;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::labels_of;

    #[test]
    fn equal_labels_are_stored_once_and_dropped_when_nobody_holds_them() {
        let mut sets = LabelSets::default();
        let a = sets.share(labels_of([("app", "web"), ("tier", "front")]));
        let b = sets.share(labels_of([("tier", "front"), ("app", "web")]));
        let c = sets.share(labels_of([("app", "db")]));
        assert_eq!(a, b);
        assert!(!a.is_unshared());
        assert_eq!(sets.len(), 2);
        drop((a, b));
        for _ in 0..MIN_RELEASES_PER_SWEEP {
            sets.release();
        }
        assert_eq!(sets.len(), 1, "only the set `c` holds is kept");
        assert_eq!(sets.share(labels_of([("app", "db")])), c);
    }
}

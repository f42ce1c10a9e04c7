//! Kernel rule counters turned into totals that never go backwards.
//!
//! The kernel counts per rule, and a rewritten chain starts its rules from zero. Each read is
//! compared with the last value seen for the same rule (chain, position and rule hash): what
//! grew is added; a smaller value means the rule was rewritten, and all of it is new. Totals
//! belong to what a rule counts (a policy rule, a pod's default deny), summed over the kernel
//! rules and families that implement it, and last as long as the written state counts it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::compiler::desired::Counted;
use crate::dataplane::CounterSnapshot;
use crate::model::Family;

type KernelRuleKey = (Family, String, usize, String);

/// What one read adds to the exported totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterUpdate {
    /// Packets and bytes counted since the last read, per meaning (only those that grew).
    pub added: Vec<(Arc<Counted>, u64, u64)>,
    /// Meanings the written state no longer has: their series end.
    pub ended: Vec<Arc<Counted>>,
}

#[derive(Debug, Default)]
pub struct CounterTotals {
    last: HashMap<KernelRuleKey, (u64, u64)>,
    exported: BTreeSet<Arc<Counted>>,
}

impl CounterTotals {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, snapshot: &CounterSnapshot) -> CounterUpdate {
        let mut added: HashMap<Arc<Counted>, (u64, u64)> = HashMap::new();
        let mut last = HashMap::with_capacity(snapshot.readings.len());
        for reading in &snapshot.readings {
            let key = (
                reading.family,
                reading.chain.clone(),
                reading.position,
                reading.hash.clone(),
            );
            let now = (reading.packets, reading.bytes);
            let growth = match self.last.get(&key) {
                Some(&(packets, bytes)) if now.0 >= packets && now.1 >= bytes => {
                    (now.0 - packets, now.1 - bytes)
                }
                // A new rule, or one rewritten since the last read: it counted from zero.
                _ => now,
            };
            if growth != (0, 0) {
                let sum = added.entry(Arc::clone(&reading.counted)).or_default();
                sum.0 += growth.0;
                sum.1 += growth.1;
            }
            last.insert(key, now);
        }
        // A chain not read this time keeps its last values, so that it is not counted twice.
        for (key, value) in &self.last {
            if snapshot
                .skipped
                .iter()
                .any(|(family, chain)| *family == key.0 && *chain == key.1)
            {
                last.entry(key.clone()).or_insert(*value);
            }
        }
        self.last = last;
        let ended: Vec<Arc<Counted>> = self
            .exported
            .iter()
            .filter(|c| !snapshot.live.contains(*c))
            .cloned()
            .collect();
        for gone in &ended {
            self.exported.remove(gone);
        }
        self.exported.extend(snapshot.live.iter().map(Arc::clone));
        let mut added: Vec<(Arc<Counted>, u64, u64)> =
            added.into_iter().map(|(c, (p, b))| (c, p, b)).collect();
        added.sort();
        CounterUpdate { added, ended }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::CounterReading;
    use crate::model::{Direction, ObjectKey};

    fn deny(pod: &str) -> Arc<Counted> {
        Arc::new(Counted::DefaultDeny {
            pod: ObjectKey::new("ns", pod),
            direction: Direction::Ingress,
            enforcement: crate::model::Enforcement::Enforce,
        })
    }

    fn reading(counted: &Arc<Counted>, hash: &str, packets: u64, bytes: u64) -> CounterReading {
        CounterReading {
            family: Family::V4,
            chain: "PAL-TO-1".into(),
            position: 3,
            hash: hash.into(),
            counted: Arc::clone(counted),
            packets,
            bytes,
        }
    }

    fn snapshot(readings: Vec<CounterReading>) -> CounterSnapshot {
        CounterSnapshot {
            live: readings.iter().map(|r| Arc::clone(&r.counted)).collect(),
            readings,
            skipped: BTreeSet::new(),
        }
    }

    #[test]
    fn growth_is_added_and_a_rewrite_counts_from_zero() {
        let a = deny("a");
        let mut totals = CounterTotals::new();
        let first = totals.update(&snapshot(vec![reading(&a, "h1", 5, 500)]));
        assert_eq!(first.added, vec![(Arc::clone(&a), 5, 500)]);
        let same = totals.update(&snapshot(vec![reading(&a, "h1", 5, 500)]));
        assert!(same.added.is_empty(), "nothing grew");
        let grew = totals.update(&snapshot(vec![reading(&a, "h1", 8, 800)]));
        assert_eq!(grew.added, vec![(Arc::clone(&a), 3, 300)]);
        // The chain was rewritten: the kernel restarted the rule's counters.
        let rewritten = totals.update(&snapshot(vec![reading(&a, "h1", 2, 200)]));
        assert_eq!(rewritten.added, vec![(Arc::clone(&a), 2, 200)]);
        // Another rule at the position is another counter, whatever its value.
        let replaced = totals.update(&snapshot(vec![reading(&a, "h2", 9, 900)]));
        assert_eq!(replaced.added, vec![(Arc::clone(&a), 9, 900)]);
    }

    #[test]
    fn kernel_rules_of_one_meaning_are_summed() {
        let a = deny("a");
        let mut v6 = reading(&a, "h1", 1, 100);
        v6.family = Family::V6;
        let mut other_position = reading(&a, "h1", 2, 200);
        other_position.position = 7;
        let mut totals = CounterTotals::new();
        let update = totals.update(&snapshot(vec![
            reading(&a, "h1", 4, 400),
            v6,
            other_position,
        ]));
        assert_eq!(update.added, vec![(a, 7, 700)]);
    }

    #[test]
    fn a_skipped_chain_is_not_counted_twice() {
        let a = deny("a");
        let mut totals = CounterTotals::new();
        totals.update(&snapshot(vec![reading(&a, "h1", 5, 500)]));
        let mut skipped = snapshot(Vec::new());
        skipped.live.insert(Arc::clone(&a));
        skipped.skipped.insert((Family::V4, "PAL-TO-1".into()));
        let update = totals.update(&skipped);
        assert!(update.added.is_empty() && update.ended.is_empty());
        let back = totals.update(&snapshot(vec![reading(&a, "h1", 6, 600)]));
        assert_eq!(
            back.added,
            vec![(a, 1, 100)],
            "only what grew since the read before"
        );
    }

    #[test]
    fn meanings_the_state_no_longer_has_end() {
        let (a, b) = (deny("a"), deny("b"));
        let mut totals = CounterTotals::new();
        totals.update(&snapshot(vec![
            reading(&a, "h1", 1, 1),
            reading(&b, "h2", 1, 1),
        ]));
        let update = totals.update(&snapshot(vec![reading(&a, "h1", 1, 1)]));
        assert_eq!(update.ended, vec![b]);
    }
}

//! Reading the kernel's packet and byte counters of the rules whose counts Palisade exports.
//!
//! One `iptables-save -c -t filter` per family, paired with the rules of the last written
//! state by position, in the chains the kernel holds exactly as written (the same rule hashes
//! in the same order). A chain that differs (an apply is rewriting it, someone edited it) is
//! reported as skipped and read again next time.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::compiler::desired::{Counted, FamilyState};
use crate::model::Family;
use crate::render::{rule_body, rule_hash};

use super::error::DataplaneError;
use super::iptables_save::parse_filter_save;
use super::Dataplane;

/// One kernel rule's counters and what they count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReading {
    pub family: Family,
    pub chain: String,
    pub position: usize,
    /// The rule's hash: another rule at the same position is another counter.
    pub hash: String,
    pub counted: Arc<Counted>,
    pub packets: u64,
    pub bytes: u64,
}

/// What one read found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub readings: Vec<CounterReading>,
    /// Chains with counted rules that were not read this time.
    pub skipped: BTreeSet<(Family, String)>,
    /// Everything the written state counts, read this time or not.
    pub live: BTreeSet<Arc<Counted>>,
}

/// The counted rules of one chain as written.
struct CountedChain {
    name: String,
    hashes: Vec<String>,
    counted: Vec<(usize, Arc<Counted>)>,
}

fn counted_chains(state: &FamilyState) -> Vec<CountedChain> {
    state
        .chains
        .iter()
        .filter(|(_, chain)| chain.rules.iter().any(|r| r.counted.is_some()))
        .map(|(name, chain)| CountedChain {
            name: name.clone(),
            hashes: chain
                .rules
                .iter()
                .map(|r| rule_hash(&rule_body(r)))
                .collect(),
            counted: chain
                .rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.counted.as_ref().map(|c| (i, Arc::clone(c))))
                .collect(),
        })
        .collect()
}

impl Dataplane {
    /// Reads the counters of the counted rules of the last written state. `Ok(None)` when the
    /// kernel is not known to hold a written state (before the first apply, after a failed
    /// one): there is nothing to pair the counters with.
    pub fn read_counters(&self) -> Result<Option<CounterSnapshot>, DataplaneError> {
        // Only what is needed is taken under the lock, so an apply waits for no command.
        let families: Vec<(Family, Vec<CountedChain>)> = {
            let written = self.peek();
            let Some(state) = written.as_ref() else {
                return Ok(None);
            };
            Family::ALL
                .into_iter()
                .map(|family| (family, counted_chains(state.family(family))))
                .collect()
        };
        let mut snapshot = CounterSnapshot::default();
        for (family, chains) in families {
            if chains.is_empty() {
                continue;
            }
            for chain in &chains {
                snapshot
                    .live
                    .extend(chain.counted.iter().map(|(_, c)| Arc::clone(c)));
            }
            let args = ["-c", "-t", "filter"].map(String::from);
            let output = self
                .runner
                .run(self.backend.save_binary(family), &args, None)?;
            let kernel = parse_filter_save(&output.stdout);
            for chain in chains {
                let in_place = kernel
                    .chains
                    .get(&chain.name)
                    .filter(|k| k.has_hashes(&chain.hashes));
                let Some(kernel_chain) = in_place else {
                    snapshot.skipped.insert((family, chain.name));
                    continue;
                };
                for (position, counted) in chain.counted {
                    let Some((packets, bytes)) = kernel_chain
                        .rules
                        .get(position)
                        .and_then(|rule| rule.counters)
                    else {
                        snapshot.skipped.insert((family, chain.name.clone()));
                        continue;
                    };
                    snapshot.readings.push(CounterReading {
                        family,
                        chain: chain.name.clone(),
                        position,
                        hash: chain.hashes[position].clone(),
                        counted,
                        packets,
                        bytes,
                    });
                }
            }
        }
        Ok(Some(snapshot))
    }
}

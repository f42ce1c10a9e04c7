//! Sets larger than the kernel lets an ipset grow (`maxelem`).
//!
//! A set over capacity is never written. `ipset restore` stops at the first element a full
//! set refuses, which would leave that sync and every later one unwritten, and a truncated set
//! would make its rules match less than the policy says: for a Deny rule, that opens traffic.
//! So the set is kept aside with all its members, and every policy chain that reads it fails
//! closed in its tier and order, as an unreadable policy does: it allows nothing, and when the
//! policy can deny or pass in that direction, it denies everything it sees. Once the set fits
//! again, it goes back into the state and the chains are compiled as written.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::compiler::desired::{Chain, IpSet, SetEntry};
use crate::compiler::rules;
use crate::index::ClusterIndex;
use crate::model::{Action, Family, PolicyId, Rule};

use super::{NodeCompiler, PolicyChainKey};

/// A set the kernel cannot hold, and the policies failed closed because of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOverflow {
    pub family: Family,
    /// The set's kernel name.
    pub set: String,
    /// What it stands for: the selector, named port, networks or service.
    pub description: String,
    /// The elements it would hold, and the most it may.
    pub elements: usize,
    pub capacity: usize,
    /// The policies whose chains read the set, each failed closed in the directions that do.
    pub policies: Vec<PolicyId>,
}

impl std::fmt::Display for SetOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "set {} ({}) would hold {} elements, over the capacity of {}: it is not written, and ",
            self.set, self.description, self.elements, self.capacity
        )?;
        if self.policies.is_empty() {
            return f.write_str("no policy reads it");
        }
        f.write_str("these policies fail closed:")?;
        for policy in &self.policies {
            write!(f, " {}", policy.canonical())?;
        }
        Ok(())
    }
}

/// The kernel elements of a set. One per entry, except in `hash:net`: a network and its
/// `nomatch` twin are one element (adjacent, as entries sort by network first), and a `/0` is
/// written as its two halves, which a `/1` entry of the same half shares.
pub(super) fn element_count(set: &IpSet) -> usize {
    let mut count = 0;
    let mut previous: Option<IpNetwork> = None;
    let mut halves: Vec<(bool, bool)> = Vec::new();
    for entry in &set.members {
        let SetEntry::Net { net, .. } = entry else {
            count += 1;
            continue;
        };
        if net.prefix() <= 1 {
            let upper = |net: &IpNetwork| match net.network() {
                IpAddr::V4(v4) => v4.octets()[0] >= 128,
                IpAddr::V6(v6) => v6.octets()[0] >= 128,
            };
            let family = net.is_ipv6();
            if net.prefix() == 0 {
                halves.extend([(family, false), (family, true)]);
            } else {
                halves.push((family, upper(net)));
            }
        } else if previous != Some(*net) {
            count += 1;
        }
        previous = Some(*net);
    }
    halves.sort_unstable();
    halves.dedup();
    count + halves.len()
}

impl NodeCompiler {
    /// The sets over capacity now, by family and name.
    pub fn overflowing_sets(&self) -> Vec<SetOverflow> {
        self.overflowed
            .iter()
            .map(|((family, name), set)| {
                let mut policies: Vec<PolicyId> = self
                    .failed_closed
                    .iter()
                    .filter(|key| key.2 == *family && self.chain_reads(key, name))
                    .map(|key| key.0.clone())
                    .collect();
                policies.sort();
                policies.dedup();
                SetOverflow {
                    family: *family,
                    set: name.clone(),
                    description: set.description.clone(),
                    elements: element_count(set),
                    capacity: self.config.set_capacity,
                    policies,
                }
            })
            .collect()
    }

    /// The set of this name, whether in the state or kept aside over capacity.
    pub(super) fn set_mut(&mut self, family: Family, name: &str) -> Option<&mut IpSet> {
        match self.state.family_mut(family).ipsets.get_mut(name) {
            Some(set) => Some(set),
            None => self.overflowed.get_mut(&(family, name.to_string())),
        }
    }

    fn chain_reads(&self, key: &PolicyChainKey, set: &str) -> bool {
        self.policy_chains
            .get(key)
            .is_some_and(|active| active.sets.iter().any(|s| s.name(key.2) == set))
    }

    /// Moves the sets resized since the last call across the capacity, either way, and
    /// rewrites the policy chains that read them. Costs nothing while no set comes near it.
    pub(super) fn enforce_set_capacity(&mut self, index: &ClusterIndex) {
        let resized = std::mem::take(&mut self.resized);
        let capacity = self.config.set_capacity;
        let mut crossed = Vec::new();
        for (family, name) in resized {
            let key = (family, name.clone());
            let ipsets = &mut self.state.family_mut(family).ipsets;
            if ipsets
                .get(&name)
                .is_some_and(|s| element_count(s) > capacity)
            {
                if let Some(set) = ipsets.remove(&name) {
                    self.overflowed.insert(key, set);
                    crossed.push((family, name));
                }
            } else if self
                .overflowed
                .get(&key)
                .is_some_and(|s| element_count(s) <= capacity)
            {
                if let Some(set) = self.overflowed.remove(&key) {
                    self.state
                        .family_mut(family)
                        .ipsets
                        .insert(name.clone(), set);
                    self.dirty.insert((family, name.clone()));
                    crossed.push((family, name));
                }
            }
        }
        if crossed.is_empty() && self.overflowed.is_empty() && self.failed_closed.is_empty() {
            return;
        }
        // Chains to look at: those reading a set that crossed, those written since (they were
        // compiled from the policy and may read a set kept aside), and those failed closed.
        let keys: Vec<PolicyChainKey> = self
            .policy_chains
            .keys()
            .filter(|key| {
                let name = crate::compiler::naming::policy_chain(&key.0, key.1, key.3);
                self.failed_closed.contains(*key)
                    || self.dirty.contains(&(key.2, name))
                    || crossed
                        .iter()
                        .any(|(family, set)| key.2 == *family && self.chain_reads(key, set))
            })
            .cloned()
            .collect();
        for key in keys {
            let overflowing = self.policy_chains.get(&key).is_some_and(|active| {
                active
                    .sets
                    .iter()
                    .any(|s| self.overflowed.contains_key(&(key.2, s.name(key.2))))
            });
            match (overflowing, self.failed_closed.contains(&key)) {
                (true, _) => {
                    self.write_failed_closed(index, &key);
                    self.failed_closed.insert(key);
                }
                (false, true) => {
                    self.failed_closed.remove(&key);
                    let _ = self.write_policy_chain(index, &key);
                }
                (false, false) => {}
            }
        }
    }

    /// The chain of a policy that cannot be enforced as written: no rule of it allows, and
    /// if it can deny or pass in this direction, it denies everything that reaches it.
    fn write_failed_closed(&mut self, index: &ClusterIndex, key: &PolicyChainKey) {
        let (policy_id, direction, family, handling) = key;
        let Some(policy) = index.policy(policy_id) else {
            return;
        };
        let mut stand_in = (**policy).clone();
        let denies = policy.can_deny(*direction) || policy.can_pass(*direction);
        let rules = if denies {
            vec![Rule::new(Action::Deny, 0)]
        } else {
            Vec::new()
        };
        match direction {
            crate::model::Direction::Ingress => stand_in.ingress = Some(rules),
            crate::model::Direction::Egress => stand_in.egress = Some(rules),
        }
        let compiled = rules::policy_chain(&stand_in, *direction, *family, *handling, &self.config);
        let name = crate::compiler::naming::policy_chain(policy_id, *direction, *handling);
        self.dirty.insert((*family, name.clone()));
        self.state.family_mut(*family).chains.insert(
            name,
            Chain {
                rules: compiled.rules,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::desired::IpSetKind;
    use crate::model::Family;

    fn net_set(entries: &[(&str, bool)]) -> IpSet {
        IpSet {
            kind: IpSetKind::HashNet,
            family: Family::V4,
            description: String::new(),
            members: entries
                .iter()
                .map(|(net, nomatch)| SetEntry::Net {
                    net: net.parse().expect("a test network"),
                    nomatch: *nomatch,
                })
                .collect(),
        }
    }

    #[test]
    fn elements_are_counted_as_the_kernel_stores_them() {
        // An ipBlock and an except of the same network in one set: one element.
        let twins = net_set(&[
            ("10.0.0.0/24", false),
            ("10.0.0.0/24", true),
            ("10.1.0.0/16", false),
        ]);
        assert_eq!(element_count(&twins), 2);
        // A /0 is its two halves; a /1 entry shares its half.
        let whole = net_set(&[
            ("0.0.0.0/0", false),
            ("128.0.0.0/1", true),
            ("10.0.0.0/8", true),
        ]);
        assert_eq!(element_count(&whole), 3);
        let halves = net_set(&[("0.0.0.0/1", false), ("128.0.0.0/1", false)]);
        assert_eq!(element_count(&halves), 2);
        let ips = IpSet {
            kind: IpSetKind::HashIp,
            family: Family::V4,
            description: String::new(),
            members: [SetEntry::Ip("10.0.0.1".parse().expect("an address"))].into(),
        };
        assert_eq!(element_count(&ips), 1);
    }
}

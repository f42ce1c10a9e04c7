//! Planning from what the dataplane last wrote, without reading the kernel.
//!
//! After a successful apply the kernel holds exactly the desired state that was applied
//! (Palisade's objects are its own), so the next apply can diff the new desired state against
//! that memory and skip the reads, which on a large node cost far more than the write: `ipset
//! save` prints every member. The memory is only trusted while nothing has gone wrong: a
//! failed or uncertain write forgets it, and the periodic refresh reads the kernel and forgets
//! it when the two disagree, so drift is still repaired.
//!
//! The diff works on the compiler's own types: unchanged sets compare equal member by member
//! without formatting a single element, and a changed set costs only its changed entries.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use crate::compiler::desired::{Chain, FamilyState, IpSet, IpSetKind, SetEntry};
use crate::compiler::naming::{temporary_set_name, FORWARD_CHAIN};
use crate::model::Family;

use super::placement::is_spare;
use super::plan::{member_edit, Bridge, FamilyPlan, SetEdit, SetReplacement};
use super::restore::HOOK_RULE;
use super::set_members::desired_elements;

/// Entries a set gains and loses between what was written and what is desired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntryDelta {
    pub added: Vec<SetEntry>,
    pub removed: Vec<SetEntry>,
}

/// One family's plan from memory, with the entry changes that bring the memory up to date
/// once the plan has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RememberedPlan {
    pub plan: FamilyPlan,
    pub deltas: BTreeMap<String, EntryDelta>,
}

/// Plans one family against the state last written, or `None` when the family has nothing
/// desired and nothing written (it is then not touched, as with a read).
pub(crate) fn plan_from_memory(
    family: Family,
    desired: &FamilyState,
    written: &FamilyState,
) -> Option<RememberedPlan> {
    if desired.is_empty() && written.is_empty() {
        return None;
    }
    let mut plan = FamilyPlan::empty(family);
    let mut deltas = BTreeMap::new();
    for (name, set) in &desired.ipsets {
        let Some(old) = written.ipsets.get(name) else {
            plan.create_sets.push(name.clone());
            continue;
        };
        if old.kind == set.kind && old.family == set.family {
            if old.members != set.members {
                let delta = entry_delta(old, set);
                let edit = kernel_edit(old, set, &delta);
                if edit != SetEdit::default() {
                    plan.edit_sets.insert(name.clone(), edit);
                }
                deltas.insert(name.clone(), delta);
            }
            continue;
        }
        let referenced = written
            .chains
            .values()
            .any(|chain| chain.references_set(name));
        plan.replace_sets.push(SetReplacement {
            name: name.clone(),
            bridge: referenced.then(|| Bridge {
                temporary: temporary_set_name(name),
                leftover_temporary: None,
            }),
        });
    }
    plan.destroy_sets = written
        .ipsets
        .keys()
        .filter(|name| !desired.ipsets.contains_key(*name) && !is_spare(name, desired))
        .cloned()
        .collect();

    let bridged = plan.bridged_sets();
    plan.bridge_chains = written
        .chains
        .iter()
        .filter(|(_, chain)| bridged.iter().any(|set| chain.references_set(set)))
        .map(|(name, _)| name.clone())
        .collect();
    plan.write_chains = desired
        .chains
        .iter()
        .filter(|(name, chain)| {
            let in_place = written
                .chains
                .get(*name)
                .is_some_and(|old| same_rules(old, chain));
            !in_place || plan.bridge_chains.contains(*name)
        })
        .map(|(name, _)| name.clone())
        .collect();
    plan.delete_chains = written
        .chains
        .keys()
        .filter(|name| !desired.chains.contains_key(*name))
        .cloned()
        .collect();

    let hooked = written.chains.contains_key(FORWARD_CHAIN);
    if desired.chains.contains_key(FORWARD_CHAIN) {
        plan.insert_hook = !hooked;
    } else if hooked {
        plan.remove_hooks = vec![HOOK_RULE.to_string()];
    }
    Some(RememberedPlan { plan, deltas })
}

/// Brings the memory of one family up to what `plan` wrote.
pub(crate) fn remember(
    written: &mut FamilyState,
    desired: &FamilyState,
    remembered: RememberedPlan,
) {
    let RememberedPlan { plan, deltas } = remembered;
    let recreated = plan
        .create_sets
        .iter()
        .chain(plan.replace_sets.iter().map(|r| &r.name));
    for name in recreated {
        if let Some(set) = desired.ipsets.get(name) {
            written.ipsets.insert(name.clone(), set.clone());
        }
    }
    for (name, delta) in deltas {
        if let Some(set) = written.ipsets.get_mut(&name) {
            for entry in &delta.removed {
                set.members.remove(entry);
            }
            set.members.extend(delta.added);
        }
    }
    for name in &plan.destroy_sets {
        written.ipsets.remove(name);
    }
    for name in &plan.write_chains {
        if let Some(chain) = desired.chains.get(name) {
            written.chains.insert(name.clone(), chain.clone());
        }
    }
    for name in &plan.delete_chains {
        written.chains.remove(name);
    }
}

/// Whether a chain's rules are in place: compared without their comments, as a read compares
/// rule hashes, which cover everything but the comment. A chain is not rewritten (and its
/// counters not reset) only to change its comments.
fn same_rules(old: &Chain, new: &Chain) -> bool {
    old.rules.len() == new.rules.len()
        && old
            .rules
            .iter()
            .zip(&new.rules)
            .all(|(a, b)| a.matches == b.matches && a.action == b.action)
}

/// One merge walk over both sorted member lists.
fn entry_delta(old: &IpSet, new: &IpSet) -> EntryDelta {
    EntryDelta {
        added: new.members.difference(&old.members).copied().collect(),
        removed: old.members.difference(&new.members).copied().collect(),
    }
}

/// The kernel lines for an entry delta. Addresses and address-port pairs are elements one to
/// one. A network is one element too, and its `nomatch` twin shares it (the flag wins), so a
/// touched network is looked up in both sets with either flag. A whole address space (`/0`,
/// stored as two `/1` halves) or a network with host bits maps to elements of other entries,
/// so such a delta is diffed element by element over the whole set instead.
fn kernel_edit(old: &IpSet, new: &IpSet, delta: &EntryDelta) -> SetEdit {
    if new.kind != IpSetKind::HashNet {
        return SetEdit {
            add: delta.added.iter().map(|e| (e.to_string(), false)).collect(),
            delete: delta.removed.iter().map(SetEntry::to_string).collect(),
        };
    }
    let touched: Vec<IpNetwork> = delta
        .added
        .iter()
        .chain(&delta.removed)
        .filter_map(|entry| match entry {
            SetEntry::Net { net, .. } => Some(*net),
            _ => None,
        })
        .collect();
    let one_to_one = touched.len() == delta.added.len() + delta.removed.len()
        && touched
            .iter()
            .all(|net| net.prefix() > 1 && net.ip() == net.network());
    if !one_to_one {
        return member_edit(&desired_elements(new), &desired_elements(old));
    }
    let mut edit = SetEdit::default();
    let mut seen = std::collections::BTreeSet::new();
    for net in touched {
        if !seen.insert(net) {
            continue;
        }
        let element = format!("{}/{}", net.network(), net.prefix());
        match (net_flag(old, net), net_flag(new, net)) {
            (Some(_), None) => edit.delete.push(element),
            (before, Some(nomatch)) if before != Some(nomatch) => edit.add.push((element, nomatch)),
            _ => {}
        }
    }
    edit
}

/// Whether a network is in the set, and if so whether as `nomatch` (which wins over its twin).
fn net_flag(set: &IpSet, net: IpNetwork) -> Option<bool> {
    if set.members.contains(&SetEntry::Net { net, nomatch: true }) {
        Some(true)
    } else if set.members.contains(&SetEntry::Net {
        net,
        nomatch: false,
    }) {
        Some(false)
    } else {
        None
    }
}

//! The diff between one family's desired state and what the kernel holds: pure, so every
//! decision about what to touch can be tested without a kernel.

use std::collections::BTreeMap;

use crate::compiler::desired::FamilyState;
use crate::compiler::naming::{temporary_set_name, FORWARD_CHAIN};
use crate::model::Family;
use crate::render::{rule_body, rule_hash};

use super::ipset_save::KernelSet;
use super::iptables_save::FilterSnapshot;
use super::set_members::{desired_element_count, desired_elements, Elements};

/// Member changes of a set that exists with the right type and family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetEdit {
    /// Elements to add, or whose `nomatch` flag flips (an `add -exist` does both).
    pub add: Vec<(String, bool)>,
    pub delete: Vec<String>,
}

/// A set that exists under the right name with the wrong type or family. The kernel refuses
/// to swap sets of different types and to destroy or rename a set a rule uses, so a set that
/// rules use is replaced via a temporary set the rules are pointed at meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReplacement {
    pub name: String,
    /// `Some` when owned chains in the kernel reference the set.
    pub bridge: Option<Bridge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub temporary: String,
    /// What the temporary name holds in the kernel already, left over from an interrupted run.
    pub leftover_temporary: Option<KernelSet>,
}

/// What to change in one family, in the order the changes must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan {
    pub family: Family,
    /// Desired sets absent from the kernel.
    pub create_sets: Vec<String>,
    pub edit_sets: BTreeMap<String, SetEdit>,
    pub replace_sets: Vec<SetReplacement>,
    /// Owned sets the desired state no longer has.
    pub destroy_sets: Vec<String>,
    /// Owned kernel chains that reference a set being replaced through a bridge.
    pub bridge_chains: Vec<String>,
    /// Desired chains that are missing, differ, or were bridged.
    pub write_chains: Vec<String>,
    /// Owned chains the desired state no longer has.
    pub delete_chains: Vec<String>,
    pub insert_hook: bool,
    /// FORWARD rule specs jumping to `PAL-FORWARD` when that chain is going away.
    pub remove_hooks: Vec<String>,
}

/// Counts of what a plan changes; `changes()` is what apply reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// The family had nothing desired and nothing owned in the kernel: it was not touched.
    pub skipped: bool,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub sets_created: usize,
    pub sets_destroyed: usize,
    pub members_added: usize,
    pub members_removed: usize,
    pub hooks_inserted: usize,
    pub hooks_removed: usize,
}

impl FamilyStats {
    pub fn changes(&self) -> usize {
        self.chains_written
            + self.chains_deleted
            + self.sets_created
            + self.sets_destroyed
            + self.members_added
            + self.members_removed
            + self.hooks_inserted
            + self.hooks_removed
    }
}

impl FamilyPlan {
    /// A plan that changes nothing.
    pub fn empty(family: Family) -> Self {
        Self {
            family,
            create_sets: Vec::new(),
            edit_sets: BTreeMap::new(),
            replace_sets: Vec::new(),
            destroy_sets: Vec::new(),
            bridge_chains: Vec::new(),
            write_chains: Vec::new(),
            delete_chains: Vec::new(),
            insert_hook: false,
            remove_hooks: Vec::new(),
        }
    }

    /// Sets replaced through a temporary set: the chains using them are bridged meanwhile.
    pub fn bridged_sets(&self) -> Vec<String> {
        self.replace_sets
            .iter()
            .filter(|r| r.bridge.is_some())
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn stats(&self, desired: &FamilyState) -> FamilyStats {
        let filled: usize = self
            .create_sets
            .iter()
            .chain(self.replace_sets.iter().map(|r| &r.name))
            .filter_map(|name| desired.ipsets.get(name))
            .map(desired_element_count)
            .sum();
        FamilyStats {
            skipped: false,
            chains_written: self.write_chains.len(),
            chains_deleted: self.delete_chains.len(),
            sets_created: self.create_sets.len() + self.replace_sets.len(),
            sets_destroyed: self.destroy_sets.len() + self.replace_sets.len(),
            members_added: filled + self.edit_sets.values().map(|e| e.add.len()).sum::<usize>(),
            members_removed: self.edit_sets.values().map(|e| e.delete.len()).sum(),
            hooks_inserted: usize::from(self.insert_hook),
            hooks_removed: self.remove_hooks.len(),
        }
    }
}

/// Decides what to change. `kernel_sets` holds the owned sets of this family only.
pub fn plan_family(
    family: Family,
    desired: &FamilyState,
    filter: &FilterSnapshot,
    kernel_sets: &BTreeMap<String, KernelSet>,
) -> FamilyPlan {
    let mut plan = FamilyPlan::empty(family);

    let mut temporaries_in_use = Vec::new();
    for (name, set) in &desired.ipsets {
        let Some(existing) = kernel_sets.get(name) else {
            plan.create_sets.push(name.clone());
            continue;
        };
        if existing.matches(set.kind, set.family) {
            let edit = member_edit(&desired_elements(set), &existing.elements);
            if edit != SetEdit::default() {
                plan.edit_sets.insert(name.clone(), edit);
            }
            continue;
        }
        let referenced = filter
            .chains
            .values()
            .any(|chain| chain.references_set(name));
        let bridge = referenced.then(|| {
            let temporary = temporary_set_name(name);
            temporaries_in_use.push(temporary.clone());
            Bridge {
                leftover_temporary: kernel_sets.get(&temporary).cloned(),
                temporary,
            }
        });
        plan.replace_sets.push(SetReplacement {
            name: name.clone(),
            bridge,
        });
    }
    plan.destroy_sets = kernel_sets
        .keys()
        .filter(|name| !desired.ipsets.contains_key(*name) && !temporaries_in_use.contains(name))
        .cloned()
        .collect();

    let bridged = plan.bridged_sets();
    plan.bridge_chains = filter
        .chains
        .iter()
        .filter(|(_, chain)| bridged.iter().any(|set| chain.references_set(set)))
        .map(|(name, _)| name.clone())
        .collect();

    for (name, chain) in &desired.chains {
        let hashes: Vec<String> = chain
            .rules
            .iter()
            .map(|rule| rule_hash(&rule_body(rule)))
            .collect();
        let in_place = filter
            .chains
            .get(name)
            .is_some_and(|existing| existing.has_hashes(&hashes));
        if !in_place || plan.bridge_chains.contains(name) {
            plan.write_chains.push(name.clone());
        }
    }
    plan.delete_chains = filter
        .chains
        .keys()
        .filter(|name| !desired.chains.contains_key(*name))
        .cloned()
        .collect();

    if desired.chains.contains_key(FORWARD_CHAIN) {
        plan.insert_hook = filter.hooks.is_empty();
    } else {
        plan.remove_hooks = filter.hooks.clone();
    }
    plan
}

pub(crate) fn member_edit(desired: &Elements, kernel: &Elements) -> SetEdit {
    SetEdit {
        add: desired
            .iter()
            .filter(|(element, nomatch)| kernel.get(*element) != Some(*nomatch))
            .map(|(element, nomatch)| (element.clone(), *nomatch))
            .collect(),
        delete: kernel
            .keys()
            .filter(|element| !desired.contains_key(*element))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_edit_adds_deletes_and_flips_flags() {
        let desired = Elements::from([
            ("10.0.0.0/8".to_string(), false),
            ("10.1.0.0/16".to_string(), true),
            ("10.2.0.0/16".to_string(), false),
        ]);
        let kernel = Elements::from([
            ("10.0.0.0/8".to_string(), false),
            ("10.1.0.0/16".to_string(), false),
            ("10.9.0.0/16".to_string(), false),
        ]);
        assert_eq!(
            member_edit(&desired, &kernel),
            SetEdit {
                add: vec![
                    ("10.1.0.0/16".to_string(), true),
                    ("10.2.0.0/16".to_string(), false)
                ],
                delete: vec!["10.9.0.0/16".to_string()],
            }
        );
        assert_eq!(member_edit(&desired, &desired), SetEdit::default());
    }
}

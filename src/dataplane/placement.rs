//! Where each set lives in the kernel, so that a sync switches from the old rules to the new
//! ones in a single atomic step.
//!
//! `ipset restore` edits members one line at a time, and no edit can be made in the same
//! transaction as the filter-table rules. Editing a set that rules in force use would therefore
//! show the packets a mix of old and new: a pod whose labels change joins and leaves peer sets
//! in the ipset stage while its own chains change only in the iptables stage after it, and that
//! mix can allow a flow that neither the old nor the new policy allows.
//!
//! So a set that rules in force use is never edited. Each set has two kernel names (its
//! canonical one and an alternate one, see [`alternate_set_name`]); when a used set must change,
//! the new content is written under the name no rule uses, the iptables transaction rewrites
//! every chain to that name along with every other chain change, and the old name is kept,
//! unused, as the set's spare. Everything before and after the transaction touches only sets
//! no rule uses, so the packets see the old state, then the new one, and nothing in between.
//!
//! The spare makes the next change cheap: it still holds the content before the last switch,
//! so it is brought to the new content with the members that differ, not refilled whole. It
//! costs a second copy of each set that has changed, in the kernel and in memory.
//!
//! One case needs no switch: a sync whose only change rules can see is one element of one
//! set (a remote pod joining or leaving a selection). A single `ipset add` or `del` is atomic
//! in the kernel, so it is written in place (see [`visible_steps`]).
//!
//! The desired state from the compiler keeps canonical names (it is pure and does not know the
//! kernel); this module turns it into the state to write, against what the kernel holds.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use crate::compiler::desired::{DesiredState, FamilyState, IpSet, Match};
use crate::model::Family;

use super::plan::FamilyPlan;

/// The second kernel name of a set: the letter after the family prefix in the other case
/// (`pal4-p-1a2b` and `pal4-P-1a2b`). The compiler only names sets in lower case, so the two
/// never meet another set's name. `None` for a name without such a letter: that set is edited
/// in place.
pub fn alternate_set_name(name: &str) -> Option<String> {
    let prefix_len = ["pal4-", "pal6-"]
        .into_iter()
        .find(|prefix| name.starts_with(prefix))?
        .len();
    let letter = name[prefix_len..].chars().next()?;
    if !letter.is_ascii_alphabetic() {
        return None;
    }
    let toggled = if letter.is_ascii_lowercase() {
        letter.to_ascii_uppercase()
    } else {
        letter.to_ascii_lowercase()
    };
    let rest = &name[prefix_len + letter.len_utf8()..];
    Some(format!("{}{toggled}{rest}", &name[..prefix_len]))
}

/// What the kernel holds of one family, as far as placement needs it.
pub(crate) trait HeldSets {
    /// The names of sets that the chains in force match on.
    fn referenced(&self) -> HashSet<String>;
    /// Whether a set of this name holds exactly `wanted`: the same type, family and elements.
    fn holds(&self, name: &str, wanted: &IpSet) -> bool;
}

/// What one family holds, with the names its chains in force match on read once: placing the
/// sets and counting the visible steps of a plan both need them.
pub(crate) struct Held<'a> {
    sets: &'a dyn HeldSets,
    referenced: HashSet<String>,
}

impl<'a> Held<'a> {
    pub(crate) fn of(sets: &'a dyn HeldSets) -> Self {
        Self {
            referenced: sets.referenced(),
            sets,
        }
    }
}

/// The memory of the last write.
impl HeldSets for FamilyState {
    fn referenced(&self) -> HashSet<String> {
        self.chains
            .values()
            .flat_map(|chain| chain.rules.iter())
            .flat_map(|rule| rule.referenced_sets())
            .map(str::to_string)
            .collect()
    }

    fn holds(&self, name: &str, wanted: &IpSet) -> bool {
        self.ipsets.get(name).is_some_and(|set| {
            set.kind == wanted.kind && set.family == wanted.family && set.members == wanted.members
        })
    }
}

/// How a sync may treat a set that rules in force use and whose content changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Write the new content under the set's other name and point the rules at it in the
    /// iptables transaction: the general case, one atomic switch.
    Switch,
    /// Edit every set under the name the rules use. Only sound when the whole sync is then a
    /// single step that rules in force can see (see [`visible_steps`]).
    InPlace,
}

/// The kernel name each desired set is written under. With [`Placement::Switch`], a set
/// rules in force use keeps its name while its content stays, and moves to its other name
/// when the content changes. A set no rule uses stays where its content already is, or takes
/// its canonical name; changing it is invisible to packets.
pub(crate) fn placements(
    desired: &FamilyState,
    held: &Held<'_>,
    placement: Placement,
) -> BTreeMap<String, String> {
    let Held {
        sets: held,
        referenced,
    } = held;
    let mut moved = BTreeMap::new();
    for (name, set) in &desired.ipsets {
        let Some(alternate) = alternate_set_name(name) else {
            continue;
        };
        let place = match (referenced.contains(name), referenced.contains(&alternate)) {
            (true, false) if placement == Placement::Switch && !held.holds(name, set) => &alternate,
            (false, true) if placement == Placement::InPlace || held.holds(&alternate, set) => {
                &alternate
            }
            (false, false) if held.holds(&alternate, set) && !held.holds(name, set) => &alternate,
            // Both in use happens only when someone else edited the chains: the set is
            // edited in place, and the write makes the chains consistent again.
            _ => name,
        };
        if place != name {
            moved.insert(name.clone(), place.clone());
        }
    }
    moved
}

/// Whether a held set is the spare of a placed one: the other name of a set the sync writes.
/// The spare keeps the previous content, so the next change of that set is written into it
/// as a member delta instead of a whole new set; it is destroyed with the set it belongs to.
pub(crate) fn is_spare(name: &str, placed: &FamilyState) -> bool {
    !placed.ipsets.contains_key(name)
        && alternate_set_name(name).is_some_and(|other| placed.ipsets.contains_key(&other))
}

/// How many steps of a family's plan the rules in force (those `held` has) can see: each
/// `ipset restore` line on a set they use, and the iptables transaction. A sync of at most
/// one such step, over both families, goes from the old state to the new one at once, so it
/// may edit a used set in place: a pod joining or leaving one set is then one `ipset add` or
/// `del` instead of a switch. Anything else on a used set counts as two, which rules the
/// in-place plan out.
pub(crate) fn visible_steps(plan: &FamilyPlan, held: &Held<'_>) -> usize {
    let referenced = &held.referenced;
    let transaction = !plan.write_chains.is_empty()
        || !plan.delete_chains.is_empty()
        || !plan.bridge_chains.is_empty()
        || plan.insert_hook
        || !plan.remove_hooks.is_empty();
    let edits: usize = plan
        .edit_sets
        .iter()
        .filter(|(name, _)| referenced.contains(*name))
        .map(|(_, edit)| edit.add.len() + edit.delete.len())
        .sum();
    let recreated = plan
        .create_sets
        .iter()
        .chain(plan.replace_sets.iter().map(|r| &r.name))
        .chain(&plan.destroy_sets)
        .filter(|name| referenced.contains(*name))
        .count();
    usize::from(transaction) + edits + 2 * recreated
}

/// `state` with every set in `moved` renamed, in the set list and in every rule that uses it.
pub(crate) fn renamed(state: &FamilyState, moved: &BTreeMap<String, String>) -> FamilyState {
    let mut out = FamilyState {
        ipsets: state
            .ipsets
            .iter()
            .map(|(name, set)| {
                let name = moved.get(name).unwrap_or(name);
                (name.clone(), set.clone())
            })
            .collect(),
        chains: state.chains.clone(),
    };
    for chain in out.chains.values_mut() {
        for rule in &mut chain.rules {
            for m in &mut rule.matches {
                if let Match::Set { name, .. } = m {
                    if let Some(to) = moved.get(name) {
                        *name = to.clone();
                    }
                }
            }
        }
    }
    out
}

/// The state to write for `desired`, given what each family (in `Family::ALL` order) holds.
/// Borrowed when every set keeps its canonical name.
pub(crate) fn to_write<'a>(
    desired: &'a DesiredState,
    held: &[Held<'_>; 2],
    placement: Placement,
) -> Cow<'a, DesiredState> {
    let [v4_held, v6_held] = held;
    let moves = [
        placements(desired.family(Family::V4), v4_held, placement),
        placements(desired.family(Family::V6), v6_held, placement),
    ];
    if moves.iter().all(BTreeMap::is_empty) {
        return Cow::Borrowed(desired);
    }
    let [v4, v6] = moves;
    Cow::Owned(DesiredState {
        v4: renamed(&desired.v4, &v4),
        v6: renamed(&desired.v6, &v6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alternate_name_toggles_the_kind_letter_and_back() {
        assert_eq!(
            alternate_set_name("pal4-p-1a2b").as_deref(),
            Some("pal4-P-1a2b")
        );
        assert_eq!(
            alternate_set_name("pal6-N-1a2b").as_deref(),
            Some("pal6-n-1a2b")
        );
        assert_eq!(alternate_set_name("pal4-1"), None);
        assert_eq!(alternate_set_name("pal4-"), None);
        assert_eq!(alternate_set_name("KUBE-CLUSTER-IP"), None);
    }
}

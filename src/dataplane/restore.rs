//! Turns a plan into restore inputs, in the order the kernel accepts them.
//!
//! Verified on iptables 1.8.9, legacy and nft, kernel 6.18:
//! - with `--noflush`, `:CHAIN - [0:0]` creates a missing chain and flushes an existing one,
//!   leaving every chain the input does not mention (and its counters) alone;
//! - a transaction is all or nothing on both backends: a failing line leaves the table as it
//!   was;
//! - `-X` fails while any rule still jumps to the chain; a referrer flushed or rewritten
//!   earlier in the same input no longer counts, one changed later does. So rewritten chains
//!   come first, then hook removal, then every `-F`, then every `-X`.
//!
//! `ipset restore` is not transactional: it applies lines up to the first failure. A failed
//! apply is repaired by the next one, which reads the kernel again.

use std::fmt::Write as _;

use crate::compiler::desired::{FamilyState, IpSet, IpSetKind, Match, Rule};
use crate::compiler::naming::FORWARD_CHAIN;
use crate::render::{chain_rules, ipset_create, rule_spec};

use super::plan::{Bridge, FamilyPlan};
use super::set_members::desired_elements;

/// Which tool a restore input is for, and why it runs at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `ipset restore`: create sets and edit members before any rule needs them. Only sets that
    /// no rule in force uses are touched here (see `placement`), so packets see none of it.
    PrepareSets,
    /// `iptables-restore`: point rules at temporary sets so the originals can be replaced.
    BridgeChains,
    /// `ipset restore`: recreate sets whose type or family changed.
    ReplaceSets,
    /// `iptables-restore`: the filter-table transaction, the one moment packets see a change.
    Chains,
    /// `ipset restore`: destroy sets no rule uses any more.
    DestroySets,
}

impl Stage {
    pub fn is_iptables(self) -> bool {
        matches!(self, Stage::BridgeChains | Stage::Chains)
    }
}

/// The hook that sends forwarded traffic through Palisade; inserted first so policy applies
/// before anything that accepts.
pub const HOOK_RULE: &str = "-m comment --comment \"palisade: policy enforcement\" -j PAL-FORWARD";

/// The non-empty restore inputs of a plan, in order.
pub fn render_plan(plan: &FamilyPlan, desired: &FamilyState) -> Vec<(Stage, String)> {
    [
        (Stage::PrepareSets, prepare_sets(plan, desired)),
        (Stage::BridgeChains, bridge_chains(plan, desired)),
        (Stage::ReplaceSets, replace_sets(plan, desired)),
        (Stage::Chains, chains(plan, desired)),
        (Stage::DestroySets, destroy_sets(plan)),
    ]
    .into_iter()
    .filter(|(_, text)| !text.is_empty())
    .collect()
}

fn prepare_sets(plan: &FamilyPlan, desired: &FamilyState) -> String {
    let mut out = String::new();
    for name in &plan.create_sets {
        if let Some(set) = desired.ipsets.get(name) {
            write_filled_set(&mut out, name, set);
        }
    }
    // `-exist` makes each line idempotent, and on `add` it flips `nomatch` in place. It is
    // never used on `create`: there it silently keeps a set of another type.
    for (name, edit) in &plan.edit_sets {
        for element in &edit.delete {
            let _ = writeln!(out, "del {name} {element} -exist");
        }
        for (element, nomatch) in &edit.add {
            let flag = if *nomatch { " nomatch" } else { "" };
            let _ = writeln!(out, "add {name} {element}{flag} -exist");
        }
    }
    for replacement in &plan.replace_sets {
        let Some(set) = desired.ipsets.get(&replacement.name) else {
            continue;
        };
        match &replacement.bridge {
            // Nothing uses it: replace it right away.
            None => {
                let _ = writeln!(out, "destroy {}", replacement.name);
                write_filled_set(&mut out, &replacement.name, set);
            }
            Some(Bridge {
                temporary,
                leftover_temporary,
            }) => match leftover_temporary {
                Some(leftover) if leftover.matches(set.kind, set.family) => {
                    let _ = writeln!(out, "flush {temporary}");
                    write_members(&mut out, temporary, set);
                }
                Some(_) => {
                    let _ = writeln!(out, "destroy {temporary}");
                    write_filled_set(&mut out, temporary, set);
                }
                None => write_filled_set(&mut out, temporary, set),
            },
        }
    }
    out
}

fn bridge_chains(plan: &FamilyPlan, desired: &FamilyState) -> String {
    if plan.bridge_chains.is_empty() {
        return String::new();
    }
    let renames: Vec<(&str, &str)> = plan
        .replace_sets
        .iter()
        .filter_map(|r| {
            r.bridge
                .as_ref()
                .map(|b| (r.name.as_str(), b.temporary.as_str()))
        })
        .collect();
    let mut out = String::from("*filter\n");
    for name in &plan.bridge_chains {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    // A chain that is going away is only flushed here; the main transaction deletes it.
    for name in &plan.bridge_chains {
        if let Some(chain) = desired.chains.get(name) {
            for rule in &chain.rules {
                let _ = writeln!(
                    out,
                    "-A {name} {}",
                    rule_spec(&with_sets_renamed(rule, &renames))
                );
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn with_sets_renamed(rule: &Rule, renames: &[(&str, &str)]) -> Rule {
    let rename = |set: &String| {
        renames
            .iter()
            .find(|(from, _)| *from == set)
            .map_or_else(|| set.clone(), |(_, to)| (*to).to_string())
    };
    let mut renamed = rule.clone();
    for m in &mut renamed.matches {
        if let Match::Set { name, .. } = m {
            *name = rename(name);
        }
    }
    renamed
}

fn replace_sets(plan: &FamilyPlan, desired: &FamilyState) -> String {
    let mut out = String::new();
    for replacement in plan.replace_sets.iter().filter(|r| r.bridge.is_some()) {
        if let Some(set) = desired.ipsets.get(&replacement.name) {
            let _ = writeln!(out, "destroy {}", replacement.name);
            write_filled_set(&mut out, &replacement.name, set);
        }
    }
    out
}

fn chains(plan: &FamilyPlan, desired: &FamilyState) -> String {
    if plan.write_chains.is_empty()
        && plan.delete_chains.is_empty()
        && !plan.insert_hook
        && plan.remove_hooks.is_empty()
    {
        return String::new();
    }
    let mut out = String::from("*filter\n");
    for name in &plan.write_chains {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for name in &plan.write_chains {
        if let Some(chain) = desired.chains.get(name) {
            for line in chain_rules(name, chain) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    if plan.insert_hook {
        let _ = writeln!(out, "-I FORWARD 1 {HOOK_RULE}");
    }
    for spec in &plan.remove_hooks {
        let _ = writeln!(out, "-D FORWARD {spec}");
    }
    for name in &plan.delete_chains {
        let _ = writeln!(out, "-F {name}");
    }
    for name in &plan.delete_chains {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    debug_assert!(!plan.insert_hook || desired.chains.contains_key(FORWARD_CHAIN));
    out
}

fn destroy_sets(plan: &FamilyPlan) -> String {
    let mut out = String::new();
    for name in &plan.destroy_sets {
        let _ = writeln!(out, "destroy {name}");
    }
    for replacement in &plan.replace_sets {
        if let Some(bridge) = &replacement.bridge {
            let _ = writeln!(out, "destroy {}", bridge.temporary);
        }
    }
    out
}

/// A `create` line (with the set's description as a comment, for people reading a dry run)
/// followed by every member.
fn write_filled_set(out: &mut String, name: &str, set: &IpSet) {
    if !set.description.is_empty() {
        let description = set.description.replace(['\n', '\r'], " ");
        let _ = writeln!(out, "# {name}: {description}");
    }
    let _ = writeln!(out, "{}", ipset_create(name, set));
    write_members(out, name, set);
}

fn write_members(out: &mut String, name: &str, set: &IpSet) {
    // Addresses and address-port pairs are written as they are: already sorted, unique and
    // spelled as the kernel spells them. Only networks need the kernel's view.
    if set.kind != IpSetKind::HashNet {
        for member in &set.members {
            let _ = writeln!(out, "add {name} {member}");
        }
        return;
    }
    for (element, nomatch) in desired_elements(set) {
        let flag = if nomatch { " nomatch" } else { "" };
        let _ = writeln!(out, "add {name} {element}{flag}");
    }
}

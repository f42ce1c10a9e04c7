//! Whether `ipset restore` and `iptables-restore` would take a compiled state: the static
//! checks the property tests run on every state they compile.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use crate::compiler::desired::{FamilyState, IpSetKind, Match, Rule, SetEntry};
use crate::compiler::naming::{FORWARD_CHAIN, MAX_CHAIN_NAME, MAX_SET_NAME};
use crate::model::Family;

/// Static checks that `ipset restore` and `iptables-restore` would accept the state: every
/// referenced chain and set exists with a fitting type and family, names fit kernel limits,
/// entries suit their set, and there are no jump loops. `Err` lists what would fail to load.
/// `Ok` lists what loads but is wasted: sets and chains nothing refers to.
pub fn validate(state: &FamilyState, family: Family) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let mut leftovers = Vec::new();
    let mut referenced_sets = BTreeSet::new();
    let mut referenced_chains = BTreeSet::new();
    for (name, chain) in &state.chains {
        if name.len() > MAX_CHAIN_NAME || !name.starts_with("PAL-") {
            problems.push(format!("bad chain name {name}"));
        }
        for rule in &chain.rules {
            if let crate::compiler::desired::Action::Nflog { prefix, .. } = &rule.action {
                // The kernel keeps 63 bytes and its terminator; iptables refuses longer ones.
                if prefix.len() > 63 || prefix.contains('"') {
                    problems.push(format!("{name}: NFLOG prefix {prefix:?} will not load"));
                }
            }
            if let Some(target) = rule.jump_target() {
                referenced_chains.insert(target.to_string());
                if !state.chains.contains_key(target) {
                    problems.push(format!("{name}: jump to missing chain {target}"));
                }
            }
            for m in &rule.matches {
                let (set_name, want_pairs) = match m {
                    Match::Set { name, dims, .. } => (name, dims.has_ports()),
                    Match::Source(net) | Match::Destination(net)
                        if Family::of_net(net) != family =>
                    {
                        problems.push(format!("{name}: {family} rule matches {net}"));
                        continue;
                    }
                    Match::Ports { .. }
                        if !rule
                            .matches
                            .iter()
                            .any(|m| matches!(m, Match::Protocol { negated: false, .. })) =>
                    {
                        problems.push(format!("{name}: --dport without -p"));
                        continue;
                    }
                    Match::Icmp { v6, .. } if *v6 != (family == Family::V6) => {
                        problems.push(format!("{name}: an ICMP match of the other family"));
                        continue;
                    }
                    _ => continue,
                };
                referenced_sets.insert(set_name.clone());
                match state.ipsets.get(set_name) {
                    None => problems.push(format!("{name}: references missing ipset {set_name}")),
                    Some(set) => {
                        let pairs = set.kind == IpSetKind::HashIpPort;
                        if pairs != want_pairs {
                            problems.push(format!(
                                "{name}: ipset {set_name} of type {} used as {}",
                                set.kind.as_str(),
                                if want_pairs { "dst,dst" } else { "src/dst" }
                            ));
                        }
                    }
                }
            }
        }
    }
    for (name, set) in &state.ipsets {
        if name.len() > MAX_SET_NAME {
            problems.push(format!("ipset name too long: {name}"));
        }
        if set.family != family {
            problems.push(format!("ipset {name} of {} in {family} state", set.family));
        }
        if !referenced_sets.contains(name) {
            leftovers.push(format!(
                "ipset {name} ({}) is not referenced by any rule",
                set.description
            ));
        }
        for member in &set.members {
            let ok = match (set.kind, member) {
                (IpSetKind::HashIp, SetEntry::Ip(ip)) => Family::of(ip) == family,
                (IpSetKind::HashIpPort, SetEntry::IpPort { ip, .. }) => Family::of(ip) == family,
                // hash:net takes prefixes 1..=32 (or 128), not /0.
                (IpSetKind::HashNet, SetEntry::Net { net, .. }) => {
                    Family::of_net(net) == family && net.prefix() > 0
                }
                _ => false,
            };
            if !ok {
                problems.push(format!(
                    "ipset {name} ({}) cannot hold {member}",
                    set.kind.as_str()
                ));
            }
        }
    }
    for name in state.chains.keys() {
        if name != FORWARD_CHAIN && !referenced_chains.contains(name) {
            leftovers.push(format!("chain {name} is not referenced by any rule"));
        }
    }
    // Loops: depth-first from every chain.
    fn visit(
        state: &FamilyState,
        name: &str,
        path: &mut Vec<String>,
        done: &mut HashSet<String>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(name) {
            return;
        }
        if path.iter().any(|p| p == name) {
            problems.push(format!("jump loop: {} -> {name}", path.join(" -> ")));
            return;
        }
        path.push(name.to_string());
        if let Some(chain) = state.chains.get(name) {
            for target in chain.rules.iter().filter_map(Rule::jump_target) {
                visit(state, target, path, done, problems);
            }
        }
        path.pop();
        done.insert(name.to_string());
    }
    let mut done = HashSet::new();
    for name in state.chains.keys() {
        visit(state, name, &mut Vec::new(), &mut done, &mut problems);
    }
    if problems.is_empty() {
        Ok(leftovers)
    } else {
        let mut out = String::new();
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
        Err(out)
    }
}

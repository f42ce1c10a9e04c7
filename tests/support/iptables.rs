//! An interpreter of compiled state: what iptables and ipset do with a NEW packet entering
//! `PAL-FORWARD`, written from their documented semantics (iptables-extensions(8), ipset(8)).
//!
//! * Rules run in order; a rule fires when every match holds.
//! * `ACCEPT`/`DROP` end the traversal; `RETURN` (or falling off a chain) goes back to the
//!   caller; falling off `PAL-FORWARD` continues in `FORWARD`, whose policy lets it through.
//! * `-j MARK --set-xmark value/mask`: `mark = (mark & !mask) ^ value`;
//!   `-m mark --mark value/mask`: `mark & mask == value`.
//! * `hash:ip`: exact address; `hash:net`: the most specific entry containing the address
//!   decides, and a `nomatch` entry means "not in the set"; `hash:ip,port` with `dst,dst`:
//!   destination address, protocol and destination port.
//! * A missing chain or set, or a set used with the wrong type, is an error: `iptables-restore`
//!   would refuse the whole transaction.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use palisade::compiler::desired::{
    Action, CtState, FamilyState, IpSet, IpSetKind, Match, Rule, SetEntry,
};
use palisade::compiler::naming::{FORWARD_CHAIN, MAX_CHAIN_NAME, MAX_SET_NAME};
use palisade::model::{Family, Protocol};
use palisade::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub dport: u16,
}

impl std::fmt::Display for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{} (ctstate NEW)",
            self.src, self.dst, self.protocol, self.dport
        )
    }
}

enum Outcome {
    Accept,
    Drop,
    /// Fell off the chain or hit RETURN.
    Continue,
}

fn net_contains(net: &IpNetwork, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNetwork::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix()))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(net.network()) & mask
        }
        (IpNetwork::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix()))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(net.network()) & mask
        }
        _ => false,
    }
}

fn lookup_set<'a>(state: &'a FamilyState, family: Family, name: &str) -> Result<&'a IpSet, String> {
    let set = state
        .ipsets
        .get(name)
        .ok_or_else(|| format!("rule references ipset {name} which the state does not hold"))?;
    if set.family != family {
        return Err(format!(
            "ipset {name} is {} but used in {family} rules",
            set.family
        ));
    }
    Ok(set)
}

/// `--match-set NAME src|dst` on a one-dimensional set.
fn address_in_set(set: &IpSet, name: &str, ip: IpAddr) -> Result<bool, String> {
    match set.kind {
        IpSetKind::HashIp => Ok(set.members.contains(&SetEntry::Ip(ip))),
        IpSetKind::HashNet => {
            // The most specific containing entry decides.
            let best = set
                .members
                .iter()
                .filter_map(|m| match m {
                    SetEntry::Net { net, nomatch } if net_contains(net, ip) => {
                        Some((net.prefix(), *nomatch))
                    }
                    _ => None,
                })
                .max_by_key(|(prefix, _)| *prefix);
            Ok(matches!(best, Some((_, false))))
        }
        IpSetKind::HashIpPort => Err(format!(
            "ipset {name} is hash:ip,port but is matched on one dimension"
        )),
    }
}

fn rule_matches(
    state: &FamilyState,
    family: Family,
    rule: &Rule,
    packet: &Packet,
    mark: u32,
) -> Result<bool, String> {
    let mut all = true;
    // Evaluate every match, as iptables-restore would have checked every set at load time.
    for m in &rule.matches {
        let ok = match m {
            // A NEW packet is neither established/related nor invalid.
            Match::CtState(CtState::EstablishedOrRelated | CtState::Invalid) => false,
            Match::Source(net) => net_contains(net, packet.src),
            Match::Destination(net) => net_contains(net, packet.dst),
            Match::SourceInSet(name) => {
                address_in_set(lookup_set(state, family, name)?, name, packet.src)?
            }
            Match::DestinationInSet(name) => {
                address_in_set(lookup_set(state, family, name)?, name, packet.dst)?
            }
            Match::DestinationPortInSet(name) => {
                let set = lookup_set(state, family, name)?;
                if set.kind != IpSetKind::HashIpPort {
                    return Err(format!(
                        "ipset {name} is {} but is matched with dst,dst",
                        set.kind.as_str()
                    ));
                }
                set.members.contains(&SetEntry::IpPort {
                    ip: packet.dst,
                    protocol: packet.protocol,
                    port: packet.dport,
                })
            }
            Match::Protocol(protocol) => *protocol == packet.protocol,
            Match::DestinationPorts { start, end } => {
                if !rule.matches.iter().any(|m| matches!(m, Match::Protocol(_))) {
                    return Err(format!(
                        "--dport without a protocol match: {}",
                        render::rule_body(rule)
                    ));
                }
                *start <= packet.dport && packet.dport <= *end
            }
            Match::Mark { value, mask } => mark & mask == *value,
        };
        all &= ok;
    }
    Ok(all)
}

fn run_chain(
    state: &FamilyState,
    family: Family,
    name: &str,
    packet: &Packet,
    mark: &mut u32,
    depth: usize,
    trace: &mut Vec<String>,
) -> Result<Outcome, String> {
    if depth > 32 {
        return Err(format!("jump depth exceeded at chain {name} (a loop?)"));
    }
    let chain = state
        .chains
        .get(name)
        .ok_or_else(|| format!("jump to chain {name} which the state does not hold"))?;
    for (i, rule) in chain.rules.iter().enumerate() {
        if !rule_matches(state, family, rule, packet, *mark)? {
            continue;
        }
        trace.push(format!(
            "{:indent$}{name}#{i}: {}   [{}] (mark {mark:#x})",
            "",
            render::rule_body(rule),
            rule.comment,
            indent = depth * 2,
            mark = *mark
        ));
        match &rule.action {
            Action::Accept => return Ok(Outcome::Accept),
            Action::Drop => return Ok(Outcome::Drop),
            Action::Return => return Ok(Outcome::Continue),
            Action::Jump(target) => {
                match run_chain(state, family, target, packet, mark, depth + 1, trace)? {
                    Outcome::Continue => {}
                    other => return Ok(other),
                }
            }
            Action::SetMark { value, mask } => *mark = (*mark & !mask) ^ value,
        }
    }
    Ok(Outcome::Continue)
}

/// Whether a NEW packet gets through this node's `PAL-FORWARD`. `trace` collects the rules
/// that fired.
pub fn forward_accepts(
    state: &FamilyState,
    family: Family,
    packet: &Packet,
    trace: &mut Vec<String>,
) -> Result<bool, String> {
    if !state.chains.contains_key(FORWARD_CHAIN) {
        // Without the dispatch chain there is no hook for this family on the node.
        if family == Family::V4 {
            return Err(format!("IPv4 state lacks {FORWARD_CHAIN}"));
        }
        trace.push(format!("(no {FORWARD_CHAIN} for {family}: not filtered)"));
        return Ok(true);
    }
    let mut mark = 0;
    Ok(
        match run_chain(state, family, FORWARD_CHAIN, packet, &mut mark, 0, trace)? {
            Outcome::Accept | Outcome::Continue => true,
            Outcome::Drop => false,
        },
    )
}

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
            if let Some(target) = rule.jump_target() {
                referenced_chains.insert(target.to_string());
                if !state.chains.contains_key(target) {
                    problems.push(format!("{name}: jump to missing chain {target}"));
                }
            }
            for m in &rule.matches {
                let (set_name, want_pairs) = match m {
                    Match::SourceInSet(s) | Match::DestinationInSet(s) => (s, false),
                    Match::DestinationPortInSet(s) => (s, true),
                    Match::Source(net) | Match::Destination(net)
                        if Family::of_net(net) != family =>
                    {
                        problems.push(format!("{name}: {family} rule matches {net}"));
                        continue;
                    }
                    Match::DestinationPorts { .. }
                        if !rule.matches.iter().any(|m| matches!(m, Match::Protocol(_))) =>
                    {
                        problems.push(format!("{name}: --dport without -p"));
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

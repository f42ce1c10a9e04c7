//! An interpreter of compiled state: what iptables and ipset do with a NEW packet entering
//! `PAL-FORWARD`, written from their documented semantics (iptables-extensions(8), ipset(8)).
//!
//! * Rules run in order; a rule fires when every match holds.
//! * `ACCEPT`/`DROP` end the traversal; `RETURN` (or falling off a chain) goes back to the
//!   caller; falling off `PAL-FORWARD` continues in `FORWARD`, whose policy lets it through.
//! * `-j MARK --set-xmark value/mask`: `mark = (mark & !mask) ^ value`;
//!   `-m mark --mark value/mask`: `mark & mask == value`.
//! * `hash:ip`: exact address; `hash:net`: the most specific entry containing the address
//!   decides, and a `nomatch` entry means "not in the set"; `hash:ip,port` with `dst,dst`
//!   (`src,src`): destination (source) address, protocol and destination (source) port.
//!   `!` before `--match-set` inverts the test.
//! * `-p P` compares the protocol number; `--dport`/`--dports` (and source) ports hold only for
//!   TCP, UDP and SCTP packets; `-m icmp --icmp-type T[/C]` (and `icmp6`) only for ICMP packets,
//!   its `!` inverting the type test; `-m limit` lets every packet of a probe through.
//! * `-j LOG` writes and goes on; `-j REJECT`, like `-j DROP`, ends the traversal.
//! * A missing chain or set, or a set used with the wrong type, is an error: `iptables-restore`
//!   would refuse the whole transaction.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use palisade::compiler::desired::{
    Action, CtState, FamilyState, IpSet, IpSetKind, Match, PortSide, Rule, SetDims, SetEntry,
};
use palisade::compiler::naming::{FORWARD_CHAIN, MAX_CHAIN_NAME, MAX_SET_NAME};
use palisade::model::{Family, Protocol};
use palisade::render;

/// The source port of probes, unless a test varies it.
pub const EPHEMERAL_PORT: u16 = 40_000;

/// What a packet carries besides its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ported {
        protocol: Protocol,
        sport: u16,
        dport: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Any other IP protocol, by number.
    Other(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
}

impl Packet {
    pub fn ported(src: IpAddr, dst: IpAddr, protocol: Protocol, dport: u16) -> Self {
        Self {
            src,
            dst,
            transport: Transport::Ported {
                protocol,
                sport: EPHEMERAL_PORT,
                dport,
            },
        }
    }

    /// The IP protocol number.
    pub fn protocol_number(&self) -> u8 {
        match self.transport {
            Transport::Ported { protocol, .. } => protocol.number(),
            Transport::Icmp { .. } => match self.src {
                IpAddr::V4(_) => 1,
                IpAddr::V6(_) => 58,
            },
            Transport::Other(n) => n,
        }
    }
}

impl std::fmt::Display for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Transport::Ported {
                protocol,
                sport,
                dport,
            } => write!(
                f,
                "{}:{sport} -> {}:{dport} {protocol} (ctstate NEW)",
                self.src, self.dst
            ),
            Transport::Icmp { icmp_type, code } => write!(
                f,
                "{} -> {} icmp type {icmp_type} code {code} (ctstate NEW)",
                self.src, self.dst
            ),
            Transport::Other(n) => {
                write!(f, "{} -> {} protocol {n} (ctstate NEW)", self.src, self.dst)
            }
        }
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
            Match::Set {
                name,
                dims,
                negated,
            } => {
                let set = lookup_set(state, family, name)?;
                let inside = match dims {
                    SetDims::Src => address_in_set(set, name, packet.src)?,
                    SetDims::Dst => address_in_set(set, name, packet.dst)?,
                    SetDims::SrcPort | SetDims::DstPort => {
                        if set.kind != IpSetKind::HashIpPort {
                            return Err(format!(
                                "ipset {name} is {} but is matched with {}",
                                set.kind.as_str(),
                                dims.as_str()
                            ));
                        }
                        match packet.transport {
                            Transport::Ported {
                                protocol,
                                sport,
                                dport,
                            } => {
                                let (ip, port) = if *dims == SetDims::SrcPort {
                                    (packet.src, sport)
                                } else {
                                    (packet.dst, dport)
                                };
                                set.members
                                    .contains(&SetEntry::IpPort { ip, protocol, port })
                            }
                            _ => false,
                        }
                    }
                };
                inside != *negated
            }
            Match::Protocol { protocol, negated } => {
                (protocol.number() == packet.protocol_number()) != *negated
            }
            Match::Ports {
                side,
                ranges,
                negated,
            } => {
                let has_protocol = rule.matches.iter().any(|m| {
                    matches!(m, Match::Protocol { protocol, negated: false } if protocol.ported().is_some())
                });
                if !has_protocol {
                    return Err(format!(
                        "a port match without a TCP, UDP or SCTP protocol match: {}",
                        render::rule_body(rule)
                    ));
                }
                if ranges.len() > 15 {
                    return Err(format!(
                        "multiport takes at most 15 ports: {}",
                        render::rule_body(rule)
                    ));
                }
                match packet.transport {
                    Transport::Ported { sport, dport, .. } => {
                        let port = if *side == PortSide::Source {
                            sport
                        } else {
                            dport
                        };
                        let inside = ranges.iter().any(|(a, b)| *a <= port && port <= *b);
                        inside != *negated
                    }
                    _ => false,
                }
            }
            Match::Icmp {
                v6,
                icmp_type,
                code,
                negated,
            } => {
                if *v6 != (family == Family::V6) {
                    return Err(format!(
                        "an ICMP match of the other family: {}",
                        render::rule_body(rule)
                    ));
                }
                match packet.transport {
                    Transport::Icmp {
                        icmp_type: t,
                        code: c,
                    } => {
                        let same = t == *icmp_type && code.is_none_or(|code| code == c);
                        same != *negated
                    }
                    _ => false,
                }
            }
            Match::Mark { value, mask } => mark & mask == *value,
            Match::Limit { .. } => true,
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
            Action::Drop | Action::Reject => return Ok(Outcome::Drop),
            Action::Log { .. } => {}
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

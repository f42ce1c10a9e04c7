//! An interpreter of compiled state: what iptables and ipset do with a NEW packet entering
//! `PAL-FORWARD`, written from their documented semantics (iptables-extensions(8), ipset(8)).
//! `palisade explain` walks it to say why a connection is allowed or denied, and the property
//! tests check it, and so the compiler, against reference evaluators of the specifications.
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

use std::net::IpAddr;

use crate::compiler::desired::{
    Action, CtState, FamilyState, IpSet, IpSetKind, Match, PortSide, Rule, SetDims, SetEntry,
};
use crate::compiler::naming::FORWARD_CHAIN;
use crate::model::{Family, Protocol};
use crate::render;
use ipnetwork::IpNetwork;

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

/// A rule that fired on a packet's way, in the order they fired.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fired {
    pub chain: String,
    /// The rule's position in its chain, from 0.
    pub index: usize,
    /// The rule as `iptables-save` prints it, without `-A CHAIN` and the comment.
    pub rule: String,
    /// The rule's comment: which tier, policy and rule it implements.
    pub comment: String,
    /// How many jumps deep from `PAL-FORWARD`.
    pub depth: usize,
    /// The packet mark when the rule fired.
    pub mark: u32,
    /// Whether the rule ended the traversal (ACCEPT, DROP, REJECT).
    pub decisive: bool,
}

impl std::fmt::Display for Fired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:indent$}{}#{}: {}   [{}] (mark {:#x})",
            "",
            self.chain,
            self.index,
            self.rule,
            self.comment,
            self.mark,
            indent = self.depth * 2
        )
    }
}

fn run_chain(
    state: &FamilyState,
    family: Family,
    name: &str,
    packet: &Packet,
    mark: &mut u32,
    depth: usize,
    trace: &mut Vec<Fired>,
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
        trace.push(Fired {
            chain: name.to_string(),
            index: i,
            rule: render::rule_body(rule),
            comment: rule.comment.clone(),
            depth,
            mark: *mark,
            decisive: matches!(rule.action, Action::Accept | Action::Drop | Action::Reject),
        });
        match &rule.action {
            Action::Accept => return Ok(Outcome::Accept),
            Action::Drop | Action::Reject => return Ok(Outcome::Drop),
            Action::Log { .. } | Action::Nflog { .. } => {}
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
    trace: &mut Vec<Fired>,
) -> Result<bool, String> {
    if !state.chains.contains_key(FORWARD_CHAIN) {
        // Without the dispatch chain there is no hook for this family on the node.
        if family == Family::V4 {
            return Err(format!("IPv4 state lacks {FORWARD_CHAIN}"));
        }
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

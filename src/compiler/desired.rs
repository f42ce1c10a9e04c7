//! The desired dataplane state of one node: what the compiler produces and the dataplane applies.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::model::{Direction, Enforcement, Family, IpProtocol, ObjectKey, Protocol};

/// Everything one node must hold, per IP family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub v4: FamilyState,
    pub v6: FamilyState,
}

impl DesiredState {
    pub fn family(&self, family: Family) -> &FamilyState {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn family_mut(&mut self, family: Family) -> &mut FamilyState {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

/// The ipsets and filter-table chains of one family. Every name carries Palisade's prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyState {
    pub ipsets: BTreeMap<String, IpSet>,
    pub chains: BTreeMap<String, Chain>,
}

impl FamilyState {
    /// Nothing desired in this family: no set, no chain.
    pub fn is_empty(&self) -> bool {
        self.ipsets.is_empty() && self.chains.is_empty()
    }

    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    pub fn member_count(&self) -> usize {
        self.ipsets.values().map(|s| s.members.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpSetKind {
    /// `hash:ip`: pod addresses.
    HashIp,
    /// `hash:net`: networks (ipBlocks with `except` entries as `nomatch`, network sets), and
    /// the host networks of pods where a selector can match network sets too.
    HashNet,
    /// `hash:ip,port`: pod address, protocol and port of a named port.
    HashIpPort,
}

impl IpSetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            IpSetKind::HashIp => "hash:ip",
            IpSetKind::HashNet => "hash:net",
            IpSetKind::HashIpPort => "hash:ip,port",
        }
    }
}

/// The most members a set may hold (`maxelem`). The kernel's default (65536) is below what one
/// selector can match in a large cluster; the limit costs nothing until it is used.
pub const SET_CAPACITY: usize = 1_048_576;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub kind: IpSetKind,
    pub family: Family,
    /// What the set stands for, for people reading `ipset list` (stored as the set's comment
    /// in rendered text, not in the kernel).
    pub description: String,
    pub members: BTreeSet<SetEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetEntry {
    Ip(IpAddr),
    Net {
        net: IpNetwork,
        nomatch: bool,
    },
    IpPort {
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
    },
}

impl SetEntry {
    /// A key that sorts entries exactly as their `Ord` does, compared as integers: sorting the
    /// tens of thousands of entries of a new set by it is several times faster.
    pub fn order_key(&self) -> (u8, u128, u32) {
        fn address(ip: IpAddr) -> (u8, u128) {
            match ip {
                IpAddr::V4(v4) => (0, u128::from(u32::from(v4))),
                IpAddr::V6(v6) => (1, u128::from(v6)),
            }
        }
        match *self {
            SetEntry::Ip(ip) => {
                let (family, bits) = address(ip);
                (family, bits, 0)
            }
            SetEntry::Net { net, nomatch } => {
                let (family, bits) = address(net.ip());
                (
                    2 + family,
                    bits,
                    u32::from(net.prefix()) << 1 | u32::from(nomatch),
                )
            }
            SetEntry::IpPort { ip, protocol, port } => {
                let (family, bits) = address(ip);
                (4 + family, bits, (protocol as u32) << 16 | u32::from(port))
            }
        }
    }
}

/// The entry as `ipset` writes it in `add` lines and `ipset save` output.
impl fmt::Display for SetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetEntry::Ip(ip) => write!(f, "{ip}"),
            SetEntry::Net { net, nomatch } => {
                write!(f, "{}/{}", net.network(), net.prefix())?;
                if *nomatch {
                    f.write_str(" nomatch")?;
                }
                Ok(())
            }
            SetEntry::IpPort { ip, protocol, port } => write!(f, "{ip},{protocol}:{port}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub rules: Vec<Rule>,
}

/// One iptables rule: all `matches` must hold for `action` to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
    /// Where the rule came from, e.g. `ns/name ingress[0]`.
    pub comment: String,
    /// What the kernel's packet and byte counters of this rule are exported as, for the rules
    /// that decide (or log) a packet; not part of the rendered text.
    pub counted: Option<Arc<Counted>>,
}

/// The meaning of a rule's kernel counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counted {
    /// The packets one rule of a policy matched: allowed, denied, passed or logged.
    PolicyRule(PolicyRuleCount),
    /// The packets a local pod's chain dropped at the end of a tier: no policy allowed them;
    /// in audit mode, the packets it would have dropped and let through.
    DefaultDeny {
        pod: ObjectKey,
        direction: Direction,
        enforcement: Enforcement,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRuleCount {
    pub tier: String,
    /// Empty for a GlobalNetworkPolicy.
    pub namespace: String,
    pub policy: String,
    pub direction: Direction,
    /// The index of the rule as the policy's author wrote it.
    pub rule: usize,
    pub action: crate::model::Action,
    /// `Audit` for a Deny rule whose packets were only logged and counted.
    pub enforcement: Enforcement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    EstablishedOrRelated,
    Invalid,
}

/// What `-m set --match-set NAME ...` compares with the set's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetDims {
    /// `src`: the source address.
    Src,
    /// `dst`: the destination address.
    Dst,
    /// `src,src`: source address, protocol and source port.
    SrcPort,
    /// `dst,dst`: destination address, protocol and destination port.
    DstPort,
}

impl SetDims {
    pub fn as_str(&self) -> &'static str {
        match self {
            SetDims::Src => "src",
            SetDims::Dst => "dst",
            SetDims::SrcPort => "src,src",
            SetDims::DstPort => "dst,dst",
        }
    }

    pub fn has_ports(&self) -> bool {
        matches!(self, SetDims::SrcPort | SetDims::DstPort)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSide {
    Source,
    Destination,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    CtState(CtState),
    Source(IpNetwork),
    Destination(IpNetwork),
    /// `-m set [!] --match-set NAME DIMS`
    Set {
        name: String,
        dims: SetDims,
        negated: bool,
    },
    /// `[!] -p PROTOCOL`
    Protocol {
        protocol: IpProtocol,
        negated: bool,
    },
    /// One range: `-m PROTO [!] --dport a[:b]` (the rule's protocol match provides the module);
    /// several: `-m multiport [!] --dports a,b:c` (at most 15 slots, a range taking two).
    Ports {
        side: PortSide,
        ranges: Vec<(u16, u16)>,
        negated: bool,
    },
    /// `-m icmp [!] --icmp-type T[/C]`, or `-m icmp6 [!] --icmpv6-type T[/C]`.
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: Option<u8>,
        negated: bool,
    },
    /// `-m mark --mark value/mask`
    Mark {
        value: u32,
        mask: u32,
    },
    /// `-m limit --limit N/sec --limit-burst B`
    Limit {
        per_second: u32,
        burst: u32,
    },
}

impl Match {
    pub fn in_set(name: impl Into<String>, dims: SetDims) -> Self {
        Match::Set {
            name: name.into(),
            dims,
            negated: false,
        }
    }

    pub fn not_in_set(name: impl Into<String>, dims: SetDims) -> Self {
        Match::Set {
            name: name.into(),
            dims,
            negated: true,
        }
    }

    pub fn protocol(protocol: Protocol) -> Self {
        Match::Protocol {
            protocol: IpProtocol::from_ported(protocol),
            negated: false,
        }
    }

    pub fn destination_port(start: u16, end: u16) -> Self {
        Match::Ports {
            side: PortSide::Destination,
            ranges: vec![(start, end)],
            negated: false,
        }
    }

    /// The same match, inverted: for the matches that iptables can negate.
    pub fn negated(&self) -> Option<Match> {
        let mut out = self.clone();
        match &mut out {
            Match::Set { negated, .. }
            | Match::Protocol { negated, .. }
            | Match::Ports { negated, .. }
            | Match::Icmp { negated, .. } => *negated = !*negated,
            _ => return None,
        }
        Some(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Drop,
    /// `-j REJECT`: an ICMP port-unreachable of the packet's family.
    Reject,
    Return,
    Jump(String),
    /// `-j MARK --set-xmark value/mask`
    SetMark {
        value: u32,
        mask: u32,
    },
    /// `-j LOG --log-prefix PREFIX`: the packet goes on to the next rule.
    Log {
        prefix: String,
    },
    /// `-j NFLOG --nflog-group G --nflog-prefix PREFIX`: a copy of the packet goes to the
    /// denied-flow log, the packet itself on to the next rule.
    Nflog {
        group: u16,
        prefix: String,
    },
}

impl Chain {
    /// Whether any rule matches against the set: the kernel refuses to destroy or replace it
    /// while one does.
    pub fn references_set(&self, set: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.referenced_sets().any(|name| name == set))
    }
}

impl Rule {
    pub fn new(matches: Vec<Match>, action: Action, comment: impl Into<String>) -> Self {
        Self {
            matches,
            action,
            comment: comment.into(),
            counted: None,
        }
    }

    /// The same rule, its counters exported as `counted`.
    pub fn counting(mut self, counted: &Arc<Counted>) -> Self {
        self.counted = Some(Arc::clone(counted));
        self
    }

    /// Chains this rule jumps to.
    pub fn jump_target(&self) -> Option<&str> {
        match &self.action {
            Action::Jump(target) => Some(target),
            _ => None,
        }
    }

    /// Sets this rule reads.
    pub fn referenced_sets(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().filter_map(|m| match m {
            Match::Set { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }
}

//! The one policy model: Calico's. Tiers hold policies sorted by `order`, then by the string
//! `name/namespace/kind`; a policy applies to the endpoints its selector matches, in the
//! directions of its types, and its rules are tried in order, each with an action. Kubernetes
//! NetworkPolicy is a policy of tier `default` at order 1000 with Allow rules.
//!
//! Selectors here are effective: the scoping Calico applies (a namespaced policy's selectors
//! limited to its namespace, namespace and service-account selectors folded in as `pcns.`/
//! `pcsa.` labels) has been done by the converter.

use std::cmp::Ordering;
use std::fmt;

use ipnetwork::IpNetwork;

use super::{Direction, Family, ObjectKey, Protocol};
use crate::selector::Selector;

/// Which API a policy came from. Part of its identity and of its sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy (and the legacy DefaultDeny annotation).
    Kubernetes,
    /// `projectcalico.org/v3` NetworkPolicy.
    Calico,
    /// `projectcalico.org/v3` GlobalNetworkPolicy.
    CalicoGlobal,
}

impl PolicyKind {
    /// The kind name Calico sorts by.
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyKind::Kubernetes => "KubernetesNetworkPolicy",
            PolicyKind::Calico => "NetworkPolicy",
            PolicyKind::CalicoGlobal => "GlobalNetworkPolicy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub kind: PolicyKind,
    /// Empty for a GlobalNetworkPolicy.
    pub namespace: String,
    pub name: String,
}

impl PolicyId {
    pub fn kubernetes(key: &ObjectKey) -> Self {
        Self {
            kind: PolicyKind::Kubernetes,
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
        }
    }

    pub fn calico(namespace: &str, name: &str) -> Self {
        Self {
            kind: PolicyKind::Calico,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn global(name: &str) -> Self {
        Self {
            kind: PolicyKind::CalicoGlobal,
            namespace: String::new(),
            name: name.to_string(),
        }
    }

    /// Calico's tie-break between policies of equal order: the one string
    /// `name/namespace/kind`, compared byte by byte.
    pub fn sort_key(&self) -> String {
        format!("{}/{}/{}", self.name, self.namespace, self.kind.as_str())
    }

    /// The text kernel object names are hashed from: stable and unique across kinds.
    pub fn canonical(&self) -> String {
        match self.kind {
            // Unchanged from the names Kubernetes policies had before tiers existed.
            PolicyKind::Kubernetes => format!("{}/{}", self.namespace, self.name),
            PolicyKind::Calico => format!("np:{}/{}", self.namespace, self.name),
            PolicyKind::CalicoGlobal => format!("gnp:{}", self.name),
        }
    }
}

/// `namespace/name`, or `name` for a global policy; with the kind for Calico's own kinds.
impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PolicyKind::Kubernetes => write!(f, "{}/{}", self.namespace, self.name),
            PolicyKind::Calico => write!(f, "{}/{} (Calico)", self.namespace, self.name),
            PolicyKind::CalicoGlobal => write!(f, "{} (global)", self.name),
        }
    }
}

/// A policy or tier `order`: finite, compared as numbers. Absent orders sort after all present
/// ones, which the containing `Option` expresses.
#[derive(Debug, Clone, Copy)]
pub struct Order(f64);

impl Order {
    /// `None` for NaN or an infinity, which Calico's API rejects.
    pub fn new(value: f64) -> Option<Self> {
        value.is_finite().then_some(Self(value))
    }

    pub fn value(&self) -> f64 {
        self.0
    }
}

impl PartialEq for Order {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Order {}

impl PartialOrd for Order {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Order {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl std::hash::Hash for Order {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a tier does with a packet that a policy of the tier selected but no rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierAction {
    Deny,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tier {
    pub name: String,
    pub order: Option<Order>,
    pub default_action: TierAction,
    /// A Tier resource (or a built-in tier) exists: such tiers sort before tiers that only
    /// policies name.
    pub declared: bool,
}

impl Tier {
    pub const DEFAULT: &'static str = "default";

    /// The tiers that always exist, as in Calico 3.32 and later.
    pub fn built_in() -> [Tier; 3] {
        let tier = |name: &str, order: f64, default_action| Tier {
            name: name.to_string(),
            order: Order::new(order),
            default_action,
            declared: true,
        };
        [
            tier("kube-admin", 1_000.0, TierAction::Pass),
            tier(Self::DEFAULT, 1_000_000.0, TierAction::Deny),
            tier("kube-baseline", 10_000_000.0, TierAction::Pass),
        ]
    }

    /// A tier that policies name but no Tier resource declares: it still applies, with the
    /// default action Deny and after every declared tier.
    pub fn undeclared(name: &str) -> Tier {
        Tier {
            name: name.to_string(),
            order: None,
            default_action: TierAction::Deny,
            declared: false,
        }
    }

    /// Calico's tier order: declared tiers first, then tiers with an order, by order, then by
    /// name.
    pub fn sort_key(&self) -> (bool, bool, Option<Order>, &str) {
        (
            !self.declared,
            self.order.is_none(),
            self.order,
            self.name.as_str(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
    /// Leave this tier: its remaining policies and its default action are skipped.
    Pass,
    /// Write the packet to the kernel log and go on with the next rule.
    Log,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
            Action::Log => "Log",
        }
    }
}

/// A rule's `protocol`, by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    IcmpV6,
    UdpLite,
    Number(u8),
}

impl IpProtocol {
    pub fn number(&self) -> u8 {
        match self {
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Sctp => 132,
            IpProtocol::Icmp => 1,
            IpProtocol::IcmpV6 => 58,
            IpProtocol::UdpLite => 136,
            IpProtocol::Number(n) => *n,
        }
    }

    /// The protocol with ports this is, by number.
    pub fn ported(&self) -> Option<Protocol> {
        match self.number() {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn from_ported(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => IpProtocol::Tcp,
            Protocol::Udp => IpProtocol::Udp,
            Protocol::Sctp => IpProtocol::Sctp,
        }
    }

    /// The one family a protocol named for ICMP implies. A number does not imply one, as in
    /// Calico.
    pub fn implied_family(&self) -> Option<Family> {
        match self {
            IpProtocol::Icmp => Some(Family::V4),
            IpProtocol::IcmpV6 => Some(Family::V6),
            _ => None,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Tcp => f.write_str("TCP"),
            IpProtocol::Udp => f.write_str("UDP"),
            IpProtocol::Sctp => f.write_str("SCTP"),
            IpProtocol::Icmp => f.write_str("ICMP"),
            IpProtocol::IcmpV6 => f.write_str("ICMPv6"),
            IpProtocol::UdpLite => f.write_str("UDPLite"),
            IpProtocol::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// One entry of `ports` or `notPorts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// `start..=end`; `start == end` for a single port.
    Range { start: u16, end: u16 },
    /// A container port name, resolved on the endpoints this side of the rule selects.
    Named(String),
}

/// What one side (source or destination) of a rule must be. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Entity {
    pub nets: Vec<IpNetwork>,
    pub not_nets: Vec<IpNetwork>,
    /// Endpoints and network sets the address must belong to (already scoped).
    pub selector: Option<Selector>,
    /// Endpoints and network sets the address must not belong to (never scoped).
    pub not_selector: Option<Selector>,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
    /// A Service whose endpoints the address (and, as a destination, port) must be.
    pub service: Option<ObjectKey>,
}

impl Entity {
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.nets.iter().chain(&self.not_nets).map(Family::of_net)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    pub ip_version: Option<Family>,
    pub protocol: Option<IpProtocol>,
    pub not_protocol: Option<IpProtocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub source: Entity,
    pub destination: Entity,
    /// The index of the rule of the API object this one came from (a Kubernetes rule becomes
    /// one rule per peer and protocol), for comments.
    pub origin: usize,
}

impl Rule {
    pub fn allow_all(origin: usize) -> Self {
        Self::new(Action::Allow, origin)
    }

    pub fn new(action: Action, origin: usize) -> Self {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: Entity::default(),
            destination: Entity::default(),
            origin,
        }
    }

    /// Whether the rule exists in `family`'s table: Calico renders a rule per family and drops
    /// it from a family its `ipVersion`, ICMP protocol or networks exclude.
    pub fn applies_to(&self, family: Family) -> bool {
        if self.ip_version.is_some_and(|v| v != family) {
            return false;
        }
        let icmp_family = match (self.protocol, self.icmp.or(self.not_icmp)) {
            (Some(p), _) if p.implied_family().is_some() => p.implied_family(),
            // ICMP types by protocol number: the match exists only in that family's iptables.
            (Some(IpProtocol::Number(1)), Some(_)) => Some(Family::V4),
            (Some(IpProtocol::Number(58)), Some(_)) => Some(Family::V6),
            _ => None,
        };
        if self.ip_version.is_none() && icmp_family.is_some_and(|f| f != family) {
            return false;
        }
        [&self.source, &self.destination].iter().all(|side| {
            [&side.nets, &side.not_nets]
                .iter()
                .all(|nets| nets.is_empty() || nets.iter().any(|n| Family::of_net(n) == family))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    pub tier: String,
    pub order: Option<Order>,
    /// The endpoints the policy applies to.
    pub selector: Selector,
    /// `Some` when the policy's types include Ingress.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Calico's order inside a tier: by order (absent last), then by `name/namespace/kind`.
    pub fn sort_key(&self) -> (bool, Option<Order>, String) {
        (self.order.is_none(), self.order, self.id.sort_key())
    }

    /// Whether some rule in `direction` can Pass: the pod chain then tests the pass mark.
    pub fn can_pass(&self, direction: Direction) -> bool {
        self.rules(direction)
            .is_some_and(|rules| rules.iter().any(|r| r.action == Action::Pass))
    }

    pub fn can_deny(&self, direction: Direction) -> bool {
        self.rules(direction)
            .is_some_and(|rules| rules.iter().any(|r| r.action == Action::Deny))
    }

    /// `tier/namespace/name` or `tier/name`, as rule comments name a policy.
    pub fn origin(&self) -> String {
        if self.id.namespace.is_empty() {
            format!("{}/{}", self.tier, self.id.name)
        } else {
            format!("{}/{}/{}", self.tier, self.id.namespace, self.id.name)
        }
    }
}

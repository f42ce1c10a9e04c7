//! Palisade's own view of the cluster: plain types holding only what policy enforcement needs.
//!
//! Kubernetes objects are converted into these types in [`convert`], where they are validated.
//! Everything after this layer trusts them.

pub mod convert;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::selector::{LabelSelector, Labels};

pub use convert::{ConvertError, Warning};

/// An IP family. Every kernel object Palisade programs belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNetwork) -> Self {
        Self::of(&net.ip())
    }

    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name iptables and ipset use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port with a name, the target of named ports in policies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod that takes part in policy: it has an IP, is not host-networked and has not finished.
/// Pods that do not take part are never converted into this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub labels: Labels,
    pub named_ports: Vec<NamedPort>,
}

impl Pod {
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }

    pub fn ips_of(&self, family: Family) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips
            .iter()
            .copied()
            .filter(move |ip| Family::of(ip) == family)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// Set by the legacy annotation `net.beta.kubernetes.io/network-policy` with
    /// `{"ingress": {"isolation": "DefaultDeny"}}`.
    pub legacy_default_deny: bool,
}

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceScope {
    /// Exactly this namespace (a peer with only a `podSelector`: the policy's own namespace).
    Named(String),
    /// Every namespace whose labels match.
    Selector(LabelSelector),
}

/// A set of pods: those matching `pods` in the namespaces of `namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selection {
    pub namespaces: NamespaceScope,
    pub pods: LabelSelector,
}

impl Selection {
    /// Every pod in the cluster.
    pub fn all_pods() -> Self {
        Self {
            namespaces: NamespaceScope::Selector(LabelSelector::everything()),
            pods: LabelSelector::everything(),
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            NamespaceScope::Named(ns) => write!(f, "ns={ns};pods={}", self.pods),
            NamespaceScope::Selector(sel) => write!(f, "nssel={sel};pods={}", self.pods),
        }
    }
}

/// An `ipBlock` peer. `except` entries lie inside `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpBlock {
    pub cidr: IpNetwork,
    pub except: Vec<IpNetwork>,
}

impl IpBlock {
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        for except in &self.except {
            write!(f, " except {except}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Pods(Selection),
    Block(IpBlock),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortMatch {
    /// Every port of the protocol.
    Any,
    /// `port` .. `end` inclusive; `end == start` for a single port.
    Range { start: u16, end: u16 },
    /// A container port name, resolved against pods.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRule {
    pub protocol: Protocol,
    pub port: PortMatch,
}

/// One entry of `ingress` or `egress`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    /// `None`: every peer (the `from`/`to` list was absent or empty).
    pub peers: Option<Vec<Peer>>,
    /// Empty: every port and protocol.
    pub ports: Vec<PortRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A NetworkPolicy, normalized: `policyTypes` defaults applied and every field validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub key: ObjectKey,
    pub pod_selector: LabelSelector,
    /// `Some` when the policy isolates selected pods for ingress; the rules allow traffic.
    pub ingress: Option<Vec<PolicyRule>>,
    /// `Some` when the policy isolates selected pods for egress.
    pub egress: Option<Vec<PolicyRule>>,
}

impl Policy {
    pub fn rules(&self, direction: Direction) -> Option<&[PolicyRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    pub fn selects(&self, pod: &Pod) -> bool {
        pod.key.namespace == self.key.namespace && self.pod_selector.matches(&pod.labels)
    }
}

/// The label the API server (1.21 and later) puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels a namespace carries when nothing else is known of it.
pub fn namespace_name_labels(name: &str) -> Labels {
    Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())])
}

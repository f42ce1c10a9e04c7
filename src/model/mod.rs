//! Palisade's own view of the cluster: plain types holding only what policy enforcement needs.
//!
//! Every policy API converts into the one policy model in [`policy`]: Calico's tiers, ordered
//! policies and Allow/Deny/Pass/Log rules. Kubernetes NetworkPolicy arrives through
//! [`kubernetes`] (its validated form, then the conversion Calico itself applies) and Calico's
//! `projectcalico.org/v3` resources through [`calico`]. The objects policies select and
//! reference (pods, namespaces, service accounts, network sets, service endpoints) are here.
//! Everything after this layer trusts these types.

pub mod calico;
pub mod convert;
pub mod denials;
pub mod kubernetes;
pub mod policy;

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::selector::Labels;

pub use convert::{ConvertError, Warning};
pub use denials::{DenialHandling, Enforcement, NamespaceDenials, NodeDenials};
pub use policy::{
    Action, Entity, IcmpMatch, IpProtocol, Order, Policy, PolicyId, PolicyKind, Port, Rule, Tier,
    TierAction,
};

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

/// A protocol with ports: what named ports, service ports and port matches speak.
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

    pub fn number(&self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object's name or namespace, a node's name: most fit the 24 bytes of a `CompactString`
/// inline, which saves an allocation each for every pod the agent holds.
pub type Name = compact_str::CompactString;

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Name,
    pub name: Name,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Name>, name: impl Into<Name>) -> Self {
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
    pub name: Name,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod that takes part in policy: it has an IP, is not host-networked and has not finished.
/// Pods that do not take part are never converted into this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub node: Option<Name>,
    pub ips: Vec<IpAddr>,
    pub labels: Labels,
    pub named_ports: Vec<NamedPort>,
    /// `spec.serviceAccountName`; the API server sets `default` when a pod names none.
    pub service_account: Option<Name>,
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
    /// From the annotations `palisade.io/enforcement` and `palisade.io/log-denied`.
    pub denials: NamespaceDenials,
}

/// A ServiceAccount: its labels are inherited by its pods as `pcsa.<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub key: ObjectKey,
    pub labels: Labels,
}

/// A Calico NetworkSet (namespaced) or GlobalNetworkSet (`namespace: None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkSetKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for NetworkSetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Networks that rule selectors can match by the set's labels: every matching selector's
/// ipset holds these networks. Never the subject of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSet {
    pub key: NetworkSetKey,
    pub labels: Labels,
    pub nets: Vec<IpNetwork>,
}

/// One EndpointSlice of a Service: what a rule's `services` match resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSlice {
    /// The slice's own namespace and name.
    pub key: ObjectKey,
    /// The Service it belongs to (`kubernetes.io/service-name`), in the same namespace.
    pub service: String,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<(Protocol, u16)>,
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

/// The label the API server (1.21 and later) puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels a namespace carries when nothing else is known of it.
pub fn namespace_name_labels(name: &str) -> Labels {
    Labels::from([(NAMESPACE_NAME_LABEL.into(), name.into())])
}

//! Kubernetes NetworkPolicy: its validated form, and its conversion into the policy model the
//! way Calico converts it (`libcalico-go/lib/backend/k8s/conversion/conversion.go`): tier
//! `default`, order 1000, one Allow rule per peer and protocol with that protocol's ports, pod
//! selectors limited to pods (`projectcalico.org/orchestrator == "k8s"`), a peer without a
//! namespaceSelector limited to the policy's namespace, `ipBlock` as `nets` minus `notNets`.
//! The legacy DefaultDeny annotation is the policy it stands for: every pod of the namespace
//! isolated for ingress, nothing allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::policy::{Action, Entity, IpProtocol, Order, Policy, PolicyId, Port, Rule, Tier};
use super::{Direction, Family, ObjectKey, Protocol};
use crate::selector::ORCHESTRATOR_LABEL;
use crate::selector::{Expr, Selector, NAMESPACE_LABEL, NAMESPACE_PREFIX, ORCHESTRATOR_K8S};

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceScope {
    /// Exactly this namespace (a peer with only a `podSelector`: the policy's own namespace).
    Named(String),
    /// Every namespace whose labels match.
    Selector(Selector),
}

/// A set of pods: those matching `pods` in the namespaces of `namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selection {
    pub namespaces: NamespaceScope,
    pub pods: Selector,
}

impl Selection {
    /// Every pod in the cluster.
    pub fn all_pods() -> Self {
        Self {
            namespaces: NamespaceScope::Selector(Selector::all()),
            pods: Selector::all(),
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

/// A NetworkPolicy, validated and with `policyTypes` defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesPolicy {
    pub key: ObjectKey,
    pub pod_selector: Selector,
    /// `Some` when the policy isolates selected pods for ingress; the rules allow traffic.
    pub ingress: Option<Vec<PolicyRule>>,
    /// `Some` when the policy isolates selected pods for egress.
    pub egress: Option<Vec<PolicyRule>>,
}

impl KubernetesPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[PolicyRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// The order Calico gives every Kubernetes NetworkPolicy.
pub const KUBERNETES_ORDER: f64 = 1000.0;

/// The name of the policy a namespace's legacy DefaultDeny annotation stands for. A colon
/// cannot appear in a Kubernetes name, so it never meets a real policy's.
pub const LEGACY_DEFAULT_DENY_NAME: &str = "legacy:default-deny-annotation";

/// `projectcalico.org/orchestrator == "k8s" && <pod selector>`: a Kubernetes pod selector
/// selects pods only, never network sets.
fn pods_only(pods: &Selector) -> Selector {
    let orchestrator = Selector::from_expr(Expr::eq(ORCHESTRATOR_LABEL, ORCHESTRATOR_K8S));
    let mut terms = vec![orchestrator.expr().clone()];
    match pods.expr() {
        Expr::All => {}
        Expr::And(items) => terms.extend(items.iter().cloned()),
        other => terms.push(other.clone()),
    }
    Selector::from_expr(Expr::and(terms))
}

fn in_namespace(namespace: &str) -> Selector {
    Selector::from_expr(Expr::eq(NAMESPACE_LABEL, namespace))
}

/// A namespace selector over the namespace's labels, as an endpoint selector: `pcns.`-prefixed
/// with `all()` meaning "in some namespace".
pub fn namespace_selector(namespaces: &Selector) -> Selector {
    namespaces
        .prefixed(NAMESPACE_PREFIX)
        .replace_all(Expr::has(NAMESPACE_LABEL))
}

fn peer_selector(policy_namespace: &str, selection: &Selection) -> Selector {
    let scope = match &selection.namespaces {
        NamespaceScope::Named(ns) => in_namespace(ns),
        NamespaceScope::Selector(namespaces) => namespace_selector(namespaces),
    };
    let _ = policy_namespace;
    Selector::from_expr(Expr::and(vec![
        scope.expr().clone(),
        pods_only(&selection.pods).expr().clone(),
    ]))
}

/// The port groups of one Kubernetes rule: per protocol (sorted by name, as Calico does), its
/// ports, or `None` for every port; one group without protocol when the rule lists no ports.
fn port_groups(ports: &[PortRule]) -> Vec<(Option<Protocol>, Vec<Port>)> {
    if ports.is_empty() {
        return vec![(None, Vec::new())];
    }
    let mut groups: BTreeMap<&'static str, (Protocol, Option<Vec<Port>>)> = BTreeMap::new();
    for rule in ports {
        let name = match rule.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        };
        let entry = groups
            .entry(name)
            .or_insert_with(|| (rule.protocol, Some(Vec::new())));
        match (&rule.port, &mut entry.1) {
            (PortMatch::Any, all) => *all = None,
            (_, None) => {}
            (PortMatch::Range { start, end }, Some(list)) => list.push(Port::Range {
                start: *start,
                end: *end,
            }),
            (PortMatch::Named(name), Some(list)) => list.push(Port::Named(name.clone())),
        }
    }
    groups
        .into_values()
        .map(|(protocol, ports)| (Some(protocol), simplify_ports(ports.unwrap_or_default())))
        .collect()
}

/// Named ports first, then the numeric ports merged into the fewest ranges, as Calico's
/// `SimplifyPorts` does.
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    let numeric = ports
        .iter()
        .filter(|p| matches!(p, Port::Range { .. }))
        .count();
    if numeric <= 1 {
        return ports;
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    let mut out = Vec::new();
    for port in ports {
        match port {
            Port::Range { start, end } => ranges.push((start, end)),
            named => out.push(named),
        }
    }
    ranges.sort();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(start) <= u32::from(last.1) + 1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    out.extend(
        merged
            .into_iter()
            .map(|(start, end)| Port::Range { start, end }),
    );
    out
}

fn convert_rules(policy: &KubernetesPolicy, direction: Direction) -> Option<Vec<Rule>> {
    let rules = policy.rules(direction)?;
    let mut out = Vec::new();
    for (origin, rule) in rules.iter().enumerate() {
        for (protocol, ports) in port_groups(&rule.ports) {
            let peers: Vec<Option<&Peer>> = match &rule.peers {
                None => vec![None],
                Some(peers) => peers.iter().map(Some).collect(),
            };
            for peer in peers {
                let mut remote = Entity::default();
                match peer {
                    None => {}
                    Some(Peer::Pods(selection)) => {
                        remote.selector = Some(peer_selector(&policy.key.namespace, selection));
                    }
                    Some(Peer::Block(block)) => {
                        remote.nets = vec![block.cidr];
                        remote.not_nets = block.except.clone();
                    }
                }
                let mut converted = Rule::new(Action::Allow, origin);
                converted.protocol = protocol.map(IpProtocol::from_ported);
                match direction {
                    Direction::Ingress => {
                        converted.source = remote;
                        converted.destination.ports = ports.clone();
                    }
                    Direction::Egress => {
                        remote.ports = ports.clone();
                        converted.destination = remote;
                    }
                }
                out.push(converted);
            }
        }
    }
    Some(out)
}

impl KubernetesPolicy {
    /// The policy in Calico's model.
    pub fn to_policy(&self) -> Policy {
        Policy {
            id: PolicyId::kubernetes(&self.key),
            tier: Tier::DEFAULT.to_string(),
            order: Order::new(KUBERNETES_ORDER),
            selector: Selector::from_expr(Expr::and(vec![
                pods_only(&self.pod_selector).expr().clone(),
                in_namespace(&self.key.namespace).expr().clone(),
            ])),
            ingress: convert_rules(self, Direction::Ingress),
            egress: convert_rules(self, Direction::Egress),
        }
    }

    /// What a namespace's legacy DefaultDeny annotation stands for.
    pub fn legacy_default_deny(namespace: &str) -> Self {
        KubernetesPolicy {
            key: ObjectKey::new(namespace, LEGACY_DEFAULT_DENY_NAME),
            pod_selector: Selector::all(),
            ingress: Some(Vec::new()),
            egress: None,
        }
    }
}

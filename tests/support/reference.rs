//! A reference evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1), written from the
//! documentation (https://kubernetes.io/docs/concepts/services-networking/network-policies/ and
//! the API reference), with no use of the compiler:
//!
//! * A pod is isolated for ingress when some NetworkPolicy in its namespace selects it and has
//!   Ingress in its policyTypes (here: `ingress: Some(_)`), or when its namespace carries the
//!   legacy `DefaultDeny` annotation. Likewise for egress (no legacy form). A non-isolated
//!   direction allows everything.
//! * An isolated pod's traffic in a direction is allowed when at least one rule of at least one
//!   policy that selects it (in that direction) matches: policies are additive.
//! * A rule matches when one of its peers matches (absent/empty peers: every peer) and one of
//!   its ports matches (absent/empty ports: every port and protocol).
//! * A pod peer matches a remote pod whose namespace is in scope (the policy's own namespace
//!   for a bare podSelector; every namespace whose labels match the namespaceSelector) and
//!   whose labels match the podSelector: the two selectors of one peer AND together.
//! * An ipBlock peer matches an address inside `cidr` and outside every `except`. A block of
//!   the other family matches nothing.
//! * A port matches when the protocol is equal and the port is the number, within
//!   `port..=endPort`, or (named port) equal to the number of the container port of that name and
//!   protocol on the destination pod: the selected pod for ingress, the remote pod for egress. A
//!   destination that is not a pod has no named ports.
//! * Traffic is allowed when the source's egress and the destination's ingress both allow it.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use palisade::model::kubernetes::{
    IpBlock, KubernetesPolicy as Policy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule,
};
use palisade::model::{Family, Pod, Protocol};
use palisade::selector::{Expr, Labels, Selector};

use super::cluster::{pod_ip, Cluster};

/// One end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Pod(&'a Pod),
    /// An address outside the cluster's pods.
    External(IpAddr),
}

impl<'a> Endpoint<'a> {
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        match self {
            Endpoint::Pod(pod) => pod_ip(pod, family),
            Endpoint::External(ip) => (Family::of(ip) == family).then_some(*ip),
        }
    }

    pub fn node(&self) -> Option<&'a str> {
        match *self {
            Endpoint::Pod(pod) => pod.node.as_deref(),
            Endpoint::External(_) => None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Endpoint::Pod(pod) => format!("pod {}", pod.key),
            Endpoint::External(ip) => format!("external {ip}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// A label selector as the documentation defines it, in the expression form Palisade holds
/// Kubernetes selectors in: every requirement must hold (`&&`); `In` (`in`, `==`) needs the key
/// with one of the values; `NotIn` (`not in`) holds when the key is absent or has another
/// value; `Exists`/`DoesNotExist` (`has`, `!has`) look at the key only. The empty selector
/// (`all()`) selects everything.
pub fn selector_matches(selector: &Selector, labels: &Labels) -> bool {
    expr_matches(selector.expr(), &|key| labels.get(key).map(|v| v.as_str()))
}

/// Calico's selector semantics (SPEC E.3) over a label lookup: absent labels are unequal to
/// everything and in no set.
pub fn expr_matches<'a>(expr: &Expr, get: &dyn Fn(&str) -> Option<&'a str>) -> bool {
    match expr {
        Expr::All | Expr::Global => true,
        Expr::Has(l) => get(l.name()).is_some(),
        Expr::Eq(l, v) => get(l.name()) == Some(v.as_str()),
        Expr::Ne(l, v) => get(l.name()) != Some(v.as_str()),
        Expr::Contains(l, v) => get(l.name()).is_some_and(|x| x.contains(v.as_str())),
        Expr::StartsWith(l, v) => get(l.name()).is_some_and(|x| x.starts_with(v.as_str())),
        Expr::EndsWith(l, v) => get(l.name()).is_some_and(|x| x.ends_with(v.as_str())),
        Expr::In(l, set) => get(l.name()).is_some_and(|x| set.iter().any(|s| s == x)),
        Expr::NotIn(l, set) => !get(l.name()).is_some_and(|x| set.iter().any(|s| s == x)),
        Expr::Not(inner) => !expr_matches(inner, get),
        Expr::And(items) => items.iter().all(|e| expr_matches(e, get)),
        Expr::Or(items) => items.iter().any(|e| expr_matches(e, get)),
    }
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

pub fn block_matches(block: &IpBlock, ip: IpAddr) -> bool {
    net_contains(&block.cidr, ip) && !block.except.iter().any(|e| net_contains(e, ip))
}

fn policy_selects(policy: &Policy, pod: &Pod) -> bool {
    policy.key.namespace == pod.key.namespace && selector_matches(&policy.pod_selector, &pod.labels)
}

fn rules_of(policy: &Policy, dir: Dir) -> Option<&Vec<PolicyRule>> {
    match dir {
        Dir::Ingress => policy.ingress.as_ref(),
        Dir::Egress => policy.egress.as_ref(),
    }
}

fn peer_matches(cluster: &Cluster, peer: &Peer, remote: &Endpoint<'_>, family: Family) -> bool {
    match peer {
        Peer::Pods(selection) => {
            // A pod peer only ever means pods; an outside address is never one.
            let Endpoint::Pod(remote) = remote else {
                return false;
            };
            let ns_ok = match &selection.namespaces {
                NamespaceScope::Named(ns) => *ns == remote.key.namespace,
                NamespaceScope::Selector(selector) => {
                    selector_matches(selector, &cluster.namespace_labels(&remote.key.namespace))
                }
            };
            ns_ok && selector_matches(&selection.pods, &remote.labels)
        }
        Peer::Block(block) => match remote.ip(family) {
            Some(ip) => block_matches(block, ip),
            None => false,
        },
    }
}

fn port_matches(
    port_rule: &PortRule,
    protocol: Protocol,
    port: u16,
    destination: &Endpoint<'_>,
) -> bool {
    if port_rule.protocol != protocol {
        return false;
    }
    match &port_rule.port {
        PortMatch::Any => true,
        PortMatch::Range { start, end } => *start <= port && port <= *end,
        PortMatch::Named(name) => match destination {
            Endpoint::Pod(pod) => pod
                .named_ports
                .iter()
                .any(|p| p.name == *name && p.protocol == protocol && p.port == port),
            Endpoint::External(_) => false,
        },
    }
}

/// Whether `local` (a pod) lets this traffic through in `dir`; `remote` is the other end,
/// `destination` whichever end receives it (for named ports).
fn direction_allows(
    cluster: &Cluster,
    dir: Dir,
    local: &Pod,
    remote: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    (family, protocol, port): (Family, Protocol, u16),
) -> bool {
    let selecting: Vec<&Policy> = cluster
        .policies
        .values()
        .filter(|p| rules_of(p, dir).is_some() && policy_selects(p, local))
        .collect();
    let legacy = dir == Dir::Ingress && cluster.legacy_default_deny(&local.key.namespace);
    if selecting.is_empty() && !legacy {
        return true;
    }
    selecting.iter().any(|policy| {
        rules_allow(
            cluster,
            policy,
            dir,
            remote,
            destination,
            (family, protocol, port),
            true,
        )
    })
}

/// Whether one of the policy's rules in `dir` allows the traffic. `ported`: the packet is TCP,
/// UDP or SCTP (`protocol` and `port` are its own); a rule with ports matches nothing else.
fn rules_allow(
    cluster: &Cluster,
    policy: &Policy,
    dir: Dir,
    remote: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    (family, protocol, port): (Family, Protocol, u16),
    ported: bool,
) -> bool {
    rules_of(policy, dir).into_iter().flatten().any(|rule| {
        let peer_ok = match &rule.peers {
            None => true,
            Some(peers) => peers
                .iter()
                .any(|peer| peer_matches(cluster, peer, remote, family)),
        };
        let port_ok = rule.ports.is_empty()
            || (ported
                && rule
                    .ports
                    .iter()
                    .any(|p| port_matches(p, protocol, port, destination)));
        peer_ok && port_ok
    })
}

/// Whether one Kubernetes policy (which selects `local`) allows the traffic in the direction:
/// for the Calico reference, where Kubernetes policies sit in tier `default`.
pub fn policy_allows(
    cluster: &Cluster,
    policy: &Policy,
    ingress: bool,
    local: &Pod,
    remote: &Endpoint<'_>,
    traffic: (Family, Protocol, u16),
    ported: bool,
) -> bool {
    let (dir, destination) = if ingress {
        (Dir::Ingress, Endpoint::Pod(local))
    } else {
        (Dir::Egress, *remote)
    };
    rules_allow(cluster, policy, dir, remote, &destination, traffic, ported)
}

pub fn ingress_allowed(
    cluster: &Cluster,
    dst: &Pod,
    src: &Endpoint<'_>,
    family: Family,
    protocol: Protocol,
    port: u16,
) -> bool {
    let destination = Endpoint::Pod(dst);
    direction_allows(
        cluster,
        Dir::Ingress,
        dst,
        src,
        &destination,
        (family, protocol, port),
    )
}

pub fn egress_allowed(
    cluster: &Cluster,
    src: &Pod,
    dst: &Endpoint<'_>,
    family: Family,
    protocol: Protocol,
    port: u16,
) -> bool {
    direction_allows(
        cluster,
        Dir::Egress,
        src,
        dst,
        dst,
        (family, protocol, port),
    )
}

/// The verdict the spec gives a new connection from `src` to `dst` on `protocol`/`port`.
pub fn allowed(
    cluster: &Cluster,
    src: &Endpoint<'_>,
    dst: &Endpoint<'_>,
    family: Family,
    protocol: Protocol,
    port: u16,
) -> bool {
    let egress = match src {
        Endpoint::Pod(pod) => egress_allowed(cluster, pod, dst, family, protocol, port),
        Endpoint::External(_) => true,
    };
    let ingress = match dst {
        Endpoint::Pod(pod) => ingress_allowed(cluster, pod, src, family, protocol, port),
        Endpoint::External(_) => true,
    };
    egress && ingress
}

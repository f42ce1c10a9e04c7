//! Terse constructors for hand-written clusters.

use palisade::model::kubernetes::{
    IpBlock, KubernetesPolicy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule, Selection,
};
use palisade::model::{self, NamedPort, Namespace, ObjectKey, Pod, Protocol};
use palisade::selector::{Labels, Selector};

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// A Namespace object as the API server would show it: with its name label.
pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    let mut labels = labels(pairs);
    labels.insert(model::NAMESPACE_NAME_LABEL.into(), name.into());
    Namespace {
        name: name.to_string(),
        labels,
        legacy_default_deny: false,
        denials: Default::default(),
    }
}

pub fn pod(key: &str, node: &str, ips: &[&str], pairs: &[(&str, &str)]) -> Pod {
    let (ns, name) = key.split_once('/').expect("pod key is ns/name");
    Pod {
        key: ObjectKey::new(ns, name),
        node: Some(node.into()),
        ips: ips.iter().map(|ip| ip.parse().expect("pod ip")).collect(),
        labels: labels(pairs),
        named_ports: Vec::new(),
        service_account: Some("default".into()),
    }
}

pub fn with_port(mut pod: Pod, name: &str, protocol: Protocol, port: u16) -> Pod {
    pod.named_ports.push(NamedPort {
        name: name.into(),
        protocol,
        port,
    });
    pod
}

pub fn match_labels(pairs: &[(&str, &str)]) -> Selector {
    Selector::match_labels(pairs.iter().copied())
}

pub fn expression(key: &str, operator: &str, values: &[&str]) -> Selector {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    Selector::kubernetes([], [(key, operator, values.as_slice())]).expect("valid expression")
}

pub fn everything() -> Selector {
    Selector::all()
}

pub fn policy(
    key: &str,
    pod_selector: Selector,
    ingress: Option<Vec<PolicyRule>>,
    egress: Option<Vec<PolicyRule>>,
) -> KubernetesPolicy {
    let (ns, name) = key.split_once('/').expect("policy key is ns/name");
    KubernetesPolicy {
        key: ObjectKey::new(ns, name),
        pod_selector,
        ingress,
        egress,
    }
}

pub fn rule(peers: Option<Vec<Peer>>, ports: Vec<PortRule>) -> PolicyRule {
    PolicyRule { peers, ports }
}

/// A peer with only a podSelector: pods of the policy's own namespace `ns`.
pub fn pods_in(ns: &str, pods: Selector) -> Peer {
    Peer::Pods(Selection {
        namespaces: NamespaceScope::Named(ns.to_string()),
        pods,
    })
}

/// A peer with a namespaceSelector (and a podSelector, everything if absent).
pub fn pods_where(namespaces: Selector, pods: Selector) -> Peer {
    Peer::Pods(Selection {
        namespaces: NamespaceScope::Selector(namespaces),
        pods,
    })
}

pub fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::Block(IpBlock {
        cidr: cidr.parse().expect("cidr"),
        except: except.iter().map(|e| e.parse().expect("except")).collect(),
    })
}

pub fn port(protocol: Protocol, port: u16) -> PortRule {
    PortRule {
        protocol,
        port: PortMatch::Range {
            start: port,
            end: port,
        },
    }
}

pub fn port_range(protocol: Protocol, start: u16, end: u16) -> PortRule {
    PortRule {
        protocol,
        port: PortMatch::Range { start, end },
    }
}

pub fn named_port(protocol: Protocol, name: &str) -> PortRule {
    PortRule {
        protocol,
        port: PortMatch::Named(name.to_string()),
    }
}

pub fn any_port(protocol: Protocol) -> PortRule {
    PortRule {
        protocol,
        port: PortMatch::Any,
    }
}

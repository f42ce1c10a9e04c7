//! proptest generators for small clusters, drawn from tiny vocabularies so that selectors,
//! blocks and ports often match something.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use palisade::model::kubernetes::{
    IpBlock, KubernetesPolicy as Policy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule,
    Selection,
};
use palisade::model::{self, NamedPort, Namespace, ObjectKey, Pod, Protocol};
use palisade::selector::{Labels, Selector};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::cluster::{Cluster, NODES};

pub type Vocab = &'static [(&'static str, &'static [&'static str])];

/// Every namespace name a cluster or a mutation may use. Clusters start with the first two or
/// three; mutations may bring in the rest.
pub const NAMESPACES: [&str; 4] = ["ns-a", "ns-b", "ns-c", "ns-d"];

pub const POD_LABELS: Vocab = &[("app", &["web", "db"]), ("role", &["front", "back"])];
/// Pod selectors also use a key no pod carries.
pub const POD_SELECTOR_VOCAB: Vocab = &[
    ("app", &["web", "db"]),
    ("role", &["front", "back"]),
    ("tier", &["gold"]),
];
pub const NAMESPACE_LABELS: Vocab = &[("team", &["red", "blue"]), ("env", &["prod", "dev"])];
pub const NAMESPACE_SELECTOR_VOCAB: Vocab = &[
    ("team", &["red", "blue"]),
    ("env", &["prod", "dev"]),
    (model::NAMESPACE_NAME_LABEL, &NAMESPACES),
];

/// Pod addresses: the first six of each /24 (or /64) so that blocks split them.
pub fn v4_pool() -> Vec<IpAddr> {
    (1..=6)
        .map(|i| format!("10.0.0.{i}"))
        .chain((1..=6).map(|i| format!("10.0.1.{i}")))
        .map(|s| s.parse().unwrap())
        .collect()
}

pub fn v6_pool() -> Vec<IpAddr> {
    (1..=6)
        .map(|i| format!("fd00::{i}"))
        .chain((1..=6).map(|i| format!("fd00:0:0:1::{i}")))
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Addresses of no pod: one inside the pod range's blocks, one far outside.
pub const EXTERNALS: [&str; 4] = ["10.0.0.200", "192.168.7.7", "fd00::c8", "2001:db8::7"];

pub const V4_BLOCKS: &[&str] = &[
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.0.0.0/29",
    "10.0.0.4/30",
    "10.0.0.5/32",
    "0.0.0.0/0",
    "192.168.0.0/16",
];
pub const V4_EXCEPTS: &[&str] = &[
    "10.0.0.0/24",
    "10.0.0.0/30",
    "10.0.0.4/31",
    "10.0.0.2/32",
    "10.0.0.6/32",
    "10.0.1.0/25",
    "10.0.1.4/30",
    "10.0.0.0/16",
    "10.0.0.5/32",
    "192.168.7.0/24",
];
pub const V6_BLOCKS: &[&str] = &[
    "fd00::/48",
    "fd00::/64",
    "fd00:0:0:1::/64",
    "fd00::/125",
    "fd00::4/126",
    "fd00::5/128",
    "::/0",
    "2001:db8::/32",
];
pub const V6_EXCEPTS: &[&str] = &[
    "fd00::/64",
    "fd00::/126",
    "fd00::4/127",
    "fd00::2/128",
    "fd00::6/128",
    "fd00:0:0:1::/120",
    "fd00:0:0:1::4/126",
    "fd00::/48",
    "fd00::5/128",
    "2001:db8::/48",
];

pub const PORT_RANGES: &[(u16, u16)] = &[
    (80, 80),
    (53, 53),
    (443, 443),
    (8080, 8080),
    (5353, 5353),
    (80, 443),
    (53, 80),
    (1000, 9000),
    (8000, 8080),
    (81, 8079),
];
pub const PORT_NAMES: &[&str] = &["http", "dns", "nope"];
/// Numbers the named ports take on pods.
pub const HTTP_PORTS: &[u16] = &[80, 8080];
pub const DNS_PORTS: &[u16] = &[53, 5353];
pub const UNUSED_PORT: u16 = 9999;

pub fn labels(vocab: Vocab, min: usize, max: usize) -> impl Strategy<Value = Labels> {
    prop::collection::vec((any::<Index>(), any::<Index>()), min..=max).prop_map(move |picks| {
        picks
            .into_iter()
            .map(|(k, v)| {
                let (key, values) = vocab[k.index(vocab.len())];
                (key.into(), values[v.index(values.len())].into())
            })
            .collect()
    })
}

fn expression(vocab: Vocab) -> impl Strategy<Value = (String, &'static str, Vec<String>)> {
    (any::<Index>(), 0..4usize, any::<Index>(), any::<bool>()).prop_map(move |(k, op, v, two)| {
        let (key, values) = vocab[k.index(vocab.len())];
        let first = v.index(values.len());
        let mut chosen = vec![values[first].to_string()];
        if two && values.len() > 1 {
            chosen.push(values[(first + 1) % values.len()].to_string());
        }
        let op = ["In", "NotIn", "Exists", "DoesNotExist"][op];
        if matches!(op, "Exists" | "DoesNotExist") {
            chosen.clear();
        }
        (key.to_string(), op, chosen)
    })
}

pub fn selector(vocab: Vocab) -> impl Strategy<Value = Selector> {
    prop_oneof![
        2 => Just(Selector::all()),
        3 => labels(vocab, 1, 2).prop_map(|l| {
            Selector::match_labels(l.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }),
        3 => prop::collection::vec(expression(vocab), 1..=2).prop_map(|exprs| {
            Selector::kubernetes(
                [],
                exprs.iter().map(|(key, op, values)| (key.as_str(), *op, values.as_slice())),
            )
            .expect("valid expression")
        }),
    ]
}

fn inside(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    outer.is_ipv4() == inner.is_ipv4()
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.network())
}

pub fn ip_block() -> impl Strategy<Value = IpBlock> {
    (
        prop::bool::weighted(0.35),
        any::<Index>(),
        prop::collection::vec(any::<Index>(), 0..=2),
    )
        .prop_map(|(v6, cidr, excepts)| {
            let (blocks, candidates) = if v6 {
                (V6_BLOCKS, V6_EXCEPTS)
            } else {
                (V4_BLOCKS, V4_EXCEPTS)
            };
            let cidr: IpNetwork = blocks[cidr.index(blocks.len())].parse().unwrap();
            let mut except: Vec<IpNetwork> = excepts
                .iter()
                .map(|i| candidates[i.index(candidates.len())].parse().unwrap())
                .filter(|e| inside(&cidr, e))
                .collect();
            except.sort();
            except.dedup();
            IpBlock { cidr, except }
        })
}

pub fn port_rule() -> impl Strategy<Value = PortRule> {
    (
        select(Protocol::ALL.to_vec()),
        prop_oneof![
            1 => Just(PortMatch::Any),
            3 => select(PORT_RANGES).prop_map(|(start, end)| PortMatch::Range { start, end }),
            2 => select(PORT_NAMES).prop_map(|n| PortMatch::Named(n.to_string())),
        ],
    )
        .prop_map(|(protocol, port)| PortRule { protocol, port })
}

/// A peer before it knows its policy's namespace.
#[derive(Debug, Clone)]
pub enum PeerGen {
    /// A podSelector alone: pods of the policy's namespace.
    OwnNamespace(Selector),
    /// namespaceSelector and podSelector (everything when absent).
    Namespaces(Selector, Selector),
    Block(IpBlock),
}

#[derive(Debug, Clone)]
pub struct RuleGen {
    pub peers: Option<Vec<PeerGen>>,
    pub ports: Vec<PortRule>,
}

/// A policy spec, to be placed in a namespace.
#[derive(Debug, Clone)]
pub struct PolicyBody {
    pub pod_selector: Selector,
    pub ingress: Option<Vec<RuleGen>>,
    pub egress: Option<Vec<RuleGen>>,
}

impl PolicyBody {
    pub fn instantiate(&self, namespace: &str, name: &str) -> Policy {
        let rules = |rules: &Option<Vec<RuleGen>>| -> Option<Vec<PolicyRule>> {
            rules.as_ref().map(|rules| {
                rules
                    .iter()
                    .map(|r| PolicyRule {
                        peers: r.peers.as_ref().map(|peers| {
                            peers
                                .iter()
                                .map(|p| match p {
                                    PeerGen::OwnNamespace(pods) => Peer::Pods(Selection {
                                        namespaces: NamespaceScope::Named(namespace.to_string()),
                                        pods: pods.clone(),
                                    }),
                                    PeerGen::Namespaces(ns, pods) => Peer::Pods(Selection {
                                        namespaces: NamespaceScope::Selector(ns.clone()),
                                        pods: pods.clone(),
                                    }),
                                    PeerGen::Block(b) => Peer::Block(b.clone()),
                                })
                                .collect()
                        }),
                        ports: r.ports.clone(),
                    })
                    .collect()
            })
        };
        Policy {
            key: ObjectKey::new(namespace, name),
            pod_selector: self.pod_selector.clone(),
            ingress: rules(&self.ingress),
            egress: rules(&self.egress),
        }
    }
}

fn peer() -> impl Strategy<Value = PeerGen> {
    prop_oneof![
        3 => selector(POD_SELECTOR_VOCAB).prop_map(PeerGen::OwnNamespace),
        3 => (selector(NAMESPACE_SELECTOR_VOCAB), selector(POD_SELECTOR_VOCAB))
            .prop_map(|(ns, pods)| PeerGen::Namespaces(ns, pods)),
        3 => ip_block().prop_map(PeerGen::Block),
    ]
}

fn rule() -> impl Strategy<Value = RuleGen> {
    (
        prop::option::weighted(0.7, prop::collection::vec(peer(), 1..=2)),
        prop::collection::vec(port_rule(), 0..=2),
    )
        .prop_map(|(peers, ports)| RuleGen { peers, ports })
}

pub fn policy_body() -> impl Strategy<Value = PolicyBody> {
    (
        selector(POD_SELECTOR_VOCAB),
        prop::option::weighted(0.75, prop::collection::vec(rule(), 0..=2)),
        prop::option::weighted(0.55, prop::collection::vec(rule(), 0..=2)),
    )
        .prop_map(|(pod_selector, ingress, egress)| PolicyBody {
            pod_selector,
            ingress,
            egress,
        })
}

/// A Namespace object: labels (the name label is added), legacy DefaultDeny.
pub fn namespace_object(name: &str, labels: &Labels, default_deny: bool) -> Namespace {
    let mut labels = labels.clone();
    labels.insert(model::NAMESPACE_NAME_LABEL.into(), name.into());
    Namespace {
        name: name.to_string(),
        labels,
        legacy_default_deny: default_deny,
        denials: Default::default(),
    }
}

#[derive(Debug, Clone)]
pub struct PodGen {
    pub namespace: Index,
    pub node: Index,
    pub labels: Labels,
    pub dual_stack: bool,
    pub http: Option<u16>,
    pub dns: Option<u16>,
}

pub fn pod_gen() -> impl Strategy<Value = PodGen> {
    (
        any::<Index>(),
        any::<Index>(),
        labels(POD_LABELS, 1, 2),
        prop::bool::weighted(0.5),
        prop::option::weighted(0.5, select(HTTP_PORTS)),
        prop::option::weighted(0.4, select(DNS_PORTS)),
    )
        .prop_map(|(namespace, node, labels, dual_stack, http, dns)| PodGen {
            namespace,
            node,
            labels,
            dual_stack,
            http,
            dns,
        })
}

impl PodGen {
    pub fn build(&self, namespace: &str, name: &str, v4: IpAddr, v6: Option<IpAddr>) -> Pod {
        let mut named_ports = Vec::new();
        if let Some(port) = self.http {
            named_ports.push(NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port,
            });
        }
        if let Some(port) = self.dns {
            named_ports.push(NamedPort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port,
            });
        }
        Pod {
            key: ObjectKey::new(namespace, name),
            node: Some(NODES[self.node.index(NODES.len())].into()),
            ips: std::iter::once(v4)
                .chain(v6.filter(|_| self.dual_stack))
                .collect(),
            labels: self.labels.clone(),
            named_ports,
            service_account: Some("default".into()),
        }
    }
}

/// `None`: the namespace has no object. `Some((labels, DefaultDeny))` otherwise.
type NamespaceGen = Option<(Labels, bool)>;

fn namespace_gen() -> impl Strategy<Value = NamespaceGen> {
    prop::option::weighted(
        0.6,
        (labels(NAMESPACE_LABELS, 0, 2), prop::bool::weighted(0.2)),
    )
}

pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(namespace_gen(), 2..=3),
        prop::collection::vec(pod_gen(), 3..=6),
        prop::collection::vec((any::<Index>(), policy_body()), 0..=4),
        Just(v4_pool()).prop_shuffle(),
        Just(v6_pool()).prop_shuffle(),
    )
        .prop_map(|(namespaces, pods, policies, v4, v6)| {
            let mut cluster = Cluster::default();
            for (i, ns) in namespaces.iter().enumerate() {
                if let Some((labels, deny)) = ns {
                    cluster.add_namespace(namespace_object(NAMESPACES[i], labels, *deny));
                }
            }
            for (i, pod) in pods.iter().enumerate() {
                let ns = NAMESPACES[pod.namespace.index(namespaces.len())];
                cluster.add_pod(pod.build(ns, &format!("p{i}"), v4[i], Some(v6[i])));
            }
            for (i, (ns, body)) in policies.iter().enumerate() {
                let ns = NAMESPACES[ns.index(namespaces.len())];
                cluster.add_policy(body.instantiate(ns, &format!("pol-{i}")));
            }
            cluster
        })
}

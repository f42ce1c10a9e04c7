//! A cluster as plain data: the source of truth for the reference evaluator, and what the
//! `ClusterIndex` under test is built from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use palisade::index::ClusterIndex;
use palisade::model::calico::{self, ApiGroup, CalicoKind, CalicoResource};
use palisade::model::kubernetes::{
    KubernetesPolicy as Policy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule,
};
use palisade::model::{self, Family, Namespace, ObjectKey, Pod, ServiceAccount, ServiceSlice};
use palisade::selector::{Labels, Selector};
use serde_json::Value;

pub const NODES: [&str; 2] = ["node-1", "node-2"];

#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Namespace objects. A namespace that only holds pods has no entry here.
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub policies: BTreeMap<ObjectKey, Policy>,
    /// ServiceAccount objects by namespace/name: their labels.
    pub service_accounts: BTreeMap<ObjectKey, Labels>,
    /// Calico objects as a user applies them (`projectcalico.org/v3` JSON), by `Kind ns/name`.
    pub calico: BTreeMap<String, Value>,
    pub slices: Vec<ServiceSlice>,
}

/// The key of a Calico object in [`Cluster::calico`].
pub fn calico_key(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default();
    let meta = &object["metadata"];
    format!(
        "{kind} {}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

/// A Calico object in the model, as the product converts it. Generators only make valid ones.
pub fn convert_calico(object: &Value) -> CalicoResource {
    let group = ApiGroup::of(object["apiVersion"].as_str().unwrap_or_default())
        .expect("a Calico API version");
    let kind = CalicoKind::of(object["kind"].as_str().unwrap_or_default()).expect("a Calico kind");
    calico::convert(group, kind, object, &mut Vec::new())
        .unwrap_or_else(|e| panic!("generated Calico object is invalid: {e}\n{object}"))
}

impl Cluster {
    pub fn index(&self) -> ClusterIndex {
        let mut index = ClusterIndex::new();
        for ns in self.namespaces.values() {
            index.upsert_namespace(ns.clone());
        }
        for pod in self.pods.values() {
            index.upsert_pod(pod.clone());
        }
        for (key, labels) in &self.service_accounts {
            index.upsert_service_account(ServiceAccount {
                key: key.clone(),
                labels: labels.clone(),
            });
        }
        for slice in &self.slices {
            index.upsert_service_slice(slice.clone());
        }
        for policy in self.policies.values() {
            index.upsert_policy(policy.to_policy());
        }
        for object in self.calico.values() {
            match convert_calico(object) {
                CalicoResource::Policy(p) => {
                    index.upsert_policy(p);
                }
                CalicoResource::NetworkSet(s) => {
                    index.upsert_network_set(s);
                }
                CalicoResource::Tier(t) => {
                    index.upsert_tier(t);
                }
                CalicoResource::Ignored(_) => {}
            }
        }
        index
    }

    /// The labels a namespaceSelector sees. The API server labels every Namespace object with
    /// `kubernetes.io/metadata.name`; a namespace Palisade has no object for is known only by
    /// that label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Labels::from([(model::NAMESPACE_NAME_LABEL.into(), name.into())]),
        }
    }

    pub fn legacy_default_deny(&self, name: &str) -> bool {
        self.namespaces
            .get(name)
            .is_some_and(|ns| ns.legacy_default_deny)
    }

    pub fn pod(&self, key: &str) -> &Pod {
        let (ns, name) = key.split_once('/').expect("pod key is ns/name");
        self.pods
            .get(&ObjectKey::new(ns, name))
            .unwrap_or_else(|| panic!("no pod {key}"))
    }

    pub fn add_namespace(&mut self, ns: Namespace) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    pub fn add_pod(&mut self, pod: Pod) {
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn add_policy(&mut self, policy: Policy) {
        self.policies.insert(policy.key.clone(), policy);
    }

    /// Every address in use by a pod.
    pub fn used_addresses(&self) -> Vec<IpAddr> {
        self.pods
            .values()
            .flat_map(|p| p.ips.iter().copied())
            .collect()
    }

    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<&str> = self.namespaces.keys().map(String::as_str).collect();
        names.extend(self.pods.keys().map(|k| k.namespace.as_str()));
        names.sort();
        names.dedup();
        for name in names {
            match self.namespaces.get(name) {
                Some(ns) => {
                    let _ = writeln!(
                        out,
                        "namespace {name}: labels {}{}",
                        labels_text(&ns.labels),
                        if ns.legacy_default_deny {
                            " [legacy DefaultDeny]"
                        } else {
                            ""
                        }
                    );
                }
                None => {
                    let _ = writeln!(out, "namespace {name}: (no Namespace object)");
                }
            }
        }
        for pod in self.pods.values() {
            let ips: Vec<String> = pod.ips.iter().map(IpAddr::to_string).collect();
            let ports: Vec<String> = pod
                .named_ports
                .iter()
                .map(|p| format!("{}={}/{}", p.name, p.protocol, p.port))
                .collect();
            let _ = writeln!(
                out,
                "pod {} on {} ips [{}] labels {} named ports [{}]",
                pod.key,
                pod.node.as_deref().unwrap_or("(no node)"),
                ips.join(", "),
                labels_text(&pod.labels),
                ports.join(", ")
            );
        }
        for policy in self.policies.values() {
            out.push_str(&describe_policy(policy));
        }
        for (key, labels) in &self.service_accounts {
            let _ = writeln!(out, "serviceaccount {key}: labels {}", labels_text(labels));
        }
        for slice in &self.slices {
            let _ = writeln!(
                out,
                "endpointslice {}: service {} addresses {:?} ports {:?}",
                slice.key, slice.service, slice.addresses, slice.ports
            );
        }
        for object in self.calico.values() {
            let _ = writeln!(out, "{object}");
        }
        out
    }
}

pub fn labels_text(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

pub fn selector_text(selector: &Selector) -> String {
    if selector.is_all() {
        "<everything>".to_string()
    } else {
        format!("`{selector}`")
    }
}

pub fn describe_policy(policy: &Policy) -> String {
    let mut out = format!(
        "policy {} podSelector {}\n",
        policy.key,
        selector_text(&policy.pod_selector)
    );
    for (direction, rules, peer_word) in [
        ("ingress", &policy.ingress, "from"),
        ("egress", &policy.egress, "to"),
    ] {
        match rules {
            None => {
                let _ = writeln!(out, "  {direction}: not isolated (type absent)");
            }
            Some(rules) if rules.is_empty() => {
                let _ = writeln!(out, "  {direction}: isolated, no rules (deny all)");
            }
            Some(rules) => {
                let _ = writeln!(out, "  {direction}:");
                for rule in rules {
                    let _ = writeln!(out, "    - {}", rule_text(rule, peer_word));
                }
            }
        }
    }
    out
}

pub fn rule_text(rule: &PolicyRule, peer_word: &str) -> String {
    let peers = match &rule.peers {
        None => "<any>".to_string(),
        Some(peers) => peers.iter().map(peer_text).collect::<Vec<_>>().join(" OR "),
    };
    let ports = if rule.ports.is_empty() {
        "<any>".to_string()
    } else {
        rule.ports
            .iter()
            .map(port_text)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{peer_word}: {peers}; ports: {ports}")
}

pub fn peer_text(peer: &Peer) -> String {
    match peer {
        Peer::Pods(selection) => {
            let ns = match &selection.namespaces {
                NamespaceScope::Named(ns) => format!("namespace {ns}"),
                NamespaceScope::Selector(sel) => {
                    format!("namespaceSelector {}", selector_text(sel))
                }
            };
            format!("[{ns} AND podSelector {}]", selector_text(&selection.pods))
        }
        Peer::Block(block) => format!("[ipBlock {block}]"),
    }
}

pub fn port_text(port: &PortRule) -> String {
    match &port.port {
        PortMatch::Any => format!("{}/*", port.protocol),
        PortMatch::Range { start, end } if start == end => format!("{}/{start}", port.protocol),
        PortMatch::Range { start, end } => format!("{}/{start}-{end}", port.protocol),
        PortMatch::Named(name) => format!("{}/named:{name}", port.protocol),
    }
}

/// The address of `pod` in `family`, if it has one. Generated pods hold at most one per family.
pub fn pod_ip(pod: &Pod, family: Family) -> Option<IpAddr> {
    pod.ips.iter().copied().find(|ip| Family::of(ip) == family)
}

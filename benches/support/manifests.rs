//! A generated cluster written as the manifests a user keeps in a directory: Namespaces, Pods
//! (with the status a kubelet would have written) and `networking.k8s.io/v1` NetworkPolicies,
//! as YAML split over several files, for the benches of the commands that read manifests.
//!
//! Include it after `support/cluster.rs` with `#[path = "support/manifests.rs"] mod manifests;`.
//! Selectors are written as they were built (`cluster::WRITTEN_AS`), so the manifests mean
//! exactly the generated cluster; the render bench proves it by comparing the text.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::Path;

use palisade::model::kubernetes::{
    KubernetesPolicy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule,
};
use palisade::model::{Namespace, Pod, Protocol};
use palisade::selector::Selector;
use serde_json::{json, Value};

use super::cluster::{ClusterObjects, WRITTEN_AS};

/// How many files the pods and the policies are each spread over.
pub const POD_FILES: usize = 16;
pub const POLICY_FILES: usize = 8;

/// What was written.
pub struct Written {
    pub files: usize,
    pub bytes: u64,
    pub objects: usize,
}

fn selector(selector: &Selector) -> Value {
    WRITTEN_AS.with(|written| {
        written
            .borrow()
            .get(selector)
            .cloned()
            .unwrap_or_else(|| panic!("selector {selector} was not built by the generator"))
    })
}

fn protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

fn labels(labels: &palisade::selector::Labels) -> Value {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(v.to_string())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub fn namespace(ns: &Namespace) -> Value {
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns.name, "labels": labels(&ns.labels)},
    });
    if ns.legacy_default_deny {
        object["metadata"]["annotations"] = json!({
            "net.beta.kubernetes.io/network-policy": r#"{"ingress":{"isolation":"DefaultDeny"}}"#,
        });
    }
    object
}

pub fn pod(pod: &Pod) -> Value {
    let ports: Vec<Value> = pod
        .named_ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": protocol(p.protocol)}))
        .collect();
    let ips: Vec<Value> = pod
        .ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string()}))
        .collect();
    let mut spec = json!({
        "containers": [{"name": "app", "image": "registry.example/app:1.0", "ports": ports}],
    });
    if let Some(node) = &pod.node {
        spec["nodeName"] = json!(node);
    }
    if let Some(account) = &pod.service_account {
        spec["serviceAccountName"] = json!(account);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.key.name, "namespace": pod.key.namespace, "labels": labels(&pod.labels)},
        "spec": spec,
        "status": {"phase": "Running", "podIP": pod.ips.first().map(|ip| ip.to_string()), "podIPs": ips},
    })
}

fn peer(policy_namespace: &str, peer: &Peer) -> Value {
    match peer {
        Peer::Pods(selection) => match &selection.namespaces {
            NamespaceScope::Named(ns) => {
                assert_eq!(
                    ns, policy_namespace,
                    "a Kubernetes peer names its own namespace"
                );
                json!({"podSelector": selector(&selection.pods)})
            }
            NamespaceScope::Selector(namespaces) => json!({
                "namespaceSelector": selector(namespaces),
                "podSelector": selector(&selection.pods),
            }),
        },
        Peer::Block(block) => {
            let mut ip_block = json!({"cidr": block.cidr.to_string()});
            if !block.except.is_empty() {
                let except: Vec<String> = block.except.iter().map(|e| e.to_string()).collect();
                ip_block["except"] = json!(except);
            }
            json!({"ipBlock": ip_block})
        }
    }
}

fn port(rule: &PortRule) -> Value {
    let mut out = json!({"protocol": protocol(rule.protocol)});
    match &rule.port {
        PortMatch::Any => {}
        PortMatch::Range { start, end } if start == end => out["port"] = json!(start),
        PortMatch::Range { start, end } => {
            out["port"] = json!(start);
            out["endPort"] = json!(end);
        }
        PortMatch::Named(name) => out["port"] = json!(name),
    }
    out
}

fn rules(namespace: &str, rules: &[PolicyRule], peers_field: &str) -> Value {
    rules
        .iter()
        .map(|rule| {
            let mut out = serde_json::Map::new();
            if let Some(peers) = rule.peers.as_ref().filter(|p| !p.is_empty()) {
                let written: Vec<Value> = peers.iter().map(|p| peer(namespace, p)).collect();
                out.insert(peers_field.to_string(), written.into());
            }
            if !rule.ports.is_empty() {
                let written: Vec<Value> = rule.ports.iter().map(port).collect();
                out.insert("ports".to_string(), written.into());
            }
            Value::from(out)
        })
        .collect::<Vec<_>>()
        .into()
}

pub fn policy(policy: &KubernetesPolicy) -> Value {
    let ns = policy.key.namespace.as_str();
    let mut types = Vec::new();
    let mut spec = json!({"podSelector": selector(&policy.pod_selector)});
    if let Some(ingress) = &policy.ingress {
        types.push("Ingress");
        spec["ingress"] = rules(ns, ingress, "from");
    }
    if let Some(egress) = &policy.egress {
        types.push("Egress");
        spec["egress"] = rules(ns, egress, "to");
    }
    spec["policyTypes"] = json!(types);
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy.key.name, "namespace": ns},
        "spec": spec,
    })
}

fn write_file(path: &Path, objects: impl Iterator<Item = Value>, written: &mut Written) {
    let file = std::fs::File::create(path).expect("creating a manifest file");
    let mut out = std::io::BufWriter::new(file);
    for object in objects {
        out.write_all(b"---\n").expect("writing a manifest");
        yaml_serde::to_writer(&mut out, &object).expect("writing a manifest");
        written.objects += 1;
    }
    out.flush().expect("writing a manifest");
    written.files += 1;
    written.bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
}

/// Writes the cluster into `dir` (which must exist): `namespaces.yaml`, `pods-NN.yaml` and
/// `policies-NN.yaml`.
pub fn write(objects: &ClusterObjects, dir: &Path) -> Written {
    let mut written = Written {
        files: 0,
        bytes: 0,
        objects: 0,
    };
    write_file(
        &dir.join("namespaces.yaml"),
        objects.namespaces.iter().map(namespace),
        &mut written,
    );
    let per_file = objects.pods.len().div_ceil(POD_FILES).max(1);
    for (i, chunk) in objects.pods.chunks(per_file).enumerate() {
        write_file(
            &dir.join(format!("pods-{i:02}.yaml")),
            chunk.iter().map(pod),
            &mut written,
        );
    }
    let per_file = objects.policies.len().div_ceil(POLICY_FILES).max(1);
    for (i, chunk) in objects.policies.chunks(per_file).enumerate() {
        write_file(
            &dir.join(format!("policies-{i:02}.yaml")),
            chunk.iter().map(policy),
            &mut written,
        );
    }
    written
}

//! Kubernetes objects for the harness's pods and namespaces, as `kubectl apply` takes them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::harness::cluster::{Pod, Proto};

/// Label every namespace carries since Kubernetes 1.21 (1.20 does not add it itself).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The legacy isolation annotation and its DefaultDeny value.
pub const LEGACY_ANNOTATION: &str = "net.beta.kubernetes.io/network-policy";
pub const DEFAULT_DENY: &str = r#"{"ingress":{"isolation":"DefaultDeny"}}"#;

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut map: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": map},
    })
}

/// The Pod object of a harness pod: its node, labels, and one container listing every port it
/// serves (named ones with their names). No status: the test sets that like a kubelet.
pub fn pod(pod: &Pod) -> Value {
    let spec = &pod.spec;
    let mut ports: Vec<Value> = spec
        .named_ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.proto.kubernetes_name()}))
        .collect();
    for (proto, served) in [(Proto::Tcp, &spec.tcp), (Proto::Udp, &spec.udp)] {
        for port in served {
            let named = spec
                .named_ports
                .iter()
                .any(|p| p.proto == proto && p.port == *port);
            if !named {
                ports.push(json!({"containerPort": port, "protocol": proto.kubernetes_name()}));
            }
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels},
        "spec": {
            "nodeName": pod.node_name(),
            "containers": [{"name": "netprobe", "image": "palisade-netprobe", "ports": ports}],
        },
    })
}

/// A `networking.k8s.io/v1` NetworkPolicy with `spec` as given.
pub fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// A Pod object as a kubelet would have left it: [`pod`] plus a Running status with the pod's
/// IPv4 address (for the agent's `--manifests` source, which has no kubelet either).
pub fn pod_with_status(pod_object: &Pod) -> Value {
    let mut object = pod(pod_object);
    object["status"] = json!({
        "phase": "Running",
        "podIP": pod_object.ipv4.to_string(),
        "podIPs": [{"ip": pod_object.ipv4.to_string()}],
    });
    object
}

/// Writes `text` to `dir/file` atomically: written in `staging` (same file system, outside the
/// watched directory), then renamed in, so that an agent polling `dir` never reads half a file.
pub fn write_atomically(dir: &Path, staging: &Path, file: &str, object: &Value) -> Result<()> {
    let text = yaml_serde::to_string(object).context("serializing a manifest")?;
    let temporary = staging.join(file);
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    let target = dir.join(file);
    std::fs::rename(&temporary, &target)
        .with_context(|| format!("moving {} into place", target.display()))
}

/// The directory an agent's `--manifests` source watches, written atomically.
pub struct ManifestDir {
    pub path: std::path::PathBuf,
    staging: std::path::PathBuf,
}

impl ManifestDir {
    /// `manifests/` (watched) and `staging/` under `run_dir`.
    pub fn new(run_dir: &Path) -> Result<ManifestDir> {
        let dir = ManifestDir {
            path: run_dir.join("manifests"),
            staging: run_dir.join("staging"),
        };
        std::fs::create_dir_all(&dir.path)?;
        std::fs::create_dir_all(&dir.staging)?;
        Ok(dir)
    }

    pub fn write(&self, file: &str, object: &Value) -> Result<()> {
        write_atomically(&self.path, &self.staging, file, object)
    }

    /// Every pod of `cluster`, with its status, one file each.
    pub fn write_pods(&self, cluster: &crate::harness::cluster::Cluster) -> Result<()> {
        for pod in cluster.pods.values() {
            self.write(
                &format!("20-pod-{}-{}.yaml", pod.spec.namespace, pod.spec.name),
                &pod_with_status(pod),
            )?;
        }
        Ok(())
    }
}

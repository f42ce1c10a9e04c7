//! The cluster as Kubernetes manifests, and running `palisade apply` / `cleanup` on its nodes.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cluster::{Backend, Cluster};
use super::netns;

/// Label every namespace carries since Kubernetes 1.21; policies select namespaces by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What `palisade apply` said on one node.
#[derive(Debug, Clone)]
pub struct NodeOutput {
    pub node: String,
    pub stdout: String,
    pub stderr: String,
}

/// Every object of the cluster, with the file name to store it under.
pub fn objects(cluster: &Cluster) -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for (name, namespace) in &cluster.namespaces {
        let mut labels = namespace.labels.clone();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        objects.push((
            format!("10-namespace-{name}.yaml"),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": namespace.annotations,
                },
            }),
        ));
    }
    for pod in cluster.pods.values().filter(|p| !p.spec.external) {
        let spec = &pod.spec;
        let mut ports: Vec<Value> = spec
            .named_ports
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "containerPort": p.port,
                    "protocol": p.proto.kubernetes_name(),
                })
            })
            .collect();
        // Served ports without a name are listed too, as a real pod spec would.
        for (proto, served) in [
            (super::cluster::Proto::Tcp, &spec.tcp),
            (super::cluster::Proto::Udp, &spec.udp),
        ] {
            for port in served {
                if !spec
                    .named_ports
                    .iter()
                    .any(|p| p.proto == proto && p.port == *port)
                {
                    ports.push(json!({"containerPort": port, "protocol": proto.kubernetes_name()}));
                }
            }
        }
        let mut pod_ips = vec![json!({"ip": pod.ipv4.to_string()})];
        if let Some(ipv6) = pod.ipv6 {
            pod_ips.push(json!({"ip": ipv6.to_string()}));
        }
        objects.push((
            format!("20-pod-{}-{}.yaml", spec.namespace, spec.name),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": spec.name,
                    "namespace": spec.namespace,
                    "labels": spec.labels,
                },
                "spec": {
                    "nodeName": pod.node_name(),
                    "serviceAccountName": spec.service_account.as_deref().unwrap_or("default"),
                    "containers": [{
                        "name": "netprobe",
                        "image": "palisade-netprobe",
                        "ports": ports,
                    }],
                },
                "status": {
                    "phase": "Running",
                    "podIP": pod.ipv4.to_string(),
                    "podIPs": pod_ips,
                },
            }),
        ));
    }
    for (key, pod) in &cluster.manifest_only_pods {
        objects.push((
            format!("25-manifest-only-pod-{}.yaml", key.replace('/', "-")),
            pod.clone(),
        ));
    }
    for (key, object) in &cluster.objects {
        objects.push((
            format!("40-{}.yaml", key.replace('/', "-").to_ascii_lowercase()),
            object.clone(),
        ));
    }
    for (key, policy) in &cluster.policies {
        objects.push((
            format!("30-networkpolicy-{}.yaml", key.replace('/', "-")),
            policy.clone(),
        ));
    }
    objects
}

/// Writes one file per object into `dir`.
pub fn write(cluster: &Cluster, dir: &Path) -> Result<()> {
    for (file, object) in objects(cluster) {
        let text = yaml_serde::to_string(&object).context("serializing a manifest")?;
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Writes the manifests and runs `palisade apply` in every node namespace at once, each with
/// its own `--node`. Fails, with every failing node's output, unless all exit 0.
pub fn apply(cluster: &Cluster, backend: Backend) -> Result<Vec<NodeOutput>> {
    let dir = tempfile::Builder::new()
        .prefix("palisade-manifests-")
        .tempdir()
        .context("creating a manifest directory")?;
    write(cluster, dir.path())?;
    let result = run_on_every_node(cluster, |node_name| {
        let mut command = Command::new("apply");
        command.arg("--manifests").arg(dir.path()).args([
            "--node",
            node_name,
            "--backend",
            backend.as_str(),
        ]);
        command.args(&cluster.apply_args);
        command
    });
    if result.is_err() {
        // Keep the manifests for whoever investigates the failure.
        let kept = dir.keep();
        return result.with_context(|| format!("manifests kept in {}", kept.display()));
    }
    result
}

/// Starts `palisade apply` on the first node and sends it SIGKILL `after` its start, as a
/// node losing its agent mid-sync would. Whether it was still running when killed; the restore
/// tool it had started, if any, runs on, as it would then.
pub fn apply_killed(
    cluster: &Cluster,
    backend: Backend,
    after: std::time::Duration,
) -> Result<bool> {
    let node = cluster.nodes.first().context("the cluster has no node")?;
    let dir = tempfile::Builder::new()
        .prefix("palisade-manifests-")
        .tempdir()
        .context("creating a manifest directory")?;
    write(cluster, dir.path())?;
    let mut child = netns::in_netns(&node.netns, &cluster.binaries.palisade)
        .arg("apply")
        .arg("--manifests")
        .arg(dir.path())
        .args(["--node", &node.name, "--backend", backend.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting palisade apply")?;
    std::thread::sleep(after);
    let running = child.try_wait()?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    Ok(running)
}

/// Runs `palisade cleanup` in every node namespace.
pub fn cleanup(cluster: &Cluster, backend: Backend) -> Result<Vec<NodeOutput>> {
    run_on_every_node(cluster, |_| {
        let mut command = Command::new("cleanup");
        command.args(["--backend", backend.as_str()]);
        command
    })
}

/// Runs `palisade SUBCOMMAND ARGS` in every node at once. `subcommand` builds a [`Command`]
/// whose program is the subcommand's name and whose args are its arguments.
fn run_on_every_node(
    cluster: &Cluster,
    subcommand: impl Fn(&str) -> Command,
) -> Result<Vec<NodeOutput>> {
    let mut children: Vec<(String, String, Child)> = Vec::new();
    for node in &cluster.nodes {
        let template = subcommand(&node.name);
        let mut command = netns::in_netns(&node.netns, &cluster.binaries.palisade);
        command
            .arg(template.get_program())
            .args(template.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = netns::describe(&command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        children.push((node.name.clone(), line, child));
    }
    let mut outputs = Vec::new();
    let mut failures = Vec::new();
    for (node, line, child) in children {
        let output = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{line}`"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            failures.push(format!(
                "{node}: `{line}` exited with {}\n--- stderr:\n{}\n--- stdout:\n{}",
                output.status,
                stderr.trim_end(),
                stdout.trim_end()
            ));
        }
        outputs.push(NodeOutput {
            node,
            stdout,
            stderr,
        });
    }
    if !failures.is_empty() {
        bail!("palisade failed:\n{}", failures.join("\n"));
    }
    Ok(outputs)
}

//! Scenario files: a cluster, then steps that change it, each followed by `palisade apply` on
//! every node and a check of the full reachability matrix against the step's expectation.
//!
//! ```yaml
//! description: What the scenario proves.
//! nodes: 2                      # default 2
//! probeFromNodes: true          # also probe from each node to its own pods (default false)
//! probeTimeoutMs: 300           # default 300
//! defaults: {tcp: [80], udp: [53], ipv6: false}   # served ports and family of every pod
//! namespaces:
//!   prod: {labels: {env: prod}, annotations: {}}
//! pods:
//!   prod/db:                    # namespace/name
//!     node: 2
//!     labels: {app: db}
//!     tcp: [80, 5432]           # overrides defaults
//!     ports: {sql: tcp/5432}    # named container ports
//!     ipv6: true                # dual-stack
//!     host: 10                  # addresses 198.18.2.10 and fd50:0:0:2::10
//!     serviceAccount: db        # spec.serviceAccountName (default `default`)
//!     external: true            # runs, but no Pod object: an address outside the cluster
//! steps:
//!   - name: deny into prod
//!     note: Why the step's expectation holds.
//!     # Changes, done in this order (all optional):
//!     deletePods: [prod/old]
//!     addPods: {prod/new: {node: 1}}
//!     namespaces: {prod: {labels: {env: null}, annotations: {a: b}}}   # null removes
//!     podLabels: {prod/db: {app: null, tier: db}}
//!     delete: [prod/some-policy]    # NetworkPolicies (or manifest-only pods) by namespace/name,
//!                                   # other objects by Kind/namespace/name or Kind/name
//!     apply: [ {kind: NetworkPolicy, ...}, {kind: Namespace, ...}, {kind: Pod, ...} ]
//!                                   # a Pod here is manifest-only: written, never run; any
//!                                   # other kind (Calico's, ServiceAccount, EndpointSlice) is
//!                                   # written as it is
//!     cleanup: false                # true: `palisade cleanup` instead of apply
//!     expect:
//!       - allow * -> *
//!       - deny * -> prod/*
//! ```
//!
//! The expectation lines are described in [`super::expect`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use super::cluster::{patch_map, Backend, Binaries, Cluster, NamedPort, PodSpec, Proto};
use super::expect::{self, Mismatch};
use super::manifests;

/// Probes that were expected to connect but timed out are tried again with this timeout
/// before they count as failures: on a busy machine a first packet can be slow, while a probe
/// that a policy blocks stays blocked however long one waits.
const RETRY_TIMEOUT: Duration = Duration::from_millis(2_000);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    pub description: String,
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    #[serde(default)]
    pub probe_from_nodes: bool,
    #[serde(default = "default_timeout_ms")]
    pub probe_timeout_ms: u64,
    #[serde(default)]
    pub defaults: PodDefaults,
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceDef>,
    pub pods: BTreeMap<String, PodDef>,
    pub steps: Vec<Step>,
    /// More arguments for `palisade apply`, e.g. `[--max-ipset-size, "2"]`.
    #[serde(default)]
    pub palisade_args: Vec<String>,
}

fn default_nodes() -> usize {
    2
}

fn default_timeout_ms() -> u64 {
    300
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodDefaults {
    pub tcp: Option<Vec<u16>>,
    pub udp: Option<Vec<u16>>,
    pub ipv6: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDef {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodDef {
    pub node: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub tcp: Option<Vec<u16>>,
    pub udp: Option<Vec<u16>>,
    /// Named container ports: `name: tcp/80`.
    #[serde(default)]
    pub ports: BTreeMap<String, String>,
    pub ipv6: Option<bool>,
    pub host: Option<u8>,
    /// `spec.serviceAccountName` (default `default`).
    pub service_account: Option<String>,
    /// Runs but is left out of the manifests: traffic from outside the cluster.
    #[serde(default)]
    pub external: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePatch {
    #[serde(default)]
    pub labels: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub annotations: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub note: Option<String>,
    #[serde(default)]
    pub delete_pods: Vec<String>,
    #[serde(default)]
    pub add_pods: BTreeMap<String, PodDef>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespacePatch>,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub delete: Vec<String>,
    #[serde(default)]
    pub apply: Vec<Value>,
    #[serde(default)]
    pub cleanup: bool,
    pub expect: Vec<String>,
}

pub fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let scenario: Scenario =
        yaml_serde::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // Parse every expectation up front: a typo in step 7 should not cost a cluster setup.
    for step in &scenario.steps {
        expect::parse(&step.expect).with_context(|| format!("step {:?}", step.name))?;
    }
    Ok(scenario)
}

fn pod_spec(key: &str, def: &PodDef, defaults: &PodDefaults) -> Result<PodSpec> {
    let (namespace, name) = key
        .split_once('/')
        .ok_or_else(|| anyhow!("pod {key:?} is not namespace/name"))?;
    let mut spec = PodSpec::new(namespace, name, def.node);
    spec.labels = def.labels.clone();
    spec.tcp = def
        .tcp
        .clone()
        .or_else(|| defaults.tcp.clone())
        .unwrap_or_else(|| vec![80]);
    spec.udp = def
        .udp
        .clone()
        .or_else(|| defaults.udp.clone())
        .unwrap_or_default();
    spec.ipv6 = def.ipv6.or(defaults.ipv6).unwrap_or(false);
    spec.host = def.host;
    spec.service_account = def.service_account.clone();
    spec.external = def.external;
    for (port_name, service) in &def.ports {
        let (proto, port) = service.split_once('/').ok_or_else(|| {
            anyhow!("pod {key}: port {port_name}: {service:?} is not tcp/PORT or udp/PORT")
        })?;
        spec.named_ports.push(NamedPort {
            name: port_name.clone(),
            proto: Proto::parse(proto)?,
            port: port
                .parse()
                .with_context(|| format!("pod {key}: port {port_name}: {service:?}"))?,
        });
    }
    Ok(spec)
}

/// What a scenario run measured, for the caller's report.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: usize,
    pub probes: usize,
    pub slowest_matrix: Duration,
    pub failed_steps: Vec<String>,
}

/// Runs the scenario in `path` against `backend`; prints each step's matrix; fails when any
/// step's measured matrix differs from its expectation.
pub fn run_file(path: &Path, binaries: &Binaries, backend: Backend) -> Result<Report> {
    let scenario = load(path)?;
    let title = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("=== scenario {title} (backend {})", backend.as_str());
    println!("{}", scenario.description.trim_end());

    let setup_started = std::time::Instant::now();
    let mut cluster = Cluster::new(binaries.clone(), "palh", scenario.nodes)?;
    cluster.apply_args = scenario.palisade_args.clone();
    for (name, def) in &scenario.namespaces {
        let namespace = cluster.ensure_namespace(name);
        namespace.labels = def.labels.clone();
        namespace.annotations = def.annotations.clone();
    }
    let specs = scenario
        .pods
        .iter()
        .map(|(key, def)| pod_spec(key, def, &scenario.defaults))
        .collect::<Result<Vec<_>>>()?;
    cluster.add_pods(specs)?;
    println!(
        "cluster {}: {} nodes, {} pods, set up in {:.2}s",
        cluster.prefix,
        cluster.nodes.len(),
        cluster.pods.len(),
        setup_started.elapsed().as_secs_f64()
    );
    for pod in cluster.pods.values() {
        println!(
            "  {:<24} {} {:<13} {}",
            pod.key(),
            pod.node_name(),
            pod.ipv4,
            pod.ipv6.map(|ip| ip.to_string()).unwrap_or_default()
        );
    }

    let timeout = Duration::from_millis(scenario.probe_timeout_ms);
    let mut report = Report::default();
    let mut failures = Vec::new();
    for (number, step) in scenario.steps.iter().enumerate() {
        let label = format!(
            "step {}/{} {:?}",
            number + 1,
            scenario.steps.len(),
            step.name
        );
        println!("\n--- {label}");
        if let Some(note) = &step.note {
            println!("    {}", note.trim_end().replace('\n', "\n    "));
        }
        apply_changes(&mut cluster, step, &scenario.defaults).with_context(|| label.clone())?;
        let outputs = if step.cleanup {
            manifests::cleanup(&cluster, backend)
        } else {
            manifests::apply(&cluster, backend)
        }
        .with_context(|| label.clone())?;
        for output in outputs {
            for line in output.stdout.lines().filter(|l| !l.trim().is_empty()) {
                println!("    [{}] {line}", output.node);
            }
        }
        let lines = expect::parse(&step.expect)?;
        let mut matrix = cluster
            .probe_matrix(scenario.probe_from_nodes, timeout)
            .with_context(|| label.clone())?;
        let mut mismatches =
            expect::compare(&lines, &matrix.observations).with_context(|| label.clone())?;
        let retried = retry_slow_probes(&cluster, &mut matrix, &mut mismatches, &lines)?;
        println!(
            "{} probes in {:.2}s{}: {}",
            matrix.observations.len(),
            matrix.elapsed.as_secs_f64(),
            if retried.0 > 0 {
                format!(
                    " (+ {} timed-out probes retried with {:?}, {} of them connected then)",
                    retried.0, RETRY_TIMEOUT, retried.1
                )
            } else {
                String::new()
            },
            if mismatches.is_empty() {
                "as expected".to_string()
            } else {
                format!("{} MISMATCHES", mismatches.len())
            }
        );
        print!("{}", expect::grid(&matrix, &mismatches));
        report.steps += 1;
        report.probes += matrix.observations.len();
        report.slowest_matrix = report.slowest_matrix.max(matrix.elapsed);
        if !mismatches.is_empty() {
            let table = expect::mismatch_table(&mismatches);
            println!("{table}");
            failures.push(format!("{label}: {} mismatches\n{table}", mismatches.len()));
            report.failed_steps.push(step.name.clone());
        }
    }
    if !failures.is_empty() {
        bail!(
            "scenario {title} (backend {}): {} of {} steps differ from their expectation:\n\n{}",
            backend.as_str(),
            failures.len(),
            scenario.steps.len(),
            failures.join("\n")
        );
    }
    Ok(report)
}

/// Probes the mismatches that expected a connection but timed out again, with a longer
/// timeout; returns how many were retried and how many connected then.
fn retry_slow_probes(
    cluster: &Cluster,
    matrix: &mut super::probe::Matrix,
    mismatches: &mut Vec<Mismatch>,
    lines: &[expect::Line],
) -> Result<(usize, usize)> {
    let slow: Vec<_> = mismatches
        .iter()
        .filter(|m| {
            m.expected_allow == Some(true)
                && matches!(
                    m.observation.verdict,
                    super::probe::Verdict::Blocked | super::probe::Verdict::Stalled
                )
        })
        .map(|m| m.observation.probe.clone())
        .collect();
    if slow.is_empty() {
        return Ok((0, 0));
    }
    let retried = cluster.run_probes(&slow, RETRY_TIMEOUT)?;
    let recovered = retried.iter().filter(|o| o.verdict.is_connected()).count();
    for observation in retried {
        if let Some(slot) = matrix
            .observations
            .iter_mut()
            .find(|o| o.probe == observation.probe)
        {
            *slot = observation;
        }
    }
    *mismatches = expect::compare(lines, &matrix.observations)?;
    Ok((slow.len(), recovered))
}

fn apply_changes(cluster: &mut Cluster, step: &Step, defaults: &PodDefaults) -> Result<()> {
    for key in &step.delete_pods {
        cluster.delete_pod(key)?;
    }
    if !step.add_pods.is_empty() {
        let specs = step
            .add_pods
            .iter()
            .map(|(key, def)| pod_spec(key, def, defaults))
            .collect::<Result<Vec<_>>>()?;
        cluster.add_pods(specs)?;
    }
    for (name, patch) in &step.namespaces {
        let namespace = cluster.ensure_namespace(name);
        patch_map(&mut namespace.labels, &patch.labels);
        patch_map(&mut namespace.annotations, &patch.annotations);
    }
    for (key, patch) in &step.pod_labels {
        cluster.patch_pod_labels(key, patch)?;
    }
    for key in &step.delete {
        cluster.delete_object(key)?;
    }
    for object in &step.apply {
        cluster.apply_object(object.clone())?;
    }
    Ok(())
}

//! End-to-end pieces for `agent_e2e`, `calico_e2e`, the soak and the upgrade test: a real
//! apiserver reachable from every node namespace, `palisade agent` processes, the metrics
//! text format, Kubernetes objects, the steady two-node cluster, and verdicts sampled over
//! time. Built on the shared harness (`crate::harness`), which it only reads.

pub mod agent;
pub mod apiserver;
pub mod fault_proxy;
pub mod kube;
pub mod metrics;
// Only the single-agent fault tests use it; agent_e2e, which checks the rest is used, does not.
#[allow(dead_code)]
pub mod one_server;
// Only the soak and the upgrade test run agents as the DaemonSet would.
#[allow(dead_code)]
pub mod pod_env;
pub mod proc;
pub mod sockets;
pub mod steady;
pub mod verdicts;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::cluster::{Binaries, NamedPort, PodSpec, Proto};

/// The last `lines` lines of a text file ("" if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A scratch directory for one test (apiserver files, agent logs, manifests). Removed at the
/// end, except after a panic, when it is kept for whoever investigates and its path printed.
pub struct RunDir {
    dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(tag: &str) -> Result<RunDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("palisade-{tag}-"))
            .tempdir()
            .context("creating a scratch directory")?;
        Ok(RunDir {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "logs and files of the failed test kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// `12ms`, `1.25s`.
pub fn ms(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Median (mean of the middle two for an even count) and maximum of a list of durations.
pub fn median_and_max(values: &[Duration]) -> Option<(Duration, Duration)> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let max = *sorted.last()?;
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2
    };
    Some((median, max))
}

/// The binaries under test: `palisade` (or `$PALISADE_BIN`) and the probe.
pub fn binaries() -> Binaries {
    Binaries {
        palisade: std::env::var_os("PALISADE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_palisade"))),
        netprobe: PathBuf::from(env!("CARGO_BIN_EXE_palisade-netprobe")),
    }
}

/// A pod of the harness: its labels, the TCP and UDP ports it serves, and its named ports.
pub fn pod_spec(
    namespace: &str,
    name: &str,
    node: usize,
    labels: &[(&str, &str)],
    tcp: &[u16],
    udp: &[u16],
    named: &[(&str, Proto, u16)],
) -> PodSpec {
    let mut spec = PodSpec::new(namespace, name, node);
    spec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.tcp = tcp.to_vec();
    spec.udp = udp.to_vec();
    spec.named_ports = named
        .iter()
        .map(|(name, proto, port)| NamedPort {
            name: name.to_string(),
            proto: *proto,
            port: *port,
        })
        .collect();
    spec
}

//! Measuring reachability with real packets: one `palisade-netprobe probe` process per source,
//! all sources at once, each probing all its targets at once.

use std::fmt;
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::cluster::{Cluster, Family, Proto};
use super::netns;

/// Where a probe starts: a pod, or a node's own namespace (standing in for the kubelet's
/// health checks, which Kubernetes always lets through to the node's pods).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Pod(String),
    /// 1-based node index.
    Node(usize),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Pod(key) => f.write_str(key),
            Source::Node(index) => write!(f, "node/{}", super::cluster::node_name(*index)),
        }
    }
}

/// One probe: a source, a destination pod and one of its ports, over one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Probe {
    pub source: Source,
    pub destination: String,
    pub family: Family,
    pub proto: Proto,
    pub port: u16,
    pub address: IpAddr,
}

impl Probe {
    /// `tcp/80`
    pub fn service(&self) -> String {
        format!("{}/{}", self.proto.as_str(), self.port)
    }

    fn netprobe_target(&self) -> String {
        match self.address {
            IpAddr::V4(ip) => format!("{}:{ip}:{}", self.proto.as_str(), self.port),
            IpAddr::V6(ip) => format!("{}:[{ip}]:{}", self.proto.as_str(), self.port),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {} {}",
            self.source,
            self.destination,
            self.service(),
            self.family.as_str()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Connected,
    /// Nothing came back before the timeout: what a DROP looks like.
    Blocked,
    Refused,
    Unreachable,
    /// TCP connected but no banner came.
    Stalled,
    /// A banner from a server other than the destination pod's: the harness is miswired.
    Misrouted,
    Error,
}

impl Verdict {
    pub fn is_connected(&self) -> bool {
        *self == Verdict::Connected
    }

    /// The single character of the matrix grid.
    pub fn symbol(&self) -> char {
        match self {
            Verdict::Connected => '+',
            Verdict::Blocked => '.',
            Verdict::Refused => 'R',
            Verdict::Unreachable => 'U',
            Verdict::Stalled => 'S',
            Verdict::Misrouted => 'M',
            Verdict::Error => '!',
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Connected => "connected",
            Verdict::Blocked => "timed out",
            Verdict::Refused => "refused",
            Verdict::Unreachable => "unreachable",
            Verdict::Stalled => "stalled",
            Verdict::Misrouted => "MISROUTED",
            Verdict::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observation {
    pub probe: Probe,
    pub verdict: Verdict,
    /// The banner, or what went wrong.
    pub detail: String,
}

/// The full reachability matrix of one moment.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub observations: Vec<Observation>,
    /// Wall time of the whole measurement.
    pub elapsed: Duration,
}

#[derive(Deserialize)]
struct NetprobeLine {
    target: String,
    verdict: String,
    detail: String,
}

impl Cluster {
    /// The network namespace a source runs in.
    pub fn source_netns(&self, source: &Source) -> Result<String> {
        match source {
            Source::Pod(key) => Ok(self.pod(key)?.netns.clone()),
            Source::Node(index) => Ok(self.node(*index)?.netns.clone()),
        }
    }

    /// Every probe of the full matrix: each pod to every other pod, on every port the
    /// destination serves, over IPv4 and (when both ends are dual-stack) IPv6; with
    /// `from_nodes`, also each node to each of its own pods.
    pub fn matrix_probes(&self, from_nodes: bool) -> Result<Vec<Probe>> {
        let mut probes = Vec::new();
        for source in self.pods.values() {
            for destination in self.pods.values() {
                if source.key() == destination.key() {
                    continue;
                }
                for family in destination.families() {
                    if source.address(family).is_none() {
                        continue;
                    }
                    probes.extend(self.probes_to(
                        Source::Pod(source.key()),
                        &destination.key(),
                        family,
                    )?);
                }
            }
        }
        if from_nodes {
            for node in &self.nodes {
                for destination in self.pods.values().filter(|p| p.spec.node == node.index) {
                    for family in destination.families() {
                        probes.extend(self.probes_to(
                            Source::Node(node.index),
                            &destination.key(),
                            family,
                        )?);
                    }
                }
            }
        }
        Ok(probes)
    }

    /// Probes from `source` to every port `destination` serves over `family`.
    pub fn probes_to(
        &self,
        source: Source,
        destination: &str,
        family: Family,
    ) -> Result<Vec<Probe>> {
        let pod = self.pod(destination)?;
        let address = pod
            .address(family)
            .ok_or_else(|| anyhow!("pod {destination} has no {} address", family.as_str()))?;
        let served = pod
            .spec
            .tcp
            .iter()
            .map(|port| (Proto::Tcp, *port))
            .chain(pod.spec.udp.iter().map(|port| (Proto::Udp, *port)));
        Ok(served
            .map(|(proto, port)| Probe {
                source: source.clone(),
                destination: destination.to_string(),
                family,
                proto,
                port,
                address,
            })
            .collect())
    }

    /// One probe, for callers that want a single answer.
    pub fn probe_one(
        &self,
        source: Source,
        destination: &str,
        proto: Proto,
        port: u16,
        family: Family,
        timeout: Duration,
    ) -> Result<Observation> {
        let address = self
            .pod(destination)?
            .address(family)
            .ok_or_else(|| anyhow!("pod {destination} has no {} address", family.as_str()))?;
        let probe = Probe {
            source,
            destination: destination.to_string(),
            family,
            proto,
            port,
            address,
        };
        self.run_probes(&[probe], timeout)?
            .pop()
            .ok_or_else(|| anyhow!("netprobe returned nothing"))
    }

    /// The full matrix, measured.
    pub fn probe_matrix(&self, from_nodes: bool, timeout: Duration) -> Result<Matrix> {
        let probes = self.matrix_probes(from_nodes)?;
        let started = Instant::now();
        let observations = self.run_probes(&probes, timeout)?;
        Ok(Matrix {
            observations,
            elapsed: started.elapsed(),
        })
    }

    /// Runs `probes`: one netprobe process per source, all at once. Results come back in the
    /// order of `probes`.
    pub fn run_probes(&self, probes: &[Probe], timeout: Duration) -> Result<Vec<Observation>> {
        let mut sources: Vec<Source> = probes.iter().map(|p| p.source.clone()).collect();
        sources.sort();
        sources.dedup();

        let mut running: Vec<(Vec<&Probe>, String, Child)> = Vec::new();
        for source in sources {
            let group: Vec<&Probe> = probes.iter().filter(|p| p.source == source).collect();
            let udp_count = group.iter().filter(|p| p.proto == Proto::Udp).count();
            let mut command =
                netns::in_netns(&self.source_netns(&source)?, &self.binaries.netprobe);
            command
                .arg("probe")
                .args(["--timeout-ms", &timeout.as_millis().to_string()])
                .args([
                    "--udp-source-port-base",
                    &self
                        .allocate_udp_source_ports(&source, group.len().max(udp_count))
                        .to_string(),
                ])
                .args(group.iter().map(|p| p.netprobe_target()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let line = netns::describe(&command);
            let child = command
                .spawn()
                .with_context(|| format!("cannot start `{line}`"))?;
            running.push((group, line, child));
        }

        let mut observations = Vec::with_capacity(probes.len());
        for (group, line, child) in running {
            let output = child
                .wait_with_output()
                .with_context(|| format!("waiting for `{line}`"))?;
            if !output.status.success() {
                bail!(
                    "`{line}` failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim_end()
                );
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            let lines: Vec<&str> = stdout.lines().collect();
            if lines.len() != group.len() {
                bail!(
                    "`{line}` printed {} results for {} targets:\n{stdout}",
                    lines.len(),
                    group.len()
                );
            }
            for (probe, text) in group.into_iter().zip(lines) {
                let result: NetprobeLine = serde_json::from_str(text)
                    .with_context(|| format!("netprobe printed {text:?}"))?;
                if result.target != probe.netprobe_target() {
                    bail!(
                        "netprobe answered for {} instead of {}",
                        result.target,
                        probe.netprobe_target()
                    );
                }
                observations.push(observe(probe, &result));
            }
        }
        // Back into the order of `probes`.
        let mut ordered = Vec::with_capacity(probes.len());
        for probe in probes {
            let index = observations
                .iter()
                .position(|o| &o.probe == probe)
                .ok_or_else(|| anyhow!("no result for {probe}"))?;
            ordered.push(observations.swap_remove(index));
        }
        Ok(ordered)
    }
}

fn observe(probe: &Probe, result: &NetprobeLine) -> Observation {
    let mut verdict = match result.verdict.as_str() {
        "connected" => Verdict::Connected,
        "blocked" => Verdict::Blocked,
        "refused" => Verdict::Refused,
        "unreachable" => Verdict::Unreachable,
        "stalled" => Verdict::Stalled,
        _ => Verdict::Error,
    };
    // A TCP banner names the server: a connection must reach the pod it was meant for.
    if verdict == Verdict::Connected && probe.proto == Proto::Tcp {
        let expected = format!("netprobe {} tcp/{}", probe.destination, probe.port);
        if result.detail != expected {
            verdict = Verdict::Misrouted;
        }
    }
    Observation {
        probe: probe.clone(),
        verdict,
        detail: result.detail.clone(),
    }
}

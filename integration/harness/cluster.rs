//! A test cluster made of network namespaces, wired the way Calico wires a real one.
//!
//! ```text
//!  pod netns            node netns (node-K)                      fabric netns
//!  eth0 198.18.K.H/32 ─ caliN (proxy_arp, fe80::1) ... eth0 198.19.0.K/24 ─ nodeK ─ br0
//!       fd50:0:0:K::H/128                                fd50:0:0:ff00::K/64
//! ```
//!
//! - Each node forwards (IPv4 and IPv6), holds `169.254.1.1/32` on `lo` (the pods' gateway:
//!   the node answers ARP for it on every pod veth), a `/32` (`/128`) route per local pod on its
//!   veth, a blackhole for the rest of its pod CIDR, and routes to every other node's pod CIDR
//!   via that node's fabric address.
//! - Each pod has `eth0` with one IPv4 `/32` (and, when dual-stack, one IPv6 `/128`), a default
//!   route via `169.254.1.1 dev eth0 onlink` and, for IPv6, via `fe80::1`, a link-local address
//!   every host-side veth carries.
//! - Pod `H` on node `K` has `198.18.K.H` and `fd50:0:0:K::H` (the same digits), so scenario
//!   authors can write ipBlocks from the pod list.
//!
//! Every namespace is named with the cluster's unique prefix; [`Cluster`]'s `Drop` kills every
//! process inside them and deletes them all, on success, failure or panic.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::netns;

/// The pods' gateway, on every node's `lo`, as in Calico.
pub const GATEWAY_V4: &str = "169.254.1.1";
/// The pods' IPv6 gateway: a link-local address on every host-side veth.
pub const GATEWAY_V6: &str = "fe80::1";
/// How long a pod's server may take to start listening.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The programs the cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub palisade: PathBuf,
    pub netprobe: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    pub fn parse(text: &str) -> Result<Proto> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => bail!("unknown protocol {text:?} (expected tcp or udp)"),
        }
    }
}

/// Which iptables flavour `palisade apply --backend` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Legacy,
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

/// What a pod is: its Kubernetes identity, where it runs and what it serves.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// 1-based: node 1 is `node-1`.
    pub node: usize,
    pub labels: BTreeMap<String, String>,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    /// Container ports with names, for policies' named ports.
    pub named_ports: Vec<NamedPort>,
    pub ipv6: bool,
    /// The last part of the pod's addresses; the first free one from 2 up when absent.
    pub host: Option<u8>,
    /// `spec.serviceAccountName`; Kubernetes' `default` when absent.
    pub service_account: Option<String>,
    /// Runs, but has no Pod object in the manifests: a workload outside the cluster, whose
    /// address no policy knows.
    pub external: bool,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, node: usize) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node,
            labels: BTreeMap::new(),
            tcp: Vec::new(),
            udp: Vec::new(),
            named_ports: Vec::new(),
            ipv6: false,
            host: None,
            service_account: None,
            external: false,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub struct Pod {
    pub spec: PodSpec,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    /// The pod's veth end in the node namespace.
    pub host_veth: String,
    server: Option<Child>,
}

impl Pod {
    pub fn key(&self) -> String {
        self.spec.key()
    }

    pub fn node_name(&self) -> String {
        node_name(self.spec.node)
    }

    pub fn address(&self, family: Family) -> Option<std::net::IpAddr> {
        match family {
            Family::V4 => Some(self.ipv4.into()),
            Family::V6 => self.ipv6.map(Into::into),
        }
    }

    pub fn families(&self) -> Vec<Family> {
        let mut families = vec![Family::V4];
        if self.ipv6.is_some() {
            families.push(Family::V6);
        }
        families
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            // Closing stdin ends the server by itself; the kill covers a server that is stuck.
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Node {
    /// 1-based.
    pub index: usize,
    pub name: String,
    pub netns: String,
}

#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

pub fn node_name(index: usize) -> String {
    format!("node-{index}")
}

pub fn node_link_v4(node: usize) -> Result<Ipv4Addr> {
    let node = u8::try_from(node).map_err(|_| anyhow!("node index {node} is too large"))?;
    Ok(Ipv4Addr::new(198, 19, 0, node))
}

pub fn node_link_v6(node: usize) -> Result<Ipv6Addr> {
    format!("fd50:0:0:ff00::{node}")
        .parse()
        .map_err(|e| anyhow!("node index {node}: {e}"))
}

pub fn pod_cidr_v4(node: usize) -> String {
    format!("198.18.{node}.0/24")
}

pub fn pod_cidr_v6(node: usize) -> String {
    format!("fd50:0:0:{node}::/64")
}

pub fn pod_ipv4(node: usize, host: u8) -> Result<Ipv4Addr> {
    let node = u8::try_from(node).map_err(|_| anyhow!("node index {node} is too large"))?;
    Ok(Ipv4Addr::new(198, 18, node, host))
}

/// `fd50:0:0:K::H` with H written with the same digits as in the IPv4 address.
pub fn pod_ipv6(node: usize, host: u8) -> Result<Ipv6Addr> {
    format!("fd50:0:0:{node}::{host}")
        .parse()
        .map_err(|e| anyhow!("pod address on node {node}, host {host}: {e}"))
}

/// Turns a Kubernetes name into something safe in a namespace name.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub struct Cluster {
    pub prefix: String,
    pub binaries: Binaries,
    pub fabric: String,
    pub nodes: Vec<Node>,
    pub pods: BTreeMap<String, Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// NetworkPolicy objects by `namespace/name`.
    pub policies: BTreeMap<String, Value>,
    /// Pod objects with no namespace behind them (finished pods, say), by `namespace/name`:
    /// written to the manifests as they are.
    pub manifest_only_pods: BTreeMap<String, Value>,
    /// Every other object (Calico resources, ServiceAccounts, EndpointSlices), written to the
    /// manifests as they are, by [`object_key`].
    pub objects: BTreeMap<String, Value>,
    /// More arguments for every `palisade apply` (compiler options such as
    /// `--max-ipset-size`).
    pub apply_args: Vec<String>,
    next_veth: usize,
    /// Source ports handed to UDP probes, so no probe repeats an earlier probe's 5-tuple.
    /// Per source: a UDP 5-tuple includes the source address, so each source has the whole
    /// range to itself, and conntrack's entry of an earlier probe is long gone before a port
    /// comes round again.
    pub(crate) udp_port_cursors: std::sync::Mutex<BTreeMap<super::probe::Source, u32>>,
}

impl Cluster {
    /// Creates the fabric and `node_count` nodes. `tag` starts every namespace name (for
    /// example `palh`); namespaces of earlier runs with the same tag whose process died are
    /// removed first.
    pub fn new(binaries: Binaries, tag: &str, node_count: usize) -> Result<Cluster> {
        if !(1..=200).contains(&node_count) {
            bail!("a cluster has 1 to 200 nodes, not {node_count}");
        }
        for binary in [&binaries.palisade, &binaries.netprobe] {
            if !binary.exists() {
                bail!("{} does not exist (build it first)", binary.display());
            }
        }
        netns::reap_stale(tag);
        let prefix = netns::unique_prefix(tag);
        // From here on, `Drop` removes whatever was created, also when a later step fails.
        let mut cluster = Cluster {
            fabric: format!("{prefix}fabric"),
            prefix,
            binaries,
            nodes: Vec::new(),
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            manifest_only_pods: BTreeMap::new(),
            objects: BTreeMap::new(),
            apply_args: Vec::new(),
            next_veth: 0,
            udp_port_cursors: std::sync::Mutex::default(),
        };
        cluster.create_fabric()?;
        for index in 1..=node_count {
            cluster.create_node(index)?;
        }
        for index in 1..=node_count {
            cluster.route_to_other_nodes(index)?;
        }
        Ok(cluster)
    }

    fn create_fabric(&mut self) -> Result<()> {
        netns::add_netns(&self.fabric)?;
        netns::ip_batch(
            &self.fabric,
            &[
                "link set lo up".to_string(),
                "link add br0 type bridge".to_string(),
                "link set br0 up".to_string(),
            ],
        )
    }

    fn create_node(&mut self, index: usize) -> Result<()> {
        let name = node_name(index);
        let node_netns = format!("{}{}", self.prefix, name);
        netns::add_netns(&node_netns)?;
        self.nodes.push(Node {
            index,
            name,
            netns: node_netns.clone(),
        });
        netns::sysctl(
            &node_netns,
            &[
                "net.ipv4.ip_forward=1".into(),
                "net.ipv6.conf.all.forwarding=1".into(),
                // Addresses must work at once, not after seconds of duplicate detection.
                "net.ipv6.conf.all.accept_dad=0".into(),
                "net.ipv6.conf.default.accept_dad=0".into(),
            ],
        )?;
        let fabric_port = format!("node{index}");
        netns::ip_batch(
            &self.fabric,
            &[
                format!("link add {fabric_port} type veth peer name eth0 netns {node_netns}"),
                format!("link set {fabric_port} master br0"),
                format!("link set {fabric_port} up"),
            ],
        )?;
        netns::ip_batch(
            &node_netns,
            &[
                "link set lo up".to_string(),
                format!("addr add {GATEWAY_V4}/32 dev lo"),
                format!("addr add {}/24 dev eth0", node_link_v4(index)?),
                format!("addr add {}/64 dev eth0 nodad", node_link_v6(index)?),
                "link set eth0 up".to_string(),
                // Addresses of the node's own CIDR that no pod holds go nowhere, as in Calico.
                format!("route add blackhole {}", pod_cidr_v4(index)),
                format!("route add blackhole {}", pod_cidr_v6(index)),
            ],
        )
    }

    fn route_to_other_nodes(&self, index: usize) -> Result<()> {
        let node = &self.nodes[index - 1];
        let mut lines = Vec::new();
        for other in &self.nodes {
            if other.index == index {
                continue;
            }
            lines.push(format!(
                "route add {} via {}",
                pod_cidr_v4(other.index),
                node_link_v4(other.index)?
            ));
            lines.push(format!(
                "route add {} via {}",
                pod_cidr_v6(other.index),
                node_link_v6(other.index)?
            ));
        }
        if lines.is_empty() {
            return Ok(());
        }
        netns::ip_batch(&node.netns, &lines)
    }

    pub fn node(&self, index: usize) -> Result<&Node> {
        index
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| {
                anyhow!(
                    "there is no node {index} (the cluster has {})",
                    self.nodes.len()
                )
            })
    }

    pub fn pod(&self, key: &str) -> Result<&Pod> {
        self.pods
            .get(key)
            .ok_or_else(|| anyhow!("there is no pod {key}"))
    }

    /// Makes sure a namespace object exists for `name`.
    pub fn ensure_namespace(&mut self, name: &str) -> &mut Namespace {
        self.namespaces.entry(name.to_string()).or_default()
    }

    /// Creates the pods and starts their servers; returns once every server listens.
    pub fn add_pods(&mut self, specs: Vec<PodSpec>) -> Result<()> {
        let mut started = Vec::new();
        for spec in specs {
            let key = spec.key();
            self.create_pod_network(spec)?;
            self.start_server(&key)?;
            started.push(key);
        }
        // Servers start in parallel; wait for all of them only now.
        for key in started {
            self.wait_until_serving(&key)?;
        }
        Ok(())
    }

    fn free_host(&self, node: usize) -> Result<u8> {
        (2..=254u8)
            .find(|host| {
                !self
                    .pods
                    .values()
                    .any(|pod| pod.spec.node == node && pod.ipv4.octets()[3] == *host)
            })
            .ok_or_else(|| anyhow!("node {node} has no free pod address left"))
    }

    fn create_pod_network(&mut self, spec: PodSpec) -> Result<()> {
        let key = spec.key();
        if self.pods.contains_key(&key) {
            bail!("pod {key} already exists");
        }
        let node_netns = self.node(spec.node)?.netns.clone();
        let host = match spec.host {
            Some(host) => {
                if !(2..=254).contains(&host) {
                    bail!("pod {key}: host {host} is outside 2..=254");
                }
                if self
                    .pods
                    .values()
                    .any(|p| p.spec.node == spec.node && p.ipv4.octets()[3] == host)
                {
                    bail!("pod {key}: host {host} on node {} is taken", spec.node);
                }
                host
            }
            None => self.free_host(spec.node)?,
        };
        let ipv4 = pod_ipv4(spec.node, host)?;
        let ipv6 = if spec.ipv6 {
            Some(pod_ipv6(spec.node, host)?)
        } else {
            None
        };
        let pod_netns = format!(
            "{}pod-{}-{}",
            self.prefix,
            sanitize(&spec.namespace),
            sanitize(&spec.name)
        );
        let host_veth = format!("cali{}", self.next_veth);
        self.next_veth += 1;
        self.ensure_namespace(&spec.namespace.clone());

        netns::add_netns(&pod_netns)?;
        // Registered before it is configured, so a failure below still gets it deleted.
        self.pods.insert(
            key.clone(),
            Pod {
                spec,
                netns: pod_netns.clone(),
                ipv4,
                ipv6,
                host_veth: host_veth.clone(),
                server: None,
            },
        );
        netns::sysctl(
            &pod_netns,
            &[
                "net.ipv6.conf.all.accept_dad=0".into(),
                "net.ipv6.conf.default.accept_dad=0".into(),
            ],
        )?;

        let mut node_lines = vec![
            format!("link add {host_veth} type veth peer name eth0 netns {pod_netns}"),
            format!("addr add {GATEWAY_V6}/64 dev {host_veth} nodad"),
            format!("link set {host_veth} up"),
            format!("route add {ipv4}/32 dev {host_veth}"),
        ];
        if let Some(ipv6) = ipv6 {
            node_lines.push(format!("route add {ipv6}/128 dev {host_veth}"));
        }
        netns::ip_batch(&node_netns, &node_lines)?;
        // The node answers ARP for the gateway (and anything else) on the pod's veth.
        netns::sysctl(
            &node_netns,
            &[format!("net.ipv4.conf.{host_veth}.proxy_arp=1")],
        )?;

        let mut pod_lines = vec![
            "link set lo up".to_string(),
            format!("addr add {ipv4}/32 dev eth0"),
        ];
        if let Some(ipv6) = ipv6 {
            pod_lines.push(format!("addr add {ipv6}/128 dev eth0 nodad"));
        }
        pod_lines.push("link set eth0 up".to_string());
        pod_lines.push(format!(
            "route add default via {GATEWAY_V4} dev eth0 onlink"
        ));
        if ipv6.is_some() {
            pod_lines.push(format!("route add ::/0 via {GATEWAY_V6} dev eth0"));
        }
        netns::ip_batch(&pod_netns, &pod_lines)?;
        Ok(())
    }

    fn start_server(&mut self, key: &str) -> Result<()> {
        let netprobe = self.binaries.netprobe.clone();
        let pod = self
            .pods
            .get_mut(key)
            .ok_or_else(|| anyhow!("there is no pod {key}"))?;
        let join = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut command = netns::in_netns(&pod.netns, &netprobe);
        command
            .args(["serve", "--name", key, "--exit-on-stdin-eof"])
            .args(["--tcp", &join(&pod.spec.tcp)])
            .args(["--udp", &join(&pod.spec.udp)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", netns::describe(&command)))?;
        pod.server = Some(child);
        Ok(())
    }

    fn wait_until_serving(&mut self, key: &str) -> Result<()> {
        let pod = self
            .pods
            .get_mut(key)
            .ok_or_else(|| anyhow!("there is no pod {key}"))?;
        let stdout = pod
            .server
            .as_mut()
            .and_then(|child| child.stdout.take())
            .ok_or_else(|| anyhow!("pod {key} has no server output to wait on"))?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let result = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = sender.send(result);
        });
        let started = Instant::now();
        match receiver.recv_timeout(SERVER_READY_TIMEOUT) {
            Ok(Ok(line)) if line.trim() == "ready" => Ok(()),
            Ok(Ok(line)) => bail!(
                "the server of pod {key} exited or said {:?} instead of `ready`",
                line.trim()
            ),
            Ok(Err(e)) => bail!("reading the server of pod {key}: {e}"),
            Err(_) => bail!(
                "the server of pod {key} did not listen within {:?}",
                started.elapsed()
            ),
        }
    }

    /// Stops the pod's server and deletes its namespace (its veth and routes go with it).
    pub fn delete_pod(&mut self, key: &str) -> Result<()> {
        let mut pod = self
            .pods
            .remove(key)
            .ok_or_else(|| anyhow!("there is no pod {key} to delete"))?;
        pod.stop_server();
        netns::delete_netns(&pod.netns)
    }

    /// Stops every server and deletes every namespace of this cluster. Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        for pod in self.pods.values_mut() {
            pod.stop_server();
        }
        netns::delete_netns_with_prefix(&self.prefix)
    }

    /// Inserts `object` as `kubectl apply` of a complete object would: a NetworkPolicy
    /// replaces the policy of the same name; a Namespace's labels and annotations become
    /// exactly those of the object; a Pod is a manifest-only pod (no namespace, no server:
    /// for pods that do not run, such as finished ones); any other object (Calico resources,
    /// ServiceAccounts, EndpointSlices) replaces the object of the same kind and name.
    pub fn apply_object(&mut self, object: Value) -> Result<()> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let metadata = object.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            bail!("object without metadata.name: {object}");
        }
        let string_map = |field: &str| -> Result<BTreeMap<String, String>> {
            match metadata.and_then(|m| m.get(field)) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(value) => serde_json::from_value(value.clone())
                    .with_context(|| format!("{kind} {name}: metadata.{field}")),
            }
        };
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match kind {
            "NetworkPolicy" if is_kubernetes(&object) => {
                let namespace = namespace.unwrap_or_else(|| "default".to_string());
                let mut object = object;
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert("namespace".into(), Value::String(namespace.clone()));
                }
                self.ensure_namespace(&namespace);
                self.policies.insert(format!("{namespace}/{name}"), object);
            }
            "Pod" => {
                let namespace = namespace.unwrap_or_else(|| "default".to_string());
                let key = format!("{namespace}/{name}");
                if self.pods.contains_key(&key) {
                    bail!("pod {key} runs in the cluster; a manifest-only pod needs another name");
                }
                self.ensure_namespace(&namespace);
                self.manifest_only_pods.insert(key, object);
            }
            "Namespace" => {
                let labels = string_map("labels")?;
                let annotations = string_map("annotations")?;
                let namespace = self.ensure_namespace(&name);
                namespace.labels = labels;
                namespace.annotations = annotations;
            }
            _ => {
                if let Some(namespace) = &namespace {
                    self.ensure_namespace(namespace);
                }
                self.objects.insert(object_key(&object)?, object);
            }
        }
        Ok(())
    }

    /// Deletes the NetworkPolicy or the manifest-only pod `namespace/name`, or the object
    /// `Kind/namespace/name` (`Kind/name` when cluster-scoped).
    pub fn delete_object(&mut self, key: &str) -> Result<()> {
        self.policies
            .remove(key)
            .or_else(|| self.manifest_only_pods.remove(key))
            .or_else(|| self.objects.remove(key))
            .map(|_| ())
            .ok_or_else(|| {
                anyhow!("there is no policy, manifest-only pod or object {key} to delete")
            })
    }

    /// Sets (`Some`) or removes (`None`) labels of a pod.
    pub fn patch_pod_labels(
        &mut self,
        key: &str,
        patch: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let pod = self
            .pods
            .get_mut(key)
            .ok_or_else(|| anyhow!("there is no pod {key} to label"))?;
        patch_map(&mut pod.spec.labels, patch);
        Ok(())
    }

    /// Hands out `count` UDP source ports no recent probe used. Ports stay below the kernel's
    /// ephemeral range (32768 up), so they never clash with ports the kernel picks itself.
    pub(crate) fn allocate_udp_source_ports(
        &self,
        source: &super::probe::Source,
        count: usize,
    ) -> u16 {
        const FIRST: u32 = 20_000;
        const SPAN: u32 = 12_000;
        let count = u32::try_from(count).unwrap_or(SPAN).min(SPAN);
        let start = match self.udp_port_cursors.lock() {
            Ok(mut cursors) => {
                let cursor = cursors.entry(source.clone()).or_insert(0);
                let start = *cursor % SPAN;
                *cursor = cursor.wrapping_add(count);
                start
            }
            Err(_) => 0,
        };
        let start = if start + count > SPAN { 0 } else { start };
        // FIRST + SPAN < u16::MAX, so the conversion cannot fail.
        u16::try_from(FIRST + start).unwrap_or(20_000)
    }
}

/// Whether `object` is of a Kubernetes API group (a Calico NetworkPolicy is not).
fn is_kubernetes(object: &Value) -> bool {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    !api_version.contains("projectcalico.org")
}

/// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
pub fn object_key(object: &Value) -> Result<String> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let metadata = object.get("metadata");
    let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(Value::as_str);
    let name = field("name").ok_or_else(|| anyhow!("object without metadata.name: {object}"))?;
    if kind.is_empty() {
        bail!("object without kind: {object}");
    }
    Ok(match field("namespace") {
        Some(namespace) => format!("{kind}/{namespace}/{name}"),
        None => format!("{kind}/{name}"),
    })
}

pub fn patch_map(map: &mut BTreeMap<String, String>, patch: &BTreeMap<String, Option<String>>) {
    for (key, value) in patch {
        match value {
            Some(value) => {
                map.insert(key.clone(), value.clone());
            }
            None => {
                map.remove(key);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failures = self.teardown();
        if !failures.is_empty() {
            eprintln!(
                "cleanup of test cluster {} left namespaces behind:\n  {}",
                self.prefix,
                failures.join("\n  ")
            );
        }
    }
}

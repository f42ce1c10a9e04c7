//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade::dataplane::BackendChoice;

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Kubernetes NetworkPolicy enforcement with ipset and iptables"
)]
pub struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Auto,
    Legacy,
    Nft,
}

impl From<BackendArg> for BackendChoice {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Legacy => BackendChoice::Legacy,
            BackendArg::Nft => BackendChoice::Nft,
        }
    }
}

/// Where the agent reads Calico's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalicoApiArg {
    /// `projectcalico.org/v3` CRDs if that group is served and `crd.projectcalico.org` is not,
    /// else `crd.projectcalico.org/v1` if served, else none until one appears (as Calico).
    Auto,
    /// `projectcalico.org/v3`.
    V3,
    /// `crd.projectcalico.org/v1`, as Calico stores them.
    V1,
    /// Kubernetes NetworkPolicy only.
    Off,
}

impl From<CalicoApiArg> for palisade::k8s::CalicoApi {
    fn from(arg: CalicoApiArg) -> Self {
        match arg {
            CalicoApiArg::Auto => Self::Auto,
            CalicoApiArg::V3 => Self::V3,
            CalicoApiArg::V1 => Self::CrdV1,
            CalicoApiArg::Off => Self::Off,
        }
    }
}

/// The group of the generated CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrdGroupArg {
    /// `projectcalico.org/v3`.
    V3,
    /// `crd.projectcalico.org/v1` (for clusters without Calico, and tests).
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Manifest files or directories (as for render). Without them the cluster is read once
    /// from the API server (--kubeconfig, else $KUBECONFIG or the in-cluster account).
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// The kubeconfig of the cluster to read, when no --manifests are given.
    #[arg(long, conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// Where to read Calico's resources from the API server (as for the agent).
    #[arg(long, value_enum, default_value_t = CalicoApiArg::Auto)]
    pub calico_api: CalicoApiArg,
    /// The connection's source: NAMESPACE/POD or an IP address.
    #[arg(long, requires_all = ["to", "port"], conflicts_with = "pod")]
    pub from: Option<String>,
    /// The connection's destination: NAMESPACE/POD or an IP address.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Destination port.
    #[arg(long, requires = "from")]
    pub port: Option<u16>,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Tcp)]
    pub protocol: ProtocolArg,
    /// Instead of a connection: the policies that select NAMESPACE/POD, in evaluation order.
    #[arg(long, required_unless_present = "from")]
    pub pod: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    #[command(flatten)]
    pub marks: MarkArgs,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Manifest files or directories (YAML or JSON; directories are read recursively).
    #[arg(long, required = true, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// The node whose pods to program (matches the pods' spec.nodeName).
    #[arg(long)]
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DenyArg {
    Drop,
    Reject,
}

/// How the compiled rules decide and log.
#[derive(Debug, Args)]
pub struct MarkArgs {
    /// Packet-mark bit a policy chain sets to allow a packet.
    #[arg(long, value_parser = parse_hex_u32, default_value = "0x100000")]
    pub accept_mark: u32,
    /// Packet-mark bit a policy chain sets when a Pass rule hands the packet to the next tier.
    #[arg(long, value_parser = parse_hex_u32, default_value = "0x200000")]
    pub pass_mark: u32,
    /// What Deny rules and the end of a tier do: drop silently, or reject (ICMP unreachable).
    #[arg(long, value_enum, default_value_t = DenyArg::Drop)]
    pub deny_action: DenyArg,
    /// Kernel log prefix of Log rules: %t tier, %k kind (knp, np, gnp), %n name,
    /// %p namespace/name; cut to 28 bytes.
    #[arg(long, default_value = "palisade %t/%n: ")]
    pub log_prefix: String,
    /// Log lines per second each Log rule may write (0: no limit).
    #[arg(long, default_value_t = 10)]
    pub log_rate: u32,
    /// Log lines a Log rule may write in a burst above its rate.
    #[arg(long, default_value_t = 20)]
    pub log_burst: u32,
    /// What denials do in namespaces without a palisade.io/enforcement annotation: enforce
    /// them, or audit (log and count what would be denied, and let it through).
    #[arg(long, value_enum, default_value_t = EnforcementArg::Enforce)]
    pub enforcement: EnforcementArg,
    /// Send denied packets to the denied-flow log in namespaces without a
    /// palisade.io/log-denied annotation.
    #[arg(long)]
    pub log_denied: bool,
    /// The NFLOG group denied and audited packets go to (the agent reads it).
    #[arg(long, default_value_t = palisade::compiler::DEFAULT_NFLOG_GROUP)]
    pub nflog_group: u16,
    /// The most elements one set may hold, at most the maxelem sets are created with. A
    /// selector matching more is not written, and the policies using it fail closed.
    #[arg(
        long,
        value_parser = clap::value_parser!(u32).range(1..=MAX_IPSET_SIZE),
        default_value_t = MAX_IPSET_SIZE as u32
    )]
    pub max_ipset_size: u32,
}

const MAX_IPSET_SIZE: i64 = palisade::compiler::desired::SET_CAPACITY as i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnforcementArg {
    Enforce,
    Audit,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ipsets and iptables rules a node must hold, without touching the kernel.
    Render {
        #[command(flatten)]
        input: ManifestArgs,
        #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
        family: FamilyArg,
        #[command(flatten)]
        marks: MarkArgs,
    },
    /// Make this network namespace's kernel hold what the manifests require for NODE (as root).
    /// Exit status: 0 applied, 1 invalid input (nothing applied), 2 kernel or command failure.
    Apply {
        #[command(flatten)]
        input: ManifestArgs,
        /// iptables backend; auto picks it as kube-proxy does.
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
        /// Print the restore input that would be sent, and send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        marks: MarkArgs,
    },
    /// Remove everything Palisade owns (the FORWARD hook, PAL- chains, pal4-/pal6- sets) and nothing else.
    Cleanup {
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
    },
    /// Keep this node's rules in step with the cluster (the DaemonSet's command).
    Agent(AgentArgs),
    /// Say whether a connection is allowed and why, by walking the rules the nodes would hold.
    /// Exit status: 0 allowed, 3 denied, 1 bad input.
    Explain(ExplainArgs),
    /// Print the CustomResourceDefinitions of the Calico kinds Palisade enforces, as YAML
    /// (the chart ships the projectcalico.org/v3 ones; `kubectl apply -f -` installs them).
    Crds {
        #[arg(long, value_enum, default_value_t = CrdGroupArg::V3)]
        group: CrdGroupArg,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name, as in the pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// Read the cluster from this manifest directory instead of the API server.
    #[arg(long, num_args = 1..)]
    pub manifests: Option<Vec<PathBuf>>,
    #[arg(long, default_value = "0.0.0.0:9617")]
    pub metrics_addr: SocketAddr,
    /// How often to check the kernel against the desired state and repair drift.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub refresh_interval: Duration,
    /// The quiet time after each sync: the first change after it is synced at once, changes
    /// within it are gathered into one sync at its end.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub debounce: Duration,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Where to read Calico's policies, network sets and tiers from the API server.
    #[arg(long, value_enum, default_value_t = CalicoApiArg::Auto)]
    pub calico_api: CalicoApiArg,
    /// Remove Palisade's rules on SIGTERM (for uninstalling); by default they stay in place.
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// How often to read the kernel's rule counters for the per-policy and denied-packet
    /// metrics (one iptables-save -c per family); 0 turns the reads off.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub counters_interval: Duration,
    /// The denied-flow log writes a flow (source, destination, protocol, port) once per this
    /// window, then one line with how many packets it saw in the window.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub denied_log_window: Duration,
    /// Lines per second the denied-flow log writes at most; what it leaves out is counted in
    /// palisade_denied_flow_lines_suppressed_total. 0 turns the log off.
    #[arg(long, default_value_t = 50)]
    pub denied_log_rate: u32,
    #[command(flatten)]
    pub marks: MarkArgs,
}

fn parse_hex_u32(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    match digits {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a 32-bit number: {e}"))
}

/// `250ms`, `10s`, `5m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 100ms, 60s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_marks_parse() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_hex_u32("0x100000"), Ok(0x100000));
        assert_eq!(parse_hex_u32("256"), Ok(256));
        assert!(parse_hex_u32("0xZZ").is_err());
    }
}

//! The policy compiler: cluster state in, one node's desired dataplane state out.
//!
//! Pure and deterministic: no I/O, sorted output, names derived from stable hashes. [`compile`]
//! computes a node's state from scratch; [`NodeCompiler`] keeps it current from index changes,
//! touching only the sets and chains a change affects.

pub mod chains;
pub mod denied_log;
pub mod desired;
pub mod naming;
mod node;
pub mod rules;
pub mod sets;

pub use desired::DesiredState;
pub use node::{NodeCompiler, SetOverflow};

use crate::index::ClusterIndex;
use crate::model::NodeDenials;

/// The packet-mark bits Palisade uses to carry verdicts between chains. kube-proxy uses 0x4000
/// and 0x8000, kube-router 0x10000 and 0x20000; the defaults stay clear of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// Set by a policy chain when a rule allows the packet.
    pub accept: u32,
    /// Set by a policy chain when a Pass rule hands the packet to the next tier.
    pub pass: u32,
}

impl Default for Marks {
    fn default() -> Self {
        Self {
            accept: 0x0010_0000,
            pass: 0x0020_0000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarksError {
    #[error("mark {0:#x} must be a single bit")]
    NotASingleBit(u32),
    #[error("accept and pass marks must differ")]
    Same,
    #[error("mark {0:#x} collides with kube-proxy's marks 0x4000/0x8000")]
    KubeProxy(u32),
}

impl Marks {
    pub fn new(accept: u32, pass: u32) -> Result<Self, MarksError> {
        for mark in [accept, pass] {
            if mark.count_ones() != 1 {
                return Err(MarksError::NotASingleBit(mark));
            }
            if mark == 0x4000 || mark == 0x8000 {
                return Err(MarksError::KubeProxy(mark));
            }
        }
        if accept == pass {
            return Err(MarksError::Same);
        }
        Ok(Self { accept, pass })
    }

    pub fn mask(&self) -> u32 {
        self.accept | self.pass
    }
}

/// What a Deny rule and the end of a tier do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyAction {
    #[default]
    Drop,
    /// Answer with an ICMP port-unreachable, as Felix's `DefaultEndpointToHostAction=REJECT`.
    Reject,
}

/// How Log rules write to the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The log prefix; `%t` is the tier, `%k` the policy kind (`knp`, `np`, `gnp`), `%n` the
    /// policy's name and `%p` its namespace and name. Cut to the kernel's 29 bytes.
    pub prefix: String,
    /// Log lines per second per rule; 0 for no limit.
    pub rate_per_second: u32,
    pub burst: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            prefix: "palisade %t/%n: ".to_string(),
            rate_per_second: 10,
            burst: 20,
        }
    }
}

/// Everything besides the cluster that decides the compiled rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerConfig {
    pub marks: Marks,
    pub deny: DenyAction,
    pub log: LogConfig,
    /// Enforcement and denied-flow logging for namespaces without their own annotations.
    pub denials: NodeDenials,
    /// The NFLOG group denied (and audited) packets are sent to for the denied-flow log.
    pub nflog_group: u16,
    /// The most elements a set may hold (the sets' `maxelem`); a set that would hold more is
    /// not written, and the policies reading it fail closed.
    pub set_capacity: usize,
}

/// Palisade's NFLOG group unless configured: clear of Calico's flow-log groups (1 and 2) and
/// kube-router's (100).
pub const DEFAULT_NFLOG_GROUP: u16 = 417;

impl Default for CompilerConfig {
    fn default() -> Self {
        Self {
            marks: Marks::default(),
            deny: DenyAction::default(),
            log: LogConfig::default(),
            denials: NodeDenials::default(),
            nflog_group: DEFAULT_NFLOG_GROUP,
            set_capacity: desired::SET_CAPACITY,
        }
    }
}

impl From<Marks> for CompilerConfig {
    fn from(marks: Marks) -> Self {
        Self {
            marks,
            ..Self::default()
        }
    }
}

/// The state `node` must hold, computed from scratch.
pub fn compile(
    index: &ClusterIndex,
    node: &str,
    config: impl Into<CompilerConfig>,
) -> DesiredState {
    NodeCompiler::new(index, node, config).into_state()
}

#[cfg(test)]
mod tests;

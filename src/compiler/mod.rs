//! The policy compiler: cluster state in, one node's desired dataplane state out.
//!
//! Pure and deterministic: no I/O, sorted output, names derived from stable hashes. [`compile`]
//! computes a node's state from scratch; [`NodeCompiler`] keeps it current from index changes,
//! touching only the sets and chains a change affects.

pub mod chains;
pub mod desired;
pub mod naming;
mod node;
pub mod sets;

pub use desired::DesiredState;
pub use node::NodeCompiler;

use crate::index::ClusterIndex;

/// The packet-mark bits Palisade uses to carry verdicts between chains. kube-proxy uses 0x4000
/// and 0x8000, kube-router 0x10000 and 0x20000; the defaults stay clear of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// Set by a policy chain when a rule allows the packet.
    pub accept: u32,
    /// Reserved for ordered policies whose Pass action hands the decision to the next tier.
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

/// The state `node` must hold, computed from scratch.
pub fn compile(index: &ClusterIndex, node: &str, marks: Marks) -> DesiredState {
    NodeCompiler::new(index, node, marks).into_state()
}

#[cfg(test)]
mod tests;

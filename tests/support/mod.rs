//! Shared helpers for the spec property tests: a plain cluster description, generators, a
//! reference evaluator written from the Kubernetes NetworkPolicy documentation, and an
//! iptables/ipset interpreter over compiled state.
//!
//! The reference evaluator uses nothing of `palisade::compiler` (and its own selector and CIDR
//! matching); the interpreter reads the compiler's output types and naming constants only.

pub mod build;
pub mod cluster;
pub mod gen;
pub mod iptables;
pub mod mutate;
pub mod reference;

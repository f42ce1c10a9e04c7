//! Shared helpers for the spec property tests: a plain cluster description, generators, reference
//! evaluators written from the Kubernetes NetworkPolicy documentation and from Calico's policy
//! model, and an iptables/ipset interpreter over compiled state.
//!
//! The reference evaluator uses nothing of `palisade::compiler` (and its own selector and CIDR
//! matching); the interpreter reads the compiler's output types and naming constants only.

pub mod build;
pub mod calico_gen;
pub mod calico_reference;
pub mod cluster;
pub mod gen;
pub mod iptables;
pub mod mutate;
pub mod reference;

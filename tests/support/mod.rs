//! Shared helpers for the spec property tests: a plain cluster description, generators, a
//! reference evaluator written from the Kubernetes NetworkPolicy documentation, and an
//! iptables/ipset interpreter over compiled state.
//!
//! Nothing here calls into `palisade::compiler` except to read the output types it produces.

pub mod build;
pub mod cluster;
pub mod gen;
pub mod iptables;
pub mod mutate;
pub mod reference;

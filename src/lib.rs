//! Palisade: Kubernetes NetworkPolicy enforcement with ipset and iptables.
#![forbid(unsafe_code)]

pub mod agent;
pub mod compiler;
pub mod counters;
pub mod dataplane;
pub mod explain;
pub mod flowlog;
pub mod fuzzing;
pub mod index;
pub mod k8s;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod render;
pub mod selector;

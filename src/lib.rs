//! Palisade: Kubernetes NetworkPolicy enforcement with ipset and iptables.
#![forbid(unsafe_code)]

pub mod compiler;
pub mod dataplane;
pub mod index;
pub mod manifest;
pub mod model;
pub mod render;
pub mod selector;

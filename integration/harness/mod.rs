//! A test cluster of network namespaces for Palisade, with real packets.
//!
//! - [`cluster`]: nodes, pods and their wiring, Calico style; everything removed on drop.
//! - [`manifests`]: the cluster as Kubernetes objects; `palisade apply` on every node.
//! - [`probe`]: the reachability matrix, measured with `palisade-netprobe`.
//! - [`expect`]: compact expectations and readable differences.
//! - [`scenario`]: scenario files that drive all of the above step by step.
//!
//! Include it with `#[path = "harness/mod.rs"] mod harness;`.

pub mod cluster;
pub mod expect;
pub mod manifests;
pub mod netns;
pub mod probe;
pub mod scenario;

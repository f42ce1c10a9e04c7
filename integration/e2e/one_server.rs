//! The fixture of the single-agent fault tests: on node 1, `web/server` (app=server, TCP 80)
//! and two clients `web/a` (role=a) and `web/b` (role=b); a policy admits the clients by role.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::agent::Agent;
use super::{kube, pod_spec};
use crate::harness::cluster::{Cluster, Family, PodSpec, Proto};
use crate::harness::probe::Source;

pub fn pods() -> Vec<PodSpec> {
    vec![
        pod_spec("web", "server", 1, &[("app", "server")], &[80], &[], &[]),
        pod_spec("web", "a", 1, &[("role", "a")], &[80], &[], &[]),
        pod_spec("web", "b", 1, &[("role", "b")], &[80], &[], &[]),
    ]
}

/// The policy that lets the clients with these roles reach `web/server:80`.
pub fn allow_from(roles: &[&str]) -> Value {
    kube::policy(
        "web",
        "server-ingress",
        json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{
                "from": [{"podSelector": {"matchExpressions": [
                    {"key": "role", "operator": "In", "values": roles},
                ]}}],
                "ports": [{"protocol": "TCP", "port": 80}],
            }],
        }),
    )
}

/// Whether `from` reaches `web/server:80` (one TCP probe, 300 ms).
pub fn connects(cluster: &Cluster, from: &str) -> Result<bool> {
    Ok(cluster
        .probe_one(
            Source::Pod(from.to_string()),
            "web/server",
            Proto::Tcp,
            80,
            Family::V4,
            Duration::from_millis(300),
        )?
        .verdict
        .is_connected())
}

/// `palisade_sync_errors_total{reason="restore"}` of the agent.
pub fn restore_errors(agent: &Agent) -> Result<f64> {
    Ok(agent
        .metrics()?
        .value("palisade_sync_errors_total", &[("reason", "restore")])?
        .unwrap_or(0.0))
}

/// Whether the agent's `/readyz` answers 200.
pub fn ready(agent: &Agent) -> Result<bool> {
    Ok(agent.http_get("/readyz")?.0 == 200)
}

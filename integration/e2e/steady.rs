//! The two-node cluster most end-to-end tests start from: four pods in two namespaces, the
//! steady policies that give both nodes allowed and denied verdicts in both directions, and
//! what those policies allow.

use anyhow::Result;
use serde_json::{json, Value};

use super::apiserver::ApiServer;
use super::{kube, pod_spec};
use crate::harness::cluster::{Cluster, PodSpec, Proto};

/// web/server (node 2: tcp/80 named http, udp/53 named dns), web/peer (node 1), client/a
/// (node 1, role=frontend), client/b (node 2, role=backend): same-node and cross-node pairs.
pub fn baseline_pods() -> Vec<PodSpec> {
    vec![
        pod_spec(
            "web",
            "server",
            2,
            &[("app", "server")],
            &[80],
            &[53],
            &[("http", Proto::Tcp, 80), ("dns", Proto::Udp, 53)],
        ),
        pod_spec(
            "web",
            "peer",
            1,
            &[("app", "peer")],
            &[80],
            &[],
            &[("http", Proto::Tcp, 80)],
        ),
        pod_spec("client", "a", 1, &[("role", "frontend")], &[80], &[], &[]),
        pod_spec("client", "b", 2, &[("role", "backend")], &[80], &[], &[]),
    ]
}

/// web/server admits pods labelled `role` from namespaces labelled team=client, on `ports`.
pub fn server_ingress(role: &str, ports: Value) -> Value {
    kube::policy(
        "web",
        "server-ingress",
        json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"team": "client"}},
                    "podSelector": {"matchLabels": {"role": role}},
                }],
                "ports": ports,
            }],
        }),
    )
}

/// The steady state of the robustness phases: allowed and denied verdicts on both nodes, in
/// both directions (ingress on node 2 and node 1, egress on node 1).
pub fn steady_policies() -> Vec<Value> {
    vec![
        server_ingress("backend", json!([{"port": "http"}])),
        kube::policy(
            "web",
            "peer-ingress",
            json!({
                "podSelector": {"matchLabels": {"app": "peer"}},
                "ingress": [{"from": [{"podSelector": {}}]}],
            }),
        ),
        kube::policy(
            "client",
            "frontend-egress",
            json!({
                "podSelector": {"matchLabels": {"role": "frontend"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}],
            }),
        ),
    ]
}

pub const STEADY: &[&str] = &[
    "allow * -> *",
    "deny * -> web/server",
    "allow client/b -> web/server tcp",
    "deny * -> web/peer",
    "allow web/server -> web/peer",
    "deny client/a -> *",
    "allow node/* -> *",
];

/// The namespaces (web: team=web, client: team=client) and the pods of `cluster`, Running
/// with their addresses, as a kubelet would report them.
pub fn create_objects(api: &ApiServer, cluster: &Cluster) -> Result<()> {
    api.apply(&[
        kube::namespace("web", &[("team", "web")]),
        kube::namespace("client", &[("team", "client")]),
    ])?;
    let pods: Vec<Value> = cluster.pods.values().map(kube::pod).collect();
    api.apply(&pods)?;
    for pod in cluster.pods.values() {
        api.set_pod_status(&pod.spec.namespace, &pod.spec.name, &pod.ipv4.to_string())?;
    }
    Ok(())
}

//! Calico's resources for the benchmark cluster: 3 tiers, 2,000 NetworkPolicies and
//! GlobalNetworkPolicies with expression selectors (`in`, `!=`, `has`, `||`), and 500
//! NetworkSets and GlobalNetworkSets, as a multi-tenant Calico user writes them, on top of the
//! Kubernetes cluster of `cluster.rs`. Written as `projectcalico.org/v3` JSON and read through
//! Palisade's converter, as files and the API are.
//!
//! Include it after `cluster.rs`: `#[path = "support/calico.rs"] mod calico;`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use palisade::index::ClusterIndex;
use palisade::model::calico::{self, ApiGroup, CalicoKind, CalicoResource};
use serde_json::{json, Value};

use super::cluster::{ClusterObjects, Rng};

pub struct CalicoParams {
    pub policies: usize,
    pub network_sets: usize,
}

impl CalicoParams {
    pub fn large() -> Self {
        Self {
            policies: 2_000,
            network_sets: 500,
        }
    }

    pub fn small() -> Self {
        Self {
            policies: 80,
            network_sets: 20,
        }
    }
}

/// What tenant namespaces hold: their apps (by `app` label) and labels.
struct Tenant {
    name: String,
    team: String,
    env: String,
    apps: Vec<String>,
}

fn tenants(objects: &ClusterObjects) -> Vec<Tenant> {
    let mut apps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pod in &objects.pods {
        if let Some(app) = pod.labels.get("app") {
            let list = apps.entry(pod.key.namespace.as_str()).or_default();
            if !list.iter().any(|a| a == app) {
                list.push(app.to_string());
            }
        }
    }
    objects
        .namespaces
        .iter()
        .filter(|ns| !ns.labels.contains_key("purpose"))
        .filter_map(|ns| {
            Some(Tenant {
                name: ns.name.clone(),
                team: ns.labels.get("team")?.to_string(),
                env: ns.labels.get("env")?.to_string(),
                apps: apps.get(ns.name.as_str())?.clone(),
            })
        })
        .collect()
}

fn cidr(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("203.0.{}.{}/32", rng.below(256), rng.below(256)),
        1 => format!("198.51.{}.0/24", rng.below(256)),
        2 => format!("172.{}.{}.0/22", 16 + rng.below(16), rng.below(64) * 4),
        _ => format!("100.{}.0.0/16", 64 + rng.below(64)),
    }
}

fn network_sets(rng: &mut Rng, tenants: &[Tenant], count: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..count {
        let nets: Vec<String> = (0..1 + rng.below(4)).map(|_| cidr(rng)).collect();
        if i % 5 < 2 {
            // Global: shared blocklists, cloud ranges, partners.
            let kind = ["blocklist", "cloud", "partner"][i % 3];
            let region = ["eu", "us", "ap"][rng.below(3)];
            out.push(
                json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                "metadata": {"name": format!("global-{kind}-{i}"),
                    "labels": {"kind": kind, "region": region}},
                "spec": {"nets": nets}}),
            );
        } else {
            let tenant = &tenants[rng.below(tenants.len())];
            let kind = ["partner", "saas", "legacy"][rng.below(3)];
            out.push(
                json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet",
                "metadata": {"name": format!("{kind}-{i}"), "namespace": tenant.name,
                    "labels": {"kind": kind, "team": tenant.team}},
                "spec": {"nets": nets}}),
            );
        }
    }
    out
}

fn tiers() -> Vec<Value> {
    vec![
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
            "metadata": {"name": "security"}, "spec": {"order": 100, "defaultAction": "Deny"}}),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
            "metadata": {"name": "platform"}, "spec": {"order": 500, "defaultAction": "Pass"}}),
    ]
}

/// Global policies of the security and platform teams.
fn global_policy(rng: &mut Rng, i: usize, teams: &[String]) -> Value {
    let team = &teams[rng.below(teams.len())];
    let (tier, spec) = match i % 6 {
        0 => (
            "security",
            json!({"order": 10 + i, "selector": format!("env == 'prod' && tier in {{'frontend', 'backend'}} && team == '{team}'"),
            "types": ["Egress"],
            "egress": [
                {"action": "Deny", "destination": {"selector": "kind == 'blocklist'"}},
                {"action": "Pass"},
            ]}),
        ),
        1 => (
            "security",
            json!({"order": 10 + i, "namespaceSelector": format!("team == '{team}'"),
            "selector": "has(app)", "types": ["Ingress"],
            "ingress": [
                {"action": "Log", "source": {"selector": "kind == 'blocklist'"}},
                {"action": "Deny", "source": {"selector": "kind == 'blocklist'"}},
                {"action": "Pass"},
            ]}),
        ),
        2 => (
            "platform",
            json!({"order": 100 + i, "namespaceSelector": format!("team == '{team}' && env != 'dev'"), "types": ["Ingress"],
            "ingress": [
                {"action": "Allow", "protocol": "TCP",
                 "source": {"namespaceSelector": "purpose == 'system'",
                            "selector": "app.kubernetes.io/name == 'prometheus' || k8s-app == 'kube-dns'"},
                 "destination": {"ports": ["metrics", 9090]}},
                {"action": "Pass"},
            ]}),
        ),
        3 => (
            "platform",
            json!({"order": 100 + i, "selector": format!("tier != 'db' && team == '{team}'"), "types": ["Egress"],
            "egress": [
                {"action": "Allow", "protocol": "UDP",
                 "destination": {"namespaceSelector": "projectcalico.org/name == 'kube-system'",
                                 "selector": "k8s-app == 'kube-dns'", "ports": [53]}},
                {"action": "Pass"},
            ]}),
        ),
        4 => (
            "security",
            json!({"order": 10 + i, "selector": format!("team == '{team}' && !has(track)"),
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Pass", "source": {"selector": format!("team == '{team}' || has(pcns.istio-injection)")}}],
            "egress": [
                {"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}},
                {"action": "Pass"},
            ]}),
        ),
        _ => (
            "platform",
            json!({"order": 100 + i, "selector": "tier == 'db' || tier == 'cache'",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Allow", "source": {"selector": format!("team == '{team}' && tier in {{'backend', 'frontend'}}")}},
                {"action": "Pass"},
            ]}),
        ),
    };
    let mut spec = spec;
    spec["tier"] = json!(tier);
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": format!("{tier}.g{i}")}, "spec": spec})
}

/// A tenant's own policy in the default tier.
fn tenant_policy(rng: &mut Rng, i: usize, tenant: &Tenant, tenants: &[Tenant]) -> Value {
    let app = &tenant.apps[rng.below(tenant.apps.len())];
    let other = &tenant.apps[rng.below(tenant.apps.len())];
    let peer_team = &tenants[rng.below(tenants.len())].team;
    let order = [Some(100.0), Some(500.0), Some(900.0), None][rng.below(4)];
    let spec = match i % 5 {
        0 => json!({"selector": format!("app == '{app}'"), "types": ["Ingress"],
        "ingress": [
            {"action": "Allow", "protocol": "TCP",
             "source": {"selector": format!("app in {{'{other}', '{app}'}} || tier == 'frontend'")},
             "destination": {"ports": ["http", 8080]}},
            {"action": "Deny"},
        ]}),
        1 => json!({"selector": "tier != 'db'", "types": ["Egress"],
        "egress": [
            {"action": "Allow", "destination": {"selector": "kind == 'partner' || kind == 'saas'"}},
            {"action": "Allow", "destination": {"namespaceSelector": format!("team == '{}'", tenant.team)}},
        ]}),
        2 => json!({"selector": format!("app == '{app}' && has(version)"), "types": ["Ingress"],
        "ingress": [
            {"action": "Allow", "source": {"namespaceSelector": format!("team == '{peer_team}' && env != 'dev'"),
                                           "selector": "tier == 'backend'"}},
        ]}),
        3 => json!({"selector": "has(app)", "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Allow", "source": {"selector": "all()"}}],
        "egress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"notNets": ["10.0.0.0/8"], "notPorts": [443, "8000:8999"]}},
            {"action": "Allow"},
        ]}),
        _ => {
            json!({"selector": format!("app == '{app}' || app == '{other}'"), "types": ["Ingress"],
            "ingress": [
                {"action": "Log", "protocol": "TCP", "source": {"notSelector": format!("env == '{}'", tenant.env)}},
                {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'replica'"},
                 "destination": {"ports": ["postgres", "mysql", "redis"]}},
            ]})
        }
    };
    let mut spec = spec;
    if let Some(order) = order {
        spec["order"] = json!(order);
    }
    json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{i}"), "namespace": tenant.name}, "spec": spec})
}

/// The Calico objects for `objects`, deterministic for its seed.
pub fn generate(objects: &ClusterObjects, params: &CalicoParams) -> Vec<Value> {
    let mut rng = Rng::new(objects.params.seed ^ 0x00CA_11C0);
    let tenants = tenants(objects);
    let teams: Vec<String> = {
        let mut t: Vec<String> = tenants.iter().map(|t| t.team.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let mut out = tiers();
    out.extend(network_sets(&mut rng, &tenants, params.network_sets));
    // A few dozen global policies of the security and platform teams, the rest the tenants'.
    let globals = params.policies / 50;
    for i in 0..globals {
        out.push(global_policy(&mut rng, i, &teams));
    }
    for i in globals..params.policies {
        let tenant = &tenants[rng.below(tenants.len())];
        out.push(tenant_policy(&mut rng, i, tenant, &tenants));
    }
    out
}

/// Adds the objects to the index through Palisade's converter.
pub fn add_to_index(index: &mut ClusterIndex, objects: &[Value]) {
    for object in objects {
        let group = ApiGroup::of(object["apiVersion"].as_str().unwrap_or_default())
            .expect("a Calico API version");
        let kind =
            CalicoKind::of(object["kind"].as_str().unwrap_or_default()).expect("a Calico kind");
        match calico::convert(group, kind, object, &mut Vec::new()) {
            Ok(CalicoResource::Policy(p)) => {
                index.upsert_policy(p);
            }
            Ok(CalicoResource::NetworkSet(s)) => {
                index.upsert_network_set(s);
            }
            Ok(CalicoResource::Tier(t)) => {
                index.upsert_tier(t);
            }
            Ok(CalicoResource::Ignored(_)) => {}
            Err(e) => panic!("bench object is invalid: {e}\n{object}"),
        }
    }
}

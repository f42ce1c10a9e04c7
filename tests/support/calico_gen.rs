//! proptest generators for clusters that mix Kubernetes NetworkPolicies with Calico's own
//! resources: tiers, NetworkPolicies and GlobalNetworkPolicies with ordered Allow/Deny/Pass/Log
//! rules over Calico selectors, NetworkSets and GlobalNetworkSets, service accounts and a
//! Service's endpoints. Objects are written as a user writes them (`projectcalico.org/v3`
//! JSON) and are valid by construction.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade::model::{ObjectKey, Protocol, ServiceSlice};
use palisade::selector::{Expr, Label, Labels};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};

use super::cluster::{calico_key, Cluster};
use super::gen::{self, NAMESPACES, V4_BLOCKS, V4_EXCEPTS, V6_BLOCKS, V6_EXCEPTS};

/// Service accounts pods run as; `builder` has labels in some namespaces.
pub const SERVICE_ACCOUNTS: [&str; 2] = ["default", "builder"];
/// The Service whose endpoints `services` rules match.
pub const SERVICE: (&str, &str) = ("ns-a", "svc");
/// The service's ports.
pub const SERVICE_PORTS: [(Protocol, u16); 2] = [(Protocol::Tcp, 80), (Protocol::Udp, 53)];
/// Tiers policies may name; `extra` never has a Tier object.
pub const TIERS: [&str; 4] = ["default", "security", "platform", "extra"];
/// Numeric ports rules use; the probe ports come from these and the named ports.
pub const PORTS: [&str; 6] = ["80", "53", "443", "8080", "80:443", "1000:9000"];
pub const SOURCE_PORTS: [&str; 2] = ["40000", "30000:50000"];
/// A source port no rule names, besides the probes' usual one.
pub const OTHER_SOURCE_PORT: u16 = 20_000;
/// An IP protocol with no ports that rules may name by number (GRE).
pub const OTHER_PROTOCOL: u8 = 47;
/// ICMP (type, code) pairs probes send and rules name.
pub const ICMP_TYPES: [(u8, u8); 3] = [(8, 0), (0, 0), (3, 1)];

fn leaf() -> impl Strategy<Value = Expr> {
    let eq = |k: &str, v: &str| Expr::Eq(Label::new(k), v.to_string());
    prop_oneof![
        select(vec!["web", "db"]).prop_map(move |v| eq("app", v)),
        select(vec!["front", "back"]).prop_map(move |v| eq("role", v)),
        Just(Expr::Ne(Label::new("app"), "db".into())),
        Just(Expr::In(Label::new("app"), vec!["db".into(), "web".into()])),
        Just(Expr::NotIn(Label::new("role"), vec!["front".into()])),
        Just(Expr::has("role")),
        Just(Expr::negation(Expr::has("app"))),
        Just(Expr::StartsWith(Label::new("app"), "w".into())),
        Just(Expr::Contains(Label::new("app"), "b".into())),
        select(vec!["red", "blue"]).prop_map(move |v| eq("pcns.team", v)),
        Just(Expr::has("pcns.env")),
        Just(eq("pcsa.role", "ci")),
        Just(eq("projectcalico.org/serviceaccount", "builder")),
        select(NAMESPACES.to_vec()).prop_map(move |ns| eq("projectcalico.org/namespace", ns)),
        select(vec!["ext", "int"]).prop_map(move |v| eq("kind", v)),
        Just(Expr::All),
    ]
}

/// A Calico selector over the vocabulary of pods, namespaces, service accounts and network sets.
pub fn selector() -> impl Strategy<Value = String> {
    leaf()
        .prop_recursive(2, 6, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..=3).prop_map(Expr::And),
                prop::collection::vec(inner.clone(), 2..=3).prop_map(Expr::Or),
                inner.prop_map(Expr::negation),
            ]
        })
        .prop_map(|e| e.to_string())
}

/// A selector over namespace labels (a `namespaceSelector`).
pub fn namespace_selector() -> impl Strategy<Value = String> {
    select(vec![
        "team == 'red'",
        "team == 'blue'",
        "env != 'prod'",
        "has(team)",
        "all()",
        "projectcalico.org/name == 'ns-b'",
        "kubernetes.io/metadata.name in {'ns-a', 'ns-c'}",
        "!has(env) || team == 'blue'",
    ])
    .prop_map(str::to_string)
}

fn service_account_selector() -> impl Strategy<Value = String> {
    select(vec!["role == 'ci'", "has(role)", "role != 'ci'", "all()"]).prop_map(str::to_string)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ProtocolChoice {
    None,
    Ported(&'static str),
    Icmp,
    Icmp6,
    Other,
}

fn protocol() -> impl Strategy<Value = ProtocolChoice> {
    prop_oneof![
        3 => Just(ProtocolChoice::None),
        2 => Just(ProtocolChoice::Ported("TCP")),
        2 => Just(ProtocolChoice::Ported("UDP")),
        1 => Just(ProtocolChoice::Ported("SCTP")),
        1 => Just(ProtocolChoice::Ported("6")),
        1 => Just(ProtocolChoice::Ported("17")),
        1 => Just(ProtocolChoice::Icmp),
        1 => Just(ProtocolChoice::Icmp6),
        1 => Just(ProtocolChoice::Other),
    ]
}

fn nets(v6: bool, excepts: bool) -> impl Strategy<Value = Vec<String>> {
    let (blocks, candidates) = if v6 {
        (V6_BLOCKS, V6_EXCEPTS)
    } else {
        (V4_BLOCKS, V4_EXCEPTS)
    };
    let pool = if excepts { candidates } else { blocks };
    prop::collection::vec(select(pool), 1..=2).prop_map(|v| {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.sort();
        v.dedup();
        v
    })
}

#[derive(Debug, Clone, Default)]
struct EntityChoice {
    nets: Option<Vec<String>>,
    not_nets: Option<Vec<String>>,
    selector: Option<String>,
    not_selector: Option<String>,
    namespace_selector: Option<String>,
    accounts: Option<(Vec<String>, Option<String>)>,
    ports: Vec<String>,
    not_ports: Vec<String>,
    service: bool,
}

fn entity(v6: bool) -> impl Strategy<Value = EntityChoice> {
    (
        prop::option::weighted(0.25, nets(v6, false)),
        prop::option::weighted(0.15, nets(v6, true)),
        prop::option::weighted(0.45, selector()),
        prop::option::weighted(0.2, selector()),
        prop::option::weighted(
            0.2,
            prop_oneof![4 => namespace_selector(), 1 => Just("global()".to_string())],
        ),
        prop::option::weighted(
            0.12,
            (
                prop::collection::vec(select(SERVICE_ACCOUNTS.to_vec()), 0..=1),
                prop::option::of(service_account_selector()),
            ),
        ),
        prop::collection::vec(
            prop_oneof![3 => select(PORTS.to_vec()), 2 => select(gen::PORT_NAMES.to_vec())],
            0..=2,
        ),
        prop::collection::vec(
            prop_oneof![2 => select(PORTS.to_vec()), 1 => select(gen::PORT_NAMES.to_vec())],
            0..=1,
        ),
        prop::bool::weighted(0.08),
    )
        .prop_map(
            |(
                nets,
                not_nets,
                selector,
                not_selector,
                namespace_selector,
                accounts,
                ports,
                not_ports,
                service,
            )| {
                EntityChoice {
                    nets,
                    not_nets,
                    selector,
                    not_selector,
                    namespace_selector,
                    accounts: accounts
                        .map(|(n, s)| (n.into_iter().map(str::to_string).collect(), s)),
                    ports: ports.into_iter().map(str::to_string).collect(),
                    not_ports: not_ports.into_iter().map(str::to_string).collect(),
                    service,
                }
            },
        )
}

fn port_value(text: &str) -> Value {
    match text.parse::<u16>() {
        Ok(n) => json!(n),
        Err(_) => json!(text),
    }
}

/// Writes an entity, dropping what its rule's protocol cannot have.
fn entity_json(
    e: &EntityChoice,
    ports_allowed: bool,
    numeric_allowed: bool,
    service_allowed: bool,
    destination: bool,
    namespaced: bool,
) -> Value {
    let mut out = serde_json::Map::new();
    let keep = |list: &[String]| -> Vec<Value> {
        list.iter()
            .filter(|p| {
                ports_allowed && (numeric_allowed || p.parse::<u16>().is_err() && !p.contains(':'))
            })
            .map(|p| port_value(p))
            .collect()
    };
    if service_allowed && e.service {
        let mut svc = json!({"name": SERVICE.1});
        if !namespaced || SERVICE.0 != "ns-a" || destination {
            svc["namespace"] = json!(SERVICE.0);
        }
        out.insert("services".into(), svc);
        if !destination {
            let ports = keep(&e.ports);
            if !ports.is_empty() {
                out.insert("ports".into(), Value::Array(ports));
            }
        }
        return Value::Object(out);
    }
    if let Some(n) = &e.nets {
        out.insert("nets".into(), json!(n));
    }
    if let Some(n) = &e.not_nets {
        let filtered: Vec<&String> = n.iter().filter(|c| !c.ends_with("/0")).collect();
        if !filtered.is_empty() {
            out.insert("notNets".into(), json!(filtered));
        }
    }
    if let Some(s) = &e.selector {
        out.insert("selector".into(), json!(s));
    }
    if let Some(s) = &e.not_selector {
        out.insert("notSelector".into(), json!(s));
    }
    if let Some(s) = &e.namespace_selector {
        out.insert("namespaceSelector".into(), json!(s));
    }
    if let Some((names, selector)) = &e.accounts {
        let mut sa = serde_json::Map::new();
        if !names.is_empty() {
            sa.insert("names".into(), json!(names));
        }
        if let Some(s) = selector {
            sa.insert("selector".into(), json!(s));
        }
        if !sa.is_empty() {
            out.insert("serviceAccounts".into(), Value::Object(sa));
        }
    }
    let ports = keep(&e.ports);
    if !ports.is_empty() {
        out.insert("ports".into(), Value::Array(ports));
    }
    let not_ports = keep(&e.not_ports);
    if !not_ports.is_empty() {
        out.insert("notPorts".into(), Value::Array(not_ports));
    }
    Value::Object(out)
}

#[derive(Debug, Clone)]
struct RuleChoice {
    action: &'static str,
    protocol: ProtocolChoice,
    not_protocol: Option<&'static str>,
    icmp: Option<(u8, Option<u8>)>,
    not_icmp: bool,
    ip_version: Option<u8>,
    v6_nets: bool,
    source: EntityChoice,
    destination: EntityChoice,
    source_ports: Vec<&'static str>,
}

fn rule() -> impl Strategy<Value = RuleChoice> {
    (
        prop_oneof![3 => Just("Allow"), 2 => Just("Deny"), 1 => Just("Pass"), 1 => Just("Log")],
        protocol(),
        prop::option::weighted(0.1, select(vec!["TCP", "17"])),
        prop::option::weighted(
            0.5,
            (
                select(vec![8u8, 0, 3]),
                prop::option::weighted(0.3, Just(1u8)),
            ),
        ),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.15, select(vec![4u8, 6])),
        prop::bool::weighted(0.35),
        (entity(false), entity(true)),
        (entity(false), entity(true)),
        prop::collection::vec(select(SOURCE_PORTS.to_vec()), 0..=1),
    )
        .prop_map(
            |(
                action,
                protocol,
                not_protocol,
                icmp,
                not_icmp,
                ip_version,
                v6,
                source,
                destination,
                source_ports,
            )| {
                let v6_nets = match ip_version {
                    Some(4) => false,
                    Some(6) => true,
                    _ => v6,
                };
                let pick =
                    |pair: (EntityChoice, EntityChoice)| if v6_nets { pair.1 } else { pair.0 };
                RuleChoice {
                    action,
                    protocol,
                    not_protocol,
                    icmp,
                    not_icmp,
                    ip_version,
                    v6_nets,
                    source: pick(source),
                    destination: pick(destination),
                    source_ports,
                }
            },
        )
}

fn rule_json(r: &RuleChoice, ingress: bool, namespaced: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("action".into(), json!(r.action));
    let (ports_allowed, numeric_allowed) = match r.protocol {
        ProtocolChoice::None => (true, false),
        ProtocolChoice::Ported(_) => (true, true),
        _ => (false, false),
    };
    let mut ip_version = r.ip_version;
    match r.protocol {
        ProtocolChoice::None => {}
        ProtocolChoice::Ported(p) => {
            out.insert(
                "protocol".into(),
                p.parse::<u8>().map(|n| json!(n)).unwrap_or(json!(p)),
            );
        }
        ProtocolChoice::Icmp | ProtocolChoice::Icmp6 => {
            let v6 = r.protocol == ProtocolChoice::Icmp6;
            out.insert("protocol".into(), json!(if v6 { "ICMPv6" } else { "ICMP" }));
            // ipVersion must agree with the ICMP flavour.
            if ip_version.is_some() {
                ip_version = Some(if v6 { 6 } else { 4 });
            }
            if let Some((t, code)) = r.icmp {
                let field = if r.not_icmp { "notICMP" } else { "icmp" };
                let mut icmp = json!({"type": t});
                if let Some(c) = code {
                    icmp["code"] = json!(c);
                }
                out.insert(field.into(), icmp);
            }
        }
        ProtocolChoice::Other => {
            out.insert("protocol".into(), json!(OTHER_PROTOCOL));
        }
    }
    if let Some(p) = r.not_protocol {
        out.insert(
            "notProtocol".into(),
            p.parse::<u8>().map(|n| json!(n)).unwrap_or(json!(p)),
        );
    }
    // Networks of the rule agree with its ipVersion. (An ICMP protocol of the other family
    // than its networks is valid: the rule exists in neither table.)
    let strip = |e: &EntityChoice| {
        let mut e = e.clone();
        if ip_version.is_some_and(|v| (v == 6) != r.v6_nets) {
            e.nets = None;
            e.not_nets = None;
        }
        e
    };
    if let Some(v) = ip_version {
        out.insert("ipVersion".into(), json!(v));
    }
    let mut source = entity_json(
        &strip(&r.source),
        ports_allowed,
        numeric_allowed,
        ingress,
        false,
        namespaced,
    );
    if numeric_allowed && !r.source_ports.is_empty() && source.get("services").is_none() {
        let ports: Vec<Value> = r.source_ports.iter().map(|p| port_value(p)).collect();
        source["ports"] = Value::Array(ports);
    }
    let destination = entity_json(
        &strip(&r.destination),
        ports_allowed,
        numeric_allowed,
        !ingress,
        true,
        namespaced,
    );
    if source.as_object().is_some_and(|o| !o.is_empty()) {
        out.insert("source".into(), source);
    }
    if destination.as_object().is_some_and(|o| !o.is_empty()) {
        out.insert("destination".into(), destination);
    }
    Value::Object(out)
}

#[derive(Debug, Clone)]
pub struct CalicoPolicyGen {
    global: bool,
    namespace: Index,
    tier: &'static str,
    order: Option<f64>,
    selector: Option<String>,
    namespace_selector: Option<String>,
    service_account_selector: Option<String>,
    types: Option<Vec<&'static str>>,
    ingress: Vec<RuleChoice>,
    egress: Vec<RuleChoice>,
}

pub fn calico_policy() -> impl Strategy<Value = CalicoPolicyGen> {
    (
        prop::bool::weighted(0.5),
        any::<Index>(),
        prop_oneof![3 => Just("default"), 2 => Just("security"), 1 => Just("platform"), 1 => Just("extra")],
        prop::option::weighted(0.7, select(vec![50.0, 500.0, 1000.0, 2000.0])),
        prop::option::weighted(0.8, selector()),
        prop::option::weighted(0.3, namespace_selector()),
        prop::option::weighted(0.15, service_account_selector()),
        prop::option::weighted(
            0.6,
            select(vec![vec!["Ingress"], vec!["Egress"], vec!["Ingress", "Egress"]]),
        ),
        prop::collection::vec(rule(), 0..=3),
        prop::collection::vec(rule(), 0..=2),
    )
        .prop_map(
            |(global, namespace, tier, order, selector, namespace_selector, service_account_selector, types, ingress, egress)| {
                CalicoPolicyGen {
                    global,
                    namespace,
                    tier,
                    order,
                    selector,
                    namespace_selector,
                    service_account_selector,
                    types,
                    ingress,
                    egress,
                }
            },
        )
}

impl CalicoPolicyGen {
    pub fn to_json(&self, name: &str, namespaces: usize) -> Value {
        let mut spec = serde_json::Map::new();
        if self.tier != "default" || name.len().is_multiple_of(2) {
            spec.insert("tier".into(), json!(self.tier));
        }
        if let Some(o) = self.order {
            spec.insert("order".into(), json!(o));
        }
        if let Some(s) = &self.selector {
            spec.insert("selector".into(), json!(s));
        }
        if self.global {
            if let Some(s) = &self.namespace_selector {
                spec.insert("namespaceSelector".into(), json!(s));
            }
        }
        if let Some(s) = &self.service_account_selector {
            spec.insert("serviceAccountSelector".into(), json!(s));
        }
        if let Some(t) = &self.types {
            spec.insert("types".into(), json!(t));
        }
        let namespaced = !self.global;
        let rules = |list: &[RuleChoice], ingress: bool| -> Value {
            Value::Array(
                list.iter()
                    .map(|r| rule_json(r, ingress, namespaced))
                    .collect(),
            )
        };
        if !self.ingress.is_empty() {
            spec.insert("ingress".into(), rules(&self.ingress, true));
        }
        if !self.egress.is_empty() {
            spec.insert("egress".into(), rules(&self.egress, false));
        }
        if self.global {
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                   "metadata": {"name": name}, "spec": spec})
        } else {
            let ns = NAMESPACES[self.namespace.index(namespaces)];
            json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec})
        }
    }
}

pub fn tier_json(name: &str, order: Option<f64>, pass: bool) -> Value {
    let mut spec = serde_json::Map::new();
    if let Some(o) = order {
        spec.insert("order".into(), json!(o));
    }
    spec.insert(
        "defaultAction".into(),
        json!(if pass { "Pass" } else { "Deny" }),
    );
    json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name}, "spec": spec})
}

#[derive(Debug, Clone)]
pub struct NetworkSetGen {
    namespace: Option<Index>,
    labels: Labels,
    nets: Vec<String>,
}

pub fn network_set() -> impl Strategy<Value = NetworkSetGen> {
    (
        prop::option::weighted(0.5, any::<Index>()),
        gen::labels(&[("kind", &["ext", "int"]), ("role", &["db", "web"])], 1, 2),
        prop::collection::vec(
            prop_oneof![
                select(V4_BLOCKS),
                select(V4_EXCEPTS),
                select(V6_BLOCKS),
                select(V6_EXCEPTS)
            ],
            1..=2,
        ),
    )
        .prop_map(|(namespace, labels, nets)| NetworkSetGen {
            namespace,
            labels,
            nets: nets.into_iter().map(str::to_string).collect(),
        })
}

impl NetworkSetGen {
    pub fn to_json(&self, name: &str, namespaces: usize) -> Value {
        let meta = match self.namespace {
            Some(ns) => {
                json!({"name": name, "namespace": NAMESPACES[ns.index(namespaces)], "labels": self.labels})
            }
            None => json!({"name": name, "labels": self.labels}),
        };
        let kind = if self.namespace.is_some() {
            "NetworkSet"
        } else {
            "GlobalNetworkSet"
        };
        json!({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": {"nets": self.nets}})
    }
}

/// The slice of the Service the rules name: some pods' addresses, both ports.
pub fn service_slice(addresses: Vec<IpAddr>) -> ServiceSlice {
    ServiceSlice {
        key: ObjectKey::new(SERVICE.0, "svc-1"),
        service: SERVICE.1.to_string(),
        addresses,
        ports: SERVICE_PORTS.to_vec(),
    }
}

/// Tier objects: `security` and `platform` may each be declared, with or without an order,
/// with default action Deny or Pass.
fn tiers() -> impl Strategy<Value = Vec<(&'static str, Option<f64>, bool)>> {
    (
        prop::option::weighted(
            0.6,
            (
                prop::option::weighted(0.8, select(vec![100.0, 3000.0])),
                any::<bool>(),
            ),
        ),
        prop::option::weighted(
            0.4,
            (
                prop::option::weighted(0.8, select(vec![200.0, 2_000_000.0])),
                any::<bool>(),
            ),
        ),
    )
        .prop_map(|(security, platform)| {
            let mut out = Vec::new();
            if let Some((order, pass)) = security {
                out.push(("security", order, pass));
            }
            if let Some((order, pass)) = platform {
                out.push(("platform", order, pass));
            }
            out
        })
}

/// A cluster of pods and namespaces with Kubernetes policies, Calico policies, tiers, network
/// sets, service accounts and a Service.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        gen::cluster(),
        prop::collection::vec(calico_policy(), 1..=4),
        tiers(),
        prop::collection::vec(network_set(), 0..=3),
        prop::collection::vec(any::<Index>(), 6),
        prop::collection::vec(prop::bool::weighted(0.4), 4),
        prop::collection::vec(any::<bool>(), 6),
    )
        .prop_map(
            |(mut cluster, policies, tiers, sets, service_accounts, sa_labels, in_service)| {
                let namespaces = cluster
                    .pods
                    .keys()
                    .map(|k| k.namespace.to_string())
                    .chain(cluster.namespaces.keys().cloned())
                    .filter_map(|ns| NAMESPACES.iter().position(|n| *n == ns))
                    .max()
                    .map_or(2, |i| i + 1)
                    .max(2);
                let keys: Vec<ObjectKey> = cluster.pods.keys().cloned().collect();
                let mut addresses = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    if let Some(pod) = cluster.pods.get_mut(key) {
                        let sa = SERVICE_ACCOUNTS[service_accounts[i % 6].index(2)];
                        pod.service_account = Some(sa.into());
                        if in_service[i % 6] {
                            addresses.extend(pod.ips.iter().copied());
                        }
                    }
                }
                for (i, labelled) in sa_labels.iter().enumerate() {
                    if *labelled {
                        let role = if i % 2 == 0 { "ci" } else { "svc" };
                        cluster.service_accounts.insert(
                            ObjectKey::new(NAMESPACES[i % namespaces], "builder"),
                            Labels::from([("role".into(), role.into())]),
                        );
                    }
                }
                addresses.sort();
                cluster.slices.push(service_slice(addresses));
                for (name, order, pass) in tiers {
                    let t = tier_json(name, order, pass);
                    cluster.calico.insert(calico_key(&t), t);
                }
                for (i, p) in policies.iter().enumerate() {
                    let object = p.to_json(&format!("cp-{i}"), namespaces);
                    cluster.calico.insert(calico_key(&object), object);
                }
                for (i, s) in sets.iter().enumerate() {
                    let object = s.to_json(&format!("set-{i}"), namespaces);
                    cluster.calico.insert(calico_key(&object), object);
                }
                cluster
            },
        )
}

/// Every port a probe should try: rule ports, their neighbours, named port numbers.
pub fn probe_ports() -> Vec<u16> {
    let mut ports: BTreeMap<u16, ()> = BTreeMap::new();
    for p in [
        80u16,
        53,
        443,
        8080,
        5353,
        79,
        444,
        999,
        1000,
        9000,
        9001,
        gen::UNUSED_PORT,
    ] {
        ports.insert(p, ());
    }
    ports.into_keys().collect()
}

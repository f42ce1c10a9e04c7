//! A reference evaluator of Calico's policy model (`../shared/calico/SPEC.md`, sections C and D),
//! over the objects as the user wrote them (`projectcalico.org/v3` JSON) and the Kubernetes
//! policies of the cluster, with no use of Palisade's converters or compiler (selectors are
//! parsed with Palisade's parser, which its own tests check against Calico's, and evaluated
//! here):
//!
//! * An endpoint's labels (D.2): its own, with `projectcalico.org/namespace`,
//!   `projectcalico.org/orchestrator=k8s` and `projectcalico.org/serviceaccount` set; then, for
//!   keys it lacks, `pcns.<key>` of its namespace (the Namespace object's labels, or only its
//!   name label when there is no object) and `pcns.projectcalico.org/name`, and `pcsa.<key>` of
//!   its service account with `pcsa.projectcalico.org/name`. Network sets: their own labels and,
//!   namespaced, the namespace label and `pcns.` labels (D.5).
//! * A policy applies to a pod (C.1, D.1): a NetworkPolicy to pods of its namespace matching its
//!   selector and its serviceAccountSelector (over the service account's labels); a
//!   GlobalNetworkPolicy to pods matching its selector, namespaceSelector (over the namespace's
//!   labels) and serviceAccountSelector; a Kubernetes policy to pods of its namespace matching
//!   its podSelector. In a direction only when its types (defaulted as Calico's API does, A.6)
//!   include it.
//! * Order (C.2): tiers with a Tier object (or built in) first, then by order (absent last), then
//!   name; policies in a tier by order (absent last; Kubernetes policies 1000), then by the
//!   string `name/namespace/kind`.
//! * Verdict (C.3, C.4): for each tier with an applicable policy, each policy in order, each
//!   rule: Log goes on, Allow and Deny decide, Pass leaves the tier; a tier nobody decided in
//!   drops unless its default action is Pass; after the last tier, allowed.
//! * A rule (B, D.4, F.3): absent from a family its ipVersion, ICMP protocol or networks exclude;
//!   otherwise every criterion must hold. A side's selector fields form "the endpoints it names":
//!   a namespaceSelector (`all()`: any namespace; `global()`: none) or, in a namespaced policy,
//!   the policy's namespace, once any selector field is used; the selector; the service
//!   accounts (names and selector). An address names the endpoints it belongs to (a pod, and
//!   every network set whose networks hold it). With a positive selector the side holds when one
//!   of the address's endpoints is named and not in the notSelector (Felix folds both into one
//!   set); with only a notSelector, when none of them is in it. Named ports hold when one of the
//!   named endpoints (every pod when the side names none) has a container port of that name, the
//!   packet's protocol and port (and the rule's protocol, if any).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use palisade::model::kubernetes::KubernetesPolicy;
use palisade::model::{Family, ObjectKey, Pod, Protocol, NAMESPACE_NAME_LABEL};
use palisade::selector::{Expr, LabelText, Selector};
use serde_json::Value;

use super::cluster::Cluster;
use super::iptables::{Packet, Transport};
use super::reference::{self, expr_matches, Endpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

fn parse(text: &str) -> Expr {
    Selector::parse(text)
        .unwrap_or_else(|e| panic!("generated selector {text:?}: {e}"))
        .expr()
        .clone()
}

/// An endpoint's labels as this evaluator builds them: a plain map, independent of the
/// product's label type.
type Labels = BTreeMap<LabelText, LabelText>;

fn map_of(labels: &palisade::selector::Labels) -> Labels {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn matches(expr: &Expr, labels: &Labels) -> bool {
    expr_matches(expr, &|k| labels.get(k).map(|v| v.as_str()))
}

fn net(text: &str) -> IpNetwork {
    text.parse().expect("generated CIDR")
}

fn in_net(net: &IpNetwork, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNetwork::V4(n), IpAddr::V4(ip)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(n.prefix()))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(n.network()) & mask
        }
        (IpNetwork::V6(n), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(n.prefix()))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(n.network()) & mask
        }
        _ => false,
    }
}

/// Something an address can belong to: a pod or a network set.
#[derive(Debug, Clone)]
struct Named {
    namespace: Option<String>,
    labels: Labels,
    /// For pods.
    pod: Option<Pod>,
}

impl Cluster {
    fn namespace_map(&self, ns: &str) -> Labels {
        let mut labels = match self.namespaces.get(ns) {
            Some(object) => map_of(&object.labels),
            None => Labels::from([(NAMESPACE_NAME_LABEL.into(), ns.into())]),
        };
        labels.insert("projectcalico.org/name".into(), ns.into());
        labels
    }

    fn service_account_map(&self, ns: &str, sa: &str) -> Labels {
        let mut labels = self
            .service_accounts
            .get(&ObjectKey::new(ns, sa))
            .map(map_of)
            .unwrap_or_default();
        labels.insert("projectcalico.org/name".into(), sa.into());
        labels
    }

    fn pod_view(&self, pod: &Pod) -> Labels {
        let mut labels = map_of(&pod.labels);
        labels.insert(
            "projectcalico.org/namespace".into(),
            pod.key.namespace.as_str().into(),
        );
        labels.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        if let Some(sa) = &pod.service_account {
            labels.insert(
                "projectcalico.org/serviceaccount".into(),
                sa.as_str().into(),
            );
            for (k, v) in self.service_account_map(&pod.key.namespace, sa) {
                labels.entry(format!("pcsa.{k}").into()).or_insert(v);
            }
        }
        for (k, v) in self.namespace_map(&pod.key.namespace) {
            labels.entry(format!("pcns.{k}").into()).or_insert(v);
        }
        labels
    }

    fn network_sets(&self) -> Vec<(Option<String>, Labels, Vec<IpNetwork>)> {
        self.calico
            .values()
            .filter(|o| matches!(o["kind"].as_str(), Some("NetworkSet" | "GlobalNetworkSet")))
            .map(|o| {
                let ns = o["metadata"]["namespace"].as_str().map(str::to_string);
                let mut labels: Labels =
                    serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
                if let Some(ns) = &ns {
                    labels.insert("projectcalico.org/namespace".into(), ns.as_str().into());
                    for (k, v) in self.namespace_map(ns) {
                        labels.entry(format!("pcns.{k}").into()).or_insert(v);
                    }
                }
                let nets = o["spec"]["nets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|t| {
                        let n = net(t);
                        IpNetwork::new(n.network(), n.prefix()).expect("masked")
                    })
                    .collect();
                (ns, labels, nets)
            })
            .collect()
    }

    /// Everything an address belongs to.
    fn named_at(&self, ip: IpAddr) -> Vec<Named> {
        let mut out: Vec<Named> = self
            .pods
            .values()
            .filter(|p| p.ips.contains(&ip))
            .map(|p| Named {
                namespace: Some(p.key.namespace.to_string()),
                labels: self.pod_view(p),
                pod: Some(p.clone()),
            })
            .collect();
        for (ns, labels, nets) in self.network_sets() {
            if nets.iter().any(|n| in_net(n, ip)) {
                out.push(Named {
                    namespace: ns,
                    labels,
                    pod: None,
                });
            }
        }
        out
    }
}

/// A namespace selector on an endpoint: its labels with `prefix`, `all()` meaning "has a
/// namespace".
fn inherited_matches(expr: &Expr, n: &Named, prefix: &str) -> bool {
    match expr {
        Expr::All => n.namespace.is_some(),
        Expr::Not(inner) => !inherited_matches(inner, n, prefix),
        Expr::And(items) => items.iter().all(|e| inherited_matches(e, n, prefix)),
        Expr::Or(items) => items.iter().any(|e| inherited_matches(e, n, prefix)),
        leaf => expr_matches(leaf, &|k| {
            n.labels
                .get(format!("{prefix}{k}").as_str())
                .map(|v| v.as_str())
        }),
    }
}

/// A policy of any kind, ready for ordering and evaluation.
enum Subject<'a> {
    Calico { object: &'a Value, global: bool },
    Kubernetes(&'a KubernetesPolicy),
}

struct Applicable<'a> {
    tier: String,
    order: Option<f64>,
    sort_name: String,
    subject: Subject<'a>,
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn calico_types(spec: &Value) -> (bool, bool) {
    let has = |f: &str| {
        spec.get(f)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    match spec.get("types").and_then(Value::as_array) {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => match (has("ingress"), has("egress")) {
            (_, false) => (true, false),
            (false, true) => (false, true),
            (true, true) => (true, true),
        },
    }
}

fn calico_applies(cluster: &Cluster, object: &Value, pod: &Pod, dir: Dir) -> bool {
    let spec = &object["spec"];
    let (ingress, egress) = calico_types(spec);
    if !(match dir {
        Dir::Ingress => ingress,
        Dir::Egress => egress,
    }) {
        return false;
    }
    let global = object["kind"] == "GlobalNetworkPolicy";
    if !global && object["metadata"]["namespace"].as_str() != Some(pod.key.namespace.as_str()) {
        return false;
    }
    let view = cluster.pod_view(pod);
    if let Some(s) = text(spec, "selector") {
        if !matches(&parse(s), &view) {
            return false;
        }
    }
    if global {
        if let Some(s) = text(spec, "namespaceSelector") {
            if !matches(&parse(s), &cluster.namespace_map(&pod.key.namespace)) {
                return false;
            }
        }
    }
    if let Some(s) = text(spec, "serviceAccountSelector") {
        let Some(sa) = &pod.service_account else {
            return false;
        };
        if !matches(
            &parse(s),
            &cluster.service_account_map(&pod.key.namespace, sa),
        ) {
            return false;
        }
    }
    true
}

/// Tier order and default action, by name.
fn tier_info(cluster: &Cluster, name: &str) -> ((bool, bool, Option<f64>, String), bool) {
    let object = cluster
        .calico
        .values()
        .find(|o| o["kind"] == "Tier" && o["metadata"]["name"] == name);
    let builtin = match name {
        "default" => Some((1_000_000.0, false)),
        "kube-admin" => Some((1000.0, true)),
        "kube-baseline" => Some((10_000_000.0, true)),
        _ => None,
    };
    let (declared, order, pass) = match (object, builtin) {
        (_, Some((order, pass))) => (true, Some(order), pass),
        (Some(o), None) => (
            true,
            o["spec"]["order"].as_f64(),
            o["spec"]["defaultAction"] == "Pass",
        ),
        (None, None) => (false, None, false),
    };
    ((!declared, order.is_none(), order, name.to_string()), pass)
}

fn applicable<'a>(cluster: &'a Cluster, pod: &Pod, dir: Dir) -> Vec<Applicable<'a>> {
    let mut out = Vec::new();
    for object in cluster.calico.values() {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "NetworkPolicy" | "GlobalNetworkPolicy") {
            continue;
        }
        if !calico_applies(cluster, object, pod, dir) {
            continue;
        }
        let spec = &object["spec"];
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        out.push(Applicable {
            tier: text(spec, "tier").unwrap_or("default").to_string(),
            order: spec["order"].as_f64(),
            sort_name: format!(
                "{name}/{}/{kind}",
                if kind == "GlobalNetworkPolicy" {
                    ""
                } else {
                    ns
                }
            ),
            subject: Subject::Calico {
                object,
                global: kind == "GlobalNetworkPolicy",
            },
        });
    }
    for policy in cluster.policies.values() {
        let rules = match dir {
            Dir::Ingress => &policy.ingress,
            Dir::Egress => &policy.egress,
        };
        if rules.is_none()
            || policy.key.namespace != pod.key.namespace
            || !reference::selector_matches(&policy.pod_selector, &pod.labels)
        {
            continue;
        }
        out.push(Applicable {
            tier: "default".into(),
            order: Some(1000.0),
            sort_name: format!(
                "{}/{}/KubernetesNetworkPolicy",
                policy.key.name, policy.key.namespace
            ),
            subject: Subject::Kubernetes(policy),
        });
    }
    out
}

/// The legacy annotation's policy: every pod of the namespace isolated for ingress.
fn legacy_isolated(cluster: &Cluster, pod: &Pod, dir: Dir) -> bool {
    dir == Dir::Ingress && cluster.legacy_default_deny(&pod.key.namespace)
}

fn protocol_number(v: &Value) -> Option<u8> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as u8),
        Value::String(s) => match s.as_str() {
            "TCP" => Some(6),
            "UDP" => Some(17),
            "SCTP" => Some(132),
            "ICMP" => Some(1),
            "ICMPv6" => Some(58),
            "UDPLite" => Some(136),
            digits => digits.parse().ok(),
        },
        _ => None,
    }
}

fn family_of(ip: &IpAddr) -> Family {
    Family::of(ip)
}

/// Whether the rule exists in this family's table (F.3).
fn rule_in_family(rule: &Value, family: Family) -> bool {
    match rule["ipVersion"].as_u64() {
        Some(4) if family != Family::V4 => return false,
        Some(6) if family != Family::V6 => return false,
        Some(_) => {}
        None => {
            if rule["protocol"] == "ICMP" && family != Family::V4 {
                return false;
            }
            if rule["protocol"] == "ICMPv6" && family != Family::V6 {
                return false;
            }
        }
    }
    for side in ["source", "destination"] {
        for list in ["nets", "notNets"] {
            if let Some(nets) = rule[side][list].as_array() {
                if !nets.is_empty()
                    && !nets
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|n| Family::of_net(&net(n)) == family)
                {
                    return false;
                }
            }
        }
    }
    true
}

enum PortEntry {
    Range(u16, u16),
    Named(String),
}

fn ports(v: &Value) -> Vec<PortEntry> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::Number(n) => {
                let n = n.as_u64().unwrap_or(0) as u16;
                PortEntry::Range(n, n)
            }
            Value::String(s) => match s.split_once(':') {
                Some((a, b)) => PortEntry::Range(a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
                None => match s.parse::<u16>() {
                    Ok(n) => PortEntry::Range(n, n),
                    Err(_) => PortEntry::Named(s.clone()),
                },
            },
            _ => PortEntry::Named(String::new()),
        })
        .collect()
}

/// Does the pod have a container port named `name` that is this packet's protocol and port (and
/// the rule's protocol, if it names one)?
fn named_port_holds(
    pod: &Pod,
    name: &str,
    packet_protocol: Option<Protocol>,
    port: u16,
    rule_protocol: Option<u8>,
) -> bool {
    pod.named_ports.iter().any(|p| {
        p.name == name
            && Some(p.protocol) == packet_protocol
            && p.port == port
            && rule_protocol.is_none_or(|r| r == p.protocol.number())
    })
}

struct Side<'a> {
    addr: IpAddr,
    port: Option<u16>,
    protocol: Option<Protocol>,
    is_destination: bool,
    cluster: &'a Cluster,
    policy_namespace: Option<&'a str>,
    rule_protocol: Option<u8>,
}

impl Side<'_> {
    fn holds(&self, e: &Value) -> bool {
        let family = family_of(&self.addr);
        let list = |field: &str| -> Vec<IpNetwork> {
            e[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(net)
                .filter(|n| Family::of_net(n) == family)
                .collect()
        };
        if e.get("nets").is_some() && !list("nets").iter().any(|n| in_net(n, self.addr)) {
            return false;
        }
        if list("notNets").iter().any(|n| in_net(n, self.addr)) {
            return false;
        }
        if let Some(svc) = e.get("services") {
            let ns = text(svc, "namespace")
                .or(self.policy_namespace)
                .unwrap_or_default()
                .to_string();
            let name = text(svc, "name").unwrap_or_default();
            let in_service = self.cluster.slices.iter().any(|s| {
                s.key.namespace == ns
                    && s.service == name
                    && s.addresses.contains(&self.addr)
                    && (!self.is_destination
                        || s.ports
                            .iter()
                            .any(|(p, n)| Some(*p) == self.protocol && Some(*n) == self.port))
            });
            if !in_service {
                return false;
            }
        }
        let named = self.cluster.named_at(self.addr);
        let selector = text(e, "selector").map(parse);
        let not_selector = text(e, "notSelector").map(parse);
        let namespace_selector = text(e, "namespaceSelector");
        let accounts = e.get("serviceAccounts");
        let s_exists = selector.is_some() || accounts.is_some();
        let n_exists = namespace_selector.is_some() || self.policy_namespace.is_some();
        let positive =
            s_exists || (n_exists && (not_selector.is_some() || namespace_selector.is_some()));
        // A namespaceSelector reads the endpoint's `pcns.` labels, so a negative one also holds
        // for things in no namespace (D.3); `all()` means "in a namespace", `global()` "in none".
        let in_scope = |n: &Named| match namespace_selector {
            Some("global()") => n.namespace.is_none(),
            Some(s) => inherited_matches(&parse(s), n, "pcns."),
            None => match self.policy_namespace {
                Some(ns) => n.namespace.as_deref() == Some(ns),
                None => true,
            },
        };
        // Service accounts read `pcsa.` labels and `projectcalico.org/serviceaccount`.
        let accounts_hold = |n: &Named| {
            let Some(accounts) = accounts else {
                return true;
            };
            let account = n
                .labels
                .get("projectcalico.org/serviceaccount")
                .map(|v| v.as_str());
            let names_ok = accounts["names"].as_array().is_none_or(|names| {
                names.is_empty() || names.iter().any(|x| x.as_str() == account)
            });
            let selector_ok = text(accounts, "selector").is_none_or(|s| {
                expr_matches(&parse(s), &|k| {
                    n.labels
                        .get(format!("pcsa.{k}").as_str())
                        .map(|v| v.as_str())
                })
            });
            names_ok && selector_ok
        };
        let selected = |n: &Named| {
            in_scope(n)
                && selector.as_ref().is_none_or(|s| matches(s, &n.labels))
                && accounts_hold(n)
                && not_selector.as_ref().is_none_or(|s| !matches(s, &n.labels))
        };
        if !positive {
            if let Some(neg) = &not_selector {
                if named.iter().any(|n| matches(neg, &n.labels)) {
                    return false;
                }
            }
        }
        let selection_ok = !positive || named.iter().any(&selected);
        // Named ports resolve among the named pods (every pod when the side names none).
        let has_named_port = |name: &str| -> bool {
            let Some(port) = self.port else {
                return false;
            };
            named.iter().any(|n| {
                n.pod.as_ref().is_some_and(|pod| {
                    (!positive || selected(n))
                        && named_port_holds(pod, name, self.protocol, port, self.rule_protocol)
                })
            })
        };
        let positive_ports = ports(&e["ports"]);
        let numeric: Vec<(u16, u16)> = positive_ports
            .iter()
            .filter_map(|p| match p {
                PortEntry::Range(a, b) => Some((*a, *b)),
                PortEntry::Named(_) => None,
            })
            .collect();
        let names: Vec<&str> = positive_ports
            .iter()
            .filter_map(|p| match p {
                PortEntry::Named(n) => Some(n.as_str()),
                PortEntry::Range(..) => None,
            })
            .collect();
        let ported_packet = self.port;
        let ports_ok = if names.is_empty() {
            selection_ok
                && (numeric.is_empty()
                    || ported_packet
                        .is_some_and(|p| numeric.iter().any(|(a, b)| *a <= p && p <= *b)))
        } else {
            (selection_ok
                && ported_packet.is_some_and(|p| numeric.iter().any(|(a, b)| *a <= p && p <= *b)))
                || names.iter().any(|n| has_named_port(n))
        };
        if !ports_ok {
            return false;
        }
        for not_port in ports(&e["notPorts"]) {
            let hit = match &not_port {
                PortEntry::Range(a, b) => ported_packet.is_some_and(|p| *a <= p && p <= *b),
                PortEntry::Named(n) => has_named_port(n),
            };
            if hit {
                return false;
            }
        }
        true
    }
}

/// Whether one Calico rule matches the packet, `local` being the policy's pod end.
fn calico_rule_matches(
    cluster: &Cluster,
    rule: &Value,
    policy_namespace: Option<&str>,
    packet: &Packet,
) -> bool {
    let family = family_of(&packet.src);
    if !rule_in_family(rule, family) {
        return false;
    }
    let number = packet.protocol_number();
    if let Some(p) = rule.get("protocol").and_then(protocol_number) {
        if p != number {
            return false;
        }
    }
    if let Some(p) = rule.get("notProtocol").and_then(protocol_number) {
        if p == number {
            return false;
        }
    }
    for (field, negated) in [("icmp", false), ("notICMP", true)] {
        if let Some(icmp) = rule.get(field) {
            let Transport::Icmp { icmp_type, code } = packet.transport else {
                return false;
            };
            let same = icmp["type"].as_u64() == Some(u64::from(icmp_type))
                && icmp["code"].as_u64().is_none_or(|c| c == u64::from(code));
            if same == negated {
                return false;
            }
        }
    }
    let (protocol, sport, dport) = match packet.transport {
        Transport::Ported {
            protocol,
            sport,
            dport,
        } => (Some(protocol), Some(sport), Some(dport)),
        _ => (None, None, None),
    };
    let rule_protocol = rule.get("protocol").and_then(protocol_number);
    let side = |addr, port, is_destination| Side {
        addr,
        port,
        protocol,
        is_destination,
        cluster,
        policy_namespace,
        rule_protocol,
    };
    side(packet.src, sport, false).holds(&rule["source"])
        && side(packet.dst, dport, true).holds(&rule["destination"])
}

/// What one policy decides for the packet.
enum Decision {
    Allow,
    Deny,
    Pass,
    None,
}

fn decide(
    cluster: &Cluster,
    subject: &Subject<'_>,
    dir: Dir,
    local: &Pod,
    remote: &Endpoint<'_>,
    packet: &Packet,
) -> Decision {
    match subject {
        Subject::Kubernetes(policy) => {
            let (family, protocol, port) = match packet.transport {
                Transport::Ported {
                    protocol, dport, ..
                } => (family_of(&packet.src), protocol, dport),
                // Kubernetes rules are about TCP, UDP and SCTP; a rule without ports allows the rest.
                _ => (family_of(&packet.src), Protocol::Tcp, 0),
            };
            let ported = matches!(packet.transport, Transport::Ported { .. });
            let allowed = reference::policy_allows(
                cluster,
                policy,
                dir == Dir::Ingress,
                local,
                remote,
                (family, protocol, port),
                ported,
            );
            if allowed {
                Decision::Allow
            } else {
                Decision::None
            }
        }
        Subject::Calico { object, global } => {
            let rules = match dir {
                Dir::Ingress => &object["spec"]["ingress"],
                Dir::Egress => &object["spec"]["egress"],
            };
            let namespace = if *global {
                None
            } else {
                object["metadata"]["namespace"].as_str()
            };
            for rule in rules.as_array().into_iter().flatten() {
                if !calico_rule_matches(cluster, rule, namespace, packet) {
                    continue;
                }
                match rule["action"].as_str() {
                    Some("Allow") => return Decision::Allow,
                    Some("Deny") => return Decision::Deny,
                    Some("Pass") => return Decision::Pass,
                    _ => {}
                }
            }
            Decision::None
        }
    }
}

/// The verdict of `local`'s policies in `dir` on the packet (C.3, C.4).
pub fn direction_allows(
    cluster: &Cluster,
    dir: Dir,
    local: &Pod,
    remote: &Endpoint<'_>,
    packet: &Packet,
) -> bool {
    let mut policies = applicable(cluster, local, dir);
    let legacy = legacy_isolated(cluster, local, dir);
    if policies.is_empty() && !legacy {
        return true;
    }
    let mut tiers: BTreeMap<TierKey, (bool, Vec<Applicable<'_>>)> = BTreeMap::new();
    if legacy {
        let (key, pass) = tier_info(cluster, "default");
        tiers
            .entry((key.0, key.1, OrderKey(key.2), key.3))
            .or_insert((pass, Vec::new()));
    }
    for policy in policies.drain(..) {
        let (key, pass) = tier_info(cluster, &policy.tier);
        tiers
            .entry((key.0, key.1, OrderKey(key.2), key.3))
            .or_insert((pass, Vec::new()))
            .1
            .push(policy);
    }
    for (_, (default_pass, mut members)) in tiers {
        members.sort_by(|a, b| {
            (a.order.is_none(), OrderKey(a.order), &a.sort_name).cmp(&(
                b.order.is_none(),
                OrderKey(b.order),
                &b.sort_name,
            ))
        });
        let mut passed = false;
        for policy in &members {
            match decide(cluster, &policy.subject, dir, local, remote, packet) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Pass => {
                    passed = true;
                    break;
                }
                Decision::None => {}
            }
        }
        if !passed && !default_pass {
            return false;
        }
    }
    true
}

/// Declared tiers first, then tiers with an order, by order, then by name.
type TierKey = (bool, bool, OrderKey, String);

/// A total order of optional tier and policy orders.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderKey(Option<f64>);

impl Eq for OrderKey {}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
        }
    }
}

/// The verdict on a new connection: the source's egress and the destination's ingress.
pub fn allowed(cluster: &Cluster, src: &Endpoint<'_>, dst: &Endpoint<'_>, packet: &Packet) -> bool {
    let egress = match src {
        Endpoint::Pod(pod) => direction_allows(cluster, Dir::Egress, pod, dst, packet),
        Endpoint::External(_) => true,
    };
    let ingress = match dst {
        Endpoint::Pod(pod) => direction_allows(cluster, Dir::Ingress, pod, src, packet),
        Endpoint::External(_) => true,
    };
    egress && ingress
}

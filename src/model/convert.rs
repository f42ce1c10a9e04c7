//! Conversion of Kubernetes objects (k8s-openapi types) into Palisade's model, with validation.
//!
//! Errors name the object and the field, e.g. `NetworkPolicy default/web: spec.ingress[0].ports[1].port: ...`.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kubernetes::{
    IpBlock, KubernetesPolicy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule, Selection,
};
use super::{
    Enforcement, NamedPort, Namespace, NamespaceDenials, ObjectKey, Pod, Protocol, ServiceAccount,
    ServiceSlice,
};
use crate::selector::{Labels, Selector};

/// The legacy namespace annotation that isolates every pod of the namespace for ingress.
pub const LEGACY_ISOLATION_ANNOTATION: &str = "net.beta.kubernetes.io/network-policy";

/// An object Palisade cannot use, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ConvertError {
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
}

/// Something accepted but worth telling the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub object: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// Collects warnings and builds errors for one object.
pub(crate) struct Context<'a> {
    object: String,
    warnings: &'a mut Vec<Warning>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(object: String, warnings: &'a mut Vec<Warning>) -> Self {
        Self { object, warnings }
    }

    pub(crate) fn error(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConvertError {
        ConvertError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn object_key(meta: &meta::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

fn labels(meta: &meta::ObjectMeta) -> Labels {
    meta.labels
        .as_ref()
        .map(crate::selector::labels_of)
        .unwrap_or_default()
}

/// Converts a Pod. `Ok(None)` means the pod takes no part in policy: it is host-networked, has
/// no IP yet, or has finished (phase Succeeded or Failed).
pub fn pod(pod: &core::Pod, warnings: &mut Vec<Warning>) -> Result<Option<Pod>, ConvertError> {
    let key = object_key(&pod.metadata);
    let ctx = Context {
        object: format!("Pod {key}"),
        warnings,
    };
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(None);
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    ) {
        return Ok(None);
    }
    let mut ips = Vec::new();
    if let Some(status) = status {
        match status.pod_ips.as_deref() {
            Some(pod_ips) if !pod_ips.is_empty() => {
                for (i, entry) in pod_ips.iter().enumerate() {
                    let ip = parse_ip(&entry.ip).ok_or_else(|| {
                        ctx.error(
                            format!("status.podIPs[{i}].ip"),
                            format!("{:?} is not an IP address", entry.ip),
                        )
                    })?;
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
            _ => {
                if let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) {
                    ips.push(parse_ip(ip).ok_or_else(|| {
                        ctx.error("status.podIP", format!("{ip:?} is not an IP address"))
                    })?);
                }
            }
        }
    }
    if ips.is_empty() {
        return Ok(None);
    }
    let mut named_ports = Vec::new();
    for (c, container) in spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        for (p, port) in container
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let Some(name) = port.name.as_ref() else {
                continue;
            };
            let field = format!("spec.containers[{c}].ports[{p}]");
            let protocol = match port.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(text) => parse_protocol(text).ok_or_else(|| {
                    ctx.error(
                        format!("{field}.protocol"),
                        format!("unknown protocol {text:?}"),
                    )
                })?,
            };
            let number = u16::try_from(port.container_port)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ctx.error(
                        format!("{field}.containerPort"),
                        format!("{} is not a port number (1-65535)", port.container_port),
                    )
                })?;
            named_ports.push(NamedPort {
                name: name.as_str().into(),
                protocol,
                port: number,
            });
        }
    }
    // The API server's ServiceAccount admission names `default` when a pod names none.
    let service_account = spec
        .and_then(|s| {
            s.service_account_name
                .clone()
                .or_else(|| s.service_account.clone())
        })
        .filter(|sa| !sa.is_empty())
        .map_or_else(|| "default".into(), super::Name::from);
    Ok(Some(Pod {
        node: spec
            .and_then(|s| s.node_name.as_deref())
            .map(super::Name::from),
        ips,
        labels: labels(&pod.metadata),
        named_ports,
        service_account: Some(service_account),
        key,
    }))
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// Converts a Namespace, reading the legacy isolation annotation.
pub fn namespace(namespace: &core::Namespace, warnings: &mut Vec<Warning>) -> Namespace {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let mut ctx = Context {
        object: format!("Namespace {name}"),
        warnings,
    };
    let annotation = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_ISOLATION_ANNOTATION));
    let legacy_default_deny = match annotation {
        None => false,
        Some(value) => {
            let isolated = is_legacy_default_deny(value);
            if !isolated {
                ctx.warn(
                    format!("metadata.annotations[{LEGACY_ISOLATION_ANNOTATION}]"),
                    format!(
                        "{value:?} is not {{\"ingress\": {{\"isolation\": \"DefaultDeny\"}}}}; the namespace is not isolated"
                    ),
                );
            }
            isolated
        }
    };
    let mut labels = labels(&namespace.metadata);
    // Older API servers do not add it; selectors written for newer ones rely on it.
    if !labels.contains_key(super::NAMESPACE_NAME_LABEL) {
        labels.insert(super::NAMESPACE_NAME_LABEL.into(), name.as_str().into());
    }
    let denials = namespace_denials(namespace, &mut ctx);
    Namespace {
        labels,
        name,
        legacy_default_deny,
        denials,
    }
}

/// Reads Palisade's own annotations. A value Palisade cannot read is a warning: enforcement
/// then stays on (failing closed) and logging follows the node.
fn namespace_denials(namespace: &core::Namespace, ctx: &mut Context<'_>) -> NamespaceDenials {
    use super::denials::{ENFORCEMENT_ANNOTATION, LOG_DENIED_ANNOTATION};
    let annotations = namespace.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    let enforcement = get(ENFORCEMENT_ANNOTATION).map(|value| {
        value.parse::<Enforcement>().unwrap_or_else(|message| {
            ctx.warn(
                format!("metadata.annotations[{ENFORCEMENT_ANNOTATION}]"),
                format!("{message}; the namespace's policies are enforced"),
            );
            Enforcement::Enforce
        })
    });
    let log_denied = get(LOG_DENIED_ANNOTATION).and_then(|value| {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                ctx.warn(
                    format!("metadata.annotations[{LOG_DENIED_ANNOTATION}]"),
                    format!(
                        "{value:?} is neither \"true\" nor \"false\"; the node's setting applies"
                    ),
                );
                None
            }
        }
    });
    NamespaceDenials {
        enforcement,
        log_denied,
    }
}

fn is_legacy_default_deny(value: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(value)
        .ok()
        .and_then(|v| {
            v.get("ingress")?
                .get("isolation")?
                .as_str()
                .map(|s| s == "DefaultDeny")
        })
        .unwrap_or(false)
}

/// Converts and validates a `networking.k8s.io/v1` NetworkPolicy (v1beta1 policies are read into
/// the same type).
pub fn policy(
    policy: &networking::NetworkPolicy,
    warnings: &mut Vec<Warning>,
) -> Result<KubernetesPolicy, ConvertError> {
    let key = object_key(&policy.metadata);
    let mut ctx = Context {
        object: format!("NetworkPolicy {key}"),
        warnings,
    };
    if key.name.is_empty() {
        return Err(ctx.error("metadata.name", "missing"));
    }
    let default_spec = networking::NetworkPolicySpec::default();
    let spec = policy.spec.as_ref().unwrap_or(&default_spec);
    let pod_selector = selector(&mut ctx, "spec.podSelector", spec.pod_selector.as_ref())?;
    let ingress_rules = spec.ingress.as_deref().unwrap_or_default();
    let egress_rules = spec.egress.as_deref().unwrap_or_default();
    let (isolates_ingress, isolates_egress) = match spec.policy_types.as_deref() {
        None | Some([]) => (true, !egress_rules.is_empty()),
        Some(types) => {
            let mut ingress = false;
            let mut egress = false;
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => {
                        return Err(ctx.error(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?} (expected Ingress or Egress)"),
                        ))
                    }
                }
            }
            (ingress, egress)
        }
    };
    // Each rule as (peers, ports), so both directions share one conversion.
    let ingress_specs: Vec<_> = ingress_rules
        .iter()
        .map(|r| (r.from.as_deref(), r.ports.as_deref()))
        .collect();
    let egress_specs: Vec<_> = egress_rules
        .iter()
        .map(|r| (r.to.as_deref(), r.ports.as_deref()))
        .collect();
    let ingress = isolates_ingress
        .then(|| direction_rules(&mut ctx, &key.namespace, "ingress", "from", &ingress_specs))
        .transpose()?;
    let egress = isolates_egress
        .then(|| direction_rules(&mut ctx, &key.namespace, "egress", "to", &egress_specs))
        .transpose()?;
    Ok(KubernetesPolicy {
        key,
        pod_selector,
        ingress,
        egress,
    })
}

/// The stand-in for a policy that cannot be converted: it isolates the pods it selects, in the
/// directions it declares, and allows nothing, so a policy Palisade cannot read never opens
/// traffic. When even its pod selector is unreadable it isolates every pod of its namespace.
pub fn policy_fail_closed(policy: &networking::NetworkPolicy) -> KubernetesPolicy {
    let mut warnings = Vec::new();
    let mut ctx = Context {
        object: String::new(),
        warnings: &mut warnings,
    };
    let spec = policy.spec.as_ref();
    let pod_selector = selector(
        &mut ctx,
        "spec.podSelector",
        spec.and_then(|s| s.pod_selector.as_ref()),
    )
    .unwrap_or_else(|_| Selector::all());
    let has_egress_rules = spec
        .and_then(|s| s.egress.as_ref())
        .is_some_and(|e| !e.is_empty());
    let types = spec
        .and_then(|s| s.policy_types.as_deref())
        .unwrap_or_default();
    let declared = |name: &str| types.iter().any(|t| t == name);
    let (ingress, egress) = if types.is_empty() {
        (true, has_egress_rules)
    } else {
        (declared("Ingress"), declared("Egress"))
    };
    KubernetesPolicy {
        key: object_key(&policy.metadata),
        pod_selector,
        ingress: ingress.then(Vec::new),
        egress: egress.then(Vec::new),
    }
}

type RuleSpec<'a> = (
    Option<&'a [networking::NetworkPolicyPeer]>,
    Option<&'a [networking::NetworkPolicyPort]>,
);

fn direction_rules(
    ctx: &mut Context<'_>,
    namespace: &str,
    direction: &str,
    peers_field: &str,
    rules: &[RuleSpec<'_>],
) -> Result<Vec<PolicyRule>, ConvertError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, (peers, ports))| {
            let field = format!("spec.{direction}[{i}]");
            policy_rule(ctx, namespace, &field, peers_field, *peers, *ports)
        })
        .collect()
}

fn policy_rule(
    ctx: &mut Context<'_>,
    namespace: &str,
    field: &str,
    peers_field: &str,
    peers: Option<&[networking::NetworkPolicyPeer]>,
    ports: Option<&[networking::NetworkPolicyPort]>,
) -> Result<PolicyRule, ConvertError> {
    let peers = match peers {
        None | Some([]) => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, peer_spec) in list.iter().enumerate() {
                out.push(peer(
                    ctx,
                    namespace,
                    &format!("{field}.{peers_field}[{i}]"),
                    peer_spec,
                )?);
            }
            Some(out)
        }
    };
    let mut port_rules = Vec::new();
    for (i, port_spec) in ports.unwrap_or_default().iter().enumerate() {
        port_rules.push(port(ctx, &format!("{field}.ports[{i}]"), port_spec)?);
    }
    Ok(PolicyRule {
        peers,
        ports: port_rules,
    })
}

fn peer(
    ctx: &mut Context<'_>,
    namespace: &str,
    field: &str,
    peer: &networking::NetworkPolicyPeer,
) -> Result<Peer, ConvertError> {
    match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
        (Some(block), None, None) => Ok(Peer::Block(ip_block(
            ctx,
            &format!("{field}.ipBlock"),
            block,
        )?)),
        (Some(_), _, _) => Err(ctx.error(
            field,
            "ipBlock cannot be combined with namespaceSelector or podSelector",
        )),
        (None, None, None) => Err(ctx.error(
            field,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        )),
        (None, ns_selector, pod_selector) => {
            let pods = selector(ctx, &format!("{field}.podSelector"), pod_selector.as_ref())?;
            let namespaces = match ns_selector {
                None => NamespaceScope::Named(namespace.to_string()),
                Some(s) => NamespaceScope::Selector(selector(
                    ctx,
                    &format!("{field}.namespaceSelector"),
                    Some(s),
                )?),
            };
            Ok(Peer::Pods(Selection { namespaces, pods }))
        }
    }
}

fn ip_block(
    ctx: &mut Context<'_>,
    field: &str,
    block: &networking::IPBlock,
) -> Result<IpBlock, ConvertError> {
    let cidr = parse_cidr(&block.cidr).ok_or_else(|| {
        ctx.error(
            format!("{field}.cidr"),
            format!("{:?} is not a CIDR", block.cidr),
        )
    })?;
    let mut except = Vec::new();
    for (i, text) in block
        .except
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let except_field = format!("{field}.except[{i}]");
        let net = parse_cidr(text)
            .ok_or_else(|| ctx.error(&except_field, format!("{text:?} is not a CIDR")))?;
        let inside = net.is_ipv4() == cidr.is_ipv4()
            && net.prefix() >= cidr.prefix()
            && cidr.contains(net.network());
        if !inside {
            return Err(ctx.error(except_field, format!("{text} is not inside {cidr}")));
        }
        if !except.contains(&net) {
            except.push(net);
        }
    }
    except.sort();
    Ok(IpBlock { cidr, except })
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR, masking host bits as the API server does.
fn parse_cidr(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    if !text.contains('/') {
        return None;
    }
    let net: IpNetwork = text.parse().ok()?;
    IpNetwork::new(net.network(), net.prefix()).ok()
}

pub fn parse_protocol(text: &str) -> Option<Protocol> {
    match text.to_ascii_uppercase().as_str() {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port(
    ctx: &mut Context<'_>,
    field: &str,
    port: &networking::NetworkPolicyPort,
) -> Result<PortRule, ConvertError> {
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => {
            let protocol = parse_protocol(text).ok_or_else(|| {
                ctx.error(
                    format!("{field}.protocol"),
                    format!("unknown protocol {text:?} (expected TCP, UDP or SCTP)"),
                )
            })?;
            if text != text.to_ascii_uppercase() {
                ctx.warn(
                    format!("{field}.protocol"),
                    format!(
                        "{text:?} is not standard; Kubernetes spells it {:?} (accepted)",
                        text.to_ascii_uppercase()
                    ),
                );
            }
            protocol
        }
    };
    let port_match = match &port.port {
        None => {
            if port.end_port.is_some() {
                return Err(ctx.error(format!("{field}.endPort"), "endPort needs port"));
            }
            PortMatch::Any
        }
        Some(IntOrString::Int(number)) => {
            let start = port_number(*number).ok_or_else(|| {
                ctx.error(
                    format!("{field}.port"),
                    format!("{number} is out of range (1-65535)"),
                )
            })?;
            let end = match port.end_port {
                None => start,
                Some(end) => {
                    let end = port_number(end).ok_or_else(|| {
                        ctx.error(
                            format!("{field}.endPort"),
                            format!("{end} is out of range (1-65535)"),
                        )
                    })?;
                    if end < start {
                        return Err(ctx.error(
                            format!("{field}.endPort"),
                            format!("{end} is below port {start}"),
                        ));
                    }
                    end
                }
            };
            PortMatch::Range { start, end }
        }
        Some(IntOrString::String(name)) => {
            if port.end_port.is_some() {
                return Err(ctx.error(
                    format!("{field}.endPort"),
                    "endPort needs a numeric port, not a named one",
                ));
            }
            if let Err(why) = validate_port_name(name) {
                return Err(ctx.error(format!("{field}.port"), format!("{name:?} {why}")));
            }
            PortMatch::Named(name.clone())
        }
    };
    Ok(PortRule {
        protocol,
        port: port_match,
    })
}

fn port_number(number: i32) -> Option<u16> {
    u16::try_from(number).ok().filter(|n| *n > 0)
}

/// The IANA service-name rules Kubernetes applies to port names.
fn validate_port_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("is not a port name: it must have 1 to 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("is not a port name: only lower-case letters, digits and '-' are allowed");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("is not a port name: it needs a letter (write numeric ports as numbers)");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("is not a port name: '-' may not lead, trail or repeat");
    }
    Ok(())
}

fn selector(
    ctx: &mut Context<'_>,
    field: &str,
    selector: Option<&meta::LabelSelector>,
) -> Result<Selector, ConvertError> {
    let Some(selector) = selector else {
        return Ok(Selector::all());
    };
    let expressions: Vec<_> = selector.match_expressions.iter().flatten().collect();
    Selector::kubernetes(
        selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        expressions.iter().map(|e| {
            (
                e.key.as_str(),
                e.operator.as_str(),
                e.values.as_deref().unwrap_or_default(),
            )
        }),
    )
    .map_err(|(i, e)| ctx.error(format!("{field}.matchExpressions[{i}]"), e.to_string()))
}

/// Converts a ServiceAccount: its labels are what `pcsa.` selectors read.
pub fn service_account(account: &core::ServiceAccount) -> ServiceAccount {
    ServiceAccount {
        key: object_key(&account.metadata),
        labels: labels(&account.metadata),
    }
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Converts a `discovery.k8s.io/v1` EndpointSlice. `Ok(None)` for a slice that belongs to no
/// Service. Addresses that are not IPs (FQDN slices) are skipped, as in Calico.
pub fn endpoint_slice(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
    warnings: &mut Vec<Warning>,
) -> Result<Option<ServiceSlice>, ConvertError> {
    let key = object_key(&slice.metadata);
    let ctx = Context {
        object: format!("EndpointSlice {key}"),
        warnings,
    };
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
    else {
        return Ok(None);
    };
    let mut addresses = Vec::new();
    for endpoint in &slice.endpoints {
        for address in &endpoint.addresses {
            if let Some(ip) = parse_ip(address) {
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
        }
    }
    addresses.sort();
    let mut ports = Vec::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let Some(number) = port.port else {
            continue;
        };
        let protocol = match port.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(text) => parse_protocol(text).ok_or_else(|| {
                ctx.error(
                    format!("ports[{i}].protocol"),
                    format!("unknown protocol {text:?}"),
                )
            })?,
        };
        let number = port_number(number).ok_or_else(|| {
            ctx.error(
                format!("ports[{i}].port"),
                format!("{number} is not a port (1-65535)"),
            )
        })?;
        if !ports.contains(&(protocol, number)) {
            ports.push((protocol, number));
        }
    }
    ports.sort();
    Ok(Some(ServiceSlice {
        key,
        service,
        addresses,
        ports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Direction;

    fn parse_policy(yaml: &str) -> Result<KubernetesPolicy, ConvertError> {
        let object: networking::NetworkPolicy = yaml_serde::from_str(yaml).expect("valid YAML");
        policy(&object, &mut Vec::new())
    }

    const HEADER: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ns}\n";

    fn spec(body: &str) -> KubernetesPolicy {
        parse_policy(&format!("{HEADER}spec:\n{body}")).expect("valid policy")
    }

    #[test]
    fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
        let p = spec("  podSelector: {}\n");
        assert_eq!(p.ingress, Some(vec![]));
        assert_eq!(p.egress, None);
        let p = spec("  podSelector: {}\n  egress: [{}]\n");
        assert!(p.ingress.is_some() && p.egress.is_some());
        let p = spec("  podSelector: {}\n  egress: []\n");
        assert_eq!(p.egress, None, "an empty egress list is no egress rule");
    }

    #[test]
    fn explicit_policy_types_decide_isolation() {
        let p = spec("  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n");
        assert_eq!(
            p.ingress, None,
            "ingress rules are ignored without the Ingress type"
        );
        assert_eq!(
            p.egress,
            Some(vec![]),
            "Egress type without rules denies all egress"
        );
    }

    #[test]
    fn empty_from_and_ports_mean_everything() {
        let p = spec("  podSelector: {}\n  ingress:\n  - from: []\n    ports: []\n");
        let rule = &p.rules(Direction::Ingress).unwrap()[0];
        assert_eq!(rule.peers, None);
        assert!(rule.ports.is_empty());
    }

    #[test]
    fn a_peer_with_both_selectors_ands_them_and_pod_only_peers_stay_in_the_namespace() {
        let p = spec(
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}\n      podSelector: {matchLabels: {app: x}}\n    - podSelector: {matchLabels: {app: y}}\n    - namespaceSelector: {}\n",
        );
        let peers = p.rules(Direction::Ingress).unwrap()[0]
            .peers
            .clone()
            .unwrap();
        assert_eq!(
            peers[0],
            Peer::Pods(Selection {
                namespaces: NamespaceScope::Selector(Selector::match_labels([("team", "a")])),
                pods: Selector::match_labels([("app", "x")]),
            })
        );
        assert_eq!(
            peers[1],
            Peer::Pods(Selection {
                namespaces: NamespaceScope::Named("ns".into()),
                pods: Selector::match_labels([("app", "y")]),
            })
        );
        assert_eq!(peers[2], Peer::Pods(Selection::all_pods()));
    }

    #[test]
    fn ports_default_to_tcp_and_keep_ranges_and_names() {
        let p = spec(
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - {protocol: UDP, port: 1000, endPort: 2000}\n    - {protocol: SCTP, port: diameter}\n    - {protocol: UDP}\n",
        );
        let ports = &p.rules(Direction::Ingress).unwrap()[0].ports;
        assert_eq!(
            ports[0],
            PortRule {
                protocol: Protocol::Tcp,
                port: PortMatch::Range { start: 80, end: 80 }
            }
        );
        assert_eq!(
            ports[1],
            PortRule {
                protocol: Protocol::Udp,
                port: PortMatch::Range {
                    start: 1000,
                    end: 2000
                }
            }
        );
        assert_eq!(
            ports[2],
            PortRule {
                protocol: Protocol::Sctp,
                port: PortMatch::Named("diameter".into())
            }
        );
        assert_eq!(
            ports[3],
            PortRule {
                protocol: Protocol::Udp,
                port: PortMatch::Any
            }
        );
    }

    #[test]
    fn invalid_ports_are_rejected_with_the_field() {
        let cases = [
            ("{port: 0}", "spec.ingress[0].ports[0].port"),
            ("{port: \"80\"}", "spec.ingress[0].ports[0].port"),
            ("{port: Web}", "spec.ingress[0].ports[0].port"),
            (
                "{port: http, endPort: 90}",
                "spec.ingress[0].ports[0].endPort",
            ),
            ("{endPort: 90}", "spec.ingress[0].ports[0].endPort"),
            (
                "{port: 80, endPort: 65536}",
                "spec.ingress[0].ports[0].endPort",
            ),
        ];
        for (port, field) in cases {
            let err = parse_policy(&format!(
                "{HEADER}spec:\n  podSelector: {{}}\n  ingress:\n  - ports:\n    - {port}\n"
            ))
            .expect_err(port);
            assert_eq!(err.field, field, "{port}");
            assert_eq!(err.object, "NetworkPolicy ns/p");
        }
    }

    #[test]
    fn ip_block_masks_host_bits_and_rejects_mixed_peers() {
        let p =
            spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.1.2.3/16}\n");
        let peers = p.rules(Direction::Ingress).unwrap()[0]
            .peers
            .clone()
            .unwrap();
        assert_eq!(
            peers[0],
            Peer::Block(IpBlock {
                cidr: "10.1.0.0/16".parse().unwrap(),
                except: vec![]
            })
        );
        let err = parse_policy(&format!(
            "{HEADER}spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.0.0.0/8}}\n      podSelector: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.ingress[0].from[0]");
        let err = parse_policy(&format!(
            "{HEADER}spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - {{}}\n"
        ))
        .unwrap_err();
        assert!(err.message.contains("needs podSelector"));
        let err = parse_policy(&format!(
            "{HEADER}spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.0.0.1}}\n"
        ))
        .unwrap_err();
        assert!(
            err.message.contains("not a CIDR"),
            "a bare address is not a CIDR"
        );
    }

    fn parse_pod(yaml: &str) -> Option<Pod> {
        let object: core::Pod = yaml_serde::from_str(yaml).expect("valid YAML");
        pod(&object, &mut Vec::new()).expect("valid pod")
    }

    #[test]
    fn pods_take_part_only_with_an_ip_off_the_host_network_and_not_finished() {
        let base = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
        assert!(parse_pod(&format!(
            "{base}spec: {{containers: []}}\nstatus: {{podIP: 10.0.0.1}}\n"
        ))
        .is_some());
        assert!(parse_pod(&format!(
            "{base}spec: {{containers: []}}\nstatus: {{phase: Pending}}\n"
        ))
        .is_none());
        assert!(parse_pod(&format!(
            "{base}spec: {{hostNetwork: true, containers: []}}\nstatus: {{podIP: 10.0.0.1}}\n"
        ))
        .is_none());
        for phase in ["Succeeded", "Failed"] {
            assert!(parse_pod(&format!(
                "{base}spec: {{containers: []}}\nstatus: {{phase: {phase}, podIP: 10.0.0.1}}\n"
            ))
            .is_none());
        }
    }

    #[test]
    fn pod_ips_prefer_pod_ips_and_named_ports_come_from_containers() {
        let pod = parse_pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    ports:\n    - {name: http, containerPort: 8080}\n    - {name: dns, containerPort: 53, protocol: UDP}\n    - {containerPort: 9000}\nstatus:\n  podIP: 10.0.0.1\n  podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]\n",
        )
        .unwrap();
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.named_port("http", Protocol::Tcp), Some(8080));
        assert_eq!(pod.named_port("dns", Protocol::Udp), Some(53));
        assert_eq!(pod.named_port("dns", Protocol::Tcp), None);
        assert_eq!(pod.node.as_deref(), Some("n1"));
    }

    #[test]
    fn an_unreadable_policy_fails_closed_in_its_directions() {
        let object: networking::NetworkPolicy = yaml_serde::from_str(&format!(
            "{HEADER}spec:\n  podSelector: {{matchLabels: {{app: x}}}}\n  egress:\n  - ports:\n    - {{protocol: ICMP}}\n"
        ))
        .unwrap();
        assert!(policy(&object, &mut Vec::new()).is_err());
        let fallback = policy_fail_closed(&object);
        assert_eq!(fallback.ingress, Some(vec![]));
        assert_eq!(fallback.egress, Some(vec![]));
        assert_eq!(
            fallback.pod_selector,
            Selector::match_labels([("app", "x")])
        );
    }

    #[test]
    fn legacy_annotation_isolates_only_with_default_deny() {
        let ns = |value: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  annotations:\n    {LEGACY_ISOLATION_ANNOTATION}: '{value}'\n"
            );
            let object: core::Namespace = yaml_serde::from_str(&yaml).unwrap();
            let mut warnings = Vec::new();
            let converted = namespace(&object, &mut warnings);
            (converted.legacy_default_deny, warnings.len())
        };
        assert_eq!(
            ns(r#"{"ingress": {"isolation": "DefaultDeny"}}"#),
            (true, 0)
        );
        assert_eq!(
            ns(r#"{"ingress": {"isolation": "DefaultAllow"}}"#),
            (false, 1)
        );
        assert_eq!(ns("not json"), (false, 1));
    }

    #[test]
    fn namespaces_get_their_name_label() {
        let object: core::Namespace = yaml_serde::from_str("metadata: {name: team-a}").unwrap();
        let ns = namespace(&object, &mut Vec::new());
        assert_eq!(
            ns.labels
                .get("kubernetes.io/metadata.name")
                .map(|v| v.as_str()),
            Some("team-a")
        );
    }
}

//! One Calico rule: validated as Calico's API validates it, its selectors scoped as Felix's
//! input is (`updateprocessors/rules.go`).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::api::{EntitySpec, IcmpSpec, NumOrString, RuleSpec};
use super::is_catch_all;
use crate::model::convert::{Context, ConvertError};
use crate::model::policy::{Action, Entity, IcmpMatch, IpProtocol, Port, Rule};
use crate::model::{Direction, Family, ObjectKey};
use crate::selector::{
    Expr, Label, Selector, NAMESPACE_LABEL, NAMESPACE_PREFIX, SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
};

fn action(ctx: &Context<'_>, field: &str, text: Option<&str>) -> Result<Action, ConvertError> {
    match text {
        Some("Allow") => Ok(Action::Allow),
        Some("Deny") => Ok(Action::Deny),
        Some("Pass") => Ok(Action::Pass),
        Some("Log") => Ok(Action::Log),
        Some(other) => Err(ctx.error(
            format!("{field}.action"),
            format!("{other:?} is not an action (Allow, Deny, Pass or Log)"),
        )),
        None => Err(ctx.error(
            format!("{field}.action"),
            "missing (Allow, Deny, Pass or Log)",
        )),
    }
}

/// A protocol by Calico's exact name, or a number 1-255 (also written as a string of digits).
pub fn protocol(value: &NumOrString) -> Result<IpProtocol, String> {
    let number = |n: i64| match u8::try_from(n) {
        Ok(n) if n > 0 => Ok(match n {
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            132 => IpProtocol::Sctp,
            n => IpProtocol::Number(n),
        }),
        _ => Err(format!("{n} is not a protocol number (1-255)")),
    };
    match value {
        NumOrString::Num(n) => number(*n),
        NumOrString::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|e| e.to_string()).and_then(number)
        }
        NumOrString::Str(s) => match s.as_str() {
            "TCP" => Ok(IpProtocol::Tcp),
            "UDP" => Ok(IpProtocol::Udp),
            "SCTP" => Ok(IpProtocol::Sctp),
            "ICMP" => Ok(IpProtocol::Icmp),
            "ICMPv6" => Ok(IpProtocol::IcmpV6),
            "UDPLite" => Ok(IpProtocol::UdpLite),
            other => {
                let known = ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "UDPLite"];
                match known.iter().find(|k| k.eq_ignore_ascii_case(other)) {
                    Some(k) => Err(format!("{other:?} is not a protocol: Calico spells it {k:?}")),
                    None => Err(format!(
                        "{other:?} is not a protocol (TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 1-255)"
                    )),
                }
            }
        },
    }
}

fn icmp(
    ctx: &Context<'_>,
    field: &str,
    spec: Option<&IcmpSpec>,
) -> Result<Option<IcmpMatch>, ConvertError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let icmp_type = match spec.icmp_type {
        None => {
            if spec.code.is_some() {
                return Err(ctx.error(format!("{field}.code"), "code needs type"));
            }
            return Ok(None);
        }
        Some(t) => u8::try_from(t)
            .ok()
            .filter(|t| *t <= 254)
            .ok_or_else(|| ctx.error(format!("{field}.type"), format!("{t} is not 0-254")))?,
    };
    let code = spec
        .code
        .map(|c| {
            u8::try_from(c)
                .map_err(|_| ctx.error(format!("{field}.code"), format!("{c} is not 0-255")))
        })
        .transpose()?;
    Ok(Some(IcmpMatch { icmp_type, code }))
}

/// `a.b.c.d/n` or an IPv6 CIDR with no host bits set, as Calico's rule validation demands.
pub fn parse_cidr(text: &str) -> Result<IpNetwork, String> {
    if !text.contains('/') {
        return Err(format!(
            "{text:?} is not a CIDR (write an address as {text}/32 or {text}/128)"
        ));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR"))?;
    if net.ip() != net.network() {
        return Err(format!(
            "{text:?} has host bits set (the network is {}/{})",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// A network set entry: a CIDR (host bits masked) or a bare address (a host network).
pub fn parse_net_or_address(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNetwork::from(ip));
    }
    let net: IpNetwork = text.parse().ok()?;
    IpNetwork::new(net.network(), net.prefix()).ok()
}

fn is_port_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn port(value: &NumOrString) -> Result<Port, String> {
    let number = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{n} is not a port (1-65535)"))
    };
    match value {
        NumOrString::Num(n) => number(*n).map(|p| Port::Range { start: p, end: p }),
        NumOrString::Str(text) => {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let parse = |s: &str| s.parse::<i64>().map_err(|e| e.to_string()).and_then(number);
            if digits(text) {
                return parse(text).map(|p| Port::Range { start: p, end: p });
            }
            if let Some((a, b)) = text.split_once(':') {
                if digits(a) && digits(b) {
                    let (start, end) = (parse(a)?, parse(b)?);
                    if start > end {
                        return Err(format!("{text:?}: the range ends before it starts"));
                    }
                    return Ok(Port::Range { start, end });
                }
            }
            if is_port_name(text) {
                Ok(Port::Named(text.clone()))
            } else {
                Err(format!(
                    "{text:?} is not a port, a range \"min:max\" or a port name ([a-zA-Z0-9_.-], 1-128 characters)"
                ))
            }
        }
    }
}

fn ports(
    ctx: &Context<'_>,
    field: &str,
    list: Option<&[NumOrString]>,
) -> Result<Vec<Port>, ConvertError> {
    let mut out = Vec::new();
    for (i, value) in list.unwrap_or_default().iter().enumerate() {
        let p = port(value).map_err(|m| ctx.error(format!("{field}[{i}]"), m))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn nets(
    ctx: &Context<'_>,
    field: &str,
    list: Option<&[String]>,
) -> Result<Vec<IpNetwork>, ConvertError> {
    let mut out = Vec::new();
    for (i, text) in list.unwrap_or_default().iter().enumerate() {
        let net = parse_cidr(text).map_err(|m| ctx.error(format!("{field}[{i}]"), m))?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

fn selector(
    ctx: &Context<'_>,
    field: &str,
    text: Option<&str>,
) -> Result<Option<Selector>, ConvertError> {
    super::selector_field(ctx, field, text, false)
}

/// A rule's `namespaceSelector`, which may be exactly `global()`.
fn namespace_selector(
    ctx: &Context<'_>,
    field: &str,
    text: Option<&str>,
) -> Result<Option<Selector>, ConvertError> {
    let Some(selector) = super::selector_field(ctx, field, text, true)? else {
        return Ok(None);
    };
    if selector.mentions_global() && !matches!(selector.expr(), Expr::Global) {
        return Err(ctx.error(field, "global() cannot be combined with other selectors"));
    }
    Ok(Some(selector))
}

/// The endpoints one side of a rule must be, scoped as Calico's `getEndpointSelector`: a
/// namespaceSelector (or, in a namespaced policy, the policy's namespace) is ANDed in as soon as
/// any selector field is used, `notSelector` included.
fn scoped_selector(
    policy_namespace: &str,
    namespace_selector: Option<&Selector>,
    selector: Option<&Selector>,
    service_accounts: Option<&Selector>,
    has_not_selector: bool,
) -> Option<Selector> {
    let scope: Option<Expr> = match namespace_selector {
        Some(ns) => Some(
            ns.prefixed(NAMESPACE_PREFIX)
                .replace_all(Expr::has(NAMESPACE_LABEL))
                .replace_global(Expr::negation(Expr::has(NAMESPACE_LABEL)))
                .expr()
                .clone(),
        ),
        None if !policy_namespace.is_empty() => Some(Expr::eq(NAMESPACE_LABEL, policy_namespace)),
        None => None,
    };
    let parts: Vec<Expr> = [service_accounts, selector]
        .into_iter()
        .flatten()
        .map(|s| s.expr().clone())
        .collect();
    let endpoint = match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(Expr::And(parts)),
    };
    let uses_selectors = selector.is_some()
        || service_accounts.is_some()
        || has_not_selector
        || namespace_selector.is_some();
    match (scope, endpoint) {
        (Some(scope), Some(endpoint)) if uses_selectors => {
            Some(Selector::from_expr(Expr::And(vec![scope, endpoint])))
        }
        (Some(scope), None) if uses_selectors => Some(Selector::from_expr(scope)),
        (_, endpoint) => endpoint.map(Selector::from_expr),
    }
}

/// `serviceAccounts`: the selector over `pcsa.` labels, ANDed with the names.
fn service_accounts(
    ctx: &Context<'_>,
    field: &str,
    spec: &EntitySpec,
) -> Result<Option<Selector>, ConvertError> {
    let Some(accounts) = &spec.service_accounts else {
        return Ok(None);
    };
    let by_selector = selector(
        ctx,
        &format!("{field}.selector"),
        accounts.selector.as_deref(),
    )?
    .map(|s| s.prefixed(SERVICE_ACCOUNT_PREFIX));
    let names = accounts.names.as_deref().unwrap_or_default();
    let by_name = (!names.is_empty()).then(|| {
        Selector::from_expr(Expr::In(
            Label::new(SERVICE_ACCOUNT_LABEL),
            Expr::set(names.iter().cloned()),
        ))
    });
    Ok(match (by_selector, by_name) {
        (Some(s), Some(n)) => Some(Selector::from_expr(Expr::And(vec![
            s.expr().clone(),
            n.expr().clone(),
        ]))),
        (s, n) => s.or(n),
    })
}

struct Side {
    entity: Entity,
    has_selector_fields: bool,
}

#[allow(clippy::too_many_arguments)]
fn side(
    ctx: &Context<'_>,
    field: &str,
    spec: Option<&EntitySpec>,
    policy_namespace: &str,
    global: bool,
    service_allowed: bool,
    is_destination: bool,
) -> Result<Side, ConvertError> {
    let empty = EntitySpec::default();
    let spec = spec.unwrap_or(&empty);
    let nets_field = format!("{field}.nets");
    let not_nets_field = format!("{field}.notNets");
    let mut entity = Entity {
        nets: nets(ctx, &nets_field, spec.nets.as_deref())?,
        not_nets: nets(ctx, &not_nets_field, spec.not_nets.as_deref())?,
        ports: ports(ctx, &format!("{field}.ports"), spec.ports.as_deref())?,
        not_ports: ports(ctx, &format!("{field}.notPorts"), spec.not_ports.as_deref())?,
        ..Entity::default()
    };
    if let Some(i) = entity.not_nets.iter().position(is_catch_all) {
        return Err(ctx.error(
            format!("{not_nets_field}[{i}]"),
            "a catch-all network in notNets matches no traffic at all",
        ));
    }
    let own = selector(ctx, &format!("{field}.selector"), spec.selector.as_deref())?;
    let not = selector(
        ctx,
        &format!("{field}.notSelector"),
        spec.not_selector.as_deref(),
    )?;
    let namespaces = namespace_selector(
        ctx,
        &format!("{field}.namespaceSelector"),
        spec.namespace_selector.as_deref(),
    )?;
    let accounts = service_accounts(ctx, &format!("{field}.serviceAccounts"), spec)?;
    entity.selector = scoped_selector(
        policy_namespace,
        namespaces.as_ref(),
        own.as_ref(),
        accounts.as_ref(),
        not.is_some(),
    );
    entity.not_selector = not;
    if let Some(service) = &spec.services {
        let service_field = format!("{field}.services");
        if !service_allowed {
            return Err(ctx.error(
                service_field,
                "services may only match an ingress rule's source or an egress rule's destination",
            ));
        }
        let name = service
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ctx.error(format!("{service_field}.name"), "missing"))?;
        let namespace = match service.namespace.clone().filter(|n| !n.is_empty()) {
            Some(ns) => ns,
            None if global => {
                return Err(ctx.error(
                    format!("{service_field}.namespace"),
                    "a GlobalNetworkPolicy must name the service's namespace",
                ))
            }
            None => policy_namespace.to_string(),
        };
        let conflicting = [
            ("selector", spec.selector.is_some()),
            ("notSelector", spec.not_selector.is_some()),
            ("namespaceSelector", spec.namespace_selector.is_some()),
            ("nets", spec.nets.is_some()),
            ("notNets", spec.not_nets.is_some()),
            ("serviceAccounts", spec.service_accounts.is_some()),
        ];
        if let Some((other, _)) = conflicting.iter().find(|(_, set)| *set) {
            return Err(ctx.error(
                service_field,
                format!("services cannot be combined with {other}"),
            ));
        }
        if is_destination && (!entity.ports.is_empty() || !entity.not_ports.is_empty()) {
            return Err(ctx.error(
                service_field,
                "a destination service brings its own ports: ports and notPorts cannot be set",
            ));
        }
        entity.service = Some(ObjectKey::new(namespace, name));
    }
    Ok(Side {
        has_selector_fields: own.is_some() || entity.not_selector.is_some(),
        entity,
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn rule(
    ctx: &mut Context<'_>,
    field: &str,
    spec: &RuleSpec,
    direction: Direction,
    policy_namespace: &str,
    global: bool,
    origin: usize,
) -> Result<Rule, ConvertError> {
    let mut rule = Rule::new(action(ctx, field, spec.action.as_deref())?, origin);
    rule.ip_version = match spec.ip_version {
        None => None,
        Some(4) => Some(Family::V4),
        Some(6) => Some(Family::V6),
        Some(v) => {
            return Err(ctx.error(format!("{field}.ipVersion"), format!("{v} is not 4 or 6")))
        }
    };
    rule.protocol = spec
        .protocol
        .as_ref()
        .map(protocol)
        .transpose()
        .map_err(|m| ctx.error(format!("{field}.protocol"), m))?;
    rule.not_protocol = spec
        .not_protocol
        .as_ref()
        .map(protocol)
        .transpose()
        .map_err(|m| ctx.error(format!("{field}.notProtocol"), m))?;
    rule.icmp = icmp(ctx, &format!("{field}.icmp"), spec.icmp.as_ref())?;
    rule.not_icmp = icmp(ctx, &format!("{field}.notICMP"), spec.not_icmp.as_ref())?;
    let is_icmp = |p: Option<IpProtocol>| p.is_some_and(|p| matches!(p.number(), 1 | 58));
    for (name, set) in [
        ("icmp", rule.icmp.is_some()),
        ("notICMP", rule.not_icmp.is_some()),
    ] {
        if set && !is_icmp(rule.protocol) {
            return Err(ctx.error(
                format!("{field}.{name}"),
                "ICMP types and codes need protocol ICMP or ICMPv6 (or 1 or 58)",
            ));
        }
    }
    for (name, p) in [
        ("protocol", rule.protocol),
        ("notProtocol", rule.not_protocol),
    ] {
        let wanted = match p.map(|p| p.number()) {
            Some(1) => Some(Family::V4),
            Some(58) => Some(Family::V6),
            _ => None,
        };
        if let (Some(wanted), Some(version)) = (wanted, rule.ip_version) {
            if wanted != version {
                return Err(ctx.error(
                    format!("{field}.{name}"),
                    format!(
                        "{} does not fit ipVersion {}",
                        p.map(|p| p.to_string()).unwrap_or_default(),
                        if version == Family::V4 { 4 } else { 6 }
                    ),
                ));
            }
        }
    }
    let source = side(
        ctx,
        &format!("{field}.source"),
        spec.source.as_ref(),
        policy_namespace,
        global,
        direction == Direction::Ingress,
        false,
    )?;
    let destination = side(
        ctx,
        &format!("{field}.destination"),
        spec.destination.as_ref(),
        policy_namespace,
        global,
        direction == Direction::Egress,
        true,
    )?;
    let _ = (source.has_selector_fields, destination.has_selector_fields);
    rule.source = source.entity;
    rule.destination = destination.entity;

    // Ports need a protocol with ports: numeric ones any protocol at all.
    for (side_name, entity) in [("source", &rule.source), ("destination", &rule.destination)] {
        for (list_name, list) in [("ports", &entity.ports), ("notPorts", &entity.not_ports)] {
            let numeric = list.iter().any(|p| matches!(p, Port::Range { .. }));
            let list_field = format!("{field}.{side_name}.{list_name}");
            match rule.protocol {
                None if numeric => {
                    return Err(
                        ctx.error(list_field, "numeric ports need protocol TCP, UDP or SCTP")
                    )
                }
                Some(p) if !list.is_empty() && p.ported().is_none() => {
                    return Err(ctx.error(
                        list_field,
                        format!("protocol {p} has no ports: ports need TCP, UDP or SCTP"),
                    ))
                }
                _ => {}
            }
        }
    }
    // Networks: one family per rule, agreeing with ipVersion.
    let mut family: Option<(Family, String)> = None;
    for (side_name, entity) in [("source", &rule.source), ("destination", &rule.destination)] {
        for (list_name, list) in [("nets", &entity.nets), ("notNets", &entity.not_nets)] {
            for (i, net) in list.iter().enumerate() {
                let f = Family::of_net(net);
                let here = format!("{field}.{side_name}.{list_name}[{i}]");
                if let Some(version) = rule.ip_version {
                    if version != f {
                        return Err(ctx.error(
                            here,
                            format!(
                                "{net} does not fit ipVersion {}",
                                if version == Family::V4 { 4 } else { 6 }
                            ),
                        ));
                    }
                }
                match &family {
                    Some((seen, first)) if *seen != f => {
                        return Err(ctx.error(
                            here,
                            format!("{net} is {f} but {first} is {seen}: one rule holds networks of one family"),
                        ))
                    }
                    Some(_) => {}
                    None => family = Some((f, format!("{net}"))),
                }
            }
        }
    }
    if let Some(http) = &spec.http {
        let http_field = format!("{field}.http");
        if direction == Direction::Egress {
            return Err(ctx.error(http_field, "http matches are only allowed in ingress rules"));
        }
        if rule.action != Action::Allow {
            return Err(ctx.error(http_field, "http matches are only allowed on Allow rules"));
        }
        if rule.protocol.is_some_and(|p| p != IpProtocol::Tcp) {
            return Err(ctx.error(http_field, "http matches need protocol TCP (or none)"));
        }
        let _ = http;
        ctx.warn(
            http_field,
            "iptables cannot match HTTP methods or paths: the rule is enforced without them, as Calico's iptables dataplane does",
        );
    }
    Ok(rule)
}

//! Calico's own resources (`projectcalico.org/v3`, or the `crd.projectcalico.org/v1` objects
//! Calico stores them in) converted into the policy model, validated as Calico's API does.
//!
//! Scoping follows Calico's update processors (`libcalico-go/lib/backend/syncersv1/
//! updateprocessors/`): a NetworkPolicy's selector is limited to its namespace and ANDed with
//! its `serviceAccountSelector` over `pcsa.` labels; a GlobalNetworkPolicy's with its
//! `namespaceSelector` over `pcns.` labels and its `serviceAccountSelector`, each followed by
//! the rewrite of `all()` to "has a namespace" (or "has a service account"). Rule selectors are
//! scoped as `GetEntityRuleSelector` does.

pub mod api;
pub mod metadata;
mod rules;

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::convert::{Context, ConvertError, Warning};
use super::policy::{Action, Order, Policy, PolicyId, Rule, Tier, TierAction};
use super::{Direction, NetworkSet, NetworkSetKey};
use crate::selector::{Expr, Selector, NAMESPACE_LABEL, NAMESPACE_PREFIX, SERVICE_ACCOUNT_LABEL};
use crate::selector::{ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_PREFIX};
use api::{NetworkSetSpec, ObjectMeta, PolicySpec, TierSpec};
pub use metadata::ApiGroup;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    NetworkSet,
    GlobalNetworkSet,
    Tier,
}

impl CalicoKind {
    pub fn of(kind: &str) -> Option<Self> {
        Some(match kind {
            "NetworkPolicy" => CalicoKind::NetworkPolicy,
            "GlobalNetworkPolicy" => CalicoKind::GlobalNetworkPolicy,
            "StagedNetworkPolicy" => CalicoKind::StagedNetworkPolicy,
            "StagedGlobalNetworkPolicy" => CalicoKind::StagedGlobalNetworkPolicy,
            "StagedKubernetesNetworkPolicy" => CalicoKind::StagedKubernetesNetworkPolicy,
            "NetworkSet" => CalicoKind::NetworkSet,
            "GlobalNetworkSet" => CalicoKind::GlobalNetworkSet,
            "Tier" => CalicoKind::Tier,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            CalicoKind::NetworkPolicy => "NetworkPolicy",
            CalicoKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            CalicoKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            CalicoKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            CalicoKind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
            CalicoKind::NetworkSet => "NetworkSet",
            CalicoKind::GlobalNetworkSet => "GlobalNetworkSet",
            CalicoKind::Tier => "Tier",
        }
    }

    pub fn namespaced(&self) -> bool {
        matches!(
            self,
            CalicoKind::NetworkPolicy
                | CalicoKind::StagedNetworkPolicy
                | CalicoKind::StagedKubernetesNetworkPolicy
                | CalicoKind::NetworkSet
        )
    }
}

/// What a Calico object becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum CalicoResource {
    Policy(Policy),
    NetworkSet(NetworkSet),
    Tier(Tier),
    /// Read and deliberately not enforced (a staged policy, or a policy for host endpoints
    /// only); the text says why.
    Ignored(String),
}

/// The parts of an object every kind has.
struct Object<'a> {
    group: ApiGroup,
    kind: CalicoKind,
    meta: ObjectMeta,
    spec: &'a Value,
}

fn describe(kind: CalicoKind, meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    match meta.namespace.as_deref().filter(|_| kind.namespaced()) {
        Some(ns) => format!("{} {ns}/{name}", kind.as_str()),
        None if kind.namespaced() => format!("{} default/{name}", kind.as_str()),
        None => format!("{} {name}", kind.as_str()),
    }
}

/// Deserializes `value` into `T`, naming the field that does not fit, and warning about every
/// field Calico's API does not have.
fn typed<T: DeserializeOwned>(
    ctx: &mut Context<'_>,
    value: &Value,
    field: &str,
) -> Result<T, ConvertError> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    let typed = result.map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            field.to_string()
        } else {
            format!("{field}.{path}")
        };
        ctx.error(at, e.inner().to_string())
    })?;
    for path in unknown {
        ctx.warn(
            format!("{field}.{path}"),
            "not a field of this kind in Calico's API; ignored",
        );
    }
    Ok(typed)
}

fn object<'a>(
    group: ApiGroup,
    kind: CalicoKind,
    value: &'a Value,
    warnings: &mut Vec<Warning>,
) -> Result<(Object<'a>, String), ConvertError> {
    static NULL: Value = Value::Null;
    let meta_value = value.get("metadata").unwrap_or(&NULL);
    let meta_preview: ObjectMeta = serde_json::from_value(meta_value.clone()).unwrap_or_default();
    let describe = describe(kind, &meta_preview);
    let ctx = Context::new(describe.clone(), warnings);
    // Other metadata fields (uid, creationTimestamp, ...) are normal and not read.
    let meta: ObjectMeta = if meta_value.is_null() {
        ObjectMeta::default()
    } else {
        serde_json::from_value(meta_value.clone())
            .map_err(|e| ctx.error("metadata", e.to_string()))?
    };
    let spec = value.get("spec").unwrap_or(&NULL);
    Ok((
        Object {
            group,
            kind,
            meta,
            spec,
        },
        describe,
    ))
}

/// Converts one Calico object. `value` is the whole object (apiVersion, kind, metadata, spec).
pub fn convert(
    group: ApiGroup,
    kind: CalicoKind,
    value: &Value,
    warnings: &mut Vec<Warning>,
) -> Result<CalicoResource, ConvertError> {
    let (object, description) = object(group, kind, value, warnings)?;
    let mut ctx = Context::new(description, warnings);
    match kind {
        CalicoKind::StagedKubernetesNetworkPolicy
        | CalicoKind::StagedNetworkPolicy
        | CalicoKind::StagedGlobalNetworkPolicy => Ok(CalicoResource::Ignored(
            "staged policies only preview verdicts in Calico; nothing is enforced".to_string(),
        )),
        CalicoKind::NetworkPolicy | CalicoKind::GlobalNetworkPolicy => policy(&mut ctx, &object),
        CalicoKind::NetworkSet | CalicoKind::GlobalNetworkSet => network_set(&mut ctx, &object),
        CalicoKind::Tier => tier(&mut ctx, &object),
    }
}

fn spec<T: DeserializeOwned + Default>(
    ctx: &mut Context<'_>,
    object: &Object<'_>,
) -> Result<T, ConvertError> {
    if object.spec.is_null() {
        return Ok(T::default());
    }
    typed(ctx, object.spec, "spec")
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn validate_name(ctx: &Context<'_>, kind: CalicoKind, name: &str) -> Result<(), ConvertError> {
    let labels: Vec<&str> = name.split('.').collect();
    let ok = match kind {
        CalicoKind::NetworkPolicy => {
            (labels.len() <= 2 && labels.iter().all(|l| is_dns_label(l)))
                || ["knp.default.", "ossg.default."]
                    .iter()
                    .any(|prefix| name.strip_prefix(prefix).is_some_and(is_dns_subdomain))
        }
        CalicoKind::GlobalNetworkPolicy => {
            labels.len() <= 2 && labels.iter().all(|l| is_dns_label(l))
        }
        CalicoKind::Tier => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if name.is_empty() {
        return Err(ctx.error("metadata.name", "missing"));
    }
    if !ok {
        let rule = match kind {
            CalicoKind::Tier => {
                "a DNS label: lower-case letters, digits and '-', no dots, at most 63 characters"
            }
            CalicoKind::NetworkPolicy | CalicoKind::GlobalNetworkPolicy => {
                "a DNS label, or two joined by one dot"
            }
            _ => "a DNS subdomain",
        };
        return Err(ctx.error(
            "metadata.name",
            format!(
                "{name:?} is not a valid {} name: it must be {rule}",
                kind.as_str()
            ),
        ));
    }
    Ok(())
}

/// A selector field: parsed, and refused when it uses `global()`, which only a rule's
/// `namespaceSelector` may.
fn selector_field(
    ctx: &Context<'_>,
    field: &str,
    text: Option<&str>,
    allow_global: bool,
) -> Result<Option<Selector>, ConvertError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let selector = Selector::parse(text)
        .map_err(|e| ctx.error(field, format!("{text:?} is not a valid selector: {e}")))?;
    if !allow_global && text.contains("global(") {
        return Err(ctx.error(
            field,
            format!("{text:?}: global() may only appear in a rule's namespaceSelector"),
        ));
    }
    Ok(Some(selector))
}

fn order(
    ctx: &Context<'_>,
    field: &str,
    value: Option<f64>,
) -> Result<Option<Order>, ConvertError> {
    match value {
        None => Ok(None),
        Some(v) => Order::new(v)
            .map(Some)
            .ok_or_else(|| ctx.error(field, format!("{v} is not a finite number"))),
    }
}

/// `types`, or when absent Calico API's default: Egress when there are egress rules and no
/// ingress rules, both when there are both, else Ingress.
fn policy_types(ctx: &Context<'_>, spec: &PolicySpec) -> Result<(bool, bool), ConvertError> {
    let has_ingress = spec.ingress.as_ref().is_some_and(|r| !r.is_empty());
    let has_egress = spec.egress.as_ref().is_some_and(|r| !r.is_empty());
    let types = spec.types.as_deref().unwrap_or_default();
    if types.is_empty() {
        return Ok(match (has_ingress, has_egress) {
            (_, false) => (true, false),
            (false, true) => (false, true),
            (true, true) => (true, true),
        });
    }
    let mut seen = BTreeSet::new();
    for (i, t) in types.iter().enumerate() {
        let field = format!("spec.types[{i}]");
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            return Err(ctx.error(
                field,
                format!("unknown policy type {t:?} (expected Ingress or Egress)"),
            ));
        }
        if !seen.insert(t.as_str()) {
            return Err(ctx.error(field, format!("{t} is listed twice")));
        }
    }
    Ok((seen.contains("Ingress"), seen.contains("Egress")))
}

/// The endpoints a policy applies to, scoped as Calico's update processors do.
fn applied_selector(
    namespace: Option<&str>,
    selector: Option<Selector>,
    namespace_selector: Option<Selector>,
    service_account_selector: Option<Selector>,
) -> Selector {
    let append = |current: Option<Expr>, new: Expr| match current {
        Some(current) => Expr::And(vec![current, new]),
        None => new,
    };
    let mut current: Option<Expr> = selector.map(|s| s.expr().clone());
    match namespace {
        Some(ns) => {
            current = Some(append(current, Expr::eq(NAMESPACE_LABEL, ns)));
            if let Some(sa) = service_account_selector {
                current = Some(append(
                    current,
                    sa.prefixed(SERVICE_ACCOUNT_PREFIX).expr().clone(),
                ));
            }
        }
        None => {
            if let Some(ns) = namespace_selector {
                let combined = append(current, ns.prefixed(NAMESPACE_PREFIX).expr().clone());
                current = Some(combined.replace_constant(false, &Expr::has(NAMESPACE_LABEL)));
            }
            if let Some(sa) = service_account_selector {
                let combined = append(current, sa.prefixed(SERVICE_ACCOUNT_PREFIX).expr().clone());
                current = Some(combined.replace_constant(false, &Expr::has(SERVICE_ACCOUNT_LABEL)));
            }
        }
    }
    Selector::from_expr(current.unwrap_or(Expr::All))
}

fn policy(ctx: &mut Context<'_>, object: &Object<'_>) -> Result<CalicoResource, ConvertError> {
    let spec: PolicySpec = spec(ctx, object)?;
    let tier_text = spec.tier.clone().unwrap_or_default();
    let identity = metadata::identity(object.group, &object.meta, Some(&tier_text))
        .map_err(|e| ctx.error("metadata", e))?;
    validate_name(ctx, object.kind, &identity.name)?;
    let global = object.kind == CalicoKind::GlobalNetworkPolicy;
    let namespace = if global {
        None
    } else {
        Some(
            identity
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        )
    };
    if spec.do_not_track == Some(true) || spec.pre_dnat == Some(true) {
        let which = if spec.do_not_track == Some(true) {
            "doNotTrack"
        } else {
            "preDNAT"
        };
        return Ok(CalicoResource::Ignored(format!(
            "spec.{which} policies apply to host endpoints before connection tracking, never to pods"
        )));
    }
    if !global {
        for (field, set) in [
            ("namespaceSelector", spec.namespace_selector.is_some()),
            ("doNotTrack", spec.do_not_track.is_some()),
            ("preDNAT", spec.pre_dnat.is_some()),
            ("applyOnForward", spec.apply_on_forward.is_some()),
        ] {
            if set {
                return Err(ctx.error(
                    format!("spec.{field}"),
                    "only a GlobalNetworkPolicy has this field",
                ));
            }
        }
    }
    let tier = if tier_text.is_empty() {
        Tier::DEFAULT.to_string()
    } else {
        if !is_dns_label(&tier_text) {
            return Err(ctx.error(
                "spec.tier",
                format!("{tier_text:?} is not a tier name (a DNS label without dots)"),
            ));
        }
        tier_text
    };
    let order = order(ctx, "spec.order", spec.order)?;
    let selector = selector_field(ctx, "spec.selector", spec.selector.as_deref(), false)?;
    let service_account_selector = selector_field(
        ctx,
        "spec.serviceAccountSelector",
        spec.service_account_selector.as_deref(),
        false,
    )?;
    let namespace_selector = selector_field(
        ctx,
        "spec.namespaceSelector",
        spec.namespace_selector.as_deref(),
        false,
    )?;
    let (ingress, egress) = policy_types(ctx, &spec)?;
    let policy_namespace = namespace.clone().unwrap_or_default();
    let convert_direction = |ctx: &mut Context<'_>, direction: Direction, enabled: bool| {
        let list = match direction {
            Direction::Ingress => spec.ingress.as_deref(),
            Direction::Egress => spec.egress.as_deref(),
        };
        let mut out = Vec::new();
        for (i, rule) in list.unwrap_or_default().iter().enumerate() {
            let field = format!("spec.{direction}[{i}]");
            out.push(rules::rule(
                ctx,
                &field,
                rule,
                direction,
                &policy_namespace,
                global,
                i,
            )?);
        }
        if !enabled && !out.is_empty() {
            ctx.warn(
                format!("spec.{direction}"),
                format!("the policy's types do not include {direction}: these rules are ignored"),
            );
        }
        Ok::<_, ConvertError>(enabled.then_some(out))
    };
    let ingress = convert_direction(ctx, Direction::Ingress, ingress)?;
    let egress = convert_direction(ctx, Direction::Egress, egress)?;
    let id = match &namespace {
        Some(ns) => PolicyId::calico(ns, &identity.name),
        None => PolicyId::global(&identity.name),
    };
    Ok(CalicoResource::Policy(Policy {
        id,
        tier,
        order,
        selector: applied_selector(
            namespace.as_deref(),
            selector,
            namespace_selector,
            service_account_selector,
        ),
        ingress,
        egress,
    }))
}

/// What Palisade enforces in place of a Calico policy it cannot read: in its tier and at its
/// order (where those can be read), it denies everything it selects in the directions it
/// declares. A selector that cannot be read selects every pod the policy could reach: its
/// namespace's, or for a global policy every pod (of the namespaces its namespaceSelector
/// matches, if that can be read). `None` for staged policies, policies for host endpoints only,
/// and objects without a name.
pub fn fail_closed(group: ApiGroup, kind: CalicoKind, value: &Value) -> Option<Policy> {
    if !matches!(
        kind,
        CalicoKind::NetworkPolicy | CalicoKind::GlobalNetworkPolicy
    ) {
        return None;
    }
    let spec = value.get("spec");
    let text = |field: &str| spec.and_then(|s| s.get(field)).and_then(Value::as_str);
    if spec
        .and_then(|s| s.get("doNotTrack"))
        .and_then(Value::as_bool)
        == Some(true)
        || spec.and_then(|s| s.get("preDNAT")).and_then(Value::as_bool) == Some(true)
    {
        return None;
    }
    let meta: ObjectMeta = value
        .get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let tier = text("tier")
        .filter(|t| is_dns_label(t))
        .unwrap_or(Tier::DEFAULT)
        .to_string();
    let identity = metadata::identity(group, &meta, Some(&tier)).ok()?;
    if identity.name.is_empty() {
        return None;
    }
    let order = spec
        .and_then(|s| s.get("order"))
        .and_then(Value::as_f64)
        .and_then(Order::new);
    let parse = |field: &str| text(field).and_then(|t| Selector::parse(t).ok());
    let has_rules = |field: &str| {
        spec.and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let declared: Option<Vec<&str>> = spec
        .and_then(|s| s.get("types"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let (ingress, egress) = match declared {
        Some(types) if !types.is_empty() => {
            let known = types.iter().all(|t| matches!(*t, "Ingress" | "Egress"));
            if known {
                (types.contains(&"Ingress"), types.contains(&"Egress"))
            } else {
                (true, true)
            }
        }
        _ => match (has_rules("ingress"), has_rules("egress")) {
            (_, false) => (true, false),
            (false, true) => (false, true),
            (true, true) => (true, true),
        },
    };
    let deny_all = || Some(vec![Rule::new(Action::Deny, 0)]);
    let global = kind == CalicoKind::GlobalNetworkPolicy;
    let namespace = (!global).then(|| {
        identity
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    });
    let selector = match (
        text("selector").filter(|t| !t.is_empty()),
        parse("selector"),
    ) {
        (Some(_), None) => None,
        (_, parsed) => Some(parsed),
    };
    let applied = match selector {
        Some(selector) => applied_selector(
            namespace.as_deref(),
            selector,
            if global {
                parse("namespaceSelector")
            } else {
                None
            },
            parse("serviceAccountSelector"),
        ),
        // Unreadable selector: everything in reach.
        None => applied_selector(
            namespace.as_deref(),
            None,
            if global {
                parse("namespaceSelector")
            } else {
                None
            },
            None,
        ),
    };
    let id = match &namespace {
        Some(ns) => PolicyId::calico(ns, &identity.name),
        None => PolicyId::global(&identity.name),
    };
    Some(Policy {
        id,
        tier,
        order,
        selector: applied,
        ingress: ingress.then(deny_all).flatten(),
        egress: egress.then(deny_all).flatten(),
    })
}

/// A NetworkSet's or GlobalNetworkSet's `nets`: CIDRs or bare addresses (a host network),
/// host bits masked.
fn network_set(ctx: &mut Context<'_>, object: &Object<'_>) -> Result<CalicoResource, ConvertError> {
    let spec: NetworkSetSpec = spec(ctx, object)?;
    let identity = metadata::identity(object.group, &object.meta, None)
        .map_err(|e| ctx.error("metadata", e))?;
    validate_name(ctx, object.kind, &identity.name)?;
    for reserved in [NAMESPACE_LABEL, ORCHESTRATOR_LABEL] {
        if identity.labels.contains_key(reserved) {
            return Err(ctx.error(
                format!("metadata.labels[{reserved}]"),
                "this label is reserved: Calico sets it on endpoints itself",
            ));
        }
    }
    let mut nets = Vec::new();
    for (i, text) in spec.nets.unwrap_or_default().iter().enumerate() {
        let net = rules::parse_net_or_address(text).ok_or_else(|| {
            ctx.error(
                format!("spec.nets[{i}]"),
                format!("{text:?} is not a CIDR or an IP address"),
            )
        })?;
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    nets.sort();
    let namespace = if object.kind == CalicoKind::NetworkSet {
        Some(identity.namespace.unwrap_or_else(|| "default".to_string()))
    } else {
        None
    };
    Ok(CalicoResource::NetworkSet(NetworkSet {
        key: NetworkSetKey {
            namespace,
            name: identity.name,
        },
        labels: identity.labels,
        nets,
    }))
}

fn tier(ctx: &mut Context<'_>, object: &Object<'_>) -> Result<CalicoResource, ConvertError> {
    let spec: TierSpec = spec(ctx, object)?;
    let identity = metadata::identity(object.group, &object.meta, None)
        .map_err(|e| ctx.error("metadata", e))?;
    validate_name(ctx, object.kind, &identity.name)?;
    let default_action = match spec.default_action.as_deref() {
        None | Some("Deny") => TierAction::Deny,
        Some("Pass") => TierAction::Pass,
        Some(other) => {
            return Err(ctx.error(
                "spec.defaultAction",
                format!("{other:?} is not a tier default action (Deny or Pass)"),
            ))
        }
    };
    let order = order(ctx, "spec.order", spec.order)?;
    if let Some(builtin) = Tier::built_in()
        .into_iter()
        .find(|t| t.name == identity.name)
    {
        let order_differs = order.is_some() && order != builtin.order;
        let action_differs =
            spec.default_action.is_some() && default_action != builtin.default_action;
        if order_differs || action_differs {
            return Err(ctx.error(
                "spec",
                format!(
                    "{} is a built-in tier: its order is {} and its defaultAction {:?}",
                    builtin.name,
                    builtin.order.map(|o| o.to_string()).unwrap_or_default(),
                    builtin.default_action
                ),
            ));
        }
        return Ok(CalicoResource::Tier(builtin));
    }
    Ok(CalicoResource::Tier(Tier {
        name: identity.name,
        order,
        default_action,
        declared: true,
    }))
}

/// Whether an address list holds the whole address space of its family (`0.0.0.0/0`, `::/0`).
pub fn is_catch_all(net: &IpNetwork) -> bool {
    net.prefix() == 0
}

#[cfg(test)]
mod tests;

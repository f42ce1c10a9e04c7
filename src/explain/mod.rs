//! Why a connection is allowed or denied, computed by walking the compiled chains and sets of
//! the nodes it crosses, so the answer is what the kernel does, not a second model of the
//! policies. Pure: cluster state in, an explanation out.

pub mod interpreter;
pub mod loadable;

use std::net::IpAddr;

use serde::Serialize;

use crate::compiler::denied_log::DeniedFlowTag;
use crate::compiler::desired::Action;
use crate::compiler::naming::pod_chain;
use crate::compiler::{compile, CompilerConfig, DesiredState};
use crate::index::ClusterIndex;
use crate::model::{Direction, Enforcement, Family, ObjectKey, Pod, Protocol};
use crate::render;
use interpreter::{forward_accepts, Fired, Packet};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no pod {0} in the manifests")]
    NoSuchPod(ObjectKey),
    #[error("pod {0} has no IP address")]
    NoAddress(ObjectKey),
    #[error("pod {0} runs on no node")]
    NoNode(ObjectKey),
    #[error("{from} and {to} have no addresses of one family")]
    NoCommonFamily { from: String, to: String },
    #[error("neither end is a pod of the manifests: no node filters {0}")]
    NoPod(String),
    #[error("the compiled rules cannot be walked: {0}")]
    Interpreter(String),
}

/// One end of a connection: a pod by `namespace/name`, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Pod(ObjectKey),
    Address(IpAddr),
}

impl Endpoint {
    /// `NAMESPACE/POD` or an IP address.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Endpoint::Address(ip));
        }
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Endpoint::Pod(ObjectKey::new(ns, name)))
            }
            _ => Err(format!(
                "{text:?} is neither NAMESPACE/POD nor an IP address"
            )),
        }
    }
}

/// An end as found in the cluster.
struct Resolved<'a> {
    /// `namespace/name`, or the address of something that is not a pod.
    name: String,
    pod: Option<&'a Pod>,
    addresses: Vec<IpAddr>,
}

fn resolve<'a>(index: &'a ClusterIndex, end: &Endpoint) -> Result<Resolved<'a>, ExplainError> {
    match end {
        Endpoint::Pod(key) => {
            let pod = index
                .pod(key)
                .ok_or_else(|| ExplainError::NoSuchPod(key.clone()))?;
            if pod.ips.is_empty() {
                return Err(ExplainError::NoAddress(key.clone()));
            }
            Ok(Resolved {
                name: key.to_string(),
                pod: Some(pod),
                addresses: pod.ips.clone(),
            })
        }
        Endpoint::Address(ip) => {
            let pod = index.pods_with_ip(ip).next().map(|p| p.as_ref());
            Ok(Resolved {
                name: pod.map_or_else(|| ip.to_string(), |p| p.key.to_string()),
                pod,
                addresses: vec![*ip],
            })
        }
    }
}

/// A rule that fired, as the explanation shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub chain: String,
    pub index: usize,
    /// The rule's matches and target, as `iptables-save` prints them.
    pub rule: String,
    /// What the rule implements: `tier/namespace/policy direction[i]`, or a step of the pod's
    /// chain (`end of tier ...`).
    pub comment: String,
    pub depth: usize,
}

impl From<&Fired> for Step {
    fn from(fired: &Fired) -> Self {
        Step {
            chain: fired.chain.clone(),
            index: fired.index,
            rule: fired.rule.clone(),
            comment: fired.comment.clone(),
            depth: fired.depth,
        }
    }
}

/// The walk through one node's rules.
#[derive(Debug, Clone, Serialize)]
pub struct Walk {
    pub node: String,
    /// `egress of client/a`, `ingress of web/server`, or both on one node.
    pub checks: Vec<String>,
    pub allowed: bool,
    /// Allowed only because the pod's namespace (or the node) is in audit mode: enforcing
    /// would deny it.
    pub audited: bool,
    /// In words: which policy rule or default decided.
    pub decided_by: String,
    /// The kernel rule that decided, as `iptables-save` prints it, if one did.
    pub kernel_rule: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub packet: String,
    pub allowed: bool,
    /// Allowed, but enforcing would deny it: some walk let it through in audit mode.
    pub audited: bool,
    pub walks: Vec<Walk>,
}

/// What a connection from `from` to `to` on `protocol`/`port` meets on each node it crosses.
pub fn explain(
    index: &ClusterIndex,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: u16,
    config: &CompilerConfig,
) -> Result<Explanation, ExplainError> {
    let source = resolve(index, from)?;
    let destination = resolve(index, to)?;
    let (src, dst) = source
        .addresses
        .iter()
        .find_map(|s| {
            destination
                .addresses
                .iter()
                .find(|d| Family::of(d) == Family::of(s))
                .map(|d| (*s, *d))
        })
        .ok_or_else(|| ExplainError::NoCommonFamily {
            from: source.name.clone(),
            to: destination.name.clone(),
        })?;
    let family = Family::of(&src);
    let packet = Packet::ported(src, dst, protocol, port);
    let node_of = |end: &Resolved<'_>| -> Result<Option<String>, ExplainError> {
        match end.pod {
            Some(pod) => pod
                .node
                .as_deref()
                .map(|node| Some(node.to_string()))
                .ok_or_else(|| ExplainError::NoNode(pod.key.clone())),
            None => Ok(None),
        }
    };
    let source_node = node_of(&source)?;
    let destination_node = node_of(&destination)?;
    let mut nodes: Vec<String> = Vec::new();
    for node in [&source_node, &destination_node].into_iter().flatten() {
        if !nodes.contains(node) {
            nodes.push(node.clone());
        }
    }
    if nodes.is_empty() {
        return Err(ExplainError::NoPod(packet.to_string()));
    }
    let mut walks = Vec::new();
    for node in nodes {
        let state = compile(index, &node, config.clone());
        let mut checks = Vec::new();
        if source_node.as_deref() == Some(node.as_str()) {
            checks.push(format!("egress of {}", source.name));
        }
        if destination_node.as_deref() == Some(node.as_str()) {
            checks.push(format!("ingress of {}", destination.name));
        }
        walks.push(walk(&state, family, &packet, node, checks)?);
    }
    let allowed = walks.iter().all(|w| w.allowed);
    Ok(Explanation {
        from: source.name,
        to: destination.name,
        packet: packet.to_string(),
        allowed,
        audited: allowed && walks.iter().any(|w| w.audited),
        walks,
    })
}

fn walk(
    state: &DesiredState,
    family: Family,
    packet: &Packet,
    node: String,
    checks: Vec<String>,
) -> Result<Walk, ExplainError> {
    let mut fired = Vec::new();
    let allowed = forward_accepts(state.family(family), family, packet, &mut fired)
        .map_err(ExplainError::Interpreter)?;
    let through_pod_chain = fired.iter().any(|f| f.depth >= 1);
    let decisive = fired.iter().rev().find(|f| f.decisive);
    // A policy rule allows by setting the Allow mark, then returns with "... allowed": the
    // rule before the last such return let the packet through.
    let allow_rule = fired
        .iter()
        .rposition(|f| f.depth >= 2 && f.comment.ends_with(" allowed"))
        .and_then(|i| i.checked_sub(1))
        .map(|i| &fired[i]);
    let kernel_line = |f: &Fired| {
        state
            .family(family)
            .chains
            .get(&f.chain)
            .and_then(|chain| chain.rules.get(f.index))
            .map(|rule| format!("-A {} {}", f.chain, render::rule_spec(rule)))
    };
    // In audit mode a would-be denial sends the packet to the denied-flow log, then lets it
    // through with the next rule.
    let audit_log = fired.iter().position(|f| {
        let rule = state
            .family(family)
            .chains
            .get(&f.chain)
            .and_then(|chain| chain.rules.get(f.index));
        matches!(
            rule.map(|r| &r.action),
            Some(Action::Nflog { prefix, .. })
                if DeniedFlowTag::parse(prefix)
                    .is_some_and(|tag| tag.enforcement == Enforcement::Audit)
        )
    });
    let audited = allowed && audit_log.is_some();
    let (decided_by, kernel_rule) = match (allowed, decisive) {
        (true, _) if audited => {
            let at = audit_log.unwrap_or_default();
            let denial = fired[at].comment.trim_end_matches(": logged");
            (
                format!(
                    "audited: enforcing would deny it ({denial}); the namespace is in audit mode, so it is logged, counted and let through"
                ),
                fired.get(at + 1).and_then(kernel_line),
            )
        }
        (false, Some(rule)) => (format!("denied by {}", rule.comment), kernel_line(rule)),
        (false, None) => ("denied".to_string(), None),
        (true, _) if !through_pod_chain => (
            "no policy selects these pods on this node: allowed".to_string(),
            None,
        ),
        (true, _) => match allow_rule {
            Some(rule) => (format!("allowed by {}", rule.comment), kernel_line(rule)),
            None => ("allowed: passed out of the last tier".to_string(), None),
        },
    };
    Ok(Walk {
        node,
        checks,
        allowed,
        audited,
        decided_by,
        kernel_rule,
        steps: fired.iter().map(Step::from).collect(),
    })
}

/// The policies that select a pod, per direction, in the order the kernel evaluates them.
#[derive(Debug, Clone, Serialize)]
pub struct PodPolicies {
    pub pod: String,
    pub node: String,
    pub ingress: Option<Vec<String>>,
    pub egress: Option<Vec<String>>,
}

/// Reads the pod's chains on its node: each jump to a policy chain is one policy, in order;
/// `None` for a direction no policy isolates.
pub fn pod_policies(
    index: &ClusterIndex,
    key: &ObjectKey,
    config: &CompilerConfig,
) -> Result<PodPolicies, ExplainError> {
    let pod = index
        .pod(key)
        .ok_or_else(|| ExplainError::NoSuchPod(key.clone()))?;
    let node = pod
        .node
        .clone()
        .ok_or_else(|| ExplainError::NoNode(key.clone()))?;
    let state = compile(index, &node, config.clone());
    let family = pod.ips.first().map_or(Family::V4, Family::of);
    let family_state = state.family(family);
    let policies = |direction: Direction| {
        let chain = family_state.chains.get(&pod_chain(key, direction))?;
        Some(
            chain
                .rules
                .iter()
                .filter(|rule| {
                    rule.jump_target()
                        .is_some_and(|t| family_state.chains.contains_key(t))
                })
                .map(|rule| rule.comment.clone())
                .collect(),
        )
    };
    Ok(PodPolicies {
        pod: key.to_string(),
        ingress: policies(Direction::Ingress),
        egress: policies(Direction::Egress),
        node: node.to_string(),
    })
}

impl Explanation {
    /// The explanation as a person reads it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} -> {}: {}\npacket: {}\n",
            self.from,
            self.to,
            match (self.allowed, self.audited) {
                (true, true) => "ALLOWED (AUDITED: enforcing would deny it)",
                (true, false) => "ALLOWED",
                (false, _) => "DENIED",
            },
            self.packet
        );
        for walk in &self.walks {
            out.push_str(&format!(
                "\non {} ({}): {}\n  {}\n",
                walk.node,
                walk.checks.join(", "),
                match (walk.allowed, walk.audited) {
                    (true, true) => "audited",
                    (true, false) => "allowed",
                    (false, _) => "denied",
                },
                walk.decided_by
            ));
            if let Some(rule) = &walk.kernel_rule {
                out.push_str(&format!("  kernel rule: {rule}\n"));
            }
            if !walk.steps.is_empty() {
                out.push_str("  rules that fired, in order:\n");
            }
            for step in &walk.steps {
                out.push_str(&format!(
                    "    {:indent$}{}#{} {}\n    {:indent$}  {}\n",
                    "",
                    step.chain,
                    step.index,
                    step.comment,
                    "",
                    step.rule,
                    indent = step.depth * 2
                ));
            }
        }
        out
    }
}

impl PodPolicies {
    pub fn text(&self) -> String {
        let mut out = format!("{} on {}\n", self.pod, self.node);
        for (direction, list) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            match list {
                None => out.push_str(&format!(
                    "{direction}: no policy selects this pod: allowed\n"
                )),
                Some(policies) => {
                    out.push_str(&format!("{direction}, in evaluation order:\n"));
                    for (i, policy) in policies.iter().enumerate() {
                        out.push_str(&format!("  {}. {policy}\n", i + 1));
                    }
                }
            }
        }
        out
    }
}

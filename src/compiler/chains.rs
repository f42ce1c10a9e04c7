//! The chains of a local pod: for each direction it is isolated in, one chain that walks the
//! tiers that have a policy for it, and the dispatch chain `PAL-FORWARD` that leads there.
//!
//! A pod chain, as Felix's per-endpoint chain: drop invalid packets, clear the verdict marks,
//! then for each tier in order jump to each of its policies' chains in order, returning as soon
//! as one set the accept mark; a policy that passes sets the pass mark, which skips the rest of
//! the tier; a tier whose default action is Deny drops what reaches its end without the pass
//! mark. What leaves the last tier is allowed, as Calico's namespace profile allows it.

use std::sync::Arc;

use super::denied_log::DeniedFlowTag;
use super::desired::{Action, Counted, CtState, Match, Rule};
use super::naming;
use super::{CompilerConfig, DenyAction};
use crate::model::{DenialHandling, Direction, ObjectKey, PolicyId, Tier, TierAction};

/// A policy as a pod chain uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStep {
    pub id: PolicyId,
    /// `tier/namespace/name`, for comments.
    pub origin: String,
    /// Some rule in this direction can Pass.
    pub can_pass: bool,
    /// Which variant of its chain the pod jumps to: only a policy that can deny has variants.
    pub handling: DenialHandling,
}

/// One tier's policies for one pod and direction, in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierStep {
    pub tier: Tier,
    pub policies: Vec<PolicyStep>,
}

/// The chain of one isolated local pod for one direction.
pub fn pod_chain(
    pod: &ObjectKey,
    direction: Direction,
    tiers: &[TierStep],
    handling: DenialHandling,
    config: &CompilerConfig,
) -> Vec<Rule> {
    let marks = &config.marks;
    let chain = naming::pod_chain(pod, direction);
    let mut rules = vec![
        Rule::new(
            vec![Match::CtState(CtState::Invalid)],
            Action::Drop,
            format!("{pod} {direction}: drop invalid"),
        ),
        Rule::new(
            Vec::new(),
            Action::SetMark {
                value: 0,
                mask: marks.mask(),
            },
            format!("{pod} {direction}: clear verdict"),
        ),
    ];
    let default_deny = Arc::new(Counted::DefaultDeny {
        pod: pod.clone(),
        direction,
        enforcement: handling.enforcement(),
    });
    let mut pass_may_be_set = false;
    for (position, step) in tiers.iter().enumerate() {
        let name = &step.tier.name;
        if pass_may_be_set {
            rules.push(Rule::new(
                Vec::new(),
                Action::SetMark {
                    value: 0,
                    mask: marks.pass,
                },
                format!("{pod} {direction}: start of tier {name}"),
            ));
        }
        let tier_can_pass = step.policies.iter().any(|p| p.can_pass);
        // Once a policy of the tier passed, the tier is done: later policies and its end are
        // skipped. Without a Pass rule in the tier the mark is never set and not tested.
        let not_passed = || {
            if tier_can_pass {
                vec![Match::Mark {
                    value: 0,
                    mask: marks.pass,
                }]
            } else {
                Vec::new()
            }
        };
        for policy in &step.policies {
            rules.push(Rule::new(
                not_passed(),
                Action::Jump(naming::policy_chain(&policy.id, direction, policy.handling)),
                policy.origin.clone(),
            ));
            rules.push(Rule::new(
                vec![Match::Mark {
                    value: marks.accept,
                    mask: marks.accept,
                }],
                Action::Return,
                format!("{} allowed", policy.origin),
            ));
        }
        if step.tier.default_action == TierAction::Deny {
            let comment = format!("{pod} {direction}: end of tier {name}: no policy allowed it");
            if handling.logs() {
                let tag = DeniedFlowTag {
                    enforcement: handling.enforcement(),
                    direction,
                    chain: chain.clone(),
                    position,
                };
                rules.push(Rule::new(
                    not_passed(),
                    Action::Nflog {
                        group: config.nflog_group,
                        prefix: tag.to_string(),
                    },
                    format!("{comment}: logged"),
                ));
            }
            let action = match (handling, config.deny) {
                // What leaves the pod chain is allowed in this direction.
                (DenialHandling::Audit, _) => Action::Return,
                (_, DenyAction::Drop) => Action::Drop,
                (_, DenyAction::Reject) => Action::Reject,
            };
            let comment = match handling {
                DenialHandling::Audit => format!("{comment}: audited, let through"),
                _ => comment,
            };
            rules.push(Rule::new(not_passed(), action, comment).counting(&default_deny));
        }
        pass_may_be_set |= tier_can_pass;
    }
    rules
}

/// The first rule of `PAL-FORWARD`: established flows pass (they were checked when they began).
/// After it come the egress jumps of every local pod, then the ingress jumps, so that traffic
/// between two pods of this node meets both in the same traversal.
pub fn forward_head() -> Rule {
    Rule::new(
        vec![Match::CtState(CtState::EstablishedOrRelated)],
        Action::Return,
        "established flows were allowed when they began",
    )
}

/// One local pod's rules in `PAL-FORWARD`: its egress jumps and its ingress jumps.
pub fn forward_rules(
    pod: &ObjectKey,
    addresses: &[std::net::IpAddr],
    egress: bool,
    ingress: bool,
) -> (Vec<Rule>, Vec<Rule>) {
    let jumps = |isolated: bool, direction: Direction| -> Vec<Rule> {
        if !isolated {
            return Vec::new();
        }
        let chain = naming::pod_chain(pod, direction);
        addresses
            .iter()
            .map(|ip| {
                let address = match direction {
                    Direction::Egress => Match::Source(host_network(*ip)),
                    Direction::Ingress => Match::Destination(host_network(*ip)),
                };
                Rule::new(
                    vec![address],
                    Action::Jump(chain.clone()),
                    format!("{pod} {direction}"),
                )
            })
            .collect()
    };
    (
        jumps(egress, Direction::Egress),
        jumps(ingress, Direction::Ingress),
    )
}

fn host_network(ip: std::net::IpAddr) -> ipnetwork::IpNetwork {
    ipnetwork::IpNetwork::from(ip)
}

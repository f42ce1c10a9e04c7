//! One policy's rules for one direction and family, as iptables rules of its policy chain.
//!
//! A rule's criteria are ANDed matches; a list that iptables cannot say in one rule (several
//! named ports, numeric ports next to named ones, more than 15 port slots) becomes one rule per
//! alternative. Verdicts travel in marks, as in Felix: Allow sets the accept mark and the chain
//! returns, Pass sets the pass mark and returns, Deny drops (or rejects), Log logs and goes on.

use std::sync::Arc;

use super::denied_log::DeniedFlowTag;
use super::desired::{
    Action as Target, Counted, Match, PolicyRuleCount, PortSide, Rule as Line, SetDims,
};
use super::sets::{nomatch_fits, SetKey, SetRef};
use super::{CompilerConfig, DenyAction};
use crate::model::{
    Action, DenialHandling, Direction, Enforcement, Entity, Family, Policy, PolicyKind, Port, Rule,
};
use crate::selector::Selector;

/// A policy chain's rules and the sets they read.
pub struct PolicyChain {
    pub rules: Vec<Line>,
    pub sets: Vec<SetRef>,
}

/// multiport takes at most 15 ports; a range counts as two.
const MULTIPORT_SLOTS: usize = 15;

fn port_chunks(ranges: &[(u16, u16)]) -> Vec<Vec<(u16, u16)>> {
    let mut chunks: Vec<Vec<(u16, u16)>> = Vec::new();
    let mut used = 0;
    for &(start, end) in ranges {
        let slots = if start == end { 1 } else { 2 };
        if chunks.is_empty() || used + slots > MULTIPORT_SLOTS {
            chunks.push(Vec::new());
            used = 0;
        }
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((start, end));
        }
        used += slots;
    }
    chunks
}

/// The matches of one side of a rule: those every alternative has, and the alternatives (at
/// least one, possibly empty).
struct SideMatches {
    common: Vec<Match>,
    alternatives: Vec<Vec<Match>>,
}

struct RuleContext<'a> {
    policy: &'a Policy,
    direction: Direction,
    family: Family,
    sets: Vec<SetRef>,
}

impl RuleContext<'_> {
    fn set(&mut self, key: SetKey) -> String {
        let name = key.name(self.family);
        self.sets.push(Arc::new(key));
        name
    }

    fn side(
        &mut self,
        entity: &Entity,
        side: PortSide,
        protocol: Option<crate::model::Protocol>,
    ) -> SideMatches {
        let (address, port_dims) = match side {
            PortSide::Source => (SetDims::Src, SetDims::SrcPort),
            PortSide::Destination => (SetDims::Dst, SetDims::DstPort),
        };
        let mut common = Vec::new();
        // Networks.
        let nets: Vec<_> = entity
            .nets
            .iter()
            .filter(|n| Family::of_net(n) == self.family)
            .copied()
            .collect();
        let not_nets: Vec<_> = entity
            .not_nets
            .iter()
            .filter(|n| Family::of_net(n) == self.family)
            .copied()
            .collect();
        if !nets.is_empty() && !not_nets.is_empty() && nomatch_fits(&nets, &not_nets) {
            let name = self.set(SetKey::Nets {
                nets,
                except: not_nets,
            });
            common.push(Match::in_set(name, address));
        } else {
            if !nets.is_empty() {
                let name = self.set(SetKey::Nets {
                    nets,
                    except: Vec::new(),
                });
                common.push(Match::in_set(name, address));
            }
            if !not_nets.is_empty() {
                let name = self.set(SetKey::Nets {
                    nets: not_nets,
                    except: Vec::new(),
                });
                common.push(Match::not_in_set(name, address));
            }
        }
        // Selectors. With a positive selector the rule only ever matches known endpoints, so the
        // negative one narrows it down in the same set (as Felix folds them).
        let selection: Option<Selector> = match (&entity.selector, &entity.not_selector) {
            (Some(pos), Some(neg)) => Some(Selector::and([pos.clone(), neg.negated()])),
            (Some(pos), None) => Some(pos.clone()),
            _ => None,
        };
        let named: Vec<&str> = entity
            .ports
            .iter()
            .filter_map(|p| match p {
                Port::Named(n) => Some(n.as_str()),
                Port::Range { .. } => None,
            })
            .collect();
        let numeric: Vec<(u16, u16)> = entity
            .ports
            .iter()
            .filter_map(|p| match p {
                Port::Range { start, end } => Some((*start, *end)),
                Port::Named(_) => None,
            })
            .collect();
        let not_named: Vec<&str> = entity
            .not_ports
            .iter()
            .filter_map(|p| match p {
                Port::Named(n) => Some(n.as_str()),
                Port::Range { .. } => None,
            })
            .collect();
        let not_numeric: Vec<(u16, u16)> = entity
            .not_ports
            .iter()
            .filter_map(|p| match p {
                Port::Range { start, end } => Some((*start, *end)),
                Port::Named(_) => None,
            })
            .collect();
        // The end of the packet that is the policy's own pod is always one the policy selects:
        // its named ports resolve among those pods only.
        let own_side = matches!(
            (self.direction, side),
            (Direction::Ingress, PortSide::Destination) | (Direction::Egress, PortSide::Source)
        );
        let scope = selection
            .clone()
            .or_else(|| own_side.then(|| self.policy.selector.clone()));
        // A named-port set already implies its selector.
        if let Some(selection) = &selection {
            if !numeric.is_empty() || named.is_empty() {
                let name = self.set(SetKey::Selector(selection.clone()));
                common.push(Match::in_set(name, address));
            }
        } else if let Some(neg) = &entity.not_selector {
            let name = self.set(SetKey::Selector(neg.clone()));
            common.push(Match::not_in_set(name, address));
        }
        if let Some(service) = &entity.service {
            let ports = side == PortSide::Destination;
            let name = self.set(SetKey::Service {
                service: service.clone(),
                ports,
            });
            common.push(Match::in_set(name, if ports { port_dims } else { address }));
        }
        // Ports: the alternatives.
        let mut alternatives: Vec<Vec<Match>> = port_chunks(&numeric)
            .into_iter()
            .map(|ranges| {
                vec![Match::Ports {
                    side,
                    ranges,
                    negated: false,
                }]
            })
            .collect();
        for name in named {
            let set = self.set(SetKey::named_port(scope.clone(), name, protocol));
            alternatives.push(vec![Match::in_set(set, port_dims)]);
        }
        for ranges in port_chunks(&not_numeric) {
            common.push(Match::Ports {
                side,
                ranges,
                negated: true,
            });
        }
        for name in not_named {
            let set = self.set(SetKey::named_port(scope.clone(), name, protocol));
            common.push(Match::not_in_set(set, port_dims));
        }
        if alternatives.len() == 1 {
            common.append(&mut alternatives[0]);
            alternatives.clear();
        }
        if alternatives.is_empty() {
            alternatives.push(Vec::new());
        }
        SideMatches {
            common,
            alternatives,
        }
    }

    /// Every way the rule can match, as complete match lists.
    fn alternatives(&mut self, rule: &Rule) -> Vec<Vec<Match>> {
        let mut common = Vec::new();
        if let Some(protocol) = rule.protocol {
            common.push(Match::Protocol {
                protocol,
                negated: false,
            });
        }
        if let Some(protocol) = rule.not_protocol {
            common.push(Match::Protocol {
                protocol,
                negated: true,
            });
        }
        let ported = rule.protocol.and_then(|p| p.ported());
        let source = self.side(&rule.source, PortSide::Source, ported);
        let destination = self.side(&rule.destination, PortSide::Destination, ported);
        let v6 = self.family == Family::V6;
        for (icmp, negated) in [(rule.icmp, false), (rule.not_icmp, true)] {
            if let Some(icmp) = icmp {
                common.push(Match::Icmp {
                    v6,
                    icmp_type: icmp.icmp_type,
                    code: icmp.code,
                    negated,
                });
            }
        }
        let mut out = Vec::new();
        for s in &source.alternatives {
            for d in &destination.alternatives {
                let mut matches = common.clone();
                matches.extend(source.common.iter().cloned());
                matches.extend(s.iter().cloned());
                matches.extend(destination.common.iter().cloned());
                matches.extend(d.iter().cloned());
                out.push(matches);
            }
        }
        out
    }
}

/// Alternatives that differ from each other in one negatable match each, made mutually
/// exclusive (each also requires that the earlier ones' distinguishing match fails), so a packet
/// meets at most one: a Log rule logs it once.
fn exclusive(alternatives: Vec<Vec<Match>>) -> Vec<Vec<Match>> {
    if alternatives.len() < 2 {
        return alternatives;
    }
    let shortest = alternatives.iter().map(Vec::len).min().unwrap_or(0);
    let prefix = (0..shortest)
        .take_while(|i| alternatives.iter().all(|a| a[*i] == alternatives[0][*i]))
        .count();
    let distinct: Option<Vec<Match>> = alternatives
        .iter()
        .map(|a| (a.len() == prefix + 1).then(|| a[prefix].clone()))
        .collect();
    let Some(distinct) = distinct else {
        return alternatives;
    };
    let Some(negations) = distinct
        .iter()
        .map(Match::negated)
        .collect::<Option<Vec<_>>>()
    else {
        return alternatives;
    };
    alternatives
        .into_iter()
        .enumerate()
        .map(|(i, mut a)| {
            a.extend(negations[..i].iter().cloned());
            a
        })
        .collect()
}

/// The kernel's log prefix: the configured pattern with the policy filled in, without quotes or
/// line breaks, cut to the 29 bytes the kernel keeps (28 and its terminator).
pub fn log_prefix(template: &str, policy: &Policy) -> String {
    let kind = match policy.id.kind {
        PolicyKind::Kubernetes => "knp",
        PolicyKind::Calico => "np",
        PolicyKind::CalicoGlobal => "gnp",
    };
    let qualified = if policy.id.namespace.is_empty() {
        policy.id.name.clone()
    } else {
        format!("{}/{}", policy.id.namespace, policy.id.name)
    };
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push_str(&policy.tier),
            Some('k') => out.push_str(kind),
            Some('n') => out.push_str(&policy.id.name),
            Some('p') => out.push_str(&qualified),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    let mut clean: String = out
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    while clean.len() > 28 {
        clean.pop();
    }
    clean
}

/// Compiles one direction of a policy for one family. A policy without rules in that direction
/// compiles to an empty chain: it decides nothing, and its tier's end drops what reaches it.
///
/// `handling` says what its Deny rules do for the pods that use this variant of the chain:
/// drop; send to the denied-flow log and drop; or, in audit mode, send to the log, set the
/// accept mark and return (one log line per packet even where alternatives overlap).
pub fn policy_chain(
    policy: &Policy,
    direction: Direction,
    family: Family,
    handling: DenialHandling,
    config: &CompilerConfig,
) -> PolicyChain {
    let chain = super::naming::policy_chain(&policy.id, direction, handling);
    let marks = &config.marks;
    let mut ctx = RuleContext {
        policy,
        direction,
        family,
        sets: Vec::new(),
    };
    let mut lines: Vec<Line> = Vec::new();
    let base = policy.origin();
    // A run of rules with one action that sets a mark, from one API rule, shares one return.
    let mut pending_return: Option<(Action, usize, String)> = None;
    let flush = |lines: &mut Vec<Line>, pending: &mut Option<(Action, usize, String)>| {
        if let Some((action, _, origin)) = pending.take() {
            let (mark, word) = match action {
                Action::Pass => (marks.pass, "passed"),
                _ => (marks.accept, "allowed"),
            };
            lines.push(Line::new(
                vec![Match::Mark {
                    value: mark,
                    mask: mark,
                }],
                Target::Return,
                format!("{origin} {word}"),
            ));
        }
    };
    for rule in policy.rules(direction).unwrap_or_default() {
        if !rule.applies_to(family) {
            continue;
        }
        let origin = format!("{base} {direction}[{}]", rule.origin);
        let counted = Arc::new(Counted::PolicyRule(PolicyRuleCount {
            tier: policy.tier.clone(),
            namespace: policy.id.namespace.clone(),
            policy: policy.id.name.clone(),
            direction,
            rule: rule.origin,
            action: rule.action,
            enforcement: if rule.action == Action::Deny {
                handling.enforcement()
            } else {
                Enforcement::Enforce
            },
        }));
        if let Some((action, from, _)) = &pending_return {
            if *action != rule.action || *from != rule.origin {
                flush(&mut lines, &mut pending_return);
            }
        }
        let alternatives = ctx.alternatives(rule);
        match rule.action {
            Action::Allow | Action::Pass => {
                let mark = if rule.action == Action::Allow {
                    marks.accept
                } else {
                    marks.pass
                };
                for matches in alternatives {
                    lines.push(
                        Line::new(
                            matches,
                            Target::SetMark {
                                value: mark,
                                mask: mark,
                            },
                            origin.clone(),
                        )
                        .counting(&counted),
                    );
                }
                pending_return = Some((rule.action, rule.origin, origin));
            }
            Action::Deny => {
                let tag = DeniedFlowTag {
                    enforcement: handling.enforcement(),
                    direction,
                    chain: chain.clone(),
                    position: rule.origin,
                };
                let log = Target::Nflog {
                    group: config.nflog_group,
                    prefix: tag.to_string(),
                };
                let target = match config.deny {
                    DenyAction::Drop => Target::Drop,
                    DenyAction::Reject => Target::Reject,
                };
                for matches in alternatives {
                    if handling.logs() {
                        lines.push(Line::new(
                            matches.clone(),
                            log.clone(),
                            format!("{origin} denied: logged"),
                        ));
                    }
                    if handling == DenialHandling::Audit {
                        let accept = Match::Mark {
                            value: marks.accept,
                            mask: marks.accept,
                        };
                        lines.push(
                            Line::new(
                                matches,
                                Target::SetMark {
                                    value: marks.accept,
                                    mask: marks.accept,
                                },
                                format!("{origin} denied: audited, let through"),
                            )
                            .counting(&counted),
                        );
                        lines.push(Line::new(
                            vec![accept],
                            Target::Return,
                            format!("{origin} audited"),
                        ));
                    } else {
                        lines.push(
                            Line::new(matches, target.clone(), format!("{origin} denied"))
                                .counting(&counted),
                        );
                    }
                }
            }
            Action::Log => {
                let prefix = log_prefix(&config.log.prefix, policy);
                for mut matches in exclusive(alternatives) {
                    if config.log.rate_per_second > 0 {
                        matches.push(Match::Limit {
                            per_second: config.log.rate_per_second,
                            burst: config.log.burst.max(1),
                        });
                    }
                    lines.push(
                        Line::new(
                            matches,
                            Target::Log {
                                prefix: prefix.clone(),
                            },
                            format!("{origin} logged"),
                        )
                        .counting(&counted),
                    );
                }
            }
        }
    }
    flush(&mut lines, &mut pending_return);
    let mut sets = ctx.sets;
    sets.sort();
    sets.dedup();
    PolicyChain { rules: lines, sets }
}

//! The iptables chains of a node: one per policy and direction, one per isolated local pod and
//! direction, and the dispatch chain `PAL-FORWARD`.
//!
//! Verdicts travel in marks, as in Calico Felix, so that ordered policies with Allow, Deny and
//! Pass can share the layout later: a policy chain sets the accept mark when a rule allows the
//! packet; the pod chain returns as soon as the mark is set, and drops at its end otherwise.

use super::desired::{Action, CtState, Match, Rule};
use super::naming;
use super::sets::SetKey;
use super::Marks;
use crate::model::{Direction, Family, ObjectKey, Peer, Policy, PortMatch, PortRule, Selection};

/// A policy chain's rules and the sets they read.
pub struct PolicyChain {
    pub rules: Vec<Rule>,
    pub sets: Vec<SetKey>,
}

/// Compiles one direction of a policy for one family. A policy without rules in that
/// direction compiles to an empty chain: it allows nothing.
pub fn policy_chain(
    policy: &Policy,
    direction: Direction,
    family: Family,
    marks: &Marks,
) -> PolicyChain {
    let mut out = PolicyChain {
        rules: Vec::new(),
        sets: Vec::new(),
    };
    let own_pods = Selection {
        namespaces: crate::model::NamespaceScope::Named(policy.key.namespace.clone()),
        pods: policy.pod_selector.clone(),
    };
    let allow = Action::SetMark {
        value: marks.accept,
        mask: marks.accept,
    };
    for (i, rule) in policy
        .rules(direction)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let origin = format!("{} {direction}[{i}]", policy.key);
        let peers = peer_alternatives(rule.peers.as_deref(), direction, family);
        let ports: Vec<Option<&PortRule>> = if rule.ports.is_empty() {
            vec![None]
        } else {
            rule.ports.iter().map(Some).collect()
        };
        let mut emitted = false;
        for peer in &peers {
            for port in &ports {
                let matches = match port {
                    None => peer.matches.clone(),
                    Some(port) => {
                        port_matches(port, peer, direction, family, &own_pods, &mut out.sets)
                    }
                };
                // The peer's own set only when the rule still reads it (an egress named port
                // replaces it with its address-and-port set).
                if let Some(set) = &peer.set {
                    let name = set.name(family);
                    let reads = |m: &Match| matches!(m, Match::SourceInSet(n) | Match::DestinationInSet(n) if *n == name);
                    if matches.iter().any(reads) {
                        out.sets.push(set.clone());
                    }
                }
                out.rules
                    .push(Rule::new(matches, allow.clone(), origin.clone()));
                emitted = true;
            }
        }
        if emitted {
            out.rules.push(Rule::new(
                vec![Match::Mark {
                    value: marks.accept,
                    mask: marks.accept,
                }],
                Action::Return,
                format!("{origin} allowed"),
            ));
        }
    }
    out.sets.sort();
    out.sets.dedup();
    out
}

/// One way a peer list can match: the matches on the remote address, and the selection the
/// remote pod must be in for an egress named port to resolve against it.
struct PeerAlternative {
    matches: Vec<Match>,
    /// The set `matches` reads, if any.
    set: Option<SetKey>,
    remote: RemotePods,
}

enum RemotePods {
    /// Any address: a named port resolves against every pod in the cluster.
    Any,
    /// The peer is these pods.
    Selection(Selection),
    /// An ipBlock: the address must also be a pod's for a named port to resolve.
    Block,
}

fn remote_match(direction: Direction, set: String) -> Match {
    match direction {
        Direction::Ingress => Match::SourceInSet(set),
        Direction::Egress => Match::DestinationInSet(set),
    }
}

fn peer_alternatives(
    peers: Option<&[Peer]>,
    direction: Direction,
    family: Family,
) -> Vec<PeerAlternative> {
    let Some(peers) = peers else {
        return vec![PeerAlternative {
            matches: Vec::new(),
            set: None,
            remote: RemotePods::Any,
        }];
    };
    let mut alternatives = Vec::new();
    for peer in peers {
        match peer {
            Peer::Pods(selection) => {
                let key = SetKey::Pods(selection.clone());
                alternatives.push(PeerAlternative {
                    matches: vec![remote_match(direction, key.name(family))],
                    remote: RemotePods::Selection(selection.clone()),
                    set: Some(key),
                });
            }
            // An ipBlock of the other family matches nothing here.
            Peer::Block(block) if block.family() != family => {}
            Peer::Block(block) => {
                let key = SetKey::Block(block.clone());
                alternatives.push(PeerAlternative {
                    matches: vec![remote_match(direction, key.name(family))],
                    remote: RemotePods::Block,
                    set: Some(key),
                });
            }
        }
    }
    alternatives
}

/// The matches for one peer alternative and one port.
fn port_matches(
    port: &PortRule,
    peer: &PeerAlternative,
    direction: Direction,
    family: Family,
    own_pods: &Selection,
    sets: &mut Vec<SetKey>,
) -> Vec<Match> {
    let mut matches = peer.matches.clone();
    match &port.port {
        PortMatch::Any => matches.push(Match::Protocol(port.protocol)),
        PortMatch::Range { start, end } => {
            matches.push(Match::Protocol(port.protocol));
            matches.push(Match::DestinationPorts {
                start: *start,
                end: *end,
            });
        }
        PortMatch::Named(name) => {
            // Ingress: the port is the selected (local) pod's own. Egress: it is resolved on
            // each destination pod, so the set pairs every candidate pod's address with its port.
            let selection = match (direction, &peer.remote) {
                (Direction::Ingress, _) => own_pods.clone(),
                (Direction::Egress, RemotePods::Selection(selection)) => {
                    // The pair set implies the peer set: drop the plain address match.
                    matches.clear();
                    selection.clone()
                }
                (Direction::Egress, RemotePods::Any | RemotePods::Block) => Selection::all_pods(),
            };
            let key = SetKey::NamedPort {
                selection,
                name: name.clone(),
                protocol: port.protocol,
            };
            matches.push(Match::DestinationPortInSet(key.name(family)));
            sets.push(key);
        }
    }
    matches
}

/// The chain of one isolated local pod for one direction.
pub fn pod_chain(
    pod: &ObjectKey,
    direction: Direction,
    policies: &[ObjectKey],
    isolated_by_namespace: bool,
    marks: &Marks,
) -> Vec<Rule> {
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
    for policy in policies {
        rules.push(Rule::new(
            Vec::new(),
            Action::Jump(naming::policy_chain(policy, direction)),
            policy.to_string(),
        ));
        rules.push(Rule::new(
            vec![Match::Mark {
                value: marks.accept,
                mask: marks.accept,
            }],
            Action::Return,
            format!("{policy} allowed"),
        ));
    }
    let why = if policies.is_empty() && isolated_by_namespace {
        "namespace DefaultDeny annotation"
    } else {
        "no policy allowed it"
    };
    rules.push(Rule::new(
        Vec::new(),
        Action::Drop,
        format!("{pod} {direction}: default deny ({why})"),
    ));
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

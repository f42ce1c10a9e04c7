//! Text forms of the desired state: `ipset restore` input and `iptables-restore` input.
//!
//! Every rule carries a comment `pal:<hash> <origin>`. The hash covers the rule's text without
//! the comment, so the dataplane can tell from `iptables-save` output which rules are already in
//! place, whichever backend printed them and however it reordered the match options.

use std::fmt::Write as _;

use crate::compiler::desired::{Action, Chain, CtState, FamilyState, IpSet, Match, PortSide, Rule};
use crate::compiler::naming::stable_hash;
use crate::model::{Family, IpProtocol};

/// The kernel keeps at most 256 bytes of a rule comment.
const MAX_COMMENT_BYTES: usize = 255;

/// The name iptables gives a protocol in `-p`.
fn protocol_name(protocol: IpProtocol) -> String {
    match protocol {
        IpProtocol::Tcp => "tcp".into(),
        IpProtocol::Udp => "udp".into(),
        IpProtocol::Sctp => "sctp".into(),
        IpProtocol::Icmp => "icmp".into(),
        IpProtocol::IcmpV6 => "ipv6-icmp".into(),
        IpProtocol::UdpLite => "udplite".into(),
        IpProtocol::Number(n) => n.to_string(),
    }
}

fn not(negated: bool) -> &'static str {
    if negated {
        "! "
    } else {
        ""
    }
}

fn range(start: u16, end: u16) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}:{end}")
    }
}

/// The rule's matches and target as `iptables` arguments, without the comment.
pub fn rule_body(rule: &Rule) -> String {
    let mut out = String::new();
    for m in &rule.matches {
        if !out.is_empty() {
            out.push(' ');
        }
        match m {
            Match::CtState(CtState::EstablishedOrRelated) => {
                out.push_str("-m conntrack --ctstate RELATED,ESTABLISHED")
            }
            Match::CtState(CtState::Invalid) => out.push_str("-m conntrack --ctstate INVALID"),
            Match::Source(net) => {
                let _ = write!(out, "-s {}/{}", net.network(), net.prefix());
            }
            Match::Destination(net) => {
                let _ = write!(out, "-d {}/{}", net.network(), net.prefix());
            }
            Match::Set {
                name,
                dims,
                negated,
            } => {
                let _ = write!(
                    out,
                    "-m set {}--match-set {name} {}",
                    not(*negated),
                    dims.as_str()
                );
            }
            Match::Protocol { protocol, negated } => {
                let _ = write!(out, "{}-p {}", not(*negated), protocol_name(*protocol));
            }
            Match::Ports {
                side,
                ranges,
                negated,
            } => {
                let (one, many) = match side {
                    PortSide::Source => ("--sport", "--sports"),
                    PortSide::Destination => ("--dport", "--dports"),
                };
                match ranges.as_slice() {
                    [(start, end)] => {
                        // The protocol match comes first; its module provides --dport.
                        let module = rule
                            .matches
                            .iter()
                            .find_map(|m| match m {
                                Match::Protocol {
                                    protocol,
                                    negated: false,
                                } => protocol.ported().map(|p| p.as_str()),
                                _ => None,
                            })
                            .unwrap_or("tcp");
                        let _ = write!(
                            out,
                            "-m {module} {}{one} {}",
                            not(*negated),
                            range(*start, *end)
                        );
                    }
                    _ => {
                        let list: Vec<String> = ranges.iter().map(|(s, e)| range(*s, *e)).collect();
                        let _ = write!(
                            out,
                            "-m multiport {}{many} {}",
                            not(*negated),
                            list.join(",")
                        );
                    }
                }
            }
            Match::Icmp {
                v6,
                icmp_type,
                code,
                negated,
            } => {
                let (module, option) = if *v6 {
                    ("icmp6", "--icmpv6-type")
                } else {
                    ("icmp", "--icmp-type")
                };
                let value = match code {
                    Some(code) => format!("{icmp_type}/{code}"),
                    None => icmp_type.to_string(),
                };
                let _ = write!(out, "-m {module} {}{option} {value}", not(*negated));
            }
            Match::Mark { value, mask } => {
                let _ = write!(out, "-m mark --mark {value:#x}/{mask:#x}");
            }
            Match::Limit { per_second, burst } => {
                let _ = write!(
                    out,
                    "-m limit --limit {per_second}/sec --limit-burst {burst}"
                );
            }
        }
    }
    if !out.is_empty() {
        out.push(' ');
    }
    match &rule.action {
        Action::Accept => out.push_str("-j ACCEPT"),
        Action::Drop => out.push_str("-j DROP"),
        Action::Reject => out.push_str("-j REJECT"),
        Action::Return => out.push_str("-j RETURN"),
        Action::Jump(chain) => {
            let _ = write!(out, "-j {chain}");
        }
        Action::SetMark { value, mask } => {
            let _ = write!(out, "-j MARK --set-xmark {value:#x}/{mask:#x}");
        }
        Action::Log { prefix } => {
            let _ = write!(out, "-j LOG --log-prefix \"{prefix}\"");
        }
        Action::Nflog { group, prefix } => {
            let _ = write!(
                out,
                "-j NFLOG --nflog-prefix \"{prefix}\" --nflog-group {group}"
            );
        }
    }
    out
}

/// The hash that identifies a rule in the kernel: 16 hex digits over its body.
pub fn rule_hash(body: &str) -> String {
    format!("{:016x}", stable_hash(body))
}

/// The full `iptables` rule specification, comment first.
pub fn rule_spec(rule: &Rule) -> String {
    let body = rule_body(rule);
    let mut comment = format!("pal:{} {}", rule_hash(&body), rule.comment);
    truncate_at_char_boundary(&mut comment, MAX_COMMENT_BYTES);
    // iptables-restore reads double quotes as quoting and a newline as the end of the rule.
    let comment = comment.replace(['"', '\\'], "'").replace(['\n', '\r'], " ");
    format!("-m comment --comment \"{comment}\" {body}")
}

fn truncate_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// The `maxelem` every set is created with.
pub const IPSET_MAXELEM: usize = crate::compiler::desired::SET_CAPACITY;

/// The `ipset create` line for a set.
pub fn ipset_create(name: &str, set: &IpSet) -> String {
    let family = match set.family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    format!(
        "create {name} {} family {family} maxelem {IPSET_MAXELEM}",
        set.kind.as_str()
    )
}

/// `ipset restore` input that creates every set of `state` with its members.
pub fn ipset_restore(state: &FamilyState) -> String {
    let mut out = String::new();
    for (name, set) in &state.ipsets {
        let _ = writeln!(out, "# {name}: {}", set.description.replace('\n', " "));
        let _ = writeln!(out, "{}", ipset_create(name, set));
        for member in &set.members {
            let _ = writeln!(out, "add {name} {member}");
        }
    }
    out
}

/// The lines of one chain's rules, as `-A` lines.
pub fn chain_rules(name: &str, chain: &Chain) -> Vec<String> {
    chain
        .rules
        .iter()
        .map(|rule| format!("-A {name} {}", rule_spec(rule)))
        .collect()
}

/// `iptables-restore` input for the filter table that declares and fills every chain of `state`.
pub fn iptables_restore(state: &FamilyState) -> String {
    let mut out = String::from("*filter\n");
    for name in state.chains.keys() {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (name, chain) in &state.chains {
        for line in chain_rules(name, chain) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The comment on Palisade's one rule outside its own chains.
pub const HOOK_COMMENT: &str = "palisade: policy enforcement";

/// The rule that sends forwarded traffic through Palisade, inserted at the top of `FORWARD`.
pub fn hook_insert() -> String {
    format!(
        "-I FORWARD 1 -m comment --comment \"{HOOK_COMMENT}\" -j {}",
        crate::compiler::naming::FORWARD_CHAIN
    )
}

/// Everything a node must hold for one family, as it would be restored onto a node without any
/// Palisade state: `ipset restore` input, then `iptables-restore` input with the hook.
pub fn full_text(state: &FamilyState, family: Family) -> String {
    let (ipset_tool, iptables_tool) = match family {
        Family::V4 => ("ipset restore", "iptables-restore"),
        Family::V6 => ("ipset restore", "ip6tables-restore"),
    };
    let mut out = format!("# ---- {ipset_tool} ({family}) ----\n");
    out.push_str(&ipset_restore(state));
    let _ = writeln!(out, "# ---- {iptables_tool} --noflush (filter table) ----");
    let rules = iptables_restore(state);
    // The hook goes in the same transaction, before COMMIT.
    let body = rules.strip_suffix("COMMIT\n").unwrap_or(&rules);
    out.push_str(body);
    out.push_str(&hook_insert());
    out.push_str("\nCOMMIT\n");
    out
}

/// The restore input that brings the named sets and chains of one family to their state in
/// `state`: each present set recreated with its members, each present chain rewritten, each
/// absent one removed. The benchmark of the event path renders the objects a change touched
/// with it; the agent itself applies through the dataplane, which diffs against the kernel.
pub fn changed_objects(state: &FamilyState, names: &[&str]) -> (String, String) {
    let mut sets = String::new();
    let mut chains = String::from("*filter\n");
    let mut removed_chains = Vec::new();
    let mut removed_sets = Vec::new();
    for name in names {
        if let Some(set) = state.ipsets.get(*name) {
            let _ = writeln!(sets, "{} -exist", ipset_create(name, set));
            let _ = writeln!(sets, "flush {name}");
            for member in &set.members {
                let _ = writeln!(sets, "add {name} {member}");
            }
        } else if let Some(chain) = state.chains.get(*name) {
            let _ = writeln!(chains, ":{name} - [0:0]");
            for line in chain_rules(name, chain) {
                chains.push_str(&line);
                chains.push('\n');
            }
        } else if crate::compiler::naming::is_owned_chain(name) {
            removed_chains.push(*name);
        } else {
            removed_sets.push(*name);
        }
    }
    for name in &removed_chains {
        let _ = writeln!(chains, "-F {name}");
    }
    for name in &removed_chains {
        let _ = writeln!(chains, "-X {name}");
    }
    chains.push_str("COMMIT\n");
    for name in removed_sets {
        let _ = writeln!(sets, "destroy {name}");
    }
    (sets, chains)
}

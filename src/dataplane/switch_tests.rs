//! No transient holes, line by line: every restore input of a sync is run on a model of the
//! kernel (each `ipset restore` line on its own, as the tool applies them; each iptables
//! transaction at once, as the kernel commits it), and after every step every packet gets the
//! verdict of the state before the sync or of the state after it, as the interpreter of
//! compiled rules computes them. The rule sets are random and not monotone (Drop rules,
//! negated set matches, marks), so a member edit that rules in force can see would show.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use crate::compiler::desired::{
    Action, Chain, DesiredState, FamilyState, IpSet, IpSetKind, Match, Rule, SetDims, SetEntry,
};
use crate::explain::interpreter::{forward_accepts, Packet};
use crate::model::{Family, Protocol};
use crate::render::chain_rules;

use super::tests::{dataplane, empty_kernel, runner_holding, RESTORE_V4};
use super::{ApplyOptions, Dataplane, RecordingRunner};

const SETS: usize = 4;
const PEERS: u8 = 6;
const LOCAL: u8 = 3;
const PORTS: [u16; 2] = [80, 443];
const MARK: u32 = 0x10000;

fn address(i: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, i + 1])
}

fn set_name(i: usize) -> String {
    format!("pal4-p-{i}")
}

/// A rule of a pod chain: (set, negated, port, action) with action 0 accept, 1 drop, 2 mark.
type RuleSpec = (usize, bool, Option<usize>, u8);

fn state_of(members: &[Vec<bool>], pods: &[Vec<RuleSpec>]) -> DesiredState {
    let mut v4 = FamilyState::default();
    for (i, held) in members.iter().enumerate() {
        v4.ipsets.insert(
            set_name(i),
            IpSet {
                kind: IpSetKind::HashIp,
                family: Family::V4,
                description: String::new(),
                members: held
                    .iter()
                    .enumerate()
                    .filter(|(_, inside)| **inside)
                    .map(|(peer, _)| SetEntry::Ip(address(peer as u8)))
                    .collect(),
            },
        );
    }
    let mut forward = Vec::new();
    for (pod, rules) in pods.iter().enumerate() {
        let chain = format!("PAL-TO-{pod}");
        forward.push(Rule::new(
            vec![Match::Destination(
                ipnetwork::IpNetwork::new(address(pod as u8), 32).expect("a /32"),
            )],
            Action::Jump(chain.clone()),
            format!("pod {pod}"),
        ));
        let mut compiled = Vec::new();
        for (n, (set, negated, port, action)) in rules.iter().enumerate() {
            let mut matches = vec![Match::Set {
                name: set_name(*set),
                dims: SetDims::Src,
                negated: *negated,
            }];
            if let Some(port) = port {
                matches.push(Match::protocol(Protocol::Tcp));
                matches.push(Match::destination_port(PORTS[*port], PORTS[*port]));
            }
            let action = match action {
                0 => Action::Accept,
                1 => Action::Drop,
                _ => Action::SetMark {
                    value: MARK,
                    mask: MARK,
                },
            };
            compiled.push(Rule::new(matches, action, format!("rule {n}")));
        }
        compiled.push(Rule::new(
            vec![Match::Mark {
                value: MARK,
                mask: MARK,
            }],
            Action::Accept,
            "marked",
        ));
        compiled.push(Rule::new(vec![], Action::Drop, "default deny"));
        v4.chains.insert(chain, Chain { rules: compiled });
    }
    v4.chains
        .insert("PAL-FORWARD".to_string(), Chain { rules: forward });
    DesiredState {
        v4,
        v6: FamilyState::default(),
    }
}

fn packets() -> Vec<Packet> {
    let mut out = Vec::new();
    for src in 0..PEERS {
        for dst in 0..LOCAL {
            for port in PORTS {
                out.push(Packet::ported(
                    address(src),
                    address(dst),
                    Protocol::Tcp,
                    port,
                ));
            }
        }
    }
    out
}

fn verdicts(state: &FamilyState) -> Result<Vec<bool>, String> {
    packets()
        .iter()
        .map(|packet| forward_accepts(state, Family::V4, packet, &mut Vec::new()))
        .collect()
}

fn referenced(kernel: &FamilyState, set: &str) -> bool {
    kernel
        .chains
        .values()
        .any(|chain| chain.references_set(set))
}

/// One `ipset restore` line on the model, with the kernel's refusals. `Ok(true)` when the
/// line changed a set that rules in force use: a step the packets can see.
fn run_ipset_line(kernel: &mut FamilyState, line: &str) -> Result<bool, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(command), Some(name)) = (words.first(), words.get(1)) else {
        return Ok(false);
    };
    if command.starts_with('#') {
        return Ok(false);
    }
    let name = (*name).to_string();
    let visible = *command != "create" && referenced(kernel, &name);
    if visible && *command == "destroy" {
        return Err(format!("`{line}`: the set is in use"));
    }
    match *command {
        "create" => {
            if kernel.ipsets.contains_key(&name) {
                return Err(format!("`{line}`: the set exists"));
            }
            kernel.ipsets.insert(
                name,
                IpSet {
                    kind: IpSetKind::HashIp,
                    family: Family::V4,
                    description: String::new(),
                    members: Default::default(),
                },
            );
        }
        "add" | "del" => {
            let set = kernel
                .ipsets
                .get_mut(&name)
                .ok_or_else(|| format!("`{line}`: no such set"))?;
            let ip: IpAddr = words
                .get(2)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("`{line}`: no address"))?;
            if *command == "add" {
                set.members.insert(SetEntry::Ip(ip));
            } else {
                set.members.remove(&SetEntry::Ip(ip));
            }
        }
        "flush" => {
            if let Some(set) = kernel.ipsets.get_mut(&name) {
                set.members.clear();
            }
        }
        "destroy" => {
            kernel.ipsets.remove(&name);
        }
        other => return Err(format!("`{line}`: unexpected command {other}")),
    }
    Ok(visible)
}

/// One iptables transaction on the model, all at once. The chains it writes are those of the
/// state the sync wrote (`written`), checked against the text line for line.
fn run_transaction(
    kernel: &mut FamilyState,
    text: &str,
    written: &FamilyState,
) -> Result<(), String> {
    let mut next = kernel.clone();
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(':') {
            let name = name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            lines.insert(name, Vec::new());
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            lines.entry(chain).or_default().push(line.to_string());
        } else if let Some(name) = line.strip_prefix("-X ") {
            next.chains.remove(name);
        }
    }
    for (name, rules) in lines {
        let chain = written.chains.get(&name).cloned().unwrap_or_default();
        if chain_rules(&name, &chain) != rules {
            return Err(format!("chain {name} was written with other rules"));
        }
        next.chains.insert(name, chain);
    }
    for chain in next.chains.values() {
        for set in chain.rules.iter().flat_map(|r| r.referenced_sets()) {
            if !next.ipsets.contains_key(set) {
                return Err(format!("a rule uses the missing set {set}"));
            }
        }
    }
    *kernel = next;
    Ok(())
}

/// Applies `desired` and replays what was sent on `kernel`, checking every packet after every
/// step against `before` and `after`.
fn replay(
    plane: &Dataplane,
    runner: &RecordingRunner,
    kernel: &mut FamilyState,
    before: &[bool],
    desired: &DesiredState,
) -> Result<(), String> {
    runner.clear_calls();
    plane
        .apply(desired, ApplyOptions::default())
        .map_err(|e| e.to_string())?;
    let written = plane.peek().clone().ok_or("nothing remembered")?;
    let after = verdicts(&desired.v4)?;
    // Steps the rules in force can see: the iptables transaction, and an ipset line on a set
    // they use. One at most, or the packets could see a mix of old and new.
    let mut visible = Vec::new();
    for call in runner.restore_calls() {
        let input = call.stdin.unwrap_or_default();
        if call.program == RESTORE_V4 {
            run_transaction(kernel, &input, &written.v4)?;
            visible.push("the iptables transaction".to_string());
            check(kernel, before, &after, "the iptables transaction")?;
        } else {
            for line in input.lines() {
                if run_ipset_line(kernel, line)? {
                    visible.push(format!("`{line}`"));
                }
                check(kernel, before, &after, &format!("`{line}`"))?;
            }
        }
    }
    if visible.len() > 1 {
        return Err(format!(
            "{} steps the rules in force can see in one sync: {}",
            visible.len(),
            visible.join(", ")
        ));
    }
    if verdicts(kernel)? != after {
        return Err("the kernel does not hold the new state at the end".into());
    }
    Ok(())
}

fn check(kernel: &FamilyState, before: &[bool], after: &[bool], step: &str) -> Result<(), String> {
    let now = verdicts(kernel)?;
    for (i, packet) in packets().iter().enumerate() {
        if now[i] != before[i] && now[i] != after[i] {
            return Err(format!(
                "after {step}: {packet} gets {} while neither state gives it",
                now[i]
            ));
        }
    }
    Ok(())
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        0..SETS,
        any::<bool>(),
        prop::option::of(0..PORTS.len()),
        0u8..3,
    )
}

fn cluster_state() -> impl Strategy<Value = DesiredState> {
    (
        prop::collection::vec(prop::collection::vec(any::<bool>(), PEERS as usize), SETS),
        prop::collection::vec(prop::collection::vec(rule_spec(), 0..4), LOCAL as usize),
    )
        .prop_map(|(members, pods)| state_of(&members, &pods))
}

/// Often the next state only moves members, as a label change does; sometimes everything.
fn next_state(state: DesiredState) -> impl Strategy<Value = DesiredState> {
    let keep = Just(state.clone());
    prop_oneof![
        (keep, 0..SETS, 0..PEERS as usize).prop_map(|(mut s, set, peer)| {
            if let Some(set) = s.v4.ipsets.get_mut(&set_name(set)) {
                let entry = SetEntry::Ip(address(peer as u8));
                if !set.members.remove(&entry) {
                    set.members.insert(entry);
                }
            }
            s
        }),
        cluster_state(),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<DesiredState>> {
    cluster_state().prop_flat_map(|first| {
        let mut chain: BoxedStrategy<Vec<DesiredState>> = Just(vec![first]).boxed();
        for _ in 0..6 {
            chain = chain
                .prop_flat_map(|states| {
                    let last = states.last().cloned().unwrap_or_default();
                    (Just(states), next_state(last)).prop_map(|(mut states, next)| {
                        states.push(next);
                        states
                    })
                })
                .boxed();
        }
        chain
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Each sync of a sequence, planned from memory or (every third one) from a read of the
    /// kernel as a restarted agent does, shows the packets the old state or the new one.
    #[test]
    fn every_step_of_every_sync_gives_the_old_or_the_new_verdict(states in sequence()) {
        let runner: Arc<RecordingRunner> = empty_kernel();
        let mut plane = dataplane(&runner);
        let mut runner_in_use = runner;
        let mut kernel = FamilyState::default();
        plane.apply(&states[0], ApplyOptions::default()).expect("first apply");
        kernel.clone_from(&plane.peek().clone().expect("remembered").v4);
        for (step, desired) in states.iter().enumerate().skip(1) {
            if step % 3 == 0 {
                let held = DesiredState { v4: kernel.clone(), v6: FamilyState::default() };
                runner_in_use = runner_holding(&held, true);
                plane = dataplane(&runner_in_use);
            }
            let before = verdicts(&kernel).expect("the kernel model is complete");
            let old = verdicts(&states[step - 1].v4).expect("old state");
            prop_assert_eq!(&before, &old, "the kernel held the old state");
            if let Err(hole) = replay(&plane, &runner_in_use, &mut kernel, &before, desired) {
                prop_assert!(false, "sync {}: {}", step, hole);
            }
        }
    }
}

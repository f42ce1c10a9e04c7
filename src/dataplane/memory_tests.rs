//! Planning from memory must decide exactly what planning from a read of a kernel holding the
//! last written state decides, and the memory must be dropped whenever it could be wrong.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::compiler::desired::{
    Action, Chain, DesiredState, FamilyState, IpSet, IpSetKind, Match, Rule, SetDims, SetEntry,
};
use crate::model::{Family, Protocol};

use super::ipset_save::parse_ipset_save;
use super::iptables_save::parse_filter_save;
use super::memory::plan_from_memory;
use super::plan::{plan_family, FamilyPlan};
use super::tests::{
    dataplane, empty_kernel, filter_save, ip, ipset_save, net, restores, runner_holding,
    small_state, FOREIGN_RULES, PODS, SAVE_V4,
};
use super::ApplyOptions;

/// The plan a read of a kernel holding `written` (and its hook) gives.
fn plan_from_read(desired: &FamilyState, written: &FamilyState) -> FamilyPlan {
    let hook = written.chains.contains_key("PAL-FORWARD");
    let filter = parse_filter_save(&filter_save(written, hook, FOREIGN_RULES));
    let sets = parse_ipset_save(&ipset_save(&[written]))
        .into_iter()
        .filter(|(name, _)| name.starts_with("pal4-"))
        .collect();
    plan_family(Family::V4, desired, &filter, &sets)
}

/// Element lists in one order: the read walks elements as text, memory walks entries.
fn normalized(mut plan: FamilyPlan) -> FamilyPlan {
    for edit in plan.edit_sets.values_mut() {
        edit.add.sort();
        edit.delete.sort();
    }
    plan
}

fn assert_same_plan(written: &FamilyState, desired: &FamilyState) {
    let remembered = plan_from_memory(Family::V4, desired, written).map(|r| normalized(r.plan));
    let untouched = desired.is_empty() && written.is_empty();
    let read = (!untouched).then(|| normalized(plan_from_read(desired, written)));
    assert_eq!(
        remembered, read,
        "written {written:#?}\ndesired {desired:#?}"
    );
}

const SET_NAMES: [&str; 3] = ["pal4-s-a", "pal4-s-b", "pal4-s-c"];

fn entries_of(kind: IpSetKind) -> Vec<SetEntry> {
    match kind {
        IpSetKind::HashIp => (1..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect(),
        IpSetKind::HashNet => vec![
            net("10.0.0.0/8", false),
            net("10.1.0.0/16", true),
            net("10.1.0.0/16", false),
            net("10.1.2.3/32", false),
            net("0.0.0.0/1", false),
            net("128.0.0.0/1", true),
            net("0.0.0.0/0", false),
        ],
        IpSetKind::HashIpPort => [80u16, 443, 8080]
            .into_iter()
            .map(|port| SetEntry::IpPort {
                ip: "10.0.0.1".parse().expect("test address"),
                protocol: Protocol::Tcp,
                port,
            })
            .collect(),
    }
}

/// A random family state: each set absent or of a random kind with random members; a chain
/// per set that matches it, and the forward chain jumping to those chains.
fn family_state() -> impl Strategy<Value = FamilyState> {
    let kind = prop_oneof![
        Just(IpSetKind::HashIp),
        Just(IpSetKind::HashNet),
        Just(IpSetKind::HashIpPort)
    ];
    let one_set = proptest::option::of((kind, any::<u8>(), any::<bool>()));
    (proptest::collection::vec(one_set, 3), any::<bool>(), 0u8..3).prop_map(
        |(sets, forward, comment)| {
            let mut state = FamilyState::default();
            let mut jumps = Vec::new();
            for (name, spec) in SET_NAMES.iter().zip(sets) {
                let Some((kind, pick, chained)) = spec else {
                    continue;
                };
                let members: BTreeSet<SetEntry> = entries_of(kind)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| pick & (1 << i) != 0)
                    .map(|(_, e)| e)
                    .collect();
                state.ipsets.insert(
                    name.to_string(),
                    IpSet {
                        kind,
                        family: Family::V4,
                        description: String::new(),
                        members,
                    },
                );
                if chained {
                    let chain = format!("PAL-M-{}", &name[7..]);
                    let dims = if kind == IpSetKind::HashIpPort {
                        SetDims::DstPort
                    } else {
                        SetDims::Src
                    };
                    let rule = Rule::new(
                        vec![Match::in_set(name.to_string(), dims)],
                        Action::Accept,
                        format!("ns/p ingress[{comment}]"),
                    );
                    state
                        .chains
                        .insert(chain.clone(), Chain { rules: vec![rule] });
                    jumps.push(chain);
                }
            }
            if forward {
                let rules = jumps
                    .into_iter()
                    .map(|chain| Rule::new(vec![], Action::Jump(chain), "forward"))
                    .collect();
                state
                    .chains
                    .insert("PAL-FORWARD".to_string(), Chain { rules });
            }
            state
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn memory_plans_what_a_read_of_the_written_state_plans(
        written in family_state(),
        desired in family_state(),
    ) {
        assert_same_plan(&written, &desired);
    }
}

#[test]
fn nomatch_twins_and_whole_spaces_diff_as_the_kernel_stores_them() {
    let with = |members: Vec<SetEntry>| {
        let mut state = FamilyState::default();
        state.ipsets.insert(
            "pal4-s-a".to_string(),
            IpSet {
                kind: IpSetKind::HashNet,
                family: Family::V4,
                description: String::new(),
                members: members.into_iter().collect(),
            },
        );
        state
    };
    let cases = [
        // The nomatch twin leaves: the element stays and loses its flag.
        (
            vec![net("10.1.0.0/16", false), net("10.1.0.0/16", true)],
            vec![net("10.1.0.0/16", false)],
        ),
        // A whole space arrives next to one of its halves.
        (
            vec![net("0.0.0.0/1", true)],
            vec![net("0.0.0.0/1", true), net("0.0.0.0/0", false)],
        ),
        (
            vec![net("0.0.0.0/0", false), net("128.0.0.0/1", false)],
            vec![net("128.0.0.0/1", false)],
        ),
    ];
    for (before, after) in cases {
        assert_same_plan(&with(before), &with(after));
    }
}

#[test]
fn after_the_first_apply_the_kernel_is_not_read() {
    let before = small_state();
    let runner = empty_kernel();
    let plane = dataplane(&runner);
    let first = plane
        .apply(&before, ApplyOptions::default())
        .expect("first apply");
    assert!(first.read_kernel);
    assert!(plane.remembers());

    let mut after = before.clone();
    let pods = after.v4.ipsets.get_mut(PODS).expect("pods set");
    pods.members.remove(&ip("10.0.0.6"));
    pods.members.insert(ip("10.0.0.7"));
    runner.clear_calls();
    let second = plane
        .apply(&after, ApplyOptions::default())
        .expect("second apply");
    assert!(!second.read_kernel);
    let calls = runner.calls();
    assert!(
        calls.iter().all(|call| call.is_restore()),
        "no read: {calls:?}"
    );
    // The pods set is in use: its new content goes under its other name (see `placement`),
    // and the old one stays as its spare.
    let programs: Vec<String> = restores(&runner).into_iter().map(|(p, _)| p).collect();
    assert_eq!(programs, ["ipset", super::tests::RESTORE_V4]);

    runner.clear_calls();
    let again = plane
        .apply(&after, ApplyOptions::default())
        .expect("no-op apply");
    assert_eq!(again.changes, 0);
    assert!(runner.calls().is_empty(), "a no-op runs no command at all");
}

#[test]
fn a_failed_write_makes_the_next_apply_read_the_kernel() {
    let state = small_state();
    let runner = empty_kernel();
    let plane = dataplane(&runner);
    plane
        .apply(&state, ApplyOptions::default())
        .expect("first apply");
    let mut changed = state.clone();
    changed
        .v4
        .ipsets
        .get_mut(PODS)
        .expect("pods")
        .members
        .insert(ip("10.0.0.8"));
    runner.set_failure("ipset", "ipset v7.17: Error in line 1");
    assert!(plane.apply(&changed, ApplyOptions::default()).is_err());
    assert!(!plane.remembers(), "a failed write is forgotten");

    // The kernel really holds the first state; the retry reads it and writes the difference.
    let kernel = runner_holding(&state, true);
    let plane = dataplane(&kernel);
    let retry = plane
        .apply(&changed, ApplyOptions::default())
        .expect("retry");
    assert!(retry.read_kernel);
    assert!(kernel.calls().iter().any(|c| c.program == SAVE_V4));
}

#[test]
fn a_dry_run_neither_uses_nor_changes_what_was_written() {
    let state = small_state();
    let runner = empty_kernel();
    let plane = dataplane(&runner);
    let dry = plane
        .apply(&state, ApplyOptions { dry_run: true })
        .expect("dry run");
    assert!(dry.read_kernel);
    assert!(!plane.remembers(), "nothing was written");
    plane.apply(&state, ApplyOptions::default()).expect("apply");
    let mut changed = state.clone();
    changed.v4.chains.remove("PAL-TO-a");
    changed
        .v4
        .chains
        .get_mut("PAL-FORWARD")
        .expect("forward")
        .rules
        .clear();
    plane
        .apply(&changed, ApplyOptions { dry_run: true })
        .expect("dry run from memory");
    runner.clear_calls();
    let report = plane
        .apply(&state, ApplyOptions::default())
        .expect("apply the same state");
    assert_eq!(report.changes, 0, "the dry run did not change the memory");
}

#[test]
fn refresh_proves_or_drops_the_memory() {
    let state = small_state();
    let matching = runner_holding(&state, true);
    let plane = dataplane(&matching);
    assert!(plane.verify(&state).expect("verify").is_empty());
    assert!(plane.remembers(), "a kernel that matches is remembered");

    let drifted = runner_holding(&DesiredState::default(), false);
    let plane = dataplane(&drifted);
    plane.apply(&state, ApplyOptions::default()).expect("apply");
    assert!(plane.remembers());
    // The fake kernel still prints the empty state: someone removed everything behind our back.
    assert!(!plane.verify(&state).expect("verify").is_empty());
    assert!(!plane.remembers());
    drifted.clear_calls();
    let repair = plane
        .apply(&state, ApplyOptions::default())
        .expect("repair");
    assert!(repair.read_kernel);
    assert!(repair.changes > 0);
}

#[test]
fn a_cleanup_is_remembered_as_an_empty_kernel() {
    let state = small_state();
    let runner = runner_holding(&state, true);
    let plane = dataplane(&runner);
    plane.cleanup(ApplyOptions::default()).expect("cleanup");
    runner.clear_calls();
    let report = plane
        .apply(&state, ApplyOptions::default())
        .expect("apply after cleanup");
    assert!(!report.read_kernel);
    // Everything is created again, as into an empty kernel.
    assert_eq!(report.v4.sets_created, 2);
    assert_eq!(report.v4.hooks_inserted, 1);
}

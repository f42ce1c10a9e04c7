//! Compiler behaviour on small clusters built in code. Verdict-level semantics are proven in
//! `tests/spec_property.rs` against a reference evaluator; these pin the shape of the output.

use std::collections::BTreeSet;

use super::desired::SetEntry;
use super::sets::SetKey;
use super::*;
use crate::index::ClusterIndex;
use crate::model::kubernetes::{
    IpBlock, KubernetesPolicy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule, Selection,
};
use crate::model::{
    Direction, Family, NamedPort, Namespace, ObjectKey, Pod, Policy, PolicyId, Protocol,
};
use crate::selector::{Labels, Selector};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn pod(ns: &str, name: &str, node: &str, ips: &[&str], pairs: &[(&str, &str)]) -> Pod {
    Pod {
        key: ObjectKey::new(ns, name),
        node: Some(node.into()),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        labels: labels(pairs),
        named_ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        service_account: Some("default".into()),
    }
}

fn select(pairs: &[(&str, &str)]) -> Selector {
    Selector::match_labels(pairs.iter().copied())
}

fn ingress_policy(ns: &str, name: &str, target: &[(&str, &str)], from: Vec<Peer>) -> Policy {
    KubernetesPolicy {
        key: ObjectKey::new(ns, name),
        pod_selector: select(target),
        ingress: Some(vec![PolicyRule {
            peers: Some(from),
            ports: vec![],
        }]),
        egress: None,
    }
    .to_policy()
}

fn pods_in(ns: &str, pairs: &[(&str, &str)]) -> Peer {
    Peer::Pods(Selection {
        namespaces: NamespaceScope::Named(ns.into()),
        pods: select(pairs),
    })
}

fn cluster() -> ClusterIndex {
    let mut index = ClusterIndex::new();
    index.upsert_pod(pod("a", "db", "n1", &["10.0.0.1"], &[("app", "db")]));
    index.upsert_pod(pod(
        "a",
        "web",
        "n2",
        &["10.0.0.2", "fd00::2"],
        &[("app", "web")],
    ));
    index.upsert_pod(pod(
        "a",
        "api",
        "n1",
        &["10.0.0.3", "fd00::3"],
        &[("app", "api")],
    ));
    index
}

fn members(state: &DesiredState, family: Family) -> BTreeSet<String> {
    state
        .family(family)
        .ipsets
        .values()
        .flat_map(|s| s.members.iter().map(SetEntry::to_string))
        .collect()
}

#[test]
fn only_local_isolated_pods_get_chains() {
    let mut index = cluster();
    index.upsert_policy(ingress_policy(
        "a",
        "db",
        &[("app", "db")],
        vec![pods_in("a", &[("app", "web")])],
    ));
    let n1 = compile(&index, "n1", Marks::default());
    let n2 = compile(&index, "n2", Marks::default());
    let db_chain = naming::pod_chain(&ObjectKey::new("a", "db"), Direction::Ingress);
    assert!(n1.v4.chains.contains_key(&db_chain));
    assert!(!n2.v4.chains.contains_key(&db_chain), "db is not on n2");
    assert!(!n1.v4.chains.contains_key(&naming::pod_chain(
        &ObjectKey::new("a", "api"),
        Direction::Ingress
    )));
    assert!(n2.v4.ipsets.is_empty(), "n2 references no set");
    assert_eq!(
        members(&n1, Family::V4),
        BTreeSet::from(["10.0.0.2".to_string()])
    );
    let v6_chains: Vec<&String> = n1.v6.chains.keys().collect();
    assert_eq!(
        v6_chains,
        [naming::FORWARD_CHAIN],
        "api has IPv6 but is not isolated; db has no IPv6"
    );
}

#[test]
fn the_legacy_annotation_isolates_every_pod_of_its_namespace_for_ingress_only() {
    let mut index = cluster();
    index.upsert_namespace(Namespace {
        name: "a".into(),
        labels: Labels::new(),
        legacy_default_deny: true,
        denials: Default::default(),
    });
    let n1 = NodeCompiler::new(&index, "n1", Marks::default());
    assert_eq!(n1.isolated_pod_count(Direction::Ingress), 2);
    assert_eq!(n1.isolated_pod_count(Direction::Egress), 0);
    assert!(n1.state().v6.chains.contains_key(&naming::pod_chain(
        &ObjectKey::new("a", "api"),
        Direction::Ingress
    )));
}

#[test]
fn equal_selectors_share_one_set() {
    let mut index = cluster();
    index.upsert_policy(ingress_policy(
        "a",
        "p1",
        &[("app", "db")],
        vec![pods_in("a", &[("app", "web")])],
    ));
    index.upsert_policy(ingress_policy(
        "a",
        "p2",
        &[("app", "api")],
        vec![pods_in("a", &[("app", "web")])],
    ));
    let state = compile(&index, "n1", Marks::default());
    assert_eq!(state.v4.ipsets.len(), 1);
    assert_eq!(
        state.v6.ipsets.len(),
        1,
        "api is dual-stack, so its policy chain exists in IPv6 too"
    );
}

#[test]
fn ip_blocks_only_exist_in_their_family() {
    let mut index = cluster();
    let block = |cidr: &str| {
        Peer::Block(IpBlock {
            cidr: cidr.parse().unwrap(),
            except: vec![],
        })
    };
    index.upsert_policy(ingress_policy(
        "a",
        "p",
        &[("app", "api")],
        vec![block("192.168.0.0/16")],
    ));
    let state = compile(&index, "n1", Marks::default());
    assert_eq!(state.v4.ipsets.len(), 1);
    assert!(state.v6.ipsets.is_empty());
    let id = PolicyId::kubernetes(&ObjectKey::new("a", "p"));
    let policy_chain = &state.v6.chains
        [&naming::policy_chain(&id, Direction::Ingress, crate::model::DenialHandling::Deny)];
    assert!(
        policy_chain.rules.is_empty(),
        "an IPv4 block allows nothing over IPv6"
    );
}

#[test]
fn named_ports_resolve_on_the_selected_pod_for_ingress() {
    let mut index = cluster();
    index.upsert_policy(
        KubernetesPolicy {
            key: ObjectKey::new("a", "p"),
            pod_selector: select(&[("app", "api")]),
            ingress: Some(vec![PolicyRule {
                peers: None,
                ports: vec![PortRule {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Named("http".into()),
                }],
            }]),
            egress: None,
        }
        .to_policy(),
    );
    let state = compile(&index, "n1", Marks::default());
    assert_eq!(
        members(&state, Family::V4),
        BTreeSet::from(["10.0.0.3,tcp:8080".to_string()])
    );
    assert_eq!(
        members(&state, Family::V6),
        BTreeSet::from(["fd00::3,tcp:8080".to_string()])
    );
}

#[test]
fn a_label_change_moves_only_set_members() {
    let mut index = cluster();
    index.upsert_policy(ingress_policy(
        "a",
        "db",
        &[("app", "db")],
        vec![pods_in("a", &[("role", "client")])],
    ));
    let mut compiler = NodeCompiler::new(&index, "n1", Marks::default());
    let chains_before = compiler.state().v4.chains.clone();
    let change = index
        .upsert_pod(pod(
            "a",
            "web",
            "n2",
            &["10.0.0.2", "fd00::2"],
            &[("app", "web"), ("role", "client")],
        ))
        .unwrap();
    compiler.apply(&index, &[change]);
    assert_eq!(compiler.state().v4.chains, chains_before);
    assert_eq!(
        members(compiler.state(), Family::V4),
        BTreeSet::from(["10.0.0.2".to_string()])
    );
    assert_eq!(compiler.state(), &compile(&index, "n1", Marks::default()));
}

#[test]
fn marks_must_be_distinct_single_bits_clear_of_kube_proxy() {
    assert!(Marks::new(0x10_0000, 0x20_0000).is_ok());
    assert_eq!(
        Marks::new(0x3, 0x20_0000),
        Err(MarksError::NotASingleBit(0x3))
    );
    assert_eq!(
        Marks::new(0x4000, 0x20_0000),
        Err(MarksError::KubeProxy(0x4000))
    );
    assert_eq!(Marks::new(0x10, 0x10), Err(MarksError::Same));
}

#[test]
fn only_what_a_change_touches_is_dirty() {
    let mut index = cluster();
    index.upsert_policy(ingress_policy(
        "a",
        "db",
        &[("app", "db")],
        vec![pods_in("a", &[("role", "client")])],
    ));
    let mut compiler = NodeCompiler::new(&index, "n1", Marks::default());
    assert!(
        !compiler.take_dirty().is_empty(),
        "a cold compile touches everything it builds"
    );
    let change = index
        .upsert_pod(pod(
            "a",
            "web",
            "n2",
            &["10.0.0.2", "fd00::2"],
            &[("app", "web"), ("role", "client")],
        ))
        .unwrap();
    compiler.apply(&index, &[change]);
    let selection = Selection {
        namespaces: NamespaceScope::Named("a".into()),
        pods: select(&[("role", "client")]),
    };
    let policy = index
        .policy(&PolicyId::kubernetes(&ObjectKey::new("a", "db")))
        .unwrap();
    let selector = policy.ingress.as_ref().unwrap()[0]
        .source
        .selector
        .clone()
        .unwrap();
    let _ = selection;
    let set = SetKey::Selector(selector).name(Family::V4);
    assert_eq!(compiler.take_dirty(), BTreeSet::from([(Family::V4, set)]));
    assert!(compiler.take_dirty().is_empty());
}

#[test]
fn set_entries_sort_by_their_order_key_as_by_their_order() {
    let mut entries = Vec::new();
    for ip in [
        "10.0.0.2",
        "10.0.0.10",
        "9.255.255.255",
        "fd00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        entries.push(SetEntry::Ip(ip));
        for prefix in [0u8, 8, 32] {
            let prefix = if ip.is_ipv6() { prefix * 4 } else { prefix };
            for nomatch in [false, true] {
                entries.push(SetEntry::Net {
                    net: ipnetwork::IpNetwork::new(ip, prefix).unwrap(),
                    nomatch,
                });
            }
        }
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            for port in [1u16, 80, 65535] {
                entries.push(SetEntry::IpPort { ip, protocol, port });
            }
        }
    }
    for a in &entries {
        for b in &entries {
            assert_eq!(a.cmp(b), a.order_key().cmp(&b.order_key()), "{a} vs {b}");
        }
    }
}

/// Whether a new TCP connection from `src` to `dst` port 80 gets through node n1's rules.
fn accepts(state: &DesiredState, src: &str, dst: &str) -> bool {
    let packet = crate::explain::interpreter::Packet::ported(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        Protocol::Tcp,
        80,
    );
    crate::explain::interpreter::forward_accepts(
        state.family(Family::V4),
        Family::V4,
        &packet,
        &mut Vec::new(),
    )
    .unwrap()
}

#[test]
fn a_set_over_capacity_is_kept_out_and_its_policies_fail_closed_until_it_fits() {
    let mut index = cluster();
    // Kubernetes: db admits clients. Calico: api denies clients and allows everyone else.
    index.upsert_policy(ingress_policy(
        "a",
        "db",
        &[("app", "db")],
        vec![pods_in("a", &[("role", "client")])],
    ));
    let clients = Selector::parse("role == 'client'").unwrap();
    let mut deny_clients = crate::model::Rule::new(crate::model::Action::Deny, 0);
    deny_clients.source.selector = Some(clients.clone());
    index.upsert_policy(Policy {
        id: PolicyId::global("guard"),
        tier: "default".into(),
        order: None,
        selector: Selector::parse("app == 'api'").unwrap(),
        ingress: Some(vec![deny_clients, crate::model::Rule::allow_all(1)]),
        egress: None,
    });
    let client = |i: u8| {
        pod(
            "a",
            &format!("c{i}"),
            "n2",
            &[&format!("10.0.1.{i}")],
            &[("role", "client")],
        )
    };
    index.upsert_pod(client(1));
    index.upsert_pod(client(2));
    index.upsert_pod(pod("a", "other", "n2", &["10.0.2.1"], &[("role", "other")]));
    let config = CompilerConfig {
        set_capacity: 2,
        ..CompilerConfig::default()
    };
    let mut compiler = NodeCompiler::new(&index, "n1", config.clone());
    let clients_set = SetKey::Selector(clients).name(Family::V4);
    let (db, api) = ("10.0.0.1", "10.0.0.3");
    assert!(compiler.state().v4.ipsets.contains_key(&clients_set));
    assert!(accepts(compiler.state(), "10.0.1.1", db));
    assert!(!accepts(compiler.state(), "10.0.1.1", api));
    assert!(accepts(compiler.state(), "10.0.2.1", api));
    assert!(compiler.overflowing_sets().is_empty());

    // A third client: the clients set would hold 3 elements, over the capacity of 2.
    let change = index.upsert_pod(client(3)).unwrap();
    compiler.apply(&index, &[change]);
    let state = compiler.state();
    assert!(
        !state.v4.ipsets.contains_key(&clients_set),
        "a set over capacity is not written"
    );
    assert!(
        state
            .v4
            .chains
            .values()
            .flat_map(|chain| &chain.rules)
            .all(|rule| rule.referenced_sets().all(|set| set != clients_set)),
        "no rule reads it"
    );
    // db's policy allows nothing now; the guard, which can deny, denies everything.
    assert!(!accepts(state, "10.0.1.1", db));
    assert!(!accepts(state, "10.0.2.1", api));
    // Two sets hold the clients: the guard's selector, and db's (scoped to namespace a).
    let overflows = compiler.overflowing_sets();
    assert_eq!(overflows.len(), 2, "{overflows:?}");
    let overflow = overflows
        .iter()
        .find(|o| o.set == clients_set)
        .expect("the guard's set");
    assert_eq!(overflow.family, Family::V4);
    assert_eq!((overflow.elements, overflow.capacity), (3, 2));
    assert!(
        overflow.description.contains("role == \"client\""),
        "{}",
        overflow.description
    );
    assert_eq!(overflow.policies, [PolicyId::global("guard")]);
    let other = overflows
        .iter()
        .find(|o| o.set != clients_set)
        .expect("db's set");
    assert_eq!(
        other.policies,
        [PolicyId::kubernetes(&ObjectKey::new("a", "db"))]
    );
    // A cold compile of the same cluster gives the same state.
    assert_eq!(
        compiler.state(),
        NodeCompiler::new(&index, "n1", config.clone()).state()
    );

    // The third client goes: the set fits again and both policies are back as written.
    let change = index.remove_pod(&ObjectKey::new("a", "c3")).unwrap();
    compiler.apply(&index, &[change]);
    let state = compiler.state();
    assert_eq!(state.v4.ipsets[&clients_set].members.len(), 2);
    assert!(accepts(state, "10.0.1.1", db));
    assert!(!accepts(state, "10.0.1.1", api));
    assert!(accepts(state, "10.0.2.1", api));
    assert!(compiler.overflowing_sets().is_empty());
    assert_eq!(
        compiler.state(),
        NodeCompiler::new(&index, "n1", config).state()
    );
}

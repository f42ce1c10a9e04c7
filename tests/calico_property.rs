//! The compiler against Calico's policy model.
//!
//! * `calico_rules_follow_the_spec`: random clusters mixing Kubernetes NetworkPolicies with
//!   Calico tiers, NetworkPolicies, GlobalNetworkPolicies (Allow, Deny, Pass and Log rules over
//!   Calico selectors, nets, ports, named ports, protocols, ICMP, service accounts and services),
//!   NetworkSets and GlobalNetworkSets are compiled for each node, and every packet between pods
//!   and outside addresses (TCP, UDP and SCTP to many ports and from two source ports, ICMP of
//!   several types, and a protocol without ports) is run through the iptables/ipset interpreter;
//!   the verdict must equal that of a reference evaluator written from Calico's specification
//!   (`support::calico_reference`).
//! * `calico_incremental_updates_equal_a_cold_compile`: a `NodeCompiler` per node fed random
//!   changes of Calico objects, service accounts, pods, namespaces and Kubernetes policies, alone
//!   or batched, must hold exactly the state a from-scratch compile gives.
//!
//! * `explain_agrees_with_the_interpreter_and_the_reference`: `palisade explain` on every pod
//!   pair gives the reference verdict and names the rule the interpreter stopped at.
//! * `logging_never_changes_a_verdict_and_audit_lets_through_exactly_what_it_flags`.
//!
//! `PROPTEST_CASES` overrides the number of cases.

#[allow(dead_code)] // Shared with the Kubernetes property tests; each uses a part.
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use palisade::compiler::{compile, CompilerConfig, DesiredState, Marks, NodeCompiler};
use palisade::explain::Endpoint as ExplainEndpoint;
use palisade::index::{Change, ClusterIndex};
use palisade::model::calico::CalicoResource;
use palisade::model::{Enforcement, Family, NodeDenials, ObjectKey, Protocol};
use palisade::render;
use palisade::selector::Labels;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use support::calico_gen::{self, ICMP_TYPES, OTHER_PROTOCOL, OTHER_SOURCE_PORT};
use support::calico_reference;
use support::cluster::{calico_key, convert_calico, Cluster, NODES};
use support::gen;
use support::iptables::{self, Packet, Transport, EPHEMERAL_PORT};
use support::mutate;
use support::reference::Endpoint;

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn compile_nodes(index: &ClusterIndex) -> BTreeMap<&'static str, DesiredState> {
    NODES
        .iter()
        .map(|node| (*node, compile(index, node, Marks::default())))
        .collect()
}

fn path_nodes<'a>(src: &Endpoint<'a>, dst: &Endpoint<'a>) -> Vec<&'a str> {
    let mut nodes = Vec::new();
    for node in [src.node(), dst.node()].into_iter().flatten() {
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    nodes
}

fn transports() -> Vec<Transport> {
    let mut out = Vec::new();
    for protocol in Protocol::ALL {
        for dport in calico_gen::probe_ports() {
            out.push(Transport::Ported {
                protocol,
                sport: EPHEMERAL_PORT,
                dport,
            });
        }
    }
    for dport in [80, 53, 443] {
        out.push(Transport::Ported {
            protocol: Protocol::Tcp,
            sport: OTHER_SOURCE_PORT,
            dport,
        });
    }
    for (icmp_type, code) in ICMP_TYPES {
        out.push(Transport::Icmp { icmp_type, code });
    }
    out.push(Transport::Other(OTHER_PROTOCOL));
    out
}

fn externals(cluster: &Cluster) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = gen::EXTERNALS.iter().map(|s| s.parse().unwrap()).collect();
    // An address in a network set that is no pod's.
    for object in cluster.calico.values() {
        for net in object["spec"]["nets"].as_array().into_iter().flatten() {
            if let Some(net) = net
                .as_str()
                .and_then(|n| n.parse::<ipnetwork::IpNetwork>().ok())
            {
                if net.prefix() > 0 {
                    let ip = net.network();
                    if !cluster.used_addresses().contains(&ip) && !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out
}

fn verdict_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

fn check(cluster: &Cluster) -> Result<usize, String> {
    let index = cluster.index();
    let states = compile_nodes(&index);
    for (node, state) in &states {
        for family in Family::ALL {
            iptables::validate(state.family(family), family).map_err(|e| {
                format!(
                    "\n{node} {family} state would not load:\n{e}---- cluster ----\n{}\n---- state ----\n{}",
                    cluster.describe(),
                    render::full_text(state.family(family), family)
                )
            })?;
        }
    }
    let mut endpoints: Vec<Endpoint<'_>> = cluster.pods.values().map(Endpoint::Pod).collect();
    let outside = externals(cluster);
    endpoints.extend(outside.iter().copied().map(Endpoint::External));
    let transports = transports();
    let mut packets = 0;
    for family in Family::ALL {
        for src in &endpoints {
            for dst in &endpoints {
                let outside_both =
                    matches!((src, dst), (Endpoint::External(_), Endpoint::External(_)));
                let same = match (src, dst) {
                    (Endpoint::Pod(a), Endpoint::Pod(b)) => a.key == b.key,
                    _ => false,
                };
                if outside_both || same {
                    continue;
                }
                let (Some(s), Some(d)) = (src.ip(family), dst.ip(family)) else {
                    continue;
                };
                let nodes = path_nodes(src, dst);
                for transport in &transports {
                    let packet = Packet {
                        src: s,
                        dst: d,
                        transport: *transport,
                    };
                    packets += 1;
                    let expected = calico_reference::allowed(cluster, src, dst, &packet);
                    let mut trace = String::new();
                    let mut got: Result<bool, String> = Ok(true);
                    for node in &nodes {
                        let mut fired = Vec::new();
                        let accepted = iptables::forward_accepts(
                            states[node].family(family),
                            family,
                            &packet,
                            &mut fired,
                        );
                        let _ = writeln!(trace, "  {node}: {accepted:?}");
                        for line in fired {
                            let _ = writeln!(trace, "    {line}");
                        }
                        got = match (got, accepted) {
                            (Ok(a), Ok(b)) => Ok(a && b),
                            (Err(e), _) | (_, Err(e)) => Err(e),
                        };
                    }
                    if got.as_ref() != Ok(&expected) {
                        let mut report = format!(
                            "\n==== compiled verdict differs from Calico's model ====\n{} -> {}: {packet}\nreference: {}\ncompiled:  {got:?}\nrules that fired:\n{trace}---- cluster ----\n{}",
                            src.name(),
                            dst.name(),
                            verdict_word(expected),
                            cluster.describe()
                        );
                        for node in &nodes {
                            let _ = writeln!(
                                report,
                                "---- {node} {family} ----\n{}",
                                render::full_text(states[node].family(family), family)
                            );
                        }
                        return Err(report);
                    }
                }
            }
        }
    }
    Ok(packets)
}

#[test]
fn calico_rules_follow_the_spec() {
    let started = Instant::now();
    let config = config(256);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let packets = std::cell::Cell::new(0usize);
    let objects = std::cell::Cell::new(0usize);
    let result = runner.run(&calico_gen::cluster(), |cluster| {
        let n = check(&cluster).map_err(TestCaseError::fail)?;
        packets.set(packets.get() + n);
        objects.set(objects.get() + cluster.calico.len() + cluster.policies.len());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "calico property: {cases} clusters, {} policies and Calico objects, {} packets checked in {:.1?}",
        objects.get(),
        packets.get(),
        started.elapsed()
    );
}

// ---- explain ---------------------------------------------------------------------------------

/// `palisade explain` on every pod pair of a random cluster, for ported protocols: its verdict
/// must be the interpreter's and the reference evaluator's, each node's verdict the
/// interpreter's on that node, and a denying walk must name the rule the interpreter stopped at.
fn check_explain(cluster: &Cluster) -> Result<usize, String> {
    let index = cluster.index();
    let config = CompilerConfig::default();
    let states = compile_nodes(&index);
    let pods: Vec<Endpoint<'_>> = cluster.pods.values().map(Endpoint::Pod).collect();
    let mut checked = 0;
    for src in &pods {
        for dst in &pods {
            let (Endpoint::Pod(a), Endpoint::Pod(b)) = (src, dst) else {
                continue;
            };
            if a.key == b.key {
                continue;
            }
            // The addresses explain uses: the source's first that has a peer of its family.
            let Some((s, d)) = a.ips.iter().find_map(|s| {
                b.ips
                    .iter()
                    .find(|d| Family::of(d) == Family::of(s))
                    .map(|d| (*s, *d))
            }) else {
                continue;
            };
            let family = Family::of(&s);
            for protocol in Protocol::ALL {
                for port in [80, 443] {
                    let packet = Packet::ported(s, d, protocol, port);
                    let explanation = palisade::explain::explain(
                        &index,
                        &ExplainEndpoint::Pod(a.key.clone()),
                        &ExplainEndpoint::Pod(b.key.clone()),
                        protocol,
                        port,
                        &config,
                    )
                    .map_err(|e| format!("explain {} -> {}: {e}", a.key, b.key))?;
                    checked += 1;
                    let expected = calico_reference::allowed(cluster, src, dst, &packet);
                    let what = || {
                        format!(
                            "\n{} -> {}: {packet}: reference {}, explain {}\n{}\n---- cluster ----\n{}",
                            a.key,
                            b.key,
                            verdict_word(expected),
                            verdict_word(explanation.allowed),
                            explanation.text(),
                            cluster.describe()
                        )
                    };
                    if explanation.allowed != expected {
                        return Err(what());
                    }
                    for walk in &explanation.walks {
                        let state = states[walk.node.as_str()].family(family);
                        let mut fired = Vec::new();
                        let accepted =
                            iptables::forward_accepts(state, family, &packet, &mut fired)?;
                        if accepted != walk.allowed {
                            return Err(format!(
                                "on {}: interpreter {accepted}{}",
                                walk.node,
                                what()
                            ));
                        }
                        if !accepted {
                            let stopped = fired.iter().rev().find(|f| f.decisive).and_then(|f| {
                                let rule = state.chains.get(&f.chain)?.rules.get(f.index)?;
                                Some(format!("-A {} {}", f.chain, render::rule_spec(rule)))
                            });
                            if walk.kernel_rule != stopped {
                                return Err(format!(
                                    "on {}: explain names {:?}, the interpreter stopped at {stopped:?}{}",
                                    walk.node,
                                    walk.kernel_rule,
                                    what()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(checked)
}

#[test]
fn explain_agrees_with_the_interpreter_and_the_reference() {
    let started = Instant::now();
    let config = config(96);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let checked = std::cell::Cell::new(0usize);
    let result = runner.run(&calico_gen::cluster(), |cluster| {
        let n = check_explain(&cluster).map_err(TestCaseError::fail)?;
        checked.set(checked.get() + n);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "explain property: {cases} clusters, {} connections explained in {:.1?}",
        checked.get(),
        started.elapsed()
    );
}

// ---- denial handling -------------------------------------------------------------------------

/// Whether a walk through one node's rules sent the packet to the denied-flow log as audited.
fn audited(fired: &[iptables::Fired]) -> bool {
    fired
        .iter()
        .any(|f| f.rule.contains("-j NFLOG --nflog-prefix \"pal A "))
}

/// One cluster compiled three times, every namespace enforcing, logging or auditing (by the
/// node's default): logging must not change a verdict; auditing must let everything through,
/// and say so exactly for what enforcing denies.
fn check_denial_handling(cluster: &Cluster) -> Result<usize, String> {
    let index = cluster.index();
    let compiled = |enforcement, log_denied| -> BTreeMap<&'static str, DesiredState> {
        let config = CompilerConfig {
            denials: NodeDenials {
                enforcement,
                log_denied,
            },
            ..CompilerConfig::default()
        };
        NODES
            .iter()
            .map(|node| (*node, compile(&index, node, config.clone())))
            .collect()
    };
    let enforcing = compiled(Enforcement::Enforce, false);
    let logging = compiled(Enforcement::Enforce, true);
    let auditing = compiled(Enforcement::Audit, false);
    for states in [&logging, &auditing] {
        for (node, state) in states {
            for family in Family::ALL {
                iptables::validate(state.family(family), family)
                    .map_err(|e| format!("\n{node} {family} would not load:\n{e}"))?;
            }
        }
    }
    let pods: Vec<Endpoint<'_>> = cluster.pods.values().map(Endpoint::Pod).collect();
    let mut packets = 0;
    for family in Family::ALL {
        for src in &pods {
            for dst in &pods {
                let (Some(s), Some(d)) = (src.ip(family), dst.ip(family)) else {
                    continue;
                };
                if s == d {
                    continue;
                }
                for transport in transports() {
                    let packet = Packet {
                        src: s,
                        dst: d,
                        transport,
                    };
                    packets += 1;
                    let walk = |states: &BTreeMap<&'static str, DesiredState>| {
                        let mut allowed = true;
                        let mut audit = false;
                        for node in path_nodes(src, dst) {
                            let mut fired = Vec::new();
                            let accepted = iptables::forward_accepts(
                                states[node].family(family),
                                family,
                                &packet,
                                &mut fired,
                            )?;
                            allowed &= accepted;
                            audit |= audited(&fired);
                        }
                        Ok::<_, String>((allowed, audit))
                    };
                    let (enforced, _) = walk(&enforcing)?;
                    let (logged, _) = walk(&logging)?;
                    let (audit_allowed, audit_flagged) = walk(&auditing)?;
                    let what = format!(
                        "{} -> {}: {packet}: enforced {}, logged {}, audit {} (flagged {audit_flagged})\n{}",
                        src.name(),
                        dst.name(),
                        verdict_word(enforced),
                        verdict_word(logged),
                        verdict_word(audit_allowed),
                        cluster.describe()
                    );
                    if logged != enforced || !audit_allowed || audit_flagged == enforced {
                        return Err(what);
                    }
                }
            }
        }
    }
    Ok(packets)
}

#[test]
fn logging_never_changes_a_verdict_and_audit_lets_through_exactly_what_it_flags() {
    let started = Instant::now();
    let config = config(64);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let packets = std::cell::Cell::new(0usize);
    let result = runner.run(&calico_gen::cluster(), |cluster| {
        let n = check_denial_handling(&cluster).map_err(TestCaseError::fail)?;
        packets.set(packets.get() + n);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "denial handling property: {cases} clusters, {} packets in {:.1?}",
        packets.get(),
        started.elapsed()
    );
}

// ---- incremental == cold -------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    /// A Calico policy, named from a small pool so that it often replaces one.
    Policy(calico_gen::CalicoPolicyGen, Index),
    NetworkSet(calico_gen::NetworkSetGen, Index),
    Tier(Index, Option<f64>, bool),
    Remove(Index),
    ServiceAccount(Index, Option<Labels>),
    Kubernetes(mutate::Mutation),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (calico_gen::calico_policy(), any::<Index>()).prop_map(|(p, i)| Mutation::Policy(p, i)),
        2 => (calico_gen::network_set(), any::<Index>()).prop_map(|(s, i)| Mutation::NetworkSet(s, i)),
        1 => (any::<Index>(), prop::option::of(prop::sample::select(vec![100.0, 3000.0])), any::<bool>())
            .prop_map(|(i, o, p)| Mutation::Tier(i, o, p)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), prop::option::of(gen::labels(&[("role", &["ci", "svc"])], 1, 1)))
            .prop_map(|(i, l)| Mutation::ServiceAccount(i, l)),
        4 => mutate::mutation().prop_map(Mutation::Kubernetes),
    ]
}

/// Applies a Calico object to both views.
fn upsert_calico(cluster: &mut Cluster, index: &mut ClusterIndex, object: Value) -> Vec<Change> {
    let key = calico_key(&object);
    let before = cluster.calico.insert(key, object.clone());
    let mut changes = Vec::new();
    // A renamed identity (a kind change) removes the old object first.
    if let Some(before) = before {
        changes.extend(remove_from_index(index, &before));
    }
    match convert_calico(&object) {
        CalicoResource::Policy(p) => changes.extend(index.upsert_policy(p)),
        CalicoResource::NetworkSet(s) => changes.extend(index.upsert_network_set(s)),
        CalicoResource::Tier(t) => changes.extend(index.upsert_tier(t)),
        CalicoResource::Ignored(_) => {}
    }
    changes
}

fn remove_from_index(index: &mut ClusterIndex, object: &Value) -> Vec<Change> {
    match convert_calico(object) {
        CalicoResource::Policy(p) => index.remove_policy(&p.id).into_iter().collect(),
        CalicoResource::NetworkSet(s) => index.remove_network_set(&s.key).into_iter().collect(),
        CalicoResource::Tier(t) => index.remove_tier(&t.name).into_iter().collect(),
        CalicoResource::Ignored(_) => Vec::new(),
    }
}

fn namespaces_of(cluster: &Cluster) -> usize {
    cluster
        .pods
        .keys()
        .map(|k| k.namespace.to_string())
        .chain(cluster.namespaces.keys().cloned())
        .filter_map(|ns| gen::NAMESPACES.iter().position(|n| *n == ns))
        .max()
        .map_or(2, |i| i + 1)
        .max(2)
}

fn execute(
    cluster: &mut Cluster,
    index: &mut ClusterIndex,
    m: &Mutation,
    step: usize,
) -> (String, Vec<Change>) {
    let namespaces = namespaces_of(cluster);
    match m {
        Mutation::Policy(p, i) => {
            let object = p.to_json(&format!("cp-{}", i.index(6)), namespaces);
            (
                format!("apply {object}"),
                upsert_calico(cluster, index, object),
            )
        }
        Mutation::NetworkSet(s, i) => {
            let object = s.to_json(&format!("set-{}", i.index(4)), namespaces);
            (
                format!("apply {object}"),
                upsert_calico(cluster, index, object),
            )
        }
        Mutation::Tier(i, order, pass) => {
            let name = ["security", "platform"][i.index(2)];
            let object = calico_gen::tier_json(name, *order, *pass);
            (
                format!("apply {object}"),
                upsert_calico(cluster, index, object),
            )
        }
        Mutation::Remove(i) => {
            let keys: Vec<String> = cluster.calico.keys().cloned().collect();
            if keys.is_empty() {
                return ("(nothing to remove)".into(), Vec::new());
            }
            let key = keys[i.index(keys.len())].clone();
            let object = cluster.calico.remove(&key).unwrap_or(Value::Null);
            (format!("delete {key}"), remove_from_index(index, &object))
        }
        Mutation::ServiceAccount(i, labels) => {
            let key = ObjectKey::new(gen::NAMESPACES[i.index(namespaces)], "builder");
            let change = match labels {
                Some(labels) => {
                    cluster.service_accounts.insert(key.clone(), labels.clone());
                    index.upsert_service_account(palisade::model::ServiceAccount {
                        key: key.clone(),
                        labels: labels.clone(),
                    })
                }
                None => {
                    cluster.service_accounts.remove(&key);
                    index.remove_service_account(&key)
                }
            };
            (
                format!("service account {key}: {labels:?}"),
                change.into_iter().collect(),
            )
        }
        Mutation::Kubernetes(k) => {
            let mut text = Vec::new();
            let mut changes = Vec::new();
            for (t, op) in mutate::plan(cluster, k, step) {
                text.push(t);
                changes.extend(mutate::execute(cluster, index, op));
            }
            (text.join("; "), changes)
        }
    }
}

fn check_incremental(initial: &Cluster, steps: &[(Mutation, bool)]) -> Result<(), String> {
    let mut cluster = initial.clone();
    let mut index = cluster.index();
    let mut compilers: Vec<NodeCompiler> = NODES
        .iter()
        .map(|node| NodeCompiler::new(&index, node, Marks::default()))
        .collect();
    let mut pending: Vec<Change> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    for (i, (m, _)) in steps.iter().enumerate() {
        let (text, changes) = execute(&mut cluster, &mut index, m, i);
        log.push(text);
        pending.extend(changes);
        let next_joins = steps.get(i + 1).is_some_and(|(_, join)| *join);
        if next_joins || pending.is_empty() {
            continue;
        }
        for compiler in &mut compilers {
            compiler.apply(&index, &pending);
        }
        pending.clear();
        log.push("-- apply --".into());
        for compiler in &compilers {
            let cold = compile(&index, compiler.node(), Marks::default());
            if compiler.state() != &cold {
                let mut diff = String::new();
                for family in Family::ALL {
                    let a = render::full_text(compiler.state().family(family), family);
                    let b = render::full_text(cold.family(family), family);
                    if a != b {
                        let _ = writeln!(
                            diff,
                            "---- {family} incremental ----\n{a}---- {family} cold ----\n{b}"
                        );
                    }
                }
                return Err(format!(
                    "\n==== incremental state of {} differs from a cold compile ====\n---- updates ----\n  {}\n---- initial ----\n{}---- now ----\n{}{diff}",
                    compiler.node(),
                    log.join("\n  "),
                    initial.describe(),
                    cluster.describe()
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn calico_incremental_updates_equal_a_cold_compile() {
    let started = Instant::now();
    let config = config(256);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let strategy = (
        calico_gen::cluster(),
        prop::collection::vec((mutation(), prop::bool::weighted(0.3)), 1..=12),
    );
    let result = runner.run(&strategy, |(cluster, steps)| {
        check_incremental(&cluster, &steps).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "calico incremental property: {cases} histories in {:.1?}",
        started.elapsed()
    );
}

/// Builds a cluster from pods (key, node, ips, labels) and Calico objects.
/// A pod: namespace/name, node, addresses, labels.
type PodSpec<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

fn cluster_of(pods: &[PodSpec<'_>], objects: &[Value]) -> Cluster {
    let mut cluster = Cluster::default();
    for (key, node, ips, labels) in pods {
        cluster.add_pod(support::build::pod(key, node, ips, labels));
    }
    for object in objects {
        cluster.calico.insert(calico_key(object), object.clone());
    }
    cluster
}

#[test]
fn negative_namespace_selectors_also_match_global_network_sets() {
    let cluster = cluster_of(
        &[("ns-a/p0", "node-1", &["10.0.0.1"], &[("app", "web")])],
        &[
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                "metadata": {"name": "set-0", "labels": {"kind": "ext"}}, "spec": {"nets": ["10.0.0.0/16"]}}),
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": "cp-0", "namespace": "ns-a"},
                "spec": {"egress": [{"action": "Allow", "protocol": "TCP",
                    "destination": {"namespaceSelector": "env != 'prod'", "ports": [80]}}]}}),
        ],
    );
    let p0 = cluster.pod("ns-a/p0");
    let outside: IpAddr = "10.0.0.200".parse().unwrap();
    let packet = Packet::ported(p0.ips[0], outside, Protocol::Tcp, 80);
    assert!(calico_reference::allowed(
        &cluster,
        &Endpoint::Pod(p0),
        &Endpoint::External(outside),
        &packet
    ));
    check(&cluster).unwrap();
}

/// A packet that passed one tier must meet every policy of the next, including one that can
/// pass too: the pass mark is cleared between tiers.
#[test]
fn a_pass_in_one_tier_is_forgotten_in_the_next() {
    let gnp = |name: &str, tier: &str, order: f64, action: &str| {
        serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": tier, "order": order, "types": ["Ingress"],
                "ingress": [{"action": action, "source": {"selector": "app == 'web'"}}]}})
    };
    let cluster = cluster_of(
        &[
            ("ns-a/web", "node-1", &["10.0.0.1"], &[("app", "web")]),
            ("ns-a/db", "node-2", &["10.0.0.2"], &[("app", "db")]),
        ],
        &[
            calico_gen::tier_json("security", Some(100.0), false),
            calico_gen::tier_json("platform", Some(200.0), false),
            gnp("first", "security", 1.0, "Pass"),
            // Passes only the other app: web's packet must reach the Deny after it.
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "second"},
                "spec": {"tier": "platform", "order": 1, "types": ["Ingress"],
                    "ingress": [{"action": "Pass", "source": {"selector": "app == 'other'"}}]}}),
            gnp("third", "platform", 2.0, "Deny"),
        ],
    );
    let (web, db) = (cluster.pod("ns-a/web"), cluster.pod("ns-a/db"));
    let packet = Packet::ported(web.ips[0], db.ips[0], Protocol::Tcp, 80);
    assert!(!calico_reference::allowed(
        &cluster,
        &Endpoint::Pod(web),
        &Endpoint::Pod(db),
        &packet
    ));
    check(&cluster).unwrap();
}

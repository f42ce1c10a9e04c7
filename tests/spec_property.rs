//! The compiler against the Kubernetes NetworkPolicy v1 specification.
//!
//! * `compiled_rules_follow_the_spec`: random small clusters are compiled for each node and every
//!   pod-to-pod (and pod-to/from-outside) packet is run through an iptables/ipset interpreter of
//!   the compiled state; the verdict must equal that of a reference evaluator written from the
//!   Kubernetes documentation (`support::reference`).
//! * `incremental_updates_equal_a_cold_compile` (1-6 updates) and
//!   `long_update_histories_equal_a_cold_compile` (10-30): a `NodeCompiler` per node fed random
//!   index changes, alone or batched, must hold exactly the state a from-scratch `compile` gives.
//! * Deterministic cases pin spec corner cases through both the reference and the compiler, and
//!   regressions pin compiler bugs the properties found.
//!
//! Every compiled state is also checked to be loadable (`support::iptables::validate`): no
//! missing chains or sets, set types fit their use. `PROPTEST_CASES` overrides the number of
//! cases of every property; proptest seeds each run afresh.

#[allow(dead_code)] // Shared with the Calico property tests; each uses a part.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use palisade::compiler::desired::FamilyState;
use palisade::compiler::{compile, DesiredState, Marks, NodeCompiler};
use palisade::index::Change;
use palisade::model::kubernetes::PortMatch;
use palisade::model::{Family, Protocol};
use palisade::render;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use support::build::*;
use support::cluster::{Cluster, NODES};
use support::gen;
use support::iptables::{self, Packet};
use support::mutate::{self, Mutation};
use support::reference::{self, Endpoint};

use Family::{V4, V6};
use Protocol::{Sctp, Tcp, Udp};

// ---- shared machinery ------------------------------------------------------------------------

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        // Failures worth keeping become deterministic tests below.
        failure_persistence: None,
        ..Config::default()
    }
}

fn compile_nodes(cluster: &Cluster) -> BTreeMap<&'static str, DesiredState> {
    let index = cluster.index();
    NODES
        .iter()
        .map(|node| (*node, compile(&index, node, Marks::default())))
        .collect()
}

/// Every port number that can make a difference: range bounds and their neighbours, named port
/// numbers, and one port nothing uses.
fn probe_ports(cluster: &Cluster) -> Vec<u16> {
    let mut ports = BTreeSet::from([gen::UNUSED_PORT]);
    ports.extend(gen::HTTP_PORTS.iter().chain(gen::DNS_PORTS));
    for pod in cluster.pods.values() {
        ports.extend(pod.named_ports.iter().map(|p| p.port));
    }
    for policy in cluster.policies.values() {
        let rules = policy.ingress.iter().chain(&policy.egress).flatten();
        for port in rules.flat_map(|r| &r.ports) {
            if let PortMatch::Range { start, end } = port.port {
                ports.extend([start, end]);
                ports.extend(start.checked_sub(1).filter(|p| *p > 0));
                ports.extend(end.checked_add(1));
            }
        }
    }
    ports.into_iter().collect()
}

fn externals() -> Vec<IpAddr> {
    gen::EXTERNALS.iter().map(|s| s.parse().unwrap()).collect()
}

fn same_endpoint(a: &Endpoint<'_>, b: &Endpoint<'_>) -> bool {
    match (a, b) {
        (Endpoint::Pod(a), Endpoint::Pod(b)) => a.key == b.key,
        (Endpoint::External(a), Endpoint::External(b)) => a == b,
        _ => false,
    }
}

/// The nodes whose `FORWARD` a packet crosses: the source pod's, then the destination pod's if
/// it is another. Each filters it once.
fn path_nodes<'a>(src: &Endpoint<'a>, dst: &Endpoint<'a>) -> Vec<&'a str> {
    let mut nodes = Vec::new();
    for node in [src.node(), dst.node()].into_iter().flatten() {
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    nodes
}

/// The compiled verdict on the packet's path, with a trace of the rules that fired.
fn compiled_verdict(
    states: &BTreeMap<&'static str, DesiredState>,
    nodes: &[&str],
    family: Family,
    packet: &Packet,
    trace: &mut String,
) -> Result<bool, String> {
    let mut verdict = true;
    for node in nodes {
        let state = states
            .get(node)
            .ok_or_else(|| format!("no state for {node}"))?;
        let mut fired = Vec::new();
        let accepted = iptables::forward_accepts(state.family(family), family, packet, &mut fired)?;
        let _ = writeln!(
            trace,
            "  {node}: {}",
            if accepted { "ACCEPT" } else { "DROP" }
        );
        for line in fired {
            let _ = writeln!(trace, "    {line}");
        }
        verdict &= accepted;
    }
    Ok(verdict)
}

fn verdict_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

#[allow(clippy::too_many_arguments)]
fn mismatch_report(
    cluster: &Cluster,
    states: &BTreeMap<&'static str, DesiredState>,
    src: &Endpoint<'_>,
    dst: &Endpoint<'_>,
    family: Family,
    packet: &Packet,
    expected: bool,
    got: &Result<bool, String>,
    trace: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n==== compiled verdict differs from the spec ====");
    let _ = writeln!(out, "traffic: {} -> {}: {packet}", src.name(), dst.name());
    let _ = writeln!(out, "spec:     {}", verdict_word(expected));
    let (protocol, dport) = match packet.transport {
        iptables::Transport::Ported {
            protocol, dport, ..
        } => (protocol, dport),
        _ => (Protocol::Tcp, 0),
    };
    if let Endpoint::Pod(pod) = src {
        let e = reference::egress_allowed(cluster, pod, dst, family, protocol, dport);
        let _ = writeln!(out, "  egress of {}: {}", pod.key, verdict_word(e));
    }
    if let Endpoint::Pod(pod) = dst {
        let i = reference::ingress_allowed(cluster, pod, src, family, protocol, dport);
        let _ = writeln!(out, "  ingress of {}: {}", pod.key, verdict_word(i));
    }
    match got {
        Ok(got) => {
            let _ = writeln!(out, "compiled: {}", verdict_word(*got));
        }
        Err(e) => {
            let _ = writeln!(out, "compiled: ERROR {e}");
        }
    }
    let _ = writeln!(out, "rules that fired:\n{trace}");
    let _ = writeln!(out, "---- cluster ----\n{}", cluster.describe());
    for node in path_nodes(src, dst) {
        if let Some(state) = states.get(node) {
            let _ = writeln!(
                out,
                "---- {node} {family} ----\n{}",
                render::full_text(state.family(family), family)
            );
        }
    }
    out
}

/// What one cluster's check found besides the verdicts.
#[derive(Default)]
struct SpecStats {
    packets: usize,
    /// Loadable but unreferenced sets or chains, e.g. `node-1 ipv4: ipset ... is not referenced`.
    leftovers: Vec<String>,
}

/// Checks every packet of the cluster against the spec.
fn check_spec(cluster: &Cluster) -> Result<SpecStats, String> {
    let mut stats = SpecStats::default();
    let states = compile_nodes(cluster);
    for (node, state) in &states {
        for family in Family::ALL {
            let leftovers = iptables::validate(state.family(family), family).map_err(|e| {
                format!(
                    "\n{node} {family} state would not load:\n{e}---- cluster ----\n{}\n---- {node} {family} ----\n{}",
                    cluster.describe(),
                    render::full_text(state.family(family), family)
                )
            })?;
            stats.leftovers.extend(
                leftovers
                    .into_iter()
                    .map(|l| format!("{node} {family}: {l}")),
            );
        }
    }
    let mut endpoints: Vec<Endpoint<'_>> = cluster.pods.values().map(Endpoint::Pod).collect();
    endpoints.extend(externals().into_iter().map(Endpoint::External));
    let ports = probe_ports(cluster);
    for family in Family::ALL {
        for src in &endpoints {
            for dst in &endpoints {
                let both_outside =
                    matches!((src, dst), (Endpoint::External(_), Endpoint::External(_)));
                if both_outside || same_endpoint(src, dst) {
                    continue;
                }
                let (Some(src_ip), Some(dst_ip)) = (src.ip(family), dst.ip(family)) else {
                    continue;
                };
                let nodes = path_nodes(src, dst);
                for protocol in Protocol::ALL {
                    for &dport in &ports {
                        let packet = Packet::ported(src_ip, dst_ip, protocol, dport);
                        let expected =
                            reference::allowed(cluster, src, dst, family, protocol, dport);
                        let mut trace = String::new();
                        let got = compiled_verdict(&states, &nodes, family, &packet, &mut trace);
                        stats.packets += 1;
                        if got.as_ref() != Ok(&expected) {
                            return Err(mismatch_report(
                                cluster, &states, src, dst, family, &packet, expected, &got, &trace,
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(stats)
}

// ---- property 1: compiled rules follow the spec --------------------------------------------

#[test]
fn compiled_rules_follow_the_spec() {
    let started = Instant::now();
    let config = config(1024);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let packets = std::cell::Cell::new(0usize);
    let policies = std::cell::Cell::new(0usize);
    let wasteful = std::cell::Cell::new(0usize);
    let example = std::cell::RefCell::new(None);
    let result = runner.run(&gen::cluster(), |cluster| {
        let stats = check_spec(&cluster).map_err(TestCaseError::fail)?;
        packets.set(packets.get() + stats.packets);
        policies.set(policies.get() + cluster.policies.len());
        if !stats.leftovers.is_empty() {
            wasteful.set(wasteful.get() + 1);
            example.borrow_mut().get_or_insert_with(|| {
                format!("{}\n{}", stats.leftovers.join("\n"), cluster.describe())
            });
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "spec property: {cases} clusters, {} policies, {} packets checked in {:.1?}",
        policies.get(),
        packets.get(),
        started.elapsed()
    );
    // Unreferenced sets or chains load and do no harm to verdicts; they are reported, not failed.
    if let Some(example) = example.into_inner() {
        eprintln!(
            "note: {} of the clusters compiled to unreferenced sets or chains; first:\n{example}",
            wasteful.get()
        );
    }
}

// ---- property 2: incremental == cold ---------------------------------------------------------

fn diff_family(out: &mut String, family: Family, incremental: &FamilyState, cold: &FamilyState) {
    let names: BTreeSet<&String> = incremental
        .ipsets
        .keys()
        .chain(cold.ipsets.keys())
        .collect();
    for name in names {
        match (incremental.ipsets.get(name), cold.ipsets.get(name)) {
            (Some(a), None) => {
                let _ = writeln!(
                    out,
                    "  {family} ipset {name} ({}) is left over: a cold compile has no such set",
                    a.description
                );
            }
            (None, Some(b)) => {
                let _ = writeln!(
                    out,
                    "  {family} ipset {name} ({}) is missing; cold members: {:?}",
                    b.description,
                    b.members
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                );
            }
            (Some(a), Some(b)) if a != b => {
                let _ = writeln!(out, "  {family} ipset {name} ({}) differs:", b.description);
                for m in a.members.difference(&b.members) {
                    let _ = writeln!(out, "    + {m}   (only incremental)");
                }
                for m in b.members.difference(&a.members) {
                    let _ = writeln!(out, "    - {m}   (only cold)");
                }
                if a.kind != b.kind || a.description != b.description {
                    let _ = writeln!(out, "    kind/description: {a:?} vs {b:?}");
                }
            }
            _ => {}
        }
    }
    let names: BTreeSet<&String> = incremental
        .chains
        .keys()
        .chain(cold.chains.keys())
        .collect();
    for name in names {
        let a = incremental.chains.get(name);
        let b = cold.chains.get(name);
        if a == b {
            continue;
        }
        let _ = writeln!(out, "  {family} chain {name} differs:");
        let lines = |chain: Option<&palisade::compiler::desired::Chain>| match chain {
            None => vec!["(absent)".to_string()],
            Some(c) => c
                .rules
                .iter()
                .map(|r| format!("{}   [{}]", render::rule_body(r), r.comment))
                .collect(),
        };
        let _ = writeln!(out, "    incremental:");
        for l in lines(a) {
            let _ = writeln!(out, "      {l}");
        }
        let _ = writeln!(out, "    cold:");
        for l in lines(b) {
            let _ = writeln!(out, "      {l}");
        }
    }
}

fn diff_states(incremental: &DesiredState, cold: &DesiredState) -> String {
    let mut out = String::new();
    for family in Family::ALL {
        diff_family(
            &mut out,
            family,
            incremental.family(family),
            cold.family(family),
        );
    }
    out
}

/// Applies `steps` (a mutation, and whether it joins the previous step's batch) through the
/// index and every node's `NodeCompiler`, comparing with a cold compile after each `apply`.
/// Returns the number of `apply` calls.
fn check_incremental(initial: &Cluster, steps: &[(Mutation, bool)]) -> Result<usize, String> {
    let mut session = Session::new(initial);
    for (i, (mutation, _)) in steps.iter().enumerate() {
        let one_by_one = matches!(
            mutation,
            Mutation::NamespaceDelete {
                one_by_one: true,
                ..
            }
        );
        for (text, op) in mutate::plan(&session.cluster, mutation, i) {
            let changes = mutate::execute(&mut session.cluster, &mut session.index, op);
            if changes.is_empty() {
                session
                    .log
                    .push(format!("({text}: index reported no change)"));
            }
            for change in changes {
                session.pending.push((text.clone(), change));
            }
            if one_by_one {
                session.flush(initial)?;
            }
        }
        // A step flagged `true` joins the batch of the step before it.
        let next_joins = steps.get(i + 1).is_some_and(|(_, join)| *join);
        if !next_joins {
            session.flush(initial)?;
        }
    }
    Ok(session.applies)
}

/// One node compiler per node over an index that follows `cluster`.
struct Session {
    cluster: Cluster,
    index: palisade::index::ClusterIndex,
    compilers: Vec<NodeCompiler>,
    /// Changes not yet applied, with what made them.
    pending: Vec<(String, Change)>,
    log: Vec<String>,
    applies: usize,
}

impl Session {
    fn new(initial: &Cluster) -> Self {
        let index = initial.index();
        let compilers = NODES
            .iter()
            .map(|node| NodeCompiler::new(&index, node, Marks::default()))
            .collect();
        Self {
            cluster: initial.clone(),
            index,
            compilers,
            pending: Vec::new(),
            log: Vec::new(),
            applies: 0,
        }
    }

    /// Hands the pending changes to every compiler in one `apply`, then compares each with a
    /// cold compile.
    fn flush(&mut self, initial: &Cluster) -> Result<(), String> {
        if self.apply_pending() {
            self.compare(initial)
        } else {
            Ok(())
        }
    }

    /// Hands the pending changes to every compiler in one `apply`. Returns whether there were
    /// any.
    fn apply_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let (texts, changes): (Vec<String>, Vec<Change>) = self.pending.drain(..).unzip();
        for compiler in &mut self.compilers {
            compiler.apply(&self.index, &changes);
        }
        self.applies += 1;
        self.log.push(format!(
            "apply({} change{}):\n      {}",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" },
            texts.join("\n      ")
        ));
        true
    }

    /// Compares every compiler's state with a cold compile of the index.
    fn compare(&self, initial: &Cluster) -> Result<(), String> {
        for compiler in &self.compilers {
            let cold = compile(&self.index, compiler.node(), Marks::default());
            if compiler.state() != &cold {
                return Err(format!(
                    "\n==== incremental state of {} differs from a cold compile ====\n{}\
                     ---- initial cluster ----\n{}---- updates ----\n  {}\n---- cluster now ----\n{}",
                    compiler.node(),
                    diff_states(compiler.state(), &cold),
                    initial.describe(),
                    self.log.join("\n  "),
                    self.cluster.describe()
                ));
            }
        }
        Ok(())
    }

    /// The compilers' current states, by node.
    fn states(&self) -> BTreeMap<&'static str, DesiredState> {
        NODES
            .iter()
            .zip(&self.compilers)
            .map(|(node, compiler)| (*node, compiler.state().clone()))
            .collect()
    }
}

fn incremental_property(what: &str, default_cases: u32, steps: std::ops::RangeInclusive<usize>) {
    let started = Instant::now();
    let config = config(default_cases);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let applies = std::cell::Cell::new(0usize);
    let steps = prop::collection::vec((mutate::mutation(), prop::bool::weighted(0.3)), steps);
    let result = runner.run(&(gen::cluster(), steps), |(cluster, steps)| {
        let n = check_incremental(&cluster, &steps).map_err(TestCaseError::fail)?;
        applies.set(applies.get() + n);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{what}: {cases} clusters, {} apply calls checked in {:.1?}",
        applies.get(),
        started.elapsed()
    );
}

/// Short histories: 1 to 6 updates, some batched into one `apply`.
#[test]
fn incremental_updates_equal_a_cold_compile() {
    incremental_property("incremental property (1-6 updates)", 1024, 1..=6);
}

/// Long histories reach states short ones rarely do: namespaces emptied and filled again,
/// sets created and dropped in between.
#[test]
fn long_update_histories_equal_a_cold_compile() {
    incremental_property("incremental property (10-30 updates)", 1024, 10..=30);
}

// ---- deterministic spec corner cases -----------------------------------------------------------

fn endpoint<'a>(cluster: &'a Cluster, name: &str) -> Endpoint<'a> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Endpoint::External(ip),
        Err(_) => Endpoint::Pod(cluster.pod(name)),
    }
}

/// Asserts the verdict for `src -> dst` both from the reference evaluator (against the
/// hand-derived expectation) and from the compiled rules.
#[track_caller]
fn expect(
    cluster: &Cluster,
    src: &str,
    dst: &str,
    family: Family,
    protocol: Protocol,
    port: u16,
    want: bool,
) {
    let states = compile_nodes(cluster);
    for (node, state) in &states {
        for f in Family::ALL {
            if let Err(e) = iptables::validate(state.family(f), f) {
                panic!("{node} {f} state would not load:\n{e}");
            }
        }
    }
    expect_in(&states, cluster, src, dst, (family, protocol, port), want);
}

/// [`expect`] against given node states.
#[track_caller]
fn expect_in(
    states: &BTreeMap<&'static str, DesiredState>,
    cluster: &Cluster,
    src: &str,
    dst: &str,
    (family, protocol, port): (Family, Protocol, u16),
    want: bool,
) {
    let (s, d) = (endpoint(cluster, src), endpoint(cluster, dst));
    let packet = Packet::ported(
        s.ip(family).expect("source has an address of the family"),
        d.ip(family)
            .expect("destination has an address of the family"),
        protocol,
        port,
    );
    let spec = reference::allowed(cluster, &s, &d, family, protocol, port);
    assert_eq!(
        spec,
        want,
        "reference evaluator: {src} -> {dst} {packet} should be {}",
        verdict_word(want)
    );
    let mut trace = String::new();
    let got = compiled_verdict(states, &path_nodes(&s, &d), family, &packet, &mut trace);
    if got.as_ref() != Ok(&want) {
        panic!(
            "{}",
            mismatch_report(cluster, states, &s, &d, family, &packet, want, &got, &trace)
        );
    }
}

fn cluster_of(
    namespaces: Vec<palisade::model::Namespace>,
    pods: Vec<palisade::model::Pod>,
    policies: Vec<palisade::model::kubernetes::KubernetesPolicy>,
) -> Cluster {
    let mut cluster = Cluster::default();
    namespaces
        .into_iter()
        .for_each(|n| cluster.add_namespace(n));
    pods.into_iter().for_each(|p| cluster.add_pod(p));
    policies.into_iter().for_each(|p| cluster.add_policy(p));
    cluster
}

#[test]
fn not_in_selects_pods_without_the_key() {
    let cluster = cluster_of(
        vec![namespace("ns-a", &[])],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod(
                "ns-a/keyless",
                "node-2",
                &["10.0.0.2"],
                &[("role", "front")],
            ),
            pod("ns-a/web", "node-2", &["10.0.0.3"], &[("app", "web")]),
            pod("ns-a/api", "node-1", &["10.0.0.4"], &[("app", "api")]),
        ],
        vec![policy(
            "ns-a/db",
            match_labels(&[("app", "db")]),
            Some(vec![rule(
                Some(vec![pods_in("ns-a", expression("app", "NotIn", &["web"]))]),
                vec![],
            )]),
            None,
        )],
    );
    expect(&cluster, "ns-a/keyless", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/api", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/web", "ns-a/server", V4, Tcp, 80, false);
    // The server is itself selected by NotIn web; traffic from outside the cluster is not a pod.
    expect(&cluster, "10.0.0.200", "ns-a/server", V4, Tcp, 80, false);
}

#[test]
fn namespace_and_pod_selectors_in_one_peer_and_but_separate_peers_or() {
    let base = |ingress_peers| {
        cluster_of(
            vec![
                namespace("ns-a", &[("team", "red")]),
                namespace("ns-b", &[("team", "blue")]),
            ],
            vec![
                // ns-c has no Namespace object.
                pod("ns-c/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
                pod("ns-c/web", "node-2", &["10.0.0.2"], &[("app", "web")]),
                pod("ns-a/web", "node-2", &["10.0.0.3"], &[("app", "web")]),
                pod("ns-a/other", "node-1", &["10.0.0.4"], &[("app", "other")]),
                pod("ns-b/web", "node-2", &["10.0.0.5"], &[("app", "web")]),
            ],
            vec![policy(
                "ns-c/db",
                match_labels(&[("app", "db")]),
                Some(vec![rule(Some(ingress_peers), vec![])]),
                None,
            )],
        )
    };
    let red = match_labels(&[("team", "red")]);
    let web = match_labels(&[("app", "web")]);
    let and = base(vec![pods_where(red.clone(), web.clone())]);
    expect(&and, "ns-a/web", "ns-c/server", V4, Tcp, 80, true);
    expect(&and, "ns-a/other", "ns-c/server", V4, Tcp, 80, false);
    expect(&and, "ns-b/web", "ns-c/server", V4, Tcp, 80, false);
    expect(&and, "ns-c/web", "ns-c/server", V4, Tcp, 80, false);
    let or = base(vec![
        pods_where(red, Default::default()),
        pods_in("ns-c", web),
    ]);
    expect(&or, "ns-a/web", "ns-c/server", V4, Tcp, 80, true);
    expect(&or, "ns-a/other", "ns-c/server", V4, Tcp, 80, true);
    expect(&or, "ns-b/web", "ns-c/server", V4, Tcp, 80, false);
    expect(&or, "ns-c/web", "ns-c/server", V4, Tcp, 80, true);
}

#[test]
fn egress_only_policy_leaves_ingress_open() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/client", "node-2", &["10.0.0.2"], &[("app", "web")]),
        ],
        vec![policy(
            "ns-a/no-egress",
            match_labels(&[("app", "db")]),
            None,
            Some(vec![]),
        )],
    );
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "10.0.0.200", "ns-a/server", V4, Udp, 53, true);
    expect(&cluster, "ns-a/server", "ns-a/client", V4, Tcp, 80, false);
    expect(&cluster, "ns-a/server", "192.168.7.7", V4, Tcp, 443, false);
}

#[test]
fn both_policy_types_without_egress_rules_deny_all_egress() {
    let cluster = cluster_of(
        vec![namespace("ns-a", &[])],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/client", "node-2", &["10.0.0.2"], &[("app", "web")]),
        ],
        vec![policy(
            "ns-a/types",
            match_labels(&[("app", "db")]),
            Some(vec![rule(None, vec![])]),
            Some(vec![]),
        )],
    );
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Sctp, 9, true);
    expect(&cluster, "ns-a/server", "ns-a/client", V4, Tcp, 80, false);
    expect(&cluster, "ns-a/server", "10.0.0.200", V4, Udp, 53, false);
}

#[test]
fn ip_block_except_carves_out_addresses() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/near", "node-2", &["10.0.0.3"], &[]),
            pod("ns-a/excepted", "node-2", &["10.0.0.2"], &[]),
            pod("ns-b/far", "node-1", &["10.0.1.1"], &[]),
        ],
        vec![policy(
            "ns-a/block",
            match_labels(&[("app", "db")]),
            Some(vec![rule(
                Some(vec![block("10.0.0.0/24", &["10.0.0.2/32"])]),
                vec![],
            )]),
            None,
        )],
    );
    expect(&cluster, "ns-a/near", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/excepted", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "ns-b/far", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "10.0.0.200", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "192.168.7.7", "ns-a/server", V4, Tcp, 80, false);
}

#[test]
fn end_port_range_is_inclusive_and_per_protocol() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/client", "node-2", &["10.0.0.2"], &[]),
        ],
        vec![policy(
            "ns-a/range",
            match_labels(&[("app", "db")]),
            Some(vec![rule(None, vec![port_range(Tcp, 80, 90)])]),
            None,
        )],
    );
    for (port, want) in [(79, false), (80, true), (85, true), (90, true), (91, false)] {
        expect(&cluster, "ns-a/client", "ns-a/server", V4, Tcp, port, want);
    }
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Udp, 85, false);
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Sctp, 85, false);
}

#[test]
fn egress_named_port_resolves_on_each_destination() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod("ns-a/client", "node-1", &["10.0.0.1"], &[("app", "web")]),
            with_port(
                pod("ns-a/eighty", "node-2", &["10.0.0.2"], &[]),
                "http",
                Tcp,
                80,
            ),
            with_port(
                pod("ns-b/alt", "node-1", &["10.0.0.3"], &[]),
                "http",
                Tcp,
                8080,
            ),
            pod("ns-b/none", "node-2", &["10.0.0.4"], &[]),
        ],
        vec![policy(
            "ns-a/http-out",
            match_labels(&[("app", "web")]),
            None,
            Some(vec![rule(None, vec![named_port(Tcp, "http")])]),
        )],
    );
    expect(&cluster, "ns-a/client", "ns-a/eighty", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/client", "ns-a/eighty", V4, Tcp, 8080, false);
    expect(&cluster, "ns-a/client", "ns-b/alt", V4, Tcp, 8080, true);
    expect(&cluster, "ns-a/client", "ns-b/alt", V4, Tcp, 80, false);
    expect(&cluster, "ns-a/client", "ns-b/none", V4, Tcp, 80, false);
    expect(&cluster, "ns-a/client", "ns-a/eighty", V4, Udp, 80, false);
    // An address that is no pod has no named ports.
    expect(&cluster, "ns-a/client", "10.0.0.200", V4, Tcp, 80, false);
}

#[test]
fn ingress_named_port_is_the_selected_pods_own() {
    let cluster = cluster_of(
        vec![],
        vec![
            with_port(
                pod("ns-a/s80", "node-1", &["10.0.0.1"], &[("app", "db")]),
                "http",
                Tcp,
                80,
            ),
            with_port(
                pod("ns-a/s8080", "node-2", &["10.0.0.2"], &[("app", "db")]),
                "http",
                Tcp,
                8080,
            ),
            with_port(
                pod("ns-a/client", "node-2", &["10.0.0.3"], &[]),
                "http",
                Tcp,
                9999,
            ),
        ],
        vec![policy(
            "ns-a/http-in",
            match_labels(&[("app", "db")]),
            Some(vec![rule(None, vec![named_port(Tcp, "http")])]),
            None,
        )],
    );
    expect(&cluster, "ns-a/client", "ns-a/s80", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/client", "ns-a/s80", V4, Tcp, 8080, false);
    expect(&cluster, "ns-a/client", "ns-a/s8080", V4, Tcp, 8080, true);
    expect(&cluster, "ns-a/client", "ns-a/s8080", V4, Tcp, 80, false);
    expect(&cluster, "ns-a/s80", "ns-a/s8080", V4, Tcp, 9999, false);
}

#[test]
fn same_node_traffic_needs_source_egress_and_destination_ingress() {
    let cluster = |server_ingress, client_egress| {
        cluster_of(
            vec![],
            vec![
                pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
                pod("ns-a/client", "node-1", &["10.0.0.2"], &[("app", "web")]),
                pod("ns-a/remote", "node-2", &["10.0.0.3"], &[("app", "web")]),
            ],
            vec![
                policy(
                    "ns-a/server",
                    match_labels(&[("app", "db")]),
                    server_ingress,
                    None,
                ),
                policy(
                    "ns-a/client",
                    match_labels(&[("app", "web")]),
                    None,
                    client_egress,
                ),
            ],
        )
    };
    let allow_all = || Some(vec![rule(None, vec![])]);
    let deny_all = || Some(vec![]);
    let both = cluster(allow_all(), allow_all());
    expect(&both, "ns-a/client", "ns-a/server", V4, Tcp, 80, true);
    expect(&both, "ns-a/remote", "ns-a/server", V4, Tcp, 80, true);
    let ingress_denies = cluster(deny_all(), allow_all());
    expect(
        &ingress_denies,
        "ns-a/client",
        "ns-a/server",
        V4,
        Tcp,
        80,
        false,
    );
    expect(
        &ingress_denies,
        "ns-a/remote",
        "ns-a/server",
        V4,
        Tcp,
        80,
        false,
    );
    expect(
        &ingress_denies,
        "ns-a/client",
        "ns-a/remote",
        V4,
        Tcp,
        80,
        true,
    );
    let egress_denies = cluster(allow_all(), deny_all());
    expect(
        &egress_denies,
        "ns-a/client",
        "ns-a/server",
        V4,
        Tcp,
        80,
        false,
    );
    expect(
        &egress_denies,
        "ns-a/remote",
        "ns-a/server",
        V4,
        Tcp,
        80,
        false,
    );
    expect(
        &egress_denies,
        "ns-a/server",
        "ns-a/client",
        V4,
        Tcp,
        80,
        true,
    );
}

#[test]
fn ipv6_block_only_affects_ipv6() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod(
                "ns-a/server",
                "node-1",
                &["10.0.0.1", "fd00::1"],
                &[("app", "db")],
            ),
            pod("ns-a/client", "node-2", &["10.0.0.2", "fd00::2"], &[]),
            pod("ns-a/v4only", "node-2", &["10.0.0.3"], &[("app", "v4")]),
        ],
        vec![
            policy(
                "ns-a/v6-in",
                match_labels(&[("app", "db")]),
                Some(vec![rule(Some(vec![block("fd00::/64", &[])]), vec![])]),
                None,
            ),
            policy(
                "ns-a/v6-out",
                match_labels(&[("app", "v4")]),
                None,
                Some(vec![rule(Some(vec![block("::/0", &[])]), vec![])]),
            ),
        ],
    );
    expect(&cluster, "ns-a/client", "ns-a/server", V6, Tcp, 80, true);
    // The IPv6 block allows nothing over IPv4, and the server stays isolated there.
    expect(&cluster, "ns-a/client", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "10.0.0.200", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "fd00::c8", "ns-a/server", V6, Tcp, 80, true);
    expect(&cluster, "2001:db8::7", "ns-a/server", V6, Tcp, 80, false);
    // An IPv4-only pod isolated for egress by an IPv6-only block can send nothing.
    expect(&cluster, "ns-a/v4only", "ns-a/client", V4, Tcp, 80, false);
}

#[test]
fn legacy_default_deny_isolates_ingress_only() {
    let mut deny = namespace("ns-a", &[]);
    deny.legacy_default_deny = true;
    let cluster = cluster_of(
        vec![deny],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/other", "node-1", &["10.0.0.4"], &[]),
            pod("ns-b/web", "node-2", &["10.0.0.2"], &[("app", "web")]),
            pod("ns-b/client", "node-2", &["10.0.0.3"], &[]),
        ],
        vec![policy(
            "ns-a/from-web",
            match_labels(&[("app", "db")]),
            Some(vec![rule(
                Some(vec![pods_where(
                    Default::default(),
                    match_labels(&[("app", "web")]),
                )]),
                vec![],
            )]),
            None,
        )],
    );
    expect(&cluster, "ns-b/client", "ns-a/other", V4, Tcp, 80, false);
    expect(&cluster, "ns-b/client", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "ns-b/web", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/other", "ns-b/client", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/server", "ns-a/other", V4, Tcp, 80, false);
}

#[test]
fn namespace_without_object_is_known_by_its_name_label() {
    let cluster = cluster_of(
        vec![namespace("ns-a", &[("team", "red")])],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-b/client", "node-2", &["10.0.0.2"], &[("team", "red")]),
            pod("ns-c/client", "node-2", &["10.0.0.3"], &[]),
        ],
        vec![policy(
            "ns-a/by-name",
            match_labels(&[("app", "db")]),
            Some(vec![
                rule(
                    Some(vec![pods_where(
                        match_labels(&[("kubernetes.io/metadata.name", "ns-b")]),
                        Default::default(),
                    )]),
                    vec![port(Tcp, 80)],
                ),
                // A pod's labels are not its namespace's: team=red on ns-b/client matters not.
                rule(
                    Some(vec![pods_where(
                        match_labels(&[("team", "red")]),
                        Default::default(),
                    )]),
                    vec![port(Tcp, 443)],
                ),
            ]),
            None,
        )],
    );
    expect(&cluster, "ns-b/client", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-c/client", "ns-a/server", V4, Tcp, 80, false);
    expect(&cluster, "ns-b/client", "ns-a/server", V4, Tcp, 443, false);
}

#[test]
fn policies_and_rules_are_additive() {
    let cluster = cluster_of(
        vec![],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            pod("ns-a/web", "node-2", &["10.0.0.2"], &[("app", "web")]),
            pod("ns-a/dns", "node-2", &["10.0.0.3"], &[("app", "dns")]),
        ],
        vec![
            policy(
                "ns-a/web",
                match_labels(&[("app", "db")]),
                Some(vec![rule(
                    Some(vec![pods_in("ns-a", match_labels(&[("app", "web")]))]),
                    vec![port(Tcp, 80)],
                )]),
                None,
            ),
            policy(
                "ns-a/dns",
                expression("app", "Exists", &[]),
                Some(vec![rule(
                    Some(vec![pods_in("ns-a", match_labels(&[("app", "dns")]))]),
                    vec![port(Udp, 53), any_port(Sctp)],
                )]),
                None,
            ),
        ],
    );
    expect(&cluster, "ns-a/web", "ns-a/server", V4, Tcp, 80, true);
    expect(&cluster, "ns-a/web", "ns-a/server", V4, Udp, 53, false);
    expect(&cluster, "ns-a/dns", "ns-a/server", V4, Udp, 53, true);
    expect(&cluster, "ns-a/dns", "ns-a/server", V4, Sctp, 7, true);
    expect(&cluster, "ns-a/dns", "ns-a/server", V4, Tcp, 80, false);
    // ns-a/web is selected by the second policy only.
    expect(&cluster, "ns-a/dns", "ns-a/web", V4, Udp, 53, true);
    expect(&cluster, "ns-a/server", "ns-a/web", V4, Tcp, 80, false);
}

// ---- regressions: compiler bugs found by the properties -----------------------------------------

/// Found by the incremental properties against 54d9f21 (fixed in 837cb29, "empty implicit
/// namespaces stay evaluated"): a namespace without a Namespace object that had lost its last
/// pod was left out of namespace-selector sets created after that, so pods coming back to it were
/// never added to them, and the policy's ingress from them was dropped.
///
/// Cause at 54d9f21, src/compiler/node.rs: `watch_selection` computed a new selector set's
/// namespaces from `populated_namespaces()` and the Namespace objects only, while
/// `update_pod_membership` re-evaluated a namespace only when it was missing from
/// `evaluated_namespaces`, which still held the emptied namespace. A cold compile included the
/// pod.
#[test]
fn pods_returning_to_an_emptied_namespace_join_selector_sets_made_meanwhile() {
    let initial = cluster_of(
        vec![],
        vec![
            pod("ns-a/server", "node-1", &["10.0.0.1"], &[("app", "db")]),
            // ns-c has no Namespace object: it is known only by its name label.
            pod("ns-c/old", "node-2", &["10.0.0.2"], &[]),
        ],
        vec![],
    );
    let mut session = Session::new(&initial);
    let updates = [
        mutate::Op::RemovePod(palisade::model::ObjectKey::new("ns-c", "old")),
        mutate::Op::UpsertPolicy(policy(
            "ns-a/from-everywhere",
            match_labels(&[("app", "db")]),
            Some(vec![rule(
                Some(vec![pods_where(Default::default(), Default::default())]),
                vec![],
            )]),
            None,
        )),
        mutate::Op::UpsertPod(pod("ns-c/new", "node-2", &["10.0.0.3"], &[])),
    ];
    for op in updates {
        let text = format!("{op:?}");
        let changes = mutate::execute(&mut session.cluster, &mut session.index, op);
        assert!(!changes.is_empty(), "the update changes the index");
        for change in changes {
            session.pending.push((text.clone(), change));
        }
        session.apply_pending();
    }
    // The spec: the policy allows ingress from every pod of every namespace.
    let states = session.states();
    expect_in(
        &states,
        &session.cluster,
        "ns-c/new",
        "ns-a/server",
        (V4, Tcp, 80),
        true,
    );
    if let Err(e) = session.compare(&initial) {
        panic!("{e}");
    }
}

/// The same bug by another path (found by `long_update_histories_equal_a_cold_compile`): the
/// namespace had no pods when its Namespace object went away, so it was evaluated, unpopulated
/// and without an object when the set was made.
#[test]
fn pods_in_a_namespace_whose_object_went_away_join_selector_sets_made_meanwhile() {
    let initial = cluster_of(
        vec![namespace("ns-b", &[])],
        vec![pod(
            "ns-a/server",
            "node-1",
            &["10.0.0.1"],
            &[("app", "db")],
        )],
        vec![],
    );
    let mut session = Session::new(&initial);
    let updates = [
        mutate::Op::RemoveNamespace("ns-b".to_string()),
        mutate::Op::UpsertPolicy(policy(
            "ns-a/from-ns-b",
            match_labels(&[("app", "db")]),
            Some(vec![rule(
                Some(vec![pods_where(
                    match_labels(&[("kubernetes.io/metadata.name", "ns-b")]),
                    Default::default(),
                )]),
                vec![port(Udp, 53)],
            )]),
            None,
        )),
        mutate::Op::UpsertPod(pod("ns-b/client", "node-2", &["10.0.0.2"], &[])),
    ];
    for op in updates {
        let text = format!("{op:?}");
        let changes = mutate::execute(&mut session.cluster, &mut session.index, op);
        assert!(!changes.is_empty(), "the update changes the index");
        for change in changes {
            session.pending.push((text.clone(), change));
        }
        session.apply_pending();
    }
    let states = session.states();
    expect_in(
        &states,
        &session.cluster,
        "ns-b/client",
        "ns-a/server",
        (V4, Udp, 53),
        true,
    );
    if let Err(e) = session.compare(&initial) {
        panic!("{e}");
    }
}

/// Found by `long_update_histories_equal_a_cold_compile`: in one batch a pod in a selector set
/// loses its labels and is deleted with the rest of its namespace, and a new pod gets its
/// address. The incremental state kept the address in the set; a cold compile does not.
#[test]
fn an_address_reused_in_the_batch_that_freed_it_leaves_the_set() {
    let initial = cluster_of(
        vec![],
        vec![
            pod(
                "ns-a/p0",
                "node-1",
                &["10.0.0.1", "fd00::1"],
                &[("app", "db")],
            ),
            pod("ns-a/p1", "node-1", &["10.0.0.2"], &[("app", "db")]),
            pod("ns-a/p2", "node-1", &["10.0.0.3"], &[("app", "web")]),
            pod("ns-a/p3", "node-1", &["10.0.0.4"], &[("app", "db")]),
        ],
        vec![],
    );
    let mut session = Session::new(&initial);
    let key = |ns: &str, name: &str| palisade::model::ObjectKey::new(ns, name);
    let batches = vec![
        vec![mutate::Op::UpsertPolicy(policy(
            "ns-b/new0",
            expression("role", "NotIn", &["front"]),
            Some(vec![rule(
                Some(vec![pods_where(
                    everything(),
                    match_labels(&[("app", "db")]),
                )]),
                vec![],
            )]),
            None,
        ))],
        vec![mutate::Op::UpsertPod(pod(
            "ns-b/new1",
            "node-1",
            &["10.0.0.5", "fd00::2"],
            &[("app", "web")],
        ))],
        vec![
            mutate::Op::UpsertPod(pod("ns-a/p0", "node-1", &["10.0.0.1", "fd00::1"], &[])),
            mutate::Op::RemovePod(key("ns-a", "p0")),
            mutate::Op::RemovePod(key("ns-a", "p1")),
            mutate::Op::RemovePod(key("ns-a", "p2")),
            mutate::Op::RemovePod(key("ns-a", "p3")),
            mutate::Op::UpsertPod(pod(
                "ns-a/new4",
                "node-1",
                &["10.0.0.1", "fd00::1"],
                &[("app", "web")],
            )),
        ],
    ];
    for batch in batches {
        for op in batch {
            let text = format!("{op:?}");
            for change in mutate::execute(&mut session.cluster, &mut session.index, op) {
                session.pending.push((text.clone(), change));
            }
        }
        session.apply_pending();
    }
    if let Err(e) = session.compare(&initial) {
        panic!("{e}");
    }
}

//! NetworkPolicy semantics, checked with real packets across a two-node cluster of network
//! namespaces: each file in `integration/scenarios/` is one test per backend. Also self-tests
//! of the harness that need no Palisade at all, proving that the matrix measures reachability
//! and notices blocking.
//!
//! Everything here needs root (network namespaces); without it each test says so and passes.

#[path = "harness/mod.rs"]
// The harness is shared with the demo; each target uses a different part of it.
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::cluster::{Backend, Binaries, Cluster, PodSpec};
use harness::expect;
use harness::netns;

/// The binaries of this build; `PALISADE_BIN` runs the scenarios against another palisade.
fn binaries() -> Binaries {
    Binaries {
        palisade: std::env::var_os("PALISADE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_palisade"))),
        netprobe: PathBuf::from(env!("CARGO_BIN_EXE_palisade-netprobe")),
    }
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/scenarios")
}

/// False (after saying why) when the test cannot run here.
fn has_root(test: &str) -> bool {
    if netns::is_root() {
        return true;
    }
    println!("skipping {test}: needs root (network namespaces)");
    false
}

fn run_scenario(file_stem: &str, backend: Backend, test: &str) {
    if !has_root(test) {
        return;
    }
    let path = scenario_dir().join(format!("{file_stem}.yaml"));
    match harness::scenario::run_file(&path, &binaries(), backend) {
        Ok(report) => println!(
            "\n{test}: {} steps, {} probes, slowest matrix {:.2}s",
            report.steps,
            report.probes,
            report.slowest_matrix.as_secs_f64()
        ),
        Err(error) => panic!("{test}: {error:#}"),
    }
}

/// One test per scenario file and backend. The test's name is the file's, with `-` for `_`.
macro_rules! scenario_tests {
    ($module:ident, $backend:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            pub const NAMES: &[&str] = &[$(stringify!($name)),*];
            $(
                #[test]
                fn $name() {
                    super::run_scenario(
                        &stringify!($name).replace('_', "-"),
                        $backend,
                        concat!(stringify!($module), "::", stringify!($name)),
                    );
                }
            )*
        }
    };
}

scenario_tests!(
    nft,
    crate::Backend::Nft,
    [
        no_policy,
        finished_pods,
        default_deny_ingress,
        pod_selectors,
        namespace_selectors,
        ports,
        named_ports,
        ip_blocks,
        egress,
        stateful_replies,
        label_changes,
        legacy_annotation,
        ipv6,
        same_node,
        calico_default_deny,
        calico_tiers,
        calico_network_sets,
        calico_selectors,
        calico_rule_matches,
        calico_service_accounts,
        calico_services,
        calico_crd_v1,
        set_capacity,
    ]
);

scenario_tests!(
    legacy,
    crate::Backend::Legacy,
    [
        no_policy,
        finished_pods,
        default_deny_ingress,
        pod_selectors,
        namespace_selectors,
        ports,
        named_ports,
        ip_blocks,
        egress,
        stateful_replies,
        label_changes,
        legacy_annotation,
        ipv6,
        same_node,
        calico_default_deny,
        calico_tiers,
        calico_network_sets,
        calico_selectors,
        calico_rule_matches,
        calico_service_accounts,
        calico_services,
        calico_crd_v1,
        set_capacity,
    ]
);

#[test]
fn every_scenario_file_has_a_test_per_backend() {
    let mut files: Vec<String> = std::fs::read_dir(scenario_dir())
        .expect("integration/scenarios is readable")
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".yaml").map(|s| s.replace('-', "_")))
        .collect();
    files.sort();
    for (backend, names) in [("nft", nft::NAMES), ("legacy", legacy::NAMES)] {
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        names.sort();
        assert_eq!(files, names, "scenario files vs {backend} tests");
    }
}

#[test]
fn every_scenario_file_parses() {
    for entry in std::fs::read_dir(scenario_dir()).expect("integration/scenarios is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            harness::scenario::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
}

/// Nine dual-stack pods on two nodes: 5 + 4, so the matrix holds same-node and cross-node
/// pairs.
fn nine_pod_cluster() -> Cluster {
    let mut cluster = Cluster::new(binaries(), "palh", 2).expect("cluster");
    let specs = (1..=9)
        .map(|i| {
            let mut spec = PodSpec::new(
                if i % 2 == 0 { "even" } else { "odd" },
                &format!("p{i}"),
                if i <= 5 { 1 } else { 2 },
            );
            spec.tcp = vec![80, 81];
            spec.udp = vec![53];
            spec.ipv6 = true;
            spec
        })
        .collect();
    cluster.add_pods(specs).expect("pods");
    cluster
}

/// Without any policy (and without Palisade), every pod reaches every other pod on every
/// port over IPv4 and IPv6, same-node and cross-node, and every node reaches its own pods.
/// Also measures how long the full matrix takes.
#[test]
fn harness_reaches_everything_without_policy() {
    let test = "harness_reaches_everything_without_policy";
    if !has_root(test) {
        return;
    }
    let cluster = nine_pod_cluster();
    let matrix = cluster
        .probe_matrix(true, Duration::from_millis(300))
        .expect("matrix");
    let lines = expect::parse(&["allow * -> *".to_string()]).expect("expectation");
    let mismatches = expect::compare(&lines, &matrix.observations).expect("compare");
    print!("{}", expect::grid(&matrix, &mismatches));
    println!(
        "{test}: {} probes from {} sources in {:.2}s",
        matrix.observations.len(),
        cluster.pods.len() + cluster.nodes.len(),
        matrix.elapsed.as_secs_f64()
    );
    // 9 pods × 8 others × 3 ports × 2 families, plus 9 × 3 × 2 from the nodes.
    assert_eq!(matrix.observations.len(), 9 * 8 * 3 * 2 + 9 * 3 * 2);
    assert!(
        mismatches.is_empty(),
        "unreachable without policy:\n{}",
        expect::mismatch_table(&mismatches)
    );
}

/// DROP rules inserted by hand in FORWARD of a node show up as exactly those probes timing
/// out: a cross-node TCP/IPv4 drop on the destination's node, a cross-node UDP/IPv6 drop on
/// the source's node, and a same-node drop.
#[test]
fn harness_detects_manual_drops() {
    let test = "harness_detects_manual_drops";
    if !has_root(test) {
        return;
    }
    let cluster = nine_pod_cluster();
    let p1 = cluster.pod("odd/p1").expect("p1");
    let p2 = cluster.pod("even/p2").expect("p2");
    let p6 = cluster.pod("even/p6").expect("p6");
    let (p1_v4, p6_v4) = (p1.ipv4.to_string(), p6.ipv4.to_string());
    let p1_v6 = p1.ipv6.expect("p1 is dual-stack").to_string();
    let p6_v6 = p6.ipv6.expect("p6 is dual-stack").to_string();
    let p2_v4 = p2.ipv4.to_string();
    let node1 = cluster.node(1).expect("node 1").netns.clone();
    let node2 = cluster.node(2).expect("node 2").netns.clone();
    let drops: [(&str, &str, Vec<&str>); 3] = [
        // p1 -> p6 tcp/80 over IPv4, dropped where it arrives (node-2).
        (
            &node2,
            "iptables",
            vec!["-s", &p1_v4, "-d", &p6_v4, "-p", "tcp", "--dport", "80"],
        ),
        // p1 -> p6 udp/53 over IPv6, dropped where it leaves (node-1).
        (
            &node1,
            "ip6tables",
            vec!["-s", &p1_v6, "-d", &p6_v6, "-p", "udp", "--dport", "53"],
        ),
        // p1 -> p2 on the same node, everything over IPv4.
        (&node1, "iptables", vec!["-s", &p1_v4, "-d", &p2_v4]),
    ];
    for (node, program, rule) in &drops {
        netns::run(
            netns::in_netns(node, program)
                .args(["-I", "FORWARD"])
                .args(rule)
                // Only new connections: a stateless drop of p1 -> p2 would also drop p1's
                // replies to connections that p2 opens.
                .args(["-m", "conntrack", "--ctstate", "NEW"])
                .args(["-j", "DROP"]),
        )
        .expect("inserting a DROP rule");
    }
    let matrix = cluster
        .probe_matrix(true, Duration::from_millis(300))
        .expect("matrix");
    let lines = expect::parse(&[
        "allow * -> *".to_string(),
        "deny odd/p1 -> even/p6 tcp/80 v4".to_string(),
        "deny odd/p1 -> even/p6 udp/53 v6".to_string(),
        "deny odd/p1 -> even/p2 v4".to_string(),
    ])
    .expect("expectation");
    let mismatches = expect::compare(&lines, &matrix.observations).expect("compare");
    print!("{}", expect::grid(&matrix, &mismatches));
    assert!(
        mismatches.is_empty(),
        "the matrix does not show exactly the dropped probes:\n{}",
        expect::mismatch_table(&mismatches)
    );
    let blocked: Vec<String> = matrix
        .observations
        .iter()
        .filter(|o| !o.verdict.is_connected())
        .map(|o| format!("{} {}", o.probe, o.verdict.as_str()))
        .collect();
    assert_eq!(blocked.len(), 5, "blocked probes: {blocked:#?}");
    assert!(
        blocked.iter().all(|b| b.ends_with("timed out")),
        "a DROP shows as a timeout: {blocked:#?}"
    );
    // And the opposite check, so that the comparison itself is known to bite: the same
    // measurement against "everything connects" must report exactly those five probes.
    let everything = expect::parse(&["allow * -> *".to_string()]).expect("expectation");
    let differences = expect::compare(&everything, &matrix.observations).expect("compare");
    assert_eq!(
        differences.len(),
        5,
        "{}",
        expect::mismatch_table(&differences)
    );
}

/// Removing the cluster removes every namespace it created, and deleting a pod removes the
/// pod's namespace while the rest keeps working.
#[test]
fn harness_cleans_up_after_itself() {
    let test = "harness_cleans_up_after_itself";
    if !has_root(test) {
        return;
    }
    let mut cluster = Cluster::new(binaries(), "palh", 2).expect("cluster");
    let mut a = PodSpec::new("ns", "a", 1);
    a.tcp = vec![80];
    let mut b = PodSpec::new("ns", "b", 2);
    b.tcp = vec![80];
    cluster.add_pods(vec![a, b]).expect("pods");
    let prefix = cluster.prefix.clone();
    let owned = || {
        netns::list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .count()
    };
    assert_eq!(owned(), 5, "fabric, 2 nodes, 2 pods");
    cluster.delete_pod("ns/b").expect("delete pod");
    assert_eq!(owned(), 4);
    let back = cluster
        .probe_one(
            harness::probe::Source::Node(1),
            "ns/a",
            harness::cluster::Proto::Tcp,
            80,
            harness::cluster::Family::V4,
            Duration::from_millis(500),
        )
        .expect("probe");
    assert!(back.verdict.is_connected(), "{back:?}");
    drop(cluster);
    assert_eq!(owned(), 0, "namespaces left behind");
}

//! The per-policy and denied-packet counters, with real packets: one `palisade agent` in a node
//! namespace (reading manifests), pods sending counted UDP datagrams and TCP connections, and
//! the agent's `/metrics` read before and after.
//!
//! - a denied UDP datagram is a packet of `palisade_denied_packets_total` of the destination
//!   pod (each datagram of an unanswered flow is evaluated: none is established);
//! - an allowed TCP connection is one packet (its SYN) of the allowing rule's
//!   `palisade_policy_rule_packets_total`; the rest of the flow is established and skips policy;
//! - a policy change that rewrites the chains restarts the kernel's counters, and the exported
//!   ones neither go back nor count anything twice.
//!
//! Needs root (network namespaces); without it the test prints "skipping: needs root".

#[path = "harness/mod.rs"]
// The harness is shared with other targets; this one uses part of it.
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use e2e::agent::{Agent, Source as AgentSource};
use e2e::{binaries, kube, pod_spec, RunDir};
use harness::cluster::{Cluster, Family, Proto};
use harness::netns;
use harness::probe::Source;

const DENIED: &str = "palisade_denied_packets_total";
const RULE_PACKETS: &str = "palisade_policy_rule_packets_total";
const RULE_BYTES: &str = "palisade_policy_rule_bytes_total";

const SERVER_INGRESS: [(&str, &str); 3] = [
    ("namespace", "web"),
    ("pod", "server"),
    ("direction", "ingress"),
];
const ALLOW_A_RULE: [(&str, &str); 6] = [
    ("tier", "default"),
    ("namespace", "web"),
    ("policy", "allow-a"),
    ("direction", "ingress"),
    ("rule", "0"),
    ("action", "allow"),
];

/// The counters this test follows, as the agent exports them now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    denied: f64,
    allow_packets: f64,
    allow_bytes: f64,
}

fn counts(agent: &Agent) -> Result<Counts> {
    let metrics = agent.metrics()?;
    Ok(Counts {
        denied: metrics.value(DENIED, &SERVER_INGRESS)?.unwrap_or(0.0),
        allow_packets: metrics.value(RULE_PACKETS, &ALLOW_A_RULE)?.unwrap_or(0.0),
        allow_bytes: metrics.value(RULE_BYTES, &ALLOW_A_RULE)?.unwrap_or(0.0),
    })
}

/// Waits until the counters stop moving for a few read intervals: every packet sent has been
/// read from the kernel.
fn settled(agent: &Agent) -> Result<Counts> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = counts(agent)?;
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = counts(agent)?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(1500) {
            return Ok(now);
        }
    }
    bail!("the counters kept moving for 10 s: {last:?}")
}

fn send_udp(cluster: &Cluster, from: &str, to: &str, port: u16, count: u32) -> Result<()> {
    let address = cluster
        .pod(to)?
        .address(Family::V4)
        .context("destination has no IPv4 address")?;
    let mut command = netns::in_netns(&cluster.pod(from)?.netns, &cluster.binaries.netprobe);
    command.args([
        "send",
        "--count",
        &count.to_string(),
        "--interval-us",
        "200",
        &format!("udp:{address}:{port}"),
    ]);
    netns::run(&mut command)?;
    Ok(())
}

fn connect_tcp(cluster: &Cluster, from: &str, to: &str, port: u16, count: u32) -> Result<()> {
    for i in 0..count {
        let observation = cluster.probe_one(
            Source::Pod(from.to_string()),
            to,
            Proto::Tcp,
            port,
            Family::V4,
            Duration::from_millis(1500),
        )?;
        if !observation.verdict.is_connected() {
            bail!(
                "connection {i} {from} -> {to}:{port}: {:?}",
                observation.verdict
            );
        }
    }
    Ok(())
}

fn check_exact(
    label: &str,
    before: Counts,
    after: Counts,
    denied: u32,
    allowed: u32,
) -> Result<()> {
    let (d, a) = (
        after.denied - before.denied,
        after.allow_packets - before.allow_packets,
    );
    println!(
        "  {label}: denied +{d} (sent {denied}), allow-a ingress[0] +{a} packets (connections {allowed}), +{} bytes",
        after.allow_bytes - before.allow_bytes
    );
    if d != f64::from(denied) || a != f64::from(allowed) {
        bail!("{label}: counted denied +{d} / allowed +{a}, sent {denied} / {allowed}");
    }
    if allowed > 0 && after.allow_bytes <= before.allow_bytes {
        bail!("{label}: the allowed packets counted no bytes");
    }
    Ok(())
}

fn monotonic(label: &str, before: Counts, after: Counts) -> Result<()> {
    if after.denied < before.denied
        || after.allow_packets < before.allow_packets
        || after.allow_bytes < before.allow_bytes
    {
        bail!("{label}: a counter went back: {before:?} -> {after:?}");
    }
    Ok(())
}

fn allow_a(extra_rules: &[Value]) -> Value {
    let mut ingress = vec![json!({
        "from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
        "ports": [{"protocol": "TCP", "port": 80}],
    })];
    ingress.extend(extra_rules.iter().cloned());
    kube::policy(
        "web",
        "allow-a",
        json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": ingress}),
    )
}

fn body(run: &RunDir) -> Result<()> {
    let mut cluster = Cluster::new(binaries(), "palct", 1)?;
    cluster.add_pods(vec![
        pod_spec("web", "server", 1, &[("app", "server")], &[80], &[53], &[]),
        pod_spec("web", "a", 1, &[("role", "frontend")], &[80], &[], &[]),
        pod_spec("web", "b", 1, &[("role", "backend")], &[80], &[], &[]),
    ])?;
    let manifests = kube::ManifestDir::new(&run.path)?;
    let write = |file: &str, object: &Value| manifests.write(file, object);
    write("10-namespace-web.yaml", &kube::namespace("web", &[]))?;
    manifests.write_pods(&cluster)?;
    write("30-allow-a.yaml", &allow_a(&[]))?;
    let node = cluster.node(1)?;
    let mut agent = Agent::new(
        &cluster.binaries.palisade,
        &node.name,
        &node.netns,
        AgentSource::Manifests(manifests.path.clone()),
        &run.path,
        "60s",
    );
    agent.extra_args = ["--counters-interval", "300ms"].map(String::from).to_vec();
    agent.start()?;
    agent.wait_ready(Duration::from_secs(30))?;
    // The policy is in place once a denied probe is blocked.
    let blocked = cluster.probe_one(
        Source::Pod("web/b".into()),
        "web/server",
        Proto::Udp,
        53,
        Family::V4,
        Duration::from_millis(500),
    )?;
    if blocked.verdict.is_connected() {
        bail!("web/b reached web/server udp/53 before any change: the policy is not enforced");
    }
    let start = settled(&agent)?;

    send_udp(&cluster, "web/b", "web/server", 53, 40)?;
    connect_tcp(&cluster, "web/a", "web/server", 80, 5)?;
    let first = settled(&agent)?;
    check_exact("first traffic", start, first, 40, 5)?;

    // A second rule rewrites the policy's chain (its counters restart in the kernel); a second
    // policy on the pod rewrites the pod's chain and its default deny.
    write(
        "30-allow-a.yaml",
        &allow_a(&[json!({"ports": [{"protocol": "UDP", "port": 5353}]})]),
    )?;
    write(
        "31-allow-dns-from-a.yaml",
        &kube::policy(
            "web",
            "allow-dns-from-a",
            json!({
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}],
                }],
            }),
        ),
    )?;
    wait_for_rule(&node.netns, "allow-dns-from-a", Duration::from_secs(10))?;
    let rewritten = settled(&agent)?;
    monotonic("after the chains were rewritten", first, rewritten)?;
    check_exact(
        "after the chains were rewritten, no traffic",
        first,
        rewritten,
        0,
        0,
    )?;

    send_udp(&cluster, "web/b", "web/server", 53, 40)?;
    connect_tcp(&cluster, "web/a", "web/server", 80, 5)?;
    let second = settled(&agent)?;
    check_exact("traffic after the rewrite", rewritten, second, 40, 5)?;

    let metrics = agent.metrics()?;
    let reads = metrics
        .value("palisade_counter_read_duration_seconds_count", &[])?
        .unwrap_or(0.0);
    let errors = metrics.require("palisade_counter_read_errors_total", &[])?;
    println!("  counter reads: {reads}, errors: {errors}");
    if reads < 5.0 || errors > 0.0 {
        bail!("{reads} counter reads, {errors} errors");
    }
    let status = agent.stop()?;
    if !status.success() {
        bail!("exit status {status} on SIGTERM");
    }
    Ok(())
}

/// Waits until the node's filter table has a rule whose comment names `text`.
fn wait_for_rule(netns_name: &str, text: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let save = e2e::agent::in_node(netns_name, "iptables-nft-save", &["-t", "filter"])?;
        if save.contains(text) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no rule naming {text} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rule_counters_count_the_packets_sent_and_never_go_back() {
    let test = "rule_counters_count_the_packets_sent_and_never_go_back";
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let run = match RunDir::new("e2e-counters") {
        Ok(run) => run,
        Err(e) => panic!("{test}: {e:#}"),
    };
    if let Err(e) = body(&run) {
        println!(
            "--- log tail of the agent:\n{}",
            e2e::tail(&run.path.join("agent-node-1.log"), 30)
        );
        panic!("{test}: {e:#}");
    }
}

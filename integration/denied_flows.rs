//! The denied-flow log and audit mode, with real packets: one `palisade agent` in a node
//! namespace (reading manifests), pods sending denied TCP connections and UDP floods, and the
//! agent's JSON log and `/metrics` read back.
//!
//! - a denied connection gives exactly one line naming both pods, within 1 s;
//! - a flood of 10,000 denied datagrams gives a bounded number of lines (the first packet and
//!   one summary per window) that together account for every datagram;
//! - `palisade.io/enforcement: audit` on the namespace lets the connection through, logged as
//!   audited and counted with `enforcement="audit"`; back to enforce, it is blocked again;
//! - the cost of the log: connections per second through an allowing rule and through an
//!   audited (logged, then let through) default deny.
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

const WINDOW_SECONDS: u64 = 3;

/// The denied-flow lines of the agent's log between `src` and `dst`.
fn flow_lines(agent: &Agent, src: &str, dst: &str) -> Vec<Value> {
    agent
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "palisade::denied_flow")
        .map(|line| line["fields"].clone())
        .filter(|fields| fields["src"] == src && fields["dst"] == dst)
        .collect()
}

/// Waits until `count` lines between the two pods are in the log; returns them.
fn wait_lines(
    agent: &Agent,
    (src, dst): (&str, &str),
    verdict: &str,
    count: usize,
    limit: Duration,
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut lines = flow_lines(agent, src, dst);
        lines.retain(|line| line["verdict"] == verdict);
        if lines.len() >= count {
            return Ok(lines);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {count} {verdict} lines {src} -> {dst} after {limit:?}: {lines:?}",
                lines.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds since midnight (UTC) of a log line's RFC 3339 timestamp.
fn seconds_of_day(timestamp: &str) -> Option<f64> {
    let time = timestamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

fn now_seconds_of_day() -> f64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_secs_f64() % 86_400.0
}

/// When the agent wrote the first denied-flow line `src -> dst`, seconds of the day.
fn first_line_at(agent: &Agent, src: &str, dst: &str) -> Option<f64> {
    agent
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["target"] == "palisade::denied_flow"
                && line["fields"]["src"] == src
                && line["fields"]["dst"] == dst
        })
        .and_then(|line| seconds_of_day(line["timestamp"].as_str()?))
}

fn namespace(name: &str, annotations: Value) -> Value {
    let mut object = kube::namespace(name, &[]);
    object["metadata"]["annotations"] = annotations;
    object
}

fn probe(cluster: &Cluster, from: &str, to: &str, proto: Proto, port: u16) -> Result<bool> {
    let observation = cluster.probe_one(
        Source::Pod(from.to_string()),
        to,
        proto,
        port,
        Family::V4,
        Duration::from_millis(700),
    )?;
    Ok(observation.verdict.is_connected())
}

/// Probes until the verdict is `want`: a namespace switch takes effect within one sync.
fn wait_verdict(
    cluster: &Cluster,
    from: &str,
    to: &str,
    port: u16,
    want: bool,
) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if probe(cluster, from, to, Proto::Tcp, port)? == want {
            return Ok(started.elapsed());
        }
    }
    bail!(
        "{from} -> {to}:{port} was not {} within 10 s",
        if want { "connected" } else { "blocked" }
    )
}

fn netprobe_send(cluster: &Cluster, from: &str, target: &str, count: u32) -> Result<String> {
    let mut command = netns::in_netns(&cluster.pod(from)?.netns, &cluster.binaries.netprobe);
    command.args(["send", "--count", &count.to_string(), target]);
    let output = netns::run(&mut command)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn address(cluster: &Cluster, pod: &str) -> Result<String> {
    Ok(cluster
        .pod(pod)?
        .address(Family::V4)
        .context("no IPv4 address")?
        .to_string())
}

fn connections_per_second(cluster: &Cluster, from: &str, to: &str, port: u16) -> Result<f64> {
    let target = format!("tcp:{}:{port}", address(cluster, to)?);
    let out = netprobe_send(cluster, from, &target, 500)?;
    let report: Value =
        serde_json::from_str(out.trim()).with_context(|| format!("netprobe said {out:?}"))?;
    report["per_second"].as_f64().context("no rate")
}

fn body(run: &RunDir) -> Result<()> {
    let mut cluster = Cluster::new(binaries(), "paldf", 1)?;
    cluster.add_pods(vec![
        pod_spec(
            "web",
            "server",
            1,
            &[("app", "server")],
            &[80, 8080],
            &[53],
            &[],
        ),
        pod_spec("web", "a", 1, &[("role", "frontend")], &[80], &[], &[]),
        pod_spec("web", "b", 1, &[("role", "backend")], &[80], &[], &[]),
    ])?;
    let manifests = kube::ManifestDir::new(&run.path)?;
    manifests.write(
        "10-namespace-web.yaml",
        &namespace("web", json!({"palisade.io/log-denied": "true"})),
    )?;
    manifests.write_pods(&cluster)?;
    manifests.write(
        "30-allow-a.yaml",
        &kube::policy(
            "web",
            "allow-a",
            json!({
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                    "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 8080}],
                }],
            }),
        ),
    )?;
    let node = cluster.node(1)?;
    let mut agent = Agent::new(
        &cluster.binaries.palisade,
        &node.name,
        &node.netns,
        AgentSource::Manifests(manifests.path.clone()),
        &run.path,
        "60s",
    );
    agent.extra_args = [
        "--log-format",
        "json",
        "--counters-interval",
        "300ms",
        "--denied-log-window",
        &format!("{WINDOW_SECONDS}s"),
    ]
    .map(String::from)
    .to_vec();
    agent.start()?;
    agent.wait_ready(Duration::from_secs(30))?;
    if !probe(&cluster, "web/a", "web/server", Proto::Tcp, 80)? {
        bail!("web/a cannot reach web/server:80: the allowing policy is not in place");
    }

    // One denied connection: one line naming both pods within 1 s, however many SYNs it sent.
    let sent = now_seconds_of_day();
    if probe(&cluster, "web/b", "web/server", Proto::Tcp, 80)? {
        bail!("web/b reached web/server:80: the default deny is not enforced");
    }
    let pair = ("web/b", "web/server");
    let first = wait_lines(&agent, pair, "denied", 1, Duration::from_secs(1))?;
    let written = first_line_at(&agent, pair.0, pair.1).context("no timestamp")?;
    let latency = Duration::from_secs_f64((written - sent).rem_euclid(86_400.0));
    if latency > Duration::from_secs(1) {
        bail!("the line came {latency:?} after the connection attempt");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let lines = flow_lines(&agent, "web/b", "web/server");
    println!(
        "  denied connection: {} line(s), the first written {latency:?} after the first SYN: {}",
        lines.len(),
        first[0]
    );
    let line = &lines[0];
    for (field, want) in [
        ("verdict", "denied"),
        ("direction", "ingress"),
        ("protocol", "TCP"),
        ("port", "80"),
        ("message", "denied flow"),
    ] {
        if line[field] != want {
            bail!("{field} is {} instead of {want}: {line}", line[field]);
        }
    }
    if !line["rule"]
        .as_str()
        .unwrap_or_default()
        .contains("web/server ingress: end of tier default")
    {
        bail!("the line does not name the pod chain's default deny: {line}");
    }
    if lines.len() != 1 {
        bail!("{} lines for one denied connection: {lines:?}", lines.len());
    }

    // A flood: the first datagram's line, then one summary when the window ends.
    let target = format!("udp:{}:53", address(&cluster, "web/server")?);
    let cpu_before = agent.cpu_time()?;
    let flood_started = Instant::now();
    netprobe_send(&cluster, "web/b", &target, 10_000)?;
    let flood_took = flood_started.elapsed();
    std::thread::sleep(Duration::from_secs(WINDOW_SECONDS + 2));
    let udp: Vec<Value> = flow_lines(&agent, "web/b", "web/server")
        .into_iter()
        .filter(|l| l["protocol"] == "UDP")
        .collect();
    let logged: u64 = udp.iter().filter_map(|l| l["packets"].as_u64()).sum();
    let cpu = agent.cpu_time()?.saturating_sub(cpu_before);
    let metrics = agent.metrics()?;
    let overruns = metrics.require("palisade_denied_flow_overruns_total", &[])?;
    let suppressed = metrics.require("palisade_denied_flow_lines_suppressed_total", &[])?;
    println!(
        "  flood of 10000 datagrams in {flood_took:?}: {} lines accounting for {logged} packets (overruns {overruns}, suppressed lines {suppressed}); agent CPU meanwhile {cpu:?}",
        udp.len()
    );
    if udp.is_empty() || udp.len() > 3 {
        bail!("{} lines for one flooding flow: {udp:?}", udp.len());
    }
    if overruns == 0.0 && logged != 10_000 {
        bail!("the lines account for {logged} of 10000 datagrams and nothing was lost");
    }

    // The cost of the log: an allowed path against an audited one (NFLOG, then let through).
    let allowed_rate = connections_per_second(&cluster, "web/a", "web/server", 8080)?;

    // Audit mode: what enforcing blocks connects, logged and counted as audited.
    manifests.write(
        "10-namespace-web.yaml",
        &namespace("web", json!({"palisade.io/enforcement": "audit"})),
    )?;
    let took = wait_verdict(&cluster, "web/b", "web/server", 80, true)?;
    println!("  audit: web/b -> web/server:80 connects {took:?} after the annotation");
    let audited = wait_lines(&agent, pair, "audited", 1, Duration::from_secs(1))?;
    if audited.len() != 1 || audited[0]["port"] != "80" {
        bail!("audited connection logged as {audited:?}");
    }
    let audited_rate = connections_per_second(&cluster, "web/b", "web/server", 8080)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let counted = loop {
        let value = agent.metrics()?.value(
            "palisade_denied_packets_total",
            &[
                ("namespace", "web"),
                ("pod", "server"),
                ("direction", "ingress"),
                ("enforcement", "audit"),
            ],
        )?;
        match value {
            Some(v) if v >= 501.0 => break v,
            _ if Instant::now() > deadline => bail!("audited packets counted: {value:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    println!(
        "  audited packets counted: {counted}; connections/s: allowed {allowed_rate:.0}, audited (logged) {audited_rate:.0}"
    );

    // Back to enforce: blocked again.
    manifests.write("10-namespace-web.yaml", &namespace("web", json!({})))?;
    let took = wait_verdict(&cluster, "web/b", "web/server", 80, false)?;
    println!("  enforce again: blocked {took:?} after the annotation was removed");

    let status = agent.stop()?;
    if !status.success() {
        bail!("exit status {status} on SIGTERM");
    }
    Ok(())
}

#[test]
fn denied_flows_are_logged_once_and_audit_mode_lets_them_through() {
    let test = "denied_flows_are_logged_once_and_audit_mode_lets_them_through";
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let run = match RunDir::new("e2e-denied-flows") {
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

//! The seed walkthrough with real packets: a two-node cluster of network namespaces, the seed
//! manifests of `integration/seed/` applied stage by stage with `palisade apply`, and after
//! each stage the measured result of every probe. Exits 1 when a measured result contradicts
//! what the walkthrough says should happen, 2 when the demo cannot run.
//!
//! Needs root. Run it with the binaries built:
//! `cargo build --release --bins --example demo && sudo target/release/examples/demo`.
//! The binaries are looked up next to the demo (`target/release/`), or taken from
//! `PALISADE_BIN` and `PALISADE_NETPROBE_BIN`. Everything it creates is removed at the end,
//! also on failure, panic, Ctrl-C or SIGTERM.

#[path = "harness/mod.rs"]
// The harness is shared with the scenario tests; the demo uses part of it.
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use harness::cluster::{Backend, Binaries, Cluster, Family, PodSpec, Proto};
use harness::manifests;
use harness::netns;
use harness::probe::{Observation, Probe, Source};

/// Every namespace of the demo starts with `paldemo-PID-`.
const TAG: &str = "paldemo";
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// An expected connection that timed out is tried once more with this, so that a slow first
/// packet on a busy machine is not reported as a policy failure.
const RETRY_TIMEOUT: Duration = Duration::from_millis(2_000);
const DEFAULT_DENY_ANNOTATION: &str = "net.beta.kubernetes.io/network-policy";

/// One connection the walkthrough talks about.
struct Check {
    source: &'static str,
    destination: &'static str,
    port: u16,
}

const CHECKS: &[Check] = &[
    Check {
        source: "default/busybox",
        destination: "default/nginx",
        port: 80,
    },
    Check {
        source: "default/busybox-access",
        destination: "default/nginx",
        port: 80,
    },
    Check {
        source: "myproject/busybox",
        destination: "default/nginx",
        port: 80,
    },
    Check {
        source: "default/busybox",
        destination: "default/redis",
        port: 6379,
    },
    Check {
        source: "default/frontend",
        destination: "default/redis",
        port: 6379,
    },
    Check {
        source: "myproject/busybox",
        destination: "default/redis",
        port: 6379,
    },
    Check {
        source: "default/busybox",
        destination: "sock-shop/front-end",
        port: 80,
    },
    Check {
        source: "default/busybox",
        destination: "sock-shop/front-end",
        port: 8079,
    },
    Check {
        source: "myproject/busybox",
        destination: "sock-shop/front-end",
        port: 80,
    },
];

/// What the walkthrough says of each check at a stage, in the order of [`CHECKS`].
struct Stage<'a> {
    title: &'a str,
    story: &'a str,
    connected: [bool; 9],
}

fn main() -> ExitCode {
    if !netns::is_root() {
        eprintln!("demo: needs root (it creates network namespaces)");
        return ExitCode::from(2);
    }
    clean_up_on_interrupt();
    let started = Instant::now();
    let result = locate_binaries().and_then(|binaries| run(&binaries));
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(0) => {
            println!("\nevery stage behaved as the walkthrough says ({elapsed:.1}s)");
            ExitCode::SUCCESS
        }
        Ok(contradictions) => {
            println!(
                "\n{contradictions} result(s) contradict the walkthrough (marked above) ({elapsed:.1}s)"
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("demo: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// On SIGINT or SIGTERM, removes the demo's namespaces (killing what runs inside) and exits.
fn clean_up_on_interrupt() {
    let prefix = format!("{TAG}-{}-", std::process::id());
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut terminate) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        });
        eprintln!("\ndemo: interrupted, removing its network namespaces");
        for failure in netns::delete_netns_with_prefix(&prefix) {
            eprintln!("demo: {failure}");
        }
        std::process::exit(130);
    });
}

fn locate_binaries() -> Result<Binaries> {
    // The demo is target/<profile>/examples/demo; the binaries are in target/<profile>/.
    let profile_dir = std::env::current_exe()
        .context("locating the demo executable")?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("the demo executable has no grandparent directory"))?;
    let find = |variable: &str, name: &str| -> Result<PathBuf> {
        let path = std::env::var_os(variable)
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.join(name));
        if path.is_file() {
            Ok(path)
        } else {
            bail!(
                "{} not found: build it (cargo build --release --bins) or set {variable}",
                path.display()
            )
        }
    };
    Ok(Binaries {
        palisade: find("PALISADE_BIN", "palisade")?,
        netprobe: find("PALISADE_NETPROBE_BIN", "palisade-netprobe")?,
    })
}

fn seed(name: &str) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/seed")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn pod(namespace: &str, name: &str, node: usize, labels: &[(&str, &str)], tcp: &[u16]) -> PodSpec {
    let mut spec = PodSpec::new(namespace, name, node);
    spec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.tcp = tcp.to_vec();
    spec
}

fn build_cluster(binaries: &Binaries) -> Result<Cluster> {
    let mut cluster = Cluster::new(binaries.clone(), TAG, 2)?;
    cluster.ensure_namespace("default");
    cluster.ensure_namespace("sock-shop");
    cluster
        .ensure_namespace("myproject")
        .labels
        .insert("project".into(), "myproject".into());
    cluster.add_pods(vec![
        pod("default", "nginx", 1, &[("run", "nginx")], &[80]),
        pod("default", "redis", 2, &[("role", "db")], &[6379]),
        pod("default", "frontend", 2, &[("role", "frontend")], &[]),
        pod("default", "busybox", 2, &[], &[]),
        pod("default", "busybox-access", 1, &[("access", "true")], &[]),
        pod("myproject", "busybox", 1, &[], &[]),
        pod(
            "sock-shop",
            "front-end",
            2,
            &[("name", "front-end")],
            &[80, 8079],
        ),
    ])?;
    Ok(cluster)
}

fn run(binaries: &Binaries) -> Result<usize> {
    let cluster_started = Instant::now();
    let mut cluster = build_cluster(binaries)?;
    println!(
        "A two-node cluster of network namespaces ({}), set up in {:.1}s:",
        cluster.prefix,
        cluster_started.elapsed().as_secs_f64()
    );
    for pod in cluster.pods.values() {
        let labels: Vec<String> = pod
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  {:<24} {}  {:<12} serves tcp {:?}  labels {{{}}}",
            pod.key(),
            pod.node_name(),
            pod.ipv4.to_string(),
            pod.spec.tcp,
            labels.join(", ")
        );
    }
    println!("  namespace myproject is labelled project=myproject");

    let mut contradictions = 0;
    let all = [true; 9];
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(a) No policy: everything is reachable",
            story:
                "Without NetworkPolicies and without isolation every pod accepts every connection.",
            connected: all,
        },
    )?;

    let default_deny = seed("default-deny-annotation.yaml")?;
    cluster.apply_object(default_deny.clone())?;
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(b) `default` annotated DefaultDeny (seed/default-deny-annotation.yaml)",
            story: "Every pod in `default` is isolated for ingress: the busybox times out on nginx, and so does everything else into `default`. sock-shop is untouched.",
            connected: [false, false, false, false, false, false, true, true, true],
        },
    )?;

    cluster.apply_object(seed("access-nginx.yaml")?)?;
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(c) access-nginx applied (seed/access-nginx.yaml)",
            story: "nginx (run=nginx) accepts pods labelled access=true: busybox without the label still times out, busybox-access connects.",
            connected: [false, true, false, false, false, false, true, true, true],
        },
    )?;

    let mut sock_shop_deny = default_deny;
    if let Some(metadata) = sock_shop_deny
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        metadata.insert("name".into(), Value::String("sock-shop".into()));
    }
    let annotation = sock_shop_deny
        .pointer(&format!(
            "/metadata/annotations/{}",
            DEFAULT_DENY_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the seed namespace has no {DEFAULT_DENY_ANNOTATION} annotation"))?
        .to_string();
    cluster.apply_object(sock_shop_deny)?;
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(d1) `sock-shop` annotated DefaultDeny too",
            story: &format!(
                "sock-shop gets the same annotation ({DEFAULT_DENY_ANNOTATION}: {annotation}): the front-end is isolated."
            ),
            connected: [false, true, false, false, false, false, false, false, false],
        },
    )?;

    cluster.apply_object(seed("front-end-access.yaml")?)?;
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(d2) front-end-access applied (seed/front-end-access.yaml, extensions/v1beta1, protocol: tcp)",
            story: "The front-end (name=front-end) accepts TCP 80 from anywhere; its port 8079 stays closed.",
            connected: [false, true, false, false, false, false, true, false, true],
        },
    )?;

    cluster.apply_object(seed("test-network-policy.yaml")?)?;
    contradictions += stage(
        &cluster,
        &Stage {
            title: "(e) test-network-policy applied (seed/test-network-policy.yaml)",
            story: "redis (role=db) accepts TCP 6379 from pods of namespaces labelled project=myproject and from role=frontend pods of `default`; the unlabelled busybox still times out.",
            connected: [false, true, false, false, true, true, true, false, true],
        },
    )?;

    let teardown_started = Instant::now();
    let failures = cluster.teardown();
    if !failures.is_empty() {
        bail!("cleanup left namespaces behind: {}", failures.join("; "));
    }
    println!(
        "\nremoved every namespace of the demo in {:.1}s",
        teardown_started.elapsed().as_secs_f64()
    );
    Ok(contradictions)
}

/// Applies the cluster's current objects on every node, probes every check and prints the
/// measured results; returns how many contradict the stage's expectation.
fn stage(cluster: &Cluster, stage: &Stage<'_>) -> Result<usize> {
    println!("\n{}", stage.title);
    println!("  {}", stage.story);
    let applied = Instant::now();
    let outputs = manifests::apply(cluster, Backend::Auto)?;
    println!(
        "  palisade apply on {} nodes took {:.2}s",
        outputs.len(),
        applied.elapsed().as_secs_f64()
    );
    for output in &outputs {
        for line in output.stdout.lines().filter(|l| !l.trim().is_empty()) {
            println!("    [{}] {line}", output.node);
        }
    }

    let probes = CHECKS
        .iter()
        .map(|check| -> Result<Probe> {
            let destination = cluster.pod(check.destination)?;
            Ok(Probe {
                source: Source::Pod(check.source.to_string()),
                destination: check.destination.to_string(),
                family: Family::V4,
                proto: Proto::Tcp,
                port: check.port,
                address: destination
                    .address(Family::V4)
                    .ok_or_else(|| anyhow!("{} has no IPv4 address", check.destination))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut observations = cluster.run_probes(&probes, PROBE_TIMEOUT)?;
    let slow: Vec<Probe> = observations
        .iter()
        .zip(stage.connected)
        .filter(|(o, connected)| *connected && !o.verdict.is_connected())
        .map(|(o, _)| o.probe.clone())
        .collect();
    if !slow.is_empty() {
        for retried in cluster.run_probes(&slow, RETRY_TIMEOUT)? {
            if let Some(slot) = observations.iter_mut().find(|o| o.probe == retried.probe) {
                *slot = retried;
            }
        }
    }

    let mut contradictions = 0;
    for ((check, observation), expected) in CHECKS.iter().zip(&observations).zip(stage.connected) {
        let agrees = observation.verdict.is_connected() == expected;
        if !agrees {
            contradictions += 1;
        }
        let line = format!(
            "  {:<24} -> {:<28} {:<10}{}",
            check.source,
            format!("{}:{}", check.destination, check.port),
            observation.verdict.as_str(),
            marker(observation, expected, agrees)
        );
        println!("{}", line.trim_end());
    }
    Ok(contradictions)
}

fn marker(observation: &Observation, expected: bool, agrees: bool) -> String {
    if agrees {
        return String::new();
    }
    format!(
        "   <-- UNEXPECTED: the walkthrough says {} ({})",
        if expected { "connected" } else { "timed out" },
        observation.detail
    )
}

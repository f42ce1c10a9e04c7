//! No transient holes: while `palisade apply` moves a node from one state to the next, no probe
//! may see a verdict that neither the state before nor the state after gives.
//!
//! Five pods on one node, every pair probed continuously (TCP and UDP, IPv4 and IPv6, from
//! each pod's own network namespace), while 200 random changes are applied one after the
//! other: pod labels, Kubernetes NetworkPolicies (ingress and egress, ports, namespace
//! selectors) and Calico GlobalNetworkPolicies (Deny and Allow rules, negated selectors,
//! orders). What each state allows is computed with `palisade explain`'s walk of the compiled
//! rules (the one the property tests check against the Kubernetes and Calico reference
//! evaluators). A probe may match any state in force at some moment of its lifetime; one
//! that matches none is a wrong verdict, and there must be none, on either backend.
//!
//! The same with SIGKILL: 20 changes whose `palisade apply` is killed at a random moment of
//! its run (mid-restore, say), each followed by a fresh apply that reads what the kernel was
//! left with, as a restarted agent's first sync does. Until that apply ends, a probe may see
//! the old or the new state and nothing else.
//!
//! Needs root (network namespaces); without it the test prints "skipping: needs root".

#[path = "harness/mod.rs"]
// The harness is shared with other targets; this one uses part of it.
#[allow(dead_code)]
mod harness;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use harness::cluster::{Backend, Binaries, Cluster, PodSpec, Proto};
use harness::manifests;
use harness::netns;
use harness::probe::{Observation, Probe, Source, Verdict};
use palisade::compiler::CompilerConfig;
use palisade::explain::Endpoint;
use palisade::model::Protocol;

const CHANGES: usize = 200;

/// `PALISADE_TRANSIENT_CHANGES` overrides the number of changes (for quick runs).
fn changes() -> usize {
    std::env::var("PALISADE_TRANSIENT_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHANGES)
}
/// A killed apply gets SIGKILL this long after its start at most: an apply takes 20-170 ms.
const KILL_WITHIN_MS: usize = 50;
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
const ROLES: [&str; 3] = ["x", "y", "z"];

/// A small deterministic generator: the same seed gives the same 200 changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn binaries() -> Binaries {
    Binaries {
        palisade: std::env::var_os("PALISADE_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_palisade"))),
        netprobe: std::path::PathBuf::from(env!("CARGO_BIN_EXE_palisade-netprobe")),
    }
}

fn pods() -> Vec<PodSpec> {
    let spec = |namespace: &str, name: &str, role: &str| {
        let mut spec = PodSpec::new(namespace, name, 1);
        spec.labels.insert("role".into(), role.into());
        spec.tcp = vec![80, 443];
        spec.udp = vec![53];
        spec.ipv6 = true;
        spec
    };
    vec![
        spec("alpha", "a0", "x"),
        spec("alpha", "a1", "y"),
        spec("alpha", "a2", "z"),
        spec("beta", "b0", "x"),
        spec("beta", "b1", "y"),
    ]
}

fn ports(rng: &mut Rng) -> Value {
    let all = [("TCP", 80), ("TCP", 443), ("UDP", 53)];
    let chosen: Vec<Value> = all
        .iter()
        .filter(|_| rng.chance(50))
        .map(|(protocol, port)| json!({"protocol": protocol, "port": port}))
        .collect();
    Value::Array(chosen)
}

fn kubernetes_policy(rng: &mut Rng, name: &str) -> Value {
    let namespace = *rng.pick(&["alpha", "beta"]);
    let target = if rng.chance(25) {
        json!({})
    } else {
        json!({"matchLabels": {"role": rng.pick(&ROLES)}})
    };
    let peer = |rng: &mut Rng| {
        let mut peer = json!({"podSelector": {"matchLabels": {"role": rng.pick(&ROLES)}}});
        if rng.chance(40) {
            peer["namespaceSelector"] = json!({});
        }
        peer
    };
    let mut spec = json!({"podSelector": target});
    let mut types = Vec::new();
    if rng.chance(80) {
        spec["ingress"] = json!([{"from": [peer(rng)], "ports": ports(rng)}]);
        types.push("Ingress");
    }
    if types.is_empty() || rng.chance(30) {
        spec["egress"] = json!([{"to": [peer(rng)], "ports": ports(rng)}]);
        types.push("Egress");
    }
    spec["policyTypes"] = json!(types);
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn calico_policy(rng: &mut Rng, name: &str) -> Value {
    let role = *rng.pick(&ROLES);
    let other = *rng.pick(&ROLES);
    let source = if rng.chance(50) {
        format!("role == '{other}'")
    } else {
        format!("role != '{other}'")
    };
    let mut rules = vec![json!({"action": "Deny", "source": {"selector": source}})];
    if rng.chance(70) {
        let mut allow = json!({"action": "Allow"});
        if rng.chance(50) {
            allow["protocol"] = json!("TCP");
            allow["destination"] = json!({"ports": [*rng.pick(&[80, 443])]});
        }
        rules.push(allow);
    }
    if rng.chance(30) {
        rules.reverse();
    }
    json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "order": rng.below(3) * 10,
            "selector": format!("role == '{role}'"),
            "types": ["Ingress"],
            "ingress": rules,
        },
    })
}

/// Applies one random change to the cluster model; returns what it was.
fn mutate(cluster: &mut Cluster, rng: &mut Rng) -> Result<String> {
    let roll = rng.below(100);
    if roll < 40 {
        let keys: Vec<String> = cluster.pods.keys().cloned().collect();
        let pod = rng.pick(&keys).clone();
        let role = *rng.pick(&ROLES);
        let patch = BTreeMap::from([("role".to_string(), Some(role.to_string()))]);
        cluster.patch_pod_labels(&pod, &patch)?;
        return Ok(format!("label {pod} role={role}"));
    }
    let existing: Vec<String> = cluster
        .policies
        .keys()
        .cloned()
        .chain(cluster.objects.keys().cloned())
        .collect();
    if roll < 55 && !existing.is_empty() {
        let key = rng.pick(&existing).clone();
        cluster.delete_object(&key)?;
        return Ok(format!("delete {key}"));
    }
    let object = if roll < 80 {
        let name = format!("kp{}", rng.below(4));
        // A Kubernetes policy lives in one namespace: drop its namesake in the other.
        for namespace in ["alpha", "beta"] {
            let _ = cluster.delete_object(&format!("{namespace}/{name}"));
        }
        kubernetes_policy(rng, &name)
    } else {
        let name = format!("gp{}", rng.below(3));
        calico_policy(rng, &name)
    };
    let text = format!("apply {}", serde_json::to_string(&object)?);
    cluster.apply_object(object)?;
    Ok(text)
}

/// What the node's rules allow for every probe, by walking them as `palisade explain` does.
fn expected(cluster: &Cluster, probes: &[Probe]) -> Result<Vec<bool>> {
    let dir = tempfile::tempdir()?;
    manifests::write(cluster, dir.path())?;
    let index = palisade::manifest::load(&[dir.path().to_path_buf()])
        .map_err(|e| anyhow!("{e}"))?
        .into_index();
    let source_ip = |probe: &Probe| -> Result<IpAddr> {
        let Source::Pod(key) = &probe.source else {
            bail!("only pods probe here");
        };
        cluster
            .pod(key)?
            .address(probe.family)
            .context("no address of the probe's family")
    };
    probes
        .iter()
        .map(|probe| {
            let protocol = match probe.proto {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
            };
            let explanation = palisade::explain::explain(
                &index,
                &Endpoint::Address(source_ip(probe)?),
                &Endpoint::Address(probe.address),
                protocol,
                probe.port,
                &CompilerConfig::default(),
            )
            .map_err(|e| anyhow!("explaining {probe}: {e}"))?;
            Ok(explanation.allowed)
        })
        .collect()
}

/// One round of probes, with when it ran.
struct Round {
    started: Instant,
    ended: Instant,
    observations: Vec<Observation>,
}

/// One state: what it allows and when it could be in the kernel (from the start of the apply
/// that wrote it to the end of the apply that replaced it).
struct State {
    from: Instant,
    until: Option<Instant>,
    allowed: Vec<bool>,
    change: String,
}

/// How each change reaches the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One `palisade apply`.
    Apply,
    /// A `palisade apply` killed with SIGKILL at a random moment of its run, then a fresh one
    /// that reads the kernel, as a restarted agent's first sync does.
    KillMidApply,
}

struct Outcome {
    /// Kills that hit an apply still running (the others came after it had finished).
    killed_running: usize,
    probes: usize,
    straddling: usize,
    wrong: Vec<String>,
    apply_ms: Vec<u128>,
}

fn run_backend(backend: Backend, mode: Mode, count: usize) -> Result<Outcome> {
    let mut cluster = Cluster::new(binaries(), "paltr", 1)?;
    cluster.add_pods(pods())?;
    let probes = cluster.matrix_probes(false)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ backend.as_str().len() as u64);

    manifests::apply(&cluster, backend)?;
    let mut states = vec![State {
        from: Instant::now(),
        until: None,
        allowed: expected(&cluster, &probes)?,
        change: "initial".into(),
    }];

    let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut apply_ms = Vec::new();
    let mut killed_running = 0;
    // The prober reads the cluster (its namespaces) while the changes edit its model: a change
    // waits for the round in flight, its apply runs alongside the next one.
    let shared = RwLock::new(cluster);
    let result = std::thread::scope(|scope| -> Result<()> {
        let prober = {
            let rounds = Arc::clone(&rounds);
            let stop = Arc::clone(&stop);
            let shared = &shared;
            let probes = &probes;
            scope.spawn(move || -> Result<()> {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let observations = {
                        let cluster = shared.read().map_err(|_| anyhow!("poisoned"))?;
                        cluster.run_probes(probes, PROBE_TIMEOUT)?
                    };
                    let ended = Instant::now();
                    if let Ok(mut rounds) = rounds.lock() {
                        rounds.push(Round {
                            started,
                            ended,
                            observations,
                        });
                    }
                }
                Ok(())
            })
        };
        let mut run = || -> Result<()> {
            for _ in 0..count {
                let (change, allowed) = {
                    let mut cluster = shared.write().map_err(|_| anyhow!("poisoned"))?;
                    let change = mutate(&mut cluster, &mut rng)?;
                    (change, expected(&cluster, &probes)?)
                };
                // The round after the change starts now; the apply starts at a random moment of
                // it, so the writes meet the probes' first packets at every offset.
                std::thread::sleep(Duration::from_millis(rng.below(40) as u64));
                let started = Instant::now();
                {
                    let cluster = shared.read().map_err(|_| anyhow!("poisoned"))?;
                    if mode == Mode::KillMidApply {
                        let after = Duration::from_millis(rng.below(KILL_WITHIN_MS) as u64);
                        if manifests::apply_killed(&cluster, backend, after)? {
                            killed_running += 1;
                        }
                    }
                    manifests::apply(&cluster, backend).with_context(|| change.clone())?;
                }
                let ended = Instant::now();
                apply_ms.push((ended - started).as_millis());
                if let Some(last) = states.last_mut() {
                    last.until = Some(ended);
                }
                states.push(State {
                    from: started,
                    until: None,
                    allowed,
                    change,
                });
            }
            // Let the last state be probed on its own.
            std::thread::sleep(PROBE_TIMEOUT * 3);
            Ok(())
        };
        let outcome = run();
        stop.store(true, Ordering::SeqCst);
        let probed = prober.join().map_err(|_| anyhow!("the prober panicked"))?;
        outcome.and(probed)
    });
    let cluster = shared.into_inner().map_err(|_| anyhow!("poisoned"))?;
    let cleanup = manifests::cleanup(&cluster, backend);
    result?;
    cleanup?;

    let rounds = rounds.lock().map_err(|_| anyhow!("poisoned"))?;
    let mut outcome = Outcome {
        killed_running,
        probes: 0,
        straddling: 0,
        wrong: Vec::new(),
        apply_ms,
    };
    for round in rounds.iter() {
        let live: Vec<&State> = states
            .iter()
            .filter(|s| s.from <= round.ended && s.until.is_none_or(|u| u >= round.started))
            .collect();
        if live.len() > 1 {
            outcome.straddling += round.observations.len();
        }
        for (i, observation) in round.observations.iter().enumerate() {
            outcome.probes += 1;
            let seen = match observation.verdict {
                Verdict::Connected => Some(true),
                Verdict::Blocked => Some(false),
                _ => None,
            };
            let matches = seen.is_some_and(|seen| live.iter().any(|s| s.allowed[i] == seen));
            if !matches {
                let states: Vec<String> = live
                    .iter()
                    .map(|s| format!("{} -> allowed {}", s.change, s.allowed[i]))
                    .collect();
                outcome.wrong.push(format!(
                    "{}: {} ({}); states in force: {states:?}",
                    observation.probe,
                    observation.verdict.as_str(),
                    observation.detail
                ));
            }
        }
    }
    Ok(outcome)
}

/// Runs `count` changes in `mode` on each backend (`PALISADE_TRANSIENT_BACKEND` picks one) and
/// fails on any wrong verdict.
fn check_backends(test: &str, mode: Mode, count: usize) {
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let mut failures = Vec::new();
    let only = std::env::var("PALISADE_TRANSIENT_BACKEND").unwrap_or_default();
    for backend in [Backend::Nft, Backend::Legacy] {
        if !only.is_empty() && only != backend.as_str() {
            continue;
        }
        match run_backend(backend, mode, count) {
            Ok(outcome) => {
                let mut apply = outcome.apply_ms.clone();
                apply.sort_unstable();
                let kills = match mode {
                    Mode::Apply => String::new(),
                    Mode::KillMidApply => format!(
                        ", {} of {count} SIGKILLs hit a running apply",
                        outcome.killed_running
                    ),
                };
                println!(
                    "{}: {count} changes{kills}, {} probes ({} during an apply), {} wrong; apply median {} ms, worst {} ms",
                    backend.as_str(),
                    outcome.probes,
                    outcome.straddling,
                    outcome.wrong.len(),
                    apply.get(apply.len() / 2).copied().unwrap_or(0),
                    apply.last().copied().unwrap_or(0),
                );
                if !outcome.wrong.is_empty() {
                    failures.push(format!(
                        "{}: {} wrong verdicts, the first:\n{}",
                        backend.as_str(),
                        outcome.wrong.len(),
                        outcome.wrong[..outcome.wrong.len().min(10)].join("\n")
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e:#}", backend.as_str())),
        }
    }
    assert!(failures.is_empty(), "{test}:\n{}", failures.join("\n\n"));
}

#[test]
fn no_probe_sees_a_verdict_of_neither_state_during_200_changes() {
    check_backends(
        "no_probe_sees_a_verdict_of_neither_state_during_200_changes",
        Mode::Apply,
        changes(),
    );
}

/// The apply of each change is killed with SIGKILL at a random moment, 20 times; the fresh
/// apply after it (what a restarted agent does first) reads whatever the kernel was left with.
/// Its time counts as part of the change: a probe then may see the old or the new state, and
/// nothing else. (The apply measured is the recovering one.)
#[test]
fn sigkill_in_the_middle_of_an_apply_never_lets_through_what_neither_state_allows() {
    check_backends(
        "sigkill_in_the_middle_of_an_apply_never_lets_through_what_neither_state_allows",
        Mode::KillMidApply,
        20,
    );
}

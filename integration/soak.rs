//! The soak: two `palisade agent`s on a real kube-apiserver for a long run (30 minutes under
//! `make soak`) of continuous probing and about 20 cluster changes a second.
//!
//! - Churn (`soak/churn.py`, inside the apiserver's namespace): pods created, relabelled and
//!   deleted on both nodes, namespace labels, Kubernetes NetworkPolicies, Calico
//!   GlobalNetworkPolicies (in a tier before the default one), Calico NetworkPolicies,
//!   GlobalNetworkSets and NetworkSets, created, changed and deleted. Its pods are API
//!   objects with addresses, without network namespaces; they fill the agents' sets and
//!   chains. No churn change alters a verdict between the probed pods (each rule that could
//!   match their traffic names only churn endpoints, and each Calico policy of the churn tier
//!   ends in Pass), so whatever the probes see besides the canary is a fault.
//! - Canary: every 10 s the test itself makes one change that does move verdicts between the
//!   probed pods (a Kubernetes policy isolating a namespace, a pod label, a Calico Deny),
//!   and undoes it 10 s later.
//! - Probing: the full matrix of the four steady pods and the nodes, TCP and UDP, a round
//!   every 100 ms for the whole run. A probe that finished before a canary change was made
//!   must show the state before it; from then until the next canary change it may show the
//!   state before or after, and the change's convergence is the launch of the first round
//!   after the last one that did not show the new state everywhere. Verdicts that match
//!   neither state are wrong, and there must be none; every convergence must come within
//!   [`CONVERGENCE_LIMIT`].
//! - The agents: RSS and open file descriptors every 10 s. The median RSS of the last minute
//!   may exceed that of the second minute by 5 % at most, and the floor of open FDs (the
//!   fewest of any sample) of the last 5 minutes that of minutes 1 to 6 by as much: a sample
//!   can land on a restore's pipes or on a connection open for a moment. After the churn
//!   stops, each agent is restarted: the fresh agent must find the kernel exactly as it would
//!   write it (no restore at all), which shows that the incremental updates of the whole
//!   run added up to the full state.
//!
//! `PALISADE_SOAK_SECONDS` sets the length (default 1800). The test is ignored in
//! `make test`; `make soak` runs it. Needs root (network namespaces).

#[path = "harness/mod.rs"]
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use e2e::agent::{self, Agent, Resources, Source as AgentSource};
use e2e::apiserver::ApiServer;
use e2e::kube;
use e2e::pod_env;
use e2e::proc;
use e2e::steady::{self, baseline_pods, steady_policies, STEADY};
use e2e::verdicts::{self, Expectation, Round, Sampling};
use e2e::{binaries, median_and_max, ms, RunDir};
use harness::cluster::Cluster;
use harness::netns;

const DEFAULT_SECONDS: u64 = 1800;
const CHURN_RATE: f64 = 20.0;
const CANARY_INTERVAL: Duration = Duration::from_secs(10);
/// A canary change must be seen everywhere within this long after its command returned.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(5);
/// RSS and FDs: the last minute's median RSS may exceed the second minute's, and the floor of
/// open FDs over the last [`FD_WINDOW`] the floor over the early one, by this much.
const GROWTH_LIMIT: f64 = 0.05;
/// FDs are compared by their floor over windows this long (from [`FD_WINDOW_START`], and at
/// the end): an FD open for a moment, such as a connection the API client opens for one
/// request and keeps until it has been idle for a while, is in neither floor; a leaked one is
/// in the later one.
const FD_WINDOW: Duration = Duration::from_secs(300);
const FD_WINDOW_START: Duration = Duration::from_secs(60);
const RESOURCE_INTERVAL: Duration = Duration::from_secs(10);

fn soak_length() -> Duration {
    Duration::from_secs(
        std::env::var("PALISADE_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SECONDS),
    )
}

/// The canary's three toggles; the state is which of them are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Canary {
    /// A Kubernetes NetworkPolicy in `client` that selects every pod for ingress.
    client_isolated: bool,
    /// client/b's `role` is `other` instead of `backend`: web/server no longer admits it.
    b_relabelled: bool,
    /// A Calico GlobalNetworkPolicy (tier `soak`) denies web/server -> web/peer.
    peer_denied: bool,
}

impl Canary {
    fn expectation(self) -> Result<Expectation> {
        let mut lines = STEADY.to_vec();
        if self.b_relabelled {
            lines.push("deny client/b -> web/server");
        }
        if self.peer_denied {
            lines.push("deny web/server -> web/peer");
        }
        if self.client_isolated {
            lines.extend(["deny * -> client/*", "allow node/* -> *"]);
        }
        Expectation::new(&lines)
    }

    /// The next state of the cycle: each toggle goes on, then each goes off again.
    fn next(self, step: usize) -> (Canary, &'static str) {
        let mut next = self;
        let what = match step % 3 {
            0 => {
                next.client_isolated = !self.client_isolated;
                "Kubernetes policy isolating client"
            }
            1 => {
                next.b_relabelled = !self.b_relabelled;
                "client/b relabelled"
            }
            _ => {
                next.peer_denied = !self.peer_denied;
                "Calico Deny web/server -> web/peer"
            }
        };
        (next, what)
    }

    /// Makes the cluster go from `self` to `next` (which differ in one toggle).
    fn apply(self, next: Canary, api: &ApiServer) -> Result<()> {
        if self.client_isolated != next.client_isolated {
            if next.client_isolated {
                api.apply(&[kube::policy(
                    "client",
                    "canary-isolate",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                )])?;
            } else {
                api.kubectl(&["delete", "networkpolicy", "-n", "client", "canary-isolate"])?;
            }
        }
        if self.b_relabelled != next.b_relabelled {
            let role = if next.b_relabelled {
                "role=other"
            } else {
                "role=backend"
            };
            api.kubectl(&["label", "pod", "-n", "client", "b", role, "--overwrite"])?;
        }
        if self.peer_denied != next.peer_denied {
            if next.peer_denied {
                api.apply(&[json!({
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "GlobalNetworkPolicy",
                    "metadata": {"name": "canary-deny-peer"},
                    "spec": {
                        "tier": "soak",
                        "order": 10,
                        "selector": "app == 'peer'",
                        "types": ["Ingress"],
                        "ingress": [
                            {"action": "Deny", "source": {"selector": "app == 'server'"}},
                            {"action": "Pass"},
                        ],
                    },
                })])?;
            } else {
                api.kubectl(&["delete", "globalnetworkpolicy", "canary-deny-peer"])?;
            }
        }
        Ok(())
    }
}

/// One canary change as the prober sees it.
struct CanaryChange {
    what: &'static str,
    /// When its command started: rounds that finished before it must show `before`.
    called: Instant,
    /// When its command returned: convergence is measured from here.
    returned: Instant,
    before: Expectation,
    after: Expectation,
}

/// What the probes saw during one canary window (from one change to the next).
struct Window {
    change: usize,
    /// Launch of the last round that did not show the new state everywhere.
    last_unconverged: Option<Instant>,
    /// Launch of the first round after that one.
    converged_at: Option<Instant>,
}

/// The prober's running account, fed one round at a time.
struct Judge<'a> {
    changes: &'a Mutex<Vec<CanaryChange>>,
    initial: Expectation,
    window: Option<Window>,
    rounds: usize,
    probes: usize,
    wrong: Vec<String>,
    /// `(change, convergence from its command's return)`.
    convergences: Vec<(usize, Duration)>,
    unconverged: Vec<String>,
    start: Instant,
}

impl<'a> Judge<'a> {
    fn new(changes: &'a Mutex<Vec<CanaryChange>>, initial: Expectation) -> Judge<'a> {
        Judge {
            changes,
            initial,
            window: None,
            rounds: 0,
            probes: 0,
            wrong: Vec::new(),
            convergences: Vec::new(),
            unconverged: Vec::new(),
            start: Instant::now(),
        }
    }

    fn take(&mut self, round: Round) -> Result<()> {
        self.rounds += 1;
        self.probes += round.observations.len();
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        // The latest change made before this round finished.
        let current = changes.iter().rposition(|c| c.called <= round.finished);
        if let Some(index) = current {
            if self.window.as_ref().map(|w| w.change) != Some(index) {
                if let Some(window) = self.window.take() {
                    self.close(&changes, window);
                }
                self.window = Some(Window {
                    change: index,
                    last_unconverged: None,
                    converged_at: None,
                });
            }
        }
        let at = round.launched.saturating_duration_since(self.start);
        match current {
            None => {
                for observation in &round.observations {
                    if !self.initial.satisfied_by(observation)? {
                        self.wrong.push(format!(
                            "+{} {} {} before any canary change ({})",
                            ms(at),
                            observation.probe,
                            observation.verdict.as_str(),
                            observation.detail
                        ));
                    }
                }
            }
            Some(index) => {
                let change = &changes[index];
                let mut all_new = true;
                for observation in &round.observations {
                    let new = change.after.satisfied_by(observation)?;
                    all_new &= new;
                    if !new && !change.before.satisfied_by(observation)? {
                        self.wrong.push(format!(
                            "+{} {} {} matches neither side of `{}` ({})",
                            ms(at),
                            observation.probe,
                            observation.verdict.as_str(),
                            change.what,
                            observation.detail
                        ));
                    }
                }
                if let Some(window) = self.window.as_mut() {
                    if !all_new {
                        window.last_unconverged = Some(round.launched);
                        window.converged_at = None;
                    } else if window.converged_at.is_none() {
                        window.converged_at = Some(round.launched);
                    }
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, changes: &[CanaryChange], window: Window) {
        let change = &changes[window.change];
        match window.converged_at {
            Some(at) => {
                let converged = at.saturating_duration_since(change.returned);
                self.convergences.push((window.change, converged));
            }
            None => self.unconverged.push(format!(
                "`{}` (change {}) never showed everywhere before the next change",
                change.what, window.change
            )),
        }
    }

    fn finish(&mut self) {
        if let Some(window) = self.window.take() {
            let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            self.close(&changes, window);
        }
    }
}

/// RSS and FDs of each agent over the run.
#[derive(Default)]
struct ResourceLog {
    /// `(offset from the churn's start, per agent)`.
    samples: Vec<(Duration, Vec<Resources>)>,
}

/// What one agent held over a stretch of the run.
#[derive(Debug, Clone, Copy)]
struct Held {
    rss_median_kib: u64,
    /// The fewest open FDs of any sample: what the agent kept all along. A sample that lands
    /// on a restore in progress (its pipes) or on a connection the API client opened for a
    /// moment holds a few more, which is not growth; a leak raises the floor.
    fds_floor: usize,
    fds_median: usize,
}

impl ResourceLog {
    /// What agent `index` held over the samples within `from..to`.
    fn held(&self, index: usize, from: Duration, to: Duration) -> Option<Held> {
        let picked: Vec<&Resources> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .filter_map(|(_, all)| all.get(index))
            .collect();
        if picked.is_empty() {
            return None;
        }
        let mut rss: Vec<u64> = picked.iter().map(|r| r.rss_kib).collect();
        let mut fds: Vec<usize> = picked.iter().map(|r| r.fds).collect();
        rss.sort_unstable();
        fds.sort_unstable();
        Some(Held {
            rss_median_kib: rss[rss.len() / 2],
            fds_floor: fds[0],
            fds_median: fds[fds.len() / 2],
        })
    }

    /// What agent `index` held in each `window` of the first `length` of the run, as `pick`
    /// tells it: whether memory or FDs level off or keep growing.
    fn timeline(
        &self,
        index: usize,
        window: Duration,
        length: Duration,
        pick: impl Fn(&Held) -> String,
    ) -> String {
        let mut from = Duration::ZERO;
        let mut values = Vec::new();
        while from < length {
            let to = (from + window).min(length);
            // The run ends a little after a whole window: that sliver has no sample.
            if let Some(held) = self.held(index, from, to) {
                values.push(pick(&held));
            }
            from = to;
        }
        values.join(", ")
    }
}

fn describe_held(held: Option<Held>) -> String {
    match held {
        Some(held) => format!(
            "RSS median {} KiB, FDs floor {} (median {})",
            held.rss_median_kib, held.fds_floor, held.fds_median
        ),
        None => "no samples".to_string(),
    }
}

fn describe_open_files(kinds: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    parts.join(", ")
}

fn start_churn(api: &ApiServer, seconds: u64) -> Result<Child> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/soak/churn.py");
    let pki = api.dir.join("pki");
    netns::in_netns(&api.netns, "python3")
        .arg(&script)
        .args(["--url", &api.url, "--seconds", &seconds.to_string()])
        .args(["--rate", &CHURN_RATE.to_string()])
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting churn.py")
}

fn metric_sum(agent: &Agent, name: &str) -> Result<f64> {
    Ok(agent.metrics()?.sum(name))
}

#[test]
#[ignore = "`make soak` runs it (30 minutes)"]
fn soak_two_agents_under_churn() -> Result<()> {
    if !netns::is_root() {
        println!("skipping soak_two_agents_under_churn: needs root");
        return Ok(());
    }
    let length = soak_length();
    let run = RunDir::new("soak")?;
    let mut cluster = Cluster::new(binaries(), "palsoak", 2)?;
    cluster.add_pods(baseline_pods())?;
    let api = ApiServer::start(&cluster, &run.path.join("api"))?;
    steady::create_objects(&api, &cluster)?;
    api.install_calico_crds(&cluster.binaries.palisade, "v3", "projectcalico.org")?;
    let deployed_env = pod_env::shipped()?;
    let mut agents: Vec<Agent> = cluster
        .nodes
        .iter()
        .map(|node| {
            let mut agent = Agent::new(
                &cluster.binaries.palisade,
                &node.name,
                &node.netns,
                AgentSource::Kubeconfig(api.kubeconfig.clone()),
                &run.path,
                "60s",
            );
            agent.env = pod_env::resolve(&deployed_env, &node.name)?;
            Ok(agent)
        })
        .collect::<Result<_>>()?;
    agent::start_all(&mut agents)?;
    api.apply(&steady_policies())?;
    let initial = Canary::default();
    verdicts::settle(&cluster, &initial.expectation()?)?;
    let at_start: Vec<Resources> = agents.iter().map(Agent::resources).collect::<Result<_>>()?;
    let files_at_start: Vec<_> = agents
        .iter()
        .map(Agent::open_files)
        .collect::<Result<_>>()?;
    let syncs_before: Vec<f64> = agents
        .iter()
        .map(|a| metric_sum(a, "palisade_syncs_total"))
        .collect::<Result<_>>()?;
    let unchanged_before: Vec<f64> = agents
        .iter()
        .map(|a| metric_sum(a, "palisade_syncs_without_changes_total"))
        .collect::<Result<_>>()?;

    println!(
        "soak: {} s, churn at {CHURN_RATE}/s, canary every {} s",
        length.as_secs(),
        CANARY_INTERVAL.as_secs()
    );
    let probes = verdicts::all_probes(&cluster)?;
    let sampling = Sampling {
        interval: Duration::from_millis(100),
        timeout: verdicts::PROBE_TIMEOUT,
        max_in_flight: 4,
        limit: length + Duration::from_secs(60),
    };
    let changes: Mutex<Vec<CanaryChange>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut judge = Judge::new(&changes, initial.expectation()?);
    let mut resources = ResourceLog::default();
    let mut churn = start_churn(&api, length.as_secs())?;
    let churn_started = Instant::now();
    let mut canary = initial;
    let (probing, driving) = std::thread::scope(|scope| {
        let judge = &mut judge;
        let prober = scope.spawn(|| {
            let mut failure: Option<anyhow::Error> = None;
            let outcome = verdicts::stream(&cluster, &probes, sampling, &stop, |round| {
                if failure.is_none() {
                    if let Err(e) = judge.take(round) {
                        failure = Some(e);
                    }
                }
                false
            });
            judge.finish();
            match failure {
                Some(e) => Err(e),
                None => outcome,
            }
        });
        let driving = (|| -> Result<()> {
            let mut step = 0;
            let mut next_canary = Instant::now() + CANARY_INTERVAL;
            let mut next_sample = Instant::now();
            while churn_started.elapsed() < length {
                if Instant::now() >= next_sample {
                    let now: Vec<Resources> =
                        agents.iter().map(Agent::resources).collect::<Result<_>>()?;
                    resources.samples.push((churn_started.elapsed(), now));
                    next_sample += RESOURCE_INTERVAL;
                }
                if Instant::now() >= next_canary {
                    let (next, what) = canary.next(step);
                    let called = Instant::now();
                    canary.apply(next, &api)?;
                    let returned = Instant::now();
                    changes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(CanaryChange {
                            what,
                            called,
                            returned,
                            before: canary.expectation()?,
                            after: next.expectation()?,
                        });
                    canary = next;
                    step += 1;
                    next_canary += CANARY_INTERVAL;
                }
                for agent in agents.iter_mut() {
                    agent.check_running()?;
                }
                if let Some(status) = churn.try_wait()? {
                    bail!("churn.py exited early ({status})");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // The last window gets a full interval to converge in.
            std::thread::sleep(CANARY_INTERVAL);
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        let probing = prober
            .join()
            .map_err(|_| anyhow!("the probing thread panicked"))
            .and_then(|r| r);
        (probing, driving)
    });
    let churn_report = finish_churn(&mut churn);
    driving?;
    probing?;
    let churn_report = churn_report?;
    let churned = churn_started.elapsed();
    let files_at_end: Vec<_> = agents
        .iter()
        .map(Agent::open_files)
        .collect::<Result<_>>()?;
    println!(
        "soak: probing ended: {} probes, {} wrong; {} canary changes converged",
        judge.probes,
        judge.wrong.len(),
        judge.convergences.len()
    );
    if !judge.wrong.is_empty() {
        bail!(
            "{} wrong verdicts, the first:\n  {}",
            judge.wrong.len(),
            judge
                .wrong
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }

    // Quiet again: what the fresh agents find.
    verdicts::settle(&cluster, &canary.expectation()?)?;
    let mut applies = Vec::new();
    let mut drift = Vec::new();
    let mut errors = Vec::new();
    for (index, agent) in agents.iter().enumerate() {
        let syncs = metric_sum(agent, "palisade_syncs_total")? - syncs_before[index];
        let unchanged =
            metric_sum(agent, "palisade_syncs_without_changes_total")? - unchanged_before[index];
        applies.push((syncs, syncs - unchanged));
        drift.push(metric_sum(agent, "palisade_drift_repairs_total")?);
        errors.push(metric_sum(agent, "palisade_sync_errors_total")?);
    }
    let mut fresh_restores = Vec::new();
    for agent in agents.iter_mut() {
        agent.stop()?;
        agent.start()?;
        agent.wait_ready(Duration::from_secs(60))?;
        fresh_restores.push(metric_sum(agent, "palisade_restore_calls_total")?);
    }
    verdicts::check_matrix(&cluster, &canary.expectation()?)?;

    // The report.
    let convergence: Vec<Duration> = judge.convergences.iter().map(|(_, d)| *d).collect();
    let (median, worst) = median_and_max(&convergence).unwrap_or_default();
    let second_minute = (Duration::from_secs(60), Duration::from_secs(120));
    let last_minute = (churned.saturating_sub(Duration::from_secs(60)), churned);
    let early_fds = (FD_WINDOW_START, FD_WINDOW_START + FD_WINDOW);
    let late_fds = (churned.saturating_sub(FD_WINDOW), churned);
    let mut report = vec![
        format!(
            "agents' environment (manifests/palisade.yaml): {}",
            agents[0]
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        format!(
            "churn: {} changes in {:.0} s ({}/s), {} requests, errors {}, slowest request {} ms",
            churn_report["changes"],
            churn_report["seconds"].as_f64().unwrap_or(0.0),
            churn_report["changes_per_second"],
            churn_report["requests"],
            churn_report["errors"],
            churn_report["slowest_request_ms"]
        ),
        format!("churn by kind: {}", churn_report["by_kind"]),
        format!(
            "probes: {} in {} rounds, {} wrong",
            judge.probes,
            judge.rounds,
            judge.wrong.len()
        ),
        format!(
            "canary: {} changes, convergence median {} worst {} (limit {}), {} never converged",
            convergence.len(),
            ms(median),
            ms(worst),
            ms(CONVERGENCE_LIMIT),
            judge.unconverged.len()
        ),
    ];
    let mut growth_failures = Vec::new();
    for (index, agent) in agents.iter().enumerate() {
        let early = resources.held(index, second_minute.0, second_minute.1);
        let late = resources.held(index, last_minute.0, last_minute.1);
        let fds_early = resources.held(index, early_fds.0, early_fds.1);
        let fds_late = resources.held(index, late_fds.0, late_fds.1);
        let window = Duration::from_secs(300);
        let (applied_syncs, applied) = applies[index];
        report.push(format!(
            "{}: RSS {} KiB and {} FDs after the first sync ({}); minute 2: {}; last minute: {} ({}); RSS median by 5 minutes (KiB): {}; FD floor by 5 minutes: {}; {} syncs, {} of them applied; {} drift repairs, {} sync errors; a fresh agent afterwards made {} restore calls",
            agent.node,
            at_start[index].rss_kib,
            at_start[index].fds,
            describe_open_files(&files_at_start[index]),
            describe_held(early),
            describe_held(late),
            describe_open_files(&files_at_end[index]),
            resources.timeline(index, window, churned, |h| h.rss_median_kib.to_string()),
            resources.timeline(index, window, churned, |h| h.fds_floor.to_string()),
            applied_syncs,
            applied,
            drift[index],
            errors[index],
            fresh_restores[index]
        ));
        if let (Some(early), Some(late)) = (early, late) {
            let (rss0, rss1) = (early.rss_median_kib, late.rss_median_kib);
            if rss1 as f64 > rss0 as f64 * (1.0 + GROWTH_LIMIT) {
                growth_failures.push(format!("{}: RSS {rss0} -> {rss1} KiB", agent.node));
            }
        }
        if let (Some(early), Some(late)) = (fds_early, fds_late) {
            let (fd0, fd1) = (early.fds_floor, late.fds_floor);
            if fd1 as f64 > fd0 as f64 * (1.0 + GROWTH_LIMIT) {
                growth_failures.push(format!("{}: FD floor {fd0} -> {fd1}", agent.node));
            }
        }
    }
    println!("\n======== soak report ========\n  {}", report.join("\n  "));
    let mut failures = Vec::new();
    if worst > CONVERGENCE_LIMIT || !judge.unconverged.is_empty() {
        let slow: Vec<String> = judge
            .convergences
            .iter()
            .filter(|(_, d)| *d > CONVERGENCE_LIMIT)
            .map(|(i, d)| format!("change {i}: {}", ms(*d)))
            .chain(judge.unconverged.iter().cloned())
            .collect();
        failures.push(format!("canary changes too slow: {}", slow.join(", ")));
    }
    failures.extend(growth_failures);
    if fresh_restores.iter().any(|r| *r > 0.0) {
        failures.push(format!(
            "a fresh agent rewrote the kernel after the churn: restore calls {fresh_restores:?}"
        ));
    }
    if drift.iter().any(|d| *d > 0.0) {
        failures.push(format!("drift repairs during the soak: {drift:?}"));
    }
    let rate = churn_report["changes_per_second"].as_f64().unwrap_or(0.0);
    if rate < CHURN_RATE * 0.9 {
        failures.push(format!("the churn reached only {rate} changes/s"));
    }
    if churn_report["errors"]
        .as_object()
        .is_some_and(|e| !e.is_empty())
    {
        failures.push(format!(
            "the churn's requests failed: {} {}",
            churn_report["errors"], churn_report["error_samples"]
        ));
    }
    if !failures.is_empty() {
        for agent in &agents {
            println!("--- log tail of {}:\n{}", agent.node, agent.log_tail(30));
        }
        bail!("the soak failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Waits for churn.py to end (it runs as long as the soak) and parses its report line.
fn finish_churn(churn: &mut Child) -> Result<Value> {
    let status = proc::wait_exit(churn, Duration::from_secs(60))?;
    if status.is_none() {
        let _ = churn.kill();
        bail!("churn.py did not end with the soak");
    }
    let mut text = String::new();
    if let Some(stdout) = churn.stdout.as_mut() {
        std::io::Read::read_to_string(stdout, &mut text).context("reading churn.py's report")?;
    }
    let line = text
        .lines()
        .last()
        .ok_or_else(|| anyhow!("churn.py printed no report ({status:?})"))?;
    serde_json::from_str(line).with_context(|| format!("churn.py's report {line:?}"))
}

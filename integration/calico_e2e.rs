//! Calico's own policies, live: `kubectl apply` of Calico objects on a real kube-apiserver,
//! one `palisade agent` per node namespace, real packets.
//!
//! `calico_policies_through_the_api_server` runs one sequence of changes twice on one cluster:
//! first in `projectcalico.org/v3` (the chart's CRDs, installed after the agents started, so
//! that they must pick the group up), then in `crd.projectcalico.org/v1` as Calico stores it
//! (the v3 CRDs deleted, the agents restarted on a server that serves only v1; every object
//! carries its name and labels in the `projectcalico.org/metadata` annotation, as Calico
//! writes it). The sequence: a global default deny, an allow path, a NetworkSet created after
//! the policy that selects it and then changed, an invalid policy (Event, fail closed), a tier
//! that denies a namespace and passes the rest, two tiers swapped by an order change, a pod
//! label change under a Calico selector, a policy deleted. Each change is timed from the
//! command's return to the new verdicts seen by probes, and the whole matrix is probed
//! continuously: a verdict that matches neither the state before nor the state after the
//! change in progress is a wrong verdict, and there must be none.
//!
//! Needs root (network namespaces); without it the test prints "skipping: needs root".

#[path = "harness/mod.rs"]
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use e2e::agent::{self, Agent, Source as AgentSource};
use e2e::apiserver::{self, ApiServer};
use e2e::kube;
use e2e::verdicts::{self, Await, Expectation, Round, Sampling};
use e2e::{binaries, median_and_max, ms, pod_spec, RunDir};
use harness::cluster::{Cluster, PodSpec, Proto};
use harness::netns;
use harness::probe::Probe;

/// Every change must be seen by probes within this long after its command returned.
const CHANGE_LIMIT: Duration = Duration::from_secs(1);
/// And half of them within this.
const MEDIAN_LIMIT: Duration = Duration::from_millis(200);
/// How long an agent that found no Calico group takes at most to notice the CRDs (it looks
/// every 10 s).
const DISCOVERY_LIMIT: Duration = Duration::from_secs(20);

/// The Calico group the objects are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    V3,
    CrdV1,
}

impl Group {
    fn api_version(self) -> &'static str {
        match self {
            Group::V3 => "projectcalico.org/v3",
            Group::CrdV1 => "crd.projectcalico.org/v1",
        }
    }

    fn crd_arg(self) -> &'static str {
        match self {
            Group::V3 => "v3",
            Group::CrdV1 => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Group::V3 => "projectcalico.org",
            Group::CrdV1 => "crd.projectcalico.org",
        }
    }
}

/// A Calico object. In `crd.projectcalico.org/v1` its name and labels are (also) in the
/// metadata annotation and its own labels are left out, as Calico stores objects written
/// through its API: an agent that read the plain labels would miss them.
fn calico(
    group: Group,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    labels: &[(&str, &str)],
    spec: Value,
) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    match group {
        Group::V3 => metadata["labels"] = json!(labels),
        Group::CrdV1 => {
            let mut stored = json!({"name": name, "labels": labels});
            if let Some(ns) = namespace {
                stored["namespace"] = json!(ns);
            }
            metadata["annotations"] = json!({"projectcalico.org/metadata": stored.to_string()});
        }
    }
    json!({"apiVersion": group.api_version(), "kind": kind, "metadata": metadata, "spec": spec})
}

/// Objects as one YAML stream, as a user would write them for `kubectl apply -f`.
fn yaml_stream(objects: &[Value]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(object).context("writing YAML")?);
    }
    Ok(out)
}

/// web/server (node 2, tcp/80 and udp/53), web/peer (node 1), client/a (node 1, frontend),
/// client/b (node 2, backend): same-node and cross-node pairs in both namespaces. Every pod
/// names tcp/80 `http`.
fn pods() -> Vec<PodSpec> {
    let http = [("http", Proto::Tcp, 80)];
    vec![
        pod_spec(
            "web",
            "server",
            2,
            &[("app", "server")],
            &[80],
            &[53],
            &http,
        ),
        pod_spec("web", "peer", 1, &[("app", "peer")], &[80], &[], &http),
        pod_spec("client", "a", 1, &[("role", "frontend")], &[80], &[], &http),
        pod_spec("client", "b", 2, &[("role", "backend")], &[80], &[], &http),
    ]
}

/// The expectations of the sequence, in the harness's notation.
mod expect {
    pub const OPEN: &[&str] = &["allow * -> *"];
    pub const CLOSED: &[&str] = &["deny * -> *", "allow node/* -> *"];
    pub const B_TO_SERVER: &[&str] = &[
        "deny * -> *",
        "allow client/b -> web/server tcp",
        "allow node/* -> *",
    ];
    pub const B_TO_SERVER_A_TO_PEER: &[&str] = &[
        "deny * -> *",
        "allow client/b -> web/server tcp",
        "allow client/a -> web/peer",
        "allow node/* -> *",
    ];
    pub const AB_TO_SERVER: &[&str] = &[
        "deny * -> *",
        "allow client/{a,b} -> web/server tcp",
        "allow node/* -> *",
    ];
}

fn expectation(lines: &[&str]) -> Result<Expectation> {
    Expectation::new(lines)
}

/// One change and how it went.
struct Timed {
    label: String,
    /// From the command's return to the new verdicts seen by probes.
    observed: Duration,
    command: Duration,
}

/// The states the cluster was meant to be in, each from the moment the command that made it
/// was started.
struct Timeline {
    states: Vec<(Instant, Expectation)>,
}

impl Timeline {
    /// The states a round launched at `from` and finished at `to` may show: the one whose
    /// change began last before it, the one before that (that change may not have reached
    /// the kernel yet), and any that began while it ran.
    fn during(&self, from: Instant, to: Instant) -> &[(Instant, Expectation)] {
        let first = self
            .states
            .iter()
            .rposition(|(at, _)| *at <= from)
            .unwrap_or(0)
            .saturating_sub(1);
        let last = self
            .states
            .iter()
            .rposition(|(at, _)| *at <= to)
            .unwrap_or(0);
        &self.states[first..=last]
    }

    /// Probe results that match none of the states their round could have seen.
    fn wrong(&self, rounds: &[Round], start: Instant) -> Result<Vec<String>> {
        let mut wrong = Vec::new();
        for round in rounds {
            let states = self.during(round.launched, round.finished);
            for observation in &round.observations {
                let mut fits = false;
                for (_, state) in states {
                    fits |= state.satisfied_by(observation)?;
                }
                if !fits {
                    wrong.push(format!(
                        "+{}ms {} {} ({})",
                        round.launched.saturating_duration_since(start).as_millis(),
                        observation.probe,
                        observation.verdict.as_str(),
                        observation.detail
                    ));
                }
            }
        }
        Ok(wrong)
    }
}

struct World {
    // Dropped in this order: agents, apiserver, cluster, scratch directory.
    agents: Vec<Agent>,
    api: ApiServer,
    cluster: Cluster,
    run: RunDir,
}

impl World {
    fn create() -> Result<World> {
        let run = RunDir::new("calico-e2e")?;
        let mut cluster = Cluster::new(binaries(), "palcal", 2)?;
        cluster.add_pods(pods())?;
        let api = ApiServer::start(&cluster, &run.path.join("api"))?;
        let mut world = World {
            agents: Vec::new(),
            api,
            cluster,
            run,
        };
        world.api.apply(&[
            kube::namespace("web", &[("team", "web")]),
            kube::namespace("client", &[("team", "client")]),
        ])?;
        let objects: Vec<Value> = world.cluster.pods.values().map(kube::pod).collect();
        world.api.apply(&objects)?;
        for pod in world.cluster.pods.values() {
            world
                .api
                .set_pod_status(&pod.spec.namespace, &pod.spec.name, &pod.ipv4.to_string())?;
        }
        for node in &world.cluster.nodes {
            let mut agent = Agent::new(
                &world.cluster.binaries.palisade,
                &node.name,
                &node.netns,
                AgentSource::Kubeconfig(world.api.kubeconfig.clone()),
                &world.run.path,
                "5s",
            );
            // Timed with the agent's own default, as installed.
            agent.debounce = "50ms".into();
            world.agents.push(agent);
        }
        Ok(world)
    }

    fn start_agents(&mut self) -> Result<()> {
        agent::start_all(&mut self.agents)
    }

    fn stop_agents(&mut self) -> Result<()> {
        for agent in &mut self.agents {
            if agent.is_started() {
                let status = agent.stop()?;
                if !status.success() {
                    bail!("the agent of {} exited with {status}", agent.node);
                }
            }
        }
        Ok(())
    }

    /// Generates the group's CRDs with `palisade crds` and installs them.
    fn install_crds(&self, group: Group) -> Result<()> {
        self.api.install_calico_crds(
            &self.cluster.binaries.palisade,
            group.crd_arg(),
            group.name(),
        )
    }

    fn delete_crds(&self, group: Group) -> Result<()> {
        for plural in apiserver::CALICO_PLURALS {
            self.api.kubectl(&[
                "delete",
                "crd",
                &format!("{plural}.{}", group.name()),
                "--wait=true",
            ])?;
        }
        Ok(())
    }

    fn apply_yaml(&self, objects: &[Value]) -> Result<()> {
        self.api
            .kubectl_input(&["apply", "-f", "-"], Some(&yaml_stream(objects)?))?;
        Ok(())
    }

    fn delete_yaml(&self, objects: &[Value]) -> Result<()> {
        self.api.kubectl_input(
            &["delete", "-f", "-", "--wait=true"],
            Some(&yaml_stream(objects)?),
        )?;
        Ok(())
    }

    /// Waits (up to 15 s) for the full matrix to match; for changes that are not timed.
    fn settle(&self, expected: &Expectation) -> Result<()> {
        verdicts::settle(&self.cluster, expected)
    }

    /// `kubectl label pod -n client a role=ROLE --overwrite`.
    fn label_client_a(&self, role: &str) -> Result<()> {
        self.api
            .kubectl(&[
                "label",
                "pod",
                "-n",
                "client",
                "a",
                &format!("role={role}"),
                "--overwrite",
            ])
            .map(drop)
    }

    fn pod_ip(&self, key: &str) -> Result<String> {
        Ok(self.cluster.pod(key)?.ipv4.to_string())
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for agent in &self.agents {
            out.push_str(&format!(
                "--- log tail of the agent on {}:\n{}\n",
                agent.node,
                agent.log_tail(25)
            ));
        }
        out
    }
}

/// The sequence against one world, with the matrix probed throughout. `timeline` gets one
/// state per change.
struct Run<'a> {
    world: &'a World,
    group: Group,
    timeline: &'a Mutex<Timeline>,
    current: Expectation,
    timed: Vec<Timed>,
    notes: Vec<String>,
}

impl Run<'_> {
    /// Makes `change`, then waits for the verdicts that differ between the current state and
    /// `after` to flip, and checks them against `after`.
    fn change(
        &mut self,
        label: &str,
        after: &[&str],
        change: impl FnOnce(&World) -> Result<()>,
    ) -> Result<()> {
        let after = expectation(after)?;
        let flips = verdicts::flips(&self.world.cluster, &self.current, &after)?;
        let called = Instant::now();
        self.begin(called, &after);
        change(self.world).with_context(|| format!("making the change `{label}`"))?;
        let since = Instant::now();
        let timing = verdicts::await_flips(
            &self.world.cluster,
            &flips,
            since,
            Await::within(CHANGE_LIMIT + Duration::from_secs(4)),
        )
        .with_context(|| format!("`{label}`"))?;
        println!(
            "  {label}: seen by probes ~{} after the command returned (command {})",
            ms(timing.observed),
            ms(since - called)
        );
        self.timed.push(Timed {
            label: format!("{} {label}", self.group.name()),
            observed: timing.observed,
            command: since - called,
        });
        self.current = after;
        if timing.observed > CHANGE_LIMIT {
            bail!(
                "`{label}` was enforced only {} after the command returned (limit {})",
                ms(timing.observed),
                ms(CHANGE_LIMIT)
            );
        }
        Ok(())
    }

    /// A change that flips no verdict: made, then the matrix must stay as it is.
    fn untimed(&mut self, label: &str, change: impl FnOnce(&World) -> Result<()>) -> Result<()> {
        let same = self.current.clone();
        self.begin(Instant::now(), &same);
        change(self.world).with_context(|| format!("making the change `{label}`"))?;
        // Long enough for any sync it causes (debounce 50 ms) to reach the kernel.
        std::thread::sleep(Duration::from_millis(500));
        verdicts::check_matrix(&self.world.cluster, &self.current)
            .with_context(|| format!("the matrix after `{label}`, which changes no verdict"))?;
        Ok(())
    }

    fn begin(&self, at: Instant, state: &Expectation) {
        let mut timeline = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        timeline.states.push((at, state.clone()));
    }

    fn object(&self, kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Value {
        calico(self.group, kind, ns, name, &[], spec)
    }

    fn sequence(&mut self) -> Result<()> {
        let group = self.group;
        let deny_all = self.object(
            "GlobalNetworkPolicy",
            None,
            "default-deny",
            json!({"selector": "all()", "types": ["Ingress", "Egress"]}),
        );
        self.change("global default deny", expect::CLOSED, |w| {
            w.apply_yaml(std::slice::from_ref(&deny_all))
        })?;

        let allow_path = vec![
            self.object(
                "NetworkPolicy",
                Some("web"),
                "server-from-backend",
                json!({
                    "order": 100,
                    "selector": "app == 'server'",
                    "types": ["Ingress"],
                    "ingress": [{
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"namespaceSelector": "team == 'client'", "selector": "role == 'backend'"},
                        "destination": {"ports": ["http"]},
                    }],
                }),
            ),
            self.object(
                "NetworkPolicy",
                Some("client"),
                "backend-to-server",
                json!({
                    "order": 100,
                    "selector": "role == 'backend'",
                    "types": ["Egress"],
                    "egress": [{
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"namespaceSelector": "team == 'web'", "selector": "app == 'server'", "ports": [80]},
                    }],
                }),
            ),
        ];
        self.change("an allow policy opens one path", expect::B_TO_SERVER, |w| {
            w.apply_yaml(&allow_path)
        })?;

        // The policy that selects the set comes first: nothing flips until the set exists.
        let set_users = vec![
            self.object(
                "NetworkPolicy",
                Some("client"),
                "frontend-to-peer-net",
                json!({
                    "selector": "role == 'frontend'",
                    "types": ["Egress"],
                    "egress": [{"action": "Allow", "destination": {"selector": "net == 'peer'"}}],
                }),
            ),
            self.object(
                "NetworkPolicy",
                Some("web"),
                "peer-open",
                json!({"selector": "app == 'peer'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]}),
            ),
        ];
        self.untimed("policies that select a NetworkSet not yet there", |w| {
            w.apply_yaml(&set_users)
        })?;
        let peer_ip = self.world.pod_ip("web/peer")?;
        let server_ip = self.world.pod_ip("web/server")?;
        let network_set = |nets: &str| {
            calico(
                group,
                "NetworkSet",
                Some("client"),
                "peer-net",
                &[("net", "peer")],
                json!({"nets": [format!("{nets}/32")]}),
            )
        };
        let set_peer = network_set(&peer_ip);
        self.change(
            "a NetworkSet appears under a policy's selector",
            expect::B_TO_SERVER_A_TO_PEER,
            |w| w.apply_yaml(std::slice::from_ref(&set_peer)),
        )?;

        self.invalid_policy()?;

        let set_server = network_set(&server_ip);
        self.change("the NetworkSet's nets change", expect::B_TO_SERVER, |w| {
            w.apply_yaml(std::slice::from_ref(&set_server))
        })?;

        let tier = |name: &str, order: u32| {
            calico(group, "Tier", None, name, &[], json!({"order": order}))
        };
        let security = vec![
            tier("security", 100),
            self.object(
                "GlobalNetworkPolicy",
                None,
                "deny-client-namespace",
                json!({
                    "tier": "security",
                    "order": 10,
                    "selector": "all()",
                    "types": ["Ingress"],
                    "ingress": [
                        {"action": "Deny", "source": {"namespaceSelector": "team == 'client'"}},
                        {"action": "Pass"},
                    ],
                }),
            ),
        ];
        self.change(
            "tier security (order 100) denies a namespace, passes the rest",
            expect::CLOSED,
            |w| w.apply_yaml(&security),
        )?;
        let allow_backend = self.object(
            "GlobalNetworkPolicy",
            None,
            "allow-backend",
            json!({
                "tier": "allowlist",
                "selector": "app == 'server'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'backend'"}}],
            }),
        );
        let allowlist = vec![tier("allowlist", 200), allow_backend.clone()];
        self.untimed("tier allowlist (order 200), behind security", |w| {
            w.apply_yaml(&allowlist)
        })?;
        let security_last = tier("security", 300);
        self.change(
            "tier security's order 100 -> 300 swaps it behind allowlist",
            expect::B_TO_SERVER,
            |w| w.apply_yaml(std::slice::from_ref(&security_last)),
        )?;

        self.change(
            "a pod label change under a Calico selector",
            expect::AB_TO_SERVER,
            |w| w.label_client_a("backend"),
        )?;

        self.change("a policy deleted", expect::CLOSED, |w| {
            w.delete_yaml(std::slice::from_ref(&allow_backend))
        })?;

        // Back to the start: everything removed, the label restored.
        let mut everything = vec![deny_all];
        everything.extend(allow_path);
        everything.extend(set_users);
        everything.push(set_server);
        everything.extend(security);
        everything.push(tier("allowlist", 200));
        self.change("every Calico object deleted", expect::OPEN, |w| {
            w.delete_yaml(&everything)
        })?;
        self.untimed("the pod label restored", |w| w.label_client_a("frontend"))
    }

    /// A policy whose rule selector does not parse: an Event on it naming the field, and
    /// fail closed (it denies, at its order, what it selects), until it is deleted.
    fn invalid_policy(&mut self) -> Result<()> {
        let bad = self.object(
            "NetworkPolicy",
            Some("web"),
            "broken",
            json!({
                "order": 1,
                "selector": "app == 'peer'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "source": {"selector": "role == "}}],
            }),
        );
        self.change("an invalid policy fails closed", expect::B_TO_SERVER, |w| {
            w.apply_yaml(std::slice::from_ref(&bad))
        })?;
        let field = "spec.ingress[0].source.selector";
        let started = Instant::now();
        let notes = loop {
            let events = self.world.api.get_json(&["get", "events", "-n", "web"])?;
            let notes: Vec<String> = events["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| {
                    e["reason"] == "PolicyInvalid"
                        && e["involvedObject"]["name"] == "broken"
                        && e["involvedObject"]["apiVersion"] == self.group.api_version()
                })
                .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                .collect();
            if !notes.is_empty() || started.elapsed() > Duration::from_secs(10) {
                break notes;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let Some(note) = notes.first() else {
            bail!(
                "no PolicyInvalid Event on the {} NetworkPolicy web/broken within 10 s",
                self.group.name()
            );
        };
        if !note.contains(field) {
            bail!("the PolicyInvalid Event does not name {field}: {note:?}");
        }
        self.notes.push(format!(
            "{}: {} PolicyInvalid Event(s) on web/broken: {note:?}",
            self.group.name(),
            notes.len()
        ));
        self.change(
            "the invalid policy deleted",
            expect::B_TO_SERVER_A_TO_PEER,
            |w| w.delete_yaml(std::slice::from_ref(&bad)),
        )
    }
}

/// Runs the sequence in `group` while a second thread probes the whole matrix; returns the
/// timed changes and the wrong verdicts.
fn run_group(
    world: &World,
    group: Group,
    notes: &mut Vec<String>,
) -> Result<(Vec<Timed>, Vec<String>)> {
    let open = expectation(expect::OPEN)?;
    world.settle(&open)?;
    let probes: Vec<Probe> = verdicts::all_probes(&world.cluster)?;
    let start = Instant::now();
    let timeline = Mutex::new(Timeline {
        states: vec![(start, open.clone())],
    });
    let sampling = Sampling {
        interval: Duration::from_millis(150),
        timeout: verdicts::PROBE_TIMEOUT,
        max_in_flight: 3,
        limit: Duration::from_secs(600),
    };
    let mut run = Run {
        world,
        group,
        timeline: &timeline,
        current: open,
        timed: Vec::new(),
        notes: Vec::new(),
    };
    let (outcome, rounds) =
        verdicts::sample_during(&world.cluster, &probes, sampling, || run.sequence());
    notes.append(&mut run.notes);
    let timed = std::mem::take(&mut run.timed);
    drop(run);
    outcome.with_context(|| world.log_tails())?;
    let rounds = rounds?;
    let timeline = timeline.into_inner().unwrap_or_else(|e| e.into_inner());
    let wrong = timeline.wrong(&rounds, start)?;
    let probed: usize = rounds.iter().map(|r| r.observations.len()).sum();
    notes.push(format!(
        "{}: {} changes, {} rounds of the whole matrix ({probed} probes) over {:.1}s, {} wrong verdicts",
        group.name(),
        timed.len(),
        rounds.len(),
        start.elapsed().as_secs_f64(),
        wrong.len()
    ));
    Ok((timed, wrong))
}

fn wait_for_log(agent: &Agent, text: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if agent.log_text().contains(text) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the agent of {} did not log {text:?} within {limit:?}; log tail:\n{}",
        agent.node,
        agent.log_tail(20)
    )
}

fn test_body(world: &mut World) -> Result<(Vec<Timed>, Vec<String>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut timed = Vec::new();
    let mut wrong = Vec::new();

    // No Calico group yet: Kubernetes policy only, and the group picked up once it appears.
    world.start_agents()?;
    world.install_crds(Group::V3)?;
    for agent in &world.agents {
        let took = wait_for_log(agent, "Calico's API group appeared", DISCOVERY_LIMIT)?;
        notes.push(format!(
            "{}: picked up projectcalico.org/v3 {} after its CRDs were installed",
            agent.node,
            ms(took)
        ));
    }
    // The new watchers list before they watch; let them.
    std::thread::sleep(Duration::from_secs(2));
    let (mut t, mut w) = run_group(world, Group::V3, &mut notes)?;
    timed.append(&mut t);
    wrong.append(&mut w);

    // A server that serves only crd.projectcalico.org/v1: agents started on it choose it.
    world.stop_agents()?;
    world.delete_crds(Group::V3)?;
    world.install_crds(Group::CrdV1)?;
    world.start_agents()?;
    for agent in &world.agents {
        wait_for_log(agent, "crd.projectcalico.org/v1", Duration::from_secs(5))?;
    }
    let (mut t, mut w) = run_group(world, Group::CrdV1, &mut notes)?;
    timed.append(&mut t);
    wrong.append(&mut w);
    world.stop_agents()?;
    Ok((timed, wrong, notes))
}

#[test]
fn calico_policies_through_the_api_server() {
    let test = "calico_policies_through_the_api_server";
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let started = Instant::now();
    let mut world = match World::create() {
        Ok(world) => world,
        Err(e) => panic!("{test}: setting up the apiserver and the cluster: {e:#}"),
    };
    let outcome = test_body(&mut world);
    let (timed, wrong, notes) = match outcome {
        Ok(result) => result,
        Err(e) => panic!(
            "{test} failed: {e:#}\n--- apiserver log tail:\n{}",
            world.api.log_tail(10)
        ),
    };
    println!("\n======== calico_e2e report ========");
    println!("enforcement, from the command's return to the new verdicts seen by probes:");
    for row in &timed {
        println!(
            "  {:<80} ~{:>6}  command {:>6}",
            row.label,
            ms(row.observed),
            ms(row.command)
        );
    }
    let observed: Vec<Duration> = timed.iter().map(|t| t.observed).collect();
    let (median, worst) = median_and_max(&observed).unwrap_or_default();
    println!(
        "  {} changes: median {}, worst {}",
        timed.len(),
        ms(median),
        ms(worst)
    );
    for note in &notes {
        println!("  {note}");
    }
    for agent in &world.agents {
        for (level, message, count) in agent.log_problems() {
            println!("  {} log: {count} x {level} {message}", agent.node);
        }
    }
    println!("{test}: {:.1}s in total", started.elapsed().as_secs_f64());
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts while Calico policies changed:\n  {}",
        wrong.len(),
        wrong
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(
        median <= MEDIAN_LIMIT,
        "the median change took {} to be enforced (limit {})",
        ms(median),
        ms(MEDIAN_LIMIT)
    );
}

//! Upgrades in place: the agents of a running two-node cluster are replaced, one node after
//! the other as a DaemonSet rollout does, by a build whose chain and set layout differs,
//! while the full matrix is probed every 100 ms.
//!
//! - The old build is `$PALISADE_UPGRADE_FROM` (`make upgrade` builds it from
//!   `$PALISADE_UPGRADE_FROM_COMMIT`, by default the last commit before the tier model changed
//!   every chain and set name). It enforces the steady policies on both nodes.
//! - Each node's old agent gets SIGTERM (its rules stay, as a DaemonSet's terminating pod
//!   leaves them), the new build starts in its place and, at its first sync, finds the old
//!   layout in the kernel.
//! - No probe may show a verdict other than the steady one: the upgrade neither opens nor
//!   closes anything.
//! - Once the new agent is ready, no chain or set of the old layout that the new one does not
//!   use is left, and a restart of the new agent makes no restore call at all: the kernel holds
//!   exactly what the new build writes.
//!
//! Two ways in: agents reading manifest files (node-1 on the nft backend, node-2 on the legacy
//! one), and `helm upgrade` on a real kube-apiserver from the old commit's chart and image to
//! this chart and build, with this test standing in for the kubelet: it runs what the
//! DaemonSet's pod template says (image, arguments, environment) and rolls it out node by
//! node when the template changes.
//!
//! Ignored in `make test` (they need the old build); `make upgrade` runs them. Need root.

#[path = "harness/mod.rs"]
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use e2e::agent::{self, Agent, Source as AgentSource};
use e2e::apiserver::ApiServer;
use e2e::kube::{self, ManifestDir};
use e2e::pod_env;
use e2e::steady::{self, baseline_pods, steady_policies, STEADY};
use e2e::verdicts::{self, Expectation, Round, Sampling, Tally};
use e2e::{binaries, ms, RunDir};
use harness::cluster::Cluster;
use harness::netns;

/// The backend of each node's agents, old and new, in the manifest test: both backends go
/// through the upgrade. The chart's agents use `--backend auto`.
const BACKENDS: [&str; 2] = ["nft", "legacy"];
/// The image tags the helm test installs; the stand-in kubelet runs the build each names.
const OLD_TAG: &str = "old";
const NEW_TAG: &str = "new";

/// Palisade's kernel objects on one node: `v4 PAL-…`/`v6 PAL-…` chains and `pal4-…`/`pal6-…`
/// sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
}

impl Layout {
    /// The chains of both backends (an agent writes one; which, `--backend auto` decides) and
    /// the sets (which have no backend).
    fn read(netns_name: &str) -> Result<Layout> {
        let mut chains = BTreeSet::new();
        for backend in BACKENDS {
            for (family, save) in [("v4", "iptables"), ("v6", "ip6tables")] {
                let program = format!("{save}-{backend}-save");
                let text = agent::in_node(netns_name, &program, &["-t", "filter"])?;
                for line in text.lines() {
                    if let Some(declaration) = line.strip_prefix(':') {
                        let name = declaration.split_whitespace().next().unwrap_or_default();
                        if name.starts_with("PAL-") {
                            chains.insert(format!("{backend} {family} {name}"));
                        }
                    }
                }
            }
        }
        let sets = agent::ipsets(netns_name)?.into_keys().collect();
        Ok(Layout { chains, sets })
    }

    fn count(&self) -> String {
        format!("{} chains, {} sets", self.chains.len(), self.sets.len())
    }

    fn of_each(agents: &[Agent]) -> Result<Vec<Layout>> {
        agents.iter().map(|a| Layout::read(&a.netns)).collect()
    }
}

fn old_build() -> Result<PathBuf> {
    let old = std::env::var_os("PALISADE_UPGRADE_FROM").map(PathBuf::from).ok_or_else(|| {
        anyhow!("PALISADE_UPGRADE_FROM must name the old build's palisade binary (`make upgrade` builds it)")
    })?;
    if !old.is_file() {
        bail!("PALISADE_UPGRADE_FROM={}: no such file", old.display());
    }
    Ok(old)
}

fn upgrade_sampling() -> Sampling {
    Sampling {
        interval: Duration::from_millis(100),
        timeout: verdicts::PROBE_TIMEOUT,
        max_in_flight: 4,
        limit: Duration::from_secs(240),
    }
}

/// One node's agent replaced: the old one stopped with SIGTERM (it must exit cleanly), the
/// new one started in its place and ready. Returns a line for the report.
fn replace(slot: &mut Agent, mut new_agent: Agent) -> Result<String> {
    let status = slot.stop()?;
    if !status.success() {
        bail!(
            "the old agent of {} exited with {status} on SIGTERM",
            slot.node
        );
    }
    let down = Instant::now();
    new_agent.start()?;
    new_agent.wait_ready(Duration::from_secs(60))?;
    let restores = new_agent.metrics()?.sum("palisade_restore_calls_total");
    let note = format!(
        "{}: new build ready {} after the old one stopped, {restores} restore call(s) to switch the layout",
        new_agent.node,
        ms(down.elapsed()),
    );
    *slot = new_agent;
    Ok(note)
}

/// The rollout, one node at a time as a DaemonSet with `maxUnavailable: 1` does: each agent
/// replaced by `successor(index)`, and its new layout in force for 3 s under probing before
/// the next node. Returns the new layouts; a line per node goes to `notes`.
fn roll_out(
    agents: &mut [Agent],
    mut successor: impl FnMut(usize) -> Result<Agent>,
    notes: &mut Vec<String>,
) -> Result<Vec<Layout>> {
    let mut new_layouts = Vec::new();
    for (index, slot) in agents.iter_mut().enumerate() {
        notes.push(replace(slot, successor(index)?)?);
        std::thread::sleep(Duration::from_secs(3));
        new_layouts.push(Layout::read(&slot.netns)?);
    }
    std::thread::sleep(Duration::from_secs(2));
    Ok(new_layouts)
}

/// What an upgrade must leave: only steady verdicts while it ran, the old layout gone, and a
/// kernel that holds exactly what the new build writes.
fn check_upgrade(
    cluster: &Cluster,
    agents: &mut [Agent],
    steady: &Expectation,
    start: Instant,
    old_layouts: &[Layout],
    new_layouts: &[Layout],
    rounds: Result<Vec<Round>>,
) -> Result<()> {
    let tally = Tally::count(&rounds?, steady, start)?;
    println!(
        "upgrade: {} rounds, {} probes over {:.1} s, {} wrong verdicts",
        tally.rounds,
        tally.probes,
        start.elapsed().as_secs_f64(),
        tally.wrong.len()
    );
    tally.ensure_none_wrong("during the upgrade")?;
    check_layouts(agents, old_layouts, new_layouts)?;
    check_restart_writes_nothing(agents)?;
    verdicts::check_matrix(cluster, steady)?;
    for agent in agents.iter_mut() {
        agent.stop()?;
    }
    Ok(())
}

/// The old layout's objects are gone where the new one does not use them, and the new one
/// really differs (else the run proves nothing about a layout change).
fn check_layouts(agents: &[Agent], old_layouts: &[Layout], new_layouts: &[Layout]) -> Result<()> {
    for ((agent, old_layout), new_layout) in agents.iter().zip(old_layouts).zip(new_layouts) {
        let removed_chains = old_layout.chains.difference(&new_layout.chains).count();
        let removed_sets = old_layout.sets.difference(&new_layout.sets).count();
        let added = new_layout.chains.difference(&old_layout.chains).count()
            + new_layout.sets.difference(&old_layout.sets).count();
        println!(
            "upgrade: {}: old build {}, new build {}; the old layout's {removed_chains} chains and {removed_sets} sets the new one does not use are gone, {added} objects are new",
            agent.node,
            old_layout.count(),
            new_layout.count()
        );
        if removed_chains + removed_sets == 0 || added == 0 {
            bail!(
                "{}: the old build's layout is the new one's ({} before, {} after): this run proves nothing about a layout change",
                agent.node,
                old_layout.count(),
                new_layout.count()
            );
        }
    }
    Ok(())
}

/// A fresh agent of the new build that finds nothing to write shows that the upgraded kernel
/// holds exactly the new layout: an old chain or set left over would be deleted.
fn check_restart_writes_nothing(agents: &mut [Agent]) -> Result<()> {
    for agent in agents.iter_mut() {
        agent.stop()?;
        agent.start()?;
        agent.wait_ready(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(2500));
        let restores = agent.metrics()?.sum("palisade_restore_calls_total");
        println!(
            "upgrade: {}: the new build restarted: {restores} restore call(s)",
            agent.node
        );
        if restores != 0.0 {
            bail!(
                "{}: after the upgrade a fresh agent still made {restores} restore call(s): the kernel did not hold exactly the new layout",
                agent.node
            );
        }
    }
    Ok(())
}

fn manifest_agent(
    palisade: &Path,
    cluster: &Cluster,
    index: usize,
    manifests: &ManifestDir,
    run: &RunDir,
) -> Result<Agent> {
    let node = cluster
        .nodes
        .get(index)
        .ok_or_else(|| anyhow!("the cluster has no node {}", index + 1))?;
    let mut agent = Agent::new(
        palisade,
        &node.name,
        &node.netns,
        AgentSource::Manifests(manifests.path.clone()),
        &run.path,
        "60s",
    );
    agent.backend = BACKENDS[index].to_string();
    Ok(agent)
}

#[test]
#[ignore = "`make upgrade` runs it (it needs the old build)"]
fn upgrade_in_place_under_probing() -> Result<()> {
    if !netns::is_root() {
        println!("skipping upgrade_in_place_under_probing: needs root");
        return Ok(());
    }
    let old = old_build()?;
    let run = RunDir::new("upgrade")?;
    let mut cluster = Cluster::new(binaries(), "palup", 2)?;
    cluster.add_pods(baseline_pods())?;
    let manifests = ManifestDir::new(&run.path)?;
    manifests.write(
        "10-namespace-web.yaml",
        &kube::namespace("web", &[("team", "web")]),
    )?;
    manifests.write(
        "10-namespace-client.yaml",
        &kube::namespace("client", &[("team", "client")]),
    )?;
    manifests.write_pods(&cluster)?;
    for (index, policy) in steady_policies().iter().enumerate() {
        manifests.write(&format!("30-policy-{index}.yaml"), policy)?;
    }
    let steady = Expectation::new(STEADY)?;

    let mut agents = (0..cluster.nodes.len())
        .map(|index| manifest_agent(&old, &cluster, index, &manifests, &run))
        .collect::<Result<Vec<_>>>()?;
    agent::start_all(&mut agents)?;
    verdicts::settle(&cluster, &steady).context("the old build enforcing the steady policies")?;
    let old_layouts = Layout::of_each(&agents)?;

    let probes = verdicts::all_probes(&cluster)?;
    let start = Instant::now();
    let mut notes = Vec::new();
    let new_palisade = cluster.binaries.palisade.clone();
    let cluster_ref = &cluster;
    let (upgraded, rounds) =
        verdicts::sample_during(cluster_ref, &probes, upgrade_sampling(), || {
            std::thread::sleep(Duration::from_secs(1));
            roll_out(
                &mut agents,
                |index| manifest_agent(&new_palisade, cluster_ref, index, &manifests, &run),
                &mut notes,
            )
        });
    for note in &notes {
        println!("upgrade: {note}");
    }
    let new_layouts = upgraded?;
    check_upgrade(
        &cluster,
        &mut agents,
        &steady,
        start,
        &old_layouts,
        &new_layouts,
        rounds,
    )
}

/// `charts/palisade` as of `commit`, exported (with `git archive`) under `dir`.
fn export_chart(commit: &str, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"git archive "$1" charts/palisade | tar -x -C "$2""#)
        .arg("export-chart")
        .arg(commit)
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running git archive")?;
    if !status.success() {
        bail!("git archive {commit} charts/palisade failed ({status})");
    }
    Ok(dir.join("charts/palisade"))
}

/// The agent container of the DaemonSet's pod template: what the kubelet of every node runs.
struct PodTemplate {
    generation: i64,
    image: String,
    args: Vec<String>,
    env: Vec<Value>,
}

impl PodTemplate {
    fn read(api: &ApiServer) -> Result<PodTemplate> {
        let daemonset = api.get_json(&["get", "-n", "kube-system", "daemonset", "palisade"])?;
        let container = pod_env::agent_container(&daemonset)?;
        let image = container["image"]
            .as_str()
            .ok_or_else(|| anyhow!("the palisade container has no image"))?
            .to_string();
        let args = container["args"]
            .as_array()
            .ok_or_else(|| anyhow!("the palisade container has no args"))?
            .iter()
            .map(|arg| {
                arg.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("an argument is not a string: {arg}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let env = container["env"].as_array().cloned().unwrap_or_default();
        let generation = daemonset["metadata"]["generation"].as_i64().unwrap_or(0);
        Ok(PodTemplate {
            generation,
            image,
            args,
            env,
        })
    }

    /// The agent this template runs on node `index`: the build its image tag names, its
    /// arguments and environment (`fieldRef: spec.nodeName` resolved as the kubelet does), and
    /// the admin kubeconfig in place of the ServiceAccount token a pod would get.
    fn agent(
        &self,
        builds: [(&str, &Path); 2],
        cluster: &Cluster,
        index: usize,
        api: &ApiServer,
        run: &RunDir,
    ) -> Result<Agent> {
        let node = cluster
            .nodes
            .get(index)
            .ok_or_else(|| anyhow!("the cluster has no node {}", index + 1))?;
        let tag = self.image.rsplit_once(':').map(|(_, tag)| tag);
        let palisade = builds
            .iter()
            .find(|(name, _)| Some(*name) == tag)
            .map(|(_, path)| *path)
            .ok_or_else(|| anyhow!("no build for the image {}", self.image))?;
        let mut agent = Agent::new(
            palisade,
            &node.name,
            &node.netns,
            AgentSource::Kubeconfig(api.kubeconfig.clone()),
            &run.path,
            "60s",
        );
        agent.env = pod_env::resolve(&self.env, &node.name)?;
        agent.pod_args = Some(self.args.clone());
        Ok(agent)
    }
}

#[test]
#[ignore = "`make upgrade` runs it (it needs the old build and helm)"]
fn helm_upgrade_under_probing() -> Result<()> {
    if !netns::is_root() {
        println!("skipping helm_upgrade_under_probing: needs root");
        return Ok(());
    }
    let old = old_build()?;
    let commit = std::env::var("PALISADE_UPGRADE_FROM_COMMIT").context(
        "PALISADE_UPGRADE_FROM_COMMIT must name the commit of the old build (its chart is installed first)",
    )?;
    let run = RunDir::new("helm-upgrade")?;
    let mut cluster = Cluster::new(binaries(), "palhu", 2)?;
    cluster.add_pods(baseline_pods())?;
    let api = ApiServer::start(&cluster, &run.path.join("api"))?;
    steady::create_objects(&api, &cluster)?;
    api.apply(&steady_policies())?;
    let old_chart = export_chart(&commit, &run.path.join("old-chart"))?;
    let old_chart = old_chart.to_string_lossy().into_owned();
    let image_values = |tag: &str| {
        [
            "--set".to_string(),
            "image.repository=palisade".to_string(),
            "--set".to_string(),
            format!("image.tag={tag}"),
        ]
    };
    let mut install = vec![
        "install",
        "palisade",
        old_chart.as_str(),
        "-n",
        "kube-system",
    ];
    let old_values = image_values(OLD_TAG);
    install.extend(old_values.iter().map(String::as_str));
    api.helm(&install)?;
    let old_template = PodTemplate::read(&api)?;
    println!(
        "upgrade: helm installed the chart of {} ({}): {}",
        &commit,
        old_template.image,
        old_template.args.join(" ")
    );

    let new_palisade = cluster.binaries.palisade.clone();
    let builds = [(OLD_TAG, old.as_path()), (NEW_TAG, new_palisade.as_path())];
    let mut agents = (0..cluster.nodes.len())
        .map(|index| old_template.agent(builds, &cluster, index, &api, &run))
        .collect::<Result<Vec<_>>>()?;
    agent::start_all(&mut agents)?;
    let steady = Expectation::new(STEADY)?;
    verdicts::settle(&cluster, &steady).context("the old build enforcing the steady policies")?;
    let old_layouts = Layout::of_each(&agents)?;

    let probes = verdicts::all_probes(&cluster)?;
    let start = Instant::now();
    let mut notes = Vec::new();
    let cluster_ref = &cluster;
    let api_ref = &api;
    let run_ref = &run;
    let (upgraded, rounds) = verdicts::sample_during(
        cluster_ref,
        &probes,
        upgrade_sampling(),
        || {
            std::thread::sleep(Duration::from_secs(1));
            let mut upgrade = vec![
                "upgrade",
                "palisade",
                "charts/palisade",
                "-n",
                "kube-system",
            ];
            let new_values = image_values(NEW_TAG);
            upgrade.extend(new_values.iter().map(String::as_str));
            let helm_started = Instant::now();
            api_ref.helm(&upgrade)?;
            let new_template = PodTemplate::read(api_ref)?;
            notes.push(format!(
                "helm upgrade took {}; the DaemonSet's generation {} -> {}, image {} -> {}, {} -> {} arguments",
                ms(helm_started.elapsed()),
                old_template.generation,
                new_template.generation,
                old_template.image,
                new_template.image,
                old_template.args.len(),
                new_template.args.len()
            ));
            if new_template.generation <= old_template.generation {
                bail!("helm upgrade did not change the DaemonSet's pod template");
            }
            roll_out(
                &mut agents,
                |index| new_template.agent(builds, cluster_ref, index, api_ref, run_ref),
                &mut notes,
            )
        },
    );
    for note in &notes {
        println!("upgrade: {note}");
    }
    let new_layouts = upgraded?;
    check_upgrade(
        &cluster,
        &mut agents,
        &steady,
        start,
        &old_layouts,
        &new_layouts,
        rounds,
    )
}

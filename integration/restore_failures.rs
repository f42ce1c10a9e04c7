//! A restore that fails part-way, with real packets: one `palisade agent --backend nft` in a
//! node namespace reading manifests.
//!
//! - `iptables-nft-restore` exits non-zero (a wrapper first in the agent's PATH fails while a
//!   flag file exists): the sets were prepared but no chain changed, so the previous rules stay
//!   in force; the agent reports the failure (`/readyz` unready, the restore error counted),
//!   and once the restore works again it reads the kernel afresh and applies the new rules.
//! - a foreign rule (in the node's INPUT chain) uses a Palisade set, so `ipset destroy` of the
//!   set the new rules no longer need fails: the new rules are in force (they were written
//!   before any set is destroyed), the agent reports the failure, and once the foreign rule is
//!   gone the retry destroys the set.
//!
//! Needs root; without it the test prints "skipping: needs root".

#[path = "harness/mod.rs"]
// The harness is shared with other targets; this one uses part of it.
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use e2e::agent::{ipsets, Agent, Source as AgentSource};
use e2e::one_server::{self, allow_from, connects, ready, restore_errors};
use e2e::{binaries, kube, RunDir};
use harness::cluster::{Cluster, Family};
use harness::netns;

/// Whether a and b connect as `a` and `b` say, or an error naming the one that does not.
fn check_verdicts(cluster: &Cluster, a: bool, b: bool, when: &str) -> Result<()> {
    for (pod, want) in [("web/a", a), ("web/b", b)] {
        if connects(cluster, pod)? != want {
            bail!(
                "{when}: {pod} -> web/server:80 connected: {}, expected {want}",
                !want
            );
        }
    }
    Ok(())
}

/// Checks the verdicts of a and b over and over until `end`; how many probes that took.
fn verdicts_hold(
    cluster: &Cluster,
    (a, b): (bool, bool),
    end: Instant,
    when: &str,
) -> Result<usize> {
    let mut probes = 0;
    while Instant::now() < end {
        check_verdicts(cluster, a, b, when)?;
        probes += 2;
    }
    Ok(probes)
}

/// Polls `condition` every 100 ms; how long until it held, or an error after `limit`.
fn until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition()? {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what}: not within {limit:?}")
}

/// The Palisade sets of a node whose members are exactly `members`.
fn sets_holding(netns_name: &str, members: &[String]) -> Result<Vec<String>> {
    let wanted: BTreeSet<&String> = members.iter().collect();
    Ok(ipsets(netns_name)?
        .into_iter()
        .filter(|(_, held)| held.iter().collect::<BTreeSet<_>>() == wanted)
        .map(|(name, _)| name)
        .collect())
}

/// A wrapper of the real `iptables-nft-restore` that fails, reading its input first as the
/// real one would, while `flag` exists.
fn failing_restore(dir: &Path, flag: &Path) -> Result<()> {
    let real = [
        "/usr/sbin/iptables-nft-restore",
        "/sbin/iptables-nft-restore",
    ]
    .into_iter()
    .find(|path| Path::new(path).exists())
    .context("iptables-nft-restore is not installed")?;
    std::fs::create_dir_all(dir)?;
    let wrapper = dir.join("iptables-nft-restore");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{flag}' ]; then\n    cat >/dev/null\n    echo 'iptables-nft-restore: line 2 failed (injected by the test)' >&2\n    exit 1\nfi\nexec {real} \"$@\"\n",
            flag = flag.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn ip_of(cluster: &Cluster, pod: &str) -> Result<String> {
    Ok(cluster
        .pod(pod)?
        .address(Family::V4)
        .with_context(|| format!("{pod} has no IPv4 address"))?
        .to_string())
}

fn body(run: &RunDir) -> Result<()> {
    let mut cluster = Cluster::new(binaries(), "palrf", 1)?;
    cluster.add_pods(one_server::pods())?;
    let manifests = kube::ManifestDir::new(&run.path)?;
    manifests.write("10-namespace-web.yaml", &kube::namespace("web", &[]))?;
    manifests.write_pods(&cluster)?;
    manifests.write("30-policy.yaml", &allow_from(&["a"]))?;
    let bin = run.path.join("bin");
    let flag = run.path.join("fail-iptables-restore");
    failing_restore(&bin, &flag)?;
    let (node_name, node_netns) = {
        let node = cluster.node(1)?;
        (node.name.clone(), node.netns.clone())
    };
    let mut agent = Agent::new(
        &cluster.binaries.palisade,
        &node_name,
        &node_netns,
        AgentSource::Manifests(manifests.path.clone()),
        &run.path,
        "60s",
    );
    agent.backend = "nft".into();
    let path = std::env::var("PATH").unwrap_or_default();
    agent.env = vec![("PATH".to_string(), format!("{}:{path}", bin.display()))];
    agent.start()?;
    agent.wait_ready(Duration::from_secs(30))?;
    check_verdicts(&cluster, true, false, "the first policy")?;

    // iptables-restore fails: the chains stay as they were.
    std::fs::write(&flag, "")?;
    let errors = restore_errors(&agent)?;
    manifests.write("30-policy.yaml", &allow_from(&["a", "b"]))?;
    let failing = Instant::now();
    let unready = until(
        Duration::from_secs(10),
        "/readyz unready after a failed restore",
        || Ok(!ready(&agent)?),
    )?;
    let probes = verdicts_hold(
        &cluster,
        (true, false),
        failing + Duration::from_secs(4),
        "while iptables-restore fails",
    )?;
    let failed = restore_errors(&agent)?;
    if failed <= errors {
        bail!("the failed restore was not counted in palisade_sync_errors_total{{reason=\"restore\"}}");
    }
    let log_mark = agent.log_text().len();
    std::fs::remove_file(&flag)?;
    let recovered = until(
        Duration::from_secs(40),
        "web/b connects once the restore works",
        || connects(&cluster, "web/b"),
    )?;
    until(
        Duration::from_secs(5),
        "/readyz ready after the retry",
        || ready(&agent),
    )?;
    check_verdicts(&cluster, true, true, "after the retry")?;
    let recovery_log = agent
        .log_text()
        .get(log_mark..)
        .unwrap_or_default()
        .to_string();
    if !recovery_log
        .lines()
        .any(|line| line.contains("synced") && line.contains("read_kernel=true"))
    {
        bail!("the sync after the failure did not read the kernel afresh:\n{recovery_log}");
    }
    println!(
        "  iptables-restore failing: unready after {unready:?}, restore errors {errors} -> {failed}, {probes} probes saw the old rules; restore fixed: new rules {recovered:?} after (read the kernel afresh), ready again"
    );

    // A foreign rule holds the set of {a, b}: destroying it fails once the policy narrows.
    let a_and_b = [ip_of(&cluster, "web/a")?, ip_of(&cluster, "web/b")?];
    let held = sets_holding(&node_netns, &a_and_b)?;
    let [held_set] = held.as_slice() else {
        bail!("expected one Palisade set holding exactly {a_and_b:?}, found {held:?}");
    };
    let foreign = [
        "-I",
        "INPUT",
        "-m",
        "set",
        "--match-set",
        held_set,
        "src",
        "-m",
        "comment",
        "--comment",
        "not Palisade's",
        "-j",
        "ACCEPT",
    ];
    e2e::agent::in_node(&node_netns, "iptables-nft", &foreign)?;
    let errors = restore_errors(&agent)?;
    manifests.write("30-policy.yaml", &allow_from(&["a"]))?;
    let narrowed = until(
        Duration::from_secs(10),
        "web/b refused by the narrowed policy",
        || Ok(!connects(&cluster, "web/b")?),
    )?;
    until(
        Duration::from_secs(10),
        "/readyz unready while a set cannot be destroyed",
        || Ok(!ready(&agent)?),
    )?;
    let probes = verdicts_hold(
        &cluster,
        (true, false),
        Instant::now() + Duration::from_secs(3),
        "while the old set is held",
    )?;
    let failed = restore_errors(&agent)?;
    if failed <= errors {
        bail!("the failed destroy was not counted in palisade_sync_errors_total{{reason=\"restore\"}}");
    }
    if !ipsets(&node_netns)?.contains_key(held_set.as_str()) {
        bail!("{held_set} is gone although a foreign rule uses it");
    }
    let mut delete = foreign.to_vec();
    delete[0] = "-D";
    e2e::agent::in_node(&node_netns, "iptables-nft", &delete)?;
    let cleaned = until(
        Duration::from_secs(40),
        "the old set destroyed once released",
        || Ok(!ipsets(&node_netns)?.contains_key(held_set.as_str())),
    )?;
    until(
        Duration::from_secs(5),
        "/readyz ready after the set was destroyed",
        || ready(&agent),
    )?;
    check_verdicts(&cluster, true, false, "after the set was destroyed")?;
    println!(
        "  set held by a foreign rule: new rules in force after {narrowed:?}, restore errors {errors} -> {failed}, {probes} probes saw the new rules, {held_set} kept while held; released: destroyed {cleaned:?} after, ready again"
    );
    let status = agent.stop()?;
    if !status.success() {
        bail!("exit status {status} on SIGTERM");
    }
    Ok(())
}

#[test]
fn a_restore_that_fails_part_way_keeps_safe_rules_and_recovers() {
    let test = "a_restore_that_fails_part_way_keeps_safe_rules_and_recovers";
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let run = match RunDir::new("e2e-restore-failures") {
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
